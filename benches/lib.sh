# Shell helpers the end-to-end benchmarks share (benches/e2e.sh, benches/openloop.sh): starting
# and stopping processes, free loopback ports, waiting for a server to answer, CPU ticks.
# Sourced after the script has defined `log`, `die`, `PIDS` (every process started),
# `USED_PORTS` (" ": ports handed out), `LAST_PID`, `WORKDIR` and `BENCH_KEEP` (1: keep WORKDIR).
# shellcheck shell=bash

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
    if [[ ${BENCH_KEEP:-0} == 1 ]]; then log "kept $WORKDIR"; else rm -rf "$WORKDIR"; fi
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
# outgoing connections (the load tool's, the proxies') — a listener cannot bind one of those in use,
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
        printf 'get bench:probe\r\n' >&3
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

cpu_ticks() { # PID: utime + stime of the whole process (all threads), in clock ticks
    local stat rest
    local -a f
    read -r stat <"/proc/$1/stat"
    rest=${stat##*) } # the command name may contain spaces; fields after it are fixed
    read -r -a f <<<"$rest"
    echo $((f[11] + f[12])) # fields 14 and 15 of stat(5); rest starts at field 3
}
