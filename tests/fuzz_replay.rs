//! Replays the fuzz seed corpora (`fuzz/corpus/*/`) and any local fuzz findings
//! (`fuzz/artifacts/*/`) through the same invariant checks the fuzz targets run, on the stable
//! toolchain, so `cargo test` catches a regression without cargo-fuzz.

use std::fs;
use std::path::{Path, PathBuf};

#[path = "../fuzz/checks.rs"]
mod checks;

/// The regular files directly inside each subdirectory of `dir` (none if `dir` is missing).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(subdirs) = fs::read_dir(dir) else {
        return files;
    };
    for subdir in subdirs.flatten() {
        let Ok(entries) = fs::read_dir(subdir.path()) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    files
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Every seed and every finding, whatever target it was found by.
fn inputs() -> Vec<(PathBuf, Vec<u8>)> {
    let mut paths = files_under(&fuzz_dir().join("corpus"));
    paths.extend(files_under(&fuzz_dir().join("artifacts")));
    paths
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect()
}

#[test]
fn seed_corpora_are_present() {
    for target in [
        "request_parser",
        "reply_parser",
        "config_loader",
        "admin_http",
        "forwarded_line",
        "binary_protocol",
        "http_response",
    ] {
        let dir = fuzz_dir().join("corpus").join(target);
        let count = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .count();
        assert!(count >= 10, "{}: only {count} seeds", dir.display());
    }
}

#[test]
fn replay_request_parser() {
    for (path, bytes) in inputs() {
        eprintln!("request_parser <- {}", path.display());
        checks::check_request(&bytes);
    }
}

#[test]
fn replay_reply_parser() {
    for (path, bytes) in inputs() {
        eprintln!("reply_parser <- {}", path.display());
        checks::check_reply(&bytes);
    }
}

#[test]
fn replay_config_loader() {
    for (path, bytes) in inputs() {
        eprintln!("config_loader <- {}", path.display());
        checks::check_config(&bytes);
    }
}

#[test]
fn replay_admin_http() {
    for (path, bytes) in inputs() {
        eprintln!("admin_http <- {}", path.display());
        checks::check_admin_http(&bytes);
    }
}

#[test]
fn replay_warm_replies() {
    for (path, bytes) in inputs() {
        eprintln!("warm_replies <- {}", path.display());
        checks::check_warm_replies(&bytes);
    }
}

#[test]
fn replay_forwarded_line() {
    for (path, bytes) in inputs() {
        eprintln!("forwarded_line <- {}", path.display());
        checks::check_forwarded_input(&bytes);
    }
}

#[test]
fn replay_binary_protocol() {
    for (path, bytes) in inputs() {
        eprintln!("binary_protocol <- {}", path.display());
        checks::check_binary(&bytes);
    }
}

#[test]
fn replay_http_response() {
    for (path, bytes) in inputs() {
        eprintln!("http_response <- {}", path.display());
        checks::check_http(&bytes);
        checks::check_http_wire(&bytes);
    }
}
