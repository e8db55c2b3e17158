#!/usr/bin/env bash
# What an HTTP origin costs the proxy per request: user-space instructions per get, counted by
# valgrind's callgrind (exact and repeatable, whatever else the machine does; the kernel's work
# is not counted), for four loads on one client connection, the release bifrost at workers: 1:
#
#   a  warm_first, warm and cold both memcached; every get a warm hit (the baseline)
#   b  warm_first, warm memcached, cold an nginx origin; every get a warm hit
#   c  the same route; every get a warm miss: GET of the origin (200), value written back
#      into warm (write_on_miss ttl 300); REQUESTS distinct keys, each a file of nginx's
#   d  consistent_hash straight on the origin pool: every get a GET of the origin (200), no warm
#
# Each load is measured twice, with REQUESTS gets and with none (start-up and shutdown, the
# readiness check's connection), and the difference divided by REQUESTS is its figure. Then,
# without valgrind, a and c once more over ORIGIN_CPU_REQUESTS gets each, sequential and
# pipelined: the proxy's CPU time (utime + stime from /proc, so the kernel's share is in) per
# request. Clock ticks of 10 ms on a shared machine: a noisy figure, for orders of magnitude.
# Each run has a fresh warm memcached, so c and its CPU runs read every key from the origin.
#
# Usage: benches/origin.sh [REQUESTS]     (default 5000)
#
# Environment (defaults in brackets):
#   ORIGIN_BATCH [1]              gets the client pipelines at once under callgrind (1:
#                                 sequential: the client sends the next get when the previous
#                                 one is answered)
#   ORIGIN_VALUE_SIZE [100]       value bytes (the files' and warm's)
#   ORIGIN_CPU_REQUESTS [20000]   gets of the CPU-time runs; 0 skips them
#   ORIGIN_CPU_BATCHES ["1 50"]   the CPU-time runs' pipelining, one run of a and c per entry
#                                 (sequential gets cost the proxy mostly wake-ups and syscalls)
#   ORIGIN_LOADS ["a b c d"]      the loads measured under callgrind (a is the ratios' base)
#   BIFROST_BIN                   binary to run (default target/release/bifrost, built with
#                                 `cargo build --release` if missing)
#   ORIGIN_KEEP [0]               1: keep the work directory (configs, logs, profiles)
#
# Needs valgrind (callgrind_annotate), memcached, /usr/sbin/nginx (or NGINX_BIN) and python3.
# Every process it starts is stopped on exit, whatever the exit. bifrost runs with
# RUST_LOG=warn; anything it logs is printed at the end.
set -euo pipefail

REQUESTS=${1:-5000}
ORIGIN_BATCH=${ORIGIN_BATCH:-1}
ORIGIN_VALUE_SIZE=${ORIGIN_VALUE_SIZE:-100}
ORIGIN_CPU_REQUESTS=${ORIGIN_CPU_REQUESTS:-20000}
ORIGIN_CPU_BATCHES=${ORIGIN_CPU_BATCHES:-1 50}
ORIGIN_LOADS=${ORIGIN_LOADS:-a b c d}
NGINX_BIN=${NGINX_BIN:-/usr/sbin/nginx}
BENCH_KEEP=${ORIGIN_KEEP:-0}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/bifrost-origin.XXXXXX")
CLK_TCK=$(getconf CLK_TCK)
PIDS=()        # every process started, stopped by cleanup
USED_PORTS=" " # ports handed out by pick_port
LAST_PID=

