//! Connections from a worker to memcached servers.
//!
//! * [`conn`]: one backend connection's state machine (connect, write queue, in-flight FIFO,
//!   reply framing, deadlines, reset).
//! * [`fragment`]: what a backend connection knows about each request it carries, and how a
//!   failed one is answered.

pub mod conn;
pub mod fragment;

pub use conn::BackendConn;
pub use fragment::{Completion, FailReason, Failure, Fragment, Owner};
