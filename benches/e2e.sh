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
# and for tiers (bifrost's tier strategies and side effects over two memcached, W and C, with
# the get_set load; no twemproxy), the first table with "vs baseline" (bifrost consistent_hash
# over W) in place of "vs twemproxy", then each row's gets, sets and side-effect counters and
# the derived figures (hit path, write-back cost, parallel, replication per write).
#
# Usage: benches/e2e.sh [SCENARIO...]   scenarios: get_set (default), multiget, multiget4, tiers,
#                                         binary (get_set in text, then binary: memcaslap -B)
#
# Environment (defaults in brackets):
#   E2E_SECONDS [10]          duration of each memcaslap run
#   E2E_CONCURRENCY [32]      memcaslap -c (connections)
#   E2E_THREADS [2]           memcaslap -T
#   E2E_VALUE_SIZE [100]      value bytes
#   E2E_KEY_SIZE [32]         key bytes
#   E2E_MULTIGET_KEYS [10]    keys per get in the multiget scenario (memcaslap -d)
#   E2E_MULTIGET4_KEYS [100]  keys per get in the multiget4 scenario (memcaslap -d)
#   E2E_MULTIGET4_SET_PROP [0.01]  share of memcaslap's keys that are sets in multiget4
#   E2E_TIERS_SET_PROP [0.1]  share of sets in the tiers scenario's load (get_set's)
#   E2E_TIERS_LOW_SET_PROP [0.01]  the tiers hit path again, and its baseline, at this share
#   E2E_BIFROST_WORKERS ["1 2"]  one bifrost run per entry (tiers: its bifrost rows per entry)
#   E2E_TARGETS ["memcached twemproxy bifrost"]  (not used by tiers, which has its own rows)
#   BIFROST_BIN               binary to run; unset: `cargo build --release` and target/release/bifrost
#   E2E_BASELINE_BIN          another bifrost binary (e.g. a build before a change); add the
#                             target `baseline` to E2E_TARGETS to run it with bifrost's config, one
#                             row per E2E_BIFROST_WORKERS entry, and get bifrost's CPU per op over
#                             the baseline's printed under the table (what a change costs)
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
E2E_KEY_SIZE=${E2E_KEY_SIZE:-32}
E2E_TIERS_SET_PROP=${E2E_TIERS_SET_PROP:-0.1}
E2E_TIERS_LOW_SET_PROP=${E2E_TIERS_LOW_SET_PROP:-0.01}
E2E_MULTIGET_KEYS=${E2E_MULTIGET_KEYS:-10}
E2E_MULTIGET4_KEYS=${E2E_MULTIGET4_KEYS:-100}
E2E_MULTIGET4_SET_PROP=${E2E_MULTIGET4_SET_PROP:-0.01}
E2E_BIFROST_WORKERS=${E2E_BIFROST_WORKERS:-1 2}
E2E_TARGETS=${E2E_TARGETS:-memcached twemproxy bifrost}
E2E_BIFROST_LOG_LEVEL=${E2E_BIFROST_LOG_LEVEL:-warn}
E2E_STRICT=${E2E_STRICT:-0}
E2E_KEEP=${E2E_KEEP:-0}
BENCH_KEEP=$E2E_KEEP
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
TIERS_PORTS=() TIERS_PIDS=()   # tiers: W (the single one), C (cold) and F (full), on first use

