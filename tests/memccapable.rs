//! libmemcached's protocol conformance suite (`memccapable -a`, its 27 ASCII tests) against
//! bifrost in front of one real memcached.

mod common;

use common::program::{run, Output};
use common::{Bifrost, Memcached};

/// How many ASCII tests `memccapable -a` runs.
const ASCII_TESTS: usize = 27;

/// What a run printed. memccapable writes each test's name, `[pass]` and (with `-v`) the failed
/// assertions to stdout, buffered when it is a pipe, but `[FAIL]` to stderr unbuffered; merged,
/// they would come out of order, so they are kept apart and the results read from stdout.
struct Run(Output);

impl Run {
    /// Every `ascii <name>` test on stdout, with whether it printed `[pass]`.
    fn results(&self) -> Vec<(String, bool)> {
        self.0
            .stdout
            .split("ascii ")
            .skip(1)
            .map(|segment| {
                let name = segment.split(['[', '\n']).next().unwrap_or("").trim();
                (format!("ascii {name}"), segment.contains("[pass]"))
            })
            .collect()
    }

    fn report(&self, port: u16) -> String {
        self.0
            .describe(&format!("memccapable -a -v -t 5 -h 127.0.0.1 -p {port}"))
    }
}

/// Runs `memccapable -a -v -t 5 -h 127.0.0.1 -p PORT` to the end (60 s deadline).
fn run_memccapable(port: u16) -> Run {
    let port = port.to_string();
    Run(run(
        "memccapable",
        &["-a", "-v", "-t", "5", "-h", "127.0.0.1", "-p", &port],
        "install libmemcached-tools (`apt-get install libmemcached-tools`; CI installs it)",
    ))
}

#[test]
fn memccapable_ascii_suite_passes_through_bifrost() {
    let mc = Memcached::start();
    let bifrost = Bifrost::blind_forward(&mc);
    let run = run_memccapable(bifrost.port());
    let report = run.report(bifrost.port());
    let results = run.results();
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, passed)| !passed)
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} ascii tests did not pass: {failed:?}\n{report}",
        failed.len(),
        results.len()
    );
    assert_eq!(
        results.len(),
        ASCII_TESTS,
        "expected {ASCII_TESTS} ascii tests to run\n{report}"
    );
    let output = format!("{}{}", run.0.stdout, run.0.stderr);
    assert!(
        output.contains("All tests passed"),
        "no `All tests passed` line\n{report}"
    );
    assert!(run.0.status.success(), "{report}");
}
