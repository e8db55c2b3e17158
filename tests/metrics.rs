//! The admin API's metrics through the real binary: a known load over real memcached (and a
//! fake that never answers, for timeouts), then `/metrics` checked by `promtool check metrics`
//! and read back series by series, `/stats` (JSON) and the memcached `stats` command compared
//! with it, the per-server gauges followed through an ejection, and a refused client and a
//! replication queue to a dead replica counted.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::http::HttpClient;
use common::{free_port, promtool_check, wait_until, Behavior, Bifrost, FakeBackend, Memcached};

/// Every sample of a Prometheus text exposition: `name{labels}` → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no series {series} in /metrics"))
}

/// A config with route `main` (consistent_hash over memcached `mc`, health-checked) and route
/// `slow` (keys `slow:*`, blind_forward to `slow`, 200 ms timeout), and the admin API.
fn config(port: u16, admin: u16, mc: &str, slow: &str) -> String {
    format!(
        "workers: 2\n\
         admin: {{bind: '127.0.0.1:{admin}'}}\n\
         listeners:\n  - {{name: main, bind: '127.0.0.1:{port}'}}\n\
         backends:\n\
         \x20 cache:\n    servers: ['{mc}']\n    health: {{interval: 100ms, failure_limit: 1, retry_after: 30s}}\n\
         \x20 slowpool:\n    servers: ['{slow}']\n    timeout: 200ms\n\
         routes:\n\
         \x20 - {{name: slow, match: 'slow:*', strategy: blind_forward, backend: slowpool}}\n\
         \x20 - {{name: main, match: '*', strategy: consistent_hash, backend: cache}}\n"
    )
}

fn start(mc: &str, slow: &str) -> (Bifrost, String) {
    let mut admin = 0;
    let bifrost = Bifrost::start_templated(
        |port| {
            admin = free_port();
            config(port, admin, mc, slow)
        },
        &[],
    );
    (bifrost, format!("127.0.0.1:{admin}"))
}

#[test]
fn metrics_count_a_known_load_pass_promtool_and_agree_with_stats() {
    let mc = Memcached::start();
    let slow = FakeBackend::start(Behavior::NeverAnswer);
    let (bifrost, admin) = start(&mc.addr(), &slow.addr());
    let mut c = bifrost.client();
    for i in 0..5 {
        assert_eq!(c.set(&format!("k{i}"), b"value", 0, 0), "STORED");
    }
    for i in 0..3 {
        assert!(c.get(&format!("k{i}")).is_some());
    }
    for i in 0..2 {
        assert!(c.get(&format!("absent{i}")).is_none());
    }
    c.send(b"get k3 k4 absent9\r\n");
    let items = c.read_values().expect("a multi-get reply");
    assert_eq!(items.len(), 2, "two hits and a miss");
    c.send(b"mg k0 v\r\n");
    assert_eq!(
        (c.read_line(), c.read_line()),
        ("VA 5".into(), "value".into())
    );
    assert!(c.get("slow:x").is_none(), "a timeout answers a miss");

    let mut http = HttpClient::connect(&admin);
    let metrics = http.get("/metrics");
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    promtool_check(&text);
    let m = samples(&text);
    let series = |name: &str, route: &str, command: &str| {
        value(
            &m,
            &format!("{name}{{route=\"{route}\",command=\"{command}\"}}"),
        )
    };
    assert_eq!(series("bifrost_requests_total", "main", "set"), 5.0);
    assert_eq!(series("bifrost_requests_total", "main", "get"), 6.0);
    assert_eq!(series("bifrost_hits_total", "main", "get"), 5.0);
    assert_eq!(series("bifrost_misses_total", "main", "get"), 3.0);
    assert_eq!(series("bifrost_requests_total", "main", "mg"), 1.0);
    assert_eq!(series("bifrost_hits_total", "main", "mg"), 1.0);
    assert_eq!(series("bifrost_errors_total", "main", "get"), 0.0);
    assert_eq!(series("bifrost_requests_total", "slow", "get"), 1.0);
    assert_eq!(series("bifrost_misses_total", "slow", "get"), 1.0);
    assert_eq!(series("bifrost_errors_total", "slow", "get"), 1.0);
    assert_eq!(series("bifrost_timeouts_total", "slow", "get"), 1.0);

    // Every answered request is in its route's histogram, the timeout in a bucket over 200 ms.
    let route_count = value(&m, "bifrost_request_duration_seconds_count{route=\"main\"}");
    assert_eq!(route_count, 12.0, "5 sets, 6 gets, 1 mg");
    let slow_fast = value(
        &m,
        "bifrost_request_duration_seconds_bucket{route=\"slow\",le=\"0.1\"}",
    );
    let slow_all = value(
        &m,
        "bifrost_request_duration_seconds_bucket{route=\"slow\",le=\"+Inf\"}",
    );
    assert_eq!((slow_fast, slow_all), (0.0, 1.0));
    let slow_sum = value(&m, "bifrost_request_duration_seconds_sum{route=\"slow\"}");
    assert!(
        (0.2..5.0).contains(&slow_sum),
        "the timeout took its 200 ms: {slow_sum}"
    );
    let server = format!("backend=\"cache\",server=\"{}\"", mc.addr());
    let sent = value(&m, &format!("bifrost_server_requests_total{{{server}}}"));
    let timed = value(
        &m,
        &format!("bifrost_server_request_duration_seconds_count{{{server}}}"),
    );
    assert_eq!(sent, 12.0, "one backend request per client request here");
    assert_eq!(timed, sent, "every reply is in the server's histogram");
    assert_eq!(value(&m, &format!("bifrost_server_up{{{server}}}")), 1.0);
    let slow_server = format!("backend=\"slowpool\",server=\"{}\"", slow.addr());
    assert_eq!(
        value(
            &m,
            &format!("bifrost_server_timeouts_total{{{slow_server}}}")
        ),
        1.0
    );
    assert!(value(&m, "bifrost_client_connections") >= 1.0);
    let connects = value(&m, &format!("bifrost_server_connects_total{{{server}}}"));
    assert!(
        (1.0..=2.0).contains(&connects),
        "each of the 2 workers connects at most once: {connects}"
    );

    // /stats and the memcached `stats` command read the same counters.
    let stats = http.get("/stats");
    assert_eq!(stats.status, 200);
    let doc = stats.json();
    let main = doc["routes"]
        .as_array()
        .and_then(|routes| routes.iter().find(|r| r["name"] == "main"))
        .unwrap_or_else(|| panic!("no route main in /stats: {doc}"));
    assert_eq!(main["commands"]["get"]["hits"], 5);
    assert_eq!(main["commands"]["get"]["misses"], 3);
    assert_eq!(main["commands"]["set"]["requests"], 5);
    assert_eq!(main["latency"]["count"], 12);
    assert_eq!(c.stat("route:main:get:hits"), 5);
    assert_eq!(c.stat("route:main:get:misses"), 3);
    assert_eq!(c.stat("route:slow:get:timeouts"), 1);
    assert_eq!(doc["counters"]["get_hits"], c.stat("get_hits"));
}

