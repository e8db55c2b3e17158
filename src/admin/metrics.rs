//! The proxy's counters rendered for the admin API: Prometheus text (`GET /metrics`), JSON
//! (`GET /stats`), and readiness (`GET /ready`).
//!
//! Both renderings read the same counters as the memcached `stats` command
//! ([`StatsRegistry::render`]): every worker's blocks summed at the moment of the scrape.

use std::fmt::Write;

use serde_json::{json, Map, Value};

use crate::observe::health::HealthBoard;
use crate::observe::histogram::HistogramSnapshot;
use crate::observe::stats::{CommandTotals, StatsRegistry};
use crate::protocol::Command;
use crate::routing::Router;

/// The process-wide counters: (stats name, metric name, type, help). Every `stats` counter
/// appears here once, under its Prometheus name.
const PROCESS_METRICS: &[(&str, &str, Kind, &str)] = &[
    (
        "curr_connections",
        "bifrost_client_connections",
        Kind::Gauge,
        "Client connections open.",
    ),
    (
        "total_connections",
        "bifrost_client_connections_accepted_total",
        Kind::Counter,
        "Client connections accepted.",
    ),
    (
        "rejected_connections",
        "bifrost_client_connections_rejected_total",
        Kind::Counter,
        "Client connections refused at a listener's max_connections or for the descriptor reserve.",
    ),
    (
        "rejected_connections_fd",
        "bifrost_client_connections_rejected_fd_total",
        Kind::Counter,
        "Client connections refused because the open file limit leaves no room beside the descriptors reserved for backend connections.",
    ),
    (
        "clients_shed",
        "bifrost_clients_shed_total",
        Kind::Counter,
        "Clients closed because the process was over its reply memory budget.",
    ),
    (
        "clients_closed_hard_limit",
        "bifrost_clients_closed_hard_limit_total",
        Kind::Counter,
        "Clients closed over their hard limit of buffered reply bytes.",
    ),
    (
        "clients_closed_slow_request",
        "bifrost_clients_closed_slow_request_total",
        Kind::Counter,
        "Clients closed because a started request did not arrive in time.",
    ),
    (
        "client_errors",
        "bifrost_client_errors_total",
        Kind::Counter,
        "Client requests refused as malformed or over a limit.",
    ),
    (
        "no_route",
        "bifrost_no_route_total",
        Kind::Counter,
        "Keys that matched no route.",
    ),
    (
        "bytes_read",
        "bifrost_client_read_bytes_total",
        Kind::Counter,
        "Bytes read from clients.",
    ),
    (
        "bytes_written",
        "bifrost_client_written_bytes_total",
        Kind::Counter,
        "Bytes written to clients.",
    ),
    (
        "reply_bytes_buffered",
        "bifrost_reply_buffer_bytes",
        Kind::Gauge,
        "Reply bytes held for clients and not yet written.",
    ),
    (
        "request_bytes_buffered",
        "bifrost_request_buffer_bytes",
        Kind::Gauge,
        "Memory held by client read buffers for requests not yet handed on.",
    ),
    (
        "clients_shed_request_memory",
        "bifrost_clients_shed_request_memory_total",
        Kind::Counter,
        "Clients closed because the process was over its request memory budget.",
    ),
    (
        "backend_requests",
        "bifrost_backend_requests_total",
        Kind::Counter,
        "Requests sent to backend servers for clients.",
    ),
    (
        "backend_errors",
        "bifrost_backend_errors_total",
        Kind::Counter,
        "Backend requests that failed (timeouts included).",
    ),
    (
        "backend_timeouts",
        "bifrost_backend_timeouts_total",
        Kind::Counter,
        "Backend requests that failed by their deadline.",
    ),
    (
        "backend_overloaded",
        "bifrost_backend_overloaded_total",
        Kind::Counter,
        "Requests refused at once because a server had max_queued_requests queued.",
    ),
    (
        "side_effect_resets",
        "bifrost_side_effect_connection_resets_total",
        Kind::Counter,
        "Resets of side-effect connections that failed side-effect requests (timeouts included).",
    ),
    (
        "side_effect_timeouts",
        "bifrost_side_effect_connection_timeouts_total",
        Kind::Counter,
        "Resets of side-effect connections caused by a side-effect request's deadline.",
    ),
    (
        "lease_wins",
        "bifrost_lease_wins_total",
        Kind::Counter,
        "Reads on a warm_first route with leases that got the lease on a warm miss and read cold.",
    ),
    (
        "lease_waits",
        "bifrost_lease_waits_total",
        Kind::Counter,
        "Reads that found another reader's lease and waited for its write-back instead of reading cold.",
    ),
    (
        "lease_wait_timeouts",
        "bifrost_lease_wait_timeouts_total",
        Kind::Counter,
        "Waiting reads that gave up after the route's leases.wait and read cold themselves.",
    ),
    (
        "lease_refreshes",
        "bifrost_lease_refreshes_total",
        Kind::Counter,
        "Early refreshes: hits served at once and read again from cold in the background.",
    ),
    (
        "backend_connections",
        "bifrost_backend_connections",
        Kind::Gauge,
        "Connections open to backend servers.",
    ),
    (
        "backend_connect_failures",
        "bifrost_backend_connect_failures_total",
        Kind::Counter,
        "Backend connects that failed.",
    ),
    (
        "admin_connections",
        "bifrost_admin_connections",
        Kind::Gauge,
        "Admin API connections open.",
    ),
    (
        "admin_connections_evicted",
        "bifrost_admin_connections_evicted_total",
        Kind::Counter,
        "Admin connections without a request in progress closed to make room for a new one.",
    ),
    (
        "admin_connections_rejected",
        "bifrost_admin_connections_rejected_total",
        Kind::Counter,
        "Admin connections refused with 503: the cap was full and none could be evicted.",
    ),
    (
        "admin_header_timeouts",
        "bifrost_admin_header_timeouts_total",
        Kind::Counter,
        "Admin connections closed for not sending a whole request head within header_timeout.",
    ),
    (
        "backend_out_of_sync",
        "bifrost_backend_out_of_sync_total",
        Kind::Counter,
        "Backend connections reset because their reply stream was out of sync with the requests.",
    ),
];

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// The per-(route, command) counters: metric name, help, and the field.
type CommandField = fn(&CommandTotals) -> u64;
const COMMAND_METRICS: &[(&str, &str, CommandField)] = &[
    (
        "bifrost_requests_total",
        "Client requests started, by route and command.",
        |t| t.requests,
    ),
    (
        "bifrost_hits_total",
        "Keys found, by route and command.",
        |t| t.hits,
    ),
    (
        "bifrost_misses_total",
        "Keys not found (a failed retrieval's keys included), by route and command.",
        |t| t.misses,
    ),
    (
        "bifrost_errors_total",
        "Backend requests that failed, by route and command.",
        |t| t.errors,
    ),
    (
        "bifrost_timeouts_total",
        "Backend requests that failed by their deadline, by route and command.",
        |t| t.timeouts,
    ),
];

