//! Tests of config errors: the exact message and path of each validation rule, and that every
//! error of a file is reported at once.

use super::*;

pub(super) const LISTENERS: &str = "listeners: [{name: main, bind: '127.0.0.1:11311'}]";
pub(super) const BACKENDS: &str =
    "backends: {l1: {servers: ['127.0.0.1:11211']}, l2: {servers: ['127.0.0.1:11212']}}";
pub(super) const ROUTES: &str =
    "routes: [{name: rest, match: '*', strategy: blind_forward, backend: l1}]";

/// A valid document with some sections replaced (by their top-level key) or added.
pub(super) fn doc(parts: &[&str]) -> String {
    let mut out = String::new();
    for base in [LISTENERS, BACKENDS, ROUTES] {
        let key = &base[..base.find(':').unwrap_or(0) + 1];
        if !parts.iter().any(|p| p.starts_with(key)) {
            out.push_str(base);
            out.push('\n');
        }
    }
    for p in parts {
        out.push_str(p);
        out.push('\n');
    }
    out
}

/// Every error of `text` as `PATH: MESSAGE`.
pub(super) fn errors_of(text: &str, format: Format) -> Vec<String> {
    match Config::parse(text, "t.yaml", format) {
        Ok(c) => panic!("expected errors, got a config: {c:#?}\nfrom:\n{text}"),
        Err(e) => {
            assert!(e.errors.iter().all(|e| e.file == "t.yaml"));
            e.errors
                .iter()
                .map(|e| format!("{}: {}", e.path, e.message))
                .collect()
        }
    }
}

pub(super) fn errors(parts: &[&str]) -> Vec<String> {
    errors_of(&doc(parts), Format::Yaml)
}

/// The one error of a document.
pub(super) fn error(parts: &[&str]) -> String {
    let mut all = errors(parts);
    assert_eq!(all.len(), 1, "expected one error, got {all:#?}");
    all.remove(0)
}

#[test]
fn the_base_document_is_valid() {
    Config::parse(&doc(&[]), "t.yaml", Format::Yaml).expect("base document");
}

#[test]
fn display_is_file_path_message_one_per_line() {
    let e = Config::parse(
        &doc(&["workers: 2000", "admin: {bind: nowhere}"]),
        "my.yaml",
        Format::Yaml,
    )
    .expect_err("two errors");
    assert_eq!(
        e.to_string(),
        "my.yaml: workers: must be at most 1024, got 2000\n\
         my.yaml: admin.bind: bad address 'nowhere': expected host:port"
    );
    assert_eq!(e.len(), 2);
    let unreadable =
        Config::load(std::path::Path::new("/nonexistent/b.yaml")).expect_err("no file");
    assert_eq!(unreadable.errors[0].path, "");
    assert!(
        unreadable
            .to_string()
            .starts_with("/nonexistent/b.yaml: cannot read the file: "),
        "{unreadable}"
    );
}

