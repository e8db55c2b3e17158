//! A plain read of one key on a warm_first route with `leases`: warm is read under memcached's
//! leases, so that one reader per key fetches from cold, its write-back cannot land after a
//! newer write or a delete, and a hot key is refreshed before it expires.
//!
//! Warm is asked `mg <key> v f c N<lease_ttl> [R<refresh_below>]` (a client's own `mg` keeps its
//! flags and gets these added; they are taken out of what it is answered). memcached answers:
//! * a value with no `W`/`Z`: a hit, served;
//! * `W` on an empty value (a miss: memcached made a placeholder and gave us its lease) or on
//!   a stale one (`X`): cold is read, the client answered from it, and the value written back
//!   with `ms ... C<cas>` (the placeholder's cas): if a delete or a write reached warm in
//!   between, the cas differs and memcached refuses it, so an older value never lands. A cold
//!   miss drops the placeholder (`md ... C<cas>`); a cold failure leaves it to expire;
//! * `W` on a value (it expires within `R` seconds, and this reader is the first to see it so):
//!   the value is served at once, and cold is read again in the background and written back the
//!   same way (an early refresh);
//! * `Z` on an empty or stale value (another reader holds the lease): warm is read again after a
//!   back-off that doubles from [`FIRST_BACKOFF`] to [`MAX_BACKOFF`], until the value is there
//!   or `wait` has passed; then cold is read, with no write-back (this reader holds no lease);
//! * `Z` on a value (another reader is refreshing it early): the value is served;
//! * a failure, or `EN` (memcached made no placeholder): cold is read, with no write-back.
//!
//! A placeholder is so never served: the value a client gets is always one a server held as a
//! value. (A real empty value that is refreshed early looks like a placeholder to the readers
//! behind the refresh: they wait for it, or read cold.)
//!
//! Ordering: until it has sent its cold read (or is answered), the read holds its client's
//! later writes: a write sent at once could reach cold before this read asks it.

use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use memchr::memchr;

use super::failover::write_back_send;
use super::write_back::{self, put_decimal, MetaFlags};
use super::{Effects, Framing, Send, WriteBack};
use crate::protocol::decimal::{is_digits, parse_usize};
use crate::protocol::meta_flags::Words;
use crate::protocol::{Command, Request};
use crate::upstream::{Completion, Failure};

/// First pause before a reader that found another's lease reads warm again.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(4);
/// Longest pause between two such reads.
pub const MAX_BACKOFF: Duration = Duration::from_millis(64);

/// A warm_first route's lease settings, as its reads use them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRules {
    /// Lifetime of a placeholder, in seconds (`N`).
    pub lease_ttl: u32,
    /// How long a reader behind another's lease waits before reading cold itself.
    pub wait: Duration,
    /// Remaining TTL, in seconds, under which one reader refreshes a hit (`R`); 0: never.
    pub refresh_below: u32,
    /// Where write-backs are queued, and their TTL.
    pub write_back: WriteBack,
}

/// What reads under leases did during one event, for the process counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaseCounts {
    /// Reads that got the lease on a miss (or a stale value) and read cold.
    pub wins: u32,
    /// Reads that found another reader's lease and began to wait.
    pub waits: u32,
    /// Waiting reads that gave up and read cold.
    pub wait_timeouts: u32,
    /// Early refreshes started.
    pub refreshes: u32,
}

impl LeaseCounts {
    /// Adds `other`'s counts.
    pub fn add(&mut self, other: LeaseCounts) {
        self.wins += other.wins;
        self.waits += other.waits;
        self.wait_timeouts += other.wait_timeouts;
        self.refreshes += other.refreshes;
    }
}

/// Where the read is.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Warm was asked.
    Warm,
    /// Another reader holds the lease: warm is asked again when the timer fires.
    Waiting,
    /// Cold was asked; with the lease's cas when this reader holds it.
    Cold(Option<Bytes>),
    /// The client is answered; cold was asked for an early refresh under this cas.
    Refresh(Bytes),
    /// Nothing more to do.
    Over,
}