/// Escapes a label value (backslash, double quote, newline).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    for (bound, count) in h.cumulative() {
        match bound {
            Some(le) => {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {count}");
            }
            None => {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
            }
        }
    }
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds());
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count());
}

/// The labels of server `i`: its pool and address.
fn server_labels(registry: &StatsRegistry, i: usize, address: &str) -> String {
    let backend = registry.health().map_or("", |h| h.backend(i));
    format!(
        "backend=\"{}\",server=\"{}\"",
        label(backend),
        label(address)
    )
}

/// The Prometheus text exposition (format 0.0.4) of every counter, gauge and histogram.
pub fn prometheus(registry: &StatsRegistry) -> String {
    let mut out = String::with_capacity(16 * 1024);
    header(
        &mut out,
        "bifrost_build_info",
        "gauge",
        "Always 1; the version is a label.",
    );
    let _ = writeln!(
        out,
        "bifrost_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    header(
        &mut out,
        "bifrost_uptime_seconds",
        "gauge",
        "Seconds since the process started.",
    );
    let _ = writeln!(out, "bifrost_uptime_seconds {}", registry.uptime());
    header(&mut out, "bifrost_workers", "gauge", "Worker threads.");
    let _ = writeln!(out, "bifrost_workers {}", registry.worker_count());

    let totals = registry.totals();
    for &(stat, name, kind, help) in PROCESS_METRICS {
        let value = totals
            .iter()
            .find(|(n, _)| *n == stat)
            .map_or(0, |(_, v)| *v);
        header(&mut out, name, kind.name(), help);
        let _ = writeln!(out, "{name} {value}");
    }

    let routes = registry.route_names();
    let commands: Vec<Vec<(Command, CommandTotals)>> = (0..routes.len())
        .map(|r| {
            Command::ALL
                .iter()
                .map(|&c| (c, registry.command_totals(r, c)))
                .filter(|(_, t)| !t.is_zero())
                .collect()
        })
        .collect();
    for &(name, help, field) in COMMAND_METRICS {
        header(&mut out, name, "counter", help);
        for (route, per_command) in routes.iter().zip(&commands) {
            for (command, totals) in per_command {
                let _ = writeln!(
                    out,
                    "{name}{{route=\"{}\",command=\"{}\"}} {}",
                    label(route),
                    command.name(),
                    field(totals)
                );
            }
        }
    }
    header(
        &mut out,
        "bifrost_route_keys_total",
        "counter",
        "Keys routed by each route (a multi-get counts each key).",
    );
    for (i, route) in routes.iter().enumerate() {
        let _ = writeln!(
            out,
            "bifrost_route_keys_total{{route=\"{}\"}} {}",
            label(route),
            registry.route_keys(i)
        );
    }
    header(
        &mut out,
        "bifrost_request_duration_seconds",
        "histogram",
        "Time from reading a client request to its answer being ready, by route.",
    );
    for (i, route) in routes.iter().enumerate() {
        let labels = format!("route=\"{}\"", label(route));
        histogram(
            &mut out,
            "bifrost_request_duration_seconds",
            &labels,
            &registry.route_latency(i),
        );
    }

    render_servers(registry, &mut out);
    render_side_effects(registry, &mut out);
    out
}

