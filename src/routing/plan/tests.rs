//! What requests become, without a socket: each strategy's plans for each command family.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::config::{Config, Format};
use crate::exchange::parallel::Answer;
use crate::observe::stats::StatsRegistry;
use crate::protocol::{parse_request, Limits, Parsed};

const CONFIG: &str = r#"
listeners:
  - name: main
    bind: 127.0.0.1:0
  - name: narrow
    bind: 127.0.0.1:0
    routes: [rr]
backends:
  a: { servers: [127.0.0.1:1, 127.0.0.1:2, 127.0.0.1:3] }
  b: { servers: [127.0.0.1:4] }
  warm: { servers: [127.0.0.1:5] }
  cold: { servers: [127.0.0.1:6] }
  rep: { servers: [127.0.0.1:7] }
routes:
  - { name: fo, match: "fo:*", strategy: failover, backends: [a, b], on_miss: next }
  - { name: par, match: "par:*", strategy: parallel, backends: [a, b], writes: all }
  - { name: wf, match: "wf:*", strategy: warm_first, warm: warm, cold: cold, write_on_miss: { ttl: 300, queue: 100 } }
  - { name: rr, match: "rr:*", strategy: round_robin, backend: a }
  - { name: hash, match: "h:*", strategy: consistent_hash, backend: a }
side_effects:
  - replicate: { routes: [hash], to: rep, commands: [set, delete], queue: 100 }
"#;

/// Servers by global index, in the order the config lists them.
const WARM: usize = 4;
const COLD: usize = 5;
const REP: usize = 6;

struct Fixture {
    planner: Planner,
    router: Arc<Router>,
    stats: Arc<WorkerStats>,
    registry: StatsRegistry,
}

fn fixture_with(yaml: &str) -> Fixture {
    let config = match Config::parse(yaml, "test.yaml", Format::Yaml) {
        Ok(c) => c,
        Err(e) => panic!("does not parse:\n{e}"),
    };
    let router = match Router::new(&config) {
        Ok(r) => Arc::new(r),
        Err(e) => panic!("does not compile: {e}"),
    };
    let pool_of = |name: &str| config.backend(name).map(|(index, _)| index);
    let effects = Arc::new(EffectBoard::new(&config, pool_of));
    let registry = StatsRegistry::new(
        1,
        router.routes().iter().map(|r| r.name.clone()).collect(),
        router.servers().iter().map(|s| s.address.clone()).collect(),
    );
    let (stats, detail) = (registry.worker(0), registry.detail(0));
    let listeners = config.listeners.len();
    let planner = Planner::new(
        Router::clone(&router),
        effects,
        stats.clone(),
        detail,
        listeners,
    );
    Fixture {
        planner,
        router,
        stats,
        registry,
    }
}

fn fixture() -> Fixture {
    fixture_with(CONFIG)
}

fn parse(line: &'static [u8]) -> (Request, Bytes) {
    match parse_request(line, &Limits::default()) {
        Ok(Parsed::Complete(r)) => (r, Bytes::from_static(line)),
        other => panic!(
            "{:?} does not parse: {other:?}",
            String::from_utf8_lossy(line)
        ),
    }
}

fn all_usable(_: usize) -> bool {
    true
}

fn cx(listener: usize, window: usize, reads_open: bool) -> Context<'static> {
    Context {
        listener,
        multiget_window: window,
        soft_bytes: 1 << 20,
        reads_open,
        touches_open: false,
        usable: &all_usable,
    }
}

impl Fixture {
    fn plan_with(&mut self, line: &'static [u8], cx: &Context) -> Plan {
        let (request, bytes) = parse(line);
        self.planner.plan(&request, bytes, cx, 7)
    }

    fn plan(&mut self, line: &'static [u8]) -> Plan {
        self.plan_with(line, &cx(0, 100, false))
    }

    /// The server pool `pool` places `key` on.
    fn owner(&self, pool: usize, key: &[u8]) -> usize {
        match self.router.pools().get(pool) {
            Some(p) => p.server_for(key, &mut 0),
            None => panic!("no pool {pool}"),
        }
    }

    fn route(&self, name: &str) -> usize {
        match self.router.routes().iter().position(|r| r.name == name) {
            Some(i) => i,
            None => panic!("no route {name}"),
        }
    }
}