#[test]
fn whole_file_problems() {
    let e = errors_of("", Format::Yaml);
    assert_eq!(
        e,
        [": the file is empty; expected a map with listeners, backends and routes"]
    );
    assert_eq!(
        errors_of("- a\n", Format::Yaml),
        [": expected a map, got a list"]
    );
    let e = errors_of("listeners: [\n", Format::Yaml);
    assert!(e[0].starts_with(": invalid YAML: "), "{e:?}");
    let e = errors_of("{\"listeners\": ", Format::Json);
    assert!(e[0].starts_with(": invalid JSON: "), "{e:?}");
    let e = errors(&["backends: {l1: {servers: ['127.0.0.1:1']}, l1: {servers: ['127.0.0.1:2']}}"]);
    assert!(e[0].contains("duplicate entry with key \"l1\""), "{e:?}");
    let e = errors_of(r#"{"backends": {"a": {}, "a": {}}}"#, Format::Json);
    assert!(e[0].contains("duplicate entry with key \"a\""), "{e:?}");
}

#[test]
fn missing_and_empty_sections() {
    assert_eq!(
        errors_of("workers: 1\n", Format::Yaml),
        [
            "listeners: required key is missing",
            "backends: required key is missing",
            "routes: required key is missing"
        ]
    );
    assert_eq!(
        errors_of("listeners: []\nbackends: {}\nroutes: []\n", Format::Yaml),
        [
            "listeners: must list at least one listener",
            "backends: must define at least one backend",
            "routes: must list at least one route"
        ]
    );
}

#[test]
fn unknown_keys_at_every_level() {
    let cases: &[(&str, &str)] = &[
        ("foo: 1", "foo: unknown key 'foo' (expected one of: workers, reply_memory_budget, request_memory_budget, admin, listeners, backends, routes, side_effects)"),
        ("admin: {bind: '127.0.0.1:9', port: 1}", "admin.port: unknown key 'port' (expected one of: bind, token, token_file, max_connections, request_timeout, header_timeout)"),
        (
            "listeners: [{name: a, bind: '127.0.0.1:1', max_conns: 5}]",
            "listeners[0].max_conns: unknown key 'max_conns' (expected one of: name, bind, max_connections, idle_timeout, request_read_timeout, routes, max_line_length, max_value_size, max_outstanding_requests, max_inflight_requests, max_buffered_reply_bytes, close_buffered_reply_bytes, multiget_window)",
        ),
        (
            "backends: {l1: {servers: ['127.0.0.1:1'], retries: 2}}",
            "backends.l1.retries: unknown key 'retries' (expected one of: servers, distribution, hash, hash_tag, timeout, connect_timeout, connections, max_queued_requests, resolve_interval, health, writes, max_value_size)",
        ),
        (
            "backends: {l1: {servers: [{address: '127.0.0.1:1', wieght: 2}]}}",
            "backends.l1.servers[0].wieght: unknown key 'wieght' (expected one of: address, weight, name)",
        ),
        (
            "backends: {l1: {servers: ['127.0.0.1:1'], health: {every: 1s}}}",
            "backends.l1.health.every: unknown key 'every' (expected one of: interval, timeout, failure_limit, retry_after, eject)",
        ),
        (
            "routes: [{match: '*', strategy: blind_forward, backend: l1, cold: l2}]",
            "routes[0].cold: unknown key 'cold' (expected one of: name, match, commands, strategy, backend)",
        ),
        (
            "routes: [{match: {suffix: x}, strategy: blind_forward, backend: l1}]",
            "routes[0].match.suffix: unknown key 'suffix' (expected one of: prefix, regex)",
        ),
        (
            "routes: [{match: '*', strategy: warm_first, warm: l1, cold: l2, write_on_miss: {ttl: 1, async: true}}]",
            "routes[0].write_on_miss.async: unknown key 'async' (expected one of: ttl, queue, queue_bytes)",
        ),
        (
            "side_effects: [{replicate: {routes: [rest], to: l2, commands: [set], batch: 5}}]",
            "side_effects[0].replicate.batch: unknown key 'batch' (expected one of: routes, to, commands, queue, queue_bytes)",
        ),
        ("side_effects: [{mirror: {}}]", "side_effects[0].mirror: unknown side effect 'mirror' (expected one of: replicate)"),
    ];
    for (part, want) in cases {
        assert_eq!(error(&[part]), *want, "{part}");
    }
}

#[test]
fn unknown_strategy_and_its_keys() {
    assert_eq!(
        error(&["routes: [{match: '*', strategy: foo, backend: l1}]"]),
        "routes[0].strategy: unknown strategy 'foo' (expected one of: blind_forward, round_robin, consistent_hash, failover, parallel, warm_first)"
    );
    // With an unknown strategy, any strategy's keys are accepted but other keys are not.
    assert_eq!(
        errors(&["routes: [{match: '*', strategy: foo, warm: l1, bogus: 1}]"]),
        [
            "routes[0].strategy: unknown strategy 'foo' (expected one of: blind_forward, round_robin, consistent_hash, failover, parallel, warm_first)",
            "routes[0].bogus: unknown key 'bogus' (expected one of: name, match, commands, strategy, backend, backends, on_miss, failover_ttl, writes, warm, cold, write_on_miss, leases)",
        ]
    );
    assert_eq!(
        error(&["routes: [{match: '*', backend: l1}]"]),
        "routes[0].strategy: required key is missing"
    );
}

#[test]
fn wrong_types() {
    let cases: &[(&str, &str)] = &[
        ("workers: four", "workers: expected a whole number, got a string ('four')"),
        ("workers: -1", "workers: expected a whole number, got an integer (-1)"),
        ("listeners: {main: {}}", "listeners: expected a list, got a map"),
        ("listeners: [main]", "listeners[0]: expected a map, got a string ('main')"),
        ("listeners: [{name: a, bind: 11311}]", "listeners[0].bind: expected a string, got an integer (11311)"),
        ("listeners: [{name: 7, bind: '127.0.0.1:1'}]", "listeners[0].name: expected a string, got an integer (7)"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', max_connections: 1.5}]", "listeners[0].max_connections: expected a positive whole number, got a number (1.5)"),
        ("backends: [l1]", "backends: expected a map, got a list"),
        ("backends: {l1: {servers: '127.0.0.1:1'}}", "backends.l1.servers: expected a list, got a string ('127.0.0.1:1')"),
        ("backends: {l1: {servers: [11211]}}", "backends.l1.servers[0]: expected \"host:port\" or a map {address, weight, name}, got an integer (11211)"),
        ("backends: {l1: {servers: ['127.0.0.1:1'], health: {eject: 'yes'}}}", "backends.l1.health.eject: expected true or false, got a string ('yes')"),
        ("backends: {l1: {servers: ['127.0.0.1:1'], hash: 5}}", "backends.l1.hash: expected a string, got an integer (5)"),
        ("routes: [{match: 5, strategy: blind_forward, backend: l1}]", "routes[0].match: expected a glob string, {prefix: ...} or {regex: ...}, got an integer (5)"),
        ("routes: [{match: '*', strategy: failover, backends: l1}]", "routes[0].backends: expected a list, got a string ('l1')"),
        ("side_effects: {replicate: {}}", "side_effects: expected a list, got a map"),
    ];
    for (part, want) in cases {
        assert_eq!(error(&[part]), *want, "{part}");
    }
}

#[test]
fn missing_required_keys() {
    assert_eq!(
        errors(&["listeners: [{max_connections: 5}]"]),
        [
            "listeners[0].name: required key is missing",
            "listeners[0].bind: required key is missing"
        ]
    );
    assert_eq!(error(&["admin: {}"]), "admin.bind: required key is missing");
    assert_eq!(
        error(&["backends: {l1: {timeout: 1s}}"]),
        "backends.l1.servers: required key is missing"
    );
    assert_eq!(
        error(&["backends: {l1: {servers: [{weight: 2}]}}"]),
        "backends.l1.servers[0].address: required key is missing"
    );
    assert_eq!(
        errors(&["routes: [{strategy: warm_first}]"]),
        [
            "routes[0].match: required key is missing",
            "routes[0].warm: required key is missing",
            "routes[0].cold: required key is missing"
        ]
    );
    assert_eq!(
        error(&["routes: [{match: '*', strategy: parallel}]"]),
        "routes[0].backends: required key is missing"
    );
    assert_eq!(
        error(&[
            "routes: [{match: '*', strategy: warm_first, warm: l1, cold: l2, write_on_miss: {}}]"
        ]),
        "routes[0].write_on_miss.ttl: required key is missing"
    );
}

#[test]
fn bad_addresses() {
    let server = |s: &str| {
        error(&[&format!(
            "backends: {{l1: {{servers: ['127.0.0.1:11211', '{s}']}}}}"
        )])
    };
    assert_eq!(
        server("x:y"),
        "backends.l1.servers[1]: bad address 'x:y': port 'y' is not a number from 0 to 65535"
    );
    assert_eq!(
        server("cache"),
        "backends.l1.servers[1]: bad address 'cache': expected host:port"
    );
    assert_eq!(
        server(":11211"),
        "backends.l1.servers[1]: bad address ':11211': expected host:port, the host is missing"
    );
    assert_eq!(server("::1:11211"), "backends.l1.servers[1]: bad address '::1:11211': IPv6 addresses are written in brackets, like [::1]:11211");
    assert_eq!(server("127.0.0.1:99999"), "backends.l1.servers[1]: bad address '127.0.0.1:99999': port '99999' is not a number from 0 to 65535");
    assert_eq!(
        server("127.0.0.1:0"),
        "backends.l1.servers[1]: bad address '127.0.0.1:0': port 0 is not allowed for a server"
    );
    let e = server("no such host:11211");
    assert!(e.starts_with("backends.l1.servers[1]: bad address 'no such host:11211': cannot resolve 'no such host': "), "{e}");
    assert_eq!(
        error(&["backends: {l1: {servers: [{address: 'a:b'}]}}"]),
        "backends.l1.servers[0].address: bad address 'a:b': port 'b' is not a number from 0 to 65535"
    );
    assert_eq!(
        error(&["listeners: [{name: a, bind: '0.0.0.0'}]"]),
        "listeners[0].bind: bad address '0.0.0.0': expected host:port"
    );
    assert_eq!(
        error(&["backends: {l1: {servers: ['127.0.0.1:1', 'localhost:1']}}"]),
        "backends.l1.servers[1]: server 127.0.0.1:1 is listed twice (also backends.l1.servers[0])"
    );
}

#[test]
fn bad_durations_and_sizes() {
    let cases: &[(&str, &str)] = &[
        ("listeners: [{name: a, bind: '127.0.0.1:1', idle_timeout: 10}]", "listeners[0].idle_timeout: '10' has no unit; expected a number with a unit, like 250ms, 1.5s, 10m (units: us, ms, s, m, h)"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', idle_timeout: 10 min}]", "listeners[0].idle_timeout: '10 min' has an unknown unit ' min'; expected a number with a unit, like 250ms, 1.5s, 10m (units: us, ms, s, m, h)"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', idle_timeout: true}]", "listeners[0].idle_timeout: expected a number with a unit, like 250ms, 1.5s, 10m (units: us, ms, s, m, h), got a boolean (true)"),
        ("backends: {l1: {servers: ['127.0.0.1:1'], timeout: 0ms}}", "backends.l1.timeout: must be longer than zero"),
        ("backends: {l1: {servers: ['127.0.0.1:1'], connect_timeout: 1d}}", "backends.l1.connect_timeout: '1d' has an unknown unit 'd'; expected a number with a unit, like 250ms, 1.5s, 10m (units: us, ms, s, m, h)"),
        ("backends: {l1: {servers: ['127.0.0.1:1'], health: {retry_after: 5}}}", "backends.l1.health.retry_after: '5' has no unit; expected a number with a unit, like 250ms, 1.5s, 10m (units: us, ms, s, m, h)"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', max_value_size: 2GiB}]", "listeners[0].max_value_size: must be at most 1073741824 bytes, got 2147483648 bytes"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', max_value_size: 0}]", "listeners[0].max_value_size: must be at least 1 bytes, got 0 bytes"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', max_line_length: 100}]", "listeners[0].max_line_length: must be at least 512 bytes, got 100 bytes"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', max_line_length: 64k}]", "listeners[0].max_line_length: '64k' has an unknown unit 'k'; expected a whole number of bytes, or one with a unit, like 2048, 64KiB, 1MiB (units: B, KB, KiB, MB, MiB, GB, GiB)"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', max_buffered_reply_bytes: -5}]", "listeners[0].max_buffered_reply_bytes: expected a whole number of bytes, or one with a unit, like 2048, 64KiB, 1MiB (units: B, KB, KiB, MB, MiB, GB, GiB), got -5"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', close_buffered_reply_bytes: 0}]", "listeners[0].close_buffered_reply_bytes: must be at least 1 bytes, got 0 bytes"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', close_buffered_reply_bytes: 64k}]", "listeners[0].close_buffered_reply_bytes: '64k' has an unknown unit 'k'; expected a whole number of bytes, or one with a unit, like 2048, 64KiB, 1MiB (units: B, KB, KiB, MB, MiB, GB, GiB)"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', request_read_timeout: 30}]", "listeners[0].request_read_timeout: '30' has no unit; expected a number with a unit, like 250ms, 1.5s, 10m (units: us, ms, s, m, h)"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', request_read_timeout: -1s}]", "listeners[0].request_read_timeout: '-1s' is not a duration; expected a number with a unit, like 250ms, 1.5s, 10m (units: us, ms, s, m, h)"),
        ("reply_memory_budget: 0", "reply_memory_budget: must be at least 1 bytes, got 0 bytes"),
        ("request_memory_budget: 0", "request_memory_budget: must be at least 1 bytes, got 0 bytes"),
        ("reply_memory_budget: 256M", "reply_memory_budget: '256M' has an unknown unit 'M'; expected a whole number of bytes, or one with a unit, like 2048, 64KiB, 1MiB (units: B, KB, KiB, MB, MiB, GB, GiB)"),
    ];
    for (part, want) in cases {
        assert_eq!(error(&[part]), *want, "{part}");
    }
}

