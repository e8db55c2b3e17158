#!/usr/bin/env python3
"""A thundering herd against warm_first with an HTTP origin as cold, with and without leases.

Starts an HTTP origin in this process (http.server's ThreadingHTTPServer, HTTP/1.1 keep-alive:
`GET /cache/<key>` answers 200 and `value-of-<key>` after sleeping --origin-delay, counting the
GETs of each key; `HEAD` answers 200 with no body), a warm memcached on a free loopback port,
and two bifrost processes (--workers each) with one warm_first route: warm the memcached, cold
the origin, `write_on_miss: { ttl: 300 }`. Then, for each of --rounds fresh keys, --clients
concurrent clients (spread over both proxies) ask `get <key>` at once, and the script prints,
without and with `leases: {}` on the route (everything started afresh for each):
  * origin GETs per round (per --clients concurrent misses of one key): without leases,
    request coalescing should make it at most one per worker per proxy (2 x --workers), with
    leases one for the whole fleet;
  * the clients' latency (median, p99, max, in ms), from the connect to the whole reply;
  * bifrost's own counters for the origin (requests, coalesced reads) and anything it logged
    (it runs with RUST_LOG=warn).

Usage: benches/origin_herd.py [--clients 1000] [--rounds 3] [--origin-delay 0.2] [--workers 2]
Needs memcached and a release build (target/release/bifrost, or BIFROST_BIN). python3 only.
"""
import argparse
import asyncio
import http.server
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIFROST_BIN", os.path.join(ROOT, "target/release/bifrost"))
PREFIX = "/cache/"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, deadline=10.0, what="a server"):
    end = time.time() + deadline
    while time.time() < end:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"{what} exited ({proc.returncode}) before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what}: nothing listens on {port} after {deadline:.0f} s")


def value_of(key):
    return b"value-of-" + key


class Origin:
    """The HTTP origin: counts requests per (method, key); GETs sleep `delay` first."""

    def __init__(self, delay):
        self.delay, self.lock, self.counts = delay, threading.Lock(), {}
        origin = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive; every answer has a Content-Length
            disable_nagle_algorithm = True  # the head and the body are two writes

            def answer(self, body, send_body):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if send_body:
                    self.wfile.write(body)

            def do_GET(self):
                key = urllib.parse.unquote_to_bytes(self.path[len(PREFIX):])
                with origin.lock:
                    origin.counts[("GET", key)] = origin.counts.get(("GET", key), 0) + 1
                if not self.path.startswith(PREFIX):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                time.sleep(origin.delay)
                self.answer(value_of(key), True)

            def do_HEAD(self):
                with origin.lock:
                    origin.counts[("HEAD", b"")] = origin.counts.get(("HEAD", b""), 0) + 1
                self.answer(b"", False)

            def log_message(self, *args):
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 128

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def gets(self, key):
        with self.lock:
            return self.counts.get(("GET", key), 0)

    def total(self):
        with self.lock:
            return sum(n for (method, _), n in self.counts.items() if method == "GET")

    def close(self):
        self.server.shutdown()
        self.server.server_close()


async def get(port, key, timeout=30.0):
    """(seconds, reply) of one `get key` on a new connection; the reply is what arrived."""
    start = time.monotonic()
    buf = b""

    async def exchange():
        nonlocal buf
        r, w = await asyncio.open_connection("127.0.0.1", port)
        try:
            w.write(b"get " + key + b"\r\n")
            await w.drain()
            while not buf.endswith(b"END\r\n") and not buf.startswith((b"SERVER_ERROR", b"ERROR")):
                data = await r.read(65536)
                if not data:
                    break
                buf += data
        finally:
            w.close()

    try:
        await asyncio.wait_for(exchange(), timeout)
    except OSError as e:
        buf += f" [{e}]".encode()
    except asyncio.TimeoutError:
        buf += b" [no whole reply after %ds]" % timeout
    return time.monotonic() - start, buf


def bifrost_stats(port):
    """The origin's counters in one proxy's `stats`: {name: value} for server:http... lines."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"stats\r\n")
    buf = b""
    while not buf.endswith(b"END\r\n"):
        data = s.recv(65536)
        if not data:
            break
        buf += data
    s.close()
    out = {}
    for line in buf.decode(errors="replace").splitlines():
        w = line.split()
        if len(w) == 3 and w[1].startswith("server:http"):
            name = w[1].rsplit(":", 1)[1]
            if w[2].isdigit():
                out[name] = out.get(name, 0) + int(w[2])
    return out


async def herd(args, leases, work):
    origin = Origin(args.origin_delay)
    warm = free_port()
    user = ["-u", "root"] if os.getuid() == 0 else []
    mc = subprocess.Popen(["memcached", "-l", "127.0.0.1", "-p", str(warm), "-U", "0",
                           "-c", "4096"] + user)
    procs, ports, logs = [mc], [], []
    lease_line = "    leases: {}\n" if leases else ""
    setting = "leases" if leases else "noleases"
    try:
        wait_port(warm, mc, what="memcached")
        for i in range(2):
            port = free_port()
            conf = os.path.join(work, f"bifrost-{setting}-{i}.yaml")
            with open(conf, "w") as f:
                f.write(f"""workers: {args.workers}