fn render_servers(registry: &StatsRegistry, out: &mut String) {
    let servers = registry.server_names();
    let health = registry.health();
    let report = |i: usize| health.and_then(|h| h.report(i));
    type ServerField<'a> = Box<dyn Fn(usize) -> u64 + 'a>;
    let families: [(&str, &str, &str, ServerField); 8] = [
        (
            "bifrost_server_up",
            "gauge",
            "1 while the server is up, 0 while health checks hold it down.",
            Box::new(|i| u64::from(!health.is_some_and(|h| h.is_down(i)))),
        ),
        (
            "bifrost_server_requests_total",
            "counter",
            "Requests sent to the server for clients.",
            Box::new(|i| registry.server_totals(i).0),
        ),
        (
            "bifrost_server_errors_total",
            "counter",
            "Requests the server failed (timeouts included).",
            Box::new(|i| registry.server_totals(i).1),
        ),
        (
            "bifrost_server_timeouts_total",
            "counter",
            "Requests the server failed by their deadline.",
            Box::new(|i| registry.server_totals(i).2),
        ),
        (
            "bifrost_server_ejections_total",
            "counter",
            "Times health checks marked the server down.",
            Box::new(|i| report(i).map_or(0, |r| r.marked_down)),
        ),
        (
            "bifrost_server_returns_total",
            "counter",
            "Times the server came back after being down.",
            Box::new(|i| report(i).map_or(0, |r| r.returned)),
        ),
        (
            "bifrost_server_connects_total",
            "counter",
            "Connections opened to the server for client traffic (the first and every reconnect).",
            Box::new(|i| health.map_or(0, |h| h.connects(i))),
        ),
        (
            "bifrost_server_probe_failures_total",
            "counter",
            "Health probes of the server that failed.",
            Box::new(|i| report(i).map_or(0, |r| r.probe_failures)),
        ),
    ];
    for (name, kind, help, value) in &families {
        header(out, name, kind, help);
        for (i, address) in servers.iter().enumerate() {
            let labels = server_labels(registry, i, address);
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(i));
        }
    }
    render_origins(registry, out);
    header(
        out,
        "bifrost_server_request_duration_seconds",
        "histogram",
        "Time from queuing a request for the server to its reply (or failure), by server.",
    );
    for (i, address) in servers.iter().enumerate() {
        let labels = server_labels(registry, i, address);
        histogram(
            out,
            "bifrost_server_request_duration_seconds",
            &labels,
            &registry.server_latency(i),
        );
    }
}