log() { printf '[origin] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=benches/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cd "$ROOT"
((REQUESTS > 0)) || die "REQUESTS must be above 0 (got $REQUESTS)"
for tool in valgrind callgrind_annotate memcached python3; do
    command -v "$tool" >/dev/null ||
        die "$tool not found (apt-get install valgrind memcached python3)"
done
[[ -x $NGINX_BIN ]] || die "$NGINX_BIN not found (apt-get install nginx, or set NGINX_BIN)"
for load in $ORIGIN_LOADS; do
    [[ $load == [abcd] ]] || die "unknown load $load (ORIGIN_LOADS takes a b c d)"
done
BIN=${BIFROST_BIN:-$ROOT/target/release/bifrost}
if [[ ! -x $BIN ]]; then
    [[ -n ${BIFROST_BIN:-} ]] && die "BIFROST_BIN=$BIN is not an executable"
    log "building $BIN (cargo build --release)"
    env -u CARGO_TARGET_DIR cargo build --release --bin bifrost >&2
fi

# ---------------------------------------------------------------------------------------------
# the client: one connection, gets of KEYS in order, each reply checked

cat >"$WORKDIR/client.py" <<'PY'
"""origin.sh's client. Modes:
  files DIR PREFIX N SIZE            write N files DIR/PREFIX000000... holding each key's value
  set PORT PREFIX N SIZE             set the N keys (and values) in a memcached, pipelined
  get PORT PREFIX N SIZE BATCH       get the N keys on one connection, BATCH at a time; each
                                     reply must be the key's value, or it exits with an error
  items PORT N                       wait (up to 30 s) until the memcached holds N items
  http PORT PATH                     the status of GET PATH (0 if nothing answers)
"""
import os, socket, sys, time

def key(prefix, i):
    return b"%s%06d" % (prefix.encode(), i)

def value(k, size):
    return (k + b"=" + b"v" * size)[:size]

def read_until(sock, buf, end):
    while end not in buf:
        data = sock.recv(1 << 16)
        if not data:
            sys.exit(f"connection closed; got {buf[-200:]!r}")
        buf += data
    return buf

def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "files":
        d, prefix, n, size = args[0], args[1], int(args[2]), int(args[3])
        for i in range(n):
            k = key(prefix, i)
            with open(os.path.join(d, k.decode()), "wb") as f:
                f.write(value(k, size))
    elif mode == "set":
        port, prefix, n, size = int(args[0]), args[1], int(args[2]), int(args[3])
        s = socket.create_connection(("127.0.0.1", port))
        for start in range(0, n, 100):
            batch = range(start, min(n, start + 100))
            s.sendall(b"".join(b"set %s 0 0 %d\r\n%s\r\n" % (key(prefix, i), size,
                                                            value(key(prefix, i), size))
                               for i in batch))
            buf = b""
            while buf.count(b"\r\n") < len(batch):
                data = s.recv(1 << 16)
                if not data:
                    sys.exit(f"set: connection closed after {buf[-200:]!r}")
                buf += data
            if buf != b"STORED\r\n" * len(batch):
                sys.exit(f"set: {buf[:200]!r}")
    elif mode == "get":
        port, prefix, n, size, batch = (int(args[0]), args[1], int(args[2]), int(args[3]),
                                        int(args[4]))
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        for start in range(0, n, batch):
            keys = [key(prefix, i) for i in range(start, min(n, start + batch))]
            s.sendall(b"".join(b"get %s\r\n" % k for k in keys))
            for k in keys:
                buf = read_until(s, buf, b"END\r\n")
                reply, buf = buf.split(b"END\r\n", 1)
                want = b"VALUE %s 0 %d\r\n%s\r\n" % (k, size, value(k, size))
                if reply != want:
                    sys.exit(f"get {k.decode()}: {reply[:200]!r}, expected {want[:60]!r}...")
    elif mode == "items":
        port, n = int(args[0]), int(args[1])
        deadline = time.time() + 30
        while True:
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"stats\r\n")
            stats = read_until(s, b"", b"END\r\n").decode()
            s.close()
            items = int(stats.split("STAT curr_items ")[1].split()[0])
            if items >= n:
                return
            if time.time() > deadline:
                sys.exit(f"warm holds {items} items after 30 s, expected {n}")
            time.sleep(0.05)
    elif mode == "http":
        port, path = int(args[0]), args[1]
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=1)
            s.sendall(b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path.encode())
            print(int(read_until(s, b"", b"\r\n").split()[1]))
        except (OSError, IndexError, ValueError, SystemExit):
            print(0)
    else:
        sys.exit(f"unknown mode {mode}")

main()
PY
client() { python3 "$WORKDIR/client.py" "$@"; }

# ---------------------------------------------------------------------------------------------
# the servers

MEMCACHED_USER=()
[[ $(id -u) == 0 ]] && MEMCACHED_USER=(-u root)

