//! Tests of the compiled route table: command filters and listener route orders.

use super::*;
use crate::config::Format;

fn router(yaml: &str) -> Router {
    let config = match Config::parse(yaml, "test.yaml", Format::Yaml) {
        Ok(c) => c,
        Err(e) => panic!("does not parse:\n{e}"),
    };
    match Router::new(&config) {
        Ok(r) => r,
        Err(e) => panic!("does not compile: {e}"),
    }
}

#[test]
fn every_command_has_its_own_bit() {
    let mut all: CommandMask = 0;
    for command in Command::ALL {
        let bit = command_bit(command);
        assert_eq!(bit.count_ones(), 1, "{command:?}");
        assert_eq!(
            all & bit,
            0,
            "{command:?} shares a bit with another command"
        );
        all |= bit;
    }
    assert_eq!(all.count_ones() as usize, Command::ALL.len());
}

#[test]
fn a_filter_of_one_command_takes_only_that_command() {
    for only in Command::ALL {
        let route = Route {
            name: "r".to_string(),
            pattern: KeyPattern::glob("*"),
            commands: command_bit(only),
            kind: RouteKind::BlindForward(0),
        };
        for command in Command::ALL {
            assert_eq!(
                route.accepts(command, b"key"),
                command == only,
                "filter [{only:?}], command {command:?}"
            );
        }
    }
}

#[test]
fn command_filters_route_by_command_up_to_the_last_command() {
    let r = router(
        "listeners: [{name: main, bind: '127.0.0.1:0'}]\n\
         backends:\n  a: {servers: ['127.0.0.1:11211']}\n  b: {servers: ['127.0.0.1:11212']}\n\
         routes:\n\
         - {name: debug, match: '*', commands: [me, mn], strategy: blind_forward, backend: a}\n\
         - {name: rest, match: '*', strategy: blind_forward, backend: b}\n",
    );
    assert_eq!(r.route(0, Command::MetaDebug, b"k"), Some(0));
    assert_eq!(r.route(0, Command::MetaNoop, b"k"), Some(0));
    for command in Command::ALL {
        if !matches!(command, Command::MetaDebug | Command::MetaNoop) {
            assert_eq!(r.route(0, command, b"k"), Some(1), "{command:?}");
        }
    }
}

#[test]
fn an_unfiltered_route_takes_every_command() {
    let r = router(
        "listeners: [{name: main, bind: '127.0.0.1:0'}]\n\
         backends: {a: {servers: ['127.0.0.1:11211']}}\n\
         routes: [{name: all, match: '*', strategy: blind_forward, backend: a}]\n",
    );
    for command in Command::ALL {
        assert_eq!(r.route(0, command, b"k"), Some(0), "{command:?}");
    }
}

