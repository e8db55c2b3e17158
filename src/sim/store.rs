//! A model of one memcached 1.6 server's item store: it executes the requests the proxy sends
//! (and, as the reference model, the requests the clients send) and produces the reply bytes
//! memcached would. A CAS unique is the key's own version number, so two stores that saw the
//! same writes to a key give the same answers.
//!
//! Time: [`Store::now`], in whole seconds as memcached counts them, is set by the driver from
//! the run's virtual clock for the servers that follow it (a warm_first route's tiers); the
//! reference model and the other servers stay at 0, where an item's remaining TTL is the TTL it
//! was given and nothing expires. An item whose exptime has come is gone for every command.
//!
//! Leases (memcached 1.6's meta `mg` flags, as the proxy sends them): `N<ttl>` on a miss makes
//! an empty placeholder (flags 0, exptime `ttl`) and wins it (`W`); an item that has sent its
//! token answers `Z` to every later reader; `R<secs>` wins (`W`, once) an item whose remaining
//! TTL is below `secs`; markers follow the returned flags (`VA 0 f0 c1 t30 W`). A write that
//! replaces an item (any successful set, `ms ... C<cas>` included; `append`) makes a new item:
//! new cas, no token. `ms`/`md` with `C<cas>` answer `EX` on another cas and `NF` when the key
//! is gone. Stale items (`I`, `X`) are not modelled: the proxy never sends `I`.

use std::collections::HashMap;

use crate::protocol::{parse_request, Command, Limits, Parsed, Request};

/// One stored item.
#[derive(Clone, Debug)]
struct Item {
    flags: u32,
    /// When it expires, on the store's clock (0: never).
    exptime: i64,
    data: Vec<u8>,
    cas: u64,
    /// memcached's `ITEM_TOKEN_SENT`: a reader was given its lease (`W`); later readers get `Z`.
    token: bool,
    /// Made by `mg ... N` on a miss and not written since: a lease placeholder, no value (not
    /// memcached's state: what the checks need to tell a placeholder from a value).
    placeholder: bool,
}

impl Item {
    /// A new item (a write, or a placeholder): no token sent.
    fn new(flags: u32, exptime: i64, data: Vec<u8>) -> Item {
        Item {
            flags,
            exptime,
            data,
            cas: 0,
            token: false,
            placeholder: false,
        }
    }
}

/// The items of one server (or of the reference model).
#[derive(Clone, Debug, Default)]
pub struct Store {
    items: HashMap<Vec<u8>, Item>,
    /// Per key, the last version given (kept across deletes, so a CAS never comes back).
    versions: HashMap<Vec<u8>, u64>,
    /// The time, in seconds (memcached's `current_time`); 0 for the reference model.
    pub now: i64,
}

/// A live item's value, as the end-of-run checks compare tiers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// Client flags.
    pub flags: u32,
    /// The data.
    pub data: Vec<u8>,
    /// A lease placeholder nobody has written over.
    pub placeholder: bool,
}

