//! A deterministic simulation of the exchange layer: the real planner and exchanges, driven
//! as the worker drives them, against simulated memcached servers and clients, with faults,
//! every step chosen by one seeded generator.

pub mod backend;
pub mod check;
pub mod client;
pub mod driver;
pub mod rng;
pub mod run;
pub mod store;
pub mod workload;

#[cfg(test)]
mod tests;

pub use run::{run, Outcome};
