//! File descriptors, through the real binary started under a low RLIMIT_NOFILE: a flood of
//! idle clients is refused before it eats the descriptors backend connections need (so an
//! admitted client's request still reaches memcached, never a silent miss), the refusals are
//! counted, and start-up says what the limit allows.

mod common;

use common::http::HttpClient;
use common::{limit_open_files, show, wait_until, BlindForward, Memcached, TempFile};
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOO_MANY: &[u8] = b"ERROR Too many open connections\r\n";

/// What became of a new connection.
enum Fate {
    /// It answered `version`: the proxy holds it open.
    Admitted(BufReader<TcpStream>),
    /// It got memcached's refusal, or was closed.
    Refused,
}

/// Connects to `addr` and asks `version`: admitted clients answer it, refused ones get
/// `ERROR Too many open connections` and a close (or a reset: the proxy may close before our
/// request is read). Anything else fails the test, a timeout included: a proxy that accepts
/// nothing because accept(2) fails with EMFILE leaves the connection in the backlog.
fn connect(addr: &str) -> Fate {
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set_read_timeout");
    if stream.write_all(b"version\r\n").is_err() {
        return Fate::Refused;
    }
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    match reader.read_until(b'\n', &mut line) {
        Ok(_) if line.starts_with(b"VERSION ") => Fate::Admitted(reader),
        Ok(_) if line == TOO_MANY || line.is_empty() => Fate::Refused,
        Ok(_) => panic!("a new client got {}", show(&line)),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => Fate::Refused,
        Err(e) => panic!(
            "a new client was neither answered nor refused ({e}): the proxy stopped accepting"
        ),
    }
}

/// The number in "room for N clients" of the start-up log.
fn room_in_log(log: &str) -> usize {
    let after = log
        .split("room for ")
        .nth(1)
        .unwrap_or_else(|| panic!("no 'room for N clients' in the log:\n{log}"));
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|e| panic!("'room for {digits}': {e}"))
}

/// Opens clients until one is refused (at most `most`); returns those admitted.
fn flood(addr: &str, most: usize) -> Vec<BufReader<TcpStream>> {
    let mut admitted = Vec::new();
    for _ in 0..most {
        match connect(addr) {
            Fate::Admitted(c) => admitted.push(c),
            Fate::Refused => return admitted,
        }
    }
    panic!("{most} clients were admitted under a limit of fewer descriptors: none refused");
}

#[test]
fn a_flood_of_idle_clients_is_refused_before_backend_connects_run_out() {
    flood_is_refused_before_backend_connects_run_out(1);
}

/// Two workers share one room: the kernel spreads the flood over both (SO_REUSEPORT), and
/// the room the log announces holds for the process, not per worker.
#[test]
fn two_workers_share_the_room_for_clients() {
    flood_is_refused_before_backend_connects_run_out(2);
}

