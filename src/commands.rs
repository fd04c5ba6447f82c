//! The command table: what keyward needs to know about a command, as data.
//!
//! Most commands need nothing special: the standalone backend forwards them byte for byte. The
//! table records the few facts that change what keyward does:
//! - the [`Role`]: the guard's deletes, and the commands that change how replies are framed on
//!   the connection (pub/sub, MONITOR, CLIENT REPLY, QUIT, RESET, transactions);
//! - whether a command leaves per-connection state behind on the upstream connection (SELECT,
//!   AUTH, WATCH...), so that a lost upstream connection is not silently replaced;
//! - where the keys are and how a multi-key command fans out, for the cluster backend.
//!
//! A command missing from the table is forwarded as an ordinary command, which keeps module
//! commands and commands of newer Redis versions working.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::protocol::args::Args;

/// What a command means to keyward.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Forwarded; one reply.
    Ordinary,
    /// A command that removes keys it names from this server (`DEL`, `UNLINK`, `GETDEL`,
    /// `MIGRATE`): its [`Removes`] keys are checked by the guard, then it is forwarded and audited.
    Delete,
    /// keyward's own `REMOVEKEYS`: checked by the guard, rewritten to the configured delete.
    RemoveKeys,
    /// `MULTI`: starts a transaction; a refusal inside it must abort the EXEC.
    Multi,
    /// `EXEC`: runs a transaction.
    Exec,
    /// `DISCARD`: drops a transaction.
    Discard,
    /// `SUBSCRIBE` and friends: one confirmation per argument.
    Subscribe(PubSubKind),
    /// `UNSUBSCRIBE` and friends: one confirmation per argument, or per current subscription.
    Unsubscribe(PubSubKind),
    /// `MONITOR`: after its `+OK`, the connection streams monitor lines.
    Monitor,
    /// `QUIT`: answered `+OK` by keyward, which then closes the connection.
    Quit,
    /// `RESET`: Redis clears the connection's state.
    Reset,
    /// `CLIENT`: `CLIENT REPLY OFF|SKIP` stop Redis from replying; see [`client_subcommand`].
    Client,
    /// `SYNC`, `PSYNC`, `REPLCONF`: would turn the connection into a replication stream (or, for
    /// REPLCONF, get no reply at all); refused by keyward.
    Replication,
    /// `AUTH`: answered by keyward when it authenticates clients.
    Auth,
    /// `HELLO`: its reply says which protocol the connection speaks from then on; its `AUTH`
    /// option is checked by keyward when it authenticates clients.
    Hello,
    /// `PING`: answered by keyward before a client has logged in.
    Ping,
    /// `SELECT`: the database of the connection (only 0 in a cluster).
    Select,
    /// `WATCH`: pins a cluster client's optimistic lock to its keys' node.
    Watch,
    /// `UNWATCH`.
    Unwatch,
    /// `READONLY`, `READWRITE`, `ASKING`: cluster connection flags, which keyward keeps for its
    /// own node connections and answers `+OK` for a cluster client.
    ClusterFlag,
    /// keyward's own `RUNHOOK name [param value ...]`: runs an invalidation hook; answered by
    /// keyward, nothing is forwarded.
    RunHook,
    /// keyward's own `REMOVEKEYS.PREVIEW key...`: checked by every rule of the guard, then sent
    /// as `EXISTS` of the distinct keys: how many a `REMOVEKEYS` would remove now.
    RemoveKeysPreview,
}

/// The three independent pub/sub namespaces of Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PubSubKind {
    Channel,
    Pattern,
    Shard,
}

impl PubSubKind {
    pub const ALL: [PubSubKind; 3] = [PubSubKind::Channel, PubSubKind::Pattern, PubSubKind::Shard];

    /// The first element of a subscribe confirmation of this kind.
    pub fn subscribe_reply(self) -> &'static [u8] {
        match self {
            PubSubKind::Channel => b"subscribe",
            PubSubKind::Pattern => b"psubscribe",
            PubSubKind::Shard => b"ssubscribe",
        }
    }

    /// The first element of an unsubscribe confirmation of this kind.
    pub fn unsubscribe_reply(self) -> &'static [u8] {
        match self {
            PubSubKind::Channel => b"unsubscribe",
            PubSubKind::Pattern => b"punsubscribe",
            PubSubKind::Shard => b"sunsubscribe",
        }
    }
}

/// Where the keys of a command are, as in Redis's legacy `COMMAND` key metadata: positions
/// `first..=last` (negative `last` counts from the end, -1 is the last argument) every `step`.
/// `first == 0` means the command has no keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeySpec {
    pub first: u8,
    pub last: i8,
    pub step: u8,
}

impl KeySpec {
    pub const NONE: KeySpec = KeySpec {
        first: 0,
        last: 0,
        step: 0,
    };

    /// Indexes of the key arguments in a request of `argc` arguments.
    pub fn positions(self, argc: usize) -> impl Iterator<Item = usize> {
        self.span(argc).step_by(self.step.max(1) as usize)
    }

    /// The arguments from the first key to the last one, whatever the step: for a spec with
    /// step 1 (DEL, UNLINK, GETDEL) exactly the keys.
    pub fn span(self, argc: usize) -> std::ops::Range<usize> {
        let first = self.first as usize;
        let last = if self.first == 0 {
            0
        } else if self.last < 0 {
            argc as isize + self.last as isize
        } else {
            self.last as isize
        };
        let last = last.min(argc as isize - 1);
        if first == 0 || last < first as isize {
            0..0
        } else {
            first..last as usize + 1
        }
    }
}

