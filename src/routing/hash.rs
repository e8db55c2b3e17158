//! Key hash functions, bit-for-bit compatible with twemproxy (nutcracker 0.5.x, amd64).
//!
//! Every function twemproxy offers for `hash:` is here, written from its algorithms, not its code.
//! Compatibility means more than "the same textbook hash": twemproxy's functions carry quirks
//! that decide where keys land, and they are reproduced on purpose:
//!
//! - **Signed bytes.** twemproxy reads keys through `const char *`, and `char` is signed on
//!   amd64. `one_at_a_time`, `fnv1_64`, `fnv1a_64`, `fnv1_32`, `fnv1a_32` and the 3-byte tail of
//!   `hsieh` therefore widen a byte >= 0x80 with its sign (0xE9 becomes 0xFFFF_FFE9), which
//!   changes the hash of every key that is not plain ASCII. `sext` does that widening.
//! - **`fnv1a_64` is a 32-bit hash.** It starts from the low 32 bits of the 64-bit FNV offset
//!   basis (0x8422_2325) and multiplies by the low 32 bits of the 64-bit prime (0x1b3) in 32-bit
//!   arithmetic. `fnv1_64` really runs in 64 bits and returns the low 32.
//! - **`crc32` is libmemcached's CRC**: bits 16..31 of the standard CRC-32, masked to 15 bits
//!   (`crc32("apple")` = 10542). **`crc32a`** is the standard CRC-32 (IEEE 802.3, the one zlib
//!   and `crc32fast` compute: `crc32a("apple")` = 2838417488).
//! - **`md5`** is the first four bytes of the MD5 digest read little-endian.
//! - **`jenkins`** is Bob Jenkins' lookup3 `hashlittle` with the initial value 13.
//! - **`murmur`** is MurmurHash2 seeded with `0xdeadbeef * len`.
//! - **`hsieh`** is Paul Hsieh's SuperFastHash (0 for an empty key).
//! - **`crc16`** walks the CRC-16/XMODEM table (polynomial 0x1021, initial value 0) but keeps
//!   the running value in 32 bits without masking: the result spans 32 bits, and only its low 16
//!   bits are the textbook CRC-16/XMODEM. (Later twemproxy sources use CRC-16/ARC in 16 bits;
//!   Debian's 0.5.0 does not, as the nutcracker comparison test shows.)
//!
//! [`hash_tag_slice`] applies a pool's `hash_tag` before hashing, as twemproxy does. The router
//! calls it, then [`crate::routing::ring::Ring::server_for`], which calls [`hash`].
//!
//! None of these functions allocates or panics, whatever the key.

use crate::config::placement::HashFunction;
use md5::{Digest, Md5};

/// The hash twemproxy computes for `key` with `function` (see the module docs for each one).
#[inline]
pub fn hash(function: HashFunction, key: &[u8]) -> u32 {
    match function {
        HashFunction::OneAtATime => one_at_a_time(key),
        HashFunction::Md5 => md5(key),
        HashFunction::Crc16 => crc16(key),
        HashFunction::Crc32 => crc32_libmemcached(key),
        HashFunction::Crc32a => crc32a(key),
        HashFunction::Fnv1_64 => fnv1_64(key),
        HashFunction::Fnv1a_64 => fnv1a_64(key),
        HashFunction::Fnv1_32 => fnv1_32(key),
        HashFunction::Fnv1a_32 => fnv1a_32(key),
        HashFunction::Hsieh => hsieh(key),
        HashFunction::Murmur => murmur(key),
        HashFunction::Jenkins => jenkins(key),
    }
}

/// The hashes of four keys, exactly as four calls of [`hash`]. FNV-1a (`fnv1a_64`, the default,
/// and `fnv1a_32`) is one multiply per byte, each waiting for the last: run alone, a key costs
/// the multiply's latency per byte. Four keys' chains run side by side here, so the processor
/// overlaps them (a multi-get hashes many keys at once).
#[inline]
pub fn hash4(function: HashFunction, keys: [&[u8]; 4]) -> [u32; 4] {
    match function {
        HashFunction::Fnv1a_64 => fnv1a4(keys, FNV_64_OFFSET as u32, FNV_64_PRIME as u32),
        HashFunction::Fnv1a_32 => fnv1a4(keys, FNV_32_OFFSET, FNV_32_PRIME),
        _ => keys.map(|key| hash(function, key)),
    }
}

/// FNV-1a in 32 bits over signed bytes, of four keys at once (see [`hash4`]).
fn fnv1a4(keys: [&[u8]; 4], offset: u32, prime: u32) -> [u32; 4] {
    let [k0, k1, k2, k3] = keys;
    let mut h = [offset; 4];
    let mut common = 0;
    for (((&a, &b), &c), &d) in k0.iter().zip(k1).zip(k2).zip(k3) {
        h[0] = (h[0] ^ sext(a)).wrapping_mul(prime);
        h[1] = (h[1] ^ sext(b)).wrapping_mul(prime);
        h[2] = (h[2] ^ sext(c)).wrapping_mul(prime);
        h[3] = (h[3] ^ sext(d)).wrapping_mul(prime);
        common += 1;
    }
    for (hash, key) in h.iter_mut().zip(keys) {
        for &byte in key.get(common..).unwrap_or_default() {
            *hash = (*hash ^ sext(byte)).wrapping_mul(prime);
        }
    }
    h
}