/// What warm said: where its parts lie in the reply (sliced only when they are used).
#[derive(Clone, Debug, Default)]
struct WarmReply {
    /// The cas token (digits).
    cas: Option<Range<usize>>,
    /// The client flags (digits).
    flags: Option<Range<usize>>,
    /// The data block with its `\r\n`.
    data: Range<usize>,
    win: bool,
    wait: bool,
    stale: bool,
}

impl WarmReply {
    /// The value is empty (a placeholder, or a real empty value).
    fn empty(&self) -> bool {
        self.data.len() <= 2
    }
}

/// A plain read of one key under leases.
#[derive(Debug)]
pub struct Lease {
    request: Request,
    bytes: Bytes,
    warm: usize,
    cold: usize,
    rules: LeaseRules,
    /// The client sent `mg` (else a classic `get` of one key).
    meta: bool,
    /// The client's `mg` is quiet (`q`): a miss answers nothing.
    quiet: bool,
    /// A classic answer ends with `END` (not for a key of a multi-get: its batch ends it).
    end: bool,
    /// The line warm is asked.
    warm_line: Bytes,
    /// Flags (and lease markers) the warm line carries that the client did not ask.
    warm_added: MetaFlags,
    state: State,
    /// The part number of the request awaited.
    part: u32,
    /// When a reader behind another's lease stops waiting.
    deadline: Option<Instant>,
    backoff: Duration,
    holding: bool,
    answered: bool,
}

/// Values up to this size are copied into the client's answer with their header.
const INLINE_VALUE: usize = 512;

/// Lease markers memcached adds to a reply, never shown to a client.
const MARKERS: [u8; 3] = [b'W', b'Z', b'X'];

impl Lease {
    /// A read of `request` (a one-key `get`, or a plain `mg`; its spans index `bytes`) of warm
    /// server `warm`, backed by cold server `cold`.
    pub fn new(
        request: Request,
        bytes: Bytes,
        warm: usize,
        cold: usize,
        rules: LeaseRules,
    ) -> Lease {
        let meta = request.command == Command::MetaGet;
        let (warm_line, warm_added) = warm_request(&request, &bytes, &rules);
        Lease {
            quiet: meta && request.quiet,
            end: true,
            meta,
            request,
            bytes,
            warm,
            cold,
            rules,
            warm_line,
            warm_added,
            state: State::Warm,
            part: 0,
            deadline: None,
            backoff: FIRST_BACKOFF,
            holding: false,
            answered: false,
        }
    }

    /// A read of `key` (a classic key of a multi-get), answered with its `VALUE` block alone (or
    /// nothing on a miss), for a [`super::lease_batch::LeaseBatch`] to put in order.
    /// None when `key` is no key (it came from a parsed request, so it always is one).
    pub fn for_key(key: &[u8], warm: usize, cold: usize, rules: LeaseRules) -> Option<Lease> {
        let mut line = BytesMut::with_capacity(key.len() + 8);
        line.put_slice(b"get ");
        line.put_slice(key);
        line.put_slice(b"\r\n");
        let bytes = line.freeze();
        let request = one_key_get(&bytes)?;
        let mut lease = Lease::new(request, bytes, warm, cold, rules);
        lease.end = false;
        Some(lease)
    }

    /// Asks warm. The read holds its client's later writes until it has asked cold (or is
    /// answered).
    pub fn start(&mut self, fx: &mut Effects) {
        self.holding = true;
        self.ask_warm(fx);
    }

    /// True once the client is answered.
    pub fn finished(&self) -> bool {
        self.answered
    }

    /// True while its client's later writes must wait.
    pub fn holds_writes(&self) -> bool {
        self.holding
    }

    /// True while it holds a lease and reads cold for it: the write-back (or the placeholder's
    /// release) is owed to the other readers, client or not.
    pub fn outlives_client(&self) -> bool {
        matches!(self.state, State::Cold(Some(_)) | State::Refresh(_))
    }