listeners: [{{name: main, bind: "127.0.0.1:{port}"}}]
backends:
  warm: {{servers: ["127.0.0.1:{warm}"], timeout: 5s}}
  origin: {{servers: ["http://127.0.0.1:{origin.port}/cache/"], timeout: 5s}}
routes:
  - name: tiered
    match: "*"
    strategy: warm_first
    warm: warm
    cold: origin
    write_on_miss: {{ ttl: 300 }}
{lease_line}""")
            log = os.path.join(work, f"bifrost-{setting}-{i}.log")
            logs.append(log)
            with open(log, "wb") as err:
                procs.append(subprocess.Popen([BIN, "--config", conf], stdin=subprocess.DEVNULL,
                                              stdout=err, stderr=err,
                                              env=dict(os.environ, RUST_LOG="warn")))
            ports.append(port)
        for proc, port in zip(procs[1:], ports):
            wait_port(port, proc, what="bifrost")
        results = []
        for round_ in range(args.rounds):
            key = b"herd:%d" % round_
            before_total = origin.total()
            answers = await asyncio.gather(*(get(ports[i % 2], key) for i in range(args.clients)))
            await asyncio.sleep(0.2)  # let write-backs and late origin GETs land before counting
            want = b"VALUE %s 0 %d\r\n%s\r\nEND\r\n" % (key, len(value_of(key)), value_of(key))
            bad = [a for _, a in answers if a != want]
            if bad:
                print(f"  round {round_}: {len(bad)} clients got no value, e.g. {bad[0][:80]!r}")
            other = origin.total() - before_total - origin.gets(key)
            results.append((origin.gets(key), other, len(bad), sorted(t for t, _ in answers)))
        stats = [bifrost_stats(p) for p in ports]
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        origin.close()
    logged = []
    for i, log in enumerate(logs):
        with open(log, errors="replace") as f:
            text = f.read().strip()
        if text:
            logged.append(f"--- bifrost {i} ({setting}) logged:\n" + "\n".join(text.splitlines()[:20]))
    return results, stats, logged


def report(name, results, stats, delay):
    gets = [g for g, _, _, _ in results]
    lat = sorted(t for _, _, _, ts in results for t in ts)
    other = sum(o for _, o, _, _ in results)
    bad = sum(b for _, _, b, _ in results)
    print(f"{name}: origin GETs per herd {gets}; "
          f"latency ms median {statistics.median(lat) * 1000:.0f}, "
          f"p99 {lat[max(0, int(len(lat) * 0.99) - 1)] * 1000:.0f}, max {max(lat) * 1000:.0f} "
          f"(origin delay {delay * 1000:.0f})")
    counters = ", ".join(
        f"proxy {i}: " + " ".join(f"{k}={s.get(k, 0)}" for k in ("requests", "coalesced_reads",
                                                                   "responses_2xx", "errors",
                                                                   "timeouts"))
        for i, s in enumerate(stats))
    print(f"    bifrost's origin counters: {counters}")
    if other or bad:
        print(f"    odd: {other} origin GETs of other keys, {bad} clients without the value")


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(need, 65536))
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as e:
            sys.exit(f"cannot raise the open file limit to {need} (soft {soft}, hard {hard}): {e}")
        soft = target
    if soft != resource.RLIM_INFINITY and soft < need:
        sys.exit(f"the open file limit (hard {hard}) is below the {need} descriptors needed: "
                 "raise it (ulimit -Hn) or lower --clients")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--origin-delay", type=float, default=0.2)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    if not os.access(BIN, os.X_OK):
        sys.exit(f"{BIN} not found: cargo build --release (or set BIFROST_BIN)")
    if shutil.which("memcached") is None:
        sys.exit("memcached not found: apt-get install memcached")
    raise_nofile(args.clients + 256)
    print(f"{args.clients} concurrent gets of one missing key over 2 proxies x {args.workers} "
          f"workers, warm_first with an HTTP origin as cold, {args.rounds} rounds per setting")
    logged = []
    with tempfile.TemporaryDirectory(prefix="bifrost-origin-herd.") as work:
        for leases in (False, True):
            results, stats, log = asyncio.run(herd(args, leases, work))
            report("leases   " if leases else "no leases", results, stats, args.origin_delay)
            logged += log
    print("\n".join(logged) if logged else "bifrost logged nothing at warn.")


if __name__ == "__main__":
    main()
