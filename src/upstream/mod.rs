//! Connections from a worker to memcached servers.
//!
//! * [`conn`]: one backend connection's state machine (connect, write queue, in-flight FIFO,
//!   reply framing through its wire, deadlines, reset).
//! * [`fragment`]: what a backend connection knows about each request it carries, who owns
//!   its reply, and how a failed one is answered.
//! * [`pool`]: a worker's connections to every server, and which need flushing.
//! * [`wire`]: what a connection speaks ([`wire::BackendWire`]): how a request is written and
//!   the reply stream framed; memcached text ([`wire::MemcacheText`]) or HTTP to an origin
//!   ([`origin::HttpWire`]), chosen per server by [`any_wire::AnyWire`].

pub mod any_wire;
pub mod conn;
pub mod fragment;
pub mod jobs;
pub mod origin;
pub mod pool;
pub mod resolver;
pub mod send;
pub mod side_effects;
pub mod wire;

pub use conn::BackendConn;
pub use fragment::{Completion, FailReason, Failure, Fragment, Owner};
pub use pool::{Backends, ConnTimer};
pub use send::{Framing, Send};
