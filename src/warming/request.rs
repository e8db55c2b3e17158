//! The body of `POST /warm`: parsed and validated against the configured backends before a job
//! exists, so that every refusal is a 400 with a reason and a job never fails for a reason its
//! request already showed.
//!
//! Parsed from a `serde_json::Value` by hand (no serde derive: one small shape does not justify
//! another dependency), with unknown fields refused so that a typo such as `"overwite"` is not
//! silently ignored.

use serde_json::{Map, Value};

use super::WarmError;

/// Longest memcached key, in bytes.
pub const MAX_KEY_LENGTH: usize = 250;

/// Which keys a job copies.
#[derive(Clone, Debug, PartialEq)]
pub enum Keys {
    /// These keys (raw bytes, each a valid memcached key).
    List(Vec<Vec<u8>>),
    /// Every key of every server of the source pool (`lru_crawler metadump all`).
    All,
}

/// A validated warm request.
#[derive(Clone, Debug, PartialEq)]
pub struct WarmRequest {
    /// Source backend name.
    pub from: String,
    /// Source pool index (as in `Router::pools`).
    pub from_pool: usize,
    /// Target backend name.
    pub to: String,
    /// Target pool index.
    pub to_pool: usize,
    /// What to copy.
    pub keys: Keys,
    /// Keys per second, if limited.
    pub rate: Option<f64>,
    /// Replace what the target holds (`MS`) instead of skipping it (`ME`).
    pub overwrite: bool,
}

const FIELDS: [&str; 6] = ["from", "to", "keys", "all", "rate", "overwrite"];

fn bad(reason: impl Into<String>) -> WarmError {
    WarmError::BadRequest(reason.into())
}

/// Parses and validates `body`. `pool_of` names the pool index of a backend name (`None`: no
/// such backend).
pub fn parse(
    body: &[u8],
    pool_of: impl Fn(&str) -> Option<usize>,
) -> Result<WarmRequest, WarmError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
    let Value::Object(object) = value else {
        return Err(bad("the body must be a JSON object"));
    };
    if let Some(unknown) = object.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(bad(format!(
            "unknown field '{unknown}' (expected one of: {})",
            FIELDS.join(", ")
        )));
    }
    let (from, from_pool) = backend(&object, "from", &pool_of)?;
    let (to, to_pool) = backend(&object, "to", &pool_of)?;
    if from == to {
        return Err(bad(format!(
            "'from' and 'to' are the same backend ('{from}')"
        )));
    }
    let keys = match (object.get("keys"), object.get("all")) {
        (Some(_), Some(_)) => return Err(bad("give either 'keys' or 'all', not both")),
        (None, None) => return Err(bad("give 'keys' (a list of keys) or 'all': true")),
        (Some(list), None) => Keys::List(key_list(list)?),
        (None, Some(Value::Bool(true))) => Keys::All,
        (None, Some(_)) => return Err(bad("'all' must be true when given")),
    };
    let rate = match object.get("rate") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_f64() {
            Some(r) if r.is_finite() && r > 0.0 => Some(r),
            _ => return Err(bad("'rate' must be a number of keys per second above 0")),
        },
        Some(_) => return Err(bad("'rate' must be a number of keys per second above 0")),
    };
    let overwrite = match object.get("overwrite") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("'overwrite' must be true or false")),
    };
    Ok(WarmRequest {
        from,
        from_pool,
        to,
        to_pool,
        keys,
        rate,
        overwrite,
    })
}

/// The backend named by field `field`, and its pool index.
fn backend(
    object: &Map<String, Value>,
    field: &str,
    pool_of: &impl Fn(&str) -> Option<usize>,
) -> Result<(String, usize), WarmError> {
    match object.get(field) {
        None => Err(bad(format!("'{field}' (a backend name) is required"))),
        Some(Value::String(name)) => match pool_of(name) {
            Some(pool) => Ok((name.clone(), pool)),
            None => Err(bad(format!("'{field}': no backend named '{name}'"))),
        },
        Some(_) => Err(bad(format!("'{field}' must be a backend name (a string)"))),
    }
}

