#!/usr/bin/env bash
# Scale benchmark. Two sets of rows, each written as a Markdown table into
# docs/BENCHMARKS.md between its own markers (results in bench-results/):
#
#   classic  a bare go-control-plane server (its snapshot cache, one snapshot
#            for every node) and sluice (file and etcd sources) serve the same
#            synthetic mesh to PROXIES simulated proxies in one group, over
#            SotW and delta ADS; sluice with --debounce 5ms --max-delay 50ms.
#   groups   sidecars in proxy groups (sluice-load --groups: proxy i is a
#            sidecar of svc-(i mod groups)), against sluice with the etcd
#            source (embedded etcd, populated by sluice-load populate --etcd):
#              2,000 sidecars in 1,000 groups, whole mesh each, delta
#              the same over SotW
#              2,000 sidecars in 1,000 groups, 10 dependencies each, delta
#              10,000 sidecars in 1,000 groups, 10 dependencies each, delta
#            and, for the first row, the go-control-plane baseline (no groups:
#            one snapshot for everyone, the floor). Dependencies are policy
#            files (sluice-load populate --policy-dir): svc-s depends on
#            svc-(s-1) ... svc-(s-D), so the change to svc-0000 reaches the
#            sidecars of svc-0001 ... svc-D only. Each sluice row runs once per
#            debounce setting in BENCH_DEBOUNCE.
#
# Usage: tools/bench-scale.sh [PROXIES] [SERVICES] [ENDPOINTS]
# Environment:
#   BENCH_ROWS      rows to run: all (default), classic, groups, or
#                   "classic groups"; only the sections run are rewritten
#   BENCH_DEBOUNCE  debounce settings of the groups rows, default
#                   "tuned defaults": tuned is --debounce 5ms --max-delay 50ms,
#                   defaults is serve without debounce flags
#   BENCH_GROUPS (1000), BENCH_DEPENDENCIES (10), BENCH_SIDECARS (2000),
#   BENCH_SIDECARS_LARGE (10000)
#                   the sizes of the groups rows
#   BENCH_DOC       the file the tables go into (docs/BENCHMARKS.md)
#   BENCH_OUT       the results directory (bench-results)
# Everything listens on 127.0.0.1; every process is stopped at the end. Each
# run is bounded by sluice-load's --sync-timeout (2m) and --change-timeout
# (1m) plus a 3 s hold.
set -euo pipefail
cd "$(dirname "$0")/.."

PROXIES=${1:-1000}
SERVICES=${2:-1000}
ENDPOINTS=${3:-10}
ROWS=${BENCH_ROWS:-all}
SETTINGS=${BENCH_DEBOUNCE:-tuned defaults}
NGROUPS=${BENCH_GROUPS:-1000}
DEPS=${BENCH_DEPENDENCIES:-10}
SIDECARS=${BENCH_SIDECARS:-2000}
SIDECARS_LARGE=${BENCH_SIDECARS_LARGE:-10000}
DOC=${BENCH_DOC:-docs/BENCHMARKS.md}
OUT=${BENCH_OUT:-bench-results}
BIN=bin/sluice
# The load generator: its own binary (tools/sluice-load), not part of sluice.
LOAD=bin/sluice-load
XDS=127.0.0.1:28500
ADMIN=127.0.0.1:28580
ETCD=127.0.0.1:28579
# Sluice's debounce is a deliberate delay; the benchmark measures the
# machinery, so it uses a short one (documented with the results).
DEBOUNCE=(--debounce 5ms --max-delay 50ms)
MESH=(--services "$SERVICES" --endpoints "$ENDPOINTS")

want() { # ROWSET: was it selected by BENCH_ROWS?
  [ "$ROWS" = all ] || [[ " ${ROWS//,/ } " == *" $1 "* ]]
}
for r in ${ROWS//,/ }; do
  case $r in all | classic | groups) ;; *)
    echo "bench-scale: BENCH_ROWS: unknown row set $r (want all, classic or groups)" >&2
    exit 2
    ;;
  esac
done
for s in $SETTINGS; do
  case $s in tuned | defaults) ;; *)
    echo "bench-scale: BENCH_DEBOUNCE: unknown setting $s (want tuned or defaults)" >&2
    exit 2
    ;;
  esac
