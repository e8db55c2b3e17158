//! Graceful shutdown on SIGINT/SIGTERM.
//!
//! The signals are blocked in every thread before the workers start, and one small thread waits
//! for them with `sigwait`; it then raises the shared flag and wakes every worker's poll. That
//! keeps signal handling out of the workers entirely (no async-signal-safety concerns).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The process-wide "stop now" flag and the wakers of the polls that must notice it.
#[derive(Default)]
pub struct Shutdown {
    requested: AtomicBool,
    wakers: Mutex<Vec<Arc<mio::Waker>>>,
}

impl Shutdown {
    /// A flag that is not raised.
    pub fn new() -> Arc<Self> {
        Arc::new(Shutdown::default())
    }

    /// True once shutdown has been requested.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Registers a poll to wake when shutdown is requested.
    pub fn add_waker(&self, waker: Arc<mio::Waker>) {
        if let Ok(mut wakers) = self.wakers.lock() {
            wakers.push(waker);
        }
    }

    /// Raises the flag and wakes every registered poll.
    pub fn request(&self) {
        self.requested.store(true, Ordering::Release);
        if let Ok(wakers) = self.wakers.lock() {
            for waker in wakers.iter() {
                if let Err(e) = waker.wake() {
                    log::warn!("could not wake a worker for shutdown: {e}");
                }
            }
        }
    }
}

fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a local set; no aliasing.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread (and so in every thread it spawns later).
pub fn block_termination_signals() {
    let set = termination_signals();
    // SAFETY: pthread_sigmask with a valid set and a null old-set pointer.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        log::warn!("could not block termination signals (error {rc})");
    }
    // Writing to a client that went away must fail with EPIPE, not kill the process.
    // SAFETY: setting the disposition of SIGPIPE to ignore is always valid.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Starts the thread that turns SIGINT/SIGTERM into [`Shutdown::request`].
pub fn spawn_signal_thread(shutdown: Arc<Shutdown>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("bifrost-signals".into())
        .spawn(move || {
            let set = termination_signals();
            let mut signal: libc::c_int = 0;
            // SAFETY: sigwait on a valid, initialised set with a valid out pointer.
            let rc = unsafe { libc::sigwait(&set, &mut signal) };
            if rc == 0 {
                log::info!("signal {signal} received: shutting down");
            }
            shutdown.request();
        })
        .map(|_| ())
}