#[test]
fn a_server_held_down_shows_up_0_and_an_ejection_and_ready_turns_503() {
    let mut mc = Memcached::start();
    let slow = FakeBackend::start(Behavior::SlowAnswer(Duration::ZERO));
    let (_bifrost, admin) = start(&mc.addr(), &slow.addr());
    let server = format!("backend=\"cache\",server=\"{}\"", mc.addr());
    let mut http = HttpClient::connect(&admin);
    let m = samples(&http.get("/metrics").text());
    assert_eq!(value(&m, &format!("bifrost_server_up{{{server}}}")), 1.0);
    assert_eq!(
        value(&m, &format!("bifrost_server_ejections_total{{{server}}}")),
        0.0
    );
    mc.kill();
    wait_until(Duration::from_secs(10), "server_up turns 0", || {
        let m = samples(&http.get("/metrics").text());
        value(&m, &format!("bifrost_server_up{{{server}}}")) == 0.0
    });
    let text = http.get("/metrics").text();
    promtool_check(&text);
    let m = samples(&text);
    assert_eq!(
        value(&m, &format!("bifrost_server_ejections_total{{{server}}}")),
        1.0
    );
    let ready = http.get("/ready");
    assert_eq!(
        (ready.status, ready.text().as_str()),
        (503, "main\n"),
        "route main has no healthy server; route slow still has its own"
    );
}

#[test]
fn rejected_clients_and_side_effect_queues_show_in_metrics() {
    // Two clients at a time, and every set copied to a replica that is not there.
    let mc = Memcached::start();
    let replica = common::tiers::dead_addr();
    let mut admin = 0;
    let bifrost = Bifrost::start_templated(
        |port| {
            admin = free_port();
            format!(
                "workers: 1\n\
                 admin: {{bind: '127.0.0.1:{admin}'}}\n\
                 listeners:\n  - {{name: main, bind: '127.0.0.1:{port}', max_connections: 2}}\n\
                 backends:\n  cache: {{servers: ['{}']}}\n  replica: {{servers: ['{replica}']}}\n\
                 routes: [{{name: main, match: '*', strategy: consistent_hash, backend: cache}}]\n\
                 side_effects:\n  - replicate: {{routes: [main], to: replica, commands: [set]}}\n",
                mc.addr()
            )
        },
        &[],
    );
    let mut http = HttpClient::connect(&format!("127.0.0.1:{admin}"));
    let metric =
        |http: &mut HttpClient, series: &str| value(&samples(&http.get("/metrics").text()), series);
    let mut c = bifrost.client();
    // The harness's readiness probe may not be closed on the proxy's side yet.
    wait_until(Duration::from_secs(5), "only our client is open", || {
        metric(&mut http, "bifrost_client_connections") == 1.0
    });
    for i in 0..3 {
        assert_eq!(c.set(&format!("r{i}"), b"v", 0, 0), "STORED");
    }
    let mut second = bifrost.client();
    assert!(second.version().starts_with("VERSION "));
    let mut turned_away = bifrost.client();
    let refusal = turned_away.read_line();
    assert_eq!(refusal, "ERROR Too many open connections");
    turned_away.expect_closed();
    wait_until(Duration::from_secs(5), "the copies fail", || {
        metric(
            &mut http,
            "bifrost_side_effect_failed_total{effect=\"replicate.0\"}",
        ) == 3.0
    });
    let text = http.get("/metrics").text();
    promtool_check(&text);
    let m = samples(&text);
    assert_eq!(value(&m, "bifrost_client_connections_rejected_total"), 1.0);
    assert_eq!(value(&m, "bifrost_client_connections"), 2.0);
    let effect = |name: &str| {
        value(
            &m,
            &format!("bifrost_side_effect_{name}{{effect=\"replicate.0\"}}"),
        )
    };
    assert_eq!(
        (
            effect("queued_total"),
            effect("done_total"),
            effect("dropped_total"),
            effect("queue_depth")
        ),
        (3.0, 0.0, 0.0, 0.0)
    );
}
