#!/usr/bin/env bash
# End-to-end comparison: the same memcaslap load against memcached directly, through twemproxy
# (nutcracker), and through bifrost (workers: 1, then workers: 2). Prints, per scenario:
#
#   target | ops/s | vs direct | proxy CPU µs/op | vs twemproxy | memcached CPU µs/op
#
# Usage: benches/e2e.sh [SCENARIO...]        scenarios: get_set (default), multiget
#
# Environment (defaults in brackets):
#   E2E_SECONDS [10]          duration of each memcaslap run
#   E2E_CONCURRENCY [32]      memcaslap -c (connections)
#   E2E_THREADS [2]           memcaslap -T
#   E2E_VALUE_SIZE [100]      value bytes
#   E2E_MULTIGET_KEYS [10]    keys per get in the multiget scenario (memcaslap -d)
#   E2E_BIFROST_WORKERS ["1 2"]  one bifrost run per entry
#   E2E_TARGETS ["memcached twemproxy bifrost"]
#   BIFROST_BIN               binary to run; unset: `cargo build --release` and target/release/bifrost
#   E2E_BIFROST_LOG_LEVEL [warn]
#   E2E_STRICT [0]            1: a target that fails to start or memcaslap failing fails the
#                             script; 2: an INVALID run (error replies, requests that did not
#                             reach memcached) too. 0: such rows are marked and the rest goes on
#   E2E_OUT                   also append the tables (markdown) to this file
#   E2E_KEEP [0]              1: keep the work directory (configs, logs, memcaslap output)
#
# Needs: memcached, memcaslap (libmemcached-tools), nutcracker, and cargo unless BIFROST_BIN is set.
# Every process it starts is stopped on exit, whatever the exit.
set -euo pipefail

