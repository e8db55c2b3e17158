//! Key distribution over a pool's servers, placing every key where twemproxy puts it.
//!
//! A [`Ring`] is built once from the pool's servers (a [`RingServer`]: the name twemproxy hashes
//! and a weight), its `distribution` and its `hash`, and then only read: [`Ring::server_for`]
//! allocates nothing, takes no lock and writes nothing in the ring (`random`'s generator state
//! is the caller's), so workers may share one ring or each keep a clone.
//!
//! What twemproxy (nutcracker 0.5.x) does, and so what this module does:
//!
//! - **Server order.** When twemproxy validates its configuration it sorts a pool's servers by
//!   name — shorter names first, equal lengths bytewise — and keeps that order. It matters for
//!   `modula` (slots follow it) and for the tie between two ketama points of equal value. We
//!   never reorder the caller's slice: indices returned are into `servers` as given.
//! - **Ketama.** Each server gets `floor(weight / total_weight * 40 * n + 1e-10) * 4` points,
//!   computed in `f32` exactly as twemproxy does (`n` = servers with points). Point group `i`
//!   of a server is the MD5 digest of `"<name>-<i>"`; its 16 bytes give four points, each a
//!   little-endian `u32`. The points are sorted by value (stably, in server order); a key goes to
//!   the first point whose value is >= the key's hash, wrapping to the first point. A table
//!   indexed by the top bits of the hash (about one entry per point, 16 to 65536 entries)
//!   narrows that search to the one or two points of the hash's bucket.
//! - **Modula.** Each server owns `weight` consecutive slots in server order; a key goes to slot
//!   `hash % total_weight`.
//! - **Random.** Every server with a weight is equally likely per request (twemproxy ignores
//!   weights here); see [`Ring::server_for`] for our generator.
//! - **One server.** twemproxy skips hashing when a pool has one server; so do we when exactly
//!   one server has a weight.
//!
//! Names come from [`ring_name`]: the configured name, else the address without its port when
//! the port is 11211 (libmemcached's convention), else the address as written.
//!
//! Differences, by design: a server of weight 0 gets no points and no slots (twemproxy refuses
//! weight 0; a weight-0 server here is placed exactly as if it were not configured). A ring in
//! which no server has a weight is empty and [`Ring::server_for`] returns 0; the config loader
//! refuses weight 0, so the rings the proxy builds are never empty. twemproxy formats point names into a 273-byte buffer; names longer
//! than about 260 bytes are undefined behaviour there and hashed in full here.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;

pub use crate::config::placement::ring_name;
use crate::config::placement::{Distribution, HashFunction};
use crate::routing::hash::{hash, md5_digest};

/// Points per server of average weight on a ketama ring (40 MD5 digests of 4 points each).
pub const KETAMA_POINTS_PER_SERVER: u32 = 160;

/// One server of a pool as the ring sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingServer {
    /// What ketama hashes for this server's points; build it with [`ring_name`].
    pub name: String,
    /// Relative share of the keys; 0 gives the server no keys at all.
    pub weight: u32,
}

impl RingServer {
    /// A server named by [`ring_name`] from its address and optional configured name.
    pub fn new(address: &str, name: Option<&str>, weight: u32) -> RingServer {
        RingServer {
            name: ring_name(address, name),
            weight,
        }
    }
}

/// How a built ring places keys.
#[derive(Clone)]
enum Placement {
    /// No server has a weight.
    Empty,
    /// Exactly one server has a weight: it gets every key, unhashed.
    Single(usize),
    /// Sorted point values and, at the same positions, the server owning each point.
    /// `buckets[b]` is the index of the first point whose top `bucket_bits` bits are >= `b`
    /// (with one extra entry, `values.len()`), so a lookup searches only one bucket's points.
    Ketama {
        values: Vec<u32>,
        servers: Vec<u32>,
        buckets: Vec<u32>,
        bucket_bits: u32,
    },
    /// `ends[i]` is the first slot after server `servers[i]`'s slots; `ends.last()` = total.
    Modula { ends: Vec<u64>, servers: Vec<u32> },
    /// The servers to pick from (the generator's state is the caller's).
    Random { servers: Vec<u32> },
}

/// A pool's key distribution: immutable once built (`Send + Sync`, no interior mutability), so
/// workers may share it or each keep a clone.
#[derive(Clone)]
pub struct Ring {
    distribution: Distribution,
    hash: HashFunction,
    live: usize,
    placement: Placement,
}

