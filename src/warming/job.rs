//! One warming job's state machine, stepped by the engine's poll loop.
//!
//! A key flows: taken from the list or a server's dump (one token of the rate's bucket, one
//! slot of the window) → `mg` on a read connection to its source server, its key pushed on that
//! connection's FIFO → the reply: `EN` counts it missing, `VA` turns into an `ms` on a write
//! connection to the server `to` places it on now → `HD` counts it copied, `NS` skipped. The
//! window (keys between their `mg` and their last reply) bounds the keys in flight; reading the
//! sources stops while the writes queued for the targets exceed [`WRITE_BACKLOG`], and reading a
//! dump stops while the window is full, so memory stays bounded whatever the servers do and a
//! slow target slows the dump down through TCP.
//!
//! Any failure of a connection (connect, reset, close, timeout, an error or unexpected reply)
//! fails the whole job with a reason naming the server: a partial copy is reported, never
//! retried forever.

use std::collections::{HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mio::{Registry, Token};

use super::conn::{Conn, Side, CHUNK};
use super::metadump::{self, DumpLine, StatLine};
use super::request::{Keys, WarmRequest};
use super::status::{bump, JobShared, State};
use super::wire::{self, GetReply, SetReply};
use crate::observe::health::HealthBoard;
use crate::routing::{Pool, Router};

/// Most keys of one job between their `mg` and the reply that settles them.
pub const WINDOW: usize = 256;
/// Bytes of writes queued for a job's targets above which it stops reading its sources.
pub const WRITE_BACKLOG: usize = 4 << 20;
/// How many times a server whose crawler is busy is asked again before the job fails.
pub const BUSY_ATTEMPTS: u32 = 20;
/// The wait before asking a busy crawler again (a crawler serving a dump whose reader went
/// away stops within about 10 ms).
pub const BUSY_DELAY: Duration = Duration::from_millis(250);
/// The wait before looking again whether another job's dump of a server ended.
const DUMP_QUEUE_DELAY: Duration = Duration::from_millis(100);
/// Rounds of one job per step before the engine serves the others (and notices cancels).
const ROUNDS_PER_STEP: usize = 32;
/// The request that starts a dump; alone on its connection (memcached refuses a dump with
/// other commands pipelined before it).
const METADUMP: &[u8] = b"lru_crawler metadump all\r\n";
/// Asked first on a dump connection (see [`metadump::next_stat`]).
const STATS: &[u8] = b"stats\r\n";

/// What a job needs of the engine during a step.
pub struct Ctx<'a> {
    /// The engine's poll registry (connections register there).
    pub registry: &'a Registry,
    /// The next unused poll token.
    pub next_token: &'a mut usize,
    /// Servers a dump of any job is streaming from: memcached 1.6 answers a second
    /// `lru_crawler metadump` while its crawler is held by blocking the worker thread that
    /// asked (every client of that thread hangs, and the held dump can stall with it), so the
    /// engine never asks one server for two dumps at once.
    pub dumping: &'a mut HashSet<SocketAddr>,
    /// The time of this step.
    pub now: Instant,
}

impl Ctx<'_> {
    fn token(&mut self) -> Token {
        let token = Token(*self.next_token);
        *self.next_token = self.next_token.wrapping_add(1) % super::engine::WAKER_TOKEN.0;
        token
    }
}

/// One source server's dump.
enum Dump {
    /// Not asked yet, or asked again after `BUSY` (or a busy crawler) at this time.
    Waiting(Instant),
    /// `stats` asked, to see whether the crawler is idle before asking for the dump.
    Checking(Conn),
    /// Streaming keys.
    Streaming(Conn),
    /// Its `END` arrived.
    Done,
}

struct DumpOf {
    server: usize,
    addr: Option<SocketAddr>,
    state: Dump,
    /// Times the server said its crawler was busy.
    busy: u32,
    /// What the `stats` being read says of the crawler so far.
    crawler_running: bool,
}

/// Where the keys come from.
enum Source {
    /// The request's keys; the next one to take.
    List { keys: Vec<Vec<u8>>, next: usize },
    /// A dump of every server of the source pool; the dump asked first next time.
    Dumps { dumps: Vec<DumpOf>, next: usize },
}

