//! Tests of loading valid configs: the example files, defaults, both formats, the accessors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config")
        .join(name)
}

fn load(name: &str) -> Config {
    match Config::load(&example(name)) {
        Ok(c) => c,
        Err(e) => panic!("{name} does not load:\n{e}"),
    }
}

pub(super) fn parse_yaml(text: &str) -> Config {
    match Config::parse(text, "test.yaml", Format::Yaml) {
        Ok(c) => c,
        Err(e) => panic!("does not parse:\n{e}"),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

#[test]
fn every_example_file_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).expect("config/ exists") {
        let path = entry.expect("dir entry").path();
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if matches!(ext, "yaml" | "yml" | "json") {
            if let Err(e) = Config::load(&path) {
                panic!("{} does not load:\n{e}", path.display());
            }
            count += 1;
        }
    }
    assert!(
        count >= 3,
        "expected at least 3 example configs, found {count}"
    );
}

#[test]
fn blind_forward_example_is_the_embedded_default_and_fully_supported() {
    let c = load("blind_forward.yaml");
    assert_eq!(c, Config::embedded_default());
    assert_eq!(c.unsupported_features(), Vec::<String>::new());
    assert_eq!(c.listeners[0].bind, addr("127.0.0.1:11311"));
    assert_eq!(c.backends[0].servers[0].addr, Some(addr("127.0.0.1:11211")));
}

#[test]
fn json_and_yaml_give_the_same_config() {
    assert_eq!(load("blind_forward.json"), load("blind_forward.yaml"));
}

#[test]
fn reference_yaml_and_its_json_translation_agree() {
    let text = std::fs::read_to_string(example("reference.yaml")).expect("reference.yaml");
    let value: yaml_serde::Value = yaml_serde::from_str(&text).expect("yaml");
    let json = serde_json::to_string_pretty(&value).expect("to json");
    let from_json = Config::parse(&json, "reference.json", Format::Json).expect("json parses");
    assert_eq!(from_json, load("reference.yaml"));
}

#[test]
fn reference_yaml_uses_every_key_and_value_kind() {
    let c = load("reference.yaml");
    assert_eq!(
        c.admin,
        Some(AdminConfig::with_defaults(addr("127.0.0.1:9120")))
    );
    let main = &c.listeners[0];
    assert_eq!(main.idle_timeout, Some(Duration::from_secs(600)));
    assert_eq!(main.max_line_length, 65536);
    assert_eq!(main.request_read_timeout, Some(Duration::from_secs(30)));
    assert_eq!(main.max_inflight_requests, 16);
    assert_eq!(main.max_buffered_reply_bytes, 1 << 20);
    assert_eq!(main.close_buffered_reply_bytes, 128 << 20);
    assert_eq!(main.multiget_window, 64);
    assert_eq!(c.reply_memory_budget, 256 << 20);
    assert_eq!(
        c.listeners[1].routes,
        Some(vec!["sessions".to_string(), "rest".to_string()])
    );
    let names: Vec<&str> = c.backends.iter().map(|b| b.name.as_str()).collect();
    assert_eq!(
        names,
        ["l1", "l2", "replica", "legacy", "catalog"],
        "file order is kept"
    );
    let catalog = &c.backends[4];
    assert!(catalog.is_http() && !catalog.writes);
    assert_eq!(catalog.max_value_size, 1 << 20);
    let url = catalog.servers[0].origin.as_ref().expect("an HTTP origin");
    assert_eq!(
        (url.host.as_str(), url.base_path.as_str()),
        ("127.0.0.1:18080", "/cache/")
    );
    assert_eq!(catalog.servers[0].address, "127.0.0.1:18080");
    let l1 = &c.backends[0];
    assert_eq!(l1.servers[1].weight, 2);
    assert_eq!(l1.servers[1].name.as_deref(), Some("cache-b"));
    assert_eq!(l1.hash_tag.as_deref(), Some("{}"));
    assert_eq!(l1.timeout, Duration::from_millis(250));
    assert_eq!(l1.max_queued_requests, 4096);
    assert!(l1.health.as_ref().is_some_and(|h| h.eject));
    let strategies: Vec<&str> = c.routes.iter().map(|r| r.strategy.name()).collect();
    let mut sorted = strategies.clone();
    sorted.sort_unstable();
    let mut all = Strategy::NAMES.to_vec();
    all.sort_unstable();
    assert_eq!(sorted, all, "reference.yaml shows every strategy once");
    assert_eq!(
        c.routes[0].commands,
        Some(vec![Command::Incr, Command::Decr, Command::Get])
    );
    assert!(matches!(c.routes[2].matcher, KeyMatch::Regex(_)));
    assert_eq!(c.side_effects.len(), 1);
    // Every part of the schema is served, the admin API included.
    assert_eq!(c.unsupported_features(), Vec::<String>::new());
}

