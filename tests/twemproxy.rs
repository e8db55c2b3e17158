//! `bifrost --twemproxy nutcracker.yml`, end to end, against a real nutcracker
//! (`/usr/sbin/nutcracker`) and real memcached.
//!
//! - `twemproxy_config_keeps_every_key_where_nutcracker_put_it`: one nutcracker.yml with two
//!   pools (ketama + fnv1a_64 + `hash_tag: "{}"`, weighted and named servers; modula + murmur,
//!   weighted). nutcracker serves it and 2000 keys per pool are written through each listener;
//!   every memcached is asked which keys it holds. Then `bifrost --twemproxy` runs the same file
//!   on the same ports, and then `bifrost --config` runs what `--print-config` printed (which
//!   `--check` accepts): each time every key must land on the same memcached as before.
//! - `auto_eject_hosts_moves_keys_to_the_live_servers`: `auto_eject_hosts: true`,
//!   `server_failure_limit: 1`, `server_retry_timeout: 2000`; one memcached is killed, bifrost
//!   ejects it and every key is then stored on the server twemproxy's ring over the two live
//!   servers names.
//! - `check_refuses_what_cannot_run_and_warns_about_the_rest`: `--check --twemproxy` exits 2
//!   naming the pool and key for `redis: true`, a unix socket `listen` and an unknown hash, and
//!   exits 0 with one warning per ignored key (`preconnect`, `backlog`).
//! - `print_config_of_every_shipped_config_loads_back`: `--print-config --config F` for every
//!   file in config/ prints YAML that `--check` accepts; `--print-config` alone prints the
//!   embedded default; `--twemproxy` and `--config` together are refused.
//!
//! The tests that need nutcracker fail with a clear message when it is not installed: a
//! comparison that cannot run must not pass.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, ExitStatus};
use std::thread;
use std::time::{Duration, Instant};

use bifrost::config::placement::{Distribution, HashFunction};
use bifrost::routing::hash::hash_tag_slice;
use bifrost::routing::ring::{Ring, RingServer};
use common::http::HttpClient;
use common::{free_port, wait_until, Client, Memcached, Proc, Run, TempFile};

const BIN: &str = env!("CARGO_BIN_EXE_bifrost");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const NUTCRACKER: &str = "/usr/sbin/nutcracker";
const DEADLINE: Duration = Duration::from_secs(10);

