#!/usr/bin/env bash
# User-space instructions per request of the proxy, counted by valgrind's callgrind: the same
# figure on every run for the same binary and load, whatever else the machine is doing, so it
# shows what a change to the request path costs where wall-clock and CPU-time ratios drown in
# noise. The kernel's work (most of a proxy's CPU time) is not counted.
#
# Usage: benches/callgrind.sh [REQUESTS]     (default 10000)
#
# Starts one memcached and the release bifrost (workers: 1, blind_forward) under callgrind on
# free ports, runs memcaslap with one connection for REQUESTS operations (90% get / 10% set,
# 100-byte values), stops bifrost, and prints the total and per-request instruction counts.
# A run of 0 requests measures start-up and shutdown, to subtract.
#
# Environment: BIFROST_BIN (default target/release/bifrost, built if missing), CALLGRIND_OUT
# (where to keep the profile for callgrind_annotate; default a temporary file, removed),
# CALLGRIND_ROUTE: the route measured, over memcached A and, where needed, a second memcached B:
#   blind_forward (default) | consistent_hash (pool A) | warm_first (warm A, cold B,
#   write_on_miss; the load's gets hit A, since its sets go to both) | warm_first_leases (the
#   same with `leases: {}`: gets read A with mg N c, sets go to B, then A) | parallel (A and B) |
#   replicate (consistent_hash on A, sets copied to B) | split (consistent_hash over a pool of A
#   and B, so a multi-get's keys are split between them)
# CALLGRIND_MULTIGET: keys per get (memcaslap -d; default 1: single gets). With 100 and
# CALLGRIND_ROUTE=split, each get is a 100-key split.
# CALLGRIND_BINARY=1: memcaslap speaks the binary protocol (-B) to the proxy.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

REQUESTS=${1:-10000}
for tool in valgrind callgrind_annotate memcached memcaslap; do
    command -v "$tool" >/dev/null || {
        echo "error: $tool not found (apt-get install valgrind memcached libmemcached-tools)" >&2
        exit 1
    }
done
BIN=${BIFROST_BIN:-target/release/bifrost}
if [[ ! -x $BIN ]]; then
    cargo build --release
fi

WORK=$(mktemp -d)
OUT=${CALLGRIND_OUT:-$WORK/callgrind.out}
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() {
    local port
    for _ in $(seq 100); do
        port=$((20000 + RANDOM % 20000))
        if port_is_free "$port" && [[ $port != "${PICKED:-}" ]]; then
            PICKED=$port
            echo "$port"
            return
        fi
    done
    echo "error: no free port" >&2
    exit 1
}
wait_port() { # waits until something listens on $1
    for _ in $(seq 600); do
        port_is_free "$1" || return 0
        sleep 0.05
    done
    echo "error: nothing listens on $1 after 30 s" >&2
    exit 1
}

ROUTE=${CALLGRIND_ROUTE:-blind_forward}
MC_PORT=$(pick_port)
MC2_PORT=$(pick_port)
PROXY_PORT=$(pick_port)
user=()
[[ $(id -u) == 0 ]] && user=(-u root)
memcached -l 127.0.0.1 -p "$MC_PORT" -U 0 "${user[@]}" &
pids+=($!)
memcached -l 127.0.0.1 -p "$MC2_PORT" -U 0 "${user[@]}" &
pids+=($!)
extra=""
case $ROUTE in
blind_forward | consistent_hash) route="{name: all, match: \"*\", strategy: $ROUTE, backend: mc}" ;;
warm_first) route="{name: all, match: \"*\", strategy: warm_first, warm: mc, cold: mc2, write_on_miss: {ttl: 300}}" ;;
warm_first_leases) route="{name: all, match: \"*\", strategy: warm_first, warm: mc, cold: mc2, write_on_miss: {ttl: 300}, leases: {}}" ;;
parallel) route="{name: all, match: \"*\", strategy: parallel, backends: [mc, mc2]}" ;;
split) route="{name: all, match: \"*\", strategy: consistent_hash, backend: both}" ;;
replicate)
    route="{name: all, match: \"*\", strategy: consistent_hash, backend: mc}"
    extra="side_effects: [{replicate: {routes: [all], to: mc2, commands: [set]}}]"
    ;;
*)
    echo "error: CALLGRIND_ROUTE=$ROUTE is not one of blind_forward consistent_hash warm_first warm_first_leases parallel replicate split" >&2
    exit 1
    ;;
esac
cat >"$WORK/bifrost.yaml" <<EOF
workers: 1
listeners: [{name: main, bind: "127.0.0.1:$PROXY_PORT"}]
backends:
  mc: {servers: ["127.0.0.1:$MC_PORT"]}
  mc2: {servers: ["127.0.0.1:$MC2_PORT"]}
  both: {servers: ["127.0.0.1:$MC_PORT", "127.0.0.1:$MC2_PORT"]}
routes: [$route]
$extra
EOF
wait_port "$MC_PORT"
wait_port "$MC2_PORT"
valgrind --tool=callgrind --callgrind-out-file="$OUT" "$BIN" --config "$WORK/bifrost.yaml" \
    --log-level warn 2>"$WORK/valgrind.log" &
proxy=$!
pids+=("$proxy")
wait_port "$PROXY_PORT"
if ((REQUESTS > 0)); then
    division=()
    [[ ${CALLGRIND_MULTIGET:-1} -gt 1 ]] && division=(-d "$CALLGRIND_MULTIGET")
    [[ ${CALLGRIND_BINARY:-0} == 1 ]] && division+=(-B)
    memcaslap -s "127.0.0.1:$PROXY_PORT" -x "$REQUESTS" -c 1 -T 1 -X 100 "${division[@]}" \
        >"$WORK/memcaslap.log" 2>&1
fi
kill -TERM "$proxy"
wait "$proxy" || true
total=$(callgrind_annotate "$OUT" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
echo "route: $ROUTE${CALLGRIND_MULTIGET:+ (keys per get: $CALLGRIND_MULTIGET)}${CALLGRIND_BINARY:+ (binary: $CALLGRIND_BINARY)}"
echo "instructions: $total for $REQUESTS requests (start-up and shutdown included)"
if ((REQUESTS > 0)); then
    echo "per request: $((total / REQUESTS)) (subtract a 0-request run's total first for the exact figure)"
fi
[[ -n ${CALLGRIND_OUT:-} ]] && echo "profile: $OUT (callgrind_annotate $OUT)"