#[test]
fn numeric_limits() {
    let cases: &[(&str, &str)] = &[
        ("workers: 1025", "workers: must be at most 1024, got 1025"),
        ("backends: {l1: {servers: [{address: '127.0.0.1:1', weight: 0}]}}", "backends.l1.servers[0].weight: must be at least 1, got 0"),
        ("backends: {l1: {servers: ['127.0.0.1:1'], connections: 0}}", "backends.l1.connections: must be at least 1, got 0"),
        ("backends: {l1: {servers: ['127.0.0.1:1'], connections: 65}}", "backends.l1.connections: must be at most 64, got 65"),
        ("backends: {l1: {servers: ['127.0.0.1:1'], health: {failure_limit: 0}}}", "backends.l1.health.failure_limit: must be at least 1, got 0"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', max_connections: 0}]", "listeners[0].max_connections: must be at least 1, got 0"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', max_inflight_requests: 0}]", "listeners[0].max_inflight_requests: must be at least 1, got 0"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', max_inflight_requests: 4294967296}]", "listeners[0].max_inflight_requests: must be at most 4294967295, got 4294967296"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', multiget_window: 0}]", "listeners[0].multiget_window: must be at least 1, got 0"),
        ("listeners: [{name: a, bind: '127.0.0.1:1', multiget_window: 1.5}]", "listeners[0].multiget_window: expected a positive whole number, got a number (1.5)"),
        ("backends: {l1: {servers: ['127.0.0.1:1'], max_queued_requests: 0}}", "backends.l1.max_queued_requests: must be at least 1, got 0"),
        ("backends: {l1: {servers: ['127.0.0.1:1'], max_queued_requests: '10'}}", "backends.l1.max_queued_requests: expected a positive whole number, got a string ('10')"),
        ("side_effects: [{replicate: {routes: [rest], to: l2, commands: [set], queue: 0}}]", "side_effects[0].replicate.queue: must be at least 1, got 0"),
        ("routes: [{match: '*', strategy: warm_first, warm: l1, cold: l2, write_on_miss: {ttl: 2592001}}]", "routes[0].write_on_miss.ttl: must be at most 2592000 seconds (30 days), got 2592001: memcached reads a larger TTL as a unix time"),
        ("routes: [{match: '*', strategy: failover, backends: [l1, l2], failover_ttl: 0}]", "routes[0].failover_ttl: must be at least 1, got 0"),
        ("routes: [{match: '*', strategy: failover, backends: [l1, l2], failover_ttl: 2592001}]", "routes[0].failover_ttl: must be at most 2592000 seconds (30 days), got 2592001: memcached reads a larger TTL as a unix time"),
    ];
    for (part, want) in cases {
        assert_eq!(error(&[part]), *want, "{part}");
    }
    assert!(Config::parse(&doc(&["workers: 1024"]), "t.yaml", Format::Yaml).is_ok());
}