/// Panics with a clear message when nutcracker is missing.
fn require_nutcracker() {
    assert!(
        Path::new(NUTCRACKER).exists(),
        "{NUTCRACKER} is not installed: these tests compare bifrost --twemproxy with \
         twemproxy itself; install it (apt-get install nutcracker; .ci/run does)"
    );
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A finished `bifrost` run.
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn describe(&self) -> String {
        format!(
            "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `bifrost ARGS` in the crate's directory to its exit (10 s deadline).
fn run(args: &[&str]) -> Outcome {
    let run = Run::to_exit(args);
    Outcome {
        status: run.status(),
        stdout: run.stdout(),
        stderr: run.stderr(),
    }
}

/// A proxy process (nutcracker or bifrost) serving the given listen ports.
struct Proxy {
    proc: Proc,
    addrs: Vec<String>,
}

impl Proxy {
    /// Starts `program ARGS` and waits until every port answers `get` with `END`.
    fn start(name: &str, program: &str, args: &[&str], ports: &[u16]) -> Proxy {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(MANIFEST_DIR);
        let mut proxy = Proxy {
            proc: Proc::spawn(name, &mut cmd),
            addrs: ports.iter().map(|p| format!("127.0.0.1:{p}")).collect(),
        };
        let start = Instant::now();
        for addr in proxy.addrs.clone() {
            while !Client::answers_get(&addr) {
                if let Some(status) = proxy.proc.exited() {
                    panic!("{name} exited ({status}) before serving {addr}");
                }
                assert!(
                    start.elapsed() < DEADLINE,
                    "{name} did not answer on {addr} within {DEADLINE:?}"
                );
                thread::sleep(Duration::from_millis(5));
            }
        }
        proxy
    }

    fn nutcracker(config: &Path, ports: &[u16]) -> Proxy {
        let stats_port = free_port().to_string();
        let config = config.to_string_lossy().into_owned();
        let args = ["-c", &config, "-s", &stats_port, "-a", "127.0.0.1"];
        Proxy::start("nutcracker", NUTCRACKER, &args, ports)
    }

    fn bifrost(args: &[&str], ports: &[u16]) -> Proxy {
        Proxy::start("bifrost", BIN, args, ports)
    }

    fn addr(&self, pool: usize) -> &str {
        self.addrs.get(pool).map_or("", String::as_str)
    }

    /// SIGKILL, so the ports are free for the next proxy.
    fn stop(mut self) {
        self.proc.kill();
    }

    fn log(&self) -> String {
        self.proc.log()
    }
}

// ---------------------------------------------------------------------------------------------
// Pools and placement
// ---------------------------------------------------------------------------------------------

/// A nutcracker pool over real memcached.
struct Pool {
    name: &'static str,
    distribution: Distribution,
    hash: HashFunction,
    hash_tag: Option<&'static str>,
    /// (memcached, weight, name).
    servers: Vec<(Memcached, u32, Option<&'static str>)>,
    /// Extra `key: value` lines of the pool.
    extra: &'static str,
}

impl Pool {
    fn addrs(&self) -> Vec<String> {
        self.servers.iter().map(|(m, _, _)| m.addr()).collect()
    }

    /// The pool as nutcracker.yml lines, listening on `port`.
    fn yaml(&self, port: u16) -> String {
        let mut yaml = format!(
            "{}:\n  listen: 127.0.0.1:{port}\n  hash: {}\n  distribution: {}\n",
            self.name,
            self.hash.name(),
            self.distribution.name()
        );
        if let Some(tag) = self.hash_tag {
            yaml.push_str(&format!("  hash_tag: \"{tag}\"\n"));
        }
        yaml.push_str(self.extra);
        yaml.push_str("  servers:\n");
        for (mc, weight, name) in &self.servers {
            let name = name.map_or(String::new(), |n| format!(" {n}"));
            yaml.push_str(&format!("   - {}:{weight}{name}\n", mc.addr()));
        }
        yaml
    }

    /// twemproxy's ring over the servers at `live` (indices into `servers`).
    fn ring(&self, live: &[usize]) -> Ring {
        let servers: Vec<RingServer> = live
            .iter()
            .filter_map(|&i| self.servers.get(i))
            .map(|(mc, weight, name)| RingServer::new(&mc.addr(), *name, *weight))
            .collect();
        Ring::new(&servers, self.distribution, self.hash)
    }
}

/// `n` keys for `pool`: short and long, ASCII and not, some with `{...}` hash tags.
fn keys(pool: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 5 {
            0 => format!("{pool}:{i}"),
            1 => format!("user:{{{}}}:{pool}{i}", i % 61),
            2 => format!("cl\u{e9}:{pool}:{i}:\u{4e2d}"),
            3 => format!("{i}{pool}{}", "x".repeat(i % 180)),
            _ => format!("{{{i}}}{pool}"),
        })
        .collect()
}

/// Writes every key through `addr` (pipelined), each with a value naming it.
fn set_all(proxy: &str, addr: &str, keys: &[String]) {
    let mut client = Client::connect(addr);
    for batch in keys.chunks(200) {
        let mut req = Vec::new();
        for key in batch {
            let value = format!("v:{key}");
            req.extend_from_slice(
                format!("set {key} 0 0 {}\r\n{value}\r\n", value.len()).as_bytes(),
            );
        }
        client.send(&req);
        for key in batch {
            assert_eq!(client.read_line(), "STORED", "set {key} through {proxy}");
        }
    }
}

/// Which of `servers` holds each key (asked straight from each memcached); panics unless each
/// key is on exactly one.
fn holders(servers: &[String], keys: &[String]) -> HashMap<String, usize> {
    let mut held: HashMap<String, Vec<usize>> = HashMap::new();
    for (index, server) in servers.iter().enumerate() {
        let mut client = Client::connect(server);
        for batch in keys.chunks(100) {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            for (key, value) in client.get_multi(&refs) {
                assert_eq!(value, format!("v:{key}").into_bytes(), "value of {key}");
                held.entry(key).or_default().push(index);
            }
        }
    }
    keys.iter()
        .map(|key| match held.get(key).map(Vec::as_slice) {
            Some(&[index]) => (key.clone(), index),
            other => panic!("{key:?} is held by servers {other:?} of {servers:?}, not by one"),
        })
        .collect()
}

fn flush_all(servers: &[String]) {
    for server in servers {
        let mut client = Client::connect(server);
        assert_eq!(
            client.request(b"flush_all\r\n"),
            b"OK\r\n",
            "flush {server}"
        );
    }
}

/// Writes each pool's keys through `proxy` and returns where every key landed, per pool; the
/// memcached are flushed afterwards.
fn placements(
    what: &str,
    proxy: &Proxy,
    pools: &[Pool],
    keys: &[Vec<String>],
) -> Vec<HashMap<String, usize>> {
    let out = pools
        .iter()
        .zip(keys)
        .enumerate()
        .map(|(i, (pool, keys))| {
            set_all(what, proxy.addr(i), keys);
            holders(&pool.addrs(), keys)
        })
        .collect();
    for pool in pools {
        flush_all(&pool.addrs());
    }
    out
}

/// Panics unless both placements put every key on the same server.
fn assert_same_placement(
    what: &str,
    pools: &[Pool],
    want: &[HashMap<String, usize>],
    got: &[HashMap<String, usize>],
) {
    for ((pool, want), got) in pools.iter().zip(want).zip(got) {
        let mut moved: Vec<String> = want
            .iter()
            .filter(|(key, server)| got.get(*key) != Some(server))
            .map(|(key, server)| format!("{key:?}: nutcracker {server}, {what} {:?}", got.get(key)))
            .collect();
        moved.sort();
        assert!(
            moved.is_empty(),
            "pool {}: {what} placed {} of {} keys elsewhere than nutcracker, first: {:#?}",
            pool.name,
            moved.len(),
            want.len(),
            moved.iter().take(10).collect::<Vec<_>>()
        );
        let mut per_server = vec![0usize; pool.servers.len()];
        for server in want.values() {
            if let Some(n) = per_server.get_mut(*server) {
                *n += 1;
            }
        }
        eprintln!(
            "pool {}: {what} places all {} keys as nutcracker does (per server {per_server:?})",
            pool.name,
            want.len()
        );
    }
}

fn memcached() -> Memcached {
    Memcached::builder().memory_mb(16).start()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn twemproxy_config_keeps_every_key_where_nutcracker_put_it() {
    require_nutcracker();
    let pools = vec![
        Pool {
            name: "alpha",
            distribution: Distribution::Ketama,
            hash: HashFunction::Fnv1a_64,
            hash_tag: Some("{}"),
            servers: vec![
                (memcached(), 1, None),
                (memcached(), 2, Some("cache-b")),
                (memcached(), 1, Some("cache-c")),
            ],
            extra: "  timeout: 2000\n  server_connections: 2\n  preconnect: true\n",
        },
        Pool {
            name: "beta",
            distribution: Distribution::Modula,
            hash: HashFunction::Murmur,
            hash_tag: None,
            servers: vec![(memcached(), 1, None), (memcached(), 3, None)],
            extra: "  timeout: 2000\n  client_connections: 0\n",
        },
    ];
    let keys: Vec<Vec<String>> = pools.iter().map(|p| keys(p.name, 2000)).collect();
    let ports: Vec<u16> = pools.iter().map(|_| free_port()).collect();
    let yaml: String = pools
        .iter()
        .zip(&ports)
        .map(|(p, &port)| p.yaml(port))
        .collect();
    let file = TempFile::new("nutcracker", "yml", yaml.as_bytes());
    let path = file.path().to_string_lossy().into_owned();

    let nutcracker = Proxy::nutcracker(file.path(), &ports);
    let by_nutcracker = placements("nutcracker", &nutcracker, &pools, &keys);
    nutcracker.stop();

    // The same file, the same ports.
    let twemproxy = Proxy::bifrost(&["--twemproxy", &path], &ports);
    let by_bifrost = placements("bifrost --twemproxy", &twemproxy, &pools, &keys);
    assert_same_placement("bifrost --twemproxy", &pools, &by_nutcracker, &by_bifrost);
    let log = twemproxy.log();
    assert!(
        log.contains("alpha.preconnect: ignored"),
        "the warning about preconnect is on stderr:\n{log}"
    );
    twemproxy.stop();

    // What --print-config prints passes --check and runs the same way.
    let printed = run(&["--twemproxy", &path, "--print-config"]);
    assert!(
        printed.status.success(),
        "--print-config: {}",
        printed.describe()
    );
    assert!(
        printed.stdout.contains("strategy: consistent_hash"),
        "{}",
        printed.stdout
    );
    let bifrost_yaml = TempFile::new("printed", "yaml", printed.stdout.as_bytes());
    let bifrost_path = bifrost_yaml.path().to_string_lossy().into_owned();
    let check = run(&["--check", "--config", &bifrost_path]);
    assert!(
        check.status.success(),
        "--check of the printed config: {}",
        check.describe()
    );
    let converted = Proxy::bifrost(&["--config", &bifrost_path], &ports);
    let by_printed = placements("bifrost --config (printed)", &converted, &pools, &keys);
    assert_same_placement(
        "bifrost --config (printed)",
        &pools,
        &by_nutcracker,
        &by_printed,
    );
}

#[test]
fn auto_eject_hosts_moves_keys_to_the_live_servers() {
    let mut pool = Pool {
        name: "eject",
        distribution: Distribution::Ketama,
        hash: HashFunction::Md5,
        hash_tag: None,
        servers: vec![
            (memcached(), 1, Some("n0")),
            (memcached(), 1, Some("n1")),
            (memcached(), 1, Some("n2")),
        ],
        extra: "  timeout: 500\n  auto_eject_hosts: true\n  server_failure_limit: 1\n  \
                server_retry_timeout: 2000\n",
    };
    let port = free_port();
    let file = TempFile::new("nutcracker-eject", "yml", pool.yaml(port).as_bytes());
    let path = file.path().to_string_lossy().into_owned();
    let proxy = Proxy::bifrost(&["--twemproxy", &path], &[port]);
    let keys = keys("ej", 600);
    let addrs = pool.addrs();
    let dead = addrs.get(2).cloned().unwrap_or_default();

    set_all("bifrost", proxy.addr(0), &keys);
    let before = holders(&addrs, &keys);
    assert!(
        before.values().any(|&s| s == 2),
        "some keys live on the server about to be killed"
    );
    if let Some((mc, _, _)) = pool.servers.get_mut(2) {
        mc.kill();
    }
    let mut client = Client::connect(proxy.addr(0));
    wait_until(DEADLINE, "bifrost ejects the killed server", || {
        client
            .stats()
            .get(&format!("server:{dead}:state"))
            .is_some_and(|s| s == "down")
    });
    // Every key is now stored on a live server: the one twemproxy's ring over the two live
    // servers names (keys of the live servers stay where they were).
    let live = addrs.get(..2).unwrap_or_default().to_vec();
    flush_all(&live);
    set_all("bifrost after the ejection", proxy.addr(0), &keys);
    let after = holders(&live, &keys);
    let ring = pool.ring(&[0, 1]);
    let wrong: Vec<String> = keys
        .iter()
        .filter_map(|key| {
            // A ketama ring: the random generator state is never used.
            let want = ring.server_for(hash_tag_slice(key.as_bytes(), b""), &mut 0);
            let got = after.get(key).copied();
            (got != Some(want)).then(|| format!("{key:?}: on {got:?}, ring says {want}"))
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} keys misplaced: {:#?}",
        wrong.len(),
        wrong.iter().take(10).collect::<Vec<_>>()
    );
    let stayed = keys
        .iter()
        .filter(|k| before.get(*k).is_some_and(|&s| s < 2))
        .all(|k| before.get(k) == after.get(k));
    assert!(stayed, "keys of the live servers stayed where they were");
    let mut c = Client::connect(proxy.addr(0));
    for key in keys.iter().step_by(37) {
        assert_eq!(
            c.get(key),
            Some(format!("v:{key}").into_bytes()),
            "get {key}"
        );
    }
}

#[test]
fn check_refuses_what_cannot_run_and_warns_about_the_rest() {
    let check = |hint: &str, yaml: &str| {
        let file = TempFile::new(hint, "yml", yaml.as_bytes());
        let path = file.path().to_string_lossy().into_owned();
        (run(&["--check", "--twemproxy", &path]), path)
    };
    let servers = "  servers:\n   - 127.0.0.1:11212:1\n";

    let (out, path) = check(
        "redis",
        &format!("cache:\n  listen: 127.0.0.1:22121\n  redis: true\n{servers}"),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "redis: true: {}",
        out.describe()
    );
    assert!(
        out.stderr
            .contains(&format!("{path}: cache.redis: a redis pool cannot run")),
        "{}",
        out.describe()
    );

    let (out, path) = check(
        "ignored",
        &format!(
            "cache:\n  listen: 127.0.0.1:22121\n  timeout: 400\n  preconnect: true\n  \
             backlog: 1024\n{servers}"
        ),
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "preconnect, backlog: {}",
        out.describe()
    );
    for key in ["cache.preconnect", "cache.backlog"] {
        let lines: Vec<&str> = out.stderr.lines().filter(|l| l.contains(key)).collect();
        assert_eq!(lines.len(), 1, "one warning for {key}: {}", out.describe());
        assert!(
            lines
                .iter()
                .all(|l| l.starts_with(&format!("warning: {path}: "))),
            "{}",
            out.describe()
        );
    }
    assert!(
        out.stdout.contains("configuration OK"),
        "{}",
        out.describe()
    );

    let (out, _) = check(
        "unix",
        &format!("cache:\n  listen: /var/run/nutcracker/cache.sock 0666\n{servers}"),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "unix listen: {}",
        out.describe()
    );
    assert!(
        out.stderr
            .contains("cache.listen: '/var/run/nutcracker/cache.sock 0666' is a unix socket"),
        "{}",
        out.describe()
    );

    let (out, _) = check(
        "hash",
        &format!("cache:\n  listen: 127.0.0.1:22121\n  hash: sha1\n{servers}"),
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "unknown hash: {}",
        out.describe()
    );
    assert!(
        out.stderr
            .contains("cache.hash: unknown hash 'sha1' (supported: one_at_a_time, md5"),
        "{}",
        out.describe()
    );

    let (out, _) = check(
        "servers",
        "cache:\n  listen: 127.0.0.1:22121\n  server_connections: 1000\n  servers:\n   \
         - 127.0.0.1:11212\n   - 127.0.0.1:11213:1 a\n   - 127.0.0.1:11214:1 a\n",
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "bad servers: {}",
        out.describe()
    );
    for want in [
        "cache.servers[0]: '127.0.0.1:11212' has no weight",
        "cache.server_connections: ",
    ] {
        assert!(out.stderr.contains(want), "{want:?}: {}", out.describe());
    }
}

#[test]
fn print_config_of_every_shipped_config_loads_back() {
    let dir = Path::new(MANIFEST_DIR).join("config");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|entry| format!("config/{}", entry.file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".yaml") || f.ends_with(".json"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in &files {
        let printed = run(&["--print-config", "--config", file]);
        assert!(
            printed.status.success(),
            "--print-config --config {file}: {}",
            printed.describe()
        );
        let copy = TempFile::new("printed", "yaml", printed.stdout.as_bytes());
        let copy = copy.path().to_string_lossy().into_owned();
        let check = run(&["--check", "--config", &copy]);
        assert!(
            check.status.success(),
            "--check of {file} printed: {}",
            check.describe()
        );
    }
    let printed = run(&[
        "--twemproxy",
        "config/twemproxy/nutcracker.yml",
        "--print-config",
    ]);
    assert!(printed.status.success(), "{}", printed.describe());
    let copy = TempFile::new("printed-nutcracker", "yaml", printed.stdout.as_bytes());
    let check = run(&["--check", "--config", &copy.path().to_string_lossy()]);
    assert!(
        check.status.success(),
        "--check of nutcracker.yml printed: {}",
        check.describe()
    );

    let default = run(&["--print-config"]);
    assert!(default.status.success(), "{}", default.describe());
    assert!(
        default.stdout.contains("bind: 127.0.0.1:11311"),
        "{}",
        default.describe()
    );

    let both = run(&[
        "--twemproxy",
        "config/twemproxy/nutcracker.yml",
        "--config",
        "config/blind_forward.yaml",
    ]);
    assert!(
        !both.status.success(),
        "--twemproxy with --config: {}",
        both.describe()
    );
    assert!(
        both.stderr.contains("cannot be used with"),
        "{}",
        both.describe()
    );
}

#[test]
fn admin_flag_serves_metrics_for_a_twemproxy_config_and_refuses_an_open_bind() {
    let pool = Pool {
        name: "adm",
        distribution: Distribution::Ketama,
        hash: HashFunction::Fnv1a_64,
        hash_tag: None,
        servers: vec![(memcached(), 1, None), (memcached(), 1, None)],
        extra: "  timeout: 500\n",
    };
    let port = free_port();
    let file = TempFile::new("nutcracker-admin", "yml", pool.yaml(port).as_bytes());
    let path = file.path().to_string_lossy().into_owned();
    let admin = format!("127.0.0.1:{}", free_port());
    let proxy = Proxy::bifrost(&["--twemproxy", &path, "--admin", &admin], &[port]);
    set_all("bifrost", proxy.addr(0), &keys("adm", 10));
    let mut http = HttpClient::connect(&admin);
    let metrics = http.get("/metrics");
    assert_eq!(metrics.status, 200, "{}", proxy.log());
    let text = metrics.text();
    assert!(
        text.contains("bifrost_requests_total{route=\"adm\",command=\"set\"} 10\n"),
        "the pool's route counts its sets: {text}"
    );
    assert_eq!(http.get("/ready").status, 200);

    let refused = run(&["--twemproxy", &path, "--admin", "0.0.0.0:9"]);
    assert_eq!(refused.status.code(), Some(2), "{}", refused.describe());
    assert!(
        refused
            .stderr
            .contains("--admin 0.0.0.0:9 is not a loopback address"),
        "{}",
        refused.describe()
    );
}
