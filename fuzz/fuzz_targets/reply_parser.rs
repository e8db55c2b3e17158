//! Fuzzes `parse_reply` with every `ReplyKind`: never panics, never frames more than the
//! buffer, and a prefix of a framed reply is incomplete.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Shared with tests/fuzz_replay.rs; this target uses only the reply checks.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_reply(data));