impl Ring {
    /// Builds the distribution of `servers` (see the module docs for each kind). Indices returned
    /// by [`Ring::server_for`] are positions in `servers`.
    pub fn new(servers: &[RingServer], distribution: Distribution, hash: HashFunction) -> Ring {
        let order = twemproxy_order(servers);
        let live = order.len();
        let placement = match (order.as_slice(), distribution) {
            ([], _) => Placement::Empty,
            ([only], _) => Placement::Single(*only),
            (_, Distribution::Ketama) => ketama(servers, &order),
            (_, Distribution::Modula) => modula(servers, &order),
            (_, Distribution::Random) => Placement::Random {
                servers: order.iter().map(|&i| i as u32).collect(),
            },
        };
        Ring {
            distribution,
            hash,
            live,
            placement,
        }
    }

    /// Index (into the `servers` given to [`Ring::new`]) of the server owning `key`.
    ///
    /// `key` is what the pool hashes: the caller applies
    /// [`hash_tag_slice`](crate::routing::hash::hash_tag_slice) first when the pool has a
    /// `hash_tag`. For `random`, the key is ignored and each call picks anew, like twemproxy's
    /// per-request `random()`: `random` is the state of a SplitMix64 generator that the caller
    /// owns (each worker keeps its own in [`crate::routing::strategy::Strategies`]; seed one with
    /// [`random_seed`]), so a pick is a few multiplications on the caller's own cache line: no
    /// atomic shared between workers. Other distributions leave `random` as it is. An empty
    /// ring returns 0. Allocates nothing.
    #[inline]
    pub fn server_for(&self, key: &[u8], random: &mut u64) -> usize {
        match &self.placement {
            Placement::Empty => 0,
            Placement::Single(index) => *index,
            Placement::Random { servers } => pick_random(servers, random),
            _ => self.server_for_hash(hash(self.hash, key), random),
        }
    }

    /// [`Ring::server_for`] of four keys (their hashes computed side by side, see
    /// [`hash4`](crate::routing::hash::hash4)); `random` as there.
    #[inline]
    pub fn servers_for4(&self, keys: [&[u8]; 4], random: &mut u64) -> [usize; 4] {
        match &self.placement {
            Placement::Ketama { .. } | Placement::Modula { .. } => {
                crate::routing::hash::hash4(self.hash, keys)
                    .map(|h| self.server_for_hash(h, &mut *random))
            }
            _ => keys.map(|key| self.server_for(key, &mut *random)),
        }
    }

    /// Index of the server owning a key whose hash is `key_hash` (ketama and modula; random
    /// ignores the hash and draws from `random`; single-server and empty rings as in
    /// [`Ring::server_for`]).
    #[inline]
    pub fn server_for_hash(&self, key_hash: u32, random: &mut u64) -> usize {
        match &self.placement {
            Placement::Empty => 0,
            Placement::Single(index) => *index,
            Placement::Ketama {
                values,
                servers,
                buckets,
                bucket_bits,
            } => {
                // The first point >= key_hash lies in key_hash's bucket, or is the bucket's end.
                let bucket = (u64::from(key_hash) >> (32 - bucket_bits)) as usize;
                // The fallbacks below cannot be taken: a bucket index is below 2^bucket_bits
                // and `buckets` has 2^bucket_bits + 1 ascending entries ending at
                // `values.len()`; a ketama ring has two servers or more, so some points, and
                // `servers` is as long as `values`.
                debug_assert!(
                    bucket + 1 < buckets.len()
                        && !values.is_empty()
                        && servers.len() == values.len(),
                    "ketama ring out of step: bucket {bucket} of {}, {} points, {} owners",
                    buckets.len(),
                    values.len(),
                    servers.len()
                );
                let start = buckets.get(bucket).map_or(0, |&i| i as usize);
                let end = buckets
                    .get(bucket + 1)
                    .map_or(values.len(), |&i| i as usize);
                let within = values.get(start..end).unwrap_or_default();
                let at = start + within.partition_point(|&v| v < key_hash);
                let at = if at >= values.len() { 0 } else { at };
                servers.get(at).map_or(0, |&s| s as usize)
            }
            Placement::Modula { ends, servers } => {
                let total = ends.last().copied().unwrap_or(0);
                // A modula ring has two servers or more, each with a weight (so slots), and
                // one owner per end: `at` below is always a position in `servers`.
                debug_assert!(
                    total > 0 && servers.len() == ends.len(),
                    "modula ring out of step: {total} slots, {} ends, {} owners",
                    ends.len(),
                    servers.len()
                );
                if total == 0 {
                    return 0;
                }
                let slot = u64::from(key_hash) % total;
                let at = ends.partition_point(|&end| end <= slot);
                servers.get(at).map_or(0, |&s| s as usize)
            }
            Placement::Random { servers } => pick_random(servers, random),
        }
    }