fn flood_is_refused_before_backend_connects_run_out(workers: usize) {
    const LIMIT: u64 = 64;
    let mc = Memcached::start();
    assert_eq!(
        mc.client().set("fd:direct", b"from-memcached", 0, 0),
        "STORED"
    );
    // The default max_connections (far above 64) leaves the limit to the descriptor reserve;
    // the admin API's connections are part of that reserve.
    let admin = format!("127.0.0.1:{}", common::free_port());
    let b = BlindForward::new(&mc.addr())
        .workers(workers)
        .top_level(&format!("admin: {{bind: '{admin}', max_connections: 2}}"))
        .fd_limit(LIMIT, LIMIT)
        .start();
    let log = b.stderr_log();
    let room = room_in_log(&log);
    assert!(
        (1..LIMIT as usize).contains(&room),
        "room for {room} clients under a limit of {LIMIT}"
    );
    assert!(
        log.contains("max_connections add up to"),
        "no start-up warning that max_connections exceeds the limit:\n{log}"
    );

    // This client has sent nothing to the backend yet: its connection is made only after the
    // flood, when (without the reserve) no descriptor would be left for it.
    let mut first = b.client();
    wait_until(Duration::from_secs(10), "only our client is open", || {
        first.stat("curr_connections") == 1
    });
    let mut admitted = flood(&b.addr(), 2 * LIMIT as usize);
    assert_eq!(
        admitted.len() + 1,
        room,
        "clients admitted (ours and the flood's) against the room the log announced"
    );
    assert_eq!(first.stat("rejected_connections_fd"), 1);
    assert_eq!(first.stat("rejected_connections"), 1);
    let metrics = HttpClient::connect(&admin).get("/metrics").text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "bifrost_client_connections_rejected_fd_total 1"),
        "the refusal in /metrics:\n{metrics}"
    );

    // The backend connection is made now, and works: a real value, not a silent miss.
    assert_eq!(
        first.get("fd:direct").as_deref(),
        Some(&b"from-memcached"[..]),
        "an admitted client's get after the flood"
    );
    assert_eq!(first.set("fd:proxied", b"through", 0, 0), "STORED");
    assert_eq!(
        mc.client().get("fd:proxied").as_deref(),
        Some(&b"through"[..])
    );
    assert_eq!(first.stat("backend_errors"), 0);
    assert_eq!(first.stat("backend_connect_failures"), 0);

    // Still full: the next is refused too; one admitted client leaves and its room is reused.
    assert!(matches!(connect(&b.addr()), Fate::Refused));
    assert_eq!(first.stat("rejected_connections_fd"), 2);
    drop(admitted.pop());
    wait_until(
        Duration::from_secs(10),
        "a client is admitted again",
        || match connect(&b.addr()) {
            Fate::Admitted(c) => {
                admitted.push(c);
                true
            }
            Fate::Refused => false,
        },
    );
    assert_eq!(first.stat("curr_connections") as usize, room);
}

#[test]
fn max_connections_within_the_limit_refuses_at_the_listener_cap_without_a_warning() {
    let mc = Memcached::start();
    // soft 64, hard 128: the proxy raises the soft limit to the hard one, and says so.
    let b = BlindForward::new(&mc.addr())
        .listener_option("max_connections: 5")
        .fd_limit(64, 128)
        .start();
    let log = b.stderr_log();
    assert!(
        log.contains("open file limit: raised from 64 to 128"),
        "no log of the raised limit:\n{log}"
    );
    let room = room_in_log(&log);
    assert!(
        room > 64,
        "room for {room} clients under a raised limit of 128"
    );
    // The start-up lines are all written once the listener answers (the warning comes before
    // the workers start), and the test above shows the warning does appear when due.
    assert!(
        !log.contains("max_connections add up to"),
        "a warning for max_connections 5 under a limit of 128:\n{log}"
    );
    let mut first = b.client();
    wait_until(Duration::from_secs(10), "only our client is open", || {
        first.stat("curr_connections") == 1
    });
    let admitted = flood(&b.addr(), 10);
    assert_eq!(admitted.len() + 1, 5, "the listener's cap, not the fd room");
    assert_eq!(first.stat("rejected_connections"), 1);
    assert_eq!(first.stat("rejected_connections_fd"), 0);
}

#[test]
fn a_limit_that_leaves_no_room_for_clients_fails_start_up_with_a_clear_message() {
    let mc = Memcached::start();
    let port = common::free_port();
    // 64 backend connections per worker, 2 workers: the reserve alone passes 64 descriptors.
    let yaml = BlindForward::new(&mc.addr())
        .workers(2)
        .backend_option("connections: 64")
        .yaml(port);
    let config = TempFile::new("fds", "yaml", yaml.as_bytes());
    let stderr = TempFile::new("fds", "stderr", b"");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bifrost"));
    cmd.arg("--config")
        .arg(config.path())
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(stderr.path()).expect("stderr file"));
    limit_open_files(&mut cmd, 64, 64);
    let mut child = cmd.spawn().expect("spawn bifrost");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bifrost kept running under a limit with no room for clients");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let text = stderr.read();
    assert_eq!(status.code(), Some(1), "exit status; stderr:\n{text}");
    assert!(
        text.contains("the open file limit (64) leaves no descriptor for clients"),
        "stderr:\n{text}"
    );
}
