//! Ring construction and placement: twemproxy's naming rule, point counts, golden placements,
//! evenness with weights, modula slots, stability when a server is added, random picks.
//!
//! Golden values come from an independent reimplementation of twemproxy's ketama (a Python
//! script written from the same reading, with float32 rounding emulated);
//! `tests/ketama_nutcracker.rs` proves placement against a real nutcracker.

use super::*;
use crate::routing::hash::hash_tag_slice;

// Only `random` rings use the generator state `server_for` takes; the tests of the other
// distributions pass a throwaway `&mut 0`.

fn servers(list: &[(&str, u32)]) -> Vec<RingServer> {
    list.iter()
        .map(|&(name, weight)| RingServer {
            name: name.to_string(),
            weight,
        })
        .collect()
}

/// The pool of the nutcracker test: one server weighted 2, one named, one on port 11211.
fn test_pool() -> Vec<RingServer> {
    vec![
        RingServer::new("127.0.0.1:11212", None, 1),
        RingServer::new("127.0.0.1:11213", None, 2),
        RingServer::new("127.0.0.1:11214", Some("cache-c"), 1),
        RingServer::new("127.0.0.1:11211", None, 1),
    ]
}

/// Share of `keys` keys `key:<n>` each server of `ring` gets.
fn shares(ring: &Ring, n_servers: usize, keys: usize) -> Vec<f64> {
    let mut counts = vec![0usize; n_servers];
    for i in 0..keys {
        let s = ring.server_for(format!("key:{i}").as_bytes(), &mut 0);
        if let Some(c) = counts.get_mut(s) {
            *c += 1;
        }
    }
    counts.iter().map(|&c| c as f64 / keys as f64).collect()
}

#[test]
fn ring_name_follows_twemproxy() {
    assert_eq!(ring_name("127.0.0.1:11211", None), "127.0.0.1");
    assert_eq!(ring_name("127.0.0.1:11212", None), "127.0.0.1:11212");
    assert_eq!(ring_name("cache-a:11211", None), "cache-a");
    assert_eq!(ring_name("cache-a:011211", None), "cache-a"); // the port's value counts
    assert_eq!(ring_name("[::1]:11211", None), "[::1]");
    assert_eq!(ring_name("[::1]:11212", None), "[::1]:11212");
    assert_eq!(ring_name("127.0.0.1:11211", Some("cache-a")), "cache-a");
    assert_eq!(ring_name("127.0.0.1:11212", Some("b")), "b");
    assert_eq!(ring_name("127.0.0.1:11211", Some("")), "127.0.0.1"); // empty = no name
    assert_eq!(ring_name("127.0.0.1:112110", None), "127.0.0.1:112110");
    assert_eq!(ring_name("127.0.0.1:1121", None), "127.0.0.1:1121");
    assert_eq!(ring_name("localhost", None), "localhost");
    assert_eq!(ring_name("/run/mc.sock", None), "/run/mc.sock:");
}

#[test]
fn point_counts_follow_weights_in_single_precision() {
    // (weight, total weight, servers with a weight) -> points, from the reference script.
    let cases = [
        (1, 5, 4, 128),
        (2, 5, 4, 256),
        (1, 3, 3, 160),
        (1, 7, 5, 112),
        (3, 7, 5, 340),
        (7, 100, 13, 144),
        (1, 1000, 3, 0),
        (5, 17, 9, 420),
        (1, 1, 1, 160),
    ];
    for (weight, total, live, want) in cases {
        assert_eq!(
            ketama_point_count(weight, total, live),
            want,
            "weight {weight} of {total}, {live} servers"
        );
    }
}

