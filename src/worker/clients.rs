//! The worker's client side: reading and dispatching client requests, accepting, flushing
//! replies, idle and slow clients, and the memory budgets that close the clients holding most.

use std::time::Instant;

use super::*;

impl Worker {
    /// Records a change in what a client's read buffer holds.
    #[inline]
    pub(super) fn account_requests(&mut self, before: usize, after: usize) {
        if before != after {
            self.request_bytes = (self.request_bytes + after).saturating_sub(before);
            self.request_memory.changed(before, after);
        }
    }

    pub(super) fn account(&mut self, before: usize, after: usize) {
        self.buffered = (self.buffered + after).saturating_sub(before);
    }

    /// Marks a client to be closed at once (limits, shedding).
    pub(super) fn kill_client(&mut self, index: usize) {
        if let Some(client) = self.clients.get_mut(index) {
            client.kill();
        }
        self.clients.flush_later(index);
    }

    pub(super) fn serve_clients(&mut self, now: Instant) {
        let mut list = std::mem::take(&mut self.serve_list);
        self.clients.take_revisits(&mut list);
        for &index in &list {
            let before = self.clients.get(index).map_or(0, Client::request_bytes);
            self.serve_client(index, now);
            let after = self.clients.get(index).map_or(0, Client::request_bytes);
            self.account_requests(before, after);
            // A served client may have replies to write (answered locally), be closing, or
            // have stopped early with input left (the flush phase serves it again).
            if self.clients.get(index).is_some_and(Client::needs_flush) {
                self.clients.flush_later(index);
            }
        }
        self.serve_list = list;
        self.apply_completions(now);
    }

    pub(super) fn serve_client(&mut self, index: usize, now: Instant) {
        let Some(listener) = self.clients.get(index).map(|c| c.listener()) else {
            return;
        };
        let Some(spec) = self.listeners.get(listener).map(|l| &l.spec) else {
            return;
        };
        let limits = spec.limits;
        let slow_after = spec.request_read_timeout;
        let mut reads = 0;
        loop {
            // Dispatch whatever whole requests are buffered, within the limits.
            loop {
                let Some(client) = self.clients.get_mut(index) else {
                    return;
                };
                if client.is_closing() || !client.may_dispatch() {
                    break;
                }
                if let Some((request, bytes)) = client.take_deferred() {
                    // A held write whose earlier reads have moved on (already counted).
                    self.dispatch_deferred(index, &request, bytes, now);
                    continue;
                }
                let Some(next) = client.next_request(&limits, now, &mut self.request_arena) else {
                    break;
                };
                self.dispatch(index, next, now);
            }
            let Some(client) = self.clients.get_mut(index) else {
                return;
            };
            client.set_stalled(false);
            if client.is_closing() {
                return;
            }
            if !client.may_dispatch() || (client.wants_read() && reads >= READS_PER_VISIT) {
                client.set_stalled(true);
                return;
            }
            if !client.wants_read() {
                break;
            }
            reads += 1;
            match client.read_some(now, &mut self.read_scratch) {
                Ok(bytes) => WorkerStats::add(&self.stats.bytes_read, bytes as u64),
                Err(e) => {
                    log::debug!("client read failed: {e}");
                    return;
                }
            }
        }
        // Waiting for the rest of a request: make sure its arrival is timed.
        let Some(slow_after) = slow_after else {
            return;
        };
        if let Some(client) = self.clients.get_mut(index) {
            if let Some(since) = client.arm_slow_timer() {
                let generation = client.generation();
                self.timers.schedule(
                    since + slow_after,
                    TimerEvent::ClientSlowRequest {
                        client: index,
                        generation,
                    },
                );
            }
        }
    }