/// A read connection and the keys its replies answer, in order.
struct Reader {
    conn: Conn,
    keys: VecDeque<Vec<u8>>,
}

/// The rate's token bucket: `rate` keys per second, up to a tenth of a second's worth at once.
struct Bucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Bucket {
        let capacity = (rate / 10.0).max(1.0);
        Bucket {
            rate,
            capacity,
            tokens: 1.0,
            at: now,
        }
    }

    /// True if a key may be taken now.
    fn ready(&mut self, now: Instant) -> bool {
        let added = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + added).min(self.capacity);
        self.at = now;
        self.tokens >= 1.0
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }

    /// When enough tokens will be there to be worth waking up for (a hundredth of a second's
    /// worth, at least one), so a high rate is not served one wake-up per key.
    fn ready_at(&self) -> Instant {
        let want = (self.rate / 100.0).clamp(1.0, self.capacity);
        let wait = ((want - self.tokens) / self.rate).max(0.0);
        self.at + Duration::try_from_secs_f64(wait).unwrap_or(Duration::from_secs(1))
    }
}

/// The source and target pools as the proxy places keys now (without ejected servers).
struct Placement {
    epoch: u64,
    from: Option<Pool>,
    to: Option<Pool>,
}

/// One job.
pub struct Job {
    shared: Arc<JobShared>,
    router: Arc<Router>,
    health: Arc<HealthBoard>,
    from_pool: usize,
    to_pool: usize,
    overwrite: bool,
    source: Source,
    bucket: Option<Bucket>,
    placement: Placement,
    /// The generator state a `random` pool picks servers with (the job's own, like each
    /// worker's: see [`crate::routing::ring::Ring::server_for`]).
    random: u64,
    readers: Vec<Reader>,
    writers: Vec<Conn>,
    /// Keys between their `mg` and the reply that settles them.
    inflight: usize,
    /// The step ran out of rounds with work left: step again at once.
    more: bool,
    finished: bool,
}

impl Job {
    /// A job for `request`, not started (it connects at its first step). An `all` job dumps
    /// the servers `dump_servers` (the source pool's, less those down when it started).
    pub fn new(
        shared: Arc<JobShared>,
        request: WarmRequest,
        dump_servers: &[usize],
        router: Arc<Router>,
        health: Arc<HealthBoard>,
        now: Instant,
    ) -> Job {
        let source = match request.keys {
            Keys::List(keys) => Source::List { keys, next: 0 },
            Keys::All => Source::Dumps {
                dumps: dump_servers
                    .iter()
                    .map(|&server| DumpOf {
                        server,
                        addr: router.servers().get(server).and_then(|s| s.addr.current()),
                        state: Dump::Waiting(now),
                        busy: 0,
                        crawler_running: false,
                    })
                    .collect(),
                next: 0,
            },
        };
        Job {
            shared,
            from_pool: request.from_pool,
            to_pool: request.to_pool,
            overwrite: request.overwrite,
            source,
            bucket: request.rate.map(|rate| Bucket::new(rate, now)),
            // An epoch no board has: the first step places by the board's current state.
            placement: Placement {
                epoch: u64::MAX,
                from: None,
                to: None,
            },
            random: crate::routing::ring::random_seed(),
            router,
            health,
            readers: Vec::new(),
            writers: Vec::new(),
            inflight: 0,
            more: false,
            finished: false,
        }
    }

    /// The job's id.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// True once the job ended and closed its connections.
    pub fn finished(&self) -> bool {
        self.finished
    }

