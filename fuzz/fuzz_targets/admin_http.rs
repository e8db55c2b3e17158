//! Fuzzes the admin API's HTTP request parser: never panics, never takes more than the buffer,
//! and never acts on part of a request.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Shared with tests/fuzz_replay.rs; this target uses only the admin HTTP check.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_admin_http(data));
