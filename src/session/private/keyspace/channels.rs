//! Which subscriptions can hear keyspace notifications, and which messages are notifications.
//!
//! Redis publishes its keyspace notifications on channels named `__keyspace@<db>__:<key>` and
//! `__keyevent@<db>__:<event>`, and only on the node where the key changed (they are not sent
//! over the cluster bus, unlike `PUBLISH`). A subscription is merged across the cluster when it
//! can receive such a channel:
//! - a channel (`SUBSCRIBE`) when its name starts with one of the two prefixes;
//! - a pattern (`PSUBSCRIBE`) when Redis's glob rules let it match at least one channel that
//!   starts with one of them: `__keyspace@0__:*`, `__key*__:*`, `_*`, but also `*` and `?*`.
//!   It is decided by running the pattern over the prefix (below), not by looking for the
//!   prefix's text in it, so that no pattern that can hear a notification is missed;
//! - a shard channel (`SSUBSCRIBE`) never: Redis does not publish notifications to shard
//!   channels.
//!
//! Erring on the side of "can match" costs only an idle subscription on the other primaries
//! (a pattern such as `[]x` that matches nothing); missing one would lose events.

use crate::commands::PubSubKind;

/// The channel prefixes of keyspace and keyevent notifications.
const PREFIXES: [&[u8]; 2] = [b"__keyspace@", b"__keyevent@"];

/// True for a channel on which Redis publishes keyspace or keyevent notifications.
pub fn is_notification_channel(channel: &[u8]) -> bool {
    PREFIXES.iter().any(|p| channel.starts_with(p))
}

/// True when a subscription of `kind` to `name` can receive keyspace notifications.
pub fn can_hear_notifications(kind: PubSubKind, name: &[u8]) -> bool {
    match kind {
        PubSubKind::Channel => is_notification_channel(name),
        PubSubKind::Pattern => PREFIXES.iter().any(|p| matches_some_extension(name, p)),
        PubSubKind::Shard => false,
    }
}

/// One element of a glob pattern, as Redis's `stringmatchlen` reads it.
#[derive(Debug)]
enum Token {
    /// `*`: any run of bytes, the empty one included.
    Star,
    /// `?`: any one byte.
    Any,
    /// A byte that must be there (a plain byte, or any byte after `\`).
    Byte(u8),
    /// `[...]` or `[^...]`: one byte in (or, negated, not in) the set.
    Class { negated: bool, members: Vec<Member> },
}

#[derive(Debug)]
enum Member {
    Byte(u8),
    Range(u8, u8),
}

impl Token {
    fn accepts(&self, byte: u8) -> bool {
        match self {
            Token::Star | Token::Any => true,
            Token::Byte(b) => *b == byte,
            Token::Class { negated, members } => {
                let inside = members.iter().any(|m| match *m {
                    Member::Byte(b) => b == byte,
                    Member::Range(lo, hi) => (lo..=hi).contains(&byte),
                });
                inside != *negated
            }
        }
    }
}

/// Splits a pattern into tokens the way Redis's `stringmatchlen` walks it: `\` escapes the
/// next byte (a trailing `\` is itself); in a class, `\x` is `x`, `a-z` a range (either
/// order), `]` ends it, and an unclosed class runs to the end of the pattern.
fn tokens(pattern: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            b'*' => {
                out.push(Token::Star);
                i += 1;
            }
            b'?' => {
                out.push(Token::Any);
                i += 1;
            }
            b'[' => {
                i += 1;
                let negated = pattern.get(i) == Some(&b'^');
                if negated {
                    i += 1;
                }
                let mut members = Vec::new();
                loop {
                    let left = pattern.len() - i;
                    if left >= 2 && pattern[i] == b'\\' {
                        members.push(Member::Byte(pattern[i + 1]));
                        i += 2;
                    } else if left == 0 {
                        break;
                    } else if pattern[i] == b']' {
                        i += 1;
                        break;
                    } else if left >= 3 && pattern[i + 1] == b'-' {
                        let (a, b) = (pattern[i], pattern[i + 2]);
                        members.push(Member::Range(a.min(b), a.max(b)));
                        i += 3;
                    } else {
                        members.push(Member::Byte(pattern[i]));
                        i += 1;
                    }
                }
                out.push(Token::Class { negated, members });
            }
            b'\\' if i + 1 < pattern.len() => {
                out.push(Token::Byte(pattern[i + 1]));
                i += 2;
            }
            byte => {
                out.push(Token::Byte(byte));
                i += 1;
            }
        }
    }
    out
}

