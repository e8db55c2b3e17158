//! Fuzzes the configuration loader: any bytes, read as a YAML document, must load or be
//! refused with errors, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Shared with tests/fuzz_replay.rs; this target uses only the config check.
#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

fuzz_target!(|data: &[u8]| checks::check_config(data));
