//! The delete guard: a pure function from a request to a verdict.
//!
//! The guard never does I/O. The session asks it about every request and acts on the verdict:
//! forward the bytes untouched, rewrite `REMOVEKEYS` into the configured delete command, or answer
//! with an error and send nothing upstream. Because every key is checked before anything is sent,
//! a refused request never leaves a partial deletion behind.

use bytes::Bytes;

use crate::commands::{self, CommandSpec, Role};
use crate::config::{DeleteCommand, GuardConfig};

/// The guard's settings, prepared once from [`GuardConfig`] so that the per-request check does
/// no parsing or allocation.
#[derive(Debug, Clone)]
pub struct GuardPolicy {
    max_keys: usize,
    /// A 256-entry lookup table: `wildcard[b]` is true when byte `b` makes a key a wildcard.
    wildcard: [bool; 256],
    wildcard_chars: String,
    delete_command: DeleteCommand,
    /// Uppercased `NAME` or `NAME SUBCOMMAND` entries.
    deny: Vec<DenyEntry>,
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
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Wildcard => "wildcard_chars",
            Rule::MaxKeys => "max_keys",
            Rule::DenyCommands => "deny_commands",
            Rule::Arity => "arity",
        }
    }
}

/// A refusal: the rule and the error line sent to the client (without `-` and CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: Rule,
    pub message: String,
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
}

impl GuardPolicy {
    pub fn new(config: &GuardConfig) -> Self {
        let mut wildcard = [false; 256];
        for b in config.wildcard_chars.bytes() {
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
            .collect();
        GuardPolicy {
            max_keys: config.max_keys,
            wildcard,
            wildcard_chars: config.wildcard_chars.clone(),
            delete_command: config.delete_command,
            deny,
        }
    }

    /// Decides what happens to one request. `args[0]` is the command name as the client sent it;
    /// `spec` is its entry in the command table, if any.
    pub fn check(&self, spec: Option<&CommandSpec>, args: &[Bytes]) -> Verdict {
        self.check_as(spec, args, false)
    }

    /// [`check`](Self::check) for a client whose keyward user may run the commands in
    /// `deny_commands` (`bypass_deny_commands`); the key rules still apply to it.
    pub fn check_as(
        &self,
        spec: Option<&CommandSpec>,
        args: &[Bytes],
        bypass_deny_commands: bool,
    ) -> Verdict {
        let Some(name) = args.first() else {
            return Verdict::Forward;
        };
        if !bypass_deny_commands && let Some(refusal) = self.denied(name, args.get(1)) {
            return Verdict::Refuse(refusal);
        }
        let role = spec.map(|s| s.role);
        match role {
            Some(Role::RemoveKeys) => {
                if args.len() < 2 {
                    return Verdict::Refuse(Refusal {
                        rule: Rule::Arity,
                        message: "ERR wrong number of arguments for 'removekeys' command".into(),
                    });
                }
                match self.check_keys(name, &args[1..]) {
                    Some(refusal) => Verdict::Refuse(refusal),
                    None => Verdict::Rewrite(self.delete_command),
                }
            }
            // DEL and UNLINK without keys are left to Redis, which answers with its own arity error.
            Some(Role::Delete) => match self.check_keys(name, &args[1..]) {
                Some(refusal) => Verdict::Refuse(refusal),
                None => Verdict::Forward,
            },
            _ => Verdict::Forward,
        }
    }

    fn denied(&self, name: &[u8], first_arg: Option<&Bytes>) -> Option<Refusal> {
        let name = commands::effective_name(name);
        let entry = self.deny.iter().find(|entry| {
            name.eq_ignore_ascii_case(&entry.command)
                && match &entry.subcommand {
                    None => true,
                    Some(sub) => first_arg
                        .is_some_and(|a| commands::effective_name(a).eq_ignore_ascii_case(sub)),
                }
        })?;
        Some(Refusal {
            rule: Rule::DenyCommands,
            message: format!(
                "ERR keyward guard: {} is denied (rule deny_commands); remove \"{}\" from \
                 [guard] deny_commands in the keyward configuration to allow it",
                entry.label, entry.label
            ),
        })
    }

    /// Checks the keys of a delete: the count first (cheap, and the clearer message when both
    /// rules are broken), then every byte of every key against the wildcard table.
    fn check_keys(&self, name: &[u8], keys: &[Bytes]) -> Option<Refusal> {
        let command = String::from_utf8_lossy(name).to_ascii_uppercase();
        if keys.len() > self.max_keys {
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
            });
        }
        for key in keys {
            if let Some(&bad) = key.iter().find(|&&b| self.wildcard[b as usize]) {
                return Some(Refusal {
                    rule: Rule::Wildcard,
                    message: format!(
                        "ERR keyward guard: {command} refused, key '{}' contains the wildcard \
                         character '{}' (rule wildcard_chars = \"{}\"); nothing was deleted",
                        printable_key(key),
                        bad as char,
                        self.wildcard_chars
                    ),
                });
            }
        }
        None
    }
}

