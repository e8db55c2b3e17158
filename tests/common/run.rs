//! [`Run`]: a `bifrost` process started with arbitrary arguments (`--check`, `--twemproxy`,
//! `--print-config`, signals), its output in files.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::{wait_until, Client, TempFile, EXIT_TIMEOUT};

const BIN: &str = env!("CARGO_BIN_EXE_bifrost");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// A `bifrost` process started with arbitrary arguments, its stdout and stderr in files.
/// SIGKILLed on drop; a failing test prints its output.
pub struct Run {
    child: Child,
    stdout: TempFile,
    stderr: TempFile,
    status: Option<ExitStatus>,
}

impl Run {
    /// Starts `bifrost ARGS` in the crate's directory (so `config/...` paths work).
    pub fn spawn(args: &[&str]) -> Run {
        let stdout = TempFile::new("cli-stdout", "log", b"");
        let stderr = TempFile::new("cli-stderr", "log", b"");
        let open = |f: &TempFile| std::fs::File::create(f.path()).expect("log file");
        let child = Command::new(BIN)
            .args(args)
            .current_dir(MANIFEST_DIR)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(open(&stdout))
            .stderr(open(&stderr))
            .spawn()
            .expect("spawn bifrost");
        Run {
            child,
            stdout,
            stderr,
            status: None,
        }
    }

    /// Runs `bifrost ARGS` to completion (10 s deadline).
    pub fn to_exit(args: &[&str]) -> Run {
        let mut run = Run::spawn(args);
        run.wait_exit(EXIT_TIMEOUT);
        run
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("try_wait");
        }
        self.status
    }

    /// Waits for the exit; panics after `deadline`.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            assert!(
                start.elapsed() < deadline,
                "bifrost did not exit within {deadline:?}"
            );
            thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn status(&self) -> ExitStatus {
        self.status.expect("the process has exited")
    }

    pub fn stdout(&self) -> String {
        self.stdout.read()
    }

    pub fn stderr(&self) -> String {
        self.stderr.read()
    }

    /// The exit status and both outputs, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "{:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout(),
            self.stderr()
        )
    }

    /// Waits until `addr` answers `version` (the process must keep running meanwhile).
    pub fn wait_serving(&mut self, addr: &str) {
        wait_until(Duration::from_secs(10), "bifrost serves", || {
            if let Some(status) = self.exited() {
                panic!("bifrost exited ({status}) before serving");
            }
            Client::try_connect(addr).is_ok_and(|mut c| c.version().starts_with("VERSION "))
        });
    }

    pub fn signal(&mut self, signal: i32) {
        assert!(self.exited().is_none(), "bifrost already exited");
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!(
                "--- bifrost stdout ---\n{}\n--- bifrost stderr ---\n{}\n--- end ---",
                self.stdout(),
                self.stderr()
            );
        }
    }
}