    /// Advances the job as far as its servers allow without blocking; returns when it wants
    /// to be stepped again at the latest (`None`: when one of its sockets is ready).
    pub fn step(&mut self, ctx: &mut Ctx) -> Option<Instant> {
        if self.finished {
            return None;
        }
        if self
            .shared
            .cancel
            .load(std::sync::atomic::Ordering::Relaxed)
            || self.shared.state() != State::Running
        {
            // Cancelled: the manager already set the state (so a status right after the
            // DELETE says so); only the connections are left to close.
            self.shared.finish(State::Cancelled, None);
            log::info!(
                "warm job {} cancelled: {}",
                self.id(),
                self.shared.summary()
            );
            self.close(ctx);
            return None;
        }
        self.refresh_placement();
        self.more = false;
        let mut rounds = 0;
        loop {
            match self.round(ctx) {
                Err(reason) => {
                    self.fail(ctx, reason);
                    return None;
                }
                Ok(false) => break,
                Ok(true) if rounds + 1 >= ROUNDS_PER_STEP => {
                    self.more = true;
                    break;
                }
                Ok(true) => rounds += 1,
            }
        }
        if self.exhausted() && self.inflight == 0 {
            if self.shared.finish(State::Done, None) {
                log::info!("warm job {} done: {}", self.id(), self.shared.summary());
            }
            self.close(ctx);
            return None;
        }
        if let Some(reason) = self.overdue(ctx.now) {
            self.fail(ctx, reason);
            return None;
        }
        if self.more {
            return Some(ctx.now);
        }
        self.wake_at()
    }

    /// Ends the job (for the engine's shutdown).
    pub fn abort(&mut self, ctx: &mut Ctx, why: &str) {
        if !self.finished {
            if self.shared.finish(State::Cancelled, Some(why.to_string())) {
                log::info!(
                    "warm job {} cancelled ({why}): {}",
                    self.id(),
                    self.shared.summary()
                );
            }
            self.close(ctx);
        }
    }

    /// Fails the job: the keys in flight count as failed.
    pub fn fail(&mut self, ctx: &mut Ctx, reason: String) {
        let failed = u64::try_from(self.inflight).unwrap_or(u64::MAX);
        self.shared
            .counts
            .failed
            .fetch_add(failed, std::sync::atomic::Ordering::Relaxed);
        self.inflight = 0;
        log::info!(
            "warm job {} failed: {reason}; {}",
            self.id(),
            self.shared.summary()
        );
        self.shared.finish(State::Failed, Some(reason));
        self.close(ctx);
    }

    fn close(&mut self, ctx: &mut Ctx) {
        for reader in self.readers.drain(..) {
            reader.conn.close(ctx.registry);
        }
        for writer in self.writers.drain(..) {
            writer.close(ctx.registry);
        }
        if let Source::Dumps { dumps, .. } = &mut self.source {
            for dump in dumps.iter_mut() {
                end_dump(dump, Dump::Done, ctx);
            }
        }
        self.finished = true;
    }

    /// Rebuilds the placement after a server of either pool went down or came back (as the
    /// workers do, see `crate::routing::strategy`), so a key goes where the proxy would send it now.
    fn refresh_placement(&mut self) {
        let epoch = self.health.epoch();
        if epoch == self.placement.epoch {
            return;
        }
        let pool = |index: usize| {
            self.router
                .pools()
                .get(index)
                .and_then(|p| p.without(|server| self.health.is_ejected(server)))
        };
        self.placement = Placement {
            epoch,
            from: pool(self.from_pool),
            to: pool(self.to_pool),
        };
    }