MC_PORT="" MC_PID=""
start_memcached() { # NAME: a fresh memcached; sets MC_PORT and MC_PID (also in PIDS)
    MC_PORT=$(pick_port)
    start_bg "$WORKDIR/memcached-$1.log" memcached -l 127.0.0.1 -p "$MC_PORT" -U 0 -m 256 -t 1 \
        "${MEMCACHED_USER[@]}"
    MC_PID=$LAST_PID
    wait_ready "memcached $1" "$MC_PID" "$MC_PORT" "$WORKDIR/memcached-$1.log" || die "memcached"
}

wait_listen() { # NAME PID PORT LOG SECONDS: until something listens on PORT (PID alive)
    local name=$1 pid=$2 port=$3 logfile=$4 deadline=$((SECONDS + $5))
    while ((SECONDS < deadline)); do
        alive "$pid" || {
            log "$name exited before listening on $port; its log:"
            sed 's/^/    /' "$logfile" >&2 || true
            exit 1
        }
        port_is_free "$port" || return 0
        sleep 0.05
    done
    log "$name does not listen on $port after $5 s; its log:"
    sed 's/^/    /' "$logfile" >&2 || true
    exit 1
}

# nginx as tests/common/origin.rs starts it: in the foreground, no master process, everything it
# writes in its prefix directory; /cache/ served from $NGINX_DIR/cache. No access log (speed).
NGINX_DIR=$WORKDIR/nginx
NGINX_PORT=$(pick_port)
mkdir -p "$NGINX_DIR/cache"
nginx_user=""
[[ $(id -u) == 0 ]] && nginx_user="user root;"
cat >"$NGINX_DIR/nginx.conf" <<EOF
# Written by benches/origin.sh.
$nginx_user
master_process off;
worker_processes 1;
pid "$NGINX_DIR/nginx.pid";
error_log "$NGINX_DIR/error.log" warn;
events { worker_connections 1024; }
http {
    client_body_temp_path "$NGINX_DIR/client_body_temp";
    proxy_temp_path "$NGINX_DIR/proxy_temp";
    fastcgi_temp_path "$NGINX_DIR/fastcgi_temp";
    uwsgi_temp_path "$NGINX_DIR/uwsgi_temp";
    scgi_temp_path "$NGINX_DIR/scgi_temp";
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location /cache/ {
            root "$NGINX_DIR";
        }
    }
}
EOF
FILES=$((REQUESTS > ORIGIN_CPU_REQUESTS ? REQUESTS : ORIGIN_CPU_REQUESTS))
PREFIX="origin:bench:" # percent-encoded in the URL (%3A): nginx decodes it to the file name
log "writing $FILES files of $ORIGIN_VALUE_SIZE bytes for nginx to serve"
client files "$NGINX_DIR/cache" "$PREFIX" "$FILES" "$ORIGIN_VALUE_SIZE"
start_bg "$WORKDIR/nginx.log" "$NGINX_BIN" -p "$NGINX_DIR" -c "$NGINX_DIR/nginx.conf" \
    -e "$NGINX_DIR/error.log" -g 'daemon off;'
NGINX_PID=$LAST_PID
wait_listen nginx "$NGINX_PID" "$NGINX_PORT" "$NGINX_DIR/error.log" 10
status=$(client http "$NGINX_PORT" "/cache/origin%3Abench%3A000000")
[[ $status == 200 ]] || die "nginx answers $status to GET /cache/origin%3Abench%3A000000, not 200"

COLD_PORT="" # the memcached cold tier of load a (empty: every get hits warm)
start_memcached cold
COLD_PORT=$MC_PORT

route_of() { # LOAD: the route line of bifrost's config
    case $1 in
    a) echo '{name: all, match: "*", strategy: warm_first, warm: warm, cold: mc_cold, write_on_miss: {ttl: 300}}' ;;
    b | c) echo '{name: all, match: "*", strategy: warm_first, warm: warm, cold: origin, write_on_miss: {ttl: 300}}' ;;
    d) echo '{name: all, match: "*", strategy: consistent_hash, backend: origin}' ;;
    *) die "unknown load $1 (ORIGIN_LOADS takes a b c d)" ;;
    esac
}
describe() {
    case $1 in
    a) echo "a: warm_first, memcached cold, warm hit" ;;
    b) echo "b: warm_first, origin cold, warm hit" ;;
    c) echo "c: warm_first, warm miss + origin 200 + write-back" ;;
    d) echo "d: consistent_hash on the origin, origin 200" ;;
    esac
}