/// Which arguments name the keys a command removes from this server: what the guard's key
/// rules (`wildcard_chars`, `max_keys`) are applied to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removes {
    /// No key is removed by naming it (most commands; single-key side effects such as
    /// `EXPIRE key 0` or the last element popped off a list are not counted).
    Nothing,
    /// The keys at the command's [`KeySpec`] positions, which must have step 1: every argument
    /// of `DEL`, `UNLINK` and `REMOVEKEYS`, the one key of `GETDEL`.
    Keys,
    /// `MIGRATE`: its key (argument 3) or the keys after its `KEYS` option, which it moves to
    /// another server; none with `COPY`, which leaves them in place. See [`removed_keys`].
    Migrate,
}

/// How a command spreads over a Redis Cluster (used by the cluster backend).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fanout {
    /// No keys: any node, or answered locally.
    Keyless,
    /// All keys must hash to one slot; Redis answers CROSSSLOT otherwise.
    SingleSlot,
    /// Split the keys by slot and sum the integer replies (DEL, UNLINK, EXISTS, TOUCH).
    SplitSum,
    /// Split by slot and merge the replies back in key order (MGET).
    SplitMerge,
    /// Split key/value pairs by slot (MSET); not atomic across slots.
    SplitPairs,
    /// Run on every primary; the replies are combined as [`Combine`] says (KEYS, DBSIZE,
    /// FLUSHALL...).
    AllPrimaries(Combine),
    /// `SCAN`: visits one primary after the other, keyward's cursor naming the node.
    Scan,
}

/// How the replies of a command sent to every primary make one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combine {
    /// Integers summed (DBSIZE).
    Sum,
    /// Arrays concatenated (KEYS).
    Concat,
    /// `+OK` when every primary said OK, else the first error (FLUSHALL, FLUSHDB).
    AllOk,
}

/// One row of the command table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandSpec {
    /// Lowercase name.
    pub name: &'static str,
    /// The command's place in the table, from 1 in the order of names; 0 for anything not in
    /// the table ([`OTHER`]). Per-command counters are arrays indexed by it: no map, no lock.
    pub id: u16,
    pub role: Role,
    pub keys: KeySpec,
    pub fanout: Fanout,
    /// Leaves per-connection state on the upstream connection (SELECT, AUTH, WATCH...).
    pub stateful: bool,
    /// May wait for a long time before replying (BLPOP, WAIT...); no reply timeout applies.
    pub blocking: bool,
    /// The keys the guard checks; anything but [`Removes::Nothing`] goes with
    /// [`Role::Delete`] or [`Role::RemoveKeys`].
    pub removes: Removes,
    /// Subcommands that change how a *new* connection logs in to Redis (`CONFIG SET
    /// requirepass`, `ACL SETUSER`...): connections keyward opened ahead of need before one of
    /// these ran may no longer be in the state a connection opened now would be in. Each entry
    /// is a subcommand and the parameters that matter (`CONFIG SET` takes name/value pairs);
    /// none listed: the subcommand always does.
    pub changes_login_of: &'static [LoginChange],
    /// Redis flags the command `write`: a write of one of its keys may trigger an invalidation
    /// hook's `on_write` (set from [`WRITE_COMMANDS`]).
    pub writes: bool,
    /// Runs a script or a function (`EVAL`, `EVALSHA`, `FCALL` and their `_RO` forms), which may
    /// keep its node busy for as long as it runs: in a cluster it goes over a connection of the
    /// client's own, so that a runaway script holds up its client only, as in Redis, and not
    /// every client sharing the node's connection (who get `BUSY` from Redis instead).
    pub runs_script: bool,
}

const fn spec(name: &'static str, role: Role, keys: KeySpec, fanout: Fanout) -> CommandSpec {
    CommandSpec {
        name,
        id: OTHER,
        role,
        keys,
        fanout,
        stateful: false,
        blocking: false,
        removes: Removes::Nothing,
        changes_login_of: &[],
        writes: false,
        runs_script: false,
    }
}

/// A subcommand that changes how new connections log in, when it sets one of `parameters`
/// (`CONFIG SET name value [name value ...]`), or always when `parameters` is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginChange {
    pub subcommand: &'static str,
    pub parameters: &'static [&'static str],
}

const fn always(subcommand: &'static str) -> LoginChange {
    LoginChange {
        subcommand,
        parameters: &[],
    }
}

/// A command whose listed subcommands change how new connections log in.
const fn changes_login(mut s: CommandSpec, changes: &'static [LoginChange]) -> CommandSpec {
    s.changes_login_of = changes;
    s
}

/// A command that removes keys it names: guarded, forwarded, audited.
const fn removing(mut s: CommandSpec, removes: Removes) -> CommandSpec {
    s.removes = removes;
    s
}

const fn keys(first: u8, last: i8, step: u8) -> KeySpec {
    KeySpec { first, last, step }
}

const ONE: KeySpec = keys(1, 1, 1);
const ALL: KeySpec = keys(1, -1, 1);

const fn ordinary(name: &'static str, k: KeySpec) -> CommandSpec {
    let fanout = if k.first == 0 {
        Fanout::Keyless
    } else {
        Fanout::SingleSlot
    };
    spec(name, Role::Ordinary, k, fanout)
}

const fn stateful(mut s: CommandSpec) -> CommandSpec {
    s.stateful = true;
    s
}

const fn script(mut s: CommandSpec) -> CommandSpec {
    s.runs_script = true;
    s
}

const fn blocking(mut s: CommandSpec) -> CommandSpec {
    s.blocking = true;
    s
}