/// Longest key shown in an error message; a longer key is cut and marked with `...`.
const KEY_DISPLAY_LIMIT: usize = 128;

/// Renders a key for an error line: printable ASCII as is, everything else as `\xNN`, so that a
/// binary key can neither break the RESP error line (no CR/LF) nor hide what it holds.
pub fn printable_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len().min(KEY_DISPLAY_LIMIT) + 8);
    for &b in key.iter().take(KEY_DISPLAY_LIMIT) {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    if key.len() > KEY_DISPLAY_LIMIT {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands;
    use crate::config::Config;

    fn policy() -> GuardPolicy {
        GuardPolicy::new(&Config::default().guard)
    }

    fn args(words: &[&[u8]]) -> Vec<Bytes> {
        words.iter().map(|w| Bytes::copy_from_slice(w)).collect()
    }

    fn verdict(policy: &GuardPolicy, words: &[&[u8]]) -> Verdict {
        let a = args(words);
        policy.check(commands::lookup(&a[0]), &a)
    }

    fn refusal(v: Verdict) -> Refusal {
        match v {
            Verdict::Refuse(r) => r,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn removekeys_becomes_the_configured_delete_command() {
        let p = policy();
        assert_eq!(
            verdict(&p, &[b"REMOVEKEYS", b"a", b"b"]),
            Verdict::Rewrite(DeleteCommand::Unlink)
        );
        let mut cfg = Config::default().guard;
        cfg.delete_command = DeleteCommand::Del;
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
        let a: Vec<Bytes> = words.iter().map(|w| Bytes::copy_from_slice(w)).collect();
        assert_eq!(p.check(commands::lookup(&a[0]), &a), Verdict::Forward);

        words.push(b"one-too-many".to_vec());
        let a: Vec<Bytes> = words.iter().map(|w| Bytes::copy_from_slice(w)).collect();
        let r = refusal(p.check(commands::lookup(&a[0]), &a));
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

        let mut cfg = Config::default().guard;
        cfg.deny_commands = vec![];
        assert_eq!(
            verdict(&GuardPolicy::new(&cfg), &[b"FLUSHALL"]),
            Verdict::Forward
        );
    }

    #[test]
    fn deny_entries_may_name_a_subcommand() {
        let mut cfg = Config::default().guard;
        cfg.deny_commands = vec!["FUNCTION FLUSH".into(), "EVAL".into()];
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
        let mut cfg = Config::default().guard;
        cfg.deny_commands = vec!["CONFIG SET".into()];
        let p = GuardPolicy::new(&cfg);
        assert_eq!(
            refusal(verdict(&p, &[b"config", b"SET\x004", b"x", b"y"])).rule,
            Rule::DenyCommands
        );
    }

    #[test]
    fn custom_wildcards_and_limits_apply() {
        let mut cfg = Config::default().guard;
        cfg.wildcard_chars = "*".into();
        cfg.max_keys = 3;
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

    #[test]
    fn binary_keys_are_shown_escaped_and_cut() {
        assert_eq!(printable_key(b"a\r\n\x00*"), "a\\x0d\\x0a\\x00*");
        let long = vec![b'k'; 300];
        let shown = printable_key(&long);
        assert!(shown.ends_with("...") && shown.len() == KEY_DISPLAY_LIMIT + 3);
    }
}