#[test]
fn defaults() {
    let c = parse_yaml(
        "listeners: [{name: a, bind: '127.0.0.1:0'}]\n\
         backends: {b: {servers: ['127.0.0.1:11211']}}\n\
         routes: [{match: '*', strategy: blind_forward, backend: b}]\n",
    );
    assert_eq!(c.workers, 0);
    assert_eq!(c.admin, None);
    assert_eq!(
        c.listeners[0],
        ListenerConfig::with_defaults("a", addr("127.0.0.1:0"))
    );
    let l = &c.listeners[0];
    assert_eq!(
        (
            l.max_connections,
            l.idle_timeout,
            l.max_line_length,
            l.max_value_size
        ),
        (10000, None, 65536, 1 << 20)
    );
    assert_eq!(
        (l.max_outstanding_requests, l.max_inflight_requests),
        (1024, 16)
    );
    assert_eq!(
        (l.max_buffered_reply_bytes, l.close_buffered_reply_bytes),
        (1 << 20, 128 << 20)
    );
    assert_eq!(
        (l.multiget_window, l.request_read_timeout),
        (64, Some(Duration::from_secs(30)))
    );
    assert_eq!(c.reply_memory_budget, 256 << 20);
    let b = &c.backends[0];
    assert_eq!(b.distribution, Distribution::Ketama);
    assert_eq!(b.hash, HashFunction::Fnv1a_64);
    assert_eq!(
        (b.timeout, b.connect_timeout, b.connections),
        (Duration::from_secs(1), Duration::from_secs(1), 1)
    );
    assert_eq!(b.max_queued_requests, 4096);
    assert_eq!(b.health, None, "no health block: no health checks");
    let h = HealthConfig::default();
    assert_eq!(
        (h.interval, h.timeout, h.failure_limit),
        (Duration::from_secs(1), Duration::from_millis(500), 3)
    );
    assert_eq!((h.retry_after, h.eject), (Duration::from_secs(5), false));
    assert_eq!(
        b.servers[0],
        ServerConfig::from_addr(addr("127.0.0.1:11211"))
    );
    assert_eq!(
        c.routes[0].name, "route0",
        "an unnamed route is named by its index"
    );
    assert_eq!(c.routes[0].commands, None);
    assert!(c.side_effects.is_empty());
}

#[test]
fn null_means_default() {
    let c = parse_yaml(
        "workers: ~\nadmin: ~\nside_effects: ~\n\
         reply_memory_budget: ~\n\
         request_memory_budget: ~\n\
         listeners: [{name: a, bind: '127.0.0.1:1', idle_timeout: ~, routes: ~, request_read_timeout: ~, close_buffered_reply_bytes: ~}]\n\
         backends: {b: {servers: ['127.0.0.1:11211'], health: ~}}\n\
         routes: [{name: ~, match: '*', strategy: blind_forward, backend: b}]\n",
    );
    assert_eq!(c.listeners[0].idle_timeout, None);
    assert_eq!(c.listeners[0].routes, None);
    assert_eq!(
        c.listeners[0].request_read_timeout,
        Some(DEFAULT_REQUEST_READ_TIMEOUT)
    );
    assert_eq!(
        c.listeners[0].close_buffered_reply_bytes,
        DEFAULT_CLOSE_BUFFERED_REPLY_BYTES
    );
    assert_eq!(c.reply_memory_budget, DEFAULT_REPLY_MEMORY_BUDGET);
    assert_eq!(c.request_memory_budget, DEFAULT_REQUEST_MEMORY_BUDGET);
    assert_eq!(c.routes[0].name, "route0");
    assert_eq!(c.backends[0].health, None, "health: ~ is no health checks");
}

