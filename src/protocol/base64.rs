//! Decoding of base64 meta-command keys (the `b` flag) into a stack buffer, so routing by
//! the decoded key allocates nothing; and encoding, for binary-protocol keys that memcached text
//! cannot carry as they are.

/// Longest decoded key (memcached's key limit).
pub const MAX_DECODED: usize = 250;

/// Longest encoding of a key of [`MAX_DECODED`] bytes.
pub const MAX_ENCODED: usize = MAX_DECODED.div_ceil(3) * 4;

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Encodes `input` (at most [`MAX_DECODED`] bytes; the rest is left out) as standard base64
/// with `=` padding into `out`; returns the encoded length.
pub fn encode(input: &[u8], out: &mut [u8; MAX_ENCODED]) -> usize {
    let input = input.get(..MAX_DECODED).unwrap_or(input);
    let mut len = 0;
    for chunk in input.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let word = (b(0) << 16) | (b(1) << 8) | b(2);
        for i in 0..4 {
            let sextet = ((word >> (18 - 6 * i)) & 0x3f) as usize;
            let byte = match i <= chunk.len() {
                true => ALPHABET.get(sextet).copied().unwrap_or(b'='),
                false => b'=',
            };
            if let Some(slot) = out.get_mut(len) {
                *slot = byte;
                len += 1;
            }
        }
    }
    len
}

/// Each byte's sextet, or [`INVALID`] for a byte outside the alphabet (a table: one load per
/// character instead of a chain of range tests; keys decode on every request that carries one).
const SEXTETS: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 64 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const INVALID: u8 = 0xff;

#[inline]
fn sextet(b: u8) -> Option<u8> {
    let s = SEXTETS[usize::from(b)];
    (s != INVALID).then_some(s)
}

/// Decodes standard base64 (with `=` padding) into `out`; returns the decoded length, or
/// None for input that is not valid base64 or decodes to more than `out` holds.
pub fn decode(input: &[u8], out: &mut [u8; MAX_DECODED]) -> Option<usize> {
    if input.is_empty() || input.len() % 4 != 0 {
        return None;
    }
    let mut len = 0;
    let chunks = input.len() / 4;
    for (index, chunk) in input.chunks_exact(4).enumerate() {
        let last = index + 1 == chunks;
        let pad = chunk.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return None;
        }
        let mut word: u32 = 0;
        for &b in chunk.get(..4 - pad)? {
            word = (word << 6) | u32::from(sextet(b)?);
        }
        word <<= 6 * pad as u32;
        let bytes = [(word >> 16) as u8, (word >> 8) as u8, word as u8];
        for &byte in bytes.get(..3 - pad)? {
            *out.get_mut(len)? = byte;
            len += 1;
        }
    }
    Some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Option<Vec<u8>> {
        let mut out = [0u8; MAX_DECODED];
        decode(s.as_bytes(), &mut out).map(|n| out[..n].to_vec())
    }

    #[test]
    fn encoding_round_trips() {
        for input in [
            &b"f"[..],
            b"fo",
            b"foo",
            b"foob",
            b"\x00\xff \r\n",
            &[7u8; 250],
        ] {
            let mut out = [0u8; MAX_ENCODED];
            let n = encode(input, &mut out);
            assert_eq!(n % 4, 0);
            assert_eq!(
                dec(std::str::from_utf8(&out[..n]).unwrap()).as_deref(),
                Some(input)
            );
        }
        let mut out = [0u8; MAX_ENCODED];
        let n = encode(b"fooba", &mut out);
        assert_eq!(&out[..n], b"Zm9vYmE=");
    }

    #[test]
    fn decodes_padded_base64() {
        assert_eq!(dec("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(dec("Zm9vYg==").as_deref(), Some(&b"foob"[..]));
        assert_eq!(dec("Zm9vYmE=").as_deref(), Some(&b"fooba"[..]));
        assert_eq!(dec("AP8=").as_deref(), Some(&[0u8, 255][..]));
    }

    #[test]
    fn rejects_bad_input() {
        for bad in ["", "Zm9", "Zm9v!A==", "Z===", "Zg==Zm9v", "Zm9v\r\n"] {
            assert_eq!(dec(bad), None, "{bad:?}");
        }
        let long = "A".repeat(4 * 84); // decodes to 252 bytes
        assert_eq!(dec(&long), None);
    }
}
