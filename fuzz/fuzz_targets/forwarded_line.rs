//! Fuzzes what the proxy forwards: every request `parse_request` accepts is read by memcached's
//! tokenizer exactly as the proxy read it, within memcached's limits, re-parses to the same
//! request, and a split multi-get's per-server lines re-parse with their keys
//! (`checks::check_forwarded_input`).
#![no_main]

use libfuzzer_sys::fuzz_target;

// Shared with tests/fuzz_replay.rs; this target uses only the forwarding checks.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_forwarded_input(data));
