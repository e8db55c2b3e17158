//! Tests of [`super`] (twemproxy.rs).

use super::*;
use crate::config::{HealthConfig, KeyMatch, Strategy};

fn ok(text: &str) -> Translation {
    match translate(text, "nc.yml") {
        Ok(t) => t,
        Err(r) => panic!("translation failed:\n{}", r.errors),
    }
}

fn rejected(text: &str) -> Rejection {
    match translate(text, "nc.yml") {
        Ok(t) => panic!("translation succeeded:\n{}", t.yaml),
        Err(r) => r,
    }
}

fn line(text: &str) -> ServerLine {
    parse_server_line(text).unwrap_or_else(|e| panic!("{text}: {e}"))
}

#[test]
fn server_lines_with_weights_and_names() {
    let s = line("127.0.0.1:11212:3");
    assert_eq!(s.written, "127.0.0.1:11212");
    assert_eq!(s.address, "127.0.0.1:11212");
    assert_eq!(
        (s.weight, s.name.as_deref(), s.ring_name.as_deref()),
        (3, None, None)
    );
    let s = line("  cache-a.example:11211:1 cache-a ");
    assert_eq!(s.address, "cache-a.example:11211");
    assert_eq!(s.name.as_deref(), Some("cache-a"));
    assert_eq!(s.ring_name.as_deref(), Some("cache-a"));
    // The port is kept as written: twemproxy hashes it that way.
    assert_eq!(line("10.0.0.1:011212:1").address, "10.0.0.1:011212");
}

#[test]
fn ipv6_server_lines_split_from_the_end_and_keep_twemproxys_ring_name() {
    let s = line("::1:11212:2");
    assert_eq!(s.address, "[::1]:11212");
    assert_eq!(s.weight, 2);
    assert_eq!(s.ring_name.as_deref(), Some("::1:11212"));
    // On 11211 twemproxy hashes the host alone.
    assert_eq!(
        line("fe80::1:11211:1").ring_name.as_deref(),
        Some("fe80::1")
    );
    assert_eq!(line("::1:11212:1 six").ring_name.as_deref(), Some("six"));
    // A bracketed address is taken as written.
    let s = line("[::1]:11213:1");
    assert_eq!((s.address.as_str(), s.ring_name), ("[::1]:11213", None));
}

#[test]
fn bad_server_lines_say_what_is_wrong() {
    for (text, want) in [
        ("127.0.0.1:11211", "no weight"),
        ("127.0.0.1:11211:0", "weight '0'"),
        ("127.0.0.1:11211:x", "weight 'x'"),
        ("127.0.0.1:99999:1", "port '99999'"),
        ("127.0.0.1:0:1", "port '0'"),
        (":11211:1", "no host"),
        ("a:1:1 two names", "no spaces"),
        ("/var/run/memcached.sock:1", "unix socket"),
        ("", "host:port:weight"),
    ] {
        match parse_server_line(text) {
            Ok(s) => panic!("{text:?} parsed as {s:?}"),
            Err(e) => assert!(e.contains(want), "{text:?}: {e}"),
        }
    }
}

#[test]
fn every_twemproxy_hash_and_distribution_name_maps() {
    for name in [
        "one_at_a_time",
        "md5",
        "crc16",
        "crc32",
        "crc32a",
        "fnv1_64",
        "fnv1a_64",
        "fnv1_32",
        "fnv1a_32",
        "hsieh",
        "murmur",
        "jenkins",
    ] {
        assert_eq!(hash_function(name).map(HashFunction::name), Ok(name));
    }
    for name in ["ketama", "modula", "random"] {
        assert_eq!(distribution(name).map(Distribution::name), Ok(name));
    }
    let e = hash_function("sha1").err().unwrap_or_default();
    assert!(
        e.contains("'sha1'") && e.contains("fnv1a_64, fnv1_32"),
        "{e}"
    );
    let e = distribution("vnode").err().unwrap_or_default();
    assert!(e.contains("ketama, modula, random"), "{e}");
}

const TWO_POOLS: &str = "\
alpha:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  hash_tag: \"{}\"
  distribution: ketama
  timeout: 400
  server_connections: 2
  auto_eject_hosts: true
  server_retry_timeout: 2000
  server_failure_limit: 1
  servers:
   - 127.0.0.1:11212:1
   - 127.0.0.1:11213:2 cache-b
   - ::1:11214:1
beta:
  listen: 127.0.0.1:22122
  hash: murmur
  distribution: modula
  timeout: 3000
  client_connections: 0
  servers:
   - 127.0.0.1:11215:1
   - 127.0.0.1:11216:1
";