/// The built-in table. Commands with a single key at position 1 and no special role are the
/// majority of Redis; they are listed compactly in [`SINGLE_KEY_COMMANDS`].
const SPECIAL_COMMANDS: &[CommandSpec] = &[
    removing(
        spec("del", Role::Delete, ALL, Fanout::SplitSum),
        Removes::Keys,
    ),
    removing(
        spec("unlink", Role::Delete, ALL, Fanout::SplitSum),
        Removes::Keys,
    ),
    removing(
        spec("removekeys", Role::RemoveKeys, ALL, Fanout::SplitSum),
        Removes::Keys,
    ),
    removing(
        spec(
            "removekeys.preview",
            Role::RemoveKeysPreview,
            ALL,
            Fanout::SplitSum,
        ),
        Removes::Keys,
    ),
    removing(
        spec("getdel", Role::Delete, ONE, Fanout::SingleSlot),
        Removes::Keys,
    ),
    // MIGRATE moves its keys to another server: gone from this one unless COPY. Its keys are
    // found by MOVED in a cluster, as for the other commands with keys after an option.
    removing(
        spec("migrate", Role::Delete, KeySpec::NONE, Fanout::Keyless),
        Removes::Migrate,
    ),
    spec("exists", Role::Ordinary, ALL, Fanout::SplitSum),
    spec("touch", Role::Ordinary, ALL, Fanout::SplitSum),
    spec("mget", Role::Ordinary, ALL, Fanout::SplitMerge),
    spec("mset", Role::Ordinary, keys(1, -1, 2), Fanout::SplitPairs),
    ordinary("msetnx", keys(1, -1, 2)),
    stateful(spec("multi", Role::Multi, KeySpec::NONE, Fanout::Keyless)),
    spec("exec", Role::Exec, KeySpec::NONE, Fanout::Keyless),
    spec("discard", Role::Discard, KeySpec::NONE, Fanout::Keyless),
    stateful(spec("watch", Role::Watch, ALL, Fanout::SingleSlot)),
    stateful(spec(
        "unwatch",
        Role::Unwatch,
        KeySpec::NONE,
        Fanout::Keyless,
    )),
    stateful(spec(
        "subscribe",
        Role::Subscribe(PubSubKind::Channel),
        KeySpec::NONE,
        Fanout::Keyless,
    )),
    stateful(spec(
        "psubscribe",
        Role::Subscribe(PubSubKind::Pattern),
        KeySpec::NONE,
        Fanout::Keyless,
    )),
    stateful(spec(
        "ssubscribe",
        Role::Subscribe(PubSubKind::Shard),
        ALL,
        Fanout::SingleSlot,
    )),
    stateful(spec(
        "unsubscribe",
        Role::Unsubscribe(PubSubKind::Channel),
        KeySpec::NONE,
        Fanout::Keyless,
    )),
    stateful(spec(
        "punsubscribe",
        Role::Unsubscribe(PubSubKind::Pattern),
        KeySpec::NONE,
        Fanout::Keyless,
    )),
    stateful(spec(
        "sunsubscribe",
        Role::Unsubscribe(PubSubKind::Shard),
        ALL,
        Fanout::SingleSlot,
    )),
    stateful(spec(
        "monitor",
        Role::Monitor,
        KeySpec::NONE,
        Fanout::Keyless,
    )),
    spec("quit", Role::Quit, KeySpec::NONE, Fanout::Keyless),
    spec("reset", Role::Reset, KeySpec::NONE, Fanout::Keyless),
    stateful(spec("client", Role::Client, KeySpec::NONE, Fanout::Keyless)),
    spec("sync", Role::Replication, KeySpec::NONE, Fanout::Keyless),
    spec("psync", Role::Replication, KeySpec::NONE, Fanout::Keyless),
    // REPLCONF from a client is answered with silence by Redis, which would shift every reply
    // on the connection after it.
    spec(
        "replconf",
        Role::Replication,
        KeySpec::NONE,
        Fanout::Keyless,
    ),
    stateful(spec("select", Role::Select, KeySpec::NONE, Fanout::Keyless)),
    stateful(spec("auth", Role::Auth, KeySpec::NONE, Fanout::Keyless)),
    stateful(spec("hello", Role::Hello, KeySpec::NONE, Fanout::Keyless)),
    stateful(spec(
        "readonly",
        Role::ClusterFlag,
        KeySpec::NONE,
        Fanout::Keyless,
    )),
    stateful(spec(
        "readwrite",
        Role::ClusterFlag,
        KeySpec::NONE,
        Fanout::Keyless,
    )),
    stateful(spec(
        "asking",
        Role::ClusterFlag,
        KeySpec::NONE,
        Fanout::Keyless,
    )),
    spec(
        "keys",
        Role::Ordinary,
        KeySpec::NONE,
        Fanout::AllPrimaries(Combine::Concat),
    ),
    spec("scan", Role::Ordinary, KeySpec::NONE, Fanout::Scan),
    spec(
        "dbsize",
        Role::Ordinary,
        KeySpec::NONE,
        Fanout::AllPrimaries(Combine::Sum),
    ),
    spec(
        "flushall",
        Role::Ordinary,
        KeySpec::NONE,
        Fanout::AllPrimaries(Combine::AllOk),
    ),
    spec(
        "flushdb",
        Role::Ordinary,
        KeySpec::NONE,
        Fanout::AllPrimaries(Combine::AllOk),
    ),
    spec("ping", Role::Ping, KeySpec::NONE, Fanout::Keyless),
    spec("runhook", Role::RunHook, KeySpec::NONE, Fanout::Keyless),
    ordinary("echo", KeySpec::NONE),
    ordinary("info", KeySpec::NONE),
    ordinary("rename", keys(1, 2, 1)),
    ordinary("renamenx", keys(1, 2, 1)),
    ordinary("copy", keys(1, 2, 1)),
    ordinary("smove", keys(1, 2, 1)),
    ordinary("lmove", keys(1, 2, 1)),
    ordinary("rpoplpush", keys(1, 2, 1)),
    blocking(ordinary("blmove", keys(1, 2, 1))),
    blocking(ordinary("brpoplpush", keys(1, 2, 1))),
    blocking(ordinary("blpop", keys(1, -2, 1))),
    blocking(ordinary("brpop", keys(1, -2, 1))),
    blocking(ordinary("bzpopmin", keys(1, -2, 1))),
    blocking(ordinary("bzpopmax", keys(1, -2, 1))),
    blocking(ordinary("wait", KeySpec::NONE)),
    ordinary("sdiff", ALL),
    ordinary("sinter", ALL),
    ordinary("sunion", ALL),
    ordinary("sdiffstore", ALL),
    ordinary("sinterstore", ALL),
    ordinary("sunionstore", ALL),
    ordinary("pfcount", ALL),
    ordinary("pfmerge", ALL),
    ordinary("bitop", keys(2, -1, 1)),
    // XREAD and XREADGROUP block only with BLOCK, but are treated as blocking always: a
    // connection of their own costs little and never stalls a shared one.
    blocking(ordinary("xread", KeySpec::NONE)),
    blocking(ordinary("xreadgroup", KeySpec::NONE)),
    blocking(ordinary("blmpop", KeySpec::NONE)),
    blocking(ordinary("bzmpop", KeySpec::NONE)),
    blocking(ordinary("waitaof", KeySpec::NONE)),
    // Connection state that no role covers: the Lua debugger (SCRIPT DEBUG), the user a
    // connection is logged in as (ACL WHOAMI...), DEBUG (SLEEP would stall a shared
    // connection), MIGRATE's and the like are harmless but rare.
    stateful(ordinary("script", KeySpec::NONE)),
    stateful(changes_login(
        ordinary("acl", KeySpec::NONE),
        &[always("setuser"), always("deluser"), always("load")],
    )),
    stateful(ordinary("debug", KeySpec::NONE)),
    ordinary("object", keys(2, 2, 1)),
    ordinary("memory", keys(2, 2, 1)),
    ordinary("xinfo", keys(2, 2, 1)),
    ordinary("xgroup", keys(2, 2, 1)),
    // Keys given after a count (numkeys): routed by the first node's MOVED in a cluster.
    ordinary("zunionstore", KeySpec::NONE),
    ordinary("zinterstore", KeySpec::NONE),
    ordinary("zdiffstore", KeySpec::NONE),
    ordinary("zunion", KeySpec::NONE),
    ordinary("zinter", KeySpec::NONE),
    ordinary("zdiff", KeySpec::NONE),
    ordinary("zintercard", KeySpec::NONE),
    ordinary("sintercard", KeySpec::NONE),
    ordinary("lmpop", KeySpec::NONE),
    ordinary("zmpop", KeySpec::NONE),
    script(ordinary("eval_ro", KeySpec::NONE)),
    script(ordinary("evalsha_ro", KeySpec::NONE)),
    script(ordinary("fcall_ro", KeySpec::NONE)),
    ordinary("geosearchstore", keys(1, 2, 1)),
    ordinary("georadius_ro", ONE),
    ordinary("georadiusbymember_ro", ONE),
    script(ordinary("eval", KeySpec::NONE)),
    script(ordinary("evalsha", KeySpec::NONE)),
    script(ordinary("fcall", KeySpec::NONE)),
    ordinary("publish", KeySpec::NONE),
    ordinary("pubsub", KeySpec::NONE),
    ordinary("time", KeySpec::NONE),
    ordinary("lastsave", KeySpec::NONE),
    ordinary("command", KeySpec::NONE),
    // Only the password: CONFIG SET maxmemory must not make keyward reopen connections (new
    // connections take Redis memory, which Redis's own tests of eviction measure).
    changes_login(
        ordinary("config", KeySpec::NONE),
        &[LoginChange {
            subcommand: "set",
            parameters: &["requirepass"],
        }],
    ),
    ordinary("slowlog", KeySpec::NONE),
    ordinary("latency", KeySpec::NONE),
    ordinary("lolwut", KeySpec::NONE),
    ordinary("role", KeySpec::NONE),
    ordinary("save", KeySpec::NONE),
    ordinary("bgsave", KeySpec::NONE),
    ordinary("bgrewriteaof", KeySpec::NONE),
    ordinary("swapdb", KeySpec::NONE),
    ordinary("randomkey", KeySpec::NONE),
    ordinary("function", KeySpec::NONE),
    ordinary("cluster", KeySpec::NONE),
    ordinary("shutdown", KeySpec::NONE),
    ordinary("failover", KeySpec::NONE),
    ordinary("move", ONE),
    ordinary("pfdebug", keys(2, 2, 1)),
    ordinary("pfselftest", KeySpec::NONE),
    ordinary("spublish", ONE),
];

