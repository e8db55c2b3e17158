#!/usr/bin/env bash
# Open-loop latency comparison: memcached directly, twemproxy (nutcracker) in front of it and
# bifrost in front of the same memcached, at fixed request rates, with the generator of
# benches/openloop.rs (requests sent on a fixed schedule whatever the replies; latency measured
# from each request's intended send time). For each workload it
#
#   1. finds twemproxy's saturation rate: the rate a closed loop (every connection sends its
#      next request as soon as the previous is answered) achieves through twemproxy, with the
#      same generator, connections and workload (or takes OPENLOOP_SAT_RATE);
#   2. runs the open-loop generator at fractions of that rate (25%, 50%, 75%, 90%) against
#      each target in turn, the targets alternating at each rate;
#   3. prints a table: rate, target, achieved rate, p50 / p99 / p99.9 / max latency (µs), and
#      each proxy's added latency: its percentile minus memcached direct's at the same rate.
#
# Usage: benches/openloop.sh
#
# Environment (defaults in brackets):
#   OPENLOOP_SECONDS [10]        measured seconds per point
#   OPENLOOP_WARMUP [1]          seconds of load before each measured window (not recorded)
#   OPENLOOP_SAT_SECONDS [5]     measured seconds of the closed-loop saturation run
#   OPENLOOP_SAT_RATE            skip the saturation run: this many requests/s is 100%
#   OPENLOOP_FRACTIONS ["0.25 0.5 0.75 0.9"]  rates, as fractions of the saturation rate
#   OPENLOOP_WORKLOADS ["get_set multiget"]   get_set: 90% get / 10% set of one key;
#                                multiget: gets of OPENLOOP_MULTIGET_KEYS keys, 10% sets
#   OPENLOOP_CONNECTIONS [50]    connections of the generator (and of the saturation run)
#   OPENLOOP_MULTIGET_KEYS [10]  keys per get in multiget
#   OPENLOOP_SET_SHARE [0.1]     share of requests that are sets
#   OPENLOOP_KEYS [10000]        key space (preloaded through the target before each run)
#   OPENLOOP_KEY_SIZE [32]       key bytes
#   OPENLOOP_VALUE_SIZE [100]    value bytes
#   OPENLOOP_THREADS [1]         generator threads (the machine has 2 cores: 1 or 2)
#   OPENLOOP_ARRIVALS [uniform]  uniform (evenly spaced send times) or poisson
#   OPENLOOP_TARGETS ["memcached twemproxy bifrost"]  in order at each rate; `baseline` is
#                                added when OPENLOOP_BASELINE_BIN is set
#   OPENLOOP_BIFROST_WORKERS [1] bifrost `workers:`
#   BIFROST_BIN                  binary to run; unset: `cargo build --release` and
#                                target/release/bifrost
#   OPENLOOP_BASELINE_BIN        another bifrost binary (e.g. a build before a change), run
#                                with bifrost's config as the row `baseline`
#   OPENLOOP_GEN_BIN             the generator binary; unset: `cargo bench --bench openloop
#                                --no-run` builds it
#   OPENLOOP_BIFROST_LOG_LEVEL [warn]
#   OPENLOOP_WAIT_IDLE [0]       above 0 (for a shared machine): before each run, wait until
#                                the machine's CPU in use (over 1 s) is below this many percent,
#                                for at most OPENLOOP_WAIT_MAX [300] seconds; and run a point
#                                again (up to OPENLOOP_RERUNS [3] times) when other programs took
#                                that much of the CPU during it
#   OPENLOOP_STRICT [0]          1: a target that fails to start or a generator run that fails
#                                fails the script; 2: a run with errors too
#   OPENLOOP_OUT                 also append the tables (markdown) to this file
#   OPENLOOP_KEEP [0]            1: keep the work directory (configs, logs, generator output)
#
# A smoke run (about 1 s per point, e.g. for CI): OPENLOOP_SECONDS=1 OPENLOOP_WARMUP=0.2
# OPENLOOP_SAT_SECONDS=1 OPENLOOP_FRACTIONS=0.5 OPENLOOP_STRICT=2 benches/openloop.sh
#
# Needs: memcached, nutcracker, and cargo unless BIFROST_BIN and OPENLOOP_GEN_BIN are set.
# Every process it starts is stopped on exit, whatever the exit.
set -euo pipefail