#[test]
fn hard_reply_limit_is_not_below_the_soft_one() {
    let listener = |extra: &str| format!("listeners: [{{name: a, bind: '127.0.0.1:1', {extra}}}]");
    assert_eq!(
        error(&[&listener(
            "max_buffered_reply_bytes: 2MiB, close_buffered_reply_bytes: 1MiB"
        )]),
        "listeners[0].close_buffered_reply_bytes: must be at least max_buffered_reply_bytes \
         (2097152), got 1048576"
    );
    // Only the hard limit written, below the default soft limit (1 MiB).
    assert_eq!(
        error(&[&listener("close_buffered_reply_bytes: 1000")]),
        "listeners[0].close_buffered_reply_bytes: must be at least max_buffered_reply_bytes \
         (1048576), got 1000"
    );
    // Only the soft limit written, above the default hard limit (128 MiB): the error is on it.
    assert_eq!(
        error(&[&listener("max_buffered_reply_bytes: 256MiB")]),
        "listeners[0].max_buffered_reply_bytes: must be at most close_buffered_reply_bytes \
         (134217728, its default), got 268435456; raise close_buffered_reply_bytes too"
    );
    // Equal limits are allowed, and so is a soft limit raised together with the hard one.
    for ok in [
        "max_buffered_reply_bytes: 1MiB, close_buffered_reply_bytes: 1MiB",
        "max_buffered_reply_bytes: 64MiB, close_buffered_reply_bytes: 128MiB",
        "close_buffered_reply_bytes: 1MiB",
    ] {
        let text = doc(&[&listener(ok)]);
        assert!(Config::parse(&text, "t.yaml", Format::Yaml).is_ok(), "{ok}");
    }
    // A broken soft limit does not also make the hard one wrong.
    assert_eq!(
        errors(&[&listener(
            "max_buffered_reply_bytes: lots, close_buffered_reply_bytes: 1"
        )])
        .len(),
        1
    );
}

