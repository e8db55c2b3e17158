//! Tests of the `leases` setting of warm_first routes: its values and defaults, the rules that
//! refuse it, and the check that no other route can read its placeholders.

use super::tests_errors::{doc, error, errors};
use super::*;

const WARM_FIRST: &str = "{name: wf, match: 'wf:*', strategy: warm_first, warm: l1, cold: l2";

fn leases_of(text: &str) -> Option<Leases> {
    let config = Config::parse(text, "t.yaml", Format::Yaml)
        .unwrap_or_else(|e| panic!("{e}\nfrom:\n{text}"));
    config.routes.iter().find_map(|r| match &r.strategy {
        Strategy::WarmFirst { leases, .. } => *leases,
        _ => None,
    })
}

#[test]
fn leases_take_their_values_and_defaults() {
    let route = |leases: &str| {
        doc(&[&format!(
            "routes: [{WARM_FIRST}, write_on_miss: {{ttl: 100}}, leases: {leases}}}]"
        )])
    };
    assert_eq!(
        leases_of(&route("{}")),
        Some(Leases {
            lease_ttl: 3,
            wait: Duration::from_secs(1),
            refresh_below: 0,
        })
    );
    assert_eq!(
        leases_of(&route("{lease_ttl: 10s, wait: 250ms, early_refresh: 0.25}")),
        Some(Leases {
            lease_ttl: 10,
            wait: Duration::from_millis(250),
            refresh_below: 25,
        })
    );
    // A fraction that rounds to nothing still refreshes in the last second.
    let tiny = route("{early_refresh: 0.001}");
    assert_eq!(leases_of(&tiny).map(|l| l.refresh_below), Some(1));
    let none = doc(&[&format!("routes: [{WARM_FIRST}}}]")]);
    assert_eq!(leases_of(&none), None);
}

#[test]
fn leases_are_refused_with_a_reason() {
    let cases: &[(&str, &str)] = &[
        ("leases: {}", "routes[0].leases: leases need write_on_miss: the reader that holds a lease writes the cold value back into warm with its TTL"),
        ("write_on_miss: {ttl: 10}, leases: {lease_ttl: 0s}", "routes[0].leases.lease_ttl: must be longer than zero"),
        ("write_on_miss: {ttl: 10}, leases: {lease_ttl: 1500ms}", "routes[0].leases.lease_ttl: must be whole seconds, from 1s to 2592000s: memcached's leases last whole seconds"),
        ("write_on_miss: {ttl: 10}, leases: {early_refresh: 1}", "routes[0].leases.early_refresh: expected a number between 0 and 1 (a fraction of write_on_miss.ttl), got an integer (1)"),
        ("write_on_miss: {ttl: 10}, leases: {early_refresh: '10%'}", "routes[0].leases.early_refresh: expected a number between 0 and 1 (a fraction of write_on_miss.ttl), got a string ('10%')"),
        ("write_on_miss: {ttl: 0}, leases: {early_refresh: 0.5}", "routes[0].leases.early_refresh: needs write_on_miss.ttl above 0: a value that never expires is never refreshed"),
        ("write_on_miss: {ttl: 10}, leases: {wait: 1}", "routes[0].leases.wait: '1' has no unit; expected a number with a unit, like 250ms, 1.5s, 10m (units: us, ms, s, m, h)"),
        ("write_on_miss: {ttl: 10}, leases: {renew: 1s}", "routes[0].leases.renew: unknown key 'renew' (expected one of: lease_ttl, wait, early_refresh)"),
    ];
    for (part, want) in cases {
        let routes =
            format!("routes: [{{match: '*', strategy: warm_first, warm: l1, cold: l2, {part}}}]");
        assert_eq!(error(&[&routes]), *want, "{part}");
    }
}

/// Another route reading the leased route's warm backend is refused unless the leased route
/// shields it (comes first and takes every command) in every route list it is in.
#[test]
fn a_route_that_could_read_lease_placeholders_is_refused() {
    let leased = format!("{WARM_FIRST}, write_on_miss: {{ttl: 100}}, leases: {{}}}}");
    let rest = "{name: rest, match: '*', strategy: consistent_hash, backend: l1}";
    // Leased route first, every command: every key it matches is its own.
    let ok = doc(&[&format!("routes: [{leased}, {rest}]")]);
    assert!(leases_of(&ok).is_some());
    // A route that only writes the warm backend, or reads another one, is fine anywhere.
    let writer =
        "{name: w, match: '*', commands: [set, delete], strategy: consistent_hash, backend: l1}";
    let other = "{name: o, match: 'o:*', strategy: consistent_hash, backend: l2}";
    assert!(leases_of(&doc(&[&format!("routes: [{writer}, {other}, {leased}]")])).is_some());

    let message = "reads backend 'l1', the warm tier of route 'wf' (routes[1]), which has leases: \
                   it could serve that route's lease placeholders as empty values. Put 'wf' \
                   before it (taking every command) in every route list it is in, give it \
                   another backend, or give it leases too";
    // Before the leased route.
    let reader = "{name: r, match: 'wf:x*', strategy: consistent_hash, backend: l1}";
    assert_eq!(
        errors(&[&format!("routes: [{reader}, {leased}]")]),
        [format!("routes[0]: {message}")]
    );
    // After it, but the leased route takes only some commands.
    let partial =
        format!("{WARM_FIRST}, commands: [get], write_on_miss: {{ttl: 100}}, leases: {{}}}}");
    assert_eq!(
        errors(&[&format!("routes: [{partial}, {rest}]")]),
        [format!(
            "routes[1]: {}",
            message.replace("routes[1]", "routes[0]")
        )]
    );
    // A listener whose route list leaves the leased route out.
    let listeners = "listeners: [{name: a, bind: '127.0.0.1:11311'}, \
                     {name: b, bind: '127.0.0.1:11312', routes: [rest]}]";
    assert_eq!(
        errors(&[listeners, &format!("routes: [{leased}, {rest}]")]),
        [format!(
            "routes[1]: {}",
            message.replace("routes[1]", "routes[0]")
        )]
    );
    // A warm_first route without leases over the same warm tier reads it with plain gets.
    let plain = "{name: p, match: 'wf:p*', strategy: warm_first, warm: l1, cold: l2}";
    assert_eq!(
        errors(&[&format!("routes: [{plain}, {leased}]")]),
        [format!("routes[0]: {message}")]
    );
}
