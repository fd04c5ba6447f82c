//! The delete guard: a pure function from a request to a verdict.
//!
//! The guard never does I/O. The session asks it about every request and acts on the verdict:
//! forward the bytes untouched, rewrite `REMOVEKEYS` into the configured delete command, or answer
//! with an error and send nothing upstream. Because every key is checked before anything is sent,
//! a refused request never leaves a partial deletion behind.

use crate::commands::{self, CommandSpec, Role};
use crate::prefix_table::PrefixTable;
use crate::printable::printable_key;
use crate::protocol::args::Args;

// ---------------------------------------------------------------------------------------------
// Settings: `[guard]` in proxy.toml. They live here, with the only code that reads them, so that
// the guard does not depend on the configuration loader; `config` assembles them.
// ---------------------------------------------------------------------------------------------

/// What `REMOVEKEYS` becomes upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteCommand {
    Unlink,
    Del,
}

impl DeleteCommand {
    pub fn name(self) -> &'static str {
        match self {
            DeleteCommand::Unlink => "UNLINK",
            DeleteCommand::Del => "DEL",
        }
    }
}

impl std::str::FromStr for DeleteCommand {
    type Err = String;

    /// Case-insensitive: `UNLINK` or `DEL`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("UNLINK") {
            Ok(DeleteCommand::Unlink)
        } else if s.eq_ignore_ascii_case("DEL") {
            Ok(DeleteCommand::Del)
        } else {
            Err(format!(
                "unknown delete command `{s}`, expected \"UNLINK\" or \"DEL\""
            ))
        }
    }
}

/// Whether the guard's refusals are carried out (`[guard] mode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GuardMode {
    /// Refused requests are answered with an error and never reach Redis.
    #[default]
    Enforce,
    /// Refused requests are logged (`would refuse: <rule>`) and forwarded as if allowed, so that
    /// an operator can learn what the rules would stop in front of a running application before
    /// turning them on.
    DryRun,
}

impl GuardMode {
    /// The spelling used in `proxy.toml` and `--guard-mode`.
    pub fn name(self) -> &'static str {
        match self {
            GuardMode::Enforce => "enforce",
            GuardMode::DryRun => "dry-run",
        }
    }
}

impl std::str::FromStr for GuardMode {
    type Err = String;

    /// Case-insensitive: `enforce` or `dry-run`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("enforce") {
            Ok(GuardMode::Enforce)
        } else if s.eq_ignore_ascii_case("dry-run") {
            Ok(GuardMode::DryRun)
        } else {
            Err(format!(
                "unknown guard mode `{s}`, expected \"enforce\" or \"dry-run\""
            ))
        }
    }
}

/// The commands refused by default (`[guard] deny_commands`): each makes a whole database, or
/// the whole dataset, disappear or be replaced in one call, and applications do not send them
/// in normal operation. README ("What the guard does and does not cover") gives the reasons.
pub const DEFAULT_DENY_COMMANDS: &[&str] = &[
    "FLUSHALL",
    "FLUSHDB",
    "SWAPDB",
    "FUNCTION FLUSH",
    "REPLICAOF",
    "SLAVEOF",
    "SHUTDOWN",
    "DEBUG",
];

/// `[guard]`, validated: `config` checks the values and upper-cases `deny_commands` before the
/// guard sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardConfig {
    pub mode: GuardMode,
    pub max_keys: usize,
    pub wildcard_chars: String,
    pub delete_command: DeleteCommand,
    pub deny_commands: Vec<String>,
    /// Keys under these prefixes are never deleted, but by users with
    /// `bypass_protected_prefixes`.
    pub protected_prefixes: Vec<String>,
    /// Keys one user (or one client address, without authentication) may delete per second;
    /// None: no limit. A user's own setting overrides it.
    pub max_deleted_keys_per_second: Option<u64>,
}

/// The built-in defaults, the ones `proxy.toml` in the repository writes out.
impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            mode: GuardMode::Enforce,
            max_keys: 1000,
            wildcard_chars: "*?[".into(),
            delete_command: DeleteCommand::Unlink,
            deny_commands: DEFAULT_DENY_COMMANDS
                .iter()
                .map(|c| c.to_string())
                .collect(),
            protected_prefixes: Vec::new(),
            max_deleted_keys_per_second: None,
        }
    }
}

/// What a client's login allows it beyond the rules that bind everyone: its keyward user's
/// settings (`[[server.users]]`), prepared once per (re)load.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Rights {
    /// May run the commands in `deny_commands`.
    pub bypass_deny_commands: bool,
    /// May delete keys under `protected_prefixes`.
    pub bypass_protected_prefixes: bool,
    /// May delete only keys under these prefixes (`delete_prefixes`); None: any key.
    pub delete_scope: Option<DeleteScope>,
    /// Overrides `[guard] max_deleted_keys_per_second` for this user.
    pub max_deleted_keys_per_second: Option<u64>,
}

/// The rights of a client that has none of its own: keyward does not authenticate, or the
/// client has not logged in.
pub static NO_RIGHTS: Rights = Rights {
    bypass_deny_commands: false,
    bypass_protected_prefixes: false,
    delete_scope: None,
    max_deleted_keys_per_second: None,
};

/// A user's `delete_prefixes`, with their prefix table.
#[derive(Debug, Clone)]
pub struct DeleteScope {
    prefixes: Vec<String>,
    table: PrefixTable<()>,
}

