//! Pub/sub bookkeeping for one connection.
//!
//! Redis answers `SUBSCRIBE a b` with one confirmation per channel, `UNSUBSCRIBE` without
//! arguments with one confirmation per current subscription, and, while a RESP2 connection is
//! subscribed, sends messages that look like ordinary array replies. To keep replies in
//! order, keyward must know how many frames a (un)subscribe produces and which frames are
//! messages. It learns both from the confirmations themselves, so it never guesses: the sets
//! below mirror what Redis holds for this connection.

use std::collections::HashSet;

use bytes::Bytes;

use crate::commands::PubSubKind;
use crate::protocol::reply;

/// The channels, patterns and shard channels this connection is subscribed to.
#[derive(Debug, Default)]
pub struct Subscriptions {
    channels: HashSet<Bytes>,
    patterns: HashSet<Bytes>,
    shard_channels: HashSet<Bytes>,
}

/// A confirmation frame: which kind, subscribe or unsubscribe, and the channel (None for the
/// null channel Redis sends when there was nothing to unsubscribe from).
#[derive(Debug, PartialEq, Eq)]
pub struct Confirmation {
    pub kind: PubSubKind,
    pub subscribe: bool,
    pub channel: Option<Bytes>,
}

impl Subscriptions {
    fn set(&mut self, kind: PubSubKind) -> &mut HashSet<Bytes> {
        match kind {
            PubSubKind::Channel => &mut self.channels,
            PubSubKind::Pattern => &mut self.patterns,
            PubSubKind::Shard => &mut self.shard_channels,
        }
    }

    /// Number of subscriptions of one kind.
    pub fn count(&self, kind: PubSubKind) -> usize {
        match kind {
            PubSubKind::Channel => self.channels.len(),
            PubSubKind::Pattern => self.patterns.len(),
            PubSubKind::Shard => self.shard_channels.len(),
        }
    }

    /// True when the connection is subscribed to `name` as a `kind` (a confirmation said so,
    /// and no unsubscription since).
    pub fn contains(&self, kind: PubSubKind, name: &[u8]) -> bool {
        match kind {
            PubSubKind::Channel => self.channels.contains(name),
            PubSubKind::Pattern => self.patterns.contains(name),
            PubSubKind::Shard => self.shard_channels.contains(name),
        }
    }

    /// True while Redis considers the connection subscribed (RESP2 "subscribed mode").
    pub fn active(&self) -> bool {
        !(self.channels.is_empty() && self.patterns.is_empty() && self.shard_channels.is_empty())
    }

    pub fn apply(&mut self, confirmation: &Confirmation) {
        let Some(channel) = &confirmation.channel else {
            return;
        };
        let set = self.set(confirmation.kind);
        if confirmation.subscribe {
            set.insert(channel.clone());
        } else {
            set.remove(channel);
        }
    }

    pub fn clear(&mut self) {
        self.channels.clear();
        self.patterns.clear();
        self.shard_channels.clear();
    }
}

/// Recognises a (un)subscribe confirmation: an array or push of three elements whose first is
/// `subscribe`, `punsubscribe`... and whose third is an integer.
pub fn confirmation(frame: &[u8]) -> Option<Confirmation> {
    let (head, len) = reply::aggregate_head(frame)?;
    if len != 3 {
        return None;
    }
    let (kind, subscribe) = PubSubKind::ALL.into_iter().find_map(|kind| {
        if head == kind.subscribe_reply() {
            Some((kind, true))
        } else if head == kind.unsubscribe_reply() {
            Some((kind, false))
        } else {
            None
        }
    })?;
    reply::aggregate_int_at(frame, 2)?;
    Some(Confirmation {
        kind,
        subscribe,
        channel: second_element(frame),
    })
}

