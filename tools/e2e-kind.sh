#!/usr/bin/env bash
# Runs sluice's Kubernetes end-to-end suite (e2e/kind) on a throwaway kind
# cluster: creates the cluster from deploy/kind/kind-config.yaml, builds the
# sluice and demo-service images from deploy/Dockerfile and loads them into
# the nodes, applies deploy/overlays/demo, waits for every rollout, runs
# `go test -tags kind ./e2e/kind/...` against it, and deletes the cluster
# when it exits (success, failure or interrupt).
#
# Needs kind, kubectl, go and docker with a reachable engine; stops at once,
# before touching anything, with a message naming whatever is missing.
# The cluster's kubeconfig goes to a temporary file: yours is left alone.
#
# Usage: tools/e2e-kind.sh        (or: make e2e-kind)
# Env:   KIND_CLUSTER_NAME  cluster name (default sluice-e2e)
#        KIND_NODE_IMAGE    kindest/node image to use (default: kind's own)
#        KEEP_CLUSTER=1     do not delete the cluster at the end (prints how
#                           to reach it and how to delete it)
#        GO_TEST_FLAGS      extra flags for go test (e.g. -run Traffic)
#        DOCKER             docker-compatible CLI (default docker)
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "${SCRIPT_DIR}/.." && pwd)"
CLUSTER="${KIND_CLUSTER_NAME:-sluice-e2e}"
DOCKER="${DOCKER:-docker}"
NAMESPACE="sluice-demo"
SLUICE_IMAGE="ghcr.io/sluice-mesh/sluice:dev"
DEMO_IMAGE="ghcr.io/sluice-mesh/demo-service:dev"

log() { printf 'e2e-kind: %s\n' "$*" >&2; }

case "${1:-}" in
  -h|--help) sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  "") ;;
  *) log "unknown argument: $1"; exit 2 ;;
esac

# --- prerequisites: all checked, all reported, nothing started -------------
missing=()
for tool in kind kubectl go; do
  command -v "${tool}" >/dev/null 2>&1 || missing+=("${tool} is not on PATH")
done
if ! command -v "${DOCKER}" >/dev/null 2>&1; then
  missing+=("${DOCKER} is not on PATH")
elif ! timeout 20 "${DOCKER}" version --format '{{.Server.Version}}' >/dev/null 2>&1; then
  missing+=("${DOCKER} cannot reach a container engine ('${DOCKER} version' failed: start the Docker daemon or set DOCKER_HOST)")
fi
if ((${#missing[@]} > 0)); then
  log "cannot run the kind suite:"
  for m in "${missing[@]}"; do log "  - ${m}"; done
  log "install what is missing (https://kind.sigs.k8s.io for kind) and run again; nothing was created."
  exit 1
fi

# --- the cluster, deleted on exit -------------------------------------------
KUBECONFIG="$(mktemp "${TMPDIR:-/tmp}/sluice-e2e-kubeconfig.XXXXXX")"
export KUBECONFIG
created=0

diagnose() {
  log "diagnostics of namespace ${NAMESPACE}:"
  kubectl get pods -n "${NAMESPACE}" -o wide >&2 || true
  kubectl get events -n "${NAMESPACE}" --sort-by=.lastTimestamp 2>&1 | tail -n 40 >&2 || true
  for d in sluice demo demo-gateway; do
    log "--- logs of deployment/${d} (all containers, last 50 lines)"
    kubectl logs -n "${NAMESPACE}" "deployment/${d}" --all-containers --tail=50 >&2 || true
  done
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if ((created)); then
    if ((rc != 0)); then diagnose; fi
    if [[ "${KEEP_CLUSTER:-0}" == 1 ]]; then
      log "keeping cluster ${CLUSTER}: KUBECONFIG=${KUBECONFIG}; delete it with: kind delete cluster --name ${CLUSTER}"
      exit "${rc}"
    fi
    log "deleting cluster ${CLUSTER}"
    kind delete cluster --name "${CLUSTER}" --kubeconfig "${KUBECONFIG}" >&2 || log "could not delete cluster ${CLUSTER}: kind delete cluster --name ${CLUSTER}"
  fi
  rm -f "${KUBECONFIG}"
  exit "${rc}"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if kind get clusters 2>/dev/null | grep -qx "${CLUSTER}"; then
  log "a kind cluster named ${CLUSTER} already exists; delete it (kind delete cluster --name ${CLUSTER}) or set KIND_CLUSTER_NAME"
  exit 1
fi

cd "${REPO_ROOT}"
log "building images ${SLUICE_IMAGE} and ${DEMO_IMAGE}"
VERSION="$(git describe --tags --always --dirty 2>/dev/null || echo dev)"
"${DOCKER}" build -f deploy/Dockerfile --build-arg "VERSION=${VERSION}" -t "${SLUICE_IMAGE}" .
"${DOCKER}" build -f deploy/Dockerfile --target demo-service -t "${DEMO_IMAGE}" .

log "creating cluster ${CLUSTER} (deploy/kind/kind-config.yaml)"
image_args=()
if [[ -n "${KIND_NODE_IMAGE:-}" ]]; then image_args=(--image "${KIND_NODE_IMAGE}"); fi
created=1
kind create cluster --name "${CLUSTER}" --config deploy/kind/kind-config.yaml \
  --kubeconfig "${KUBECONFIG}" --wait 180s "${image_args[@]}"

log "loading images into the nodes"
kind load docker-image --name "${CLUSTER}" "${SLUICE_IMAGE}" "${DEMO_IMAGE}"

log "applying deploy/overlays/demo"
kubectl apply -k deploy/overlays/demo
for d in etcd consul otel-collector sluice demo demo-consul demo-gateway; do
  kubectl rollout status -n "${NAMESPACE}" "deployment/${d}" --timeout=5m
done

log "running the suite"
# shellcheck disable=SC2086 # GO_TEST_FLAGS is a list of flags
go test -tags kind -count=1 -timeout 30m -v ${GO_TEST_FLAGS:-} ./e2e/kind/...