#[test]
fn a_cloned_router_routes_exactly_as_the_original() {
    fn assert_clone_send_sync<T: Clone + Send + Sync>() {}
    assert_clone_send_sync::<Router>();
    let r = router(
        "listeners:\n\
         - {name: main, bind: '127.0.0.1:0'}\n\
         - {name: other, bind: '127.0.0.1:0', routes: [binary, users]}\n\
         backends:\n\
         \x20 k: {servers: ['127.0.0.1:1', '127.0.0.1:2', {address: '127.0.0.1:3', weight: 2}], hash_tag: '{}'}\n\
         \x20 m: {distribution: modula, hash: crc32a, servers: ['127.0.0.1:4', '127.0.0.1:5']}\n\
         \x20 b: {servers: ['127.0.0.1:6']}\n\
         routes:\n\
         - {name: users, match: {regex: '^user:[0-9]+$'}, strategy: consistent_hash, backend: k}\n\
         - {name: sessions, match: {prefix: 'sess:'}, strategy: consistent_hash, backend: m}\n\
         - {name: globbed, match: 'a?c[0-9]*', commands: [get, set], strategy: round_robin, backend: m}\n\
         - {name: binary, match: {regex: '\\xff'}, strategy: failover, backends: [m, k]}\n\
         - {name: tail, match: '*', strategy: blind_forward, backend: b}\n",
    );
    let mut keys: Vec<Vec<u8>> = [
        "user:1", "user:x", "sess:9", "abc7", "abc", "a{tag}b", "\u{ff}",
    ]
    .iter()
    .map(|k| k.as_bytes().to_vec())
    .collect();
    keys.extend((0..200).map(|i| format!("user:{i}").into_bytes()));
    keys.extend((0..200).map(|i| format!("sess:{i}:{{t{}}}", i % 7).into_bytes()));
    keys.push(b"\xffbinary".to_vec());
    // What the original says, each key asked once: its route per listener and command, and
    // its server in each pool.
    let answers = |router: &Router| -> Vec<(Vec<Option<usize>>, Vec<usize>)> {
        keys.iter()
            .map(|key| {
                let routes = [0, 1]
                    .iter()
                    .flat_map(|&l| [Command::Get, Command::Set, Command::Delete].map(|c| (l, c)))
                    .map(|(l, c)| router.route(l, c, key))
                    .collect();
                let servers = router
                    .pools()
                    .iter()
                    .map(|p| p.server_for(key, &mut 0))
                    .collect();
                (routes, servers)
            })
            .collect()
    };
    let want = answers(&r);
    // The answers are not all alike (the keys reach every route and several servers).
    let routes_seen: std::collections::BTreeSet<_> =
        want.iter().flat_map(|(routes, _)| routes.clone()).collect();
    assert_eq!(routes_seen.len(), 5 + 1, "{routes_seen:?}"); // every route, and no route
    let servers_seen: std::collections::BTreeSet<_> = want
        .iter()
        .flat_map(|(_, servers)| servers.clone())
        .collect();
    assert_eq!(servers_seen.len(), 6, "{servers_seen:?}"); // every server of every pool
    let copy = r.clone();
    assert_eq!(answers(&copy), want);
    // A clone used first on another thread (its regex caches owned there) answers the same.
    let elsewhere = std::thread::scope(|scope| {
        let copy = r.clone();
        scope.spawn(move || answers(&copy)).join()
    });
    assert!(matches!(elsewhere, Ok(got) if got == want));
    assert_eq!(format!("{copy:?}"), format!("{r:?}"));
    for listener in [0, 1] {
        assert_eq!(
            copy.reachable_servers(listener),
            r.reachable_servers(listener)
        );
    }
    assert_eq!(copy.failover(0), r.failover(0));
}

#[test]
fn placement_follows_the_configured_names_not_the_addresses_they_resolve_to() {
    let yaml = "listeners: [{name: m, bind: \"127.0.0.1:1\"}]\n\
                backends: {p: {servers: [\"localhost:11211\", \"127.0.0.1:11212\", \
                \"127.0.0.1:11213\"], distribution: ketama}}\n\
                routes: [{name: r, match: \"*\", strategy: consistent_hash, backend: p}]\n";
    let config = match Config::parse(yaml, "test.yaml", Format::Yaml) {
        Ok(c) => c,
        Err(e) => panic!("does not parse:\n{e}"),
    };
    // The same file, with the name resolved elsewhere (a pod that moved) or not at all.
    let mut moved = config.clone();
    moved.backends[0].servers[0].addr = Some("10.1.2.3:11211".parse().expect("addr"));
    let mut unresolved = config.clone();
    unresolved.backends[0].servers[0].addr = None;
    let routers: Vec<Router> = [config, moved, unresolved]
        .iter()
        .map(|c| Router::new(c).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    let pool = |r: &Router| r.pools()[0].clone();
    for i in 0..2000 {
        let key = format!("key:{i}");
        let owners: Vec<usize> = routers
            .iter()
            .map(|r| pool(r).server_for(key.as_bytes(), &mut 0))
            .collect();
        assert!(owners.windows(2).all(|w| w[0] == w[1]), "{key}: {owners:?}");
    }
    // The moved address is what the workers connect to; the unresolved one has none yet.
    assert_eq!(
        routers[1].servers()[0].addr.current(),
        Some("10.1.2.3:11211".parse().expect("addr"))
    );
    assert_eq!(routers[2].servers()[0].addr.current(), None);
}