#[test]
fn pools_become_listeners_backends_and_routes() {
    let t = ok(TWO_POOLS);
    let c = &t.config;
    let names = |v: Vec<&str>| v.into_iter().map(String::from).collect::<Vec<_>>();
    assert_eq!(
        c.listeners
            .iter()
            .map(|l| l.name.as_str())
            .collect::<Vec<_>>(),
        ["alpha", "beta"]
    );
    let (Some(a), Some(b)) = (c.listeners.first(), c.listeners.get(1)) else {
        panic!("two listeners");
    };
    assert_eq!(a.bind.to_string(), "127.0.0.1:22121");
    assert_eq!(a.routes, Some(names(vec!["alpha"])));
    assert_eq!(a.max_connections, super::super::DEFAULT_MAX_CONNECTIONS);
    assert_eq!(b.routes, Some(names(vec!["beta"])));
    let Some((_, alpha)) = c.backend("alpha") else {
        panic!("backend alpha");
    };
    assert_eq!(alpha.distribution, Distribution::Ketama);
    assert_eq!(alpha.hash, HashFunction::Fnv1a_64);
    assert_eq!(alpha.hash_tag.as_deref(), Some("{}"));
    assert_eq!(alpha.timeout, Duration::from_millis(400));
    assert_eq!(alpha.connections, 2);
    assert_eq!(
        alpha.health,
        Some(HealthConfig {
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(400),
            failure_limit: 1,
            retry_after: Duration::from_secs(2),
            eject: true,
        })
    );
    let servers: Vec<(&str, u32, Option<&str>)> = alpha
        .servers
        .iter()
        .map(|s| (s.address.as_str(), s.weight, s.name.as_deref()))
        .collect();
    assert_eq!(
        servers,
        [
            ("127.0.0.1:11212", 1, None),
            ("127.0.0.1:11213", 2, Some("cache-b")),
            ("[::1]:11214", 1, Some("::1:11214")),
        ]
    );
    let Some((_, beta)) = c.backend("beta") else {
        panic!("backend beta");
    };
    assert_eq!(
        (beta.distribution, beta.hash),
        (Distribution::Modula, HashFunction::Murmur)
    );
    assert_eq!(beta.health, None, "no auto_eject_hosts: never ejects");
    for (route, pool) in c.routes.iter().zip(["alpha", "beta"]) {
        assert_eq!(route.name, pool);
        assert_eq!(route.matcher, KeyMatch::Glob("*".into()));
        assert_eq!(
            route.strategy,
            Strategy::ConsistentHash {
                backend: pool.into()
            }
        );
    }
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    // The printed YAML is what runs.
    let reloaded = Config::parse(&t.yaml, "printed.yaml", Format::Yaml);
    assert_eq!(reloaded.ok().as_ref(), Some(c));
}

#[test]
fn defaults_are_twemproxys() {
    let t = ok(
        "p:\n  listen: 127.0.0.1:22121\n  auto_eject_hosts: true\n  \
                servers: [127.0.0.1:11212:1]\n",
    );
    let Some((_, p)) = t.config.backend("p") else {
        panic!("backend p");
    };
    assert_eq!(
        (p.distribution, p.hash),
        (Distribution::Ketama, HashFunction::Fnv1a_64)
    );
    let Some(h) = &p.health else { panic!("health") };
    assert_eq!(
        (h.failure_limit, h.retry_after),
        (2, Duration::from_secs(30))
    );
    assert_eq!(h.timeout, Duration::from_secs(1));
    // No timeout in twemproxy means none at all: said once.
    assert_eq!(t.warnings.len(), 1, "{:?}", t.warnings);
    assert!(t
        .warnings
        .iter()
        .any(|w| w.contains("nc.yml: p.timeout: not set")));
}

#[test]
fn keys_without_use_warn_once_each_naming_pool_and_key() {
    let t = ok(
        "p:\n  listen: 127.0.0.1:22121\n  timeout: 100\n  preconnect: true\n  \
                backlog: 1024\n  tcpkeepalive: true\n  redis: false\n  \
                client_connections: 50\n  server_failure_limit: 3\n  \
                servers: [127.0.0.1:11212:1]\n",
    );
    let w = &t.warnings;
    for key in [
        "p.preconnect: ignored",
        "p.backlog: ignored",
        "p.tcpkeepalive: ignored",
        "p.client_connections: becomes the listener's max_connections: 50",
        "p.server_failure_limit: ignored without `auto_eject_hosts: true`",
    ] {
        assert_eq!(
            w.iter().filter(|m| m.contains(key)).count(),
            1,
            "{key} in {w:#?}"
        );
    }
    assert_eq!(w.len(), 5, "{w:#?}");
    assert!(w.iter().all(|m| m.starts_with("nc.yml: ")), "{w:#?}");
    assert_eq!(
        t.config.listeners.first().map(|l| l.max_connections),
        Some(50)
    );
}