done

mkdir -p "$OUT" bin
go build -o "$BIN" ./cmd/sluice
go build -o "$LOAD" ./tools/sluice-load
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_ready() { # URL
  for _ in $(seq 1 300); do
    if curl -fsS "$1" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "bench-scale: $1 never became ready" >&2
  return 1
}

wait_instances() { # expected instance count in sluice's catalog
  for _ in $(seq 1 300); do
    if curl -fsS "http://$ADMIN/metrics" 2>/dev/null | grep -qx "sluice_catalog_instances $1"; then return 0; fi
    sleep 0.1
  done
  echo "bench-scale: sluice never loaded $1 instances" >&2
  return 1
}

stop() { kill "${pids[-1]}"; wait "${pids[-1]}" 2>/dev/null || true; unset 'pids[-1]'; }

load() { # NAME MODE CHANGE PROXIES [LOAD FLAGS...]: writes $OUT/NAME-MODE.json
  local name=$1 mode=$2 change=$3 proxies=$4
  shift 4
  local flags=("$@") file="$OUT/$name-$mode.json"
  [ "$mode" = delta ] && flags+=(--delta)
  echo "bench-scale: $name $mode, $proxies proxies ${flags[*]}" >&2
  "$LOAD" --xds-addr "$XDS" --proxies "$proxies" "${MESH[@]}" "${flags[@]}" \
    --change "$change" --server-metrics "http://$ADMIN/metrics" --node-prefix "$name" --hold 3s >"$file" || true
  # A run that failed before measuring still gets a row, with its error.
  [ -s "$file" ] || printf '{"target":"%s","mode":"%s","proxies":%d,"errors":["sluice-load failed: see the script output"]}\n' \
    "$XDS" "$mode" "$proxies" >"$file"
}

baseline() { # NAME MODE PROXIES
  "$LOAD" baseline "${MESH[@]}" --xds-addr "$XDS" --admin-addr "$ADMIN" &
  pids+=($!)
  wait_ready "http://$ADMIN/readyz"
  load "$1" "$2" "http:http://$ADMIN/change" "$3"
  stop
}

total=$((SERVICES * ENDPOINTS))
machine="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')), $(free -g | awk '/Mem:/ {print $2}') GiB, $(go version | cut -d' ' -f3), $(date -u +%Y-%m-%d)"

# section MARKER FILE: replaces the lines between <!-- MARKER:begin ... -->
# and <!-- MARKER:end --> in $DOC with FILE (which has both markers), or
# appends FILE.
section() {
  if [ -f "$DOC" ] && grep -q "<!-- $1:begin" "$DOC"; then
    awk -v f="$2" -v b="<!-- $1:begin" -v e="<!-- $1:end" '
      index($0, b) == 1 { while ((getline l < f) > 0) print l; skip = 1; next }
      index($0, e) == 1 { skip = 0; next }
      !skip { print }' "$DOC" >"$work/doc.md"
    mv "$work/doc.md" "$DOC"
  else
    { echo; cat "$2"; } >>"$DOC"
  fi
  cat "$2"
}

if want classic; then
  for mode in sotw delta; do
    baseline baseline "$mode" "$PROXIES"

    "$LOAD" populate "${MESH[@]}" --registry-file "$work/mesh.yaml"
    "$BIN" serve --registry-file "$work/mesh.yaml" --xds-addr "$XDS" --admin-addr "$ADMIN" "${DEBOUNCE[@]}" --log-level warn &
    pids+=($!)
    wait_ready "http://$ADMIN/readyz"
    wait_instances "$total"
    load sluice-file "$mode" "file:$work/mesh.yaml" "$PROXIES"
    stop

    "$BIN" serve --dev --etcd-endpoints "$ETCD" --data-dir "$work/etcd-$mode" --xds-addr "$XDS" --admin-addr "$ADMIN" "${DEBOUNCE[@]}" --log-level warn &
    pids+=($!)
    wait_ready "http://$ADMIN/readyz"
    "$LOAD" populate "${MESH[@]}" --etcd "$ETCD"
    wait_instances "$total"
    load sluice-etcd "$mode" "etcd:$ETCD" "$PROXIES"
    stop
  done

  table=$("$LOAD" report \
    "go-control-plane snapshot cache=$OUT/baseline-sotw.json" "sluice, file source=$OUT/sluice-file-sotw.json" "sluice, etcd source=$OUT/sluice-etcd-sotw.json" \
    "go-control-plane snapshot cache=$OUT/baseline-delta.json" "sluice, file source=$OUT/sluice-file-delta.json" "sluice, etcd source=$OUT/sluice-etcd-delta.json")
  {
    echo "<!-- bench-scale:begin (generated by make bench-scale) -->"
    echo
    echo "$PROXIES simulated proxies, $SERVICES services × $ENDPOINTS endpoints; $machine."
    echo "Sluice ran with \`${DEBOUNCE[*]}\`."
    echo
    echo "$table"
    echo
    echo "<!-- bench-scale:end -->"
  } >"$work/section.md"
  section bench-scale "$work/section.md"
