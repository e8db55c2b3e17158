//! A deterministic simulation of the exchange layer: the real planner and exchanges, driven
//! as the worker drives them, against simulated memcached servers and clients, with faults,
//! every step chosen by one seeded generator (see docs/testing.md, "Simulation").

pub mod rng;
pub mod store;