    pub(super) fn check_idle(&mut self, index: usize, generation: u32, now: Instant) {
        let Some(client) = self.clients.current(index, generation) else {
            return;
        };
        let Some(idle) = self
            .listeners
            .get(client.listener())
            .and_then(|l| l.spec.idle_timeout)
        else {
            return;
        };
        let since = client.idle_for(now);
        if client.is_idle() && since >= idle {
            log::debug!("closing client idle for {since:?}");
            self.kill_client(index);
        } else {
            let at = if client.is_idle() {
                client.last_active() + idle
            } else {
                now + idle
            };
            self.timers.schedule(
                at,
                TimerEvent::ClientIdle {
                    client: index,
                    generation,
                },
            );
        }
    }

    /// A client whose request started arriving `request_read_timeout` ago and is still not
    /// whole is closed. One timer per client is enough: a stale one is ignored, and the
    /// serve phase arms a new one while a request is partly in.
    pub(super) fn check_slow_request(&mut self, index: usize, generation: u32, now: Instant) {
        let Some(client) = self.clients.current(index, generation) else {
            return;
        };
        let Some(limit) = self
            .listeners
            .get(client.listener())
            .and_then(|l| l.spec.request_read_timeout)
        else {
            return;
        };
        client.slow_timer_fired();
        // A client held back by its own limits is not slow: its request is whole, unread.
        if client.is_stalled() {
            return;
        }
        let Some(since) = client.partial_since() else {
            return;
        };
        if now.saturating_duration_since(since) < limit {
            client.arm_slow_timer();
            self.timers.schedule(
                since + limit,
                TimerEvent::ClientSlowRequest {
                    client: index,
                    generation,
                },
            );
            return;
        }
        WorkerStats::add(&self.stats.clients_closed_slow_request, 1);
        log::debug!("closing client: request not whole after {limit:?}");
        self.kill_client(index);
    }

    pub(super) fn accept_all(&mut self, now: Instant) {
        for li in 0..self.listeners.len() {
            let Some(listener) = self.listeners.get_mut(li) else {
                continue;
            };
            if !listener.pending_accept {
                continue;
            }
            listener.pending_accept = false;
            let mut accepted = 0;
            while accepted < ACCEPT_BATCH {
                let Some(socket) = self.listeners.get(li).and_then(|l| l.socket.as_ref()) else {
                    break;
                };
                match socket.accept() {
                    Ok((stream, _peer)) => {
                        accepted += 1;
                        self.admit(li, stream, now);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        // EMFILE and friends: try again on the next readiness event rather
                        // than spin on an error that will not clear by itself.
                        crate::warn_limited!(
                            self.log,
                            LogEvent::AcceptFailed,
                            None,
                            now,
                            "accept failed: {e}"
                        );
                        break;
                    }
                }
            }
            if accepted == ACCEPT_BATCH {
                // More may be waiting: come back next iteration without sleeping.
                if let Some(listener) = self.listeners.get_mut(li) {
                    listener.pending_accept = true;
                }
            }
        }
    }