impl DeleteScope {
    pub fn new(prefixes: &[String]) -> Self {
        let mut table = PrefixTable::default();
        for p in prefixes {
            table.insert(p.as_bytes(), ());
        }
        DeleteScope {
            prefixes: prefixes.to_vec(),
            table,
        }
    }

    fn allows(&self, key: &[u8]) -> bool {
        self.table.first_match(key).is_some()
    }
}

impl PartialEq for DeleteScope {
    fn eq(&self, other: &Self) -> bool {
        self.prefixes == other.prefixes
    }
}

impl Eq for DeleteScope {}

// ---------------------------------------------------------------------------------------------
// The policy.
// ---------------------------------------------------------------------------------------------

/// The guard's settings, prepared once from [`GuardConfig`] so that the per-request check does
/// no parsing or allocation.
#[derive(Debug, Clone)]
pub struct GuardPolicy {
    mode: GuardMode,
    max_keys: usize,
    /// A 256-entry lookup table: `wildcard[b]` is true when byte `b` makes a key a wildcard.
    wildcard: [bool; 256],
    /// The same bytes, each once.
    wildcard_bytes: Vec<u8>,
    wildcard_chars: String,
    delete_command: DeleteCommand,
    /// Uppercased `NAME` or `NAME SUBCOMMAND` entries.
    deny: Vec<DenyEntry>,
    /// Bit `n` set when a deny entry's command name is `n` bytes long (bit 63: 63 or more): most
    /// requests (GET, SET...) have a length no entry has and skip the list without comparing.
    deny_lengths: u64,
    /// `protected_prefixes`, as written, and their table (values: positions in the list).
    protected: Vec<String>,
    protected_table: PrefixTable<usize>,
    max_deleted_keys_per_second: Option<u64>,
}

/// The bit of [`GuardPolicy::deny_lengths`] for a name of `len` bytes.
fn length_bit(len: usize) -> u64 {
    1 << len.min(63)
}

#[derive(Debug, Clone)]
struct DenyEntry {
    command: Vec<u8>,
    subcommand: Option<Vec<u8>>,
    /// The entry as written in the configuration, for the error message.
    label: String,
}

/// Which rule refused a request; also used in the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Wildcard,
    MaxKeys,
    DenyCommands,
    Arity,
    ProtectedPrefixes,
    DeletePrefixes,
    RateLimit,
}

impl Rule {
    /// Every rule, in the order the guard applies them (the first that fails is named).
    pub const ORDER: [Rule; 7] = [
        Rule::DenyCommands,
        Rule::Arity,
        Rule::MaxKeys,
        Rule::Wildcard,
        Rule::ProtectedPrefixes,
        Rule::DeletePrefixes,
        Rule::RateLimit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Rule::Wildcard => "wildcard_chars",
            Rule::MaxKeys => "max_keys",
            Rule::DenyCommands => "deny_commands",
            Rule::Arity => "arity",
            Rule::ProtectedPrefixes => "protected_prefixes",
            Rule::DeletePrefixes => "delete_prefixes",
            Rule::RateLimit => "rate_limit",
        }
    }
}

/// A refusal: the rule and the error line sent to the client (without `-` and CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: Rule,
    pub message: String,
    /// The key that broke the rule, shown safely, when one key did (`wildcard_chars`).
    pub key: Option<String>,
}

/// What the session does with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send the request upstream as it is.
    Forward,
    /// Send `command key...` upstream in place of the client's `REMOVEKEYS key...`.
    Rewrite(DeleteCommand),
    /// Answer with an error; send nothing.
    Refuse(Refusal),
    /// Dry run: the request breaks `rule` and is sent upstream anyway, as an allowed one would
    /// be (`rename`: the delete command a `REMOVEKEYS` becomes).
    WouldRefuse {
        rule: Rule,
        rename: Option<DeleteCommand>,
    },
}

impl GuardPolicy {
    pub fn new(config: &GuardConfig) -> Self {
        let mut wildcard = [false; 256];
        let mut wildcard_bytes = Vec::new();
        for b in config.wildcard_chars.bytes() {
            if !wildcard[b as usize] {
                wildcard_bytes.push(b);
            }
            wildcard[b as usize] = true;
        }
        let deny = config
            .deny_commands
            .iter()
            .map(|entry| {
                let mut words = entry.split_whitespace();
                let command = words.next().unwrap_or("").to_ascii_uppercase().into_bytes();
                let subcommand = words.next().map(|s| s.to_ascii_uppercase().into_bytes());
                DenyEntry {
                    command,
                    subcommand,
                    label: entry.to_ascii_uppercase(),
                }
            })
            .collect::<Vec<DenyEntry>>();
        let deny_lengths = deny
            .iter()
            .fold(0, |bits, entry| bits | length_bit(entry.command.len()));
        let mut protected_table = PrefixTable::default();
        for (i, prefix) in config.protected_prefixes.iter().enumerate() {
            protected_table.insert(prefix.as_bytes(), i);
        }
        GuardPolicy {
            mode: config.mode,
            max_keys: config.max_keys,
            wildcard,
            wildcard_bytes,
            wildcard_chars: config.wildcard_chars.clone(),
            delete_command: config.delete_command,
            deny,
            deny_lengths,
            protected: config.protected_prefixes.clone(),
            protected_table,
            max_deleted_keys_per_second: config.max_deleted_keys_per_second,
        }
    }

