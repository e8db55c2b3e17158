//! A worker's client connections: the slab they live in, and the two lists the loop works
//! through each iteration (clients to serve, clients to flush). Membership flags live here, so
//! a client is in each list at most once, and a closed client leaves both.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use mio::net::TcpStream;
use slab::Slab;

use crate::frontend::client::{Client, ClientLimits};

/// Every client connection of one worker.
#[derive(Default)]
pub struct Clients {
    slab: Slab<Client>,
    next_generation: u32,
    revisit: Vec<usize>,
    to_flush: Vec<usize>,
    /// Per slab index: (in `revisit`, in `to_flush`).
    listed: Vec<(bool, bool)>,
}

impl Clients {
    /// Stores a new client; returns its index. `register` registers the socket under the
    /// index (it may fail, and then nothing is stored).
    pub fn admit(
        &mut self,
        mut stream: TcpStream,
        listener: usize,
        limits: ClientLimits,
        now: Instant,
        register: impl FnOnce(&mut TcpStream, usize) -> std::io::Result<()>,
    ) -> std::io::Result<(usize, u32)> {
        let entry = self.slab.vacant_entry();
        let index = entry.key();
        register(&mut stream, index)?;
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        entry.insert(Client::new(stream, generation, listener, limits, now));
        if self.listed.len() <= index {
            self.listed.resize(index + 1, (false, false));
        }
        self.revisit(index);
        Ok((index, generation))
    }

    /// Client `index`.
    pub fn get(&self, index: usize) -> Option<&Client> {
        self.slab.get(index)
    }

    /// Client `index`, mutably.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut Client> {
        self.slab.get_mut(index)
    }

    /// Client `index` if it is still the one of `generation`.
    pub fn current(&mut self, index: usize, generation: u32) -> Option<&mut Client> {
        self.slab
            .get_mut(index)
            .filter(|c| c.generation() == generation)
    }

    /// Serve client `index` this iteration.
    pub fn revisit(&mut self, index: usize) {
        if !self.slab.contains(index) {
            return;
        }
        if let Some((queued, _)) = self.listed.get_mut(index) {
            if !*queued {
                *queued = true;
                self.revisit.push(index);
            }
        }
    }

    /// Flush client `index` this iteration.
    pub fn flush_later(&mut self, index: usize) {
        if !self.slab.contains(index) {
            return;
        }
        if let Some((_, pending)) = self.listed.get_mut(index) {
            if !*pending {
                *pending = true;
                self.to_flush.push(index);
            }
        }
    }

    /// True when some client waits to be served (the poll must not sleep).
    pub fn has_revisits(&self) -> bool {
        !self.revisit.is_empty()
    }

    /// The clients to serve, emptied (their flags cleared).
    pub fn take_revisits(&mut self, into: &mut Vec<usize>) {
        into.clear();
        into.append(&mut self.revisit);
        for &i in into.iter() {
            if let Some((queued, _)) = self.listed.get_mut(i) {
                *queued = false;
            }
        }
    }

    /// The clients to flush, emptied (their flags cleared).
    pub fn take_flushes(&mut self, into: &mut Vec<usize>) {
        into.clear();
        into.append(&mut self.to_flush);
        for &i in into.iter() {
            if let Some((_, pending)) = self.listed.get_mut(i) {
                *pending = false;
            }
        }
    }

    /// Removes client `index`, out of both lists.
    pub fn remove(&mut self, index: usize) -> Option<Client> {
        let client = self.slab.try_remove(index)?;
        // A later client may take this slab entry: it must not inherit list memberships.
        self.revisit.retain(|&i| i != index);
        self.to_flush.retain(|&i| i != index);
        if let Some(flags) = self.listed.get_mut(index) {
            *flags = (false, false);
        }
        Some(client)
    }

    /// Indices of every client.
    pub fn indices(&self) -> Vec<usize> {
        self.slab.iter().map(|(i, _)| i).collect()
    }

    /// (index, client) of every client.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Client)> {
        self.slab.iter()
    }

    /// Number of clients.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }
}

/// The process-wide budget of memory held by client read buffers for requests not yet handed
/// on (`request_memory_budget`), shared by every worker: each adds what its clients hold as it
/// changes, and a worker that finds the total over the limit closes its clients holding the
/// most until it is back under.
#[derive(Debug)]
pub struct RequestMemory {
    limit: usize,
    held: AtomicUsize,
}

impl RequestMemory {
    /// A budget of `limit` bytes, nothing held.
    pub fn new(limit: usize) -> RequestMemory {
        RequestMemory {
            limit: limit.max(1),
            held: AtomicUsize::new(0),
        }
    }

    /// Records that a worker's clients now hold `after` bytes instead of `before`.
    #[inline]
    pub fn changed(&self, before: usize, after: usize) {
        if after > before {
            self.held.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.held.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Bytes by which every worker's clients together are over the budget (0 when under).
    pub fn over(&self) -> usize {
        self.held.load(Ordering::Relaxed).saturating_sub(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use super::RequestMemory;

    #[test]
    fn the_budget_is_over_by_what_every_worker_holds_past_it() {
        let budget = RequestMemory::new(100);
        budget.changed(0, 60);
        assert_eq!(budget.over(), 0);
        budget.changed(0, 70); // another worker
        assert_eq!(budget.over(), 30);
        budget.changed(60, 10);
        assert_eq!(budget.over(), 0, "back under once a holder shrinks");
        budget.changed(70, 0);
        budget.changed(10, 0);
        assert_eq!(budget.over(), 0);
    }
}