#[test]
fn refusals_name_the_file_pool_and_key() {
    let r = rejected(
        "r:\n  listen: 127.0.0.1:22121\n  redis: true\n  preconnect: true\n  \
         servers: [127.0.0.1:6379:1]\n\
         u:\n  listen: /var/run/nutcracker.sock 0666\n  servers: [127.0.0.1:11212:1]\n\
         h:\n  listen: 127.0.0.1:22123\n  hash: sha1\n  distribution: vnode\n  \
         servers: [127.0.0.1:11212]\n  colour: blue\n",
    );
    let all = r.errors.to_string();
    for want in [
        "nc.yml: r.redis: a redis pool cannot run",
        "nc.yml: u.listen: '/var/run/nutcracker.sock 0666' is a unix socket",
        "nc.yml: h.hash: unknown hash 'sha1' (supported: one_at_a_time, md5",
        "nc.yml: h.distribution: unknown distribution 'vnode'",
        "nc.yml: h.servers[0]: '127.0.0.1:11212' has no weight",
        "nc.yml: h.colour: unknown twemproxy key 'colour'",
    ] {
        assert!(all.contains(want), "{want:?} not in:\n{all}");
    }
    assert_eq!(r.errors.len(), 6, "{all}");
    assert!(r.warnings.iter().any(|w| w.contains("r.preconnect")));
}

#[test]
fn loader_errors_are_mapped_back_to_the_nutcracker_key() {
    let r = rejected(
        "a:\n  listen: 127.0.0.1:22121\n  timeout: 100\n  server_connections: 500\n  \
         servers:\n   - 127.0.0.1:11212:1 same\n   - 127.0.0.1:11213:1 same\n\
         b:\n  listen: 127.0.0.1:22121\n  timeout: 100\n  hash_tag: \"{\"\n  \
         servers: [127.0.0.1:11214:1]\n",
    );
    let all = r.errors.to_string();
    for want in [
        "nc.yml: a.server_connections: ",
        "at backends.a.connections)",
        "nc.yml: a.servers[1]: server name 'same' is used twice",
        "nc.yml: b.listen: 127.0.0.1:22121 is already used",
        "nc.yml: b.hash_tag: must be exactly two",
    ] {
        assert!(all.contains(want), "{want:?} not in:\n{all}");
    }
}

#[test]
fn translation_and_loader_errors_are_reported_together_once() {
    let r = rejected(
        "a:\n  listen: nowhere\n  hash: sha1\n  server_connections: 500\n  servers:\n   \
         - 127.0.0.1:11212:1\n   - 127.0.0.1:11213\n   - 127.0.0.1:11212:1\n",
    );
    let all = r.errors.to_string();
    for want in [
        "nc.yml: a.listen: 'nowhere': expected host:port",
        "nc.yml: a.hash: unknown hash 'sha1'",
        "nc.yml: a.server_connections: ",
        "nc.yml: a.servers[1]: '127.0.0.1:11213' has no weight",
        // The third line is the second entry of the translation: named by its own index.
        "nc.yml: a.servers[2]: server 127.0.0.1:11212 is listed twice",
    ] {
        assert!(all.contains(want), "{want:?} not in:\n{all}");
    }
    assert_eq!(r.errors.len(), 5, "each problem once:\n{all}");
}

#[test]
fn files_that_are_not_pools_are_refused() {
    for (text, want) in [
        ("", "the file is empty"),
        ("[1, 2]", "not a map"),
        ("{}", "no pools"),
        ("p: 3\n", "p: expected a map"),
        (
            "p:\n  servers: [127.0.0.1:11212:1]\n",
            "p.listen: required key is missing",
        ),
        (
            "p:\n  listen: 127.0.0.1:1\n",
            "p.servers: required key is missing",
        ),
        (
            "p:\n  listen: 127.0.0.1:1\n  servers: []\n",
            "at least one server",
        ),
        (
            "p: {listen: 127.0.0.1:1, servers: [a:1:1], timeout: soon}\n",
            "p.timeout: expected a whole number",
        ),
        (
            "p: {listen: 127.0.0.1:1, servers: [a:1:1], auto_eject_hosts: yes}\n",
            "expected true or false",
        ),
        ("p: [", "invalid YAML"),
    ] {
        let all = rejected(text).errors.to_string();
        assert!(all.contains(want), "{text:?}: {want:?} not in:\n{all}");
    }
}

#[test]
fn short_retry_timeouts_are_raised_with_a_warning() {
    let t = ok(
        "p:\n  listen: 127.0.0.1:22121\n  timeout: 5000\n  auto_eject_hosts: \"true\"\n  \
                server_retry_timeout: 0\n  server_failure_limit: 0\n  \
                servers: [127.0.0.1:11212:1]\n",
    );
    let Some((_, p)) = t.config.backend("p") else {
        panic!("backend p");
    };
    let Some(h) = &p.health else { panic!("health") };
    assert_eq!(h.retry_after, Duration::from_millis(MIN_RETRY_MS));
    assert_eq!(h.failure_limit, 1);
    assert_eq!(
        h.timeout,
        Duration::from_secs(1),
        "probe deadline capped at 1s"
    );
    assert!(t
        .warnings
        .iter()
        .any(|w| w.contains("p.server_retry_timeout: 0 ms")));
}
