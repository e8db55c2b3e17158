//! Decimal numbers as memcached writes them: ASCII digits only (no sign, no spaces, no `+`),
//! at least one, and no overflow. Every number of a request or a reply is read here.

/// The largest 32-bit value in decimal (client flags).
pub const U32_MAX: &[u8] = b"4294967295";
/// The largest 64-bit value in decimal (cas uniques).
pub const U64_MAX: &[u8] = b"18446744073709551615";

/// True for a non-empty run of ASCII digits.
#[inline]
pub fn is_digits(token: &[u8]) -> bool {
    !token.is_empty() && token.iter().all(u8::is_ascii_digit)
}

/// An unsigned decimal within `u64`.
#[inline]
pub fn parse_u64(token: &[u8]) -> Option<u64> {
    if token.is_empty() || token.len() > 20 {
        return None;
    }
    let mut value: u64 = 0;
    for &b in token {
        let digit = b.wrapping_sub(b'0');
        if digit > 9 {
            return None;
        }
        value = value.checked_mul(10)?.checked_add(u64::from(digit))?;
    }
    Some(value)
}

/// An unsigned decimal within `usize`.
#[inline]
pub fn parse_usize(token: &[u8]) -> Option<usize> {
    usize::try_from(parse_u64(token)?).ok()
}

/// A decimal with an optional `-`, within `i64`.
pub fn parse_i64(token: &[u8]) -> Option<i64> {
    match token.split_first() {
        Some((b'-', digits)) => 0i64.checked_sub_unsigned(parse_u64(digits)?),
        _ => i64::try_from(parse_u64(token)?).ok(),
    }
}

/// True when `digits` is a decimal no greater than `max` (the largest value of its type in
/// decimal, such as [`U32_MAX`]): digit strings of one length compare as their numbers do, so
/// a number of any width is checked without being converted.
#[inline]
pub fn at_most(digits: &[u8], max: &[u8]) -> bool {
    is_digits(digits) && (digits.len() < max.len() || (digits.len() == max.len() && digits <= max))
}

/// `n` in decimal, written at the end of `buf`: the digits are the slice returned (no
/// formatting machinery; numbers are written per request).
pub fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        if let Some(d) = buf.get_mut(at) {
            // Below 10, so the cast keeps it.
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || at == 0 {
            break;
        }
    }
    buf.get(at..).unwrap_or_default()
}

/// Appends `n` in decimal to `out`.
pub fn put_u64(out: &mut bytes::BytesMut, n: u64) {
    out.extend_from_slice(digits(n, &mut [0; 20]));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_digits_within_range_are_numbers() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(parse_u64(b"18446744073709551616"), None);
        assert_eq!(parse_u64(b"000000000000000000001"), None, "over 20 digits");
        for bad in [&b""[..], b"-1", b"+1", b" 1", b"1 ", b"1a", b"\x001"] {
            assert_eq!(parse_u64(bad), None, "{bad:?}");
            assert_eq!(parse_usize(bad), None, "{bad:?}");
        }
        assert_eq!(parse_i64(b"-1"), Some(-1));
        assert_eq!(parse_i64(b"-9223372036854775808"), Some(i64::MIN));
        assert_eq!(parse_i64(b"9223372036854775808"), None);
        assert_eq!(parse_i64(b"--1"), None);
        assert_eq!(parse_i64(b"-"), None);
    }

    #[test]
    fn at_most_compares_without_converting() {
        assert!(at_most(b"4294967295", U32_MAX));
        assert!(!at_most(b"4294967296", U32_MAX));
        assert!(at_most(b"7", U32_MAX));
        assert!(!at_most(b"99999999999", U32_MAX));
        assert!(at_most(b"18446744073709551615", U64_MAX));
        assert!(!at_most(b"", U32_MAX));
        assert!(!at_most(b"1x", U32_MAX));
    }
}