    /// One pass over every connection; true if anything moved.
    fn round(&mut self, ctx: &mut Ctx) -> Result<bool, String> {
        let now = ctx.now;
        let mut progress = false;

        // Targets first: their replies free window slots, their drained queues let the
        // sources be read again.
        for writer in &mut self.writers {
            progress |= writer.flush(now)?;
            loop {
                while let Some((reply, used)) =
                    wire::parse_set(writer.unparsed()).map_err(|e| writer.error(e))?
                {
                    writer.consume(used);
                    if writer.owed == 0 {
                        return Err(writer.error("a reply to no request"));
                    }
                    writer.owed -= 1;
                    self.inflight = self.inflight.saturating_sub(1);
                    let counts = &self.shared.counts;
                    bump(match reply {
                        SetReply::Stored => &counts.copied,
                        SetReply::NotStored => &counts.skipped,
                        SetReply::Refused => &counts.failed,
                    });
                    progress = true;
                }
                if !writer.fill(now)? {
                    break;
                }
                progress = true;
            }
        }

        let mut backlog: usize = self.writers.iter().map(Conn::backlog).sum();
        let unix_now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for reader in &mut self.readers {
            progress |= reader.conn.flush(now)?;
            loop {
                while let Some((reply, used)) =
                    wire::parse_get(reader.conn.unparsed()).map_err(|e| reader.conn.error(e))?
                {
                    let Some(key) = reader.keys.pop_front() else {
                        return Err(reader.conn.error("a reply to no request"));
                    };
                    reader.conn.owed = reader.conn.owed.saturating_sub(1);
                    progress = true;
                    match reply {
                        GetReply::Miss => {
                            bump(&self.shared.counts.missing);
                            self.inflight = self.inflight.saturating_sub(1);
                        }
                        GetReply::Hit {
                            flags,
                            ttl,
                            start,
                            len,
                        } => {
                            let value = reader
                                .conn
                                .unparsed()
                                .get(start..start + len)
                                .unwrap_or_default();
                            let pool = self
                                .placement
                                .to
                                .as_ref()
                                .or_else(|| self.router.pools().get(self.to_pool));
                            let (Some(pool), Some((wire_key, binary))) =
                                (pool, wire::wire_key(&key))
                            else {
                                // Not reachable: the key was checked when it was asked for.
                                bump(&self.shared.counts.failed);
                                self.inflight = self.inflight.saturating_sub(1);
                                reader.conn.consume(used);
                                continue;
                            };
                            let server = pool.server_for(&key, &mut self.random);
                            let writer = conn_for(
                                &mut self.writers,
                                server,
                                Side::Target,
                                &self.router,
                                ctx,
                            )?;
                            let exptime = wire::target_exptime(ttl, unix_now);
                            let before = writer.backlog();
                            writer.push(now, 1, |out| {
                                wire::push_set(
                                    out,
                                    &wire_key,
                                    binary,
                                    value,
                                    flags,
                                    exptime,
                                    self.overwrite,
                                );
                            });
                            backlog += writer.backlog() - before;
                        }
                    }
                    reader.conn.consume(used);
                }
                if backlog > WRITE_BACKLOG {
                    // The targets are behind: leave the replies in the socket (the source then
                    // waits on TCP) and do not count it stalled for it.
                    reader.conn.touch(now);
                    break;
                }
                if !reader.conn.fill(now)? {
                    break;
                }
                progress = true;
            }
        }

        progress |= self.dispatch(ctx)?;
        Ok(progress)
    }

    /// Takes keys from the source while the window and the rate allow; asks each of its
    /// source server. True if any was taken.
    fn dispatch(&mut self, ctx: &mut Ctx) -> Result<bool, String> {
        let now = ctx.now;
        let mut progress = false;
        loop {
            let window_full = self.inflight >= WINDOW;
            let no_token = !window_full && self.bucket.as_mut().is_some_and(|b| !b.ready(now));
            if window_full || no_token {
                // Not reading the dumps is our choice: they are not stalled.
                if let Source::Dumps { dumps, .. } = &mut self.source {
                    for dump in dumps.iter_mut() {
                        if let Dump::Streaming(conn) | Dump::Checking(conn) = &mut dump.state {
                            conn.touch(now);
                        }
                    }
                }
                return Ok(progress);
            }
            let taken = match &mut self.source {
                Source::List { keys, next } => {
                    let key = keys.get_mut(*next).map(std::mem::take);
                    *next += 1;
                    key.map(|key| {
                        let pool = self
                            .placement
                            .from
                            .as_ref()
                            .or_else(|| self.router.pools().get(self.from_pool));
                        let server = pool.map_or(0, |p| p.server_for(&key, &mut self.random));
                        (key, server)
                    })
                }
                Source::Dumps { dumps, next } => {
                    let (taken, moved) = next_dumped(dumps, next, &self.router, ctx)?;
                    progress |= moved;
                    taken
                }
            };
            let Some((key, server)) = taken else {
                return Ok(progress);
            };
            progress = true;
            if let Some(bucket) = &mut self.bucket {
                bucket.take();
            }
            bump(&self.shared.counts.seen);
            let Some((wire_key, binary)) = wire::wire_key(&key) else {
                // A binary key too long for base64 within 250 bytes: meta commands cannot
                // name it.
                bump(&self.shared.counts.failed);
                continue;
            };
            let reader = reader_for(&mut self.readers, server, &self.router, ctx)?;
            reader
                .conn
                .push(now, 1, |out| wire::push_get(out, &wire_key, binary));
            reader.keys.push_back(key);
            self.inflight += 1;
        }
    }