    /// The reply (or failure) of request `part`.
    pub fn on_completion(&mut self, part: u32, c: &Completion, fx: &mut Effects) {
        if !c.end || part != self.part {
            return;
        }
        match std::mem::replace(&mut self.state, State::Over) {
            State::Warm => self.on_warm(c, fx),
            State::Cold(cas) => self.on_cold(c, cas, fx),
            State::Refresh(cas) => self.on_refresh(c, &cas, fx),
            other => self.state = other,
        }
        if self.holding && (self.answered || matches!(self.state, State::Cold(_))) {
            self.holding = false;
            fx.writes_released = true;
        }
    }

    /// The wait timer fired: warm is asked again.
    pub fn on_wake(&mut self, fx: &mut Effects) {
        if self.state == State::Waiting {
            self.ask_warm(fx);
        }
    }

    fn on_warm(&mut self, c: &Completion, fx: &mut Effects) {
        let reply = (c.failed.is_none()).then(|| parse_warm(&c.reply)).flatten();
        let Some(warm) = reply else {
            // Warm failed or said something else (an error, `EN`): cold, with no lease.
            return self.ask_cold(None, fx);
        };
        let empty = warm.empty();
        let cas = || warm.cas.clone().map(|range| c.reply.slice(range));
        match (warm.win, warm.wait) {
            (true, _) if empty || warm.stale => {
                fx.leases.wins += 1;
                self.ask_cold(cas(), fx)
            }
            (true, _) => {
                self.serve_warm(&c.reply, &warm, fx);
                if let Some(cas) = cas() {
                    fx.leases.refreshes += 1;
                    self.refresh(cas, fx);
                }
            }
            (false, true) if empty || warm.stale => self.wait(fx),
            _ if warm.stale => self.wait(fx),
            _ => self.serve_warm(&c.reply, &warm, fx),
        }
    }

    /// Another reader holds the lease: ask warm again after the back-off, or cold once the
    /// wait is over.
    fn wait(&mut self, fx: &mut Effects) {
        let now = fx.now.unwrap_or_else(Instant::now);
        if self.deadline.is_none() {
            fx.leases.waits += 1;
        }
        let deadline = *self.deadline.get_or_insert(now + self.rules.wait);
        if now >= deadline {
            fx.leases.wait_timeouts += 1;
            return self.ask_cold(None, fx);
        }
        fx.wake_at = Some((now + self.backoff).min(deadline));
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        self.state = State::Waiting;
    }

    fn on_cold(&mut self, c: &Completion, cas: Option<Bytes>, fx: &mut Effects) {
        self.answered = true;
        if c.failed.is_some() || c.reply.starts_with(b"SERVER_ERROR") {
            // The placeholder, if this reader made one, expires on its own: the next reader
            // after it wins the lease.
            fx.lookups = (0, 1);
            if self.meta {
                if !self.quiet {
                    fx.deliver.push(Bytes::from_static(b"EN\r\n"));
                }
            } else if self.end {
                fx.deliver.push(Bytes::from_static(b"END\r\n"));
            }
            return;
        }
        let hit = if self.meta {
            let hit = write_back::mg_hit(&c.reply);
            let absent = c.reply.starts_with(b"EN");
            if !(absent && self.quiet) {
                let added = cold_added(&self.request, &self.bytes);
                write_back::mg_client_reply_parts(&c.reply, added, &mut fx.deliver);
            }
            hit.map(|h| (h.flags, h.data, h.remaining_ttl))
        } else {
            // Without its `END` for a key of a multi-get.
            let reply = match self.end {
                true => c.reply.clone(),
                false => c.reply.slice(..c.reply.len().saturating_sub(c.tail)),
            };
            if !reply.is_empty() {
                fx.deliver.push(reply);
            }
            // A classic reply says no TTL; an HTTP origin's `max-age` comes beside it.
            write_back::value_blocks(&c.reply)
                .next()
                .map(|b| (b.flags, b.data, c.max_age.map(i64::from)))
        };
        fx.lookups = if hit.is_some() { (1, 0) } else { (0, 1) };
        if let Some(cas) = cas {
            self.settle(&cas, hit, fx);
        }
    }

