//! Many seeds of the deterministic simulation (src/sim/): `cargo bench --bench sim --features
//! sim`. `SIM_RUNS` seeds (default 100 000) from `SIM_FROM` (default 0), over `SIM_THREADS`
//! threads (default: the machine's parallelism). Prints runs, failures (each with the command
//! that replays it), known findings met, and runs per second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let from = env("SIM_FROM", 0);
    let runs = env("SIM_RUNS", 100_000);
    let parallel = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    let threads = env("SIM_THREADS", parallel).max(1);
    let next = AtomicU64::new(from);
    let failures = Mutex::new(Vec::new());
    let known = AtomicU64::new(0);
    let checked = AtomicU64::new(0);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next.fetch_add(1, Ordering::Relaxed);
                if seed >= from + runs {
                    break;
                }
                let outcome = bifrost::sim::run(seed, false);
                checked.fetch_add(outcome.checked as u64, Ordering::Relaxed);
                known.fetch_add(outcome.known.len() as u64, Ordering::Relaxed);
                if !outcome.violations.is_empty() {
                    if let Ok(mut f) = failures.lock() {
                        f.push((seed, outcome.violations));
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut failures = failures.into_inner().unwrap_or_default();
    failures.sort_by_key(|f| f.0);
    for (seed, violations) in failures.iter().take(20) {
        println!("seed {seed}: {}", violations.join("; "));
        println!(
            "  replay: SIM_SEED={seed} cargo test --lib sim::tests::replay -- --ignored --nocapture"
        );
    }
    println!(
        "sim: {runs} runs (seeds {from}..{}), {} failures, {} known findings met, {} answers checked, {:.0} runs/s on {threads} threads ({elapsed:.1} s)",
        from + runs,
        failures.len(),
        known.load(Ordering::Relaxed),
        checked.load(Ordering::Relaxed),
        runs as f64 / elapsed.max(1e-9),
    );
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