/// Commands whose only key is the first argument.
const SINGLE_KEY_COMMANDS: &[&str] = &[
    "get",
    "set",
    "setnx",
    "setex",
    "psetex",
    "getset",
    "getex",
    "append",
    "strlen",
    "incr",
    "decr",
    "incrby",
    "decrby",
    "incrbyfloat",
    "getrange",
    "setrange",
    "substr",
    "getbit",
    "setbit",
    "bitcount",
    "bitpos",
    "bitfield",
    "bitfield_ro",
    "expire",
    "pexpire",
    "expireat",
    "pexpireat",
    "expiretime",
    "pexpiretime",
    "ttl",
    "pttl",
    "persist",
    "type",
    "dump",
    "restore",
    "object",
    "lpush",
    "rpush",
    "lpushx",
    "rpushx",
    "lpop",
    "rpop",
    "llen",
    "lrange",
    "lindex",
    "lset",
    "linsert",
    "lrem",
    "ltrim",
    "lpos",
    "sadd",
    "srem",
    "smembers",
    "sismember",
    "smismember",
    "scard",
    "spop",
    "srandmember",
    "sscan",
    "hset",
    "hsetnx",
    "hget",
    "hmset",
    "hmget",
    "hdel",
    "hlen",
    "hstrlen",
    "hkeys",
    "hvals",
    "hgetall",
    "hexists",
    "hincrby",
    "hincrbyfloat",
    "hrandfield",
    "hscan",
    "zadd",
    "zincrby",
    "zrem",
    "zcard",
    "zcount",
    "zlexcount",
    "zrange",
    "zrangebyscore",
    "zrangebylex",
    "zrevrange",
    "zrevrangebyscore",
    "zrevrangebylex",
    "zrank",
    "zrevrank",
    "zscore",
    "zmscore",
    "zremrangebyrank",
    "zremrangebyscore",
    "zremrangebylex",
    "zpopmin",
    "zpopmax",
    "zrandmember",
    "zscan",
    "pfadd",
    "geoadd",
    "geodist",
    "geohash",
    "geopos",
    "georadius",
    "georadiusbymember",
    "geosearch",
    "xadd",
    "xlen",
    "xrange",
    "xrevrange",
    "xdel",
    "xtrim",
    "xack",
    "xclaim",
    "xautoclaim",
    "xpending",
    "xsetid",
    "sort",
    "sort_ro",
    "lcs",
];

