//! Key placement vocabulary shared by the config loader and the router: the pool
//! [`Distribution`]s, the key [`HashFunction`]s (twemproxy's names) and [`ring_name`], the name
//! a server's ketama points are hashed from.
//!
//! This is a leaf module: it imports neither [`crate::config`] nor [`crate::routing`], so both can
//! use it without depending on each other (the config loader checks that no two servers of a
//! pool share a ring name; the ring places keys by it).

/// The port libmemcached and twemproxy leave out of a server's ketama name.
pub const KETAMA_DEFAULT_PORT: u32 = 11211;

/// How a pool spreads keys over its servers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// A ketama continuum, compatible with twemproxy.
    Ketama,
    /// Hash modulo the number of servers.
    Modula,
    /// A random server per request.
    Random,
}

impl Distribution {
    /// Every distribution, in documentation order.
    pub const ALL: [Distribution; 3] = [
        Distribution::Ketama,
        Distribution::Modula,
        Distribution::Random,
    ];

    /// The name used in config files.
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::Modula => "modula",
            Distribution::Random => "random",
        }
    }

    /// Looks a distribution up by its config name.
    pub fn from_name(name: &str) -> Option<Distribution> {
        Distribution::ALL.iter().copied().find(|d| d.name() == name)
    }
}

/// The key hash functions, as twemproxy names them.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HashFunction {
    /// `one_at_a_time`
    OneAtATime,
    /// `md5`
    Md5,
    /// `crc16`
    Crc16,
    /// `crc32` (twemproxy's variant)
    Crc32,
    /// `crc32a` (the standard CRC-32)
    Crc32a,
    /// `fnv1_64`
    Fnv1_64,
    /// `fnv1a_64`
    Fnv1a_64,
    /// `fnv1_32`
    Fnv1_32,
    /// `fnv1a_32`
    Fnv1a_32,
    /// `hsieh`
    Hsieh,
    /// `murmur`
    Murmur,
    /// `jenkins`
    Jenkins,
}

impl HashFunction {
    /// Every hash function, in twemproxy's order.
    pub const ALL: [HashFunction; 12] = [
        HashFunction::OneAtATime,
        HashFunction::Md5,
        HashFunction::Crc16,
        HashFunction::Crc32,
        HashFunction::Crc32a,
        HashFunction::Fnv1_64,
        HashFunction::Fnv1a_64,
        HashFunction::Fnv1_32,
        HashFunction::Fnv1a_32,
        HashFunction::Hsieh,
        HashFunction::Murmur,
        HashFunction::Jenkins,
    ];

    /// The name used in config files (twemproxy's spelling).
    pub fn name(self) -> &'static str {
        match self {
            HashFunction::OneAtATime => "one_at_a_time",
            HashFunction::Md5 => "md5",
            HashFunction::Crc16 => "crc16",
            HashFunction::Crc32 => "crc32",
            HashFunction::Crc32a => "crc32a",
            HashFunction::Fnv1_64 => "fnv1_64",
            HashFunction::Fnv1a_64 => "fnv1a_64",
            HashFunction::Fnv1_32 => "fnv1_32",
            HashFunction::Fnv1a_32 => "fnv1a_32",
            HashFunction::Hsieh => "hsieh",
            HashFunction::Murmur => "murmur",
            HashFunction::Jenkins => "jenkins",
        }
    }

    /// Looks a hash function up by its config name.
    pub fn from_name(name: &str) -> Option<HashFunction> {
        HashFunction::ALL.iter().copied().find(|h| h.name() == name)
    }
}

/// The name twemproxy hashes for a server, from the address as written in the configuration
/// (`"host:port"`) and the optional configured name.
///
/// - a non-empty configured name is used as is: `("10.0.0.1:11212", Some("cache-b"))` →
///   `"cache-b"`;
/// - else, when the port (the digits after the last `:`) is 11211, the host alone:
///   `"10.0.0.1:11211"` → `"10.0.0.1"`, `"cache-a:011211"` → `"cache-a"`;
/// - else the address exactly as written: `"10.0.0.1:11212"` → `"10.0.0.1:11212"`;
/// - a Unix socket path (`"/run/mc.sock"`) gets a trailing `:` (`"/run/mc.sock:"`), which is what
///   twemproxy's parser produces for `/path:weight`.
pub fn ring_name(address: &str, name: Option<&str>) -> String {
    if let Some(name) = name.filter(|n| !n.is_empty()) {
        return name.to_string();
    }
    if address.starts_with('/') {
        return format!("{address}:");
    }
    if let Some((host, port)) = address.rsplit_once(':') {
        let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
        let value = port.trim_start_matches('0').parse::<u32>().unwrap_or(0);
        if digits && value == KETAMA_DEFAULT_PORT {
            return host.to_string();
        }
    }
    address.to_string()
}