log() { printf '[e2e] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# processes (benches/lib.sh, shared with benches/openloop.sh)

# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

server_stat() { # PORT NAME...: the sum of those counters in the `stats` reply on PORT
    # (memcached's, or bifrost's own: effect:NAME:queued ...); 0 for a name not in the reply
    local port=$1 fd line total=0
    local -a w
    shift
    exec {fd}<>"/dev/tcp/127.0.0.1/$port"
    printf 'stats\r\n' >&"$fd"
    while IFS= read -r -t 2 line <&"$fd"; do
        line=${line%$'\r'}
        [[ $line == END ]] && break
        read -r -a w <<<"$line"
        [[ " $* " == *" ${w[1]:-} "* ]] && total=$((total + w[2]))
    done
    exec {fd}>&-
    echo "$total"
}

server_ops() { server_stat "$1" cmd_get cmd_set; } # PORT: a multi-get counts each key

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

backend_ticks() { # cpu_ticks summed over the backend memcached
    local pid total=0
    for pid in "${BACKEND_PIDS[@]}"; do total=$((total + $(cpu_ticks "$pid"))); done
    echo "$total"
}

# ---------------------------------------------------------------------------------------------
# the servers

MC_PORT="" MC_PID=""
start_memcached() { # NAME MEGABYTES THREADS [ARG...]: starts one memcached (ARGs added to its
    # command line); sets MC_PORT and MC_PID
    local name=$1 args=(-l 127.0.0.1 -U 0 -m "$2" -t "$3" -c 4096 "${@:4}") _
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
    tiers)
        if ((${#TIERS_PORTS[@]} == 0)); then
            use_backends single
            TIERS_PORTS=("${SINGLE_PORTS[0]}") TIERS_PIDS=("${SINGLE_PIDS[0]}")
            start_memcached memcached-cold 1024 4
            TIERS_PORTS+=("$MC_PORT") TIERS_PIDS+=("$MC_PID")
            # A warm tier that keeps nothing new: 2 MB, no evictions (-M), filled below.
            start_memcached memcached-full 2 2 -M
            TIERS_PORTS+=("$MC_PORT") TIERS_PIDS+=("$MC_PID")
            fill_until_full "$MC_PORT"
            log "tiers: W on port ${TIERS_PORTS[0]}, C on ${TIERS_PORTS[1]}, full F on" \
                "${TIERS_PORTS[2]} (pids ${TIERS_PIDS[*]})"
        fi
        BACKEND_PORTS=("${TIERS_PORTS[@]}") BACKEND_PIDS=("${TIERS_PIDS[@]}")
        ;;
    *) die "unknown backend set $1" ;;
    esac
}

# Fills the memcached on PORT (started with -M: errors instead of evictions) with items of the
# load's shape (E2E_KEY_SIZE-byte keys, E2E_VALUE_SIZE-byte values, flags 0, so the slab class
# of memcaslap's items and of write-back adds) until a store is refused, then checks that an
# `add` of a new key of that shape answers SERVER_ERROR: from then on every get of a load key
# misses there and every store of one fails. Each slab class gets one page even over -m, hence
# the same shape; 2 MB take about 11,000 items of 191 bytes (32 + 100).
fill_until_full() { # PORT
    local port=$1 fd value req batch=0 i n line full=0 pad=$((E2E_KEY_SIZE - 9))
    ((pad > 0)) || die "E2E_KEY_SIZE must be at least 10"
    printf -v value '%*s' "$E2E_VALUE_SIZE" ''
    value=${value// /x}
    exec {fd}<>"/dev/tcp/127.0.0.1/$port"
    while ((!full && batch < 200)); do # 200 × 1000 items: up to 200 MB of 1 KB items
        req=""
        for ((i = batch * 1000; i < (batch + 1) * 1000; i++)); do
            printf -v line 'e2e:fill:%0*d' "$pad" "$i"
            req+="set $line 0 0 $E2E_VALUE_SIZE\r\n$value\r\n"
        done
        printf '%b' "$req" >&"$fd"
        for ((n = 0; n < 1000; n++)); do
            IFS= read -r -t 5 line <&"$fd" || die "memcached-full: no reply while filling"
            [[ $line == SERVER_ERROR* ]] && full=1
        done
        batch=$((batch + 1))
    done
    printf -v line 'e2e:full:%0*d' "$pad" 0
    printf 'add %s 0 300 %s\r\n%s\r\n' "$line" "$E2E_VALUE_SIZE" "$value" >&"$fd"
    IFS= read -r -t 5 line <&"$fd" || line="(no reply)"
    exec {fd}>&-
    line=${line%$'\r'}
    if ((!full)) || [[ $line != SERVER_ERROR* ]]; then
        die "memcached-full did not fill: an add of a new key answered '$line'"
    fi
    log "memcached-full: $(server_stat "$port" curr_items) items, then full ('$line')"
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

# Starts bifrost with `workers: WORKERS`, one listener on a free port, and BODY (backends,
# routes, side_effects) as the rest of its config, written to bifrost-TAG.yaml; its log is
# bifrost-TAG.log. Sets TARGET_PORT and TARGET_PID; false if it did not start.
launch_bifrost() { # TAG WORKERS BODY
    local tag=$1 workers=$2 port conf=$WORKDIR/bifrost-$1.yaml
    [[ -n ${BIFROST:-} ]] || { log "bifrost: no binary (see above)"; return 1; }
    port=$(pick_port)
    printf 'workers: %s\nlisteners:\n  - name: main\n    bind: 127.0.0.1:%s\n%s\n' \
        "$workers" "$port" "$3" >"$conf"
    start_bg "$WORKDIR/bifrost-$tag.log" "$BIFROST" --config "$conf" \
        --log-level "$E2E_BIFROST_LOG_LEVEL"
    TARGET_PID=$LAST_PID
    TARGET_PORT=$port
    wait_ready "bifrost ($tag)" "$TARGET_PID" "$TARGET_PORT" "$WORKDIR/bifrost-$tag.log"
}

start_bifrost() { # WORKERS
    local workers=$1 body servers="" mc
    for mc in "${BACKEND_PORTS[@]}"; do servers+="${servers:+, }\"127.0.0.1:$mc\""; done
    if ((${#BACKEND_PORTS[@]} == 1)); then
        body=$(
            cat <<EOF
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
        )
    else # the same ring as twemproxy's
        body=$(
            cat <<EOF
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
        )
    fi
    launch_bifrost "w$workers" "$workers" "$body"
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

write_load_cfg() { # FILE SET_PROP: memcaslap --cfg_cmd file: E2E_KEY_SIZE-byte keys, fixed
    # values, SET_PROP of the keys set, the rest read (cmd 0 is set, 1 is get). With -d,
    # memcaslap draws each key's command by these proportions, sends a set at once and gathers
    # gets until it has -d keys: the proportions are of keys, not of requests.
    local get_prop
    get_prop=$(awk -v s="$2" 'BEGIN { printf "%g", 1 - s }')
    cat >"$1" <<EOF
key
$E2E_KEY_SIZE $E2E_KEY_SIZE 1
value
$E2E_VALUE_SIZE $E2E_VALUE_SIZE 1
cmd
0 $2
1 $get_prop
EOF
}

# Runs memcaslap against SERVERS (memcaslap -s: host:port[,host:port...]); sets RUN_OPS_S,
# RUN_OPS, RUN_SECONDS, RUN_GET_KEYS, RUN_SETS and RUN_MISSES (memcaslap's cmd_get, cmd_set
# and get_misses; gets in keys), RUN_PROXY_TICKS, RUN_MC_TICKS, RUN_ERRORS (error replies
# memcaslap saw), RUN_BACKEND_OPS (what reached memcached) and RUN_BACKEND_EACH (the same per
# server).
# PROXY_PID may be empty (memcached direct). False if memcaslap failed.
run_load() { # NAME SERVERS PROXY_PID
    local name=$1 servers=$2 proxy_pid=$3 out=$WORKDIR/memcaslap-$1.out
    local p0=0 p1=0 m0 m1 b0 rc=0 i
    local -a each0
    RUN_OPS="" RUN_OPS_S="" RUN_SECONDS="" RUN_GET_KEYS=0 RUN_SETS=0 RUN_MISSES=0
    RUN_BACKEND_EACH=()
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
    RUN_SETS=$(awk '/^cmd_set:/ { n = $2 } END { print n + 0 }' "$out")
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
# ROW_REF is the name of the row whose proxy CPU per op the row's is compared with
# (twemproxy's unless ROW_EXTRA_REF names another).
ROW_NAME=() ROW_OPS_S=() ROW_PROXY_US=() ROW_MC_US=() ROW_OK=() ROW_GETS_S=() ROW_SHARE=() ROW_PLACE=()
ROW_REF=()
ROW_EXTRA_GETS_S="" ROW_EXTRA_SHARE="" ROW_EXTRA_PLACE="" ROW_EXTRA_REF=""

# What the backend memcached must count, as multiples of memcaslap's gets and sets, for a run
# to be valid (a get asked of two tiers counts twice). Set around a measure, then reset to 1.
EXPECT_GET_X=1 EXPECT_SET_X=1

add_row() { # NAME OPS_S PROXY_US MC_US OK ("-" where not applicable; OK=0: no ratios)
    ROW_NAME+=("$1") ROW_OPS_S+=("$2") ROW_PROXY_US+=("$3") ROW_MC_US+=("$4") ROW_OK+=("$5")
    ROW_GETS_S+=("${ROW_EXTRA_GETS_S:--}") ROW_SHARE+=("${ROW_EXTRA_SHARE:--}")
    ROW_PLACE+=("${ROW_EXTRA_PLACE:--}") ROW_REF+=("${ROW_EXTRA_REF:-twemproxy}")
    ROW_EXTRA_GETS_S="" ROW_EXTRA_SHARE="" ROW_EXTRA_PLACE="" ROW_EXTRA_REF=""
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
    local name=$1 servers=$2 proxy_pid=$3 proxy_us=- mc_us problem="" expected what=ops
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
    # and no more, than memcaslap counted, times EXPECT_*_X) and the gets found their keys.
    expected=$((RUN_OPS + RUN_GET_KEYS * (EXPECT_GET_X - 1) + RUN_SETS * (EXPECT_SET_X - 1)))
    ((expected == RUN_OPS)) || what="expected ops"
    ((RUN_ERRORS == 0)) || problem="$RUN_ERRORS error replies"
    local slack=${EXPECT_SLACK:-5}
    if ((RUN_BACKEND_OPS * 100 < expected * (100 - slack) || RUN_BACKEND_OPS * 100 > expected * (100 + slack))); then
        problem+="${problem:+, }memcached saw $((RUN_BACKEND_OPS * 100 / expected))% of the $what"
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
        measure "memcached direct${ROW_SUFFIX:-}" "$servers" ""
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
    baseline:*)
        name="baseline workers=${target#baseline:}"
        if [[ ! -x ${E2E_BASELINE_BIN:-} ]]; then
            die "target baseline needs E2E_BASELINE_BIN, an executable bifrost binary"
        fi
        if BIFROST=$E2E_BASELINE_BIN start_bifrost "${target#baseline:}"; then
            measure "$name" "127.0.0.1:$TARGET_PORT" "$TARGET_PID"
            stop_pid "$TARGET_PID"
        else
            ((E2E_STRICT >= 1)) && die "$name did not start"
            add_row "$name (skipped: did not start)" - - - 0
        fi
        ;;
    bifrost:*)
        name="bifrost workers=${target#bifrost:}${ROW_SUFFIX:-}"
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
# twemproxy's (or that of the row ROW_REF names, if valid), or with $2 = inverse, twemproxy's
# over the row's (keys per CPU-second).
row_ratios() { # ROW [inverse]
    local i=$1 expr='a / b' j
    [[ ${2:-} == inverse ]] && expr='b / a'
    OPS_S=${ROW_OPS_S[$i]} PROXY_US=${ROW_PROXY_US[$i]} VS_DIRECT=- VS_TWEM=-
    if [[ ${ROW_REF[$i]} != twemproxy ]]; then
        TWEM=""
        for j in "${!ROW_NAME[@]}"; do
            [[ ${ROW_NAME[$j]} == "${ROW_REF[$i]}" && ${ROW_OK[$j]} == 1 ]] &&
                TWEM=${ROW_PROXY_US[$j]}
        done
    fi
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

print_table() { # TITLE [REF_HEADER]: REF_HEADER titles the ROW_REF column (vs twemproxy)
    local i table
    table=$(
        echo "### $1"
        echo
        echo "| target | ops/s | vs direct | proxy CPU µs/op | ${2:-vs twemproxy} | memcached CPU µs/op |"
        echo "|---|---:|---:|---:|---:|---:|"
        for i in "${!ROW_NAME[@]}"; do
            reference_rows
            row_ratios "$i"
            printf '| %s | %s | %s | %s | %s | %s |\n' "${ROW_NAME[$i]}" "$OPS_S" "$VS_DIRECT" \
                "$PROXY_US" "$VS_TWEM" "${ROW_MC_US[$i]}"
        done
    )
    emit_table "$table"
}

print_keys_table() { # TITLE: the table of a scenario over a pool (an op is a key)
    local i table
    table=$(
        echo "### $1"
        echo
        echo "| target | keys/s | gets/s | vs direct | proxy CPU µs/key | keys per CPU-s vs twemproxy | memcached CPU µs/key | keys per server % | placement = twemproxy |"
        echo "|---|---:|---:|---:|---:|---:|---:|---|---|"
        for i in "${!ROW_NAME[@]}"; do
            # Keys per CPU-second is 1 / (CPU per key): twemproxy's µs/key over this row's.
            reference_rows
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

scenario_binary() {
    TITLE="binary: get_set (90% get / 10% set, ${E2E_VALUE_SIZE}-byte values) in the text protocol, then in the binary one (memcaslap -B); twemproxy speaks no binary"
    BACKENDS=single LOAD_CFG=$WORKDIR/load.cfg MULTIGET_KEYS=1 TABLE=protocols
    LOAD_ARGS=()
}

scenario_tiers() {
    local pct
    pct=$(awk -v s="$E2E_TIERS_SET_PROP" 'BEGIN { printf "%g", s * 100 }')
    TITLE="tiers: $pct% set, ${E2E_KEY_SIZE}-byte keys, ${E2E_VALUE_SIZE}-byte values; W = the warm tier (and the baseline's pool), C = the cold tier"
    BACKENDS=tiers LOAD_CFG=$WORKDIR/load-tiers.cfg MULTIGET_KEYS=1 TABLE=tiers
    write_load_cfg "$LOAD_CFG" "$E2E_TIERS_SET_PROP"
    write_load_cfg "$WORKDIR/load-tiers-low.cfg" "$E2E_TIERS_LOW_SET_PROP"
    LOAD_ARGS=()
}

# ---------------------------------------------------------------------------------------------
# tiers: bifrost's tier strategies and side effects, each row with its own config over W (the
# get_set memcached), C (a second one) and F (memcached-full: W's stand-in for the miss path).
# Each measured row's figures are kept by key (WORKERS:ROW) for the derived figures.

declare -A T_NAME=() T_OK=() T_TICKS=() T_OPS=() T_GETS=() T_SETS=() T_EFF=() T_FULL=()
TIERS_KEYS=() # in order

tiers_pool() { # NAME PORT: a one-server pool of the bifrost config
    printf '  %s:\n    servers: ["127.0.0.1:%s"]\n    timeout: 1s\n' "$1" "$2"
}

tiers_route() { # STRATEGY KEY: VALUE lines...: the one catch-all route `tiers`
    local line
    printf 'routes:\n  - name: tiers\n    match: "*"\n    strategy: %s\n' "$1"
    for line in "${@:2}"; do printf '    %s\n' "$line"; done
}

tiers_counts() { # EFFECT: its queued done failed dropped depth in bifrost's stats (0s without
    # EFFECT), then F's get_hits, cmd_set and cmd_get
    local n out=""
    for n in queued "done" failed dropped depth; do
        if [[ -n $1 ]]; then
            out+="$(server_stat "$TARGET_PORT" "effect:$1:$n") "
        else
            out+="0 "
        fi
    done
    for n in get_hits cmd_set cmd_get; do out+="$(server_stat "${TIERS_PORTS[2]}" "$n") "; done
    echo "$out"
}

# One bifrost row: starts it with BODY (after the listener), runs the load, reads the counters
# of side effect EFFECT ("" for none) before and after, stops it. GET_X/SET_X: what memcached
# must count per get and per set (see EXPECT_GET_X). REF: the row the CPU is compared with.
tiers_row() { # KEY NAME WORKERS GET_X SET_X REF EFFECT BODY
    local key=$1 name=$2 c0 c1 i last
    local -a a b
    EXPECT_GET_X=$4 EXPECT_SET_X=$5 ROW_EXTRA_REF=$6
    if launch_bifrost "tiers-w$3-${key#*:}" "$3" "$8"; then
        c0=$(tiers_counts "$7")
        measure "$name" "127.0.0.1:$TARGET_PORT" "$TARGET_PID"
        c1=$(tiers_counts "$7")
        stop_pid "$TARGET_PID"
        last=$((${#ROW_NAME[@]} - 1))
        if [[ ${ROW_OPS_S[$last]} != - ]]; then # memcaslap ran: keep its figures
            read -r -a a <<<"$c0"
            read -r -a b <<<"$c1"
            for i in 0 1 2 3 5 6 7; do b[i]=$((b[i] - a[i])); done # depth is a level
            TIERS_KEYS+=("$key")
            T_NAME[$key]=$name T_OK[$key]=${ROW_OK[$last]} T_TICKS[$key]=$RUN_PROXY_TICKS
            T_OPS[$key]=$RUN_OPS T_GETS[$key]=$RUN_GET_KEYS T_SETS[$key]=$RUN_SETS
            T_EFF[$key]="${b[*]:0:5}" T_FULL[$key]="${b[*]:5:3}"
            [[ -n $7 ]] && log "$name: $RUN_GET_KEYS gets, $RUN_SETS sets; effect $7:" \
                "queued ${b[0]}, done ${b[1]}, failed ${b[2]}, dropped ${b[3]}, depth ${b[4]}"
        fi
    else
        ((E2E_STRICT >= 1)) && die "$name did not start"
        add_row "$name (skipped: did not start)" - - - 0
    fi
    EXPECT_GET_X=1 EXPECT_SET_X=1 ROW_EXTRA_REF=""
}

rows_tiers() {
    local wp=${TIERS_PORTS[0]} cp=${TIERS_PORTS[1]} fp=${TIERS_PORTS[2]} workers p base low
    local main=$LOAD_CFG pools_w pools_wc pools_fc
    low=$(awk -v s="$E2E_TIERS_LOW_SET_PROP" 'BEGIN { printf "%g", s * 100 }')
    pools_w="backends:"$'\n'"$(tiers_pool W "$wp")"
    pools_wc="$pools_w"$'\n'"$(tiers_pool C "$cp")"
    pools_fc="backends:"$'\n'"$(tiers_pool F "$fp")"$'\n'"$(tiers_pool C "$cp")"
    measure "memcached direct" "127.0.0.1:$wp" "" # on W
    for workers in $E2E_BIFROST_WORKERS; do
        p="bifrost w=$workers:"
        base="$p consistent_hash on W (baseline)"
        # 2. the baseline: W alone. 3. warm_first, every get a warm hit (sets reach both).
        tiers_row "$workers:base" "$base" "$workers" 1 1 "$base" "" \
            "$pools_w"$'\n'"$(tiers_route consistent_hash "backend: W")"
        tiers_row "$workers:hit" "$p warm_first hit path (warm W, cold C)" "$workers" 1 2 "$base" \
            write_on_miss.tiers "$pools_wc"$'\n'"$(tiers_route warm_first "warm: W" "cold: C" \
                "write_on_miss: { ttl: 300 }")"
        # 3b. the same with leases: gets read W with mg N c; a set goes to C, then deletes the
        #     key in W, so a get of a key set since it was last read misses W and reads C (and
        #     writes back): memcached sees up to 2 more ops for such gets (EXPECT_SLACK).
        EXPECT_SLACK=25 tiers_row "$workers:leases" "$p warm_first with leases" "$workers" 1 2 \
            "$base" write_on_miss.tiers "$pools_wc"$'\n'"$(tiers_route warm_first "warm: W" \
                "cold: C" "write_on_miss: { ttl: 300 }" "leases: {}")"
        # 4. warm_first, every get a miss in F, a hit in C and a write-back add F refuses.
        #    memcached counts each get twice (F's miss, C's hit), each set once (F refuses it).
        tiers_row "$workers:miss" "$p warm_first miss path (warm F full, cold C)" "$workers" 2 1 \
            "$base" write_on_miss.tiers "$pools_fc"$'\n'"$(tiers_route warm_first "warm: F" \
                "cold: C" "write_on_miss: { ttl: 300 }")"
        # 5. parallel: everything to both. 6. the baseline plus a copy of every set to C.
        tiers_row "$workers:parallel" "$p parallel W + C, writes: all" "$workers" 2 2 "$base" "" \
            "$pools_wc"$'\n'"$(tiers_route parallel "backends: [W, C]" "writes: all")"
        tiers_row "$workers:replicate" "$p consistent_hash on W + replicate set to C" "$workers" \
            1 2 "$base" replicate.0 "$pools_wc"$'\n'"$(tiers_route consistent_hash "backend: W")
side_effects:
  - replicate: { routes: [tiers], to: C, commands: [set] }"
        # The baseline once more: how far the machine drifted over the rows between.
        tiers_row "$workers:base2" "$base, again" "$workers" 1 1 "$base" "" \
            "$pools_w"$'\n'"$(tiers_route consistent_hash "backend: W")"
        # 2 and 3 again with fewer sets: the hit path without the second write of each set.
        LOAD_CFG=$WORKDIR/load-tiers-low.cfg
        tiers_row "$workers:base-low" "$base, $low% set" "$workers" 1 1 "$base, $low% set" "" \
            "$pools_w"$'\n'"$(tiers_route consistent_hash "backend: W")"
        tiers_row "$workers:hit-low" "$p warm_first hit path, $low% set" "$workers" 1 2 \
            "$base, $low% set" write_on_miss.tiers "$pools_wc"$'\n'"$(tiers_route warm_first \
                "warm: W" "cold: C" "write_on_miss: { ttl: 300 }")"
        EXPECT_SLACK=25 tiers_row "$workers:leases-low" "$p warm_first with leases, $low% set" \
            "$workers" 1 2 "$base, $low% set" write_on_miss.tiers "$pools_wc"$'\n'"$(tiers_route \
                warm_first "warm: W" "cold: C" "write_on_miss: { ttl: 300 }" "leases: {}")"
        LOAD_CFG=$main
    done
}

tiers_us() { # KEY [gets|sets]: the row's proxy CPU in µs per op (or per get, or per set)
    local n=${T_OPS[$1]}
    [[ ${2:-} == gets ]] && n=${T_GETS[$1]}
    [[ ${2:-} == sets ]] && n=${T_SETS[$1]}
    awk -v t="${T_TICKS[$1]}" -v n="$n" -v hz="$CLK_TCK" 'BEGIN { printf "%.3f", t / hz * 1e6 / n }'
}

calc() { # FORMAT EXPR [VAR=VALUE...]: awk's EXPR over the VARs, printed in FORMAT
    local format=$1 expr=$2 v
    local -a args=()
    for v in "${@:3}"; do args+=(-v "$v"); done
    awk "${args[@]}" "BEGIN { printf \"$format\", $expr }"
}

tiers_ok() { local k; for k; do [[ ${T_OK[$k]:-0} == 1 ]] || return 1; done; } # KEY...: all valid

verdict() { # VALUE LIMIT: "met" if VALUE <= LIMIT, else "MISSED"
    calc %s "v <= l ? \"met\" : \"MISSED\"" v="$1" l="$2"
}

# The counters of every tiers row, then the derived figures per bifrost workers entry; the
# main load's rows are compared with the mean of the baseline's two runs (before and after them).
print_tiers_figures() {
    local k e f workers p base hit miss wb rep table
    local -a eff full
    table=$(
        echo "### tiers: counters"
        echo
        echo "| target | gets | sets | proxy CPU µs/get | side effect queued | done | failed | dropped | depth at end | F: hits / stores / gets |"
        echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        for k in "${TIERS_KEYS[@]}"; do
            read -r -a eff <<<"${T_EFF[$k]}"
            read -r -a full <<<"${T_FULL[$k]}"
            f=-
            [[ $k == *:miss ]] && f="${full[0]} / ${full[1]} / ${full[2]}"
            e=("${eff[@]}")
            [[ $k == *:hit* || $k == *:miss || $k == *:replicate ]] || e=(- - - - -)
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${T_NAME[$k]}" \
                "${T_GETS[$k]}" "${T_SETS[$k]}" "$(tiers_us "$k" gets)" "${e[@]}" "$f"
        done
        for workers in $E2E_BIFROST_WORKERS; do
            p=$workers:
            echo
            if ! tiers_ok "${p}base"; then
                echo "No valid baseline run with workers=$workers: no derived figures."
                continue
            fi
            base=$(tiers_us "${p}base")
            k="the baseline's run"
            if tiers_ok "${p}base" "${p}base2"; then # the mean of its two runs
                base=$(calc %.3f "(a + b) / 2" a="$base" b="$(tiers_us "${p}base2")")
                k="the mean of the baseline's two runs, $(tiers_us "${p}base") and"
                k+=" $(tiers_us "${p}base2") µs"
            fi
            echo "Derived, workers=$workers (proxy CPU; baseline: $base µs per request, $k):"
            echo
            if tiers_ok "${p}base" "${p}hit"; then
                k=$(calc %.2f "a / b" a="$(tiers_us "${p}hit")" b="$base")
                echo "- hit path: warm_first / baseline = **$k** per request (target ≤ 1.1:" \
                    "$(verdict "$k" 1.1)); each set is two backend writes here"
            fi
            if tiers_ok "${p}base-low" "${p}hit-low"; then
                k=$(calc %.2f "a / b" a="$(tiers_us "${p}hit-low")" b="$(tiers_us "${p}base-low")")
                echo "- hit path at $(calc %g "s * 100" s="$E2E_TIERS_LOW_SET_PROP")% set:" \
                    "warm_first / baseline = **$k** (target ≤ 1.1: $(verdict "$k" 1.1))"
            fi
            rep=""
            if tiers_ok "${p}base" "${p}replicate"; then
                # The extra CPU of the run over the baseline's per-op cost, per set copied.
                rep=$(calc %.3f "(t / hz * 1e6 - b * n) / s" hz="$CLK_TCK" b="$base" \
                    t="${T_TICKS[${p}replicate]}" n="${T_OPS[${p}replicate]}" \
                    s="${T_SETS[${p}replicate]}")
                read -r -a eff <<<"${T_EFF[${p}replicate]}"
                echo "- replication: $rep µs of CPU per set copied =" \
                    "**$(calc %.2f "r / b" r="$rep" b="$base")** × a baseline request ($base µs);" \
                    "copies queued ${eff[0]} for ${T_SETS[${p}replicate]} sets, failed ${eff[2]}," \
                    "dropped ${eff[3]}"
            fi
            if tiers_ok "${p}base" "${p}hit" "${p}miss"; then
                hit=$(tiers_us "${p}hit" gets) miss=$(tiers_us "${p}miss" gets)
                wb=$(calc %.3f "m - h" m="$miss" h="$hit")
                read -r -a eff <<<"${T_EFF[${p}miss]}"
                echo "- miss path: **$(calc %.2f "a / b" a="$(tiers_us "${p}miss")" \
                    b="$(tiers_us "${p}hit")")** × the hit path per request," \
                    "$(calc %.2f "a / b" a="$(tiers_us "${p}miss")" b="$base") × the baseline;" \
                    "per get $miss µs against $hit µs"
                echo "- write-back cost (miss − hit per get, including the get from C): $wb µs" \
                    "= **$(calc %.2f "w / b" w="$wb" b="$base")** × a baseline request (target ≤ 1" \
                    "backend write: $(verdict "$(calc %.3f "w / b" w="$wb" b="$base")" 1))$(
                        [[ -z $rep ]] || echo "; $(calc %.2f "w / r" w="$wb" r="$rep") × a" \
                            "replicated set")"
                echo "- write-backs: queued ${eff[0]} for ${T_GETS[${p}miss]} gets" \
                    "($(calc %.3f "q / g" q="${eff[0]}" g="${T_GETS[${p}miss]}") per get), done" \
                    "${eff[1]}, failed ${eff[2]}, dropped ${eff[3]}; F answered $(
                        read -r -a full <<<"${T_FULL[${p}miss]}"
                        echo "${full[0]} hits and stored ${full[1]}")"
            fi
            if tiers_ok "${p}base" "${p}parallel"; then
                echo "- parallel / baseline = **$(calc %.2f "a / b" \
                    a="$(tiers_us "${p}parallel")" b="$base")** per request"
            fi
        done
    )
    emit_table "$table"
}

run_scenario() { # NAME
    local target workers
    declare -F "scenario_$1" >/dev/null ||
        die "unknown scenario $1 (get_set, multiget, multiget4, tiers, binary)"
    "scenario_$1"
    use_backends "$BACKENDS"
    ROW_NAME=() ROW_OPS_S=() ROW_PROXY_US=() ROW_MC_US=() ROW_OK=() ROW_GETS_S=() ROW_SHARE=() ROW_PLACE=()
    ROW_REF=()
    TWEMPROXY_PLACEMENT=
    if [[ $TABLE == protocols ]]; then
        # The same load in each protocol, memcached direct and bifrost, in one table.
        local protocol
        for protocol in text binary; do
            LOAD_ARGS=()
            [[ $protocol == binary ]] && LOAD_ARGS=(-B)
            ROW_SUFFIX=" ($protocol)"
            run_target memcached
            for workers in $E2E_BIFROST_WORKERS; do run_target "bifrost:$workers"; done
        done
        ROW_SUFFIX="" LOAD_ARGS=()
        print_table "$TITLE"
        return 0
    fi
    if [[ $TABLE == tiers ]]; then
        rows_tiers
        print_table "$TITLE" "vs baseline"
        print_tiers_figures
        return 0
    fi
    for target in $E2E_TARGETS; do
        if [[ $target == bifrost || $target == baseline ]]; then
            for workers in $E2E_BIFROST_WORKERS; do run_target "$target:$workers"; done
        else
            run_target "$target"
        fi
    done
    if [[ $TABLE == keys ]]; then print_keys_table "$TITLE"; else print_table "$TITLE"; fi
    print_against_baseline
}

# With baseline rows: bifrost's proxy CPU per op over the baseline's, per worker count (the
# mean of each's rows when the targets list names them more than once).
print_against_baseline() {
    local workers i b_sum b_n n_sum n_n line=""
    for workers in $E2E_BIFROST_WORKERS; do
        b_sum=0 b_n=0 n_sum=0 n_n=0
        for i in "${!ROW_NAME[@]}"; do
            [[ ${ROW_OK[$i]} == 1 && ${ROW_PROXY_US[$i]} != - ]] || continue
            case ${ROW_NAME[$i]} in
            "baseline workers=$workers") b_sum=$(calc '%.4f' 'a + b' a="$b_sum" b="${ROW_PROXY_US[$i]}"); ((++b_n)) ;;
            "bifrost workers=$workers") n_sum=$(calc '%.4f' 'a + b' a="$n_sum" b="${ROW_PROXY_US[$i]}"); ((++n_n)) ;;
            esac
        done
        ((b_n > 0 && n_n > 0)) || continue
        line+="${line:+; }workers=$workers: $(calc '%.3f' '(n / c) / (b / d)' n="$n_sum" c="$n_n" b="$b_sum" d="$b_n")"
    done
    [[ -z $line ]] || emit_table "bifrost CPU per op over the baseline's: $line"
}

main() {
    local tool scenario
    for tool in memcached memcaslap nutcracker awk timeout; do
        command -v "$tool" >/dev/null || die "$tool not found (apt-get install memcached libmemcached-tools nutcracker)"
    done
    if [[ " $E2E_TARGETS " == *" bifrost "* || " $* " == *" tiers "* ]]; then find_bifrost; fi
    write_load_cfg "$WORKDIR/load.cfg" 0.1
    log "$(nproc) cores; $E2E_CONCURRENCY connections, $E2E_THREADS memcaslap threads," \
        "${E2E_SECONDS}s per run"
    for scenario in "${@:-get_set}"; do run_scenario "$scenario"; done
}

main "$@"
