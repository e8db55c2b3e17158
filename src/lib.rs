//! Bifröst: a memcached proxy.
//!
//! ```text
//!  clients ──► listener (SO_REUSEPORT, one socket per worker)
//!                │ accept
//!                ▼
//!  worker thread: one mio Poll ───────────────────────────────────────────────┐
//!    client conn: read buf ─► parse_request ─► route ─► plan (fragments) ─┐    │
//!                 reply FIFO (slots, in request order) ◄── replies ◄──┐   │    │
//!    backend conn: write queue (writev once per loop) ◄───────────────┼───┘    │
//!                  in-flight FIFO + deadlines ─► parse_reply ─────────┘        │
//!    timer wheel: request deadlines, connect backoff, idle clients              │
//!  ─────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! Workers share nothing on the data path except atomic counters ([`stats`]).

pub mod app;
pub mod backend;
pub mod buffer;
pub mod client;
pub mod clients;
pub mod config;
pub mod dispatch;
pub mod exchange;
pub mod listener;
pub mod log_limit;
pub mod multiget;
pub mod placement;
pub mod protocol;
pub mod route;
pub mod shutdown;
pub mod stats;
pub mod strategy;
pub mod timer;
pub mod worker;