fi

# group_row NAME MODE PROXIES DEPENDENCIES SETTING: sidecars in $NGROUPS
# groups against sluice on a fresh, populated embedded etcd, with policy
# files naming the dependencies when there are any.
group_row() {
  local name=$1-$5 mode=$2 proxies=$3 deps=$4 setting=$5
  local serve=(--log-level warn) topo=(--groups "$NGROUPS")
  [ "$setting" = tuned ] && serve+=("${DEBOUNCE[@]}")
  if [ "$deps" -gt 0 ]; then
    topo+=(--dependencies "$deps")
    rm -rf "$work/policies"
    "$LOAD" populate "${MESH[@]}" "${topo[@]}" --policy-dir "$work/policies"
    serve+=(--policy-dir "$work/policies")
  fi
  "$BIN" serve --dev --etcd-endpoints "$ETCD" --data-dir "$work/etcd-$name-$mode" --xds-addr "$XDS" --admin-addr "$ADMIN" "${serve[@]}" &
  pids+=($!)
  wait_ready "http://$ADMIN/readyz"
  "$LOAD" populate "${MESH[@]}" --etcd "$ETCD"
  wait_instances "$total"
  load "$name" "$mode" "etcd:$ETCD" "$proxies" "${topo[@]}"
  stop
}

if want groups; then
  # NAME MODE PROXIES DEPENDENCIES, in table order.
  group_rows=(
    "whole $SIDECARS 0 delta"
    "whole $SIDECARS 0 sotw"
    "deps $SIDECARS $DEPS delta"
    "deps-large $SIDECARS_LARGE $DEPS delta"
  )
  baseline groups-baseline delta "$SIDECARS"
  reports=("go-control-plane snapshot cache, one snapshot for all (the floor)=$OUT/groups-baseline-delta.json")
  for row in "${group_rows[@]}"; do
    read -r name proxies deps mode <<<"$row"
    for setting in $SETTINGS; do
      group_row "groups-$name" "$mode" "$proxies" "$deps" "$setting"
      label="sluice, etcd source, tuned debounce"
      [ "$setting" = defaults ] && label="sluice, etcd source, default debounce"
      reports+=("$label=$OUT/groups-$name-$setting-$mode.json")
    done
  done
  table=$("$LOAD" report "${reports[@]}")
  {
    echo "<!-- bench-scale-groups:begin (generated by make bench-scale) -->"
    echo
    echo "Sidecars in $NGROUPS proxy groups (sidecar i fronts svc-(i mod $NGROUPS)), $SERVICES services × $ENDPOINTS endpoints; $machine."
    echo "With dependencies D, svc-s depends on svc-(s-1) … svc-(s-D) (one ServicePolicy per group), so only the"
    echo "sidecars of svc-0001 … svc-D see the change to svc-0000; convergence is over them. Sluice used the etcd"
    echo "source; tuned debounce is \`${DEBOUNCE[*]}\`, default debounce is no debounce flags. The baseline"
    echo "serves one snapshot (no groups) to every proxy."
    echo
    echo "$table"
    echo
    echo "<!-- bench-scale-groups:end -->"
  } >"$work/section-groups.md"
  section bench-scale-groups "$work/section-groups.md"
fi
