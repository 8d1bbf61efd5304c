#!/usr/bin/env bash
# Builds a pinned Consul agent (v1.16.3, the last MPL-2.0 release) into
# <repo>/bin/consul with nothing but the Go toolchain.
#
# Source: the separate Go module tools/consul (its own go.mod/go.sum pin
# github.com/hashicorp/consul v1.16.3 and the submodule versions that
# release's go.mod uses), whose main.go runs Consul's registered commands.
# Keeping it in its own module keeps Consul's ~300 dependencies out of
# sluice's go.mod.
#
# Idempotent: if bin/consul version already reports v1.16.3 it exits 0 at
# once. A cold build takes about 10 minutes on 2 cores (~120 MB binary); with
# a warm Go build cache it takes seconds. Exits non-zero and says what failed
# otherwise.
#
# Usage: tools/install-consul.sh [--smoke-test] [--force]
#   --smoke-test  also start `consul agent -dev` once on free loopback ports
#                 and wait for it to elect itself leader.
#   --force       rebuild even if bin/consul already reports the version.
# Env:   GO  the go command (default: go)
set -euo pipefail

CONSUL_VERSION="1.16.3"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
MODULE_DIR="${SCRIPT_DIR}/consul"
BIN_DIR="${REPO_ROOT}/bin"
CONSUL_BIN="${BIN_DIR}/consul"
GO="${GO:-go}"

SMOKE_TEST=0
FORCE=0
for arg in "$@"; do
  case "${arg}" in
    --smoke-test) SMOKE_TEST=1 ;;
    --force) FORCE=1 ;;
    -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "install-consul: unknown argument: ${arg}" >&2; exit 2 ;;
  esac
done

log() { echo "install-consul: $*" >&2; }
die() { echo "install-consul: ERROR: $*" >&2; exit 1; }

# Prints the first line of `$1 version` if it reports CONSUL_VERSION, else fails.
version_ok() {
  local out first
  out="$("$1" version 2>&1)" || return 1
  first="${out%%$'\n'*}"
  # e.g. "Consul v1.16.3"
  [[ "${first}" == "Consul v${CONSUL_VERSION}" ]] || return 1
  echo "${first}"
}

# A free TCP port on 127.0.0.1 (the kernel picks it; a tiny race is accepted
# for a smoke test).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null \
    || echo $(( 20000 + RANDOM % 20000 ))
}

smoke_test() {
  local consul="$1" tmp pid http leader="" i
  command -v curl >/dev/null 2>&1 || die "smoke test needs curl"
  tmp="$(mktemp -d "${TMPDIR:-/tmp}/sluice-consul-smoke.XXXXXX")"
  http="$(free_port)"
  "${consul}" agent -dev -bind 127.0.0.1 -client 127.0.0.1 -log-level warn \
    -http-port "${http}" -dns-port "$(free_port)" -grpc-port "$(free_port)" \
    -grpc-tls-port "$(free_port)" -serf-lan-port "$(free_port)" \
    -serf-wan-port "$(free_port)" -server-port "$(free_port)" \
    >"${tmp}/consul.log" 2>&1 &
  pid=$!
  for i in $(seq 1 300); do
    if ! kill -0 "${pid}" 2>/dev/null; then
      cat "${tmp}/consul.log" >&2
      rm -rf "${tmp}"
      die "smoke test: consul agent exited during startup (log above)"
    fi
    leader="$(curl -fsS --max-time 1 "http://127.0.0.1:${http}/v1/status/leader" 2>/dev/null || true)"
    if [[ -n "${leader}" && "${leader}" != '""' ]]; then break; fi
    sleep 0.1
  done
  kill "${pid}" 2>/dev/null || true
  wait "${pid}" 2>/dev/null || true # dev mode exits 1 on SIGTERM
  if [[ -z "${leader}" || "${leader}" == '""' ]]; then
    cat "${tmp}/consul.log" >&2
    rm -rf "${tmp}"
    die "smoke test: no leader on 127.0.0.1:${http} after 30s (log above)"
  fi
  rm -rf "${tmp}"
  log "smoke test ok (dev agent on 127.0.0.1:${http}, leader ${leader})"
}

finish() {
  local out
  out="$(version_ok "${CONSUL_BIN}")" || die "built ${CONSUL_BIN} does not report version v${CONSUL_VERSION}: $("${CONSUL_BIN}" version 2>&1 | head -n 1)"
  if [[ "${SMOKE_TEST}" == 1 ]]; then smoke_test "${CONSUL_BIN}"; fi
  log "${out} at ${CONSUL_BIN}"
  exit 0
}

if [[ "${FORCE}" == 0 && -x "${CONSUL_BIN}" ]] && version_ok "${CONSUL_BIN}" >/dev/null 2>&1; then
  finish
fi

mkdir -p "${BIN_DIR}"

# Serialise concurrent runs where flock exists.
if command -v flock >/dev/null 2>&1; then
  exec 9>"${BIN_DIR}/.install-consul.lock"
  flock 9
  if [[ "${FORCE}" == 0 && -x "${CONSUL_BIN}" ]] && version_ok "${CONSUL_BIN}" >/dev/null 2>&1; then
    finish
  fi
fi

command -v "${GO}" >/dev/null 2>&1 || die "'${GO}' not found; building Consul needs the Go toolchain"
[[ -f "${MODULE_DIR}/go.mod" && -f "${MODULE_DIR}/go.sum" ]] || die "${MODULE_DIR}/go.mod or go.sum is missing"

# go.sum is complete, so the build checks every download against it and never
# asks the checksum database. The two GONOSUMDB entries only matter if go.sum
# ever needs new lines (the checksum database has no entry for them); they are
# harmless otherwise. -mod=readonly: never rewrite the committed go.mod/go.sum.
export GONOSUMDB="${GONOSUMDB:+${GONOSUMDB},}github.com/hashicorp/consul/envoyextensions,github.com/hashicorp/hcp-sdk-go"
export GOFLAGS="${GOFLAGS:+${GOFLAGS} }-mod=readonly"
export CGO_ENABLED="${CGO_ENABLED:-0}"

log "building Consul v${CONSUL_VERSION} from ${MODULE_DIR} (cold: 5-12 min on 2 cores; warm: seconds)"
start=$(date +%s)
tmp_bin="${CONSUL_BIN}.tmp.$$"
build_log="$(mktemp "${TMPDIR:-/tmp}/sluice-consul-build.XXXXXX")"
trap 'rm -f "${tmp_bin}" "${build_log}"' EXIT
if ! (cd "${MODULE_DIR}" && "${GO}" build -trimpath -ldflags="-s -w" -o "${tmp_bin}" .) >"${build_log}" 2>&1; then
  tail -n 60 "${build_log}" >&2
  die "'go build' of ${MODULE_DIR} failed after $(( $(date +%s) - start ))s ($("${GO}" version 2>&1)); output above"
fi
mv -f "${tmp_bin}" "${CONSUL_BIN}"
log "built ${CONSUL_BIN} in $(( $(date +%s) - start ))s ($(du -h "${CONSUL_BIN}" | cut -f1))"
finish