/// The HTTP origins' own counters (their requests, errors, timeouts and latency are the
/// servers' families above).
fn render_origins(registry: &StatsRegistry, out: &mut String) {
    let origins: Vec<(usize, &String)> = registry
        .server_names()
        .iter()
        .enumerate()
        .filter(|(i, _)| registry.is_origin(*i))
        .collect();
    if origins.is_empty() {
        return;
    }
    header(
        out,
        "bifrost_origin_responses_total",
        "counter",
        "HTTP responses from the origin, by status class.",
    );
    for &(i, address) in &origins {
        let labels = server_labels(registry, i, address);
        for (class, count) in registry.origin_statuses(i).iter().enumerate() {
            let _ = writeln!(
                out,
                "bifrost_origin_responses_total{{{labels},class=\"{}xx\"}} {count}",
                class + 1
            );
        }
    }
    header(
        out,
        "bifrost_origin_coalesced_reads_total",
        "counter",
        "Reads of the origin that shared a request already out for the same key (no request of their own).",
    );
    for &(i, address) in &origins {
        let labels = server_labels(registry, i, address);
        let count = registry.origin_coalesced(i);
        let _ = writeln!(
            out,
            "bifrost_origin_coalesced_reads_total{{{labels}}} {count}"
        );
    }
}

fn render_side_effects(registry: &StatsRegistry, out: &mut String) {
    let effects = registry.effects().map(|e| e.snapshot()).unwrap_or_default();
    type EffectField = fn(&crate::observe::stats::EffectSnapshot) -> u64;
    let families: [(&str, &str, &str, EffectField); 5] = [
        (
            "bifrost_side_effect_queued_total",
            "counter",
            "Side-effect requests accepted into a queue.",
            |e| e.queued,
        ),
        (
            "bifrost_side_effect_done_total",
            "counter",
            "Side-effect requests answered.",
            |e| e.done,
        ),
        (
            "bifrost_side_effect_failed_total",
            "counter",
            "Side-effect requests that failed (never retried).",
            |e| e.failed,
        ),
        (
            "bifrost_side_effect_dropped_total",
            "counter",
            "Side-effect requests dropped because a queue was full.",
            |e| e.dropped,
        ),
        (
            "bifrost_side_effect_queue_depth",
            "gauge",
            "Side-effect requests queued or in flight now.",
            |e| e.depth,
        ),
    ];
    for (name, kind, help, value) in &families {
        header(out, name, kind, help);
        for effect in &effects {
            let _ = writeln!(
                out,
                "{name}{{effect=\"{}\"}} {}",
                label(effect.name),
                value(effect)
            );
        }
    }
}

