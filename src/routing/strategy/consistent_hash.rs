//! `consistent_hash`: each key goes to the server owning it on the pool's ring (ketama,
//! modula or random, placing keys exactly where twemproxy does).

use crate::routing::Pool;

/// The server owning `key` on `pool`'s ring.
#[inline]
pub fn pick(pool: &Pool, key: &[u8]) -> usize {
    pool.server_for(key)
}