/// Whether the exchange `start` names holds its client's later writes once started.
fn holds_writes(start: Start) -> bool {
    let slot = crate::exchange::SlotRef {
        client: 0,
        generation: 0,
        seq: 0,
    };
    let mut fx = crate::exchange::Effects::default();
    let exchange = match start.kind {
        StartKind::Forward { send, lookups } => {
            crate::exchange::Exchange::forward(slot, send, lookups, &mut fx)
        }
        StartKind::Retrieval(r) => crate::exchange::Exchange::retrieval(slot, r, &mut fx),
        StartKind::Failover(f) => crate::exchange::Exchange::failover(slot, f, &mut fx),
        other => panic!("not a read this test starts: {other:?}"),
    };
    exchange.holds_writes()
}

fn started(plan: Plan) -> Start {
    match plan {
        Plan::Start(start) => start,
        other => panic!("expected an exchange, got {other:?}"),
    }
}

fn reply(plan: Plan) -> (Vec<u8>, bool) {
    match plan {
        Plan::Reply { bytes, close } => (bytes.to_vec(), close),
        other => panic!("expected a local reply, got {other:?}"),
    }
}

fn servers(sends: &[Send]) -> Vec<usize> {
    sends.iter().map(|s| s.server).collect()
}

#[test]
fn local_commands_are_answered_by_the_proxy() {
    let mut f = fixture();
    let (version, close) = reply(f.plan(b"version\r\n"));
    assert!(version.starts_with(b"VERSION ") && !close);
    assert_eq!(reply(f.plan(b"quit\r\n")), (Vec::new(), true));
    assert_eq!(reply(f.plan(b"mn\r\n")), (b"MN\r\n".to_vec(), false));
    assert_eq!(reply(f.plan(b"verbosity 1\r\n")).0, b"OK\r\n".to_vec());
    assert_eq!(
        reply(f.plan(b"verbosity 1 noreply\r\n")).0,
        Vec::<u8>::new()
    );
    assert!(matches!(f.plan(b"stats\r\n"), Plan::Stats));
    assert_eq!(reply(f.plan(b"stats items\r\n")).0, b"ERROR\r\n".to_vec());
}

#[test]
fn a_key_without_a_route_is_an_error_or_nothing_for_noreply() {
    let mut f = fixture();
    let (bytes, _) = reply(f.plan(b"get nowhere\r\n"));
    assert_eq!(bytes, NO_ROUTE.to_vec());
    let (bytes, _) = reply(f.plan(b"set nowhere 0 0 1 noreply\r\nx\r\n"));
    assert!(bytes.is_empty(), "a noreply client must get nothing");
    assert_eq!(f.stats.no_route.load(Relaxed), 2);
}

#[test]
fn a_base64_key_is_routed_by_what_it_decodes_to() {
    let mut f = fixture();
    // "aDox" is "h:1" in base64; "h:1" takes the hashing route, "aDox" no route at all.
    let start = started(f.plan(b"mg aDox b v\r\n"));
    let StartKind::Forward { send, .. } = start.kind else {
        panic!("a forward: {:?}", start.kind);
    };
    assert_eq!(send.server, f.owner(0, b"h:1"));
    assert_eq!(start.tag.map(|t| t.route), Some(f.route("hash")));
}

#[test]
fn a_hashed_key_goes_to_its_ring_server_and_counts_on_its_route() {
    let mut f = fixture();
    let start = started(f.plan(b"get h:1\r\n"));
    let StartKind::Forward { send, lookups } = start.kind else {
        panic!("one key is a forward: {:?}", start.kind);
    };
    assert_eq!(send.server, f.owner(0, b"h:1"));
    assert_eq!(lookups, 1, "the forward's reply counts its hit or miss");
    assert!(send.stream);
    let tag = start.tag.expect("a routed request has a tag");
    assert_eq!((tag.route, tag.started), (f.route("hash"), 7));
    assert_eq!(f.registry.route_keys(f.route("hash")), 1);
    let again = started(f.plan(b"get h:1\r\n"));
    assert!(!holds_writes(again), "a forward sends once");
}

#[test]
fn a_multi_get_on_one_server_is_a_forward_until_it_exceeds_the_window() {
    let mut f = fixture();
    // Find three keys that share a server.
    let mut same = Vec::new();
    let first = f.owner(0, b"h:0");
    for i in 0..200 {
        let key = format!("h:{i}");
        if f.owner(0, key.as_bytes()) == first {
            same.push(key);
        }
        if same.len() == 3 {
            break;
        }
    }
    assert_eq!(same.len(), 3, "three keys of 200 on one of three servers");
    let line: &'static [u8] = Box::leak(format!("get {}\r\n", same.join(" ")).into_bytes().into());
    let (request, bytes) = parse(line);
    let plan = f.planner.plan(&request, bytes.clone(), &cx(0, 3, false), 0);
    assert!(matches!(
        started(plan).kind,
        StartKind::Forward { lookups: 3, .. }
    ));
    let plan = f.planner.plan(&request, bytes, &cx(0, 2, false), 0);
    assert!(
        matches!(started(plan).kind, StartKind::Retrieval(_)),
        "more keys than the window are released in windows"
    );
}