#[test]
fn backend_settings() {
    let pool = |extra: &str| {
        error(&[&format!(
            "backends: {{l1: {{servers: ['127.0.0.1:1'], {extra}}}}}"
        )])
    };
    let hint = "must be exactly two ASCII characters, the opening and the closing one, like \"{}\"";
    assert_eq!(
        pool("hash_tag: '{'"),
        format!("backends.l1.hash_tag: {hint}; got '{{'")
    );
    assert_eq!(
        pool("hash_tag: '{}}'"),
        format!("backends.l1.hash_tag: {hint}; got '{{}}}}'")
    );
    assert_eq!(
        pool("hash_tag: ''"),
        format!("backends.l1.hash_tag: {hint}; got ''")
    );
    assert_eq!(
        pool("hash: sha1"),
        "backends.l1.hash: unknown hash 'sha1' (expected one of: one_at_a_time, md5, crc16, crc32, crc32a, fnv1_64, fnv1a_64, fnv1_32, fnv1a_32, hsieh, murmur, jenkins)"
    );
    assert_eq!(
        pool("distribution: ring"),
        "backends.l1.distribution: unknown distribution 'ring' (expected one of: ketama, modula, random)"
    );
    assert_eq!(
        error(&[
            "backends: {l1: {servers: ['127.0.0.1:1']}, 'bad name': {servers: ['127.0.0.1:1']}}"
        ]),
        "backends.bad name: name 'bad name' must not contain spaces or control characters"
    );
    assert_eq!(
        error(&["backends: {l1: {servers: []}}"]),
        "backends.l1.servers: must list at least one server"
    );
    assert_eq!(
        error(&["backends: {l1: {servers: [{address: '127.0.0.1:1', name: a}, {address: '127.0.0.1:2', name: a}]}}"]),
        "backends.l1.servers[1].name: server name 'a' is used twice (also backends.l1.servers[0])"
    );
    // Port 11211 is left out of the hashed name, so this collides with a server named so.
    assert_eq!(
        error(&["backends: {l1: {servers: ['127.0.0.1:11211', {address: '127.0.0.1:2', name: '127.0.0.1'}]}}"]),
        "backends.l1.servers[1]: server hashes to the same ketama name '127.0.0.1' as backends.l1.servers[0]; give one a `name`"
    );
}