WARM_PORT="" WARM_PID=""
PROXY_PORT="" PROXY_PID="" PROXY_LOG=""
start_proxy() { # NAME LOAD VALGRIND(0|1): a fresh warm memcached (pre-set for a and b) and bifrost
    local name=$1 load=$2 under=$3 conf=$WORKDIR/bifrost-$1.yaml
    start_memcached "warm-$name"
    WARM_PORT=$MC_PORT WARM_PID=$MC_PID
    PROXY_PORT=$(pick_port)
    cat >"$conf" <<EOF
workers: 1
listeners: [{name: main, bind: "127.0.0.1:$PROXY_PORT"}]
backends:
  warm: {servers: ["127.0.0.1:$WARM_PORT"], timeout: 5s}
  mc_cold: {servers: ["127.0.0.1:$COLD_PORT"], timeout: 5s}
  origin: {servers: ["http://127.0.0.1:$NGINX_PORT/cache/"], timeout: 5s}
routes: [$(route_of "$load")]
EOF
    PROXY_LOG=$WORKDIR/bifrost-$name.log
    if ((under)); then
        RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$WORKDIR/callgrind-$name.out" \
            --log-file="$WORKDIR/valgrind-$name.log" "$BIN" --config "$conf" </dev/null \
            >"$PROXY_LOG" 2>&1 &
    else
        RUST_LOG=warn "$BIN" --config "$conf" </dev/null >"$PROXY_LOG" 2>&1 &
    fi
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_listen "bifrost ($name)" "$PROXY_PID" "$PROXY_PORT" "$PROXY_LOG" 60
}

preset_warm() { # LOAD N: the keys a get will read, in warm, for the loads that hit warm
    [[ $1 == a || $1 == b ]] && client set "$WARM_PORT" "$PREFIX" "$2" "$ORIGIN_VALUE_SIZE"
    return 0
}

finish_load() { # LOAD N: waits for c's write-backs (warm holds the N keys)
    [[ $1 == c ]] && client items "$WARM_PORT" "$2"
    return 0
}

stop_proxy() { # stops bifrost (SIGTERM: callgrind writes its profile) and the warm memcached
    local i
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    for ((i = 0; i < 1200; i++)); do
        alive "$PROXY_PID" || break
        sleep 0.05
    done
    alive "$PROXY_PID" && die "bifrost did not stop within 60 s of SIGTERM"
    wait "$PROXY_PID" 2>/dev/null || true
    stop_pid "$WARM_PID"
}

LOGGED="" # what bifrost logged, per run
note_log() { # NAME
    if [[ -s $PROXY_LOG ]]; then
        LOGGED+="--- bifrost ($1) logged:"$'\n'"$(head -n 20 "$PROXY_LOG")"$'\n'
    fi
}

