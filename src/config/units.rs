//! Durations (`250ms`, `1.5s`, `10m`) and sizes (`65536`, `64KiB`, `1MiB`) as written in
//! config files.

use std::time::Duration;

/// What a duration must look like, for error messages.
pub(crate) const DURATION_HINT: &str =
    "a number with a unit, like 250ms, 1.5s, 10m (units: us, ms, s, m, h)";

/// What a size must look like, for error messages.
pub(crate) const SIZE_HINT: &str =
    "a whole number of bytes, or one with a unit, like 2048, 64KiB, 1MiB \
     (units: B, KB, KiB, MB, MiB, GB, GiB)";

/// Parses a duration: a decimal number (`5`, `1.5`) followed directly by a unit:
/// `us`, `ms`, `s`, `m` or `h`. A bare number is rejected: the unit is never guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit_nanos: u128 = match unit {
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "" if !number.is_empty() => {
            return Err(format!("'{text}' has no unit; expected {DURATION_HINT}"));
        }
        _ if number.is_empty() => {
            return Err(format!(
                "'{text}' is not a duration; expected {DURATION_HINT}"
            ))
        }
        _ => {
            return Err(format!(
                "'{text}' has an unknown unit '{unit}'; expected {DURATION_HINT}"
            ))
        }
    };
    if !is_decimal(number) {
        return Err(format!(
            "'{text}' is not a duration; expected {DURATION_HINT}"
        ));
    }
    let nanos = decimal_times(number, unit_nanos)
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(|| format!("'{text}' is too long a duration"))?;
    Ok(Duration::from_nanos(nanos))
}

/// Parses a size: a whole number of bytes, optionally followed by a unit (an optional single
/// space between them): `B`, `KB` (1000), `KiB` (1024), `MB`, `MiB`, `GB`, `GiB`, any case.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let unit = unit.strip_prefix(' ').unwrap_or(unit);
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" => 1 << 10,
        "mb" => 1_000_000,
        "mib" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" => 1 << 30,
        _ if number.is_empty() => {
            return Err(format!("'{text}' is not a size; expected {SIZE_HINT}"))
        }
        _ => {
            return Err(format!(
                "'{text}' has an unknown unit '{unit}'; expected {SIZE_HINT}"
            ))
        }
    };
    if number.is_empty() {
        return Err(format!("'{text}' is not a size; expected {SIZE_HINT}"));
    }
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| format!("'{text}' is too large a size"))
}

/// True for digits, optionally followed by `.` and more digits.
fn is_decimal(number: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match number.split_once('.') {
        Some((whole, frac)) => digits(whole) && digits(frac),
        None => digits(number),
    }
}

/// A decimal `number` (see [`is_decimal`]) times `unit`, truncated to an integer;
/// `None` when the result overflows.
fn decimal_times(number: &str, unit: u128) -> Option<u128> {
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    let mut total = whole.parse::<u128>().ok()?.checked_mul(unit)?;
    // At most 18 fraction digits matter: the smallest unit is 1000 ns.
    let mut scale = unit;
    for digit in frac.bytes().take(18) {
        scale /= 10;
        total = total.checked_add(u128::from(digit - b'0') * scale)?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ok = [
            ("250ms", Duration::from_millis(250)),
            ("5s", Duration::from_secs(5)),
            ("10m", Duration::from_secs(600)),
            ("1h", Duration::from_secs(3600)),
            ("1.5s", Duration::from_millis(1500)),
            ("0.25s", Duration::from_millis(250)),
            ("100us", Duration::from_micros(100)),
            ("100µs", Duration::from_micros(100)),
            ("0s", Duration::ZERO),
            ("0ms", Duration::ZERO),
            ("007s", Duration::from_secs(7)),
            ("1.0000001ms", Duration::from_nanos(1_000_000)),
            ("1.5us", Duration::from_nanos(1_500)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_durations() {
        let bad = [
            ("5", "has no unit"),
            ("1.5", "has no unit"),
            ("", "is not a duration"),
            ("s", "is not a duration"),
            ("ms", "is not a duration"),
            ("5 s", "unknown unit ' s'"),
            ("5sec", "unknown unit 'sec'"),
            ("5d", "unknown unit 'd'"),
            ("5S", "unknown unit 'S'"),
            ("-5s", "is not a duration"),
            (".5s", "is not a duration"),
            ("5.s", "is not a duration"),
            ("1.2.3s", "is not a duration"),
            ("1m30s", "unknown unit 'm30s'"),
            ("99999999999999999999h", "too long"),
            ("999999999999999999999999999999999999999h", "too long"),
        ];
        for (text, want) in bad {
            let err = parse_duration(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
        let err = parse_duration("5").expect_err("bare number");
        assert_eq!(err, format!("'5' has no unit; expected {DURATION_HINT}"));
    }

    #[test]
    fn sizes() {
        let ok = [
            ("0", 0),
            ("2048", 2048),
            ("64KiB", 65536),
            ("64kib", 65536),
            ("1MiB", 1_048_576),
            ("1 MiB", 1_048_576),
            ("1KB", 1000),
            ("1kb", 1000),
            ("3MB", 3_000_000),
            ("1GiB", 1 << 30),
            ("2GB", 2_000_000_000),
            ("17B", 17),
        ];
        for (text, want) in ok {
            assert_eq!(parse_size(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_sizes() {
        let bad = [
            ("", "is not a size"),
            ("KiB", "is not a size"),
            ("1.5MiB", "unknown unit '.5MiB'"),
            ("-1", "is not a size"),
            ("64K", "unknown unit 'K'"),
            ("64  KiB", "unknown unit ' KiB'"),
            ("1TiB", "unknown unit 'TiB'"),
            ("99999999999999999999", "too large"),
            ("99999999999GiB", "too large"),
        ];
        for (text, want) in bad {
            let err = parse_size(text).expect_err(text);
            assert!(err.contains(want), "{text}: {err}");
        }
    }
}
