//! What the process knows about itself and its servers, shared by the threads that write it
//! and the ones that report it: per-worker counter blocks and latency histograms (each with a
//! single writer), and the health board of the servers.

pub mod counter;
pub mod health;
pub mod histogram;
pub mod stats;
