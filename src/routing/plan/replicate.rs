//! Replication (the `replicate` side effect, see [`crate::upstream::side_effects`]): a write on
//! a route with replicas is copied, as it is, to the key's server in each target pool. The
//! copies are side-effect requests of the plan, queued with it; the client's answer never waits
//! for them.

use bytes::Bytes;

use super::Planner;
use crate::exchange::{Framing, Send};
use crate::protocol::Request;

impl Planner {
    /// Copies a write on route `route` to every `replicate` side effect of that route that
    /// copies its command: the same bytes, to the target pool's server for `key`.
    pub(super) fn replicate(&mut self, route: usize, request: &Request, bytes: &Bytes, key: &[u8]) {
        for (effect, pool) in self.effects.replicas_of(route, request.command) {
            let Some(server) = self.strategies.server_in(&self.router, pool, key) else {
                continue;
            };
            self.side.push((
                effect,
                Send {
                    server,
                    part: 0,
                    bytes: bytes.clone(),
                    value: None,
                    framing: Framing::of(request),
                    stream: false,
                },
            ));
        }
    }
}