    pub(super) fn admit(&mut self, listener: usize, mut stream: TcpStream, now: Instant) {
        let Some(spec) = self.listeners.get(listener).map(|l| &l.spec) else {
            return;
        };
        let open = spec.connections.fetch_add(1, Ordering::Relaxed);
        if open >= spec.max_connections {
            spec.connections.fetch_sub(1, Ordering::Relaxed);
            WorkerStats::add(&self.stats.rejected_connections, 1);
            // memcached's words; best effort, the socket buffer of a new connection is empty.
            let _ = std::io::Write::write(&mut stream, b"ERROR Too many open connections\r\n");
            log::debug!(
                "listener {}: connection rejected (max_connections)",
                spec.name
            );
            return;
        }
        if !self.client_fds.try_take() {
            // Past here a backend connect could fail with EMFILE and a client's request with
            // it: refuse the newcomer instead, while the descriptors for backends are kept.
            spec.connections.fetch_sub(1, Ordering::Relaxed);
            WorkerStats::add(&self.stats.rejected_connections, 1);
            WorkerStats::add(&self.stats.rejected_connections_fd, 1);
            let _ = std::io::Write::write(&mut stream, b"ERROR Too many open connections\r\n");
            let limit = self.client_fds.limit();
            crate::warn_limited!(
                self.log,
                LogEvent::AcceptFailed,
                None,
                now,
                "connection refused: {limit} clients use every descriptor the open file limit \
                 leaves beside the reserve for backend connections"
            );
            return;
        }
        let idle_timeout = spec.idle_timeout;
        let limits = self
            .listeners
            .get(listener)
            .map(WorkerListener::client_limits);
        let Some(limits) = limits else {
            return;
        };
        if let Err(e) = stream.set_nodelay(true) {
            log::debug!("client TCP_NODELAY: {e}");
        }
        let registry = self.poll.registry();
        let admitted = self
            .clients
            .admit(stream, listener, limits, now, |stream, index| {
                registry.register(
                    stream,
                    Token(CLIENT_BASE + index),
                    Interest::READABLE | Interest::WRITABLE,
                )
            });
        let (index, generation) = match admitted {
            Ok(admitted) => admitted,
            Err(e) => {
                log::warn!("could not register a client: {e}");
                if let Some(spec) = self.listeners.get(listener).map(|l| &l.spec) {
                    spec.connections.fetch_sub(1, Ordering::Relaxed);
                }
                self.client_fds.release();
                return;
            }
        };
        WorkerStats::add(&self.stats.curr_connections, 1);
        WorkerStats::add(&self.stats.total_connections, 1);
        if let Some(idle) = idle_timeout {
            self.timers.schedule(
                now + idle,
                TimerEvent::ClientIdle {
                    client: index,
                    generation,
                },
            );
        }
    }

    pub(super) fn flush_clients(&mut self, now: Instant) {
        let mut list = std::mem::take(&mut self.flush_list);
        self.clients.take_flushes(&mut list);
        for &index in &list {
            self.flush_client(index, now);
        }
        self.flush_list = list;
        // Resumed exchanges may have sent requests that failed at once.
        self.apply_completions(now);
    }

    pub(super) fn flush_client(&mut self, index: usize, now: Instant) {
        let Some(client) = self.clients.get_mut(index) else {
            return;
        };
        let before = client.buffered();
        if !client.is_dead() {
            match client.flush() {
                Ok(n) => WorkerStats::add(&self.stats.bytes_written, n as u64),
                Err(e) => {
                    log::debug!("client write failed: {e}");
                    client.kill();
                }
            }
        }
        let after = client.buffered();
        let finished = client.finished();
        if !finished && client.is_idle() {
            client.shrink_if_idle();
        }
        self.account(before, after);
        if finished {
            self.close_client(index);
            return;
        }
        let Some(client) = self.clients.get_mut(index) else {
            return;
        };
        // A client that drained below its soft limit lets parked exchanges go on; the one
        // answering the head slot goes on once what it can drain has (see may_send_for).
        if client.has_parked() {
            let parked = client.take_parked();
            for id in parked {
                let seq = self.exchanges.get_mut(id).map(|e| e.slot.seq);
                let Some(client) = self.clients.get_mut(index) else {
                    return;
                };
                if seq.is_some_and(|seq| client.may_send_for(seq)) {
                    self.resume_exchange(id, now);
                } else if seq.is_some() {
                    client.park(id);
                }
            }
        }
        let Some(client) = self.clients.get_mut(index) else {
            return;
        };
        // A client that was held back by its limits and has drained is served again.
        if client.is_stalled() && !client.is_closing() && client.may_dispatch() {
            self.clients.revisit(index);
        }
    }