/// The part of `key` a pool with `hash_tag: tag` hashes, by twemproxy's rule.
///
/// `tag` holds two bytes, an opening and a closing one (`b"{}"`). Find the first opening byte in
/// the key; find the first closing byte after it; if both exist and at least one byte lies
/// between them, that part is hashed. In every other case — no opening byte, no closing byte
/// after it, an empty tag (`"a{}b"`: twemproxy does not look for a later pair), or a `tag` that
/// is not two bytes long — the whole key is hashed. The opening and closing byte may be the same
/// (`b"$$"`).
#[inline]
pub fn hash_tag_slice<'a>(key: &'a [u8], tag: &[u8]) -> &'a [u8] {
    let (Some(&open), Some(&close), 2) = (tag.first(), tag.get(1), tag.len()) else {
        return key;
    };
    let Some(start) = memchr::memchr(open, key) else {
        return key;
    };
    let inner_and_rest = key.get(start + 1..).unwrap_or_default();
    match memchr::memchr(close, inner_and_rest) {
        Some(end) if end > 0 => inner_and_rest.get(..end).unwrap_or(key),
        _ => key,
    }
}

/// The MD5 digest of `data` (the building block of the `md5` hash and of ketama points).
#[inline]
pub(crate) fn md5_digest(data: &[u8]) -> [u8; 16] {
    Md5::digest(data).into()
}

/// A byte as twemproxy's `(uint32_t)` of a signed `char` sees it: values >= 0x80 sign-extended.
#[inline(always)]
fn sext(byte: u8) -> u32 {
    byte as i8 as u32
}

/// Bob Jenkins' one-at-a-time hash over signed bytes.
fn one_at_a_time(key: &[u8]) -> u32 {
    let mut h: u32 = 0;
    for &b in key {
        h = h.wrapping_add(sext(b));
        h = h.wrapping_add(h << 10);
        h ^= h >> 6;
    }
    h = h.wrapping_add(h << 3);
    h ^= h >> 11;
    h.wrapping_add(h << 15)
}

/// The first four bytes of the MD5 digest, little-endian.
fn md5(key: &[u8]) -> u32 {
    let [a, b, c, d, ..] = md5_digest(key);
    u32::from_le_bytes([a, b, c, d])
}