#[test]
fn references_to_unknown_names() {
    let cases: &[(&str, &str)] = &[
        (
            "routes: [{match: '*', strategy: blind_forward, backend: nosuch}]",
            "routes[0].backend: no backend named 'nosuch'",
        ),
        (
            "routes: [{match: '*', strategy: warm_first, warm: l1, cold: nosuch}]",
            "routes[0].cold: no backend named 'nosuch'",
        ),
        (
            "routes: [{match: '*', strategy: failover, backends: [l1, nosuch]}]",
            "routes[0].backends[1]: no backend named 'nosuch'",
        ),
        (
            "listeners: [{name: a, bind: '127.0.0.1:1', routes: [rest, nosuch]}]",
            "listeners[0].routes[1]: no route named 'nosuch'",
        ),
        (
            "listeners: [{name: a, bind: '127.0.0.1:1', routes: []}]",
            "listeners[0].routes: must name at least one route",
        ),
        (
            "side_effects: [{replicate: {routes: [nosuch], to: l2, commands: [set]}}]",
            "side_effects[0].replicate.routes[0]: no route named 'nosuch'",
        ),
        (
            "side_effects: [{replicate: {routes: [rest], to: nosuch, commands: [set]}}]",
            "side_effects[0].replicate.to: no backend named 'nosuch'",
        ),
    ];
    for (part, want) in cases {
        assert_eq!(error(&[part]), *want, "{part}");
    }
    // The second route has the default name route1, and the listener can refer to it.
    let ok = doc(&[
        "routes: [{match: 'a*', strategy: blind_forward, backend: l1}, {match: '*', strategy: blind_forward, backend: l2}]",
        "listeners: [{name: a, bind: '127.0.0.1:1', routes: [route1]}]",
    ]);
    assert!(Config::parse(&ok, "t.yaml", Format::Yaml).is_ok());
}

#[test]
fn commands() {
    let all = "get, gets, gat, gats, set, add, replace, append, prepend, cas, delete, incr, decr, touch, flush_all, version, verbosity, stats, quit, mg, ms, md, ma, mn, me";
    assert_eq!(
        error(&[
            "routes: [{match: '*', commands: [get, fetch], strategy: blind_forward, backend: l1}]"
        ]),
        format!("routes[0].commands[1]: unknown command 'fetch' (expected one of: {all})")
    );
    assert_eq!(
        error(&["routes: [{match: '*', commands: [], strategy: blind_forward, backend: l1}]"]),
        "routes[0].commands: must list at least one command (leave `commands` out to take every command)"
    );
    assert_eq!(
        error(&["side_effects: [{replicate: {routes: [rest], to: l2, commands: [set, get]}}]"]),
        "side_effects[0].replicate.commands[1]: 'get' is not a write command; replicate copies only: set, add, replace, append, prepend, cas, delete, incr, decr, touch, ms, md, ma"
    );
    assert_eq!(
        error(&["side_effects: [{replicate: {routes: [rest], to: l2}}]"]),
        "side_effects[0].replicate.commands: required key is missing"
    );
}

#[test]
fn duplicates() {
    assert_eq!(
        error(&["listeners: [{name: a, bind: '127.0.0.1:1'}, {name: a, bind: '127.0.0.1:2'}]"]),
        "listeners[1].name: duplicate listener name 'a' (also listeners[0])"
    );
    assert_eq!(
        error(&["listeners: [{name: a, bind: '127.0.0.1:1'}, {name: b, bind: '127.0.0.1:1'}]"]),
        "listeners[1].bind: 127.0.0.1:1 is already used by listeners[0] ('a')"
    );
    assert_eq!(
        error(&["admin: {bind: '127.0.0.1:11311'}"]),
        "admin.bind: 127.0.0.1:11311 is already used by listeners[0] ('main')"
    );
    // Port 0 is a fresh port each time: no clash.
    let ok = doc(&["listeners: [{name: a, bind: '127.0.0.1:0'}, {name: b, bind: '127.0.0.1:0'}]"]);
    assert!(Config::parse(&ok, "t.yaml", Format::Yaml).is_ok());
    assert_eq!(
        error(&["routes: [{name: r, match: 'a*', strategy: blind_forward, backend: l1}, {name: r, match: '*', strategy: blind_forward, backend: l1}]"]),
        "routes[1].name: duplicate route name 'r' (also routes[0])"
    );
    // A default name can clash with an explicit one; the error is at the unnamed route.
    assert_eq!(
        error(&["routes: [{name: route1, match: 'a*', strategy: blind_forward, backend: l1}, {match: '*', strategy: blind_forward, backend: l1}]"]),
        "routes[1]: duplicate route name 'route1' (also routes[0])"
    );
    assert_eq!(
        error(&["routes: [{match: '*', strategy: failover, backends: [l1, l1]}]"]),
        "routes[0].backends[1]: backend 'l1' is listed twice"
    );
}

