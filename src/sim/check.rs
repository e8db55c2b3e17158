//! Whether an answer is right. Without faults, on strategies where one memcached is the model,
//! it must be the model's answer byte for byte. Otherwise it must be the model's answer or
//! one of the documented failure forms (`SERVER_ERROR ...`, a miss, `END` for a failed
//! retrieval), shaped as an answer to this very request: its keys, its reply codes, values
//! made of this key's tokens (so another request's answer never passes).

use crate::protocol::{meta_flags, Command, Request};

/// Checks `answer` to `request` (sent as `bytes`) against the model's `expected`.
pub fn answer(
    request: &Request,
    bytes: &[u8],
    answer: &[u8],
    expected: &[u8],
    strict: bool,
) -> Result<(), String> {
    if answer == expected {
        return Ok(());
    }
    if strict {
        return Err("differs from the model".to_string());
    }
    if request.noreply {
        return Err("an answer to a noreply request".to_string());
    }
    let keys: Vec<&[u8]> = request.keys(bytes).collect();
    let first = keys.first().copied().unwrap_or_default();
    match request.command {
        Command::Get | Command::Gets | Command::Gat | Command::Gats => retrieval(&keys, answer),
        Command::MetaGet => meta_get(first, request.quiet, answer),
        Command::MetaArithmetic if answer.starts_with(b"VA ") => {
            let (line, rest) = split_line(answer).ok_or("no line")?;
            let body = rest.strip_suffix(b"\r\n").ok_or("VA without its block")?;
            let len = word(line, 1)
                .and_then(number)
                .ok_or("VA without a length")?;
            if body.len() != len as usize || !is_number(body) {
                return Err("VA block is not a number of its length".to_string());
            }
            Ok(())
        }
        command => line(command, request.quiet, answer),
    }
}

fn split_line(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = bytes.windows(2).position(|w| w == b"\r\n")?;
    Some((&bytes[..end], &bytes[end + 2..]))
}

fn word(line: &[u8], n: usize) -> Option<&[u8]> {
    line.split(|&b| b == b' ').filter(|w| !w.is_empty()).nth(n)
}

fn number(word: &[u8]) -> Option<u64> {
    std::str::from_utf8(word).ok()?.parse().ok()
}

fn is_number(bytes: &[u8]) -> bool {
    !bytes.is_empty() && bytes.iter().all(u8::is_ascii_digit)
}

/// A value `key` can hold: tokens `<key>.<n>;` (values of token keys), or digits (numeric
/// keys).
fn value_of(key: &[u8], data: &[u8]) -> Result<(), String> {
    let numeric = key
        .windows(2)
        .any(|w| w[0].is_ascii_digit() && w[1] == b'n');
    if numeric && is_number(data) {
        return Ok(());
    }
    let ok = !data.is_empty()
        && data.ends_with(b";")
        && data[..data.len() - 1]
            .split(|&b| b == b';')
            .all(|t| t.len() > key.len() && t.starts_with(key) && t[key.len()] == b'.');
    match ok {
        true => Ok(()),
        false => Err(format!(
            "value {:?} is not one {:?} can hold",
            String::from_utf8_lossy(data),
            String::from_utf8_lossy(key)
        )),
    }
}

/// `VALUE` blocks of the keys asked, in the asked order, then `END`.
fn retrieval(keys: &[&[u8]], mut rest: &[u8]) -> Result<(), String> {
    let mut at = 0;
    loop {
        let (line, after) = split_line(rest).ok_or("no END")?;
        if line == b"END" {
            return match after.is_empty() {
                true => Ok(()),
                false => Err("bytes after END".to_string()),
            };
        }
        if word(line, 0) != Some(b"VALUE") {
            return Err(format!(
                "unexpected line {:?}",
                String::from_utf8_lossy(line)
            ));
        }
        let key = word(line, 1).ok_or("VALUE without key")?;
        let len = word(line, 3)
            .and_then(number)
            .ok_or("VALUE without length")? as usize;
        let found = keys[at..]
            .iter()
            .position(|k| *k == key)
            .ok_or("VALUE of a key not asked (or out of order)")?;
        at += found + 1;
        let data = after.get(..len).ok_or("short block")?;
        if after.get(len..len + 2) != Some(b"\r\n") {
            return Err("block not ended".to_string());
        }
        value_of(key, data)?;
        rest = &after[len + 2..];
    }
}

fn meta_get(key: &[u8], quiet: bool, answer: &[u8]) -> Result<(), String> {
    if answer.is_empty() && quiet || answer == b"EN\r\n" && !quiet {
        return Ok(());
    }
    let (line, rest) = split_line(answer).ok_or("no line")?;
    if line.starts_with(b"SERVER_ERROR") && rest.is_empty() {
        return Ok(());
    }
    if let Some(k) = line
        .split(|&b| b == b' ')
        .find(|w| w.first() == Some(&b'k'))
    {
        if &k[1..] != key {
            return Err("k flag names another key".to_string());
        }
    }
    match word(line, 0) {
        Some(b"HD") if rest.is_empty() => Ok(()),
        Some(b"VA") => {
            let len = word(line, 1)
                .and_then(number)
                .ok_or("VA without a length")? as usize;
            let data = rest.get(..len).ok_or("short block")?;
            if rest.get(len..) != Some(b"\r\n") {
                return Err("block not ended".to_string());
            }
            value_of(key, data)
        }
        _ => Err("not an mg reply".to_string()),
    }
}

