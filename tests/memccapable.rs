//! libmemcached's protocol conformance suite (`memccapable -a`, its 27 ASCII tests) against
//! bifrost in front of one real memcached.

mod common;

use common::{wait_until, Bifrost, Memcached};
use std::io::{ErrorKind, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// How many ASCII tests `memccapable -a` runs.
const ASCII_TESTS: usize = 27;
/// Deadline for the whole run (each test has its own 5 s timeout, `-t 5`).
const RUN_DEADLINE: Duration = Duration::from_secs(60);

/// A child process killed and reaped on drop, so a timed-out run leaves nothing behind.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads a child's pipe to the end on a thread (so a full pipe can never block the child).
fn drain(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut out = Vec::new();
        let _ = pipe.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// What a run printed. memccapable writes each test's name, `[pass]` and (with `-v`) the failed
/// assertions to stdout, buffered when it is a pipe, but `[FAIL]` to stderr unbuffered; merged,
/// they would come out of order, so they are kept apart and the results read from stdout.
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Every `ascii <name>` test on stdout, with whether it printed `[pass]`.
    fn results(&self) -> Vec<(String, bool)> {
        self.stdout
            .split("ascii ")
            .skip(1)
            .map(|segment| {
                let name = segment.split(['[', '\n']).next().unwrap_or("").trim();
                (format!("ascii {name}"), segment.contains("[pass]"))
            })
            .collect()
    }

    fn report(&self, port: u16) -> String {
        format!(
            "memccapable -a -v -t 5 -h 127.0.0.1 -p {port} exited {}\n\
             --- stdout ---\n{}\n--- stderr (failed assertions) ---\n{}\n--- end ---",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `memccapable -a -v -t 5 -h 127.0.0.1 -p PORT` to the end (60 s deadline).
fn run_memccapable(port: u16) -> Run {
    let spawned = Command::new("memccapable")
        .args([
            "-a",
            "-v",
            "-t",
            "5",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => Reaped(child),
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "memccapable is not installed: install libmemcached-tools \
             (`apt-get install libmemcached-tools`; CI installs it)"
        ),
        Err(e) => panic!("cannot run memccapable: {e}"),
    };
    let stdout = drain(child.0.stdout.take().expect("piped stdout"));
    let stderr = drain(child.0.stderr.take().expect("piped stderr"));
    let mut status = None;
    wait_until(RUN_DEADLINE, "memccapable finishes", || {
        status = child.0.try_wait().expect("waiting for memccapable");
        status.is_some()
    });
    Run {
        status: status.expect("exited"),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

#[test]
fn memccapable_ascii_suite_passes_through_bifrost() {
    let mc = Memcached::start();
    let bifrost = Bifrost::blind_forward(&mc);
    let run = run_memccapable(bifrost.port());
    let report = run.report(bifrost.port());
    let results = run.results();
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, passed)| !passed)
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} ascii tests did not pass: {failed:?}\n{report}",
        failed.len(),
        results.len()
    );
    assert_eq!(
        results.len(),
        ASCII_TESTS,
        "expected {ASCII_TESTS} ascii tests to run\n{report}"
    );
    let output = format!("{}{}", run.stdout, run.stderr);
    assert!(
        output.contains("All tests passed"),
        "no `All tests passed` line\n{report}"
    );
    assert!(run.status.success(), "{report}");
}