E2E_SECONDS=${E2E_SECONDS:-10}
E2E_CONCURRENCY=${E2E_CONCURRENCY:-32}
E2E_THREADS=${E2E_THREADS:-2}
E2E_VALUE_SIZE=${E2E_VALUE_SIZE:-100}
E2E_MULTIGET_KEYS=${E2E_MULTIGET_KEYS:-10}
E2E_BIFROST_WORKERS=${E2E_BIFROST_WORKERS:-1 2}
E2E_TARGETS=${E2E_TARGETS:-memcached twemproxy bifrost}
E2E_BIFROST_LOG_LEVEL=${E2E_BIFROST_LOG_LEVEL:-warn}
E2E_STRICT=${E2E_STRICT:-0}
E2E_KEEP=${E2E_KEEP:-0}
E2E_OUT=${E2E_OUT:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/bifrost-e2e.XXXXXX")
CLK_TCK=$(getconf CLK_TCK)
PIDS=()         # every process started, stopped by cleanup
USED_PORTS=" "  # ports handed out by pick_port
LAST_PID=
MC_PORT=
MC_PID=

log() { printf '[e2e] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# processes

alive() { # PID: true while the process runs (a zombie does not count)
    local stat
    read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
    stat=${stat##*) }
    [[ ${stat:0:1} != Z ]]
}

stop_pid() { # PID: SIGTERM, up to 5 s, then SIGKILL; reaps it
    local pid=$1 i
    if alive "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            alive "$pid" || break
            sleep 0.05
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do stop_pid "$pid"; done
    if [[ $E2E_KEEP == 1 ]]; then log "kept $WORKDIR"; else rm -rf "$WORKDIR"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_bg() { # LOG CMD...: starts CMD in the background, output to LOG; sets LAST_PID
    local logfile=$1
    shift
    "$@" </dev/null >"$logfile" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

port_is_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pick_port() { # prints a loopback port nobody listens on (and not handed out before)
    local port i
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        [[ $USED_PORTS == *" $port "* ]] && continue
        if port_is_free "$port"; then
            USED_PORTS+="$port "
            echo "$port"
            return 0
        fi
    done
    die "no free port found"
}

probe() { # PORT: true if `get` of a missing key answers END (memcached, twemproxy and bifrost all do)
    local reply
    reply=$(
        exec 2>/dev/null
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        printf 'get e2e:probe\r\n' >&3
        timeout 1 head -c 5 <&3
    ) || return 1
    [[ $reply == END* ]]
}

wait_ready() { # NAME PID PORT LOG: deadline loop (10 s) until PORT answers; false if not
    local name=$1 pid=$2 port=$3 logfile=$4 deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        if ! alive "$pid"; then
            log "$name exited before answering on port $port; its log:"
            sed 's/^/    /' "$logfile" >&2 || true
            return 1
        fi
        probe "$port" && return 0
        sleep 0.05
    done
    log "$name did not answer on port $port within 10 s; its log:"
    sed 's/^/    /' "$logfile" >&2 || true
    return 1
}

backend_ops() { # cmd_get + cmd_set of our memcached (a multi-get counts each key)
    local fd line total=0
    local -a w
    exec {fd}<>"/dev/tcp/127.0.0.1/$MC_PORT"
    printf 'stats\r\n' >&"$fd"
    while IFS= read -r -t 2 line <&"$fd"; do
        line=${line%$'\r'}
        [[ $line == END ]] && break
        read -r -a w <<<"$line"
        [[ ${w[1]} == cmd_get || ${w[1]} == cmd_set ]] && total=$((total + w[2]))
    done
    exec {fd}>&-
    echo "$total"
}

cpu_ticks() { # PID: utime + stime of the whole process (all threads), in clock ticks
    local stat rest
    local -a f
    read -r stat <"/proc/$1/stat"
    rest=${stat##*) } # the command name may contain spaces; fields after it are fixed
    read -r -a f <<<"$rest"
    echo $((f[11] + f[12])) # fields 14 and 15 of stat(5); rest starts at field 3
}

# ---------------------------------------------------------------------------------------------
# the servers

start_memcached() {
    local args=(-l 127.0.0.1 -U 0 -m 1024 -t 4 -c 4096) _
    [[ $EUID -eq 0 ]] && args+=(-u root) # memcached refuses root without -u
    for _ in 1 2 3; do
        MC_PORT=$(pick_port)
        start_bg "$WORKDIR/memcached.log" memcached "${args[@]}" -p "$MC_PORT"
        MC_PID=$LAST_PID
        wait_ready memcached "$MC_PID" "$MC_PORT" "$WORKDIR/memcached.log" && return 0
        grep -qi 'address already in use' "$WORKDIR/memcached.log" || break
    done
    die "memcached did not start"
}

# Each start_<target> starts a proxy in front of memcached; sets TARGET_PORT and TARGET_PID,
# or returns false (after logging why).

start_twemproxy() {
    local port stats_port conf=$WORKDIR/nutcracker.yml
    port=$(pick_port)
    stats_port=$(pick_port)
    cat >"$conf" <<EOF
e2e:
  listen: 127.0.0.1:$port
  hash: fnv1a_64
  distribution: ketama
  timeout: 60000
  auto_eject_hosts: false
  preconnect: true
  servers:
    - 127.0.0.1:$MC_PORT:1
EOF
    start_bg "$WORKDIR/nutcracker.log" nutcracker -c "$conf" -s "$stats_port" -a 127.0.0.1 \
        -p "$WORKDIR/nutcracker.pid" -v 4
    TARGET_PID=$LAST_PID
    TARGET_PORT=$port
    wait_ready twemproxy "$TARGET_PID" "$TARGET_PORT" "$WORKDIR/nutcracker.log"
}

start_bifrost() { # WORKERS
    local workers=$1 port conf=$WORKDIR/bifrost-w$1.yaml
    [[ -n ${BIFROST:-} ]] || { log "bifrost: no binary (see above)"; return 1; }
    port=$(pick_port)
    cat >"$conf" <<EOF
workers: $workers
listeners:
  - name: main
    bind: 127.0.0.1:$port
backends:
  b1:
    servers: ["127.0.0.1:$MC_PORT"]
    timeout: 1s
routes:
  - name: all
    match: "*"
    strategy: blind_forward
    backend: b1
EOF
    start_bg "$WORKDIR/bifrost-w$workers.log" "$BIFROST" --config "$conf" \
        --log-level "$E2E_BIFROST_LOG_LEVEL"
    TARGET_PID=$LAST_PID
    TARGET_PORT=$port
    wait_ready "bifrost (workers: $workers)" "$TARGET_PID" "$TARGET_PORT" "$WORKDIR/bifrost-w$workers.log"
}

find_bifrost() { # sets BIFROST, or leaves it empty (bifrost rows are then skipped)
    BIFROST=
    if [[ -n ${BIFROST_BIN:-} ]]; then
        if [[ -x $BIFROST_BIN ]]; then
            BIFROST=$BIFROST_BIN
        else
            log "BIFROST_BIN=$BIFROST_BIN is not executable; bifrost rows will be skipped"
        fi
        return 0
    fi
    log "building bifrost: cargo build --release (log: $WORKDIR/cargo.log)"
    if (cd "$ROOT" && cargo build --release --bin bifrost) >"$WORKDIR/cargo.log" 2>&1; then
        BIFROST=$ROOT/target/release/bifrost
    else
        log "cargo build --release failed; bifrost rows will be skipped. Last lines:"
        tail -n 15 "$WORKDIR/cargo.log" | sed 's/^/    /' >&2
    fi
}

# ---------------------------------------------------------------------------------------------
# the load

write_load_cfg() { # memcaslap --cfg_cmd file: 32-byte keys, fixed values, 90% get / 10% set
    cat >"$WORKDIR/load.cfg" <<EOF
key
32 32 1
value
$E2E_VALUE_SIZE $E2E_VALUE_SIZE 1
cmd
0 0.1
1 0.9
EOF
}

# Runs memcaslap against PORT; sets RUN_OPS_S, RUN_OPS, RUN_PROXY_TICKS, RUN_MC_TICKS,
# RUN_ERRORS (error replies memcaslap saw) and RUN_BACKEND_OPS (what reached memcached).
# PROXY_PID may be empty (memcached direct). False if memcaslap failed.
run_load() { # NAME PORT PROXY_PID
    local name=$1 port=$2 proxy_pid=$3 out=$WORKDIR/memcaslap-$1.out
    local p0=0 p1=0 m0 m1 b0 b1 rc=0
    RUN_OPS="" RUN_OPS_S=""
    b0=$(backend_ops)
    [[ -n $proxy_pid ]] && p0=$(cpu_ticks "$proxy_pid")
    m0=$(cpu_ticks "$MC_PID")
    timeout $((E2E_SECONDS + 60)) memcaslap -s "127.0.0.1:$port" -c "$E2E_CONCURRENCY" \
        -T "$E2E_THREADS" -t "${E2E_SECONDS}s" -X "$E2E_VALUE_SIZE" \
        --cfg_cmd="$WORKDIR/load.cfg" "${LOAD_ARGS[@]}" >"$out" 2>&1 || rc=$?
    [[ -n $proxy_pid ]] && p1=$(cpu_ticks "$proxy_pid")
    m1=$(cpu_ticks "$MC_PID")
    b1=$(backend_ops)
    # The summary line: "Run time: 10.0s Ops: 1234567 TPS: 123456 Net_rate: 22.0M/s"
    read -r RUN_OPS RUN_OPS_S < <(awk '/^Run time:/ { print $5, $7 }' "$out") || true
    if [[ $rc -ne 0 || -z ${RUN_OPS:-} || ${RUN_OPS:-0} -eq 0 ]]; then
        log "$name: memcaslap failed (exit $rc); its output:"
        tail -n 20 "$out" | sed 's/^/    /' >&2
        return 1
    fi
    RUN_PROXY_TICKS=$((p1 - p0))
    RUN_MC_TICKS=$((m1 - m0))
    RUN_BACKEND_OPS=$((b1 - b0))
    # memcaslap counts any reply as an op, errors included, and prints "<fd ERROR-LINE" for them.
    RUN_ERRORS=$(grep -c 'ERROR' "$out" || true)
}

# Results of the current scenario, one entry per row.
ROW_NAME=() ROW_OPS_S=() ROW_PROXY_US=() ROW_MC_US=() ROW_OK=()

add_row() { # NAME OPS_S PROXY_US MC_US OK ("-" where not applicable; OK=0: no ratios)
    ROW_NAME+=("$1") ROW_OPS_S+=("$2") ROW_PROXY_US+=("$3") ROW_MC_US+=("$4") ROW_OK+=("$5")
}

us_per_op() { # TICKS OPS
    awk -v t="$1" -v ops="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz * 1e6 / ops }'
}

measure() { # NAME PORT PROXY_PID
    local name=$1 port=$2 proxy_pid=$3 proxy_us=- mc_us problem=""
    log "$name: memcaslap for ${E2E_SECONDS}s on port $port"
    if ! run_load "$name" "$port" "$proxy_pid"; then
        ((E2E_STRICT >= 1)) && die "$name failed"
        add_row "$name (failed)" - - - 0
        return 0
    fi
    [[ -n $proxy_pid ]] && proxy_us=$(us_per_op "$RUN_PROXY_TICKS" "$RUN_OPS")
    mc_us=$(us_per_op "$RUN_MC_TICKS" "$RUN_OPS")
    # A run is valid only if the ops were answered without errors and did reach memcached.
    ((RUN_ERRORS == 0)) || problem="$RUN_ERRORS error replies"
    if ((RUN_BACKEND_OPS * 100 < RUN_OPS * 95)); then
        problem+="${problem:+, }memcached saw $((RUN_BACKEND_OPS * 100 / RUN_OPS))% of the ops"
    fi
    if [[ -n $problem ]]; then
        log "$name: INVALID run: $problem; first errors (E2E_KEEP=1 keeps $WORKDIR):"
        grep -m 3 'ERROR' "$WORKDIR/memcaslap-$name.out" | cat -v | sed 's/^/    /' >&2 || true
        ((E2E_STRICT >= 2)) && die "$name: invalid run"
        add_row "$name (INVALID: $problem)" "$RUN_OPS_S" "$proxy_us" "$mc_us" 0
        return 0
    fi
    add_row "$name" "$RUN_OPS_S" "$proxy_us" "$mc_us" 1
}

run_target() { # memcached | twemproxy | bifrost:WORKERS
    local target=$1 name
    case $target in
    memcached)
        measure "memcached direct" "$MC_PORT" ""
        ;;
    twemproxy)
        if start_twemproxy; then
            measure twemproxy "$TARGET_PORT" "$TARGET_PID"
            stop_pid "$TARGET_PID"
        else
            ((E2E_STRICT >= 1)) && die "twemproxy did not start"
            add_row "twemproxy (skipped: did not start)" - - - 0
        fi
        ;;
    bifrost:*)
        name="bifrost workers=${target#bifrost:}"
        if start_bifrost "${target#bifrost:}"; then
            measure "$name" "$TARGET_PORT" "$TARGET_PID"
            stop_pid "$TARGET_PID"
        else
            ((E2E_STRICT >= 1)) && die "$name did not start"
            add_row "$name (skipped: did not start)" - - - 0
        fi
        ;;
    *) die "unknown target $target" ;;
    esac
}

print_table() { # TITLE
    local i direct="" twem="" ops_s vs_direct proxy_us vs_twem table
    for i in "${!ROW_NAME[@]}"; do
        [[ ${ROW_NAME[$i]} == "memcached direct" ]] && direct=${ROW_OPS_S[$i]}
        [[ ${ROW_NAME[$i]} == twemproxy ]] && twem=${ROW_PROXY_US[$i]}
    done
    table=$(
        echo "### $1"
        echo
        echo "| target | ops/s | vs direct | proxy CPU µs/op | vs twemproxy | memcached CPU µs/op |"
        echo "|---|---:|---:|---:|---:|---:|"
        for i in "${!ROW_NAME[@]}"; do
            ops_s=${ROW_OPS_S[$i]} proxy_us=${ROW_PROXY_US[$i]} vs_direct=- vs_twem=-
            if [[ ${ROW_OK[$i]} != 1 && $ops_s != - ]]; then # shown, but not to be compared
                ops_s="($ops_s)"
                [[ $proxy_us == - ]] || proxy_us="($proxy_us)"
            fi
            if [[ ${ROW_OK[$i]} == 1 && -n $direct ]]; then
                vs_direct=$(awk -v a="$ops_s" -v b="$direct" 'BEGIN { printf "%.2f", a / b }')
            fi
            if [[ ${ROW_OK[$i]} == 1 && $proxy_us != - && -n $twem ]]; then
                vs_twem=$(awk -v a="$proxy_us" -v b="$twem" 'BEGIN { printf (b > 0 ? "%.2f" : "-"), a / b }')
            fi
            printf '| %s | %s | %s | %s | %s | %s |\n' "${ROW_NAME[$i]}" "$ops_s" "$vs_direct" \
                "$proxy_us" "$vs_twem" "${ROW_MC_US[$i]}"
        done
    )
    printf '\n%s\n\n' "$table"
    [[ -z $E2E_OUT ]] || printf '%s\n\n' "$table" >>"$E2E_OUT"
}

# ---------------------------------------------------------------------------------------------
# scenarios: each sets TITLE and LOAD_ARGS (extra memcaslap arguments)

scenario_get_set() {
    TITLE="get_set: 90% get / 10% set, ${E2E_VALUE_SIZE}-byte values"
    LOAD_ARGS=()
}

scenario_multiget() {
    TITLE="multiget: gets of $E2E_MULTIGET_KEYS keys (ops count keys), 10% set, ${E2E_VALUE_SIZE}-byte values"
    LOAD_ARGS=(-d "$E2E_MULTIGET_KEYS")
}

run_scenario() { # NAME
    local target workers
    declare -F "scenario_$1" >/dev/null || die "unknown scenario $1 (get_set, multiget)"
    "scenario_$1"
    ROW_NAME=() ROW_OPS_S=() ROW_PROXY_US=() ROW_MC_US=() ROW_OK=()
    for target in $E2E_TARGETS; do
        if [[ $target == bifrost ]]; then
            for workers in $E2E_BIFROST_WORKERS; do run_target "bifrost:$workers"; done
        else
            run_target "$target"
        fi
    done
    print_table "$TITLE"
}

main() {
    local tool scenario
    for tool in memcached memcaslap nutcracker awk timeout; do
        command -v "$tool" >/dev/null || die "$tool not found (apt-get install memcached libmemcached-tools nutcracker)"
    done
    [[ " $E2E_TARGETS " == *" bifrost "* ]] && find_bifrost
    write_load_cfg
    start_memcached
    log "memcached on port $MC_PORT (pid $MC_PID); $(nproc) cores; $E2E_CONCURRENCY connections," \
        "$E2E_THREADS memcaslap threads, ${E2E_SECONDS}s per run"
    for scenario in "${@:-get_set}"; do run_scenario "$scenario"; done
}

main "$@"