/// The tokens of a request's arguments, split on spaces.
fn words(request: &Request, bytes: &[u8]) -> Vec<Vec<u8>> {
    request
        .args
        .of(bytes)
        .split(|&b| b == b' ')
        .filter(|w| !w.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn num<T: std::str::FromStr>(word: Option<&Vec<u8>>) -> Option<T> {
    std::str::from_utf8(word?).ok()?.parse().ok()
}

/// Meta flags after the key (and, for `ms`, after the data length): letter and token.
fn meta_flags(words: &[Vec<u8>]) -> Vec<(u8, Vec<u8>)> {
    words
        .iter()
        .filter_map(|w| Some((*w.first()?, w.get(1..)?.to_vec())))
        .collect()
}

fn flag(flags: &[(u8, Vec<u8>)], letter: u8) -> Option<&[u8]> {
    flags
        .iter()
        .find(|(l, _)| *l == letter)
        .map(|(_, t)| &t[..])
}

fn flag_num<T: std::str::FromStr>(flags: &[(u8, Vec<u8>)], letter: u8) -> Option<T> {
    std::str::from_utf8(flag(flags, letter)?).ok()?.parse().ok()
}

impl Store {
    /// The CAS unique of `key`, if it is stored.
    pub fn cas_of(&self, key: &[u8]) -> Option<u64> {
        self.items.get(key).map(|i| i.cas)
    }

    /// Every live item: key, value, flags, and whether it is a placeholder.
    pub fn live(&self) -> impl Iterator<Item = (&[u8], Held)> + '_ {
        self.items
            .iter()
            .filter(|(_, i)| self.alive(i))
            .map(|(k, i)| {
                let held = Held {
                    flags: i.flags,
                    data: i.data.clone(),
                    placeholder: i.placeholder,
                };
                (&k[..], held)
            })
    }

    /// Every key stored, in order (expired items too, until they are looked up).
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = self.items.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// memcached evicts `key` (a cache may drop any item at any time).
    pub fn evict(&mut self, key: &[u8]) {
        self.items.remove(key);
    }

    /// The live item of `key`.
    pub fn held(&self, key: &[u8]) -> Option<Held> {
        let i = self.items.get(key).filter(|i| self.alive(i))?;
        Some(Held {
            flags: i.flags,
            data: i.data.clone(),
            placeholder: i.placeholder,
        })
    }

    fn alive(&self, item: &Item) -> bool {
        item.exptime == 0 || item.exptime > self.now
    }

    /// The exptime of a relative TTL given now (0: never; negative: already expired).
    fn exptime(&self, ttl: i64) -> i64 {
        match ttl {
            0 => 0,
            t if t < 0 => -1,
            t => self.now + t,
        }
    }

    /// An item whose time has come is gone (memcached drops it when it is next looked up).
    fn expire(&mut self, key: &[u8]) {
        if self.items.get(key).is_some_and(|i| !self.alive(i)) {
            self.items.remove(key);
        }
    }

    fn bump(&mut self, key: &[u8]) -> u64 {
        let version = self.versions.entry(key.to_vec()).or_insert(0);
        *version += 1;
        *version
    }

    /// Executes every whole request at the start of `bytes`; returns the replies.
    pub fn execute_all(&mut self, mut bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            match parse_request(bytes, &Limits::default()) {
                Ok(Parsed::Complete(request)) => {
                    let len = request.len;
                    self.execute(&request, &bytes[..len], &mut out);
                    bytes = &bytes[len..];
                }
                _ => {
                    out.extend_from_slice(b"ERROR\r\n");
                    break;
                }
            }
        }
        out
    }

    /// Executes one parsed request, appending its reply (if any) to `out`.
    pub fn execute(&mut self, request: &Request, bytes: &[u8], out: &mut Vec<u8>) {
        for key in request.keys(bytes) {
            self.expire(key);
        }
        let words = words(request, bytes);
        let data = request
            .data
            .map(|d| d.of(bytes).to_vec())
            .unwrap_or_default();
        let mut reply = Vec::new();
        match request.command {
            Command::Get | Command::Gets | Command::Gat | Command::Gats => {
                self.retrieve(request.command, &words, &mut reply)
            }
            Command::Set
            | Command::Add
            | Command::Replace
            | Command::Append
            | Command::Prepend
            | Command::Cas => self.store(request.command, &words, data, &mut reply),
            Command::Delete => {
                let found = self.items.remove(&words[0]).is_some();
                reply.extend_from_slice(if found {
                    b"DELETED\r\n"
                } else {
                    b"NOT_FOUND\r\n"
                });
            }
            Command::Touch => {
                let exptime = self.exptime(num(words.get(1)).unwrap_or(0));
                let found = match self.items.get_mut(&words[0]) {
                    Some(item) => {
                        item.exptime = exptime;
                        true
                    }
                    None => false,
                };
                reply.extend_from_slice(if found {
                    b"TOUCHED\r\n"
                } else {
                    b"NOT_FOUND\r\n"
                });
            }
            Command::Incr | Command::Decr => {
                let delta = num(words.get(1)).unwrap_or(0);
                match self.arith(&words[0], request.command == Command::Incr, delta) {
                    Ok(Some(value)) => reply.extend_from_slice(format!("{value}\r\n").as_bytes()),
                    Ok(None) => reply.extend_from_slice(b"NOT_FOUND\r\n"),
                    Err(e) => reply.extend_from_slice(e),
                }
            }
            Command::MetaGet => self.meta_get(&words, request.quiet, &mut reply),
            Command::MetaSet => self.meta_set(&words, data, request.quiet, &mut reply),
            Command::MetaDelete => self.meta_delete(&words, request.quiet, &mut reply),
            Command::MetaArithmetic => self.meta_arith(&words, request.quiet, &mut reply),
            Command::MetaNoop => reply.extend_from_slice(b"MN\r\n"),
            Command::FlushAll => {
                self.items.clear();
                reply.extend_from_slice(b"OK\r\n");
            }
            _ => reply.extend_from_slice(b"ERROR\r\n"),
        }
        // memcached sends nothing for `noreply`, errors included (for the commands used here).
        if !request.noreply {
            out.extend_from_slice(&reply);
        }
    }

    fn retrieve(&mut self, command: Command, words: &[Vec<u8>], out: &mut Vec<u8>) {
        let touch = matches!(command, Command::Gat | Command::Gats);
        let with_cas = matches!(command, Command::Gets | Command::Gats);
        let (exptime, keys) = match touch {
            true => (self.exptime(num(words.first()).unwrap_or(0)), &words[1..]),
            false => (0, words),
        };
        for key in keys {
            let Some(item) = self.items.get_mut(key) else {
                continue;
            };
            if touch {
                item.exptime = exptime;
            }
            out.extend_from_slice(b"VALUE ");
            out.extend_from_slice(key);
            out.extend_from_slice(format!(" {} {}", item.flags, item.data.len()).as_bytes());
            if with_cas {
                out.extend_from_slice(format!(" {}", item.cas).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(&item.data);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"END\r\n");
    }

    fn store(&mut self, command: Command, words: &[Vec<u8>], data: Vec<u8>, out: &mut Vec<u8>) {
        let key = &words[0];
        let flags = num(words.get(1)).unwrap_or(0);
        let ttl = num(words.get(2)).unwrap_or(0);
        let cas = num(words.get(4));
        let code: &[u8] = match self.write(key, command_mode(command), flags, ttl, data, cas) {
            Written::Stored => b"STORED\r\n",
            Written::NotStored => b"NOT_STORED\r\n",
            Written::Exists => b"EXISTS\r\n",
            Written::NotFound => b"NOT_FOUND\r\n",
        };
        out.extend_from_slice(code);
    }

    /// The one write path of classic and meta storage commands.
    fn write(
        &mut self,
        key: &[u8],
        mode: u8,
        flags: u32,
        ttl: i64,
        data: Vec<u8>,
        cas: Option<u64>,
    ) -> Written {
        let current = self.items.get(key).map(|i| i.cas);
        if let Some(cas) = cas {
            match current {
                None => return Written::NotFound,
                Some(c) if c != cas => return Written::Exists,
                Some(_) => {}
            }
        }
        let present = current.is_some();
        let exptime = self.exptime(ttl);
        let item = match mode {
            b'S' => Item::new(flags, exptime, data),
            b'E' if !present => Item::new(flags, exptime, data),
            b'R' if present => Item::new(flags, exptime, data),
            b'A' | b'P' if present => {
                let Some(old) = self.items.get(key).cloned() else {
                    return Written::NotStored;
                };
                let data = match mode {
                    b'A' => [old.data, data].concat(),
                    _ => [data, old.data].concat(),
                };
                // memcached copies into a new item: the old flags and exptime, no token.
                Item::new(old.flags, old.exptime, data)
            }
            _ => return Written::NotStored,
        };
        let version = self.bump(key);
        self.items.insert(
            key.to_vec(),
            Item {
                cas: version,
                ..item
            },
        );
        Written::Stored
    }

    /// incr/decr: Ok(None) on a miss; the error line for a value that is not a number.
    fn arith(&mut self, key: &[u8], incr: bool, delta: u64) -> Result<Option<u64>, &'static [u8]> {
        let Some(item) = self.items.get(key) else {
            return Ok(None);
        };
        let current: u64 = std::str::from_utf8(&item.data)
            .ok()
            .and_then(|s| s.trim_end().parse().ok())
            .ok_or(&b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"[..])?;
        let value = match incr {
            true => current.wrapping_add(delta),
            false => current.saturating_sub(delta),
        };
        let version = self.bump(key);
        if let Some(item) = self.items.get_mut(key) {
            item.data = value.to_string().into_bytes();
            item.cas = version;
        }
        Ok(Some(value))
    }

    /// The flags a meta reply returns, in the order asked (`k`, `O`, and for a hit `f`, `t`,
    /// `c`, `s`).
    fn returned(
        &self,
        flags: &[(u8, Vec<u8>)],
        key: &[u8],
        item: Option<&Item>,
        out: &mut Vec<u8>,
    ) {
        for (letter, token) in flags {
            self.returned_one(*letter, token, key, item, out);
        }
    }

    /// One returned flag (nothing for a flag that returns nothing).
    fn returned_one(
        &self,
        letter: u8,
        token: &[u8],
        key: &[u8],
        item: Option<&Item>,
        out: &mut Vec<u8>,
    ) {
        let value = match (letter, item) {
            (b'k', _) => key.to_vec(),
            (b'O', _) => token.to_vec(),
            (b'f', Some(i)) => i.flags.to_string().into_bytes(),
            (b't', Some(i)) => (if i.exptime == 0 {
                -1
            } else {
                i.exptime - self.now
            })
            .to_string()
            .into_bytes(),
            (b'c', Some(i)) => i.cas.to_string().into_bytes(),
            (b's', Some(i)) => i.data.len().to_string().into_bytes(),
            _ => return,
        };
        out.push(b' ');
        out.push(letter);
        out.extend_from_slice(&value);
    }

    /// `mg`, with memcached 1.6's order: a miss with `N` makes a placeholder; then each flag
    /// in the order sent (`T` and `N` set the exptime, `R` may win, the others are returned);
    /// then `Z` when a token was sent before, and `W` when this reader wins.
    fn meta_get(&mut self, words: &[Vec<u8>], quiet: bool, out: &mut Vec<u8>) {
        let key = &words[0];
        let flags = meta_flags(&words[1..]);
        let vivify = flag_num::<i64>(&flags, b'N');
        let mut created = false;
        if !self.items.contains_key(key) {
            let Some(_) = vivify else {
                if !quiet {
                    out.extend_from_slice(b"EN\r\n");
                }
                return;
            };
            // memcached allocates it with no exptime; `N` sets it below.
            let version = self.bump(key);
            let mut item = Item::new(0, 0, Vec::new());
            item.cas = version;
            item.placeholder = true;
            self.items.insert(key.clone(), item);
            created = true;
        }
        let Some(mut item) = self.items.get(key).cloned() else {
            return;
        };
        let value = flag(&flags, b'v').is_some();
        match value {
            true => out.extend_from_slice(format!("VA {}", item.data.len()).as_bytes()),
            false => out.extend_from_slice(b"HD"),
        }
        let mut won = false;
        for (letter, token) in &flags {
            let number = || std::str::from_utf8(token).ok()?.parse::<i64>().ok();
            match letter {
                b'T' => item.exptime = self.exptime(number().unwrap_or(0)),
                b'N' => {
                    if created {
                        item.exptime = self.exptime(number().unwrap_or(0));
                        won = true;
                    }
                }
                b'R' => {
                    let below = number().unwrap_or(0);
                    if !item.token
                        && !created
                        && item.exptime != 0
                        && item.exptime < self.now + below
                    {
                        won = true;
                    }
                }
                _ => self.returned_one(*letter, token, key, Some(&item), out),
            }
        }
        if item.token {
            out.extend_from_slice(b" Z");
        }
        if won {
            out.extend_from_slice(b" W");
            item.token = true;
        }
        out.extend_from_slice(b"\r\n");
        if value {
            out.extend_from_slice(&item.data);
            out.extend_from_slice(b"\r\n");
        }
        self.items.insert(key.clone(), item);
    }

    fn meta_set(&mut self, words: &[Vec<u8>], data: Vec<u8>, quiet: bool, out: &mut Vec<u8>) {
        let key = words[0].clone();
        let flags = meta_flags(&words[2..]);
        let mode = match flag(&flags, b'M').and_then(|m| m.first()) {
            Some(b'E' | b'e') => b'E',
            Some(b'A' | b'a') => b'A',
            Some(b'P' | b'p') => b'P',
            Some(b'R' | b'r') => b'R',
            _ => b'S',
        };
        let written = self.write(
            &key,
            mode,
            flag_num(&flags, b'F').unwrap_or(0),
            flag_num(&flags, b'T').unwrap_or(0),
            data,
            flag_num(&flags, b'C'),
        );
        let code: &[u8] = match written {
            Written::Stored if quiet => return,
            Written::Stored => b"HD",
            Written::NotStored => b"NS",
            Written::Exists => b"EX",
            Written::NotFound => b"NF",
        };
        out.extend_from_slice(code);
        let item = self.items.get(&key).cloned();
        let echo: Vec<_> = flags
            .into_iter()
            .filter(|(l, _)| matches!(l, b'k' | b'O' | b'c'))
            .collect();
        self.returned(&echo, &key, item.as_ref(), out);
        out.extend_from_slice(b"\r\n");
    }

    fn meta_delete(&mut self, words: &[Vec<u8>], quiet: bool, out: &mut Vec<u8>) {
        let key = &words[0];
        let flags = meta_flags(&words[1..]);
        let code: &[u8] = match (
            self.items.get(key).map(|i| i.cas),
            flag_num::<u64>(&flags, b'C'),
        ) {
            (None, _) => b"NF",
            (Some(c), Some(cas)) if c != cas => b"EX",
            (Some(_), _) => {
                self.items.remove(key);
                if quiet {
                    return;
                }
                b"HD"
            }
        };
        out.extend_from_slice(code);
        let echo: Vec<_> = flags
            .into_iter()
            .filter(|(l, _)| matches!(l, b'k' | b'O'))
            .collect();
        self.returned(&echo, key, None, out);
        out.extend_from_slice(b"\r\n");
    }

    fn meta_arith(&mut self, words: &[Vec<u8>], quiet: bool, out: &mut Vec<u8>) {
        let key = &words[0];
        let flags = meta_flags(&words[1..]);
        let incr = !matches!(
            flag(&flags, b'M').and_then(|m| m.first()),
            Some(b'D' | b'd' | b'-')
        );
        let delta = flag_num(&flags, b'D').unwrap_or(1);
        match self.arith(key, incr, delta) {
            Ok(None) => out.extend_from_slice(b"NF"),
            Err(e) => return out.extend_from_slice(e),
            Ok(Some(value)) => {
                if flag(&flags, b'v').is_some() {
                    let text = value.to_string();
                    out.extend_from_slice(format!("VA {}", text.len()).as_bytes());
                    let item = self.items.get(key).cloned();
                    self.returned(&flags, key, item.as_ref(), out);
                    out.extend_from_slice(format!("\r\n{text}\r\n").as_bytes());
                    return;
                }
                if quiet {
                    return;
                }
                out.extend_from_slice(b"HD");
            }
        }
        let echo: Vec<_> = flags
            .into_iter()
            .filter(|(l, _)| matches!(l, b'k' | b'O'))
            .collect();
        self.returned(&echo, key, None, out);
        out.extend_from_slice(b"\r\n");
    }
}

/// What a write did.
enum Written {
    Stored,
    NotStored,
    Exists,
    NotFound,
}

/// The meta mode letter of a classic storage command.
fn command_mode(command: Command) -> u8 {
    match command {
        Command::Add => b'E',
        Command::Replace => b'R',
        Command::Append => b'A',
        Command::Prepend => b'P',
        _ => b'S',
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_as_memcached_does() {
        let mut s = Store::default();
        let r = s.execute_all(b"set a 5 0 2\r\nhi\r\nget a b\r\ngets a\r\nadd a 0 0 1\r\nx\r\n");
        assert_eq!(
            String::from_utf8_lossy(&r),
            "STORED\r\nVALUE a 5 2\r\nhi\r\nEND\r\nVALUE a 5 2 1\r\nhi\r\nEND\r\nNOT_STORED\r\n"
        );
        let r = s.execute_all(b"mg a v f c k\r\nmg zz v\r\nmg zz v q\r\nmn\r\nset n 0 0 1 noreply\r\n1\r\nincr n 41\r\nma n v\r\n");
        assert_eq!(
            String::from_utf8_lossy(&r),
            "VA 2 f5 c1 ka\r\nhi\r\nEN\r\nMN\r\n42\r\nVA 2\r\n43\r\n"
        );
        let r = s.execute_all(
            b"cas a 0 0 1 9\r\nx\r\ncas a 0 0 1 1\r\ny\r\nms a 1 MA\r\nz\r\nmd a q\r\nmd a\r\n",
        );
        assert_eq!(
            String::from_utf8_lossy(&r),
            "EXISTS\r\nSTORED\r\nHD\r\nNF\r\n"
        );
    }

    /// Leases as memcached 1.6.18 answers them (checked against a real one).
    #[test]
    fn leases_answer_as_memcached_does() {
        let mut s = Store::default();
        let text = |s: &mut Store, bytes: &[u8]| {
            String::from_utf8_lossy(&s.execute_all(bytes)).into_owned()
        };
        assert_eq!(
            text(&mut s, b"mg lk v f c N30 t\r\n"),
            "VA 0 f0 c1 t30 W\r\n\r\n"
        );
        assert_eq!(
            text(&mut s, b"mg lk v f c N30 t\r\n"),
            "VA 0 f0 c1 t30 Z\r\n\r\n"
        );
        assert_eq!(text(&mut s, b"get lk\r\n"), "VALUE lk 0 0\r\n\r\nEND\r\n");
        assert_eq!(
            text(&mut s, b"md lk\r\nms lk 3 C1\r\nabc\r\n"),
            "HD\r\nNF\r\n"
        );
        // A placeholder's cas is what its write-back must name.
        assert_eq!(text(&mut s, b"mg lk v c N30\r\n"), "VA 0 c2 W\r\n\r\n");
        assert_eq!(text(&mut s, b"ms lk 3 T60 F5 C999\r\nabc\r\n"), "EX\r\n");
        assert_eq!(text(&mut s, b"ms lk 3 T60 F5 C2\r\nabc\r\n"), "HD\r\n");
        assert_eq!(
            text(&mut s, b"mg lk v f c N30 t R30\r\n"),
            "VA 3 f5 c3 t60\r\nabc\r\n"
        );
        assert_eq!(
            text(&mut s, b"mg lk v f c N30 t R70\r\n"),
            "VA 3 f5 c3 t60 W\r\nabc\r\n"
        );
        assert_eq!(
            text(&mut s, b"mg lk v f c N30 t R70\r\n"),
            "VA 3 f5 c3 t60 Z\r\nabc\r\n"
        );
        // A set makes a new item: new cas, no token; a placeholder's holder then gets EX.
        assert_eq!(
            text(&mut s, b"md lk\r\nmg lk c N30\r\n"),
            "HD\r\nHD c4 W\r\n"
        );
        assert_eq!(
            text(&mut s, b"set lk 1 0 1\r\nx\r\nmg lk c N30\r\n"),
            "STORED\r\nHD c5\r\n"
        );
        assert_eq!(text(&mut s, b"md lk C4\r\nmd lk C5\r\n"), "EX\r\nHD\r\n");
        // Time: a placeholder lives N seconds; then the next reader wins a new one.
        assert_eq!(text(&mut s, b"mg lk c N2\r\n"), "HD c6 W\r\n");
        s.now += 1;
        assert_eq!(text(&mut s, b"mg lk c t N2\r\n"), "HD c6 t1 Z\r\n");
        s.now += 1;
        assert_eq!(
            text(&mut s, b"mg lk c N2\r\nmg zz\r\n"),
            "HD c7 W\r\nEN\r\n"
        );
    }
}