/// The commands of the table that Redis flags `write` (COMMAND INFO), whose keys (at the
/// table's key positions) are matched against the `on_write` templates of hooks. Commands whose
/// keys come after a count (ZUNIONSTORE, LMPOP...) have no key positions in the table and so
/// trigger no hook.
const WRITE_COMMANDS: &[&str] = &[
    "append",
    "bitfield",
    "bitop",
    "blmove",
    "blpop",
    "brpop",
    "brpoplpush",
    "bzpopmax",
    "bzpopmin",
    "copy",
    "decr",
    "decrby",
    "del",
    "expire",
    "expireat",
    "geoadd",
    "geosearchstore",
    "getdel",
    "getex",
    "getset",
    "hdel",
    "hincrby",
    "hincrbyfloat",
    "hmset",
    "hset",
    "hsetnx",
    "incr",
    "incrby",
    "incrbyfloat",
    "linsert",
    "lmove",
    "lpop",
    "lpush",
    "lpushx",
    "lrem",
    "lset",
    "ltrim",
    "move",
    "mset",
    "msetnx",
    "persist",
    "pexpire",
    "pexpireat",
    "pfadd",
    "pfmerge",
    "psetex",
    "removekeys",
    "rename",
    "renamenx",
    "restore",
    "rpop",
    "rpoplpush",
    "rpush",
    "rpushx",
    "sadd",
    "sdiffstore",
    "set",
    "setbit",
    "setex",
    "setnx",
    "setrange",
    "sinterstore",
    "smove",
    "sort",
    "spop",
    "srem",
    "sunionstore",
    "unlink",
    "xack",
    "xadd",
    "xautoclaim",
    "xclaim",
    "xdel",
    "xsetid",
    "xtrim",
    "zadd",
    "zincrby",
    "zpopmax",
    "zpopmin",
    "zrem",
    "zremrangebylex",
    "zremrangebyrank",
    "zremrangebyscore",
];

/// The id of every command that is not in the table, and its name in metrics.
pub const OTHER: u16 = 0;
const OTHER_NAME: &str = "other";

/// The built table: specs by lowercase name, hashed with FNV-1a ([`crate::fnv`]: fixed at
/// start-up, short keys), and the names by id.
struct Table {
    by_name: HashMap<&'static [u8], CommandSpec, crate::fnv::BuildFnv>,
    /// `names[id]`; `names[0]` is [`OTHER_NAME`].
    names: Vec<&'static str>,
}

fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut by_name = HashMap::with_capacity_and_hasher(
            SPECIAL_COMMANDS.len() + SINGLE_KEY_COMMANDS.len(),
            Default::default(),
        );
        for &name in SINGLE_KEY_COMMANDS {
            by_name.insert(name.as_bytes(), ordinary(name, ONE));
        }
        for s in SPECIAL_COMMANDS {
            by_name.insert(s.name.as_bytes(), *s);
        }
        for &name in WRITE_COMMANDS {
            if let Some(spec) = by_name.get_mut(name.as_bytes()) {
                spec.writes = true;
            }
        }
        let mut names: Vec<&'static str> = by_name.values().map(|s| s.name).collect();
        names.sort_unstable();
        names.insert(0, OTHER_NAME);
        for (id, name) in names.iter().enumerate().skip(1) {
            if let Some(spec) = by_name.get_mut(name.as_bytes()) {
                spec.id = id as u16;
            }
        }
        Table { by_name, names }
    })
}

/// Every command's name by id ([`CommandSpec::id`]), `"other"` first: the bounded set of
/// `command` labels in metrics.
pub fn names() -> &'static [&'static str] {
    &table().names
}

/// The id of a looked-up command, [`OTHER`] when it is not in the table.
pub fn id_of(spec: Option<&CommandSpec>) -> u16 {
    spec.map_or(OTHER, |s| s.id)
}

/// Longest command name looked up; longer names are not in the table.
const MAX_NAME_LEN: usize = 32;

/// A command or subcommand name as Redis matches it: Redis compares names with `strcasecmp`,
/// which stops at the first NUL byte, so `DEL\0xyz` can run as DEL. keyward cuts the name
/// there too, so that the guard sees what Redis may run.
pub fn effective_name(name: &[u8]) -> &[u8] {
    match name.iter().position(|&b| b == 0) {
        Some(end) => &name[..end],
        None => name,
    }
}

/// Finds a command by name, in any letter case, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    let name = effective_name(name);
    if name.len() > MAX_NAME_LEN {
        return None;
    }
    let mut lower = [0u8; MAX_NAME_LEN];
    for (dst, src) in lower.iter_mut().zip(name) {
        *dst = src.to_ascii_lowercase();
    }
    table().by_name.get(&lower[..name.len()])
}

