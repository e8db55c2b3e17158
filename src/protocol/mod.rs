//! The memcached ASCII protocol, both directions.
//!
//! * [`command`]: the command table (names, what kind of reply each one expects).
//! * [`request`]: the zero-allocation incremental request parser used on client connections.
//! * [`reply`]: the reply framer used on backend connections; it finds where each reply ends.
//!
//! Both parsers work on a byte slice (the connection's read buffer) and return offsets into it,
//! never copies, and treat "not enough bytes yet" as a normal outcome.

pub mod base64;
pub mod binary;
pub mod command;
pub mod decimal;
pub mod http;
pub mod meta_flags;
pub mod reply;
pub mod request;

pub use command::{Command, ReplyKind};
pub use meta_flags::{meta_flags, MetaFlags};
pub use reply::{
    key_print, parse_reply, value_header, Checks, Expect, Reply, ReplyError, ReplyFramer,
    ValueHeader,
};
pub use request::{parse_request, KeyIter, Limits, ParseError, Parsed, Request, Span};
