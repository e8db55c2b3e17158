//! End-to-end tests of the `bifrost` command line: `--check` on the shipped and on broken
//! configs, JSON configs, a config with the admin API and warm_first, `--workers`, `--version`,
//! graceful shutdown on SIGTERM/SIGINT, and the embedded default config.

mod common;

use common::{
    free_port, wait_until, Behavior, Bifrost, BlindForward, Client, FakeBackend, Memcached, Run,
    TempFile, EXIT_TIMEOUT,
};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn assert_contains(haystack: &str, needle: &str, what: &str) {
    assert!(
        haystack.contains(needle),
        "{what}: expected to find {needle:?} in:\n{haystack}"
    );
}

/// A round trip through the proxy to the backend: set then get of a key of its own.
#[track_caller]
fn assert_round_trip(c: &mut Client, key: &str) {
    assert_eq!(c.set(key, key.as_bytes(), 0, 0), "STORED", "set {key}");
    assert_eq!(c.get(key).as_deref(), Some(key.as_bytes()), "get {key}");
}

/// A config using the admin API and `warm_first`, once features of later releases, over the
/// memcached servers `l1` and `l2`.
fn admin_and_warm_first_config(port: u16, admin_port: u16, l1: &str, l2: &str) -> String {
    format!(
        "workers: 1\n\
         admin: {{bind: \"127.0.0.1:{admin_port}\"}}\n\
         listeners:\n  - name: main\n    bind: 127.0.0.1:{port}\n\
         backends:\n  l1:\n    servers: [\"{l1}\"]\n  l2:\n    servers: [\"{l2}\"]\n\
         routes:\n  - name: all\n    match: \"*\"\n    strategy: warm_first\n    warm: l1\n    cold: l2\n"
    )
}

// ---------------------------------------------------------------------------------------------
// --check
// ---------------------------------------------------------------------------------------------

#[test]
fn check_accepts_every_shipped_config() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/config");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|entry| entry.ok())
        .map(|entry| format!("config/{}", entry.file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".yaml") || f.ends_with(".json"))
        .collect();
    files.sort();
    for must in [
        "config/blind_forward.yaml",
        "config/failover.yaml",
        "config/reference.yaml",
    ] {
        assert!(
            files.iter().any(|f| f == must),
            "{must} missing from {files:?}"
        );
    }
    for file in &files {
        let file = file.as_str();
        let run = Run::to_exit(&["--check", "--config", file]);
        assert!(
            run.status().success(),
            "bifrost --check --config {file}: {}\nstdout:\n{}\nstderr:\n{}",
            run.status(),
            run.stdout(),
            run.stderr()
        );
    }
    // The twemproxy examples (config/twemproxy/, apart from the Bifröst configs) are checked as
    // what they are: `--twemproxy` files.
    let twemproxy_dir = format!("{dir}/twemproxy");
    let twemproxy: Vec<String> = std::fs::read_dir(&twemproxy_dir)
        .unwrap_or_else(|e| panic!("{twemproxy_dir}: {e}"))
        .filter_map(|entry| entry.ok())
        .map(|entry| format!("config/twemproxy/{}", entry.file_name().to_string_lossy()))
        .filter(|f| f.ends_with(".yml") || f.ends_with(".yaml"))
        .collect();
    assert!(
        twemproxy
            .iter()
            .any(|f| f == "config/twemproxy/nutcracker.yml"),
        "config/twemproxy/nutcracker.yml missing from {twemproxy:?}"
    );
    for file in &twemproxy {
        let run = Run::to_exit(&["--check", "--twemproxy", file]);
        assert!(
            run.status().success(),
            "bifrost --check --twemproxy {file}: {}\nstdout:\n{}\nstderr:\n{}",
            run.status(),
            run.stdout(),
            run.stderr()
        );
    }
    // Whatever --check says about a valid config (features this release lacks, keys a
    // twemproxy file has that Bifröst ignores) it says as warnings.
    for args in [
        ["--check", "--config", "config/reference.yaml"],
        ["--check", "--twemproxy", "config/twemproxy/nutcracker.yml"],
    ] {
        let run = Run::to_exit(&args);
        let stderr = run.stderr();
        assert!(
            stderr.lines().all(|l| l.starts_with("warning: ")),
            "bifrost {args:?}: stderr has more than warnings:\n{stderr}"
        );
    }
}

