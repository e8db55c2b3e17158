//! Fuzzes the binary protocol's translations: request frames into text requests, text replies
//! into response frames (see `checks::check_binary`).
#![no_main]

use libfuzzer_sys::fuzz_target;

// Shared with tests/fuzz_replay.rs; this target uses only the binary check.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_binary(data));