OPENLOOP_SECONDS=${OPENLOOP_SECONDS:-10}
OPENLOOP_WARMUP=${OPENLOOP_WARMUP:-1}
OPENLOOP_SAT_SECONDS=${OPENLOOP_SAT_SECONDS:-5}
OPENLOOP_SAT_RATE=${OPENLOOP_SAT_RATE:-}
OPENLOOP_FRACTIONS=${OPENLOOP_FRACTIONS:-0.25 0.5 0.75 0.9}
OPENLOOP_WORKLOADS=${OPENLOOP_WORKLOADS:-get_set multiget}
OPENLOOP_CONNECTIONS=${OPENLOOP_CONNECTIONS:-50}
OPENLOOP_MULTIGET_KEYS=${OPENLOOP_MULTIGET_KEYS:-10}
OPENLOOP_SET_SHARE=${OPENLOOP_SET_SHARE:-0.1}
OPENLOOP_KEYS=${OPENLOOP_KEYS:-10000}
OPENLOOP_KEY_SIZE=${OPENLOOP_KEY_SIZE:-32}
OPENLOOP_VALUE_SIZE=${OPENLOOP_VALUE_SIZE:-100}
OPENLOOP_THREADS=${OPENLOOP_THREADS:-1}
OPENLOOP_ARRIVALS=${OPENLOOP_ARRIVALS:-uniform}
OPENLOOP_BASELINE_BIN=${OPENLOOP_BASELINE_BIN:-}
OPENLOOP_TARGETS=${OPENLOOP_TARGETS:-memcached twemproxy bifrost${OPENLOOP_BASELINE_BIN:+ baseline}}
OPENLOOP_BIFROST_WORKERS=${OPENLOOP_BIFROST_WORKERS:-1}
OPENLOOP_GEN_BIN=${OPENLOOP_GEN_BIN:-}
OPENLOOP_BIFROST_LOG_LEVEL=${OPENLOOP_BIFROST_LOG_LEVEL:-warn}
OPENLOOP_WAIT_IDLE=${OPENLOOP_WAIT_IDLE:-0}
OPENLOOP_WAIT_MAX=${OPENLOOP_WAIT_MAX:-300}
OPENLOOP_RERUNS=${OPENLOOP_RERUNS:-3}
OPENLOOP_STRICT=${OPENLOOP_STRICT:-0}
OPENLOOP_OUT=${OPENLOOP_OUT:-}
OPENLOOP_KEEP=${OPENLOOP_KEEP:-0}
BENCH_KEEP=$OPENLOOP_KEEP

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
[[ $TARGET_DIR == /* ]] || TARGET_DIR=$ROOT/$TARGET_DIR # cargo resolves it from the root here
WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/bifrost-openloop.XXXXXX")
CLK_TCK=$(getconf CLK_TCK)
PIDS=()        # every process started, stopped by cleanup
USED_PORTS=" " # ports handed out by pick_port
LAST_PID=
declare -A PORT=() # target name -> its port, for the targets that started

log() { printf '[openloop] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# processes (benches/lib.sh, shared with benches/e2e.sh)

# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# ---------------------------------------------------------------------------------------------
# the binaries and the servers

BIFROST=""
find_bifrost() { # sets BIFROST, or leaves it empty (the bifrost rows are then skipped)
    if [[ -n ${BIFROST_BIN:-} ]]; then
        [[ -x $BIFROST_BIN ]] || die "BIFROST_BIN=$BIFROST_BIN is not executable"
        BIFROST=$BIFROST_BIN
        return 0
    fi
    log "building bifrost: cargo build --release (log: $WORKDIR/cargo-bifrost.log)"
    if (cd "$ROOT" && cargo build --release --bin bifrost) >"$WORKDIR/cargo-bifrost.log" 2>&1; then
        BIFROST=$TARGET_DIR/release/bifrost
    else
        log "cargo build --release failed; bifrost rows will be skipped. Last lines:"
        tail -n 15 "$WORKDIR/cargo-bifrost.log" | sed 's/^/    /' >&2
    fi
}

GEN=""
find_generator() { # sets GEN, the open-loop generator (benches/openloop.rs)
    if [[ -n $OPENLOOP_GEN_BIN ]]; then
        [[ -x $OPENLOOP_GEN_BIN ]] || die "OPENLOOP_GEN_BIN=$OPENLOOP_GEN_BIN is not executable"
        GEN=$OPENLOOP_GEN_BIN
        return 0
    fi
    log "building the generator: cargo bench --bench openloop --no-run (log: $WORKDIR/cargo-gen.log)"
    # The JSON messages name the executable with its full path, wherever the target dir is.
    (cd "$ROOT" && cargo bench --bench openloop --no-run --message-format=json) \
        >"$WORKDIR/cargo-gen.json" 2>"$WORKDIR/cargo-gen.log" ||
        { tail -n 15 "$WORKDIR/cargo-gen.log" | sed 's/^/    /' >&2; die "the generator did not build"; }
    GEN=$(grep '"name":"openloop"' "$WORKDIR/cargo-gen.json" |
        grep -o '"executable":"[^"]*"' | tail -n 1 | cut -d'"' -f4)
    [[ -n $GEN && -x $GEN ]] || die "the generator was built but its executable was not found"
}

start_memcached() { # sets PORT[memcached]
    local args=(-l 127.0.0.1 -U 0 -m 1024 -t 4 -c 4096) port pid _
    [[ $EUID -eq 0 ]] && args+=(-u root) # memcached refuses root without -u
    for _ in 1 2 3; do
        port=$(pick_port)
        start_bg "$WORKDIR/memcached.log" memcached "${args[@]}" -p "$port"
        pid=$LAST_PID
        if wait_ready memcached "$pid" "$port" "$WORKDIR/memcached.log"; then
            PORT[memcached]=$port
            log "memcached on port $port (pid $pid)"
            return 0
        fi
        grep -qi 'address already in use' "$WORKDIR/memcached.log" || break
    done
    die "memcached did not start"
}

start_twemproxy() { # sets PORT[twemproxy]; false if it did not start
    local port stats_port conf=$WORKDIR/nutcracker.yml
    port=$(pick_port)
    stats_port=$(pick_port)
    cat >"$conf" <<EOF
openloop:
  listen: 127.0.0.1:$port
  hash: fnv1a_64
  distribution: ketama
  timeout: 60000
  auto_eject_hosts: false
  preconnect: true
  servers:
    - 127.0.0.1:${PORT[memcached]}:1
EOF
    # -o: without it the Debian package logs to /var/log/nutcracker/, not to stderr.
    start_bg "$WORKDIR/nutcracker.log" nutcracker -c "$conf" -s "$stats_port" -a 127.0.0.1 \
        -p "$WORKDIR/nutcracker.pid" -o "$WORKDIR/nutcracker.log" -v 4
    wait_ready twemproxy "$LAST_PID" "$port" "$WORKDIR/nutcracker.log" || return 1
    PORT[twemproxy]=$port
    log "twemproxy on port $port (pid $LAST_PID)"
}

start_bifrost() { # NAME BINARY: bifrost's get_set config of benches/e2e.sh; sets PORT[NAME]
    local name=$1 bin=$2 port conf=$WORKDIR/$1.yaml
    port=$(pick_port)
    cat >"$conf" <<EOF
workers: $OPENLOOP_BIFROST_WORKERS
listeners:
  - name: main
    bind: 127.0.0.1:$port
backends:
  b1:
    servers: ["127.0.0.1:${PORT[memcached]}"]
    timeout: 1s
routes:
  - name: all
    match: "*"
    strategy: blind_forward
    backend: b1
EOF
    start_bg "$WORKDIR/$name.log" "$bin" --config "$conf" --log-level "$OPENLOOP_BIFROST_LOG_LEVEL"
    wait_ready "$name" "$LAST_PID" "$port" "$WORKDIR/$name.log" || return 1
    PORT[$name]=$port
    log "$name on port $port (pid $LAST_PID, workers: $OPENLOOP_BIFROST_WORKERS)"
}

start_targets() { # memcached always (the others stand in front of it), then the proxies
    local target
    start_memcached
    for target in $OPENLOOP_TARGETS; do
        case $target in
        memcached) ;;
        twemproxy) start_twemproxy || true ;;
        bifrost) [[ -n $BIFROST ]] && { start_bifrost bifrost "$BIFROST" || true; } ;;
        baseline)
            [[ -x $OPENLOOP_BASELINE_BIN ]] ||
                die "target baseline needs OPENLOOP_BASELINE_BIN, an executable bifrost binary"
            start_bifrost baseline "$OPENLOOP_BASELINE_BIN" || true
            ;;
        *) die "unknown target $target (memcached, twemproxy, bifrost, baseline)" ;;
        esac
        if [[ -z ${PORT[$target]:-} ]]; then
            ((OPENLOOP_STRICT >= 1)) && die "$target did not start"
            log "$target did not start: its rows are skipped"
        fi
    done
}

# ---------------------------------------------------------------------------------------------
# what else uses the machine

MACHINE_BUSY=0 MACHINE_TOTAL=0
machine_ticks() { # sets MACHINE_BUSY and MACHINE_TOTAL: the machine's CPU ticks since boot,
    # in use (user nice system irq softirq steal) and in all (those, idle and iowait)
    local -a c
    read -r -a c </proc/stat
    MACHINE_BUSY=$((c[1] + c[2] + c[3] + c[6] + c[7] + c[8]))
    MACHINE_TOTAL=$((MACHINE_BUSY + c[4] + c[5]))
}

OWN=0
own_ticks() { # sets OWN: CPU ticks of the servers this script started and of the children it
    # has waited for (the generator runs, through timeout). Not in a subshell: `times` there
    # would count that subshell's children only.
    local pid
    OWN=0
    for pid in "${PIDS[@]}"; do
        if alive "$pid"; then OWN=$((OWN + $(cpu_ticks "$pid"))); fi
    done
    times >"$WORKDIR/times" # second line: the children's user and system time, "0m1.250s ..."
    OWN=$((OWN + $(awk -v hz="$CLK_TCK" 'NR == 2 {
        for (i = 1; i <= 2; i++) { split($i, t, "m"); sub("s", "", t[2]); s += t[1] * 60 + t[2] }
        printf "%d", s * hz }' "$WORKDIR/times")))
}

cpu_busy() { # prints the share (%) of the machine's CPU time in use over 1 s, by anything:
    # the targets are idle then, so this is what other work (a build) takes from the runs
    local b0 t0
    machine_ticks
    b0=$MACHINE_BUSY t0=$MACHINE_TOTAL
    sleep 1
    machine_ticks
    calc %.0f "(t > 0 ? b * 100 / t : 0)" b=$((MACHINE_BUSY - b0)) t=$((MACHINE_TOTAL - t0))
}

wait_idle() { # with OPENLOOP_WAIT_IDLE set: until the machine is that quiet, or for at most
    # OPENLOOP_WAIT_MAX seconds
    local busy deadline=$((SECONDS + OPENLOOP_WAIT_MAX)) said=0
    ((OPENLOOP_WAIT_IDLE > 0)) || return 0
    while busy=$(cpu_busy) && ((busy >= OPENLOOP_WAIT_IDLE)); do
        if ((SECONDS >= deadline)); then
            log "still $busy% of the CPU in use after ${OPENLOOP_WAIT_MAX}s: running anyway"
            return 0
        fi
        ((said)) || log "waiting for the machine to be idle ($busy% of the CPU in use)"
        said=1
    done
}

# ---------------------------------------------------------------------------------------------
# the load

declare -A R=() # the last generator run's output line, key by key, and others_pct

run_gen() { # NAME PORT WORKLOAD SECONDS ARGS...: one generator run; fills R; false if it failed
    local name=$1 port=$2 workload=$3 secs=$4 out=$WORKDIR/gen-$1.out line kv rc=0
    local b0 t0 o0
    shift 4
    R=()
    wait_idle
    machine_ticks
    own_ticks
    b0=$MACHINE_BUSY t0=$MACHINE_TOTAL o0=$OWN
    timeout "$(awk -v s="$secs" -v w="$OPENLOOP_WARMUP" 'BEGIN { printf "%d", s + w + 90 }')" \
        "$GEN" --target "127.0.0.1:$port" --workload "$workload" --duration "$secs" \
        --warmup "$OPENLOOP_WARMUP" --connections "$OPENLOOP_CONNECTIONS" \
        --keys-per-get "$OPENLOOP_MULTIGET_KEYS" --set-share "$OPENLOOP_SET_SHARE" \
        --keys "$OPENLOOP_KEYS" --key-size "$OPENLOOP_KEY_SIZE" \
        --value-size "$OPENLOOP_VALUE_SIZE" --threads "$OPENLOOP_THREADS" \
        --arrivals "$OPENLOOP_ARRIVALS" --label "$name" "$@" \
        >"$out" 2>"$out.log" || rc=$?
    machine_ticks
    own_ticks
    # The human line goes to the log as progress; the key=value line is read below.
    sed 's/^/    /' "$out.log" >&2
    line=$(grep -m 1 '^openloop ' "$out" || true)
    if [[ $rc -ne 0 || -z $line ]]; then
        log "$name: the generator failed (exit $rc)"
        return 1
    fi
    for kv in $line; do [[ $kv == *=* ]] && R[${kv%%=*}]=${kv#*=}; done
    # The machine's CPU that neither the generator nor the servers used during the run, in %
    # of all of it: another build or program competing with the run.
    R[others_pct]=$(calc %.0f "(t > 0 && b > o ? (b - o) * 100 / t : 0)" \
        b=$((MACHINE_BUSY - b0)) o=$((OWN - o0)) t=$((MACHINE_TOTAL - t0)))
    ((R[others_pct] < 10)) || log "$name: other processes used ${R[others_pct]}% of the CPU"
    return 0
}

run_point() { # NAME PORT WORKLOAD SECONDS ARGS...: run_gen, again (OPENLOOP_RERUNS times at
    # most) while OPENLOOP_WAIT_IDLE is set and other programs took that much CPU during it
    local i
    for ((i = 0; ; i++)); do
        run_gen "$@" || return 1
        ((OPENLOOP_WAIT_IDLE > 0 && R[others_pct] >= OPENLOOP_WAIT_IDLE && i < OPENLOOP_RERUNS)) ||
            return 0
        log "$1: again (other programs took ${R[others_pct]}% of the CPU during it)"
    done
}

calc() { # FORMAT EXPR [VAR=VALUE...]: awk's EXPR over the VARs, printed in FORMAT
    local format=$1 expr=$2 v
    local -a args=()
    for v in "${@:3}"; do args+=(-v "$v"); done
    awk "${args[@]}" "BEGIN { printf \"$format\", $expr }"
}

# Results of the current workload, by "FRACTION|TARGET": the fields of its output line, or
# FAILED when the generator did not run.
declare -A RES=()

SAT="" # the current workload's saturation rate (requests/s)
saturation() { # WORKLOAD: sets SAT to twemproxy's closed-loop rate, or OPENLOOP_SAT_RATE
    if [[ -n $OPENLOOP_SAT_RATE ]]; then
        SAT=$(calc %.0f r r="$OPENLOOP_SAT_RATE")
        return 0
    fi
    [[ -n ${PORT[twemproxy]:-} ]] ||
        die "twemproxy is not running: set OPENLOOP_SAT_RATE to give the saturation rate"
    log "$1: twemproxy's saturation: closed loop for ${OPENLOOP_SAT_SECONDS}s"
    run_point "sat-$1" "${PORT[twemproxy]}" "$1" "$OPENLOOP_SAT_SECONDS" --mode closed ||
        die "the saturation run failed"
    [[ ${R[errors]} == 0 ]] || die "the saturation run through twemproxy had ${R[errors]} errors"
    SAT=$(calc %.0f r r="${R[achieved]}")
}

run_workload() { # WORKLOAD
    local wl=$1 sat f rate target title what busy
    RES=()
    busy=$(cpu_busy)
    ((busy < 20)) || log "the machine is busy: $busy% of its CPU in use before $wl's runs" \
        "(another build?); the latencies will show it"
    saturation "$wl"
    sat=$SAT
    [[ $sat =~ ^[0-9]+$ ]] && ((sat > 0)) || die "saturation rate '$sat': nothing to run"
    for f in $OPENLOOP_FRACTIONS; do
        rate=$(calc %.0f "s * f" s="$sat" f="$f")
        for target in $OPENLOOP_TARGETS; do
            [[ -n ${PORT[$target]:-} ]] || continue
            log "$wl at $(calc %g "f * 100" f="$f")% ($rate/s): $target"
            if run_point "$wl-$f-$target" "${PORT[$target]}" "$wl" "$OPENLOOP_SECONDS" \
                --mode open --rate "$rate"; then
                RES[$f|$target]="${R[achieved]} ${R[p50_us]} ${R[p99_us]} ${R[p999_us]} ${R[max_us]} ${R[errors]} ${R[status]} ${R[late]} ${R[requests]} ${R[gen_cpu_pct]} ${R[lag_p99_us]} ${R[others_pct]} ${R[late_pct]}"
                if [[ ${R[status]} == errors ]]; then
                    ((OPENLOOP_STRICT >= 2)) && die "$target: ${R[errors]} errors"
                fi
            else
                ((OPENLOOP_STRICT >= 1)) && die "$target: the generator failed"
                RES[$f|$target]=FAILED
            fi
        done
    done
    if [[ $wl == multiget ]]; then
        what="gets of $OPENLOOP_MULTIGET_KEYS keys"
    else
        what="gets of one key"
    fi
    title="$wl: $what, $(calc %g "s * 100" s="$OPENLOOP_SET_SHARE")% sets (requests, not keys)"
    title+=", $OPENLOOP_KEYS keys of $OPENLOOP_KEY_SIZE bytes, $OPENLOOP_VALUE_SIZE-byte values,"
    title+=" $OPENLOOP_CONNECTIONS connections, ${OPENLOOP_SECONDS}s per point"
    print_table "$wl" "$title" "$sat" "$busy"
}

# ---------------------------------------------------------------------------------------------
# the table

emit_table() { # TABLE_TEXT: prints it (and appends it to OPENLOOP_OUT if set)
    printf '\n%s\n\n' "$1"
    [[ -z $OPENLOOP_OUT ]] || printf '%s\n\n' "$1" >>"$OPENLOOP_OUT"
}

added() { # VALUE DIRECT: VALUE - DIRECT, signed, or "-" without a valid direct figure
    [[ -n $2 ]] || { echo -; return 0; }
    calc %+.1f "a - b" a="$1" b="$2"
}

print_table() { # WORKLOAD TITLE SATURATION BUSY
    local wl=$1 f target rate name table how
    local -a v d
    if [[ -n $OPENLOOP_SAT_RATE ]]; then
        how="given (OPENLOOP_SAT_RATE)"
    else
        how="twemproxy, closed loop: $OPENLOOP_CONNECTIONS connections, one request outstanding each, ${OPENLOOP_SAT_SECONDS}s"
    fi
    table=$(
        echo "### $2"
        echo
        echo "Saturation (100%): $3 requests/s ($how). CPU in use before the runs: $4%."
        echo
        echo "| rate | target | achieved/s | p50 µs | p99 µs | p99.9 µs | max µs | added p50 | added p99 | added p99.9 | errors | generator | other CPU |"
        echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"
        for f in $OPENLOOP_FRACTIONS; do
            rate="$(calc %g "f * 100" f="$f")% ($(calc %.0f "s * f" s="$3" f="$f")/s)"
            d=()
            read -r -a v <<<"${RES[$f|memcached]:-FAILED}"
            [[ ${v[6]:-} == ok ]] && d=("${v[@]}") # added latency only over a valid direct run
            for target in $OPENLOOP_TARGETS; do
                [[ -n ${PORT[$target]:-} ]] || continue
                name=$target
                [[ $target == memcached ]] && name="memcached direct"
                read -r -a v <<<"${RES[$f|$target]:-FAILED}"
                if [[ ${v[0]} == FAILED ]]; then
                    printf '| %s | %s (generator failed) | - | - | - | - | - | - | - | - | - | - | - |\n' \
                        "$rate" "$name"
                    continue
                fi
                # v: achieved p50 p99 p999 max errors status late requests gen_cpu lag_p99
                # others late_pct
                local gen="${v[9]}% CPU, lag p99 ${v[10]} µs, ${v[7]} late"
                if [[ ${v[6]} == ok ]]; then
                    p999=${v[3]}
                    # Over 0.1% of the requests generated over 1 ms late: p99.9 may be the
                    # generator's delay (footnote under the table).
                    if late_tail "${v[12]}"; then p999+="*"; fi
                    if [[ $target == memcached || ${#d[@]} -eq 0 ]]; then
                        a50=- a99=- a999=-
                    else
                        a50=$(added "${v[1]}" "${d[1]}") a99=$(added "${v[2]}" "${d[2]}")
                        a999=$(added "${v[3]}" "${d[3]}")
                        if late_tail "${v[12]}" || late_tail "${d[12]}"; then a999+="*"; fi
                    fi
                    printf '| %s | %s | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s%% |\n' \
                        "$rate" "$name" "${v[0]}" "${v[1]}" "${v[2]}" "$p999" "${v[4]}" \
                        "$a50" "$a99" "$a999" "${v[5]}" "$gen" "${v[11]}"
                else
                    # Shown, in parentheses, but not compared: errors, or a generator that
                    # fell behind its schedule (its delay is in the percentiles).
                    if [[ ${v[6]} == errors ]]; then
                        name+=" (INVALID: ${v[5]} errors)"
                    else
                        name+=" (generator saturated: $(calc %.2f "l * 100 / (r > 0 ? r : 1)" l="${v[7]}" r="${v[8]}")% late)"
                    fi
                    printf '| %s | %s | (%.0f) | (%s) | (%s) | (%s) | (%s) | - | - | - | %s | %s | %s%% |\n' \
                        "$rate" "$name" "${v[0]}" "${v[1]}" "${v[2]}" "${v[3]}" "${v[4]}" \
                        "${v[5]}" "$gen" "${v[11]}"
                fi
            done
        done
    )
    if [[ $table == *"*"* ]]; then
        table+=$'\n\n'"\* Over 0.1% of the run's requests were generated more than 1 ms late: p99.9"
        table+=" may be the generator's delay rather than the target's."
    fi
    emit_table "$table"
}

late_tail() { # LATE_PCT: true if over 0.1% of the run's requests were generated over 1 ms late
    [[ $(calc %d "(p > 0.1)" p="${1:-0}") == 1 ]]
}

main() {
    local tool wl
    for tool in memcached nutcracker awk timeout; do
        command -v "$tool" >/dev/null ||
            die "$tool not found (apt-get install memcached nutcracker)"
    done
    for wl in $OPENLOOP_WORKLOADS; do
        [[ $wl == get_set || $wl == multiget ]] || die "unknown workload $wl (get_set, multiget)"
    done
    find_generator
    [[ " $OPENLOOP_TARGETS " == *" bifrost "* ]] && find_bifrost
    start_targets
    log "$(nproc) cores; $OPENLOOP_CONNECTIONS connections, $OPENLOOP_THREADS generator" \
        "thread(s), ${OPENLOOP_WARMUP}s warm-up + ${OPENLOOP_SECONDS}s per point"
    for wl in $OPENLOOP_WORKLOADS; do run_workload "$wl"; done
}

main "$@"