#[test]
fn check_reports_every_fault_at_once_with_file_and_path() {
    let broken = "workers: 1\n\
                  listeners:\n  - name: main\n    bind: 127.0.0.1:11311\n    colour: blue\n\
                  backends:\n  b1:\n    servers: [\"127.0.0.1:notaport\"]\n    timeout: 5 parsecs\n\
                  routes:\n  - name: all\n    match: \"*\"\n    strategy: blind_forward\n    backend: nosuch\n";
    let out = Bifrost::check(broken);
    assert!(
        !out.status.success(),
        "--check of a broken config exited {}:\n{}",
        out.status,
        out.stderr
    );
    let file = out.config.path().display().to_string();
    for (path, what) in [
        ("listeners[0].colour", "unknown key 'colour'"),
        ("backends.b1.servers[0]", "bad address '127.0.0.1:notaport'"),
        ("backends.b1.timeout", "'5 parsecs'"),
        ("routes[0].backend", "no backend named 'nosuch'"),
    ] {
        assert_contains(
            &out.stderr,
            &format!("{file}: {path}: "),
            &format!("the error at {path}"),
        );
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(&format!("{file}: {path}: ")))
            .unwrap_or_default();
        assert_contains(line, what, &format!("the error at {path}"));
    }

    // Without --check: the same errors, and nothing is served.
    let config = TempFile::new("broken", "yaml", broken.as_bytes());
    let path = config.path().to_str().expect("utf-8 path");
    let run = Run::to_exit(&["--config", path]);
    assert!(
        !run.status().success(),
        "bifrost with a broken config exited 0"
    );
    assert_contains(
        &run.stderr(),
        &format!("{path}: routes[0].backend: "),
        "stderr",
    );
}

#[test]
fn missing_config_file_is_an_error_naming_it() {
    let run = Run::to_exit(&["--check", "--config", "/nonexistent/bifrost.yaml"]);
    assert!(!run.status().success());
    assert_contains(&run.stderr(), "/nonexistent/bifrost.yaml", "stderr");
}

#[test]
fn admin_and_warm_first_pass_check_without_warnings_and_serve() {
    let (l1, l2) = (Memcached::start(), Memcached::start());
    let (port, admin_port) = (free_port(), free_port());
    let yaml = admin_and_warm_first_config(port, admin_port, &l1.addr(), &l2.addr());
    let out = Bifrost::check(&yaml);
    assert!(
        out.status.success(),
        "--check exited {}:\n{}",
        out.status,
        out.stderr
    );
    assert_contains(&out.stdout, "configuration OK", "--check output");
    assert!(
        !out.stderr.contains("warning"),
        "nothing is unsupported any more: {}",
        out.stderr
    );

    let config = TempFile::new("admin", "yaml", yaml.as_bytes());
    let mut run = Run::spawn(&["--config", config.path().to_str().expect("utf-8 path")]);
    let addr = format!("127.0.0.1:{port}");
    run.wait_serving(&addr);
    assert_round_trip(&mut Client::connect(&addr), "admin-cli");
    let health = common::http::request(
        &format!("127.0.0.1:{admin_port}"),
        "GET",
        "/health",
        &[],
        b"",
    );
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    run.signal(libc::SIGTERM);
    assert!(run.wait_exit(EXIT_TIMEOUT).success());
}

// ---------------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------------

#[test]
fn json_config_serves() {
    let mc = Memcached::start();
    let port = free_port();
    let json = format!(
        r#"{{
  "workers": 1,
  "listeners": [ {{ "name": "main", "bind": "127.0.0.1:{port}" }} ],
  "backends": {{ "mc": {{ "servers": ["{}"], "timeout": "500ms" }} }},
  "routes": [ {{ "name": "all", "match": "*", "strategy": "blind_forward", "backend": "mc" }} ]
}}"#,
        mc.addr()
    );
    let config = TempFile::new("config", "json", json.as_bytes());
    let mut run = Run::spawn(&["--config", config.path().to_str().expect("utf-8 path")]);
    let addr = format!("127.0.0.1:{port}");
    run.wait_serving(&addr);
    let mut c = Client::connect(&addr);
    assert_round_trip(&mut c, "json");
    assert_eq!(mc.client().get("json").as_deref(), Some(&b"json"[..]));
    run.signal(libc::SIGTERM);
    assert!(run.wait_exit(EXIT_TIMEOUT).success());
}

#[test]
fn version_flag_and_version_command() {
    let version = env!("CARGO_PKG_VERSION");
    let run = Run::to_exit(&["--version"]);
    assert!(run.status().success());
    assert_eq!(run.stdout().trim(), format!("bifrost {version}"));

    let fake = FakeBackend::start(Behavior::NeverAnswer);
    let b = Bifrost::blind_forward_to(&fake.addr());
    assert_eq!(b.client().version(), format!("VERSION {version}"));
    fake.assert_untouched();
}

#[test]
fn workers_flag_overrides_the_config() {
    let mc = Memcached::start();
    let b = BlindForward::new(&mc.addr())
        .workers(1)
        .arg("--workers")
        .arg("2")
        .start();
    let mut c = b.client();
    assert_eq!(c.stat("threads"), 2);
    assert_round_trip(&mut c, "workers-flag");
}

