//! The wire a worker's connections speak, chosen per server: memcached text, or HTTP for an
//! origin (SPEC §13). An enum, not a trait object: each call is one predictable branch and
//! the memcached path stays inlinable.

use std::sync::Arc;

use super::origin::HttpWire;
use super::wire::{BackendWire, Framed, MemcacheText};
use super::{FailReason, Fragment, Send};
use crate::config::ServerSpec;
use crate::observe::stats::DetailStats;
use crate::runtime::buffer::{ReadBuf, WriteQueue};

/// Memcached text or HTTP, as the server's spec says.
#[derive(Debug)]
pub enum AnyWire {
    /// A memcached server.
    Text(MemcacheText),
    /// An HTTP origin.
    Http(Box<HttpWire>),
}

impl BackendWire for AnyWire {
    fn new(server: &ServerSpec, index: usize, detail: Option<&Arc<DetailStats>>) -> Self {
        match server.origin {
            Some(_) => AnyWire::Http(Box::new(HttpWire::new_for(server, index, detail))),
            None => AnyWire::Text(MemcacheText::default()),
        }
    }

    #[inline]
    fn encode(
        &mut self,
        send: &Send,
        fragment: &mut Fragment,
        queue: &mut WriteQueue,
    ) -> Result<(), FailReason> {
        match self {
            AnyWire::Text(wire) => wire.encode(send, fragment, queue),
            AnyWire::Http(wire) => wire.encode(send, fragment, queue),
        }
    }

    #[inline]
    fn frame(&mut self, buf: &mut ReadBuf, head: &Fragment) -> Result<Framed, &'static str> {
        match self {
            AnyWire::Text(wire) => wire.frame(buf, head),
            AnyWire::Http(wire) => wire.frame(buf, head),
        }
    }

    #[inline]
    fn ready(&self) -> bool {
        match self {
            AnyWire::Text(_) => false,
            AnyWire::Http(wire) => wire.ready(),
        }
    }

    #[inline]
    fn reconnects(&self) -> bool {
        matches!(self, AnyWire::Http(_))
    }

    #[inline]
    fn closing(&self) -> bool {
        match self {
            AnyWire::Text(_) => false,
            AnyWire::Http(wire) => wire.closing(),
        }
    }

    fn replay(&mut self, queue: &mut WriteQueue) -> bool {
        match self {
            AnyWire::Text(wire) => wire.replay(queue),
            AnyWire::Http(wire) => wire.replay(queue),
        }
    }

    fn reset(&mut self) {
        match self {
            AnyWire::Text(wire) => wire.reset(),
            AnyWire::Http(wire) => wire.reset(),
        }
    }
}
