//! Placement compatibility with twemproxy, proven against a real nutcracker (`/usr/sbin/nutcracker`,
//! Debian's 0.5.x).
//!
//! - `ketama_placement_matches_nutcracker`: four real memcached (one weighted 2, one named, one
//!   on 127.0.0.1:11211 when that port is free), ketama with fnv1a_64, with md5, and with
//!   `hash_tag: "{}"`. 3000 keys are written through nutcracker, then every memcached is asked
//!   directly which keys it holds; each key must sit on `servers[ring.server_for(key, ..)]`. The
//!   same keys are then written through bifrost (a `consistent_hash` route over the same pool)
//!   and must land on the same servers.
//! - `every_hash_and_distribution_matches_nutcracker`: twelve recording fake memcached and one
//!   pool per hash function, for ketama and for modula (weighted, named servers whose name order
//!   differs from the configured order). Keys are asked for through nutcracker; the fakes record
//!   which server each key reached.
//!
//! - `ejection_matches_nutcracker_auto_eject_hosts`: three memcached, nutcracker with
//!   `auto_eject_hosts: true` and bifrost with `health: {eject: true}`; one server is killed and
//!   ejected by both; keys written through each land on the same surviving servers.
//!
//! Each test fails with a clear message when nutcracker is not installed (or, for the first,
//! when 127.0.0.1:11211 is taken): a comparison that cannot run must not pass.

mod common;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bifrost::config::placement::{Distribution, HashFunction};
use bifrost::routing::hash::hash_tag_slice;
use bifrost::routing::ring::{Ring, RingServer};
use common::{
    free_port, looks_like_addr_in_use, Behavior, Bifrost, Client, FakeBackend, Memcached, Proc,
    TempFile,
};

const NUTCRACKER: &str = "/usr/sbin/nutcracker";
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Panics with a clear message when nutcracker is missing: a comparison that cannot run must
/// not pass.
fn require_nutcracker() {
    assert!(
        Path::new(NUTCRACKER).exists(),
        "{NUTCRACKER} is not installed: these tests compare placement with twemproxy's; \
         install it (apt-get install nutcracker; .ci/run does)"
    );
}

/// One backend server of a nutcracker pool and of our ring.
#[derive(Clone, Debug)]
struct Server {
    address: String,
    weight: u32,
    name: Option<String>,
}

impl Server {
    fn new(address: String, weight: u32, name: Option<&str>) -> Server {
        Server {
            address,
            weight,
            name: name.map(str::to_string),
        }
    }

    /// twemproxy's `host:port:weight [name]`.
    fn nutcracker_line(&self) -> String {
        match &self.name {
            Some(name) => format!("{}:{} {name}", self.address, self.weight),
            None => format!("{}:{}", self.address, self.weight),
        }
    }

    fn ring_server(&self) -> RingServer {
        RingServer::new(&self.address, self.name.as_deref(), self.weight)
    }
}

/// A nutcracker pool.
struct Pool {
    name: String,
    hash: HashFunction,
    distribution: Distribution,
    hash_tag: Option<&'static str>,
    servers: Vec<Server>,
    /// Eject a failed server: nutcracker after one failed request (`auto_eject_hosts`, back
    /// after ten minutes), bifrost after one failed probe or connect (`health: {eject: true}`).
    eject: bool,
}

impl Pool {
    fn ring(&self) -> Ring {
        let servers: Vec<RingServer> = self.servers.iter().map(Server::ring_server).collect();
        Ring::new(&servers, self.distribution, self.hash)
    }

    /// The same pool as a bifrost config: one listener, one consistent_hash route.
    fn bifrost_yaml(&self, listen: u16) -> String {
        let mut yaml = format!(
            "workers: 1\nlisteners:\n  - name: main\n    bind: 127.0.0.1:{listen}\n\
             backends:\n  pool:\n    distribution: {}\n    hash: {}\n",
            self.distribution.name(),
            self.hash.name()
        );
        if let Some(tag) = self.hash_tag {
            yaml.push_str(&format!("    hash_tag: \"{tag}\"\n"));
        }
        if self.eject {
            yaml.push_str(
                "    health: {interval: 100ms, timeout: 300ms, failure_limit: 1, \
                 retry_after: 10m, eject: true}\n",
            );
        }
        yaml.push_str("    servers:\n");
        for server in &self.servers {
            let name = server
                .name
                .as_ref()
                .map_or(String::new(), |n| format!(", name: {n}"));
            yaml.push_str(&format!(
                "      - {{ address: {}, weight: {}{name} }}\n",
                server.address, server.weight
            ));
        }
        yaml.push_str(
            "routes:\n  - name: all\n    match: \"*\"\n    strategy: consistent_hash\n    \
             backend: pool\n",
        );
        yaml
    }