    /// True when no key is left to take.
    fn exhausted(&self) -> bool {
        match &self.source {
            Source::List { keys, next } => *next >= keys.len(),
            Source::Dumps { dumps, .. } => dumps.iter().all(|d| matches!(d.state, Dump::Done)),
        }
    }

    /// Why the job fails now, if a connection is overdue.
    fn overdue(&self, now: Instant) -> Option<String> {
        let dumps = match &self.source {
            Source::Dumps { dumps, .. } => dumps.as_slice(),
            Source::List { .. } => &[],
        };
        self.readers
            .iter()
            .map(|r| &r.conn)
            .chain(self.writers.iter())
            .chain(dumps.iter().filter_map(|d| match &d.state {
                Dump::Streaming(conn) | Dump::Checking(conn) => Some(conn),
                _ => None,
            }))
            .find_map(|conn| conn.overdue(now))
    }

    /// The latest time the job must be stepped again: a deadline, a dump to ask again, the
    /// rate's next tokens.
    fn wake_at(&self) -> Option<Instant> {
        let mut at: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        for reader in &self.readers {
            consider(reader.conn.deadline());
        }
        for writer in &self.writers {
            consider(writer.deadline());
        }
        if let Source::Dumps { dumps, .. } = &self.source {
            for dump in dumps {
                consider(match &dump.state {
                    Dump::Waiting(t) => Some(*t),
                    Dump::Streaming(conn) | Dump::Checking(conn) => conn.deadline(),
                    Dump::Done => None,
                });
            }
        }
        if self.inflight < WINDOW && !self.exhausted() {
            consider(self.bucket.as_ref().map(Bucket::ready_at));
        }
        at
    }
}

/// The job's connection of `side` to `server`, opened on first use.
fn conn_for<'a>(
    conns: &'a mut Vec<Conn>,
    server: usize,
    side: Side,
    router: &Router,
    ctx: &mut Ctx,
) -> Result<&'a mut Conn, String> {
    let index = match conns.iter().position(|c| c.server == server) {
        Some(index) => index,
        None => {
            conns.push(open(server, side, router, ctx)?);
            conns.len() - 1
        }
    };
    conns
        .get_mut(index)
        .ok_or_else(|| format!("server {server}: no connection"))
}

fn reader_for<'a>(
    readers: &'a mut Vec<Reader>,
    server: usize,
    router: &Router,
    ctx: &mut Ctx,
) -> Result<&'a mut Reader, String> {
    let index = match readers.iter().position(|r| r.conn.server == server) {
        Some(index) => index,
        None => {
            readers.push(Reader {
                conn: open(server, Side::Source, router, ctx)?,
                keys: VecDeque::new(),
            });
            readers.len() - 1
        }
    };
    readers
        .get_mut(index)
        .ok_or_else(|| format!("server {server}: no connection"))
}

fn open(server: usize, side: Side, router: &Router, ctx: &mut Ctx) -> Result<Conn, String> {
    let spec = router
        .servers()
        .get(server)
        .ok_or_else(|| format!("no server number {server}"))?;
    let token = ctx.token();
    Conn::open(ctx.registry, token, server, spec, side, ctx.now)
}

/// A key from a dump and the server that listed it.
type Dumped = (Vec<u8>, usize);

