#!/usr/bin/env bash
# End-to-end comparison: the same memcaslap load against memcached directly, through twemproxy
# (nutcracker), and through bifrost (workers: 1, then workers: 2). Prints, per scenario:
#
#   target | ops/s | vs direct | proxy CPU µs/op | vs twemproxy | memcached CPU µs/op
#
# and for multiget4 (multi-gets over a pool of 4 memcached, keys spread by a ketama ring):
#
#   target | keys/s | gets/s | vs direct | proxy CPU µs/key | keys per CPU-s vs twemproxy |
#   memcached CPU µs/key | keys per server % | placement = twemproxy
#
# Usage: benches/e2e.sh [SCENARIO...]        scenarios: get_set (default), multiget, multiget4
#
# Environment (defaults in brackets):
#   E2E_SECONDS [10]          duration of each memcaslap run
#   E2E_CONCURRENCY [32]      memcaslap -c (connections)
#   E2E_THREADS [2]           memcaslap -T
#   E2E_VALUE_SIZE [100]      value bytes
#   E2E_MULTIGET_KEYS [10]    keys per get in the multiget scenario (memcaslap -d)
#   E2E_MULTIGET4_KEYS [100]  keys per get in the multiget4 scenario (memcaslap -d)
#   E2E_MULTIGET4_SET_PROP [0.01]  share of memcaslap's keys that are sets in multiget4
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
E2E_MULTIGET4_KEYS=${E2E_MULTIGET4_KEYS:-100}
E2E_MULTIGET4_SET_PROP=${E2E_MULTIGET4_SET_PROP:-0.01}
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
# The memcached the current scenario runs against (one for get_set and multiget, four for
# multiget4): ports and pids, in the same order. Set by use_backends.
BACKEND_PORTS=()
BACKEND_PIDS=()
SINGLE_PORTS=() SINGLE_PIDS=() # the one memcached of get_set / multiget, started on first use
POOL4_PORTS=() POOL4_PIDS=()   # the four of multiget4, started on first use

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

# Ports to pick from: outside the kernel's ephemeral range, whose ports are the local ports of
# outgoing connections (memcaslap's, the proxies') — a listener cannot bind one of those in use,
# yet nothing answers on it, so the check below would not see it.
PORT_LOW=20000 PORT_COUNT=40000
if read -r EPH_LOW EPH_HIGH </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null; then
    if ((EPH_LOW > 21024)); then
        PORT_LOW=20000 PORT_COUNT=$((EPH_LOW - 20000))
    elif ((EPH_HIGH < 64511)); then
        PORT_LOW=$((EPH_HIGH + 1)) PORT_COUNT=$((65535 - EPH_HIGH))
    fi
fi

