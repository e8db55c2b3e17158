//! Key patterns: globs (`*`, `?`, `[abc]`, `[a-z]`, `[!x]`), prefixes and regular expressions.
//! Matching allocates nothing.

/// A compiled key pattern.
#[derive(Clone, Debug)]
pub enum KeyPattern {
    /// Matches every key (the glob `*`).
    Any,
    /// Matches keys starting with these bytes (a `{prefix: ...}` route, or a glob `abc*`).
    Prefix(Vec<u8>),
    /// A general glob.
    Glob(Vec<u8>),
    /// A regular expression, matched anywhere in the key unless anchored (`^...$`). Keys are
    /// bytes, so it runs on bytes (`regex::bytes`): non-UTF-8 keys match too. Cloning it shares
    /// the compiled program and gives the clone a match cache pool of its own (see
    /// [`crate::routing::Router`]).
    Regex(regex::bytes::Regex),
}

impl KeyPattern {
    /// Compiles a glob, picking a faster form when the glob is a plain prefix.
    pub fn glob(pattern: &str) -> KeyPattern {
        let bytes = pattern.as_bytes();
        if bytes == b"*" {
            return KeyPattern::Any;
        }
        if let Some(stem) = bytes.strip_suffix(b"*") {
            if !stem.iter().any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\')) {
                return KeyPattern::Prefix(stem.to_vec());
            }
        }
        KeyPattern::Glob(bytes.to_vec())
    }

    /// A prefix pattern (the empty prefix matches every key).
    pub fn prefix(prefix: &str) -> KeyPattern {
        if prefix.is_empty() {
            KeyPattern::Any
        } else {
            KeyPattern::Prefix(prefix.as_bytes().to_vec())
        }
    }

    /// Compiles a regular expression.
    pub fn regex(pattern: &str) -> Result<KeyPattern, String> {
        regex::bytes::Regex::new(pattern)
            .map(KeyPattern::Regex)
            .map_err(|e| e.to_string())
    }

    /// True when `key` matches.
    #[inline]
    pub fn matches(&self, key: &[u8]) -> bool {
        match self {
            KeyPattern::Any => true,
            KeyPattern::Prefix(p) => key.starts_with(p),
            KeyPattern::Glob(g) => glob_matches(g, key),
            KeyPattern::Regex(r) => r.is_match(key),
        }
    }
}

/// Matches `text` against a glob. Iterative with one backtrack point for the last `*`, so it
/// runs in O(len(pattern) * len(text)) at worst and never recurses.
pub fn glob_matches(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        let consumed = match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
                continue;
            }
            Some(b'?') => Some(p + 1),
            Some(b'[') => text.get(t).and_then(|&c| class_matches(pattern, p, c)),
            Some(b'\\') => match (pattern.get(p + 1), text.get(t)) {
                (Some(a), Some(b)) if a == b => Some(p + 2),
                _ => None,
            },
            Some(&c) if text.get(t) == Some(&c) => Some(p + 1),
            _ => None,
        };
        match consumed {
            Some(next) => {
                p = next;
                t += 1;
            }
            None => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&b| b == b'*'))
}

/// Matches one byte against the class starting at `pattern[start] == b'['`; returns the index
/// just past the class when it matches. An unterminated class never matches.
fn class_matches(pattern: &[u8], start: usize, c: u8) -> Option<usize> {
    let mut i = start + 1;
    let negated = matches!(pattern.get(i), Some(b'!') | Some(b'^'));
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *pattern.get(i)?;
        if lo == b']' && !first {
            break;
        }
        first = false;
        if pattern.get(i + 1) == Some(&b'-') && pattern.get(i + 2).is_some_and(|&b| b != b']') {
            let hi = *pattern.get(i + 2)?;
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
    // `i` is at the closing bracket.
    (matched != negated).then_some(i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_cases() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything", true),
            ("session:*", "session:42", true),
            ("session:*", "sessions", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*:user", "x:user", true),
            ("*:user", "x:users", false),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXbYY", false),
            ("[abc]x", "bx", true),
            ("[abc]x", "dx", false),
            ("[a-z]1", "q1", true),
            ("[a-z]1", "Q1", false),
            ("[!a-z]1", "Q1", true),
            ("[!a-z]1", "q1", false),
            ("[]]", "]", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("", "", true),
            ("", "a", false),
            ("**", "abc", true),
            ("[abc", "[abc", false),
        ];
        for (pattern, key, want) in cases {
            assert_eq!(
                KeyPattern::glob(pattern).matches(key.as_bytes()),
                *want,
                "{pattern} vs {key}"
            );
        }
    }

    #[test]
    fn glob_compiles_to_faster_forms() {
        assert!(matches!(KeyPattern::glob("*"), KeyPattern::Any));
        assert!(matches!(KeyPattern::glob("ab*"), KeyPattern::Prefix(p) if p == b"ab"));
        assert!(matches!(KeyPattern::glob("a?*"), KeyPattern::Glob(_)));
        assert!(matches!(KeyPattern::prefix(""), KeyPattern::Any));
    }

    #[test]
    fn regex_matches_bytes_anywhere_unless_anchored() {
        let r = KeyPattern::regex("^user:[0-9]+$").unwrap_or(KeyPattern::Any);
        assert!(r.matches(b"user:42"));
        assert!(!r.matches(b"user:42x"));
        let r = KeyPattern::regex("sess").unwrap_or(KeyPattern::Any);
        assert!(r.matches(b"\x10\xffsession"));
        assert!(KeyPattern::regex("(").is_err());
    }

    #[test]
    fn pathological_glob_terminates() {
        let key = vec![b'a'; 250];
        assert!(!glob_matches(b"*a*a*a*a*a*a*a*b", &key));
    }
}