/// A one-line answer with a code `command` can get (or an error line); quiet meta requests
/// may get nothing.
fn line(command: Command, quiet: bool, answer: &[u8]) -> Result<(), String> {
    if quiet && answer.is_empty() {
        return Ok(());
    }
    let (line, rest) = split_line(answer).ok_or("no line")?;
    if !rest.is_empty() {
        return Err("more than one line".to_string());
    }
    if line.starts_with(b"SERVER_ERROR ") || line.starts_with(b"CLIENT_ERROR ") {
        return Ok(());
    }
    let code = word(line, 0).unwrap_or_default();
    let allowed: &[&[u8]] = match command {
        Command::Set | Command::Add | Command::Replace | Command::Append | Command::Prepend => {
            &[b"STORED", b"NOT_STORED"]
        }
        Command::Cas => &[b"STORED", b"EXISTS", b"NOT_FOUND"],
        Command::Delete => &[b"DELETED", b"NOT_FOUND"],
        Command::Touch => &[b"TOUCHED", b"NOT_FOUND"],
        Command::Incr | Command::Decr if is_number(line) => return Ok(()),
        Command::Incr | Command::Decr => &[b"NOT_FOUND"],
        Command::MetaSet => &[b"HD", b"NS", b"EX", b"NF"],
        Command::MetaDelete => &[b"HD", b"NF", b"EX"],
        Command::MetaArithmetic => &[b"HD", b"NF"],
        Command::MetaNoop => &[b"MN"],
        _ => &[],
    };
    match allowed.contains(&code) {
        true => Ok(()),
        false => Err(format!(
            "{:?} is no answer to {}",
            String::from_utf8_lossy(line),
            command.name()
        )),
    }
}

/// Commands that change a value (the ones a warm_first route holds behind reads at warm;
/// touches change only a TTL and go to both tiers at once).
pub fn is_write(command: Command) -> bool {
    matches!(
        command,
        Command::Set
            | Command::Add
            | Command::Replace
            | Command::Append
            | Command::Prepend
            | Command::Cas
            | Command::Delete
            | Command::Incr
            | Command::Decr
            | Command::MetaSet
            | Command::MetaDelete
            | Command::MetaArithmetic
    )
}

/// A reply that says a write was done.
pub fn is_success(reply: &[u8]) -> bool {
    [&b"STORED"[..], b"DELETED", b"TOUCHED", b"HD", b"OK", b"VA "]
        .iter()
        .any(|code| reply.starts_with(code))
        || reply.first().is_some_and(u8::is_ascii_digit)
}

/// The backend requests of a parallel write when its client was answered.
pub struct Outcomes<'a> {
    /// How many went out.
    pub sent: usize,
    /// Those that ended: their part and whether they succeeded.
    pub ended: &'a [(u32, bool)],
}

/// Whether a parallel write was answered when and as `policy` says (docs/configuration.md,
/// parallel): `all` once every backend answered, a success only if all succeeded; `majority`
/// once a majority succeeded (a success) or can no longer succeed; `first` at the first
/// success (or once all answered without one); cas, counters and conditional meta writes by
/// the first backend. Returns what is wrong.
pub fn write_policy(
    policy: &str,
    request: &Request,
    bytes: &[u8],
    outcomes: &Outcomes,
    reply: &[u8],
) -> Option<String> {
    let n = outcomes.sent;
    let ended = outcomes.ended.len();
    let successes = outcomes.ended.iter().filter(|s| s.1).count();
    let quorum = n / 2 + 1;
    // cas tokens and counters are each server's own: the first backend answers.
    let conditional = matches!(
        request.command,
        Command::Cas | Command::Incr | Command::Decr | Command::MetaArithmetic
    ) || (matches!(request.command, Command::MetaSet | Command::MetaDelete)
        && meta_flags(request, bytes).has(b'C'));
    let first = outcomes.ended.iter().find(|o| o.0 == 0).map(|o| o.1);
    let policy = if conditional { "first backend" } else { policy };
    let (due, success) = match policy {
        "first backend" => (first.is_some(), first == Some(true)),
        "all" => (ended == n, successes == n),
        "majority" => (
            successes >= quorum || ended - successes > n - quorum,
            successes >= quorum,
        ),
        _ => (successes > 0 || ended == n, successes > 0),
    };
    let what = format!(
        "({policy}): answered {:?} with {successes} of {n} succeeded, {ended} in",
        String::from_utf8_lossy(reply)
    );
    if !due {
        Some(format!("{what}: too early"))
    } else if is_success(reply) != success {
        Some(format!("{what}: the wrong answer"))
    } else {
        None
    }
}