    /// Number of servers that can receive keys (those with a weight above 0).
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no server can receive keys; [`Ring::server_for`] then returns 0.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Number of points on the continuum (ketama), slots (modula) or candidates (random).
    pub fn points(&self) -> usize {
        match &self.placement {
            Placement::Empty => 0,
            Placement::Single(_) => 1,
            Placement::Ketama { values, .. } => values.len(),
            Placement::Modula { ends, .. } => {
                usize::try_from(ends.last().copied().unwrap_or(0)).unwrap_or(usize::MAX)
            }
            Placement::Random { servers, .. } => servers.len(),
        }
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring")
            .field("distribution", &self.distribution)
            .field("hash", &self.hash)
            .field("servers", &self.live)
            .field("points", &self.points())
            .finish()
    }
}

/// Indices of the servers with a weight, in twemproxy's order: by name length, then bytewise
/// (a stable sort, so duplicate names keep their configured order).
fn twemproxy_order(servers: &[RingServer]) -> Vec<usize> {
    let mut live: Vec<(usize, &str)> = servers
        .iter()
        .enumerate()
        .filter(|(_, s)| s.weight > 0)
        .map(|(i, s)| (i, s.name.as_str()))
        .collect();
    live.sort_by(|(_, a), (_, b)| {
        a.len()
            .cmp(&b.len())
            .then_with(|| a.as_bytes().cmp(b.as_bytes()))
    });
    live.into_iter().map(|(i, _)| i).collect()
}

/// Ketama points of one server, exactly as twemproxy computes them in single precision.
fn ketama_point_count(weight: u32, total_weight: u64, live: usize) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let groups = pct * KETAMA_POINTS_PER_SERVER as f32 / 4.0 * live as f32;
    // twemproxy adds a double 1e-10 and converts back to float before flooring.
    let groups = (f64::from(groups) + 0.000_000_000_1) as f32;
    (groups.floor() * 4.0) as u32
}

fn ketama(servers: &[RingServer], order: &[usize]) -> Placement {
    let total: u64 = order
        .iter()
        .filter_map(|&i| servers.get(i))
        .map(|s| u64::from(s.weight))
        .sum();
    let mut points: Vec<(u32, u32)> = Vec::new();
    let mut point_name = Vec::with_capacity(64);
    for &index in order {
        let Some(server) = servers.get(index) else {
            continue;
        };
        let count = ketama_point_count(server.weight, total, order.len());
        for group in 0..count / 4 {
            point_name.clear();
            // Writing into a Vec cannot fail.
            let _ = write!(point_name, "{}-{group}", server.name);
            let digest = md5_digest(&point_name);
            for value in digest.chunks_exact(4) {
                if let [a, b, c, d] = *value {
                    points.push((u32::from_le_bytes([a, b, c, d]), index as u32));
                }
            }
        }
    }
    points.sort_by_key(|&(value, _)| value); // stable: ties stay in server order
    let values: Vec<u32> = points.iter().map(|&(v, _)| v).collect();
    // About one to two points per bucket, between 16 and 65536 buckets.
    let bucket_bits = (usize::BITS - values.len().leading_zeros()).clamp(4, 16);
    let buckets = (0..=1u64 << bucket_bits)
        .map(|b| {
            let floor = b << (32 - bucket_bits);
            values.partition_point(|&v| u64::from(v) < floor) as u32
        })
        .collect();
    Placement::Ketama {
        values,
        servers: points.iter().map(|&(_, s)| s).collect(),
        buckets,
        bucket_bits,
    }
}

fn modula(servers: &[RingServer], order: &[usize]) -> Placement {
    let mut end = 0u64;
    let mut ends = Vec::with_capacity(order.len());
    let mut owners = Vec::with_capacity(order.len());
    for &index in order {
        if let Some(server) = servers.get(index) {
            end += u64::from(server.weight);
            ends.push(end);
            owners.push(index as u32);
        }
    }
    Placement::Modula {
        ends,
        servers: owners,
    }
}

/// A seed for the `random` state [`Ring::server_for`] takes: from the process's random hasher
/// keys, different at each call (so two workers seeded one after the other draw different
/// sequences) and across runs.
pub fn random_seed() -> u64 {
    RandomState::new().build_hasher().finish()
}

/// The next output of the SplitMix64 generator whose state is `state` (advancing it).
#[inline]
fn split_mix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One step of the caller's SplitMix64 generator, mapped onto `servers` without modulo bias
/// worth mentioning (multiply-shift of the high 32 bits).
#[inline]
fn pick_random(servers: &[u32], state: &mut u64) -> usize {
    // A random ring has two servers or more (fewer is `Empty` or `Single`), and the
    // multiply-shift below is always below their count.
    debug_assert!(
        servers.len() > 1,
        "a random ring of {} servers",
        servers.len()
    );
    let z = split_mix64(state);
    let at = ((z >> 32) * servers.len() as u64) >> 32;
    servers.get(at as usize).map_or(0, |&s| s as usize)
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