    fn yaml(&self, listen: u16) -> String {
        let mut yaml = format!(
            "{}:\n  listen: 127.0.0.1:{listen}\n  hash: {}\n  distribution: {}\n  {}\n",
            self.name,
            self.hash.name(),
            self.distribution.name(),
            if self.eject {
                "auto_eject_hosts: true\n  server_failure_limit: 1\n  \
                 server_retry_timeout: 600000\n  timeout: 1000"
            } else {
                "auto_eject_hosts: false\n  timeout: 3000"
            }
        );
        if let Some(tag) = self.hash_tag {
            yaml.push_str(&format!("  hash_tag: \"{tag}\"\n"));
        }
        yaml.push_str("  servers:\n");
        for server in &self.servers {
            yaml.push_str(&format!("   - {}\n", server.nutcracker_line()));
        }
        yaml
    }
}

/// A running nutcracker with one listen port per pool; SIGKILLed on drop.
struct Nutcracker {
    _proc: Proc,
    _config: TempFile,
    ports: Vec<u16>,
}

impl Nutcracker {
    /// Starts nutcracker serving `pools` and waits until every pool answers `get`; retries with
    /// new ports if one was taken meanwhile.
    fn start(pools: &[Pool]) -> Nutcracker {
        for _ in 0..5 {
            let ports: Vec<u16> = pools.iter().map(|_| free_port()).collect();
            let yaml: String = pools.iter().zip(&ports).map(|(p, &l)| p.yaml(l)).collect();
            let config = TempFile::new("nutcracker", "yml", yaml.as_bytes());
            let stats_port = free_port().to_string();
            let mut cmd = Command::new(NUTCRACKER);
            cmd.arg("-c")
                .arg(config.path())
                .args(["-s", &stats_port, "-a", "127.0.0.1"]);
            let mut proc = Proc::spawn("nutcracker", &mut cmd);
            if wait_ready(&mut proc, &ports) {
                return Nutcracker {
                    _proc: proc,
                    _config: config,
                    ports,
                };
            }
        }
        panic!("nutcracker: its ports were taken on each of 5 attempts");
    }

    fn addr(&self, pool: usize) -> String {
        let port = self.ports.get(pool).copied().unwrap_or(0);
        format!("127.0.0.1:{port}")
    }
}