#[test]
fn a_multi_get_over_several_servers_is_split_and_unrouted_keys_are_misses() {
    let mut f = fixture();
    let line = b"get h:1 h:2 h:3 h:4 h:5 h:6 h:7 h:8 nowhere\r\n";
    let start = started(f.plan(line));
    let StartKind::Retrieval(split) = start.kind else {
        panic!("a split: {:?}", start.kind);
    };
    assert_eq!(f.stats.no_route.load(Relaxed), 1, "the unrouted key");
    // The split counts it as a miss when it starts, before any reply.
    let slot = crate::exchange::SlotRef {
        client: 0,
        generation: 0,
        seq: 0,
    };
    let mut fx = crate::exchange::Effects::default();
    let _ = crate::exchange::Exchange::retrieval(slot, split, &mut fx);
    assert_eq!(fx.unrouted_misses, 1);
    assert_eq!(
        fx.lookups,
        (0, 0),
        "the others are counted from their replies"
    );
    assert_eq!(f.stats.cmd_get.load(Relaxed), 9);
    assert_eq!(f.registry.route_keys(f.route("hash")), 8, "each key once");
}

#[test]
fn round_robin_keeps_one_server_for_the_keys_of_one_request() {
    let mut f = fixture();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let start = started(f.plan(b"get rr:1 rr:2 rr:3\r\n"));
        let StartKind::Forward { send, .. } = start.kind else {
            panic!("one server for all keys: {:?}", start.kind);
        };
        seen.push(send.server);
    }
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1, 2], "each request the next server in turn");
}

#[test]
fn round_robin_skips_servers_that_are_not_usable() {
    let mut f = fixture();
    let only_two = |server: usize| server == 2;
    let cx = Context {
        usable: &only_two,
        ..cx(0, 100, false)
    };
    for _ in 0..3 {
        let StartKind::Forward { send, .. } = started(f.plan_with(b"get rr:1\r\n", &cx)).kind
        else {
            panic!("a forward");
        };
        assert_eq!(send.server, 2);
    }
}

#[test]
fn flush_all_goes_to_every_server_the_listener_reaches() {
    let mut f = fixture();
    let start = started(f.plan(b"flush_all\r\n"));
    assert!(matches!(start.kind, StartKind::FanOut));
    assert!(start.tag.is_none());
    let mut targets = servers(f.planner.sends());
    targets.sort_unstable();
    assert_eq!(targets, vec![0, 1, 2, 3, WARM, COLD], "not the replica");
    let _ = started(f.plan_with(b"flush_all\r\n", &cx(1, 100, false)));
    let mut targets = servers(f.planner.sends());
    targets.sort_unstable();
    assert_eq!(
        targets,
        vec![0, 1, 2],
        "a listener whose routes reach one pool"
    );
}

#[test]
fn writes_are_replicated_to_the_target_pools_server() {
    let mut f = fixture();
    let _ = started(f.plan(b"set h:9 0 0 1\r\nx\r\n"));
    let side: Vec<(usize, usize)> = f
        .planner
        .side()
        .iter()
        .map(|(e, s)| (*e, s.server))
        .collect();
    assert_eq!(side, vec![(0, REP)]);
    let _ = started(f.plan(b"get h:9\r\n"));
    assert!(f.planner.side().is_empty(), "reads are not replicated");
    let _ = started(f.plan(b"incr h:9 1\r\n"));
    assert!(f.planner.side().is_empty(), "commands not listed are not");
}

#[test]
fn failover_reads_try_each_pool_in_turn() {
    let mut f = fixture();
    let start = started(f.plan(b"get fo:1\r\n"));
    assert!(matches!(start.kind, StartKind::Failover(_)));
    assert!(
        holds_writes(start),
        "a read that may move to the next server holds its client's writes"
    );
    // Keys with different chains are split, each keeping its fallbacks.
    let mut keys = Vec::new();
    for i in 0..50 {
        keys.push(format!("fo:{i}"));
    }
    let line: &'static [u8] = Box::leak(format!("get {}\r\n", keys.join(" ")).into_bytes().into());
    let start = started(f.plan(line));
    assert!(matches!(start.kind, StartKind::Retrieval(_)));
    assert!(holds_writes(start));
}

