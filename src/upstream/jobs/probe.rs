//! The health probe of one server: `version`, on the server's probe connection, every
//! `interval` while it is up and every `retry_after` while it is down. The probe connection's
//! deadline is the probe `timeout`; a probe that fails (timeout, refused connect, a reply that
//! is not `VERSION ...`) is one failure event of the server, a probe that answers ends a run of
//! failures and brings a down server back ([`HealthBoard::probe_result`]).

use std::time::{Duration, Instant};

use bytes::Bytes;

use super::JobStep;
use crate::observe::health::HealthBoard;
use crate::protocol::ReplyKind;
use crate::upstream::{Completion, Failure};
use crate::upstream::{Framing, Send};

const PROBE: &[u8] = b"version\r\n";

/// One server's probe.
#[derive(Debug)]
pub struct Probe {
    server: usize,
    interval: Duration,
    retry_after: Duration,
    /// A probe is out and not yet answered (there is never more than one).
    in_flight: bool,
    /// Number of the probe out, so a reply to an earlier one is recognised.
    sent: u32,
}

impl Probe {
    /// The probe of `server`, every `interval` while it is up, `retry_after` while down.
    pub fn new(server: usize, interval: Duration, retry_after: Duration) -> Probe {
        Probe {
            server,
            interval,
            retry_after,
            in_flight: false,
            sent: 0,
        }
    }

    /// Time to probe: sends `version` (unless a probe is still out; its deadline answers it).
    pub fn on_timer(&mut self, _now: Instant, sends: &mut Vec<Send>) -> JobStep {
        if self.in_flight {
            return JobStep::Wait;
        }
        self.in_flight = true;
        self.sent = self.sent.wrapping_add(1);
        sends.push(Send {
            server: self.server,
            part: self.sent,
            bytes: Bytes::from_static(PROBE),
            value: None,
            framing: Framing {
                kind: ReplyKind::Line,
                on_failure: Failure::Error,
                discard_reply: false,
                noop_tail: false,
            },
            stream: false,
        });
        JobStep::Wait
    }

    /// The probe's answer: records it and sleeps until the next probe.
    pub fn on_completion(
        &mut self,
        part: u32,
        c: &Completion,
        health: &HealthBoard,
        now: Instant,
    ) -> JobStep {
        if !c.end || part != self.sent || !self.in_flight {
            return JobStep::Wait;
        }
        self.in_flight = false;
        let what = match c.failed {
            Some(reason) => reason.as_str(),
            None if c.reply.starts_with(b"VERSION ") => "",
            None => "probe answered something other than VERSION",
        };
        health.probe_result(self.server, what.is_empty(), what);
        let next = if health.is_down(self.server) {
            self.retry_after
        } else {
            self.interval
        };
        JobStep::SleepUntil(now + next)
    }
}