#[test]
fn golden_ketama_ring() {
    let pool = test_pool();
    let names: Vec<&str> = pool.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["127.0.0.1:11212", "127.0.0.1:11213", "cache-c", "127.0.0.1"]
    );
    let ring = Ring::new(&pool, Distribution::Ketama, HashFunction::Md5);
    assert_eq!(ring.points(), 640);
    let Placement::Ketama {
        values, servers, ..
    } = &ring.placement
    else {
        panic!("not a ketama ring: {ring:?}");
    };
    let per_server: Vec<usize> = (0..4u32)
        .map(|s| servers.iter().filter(|&&o| o == s).count())
        .collect();
    assert_eq!(per_server, [128, 256, 128, 128]);
    assert_eq!(
        (values.first(), servers.first()),
        (Some(&2_077_117), Some(&1))
    );
    assert_eq!(
        (values.last(), servers.last()),
        (Some(&4_292_932_786), Some(&3))
    );
    assert!(values.windows(2).all(|w| matches!(w, [a, b] if a <= b)));

    let md5_want = [3, 3, 3, 3, 2, 0, 2, 2, 3, 1, 1, 3, 2, 1, 3, 1, 3, 3, 1, 3];
    let fnv_want = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2];
    let fnv = Ring::new(&pool, Distribution::Ketama, HashFunction::Fnv1a_64);
    for i in 0..20 {
        let key = format!("key:{i}");
        assert_eq!(
            Some(&ring.server_for(key.as_bytes(), &mut 0)),
            md5_want.get(i),
            "md5 {key}"
        );
        assert_eq!(
            Some(&fnv.server_for(key.as_bytes(), &mut 0)),
            fnv_want.get(i),
            "fnv {key}"
        );
    }
}

#[test]
fn ketama_wraps_past_the_last_point() {
    let ring = Ring::new(&test_pool(), Distribution::Ketama, HashFunction::Md5);
    // Above the last point (4292932786) wraps to the first point's server (index 1).
    assert_eq!(ring.server_for_hash(u32::MAX, &mut 0), 1);
    assert_eq!(ring.server_for_hash(4_292_932_787, &mut 0), 1);
    assert_eq!(ring.server_for_hash(4_292_932_786, &mut 0), 3); // exactly on the last point
    assert_eq!(ring.server_for_hash(0, &mut 0), 1);
}

#[test]
fn ketama_shares_follow_weights() {
    let pool = servers(&[("a:1", 1), ("b:1", 1), ("c:1", 2), ("d:1", 1)]);
    let ring = Ring::new(&pool, Distribution::Ketama, HashFunction::Md5);
    let got = shares(&ring, pool.len(), 100_000);
    for (share, want) in got.iter().zip([0.2, 0.2, 0.4, 0.2]) {
        assert!((share - want).abs() < 0.04, "shares {got:?}");
    }
}

