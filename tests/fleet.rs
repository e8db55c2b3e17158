//! A fleet in containers, as it runs in production: three memcached containers and two Bifröst
//! containers (the image of deploy/build-image.sh, the same config) on a private network, under
//! a steady load of clients that set and read back their own keys through both proxies. Each
//! test is one thing that happens to such a fleet:
//!
//! - a memcached container is killed: errors stop within 2 s (the health checks eject it), and
//!   once it is back its keys are placed on it again;
//! - a memcached container is cut off the network (`docker network disconnect`): the same, and
//!   no request hangs;
//! - a rolling restart of the proxies (`docker stop`, SIGTERM, then start, one after the
//!   other): no request a proxy accepted is lost or answered wrongly; clients only ever see a
//!   connection closed between two requests, and reconnect.
//!
//! The clients run in a container of their own on the fleet's network: the project's load tool
//! (benches/fleet_client.rs, static, built by deploy/build-fleet-client-image.sh), which reports
//! each error with its time on the host's clock. Docker must be running: without it these tests
//! fail, saying so. The
//! fleets of these tests are not run side by side (they share the machine's two cores with the
//! clients, and the timings are the point).

mod common;

use common::docker::{
    docker, docker_ok, drain_time, fleet_client_image, image, memcached_container, now_ms,
    run_named, Named, Network,
};
use common::{wait_until, Client};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

/// One fleet at a time.
static FLEET: Mutex<()> = Mutex::new(());

/// Three memcached and two proxies on a network of their own.
struct Fleet {
    // Dropped in this order: the containers, then their network (which cannot go before them).
    proxies: Vec<Named>,
    memcached: Vec<Named>,
    net: Network,
}

impl Fleet {
    fn start() -> Fleet {
        let net = Network::create();
        let memcached: Vec<Named> = (0..3)
            .map(|i| {
                let name = format!("{}-mc{i}", net.name);
                memcached_container(&net, &name, &format!("{}.{}", net.prefix, 10 + i))
            })
            .collect();
        let servers: Vec<String> = memcached
            .iter()
            .map(|m| format!("\"{}:11211\"", m.0))
            .collect();
        let config = format!(
            "workers: 2\n\
             listeners:\n  - {{ name: main, bind: \"0.0.0.0:11311\" }}\n\
             backends:\n  cache:\n    servers: [{}]\n    distribution: ketama\n    hash: md5\n\
             \x20   timeout: 300ms\n    connect_timeout: 300ms\n    resolve_interval: 1s\n\
             \x20   health: {{ interval: 200ms, timeout: 200ms, failure_limit: 2, \
             retry_after: 500ms, eject: true }}\n\
             routes:\n  - {{ name: all, match: \"*\", strategy: consistent_hash, backend: cache }}\n",
            servers.join(", ")
        );
        let dir = std::env::temp_dir().join(format!("{}-config", net.name));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let file = dir.join("bifrost.yaml");
        std::fs::write(&file, config).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mount = format!("{}:/etc/bifrost/bifrost.yaml:ro", file.display());
        let proxies: Vec<Named> = (0..2)
            .map(|i| {
                let name = format!("{}-bifrost{i}", net.name);
                let ip = format!("{}.{}", net.prefix, 2 + i);
                run_named(&net, &name, Some(&ip), &["-v", &mount], image(), &[])
            })
            .collect();
        let fleet = Fleet {
            net,
            memcached,
            proxies,
        };
        for i in 0..2 {
            fleet.wait_proxy(i);
        }
        fleet
    }

    fn proxy_addr(&self, i: usize) -> String {
        format!("{}.{}:11311", self.net.prefix, 2 + i)
    }

    fn memcached_addr(&self, i: usize) -> String {
        format!("{}.{}:11211", self.net.prefix, 10 + i)
    }

    fn wait_proxy(&self, i: usize) {
        let addr = self.proxy_addr(i);
        wait_until(
            Duration::from_secs(15),
            "a proxy of the fleet to serve",
            || Client::answers_get(&addr),
        );
    }

