//! Bearer-token checks for the admin endpoints that change something.

/// True when `a` and `b` are equal, in time that depends only on their lengths: every byte is
/// compared, with no early exit on the first difference, so the time an answer takes does not
/// tell an attacker how many leading bytes of a guess were right. (A length mismatch returns at
/// once: that leaks the token's length, which is no help in guessing it.)
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    // Keep the optimiser from turning the fold back into a comparison that stops early.
    std::hint::black_box(diff) == 0
}

/// True when the `Authorization` header value `header` is `Bearer <token>` (the scheme in any
/// case, as HTTP allows) with exactly `token`.
pub fn bearer_matches(header: Option<&[u8]>, token: &[u8]) -> bool {
    let Some(value) = header else {
        return false;
    };
    let value = value.trim_ascii();
    let Some(scheme) = value.get(..6) else {
        return false;
    };
    let Some(rest) = value.get(6..) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case(b"bearer") || !rest.first().is_some_and(|&b| b == b' ') {
        return false;
    }
    constant_time_eq(rest.trim_ascii(), token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"Secret"));
        assert!(!constant_time_eq(b"secret", b"secre"));
        assert!(!constant_time_eq(b"secret", b"secrets"));
        assert!(!constant_time_eq(b"", b"x"));
        // Every bit position of a byte counts.
        for bit in 0..8 {
            assert!(!constant_time_eq(&[0], &[1 << bit]));
        }
    }

    #[test]
    fn bearer_header_forms() {
        let t = b"tok-3n";
        assert!(bearer_matches(Some(b"Bearer tok-3n"), t));
        assert!(bearer_matches(Some(b"bearer   tok-3n "), t));
        assert!(!bearer_matches(None, t));
        assert!(!bearer_matches(Some(b""), t));
        assert!(!bearer_matches(Some(b"Bearer"), t));
        assert!(!bearer_matches(Some(b"Bearertok-3n"), t));
        assert!(!bearer_matches(Some(b"Basic tok-3n"), t));
        assert!(!bearer_matches(Some(b"Bearer tok-3"), t));
        assert!(!bearer_matches(Some(b"Bearer tok-3nn"), t));
    }
}
