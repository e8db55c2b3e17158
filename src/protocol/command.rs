//! The command table: every command the proxy understands and the reply shape it expects.

/// A memcached ASCII command, classic or meta.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Command {
    /// `get <key>*`
    Get,
    /// `gets <key>*`
    Gets,
    /// `gat <exptime> <key>*`
    Gat,
    /// `gats <exptime> <key>*`
    Gats,
    /// `set <key> <flags> <exptime> <bytes> [noreply]`
    Set,
    /// `add ...` (same shape as set)
    Add,
    /// `replace ...`
    Replace,
    /// `append ...`
    Append,
    /// `prepend ...`
    Prepend,
    /// `cas <key> <flags> <exptime> <bytes> <cas unique> [noreply]`
    Cas,
    /// `delete <key> [noreply]`
    Delete,
    /// `incr <key> <value> [noreply]`
    Incr,
    /// `decr <key> <value> [noreply]`
    Decr,
    /// `touch <key> <exptime> [noreply]`
    Touch,
    /// `flush_all [delay] [noreply]`
    FlushAll,
    /// `version`
    Version,
    /// `verbosity <level> [noreply]`
    Verbosity,
    /// `stats [group]`
    Stats,
    /// `quit`
    Quit,
    /// `mg <key> <flags>*`
    MetaGet,
    /// `ms <key> <datalen> <flags>*`
    MetaSet,
    /// `md <key> <flags>*`
    MetaDelete,
    /// `ma <key> <flags>*`
    MetaArithmetic,
    /// `mn`
    MetaNoop,
    /// `me <key> <flags>*`
    MetaDebug,
}

/// The shape of the reply a backend sends for a request, used to find where that reply ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// Zero or more `VALUE <key> <flags> <bytes> [<cas>]` blocks, then `END`.
    Retrieval,
    /// Exactly one line (`STORED`, `DELETED`, a number, `OK`, `VERSION ...`, ...).
    Line,
    /// Zero or more `STAT <name> <value>` lines, then `END`.
    Stats,
    /// One meta reply line; when it is `VA <size> ...` a data block follows.
    Meta,
    /// Whatever replies arrive (possibly none) up to and including `MN`. Used for `noreply`
    /// and quiet-mode (`q`) requests, which the proxy always follows with `mn` so that the end of
    /// their replies can be found.
    UntilNoop,
}

impl Command {
    /// Every command, for tables and tests.
    pub const ALL: [Command; 25] = [
        Command::Get,
        Command::Gets,
        Command::Gat,
        Command::Gats,
        Command::Set,
        Command::Add,
        Command::Replace,
        Command::Append,
        Command::Prepend,
        Command::Cas,
        Command::Delete,
        Command::Incr,
        Command::Decr,
        Command::Touch,
        Command::FlushAll,
        Command::Version,
        Command::Verbosity,
        Command::Stats,
        Command::Quit,
        Command::MetaGet,
        Command::MetaSet,
        Command::MetaDelete,
        Command::MetaArithmetic,
        Command::MetaNoop,
        Command::MetaDebug,
    ];

    /// The command's name on the wire (also its name in config `commands:` lists and metrics).
    pub fn name(self) -> &'static str {
        match self {
            Command::Get => "get",
            Command::Gets => "gets",
            Command::Gat => "gat",
            Command::Gats => "gats",
            Command::Set => "set",
            Command::Add => "add",
            Command::Replace => "replace",
            Command::Append => "append",
            Command::Prepend => "prepend",
            Command::Cas => "cas",
            Command::Delete => "delete",
            Command::Incr => "incr",
            Command::Decr => "decr",
            Command::Touch => "touch",
            Command::FlushAll => "flush_all",
            Command::Version => "version",
            Command::Verbosity => "verbosity",
            Command::Stats => "stats",
            Command::Quit => "quit",
            Command::MetaGet => "mg",
            Command::MetaSet => "ms",
            Command::MetaDelete => "md",
            Command::MetaArithmetic => "ma",
            Command::MetaNoop => "mn",
            Command::MetaDebug => "me",
        }
    }

    /// Looks a command up by its wire name.
    pub fn from_name(name: &[u8]) -> Option<Command> {
        Command::ALL
            .iter()
            .copied()
            .find(|c| c.name().as_bytes() == name)
    }

    /// True for the commands that carry a data block after the command line.
    pub fn has_data(self) -> bool {
        matches!(
            self,
            Command::Set
                | Command::Add
                | Command::Replace
                | Command::Append
                | Command::Prepend
                | Command::Cas
                | Command::MetaSet
        )
    }

    /// True for the commands that change what a server holds (storage, deletes, arithmetic,
    /// touches, `flush_all`): a client's such request must not overtake its earlier reads.
    /// (`gat`/`gats` and `mg ... T` touch too, but are reads first: they are not held.)
    pub fn is_write(self) -> bool {
        self.has_data()
            || matches!(
                self,
                Command::Delete
                    | Command::Incr
                    | Command::Decr
                    | Command::Touch
                    | Command::MetaDelete
                    | Command::MetaArithmetic
                    | Command::FlushAll
            )
    }

    /// True for get/gets/gat/gats, which may name many keys.
    pub fn is_multi_key(self) -> bool {
        matches!(
            self,
            Command::Get | Command::Gets | Command::Gat | Command::Gats
        )
    }

    /// True for commands that name a key and are forwarded to the backend owning it.
    pub fn is_keyed(self) -> bool {
        !matches!(
            self,
            Command::FlushAll
                | Command::Version
                | Command::Verbosity
                | Command::Stats
                | Command::Quit
                | Command::MetaNoop
        )
    }

    /// True for the meta commands.
    pub fn is_meta(self) -> bool {
        matches!(
            self,
            Command::MetaGet
                | Command::MetaSet
                | Command::MetaDelete
                | Command::MetaArithmetic
                | Command::MetaNoop
                | Command::MetaDebug
        )
    }

    /// The reply shape a backend sends for this command when it answers normally.
    pub fn reply_kind(self) -> ReplyKind {
        match self {
            Command::Get | Command::Gets | Command::Gat | Command::Gats => ReplyKind::Retrieval,
            Command::Stats => ReplyKind::Stats,
            Command::MetaGet
            | Command::MetaSet
            | Command::MetaDelete
            | Command::MetaArithmetic
            | Command::MetaNoop
            | Command::MetaDebug => ReplyKind::Meta,
            _ => ReplyKind::Line,
        }
    }
}
