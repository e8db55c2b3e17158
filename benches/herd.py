#!/usr/bin/env python3
"""A thundering herd against warm_first, with and without leases, side by side in one run.

Starts a warm and a cold memcached on free loopback ports, a relay in front of cold that holds
each reply for --cold-delay (a slow tier of record, counting the reads that reach it), and two
bifrost processes (--workers each) over the same tiers. Then, for each of --rounds fresh keys,
--clients concurrent clients (spread over both proxies) ask `get <key>` at once, and the script
prints, with and without `leases`:
  * cold reads per round (per --clients concurrent misses of one key),
  * the latency of the client that read cold itself (the lease holder) and of those that
    waited for it (median and worst), in ms.

Usage: benches/herd.py [--clients 1000] [--rounds 5] [--cold-delay 0.2] [--workers 2]
Needs memcached and a release build (target/release/bifrost, or BIFROST_BIN).
"""
import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("BIFROST_BIN", os.path.join(ROOT, "target/release/bifrost"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, deadline=10.0):
    end = time.time() + deadline
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


class Relay:
    """Holds each chunk of cold's replies for `delay`; counts `get`/`mg` lines sent to cold."""

    def __init__(self, target, delay):
        self.target, self.delay, self.reads = target, delay, 0

    async def serve(self, reader, writer):
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.target)

        async def upstream():
            buf = b""
            while data := await reader.read(65536):
                buf += data
                *lines, buf = buf.split(b"\n")
                self.reads += sum(1 for l in lines if l.startswith((b"get ", b"mg ")))
                up_w.write(data)
                await up_w.drain()
            up_w.close()

        async def downstream():
            while data := await up_r.read(65536):
                await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
            writer.close()

        try:
            await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        except asyncio.CancelledError:
            pass  # the run is over


async def get(port, key):
    start = time.monotonic()
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"get " + key + b"\r\n")
    await w.drain()
    buf = b""
    while not buf.endswith(b"END\r\n") and not buf.startswith(b"SERVER_ERROR"):
        data = await r.read(65536)
        if not data:
            break
        buf += data
    w.close()
    return time.monotonic() - start, buf


async def herd(args, leases):
    warm, cold = free_port(), free_port()
    user = ["-u", "root"] if os.getuid() == 0 else []
    mcs = [subprocess.Popen(["memcached", "-l", "127.0.0.1", "-p", str(p), "-U", "0", "-c", "4096"] + user)
           for p in (warm, cold)]
    for p in (warm, cold):
        wait_port(p)
    relay = Relay(cold, args.cold_delay)
    server = await asyncio.start_server(relay.serve, "127.0.0.1", 0)
    relay_port = server.sockets[0].getsockname()[1]
    proxies, ports = [], []
    lease_line = "    leases: { lease_ttl: 5s, wait: 3s }\n" if leases else ""
    for _ in range(2):
        port = free_port()
        conf = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        conf.write(f"""workers: {args.workers}
listeners: [{{name: main, bind: "127.0.0.1:{port}"}}]
backends:
  warm: {{servers: ["127.0.0.1:{warm}"], timeout: 5s}}
  cold: {{servers: ["127.0.0.1:{relay_port}"], timeout: 5s, connections: 4}}
routes:
  - name: tiered
    match: "*"
    strategy: warm_first
    warm: warm
    cold: cold
    write_on_miss: {{ ttl: 300 }}
{lease_line}""")
        conf.close()
        proxies.append(subprocess.Popen([BIN, "--config", conf.name, "--log-level", "warn"]))
        ports.append(port)
    for p in ports:
        wait_port(p)
    # The cold tier holds every key of the run.
    s = socket.create_connection(("127.0.0.1", cold))
    for round_ in range(args.rounds):
        s.sendall(b"set herd:%d 0 0 5\r\nvalue\r\n" % round_)
        s.recv(100)
    results = []
    try:
        for round_ in range(args.rounds):
            key = b"herd:%d" % round_
            before = relay.reads
            answers = await asyncio.gather(*(get(ports[i % 2], key) for i in range(args.clients)))
            bad = [a for _, a in answers if b"value" not in a]
            if bad:
                print(f"  round {round_}: {len(bad)} clients got no value, e.g. {bad[0][:60]!r}")
            results.append((relay.reads - before, sorted(t for t, _ in answers)))
    finally:
        for p in proxies + mcs:
            p.terminate()
        server.close()
    return results


def report(name, results, delay):
    reads = [r for r, _ in results]
    lat = [t for _, ts in results for t in ts]
    # A client that read cold itself took at least the cold delay once; the others waited.
    print(f"{name}: cold reads per herd {reads} (mean {statistics.mean(reads):.1f}); "
          f"latency ms median {statistics.median(lat) * 1000:.0f}, "
          f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.0f}, max {max(lat) * 1000:.0f} "
          f"(cold delay {delay * 1000:.0f})")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--clients", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cold-delay", type=float, default=0.2)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    if not os.access(BIN, os.X_OK):
        sys.exit(f"{BIN} not found: cargo build --release")
    print(f"{args.clients} concurrent misses of one key over 2 proxies x {args.workers} workers, "
          f"{args.rounds} rounds")
    for leases in (False, True):
        report("leases   " if leases else "no leases", asyncio.run(herd(args, leases)), args.cold_delay)


if __name__ == "__main__":
    main()