fn key_list(list: &Value) -> Result<Vec<Vec<u8>>, WarmError> {
    let Value::Array(items) = list else {
        return Err(bad("'keys' must be a list of keys"));
    };
    if items.is_empty() {
        return Err(bad("'keys' is empty"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::String(key) if is_valid_key(key.as_bytes()) => Ok(key.as_bytes().to_vec()),
            Value::String(_) => Err(bad(format!(
                "keys[{i}] is not a valid memcached key (1 to {MAX_KEY_LENGTH} bytes, no \
                 whitespace or control characters)"
            ))),
            _ => Err(bad(format!("keys[{i}] must be a string"))),
        })
        .collect()
}

/// A key the text protocol can carry as it is: 1 to 250 bytes, none of them whitespace or a
/// control character (bytes above 0x7f are allowed, as memcached allows them).
pub fn is_valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= MAX_KEY_LENGTH && key.iter().all(|&b| b > b' ' && b != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(name: &str) -> Option<usize> {
        match name {
            "a" => Some(0),
            "b" => Some(1),
            _ => None,
        }
    }

    fn parse_str(body: &str) -> Result<WarmRequest, WarmError> {
        parse(body.as_bytes(), pools)
    }

    fn reason(body: &str) -> String {
        match parse_str(body) {
            Err(WarmError::BadRequest(reason)) => reason,
            other => panic!("{body}: expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn all_with_defaults() {
        let r = parse_str(r#"{"from":"a","to":"b","all":true}"#).expect("valid");
        assert_eq!((r.from.as_str(), r.from_pool), ("a", 0));
        assert_eq!((r.to.as_str(), r.to_pool), ("b", 1));
        assert_eq!(r.keys, Keys::All);
        assert_eq!(r.rate, None);
        assert!(!r.overwrite);
    }

    #[test]
    fn keys_rate_and_overwrite() {
        let r =
            parse_str(r#"{"from":"b","to":"a","keys":["k1","k2"],"rate":2.5,"overwrite":true}"#)
                .expect("valid");
        assert_eq!(r.keys, Keys::List(vec![b"k1".to_vec(), b"k2".to_vec()]));
        assert_eq!(r.rate, Some(2.5));
        assert!(r.overwrite);
        let r = parse_str(r#"{"from":"b","to":"a","keys":["k"],"rate":null}"#).expect("valid");
        assert_eq!(r.rate, None);
    }

    #[test]
    fn refusals_name_the_problem() {
        let cases = [
            ("", "invalid JSON"),
            ("[1]", "JSON object"),
            (
                r#"{"from":"a","to":"b","all":true,"x":1}"#,
                "unknown field 'x'",
            ),
            (r#"{"to":"b","all":true}"#, "'from'"),
            (r#"{"from":"a","all":true}"#, "'to'"),
            (
                r#"{"from":"a","to":"zz","all":true}"#,
                "no backend named 'zz'",
            ),
            (
                r#"{"from":1,"to":"b","all":true}"#,
                "must be a backend name",
            ),
            (r#"{"from":"a","to":"a","all":true}"#, "same backend"),
            (r#"{"from":"a","to":"b"}"#, "'keys'"),
            (
                r#"{"from":"a","to":"b","all":true,"keys":["k"]}"#,
                "not both",
            ),
            (r#"{"from":"a","to":"b","all":false}"#, "'all' must be true"),
            (r#"{"from":"a","to":"b","keys":[]}"#, "empty"),
            (r#"{"from":"a","to":"b","keys":"k"}"#, "list of keys"),
            (
                r#"{"from":"a","to":"b","keys":["ok",3]}"#,
                "keys[1] must be a string",
            ),
            (
                r#"{"from":"a","to":"b","keys":["a b"]}"#,
                "keys[0] is not a valid",
            ),
            (
                r#"{"from":"a","to":"b","keys":["a\nb"]}"#,
                "keys[0] is not a valid",
            ),
            (
                r#"{"from":"a","to":"b","keys":[""]}"#,
                "keys[0] is not a valid",
            ),
            (r#"{"from":"a","to":"b","all":true,"rate":0}"#, "'rate'"),
            (r#"{"from":"a","to":"b","all":true,"rate":-3}"#, "'rate'"),
            (r#"{"from":"a","to":"b","all":true,"rate":"5"}"#, "'rate'"),
            (
                r#"{"from":"a","to":"b","all":true,"overwrite":1}"#,
                "'overwrite'",
            ),
        ];
        for (body, want) in cases {
            let got = reason(body);
            assert!(got.contains(want), "{body}: reason {got:?} lacks {want:?}");
        }
    }

    #[test]
    fn key_length_limit() {
        let long = "k".repeat(MAX_KEY_LENGTH);
        let body = format!(r#"{{"from":"a","to":"b","keys":["{long}"]}}"#);
        assert!(parse_str(&body).is_ok());
        let body = format!(r#"{{"from":"a","to":"b","keys":["{long}x"]}}"#);
        assert!(reason(&body).contains("keys[0]"));
    }
}