    /// This reader's lease (`cas`) ends: the cold value written back under it, or, when cold
    /// does not hold the key, the placeholder dropped.
    fn settle(&self, cas: &[u8], hit: Option<(Bytes, Bytes, Option<i64>)>, fx: &mut Effects) {
        let wb = self.rules.write_back;
        let key = self.request.first_key(&self.bytes);
        let base64 = self.request.base64_key;
        let send = match hit {
            Some((flags, data, remaining)) => {
                let ttl = write_back::write_back_ttl(remaining, wb.ttl);
                let header = lease_set(key, base64, &flags, data.len().saturating_sub(2), ttl, cas);
                write_back_send(self.warm, header, data, Command::MetaSet)
            }
            None => Send {
                server: self.warm,
                part: 0,
                bytes: lease_release(key, base64, cas),
                value: None,
                framing: Framing::whole(Command::MetaDelete),
                stream: false,
            },
        };
        fx.side.push((wb.effect, send));
    }

    fn on_refresh(&mut self, c: &Completion, cas: &[u8], fx: &mut Effects) {
        if c.failed.is_some() || c.reply.starts_with(b"SERVER_ERROR") {
            return;
        }
        let hit = write_back::mg_hit(&c.reply).map(|h| (h.flags, h.data, h.remaining_ttl));
        if hit.is_none() && !c.reply.starts_with(b"EN") {
            return; // neither a value nor a miss: leave warm as it is
        }
        self.settle(cas, hit, fx);
    }

    /// The client is answered with warm's value; its lease markers and the flags it did not
    /// ask are taken out.
    fn serve_warm(&mut self, reply: &Bytes, warm: &WarmReply, fx: &mut Effects) {
        self.answered = true;
        fx.lookups = (1, 0);
        if self.meta {
            write_back::mg_client_reply_parts(reply, self.warm_added, &mut fx.deliver);
            return;
        }
        let end = Bytes::from_static(b"END\r\n");
        let parts = warm
            .flags
            .clone()
            .map(|f| (reply.get(f), reply.get(warm.data.clone())));
        let Some((Some(flags), Some(data))) = parts else {
            if self.end {
                fx.deliver.push(end);
            }
            return;
        };
        let key = self.request.first_key(&self.bytes);
        let size = data.len().saturating_sub(2);
        // A small value is copied behind its new header (one buffer for the client instead
        // of three pieces); a large one goes out as a slice of warm's reply.
        let inline = size <= INLINE_VALUE;
        let capacity = key.len() + flags.len() + 32 + if inline { data.len() } else { 0 };
        let mut header = BytesMut::with_capacity(capacity);
        header.put_slice(b"VALUE ");
        header.put_slice(key);
        header.put_u8(b' ');
        header.put_slice(flags);
        header.put_u8(b' ');
        put_decimal(&mut header, size as u64);
        header.put_slice(b"\r\n");
        if inline {
            header.put_slice(data);
            if self.end {
                header.put_slice(&end);
            }
            fx.deliver.push(header.freeze());
            return;
        }
        fx.deliver.push(header.freeze());
        fx.deliver.push(reply.slice(warm.data.clone()));
        if self.end {
            fx.deliver.push(end);
        }
    }

    /// The client has its value; cold is read again in the background to refresh it.
    fn refresh(&mut self, cas: Bytes, fx: &mut Effects) {
        let key = self.request.first_key(&self.bytes);
        let line = cold_refresh_request(key, self.request.base64_key);
        self.state = State::Refresh(cas);
        self.send(self.cold, line, Framing::whole(Command::MetaGet), fx);
    }

    fn ask_warm(&mut self, fx: &mut Effects) {
        self.state = State::Warm;
        let line = self.warm_line.clone();
        self.send(self.warm, line, Framing::whole(Command::MetaGet), fx);
    }