#[test]
fn an_empty_health_block_turns_checks_on_with_defaults() {
    let c = parse_yaml(
        "listeners: [{name: a, bind: '127.0.0.1:1'}]\n\
         backends: {b: {servers: ['127.0.0.1:11211'], health: {}}}\n\
         routes: [{match: '*', strategy: blind_forward, backend: b}]\n",
    );
    assert_eq!(c.backends[0].health, Some(HealthConfig::default()));
}

#[test]
fn values_in_every_form() {
    let c = parse_yaml(
        "workers: 4\n\
         reply_memory_budget: 1 GiB\n\
         request_memory_budget: 8MiB\n\
         listeners:\n\
         - {name: a, bind: 'localhost:7000', idle_timeout: 0s, max_line_length: 2048, max_value_size: '2 MiB', request_read_timeout: 0s}\n\
         - {name: b, bind: '[::1]:7001', idle_timeout: 1.5s, max_value_size: '1000', max_buffered_reply_bytes: 1KB, close_buffered_reply_bytes: '1000', max_inflight_requests: 1, multiget_window: 100, request_read_timeout: 500ms}\n\
         backends:\n\
         \x20 p:\n\
         \x20   servers: ['localhost:11211', {address: '127.0.0.2:11211', weight: 3}]\n\
         \x20   distribution: modula\n\
         \x20   hash: crc32a\n\
         \x20   connections: 64\n\
         \x20   max_queued_requests: 1\n\
         routes:\n\
         - {match: {prefix: ''}, strategy: consistent_hash, backend: p}\n",
    );
    assert_eq!(c.workers, 4);
    assert_eq!(c.worker_count(), 4);
    let (a, b) = (&c.listeners[0], &c.listeners[1]);
    assert_eq!(
        a.bind,
        addr("127.0.0.1:7000"),
        "localhost resolves, IPv4 first"
    );
    assert_eq!(a.idle_timeout, None, "0s means no idle timeout");
    assert_eq!((a.max_line_length, a.max_value_size), (2048, 2 << 20));
    assert_eq!(b.bind, addr("[::1]:7001"));
    assert_eq!(b.idle_timeout, Some(Duration::from_millis(1500)));
    assert_eq!((b.max_value_size, b.max_buffered_reply_bytes), (1000, 1000));
    assert_eq!(
        b.close_buffered_reply_bytes, 1000,
        "equal to the soft limit is allowed"
    );
    assert_eq!((b.max_inflight_requests, b.multiget_window), (1, 100));
    assert_eq!(
        a.request_read_timeout, None,
        "0s turns the read timeout off"
    );
    assert_eq!(b.request_read_timeout, Some(Duration::from_millis(500)));
    assert_eq!(c.reply_memory_budget, 1 << 30);
    assert_eq!(c.request_memory_budget, 8 << 20);
    let p = &c.backends[0];
    assert_eq!(
        p.servers[0].address, "localhost:11211",
        "the address is kept as written"
    );
    assert_eq!(p.servers[0].addr, Some(addr("127.0.0.1:11211")));
    assert_eq!(
        (p.servers[1].weight, p.servers[1].name.as_deref()),
        (3, None)
    );
    assert_eq!(
        (p.distribution, p.hash, p.connections),
        (Distribution::Modula, HashFunction::Crc32a, 64)
    );
    assert_eq!(p.max_queued_requests, 1);
    assert_eq!(c.routes[0].matcher, KeyMatch::Prefix(String::new()));
    assert!(c.routes[0].is_catch_all());
}

