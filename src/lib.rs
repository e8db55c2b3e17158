//! Bifröst: a memcached proxy.
//!
//! ```text
//!  clients ──► listener (SO_REUSEPORT, one socket per worker)
//!                │ accept
//!                ▼
//!  worker thread: one mio Poll, a thin reactor over parts with one job each ──────────┐
//!    clients:   read buf ─► parse_request ─► dispatch: local answer, or               │
//!               route ─► strategy ─► exchange                                         │
//!               FIFO of reply slots (order only) ◄── pieces ◄──┐                      │
//!    exchanges: one state machine per request (forward, retrieval, failover, ...):    │
//!               told each reply, answers deliver / send next / done / parked          │
//!    backends:  write queue (writev once per loop), in-flight FIFO + deadlines,       │
//!               incremental ReplyFramer ─► Completion (piece, end or failure) ─┘      │
//!    timers:    request deadlines, connect backoff, idle and slow clients             │
//!  ───────────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Workers share nothing on the data path except atomic counters ([`stats`]).

pub mod admin;
pub mod app;
pub mod config;
pub mod exchange;
pub(crate) mod frontend;
pub mod observe;
pub mod protocol;
pub mod routing;
pub(crate) mod runtime;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub(crate) mod upstream;
pub mod warming;
#[doc(hidden)]
pub use upstream::origin::answers_for_fuzzing as origin_answers_for_fuzzing;
pub(crate) mod worker;
