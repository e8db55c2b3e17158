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