#[test]
fn every_strategy_parses() {
    let c = parse_yaml(
        "listeners: [{name: a, bind: '127.0.0.1:0'}]\n\
         backends: {x: {servers: ['127.0.0.1:1']}, y: {servers: ['127.0.0.1:2']}, z: {servers: ['127.0.0.1:3']}}\n\
         routes:\n\
         - {match: 'a*', strategy: blind_forward, backend: x}\n\
         - {match: 'b*', strategy: round_robin, backend: y}\n\
         - {match: 'c*', strategy: consistent_hash, backend: z}\n\
         - {match: 'd*', strategy: failover, backends: [x, y, z]}\n\
         - {match: 'e*', strategy: failover, backends: [y, x], on_miss: next, failover_ttl: 60}\n\
         - {match: 'f*', strategy: parallel, backends: [x, y]}\n\
         - {match: 'g*', strategy: parallel, backends: [x, y], writes: first}\n\
         - {match: 'h*', strategy: warm_first, warm: x, cold: y}\n\
         - {match: '*', strategy: warm_first, warm: x, cold: z, write_on_miss: {ttl: 0}}\n",
    );
    let s: Vec<Strategy> = c.routes.into_iter().map(|r| r.strategy).collect();
    let names = |v: &[&str]| v.iter().map(|n| n.to_string()).collect::<Vec<_>>();
    assert_eq!(
        s[0],
        Strategy::BlindForward {
            backend: "x".into()
        }
    );
    assert_eq!(
        s[1],
        Strategy::RoundRobin {
            backend: "y".into()
        }
    );
    assert_eq!(
        s[2],
        Strategy::ConsistentHash {
            backend: "z".into()
        }
    );
    assert_eq!(
        s[3],
        Strategy::Failover {
            backends: names(&["x", "y", "z"]),
            on_miss: OnMiss::Stop,
            failover_ttl: None
        }
    );
    assert_eq!(
        s[4],
        Strategy::Failover {
            backends: names(&["y", "x"]),
            on_miss: OnMiss::Next,
            failover_ttl: Some(60)
        }
    );
    assert_eq!(
        s[5],
        Strategy::Parallel {
            backends: names(&["x", "y"]),
            writes: WritePolicy::All
        }
    );
    assert_eq!(
        s[6],
        Strategy::Parallel {
            backends: names(&["x", "y"]),
            writes: WritePolicy::First
        }
    );
    assert_eq!(
        s[7],
        Strategy::WarmFirst {
            warm: "x".into(),
            cold: "y".into(),
            write_on_miss: None,
            leases: None,
        }
    );
    assert_eq!(s[8].backend_names(), ["x", "z"]);
    assert_eq!(s[3].backend_names(), ["x", "y", "z"]);
    assert_eq!(s[0].backend_names(), ["x"]);
}

#[test]
fn accessors_and_names() {
    let c = load("reference.yaml");
    let (i, b) = c.backend("replica").expect("replica exists");
    assert_eq!((i, b.name.as_str()), (2, "replica"));
    assert!(c.backend("nosuch").is_none());
    assert_eq!(c.route("rest").map(|(i, _)| i), Some(5));
    assert!(Config::embedded_default().worker_count() >= 1);
    for h in HashFunction::ALL {
        assert_eq!(HashFunction::from_name(h.name()), Some(h));
    }
    for d in Distribution::ALL {
        assert_eq!(Distribution::from_name(d.name()), Some(d));
    }
    assert_eq!(HashFunction::Fnv1a_64.name(), "fnv1a_64");
    assert_eq!(HashFunction::OneAtATime.name(), "one_at_a_time");
    assert_eq!(
        (OnMiss::Next.name(), WritePolicy::Majority.name()),
        ("next", "majority")
    );
}

#[test]
fn format_from_path() {
    assert_eq!(Format::from_path(Path::new("a.json")), Format::Json);
    assert_eq!(Format::from_path(Path::new("a.JSON")), Format::Json);
    assert_eq!(Format::from_path(Path::new("a.yaml")), Format::Yaml);
    assert_eq!(Format::from_path(Path::new("a.yml")), Format::Yaml);
    assert_eq!(Format::from_path(Path::new("config")), Format::Yaml);
}

#[test]
fn catch_all_detection() {
    assert!(KeyMatch::Glob("*".into()).matches_everything());
    assert!(KeyMatch::Glob("**".into()).matches_everything());
    assert!(!KeyMatch::Glob("a*".into()).matches_everything());
    assert!(KeyMatch::Prefix(String::new()).matches_everything());
    assert!(!KeyMatch::Prefix("a".into()).matches_everything());
    assert!(!KeyMatch::Regex(".*".into()).matches_everything());
}

#[test]
fn nothing_is_unsupported_any_more() {
    let c = parse_yaml(
        "admin: {bind: '127.0.0.1:9120'}\n\
         listeners: [{name: a, bind: '127.0.0.1:0', routes: [r]}]\n\
         backends: {x: {servers: ['127.0.0.1:1']}, y: {servers: ['127.0.0.1:2']}}\n\
         routes:\n\
         - {name: r, match: {regex: '^a'}, commands: [get], strategy: consistent_hash, backend: x}\n\
         - {name: s, match: '*', strategy: blind_forward, backend: y}\n\
         side_effects: [{replicate: {routes: [r], to: y, commands: [set]}}]\n",
    );
    assert_eq!(c.unsupported_features(), Vec::<String>::new());
    match &c.side_effects[0] {
        SideEffectConfig::Replicate {
            queue, commands, ..
        } => {
            assert_eq!((*queue, commands.as_slice()), (10000, &[Command::Set][..]));
        }
    }
}

