"""pylibmc (libmemcached) speaking the binary protocol to bifrost; run by tests/binary.rs.

Usage: python3 pylibmc_binary.py HOST:PORT PREFIX [KEY=VALUE ...]

Each KEY=VALUE is an item stored behind the proxy beforehand (flags 0, so pylibmc reads it as
bytes): it must be read back with get and get_multi first. Then keys under PREFIX are set, read,
multi-read, deleted and counted; <i>:keep:PREFIX (i in 0..19; the key starts with what varies, so
the keys spread over a pool) are left holding "value-<i>" for the test to find on the servers.

Exit status: 0 and "ok <checks>" on stdout when every check passed; 1 with the failed check on
stderr; 3 when pylibmc cannot be imported.
"""

import sys

try:
    import pylibmc
except ImportError as error:
    print(f"cannot import pylibmc: {error}", file=sys.stderr)
    sys.exit(3)

CHECKS = 0


def check(what, got, want):
    global CHECKS
    CHECKS += 1
    if got != want:
        print(f"FAILED {what}: got {got!r}, want {want!r}", file=sys.stderr)
        sys.exit(1)


def raises(what, error, call):
    global CHECKS
    CHECKS += 1
    try:
        result = call()
    except error:
        return
    print(f"FAILED {what}: returned {result!r}, want {error.__name__}", file=sys.stderr)
    sys.exit(1)


def main():
    addr, prefix = sys.argv[1], sys.argv[2]
    presets = dict(arg.split("=", 1) for arg in sys.argv[3:])
    c = pylibmc.Client([addr], binary=True, behaviors={"cas": True, "tcp_nodelay": True})
    check("binary protocol on", c.binary, True)

    # Items stored behind the proxy beforehand.
    for key, value in presets.items():
        check(f"get preset {key}", c.get(key), value.encode())
    absent = f"{prefix}:absent"
    want = {key: value.encode() for key, value in presets.items()}
    check("get_multi presets", c.get_multi(list(presets) + [absent]), want)

    # set / get / get_multi.
    kept = {f"{i}:keep:{prefix}": f"value-{i}" for i in range(20)}
    for key, value in kept.items():
        check(f"set {key}", c.set(key, value), True)
    for key, value in kept.items():
        check(f"get {key}", c.get(key), value)
    asked = [absent] + list(kept) + [f"{prefix}:absent2"]
    check("get_multi", c.get_multi(asked), kept)
    check("get of a missing key", c.get(absent), None)
    check("set_multi", c.set_multi({f"{i}:m:{prefix}": i for i in range(10)}), [])
    check(
        "get_multi of set_multi",
        c.get_multi([f"{i}:m:{prefix}" for i in range(10)]),
        {f"{i}:m:{prefix}": i for i in range(10)},
    )

    # Values of every size up to half a megabyte, bytes of every value.
    for size in (0, 1, 1000, 100_000, 500_000):
        value = bytes(i % 256 for i in range(size))
        check(f"set of {size} bytes", c.set(f"{prefix}:size", value), True)
        check(f"get of {size} bytes", c.get(f"{prefix}:size"), value)

    # Keys text cannot carry as they are.
    for key in (f"{prefix} with space", f"{prefix}\nnewline", f"{prefix}:\u00e9t\u00e9"):
        check(f"set {key!r}", c.set(key, "odd key"), True)
        check(f"get {key!r}", c.get(key), "odd key")
    odd = [f"{prefix} with space", f"{prefix}\nnewline"]
    check("get_multi of odd keys", c.get_multi(odd), {k: "odd key" for k in odd})

    # delete.
    gone = f"{prefix}:gone"
    check("set gone", c.set(gone, "x"), True)
    check("delete", c.delete(gone), True)
    check("get after delete", c.get(gone), None)
    check("delete of a missing key", c.delete(gone), False)
    check("delete_multi", c.delete_multi([f"{i}:m:{prefix}" for i in range(10)]), True)
    check("get_multi after delete_multi", c.get_multi([f"{i}:m:{prefix}" for i in range(10)]), {})

    # incr / decr.
    counter = f"{prefix}:counter"
    check("set counter", c.set(counter, "10"), True)
    check("incr", c.incr(counter, 5), 15)
    check("decr", c.decr(counter, 3), 12)
    check("decr below 0", c.decr(counter, 100), 0)
    check("incr again", c.incr(counter), 1)
    raises("incr of a missing key", pylibmc.NotFound, lambda: c.incr(absent))

    # add / replace / append / prepend / cas / touch.
    check("add of an existing key", c.add(counter, "1"), False)
    check("add of a new key", c.add(f"{prefix}:added", "a"), True)
    raises("replace of a missing key", pylibmc.NotFound, lambda: c.replace(absent, "r"))
    check("replace", c.replace(f"{prefix}:added", "r"), True)
    check("append", c.append(f"{prefix}:added", "z"), True)
    check("prepend", c.prepend(f"{prefix}:added", "w"), True)
    check("after append and prepend", c.get(f"{prefix}:added"), "wrz")
    value, cas = c.gets(f"{prefix}:added")
    check("gets", value, "wrz")
    check("cas with the item's cas", c.cas(f"{prefix}:added", "new", cas), True)
    check("cas with a stale cas", c.cas(f"{prefix}:added", "newer", cas), False)
    check("after cas", c.get(f"{prefix}:added"), "new")
    # pylibmc's bundled libmemcached takes 5 s over a binary touch whose answer carries the
    # item's flags, as memcached's own does (the same against memcached directly): slow, right.
    check("touch", c.touch(f"{prefix}:added", 100), True)
    check("touch of a missing key", c.touch(absent, 100), False)

    print(f"ok {CHECKS}")


main()