    /// Whether the guard refuses or only logs (`[guard] mode`).
    pub fn mode(&self) -> GuardMode {
        self.mode
    }

    /// The delete rate for a client with `rights`: its user's own, else `[guard]`'s.
    pub fn delete_rate(&self, rights: &Rights) -> Option<u64> {
        rights
            .max_deleted_keys_per_second
            .or(self.max_deleted_keys_per_second)
    }

    /// The most keys one request may name (`max_keys`).
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }

    /// Decides what happens to one request. `args[0]` is the command name as the client sent it;
    /// `spec` is its entry in the command table, if any.
    pub fn check(&self, spec: Option<&CommandSpec>, args: Args<'_>) -> Verdict {
        self.check_as(spec, args, &NO_RIGHTS)
    }

    /// [`check`](Self::check) for a client with `rights` (its keyward user's: the bypasses and
    /// the delete scope).
    ///
    /// In dry-run mode a refusal by any rule but `arity` becomes [`Verdict::WouldRefuse`]; a
    /// `REMOVEKEYS` without keys is still refused, since no command it could become would be a
    /// valid request. The rate limit is not the guard's: it keeps state ([`crate::rate_limit`]).
    pub fn check_as(&self, spec: Option<&CommandSpec>, args: Args<'_>, rights: &Rights) -> Verdict {
        let verdict = self.enforced(spec, args, rights);
        match verdict {
            Verdict::Refuse(refusal)
                if self.mode == GuardMode::DryRun && refusal.rule != Rule::Arity =>
            {
                let removes_keys = spec.is_some_and(|s| s.role == Role::RemoveKeys);
                // Dry run: `rename` says what a REMOVEKEYS is sent as.
                Verdict::WouldRefuse {
                    rule: refusal.rule,
                    rename: removes_keys.then_some(self.delete_command),
                }
            }
            verdict => verdict,
        }
    }

    /// The verdict in enforce mode.
    fn enforced(&self, spec: Option<&CommandSpec>, args: Args<'_>, rights: &Rights) -> Verdict {
        let Some(name) = args.first() else {
            return Verdict::Forward;
        };
        if !rights.bypass_deny_commands
            && let Some(refusal) = self.denied(name, args)
        {
            return Verdict::Refuse(refusal);
        }
        let Some(spec) = spec else {
            return Verdict::Forward;
        };
        if matches!(spec.role, Role::RemoveKeys | Role::RemoveKeysPreview) && args.len() < 2 {
            return Verdict::Refuse(Refusal {
                rule: Rule::Arity,
                message: "ERR wrong number of arguments for 'removekeys' command".into(),
                key: None,
            });
        }
        // DEL and UNLINK without keys are left to Redis, which answers with its own arity error.
        if let Some(refusal) = self.check_keys(name, commands::removed_keys(spec, args), rights) {
            return Verdict::Refuse(refusal);
        }
        match spec.role {
            Role::RemoveKeys => Verdict::Rewrite(self.delete_command),
            _ => Verdict::Forward,
        }
    }

    /// The `deny_commands` entry that refuses this request, if any. An entry `NAME SUBCOMMAND`
    /// matches the first argument; `FUNCTION FLUSH` also matches `FUNCTION RESTORE payload
    /// FLUSH`, which flushes every library the same way before it restores.
    fn denied(&self, name: &[u8], args: Args<'_>) -> Option<Refusal> {
        let name = commands::effective_name(name);
        if self.deny_lengths & length_bit(name.len()) == 0 {
            return None;
        }
        let first_arg = args.get(1).map(commands::effective_name);
        let alias = commands::acts_as_subcommand(args);
        let acts_as = |sub: &[u8]| alias.is_some_and(|a| a.subcommand.as_bytes() == sub);
        let entry = self.deny.iter().find(|entry| {
            name.eq_ignore_ascii_case(&entry.command)
                && match &entry.subcommand {
                    None => true,
                    Some(sub) => {
                        first_arg.is_some_and(|a| a.eq_ignore_ascii_case(sub)) || acts_as(sub)
                    }
                }
        })?;
        let what = match alias {
            Some(alias) if entry.subcommand.as_deref().is_some_and(acts_as) => {
                format!(
                    "{} (it {} like {})",
                    alias.shown_as, alias.does, entry.label
                )
            }
            _ => entry.label.clone(),
        };
        Some(Refusal {
            rule: Rule::DenyCommands,
            message: format!(
                "ERR keyward guard: {what} is denied (rule deny_commands); remove \"{}\" from \
                 [guard] deny_commands in the keyward configuration to allow it",
                entry.label
            ),
            key: None,
        })
    }

    /// Checks the keys of a delete, rule by rule in [`Rule::ORDER`]: the count first (cheap,
    /// and the clearer message when several rules are broken), then every byte of every key
    /// against the wildcard characters, then the protected prefixes and the user's scope.
    fn check_keys(&self, name: &[u8], keys: Args<'_>, rights: &Rights) -> Option<Refusal> {
        if keys.is_empty() {
            return None;
        }
        // For the messages only: not made unless the request is refused.
        let command =
            || String::from_utf8_lossy(commands::effective_name(name)).to_ascii_uppercase();
        if keys.len() > self.max_keys {
            let command = command();
            return Some(Refusal {
                rule: Rule::MaxKeys,
                message: format!(
                    "ERR keyward guard: {command} refused, {} keys exceed the limit of {} keys per \
                     request (rule max_keys); nothing was deleted; send the keys in batches of at \
                     most {}",
                    keys.len(),
                    self.max_keys,
                    self.max_keys
                ),
                key: None,
            });
        }
        self.check_wildcards(keys, &command)
            .or_else(|| self.check_prefixes(keys, &command, rights))
    }

    /// `wildcard_chars`.
    fn check_wildcards(&self, keys: Args<'_>, command: &dyn Fn() -> String) -> Option<Refusal> {
        // One search over the run of bytes that holds all the keys: when it finds nothing, no
        // key holds a wildcard. A find may be in a header between two keys, so only then is
        // each key searched on its own, for the first offending one.
        if keys
            .covering()
            .is_some_and(|all| self.first_wildcard(all).is_none())
        {
            return None;
        }
        for key in keys {
            if let Some(bad) = self.first_wildcard(key) {
                let command = command();
                return Some(Refusal {
                    rule: Rule::Wildcard,
                    message: format!(
                        "ERR keyward guard: {command} refused, key '{}' contains the wildcard \
                         character '{}' (rule wildcard_chars = \"{}\"); nothing was deleted",
                        printable_key(key),
                        bad as char,
                        self.wildcard_chars
                    ),
                    key: Some(printable_key(key)),
                });
            }
        }
        None
    }

    /// `protected_prefixes`, then the user's `delete_prefixes`.
    fn check_prefixes(
        &self,
        keys: Args<'_>,
        command: &dyn Fn() -> String,
        rights: &Rights,
    ) -> Option<Refusal> {
        let table = &self.protected_table;
        // Most deletes name no key whose first byte starts a protected prefix: one table read
        // per key tells, before any key is walked.
        if !rights.bypass_protected_prefixes
            && !table.is_empty()
            && keys.any_first_byte(|first| table.may_match(first))
        {
            for key in keys {
                if let Some(&i) = self.protected_table.first_match(key) {
                    return Some(Refusal {
                        rule: Rule::ProtectedPrefixes,
                        message: format!(
                            "ERR keyward guard: {} refused, key '{}' is under the protected \
                             prefix '{}' (rule protected_prefixes); nothing was deleted",
                            command(),
                            printable_key(key),
                            self.protected[i]
                        ),
                        key: Some(printable_key(key)),
                    });
                }
            }
        }
        if let Some(scope) = &rights.delete_scope {
            for key in keys {
                if !scope.allows(key) {
                    return Some(Refusal {
                        rule: Rule::DeletePrefixes,
                        message: format!(
                            "ERR keyward guard: {} refused, key '{}' is outside this user's \
                             delete scope ({}) (rule delete_prefixes); nothing was deleted",
                            command(),
                            printable_key(key),
                            scope
                                .prefixes
                                .iter()
                                .map(|p| format!("'{p}'"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        key: Some(printable_key(key)),
                    });
                }
            }
        }
        None
    }

    /// The first byte of `bytes` that makes a key a wildcard. With up to three wildcard
    /// characters (the default is `*?[`), `memchr`'s vectorised search; else the lookup table.
    /// A byte-by-byte table search over the keys of a 1000-key delete was an eighth of
    /// keyward's instructions on such a request (callgrind).
    fn first_wildcard(&self, bytes: &[u8]) -> Option<u8> {
        let at = match self.wildcard_bytes.as_slice() {
            [] => None,
            [a] => memchr::memchr(*a, bytes),
            [a, b] => memchr::memchr2(*a, *b, bytes),
            [a, b, c] => memchr::memchr3(*a, *b, *c, bytes),
            _ => bytes.iter().position(|&b| self.wildcard[b as usize]),
        };
        at.map(|i| bytes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands;
    use crate::protocol::request::Request;

    fn policy() -> GuardPolicy {
        GuardPolicy::new(&GuardConfig::default())
    }

    fn verdict(policy: &GuardPolicy, words: &[&[u8]]) -> Verdict {
        let request = Request::from_args(words);
        policy.check(commands::lookup(words[0]), request.args())
    }

    fn refusal(v: Verdict) -> Refusal {
        match v {
            Verdict::Refuse(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn verdict_for(policy: &GuardPolicy, rights: &Rights, words: &[&[u8]]) -> Verdict {
        let request = Request::from_args(words);
        policy.check_as(commands::lookup(words[0]), request.args(), rights)
    }

    fn protecting(prefixes: &[&str]) -> GuardPolicy {
        GuardPolicy::new(&GuardConfig {
            protected_prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
            ..GuardConfig::default()
        })
    }

    #[test]
    fn protected_prefixes_refuse_unless_the_user_may_bypass_them() {
        let p = protecting(&["billing:", "session:"]);
        let r = refusal(verdict(&p, &[b"DEL", b"cache:1", b"session:9"]));
        assert_eq!(r.rule, Rule::ProtectedPrefixes);
        assert_eq!(r.key.as_deref(), Some("session:9"));
        assert!(r.message.contains("'session:'"), "{}", r.message);
        assert_eq!(
            verdict(&p, &[b"UNLINK", b"billing", b"x:billing:1"]),
            Verdict::Forward
        );
        let bypass = Rights {
            bypass_protected_prefixes: true,
            ..Rights::default()
        };
        assert_eq!(
            verdict_for(&p, &bypass, &[b"DEL", b"billing:1"]),
            Verdict::Forward
        );
        // Reads are not deletes.
        assert_eq!(verdict(&p, &[b"GET", b"billing:1"]), Verdict::Forward);
    }

    #[test]
    fn a_delete_scope_allows_only_its_prefixes() {
        let p = policy();
        let scoped = Rights {
            delete_scope: Some(DeleteScope::new(&["cache:".into(), "tmp:".into()])),
            ..Rights::default()
        };
        assert_eq!(
            verdict_for(&p, &scoped, &[b"REMOVEKEYS", b"cache:1", b"tmp:2"]),
            Verdict::Rewrite(DeleteCommand::Unlink)
        );
        let r = refusal(verdict_for(&p, &scoped, &[b"DEL", b"cache:1", b"user:2"]));
        assert_eq!(r.rule, Rule::DeletePrefixes);
        assert_eq!(r.key.as_deref(), Some("user:2"));
    }

    #[test]
    fn the_first_rule_in_order_is_named() {
        let p = GuardPolicy::new(&GuardConfig {
            max_keys: 2,
            protected_prefixes: vec!["b:".into()],
            ..GuardConfig::default()
        });
        let scoped = Rights {
            delete_scope: Some(DeleteScope::new(&["c:".into()])),
            ..Rights::default()
        };
        let rule = |words: &[&[u8]]| refusal(verdict_for(&p, &scoped, words)).rule;
        assert_eq!(rule(&[b"DEL", b"b:*", b"x", b"y"]), Rule::MaxKeys);
        assert_eq!(rule(&[b"DEL", b"b:*", b"x"]), Rule::Wildcard);
        assert_eq!(rule(&[b"DEL", b"x", b"b:1"]), Rule::ProtectedPrefixes);
        assert_eq!(rule(&[b"DEL", b"x", b"c:1"]), Rule::DeletePrefixes);
        assert_eq!(
            Rule::ORDER.iter().position(|r| *r == Rule::RateLimit),
            Some(6)
        );
    }

    #[test]
    fn removekeys_becomes_the_configured_delete_command() {
        let p = policy();
        assert_eq!(
            verdict(&p, &[b"REMOVEKEYS", b"a", b"b"]),
            Verdict::Rewrite(DeleteCommand::Unlink)
        );
        let cfg = GuardConfig {
            delete_command: DeleteCommand::Del,
            ..GuardConfig::default()
        };
        assert_eq!(
            verdict(&GuardPolicy::new(&cfg), &[b"removekeys", b"a"]),
            Verdict::Rewrite(DeleteCommand::Del)
        );
    }

    #[test]
    fn plain_deletes_and_other_commands_are_forwarded() {
        let p = policy();
        assert_eq!(verdict(&p, &[b"DEL", b"a", b"b"]), Verdict::Forward);
        assert_eq!(verdict(&p, &[b"uNlInK", b"a"]), Verdict::Forward);
        assert_eq!(verdict(&p, &[b"GET", b"a*"]), Verdict::Forward);
        assert_eq!(verdict(&p, &[b"KEYS", b"*"]), Verdict::Forward);
        // DEL without keys: Redis answers with its own arity error.
        assert_eq!(verdict(&p, &[b"DEL"]), Verdict::Forward);
    }

    #[test]
    fn any_wildcard_in_any_key_refuses_the_whole_request() {
        let p = policy();
        for cmd in [&b"DEL"[..], b"unlink", b"RemoveKeys"] {
            for bad in [&b"user:*"[..], b"a?c", b"x[ab]", b"*"] {
                let r = refusal(verdict(&p, &[cmd, b"k1", b"k2", b"k3", b"k4", bad]));
                assert_eq!(r.rule, Rule::Wildcard);
                assert!(r.message.contains("wildcard"), "{}", r.message);
                assert!(r.message.contains("nothing was deleted"), "{}", r.message);
                assert!(
                    r.message
                        .contains(&format!("'{}'", String::from_utf8_lossy(bad))),
                    "{}",
                    r.message
                );
                assert!(
                    r.message.starts_with(&format!(
                        "ERR keyward guard: {} refused",
                        String::from_utf8_lossy(cmd).to_ascii_uppercase()
                    )),
                    "{}",
                    r.message
                );
            }
        }
    }

    #[test]
    fn hash_tags_empty_and_binary_keys_are_ordinary() {
        let p = policy();
        assert_eq!(
            verdict(&p, &[b"REMOVEKEYS", b"{user}:1", b"", b"\x00\xff\r\n"]),
            Verdict::Rewrite(DeleteCommand::Unlink)
        );
        assert_eq!(verdict(&p, &[b"DEL", b"{a}", b"]", b"^"]), Verdict::Forward);
    }

    #[test]
    fn the_key_limit_is_inclusive_and_named_in_the_refusal() {
        let p = policy();
        let mut words: Vec<Vec<u8>> = vec![b"DEL".to_vec()];
        words.extend((0..1000).map(|i| format!("k{i}").into_bytes()));
        let a = Request::from_args(&words);
        assert_eq!(
            p.check(commands::lookup(b"DEL"), a.args()),
            Verdict::Forward
        );

        words.push(b"one-too-many".to_vec());
        let a = Request::from_args(&words);
        let r = refusal(p.check(commands::lookup(b"DEL"), a.args()));
        assert_eq!(r.rule, Rule::MaxKeys);
        assert!(r.message.contains("1001 keys"), "{}", r.message);
        assert!(r.message.contains("limit of 1000"), "{}", r.message);
        assert!(r.message.contains("max_keys"), "{}", r.message);
        assert!(r.message.contains("batches"), "{}", r.message);
    }

    #[test]
    fn removekeys_without_keys_is_an_arity_error() {
        let r = refusal(verdict(&policy(), &[b"REMOVEKEYS"]));
        assert_eq!(r.rule, Rule::Arity);
        assert_eq!(
            r.message,
            "ERR wrong number of arguments for 'removekeys' command"
        );
    }

    #[test]
    fn denied_commands_name_the_setting_that_allows_them() {
        let p = policy();
        let r = refusal(verdict(&p, &[b"flushall", b"ASYNC"]));
        assert_eq!(r.rule, Rule::DenyCommands);
        assert!(r.message.contains("FLUSHALL"), "{}", r.message);
        assert!(r.message.contains("deny_commands"), "{}", r.message);
        assert_eq!(refusal(verdict(&p, &[b"FlushDB"])).rule, Rule::DenyCommands);

        let cfg = GuardConfig {
            deny_commands: vec![],
            ..GuardConfig::default()
        };
        assert_eq!(
            verdict(&GuardPolicy::new(&cfg), &[b"FLUSHALL"]),
            Verdict::Forward
        );
    }

    #[test]
    fn deny_entries_may_name_a_subcommand() {
        let cfg = GuardConfig {
            deny_commands: vec!["FUNCTION FLUSH".into(), "EVAL".into()],
            ..GuardConfig::default()
        };
        let p = GuardPolicy::new(&cfg);
        assert_eq!(
            refusal(verdict(&p, &[b"function", b"flush"])).rule,
            Rule::DenyCommands
        );
        assert_eq!(verdict(&p, &[b"FUNCTION", b"LIST"]), Verdict::Forward);
        assert_eq!(
            refusal(verdict(&p, &[b"eval", b"return 1", b"0"])).rule,
            Rule::DenyCommands
        );
    }

    #[test]
    fn a_nul_byte_does_not_hide_a_command_from_the_guard() {
        // Redis compares command names up to the first NUL: `DEL\0245` may run as DEL.
        let p = policy();
        assert_eq!(
            refusal(verdict(&p, &[b"DEL\x00245", b"user:*"])).rule,
            Rule::Wildcard
        );
        assert_eq!(
            refusal(verdict(&p, &[b"FLUSHALL\x00320"])).rule,
            Rule::DenyCommands
        );
        let cfg = GuardConfig {
            deny_commands: vec!["CONFIG SET".into()],
            ..GuardConfig::default()
        };
        let p = GuardPolicy::new(&cfg);
        assert_eq!(
            refusal(verdict(&p, &[b"config", b"SET\x004", b"x", b"y"])).rule,
            Rule::DenyCommands
        );
    }

    #[test]
    fn custom_wildcards_and_limits_apply() {
        let mut cfg = GuardConfig {
            wildcard_chars: "*".into(),
            max_keys: 3,
            ..GuardConfig::default()
        };
        let p = GuardPolicy::new(&cfg);
        assert_eq!(verdict(&p, &[b"DEL", b"a?", b"[b"]), Verdict::Forward);
        assert_eq!(refusal(verdict(&p, &[b"DEL", b"a*"])).rule, Rule::Wildcard);
        assert_eq!(
            refusal(verdict(&p, &[b"DEL", b"a", b"b", b"c", b"d"])).rule,
            Rule::MaxKeys
        );
        cfg.wildcard_chars = String::new();
        let p = GuardPolicy::new(&cfg);
        assert_eq!(verdict(&p, &[b"DEL", b"*"]), Verdict::Forward);
    }

    /// Every size of wildcard set (each takes its own search), repeated characters, and the
    /// character named in the message being the first one in the key.
    #[test]
    fn wildcard_sets_of_every_size_find_the_first_wildcard() {
        let mut cfg = GuardConfig::default();
        for (chars, wild, tame) in [
            ("**", &b"ab*c"[..], &b"ab?c"[..]),
            ("*?", b"ab?c", b"ab[c"),
            ("*?[", b"ab[c", b"ab]c"),
            ("*?[]{", b"ab{c", b"ab}c"),
        ] {
            cfg.wildcard_chars = chars.into();
            let p = GuardPolicy::new(&cfg);
            assert_eq!(
                verdict(&p, &[b"DEL", b"k", tame]),
                Verdict::Forward,
                "{chars}"
            );
            let r = refusal(verdict(&p, &[b"DEL", b"k", wild]));
            assert_eq!(r.rule, Rule::Wildcard, "{chars}");
            let first = wild[2] as char;
            assert!(
                r.message.contains(&format!("character '{first}'")),
                "{chars}: {}",
                r.message
            );
        }
        cfg.wildcard_chars = "*?[".into();
        let p = GuardPolicy::new(&cfg);
        let r = refusal(verdict(&p, &[b"DEL", b"x?y*z"]));
        assert!(r.message.contains("character '?'"), "{}", r.message);
    }

    #[test]
    fn getdel_is_a_one_key_delete() {
        let p = policy();
        assert_eq!(verdict(&p, &[b"GETDEL", b"session:1"]), Verdict::Forward);
        let r = refusal(verdict(&p, &[b"getdel", b"session:*"]));
        assert_eq!(r.rule, Rule::Wildcard);
        assert!(
            r.message.starts_with("ERR keyward guard: GETDEL refused"),
            "{}",
            r.message
        );
    }

    #[test]
    fn migrate_is_checked_like_a_delete_unless_it_copies() {
        let p = policy();
        let m = |tail: &[&[u8]]| {
            let mut words: Vec<&[u8]> = vec![b"MIGRATE", b"10.0.0.9", b"6379"];
            words.extend_from_slice(tail);
            verdict(&p, &words)
        };
        // Single-key form and KEYS form, with and without wildcards.
        assert_eq!(m(&[b"k1", b"0", b"5000"]), Verdict::Forward);
        assert_eq!(refusal(m(&[b"k*", b"0", b"5000"])).rule, Rule::Wildcard);
        assert_eq!(
            m(&[b"", b"0", b"5000", b"REPLACE", b"KEYS", b"a", b"b"]),
            Verdict::Forward
        );
        let r = refusal(m(&[b"", b"0", b"5000", b"keys", b"a", b"user:*"]));
        assert_eq!(r.rule, Rule::Wildcard);
        assert!(r.message.contains("MIGRATE refused"), "{}", r.message);
        assert!(r.message.contains("'user:*'"), "{}", r.message);
        // COPY leaves the keys where they are: nothing to check.
        assert_eq!(m(&[b"k*", b"0", b"5000", b"COPY"]), Verdict::Forward);
        assert_eq!(
            m(&[b"", b"0", b"5000", b"copy", b"REPLACE", b"KEYS", b"*"]),
            Verdict::Forward
        );
        // Redis reads option names up to a NUL: `COPY\0x` is COPY, `KEYS\0x` is KEYS.
        assert_eq!(
            m(&[b"", b"0", b"5000", b"COPY\x00x", b"KEYS", b"*"]),
            Verdict::Forward
        );
        assert_eq!(
            refusal(m(&[b"", b"0", b"5000", b"KEYS\x00x", b"a", b"b?"])).rule,
            Rule::Wildcard
        );
        // A password or user name that reads "COPY" or "KEYS" is a value, not an option.
        for tail in [
            &[&b""[..], b"0", b"5000", b"AUTH", b"COPY", b"KEYS", b"a*"][..],
            &[
                b"", b"0", b"5000", b"AUTH2", b"COPY", b"COPY", b"KEYS", b"a*",
            ],
            &[b"", b"0", b"5000", b"AUTH", b"KEYS", b"KEYS", b"a*"],
            // COPY after KEYS is a key, not an option.
            &[b"", b"0", b"5000", b"KEYS", b"a*", b"COPY"],
            // An option keyward does not know might take COPY as its value: keys still checked.
            &[b"", b"0", b"5000", b"NEWOPTION", b"COPY", b"KEYS", b"a*"],
        ] {
            assert_eq!(refusal(m(tail)).rule, Rule::Wildcard, "{tail:?}");
        }
        // max_keys counts the KEYS list.
        let keys: Vec<Vec<u8>> = (0..1001).map(|i| format!("m{i}").into_bytes()).collect();
        let mut tail: Vec<&[u8]> = vec![b"", b"0", b"5000", b"KEYS"];
        tail.extend(keys.iter().map(|k| k.as_slice()));
        assert_eq!(refusal(m(&tail)).rule, Rule::MaxKeys);
        assert_eq!(m(&tail[..tail.len() - 1]), Verdict::Forward);
        tail.insert(3, b"COPY");
        assert_eq!(m(&tail), Verdict::Forward);
        // Malformed requests are Redis's to reject.
        assert_eq!(
            verdict(&p, &[b"MIGRATE", b"h", b"1", b"k*"]),
            Verdict::Forward
        );
    }

    #[test]
    fn the_default_deny_list_covers_whole_dataset_commands() {
        let p = policy();
        for words in [
            &[&b"FLUSHALL"[..], b"SYNC"][..],
            &[b"flushdb", b"ASYNC"],
            &[b"SWAPDB", b"0", b"1"],
            &[b"FUNCTION", b"FLUSH"],
            &[b"function", b"flush", b"async"],
            &[b"REPLICAOF", b"10.0.0.9", b"6379"],
            &[b"slaveof", b"10.0.0.9", b"6379"],
            &[b"SHUTDOWN", b"NOSAVE"],
            &[b"DEBUG", b"RELOAD", b"NOSAVE"],
        ] {
            assert_eq!(
                refusal(verdict(&p, words)).rule,
                Rule::DenyCommands,
                "{words:?}"
            );
        }
        // Scripts, renames, expiry and configuration are forwarded: applications use them.
        for words in [
            &[
                &b"EVAL"[..],
                b"return redis.call('del', KEYS[1])",
                b"1",
                b"k",
            ][..],
            &[b"EVALSHA", b"0123", b"0"],
            &[b"FCALL", b"f", b"0"],
            &[b"SCRIPT", b"FLUSH"],
            &[b"FUNCTION", b"LIST"],
            &[b"FUNCTION", b"RESTORE", b"payload", b"REPLACE"],
            &[b"CONFIG", b"SET", b"maxmemory", b"1"],
            &[b"RENAME", b"a", b"b"],
            &[b"EXPIRE", b"a*", b"0"],
            &[b"SET", b"a", b"1", b"PX", b"1"],
            &[b"COPY", b"a", b"b", b"REPLACE"],
            &[b"MOVE", b"a", b"1"],
            &[b"CLUSTER", b"RESET"],
        ] {
            assert_eq!(verdict(&p, words), Verdict::Forward, "{words:?}");
        }
    }

    #[test]
    fn function_flush_also_refuses_function_restore_with_flush() {
        let p = policy();
        for policy_arg in [&b"FLUSH"[..], b"flush", b"Flush\x00x"] {
            let r = refusal(verdict(
                &p,
                &[b"FUNCTION", b"RESTORE", b"payload", policy_arg],
            ));
            assert_eq!(r.rule, Rule::DenyCommands);
            assert!(
                r.message
                    .contains("FUNCTION RESTORE ... FLUSH (it flushes like FUNCTION FLUSH)"),
                "{}",
                r.message
            );
            assert!(
                r.message.contains("remove \"FUNCTION FLUSH\""),
                "{}",
                r.message
            );
        }
        // An entry that names RESTORE itself is reported as such.
        let mut cfg = GuardConfig {
            deny_commands: vec!["FUNCTION RESTORE".into()],
            ..GuardConfig::default()
        };
        let r = refusal(verdict(
            &GuardPolicy::new(&cfg),
            &[b"FUNCTION", b"RESTORE", b"payload", b"FLUSH"],
        ));
        assert!(
            r.message
                .starts_with("ERR keyward guard: FUNCTION RESTORE is denied"),
            "{}",
            r.message
        );
        cfg.deny_commands = vec![];
        assert_eq!(
            verdict(
                &GuardPolicy::new(&cfg),
                &[b"FUNCTION", b"RESTORE", b"payload", b"FLUSH"]
            ),
            Verdict::Forward
        );
    }

    #[test]
    fn scripts_can_be_denied_by_name() {
        let cfg = GuardConfig {
            deny_commands: vec!["EVAL".into(), "EVALSHA".into(), "FCALL".into()],
            ..GuardConfig::default()
        };
        let p = GuardPolicy::new(&cfg);
        for words in [
            &[&b"eval"[..], b"return 1", b"0"][..],
            &[b"EvalSha", b"0123", b"0"],
            &[b"FCALL", b"f", b"0"],
        ] {
            assert_eq!(
                refusal(verdict(&p, words)).rule,
                Rule::DenyCommands,
                "{words:?}"
            );
        }
        // Read-only variants cannot write, and stay allowed.
        assert_eq!(
            verdict(&p, &[b"EVAL_RO", b"return 1", b"0"]),
            Verdict::Forward
        );
    }

    #[test]
    fn dry_run_forwards_what_enforce_refuses_and_names_the_rule() {
        let cfg = GuardConfig {
            mode: GuardMode::DryRun,
            ..GuardConfig::default()
        };
        let p = GuardPolicy::new(&cfg);
        assert_eq!(
            verdict(&p, &[b"DEL", b"a", b"b*"]),
            Verdict::WouldRefuse {
                rule: Rule::Wildcard,
                rename: None
            }
        );
        assert_eq!(
            verdict(&p, &[b"FLUSHALL"]),
            Verdict::WouldRefuse {
                rule: Rule::DenyCommands,
                rename: None
            }
        );
        // REMOVEKEYS is still rewritten, as an allowed one would be.
        let keys: Vec<Vec<u8>> = (0..1001).map(|i| format!("k{i}").into_bytes()).collect();
        let mut words: Vec<&[u8]> = vec![b"REMOVEKEYS"];
        words.extend(keys.iter().map(|k| k.as_slice()));
        assert_eq!(
            verdict(&p, &words),
            Verdict::WouldRefuse {
                rule: Rule::MaxKeys,
                rename: Some(DeleteCommand::Unlink)
            }
        );
        // What enforce mode allows is unchanged, and a REMOVEKEYS without keys stays refused.
        assert_eq!(verdict(&p, &[b"DEL", b"a"]), Verdict::Forward);
        assert_eq!(
            verdict(&p, &[b"REMOVEKEYS", b"a"]),
            Verdict::Rewrite(DeleteCommand::Unlink)
        );
        assert_eq!(refusal(verdict(&p, &[b"REMOVEKEYS"])).rule, Rule::Arity);
    }

    #[test]
    fn guard_modes_are_spelt_as_in_the_file() {
        for mode in [GuardMode::Enforce, GuardMode::DryRun] {
            assert_eq!(mode.name().parse::<GuardMode>(), Ok(mode));
        }
        assert_eq!("DRY-RUN".parse::<GuardMode>(), Ok(GuardMode::DryRun));
        assert!("dryrun".parse::<GuardMode>().is_err());
        assert_eq!(GuardConfig::default().mode, GuardMode::Enforce);
    }

    #[test]
    fn refusals_name_the_command_without_what_follows_a_nul() {
        let r = refusal(verdict(&policy(), &[b"DEL\x00\xffjunk", b"a*"]));
        assert!(
            r.message.starts_with("ERR keyward guard: DEL refused"),
            "{}",
            r.message
        );
    }
}