#[test]
fn blind_forward_needs_one_server() {
    assert_eq!(
        error(&["backends: {l1: {servers: ['127.0.0.1:1', '127.0.0.1:2']}}"]),
        "routes[0].backend: blind_forward needs a backend with exactly one server, 'l1' has 2 (use consistent_hash or round_robin to spread keys over a pool)"
    );
}

#[test]
fn strategy_rules() {
    let cases: &[(&str, &str)] = &[
        ("routes: [{match: '*', strategy: failover, backends: [l1]}]", "routes[0].backends: failover needs at least two backends"),
        ("routes: [{match: '*', strategy: parallel, backends: [l1]}]", "routes[0].backends: parallel needs at least two backends"),
        ("routes: [{match: '*', strategy: failover, backends: [l1, l2], on_miss: retry}]", "routes[0].on_miss: unknown on_miss 'retry' (expected one of: stop, next)"),
        ("routes: [{match: '*', strategy: parallel, backends: [l1, l2], writes: any}]", "routes[0].writes: unknown writes policy 'any' (expected one of: all, majority, first)"),
        ("routes: [{match: '*', strategy: warm_first, warm: l1, cold: l1}]", "routes[0].cold: warm and cold must be different backends, both are 'l1'"),
        ("routes: [{match: '', strategy: blind_forward, backend: l1}]", "routes[0].match: an empty glob matches no key; use \"*\" to match every key"),
        ("routes: [{match: 'a *', strategy: blind_forward, backend: l1}]", "routes[0].match: 'a *' can never match: memcached keys contain no spaces, CR, LF or NUL"),
        ("routes: [{match: {prefix: a, regex: b}, strategy: blind_forward, backend: l1}]", "routes[0].match: give either prefix or regex, not both"),
        ("routes: [{match: {}, strategy: blind_forward, backend: l1}]", "routes[0].match: expected {prefix: ...} or {regex: ...}"),
        ("routes: [{match: {regex: ''}, strategy: blind_forward, backend: l1}]", "routes[0].match.regex: a regex must not be empty"),
        ("routes: [{match: {regex: 'a('}, strategy: blind_forward, backend: l1}]", "routes[0].match.regex: invalid regex 'a(': error: unclosed group"),
        ("routes: [{name: '', match: '*', strategy: blind_forward, backend: l1}]", "routes[0].name: a name must not be empty"),
        ("side_effects: [{}]", "side_effects[0]: expected a map with exactly one key naming the side effect, like {replicate: {...}}, got 0 keys"),
    ];
    for (part, want) in cases {
        assert_eq!(error(&[part]), *want, "{part}");
    }
}

#[test]
fn unreachable_routes() {
    let r = |name: &str, m: &str| {
        format!("{{name: {name}, match: {m}, strategy: blind_forward, backend: l1}}")
    };
    let routes = format!(
        "routes: [{}, {}, {}, {}]",
        r("a", "'a*'"),
        r("rest", "'*'"),
        r("b", "'b*'"),
        r("c", "{prefix: c}")
    );
    assert_eq!(
        errors(&[&routes]),
        [
            "routes[2]: unreachable: routes[1] ('rest') matches every key before it",
            "routes[3]: unreachable: routes[1] ('rest') matches every key before it"
        ]
    );
    let routes = format!("routes: [{}, {}]", r("all", "{prefix: ''}"), r("b", "'b*'"));
    assert_eq!(
        error(&[&routes]),
        "routes[1]: unreachable: routes[0] ('all') matches every key before it"
    );
    // A listener that only uses routes in an order where the catch-all comes first.
    let routes = format!("routes: [{}, {}]", r("b", "'b*'"), r("rest", "'*'"));
    assert_eq!(
        error(&[
            &routes,
            "listeners: [{name: x, bind: '127.0.0.1:1', routes: [rest, b]}]"
        ]),
        "routes[0]: unreachable: routes[1] ('rest') matches every key before it"
    );
}