    /// Cold is asked as the client asked (a classic `get`), or with the flags a write-back
    /// needs added (`mg`); `cas`: the lease this reader holds.
    fn ask_cold(&mut self, cas: Option<Bytes>, fx: &mut Effects) {
        self.state = State::Cold(cas);
        let (line, framing) = if self.meta {
            let line = cold_request(&self.request, &self.bytes);
            (line, Framing::whole(Command::MetaGet))
        } else {
            let mut framing = Framing::of(&self.request);
            framing.on_failure = Failure::Miss(b"END\r\n");
            let line = self
                .bytes
                .slice(..self.request.line_len.min(self.bytes.len()));
            (line, framing)
        };
        self.send(self.cold, line, framing, fx);
    }

    fn send(&mut self, server: usize, bytes: Bytes, framing: Framing, fx: &mut Effects) {
        self.part = self.part.wrapping_add(1);
        fx.sends.push(Send {
            server,
            part: self.part,
            bytes,
            value: None,
            framing,
            // The reply decides what happens next: it is read whole.
            stream: false,
        });
    }
}

/// `bytes` (`get <key>\r\n`) parsed, when it is a `get` of one key.
pub fn one_key_get(bytes: &[u8]) -> Option<Request> {
    use crate::protocol::{parse_request, Limits, Parsed};
    match parse_request(bytes, &Limits::default()) {
        Ok(Parsed::Complete(request)) if request.key_count == 1 => Some(request),
        _ => None,
    }
}

/// The line warm is asked for `request`, and the flags it adds that the client did not ask
/// (lease markers included: they are taken out of every reply).
fn warm_request(request: &Request, bytes: &[u8], rules: &LeaseRules) -> (Bytes, MetaFlags) {
    let key = request.first_key(bytes);
    let mut added = MARKERS
        .iter()
        .fold(MetaFlags::EMPTY, |set, &m| set.with(m))
        .with(b'c');
    let mut line = BytesMut::with_capacity(key.len() + 64);
    line.put_slice(b"mg ");
    line.put_slice(key);
    if request.command == Command::MetaGet {
        let asked = client_flags(request, bytes, &mut line, b"cNRqE");
        for flag in [b'v', b'f'] {
            if !asked.has(flag) {
                added = added.with(flag);
            }
        }
        put_flags(&mut line, added, b"vfc");
    } else {
        line.put_slice(b" v f c");
    }
    line.put_slice(b" N");
    put_decimal(&mut line, u64::from(rules.lease_ttl));
    if rules.refresh_below > 0 {
        line.put_slice(b" R");
        put_decimal(&mut line, u64::from(rules.refresh_below));
    }
    line.put_slice(b"\r\n");
    (line.freeze(), added)
}

/// The client's `mg` flags after its key, copied into `line` except those whose letter is in
/// `drop`; the set of letters it asked.
fn client_flags(request: &Request, bytes: &[u8], line: &mut BytesMut, drop: &[u8]) -> MetaFlags {
    let args = request.args.of(bytes);
    let mut asked = MetaFlags::EMPTY;
    for (_, token) in Words::new(args).skip(1) {
        let Some(&letter) = token.first() else {
            continue;
        };
        asked = asked.with(letter);
        if !drop.contains(&letter) {
            line.put_u8(b' ');
            line.put_slice(token);
        }
    }
    asked
}

/// Appends ` <flag>` for each of `flags` in `set`.
fn put_flags(line: &mut BytesMut, set: MetaFlags, flags: &[u8]) {
    for &flag in flags.iter().filter(|&&f| set.has(f)) {
        line.put_u8(b' ');
        line.put_u8(flag);
    }
}

/// The flags a cold `mg` carries that the client did not ask (of `v f t`).
fn cold_added(request: &Request, bytes: &[u8]) -> MetaFlags {
    let asked = crate::protocol::meta_flags(request, bytes);
    [b'v', b'f', b't']
        .iter()
        .filter(|&&f| !asked.has(f))
        .fold(MetaFlags::EMPTY, |set, &f| set.with(f))
}

