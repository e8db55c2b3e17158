//! Fuzzes what a warming job reads (a metadump stream, replies to `mg` and `ms`): never
//! panics, never frames more than the buffer, never acts on part of a reply.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Shared with tests/fuzz_replay.rs; this target uses only the warming check.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_warm_replies(data));