#[test]
fn every_error_is_reported_at_once() {
    let text = "workers: 2000\n\
        listeners:\n\
        - {name: main, bind: '127.0.0.1:x', idle_timeout: 5}\n\
        - {name: main, bind: '127.0.0.1:2', colour: blue}\n\
        backends:\n\
        \x20 l1: {servers: ['127.0.0.1:1', {address: '127.0.0.1:2', weight: 0}], timeout: fast}\n\
        \x20 l2: {servers: ['127.0.0.1:3'], connections: 99}\n\
        routes:\n\
        - {name: s, match: 'session:*', strategy: warm_first, warm: l1, cold: nosuch}\n\
        - {name: rest, match: '*', strategy: blind_forward, backend: l2}\n\
        - {name: late, match: 'x*', strategy: teleport}\n\
        side_effects: [{replicate: {routes: [rest, gone], to: l2, commands: [sett]}}]\n";
    let all = errors_of(text, Format::Yaml);
    let want = [
        "workers: must be at most 1024, got 2000",
        "listeners[0].bind: bad address '127.0.0.1:x': port 'x' is not a number from 0 to 65535",
        "listeners[0].idle_timeout: '5' has no unit; expected a number with a unit, like 250ms, 1.5s, 10m (units: us, ms, s, m, h)",
        "listeners[1].colour: unknown key 'colour' (expected one of: name, bind, max_connections, idle_timeout, request_read_timeout, routes, max_line_length, max_value_size, max_outstanding_requests, max_inflight_requests, max_buffered_reply_bytes, close_buffered_reply_bytes, multiget_window)",
        "backends.l1.servers[1].weight: must be at least 1, got 0",
        "backends.l1.timeout: 'fast' is not a duration; expected a number with a unit, like 250ms, 1.5s, 10m (units: us, ms, s, m, h)",
        "backends.l2.connections: must be at most 64, got 99",
        "routes[0].cold: no backend named 'nosuch'",
        "routes[2].strategy: unknown strategy 'teleport' (expected one of: blind_forward, round_robin, consistent_hash, failover, parallel, warm_first)",
        "side_effects[0].replicate.routes[1]: no route named 'gone'",
        "side_effects[0].replicate.commands[0]: unknown command 'sett' (expected one of: get, gets, gat, gats, set, add, replace, append, prepend, cas, delete, incr, decr, touch, flush_all, version, verbosity, stats, quit, mg, ms, md, ma, mn, me)",
        "listeners[1].name: duplicate listener name 'main' (also listeners[0])",
        "routes[2]: unreachable: routes[1] ('rest') matches every key before it",
    ];
    assert_eq!(all, want);
}

#[test]
fn a_broken_item_is_not_also_reported_as_missing() {
    // The route `s` and the backend `l1` are broken; references to them are not errors.
    let all = errors(&[
        "backends: {l1: {servers: ['127.0.0.1:1'], hash: nope}, l2: {servers: ['127.0.0.1:2']}}",
        "routes: [{name: s, match: 5, strategy: blind_forward, backend: l1}, {name: rest, match: '*', strategy: blind_forward, backend: l2}]",
        "listeners: [{name: a, bind: '127.0.0.1:1', routes: [s, rest]}]",
    ]);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert!(
        all[0].starts_with("backends.l1.hash: unknown hash 'nope'"),
        "{all:#?}"
    );
    assert!(
        all[1].starts_with("routes[0].match: expected a glob string"),
        "{all:#?}"
    );
}

#[test]
fn json_errors_have_the_same_paths() {
    let text = r#"{
        "listeners": [{"name": "a", "bind": "127.0.0.1:1", "idle_timeout": 30}],
        "backends": {"l1": {"servers": ["127.0.0.1:1"], "weight": 2}},
        "routes": [{"match": "*", "strategy": "blind_forward", "backend": "l9"}]
    }"#;
    let all = errors_of(text, Format::Json);
    assert_eq!(all.len(), 3, "{all:#?}");
    assert!(
        all[0].starts_with("listeners[0].idle_timeout: '30' has no unit"),
        "{all:#?}"
    );
    assert!(
        all[1].starts_with("backends.l1.weight: unknown key 'weight'"),
        "{all:#?}"
    );
    assert_eq!(all[2], "routes[0].backend: no backend named 'l9'");
}

#[test]
fn a_well_formed_name_that_does_not_resolve_is_a_server_down_until_it_does() {
    let yaml = "listeners: [{name: m, bind: \"127.0.0.1:1\"}]\n\
                backends: {p: {servers: [\"not-there-yet.invalid:11211\"], resolve_interval: 2s}}\n\
                routes: [{name: r, match: \"*\", strategy: blind_forward, backend: p}]\n";
    let config = match Config::parse(yaml, "test.yaml", Format::Yaml) {
        Ok(c) => c,
        Err(e) => panic!("a name that does not resolve yet is accepted:\n{e}"),
    };
    let backend = &config.backends[0];
    assert_eq!(backend.servers[0].addr, None);
    assert_eq!(backend.resolve_interval, Duration::from_secs(2));
    assert!(backend.servers[0].address_slot().is_name());
}
