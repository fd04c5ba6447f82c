//! A request's arguments as positions in its bytes.
//!
//! Every argument of a scanned request is a run of bytes inside the request's own buffer, so
//! keyward keeps only where each one starts and ends. An earlier version kept a `Bytes` per
//! argument: each of those is a reference-count increment when made and a decrement when
//! dropped, and for a 1000-key `REMOVEKEYS` the 2000 atomic operations and the 32 KB vector of
//! handles were a third of keyward's instructions on the request (callgrind). [`Args`] is a
//! borrowed view that hands out plain slices; a caller that needs to keep one argument beyond
//! the request takes it with [`Args::bytes`].

use std::fmt;
use std::ops::{Index, Range};

use bytes::Bytes;

/// Where one argument's payload is in the request's bytes: `start..end`.
pub type Span = (usize, usize);

/// The arguments of one request (or a run of them, see [`Args::from`]): slices of `raw`.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    raw: &'a Bytes,
    spans: &'a [Span],
}

impl<'a> Args<'a> {
    /// The view of `spans` in `raw`. Every span must lie inside `raw` (the scanner and the
    /// encoders of this module's users guarantee it); a span that does not reads as empty
    /// rather than panicking.
    pub(crate) fn new(raw: &'a Bytes, spans: &'a [Span]) -> Self {
        Args { raw, spans }
    }

    pub fn len(self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(self) -> bool {
        self.spans.is_empty()
    }

    /// Argument `i`, if there is one.
    pub fn get(self, i: usize) -> Option<&'a [u8]> {
        self.spans.get(i).map(|&span| slice_of(self.raw, span))
    }

    pub fn first(self) -> Option<&'a [u8]> {
        self.get(0)
    }

    /// The arguments from `i` on (`args[i..]`); empty when `i` is past the end.
    pub fn from(self, i: usize) -> Args<'a> {
        self.range(i.min(self.len())..self.len())
    }

    /// The arguments `range` (`args[range]`); panics like slicing when it is out of bounds.
    pub fn range(self, range: Range<usize>) -> Args<'a> {
        Args {
            raw: self.raw,
            spans: &self.spans[range],
        }
    }

    pub fn iter(self) -> Iter<'a> {
        Iter {
            raw: self.raw,
            spans: self.spans.iter(),
        }
    }

    /// These arguments kept beyond the request: the request's bytes, shared (one reference
    /// count), and a copy of the positions; not one `Bytes` per argument.
    pub fn owned(self) -> OwnedArgs {
        OwnedArgs {
            raw: self.raw.clone(),
            spans: self.spans.to_vec(),
        }
    }

    /// Argument `i` as `Bytes` of its own (a reference-counted slice of the request), for a
    /// caller that keeps it after the request is gone.
    pub fn bytes(self, i: usize) -> Bytes {
        self.raw.slice_ref(slice_of(self.raw, self.spans[i]))
    }

    /// One run of the request's bytes that holds every one of these arguments, or `None` when
    /// there are none. Between the arguments it holds their RESP headers and separators, so a
    /// byte found in it may lie outside every argument; a byte *not* found in it is in none of
    /// them. That is what lets the guard search 1000 keys for a wildcard in one pass.
    pub fn covering(self) -> Option<&'a [u8]> {
        let (start, _) = *self.spans.first()?;
        let (_, end) = *self.spans.last()?;
        self.raw.get(start..end)
    }

    /// Whether `f` holds for the first byte of some argument (None for an empty one). Reads
    /// one byte per argument, without making the argument's slice: a check of a thousand keys'
    /// first bytes is then about as cheap as the guard's one search over all of them.
    #[inline]
    pub fn any_first_byte(self, mut f: impl FnMut(Option<u8>) -> bool) -> bool {
        let raw: &[u8] = self.raw;
        self.spans.iter().any(|&(start, end)| {
            let first = if start < end {
                raw.get(start).copied()
            } else {
                None
            };
            f(first)
        })
    }

    /// The arguments as slices, in a vector: for code that needs `&[&[u8]]`.
    pub fn to_vec(self) -> Vec<&'a [u8]> {
        self.iter().collect()
    }
}

