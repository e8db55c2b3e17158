//! Fuzzes the framing of an HTTP origin's responses: heads and chunked bodies (see
//! `checks::check_http`), and the origin wire that reads them into memcached replies
//! (`checks::check_http_wire`).
#![no_main]

use libfuzzer_sys::fuzz_target;

// Shared with tests/fuzz_replay.rs; this target uses only the HTTP check.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| {
    checks::check_http(data);
    checks::check_http_wire(data);
});
