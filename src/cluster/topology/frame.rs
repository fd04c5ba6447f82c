//! Reading the decoded frames of a `CLUSTER SHARDS` or `CLUSTER SLOTS` reply.
//!
//! Discovery asks on a RESP2 connection and decodes the reply with `redis-protocol`'s RESP2
//! decoder, so the parsers only ever see its [`OwnedFrame`]. In RESP2 a map (a shard, a node of
//! `CLUSTER SHARDS`) arrives as a flat array of alternating keys and values, and numbers may
//! come as strings (some proxies and old servers send them so): these helpers hide both.

use std::fmt;

use redis_protocol::resp2::types::OwnedFrame;

/// The elements of an array.
pub(super) fn array(frame: &OwnedFrame) -> Option<&[OwnedFrame]> {
    match frame {
        OwnedFrame::Array(items) => Some(items),
        _ => None,
    }
}

/// A map, which RESP2 sends as an array of alternating keys and values.
pub(super) fn pairs(frame: &OwnedFrame) -> Option<Vec<(&OwnedFrame, &OwnedFrame)>> {
    match frame {
        OwnedFrame::Array(items) if items.len() % 2 == 0 => {
            Some(items.chunks(2).map(|pair| (&pair[0], &pair[1])).collect())
        }
        _ => None,
    }
}

/// The value of the first pair whose key is the string `key`.
pub(super) fn field<'f>(
    fields: &[(&'f OwnedFrame, &'f OwnedFrame)],
    key: &str,
) -> Option<&'f OwnedFrame> {
    fields
        .iter()
        .find(|(k, _)| bytes(k) == Some(key.as_bytes()))
        .map(|(_, v)| *v)
}

/// The bytes of a simple or bulk string.
fn bytes(frame: &OwnedFrame) -> Option<&[u8]> {
    match frame {
        OwnedFrame::SimpleString(b) | OwnedFrame::BulkString(b) => Some(b),
        _ => None,
    }
}

/// A string's text (invalid UTF-8 replaced, for error messages and ids).
pub(super) fn text(frame: &OwnedFrame) -> Option<String> {
    bytes(frame).map(|b| String::from_utf8_lossy(b).into_owned())
}

/// An integer, or a string holding one (some proxies and old servers send numbers as strings).
pub(super) fn int(frame: &OwnedFrame) -> Option<i64> {
    match frame {
        OwnedFrame::Integer(i) => Some(*i),
        OwnedFrame::SimpleString(b) | OwnedFrame::BulkString(b) => {
            std::str::from_utf8(b).ok()?.trim().parse().ok()
        }
        _ => None,
    }
}

/// A short description of a frame for error messages: its type, and the text of short strings.
pub(super) struct Describe<'a>(pub &'a OwnedFrame);

impl fmt::Display for Describe<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            OwnedFrame::SimpleString(b) | OwnedFrame::BulkString(b) if b.len() <= 64 => {
                write!(f, "the string {:?}", String::from_utf8_lossy(b))
            }
            OwnedFrame::SimpleString(b) | OwnedFrame::BulkString(b) => {
                write!(f, "a string of {} bytes", b.len())
            }
            OwnedFrame::Integer(i) => write!(f, "the integer {i}"),
            OwnedFrame::Null => f.write_str("null"),
            OwnedFrame::Error(e) => write!(f, "the error {e:?}"),
            OwnedFrame::Array(items) => write!(f, "an array of {} elements", items.len()),
        }
    }
}