/// Waits until every port answers `get` with `END`. False if nutcracker exited because an
/// address was in use; panics on any other failure or after the deadline.
fn wait_ready(proc: &mut Proc, ports: &[u16]) -> bool {
    let start = Instant::now();
    let mut ready = 0;
    while ready < ports.len() {
        if let Some(status) = proc.exited() {
            if looks_like_addr_in_use(&proc.log()) {
                return false;
            }
            panic!(
                "nutcracker exited ({status}) before answering:\n{}",
                proc.log()
            );
        }
        let port = ports.get(ready).copied().unwrap_or(0);
        if Client::answers_get(&format!("127.0.0.1:{port}")) {
            ready += 1;
            continue;
        }
        if start.elapsed() > START_TIMEOUT {
            panic!("nutcracker did not answer on port {port} within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// A memcached on 127.0.0.1:11211 (ours, checked by pid), or None when the port is taken.
fn memcached_on_11211() -> Option<Proc> {
    if TcpListener::bind("127.0.0.1:11211").is_err() {
        return None;
    }
    let mut cmd = Command::new("memcached");
    cmd.args([
        "-l",
        "127.0.0.1",
        "-p",
        "11211",
        "-U",
        "0",
        "-m",
        "16",
        "-t",
        "1",
    ]);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        cmd.args(["-u", "root"]);
    }
    let mut proc = Proc::spawn("memcached-11211", &mut cmd);
    let want = format!("STAT pid {}\r\n", proc.pid());
    let start = Instant::now();
    loop {
        if proc.exited().is_some() {
            return None; // someone took the port between our check and its bind
        }
        if let Ok(mut client) = Client::try_connect("127.0.0.1:11211") {
            client.send(b"stats\r\n");
            let mut stats = String::new();
            loop {
                let line = client.read_line();
                if line == "END" {
                    break;
                }
                stats.push_str(&line);
                stats.push_str("\r\n");
            }
            return stats.contains(&want).then_some(proc);
        }
        if start.elapsed() > START_TIMEOUT {
            panic!("memcached on 11211 did not answer within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// 3000 keys: short and long, ASCII and with bytes >= 0x80, some with a `{...}` hash tag.
fn keys() -> Vec<String> {
    (0..3000)
        .map(|i| match i % 6 {
            0 => format!("key:{i}"),
            1 => format!("user:{{{}}}:field{i}", i % 97),
            2 => format!("cl\u{e9}:{i}:\u{4e2d}\u{6587}"),
            3 => format!("{i}{}", "x".repeat(i % 200)),
            4 => format!("session:{i:08x}:{{}}:{{"),
            _ => format!("{{{i}"),
        })
        .collect()
}

/// Writes every key through `addr` (pipelined), each with a value naming it.
fn set_all(addr: &str, keys: &[String]) {
    let mut client = Client::connect(addr);
    for batch in keys.chunks(200) {
        let mut req = Vec::new();
        for key in batch {
            req.extend_from_slice(
                format!("set {key} 0 0 {}\r\nv:{key}\r\n", key.len() + 2).as_bytes(),
            );
        }
        client.send(&req);
        for key in batch {
            assert_eq!(client.read_line(), "STORED", "set {key} through nutcracker");
        }
    }
}

/// Which of `servers` holds each key, asked straight from each memcached.
fn holders(servers: &[Server], keys: &[String]) -> HashMap<String, Vec<usize>> {
    let mut held: HashMap<String, Vec<usize>> = HashMap::new();
    for (index, server) in servers.iter().enumerate() {
        let mut client = Client::connect(&server.address);
        for batch in keys.chunks(100) {
            let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
            for (key, value) in client.get_multi(&refs) {
                assert_eq!(value, format!("v:{key}").into_bytes(), "value of {key}");
                held.entry(key).or_default().push(index);
            }
        }
    }
    held
}

fn flush_all(servers: &[Server]) {
    for server in servers {
        let mut client = Client::connect(&server.address);
        assert_eq!(client.request(b"flush_all\r\n"), b"OK\r\n");
    }
}

/// Writes `keys` through the proxy at `addr`, asks every memcached of `pool` which keys it holds,
/// and panics unless each key is on exactly `ring.server_for(key, ..)` (after the hash tag).
/// Returns the number of keys per server.
fn check_placement(
    proxy: &str,
    addr: &str,
    pool: &Pool,
    ring: &Ring,
    keys: &[String],
) -> Vec<usize> {
    set_all(addr, keys);
    let held = holders(&pool.servers, keys);
    let tag = pool.hash_tag.unwrap_or("").as_bytes();
    let mut wrong = Vec::new();
    let mut per_server = vec![0usize; pool.servers.len()];
    for key in keys {
        // Ketama or modula: the random generator state is never used.
        let want = ring.server_for(hash_tag_slice(key.as_bytes(), tag), &mut 0);
        let got = held.get(key).cloned().unwrap_or_default();
        if got != [want] {
            wrong.push(format!(
                "{key:?}: {proxy} put it on {got:?}, ring says {want}"
            ));
        }
        if let Some(count) = per_server.get_mut(want) {
            *count += 1;
        }
    }
    assert!(
        wrong.is_empty(),
        "{proxy}, {} hash_tag {:?}: {} of {} keys misplaced, first: {:#?}",
        pool.hash.name(),
        pool.hash_tag,
        wrong.len(),
        keys.len(),
        wrong.iter().take(10).collect::<Vec<_>>()
    );
    per_server
}

#[test]
fn ketama_placement_matches_nutcracker() {
    require_nutcracker();
    let started = Instant::now();
    let mcs: Vec<Memcached> = (0..3)
        .map(|_| Memcached::builder().memory_mb(16).start())
        .collect();
    let _fixed = memcached_on_11211().unwrap_or_else(|| {
        panic!(
            "127.0.0.1:11211 is taken: this test places a server named by that address (as \
             twemproxy configs usually are); stop what listens there (.ci/run stops the \
             packaged memcached)"
        )
    });
    let fourth = "127.0.0.1:11211".to_string();
    let addr = |i: usize| mcs.get(i).map(Memcached::addr).unwrap_or_default();
    let servers = vec![
        Server::new(addr(0), 1, None),
        Server::new(addr(1), 2, None),
        Server::new(addr(2), 1, Some("cache-c")),
        Server::new(fourth, 1, None),
    ];
    let keys = keys();
    let variants = [
        (HashFunction::Fnv1a_64, None),
        (HashFunction::Md5, None),
        (HashFunction::Fnv1a_64, Some("{}")),
        (HashFunction::Md5, Some("{}")),
    ];
    for (hash, hash_tag) in variants {
        let pool = Pool {
            name: "ketama".to_string(),
            hash,
            distribution: Distribution::Ketama,
            hash_tag,
            servers: servers.clone(),
            eject: false,
        };
        let ring = pool.ring();
        let variant = format!("{} hash_tag {hash_tag:?}", hash.name());
        let nutcracker = Nutcracker::start(std::slice::from_ref(&pool));
        let per_server = check_placement("nutcracker", &nutcracker.addr(0), &pool, &ring, &keys);
        eprintln!(
            "{variant}: all {} keys placed as nutcracker does; per server {per_server:?}",
            keys.len()
        );
        drop(nutcracker);
        flush_all(&servers);
        // End to end: the binary, configured with the same pool, places keys the same way.
        let bifrost = Bifrost::start_templated(|port| pool.bifrost_yaml(port), &[]);
        check_placement("bifrost", &bifrost.addr(), &pool, &ring, &keys);
        eprintln!(
            "{variant}: bifrost places all {} keys the same way",
            keys.len()
        );
        drop(bifrost);
        flush_all(&servers);
    }
    eprintln!(
        "ketama_placement_matches_nutcracker took {:?}",
        started.elapsed()
    );
}

/// Keys of the fake-backend test: prefixed per pool so a recorded key names its pool.
fn fake_keys(pool: usize) -> Vec<String> {
    (0..400)
        .map(|i| match i % 5 {
            0 => format!("p{pool}:{i}"),
            1 => format!("{i}:p{pool}:\u{e9}\u{e8}{}", "y".repeat(i % 13)),
            2 => format!("p{pool}-{i}-{}", "k".repeat(i % 230)),
            3 => format!("\u{ff}{i}p{pool}"),
            _ => format!("p{pool}.{i:x}"),
        })
        .collect()
}

/// The keys each fake received in `get` lines after its first `skip[i]` bytes, with the fake's
/// index.
fn recorded(fakes: &[FakeBackend], skip: &[usize]) -> HashMap<Vec<u8>, Vec<usize>> {
    let mut seen: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    for (index, fake) in fakes.iter().enumerate() {
        let received = fake.received();
        let from = skip.get(index).copied().unwrap_or(0).min(received.len());
        for line in received[from..].split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let mut tokens = line.split(|&b| b == b' ').filter(|t| !t.is_empty());
            if tokens.next() != Some(b"get".as_slice()) {
                continue;
            }
            for key in tokens {
                seen.entry(key.to_vec()).or_default().push(index);
            }
        }
    }
    seen
}

#[test]
fn every_hash_and_distribution_matches_nutcracker() {
    require_nutcracker();
    let started = Instant::now();
    let fakes: Vec<FakeBackend> = (0..12)
        .map(|_| FakeBackend::start(Behavior::SlowAnswer(Duration::ZERO)))
        .collect();
    // Configured order differs from twemproxy's name order (shorter names first): the long name
    // comes first, the short one last.
    let servers: Vec<Server> = fakes
        .iter()
        .enumerate()
        .map(|(i, fake)| {
            let name = match i {
                0 => Some("zz-a-rather-long-server-name"),
                11 => Some("alpha"),
                _ => None,
            };
            Server::new(
                fake.addr(),
                [1, 2, 1, 3, 1, 1, 5, 1, 1, 2, 1, 1][i % 12],
                name,
            )
        })
        .collect();
    for distribution in [Distribution::Ketama, Distribution::Modula] {
        let skip: Vec<usize> = fakes.iter().map(|f| f.received().len()).collect();
        let pools: Vec<Pool> = HashFunction::ALL
            .iter()
            .map(|&hash| Pool {
                name: format!("{}_{}", distribution.name(), hash.name()),
                hash,
                distribution,
                hash_tag: None,
                servers: servers.clone(),
                eject: false,
            })
            .collect();
        let nutcracker = Nutcracker::start(&pools);
        for (index, _) in pools.iter().enumerate() {
            let mut client = Client::connect(&nutcracker.addr(index));
            for batch in fake_keys(index).chunks(50) {
                let refs: Vec<&str> = batch.iter().map(String::as_str).collect();
                assert!(client.get_multi(&refs).is_empty());
            }
        }
        drop(nutcracker);
        let seen = recorded(&fakes, &skip);
        let mut wrong = Vec::new();
        let mut wrong_pools = Vec::new();
        for (index, pool) in pools.iter().enumerate() {
            let ring = pool.ring();
            let wrong_before = wrong.len();
            for key in fake_keys(index) {
                let want = ring.server_for(key.as_bytes(), &mut 0);
                let got = seen.get(key.as_bytes()).cloned().unwrap_or_default();
                if got != [want] {
                    wrong.push(format!(
                        "{}: {key:?} reached {got:?}, ring says {want}",
                        pool.name
                    ));
                }
            }
            if wrong.len() > wrong_before {
                wrong_pools.push(format!("{} ({})", pool.name, wrong.len() - wrong_before));
            }
        }
        assert!(
            wrong.is_empty(),
            "{} keys misplaced, in pools {wrong_pools:?}; first: {:#?}",
            wrong.len(),
            wrong.iter().take(12).collect::<Vec<_>>()
        );
        eprintln!(
            "{}: 12 hash functions x 400 keys placed as nutcracker does",
            distribution.name()
        );
    }
    eprintln!(
        "every_hash_and_distribution_matches_nutcracker took {:?}",
        started.elapsed()
    );
}

#[test]
fn ejection_matches_nutcracker_auto_eject_hosts() {
    require_nutcracker();
    let mut mcs: Vec<Memcached> = (0..3)
        .map(|_| Memcached::builder().memory_mb(16).start())
        .collect();
    let pool = Pool {
        name: "eject".to_string(),
        hash: HashFunction::Fnv1a_64,
        distribution: Distribution::Ketama,
        hash_tag: None,
        servers: mcs
            .iter()
            .zip(["n0", "n1", "n2"])
            .map(|(m, n)| Server::new(m.addr(), 1, Some(n)))
            .collect(),
        eject: true,
    };
    let proxy = Nutcracker::start(std::slice::from_ref(&pool));
    let nutcracker = proxy.addr(0);
    let bifrost = Bifrost::start_templated(|listen| pool.bifrost_yaml(listen), &[]);
    let servers = &pool.servers;

    mcs[2].kill();
    // nutcracker notices a dead server only through a request to it: ask keys until one fails.
    let mut n = Client::connect(&nutcracker);
    let mut failed = false;
    for i in 0..200 {
        n.send(format!("get probe:{i}:{}\r\n", i * 7919).as_bytes());
        let line = n.read_line();
        if line.starts_with("SERVER_ERROR") {
            failed = true;
            break;
        }
        if line.starts_with("VALUE") {
            panic!("unexpected hit: {line}");
        }
    }
    assert!(
        failed,
        "no request reached the killed server through nutcracker"
    );
    let mut b = bifrost.client();
    common::wait_until(Duration::from_secs(10), "bifrost ejects the server", || {
        b.stats()
            .get(&format!("server:{}:state", servers[2].address))
            .is_some_and(|s| s == "down")
    });

    let live = &servers[..2];
    let keys: Vec<String> = keys().into_iter().take(1000).collect();
    set_all(&nutcracker, &keys);
    let by_nutcracker = holders(live, &keys);
    flush_all(live);
    set_all(&bifrost.addr(), &keys);
    let by_bifrost = holders(live, &keys);
    assert_eq!(
        by_nutcracker.len(),
        keys.len(),
        "every key stored by nutcracker"
    );
    let differ: Vec<&String> = keys
        .iter()
        .filter(|k| by_nutcracker.get(*k) != by_bifrost.get(*k))
        .collect();
    assert!(
        differ.is_empty(),
        "{} of {} keys placed differently after the ejection, first: {:?}",
        differ.len(),
        keys.len(),
        differ.iter().take(5).collect::<Vec<_>>()
    );
}