# These run in the script's shell, not in $(...): a process started in a subshell would be
# out of the cleanup's reach.
TOTAL=""
callgrind_run() { # LOAD N: sets TOTAL, the instructions bifrost ran for N gets of LOAD
    local load=$1 n=$2 name=$1-$2
    start_proxy "$name" "$load" 1
    preset_warm "$load" "$n"
    if ((n > 0)); then
        client get "$PROXY_PORT" "$PREFIX" "$n" "$ORIGIN_VALUE_SIZE" "$ORIGIN_BATCH" ||
            die "load $load: the client failed (bifrost's log: $PROXY_LOG)"
        finish_load "$load" "$n"
    fi
    stop_proxy
    note_log "$name, callgrind"
    TOTAL=$(callgrind_annotate "$WORKDIR/callgrind-$name.out" 2>/dev/null |
        awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
    [[ -n $TOTAL ]] || die "no callgrind total for $name (see $WORKDIR/valgrind-$name.log)"
}

origin_stats() { # the origin server's counters in bifrost's `stats` (requests, coalesced, 2xx)
    python3 - "$PROXY_PORT" <<'PY'
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
s.sendall(b"stats\r\n")
buf = b""
while not buf.endswith(b"END\r\n"):
    buf += s.recv(65536)
out = []
for line in buf.decode().splitlines():
    w = line.split()
    if len(w) == 3 and w[1].startswith("server:http") and w[1].endswith(
            (":requests", ":errors", ":timeouts", ":coalesced_reads", ":responses_2xx",
             ":responses_4xx", ":responses_5xx")):
        name = w[1].rsplit(":", 1)[1]
        if w[2] != "0" or name not in ("responses_4xx", "responses_5xx"):
            out.append(f"{name} {w[2]}")
print(", ".join(out) or "no origin counters")
PY
}

CPU_ROW=""
cpu_run() { # LOAD N BATCH: sets CPU_ROW, "µs per get | ticks | origin stats", no valgrind
    local load=$1 n=$2 batch=$3 name=$1-cpu-$3 before after stats
    start_proxy "$name" "$load" 0
    preset_warm "$load" "$n"
    before=$(cpu_ticks "$PROXY_PID")
    client get "$PROXY_PORT" "$PREFIX" "$n" "$ORIGIN_VALUE_SIZE" "$batch" ||
        die "load $load: the client failed (bifrost's log: $PROXY_LOG)"
    finish_load "$load" "$n"
    after=$(cpu_ticks "$PROXY_PID")
    stats=$(origin_stats)
    stop_proxy
    note_log "$name, no valgrind"
    CPU_ROW=$(python3 -c 'import sys; t, hz, n = map(int, sys.argv[1:4]); print(f"{t * 1e6 / hz / n:.1f} | {t} | {sys.argv[4]}")' \
        "$((after - before))" "$CLK_TCK" "$n" "$stats")
}

# ---------------------------------------------------------------------------------------------
# the runs

declare -A PER=()
for load in $ORIGIN_LOADS; do
    log "$(describe "$load"): callgrind, 0 then $REQUESTS gets"
    callgrind_run "$load" 0
    zero=$TOTAL
    callgrind_run "$load" "$REQUESTS"
    full=$TOTAL
    PER[$load]=$(((full - zero) / REQUESTS))
    log "  $((full - zero)) instructions over the 0-request run: ${PER[$load]} per get"
done

CPU_ROWS=()
if ((ORIGIN_CPU_REQUESTS > 0)); then
    for batch in $ORIGIN_CPU_BATCHES; do
        for load in a c; do
            log "$(describe "$load"): CPU time over $ORIGIN_CPU_REQUESTS gets, $batch at a time, no valgrind"
            cpu_run "$load" "$ORIGIN_CPU_REQUESTS" "$batch"
            CPU_ROWS+=("| $(describe "$load") | $batch | $CPU_ROW |")
        done
    done
fi

echo
echo "$BIN, workers: 1, $REQUESTS gets of $ORIGIN_VALUE_SIZE-byte values on one connection" \
    "($( ((ORIGIN_BATCH == 1)) && echo sequential || echo "pipelined $ORIGIN_BATCH at a time"))," \
    "user-space instructions per get (callgrind, a 0-request run subtracted):"
echo
echo "| load | instructions per get | vs a |"
echo "|---|---:|---:|"
for load in $ORIGIN_LOADS; do
    printf '| %s | %s |\n' "$(describe "$load")" "$(python3 -c 'import sys
per, base = int(sys.argv[1]), sys.argv[2]
print(f"{per:,} | " + (f"{per / int(base):.2f}x" if base else "-"))' "${PER[$load]}" "${PER[a]:-}")"
done

if ((ORIGIN_CPU_REQUESTS > 0)); then
    echo
    echo "Proxy CPU time (utime + stime, kernel included) per get, no valgrind, $ORIGIN_CPU_REQUESTS gets" \
        "sent BATCH at a time (1: sequential); clock ticks of $((1000 / CLK_TCK)) ms on a shared" \
        "machine: NOISY, for orders of magnitude:"
    echo
    echo "| load | batch | CPU µs per get | ticks | bifrost's origin counters (stats) |"
    echo "|---|---:|---:|---:|---|"
    printf '%s\n' "${CPU_ROWS[@]}"
fi

echo
if [[ -n $LOGGED ]]; then
    printf '%s' "$LOGGED"
else
    echo "bifrost logged nothing at warn in any run."
fi
