//! The simulation's budget in `cargo test`, and the replay of one seed.

use super::run;

/// Seeds run by `cargo test`, in shards the test harness runs side by side (about 180 runs
/// a second per core in a debug build).
const RUNS: u64 = 800;
const SHARDS: u64 = 4;

fn report(outcome: &super::Outcome) -> String {
    format!(
        "sim seed {} failed:\n  {}\nreplay: SIM_SEED={} cargo test --lib sim::tests::replay -- --ignored --nocapture",
        outcome.seed,
        outcome.violations.join("\n  "),
        outcome.seed
    )
}

fn shard(n: u64) {
    let per = RUNS / SHARDS;
    for seed in n * per..(n + 1) * per {
        let outcome = run(seed, false);
        assert!(outcome.violations.is_empty(), "{}", report(&outcome));
    }
}

#[test]
fn seeded_runs_keep_every_invariant_0() {
    shard(0);
}

#[test]
fn seeded_runs_keep_every_invariant_1() {
    shard(1);
}

#[test]
fn seeded_runs_keep_every_invariant_2() {
    shard(2);
}

#[test]
fn seeded_runs_keep_every_invariant_3() {
    shard(3);
}

#[test]
fn a_seed_replays_the_same_run() {
    // The first seed whose run fires lease timers (its clock and wake-ups must replay too).
    let timers = (0..200)
        .find(|&seed| run(seed, false).counts.get("timer fired") > Some(&2))
        .expect("a seed with lease timers");
    for seed in [3, 42, 662, timers] {
        let (a, b) = (run(seed, true), run(seed, true));
        assert_eq!(a.trace, b.trace, "seed {seed} ran differently twice");
        assert!(a.trace.len() > 10);
    }
}

/// Replays `SIM_SEED` with a trace.
#[test]
#[ignore]
fn replay() {
    let seed = std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let outcome = run(seed, true);
    for line in &outcome.trace {
        println!("{line}");
    }
    assert!(outcome.violations.is_empty(), "{}", report(&outcome));
}

/// Runs `SIM_RUNS` seeds from `SIM_FROM` and prints the first seed of each kind of failure.
#[test]
#[ignore]
fn explore() {
    let from: u64 = std::env::var("SIM_FROM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let runs: u64 = std::env::var("SIM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    let mut kinds: Vec<(String, u64, usize)> = Vec::new();
    let mut known: Vec<(&'static str, u64, usize)> = Vec::new();
    let mut counts = std::collections::BTreeMap::new();
    let mut checked = 0;
    let mut failing = Vec::new();
    for seed in from..from + runs {
        let outcome = run(seed, false);
        if !outcome.violations.is_empty() {
            failing.push(seed);
        }
        checked += outcome.checked;
        for k in &outcome.known {
            *counts.entry("known finding").or_insert(0) += 1;
            let kind = known_kind(k);
            match known.iter_mut().find(|(name, _, _)| *name == kind) {
                Some(entry) => entry.2 += 1,
                None => {
                    println!("seed {seed}: known: {k}");
                    known.push((kind, seed, 1));
                }
            }
        }
        for (k, v) in &outcome.counts {
            *counts.entry(*k).or_insert(0) += v;
        }
        for v in &outcome.violations {
            let kind: String = v
                .split(|c: char| c.is_ascii_digit())
                .collect::<Vec<_>>()
                .join("#")
                .chars()
                .take(70)
                .collect();
            match kinds.iter_mut().find(|k| k.0 == kind) {
                Some(k) => k.2 += 1,
                None => {
                    println!("seed {seed}: {v}");
                    kinds.push((kind, seed, 1));
                }
            }
        }
    }
    println!("{checked} answers checked; {counts:?}");
    println!(
        "{} of {runs} seeds failed; the first: {:?}",
        failing.len(),
        failing.iter().take(5).collect::<Vec<_>>()
    );
    for (kind, seed, count) in &kinds {
        println!("{count:6} first seed {seed:6}: {kind}");
    }
    for (kind, seed, count) in &known {
        println!("{count:6} first seed {seed:6}: known: {kind}");
    }
}

/// The kind of a known finding: the name it starts with.
fn known_kind(finding: &str) -> &'static str {
    use super::driver::{ORPHANED_WARM_STEP, WARM_STORED_REFUSED};
    use super::run::CROSSED_WRITES;
    [WARM_STORED_REFUSED, ORPHANED_WARM_STEP, CROSSED_WRITES]
        .into_iter()
        .find(|name| finding.contains(name))
        .unwrap_or("other")
}