/// True for a message delivered to a subscriber: `message`, `pmessage` or `smessage`.
pub fn is_message(frame: &[u8]) -> bool {
    matches!(
        reply::aggregate_head(frame),
        Some((b"message", 3)) | Some((b"pmessage", 4)) | Some((b"smessage", 3))
    )
}

/// The second element of a flat aggregate whose first element is a bulk or simple string, when
/// it is a bulk or simple string itself; None for a null or anything else.
fn second_element(frame: &[u8]) -> Option<Bytes> {
    let mut pos = line_end(frame, 0)? + 2; // skip `*3\r\n`
    pos = skip_string(frame, pos)?;
    match *frame.get(pos)? {
        b'$' => {
            let end = line_end(frame, pos)?;
            let len: usize = std::str::from_utf8(&frame[pos + 1..end])
                .ok()?
                .parse()
                .ok()?;
            let start = end + 2;
            frame.get(start..start + len).map(Bytes::copy_from_slice)
        }
        b'+' => {
            let end = line_end(frame, pos)?;
            Some(Bytes::copy_from_slice(&frame[pos + 1..end]))
        }
        _ => None,
    }
}

fn line_end(frame: &[u8], from: usize) -> Option<usize> {
    frame
        .get(from..)?
        .windows(2)
        .position(|w| w == b"\r\n")
        .map(|p| from + p)
}

/// Position after the bulk or simple string that starts at `pos`.
fn skip_string(frame: &[u8], pos: usize) -> Option<usize> {
    let end = line_end(frame, pos)?;
    match *frame.get(pos)? {
        b'+' => Some(end + 2),
        b'$' => {
            let len: usize = std::str::from_utf8(&frame[pos + 1..end])
                .ok()?
                .parse()
                .ok()?;
            Some(end + 2 + len + 2)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confirmations_in_resp2_and_resp3() {
        let c = confirmation(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n").unwrap();
        assert_eq!(
            c,
            Confirmation {
                kind: PubSubKind::Channel,
                subscribe: true,
                channel: Some(Bytes::from_static(b"ch"))
            }
        );
        let c = confirmation(b">3\r\n$12\r\npunsubscribe\r\n$2\r\np*\r\n:0\r\n").unwrap();
        assert_eq!(c.kind, PubSubKind::Pattern);
        assert!(!c.subscribe);
        let c = confirmation(b"*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n").unwrap();
        assert_eq!(c.channel, None);
        let c = confirmation(b">3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n").unwrap();
        assert_eq!(c.channel, None);
        // A user's list that happens to start with "subscribe" but is not shaped like one.
        assert!(confirmation(b"*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n$1\r\n1\r\n").is_none());
        assert!(confirmation(b"*2\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n").is_none());
    }

    #[test]
    fn messages() {
        assert!(is_message(
            b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        ));
        assert!(is_message(
            b">4\r\n$8\r\npmessage\r\n$2\r\nc*\r\n$2\r\nch\r\n$2\r\nhi\r\n"
        ));
        assert!(!is_message(b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"));
    }

    #[test]
    fn subscriptions_follow_confirmations() {
        let mut subs = Subscriptions::default();
        subs.apply(&confirmation(b"*3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n").unwrap());
        subs.apply(&confirmation(b"*3\r\n$10\r\npsubscribe\r\n$1\r\nb\r\n:2\r\n").unwrap());
        assert!(subs.active());
        assert_eq!(subs.count(PubSubKind::Channel), 1);
        assert!(subs.contains(PubSubKind::Channel, b"a"));
        assert!(subs.contains(PubSubKind::Pattern, b"b"));
        assert!(!subs.contains(PubSubKind::Channel, b"b"));
        subs.apply(&confirmation(b"*3\r\n$11\r\nunsubscribe\r\n$1\r\na\r\n:1\r\n").unwrap());
        subs.apply(&confirmation(b"*3\r\n$12\r\npunsubscribe\r\n$1\r\nb\r\n:0\r\n").unwrap());
        assert!(!subs.active());
    }
}