/// True when `pattern` matches at least one string that starts with `prefix`.
///
/// The pattern is run as a set of positions over the bytes of `prefix`; if some position is
/// still alive at the end, the rest of the pattern can be matched by some continuation (a
/// class that matches no byte at all is not looked for: see the module's doc).
fn matches_some_extension(pattern: &[u8], prefix: &[u8]) -> bool {
    let tokens = tokens(pattern);
    let mut alive = vec![false; tokens.len() + 1];
    alive[0] = true;
    skip_stars(&tokens, &mut alive);
    for &byte in prefix {
        let mut next = vec![false; tokens.len() + 1];
        for (i, token) in tokens.iter().enumerate() {
            if !alive[i] || !token.accepts(byte) {
                continue;
            }
            match token {
                // A star takes the byte and stays.
                Token::Star => next[i] = true,
                _ => next[i + 1] = true,
            }
        }
        skip_stars(&tokens, &mut next);
        if !next.iter().any(|&a| a) {
            return false;
        }
        alive = next;
    }
    true
}

/// A star may also match nothing: a position on a star is a position after it too.
fn skip_stars(tokens: &[Token], alive: &mut [bool]) {
    for (i, token) in tokens.iter().enumerate() {
        if alive[i] && matches!(token, Token::Star) {
            alive[i + 1] = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(p: &str) -> bool {
        can_hear_notifications(PubSubKind::Pattern, p.as_bytes())
    }

    #[test]
    fn channels() {
        let channel = |c: &str| can_hear_notifications(PubSubKind::Channel, c.as_bytes());
        assert!(channel("__keyspace@0__:user:1"));
        assert!(channel("__keyevent@0__:set"));
        // A channel is a name, not a pattern: this one only hears events of the key `*`.
        assert!(channel("__keyspace@0__:*"));
        assert!(!channel("news"));
        assert!(!channel("__keyspace"));
        assert!(!channel("__KEYSPACE@0__:k"));
        assert!(!can_hear_notifications(
            PubSubKind::Shard,
            b"__keyspace@0__:k"
        ));
    }

    #[test]
    fn patterns_that_can_hear_notifications() {
        for p in [
            "__keyspace@0__:*",
            "__keyspace@*__:*",
            "__keyevent@0__:set",
            "__keyevent@0__:expire*",
            "__key*__:*",
            "__key*",
            "__keys*",
            "*",
            "**",
            "?*",
            "_*",
            "*@0__:*",
            "__keyspace@0__:user:*",
            "[_]_keyspace@*",
            "__key[es]*",
            "__keyspace[@]0__:*",
            "\\_\\_keyspace@*",
            "__key[a-z]vent@*",
            "__key[z-a]vent@*",
            "__keyspace@",
            "[^x]*",
        ] {
            assert!(pattern(p), "{p} can match a notification channel");
        }
    }

    #[test]
    fn patterns_that_cannot() {
        for p in [
            "news",
            "ne*",
            "news.*",
            "__keyspace",
            "__KEYSPACE@*",
            "[^_]*",
            "__key[^se]*",
            "?",
            "??",
            "_",
            "x*__keyspace@*",
            "__key[",
            "[]__keyspace@*",
        ] {
            assert!(!pattern(p), "{p} cannot match a notification channel");
        }
    }

    #[test]
    fn notification_channels() {
        assert!(is_notification_channel(b"__keyspace@0__:k"));
        assert!(is_notification_channel(b"__keyevent@0__:del"));
        assert!(!is_notification_channel(b"news"));
    }
}