/// At start-up the open-file limit is raised to its hard limit (a proxy holds a socket per
/// client and per backend connection): started with a soft limit of 256, bifrost runs with
/// soft == hard.
#[test]
fn open_file_limit_is_raised_to_the_hard_limit() {
    let mc = Memcached::start();
    let port = free_port();
    let yaml = BlindForward::new(&mc.addr()).workers(1).yaml(port);
    let config = TempFile::new("rlimit", "yaml", yaml.as_bytes());
    let mut child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -Sn 256 && exec \"$0\" --config \"$1\" --log-level warn")
        .arg(env!("CARGO_BIN_EXE_bifrost"))
        .arg(config.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh");
    wait_until(Duration::from_secs(10), "bifrost listening", || {
        Client::try_connect(&format!("127.0.0.1:{port}")).is_ok()
    });
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id()))
        .expect("/proc/PID/limits is readable");
    let _ = child.kill();
    let _ = child.wait();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let numbers: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert_ne!(numbers[0], "256", "the soft limit was raised: {line}");
    assert_eq!(numbers[0], numbers[1], "soft limit == hard limit: {line}");
}

/// `workers: 2`: connections are spread over both workers, each with its own backend
/// connection, and every one of 20 clients is served.
#[test]
fn two_workers_serve_many_connections() {
    let mc = Memcached::start();
    let b = BlindForward::new(&mc.addr()).workers(2).start();
    let mut clients: Vec<Client> = (0..20).map(|_| b.client()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        assert_round_trip(c, &format!("conn{i}"));
    }
    let mut c = b.client();
    assert_eq!(c.stat("threads"), 2);
    assert_eq!(
        c.stat("backend_connections"),
        2,
        "both workers served clients (each opens its own backend connection)"
    );
}

// ---------------------------------------------------------------------------------------------
// Signals
// ---------------------------------------------------------------------------------------------

/// A request is in flight to a backend that answers after 500 ms when `signal` arrives: the
/// reply still comes, an idle client is closed, and the process exits 0.
fn graceful_exit_on(signal: i32) {
    let fake = FakeBackend::start(Behavior::SlowAnswer(Duration::from_millis(500)));
    let mut b = BlindForward::new(&fake.addr()).timeout("3s").start();
    let mut idle = b.client();
    assert!(idle.version().starts_with("VERSION "));
    let mut busy = b.client();
    let request = b"set k 0 0 1\r\nx\r\n";
    busy.send(request);
    fake.wait_for_bytes(request.len(), Duration::from_secs(5));

    let start = Instant::now();
    b.signal(signal);
    assert_eq!(busy.read_line(), "STORED", "the in-flight request's reply");
    let status = b.wait_exit(Duration::from_secs(5));
    assert!(
        status.success(),
        "exit status {status} after signal {signal}"
    );
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "exited before the in-flight reply could have arrived"
    );
    idle.expect_closed();
    busy.expect_closed();
    assert!(
        Client::try_connect(&b.addr()).is_err(),
        "the listener is closed after the exit"
    );
}

#[test]
fn sigterm_finishes_in_flight_requests_and_exits_0() {
    graceful_exit_on(libc::SIGTERM);
}

#[test]
fn sigint_finishes_in_flight_requests_and_exits_0() {
    graceful_exit_on(libc::SIGINT);
}

// ---------------------------------------------------------------------------------------------
// No --config
// ---------------------------------------------------------------------------------------------

/// Who listens on loopback TCP `port`: "pid N (command line)" for each process holding such
/// a socket that this user can see, from /proc/net/tcp* and /proc/*/fd; for a failure message.
fn holders_of(port: u16) -> String {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    let local_port = fields.get(1)?.rsplit(':').next()?;
                    let listening = fields.get(3) == Some(&"0A");
                    (u16::from_str_radix(local_port, 16).ok() == Some(port) && listening)
                        .then(|| fields.get(9).map(|inode| format!("socket:[{inode}]")))
                        .flatten()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let fds = std::fs::read_dir(entry.path().join("fd"))
            .into_iter()
            .flatten();
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|target| inodes.iter().any(|i| target.as_os_str() == i.as_str()))
        });
        if holds {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push(format!("pid {pid} ({})", cmdline.trim()));
        }
    }
    if found.is_empty() {
        "a process this user cannot see".to_string()
    } else {
        found.join(", ")
    }
}

#[test]
fn no_config_runs_the_embedded_default() {
    const DEFAULT_LISTEN: &str = "127.0.0.1:11311";
    // The embedded default's address is the point of the test, so it cannot pick another one:
    // when the port is taken the test fails, naming who holds it, rather than pass untested.
    // (A plain bind also fails beside a bifrost bound with SO_REUSEPORT, which would otherwise
    // share the port with ours silently.)
    if let Err(e) = TcpListener::bind(DEFAULT_LISTEN) {
        panic!(
            "the embedded default listens on {DEFAULT_LISTEN}, which is taken ({e}) by {}; \
             free the port and run this test again",
            holders_of(11311)
        );
    }
    let mut run = Run::spawn(&[]);
    run.wait_serving(DEFAULT_LISTEN);
    assert_contains(&run.stderr(), "embedded default", "log");
    let mut c = Client::connect(DEFAULT_LISTEN);
    assert_eq!(
        c.version(),
        format!("VERSION {}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        c.stat("pid"),
        u64::from(run.pid()),
        "the process answering on {DEFAULT_LISTEN} is the one this test started"
    );
    run.signal(libc::SIGTERM);
    assert!(run.wait_exit(EXIT_TIMEOUT).success());
}