    pub(super) fn close_client(&mut self, index: usize) {
        let Some(mut client) = self.clients.remove(index) else {
            return;
        };
        self.account(client.buffered(), 0);
        self.account_requests(client.request_bytes(), 0);
        // Its exchanges end (replies still in flight for them are drained and dropped), but
        // for those that must go on without it (see `Exchange::outlives_client`).
        for id in client.exchanges() {
            match self.exchanges.get_mut(id) {
                Some(exchange) if exchange.outlives_client() => exchange.detach(),
                _ => {
                    self.exchanges.remove(id);
                }
            }
        }
        if let Err(e) = client.deregister(self.poll.registry()) {
            log::debug!("deregister client: {e}");
        }
        if let Some(listener) = self.listeners.get(client.listener()) {
            listener.spec.connections.fetch_sub(1, Ordering::Relaxed);
        }
        self.client_fds.release();
        WorkerStats::sub(&self.stats.curr_connections, 1);
    }

    /// Over the worker's share of the reply memory budget: close the clients holding the most
    /// reply bytes until it is back under (the biggest offenders pay, not everyone).
    pub(super) fn enforce_budget(&mut self) {
        self.enforce_request_budget();
        self.stats
            .reply_bytes_buffered
            .store(self.buffered as u64, Ordering::Relaxed);
        if self.buffered <= self.reply_budget {
            return;
        }
        let mut holders: Vec<(usize, usize)> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.is_dead())
            .map(|(i, c)| (c.buffered(), i))
            .collect();
        holders.sort_unstable_by(|a, b| b.cmp(a));
        let mut over = self.buffered - self.reply_budget;
        let mut shed = Vec::new();
        for (bytes, index) in holders {
            if over == 0 || bytes == 0 {
                break;
            }
            over = over.saturating_sub(bytes);
            shed.push(index);
        }
        if !shed.is_empty() {
            crate::warn_limited!(
                self.log,
                LogEvent::ClientClosed,
                None,
                Instant::now(),
                "worker {}: {} reply bytes buffered, over the budget of {}: closing the {} clients holding the most",
                self.id,
                self.buffered,
                self.reply_budget,
                shed.len()
            );
        }
        for index in shed {
            WorkerStats::add(&self.stats.clients_shed, 1);
            self.kill_client(index);
            self.flush_client(index, Instant::now());
        }
    }

    /// Over the process's request memory budget (client read buffers holding requests not yet
    /// handed on, such as values still arriving): close this worker's clients holding the most
    /// until the total is back under, or this worker holds nothing more.
    pub(super) fn enforce_request_budget(&mut self) {
        self.stats
            .request_bytes_buffered
            .store(self.request_bytes as u64, Ordering::Relaxed);
        let over = self.request_memory.over();
        if over == 0 || self.request_bytes == 0 {
            return;
        }
        let mut holders: Vec<(usize, usize)> = self
            .clients
            .iter()
            .filter(|(_, c)| !c.is_dead() && c.request_bytes() > 0)
            .map(|(i, c)| (c.request_bytes(), i))
            .collect();
        holders.sort_unstable_by(|a, b| b.cmp(a));
        let mut left = over;
        let mut shed = 0;
        for (bytes, index) in holders {
            if left == 0 {
                break;
            }
            left = left.saturating_sub(bytes);
            shed += 1;
            WorkerStats::add(&self.stats.clients_shed_request_memory, 1);
            self.kill_client(index);
            // Closed now, so the shared total drops before other workers look at it.
            self.flush_client(index, Instant::now());
        }
        crate::warn_limited!(
            self.log,
            LogEvent::ClientClosed,
            None,
            Instant::now(),
            "worker {}: request buffers {} bytes over request_memory_budget: closed the {} clients holding the most",
            self.id,
            over,
            shed
        );
        self.stats
            .request_bytes_buffered
            .store(self.request_bytes as u64, Ordering::Relaxed);
    }

    /// A ready-made reply slot for `client` (answers produced by the proxy itself). A slot that
    /// closes the connection also stops the parsing of anything the client sent after it.
    pub(super) fn answer_locally(&mut self, client: usize, slot: Slot) {
        if let Some(c) = self.clients.get_mut(client) {
            if slot.closes_connection() {
                c.close_after_replies();
            }
            let before = c.buffered();
            c.push_slot(slot);
            let after = c.buffered();
            self.account(before, after);
        }
    }
}
