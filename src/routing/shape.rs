//! What a request is on routes with several targets per key: its command family (read, cas
//! read, write, conditional write) and what a warm_first route does with it. Worked out once
//! per request, from the command and (for meta commands) its flags.

use crate::protocol::{meta_flags, MetaFlags};
use crate::protocol::{Command, Request};

/// What a request does on a route with several targets per key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// `get`, `gat`, `mg` without `c`: a plain read.
    Read,
    /// `gets`, `gats`, `mg ... c`: a read whose cas token must be one server's.
    CasRead,
    /// A write whose outcome does not depend on the server's own state: storage commands,
    /// `delete`, `touch`, `ms` without `C`, `md`.
    Write,
    /// A write that depends on one server's own state: `cas`, `incr`/`decr`, `ma`,
    /// `ms ... C`, `md ... C` (a cas token is one server's).
    Conditional,
}

impl Family {
    /// The family of `request` (parsed from `bytes`), with its meta flags.
    pub fn of(request: &Request, bytes: &[u8]) -> (Family, MetaFlags) {
        let meta = match request.command {
            Command::MetaGet | Command::MetaSet | Command::MetaDelete => meta_flags(request, bytes),
            _ => MetaFlags::EMPTY,
        };
        let family = match request.command {
            Command::Get | Command::Gat => Family::Read,
            Command::Gets | Command::Gats => Family::CasRead,
            Command::MetaGet if meta.has(b'c') => Family::CasRead,
            Command::MetaGet => Family::Read,
            Command::Cas | Command::Incr | Command::Decr | Command::MetaArithmetic => {
                Family::Conditional
            }
            Command::MetaSet | Command::MetaDelete if meta.has(b'C') => Family::Conditional,
            _ => Family::Write,
        };
        (family, meta)
    }

    /// True for reads.
    pub fn is_read(self) -> bool {
        matches!(self, Family::Read | Family::CasRead)
    }
}

/// True when `request` touches what it reads (`gat`, `gats`, `mg ... T`): under warm_first it
/// goes to both tiers.
pub fn touches(request: &Request, meta: MetaFlags) -> bool {
    matches!(request.command, Command::Gat | Command::Gats)
        || (request.command == Command::MetaGet && meta.has(b'T'))
}

/// How a request on a warm_first route is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WarmPlan {
    /// Warm, then cold for what warm lacks, with write-backs: the failover read path.
    ReadThrough,
    /// The cold tier alone (its cas tokens): the ordinary path, on the cold pool.
    Cold,
    /// Both tiers at once, in this order of preference ([warm, cold] or [cold, warm]).
    Both {
        /// Cold first.
        cold_first: bool,
    },
    /// Cold and warm at once, cold answering.
    WriteBoth,
    /// Cold, and a delete of the warm copy.
    ColdInvalidateWarm,
}

impl WarmPlan {
    /// The plan for `request` (parsed from `bytes`).
    #[cfg(test)]
    pub fn of(request: &Request, bytes: &[u8]) -> WarmPlan {
        Shape::of(request, bytes).plan
    }

    fn for_family(request: &Request, family: Family, meta: MetaFlags) -> WarmPlan {
        match family {
            Family::Read | Family::CasRead if touches(request, meta) => WarmPlan::Both {
                cold_first: family == Family::CasRead,
            },
            Family::Read => WarmPlan::ReadThrough,
            Family::CasRead => WarmPlan::Cold,
            Family::Write => WarmPlan::WriteBoth,
            Family::Conditional => WarmPlan::ColdInvalidateWarm,
        }
    }
}

/// What a request is on routes with several targets per key: its family and its warm_first
/// plan, worked out once per request (a meta request's flags are scanned once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// The command family.
    pub family: Family,
    /// What a warm_first route does with it.
    pub plan: WarmPlan,
}

impl Shape {
    /// The shape of `request` (parsed from `bytes`).
    pub fn of(request: &Request, bytes: &[u8]) -> Shape {
        let (family, meta) = Family::of(request, bytes);
        Shape {
            family,
            plan: WarmPlan::for_family(request, family, meta),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{parse_request, Limits, Parsed};

    fn plan(line: &[u8]) -> (Family, WarmPlan) {
        let Ok(Parsed::Complete(r)) = parse_request(line, &Limits::default()) else {
            panic!("{line:?} does not parse");
        };
        (Family::of(&r, line).0, WarmPlan::of(&r, line))
    }

    #[test]
    fn each_command_family_has_its_plan() {
        use Family::*;
        let cases: [(&[u8], Family, WarmPlan); 14] = [
            (b"get a b\r\n", Read, WarmPlan::ReadThrough),
            (b"mg a v f\r\n", Read, WarmPlan::ReadThrough),
            (b"gets a\r\n", CasRead, WarmPlan::Cold),
            (b"mg a v c\r\n", CasRead, WarmPlan::Cold),
            (b"gat 10 a\r\n", Read, WarmPlan::Both { cold_first: false }),
            (
                b"gats 10 a\r\n",
                CasRead,
                WarmPlan::Both { cold_first: true },
            ),
            (
                b"mg a v T30\r\n",
                Read,
                WarmPlan::Both { cold_first: false },
            ),
            (b"set a 0 0 1\r\nx\r\n", Write, WarmPlan::WriteBoth),
            (b"delete a noreply\r\n", Write, WarmPlan::WriteBoth),
            (b"ms a 1 T0\r\nx\r\n", Write, WarmPlan::WriteBoth),
            (
                b"ms a 1 C99\r\nx\r\n",
                Conditional,
                WarmPlan::ColdInvalidateWarm,
            ),
            (b"md a C99 q\r\n", Conditional, WarmPlan::ColdInvalidateWarm),
            (b"incr a 1\r\n", Conditional, WarmPlan::ColdInvalidateWarm),
            (
                b"cas a 0 0 1 5\r\nx\r\n",
                Conditional,
                WarmPlan::ColdInvalidateWarm,
            ),
        ];
        for (line, family, warm) in cases {
            assert_eq!(
                plan(line),
                (family, warm),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