#[test]
fn ketama_shares_are_even_for_every_good_hash() {
    // fnv1a_64 and the crcs/fnv1_* are excluded: twemproxy's versions spread sequential keys
    // poorly (fnv1a_64 multiplies by 0x1b3 in 32 bits; crc32 has 15 bits), as they do there.
    let pool = servers(&[("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1)]);
    for function in [
        HashFunction::Md5,
        HashFunction::Murmur,
        HashFunction::Jenkins,
        HashFunction::Hsieh,
        HashFunction::OneAtATime,
        HashFunction::Crc32a,
    ] {
        let ring = Ring::new(&pool, Distribution::Ketama, function);
        let got = shares(&ring, pool.len(), 30_000);
        for share in &got {
            assert!((share - 1.0 / 3.0).abs() < 0.08, "{function:?}: {got:?}");
        }
    }
}

#[test]
fn adding_a_server_moves_about_one_in_n_keys_to_it() {
    let four = servers(&[("a:1", 1), ("b:1", 1), ("c:1", 1), ("d:1", 1)]);
    let mut five = four.clone();
    five.push(RingServer {
        name: "e:1".to_string(),
        weight: 1,
    });
    let before = Ring::new(&four, Distribution::Ketama, HashFunction::Md5);
    let after = Ring::new(&five, Distribution::Ketama, HashFunction::Md5);
    let keys = 50_000;
    let mut moved = 0;
    for i in 0..keys {
        let key = format!("key:{i}");
        let (old, new) = (
            before.server_for(key.as_bytes(), &mut 0),
            after.server_for(key.as_bytes(), &mut 0),
        );
        if old != new {
            moved += 1;
            assert_eq!(new, 4, "{key} moved between old servers");
        }
    }
    let fraction = moved as f64 / keys as f64;
    assert!((0.13..0.27).contains(&fraction), "moved {fraction}");
}

#[test]
fn weight_zero_servers_are_as_if_absent() {
    let with_zero = servers(&[("a:1", 1), ("z:1", 0), ("b:1", 3), ("c:1", 1)]);
    let without = servers(&[("a:1", 1), ("b:1", 3), ("c:1", 1)]);
    for distribution in [Distribution::Ketama, Distribution::Modula] {
        let r0 = Ring::new(&with_zero, distribution, HashFunction::Murmur);
        let r1 = Ring::new(&without, distribution, HashFunction::Murmur);
        assert_eq!(r0.len(), 3);
        for i in 0..5_000 {
            let key = format!("k{i}");
            let old_index = r1.server_for(key.as_bytes(), &mut 0);
            let want = if old_index == 0 { 0 } else { old_index + 1 };
            assert_eq!(
                r0.server_for(key.as_bytes(), &mut 0),
                want,
                "{distribution:?} {key}"
            );
        }
    }
}

#[test]
fn empty_and_single_rings() {
    for distribution in Distribution::ALL {
        let empty = Ring::new(&[], distribution, HashFunction::Md5);
        assert!(empty.is_empty());
        assert_eq!(
            (empty.len(), empty.server_for(b"k", &mut 0), empty.points()),
            (0, 0, 0)
        );
        let zero = Ring::new(
            &servers(&[("a", 0), ("b", 0)]),
            distribution,
            HashFunction::Md5,
        );
        assert!(zero.is_empty());
        assert_eq!(zero.server_for(b"k", &mut 0), 0);
        let single = Ring::new(
            &servers(&[("a", 0), ("b", 5), ("c", 0)]),
            distribution,
            HashFunction::Md5,
        );
        assert_eq!((single.len(), single.is_empty()), (1, false));
        for i in 0..100 {
            assert_eq!(single.server_for(format!("k{i}").as_bytes(), &mut 0), 1);
        }
    }
}

#[test]
fn modula_slots_follow_weights_in_name_order() {
    // Configured order c, a, bb; twemproxy's order a, c, bb (shorter names first).
    // Weights 2, 1, 3 -> slots [a][c c][bb bb bb] over a total of 6.
    let pool = servers(&[("c", 2), ("a", 1), ("bb", 3)]);
    let ring = Ring::new(&pool, Distribution::Modula, HashFunction::Md5);
    assert_eq!(ring.points(), 6);
    let want = [1, 0, 0, 2, 2, 2];
    for h in 0..60u32 {
        assert_eq!(
            Some(&ring.server_for_hash(h, &mut 0)),
            want.get((h % 6) as usize),
            "{h}"
        );
    }
    assert_eq!(ring.server_for_hash(u32::MAX, &mut 0), 2); // 4294967295 % 6 = 3: bb's first slot
}

#[test]
fn modula_uses_the_key_hash() {
    let pool = servers(&[("s0", 1), ("s1", 1), ("s2", 1)]);
    let ring = Ring::new(&pool, Distribution::Modula, HashFunction::Crc32a);
    // crc32a("apple") = 2838417488; % 3 = 2.
    assert_eq!(ring.server_for(b"apple", &mut 0), 2);
}

#[test]
fn random_picks_every_weighted_server_evenly() {
    let pool = servers(&[("a", 1), ("b", 0), ("c", 7), ("d", 1)]);
    let ring = Ring::new(&pool, Distribution::Random, HashFunction::Md5);
    let mut counts = [0usize; 4];
    let mut random = random_seed();
    for _ in 0..30_000 {
        if let Some(c) = counts.get_mut(ring.server_for(b"same key", &mut random)) {
            *c += 1;
        }
    }
    assert_eq!(counts.get(1), Some(&0), "weight 0 was picked: {counts:?}");
    for i in [0, 2, 3] {
        let share = counts.get(i).copied().unwrap_or(0) as f64 / 30_000.0;
        assert!((share - 1.0 / 3.0).abs() < 0.03, "{counts:?}");
    }
}

#[test]
fn hash_tag_keys_share_a_server() {
    let ring = Ring::new(&test_pool(), Distribution::Ketama, HashFunction::Fnv1a_64);
    let tag = b"{}";
    for user in 0..200 {
        let first = format!("user:{{{user}}}:name");
        let want = ring.server_for(hash_tag_slice(first.as_bytes(), tag), &mut 0);
        for field in ["email", "cart", "x"] {
            let key = format!("{field}:{{{user}}}");
            assert_eq!(
                ring.server_for(hash_tag_slice(key.as_bytes(), tag), &mut 0),
                want
            );
        }
    }
}

#[test]
fn ring_is_shareable_between_workers() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Ring>();
    let ring = Ring::new(&test_pool(), Distribution::Random, HashFunction::Md5);
    assert!(format!("{ring:?}").contains("Random"));
}

#[test]
fn random_draws_from_the_callers_state_only() {
    // The ring holds no generator: the same state gives the same picks, on the ring or a
    // clone of it, and each call advances the caller's state.
    let ring = Ring::new(&test_pool(), Distribution::Random, HashFunction::Md5);
    let copy = ring.clone();
    let (mut a, mut b) = (42u64, 42u64);
    let picks: Vec<usize> = (0..64).map(|_| ring.server_for(b"k", &mut a)).collect();
    let again: Vec<usize> = (0..64).map(|_| copy.server_for(b"k", &mut b)).collect();
    assert_eq!(picks, again);
    assert_eq!(a, b);
    assert_ne!(a, 42);
    let four = ring.servers_for4([b"a", b"b", b"c", b"d"], &mut a);
    assert!(four.iter().all(|&s| s < 4), "{four:?}");
    // Other distributions leave the state alone.
    let ketama = Ring::new(&test_pool(), Distribution::Ketama, HashFunction::Md5);
    let mut untouched = 7u64;
    ketama.server_for(b"k", &mut untouched);
    ketama.servers_for4([b"a", b"b", b"c", b"d"], &mut untouched);
    assert_eq!(untouched, 7);
    // Two seeds drawn one after the other differ (two workers do not pick in lockstep).
    assert_ne!(random_seed(), random_seed());
}

#[test]
fn bucketed_lookup_equals_a_plain_binary_search() {
    for n in [2usize, 3, 5, 17, 100, 300] {
        let pool: Vec<RingServer> = (0..n)
            .map(|i| RingServer::new(&format!("10.1.{}.{}:11211", i / 256, i % 256), None, 1))
            .collect();
        let ring = Ring::new(&pool, Distribution::Ketama, HashFunction::Md5);
        let Placement::Ketama {
            values, servers, ..
        } = &ring.placement
        else {
            panic!("not a ketama ring: {ring:?}");
        };
        let plain = |h: u32| {
            let at = values.partition_point(|&v| v < h);
            let at = if at == values.len() { 0 } else { at };
            servers.get(at).map_or(0, |&s| s as usize)
        };
        // Every point, its neighbours, bucket edges, and a spread of other values.
        let mut probes: Vec<u32> = vec![0, 1, u32::MAX, u32::MAX - 1, 1 << 31];
        for &v in values {
            probes.extend([v, v.wrapping_add(1), v.wrapping_sub(1)]);
        }
        probes.extend((0..20_000u32).map(|i| i.wrapping_mul(0x9E37_79B9)));
        probes.extend((0..=16u32).map(|b| (1u64 << 32 >> b) as u32));
        for h in probes {
            assert_eq!(
                ring.server_for_hash(h, &mut 0),
                plain(h),
                "{n} servers, hash {h}"
            );
        }
    }
}

#[test]
fn four_keys_at_once_land_where_each_alone_does() {
    let servers: Vec<RingServer> = (0..5)
        .map(|i| RingServer::new(&format!("10.0.0.{i}:11211"), None, 1 + i % 2))
        .collect();
    for distribution in [Distribution::Ketama, Distribution::Modula] {
        for hash in [HashFunction::Fnv1a_64, HashFunction::Md5] {
            let ring = Ring::new(&servers, distribution, hash);
            let keys: Vec<String> = (0..400).map(|i| format!("user:{i}:profile")).collect();
            for chunk in keys.chunks_exact(4) {
                let four = [0, 1, 2, 3].map(|i| chunk[i].as_bytes());
                assert_eq!(
                    ring.servers_for4(four, &mut 0),
                    four.map(|k| ring.server_for(k, &mut 0))
                );
            }
        }
    }
}