fn slice_of(raw: &Bytes, (start, end): Span) -> &[u8] {
    raw.get(start..end).unwrap_or_default()
}

impl Index<usize> for Args<'_> {
    type Output = [u8];

    fn index(&self, i: usize) -> &[u8] {
        slice_of(self.raw, self.spans[i])
    }
}

impl<'a> IntoIterator for Args<'a> {
    type Item = &'a [u8];
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl PartialEq for Args<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Args<'_> {}

impl fmt::Debug for Args<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|a| String::from_utf8_lossy(a)))
            .finish()
    }
}

/// Arguments that outlive their [`Request`](super::request::Request) (see [`Args::owned`]).
#[derive(Debug, Clone)]
pub struct OwnedArgs {
    raw: Bytes,
    spans: Vec<Span>,
}

impl OwnedArgs {
    /// Arguments made by keyward itself (a delete the HTTP API asks for): `parts` laid end to
    /// end in one buffer, so that they are checked and sent as a client's would be.
    pub fn from_parts<P: AsRef<[u8]>>(parts: &[P]) -> OwnedArgs {
        let total = parts.iter().map(|p| p.as_ref().len()).sum();
        let mut raw = Vec::with_capacity(total);
        let mut spans = Vec::with_capacity(parts.len());
        for part in parts {
            let start = raw.len();
            raw.extend_from_slice(part.as_ref());
            spans.push((start, raw.len()));
        }
        OwnedArgs {
            raw: Bytes::from(raw),
            spans,
        }
    }

    pub fn args(&self) -> Args<'_> {
        Args::new(&self.raw, &self.spans)
    }
}

/// The arguments one after the other, as slices.
#[derive(Clone)]
pub struct Iter<'a> {
    raw: &'a Bytes,
    spans: std::slice::Iter<'a, Span>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let raw = self.raw;
        self.spans.next().map(|&span| slice_of(raw, span))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.spans.size_hint()
    }
}

impl DoubleEndedIterator for Iter<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let raw = self.raw;
        self.spans.next_back().map(|&span| slice_of(raw, span))
    }
}

impl ExactSizeIterator for Iter<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Bytes, Vec<Span>) {
        // "*3\r\n$3\r\nDEL\r\n$1\r\na\r\n$2\r\nbc\r\n"
        let raw = Bytes::from_static(b"*3\r\n$3\r\nDEL\r\n$1\r\na\r\n$2\r\nbc\r\n");
        (raw, vec![(8, 11), (17, 18), (24, 26)])
    }

    #[test]
    fn indexing_slicing_and_iteration_agree() {
        let (raw, spans) = sample();
        let args = Args::new(&raw, &spans);
        assert_eq!(args.len(), 3);
        assert_eq!(&args[0], b"DEL");
        assert_eq!(args.get(2), Some(&b"bc"[..]));
        assert_eq!(args.get(3), None);
        assert_eq!(args.to_vec(), [&b"DEL"[..], b"a", b"bc"]);
        assert_eq!(args.from(1).to_vec(), [&b"a"[..], b"bc"]);
        assert!(args.from(7).is_empty());
        assert_eq!(args.range(1..2).to_vec(), [&b"a"[..]]);
        assert_eq!(args.iter().next_back(), Some(&b"bc"[..]));
        assert_eq!(args.bytes(1), Bytes::from_static(b"a"));
        let kept = args.from(1).owned();
        assert_eq!(kept.args().to_vec(), [&b"a"[..], b"bc"]);
    }

    #[test]
    fn covering_holds_every_argument_and_only_headers_between() {
        let (raw, spans) = sample();
        let args = Args::new(&raw, &spans);
        assert_eq!(args.from(1).covering(), Some(&b"a\r\n$2\r\nbc"[..]));
        assert_eq!(args.range(1..2).covering(), Some(&b"a"[..]));
        assert_eq!(args.from(3).covering(), None);
    }

    #[test]
    fn a_span_outside_the_bytes_reads_as_empty() {
        let raw = Bytes::from_static(b"abc");
        let spans = [(1, 9)];
        let args = Args::new(&raw, &spans);
        assert_eq!(&args[0], b"");
        assert_eq!(args.covering(), None);
    }
}