#[test]
fn warm_first_plans_each_family_as_documented() {
    let mut f = fixture();
    // A plain read goes warm, then cold, and holds the client's later writes.
    let start = started(f.plan(b"get wf:1\r\n"));
    assert!(matches!(start.kind, StartKind::Failover(_)));
    assert!(holds_writes(start));
    // A cas read is the cold tier's.
    let StartKind::Forward { send, .. } = started(f.plan(b"gets wf:1\r\n")).kind else {
        panic!("gets is a forward to cold");
    };
    assert_eq!(send.server, COLD);
    // A write goes to cold and warm, cold answering.
    let start = started(f.plan(b"set wf:1 0 0 1\r\nx\r\n"));
    assert!(matches!(
        start.kind,
        StartKind::Parallel {
            answer: Answer::Of(0),
            lookup: false
        }
    ));
    assert_eq!(servers(f.planner.sends()), vec![COLD, WARM]);
    // A conditional write goes to cold, and warm gets a delete instead.
    let _ = started(f.plan(b"incr wf:1 1\r\n"));
    let sends = f.planner.sends();
    assert_eq!(servers(sends), vec![COLD, WARM]);
    assert_eq!(&sends[1].bytes[..], b"delete wf:1\r\n".as_slice());
    // A touch-read asks both, warm preferred.
    let start = started(f.plan(b"gat 10 wf:1\r\n"));
    assert!(matches!(
        start.kind,
        StartKind::Parallel {
            answer: Answer::InOrder,
            lookup: true
        }
    ));
    assert_eq!(servers(f.planner.sends()), vec![WARM, COLD]);
}

#[test]
fn a_warm_first_write_waits_behind_the_clients_reads_at_warm() {
    let mut f = fixture();
    let held = f.plan_with(b"set wf:1 0 0 1\r\nx\r\n", &cx(0, 100, true));
    let Plan::Defer(request, bytes) = held else {
        panic!("a write behind a read through warm is held");
    };
    assert_eq!(&bytes[..], b"set wf:1 0 0 1\r\nx\r\n".as_slice());
    // Planned again once the reads moved on, without counting the command twice.
    let sets = f.stats.cmd_set.load(Relaxed);
    let again = f
        .planner
        .plan_counted(&request, bytes, &cx(0, 100, false), 0);
    assert!(matches!(started(again).kind, StartKind::Parallel { .. }));
    assert_eq!(f.stats.cmd_set.load(Relaxed), sets);
    // Reads are not held; writes of every route are (the earlier read may still ask any
    // server).
    assert!(matches!(
        f.plan_with(b"get wf:2\r\n", &cx(0, 100, true)),
        Plan::Start(_)
    ));
    assert!(matches!(
        f.plan_with(b"set h:1 0 0 1\r\nx\r\n", &cx(0, 100, true)),
        Plan::Defer(..)
    ));
    assert!(matches!(
        f.plan_with(b"set h:1 0 0 1\r\nx\r\n", &cx(0, 100, false)),
        Plan::Start(_)
    ));
    // Behind a touching retrieval, reads wait too.
    let behind_touch = Context {
        touches_open: true,
        ..cx(0, 100, true)
    };
    assert!(matches!(
        f.plan_with(b"mg h:1 t v\r\n", &behind_touch),
        Plan::Defer(..)
    ));
}

#[test]
fn parallel_routes_answer_reads_by_arrival_or_order_and_writes_by_policy() {
    let mut f = fixture();
    let read = started(f.plan(b"get par:1\r\n"));
    assert!(matches!(
        read.kind,
        StartKind::Parallel {
            answer: Answer::FirstHit,
            lookup: true
        }
    ));
    assert_eq!(servers(f.planner.sends()), vec![f.owner(0, b"par:1"), 3]);
    let cas = started(f.plan(b"gets par:1\r\n"));
    assert!(matches!(
        cas.kind,
        StartKind::Parallel {
            answer: Answer::InOrder,
            ..
        }
    ));
    let write = started(f.plan(b"set par:1 0 0 1\r\nx\r\n"));
    assert!(matches!(
        write.kind,
        StartKind::Parallel {
            answer: Answer::Writes(_),
            lookup: false
        }
    ));
    let multi = started(f.plan(b"get par:1 par:2 h:3\r\n"));
    assert!(matches!(multi.kind, StartKind::Retrieval(_)));
}