pick_port() { # prints a loopback port nobody listens on (and not handed out before)
    local port i
    for ((i = 0; i < 200; i++)); do
        port=$((PORT_LOW + (RANDOM * 32768 + RANDOM) % PORT_COUNT))
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

server_ops() { # PORT: cmd_get + cmd_set of that memcached (a multi-get counts each key)
    local fd line total=0
    local -a w
    exec {fd}<>"/dev/tcp/127.0.0.1/$1"
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

BOPS_TOTAL=0 BOPS_EACH=()
backend_ops() { # sets BOPS_EACH (server_ops of each backend server) and BOPS_TOTAL (their sum)
    local port n
    BOPS_TOTAL=0 BOPS_EACH=()
    for port in "${BACKEND_PORTS[@]}"; do
        n=$(server_ops "$port")
        BOPS_EACH+=("$n")
        BOPS_TOTAL=$((BOPS_TOTAL + n))
    done
}

cpu_ticks() { # PID: utime + stime of the whole process (all threads), in clock ticks
    local stat rest
    local -a f
    read -r stat <"/proc/$1/stat"
    rest=${stat##*) } # the command name may contain spaces; fields after it are fixed
    read -r -a f <<<"$rest"
    echo $((f[11] + f[12])) # fields 14 and 15 of stat(5); rest starts at field 3
}

backend_ticks() { # cpu_ticks summed over the backend memcached
    local pid total=0
    for pid in "${BACKEND_PIDS[@]}"; do total=$((total + $(cpu_ticks "$pid"))); done
    echo "$total"
}

# ---------------------------------------------------------------------------------------------
# the servers

MC_PORT="" MC_PID=""
start_memcached() { # NAME MEGABYTES THREADS: starts one memcached; sets MC_PORT and MC_PID
    local name=$1 args=(-l 127.0.0.1 -U 0 -m "$2" -t "$3" -c 4096) _
    [[ $EUID -eq 0 ]] && args+=(-u root) # memcached refuses root without -u
    for _ in 1 2 3; do
        MC_PORT=$(pick_port)
        start_bg "$WORKDIR/$name.log" memcached "${args[@]}" -p "$MC_PORT"
        MC_PID=$LAST_PID
        wait_ready "$name" "$MC_PID" "$MC_PORT" "$WORKDIR/$name.log" && return 0
        grep -qi 'address already in use' "$WORKDIR/$name.log" || break
    done
    die "$name did not start"
}

use_backends() { # single | pool4: starts them on first use; sets BACKEND_PORTS and BACKEND_PIDS
    local i
    case $1 in
    single)
        if ((${#SINGLE_PORTS[@]} == 0)); then
            start_memcached memcached 1024 4
            SINGLE_PORTS=("$MC_PORT") SINGLE_PIDS=("$MC_PID")
            log "memcached on port $MC_PORT (pid $MC_PID)"
        fi
        BACKEND_PORTS=("${SINGLE_PORTS[@]}") BACKEND_PIDS=("${SINGLE_PIDS[@]}")
        ;;
    pool4)
        if ((${#POOL4_PORTS[@]} == 0)); then
            for i in 1 2 3 4; do
                start_memcached "memcached-pool$i" 256 1
                POOL4_PORTS+=("$MC_PORT") POOL4_PIDS+=("$MC_PID")
            done
            log "pool of 4 memcached on ports ${POOL4_PORTS[*]} (pids ${POOL4_PIDS[*]})"
        fi
        BACKEND_PORTS=("${POOL4_PORTS[@]}") BACKEND_PIDS=("${POOL4_PIDS[@]}")
        ;;
    *) die "unknown backend set $1" ;;
    esac
}

# Each start_<target> starts a proxy in front of memcached; sets TARGET_PORT and TARGET_PID,
# or returns false (after logging why).

start_twemproxy() {
    local port stats_port conf=$WORKDIR/nutcracker.yml mc
    port=$(pick_port)
    stats_port=$(pick_port)
    {
        cat <<EOF
e2e:
  listen: 127.0.0.1:$port
  hash: fnv1a_64
  distribution: ketama
  timeout: 60000
  auto_eject_hosts: false
  preconnect: true
  servers:
EOF
        for mc in "${BACKEND_PORTS[@]}"; do echo "    - 127.0.0.1:$mc:1"; done
    } >"$conf"
    # -o: without it the Debian package logs to /var/log/nutcracker/, not to stderr.
    start_bg "$WORKDIR/nutcracker.log" nutcracker -c "$conf" -s "$stats_port" -a 127.0.0.1 \
        -p "$WORKDIR/nutcracker.pid" -o "$WORKDIR/nutcracker.log" -v 4
    TARGET_PID=$LAST_PID
    TARGET_PORT=$port
    wait_ready twemproxy "$TARGET_PID" "$TARGET_PORT" "$WORKDIR/nutcracker.log"
}

start_bifrost() { # WORKERS
    local workers=$1 port conf=$WORKDIR/bifrost-w$1.yaml servers="" mc
    [[ -n ${BIFROST:-} ]] || { log "bifrost: no binary (see above)"; return 1; }
    port=$(pick_port)
    for mc in "${BACKEND_PORTS[@]}"; do servers+="${servers:+, }\"127.0.0.1:$mc\""; done
    if ((${#BACKEND_PORTS[@]} == 1)); then
        cat >"$conf" <<EOF
workers: $workers
listeners:
  - name: main
    bind: 127.0.0.1:$port
backends:
  b1:
    servers: [$servers]
    timeout: 1s
routes:
  - name: all
    match: "*"
    strategy: blind_forward
    backend: b1
EOF
    else # the same ring as twemproxy's
        cat >"$conf" <<EOF
workers: $workers
listeners:
  - name: main
    bind: 127.0.0.1:$port
backends:
  pool:
    servers: [$servers]
    distribution: ketama
    hash: fnv1a_64
    timeout: 1s
routes:
  - name: all
    match: "*"
    strategy: consistent_hash
    backend: pool
EOF
    fi
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

write_load_cfg() { # FILE SET_PROP: memcaslap --cfg_cmd file: 32-byte keys, fixed values,
    # SET_PROP of the keys set, the rest read (cmd 0 is set, 1 is get). With -d, memcaslap draws
    # each key's command by these proportions, sends a set at once and gathers gets until it
    # has -d keys: the proportions are of keys, not of requests.
    local get_prop
    get_prop=$(awk -v s="$2" 'BEGIN { printf "%g", 1 - s }')
    cat >"$1" <<EOF
key
32 32 1
value
$E2E_VALUE_SIZE $E2E_VALUE_SIZE 1
cmd
0 $2
1 $get_prop
EOF
}

# Runs memcaslap against SERVERS (memcaslap -s: host:port[,host:port...]); sets RUN_OPS_S,
# RUN_OPS, RUN_SECONDS, RUN_GET_KEYS and RUN_MISSES (memcaslap's cmd_get and get_misses, in
# keys), RUN_PROXY_TICKS, RUN_MC_TICKS, RUN_ERRORS (error replies memcaslap saw),
# RUN_BACKEND_OPS (what reached memcached) and RUN_BACKEND_EACH (the same per server).
# PROXY_PID may be empty (memcached direct). False if memcaslap failed.
run_load() { # NAME SERVERS PROXY_PID
    local name=$1 servers=$2 proxy_pid=$3 out=$WORKDIR/memcaslap-$1.out
    local p0=0 p1=0 m0 m1 b0 rc=0 i
    local -a each0
    RUN_OPS="" RUN_OPS_S="" RUN_SECONDS="" RUN_GET_KEYS=0 RUN_MISSES=0 RUN_BACKEND_EACH=()
    backend_ops
    b0=$BOPS_TOTAL each0=("${BOPS_EACH[@]}")
    [[ -n $proxy_pid ]] && p0=$(cpu_ticks "$proxy_pid")
    m0=$(backend_ticks)
    timeout $((E2E_SECONDS + 60)) memcaslap -s "$servers" -c "$E2E_CONCURRENCY" \
        -T "$E2E_THREADS" -t "${E2E_SECONDS}s" -X "$E2E_VALUE_SIZE" \
        --cfg_cmd="$LOAD_CFG" "${LOAD_ARGS[@]}" >"$out" 2>&1 || rc=$?
    [[ -n $proxy_pid ]] && p1=$(cpu_ticks "$proxy_pid")
    m1=$(backend_ticks)
    backend_ops
    # The summary line: "Run time: 10.0s Ops: 1234567 TPS: 123456 Net_rate: 22.0M/s"
    read -r RUN_SECONDS RUN_OPS RUN_OPS_S < <(
        awk '/^Run time:/ { sub(/s$/, "", $3); print $3, $5, $7 }' "$out"
    ) || true
    # The totals above it: "cmd_get: 1377600" (keys: each key of a multi-get counts) and
    # "get_misses: 0" (keys). With -S, per-period blocks of the same names come first.
    RUN_GET_KEYS=$(awk '/^cmd_get:/ { n = $2 } END { print n + 0 }' "$out")
    RUN_MISSES=$(awk '/^get_misses:/ { n = $2 } END { print n + 0 }' "$out")
    if [[ $rc -ne 0 || -z ${RUN_OPS:-} || ${RUN_OPS:-0} -eq 0 ]]; then
        log "$name: memcaslap failed (exit $rc); its output:"
        tail -n 20 "$out" | sed 's/^/    /' >&2
        return 1
    fi
    RUN_PROXY_TICKS=$((p1 - p0))
    RUN_MC_TICKS=$((m1 - m0))
    RUN_BACKEND_OPS=$((BOPS_TOTAL - b0))
    for i in "${!BOPS_EACH[@]}"; do RUN_BACKEND_EACH+=($((BOPS_EACH[i] - each0[i]))); done
    # memcaslap counts any reply as an op, errors included, and prints "<fd ERROR-LINE" for them.
    RUN_ERRORS=$(grep -c 'ERROR' "$out" || true)
}

# Results of the current scenario, one entry per row. ROW_GETS_S (multi-gets per second),
# ROW_SHARE (each server's share of the keys) and ROW_PLACE (placement compared with
# twemproxy's) are only filled for a pool of several servers, from ROW_EXTRA_* (then cleared).
ROW_NAME=() ROW_OPS_S=() ROW_PROXY_US=() ROW_MC_US=() ROW_OK=() ROW_GETS_S=() ROW_SHARE=() ROW_PLACE=()
ROW_EXTRA_GETS_S="" ROW_EXTRA_SHARE="" ROW_EXTRA_PLACE=""

add_row() { # NAME OPS_S PROXY_US MC_US OK ("-" where not applicable; OK=0: no ratios)
    ROW_NAME+=("$1") ROW_OPS_S+=("$2") ROW_PROXY_US+=("$3") ROW_MC_US+=("$4") ROW_OK+=("$5")
    ROW_GETS_S+=("${ROW_EXTRA_GETS_S:--}") ROW_SHARE+=("${ROW_EXTRA_SHARE:--}")
    ROW_PLACE+=("${ROW_EXTRA_PLACE:--}")
    ROW_EXTRA_GETS_S="" ROW_EXTRA_SHARE="" ROW_EXTRA_PLACE=""
}

# Placement: which backend server holds each of PLACEMENT_KEYS keys set through a proxy, one
# character per key (the server's index in BACKEND_PORTS; "?" for none, "*" for several).
# Two proxies with the same string place keys alike (the same ring). The keys are deleted
# afterwards, directly on every server, before the load's counters are read.
PLACEMENT_KEYS=200
placement() { # PORT: prints the signature; false if the proxy did not store every key
    local port=$1 fd i s line req="" dels="" keys="" sig=""
    local -a where w
    for ((i = 0; i < PLACEMENT_KEYS; i++)); do
        req+="set e2e:place:$i 0 0 1\r\nx\r\n"
        dels+="delete e2e:place:$i\r\n"
        keys+=" e2e:place:$i"
        where[i]="?"
    done
    exec {fd}<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf '%b' "$req" >&"$fd"
    for ((i = 0; i < PLACEMENT_KEYS; i++)); do
        if ! IFS= read -r -t 2 line <&"$fd" || [[ $line != STORED* ]]; then
            exec {fd}>&-
            return 1
        fi
    done
    exec {fd}>&-
    for s in "${!BACKEND_PORTS[@]}"; do
        exec {fd}<>"/dev/tcp/127.0.0.1/${BACKEND_PORTS[s]}" || return 1
        printf 'get%s\r\n' "$keys" >&"$fd"
        while IFS= read -r -t 2 line <&"$fd"; do
            line=${line%$'\r'}
            [[ $line == END ]] && break
            read -r -a w <<<"$line"
            [[ ${w[0]:-} == VALUE ]] || continue
            i=${w[1]#e2e:place:}
            if [[ ${where[i]} == "?" ]]; then where[i]=$s; else where[i]="*"; fi
            IFS= read -r -t 2 line <&"$fd" || break # the value
        done
        printf '%b' "$dels" >&"$fd"
        for ((i = 0; i < PLACEMENT_KEYS; i++)); do IFS= read -r -t 2 line <&"$fd" || break; done
        exec {fd}>&-
    done
    for ((i = 0; i < PLACEMENT_KEYS; i++)); do sig+=${where[i]}; done
    echo "$sig"
}

shares() { # the run's keys per backend server, in % of all: "25/24/26/25"
    local out="" n
    for n in "${RUN_BACKEND_EACH[@]}"; do
        out+="${out:+/}$(awk -v n="$n" -v t="$RUN_BACKEND_OPS" 'BEGIN { printf "%.0f", (t > 0 ? n * 100 / t : 0) }')"
    done
    echo "$out"
}

us_per_op() { # TICKS OPS
    awk -v t="$1" -v ops="$2" -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", t / hz * 1e6 / ops }'
}

measure() { # NAME SERVERS PROXY_PID
    local name=$1 servers=$2 proxy_pid=$3 proxy_us=- mc_us problem=""
    log "$name: memcaslap for ${E2E_SECONDS}s on $servers"
    if ! run_load "$name" "$servers" "$proxy_pid"; then
        ((E2E_STRICT >= 1)) && die "$name failed"
        add_row "$name (failed)" - - - 0
        return 0
    fi
    [[ -n $proxy_pid ]] && proxy_us=$(us_per_op "$RUN_PROXY_TICKS" "$RUN_OPS")
    mc_us=$(us_per_op "$RUN_MC_TICKS" "$RUN_OPS")
    if ((${#BACKEND_PORTS[@]} > 1)); then
        ROW_EXTRA_SHARE=$(shares)
        ROW_EXTRA_GETS_S=$(awk -v k="$RUN_GET_KEYS" -v d="$MULTIGET_KEYS" -v t="$RUN_SECONDS" \
            'BEGIN { printf "%.0f", (t > 0 ? k / d / t : 0) }')
    fi
    # A run is valid only if the ops were answered without errors, reached memcached (no less,
    # and no more, than memcaslap counted) and the gets found their keys.
    ((RUN_ERRORS == 0)) || problem="$RUN_ERRORS error replies"
    if ((RUN_BACKEND_OPS * 100 < RUN_OPS * 95 || RUN_BACKEND_OPS * 100 > RUN_OPS * 105)); then
        problem+="${problem:+, }memcached saw $((RUN_BACKEND_OPS * 100 / RUN_OPS))% of the ops"
    fi
    if ((RUN_MISSES * 100 > RUN_GET_KEYS)); then
        problem+="${problem:+, }$RUN_MISSES of $RUN_GET_KEYS keys missed"
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

TWEMPROXY_PLACEMENT= # twemproxy's placement signature in the current scenario

check_placement() { # NAME: with several backend servers, sets ROW_EXTRA_PLACE for the next row
    local sig same=0 i
    ((${#BACKEND_PORTS[@]} > 1)) || return 0
    if ! sig=$(placement "$TARGET_PORT"); then
        log "$1: did not store the placement keys"
        ROW_EXTRA_PLACE="failed"
        return 0
    fi
    if [[ $1 == twemproxy ]]; then
        TWEMPROXY_PLACEMENT=$sig
        ROW_EXTRA_PLACE="(reference)"
    elif [[ -n $TWEMPROXY_PLACEMENT ]]; then
        for ((i = 0; i < ${#sig}; i++)); do
            [[ ${sig:i:1} == "${TWEMPROXY_PLACEMENT:i:1}" ]] && same=$((same + 1))
        done
        ROW_EXTRA_PLACE="$same/${#sig} keys"
        ((same == ${#sig})) || log "$1: places $((${#sig} - same)) of ${#sig} keys elsewhere than twemproxy"
    fi
}

run_target() { # memcached | twemproxy | bifrost:WORKERS
    local target=$1 name servers="" port
    case $target in
    memcached)
        # memcaslap gives each of its threads one server of the list (thread i: server i mod n).
        for port in "${BACKEND_PORTS[@]}"; do servers+="${servers:+,}127.0.0.1:$port"; done
        measure "memcached direct" "$servers" ""
        ;;
    twemproxy)
        if start_twemproxy; then
            check_placement twemproxy
            measure twemproxy "127.0.0.1:$TARGET_PORT" "$TARGET_PID"
            stop_pid "$TARGET_PID"
        else
            ((E2E_STRICT >= 1)) && die "twemproxy did not start"
            add_row "twemproxy (skipped: did not start)" - - - 0
        fi
        ;;
    bifrost:*)
        name="bifrost workers=${target#bifrost:}"
        if start_bifrost "${target#bifrost:}"; then
            check_placement "$name"
            measure "$name" "127.0.0.1:$TARGET_PORT" "$TARGET_PID"
            stop_pid "$TARGET_PID"
        else
            ((E2E_STRICT >= 1)) && die "$name did not start"
            add_row "$name (skipped: did not start)" - - - 0
        fi
        ;;
    *) die "unknown target $target" ;;
    esac
}

# Sets DIRECT (memcached direct's ops/s) and TWEM (twemproxy's proxy CPU µs/op) from the rows.
reference_rows() {
    local i
    DIRECT="" TWEM=""
    for i in "${!ROW_NAME[@]}"; do
        [[ ${ROW_NAME[$i]} == "memcached direct" ]] && DIRECT=${ROW_OPS_S[$i]}
        [[ ${ROW_NAME[$i]} == twemproxy ]] && TWEM=${ROW_PROXY_US[$i]}
    done
    return 0 # the last test above may be false; under set -e that must not end the script
}

# Sets OPS_S, PROXY_US, VS_DIRECT and VS_TWEM for row $1. VS_TWEM is the row's CPU per op over
# twemproxy's, or with $2 = inverse, twemproxy's over the row's (keys per CPU-second).
row_ratios() { # ROW [inverse]
    local i=$1 expr='a / b'
    [[ ${2:-} == inverse ]] && expr='b / a'
    OPS_S=${ROW_OPS_S[$i]} PROXY_US=${ROW_PROXY_US[$i]} VS_DIRECT=- VS_TWEM=-
    if [[ ${ROW_OK[$i]} != 1 && $OPS_S != - ]]; then # shown, but not to be compared
        OPS_S="($OPS_S)"
        [[ $PROXY_US == - ]] || PROXY_US="($PROXY_US)"
    fi
    if [[ ${ROW_OK[$i]} == 1 && -n $DIRECT ]]; then
        VS_DIRECT=$(awk -v a="$OPS_S" -v b="$DIRECT" 'BEGIN { printf "%.2f", a / b }')
    fi
    if [[ ${ROW_OK[$i]} == 1 && $PROXY_US != - && -n $TWEM ]]; then
        VS_TWEM=$(awk -v a="$PROXY_US" -v b="$TWEM" \
            "BEGIN { printf (a > 0 && b > 0 ? \"%.2f\" : \"-\"), $expr }")
    fi
}

# Prints a finished table (and appends it to E2E_OUT if set).
emit_table() { # TABLE_TEXT
    printf '\n%s\n\n' "$1"
    [[ -z $E2E_OUT ]] || printf '%s\n\n' "$1" >>"$E2E_OUT"
}

print_table() { # TITLE
    local i table
    reference_rows
    table=$(
        echo "### $1"
        echo
        echo "| target | ops/s | vs direct | proxy CPU µs/op | vs twemproxy | memcached CPU µs/op |"
        echo "|---|---:|---:|---:|---:|---:|"
        for i in "${!ROW_NAME[@]}"; do
            row_ratios "$i"
            printf '| %s | %s | %s | %s | %s | %s |\n' "${ROW_NAME[$i]}" "$OPS_S" "$VS_DIRECT" \
                "$PROXY_US" "$VS_TWEM" "${ROW_MC_US[$i]}"
        done
    )
    emit_table "$table"
}

print_keys_table() { # TITLE: the table of a scenario over a pool (an op is a key)
    local i table
    reference_rows
    table=$(
        echo "### $1"
        echo
        echo "| target | keys/s | gets/s | vs direct | proxy CPU µs/key | keys per CPU-s vs twemproxy | memcached CPU µs/key | keys per server % | placement = twemproxy |"
        echo "|---|---:|---:|---:|---:|---:|---:|---|---|"
        for i in "${!ROW_NAME[@]}"; do
            # Keys per CPU-second is 1 / (CPU per key): twemproxy's µs/key over this row's.
            row_ratios "$i" inverse
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${ROW_NAME[$i]}" "$OPS_S" \
                "${ROW_GETS_S[$i]}" "$VS_DIRECT" "$PROXY_US" "$VS_TWEM" "${ROW_MC_US[$i]}" \
                "${ROW_SHARE[$i]}" "${ROW_PLACE[$i]}"
        done
    )
    emit_table "$table"
}

# ---------------------------------------------------------------------------------------------
# scenarios: each sets TITLE, BACKENDS (single | pool4), LOAD_CFG (memcaslap --cfg_cmd file),
# LOAD_ARGS (extra memcaslap arguments), MULTIGET_KEYS (memcaslap -d; 1 without) and TABLE
# (ops | keys: which table)

scenario_get_set() {
    TITLE="get_set: 90% get / 10% set, ${E2E_VALUE_SIZE}-byte values"
    BACKENDS=single LOAD_CFG=$WORKDIR/load.cfg MULTIGET_KEYS=1 TABLE=ops
    LOAD_ARGS=()
}

scenario_multiget() {
    TITLE="multiget: gets of $E2E_MULTIGET_KEYS keys (ops count keys), 10% set, ${E2E_VALUE_SIZE}-byte values"
    BACKENDS=single LOAD_CFG=$WORKDIR/load.cfg MULTIGET_KEYS=$E2E_MULTIGET_KEYS TABLE=ops
    LOAD_ARGS=(-d "$E2E_MULTIGET_KEYS")
}

scenario_multiget4() {
    local pct
    pct=$(awk -v s="$E2E_MULTIGET4_SET_PROP" 'BEGIN { printf "%g", s * 100 }')
    TITLE="multiget4: gets of $E2E_MULTIGET4_KEYS keys over a ketama pool of 4 memcached (fnv1a_64), $pct% of keys set, ${E2E_VALUE_SIZE}-byte values"
    BACKENDS=pool4 LOAD_CFG=$WORKDIR/load-multiget4.cfg MULTIGET_KEYS=$E2E_MULTIGET4_KEYS TABLE=keys
    write_load_cfg "$LOAD_CFG" "$E2E_MULTIGET4_SET_PROP"
    LOAD_ARGS=(-d "$E2E_MULTIGET4_KEYS")
}

run_scenario() { # NAME
    local target workers
    declare -F "scenario_$1" >/dev/null || die "unknown scenario $1 (get_set, multiget, multiget4)"
    "scenario_$1"
    use_backends "$BACKENDS"
    ROW_NAME=() ROW_OPS_S=() ROW_PROXY_US=() ROW_MC_US=() ROW_OK=() ROW_GETS_S=() ROW_SHARE=() ROW_PLACE=()
    TWEMPROXY_PLACEMENT=
    for target in $E2E_TARGETS; do
        if [[ $target == bifrost ]]; then
            for workers in $E2E_BIFROST_WORKERS; do run_target "bifrost:$workers"; done
        else
            run_target "$target"
        fi
    done
    if [[ $TABLE == keys ]]; then print_keys_table "$TITLE"; else print_table "$TITLE"; fi
}

main() {
    local tool scenario
    for tool in memcached memcaslap nutcracker awk timeout; do
        command -v "$tool" >/dev/null || die "$tool not found (apt-get install memcached libmemcached-tools nutcracker)"
    done
    [[ " $E2E_TARGETS " == *" bifrost "* ]] && find_bifrost
    write_load_cfg "$WORKDIR/load.cfg" 0.1
    log "$(nproc) cores; $E2E_CONCURRENCY connections, $E2E_THREADS memcaslap threads," \
        "${E2E_SECONDS}s per run"
    for scenario in "${@:-get_set}"; do run_scenario "$scenario"; done
}

main "$@"
