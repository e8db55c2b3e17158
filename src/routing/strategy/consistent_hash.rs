//! `consistent_hash`: each key goes to the server owning it on the pool's ring (ketama,
//! modula or random, placing keys exactly where twemproxy does).

use crate::routing::Pool;

/// The server owning `key` on `pool`'s ring; a `random` pool draws from `random`, the
/// caller's generator state (see [`crate::routing::ring::Ring::server_for`]).
#[inline]
pub fn pick(pool: &Pool, key: &[u8], random: &mut u64) -> usize {
    pool.server_for(key, random)
}
