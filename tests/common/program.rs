//! External client programs run to their end (memccapable, libmemcached's tools, python3): their
//! output read on threads, a deadline, and the child killed if a test gives up on it.

use super::wait_until;
use std::io::{ErrorKind, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Deadline of a whole run (memccapable: each of its tests has its own 5 s timeout).
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

/// What a program printed, and how it exited.
pub struct Output {
    /// How it exited.
    pub status: ExitStatus,
    /// What it wrote to stdout.
    pub stdout: String,
    /// What it wrote to stderr.
    pub stderr: String,
}

impl Output {
    /// Everything it printed, and its exit, for a failure message about `what`.
    pub fn describe(&self, what: &str) -> String {
        format!(
            "{what} exited {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--- end ---",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `program args` to its end (60 s deadline); `missing` is the panic message when the
/// program is not installed.
pub fn run(program: &str, args: &[&str], missing: &str) -> Output {
    let spawned = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => Reaped(child),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            panic!("{program} is not installed: {missing}")
        }
        Err(e) => panic!("cannot run {program}: {e}"),
    };
    let stdout = drain(child.0.stdout.take().expect("piped stdout"));
    let stderr = drain(child.0.stderr.take().expect("piped stderr"));
    let mut status = None;
    wait_until(
        RUN_DEADLINE,
        &format!("{program} {args:?} finishes"),
        || {
            status = child.0.try_wait().expect("waiting for the child");
            status.is_some()
        },
    );
    Output {
        status: status.expect("exited"),
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}
