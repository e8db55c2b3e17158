//! Planning for the strategies that give each key one server: `blind_forward` (the backend's
//! one server), `consistent_hash` (the key's server on the pool's ring) and `round_robin` (the
//! pool's next usable server in turn, kept for the rest of a multi-key request). The server
//! itself is picked by [`crate::routing::strategy`]. A request whose keys share one server, up
//! to one window of keys, is forwarded as it is; otherwise it is a multi-key retrieval.

use bytes::Bytes;

use super::{Context, Plan, Planner, Whole};
use crate::exchange::Tag;

impl Planner {
    /// A request whose (first) key, `key`, takes route `route`, a route with one server per
    /// key.
    pub(super) fn plan_one_server(
        &mut self,
        cx: &Context,
        (request, bytes, key): Whole,
        route: usize,
        tag: Option<Tag>,
    ) -> Plan {
        let mut memo = None;
        let Some(server) = self.pick_on_route(route, key, cx, &mut memo, true) else {
            return self.no_route(cx, request, bytes.clone(), (1, memo), tag);
        };
        if request.key_count > 1 {
            let mut checked = 1;
            for key in request.keys(bytes).skip(1) {
                checked += 1;
                let other = self.pick_server(cx, request.command, key, &mut memo, true);
                if other != Some(server) {
                    let routed = (checked, memo);
                    return self.plan_retrieval(cx, request, bytes.clone(), routed, tag);
                }
            }
        }
        if request.key_count > cx.multiget_window.max(1) {
            // One server, but more keys than one window: released in windows.
            let routed = (usize::MAX, memo);
            return self.plan_retrieval(cx, request, bytes.clone(), routed, tag);
        }
        self.forward(request, Bytes::clone(bytes), server, tag)
    }
}
