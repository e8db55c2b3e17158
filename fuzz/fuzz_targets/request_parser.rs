//! Fuzzes `parse_request`: whole buffers, every pipelined request in them, and the buffer split
//! in two (the prefix must parse as `Incomplete` or exactly like the whole).
#![no_main]

use libfuzzer_sys::fuzz_target;

// Shared with tests/fuzz_replay.rs; this target uses only the request checks.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_request(data));