    fn logs(&self, name: &str) -> String {
        let out = docker(&["logs", name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// What the load tool's clients saw (its output, parsed).
#[derive(Default, Debug)]
struct Seen {
    ok: u64,
    /// `SERVER_ERROR` replies (and values stored then missing), in ms since the Unix epoch.
    errors: Vec<u128>,
    clean_closes: u64,
    broken: Vec<String>,
    slowest: Duration,
}

/// Runs the load tool (benches/fleet_client.rs) in a container of its own on the fleet's
/// network for `seconds`, with 8 clients over both proxies, and `during` meanwhile (given the
/// moment the clients started, in ms since the Unix epoch); what the clients saw.
fn under_load(fleet: &Fleet, seconds: u64, during: impl FnOnce(u128)) -> Seen {
    let name = format!("{}-clients", fleet.net.name);
    let (a, b) = (fleet.proxy_addr(0), fleet.proxy_addr(1));
    let seconds_arg = seconds.to_string();
    let args = [
        "--proxy",
        &a,
        "--proxy",
        &b,
        "--clients",
        "8",
        "--seconds",
        &seconds_arg,
    ];
    let clients = run_named(&fleet.net, &name, None, &[], fleet_client_image(), &args);
    let mut started = None;
    wait_until(Duration::from_secs(10), "the load tool to start", || {
        started = fleet
            .logs(&name)
            .lines()
            .find_map(|l| l.strip_prefix("started ")?.trim().parse::<u128>().ok());
        started.is_some()
    });
    during(started.unwrap_or_else(now_ms));
    let code = docker_ok(&["wait", &name]);
    let out = fleet.logs(&name);
    drop(clients);
    assert_eq!(code, "0", "the load tool failed:\n{out}");
    let mut seen = Seen::default();
    let mut summary = false;
    for line in out.lines() {
        if let Some(at) = line.strip_prefix("error ") {
            seen.errors.extend(at.trim().parse::<u128>().ok());
        } else if let Some(what) = line.strip_prefix("broken ") {
            seen.broken.push(what.to_string());
        } else if let Some(fields) = line.strip_prefix("summary ") {
            summary = true;
            for field in fields.split(' ') {
                let (k, v) = field.split_once('=').unwrap_or((field, ""));
                let v: u64 = v.parse().unwrap_or(0);
                match k {
                    "ok" => seen.ok = v,
                    "clean_closes" => seen.clean_closes = v,
                    "slowest_ms" => seen.slowest = Duration::from_millis(v),
                    _ => {}
                }
            }
        }
    }
    assert!(summary, "the load tool printed no summary:\n{out}");
    seen
}

/// How many of `keys` this fleet's memcached `i` holds, asked of the server directly.
fn held_by(fleet: &Fleet, i: usize, keys: &[String]) -> usize {
    let Ok(mut direct) = Client::try_connect(&fleet.memcached_addr(i)) else {
        return 0;
    };
    let names: Vec<&str> = keys.iter().map(String::as_str).collect();
    direct.get_multi(&names).len()
}

/// Sets `keys` through proxy 0 (a refused one is left for the caller's next round).
fn set_all(fleet: &Fleet, keys: &[String]) {
    let Ok(mut conn) = Client::try_connect(&fleet.proxy_addr(0)) else {
        return;
    };
    for key in keys {
        conn.send(format!("set {key} 0 0 1\r\nx\r\n").as_bytes());
        let _ = conn.read_line();
    }
}

/// A memcached lost by a docker command run from `issued` to `done` (ms since the Unix epoch;
/// `what` it did): the errors clients saw must stop within 2 s of the loss. The loss takes
/// effect somewhere inside the command (which can take seconds on a busy machine), so it is
/// timed by the first error after the command was issued (or the command's end, when no
/// request failed). Returns how long the errors went on.
fn errors_stop(seen: &Seen, (issued, done): (u128, u128), what: &str) -> Duration {
    let errors: Vec<u128> = seen
        .errors
        .iter()
        .copied()
        .filter(|e| *e >= issued)
        .collect();
    let lost = errors.first().copied().unwrap_or(done).min(done);
    let after: Vec<u128> = errors.iter().map(|e| e.saturating_sub(lost)).collect();
    let lasted = Duration::from_millis(after.iter().max().copied().unwrap_or(0) as u64);
    assert!(
        lasted < Duration::from_secs(2),
        "{what}: errors went on for {lasted:?} after the loss: {} errors, at {after:?} ms (the \
         command took {} ms)",
        after.len(),
        done - issued
    );
    lasted
}

#[test]
fn a_killed_memcached_is_ejected_within_2_s_and_its_keys_return_when_it_is_back() {
    let _one = FLEET.lock().unwrap_or_else(|p| p.into_inner());
    let fleet = Fleet::start();
    let mut killed_at = (0, 0);
    let seen = under_load(&fleet, 6, |_| {
        thread::sleep(Duration::from_secs(1));
        let issued = now_ms();
        docker_ok(&["kill", &fleet.memcached[1].0]);
        killed_at = (issued, now_ms());
        thread::sleep(Duration::from_secs(4));
    });
    assert!(
        seen.broken.is_empty(),
        "{:?}",
        &seen.broken[..seen.broken.len().min(5)]
    );
    let lasted = errors_stop(&seen, killed_at, "memcached killed");
    // Back (the same container, its address kept, its items gone): placed on again.
    docker_ok(&["start", &fleet.memcached[1].0]);
    let keys: Vec<String> = (0..300).map(|i| format!("fleet:return:{i}")).collect();
    wait_until(
        Duration::from_secs(10),
        "keys placed on the server that came back",
        || {
            set_all(&fleet, &keys);
            held_by(&fleet, 1, &keys) > 50
        },
    );
    println!(
        "killed memcached: {} requests served, {} errors, the last {lasted:?} after the first; \
         slowest request {:?}",
        seen.ok,
        seen.errors.len(),
        seen.slowest
    );
}

#[test]
fn a_memcached_cut_off_the_network_is_ejected_within_2_s_and_nothing_hangs() {
    let _one = FLEET.lock().unwrap_or_else(|p| p.into_inner());
    let fleet = Fleet::start();
    let mut cut_at = (0, 0);
    let seen = under_load(&fleet, 7, |_| {
        thread::sleep(Duration::from_secs(1));
        let issued = now_ms();
        docker_ok(&[
            "network",
            "disconnect",
            "-f",
            &fleet.net.name,
            &fleet.memcached[2].0,
        ]);
        cut_at = (issued, now_ms());
        thread::sleep(Duration::from_secs(4));
    });
    assert!(
        seen.broken.is_empty(),
        "{:?}",
        &seen.broken[..seen.broken.len().min(5)]
    );
    let lasted = errors_stop(&seen, cut_at, "memcached cut off");
    assert!(
        seen.slowest < Duration::from_millis(1500),
        "a request took {:?}: something waited on the lost server",
        seen.slowest
    );
    let ip = format!("{}.12", fleet.net.prefix);
    docker_ok(&[
        "network",
        "connect",
        "--ip",
        &ip,
        &fleet.net.name,
        &fleet.memcached[2].0,
    ]);
    let keys: Vec<String> = (0..300).map(|i| format!("fleet:heal:{i}")).collect();
    wait_until(
        Duration::from_secs(10),
        "keys placed on the server that came back",
        || {
            set_all(&fleet, &keys);
            held_by(&fleet, 2, &keys) > 50
        },
    );
    println!(
        "partitioned memcached: {} requests served, {} errors, the last {lasted:?} after the \
         first; slowest request {:?}",
        seen.ok,
        seen.errors.len(),
        seen.slowest
    );
}

#[test]
fn a_rolling_restart_of_the_proxies_loses_no_accepted_request() {
    let _one = FLEET.lock().unwrap_or_else(|p| p.into_inner());
    let fleet = Fleet::start();
    let mut drains: Vec<Duration> = Vec::new();
    let seen = under_load(&fleet, 15, |_| {
        thread::sleep(Duration::from_millis(500));
        for i in 0..2 {
            let name = &fleet.proxies[i].0;
            // Exit code 0: it left on SIGTERM, before docker's 10 s ran out and killed it.
            docker_ok(&["stop", "-t", "10", name]);
            let code = docker_ok(&["inspect", "--format", "{{.State.ExitCode}}", name]);
            assert_eq!(code, "0", "{name} exited {code}:\n{}", fleet.logs(name));
            let drain = drain_time(&fleet.logs(name));
            assert!(
                drain.is_some_and(|d| d <= Duration::from_millis(5500)),
                "{name}: SIGTERM to exit {drain:?}, over the 5 s drain:\n{}",
                fleet.logs(name)
            );
            drains.extend(drain);
            docker_ok(&["start", name]);
            fleet.wait_proxy(i);
            thread::sleep(Duration::from_millis(500));
        }
    });
    assert!(
        seen.broken.is_empty(),
        "{} broken: {:?}",
        seen.broken.len(),
        &seen.broken[..seen.broken.len().min(5)]
    );
    assert!(
        seen.errors.is_empty(),
        "{} error replies",
        seen.errors.len()
    );
    assert!(
        seen.clean_closes > 0,
        "no client was ever moved by the restarts"
    );
    assert!(seen.ok > 100, "{} requests served", seen.ok);
    println!(
        "rolling restart: {} set+get served, {} connections closed between requests (the \
         client went on through the other proxy), 0 lost, 0 wrong; drains {drains:?}",
        seen.ok, seen.clean_closes
    );
}