#[test]
fn listener_route_selection_can_reach_routes_behind_a_catch_all_elsewhere() {
    // `late` is behind the catch-all in file order, but listener b uses it first.
    let c = parse_yaml(
        "listeners: [{name: a, bind: '127.0.0.1:0', routes: [all]}, {name: b, bind: '127.0.0.1:0', routes: [late, all]}]\n\
         backends: {x: {servers: ['127.0.0.1:1']}}\n\
         routes: [{name: all, match: '*', strategy: blind_forward, backend: x}, {name: late, match: 'k*', strategy: blind_forward, backend: x}]\n",
    );
    assert_eq!(c.routes.len(), 2);
}

#[test]
fn a_filtered_catch_all_does_not_hide_later_routes() {
    let c = parse_yaml(
        "listeners: [{name: a, bind: '127.0.0.1:0'}]\n\
         backends: {x: {servers: ['127.0.0.1:1']}}\n\
         routes: [{match: '*', commands: [get, gets], strategy: blind_forward, backend: x}, {match: '*', strategy: blind_forward, backend: x}]\n",
    );
    assert_eq!(
        c.routes[0].commands,
        Some(vec![Command::Get, Command::Gets])
    );
    assert!(!c.routes[0].is_catch_all());
    assert!(c.routes[1].is_catch_all());
}

/// A file in the temp directory holding `text`, unique to this process and `name`.
fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("bifrost-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write temp file");
    path
}