/// The next key of any dump (and the server that listed it), starting at dump `next` and
/// moving on so the source servers take turns; asks servers for their dumps when due. Also
/// whether anything moved.
fn next_dumped(
    dumps: &mut [DumpOf],
    next: &mut usize,
    router: &Router,
    ctx: &mut Ctx,
) -> Result<(Option<Dumped>, bool), String> {
    let count = dumps.len();
    let mut moved = false;
    for offset in 0..count {
        let index = (*next + offset) % count;
        let Some(dump) = dumps.get_mut(index) else {
            continue;
        };
        if let Dump::Waiting(at) = dump.state {
            if ctx.now < at {
                continue;
            }
            if let Some(addr) = dump.addr {
                if !ctx.dumping.insert(addr) {
                    // Another job's dump of this server is streaming: wait for its end.
                    dump.state = Dump::Waiting(ctx.now + DUMP_QUEUE_DELAY);
                    continue;
                }
            }
            let mut conn = match open(dump.server, Side::Source, router, ctx) {
                Ok(conn) => conn,
                Err(e) => {
                    if let Some(addr) = dump.addr {
                        ctx.dumping.remove(&addr);
                    }
                    return Err(e);
                }
            };
            conn.push(ctx.now, 1, |out| out.extend_from_slice(STATS));
            dump.crawler_running = false;
            dump.state = Dump::Checking(conn);
            moved = true;
        }
        if let Dump::Checking(conn) = &mut dump.state {
            moved |= conn.flush(ctx.now)?;
            let mut complete = false;
            loop {
                match metadump::next_stat(conn.unparsed()).map_err(|e| conn.error(e))? {
                    Some((line, used)) => {
                        conn.consume(used);
                        match line {
                            StatLine::CrawlerRunning(running) => dump.crawler_running = running,
                            StatLine::Other => {}
                            StatLine::End => {
                                complete = true;
                                break;
                            }
                        }
                    }
                    None if conn.fill(ctx.now)? => moved = true,
                    None => break,
                }
            }
            if !complete {
                continue;
            }
            moved = true;
            if dump.crawler_running {
                dump.busy += 1;
                if dump.busy >= BUSY_ATTEMPTS {
                    return Err(conn.error(format!(
                        "its LRU crawler stayed busy (asked {BUSY_ATTEMPTS} times, \
                         {BUSY_DELAY:?} apart)"
                    )));
                }
                end_dump(dump, Dump::Waiting(ctx.now + BUSY_DELAY), ctx);
                continue;
            }
            conn.owed = 0;
            conn.push(ctx.now, 1, |out| out.extend_from_slice(METADUMP));
            if let Dump::Checking(conn) = std::mem::replace(&mut dump.state, Dump::Done) {
                dump.state = Dump::Streaming(conn);
            }
        }
        let Dump::Streaming(conn) = &mut dump.state else {
            continue;
        };
        moved |= conn.flush(ctx.now)?;
        loop {
            let line = metadump::next_line(conn.unparsed()).map_err(|e| conn.error(e))?;
            match line {
                Some((DumpLine::Key(key), used)) => {
                    conn.consume(used);
                    *next = (index + 1) % count;
                    return Ok((Some((key, dump.server)), true));
                }
                Some((DumpLine::End, _)) => {
                    end_dump(dump, Dump::Done, ctx);
                    moved = true;
                    break;
                }
                Some((DumpLine::Busy(line), _)) => {
                    dump.busy += 1;
                    if dump.busy >= BUSY_ATTEMPTS {
                        return Err(conn.error(format!(
                            "{line} (asked {BUSY_ATTEMPTS} times, {BUSY_DELAY:?} apart)"
                        )));
                    }
                    let again = Dump::Waiting(ctx.now + BUSY_DELAY);
                    end_dump(dump, again, ctx);
                    moved = true;
                    break;
                }
                Some((DumpLine::Refused(line), _)) => return Err(conn.error(line)),
                None => {
                    // Read more only while less than a chunk waits: the rest stays in the
                    // socket until the window takes these keys.
                    if conn.unparsed().len() >= CHUNK || !conn.fill(ctx.now)? {
                        break;
                    }
                    moved = true;
                }
            }
        }
    }
    Ok((None, moved))
}

/// Closes `dump`'s connection if it has one (releasing its server for other dumps) and puts it
/// in `state`.
fn end_dump(dump: &mut DumpOf, state: Dump, ctx: &mut Ctx) {
    match std::mem::replace(&mut dump.state, state) {
        Dump::Streaming(conn) | Dump::Checking(conn) => {
            conn.close(ctx.registry);
            if let Some(addr) = dump.addr {
                ctx.dumping.remove(&addr);
            }
        }
        Dump::Waiting(_) | Dump::Done => {}
    }
}

#[cfg(test)]
#[path = "job_tests.rs"]
mod tests;