fn histogram_json(h: &HistogramSnapshot) -> Value {
    let buckets: Map<String, Value> = h
        .cumulative()
        .map(|(bound, count)| {
            let key = bound.map_or_else(|| "+Inf".to_string(), |b| b.to_string());
            (key, Value::from(count))
        })
        .collect();
    json!({ "count": h.count(), "sum_seconds": h.sum_seconds(), "buckets": buckets })
}

/// The same counters as one JSON object: `counters` (the `stats` names), `routes`, `servers`
/// and `side_effects`.
pub fn json(registry: &StatsRegistry) -> String {
    let counters: Map<String, Value> = registry
        .totals()
        .into_iter()
        .map(|(name, value)| (name.to_string(), Value::from(value)))
        .collect();
    let routes: Vec<Value> = registry
        .route_names()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let commands: Map<String, Value> = Command::ALL
                .iter()
                .map(|&c| (c, registry.command_totals(i, c)))
                .filter(|(_, t)| !t.is_zero())
                .map(|(c, t)| {
                    let counts = json!({
                        "requests": t.requests, "hits": t.hits, "misses": t.misses,
                        "errors": t.errors, "timeouts": t.timeouts,
                    });
                    (c.name().to_string(), counts)
                })
                .collect();
            json!({
                "name": name,
                "keys": registry.route_keys(i),
                "commands": commands,
                "latency": histogram_json(&registry.route_latency(i)),
            })
        })
        .collect();
    let health = registry.health();
    let servers: Vec<Value> = registry
        .server_names()
        .iter()
        .enumerate()
        .map(|(i, address)| {
            let (requests, errors, timeouts) = registry.server_totals(i);
            let report = health.and_then(|h| h.report(i));
            json!({
                "backend": health.map_or("", |h| h.backend(i)),
                "address": address,
                "up": !health.is_some_and(|h| h.is_down(i)),
                "checked": report.is_some(),
                "requests": requests,
                "errors": errors,
                "timeouts": timeouts,
                "connects": health.map_or(0, |h| h.connects(i)),
                "ejections": report.map_or(0, |r| r.marked_down),
                "returns": report.map_or(0, |r| r.returned),
                "probes": report.map_or(0, |r| r.probes),
                "probe_failures": report.map_or(0, |r| r.probe_failures),
                "latency": histogram_json(&registry.server_latency(i)),
                "origin": registry.is_origin(i).then(|| {
                    let [c1, c2, c3, c4, c5] = registry.origin_statuses(i);
                    json!({
                        "responses": {"1xx": c1, "2xx": c2, "3xx": c3, "4xx": c4, "5xx": c5},
                        "coalesced_reads": registry.origin_coalesced(i),
                    })
                }),
            })
        })
        .collect();
    let side_effects: Vec<Value> = registry
        .effects()
        .map(|e| e.snapshot())
        .unwrap_or_default()
        .iter()
        .map(|e| {
            json!({
                "name": e.name, "queued": e.queued, "done": e.done, "failed": e.failed,
                "dropped": e.dropped, "depth": e.depth,
            })
        })
        .collect();
    let doc = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": registry.uptime(),
        "workers": registry.worker_count(),
        "counters": counters,
        "routes": routes,
        "servers": servers,
        "side_effects": side_effects,
    });
    let mut text = doc.to_string();
    text.push('\n');
    text
}