/// The last command name a session looked up, and the answer: [`lookup`] for a name that
/// repeats, as names do in a pipeline or a client's steady traffic, at the cost of comparing a
/// few bytes. A table lookup (NUL cut, lowercasing, hashing, probing) was about 190
/// instructions, 8% of a pipelined GET's (callgrind). The cache compares the name's exact
/// bytes, so it answers exactly as [`lookup`] would.
#[derive(Debug, Default)]
pub struct LookupCache {
    name: [u8; CACHED_NAME_LEN],
    /// Length of `name`; 0 while nothing is cached (an empty name is never cached).
    len: usize,
    spec: Option<&'static CommandSpec>,
}

/// Longest name the cache keeps (longer ones are looked up every time); every name in the
/// table is shorter.
const CACHED_NAME_LEN: usize = 24;

impl LookupCache {
    pub fn lookup(&mut self, name: &[u8]) -> Option<&'static CommandSpec> {
        if self.len != 0 && name.len() == self.len && name == &self.name[..self.len] {
            return self.spec;
        }
        let spec = lookup(name);
        if !name.is_empty() && name.len() <= CACHED_NAME_LEN {
            self.name[..name.len()].copy_from_slice(name);
            self.len = name.len();
            self.spec = spec;
        }
        spec
    }
}

/// The arguments naming the keys that a request removes from this server, per its
/// [`Removes`]; empty for a command that removes nothing by name.
pub fn removed_keys<'a>(spec: &CommandSpec, args: Args<'a>) -> Args<'a> {
    match spec.removes {
        Removes::Nothing => args.range(0..0),
        Removes::Keys => args.range(spec.keys.span(args.len())),
        Removes::Migrate => migrated_keys(args),
    }
}

/// The keys `MIGRATE host port key|"" db timeout [COPY] [REPLACE] [AUTH pw] [AUTH2 user pw]
/// [KEYS key...]` moves away. The options are read as Redis reads them (`migrateCommand`):
/// from argument 6 on, `AUTH` takes one value and `AUTH2` two, whatever they say (a password
/// may well be "COPY" or "KEYS"), and `KEYS` makes every later argument a key. Option names
/// are compared like Redis compares them: any letter case, up to a NUL byte.
///
/// With `COPY` the keys stay, so there is nothing to check; but an option keyward does not
/// know (from a newer Redis) might take a value that looks like `COPY`, so then `COPY` is not
/// believed and the keys are checked anyway. Requests Redis rejects (the key and `KEYS` both
/// given, too few arguments) may be checked or not: they remove nothing.
fn migrated_keys(args: Args<'_>) -> Args<'_> {
    let none = args.range(0..0);
    if args.len() < 6 {
        return none;
    }
    let mut keys = if args[3].is_empty() {
        none
    } else {
        args.range(3..4)
    };
    let mut copy = false;
    let mut understood = true;
    let mut i = 6;
    while i < args.len() {
        let option = effective_name(&args[i]);
        if option.eq_ignore_ascii_case(b"copy") {
            copy = true;
        } else if option.eq_ignore_ascii_case(b"auth") {
            i += 1;
        } else if option.eq_ignore_ascii_case(b"auth2") {
            i += 2;
        } else if option.eq_ignore_ascii_case(b"keys") {
            keys = args.from(i + 1);
            break;
        } else if !option.eq_ignore_ascii_case(b"replace") {
            understood = false;
        }
        i += 1;
    }
    if copy && understood { none } else { keys }
}

impl CommandSpec {
    /// Whether a request of this command may share a pipelined upstream connection with other
    /// clients' requests: only commands keyward knows to leave no state on the connection and
    /// to answer at once. What is not in the table might block or leave state, so it does not.
    pub fn shares_connection(spec: Option<&CommandSpec>) -> bool {
        spec.is_some_and(|s| {
            !s.stateful
                && !s.blocking
                && matches!(
                    s.role,
                    Role::Ordinary
                        | Role::Delete
                        | Role::RemoveKeys
                        | Role::RemoveKeysPreview
                        | Role::Ping
                )
        })
    }

    /// Whether this request changes how a new connection logs in to Redis (see
    /// [`CommandSpec::changes_login_of`]).
    pub fn changes_login(&self, args: Args<'_>) -> bool {
        if self.changes_login_of.is_empty() {
            return false;
        }
        let Some(sub) = args.get(1).map(effective_name) else {
            return false;
        };
        self.changes_login_of.iter().any(|change| {
            sub.eq_ignore_ascii_case(change.subcommand.as_bytes())
                && (change.parameters.is_empty()
                    || (2..args.len()).step_by(2).any(|i| {
                        change
                            .parameters
                            .iter()
                            .any(|p| args[i].eq_ignore_ascii_case(p.as_bytes()))
                    }))
        })
    }
}

/// A request that does what another subcommand of its command does, through an option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubcommandAlias {
    /// The subcommand it acts as, uppercase (as `deny_commands` entries are kept).
    pub subcommand: &'static str,
    /// The request as a refusal names it.
    pub shown_as: &'static str,
    /// What it does like that subcommand, for a refusal's message.
    pub does: &'static str,
}

/// `FUNCTION RESTORE payload FLUSH` flushes every library, as `FUNCTION FLUSH` does, before it
/// restores: a rule about `FUNCTION FLUSH` must see it as one. Names are read as Redis reads
/// them (any letter case, up to a NUL byte).
pub fn acts_as_subcommand(args: Args<'_>) -> Option<SubcommandAlias> {
    let is = |i: usize, name: &str| {
        args.get(i)
            .is_some_and(|a| effective_name(a).eq_ignore_ascii_case(name.as_bytes()))
    };
    (is(0, "function") && is(1, "restore") && is(3, "flush")).then_some(SubcommandAlias {
        subcommand: "FLUSH",
        shown_as: "FUNCTION RESTORE ... FLUSH",
        does: "flushes",
    })
}