/// The client's `mg` as cold is asked it: its flags (without `q`, so a miss is seen, and
/// without lease flags, which are the proxy's on this route) and `v f t` for the write-back.
fn cold_request(request: &Request, bytes: &[u8]) -> Bytes {
    let key = request.first_key(bytes);
    let mut line = BytesMut::with_capacity(key.len() + 48);
    line.put_slice(b"mg ");
    line.put_slice(key);
    let asked = client_flags(request, bytes, &mut line, b"NRqE");
    let missing = [b'v', b'f', b't']
        .iter()
        .filter(|&&f| !asked.has(f))
        .fold(MetaFlags::EMPTY, |set, &f| set.with(f));
    put_flags(&mut line, missing, b"vft");
    line.put_slice(b"\r\n");
    line.freeze()
}

/// An early refresh's read of cold: the value, its flags and remaining TTL.
fn cold_refresh_request(key: &[u8], base64: bool) -> Bytes {
    let mut line = BytesMut::with_capacity(key.len() + 16);
    line.put_slice(b"mg ");
    line.put_slice(key);
    if base64 {
        line.put_slice(b" b");
    }
    line.put_slice(b" v f t\r\n");
    line.freeze()
}

/// `ms <key> <len> T<ttl> F<flags> C<cas> [b]`: the lease holder's write-back, stored only if
/// warm still holds its placeholder (or the value it refreshes) under `cas`.
fn lease_set(key: &[u8], base64: bool, flags: &[u8], len: usize, ttl: u64, cas: &[u8]) -> Bytes {
    let mut header = BytesMut::with_capacity(key.len() + flags.len() + cas.len() + 48);
    header.put_slice(b"ms ");
    header.put_slice(key);
    header.put_u8(b' ');
    put_decimal(&mut header, len as u64);
    header.put_slice(b" T");
    put_decimal(&mut header, ttl);
    header.put_slice(b" F");
    header.put_slice(flags);
    header.put_slice(b" C");
    header.put_slice(cas);
    if base64 {
        header.put_slice(b" b");
    }
    header.put_slice(b"\r\n");
    header.freeze()
}

/// `md <key> C<cas> [b]`: drops the placeholder of a key cold does not hold (if it is still the
/// one this reader's lease made), so the next reader asks cold at once.
fn lease_release(key: &[u8], base64: bool, cas: &[u8]) -> Bytes {
    let mut line = BytesMut::with_capacity(key.len() + cas.len() + 12);
    line.put_slice(b"md ");
    line.put_slice(key);
    line.put_slice(b" C");
    line.put_slice(cas);
    if base64 {
        line.put_slice(b" b");
    }
    line.put_slice(b"\r\n");
    line.freeze()
}

/// What warm's reply to a lease `mg` says; `None` for anything but a value (a miss, an error,
/// garbage, a truncated block).
fn parse_warm(reply: &[u8]) -> Option<WarmReply> {
    let line_end = memchr(b'\n', reply)?;
    let text = reply.get(..line_end)?;
    let text = text.strip_suffix(b"\r").unwrap_or(text);
    let mut words = Words::new(text);
    if words.next()?.1 != b"VA" {
        return None;
    }
    let size = parse_usize(words.next()?.1)?;
    let start = line_end + 1;
    let end = start.checked_add(size)?.checked_add(2)?;
    if reply.get(end - 2..end)? != b"\r\n" {
        return None;
    }
    let mut out = WarmReply {
        data: start..end,
        ..WarmReply::default()
    };
    for (at, token) in words {
        let value = || at + 1..at + token.len();
        match token {
            b"W" => out.win = true,
            b"Z" => out.wait = true,
            b"X" => out.stale = true,
            // Sent on in a write-back line: digits only.
            [b'c', digits @ ..] if is_digits(digits) => out.cas = Some(value()),
            [b'f', digits @ ..] if is_digits(digits) => out.flags = Some(value()),
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
#[path = "lease_tests.rs"]
mod tests;