/// `Ok` when every route has at least one healthy target; otherwise the names of the routes
/// that have none. A server whose pool is not health-checked is never down, so it counts as
/// healthy.
pub fn readiness(router: &Router, health: &HealthBoard) -> Result<(), Vec<String>> {
    let unready: Vec<String> = router
        .routes()
        .iter()
        .filter(|route| !router.servers_of(route).iter().any(|&s| !health.is_down(s)))
        .map(|route| route.name.clone())
        .collect();
    if unready.is_empty() {
        Ok(())
    } else {
        Err(unready)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::stats::WorkerStats;

    fn registry() -> StatsRegistry {
        StatsRegistry::new(
            2,
            vec!["ro\"ute".into(), "quiet".into()],
            vec!["127.0.0.1:1".into()],
        )
    }

    #[test]
    fn prometheus_sums_workers_labels_escaped_and_histograms_cumulative() {
        let reg = registry();
        for w in 0..2 {
            let d = reg.detail(w);
            let get = d.commands(0, Command::Get).map(|c| &c.requests);
            WorkerStats::add(get.expect("route 0 exists"), 3);
            d.route_answered(0, 80);
            d.server_answered(0, 10_000_000);
        }
        WorkerStats::add(&reg.worker(1).curr_connections, 5);
        let text = prometheus(&reg);
        assert!(
            text.contains("bifrost_requests_total{route=\"ro\\\"ute\",command=\"get\"} 6\n"),
            "{text}"
        );
        assert!(
            !text.contains("route=\"quiet\",command="),
            "zero series left out"
        );
        assert!(text.contains("bifrost_client_connections 5\n"));
        assert!(text.contains(
            "bifrost_request_duration_seconds_bucket{route=\"ro\\\"ute\",le=\"0.0001\"} 2\n"
        ));
        assert!(text.contains(
            "bifrost_request_duration_seconds_bucket{route=\"ro\\\"ute\",le=\"0.00005\"} 0\n"
        ));
        assert!(text.contains(
            "bifrost_server_request_duration_seconds_bucket{backend=\"\",server=\"127.0.0.1:1\",le=\"+Inf\"} 2\n"
        ));
        assert!(text.contains(
            "bifrost_server_request_duration_seconds_count{backend=\"\",server=\"127.0.0.1:1\"} 2\n"
        ));
        // Every family is declared once, before its samples.
        let mut declared = std::collections::HashSet::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default();
                assert!(declared.insert(name.to_string()), "{name} declared twice");
            }
        }
    }

    #[test]
    fn every_stats_counter_is_exported_under_a_name_of_its_own() {
        // Those counted by route and command instead (bifrost_requests_total,
        // bifrost_hits_total, bifrost_misses_total).
        let by_route = [
            "cmd_get",
            "cmd_set",
            "cmd_touch",
            "cmd_flush",
            "cmd_delete",
            "cmd_arith",
            "cmd_meta",
            "get_hits",
            "get_misses",
        ];
        let names: Vec<&str> = WorkerStats::default()
            .snapshot()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for &(stat, metric, _, _) in PROCESS_METRICS {
            assert!(
                names.contains(&stat),
                "{metric} reads no stats counter {stat}"
            );
        }
        for name in names {
            let exported = PROCESS_METRICS.iter().any(|&(stat, ..)| stat == name);
            assert!(
                exported || by_route.contains(&name),
                "{name} is not in /metrics"
            );
        }
        let mut metrics: Vec<&str> = PROCESS_METRICS.iter().map(|m| m.1).collect();
        metrics.sort_unstable();
        metrics.dedup();
        assert_eq!(
            metrics.len(),
            PROCESS_METRICS.len(),
            "a metric name used twice"
        );
    }

    #[test]
    fn json_has_the_same_counters() {
        let reg = registry();
        let d = reg.detail(0);
        let hits = d.commands(1, Command::MetaGet).map(|c| &c.hits);
        WorkerStats::add(hits.expect("route 1 exists"), 4);
        WorkerStats::add(&reg.worker(0).cmd_get, 7);
        let doc: Value = serde_json::from_str(&json(&reg)).unwrap_or_default();
        assert_eq!(doc["counters"]["cmd_get"], 7);
        assert_eq!(doc["routes"][1]["name"], "quiet");
        assert_eq!(doc["routes"][1]["commands"]["mg"]["hits"], 4);
        assert_eq!(doc["servers"][0]["address"], "127.0.0.1:1");
        assert_eq!(doc["routes"][0]["latency"]["buckets"]["+Inf"], 0);
    }
}