/// A temp file readable by its owner only, as a secret should be.
fn secret_file(name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = temp_file(name, text);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

const ADMIN_REST: &str = "listeners: [{name: a, bind: '127.0.0.1:0'}]\n\
     backends: {b: {servers: ['127.0.0.1:11211']}}\n\
     routes: [{match: '*', strategy: blind_forward, backend: b}]\n";

#[test]
fn admin_defaults_and_every_key() {
    let c = parse_yaml(&format!("admin: {{bind: '127.0.0.1:9120'}}\n{ADMIN_REST}"));
    let admin = c.admin.expect("admin");
    assert_eq!(admin, AdminConfig::with_defaults(addr("127.0.0.1:9120")));
    assert_eq!(admin.max_connections, 64);
    assert_eq!(admin.request_timeout, Duration::from_secs(10));
    assert_eq!(admin.header_timeout, Duration::from_secs(2));
    assert_eq!(admin.token, None);

    let c = parse_yaml(&format!(
        "admin: {{bind: '0.0.0.0:0', token: s3cr3t-T0ken-0123, max_connections: 3, \
         request_timeout: 250ms, header_timeout: 500ms}}\n{ADMIN_REST}"
    ));
    let admin = c.admin.expect("admin");
    assert_eq!(admin.bind, addr("0.0.0.0:0"));
    assert_eq!(admin.token.as_deref(), Some("s3cr3t-T0ken-0123"));
    assert_eq!(admin.token_file, None);
    assert_eq!(admin.max_connections, 3);
    assert_eq!(admin.request_timeout, Duration::from_millis(250));
    assert_eq!(admin.header_timeout, Duration::from_millis(500));
    let debug = format!("{admin:?}");
    assert!(
        !debug.contains("s3cr3t"),
        "the token leaks into Debug: {debug}"
    );
    assert!(debug.contains("<redacted>"), "{debug}");
}

#[test]
fn admin_token_file_is_read_and_trimmed_at_load() {
    let path = secret_file("admin-token", "  from-the-file-0123\n\n");
    let c = parse_yaml(&format!(
        "admin: {{bind: '[::]:9120', token_file: '{}'}}\n{ADMIN_REST}",
        path.display()
    ));
    let _ = std::fs::remove_file(&path);
    let admin = c.admin.expect("admin");
    assert_eq!(admin.token.as_deref(), Some("from-the-file-0123"));
    assert_eq!(admin.token_file.as_deref(), Some(path.as_path()));
}

#[test]
fn a_token_file_others_can_read_is_only_a_warning_on_a_loopback_bind() {
    // 0644: loaded (the warning goes to the log); the same file on 0.0.0.0 is an error, in
    // tests_errors.
    let path = temp_file("admin-token-0644", "a-token-of-16-bytes-or-more\n");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    let c = parse_yaml(&format!(
        "admin: {{bind: '127.0.0.1:9120', token_file: '{}'}}\n{ADMIN_REST}",
        path.display()
    ));
    let _ = std::fs::remove_file(&path);
    let admin = c.admin.expect("admin");
    assert_eq!(admin.token.as_deref(), Some("a-token-of-16-bytes-or-more"));
}

#[test]
fn admin_tokens_of_16_and_256_bytes_are_accepted() {
    for token in ["a".repeat(16), "~".repeat(256)] {
        let c = parse_yaml(&format!(
            "admin: {{bind: '127.0.0.1:9120', token: '{token}'}}\n{ADMIN_REST}"
        ));
        assert_eq!(c.admin.and_then(|a| a.token), Some(token));
    }
}

#[test]
fn loopback_admin_binds_need_no_token() {
    for bind in ["127.0.0.1:0", "127.1.2.3:9120", "[::1]:9120", "localhost:0"] {
        let c = parse_yaml(&format!("admin: {{bind: '{bind}'}}\n{ADMIN_REST}"));
        assert_eq!(c.admin.map(|a| a.token), Some(None), "{bind}");
    }
}

#[test]
fn memory_budgets_follow_a_container_limit_unless_the_file_sets_them() {
    let mut config = parse_yaml(
        "listeners: [{name: m, bind: \"127.0.0.1:1\"}]\n\
         backends: {b: {servers: [\"127.0.0.1:2\"]}}\n\
         routes: [{name: r, match: \"*\", strategy: blind_forward, backend: b}]\n",
    );
    let fit = config.fit_memory_limit(64 << 20);
    assert_eq!(fit.reply, (16 << 20, true), "a third of 64 MiB less 16 MiB");
    assert_eq!(fit.request, (6 << 20, true), "an eighth of it");
    let fit = config.fit_memory_limit(8 << 30);
    assert_eq!(
        fit.reply.0, DEFAULT_REPLY_MEMORY_BUDGET,
        "never over the default"
    );
    assert_eq!(fit.request.0, DEFAULT_REQUEST_MEMORY_BUDGET);
    let fit = config.fit_memory_limit(4 << 20);
    assert_eq!(
        (fit.reply.0, fit.request.0),
        (1 << 20, 1 << 20),
        "at least 1 MiB"
    );
    let mut set = parse_yaml(
        "reply_memory_budget: 100MiB\n\
         listeners: [{name: m, bind: \"127.0.0.1:1\"}]\n\
         backends: {b: {servers: [\"127.0.0.1:2\"]}}\n\
         routes: [{name: r, match: \"*\", strategy: blind_forward, backend: b}]\n",
    );
    let fit = set.fit_memory_limit(64 << 20);
    assert_eq!(fit.reply, (100 << 20, false), "the file's budget stays");
    assert_eq!(fit.request, (6 << 20, true));
}

#[test]
fn http_origins_are_read_from_their_urls() {
    let c = parse_yaml(
        "listeners: [{name: a, bind: '127.0.0.1:0'}]\n\
         backends:\n\
         \x20 o: {servers: ['http://127.0.0.1/', 'HTTP://127.0.0.2:8080', {address: 'http://127.0.0.3:81/a/b-', weight: 2}], writes: true, max_value_size: 4KiB}\n\
         routes: [{match: '*', strategy: consistent_hash, backend: o}]\n",
    );
    let o = &c.backends[0];
    assert!(o.is_http() && o.writes);
    assert_eq!(o.max_value_size, 4096);
    let parts: Vec<(&str, &str, &str)> = o
        .servers
        .iter()
        .map(|s| {
            let url = s.origin.as_ref().expect("an origin");
            (
                s.address.as_str(),
                url.host.as_str(),
                url.base_path.as_str(),
            )
        })
        .collect();
    assert_eq!(
        parts,
        [
            ("127.0.0.1:80", "127.0.0.1", "/"),
            ("127.0.0.2:8080", "127.0.0.2:8080", "/"),
            ("127.0.0.3:81", "127.0.0.3:81", "/a/b-"),
        ]
    );
    assert_eq!(o.servers[2].weight, 2);
}