/// The `CLIENT` subcommands keyward keeps or refuses itself in a cluster, and `REPLY`, which
/// changes whether replies come at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientSubcommand {
    /// `CLIENT SETNAME name`.
    SetName,
    /// `CLIENT GETNAME`.
    GetName,
    /// `CLIENT REPLY ON|OFF|SKIP` (see [`reply_switch`]).
    Reply,
    /// `CLIENT TRACKING ...`: client-side caching.
    Tracking,
    /// `CLIENT CACHING ...`: client-side caching.
    Caching,
    /// `CLIENT ID`.
    Id,
    /// `CLIENT UNBLOCK id [TIMEOUT|ERROR]`.
    Unblock,
    /// `CLIENT LIST [TYPE type] [ID id ...]`.
    List,
    /// `CLIENT INFO`.
    Info,
    /// Anything else (or a known subcommand with the wrong number of arguments).
    Other,
}

/// Which `CLIENT` subcommand a request is, with the argument count Redis accepts for it (the
/// name compared as Redis compares it: any letter case, up to a NUL byte).
pub fn client_subcommand(args: Args<'_>) -> ClientSubcommand {
    let Some(sub) = args.get(1) else {
        return ClientSubcommand::Other;
    };
    let sub = effective_name(sub);
    let is = |name: &str| sub.eq_ignore_ascii_case(name.as_bytes());
    match args.len() {
        3 if is("setname") => ClientSubcommand::SetName,
        2 if is("getname") => ClientSubcommand::GetName,
        3 if is("reply") => ClientSubcommand::Reply,
        _ if is("tracking") => ClientSubcommand::Tracking,
        _ if is("caching") => ClientSubcommand::Caching,
        2 if is("id") => ClientSubcommand::Id,
        3 | 4 if is("unblock") => ClientSubcommand::Unblock,
        _ if is("list") => ClientSubcommand::List,
        2 if is("info") => ClientSubcommand::Info,
        _ => ClientSubcommand::Other,
    }
}

/// The argument of `CLIENT REPLY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplySwitch {
    On,
    Off,
    Skip,
}