/// CRC-16/XMODEM lookup table (polynomial 0x1021, not reflected), built at compile time.
const CRC16_TABLE: [u16; 256] = {
    let mut table = [0u16; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u16) << 8;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// twemproxy's `crc16`: the CRC-16/XMODEM table walk with the running value kept in 32 bits and
/// never masked, so bits shifted past bit 15 stay in the result. Its low 16 bits are exactly
/// CRC-16/XMODEM.
fn crc16(key: &[u8]) -> u32 {
    let mut crc: u32 = 0;
    for &b in key {
        let slot = ((crc >> 8) ^ u32::from(b)) & 0xff;
        // `slot` < 256 by the mask; the fallback is unreachable.
        let entry = CRC16_TABLE.get(slot as usize).copied().unwrap_or(0);
        crc = (crc << 8) ^ u32::from(entry);
    }
    crc
}

/// twemproxy's `crc32` (libmemcached's): bits 16..30 of the standard CRC-32.
fn crc32_libmemcached(key: &[u8]) -> u32 {
    (crc32a(key) >> 16) & 0x7fff
}

/// The standard CRC-32 (IEEE 802.3, reflected 0xEDB88320, init and final xor 0xFFFFFFFF).
fn crc32a(key: &[u8]) -> u32 {
    crc32fast::hash(key)
}

const FNV_64_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_64_PRIME: u64 = 0x0000_0100_0000_01b3;
const FNV_32_OFFSET: u32 = 0x811c_9dc5;
const FNV_32_PRIME: u32 = 0x0100_0193;

/// FNV-1 in 64 bits (multiply, then xor the sign-extended byte); the low 32 bits.
fn fnv1_64(key: &[u8]) -> u32 {
    let mut h = FNV_64_OFFSET;
    for &b in key {
        h = h.wrapping_mul(FNV_64_PRIME);
        h ^= b as i8 as u64;
    }
    h as u32
}

/// twemproxy's "FNV-1a 64": FNV-1a in 32-bit arithmetic with the 64-bit constants truncated.
fn fnv1a_64(key: &[u8]) -> u32 {
    let mut h = FNV_64_OFFSET as u32;
    for &b in key {
        h ^= sext(b);
        h = h.wrapping_mul(FNV_64_PRIME as u32);
    }
    h
}

/// FNV-1 in 32 bits over signed bytes.
fn fnv1_32(key: &[u8]) -> u32 {
    let mut h = FNV_32_OFFSET;
    for &b in key {
        h = h.wrapping_mul(FNV_32_PRIME);
        h ^= sext(b);
    }
    h
}

/// FNV-1a in 32 bits over signed bytes.
fn fnv1a_32(key: &[u8]) -> u32 {
    let mut h = FNV_32_OFFSET;
    for &b in key {
        h ^= sext(b);
        h = h.wrapping_mul(FNV_32_PRIME);
    }
    h
}

/// Two bytes as a little-endian 16-bit value.
#[inline(always)]
fn le16(lo: u8, hi: u8) -> u32 {
    u32::from(lo) | (u32::from(hi) << 8)
}

/// Paul Hsieh's SuperFastHash; the third byte of a 3-byte tail is sign-extended.
fn hsieh(key: &[u8]) -> u32 {
    if key.is_empty() {
        return 0;
    }
    let mut h: u32 = 0;
    let mut blocks = key.chunks_exact(4);
    for block in &mut blocks {
        if let [a, b, c, d] = *block {
            h = h.wrapping_add(le16(a, b));
            let tmp = (le16(c, d) << 11) ^ h;
            h = (h << 16) ^ tmp;
            h = h.wrapping_add(h >> 11);
        }
    }
    match *blocks.remainder() {
        [a, b, c] => {
            h = h.wrapping_add(le16(a, b));
            h ^= h << 16;
            h ^= sext(c) << 18;
            h = h.wrapping_add(h >> 11);
        }
        [a, b] => {
            h = h.wrapping_add(le16(a, b));
            h ^= h << 11;
            h = h.wrapping_add(h >> 17);
        }
        [a] => {
            h = h.wrapping_add(u32::from(a));
            h ^= h << 10;
            h = h.wrapping_add(h >> 1);
        }
        _ => {}
    }
    h ^= h << 3;
    h = h.wrapping_add(h >> 5);
    h ^= h << 4;
    h = h.wrapping_add(h >> 17);
    h ^= h << 25;
    h.wrapping_add(h >> 6)
}

/// MurmurHash2 (32-bit, little-endian reads) with twemproxy's seed `0xdeadbeef * len`.
fn murmur(key: &[u8]) -> u32 {
    const M: u32 = 0x5bd1_e995;
    let len = key.len() as u32; // twemproxy truncates the length to 32 bits too
    let mut h = 0xdead_beef_u32.wrapping_mul(len) ^ len;
    let mut blocks = key.chunks_exact(4);
    for block in &mut blocks {
        if let [a, b, c, d] = *block {
            let mut k = u32::from_le_bytes([a, b, c, d]);
            k = k.wrapping_mul(M);
            k ^= k >> 24;
            k = k.wrapping_mul(M);
            h = h.wrapping_mul(M) ^ k;
        }
    }
    let tail = blocks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^ (h >> 15)
}

/// twemproxy's `jenkins`: lookup3 `hashlittle` with initial value 13.
fn jenkins(key: &[u8]) -> u32 {
    lookup3(key, 13)
}

/// Bob Jenkins' lookup3 `hashlittle(key, len, initval)` (little-endian word reads).
pub(crate) fn lookup3(key: &[u8], initval: u32) -> u32 {
    let init = 0xdead_beef_u32
        .wrapping_add(key.len() as u32)
        .wrapping_add(initval);
    let (mut a, mut b, mut c) = (init, init, init);
    if key.is_empty() {
        return c;
    }
    // Every 12-byte block but the last is mixed; the last (1 to 12 bytes) goes through `final`.
    let last_len = (key.len() - 1) % 12 + 1;
    let (body, last) = key.split_at(key.len() - last_len);
    for block in body.chunks_exact(12) {
        a = a.wrapping_add(word(block, 0));
        b = b.wrapping_add(word(block, 4));
        c = c.wrapping_add(word(block, 8));
        mix(&mut a, &mut b, &mut c);
    }
    a = a.wrapping_add(word(last, 0));
    b = b.wrapping_add(word(last, 4));
    c = c.wrapping_add(word(last, 8));
    final_mix(&mut a, &mut b, &mut c);
    c
}

/// Up to four bytes of `bytes` from `at`, little-endian, missing bytes as zero.
#[inline(always)]
fn word(bytes: &[u8], at: usize) -> u32 {
    bytes
        .iter()
        .skip(at)
        .take(4)
        .enumerate()
        .fold(0, |w, (i, &b)| w | (u32::from(b) << (8 * i)))
}

#[inline(always)]
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c) ^ c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c) ^ c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a) ^ a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b) ^ b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

#[inline(always)]
fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(14));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(11));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(25));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(16));
    *a = (*a ^ *c).wrapping_sub(c.rotate_left(4));
    *b = (*b ^ *a).wrapping_sub(a.rotate_left(14));
    *c = (*c ^ *b).wrapping_sub(b.rotate_left(24));
}

#[cfg(test)]
#[path = "hash_tests.rs"]
mod tests;