/// Reads `CLIENT REPLY`'s argument as Redis does (`strcasecmp`, which stops at a NUL byte:
/// `OFF\0x` is OFF); None for anything else, which Redis answers with a syntax error.
pub fn reply_switch(arg: &[u8]) -> Option<ReplySwitch> {
    let arg = effective_name(arg);
    if arg.eq_ignore_ascii_case(b"on") {
        Some(ReplySwitch::On)
    } else if arg.eq_ignore_ascii_case(b"off") {
        Some(ReplySwitch::Off)
    } else if arg.eq_ignore_ascii_case(b"skip") {
        Some(ReplySwitch::Skip)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::request::Request;

    fn request(args: &[&str]) -> Request {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        Request::from_args(&args)
    }

    #[test]
    fn every_write_command_is_in_the_table_and_has_keys() {
        for name in WRITE_COMMANDS {
            let spec = lookup(name.as_bytes()).unwrap_or_else(|| panic!("{name} not in the table"));
            assert!(spec.writes, "{name}");
            assert!(
                spec.keys.positions(4).next().is_some(),
                "{name} has no key positions"
            );
        }
        assert!(!lookup(b"GET").unwrap().writes);
    }

    #[test]
    fn client_subcommands_are_read_as_redis_reads_them() {
        let sub = |args: &[&str]| client_subcommand(request(args).args());
        assert_eq!(sub(&["CLIENT", "SETNAME", "n"]), ClientSubcommand::SetName);
        assert_eq!(sub(&["client", "getname"]), ClientSubcommand::GetName);
        // Redis's strcasecmp stops at a NUL byte.
        assert_eq!(sub(&["CLIENT", "reply\0x", "OFF"]), ClientSubcommand::Reply);
        assert_eq!(sub(&["CLIENT", "Reply", "OFF"]), ClientSubcommand::Reply);
        assert_eq!(
            sub(&["CLIENT", "TRACKING", "on", "BCAST"]),
            ClientSubcommand::Tracking
        );
        // Wrong arity: Redis answers its own error.
        assert_eq!(sub(&["CLIENT", "SETNAME"]), ClientSubcommand::Other);
        assert_eq!(sub(&["CLIENT", "GETNAME", "x"]), ClientSubcommand::Other);
        assert_eq!(sub(&["CLIENT"]), ClientSubcommand::Other);
        assert_eq!(reply_switch(b"Off"), Some(ReplySwitch::Off));
        assert_eq!(reply_switch(b"SKIP\0anything"), Some(ReplySwitch::Skip));
        assert_eq!(reply_switch(b"maybe"), None);
    }

    #[test]
    fn only_known_stateless_commands_share_a_connection() {
        let shares = |name: &str| CommandSpec::shares_connection(lookup(name.as_bytes()));
        for name in ["get", "set", "del", "removekeys", "ping", "eval", "config"] {
            assert!(shares(name), "{name}");
        }
        for name in [
            "select",
            "multi",
            "exec",
            "watch",
            "blpop",
            "subscribe",
            "client",
            "hello",
            "auth",
            "reset",
            "monitor",
            "script",
            "no-such-module.command",
        ] {
            assert!(!shares(name), "{name}");
        }
    }

    #[test]
    fn login_changes_are_config_set_and_acl_user_changes() {
        let changes = |args: &[&str]| {
            let r = request(args);
            lookup(&r.args()[0]).is_some_and(|s| s.changes_login(r.args()))
        };
        assert!(changes(&["CONFIG", "SET", "requirepass", ""]));
        assert!(changes(&["config", "set\0x", "REQUIREPASS", ""]));
        assert!(changes(&[
            "CONFIG",
            "SET",
            "maxmemory",
            "1",
            "requirepass",
            "x"
        ]));
        assert!(!changes(&["CONFIG", "SET", "maxmemory", "1mb"]));
        assert!(
            !changes(&["CONFIG", "SET", "maxmemory", "requirepass"]),
            "a value is no name"
        );
        assert!(changes(&["ACL", "SETUSER", "u", "on"]));
        assert!(changes(&["acl", "deluser", "u"]));
        assert!(changes(&["ACL", "LOAD"]));
        assert!(!changes(&["CONFIG", "GET", "requirepass"]));
        assert!(!changes(&["ACL", "WHOAMI"]));
        assert!(!changes(&["SET", "k", "v"]));
    }

    #[test]
    fn the_lookup_cache_answers_as_the_table() {
        let mut cache = LookupCache::default();
        for name in [
            &b"GET"[..],
            b"GET",
            b"get",
            b"GET\0x",
            b"GETX",
            b"",
            b"removekeys",
            b"REMOVEKEYS",
            b"nosuchcommand",
            b"nosuchcommand",
            b"a-name-longer-than-the-cache-keeps",
            b"GET",
        ] {
            assert_eq!(
                cache.lookup(name).map(|s| s.name),
                lookup(name).map(|s| s.name),
                "{:?}",
                String::from_utf8_lossy(name)
            );
        }
    }

    #[test]
    fn lookup_ignores_letter_case() {
        assert_eq!(lookup(b"DeL").unwrap().role, Role::Delete);
        assert_eq!(lookup(b"REMOVEKEYS").unwrap().role, Role::RemoveKeys);
        assert_eq!(lookup(b"get").unwrap().keys, ONE);
        assert!(lookup(b"no-such-command").is_none());
        // Redis stops comparing names at a NUL byte; so does keyward.
        assert_eq!(lookup(b"DEL\x00245").unwrap().role, Role::Delete);
        assert_eq!(lookup(b"replconf").unwrap().role, Role::Replication);
        assert!(lookup(b"xread").unwrap().blocking && lookup(b"blmpop").unwrap().blocking);
        assert!(lookup(&[b'a'; 100]).is_none());
        assert!(lookup(b"\xff\xfe").is_none());
    }

    #[test]
    fn key_positions_follow_first_last_step() {
        let pos = |k: KeySpec, argc| k.positions(argc).collect::<Vec<_>>();
        assert_eq!(pos(ALL, 4), vec![1, 2, 3]);
        assert_eq!(pos(ONE, 3), vec![1]);
        assert_eq!(pos(keys(1, -1, 2), 5), vec![1, 3]);
        assert_eq!(pos(keys(1, -2, 1), 4), vec![1, 2]);
        assert_eq!(pos(keys(2, -1, 1), 5), vec![2, 3, 4]);
        assert_eq!(pos(KeySpec::NONE, 3), Vec::<usize>::new());
        assert_eq!(pos(ALL, 1), Vec::<usize>::new());
        assert_eq!(pos(ONE, 1), Vec::<usize>::new());
    }

    #[test]
    fn every_removing_command_is_a_guarded_role_with_contiguous_keys() {
        for spec in table().by_name.values() {
            let guarded = matches!(
                spec.role,
                Role::Delete | Role::RemoveKeys | Role::RemoveKeysPreview
            );
            assert_eq!(guarded, spec.removes != Removes::Nothing, "{}", spec.name);
            if spec.removes == Removes::Keys {
                assert_eq!(spec.keys.step, 1, "{}", spec.name);
            }
        }
        let names: Vec<&str> = {
            let mut v: Vec<&str> = table()
                .by_name
                .values()
                .filter(|s| s.removes != Removes::Nothing)
                .map(|s| s.name)
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(
            names,
            [
                "del",
                "getdel",
                "migrate",
                "removekeys",
                "removekeys.preview",
                "unlink"
            ]
        );
    }

    #[test]
    fn removed_keys_of_each_form() {
        let removed = |words: &[&str]| -> Vec<String> {
            let request = Request::from_args(words);
            removed_keys(lookup(words[0].as_bytes()).unwrap(), request.args())
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect()
        };
        assert_eq!(removed(&["DEL", "a", "b"]), ["a", "b"]);
        assert_eq!(removed(&["DEL"]), Vec::<String>::new());
        assert_eq!(removed(&["GETDEL", "a"]), ["a"]);
        assert_eq!(removed(&["GETDEL"]), Vec::<String>::new());
        assert_eq!(removed(&["GET", "a"]), Vec::<String>::new());
        assert_eq!(removed(&["MIGRATE", "h", "1", "k", "0", "9"]), ["k"]);
        assert_eq!(
            removed(&[
                "MIGRATE", "h", "1", "", "0", "9", "AUTH2", "u", "p", "KEYS", "a", "b"
            ]),
            ["a", "b"]
        );
        assert_eq!(
            removed(&["MIGRATE", "h", "1", "", "0", "9", "COPY", "KEYS", "a"]),
            Vec::<String>::new()
        );
        assert_eq!(
            removed(&["MIGRATE", "h", "1", "", "0", "9", "AUTH"]),
            Vec::<String>::new()
        );
        assert_eq!(
            removed(&["MIGRATE", "h", "1", "", "0", "9", "KEYS"]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn state_changing_commands_are_marked() {
        for name in [
            "select",
            "auth",
            "hello",
            "multi",
            "watch",
            "subscribe",
            "client",
        ] {
            assert!(lookup(name.as_bytes()).unwrap().stateful, "{name}");
        }
        assert!(!lookup(b"get").unwrap().stateful);
        assert!(lookup(b"blpop").unwrap().blocking);
    }
}
