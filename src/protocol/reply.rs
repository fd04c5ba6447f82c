//! Framing of upstream replies.
//!
//! keyward does not need to understand most replies, only to know where each one ends: replies
//! are matched to requests by order, so the session must cut the upstream byte stream into
//! whole replies and hand each to the client that asked (and notice pub/sub pushes, which
//! answer nobody). [`ReplyFramer`] does the cutting; the small helpers at the bottom peek into a
//! complete frame for the few facts the session needs.
//!
//! Upstream is Redis and trusted not to be malicious, but a framing bug or a desynchronised
//! connection would silently hand one client another client's data. So the framer is strict
//! wherever strictness is free: it verifies the CRLF after every bulk payload, rejects unknown
//! type bytes, malformed lengths, RESP3 streamed aggregates (which Redis never sends), and a few
//! impossible scalars, and reports them as [`FrameError`] so the connection can be dropped.
//!
//! It is also iterative (an explicit stack of "elements still missing" counters, no recursion,
//! so a deeply nested reply cannot overflow the thread stack), never allocates from a declared
//! count, and resumable: an `LRANGE` of a million elements arriving in a thousand reads is
//! walked once in total, not once per read.

use bytes::Bytes;

use super::request::string2ll;

/// Upstream sent bytes that are not RESP2/RESP3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

/// Longest plausible header line for a length or count (`$`, `*`, `%`, ...): `-` plus 19 digits
/// fits in 20 bytes; anything much longer without a `\r` is a desync, reported early instead of
/// buffering garbage.
const MAX_HEADER_LINE: usize = 64;

/// Incremental framer: finds where the next complete reply ends, resuming across calls.
///
/// Contract: between calls returning `Ok(None)` the caller passes the same buffer, possibly with
/// more bytes appended. (A shorter buffer is detected and rescanned from the start.)
#[derive(Debug, Default)]
pub struct ReplyFramer {
    /// Length of the prefix of the current reply already walked: the start of the next element
    /// header, or of a bulk payload when `bulk` is set.
    offset: usize,
    /// Where the search for the current header line's `\r` resumes.
    scan: usize,
    /// A bulk header was read; its payload of this many bytes (plus CRLF) starts at `offset`.
    bulk: Option<usize>,
    /// For each open aggregate, outermost first: how many elements it still lacks (never 0).
    stack: Vec<u64>,
}

impl ReplyFramer {
    pub fn new() -> Self {
        ReplyFramer::default()
    }

    /// Length of the complete reply at the start of `buf`, or `Ok(None)` when more bytes are
    /// needed. After `Some(n)` the caller removes `n` bytes from the front before calling again.
    ///
    /// A RESP3 attribute (`|`) is not a reply by itself: it and the value it annotates form
    /// one frame, both at top level and inside aggregates.
    pub fn next_frame_len(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        if self.offset > buf.len() || self.scan > buf.len() {
            self.reset();
        }
        loop {
            if let Some(len) = self.bulk {
                let end = self
                    .offset
                    .checked_add(len)
                    .filter(|end| end.checked_add(2).is_some())
                    .ok_or_else(|| FrameError(format!("bulk length {len} is too large")))?;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err(FrameError(format!(
                        "bulk payload of {len} bytes at offset {} is not followed by CRLF",
                        self.offset
                    )));
                }
                self.bulk = None;
                self.offset = end + 2;
                self.scan = self.offset;
                if let Some(n) = self.value_done() {
                    return Ok(Some(n));
                }
                continue;
            }

            let start = self.offset;
            let Some(&kind) = buf.get(start) else {
                return Ok(None);
            };
            if !is_known_type(kind) {
                return Err(FrameError(format!(
                    "unknown reply type byte {kind:#04x} ({:?}) at offset {start}",
                    kind as char
                )));
            }
            let from = self.scan.max(start + 1);
            let cr = match buf[from..].iter().position(|&b| b == b'\r') {
                Some(i) => from + i,
                None => {
                    self.scan = buf.len();
                    if has_length(kind) && buf.len() - start > MAX_HEADER_LINE {
                        return Err(long_header(kind, start));
                    }
                    return Ok(None);
                }
            };
            // Checked again here so the outcome does not depend on how the bytes arrived.
            if has_length(kind) && cr - start > MAX_HEADER_LINE {
                return Err(long_header(kind, start));
            }
            self.scan = cr;
            let Some(&lf) = buf.get(cr + 1) else {
                return Ok(None);
            };
            if lf != b'\n' {
                return Err(FrameError(format!(
                    "'{}' line at offset {start} ends in a \\r not followed by \\n",
                    kind as char
                )));
            }
            let line = &buf[start + 1..cr];
            self.offset = cr + 2;
            self.scan = self.offset;

            let done = match kind {
                b'+' | b'-' | b',' | b'(' => true,
                b':' => {
                    if string2ll(line).is_none() {
                        return Err(bad_line(kind, line, start));
                    }
                    true
                }
                b'_' => {
                    if !line.is_empty() {
                        return Err(bad_line(kind, line, start));
                    }
                    true
                }
                b'#' => {
                    if line != b"t" && line != b"f" {
                        return Err(bad_line(kind, line, start));
                    }
                    true
                }
                b'$' | b'!' | b'=' => match parse_len(kind, line, start)? {
                    // Only RESP2's `$-1` is a null bulk; Redis sends no `!-1` or `=-1`.
                    None if kind == b'$' => true,
                    None => return Err(bad_line(kind, line, start)),
                    Some(len) => {
                        self.bulk =
                            Some(usize::try_from(len).map_err(|_| {
                                FrameError(format!("bulk length {len} is too large"))
                            })?);
                        false
                    }
                },
                // Aggregates: `*` `~` `>` hold n elements, `%` holds n key/value pairs, and `|`
                // holds n pairs followed by the value it annotates.
                _ => match parse_len(kind, line, start)? {
                    None if kind == b'*' => true,
                    None => return Err(bad_line(kind, line, start)),
                    Some(n) => {
                        let elements = match kind {
                            b'%' => n.checked_mul(2),
                            b'|' => n.checked_mul(2).and_then(|m| m.checked_add(1)),
                            _ => Some(n),
                        }
                        .ok_or_else(|| bad_line(kind, line, start))?;
                        if elements == 0 {
                            true
                        } else {
                            self.stack.push(elements);
                            false
                        }
                    }
                },
            };
            if done && let Some(n) = self.value_done() {
                return Ok(Some(n));
            }
        }
    }

    /// One value (scalar or whole aggregate) ended at `self.offset`: count it against the
    /// innermost open aggregate, closing aggregates that thereby become complete. Returns the
    /// frame length when the outermost value is complete (and resets for the next frame).
    fn value_done(&mut self) -> Option<usize> {
        loop {
            match self.stack.last_mut() {
                None => {
                    let len = self.offset;
                    self.reset();
                    return Some(len);
                }
                Some(missing) => {
                    *missing -= 1;
                    if *missing > 0 {
                        return None;
                    }
                    self.stack.pop();
                }
            }
        }
    }

    fn reset(&mut self) {
        self.offset = 0;
        self.scan = 0;
        self.bulk = None;
        // Keep a small stack's allocation for the next frame, drop a huge one.
        if self.stack.capacity() > 64 {
            self.stack = Vec::new();
        } else {
            self.stack.clear();
        }
    }
}

fn is_known_type(kind: u8) -> bool {
    matches!(
        kind,
        b'+' | b'-'
            | b':'
            | b'_'
            | b','
            | b'#'
            | b'('
            | b'$'
            | b'!'
            | b'='
            | b'*'
            | b'%'
            | b'~'
            | b'>'
            | b'|'
    )
}

/// Types whose header line is a length or count (and hence short).
fn has_length(kind: u8) -> bool {
    matches!(kind, b'$' | b'!' | b'=' | b'*' | b'%' | b'~' | b'>' | b'|')
}

fn long_header(kind: u8, start: usize) -> FrameError {
    FrameError(format!(
        "'{}' header at offset {start} is longer than {MAX_HEADER_LINE} bytes",
        kind as char
    ))
}

fn bad_line(kind: u8, line: &[u8], start: usize) -> FrameError {
    FrameError(format!(
        "invalid '{}' line {:?} at offset {start}",
        kind as char,
        String::from_utf8_lossy(line)
    ))
}

/// A length or count: `Some(n)` for n >= 0, `None` for -1 (null); anything else, including the
/// RESP3 streamed marker `?`, is an error.
fn parse_len(kind: u8, line: &[u8], start: usize) -> Result<Option<u64>, FrameError> {
    if line == b"?" {
        return Err(FrameError(format!(
            "streamed '{}' reply at offset {start} is not supported (Redis never sends one)",
            kind as char
        )));
    }
    match string2ll(line) {
        Some(-1) => Ok(None),
        Some(n) if n >= 0 => Ok(Some(n as u64)),
        _ => Err(FrameError(format!(
            "invalid '{}' length {:?} at offset {start}",
            kind as char,
            String::from_utf8_lossy(line)
        ))),
    }
}

/// True for a RESP3 push (`>`): out-of-band data such as pub/sub messages, which answers no
/// request and must not be matched to one.
pub fn is_push(frame: &[u8]) -> bool {
    frame.first() == Some(&b'>')
}

/// True for an error reply, simple (`-`) or blob (`!`).
pub fn is_error(frame: &[u8]) -> bool {
    matches!(frame.first(), Some(b'-' | b'!'))
}

/// For an array (`*`) or push (`>`) whose first element is a bulk (`$`) or simple (`+`) string:
/// that string and the aggregate's element count. This is how pub/sub replies are recognised
/// (`subscribe`, `message`, `pong`, ... in the first slot) in both RESP2 and RESP3.
pub fn aggregate_head(frame: &[u8]) -> Option<(&[u8], usize)> {
    let (count, rest) = aggregate_count(frame)?;
    if count == 0 {
        return None;
    }
    match read_element(rest)? {
        (Element::Str(Some(s)), _) => Some((s, count)),
        _ => None,
    }
}

/// For an array (`*`) or push (`>`): the element at `index` if it is an integer (`:`), e.g. the
/// subscription count in `subscribe`/`unsubscribe` replies. The elements before it are walked
/// and may only be bulk strings (null included), simple strings or integers; anything else
/// (aggregates, RESP3 scalars) gives `None`, as do out-of-range indexes and truncated frames.
pub fn aggregate_int_at(frame: &[u8], index: usize) -> Option<i64> {
    let (count, mut rest) = aggregate_count(frame)?;
    if index >= count {
        return None;
    }
    for _ in 0..index {
        let (_, used) = read_element(rest)?;
        rest = &rest[used..];
    }
    match read_element(rest)? {
        (Element::Int(n), _) => Some(n),
        _ => None,
    }
}

/// The text of a simple string frame `+text\r\n`.
pub fn simple_string(frame: &[u8]) -> Option<&[u8]> {
    match read_element(frame)? {
        (Element::Str(Some(s)), used) if frame[0] == b'+' && used == frame.len() => Some(s),
        _ => None,
    }
}

/// The value of an integer frame `:n\r\n`.
pub fn integer(frame: &[u8]) -> Option<i64> {
    match read_element(frame)? {
        (Element::Int(n), used) if used == frame.len() => Some(n),
        _ => None,
    }
}

/// The elements of an array, set or push frame, each as its own complete frame (slices of
/// `frame`, no copy): how a cluster fan-out takes the per-node replies apart to combine them.
/// `None` for any other frame, or when an element is not complete.
pub fn elements(frame: &Bytes) -> Option<Vec<Bytes>> {
    let kind = *frame.first()?;
    if !matches!(kind, b'*' | b'~' | b'>') {
        return None;
    }
    let header_end = frame.windows(2).position(|w| w == b"\r\n")?;
    let count: i64 = std::str::from_utf8(&frame[1..header_end])
        .ok()?
        .parse()
        .ok()?;
    let count = usize::try_from(count).ok()?;
    let mut pos = header_end + 2;
    let mut out = Vec::with_capacity(count.min(1024));
    let mut framer = ReplyFramer::new();
    for _ in 0..count {
        let len = framer.next_frame_len(&frame[pos..]).ok()??;
        out.push(frame.slice(pos..pos + len));
        pos += len;
    }
    Some(out)
}

/// The payload of a bulk-string frame (`$3\r\nabc\r\n`, or a RESP3 verbatim or simple
/// string's text); None for anything else, nil included.
pub fn bulk_string(frame: &[u8]) -> Option<&[u8]> {
    match *frame.first()? {
        b'+' => simple_string(frame),
        b'$' => {
            let header_end = memchr::memmem::find(frame, b"\r\n")?;
            let len: usize = std::str::from_utf8(&frame[1..header_end])
                .ok()?
                .parse()
                .ok()?;
            frame.get(header_end + 2..header_end + 2 + len)
        }
        _ => None,
    }
}

/// The text of an error frame, without `-` and CRLF: for log lines and for error replies that
/// quote a node's error.
pub fn error_text(frame: &[u8]) -> String {
    let body = frame.get(1..).unwrap_or_default();
    String::from_utf8_lossy(body).trim_end().to_string()
}

/// The simple elements the helpers can step over.
enum Element<'a> {
    /// A bulk or simple string; `None` for the null bulk `$-1` or the RESP3 null `_`.
    Str(Option<&'a [u8]>),
    Int(i64),
}

/// The line at the start of `buf` up to its CRLF, and the bytes after the CRLF.
fn split_line(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let cr = buf.iter().position(|&b| b == b'\r')?;
    if buf.get(cr + 1) != Some(&b'\n') {
        return None;
    }
    Some((&buf[..cr], &buf[cr + 2..]))
}

/// Reads one `$`, `+` or `:` element from the start of `buf`: the element and its encoded size.
fn read_element(buf: &[u8]) -> Option<(Element<'_>, usize)> {
    let (&kind, body) = buf.split_first()?;
    let (line, rest) = split_line(body)?;
    let header = buf.len() - rest.len();
    match kind {
        b'+' => Some((Element::Str(Some(line)), header)),
        // RESP3 null, e.g. the channel of an `unsubscribe` confirmation with nothing to drop.
        b'_' if line.is_empty() => Some((Element::Str(None), header)),
        b':' => Some((Element::Int(string2ll(line)?), header)),
        b'$' => match string2ll(line)? {
            -1 => Some((Element::Str(None), header)),
            n => {
                let len = usize::try_from(n).ok()?;
                let payload = rest.get(..len)?;
                if rest.get(len..len.checked_add(2)?)? != b"\r\n" {
                    return None;
                }
                Some((Element::Str(Some(payload)), header + len + 2))
            }
        },
        _ => None,
    }
}

/// The element count of an array or push frame, and the bytes after its header.
fn aggregate_count(frame: &[u8]) -> Option<(usize, &[u8])> {
    let (&kind, body) = frame.split_first()?;
    if kind != b'*' && kind != b'>' {
        return None;
    }
    let (line, rest) = split_line(body)?;
    let count = usize::try_from(string2ll(line)?).ok()?;
    Some((count, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_of_arrays() {
        let frame = Bytes::from_static(b"*3\r\n$1\r\na\r\n$-1\r\n*1\r\n:1\r\n");
        let e = elements(&frame).unwrap();
        assert_eq!(e.len(), 3);
        assert_eq!(&e[1][..], b"$-1\r\n");
        assert_eq!(&e[2][..], b"*1\r\n:1\r\n");
        assert_eq!(&crate::protocol::write::array(&e)[..], &frame[..]);
        assert!(elements(&Bytes::from_static(b"-ERR x\r\n")).is_none());
    }

    #[test]
    fn error_texts_lose_the_dash_and_the_line_end() {
        assert_eq!(error_text(b"-ERR wrong type\r\n"), "ERR wrong type");
        assert_eq!(error_text(b""), "");
    }

    /// Frames everything in `input`, feeding it `chunk` bytes at a time like a socket would;
    /// returns the frame lengths and the error, if any.
    fn frames_chunked(input: &[u8], chunk: usize) -> (Vec<usize>, Option<FrameError>) {
        let mut f = ReplyFramer::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            loop {
                match f.next_frame_len(&buf) {
                    Ok(Some(n)) => {
                        out.push(n);
                        buf.drain(..n);
                    }
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        (out, None)
    }

    fn frames(input: &[u8]) -> (Vec<usize>, Option<FrameError>) {
        frames_chunked(input, input.len())
    }

    /// Asserts `input` is exactly one complete frame, with every chunking, and that every
    /// proper prefix is incomplete.
    fn assert_one_frame(input: &[u8]) {
        for chunk in [input.len(), 1, 2, 3, 7] {
            assert_eq!(
                frames_chunked(input, chunk),
                (vec![input.len()], None),
                "{:?} chunk {chunk}",
                String::from_utf8_lossy(input)
            );
        }
        for cut in 0..input.len() {
            assert_eq!(
                ReplyFramer::new().next_frame_len(&input[..cut]),
                Ok(None),
                "{:?} cut {cut}",
                String::from_utf8_lossy(input)
            );
        }
    }

    fn assert_error(input: &[u8]) -> String {
        let (_, err) = frames(input);
        let err =
            err.unwrap_or_else(|| panic!("no error for {:?}", String::from_utf8_lossy(input)));
        // Chunked feeding reports it too.
        assert!(frames_chunked(input, 1).1.is_some());
        err.0
    }

    #[test]
    fn scalar_types() {
        for frame in [
            &b"+OK\r\n"[..],
            b"+\r\n",
            b"-ERR unknown command\r\n",
            b":0\r\n",
            b":-42\r\n",
            b":9223372036854775807\r\n",
            b"_\r\n",
            b",3.14\r\n",
            b",-inf\r\n",
            b",nan\r\n",
            b"#t\r\n",
            b"#f\r\n",
            b"(3492890328409238509324850943850943825024385\r\n",
            b"$5\r\nhello\r\n",
            b"$0\r\n\r\n",
            b"$-1\r\n",
            b"$4\r\na\r\nb\r\n",
            b"!21\r\nSYNTAX invalid syntax\r\n",
            b"=15\r\ntxt:Some string\r\n",
        ] {
            assert_one_frame(frame);
        }
    }

    #[test]
    fn aggregates() {
        for frame in [
            &b"*0\r\n"[..],
            b"*-1\r\n",
            b"*2\r\n$3\r\nfoo\r\n$-1\r\n",
            b"*3\r\n:1\r\n*2\r\n+a\r\n*0\r\n_\r\n",
            b"~2\r\n+a\r\n+b\r\n",
            b"~0\r\n",
            b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n",
            b"%0\r\n",
            b"*2\r\n*2\r\n*2\r\n:1\r\n:2\r\n*0\r\n*1\r\n*1\r\n*1\r\n$1\r\nx\r\n",
            b"%2\r\n+first\r\n:1\r\n+second\r\n*2\r\n#t\r\n,1.5\r\n",
        ] {
            assert_one_frame(frame);
        }
    }

    #[test]
    fn maps_count_two_elements_per_entry() {
        let map = b"%2\r\n+a\r\n:1\r\n+b\r\n:2\r\n";
        assert_one_frame(map);
        // With only n (not 2n) elements present the map is incomplete.
        assert_eq!(
            ReplyFramer::new().next_frame_len(b"%2\r\n+a\r\n:1\r\n"),
            Ok(None)
        );
        // Two maps back to back are two frames.
        let mut two = map.to_vec();
        two.extend_from_slice(b"%1\r\n+k\r\n+v\r\n");
        assert_eq!(frames(&two), (vec![map.len(), 12], None));
    }

    #[test]
    fn attributes_prefix_the_value() {
        let top = b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n";
        assert_one_frame(top);
        // Inside an aggregate the attribute does not count as an element.
        let nested = b"*2\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n:2\r\n";
        assert_one_frame(nested);
        assert_eq!(
            ReplyFramer::new().next_frame_len(b"*2\r\n:1\r\n|1\r\n+ttl\r\n:3600\r\n"),
            Ok(None)
        );
        // Empty and chained attributes.
        assert_one_frame(b"|0\r\n+OK\r\n");
        assert_one_frame(b"|1\r\n+a\r\n+b\r\n|1\r\n+c\r\n+d\r\n:7\r\n");
        // An attribute alone is not a frame.
        assert_eq!(
            ReplyFramer::new().next_frame_len(b"|1\r\n+a\r\n+b\r\n"),
            Ok(None)
        );
    }

    #[test]
    fn pipeline_and_chunking_agree() {
        let mut input = Vec::new();
        let mut lens = Vec::new();
        for frame in [
            &b"+OK\r\n"[..],
            b"*3\r\n$3\r\nfoo\r\n%1\r\n+k\r\n~1\r\n:1\r\n_\r\n",
            b"$-1\r\n",
            b"-ERR x\r\n",
            b">2\r\n+pong\r\n$0\r\n\r\n",
            b"|1\r\n+a\r\n+b\r\n$3\r\nxyz\r\n",
            b"=8\r\ntxt:\r\n\r\n\r\n",
            b"*-1\r\n",
            b"#f\r\n",
        ] {
            input.extend_from_slice(frame);
            lens.push(frame.len());
        }
        input.extend_from_slice(b"*2\r\n:1\r\n"); // incomplete tail
        for chunk in 1..=input.len() {
            assert_eq!(
                frames_chunked(&input, chunk),
                (lens.clone(), None),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn errors() {
        for bad in [
            &b"?\r\n"[..],
            b"x\r\n",
            b"\r\n",
            b"*?\r\n",
            b"$?\r\n",
            b"~?\r\n",
            b"$-2\r\n",
            b"$abc\r\n",
            b"$01\r\n",
            b"$+1\r\n",
            b"$\r\n",
            b"*-2\r\n",
            b"*x\r\n",
            b"%-1\r\n",
            b"~-1\r\n",
            b">-1\r\n",
            b"|-1\r\n",
            b"!-1\r\n",
            b"=-1\r\n",
            b"$3\r\nabcde\r\n",
            b"$3\r\nabc\n\r",
            b"+OK\rX",
            b":abc\r\n",
            b":\r\n",
            b"#x\r\n",
            b"#\r\n",
            b"_x\r\n",
            b"*1\r\n;3\r\n",
        ] {
            assert_error(bad);
        }
        assert!(assert_error(b"*?\r\n").contains("streamed"));
        assert!(assert_error(b"?\r\n").contains("unknown reply type"));
        assert!(assert_error(b"$3\r\nabcde\r\n").contains("CRLF"));
        // Garbage without a line end is reported once it is clearly not a header.
        let mut long = b"$".to_vec();
        long.extend(std::iter::repeat_n(b'1', 100));
        assert!(assert_error(&long).contains("longer"));
        long.extend_from_slice(b"\r\n");
        assert!(assert_error(&long).contains("longer"));
        // ... but a long simple string is fine.
        let mut text = b"+".to_vec();
        text.extend(std::iter::repeat_n(b'x', 100_000));
        assert_eq!(ReplyFramer::new().next_frame_len(&text), Ok(None));
        text.extend_from_slice(b"\r\n");
        assert_eq!(ReplyFramer::new().next_frame_len(&text), Ok(Some(100_003)));
    }

    #[test]
    fn deep_nesting_is_iterative() {
        let mut input = b"*1\r\n".repeat(200_000);
        input.extend_from_slice(b":1\r\n");
        assert_eq!(frames(&input), (vec![input.len()], None));
        let mut input = b"|1\r\n+a\r\n+b\r\n".repeat(100_000);
        input.extend_from_slice(b"+v\r\n");
        assert_eq!(frames(&input), (vec![input.len()], None));
    }

    #[test]
    fn huge_declared_count_does_not_allocate() {
        let mut f = ReplyFramer::new();
        assert_eq!(
            f.next_frame_len(b"*9223372036854775807\r\n:1\r\n"),
            Ok(None)
        );
        assert_eq!(f.stack, vec![9223372036854775806]);
        // The largest counts still fit the u64 counters (2n + 1 <= u64::MAX).
        let mut f = ReplyFramer::new();
        assert_eq!(f.next_frame_len(b"|9223372036854775807\r\n"), Ok(None));
        assert_eq!(f.stack, vec![u64::MAX]);
    }

    #[test]
    fn large_reply_in_pieces_is_linear() {
        let mut input = b"*1000000\r\n".to_vec();
        for i in 0..1_000_000 {
            input.extend_from_slice(format!("${}\r\nv{i}\r\n", format!("v{i}").len()).as_bytes());
        }
        let mut big = b"$10000000\r\n".to_vec();
        big.extend(std::iter::repeat_n(b'z', 10_000_000));
        big.extend_from_slice(b"\r\n");
        let first = input.len();
        input.extend_from_slice(&big);
        let start = std::time::Instant::now();
        assert_eq!(frames_chunked(&input, 4096), (vec![first, big.len()], None));
        assert!(start.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn state_resets_after_a_frame() {
        let mut f = ReplyFramer::new();
        assert_eq!(f.next_frame_len(b"*2\r\n:1\r\n"), Ok(None));
        assert_eq!(f.next_frame_len(b"*2\r\n:1\r\n:2\r\n+OK\r\n"), Ok(Some(12)));
        assert_eq!(f.next_frame_len(b"+OK\r\n"), Ok(Some(5)));
        assert_eq!(f.next_frame_len(b""), Ok(None));
        // A caller that shrinks the buffer mid-frame gets a rescan, not a panic.
        assert_eq!(f.next_frame_len(b"$10\r\n01234"), Ok(None));
        assert_eq!(f.next_frame_len(b":7\r\n"), Ok(Some(4)));
    }

    #[test]
    fn push_and_error_predicates() {
        assert!(is_push(b">2\r\n+a\r\n+b\r\n"));
        assert!(!is_push(b"*2\r\n+a\r\n+b\r\n"));
        assert!(!is_push(b""));
        assert!(is_error(b"-ERR x\r\n"));
        assert!(is_error(b"!3\r\nERR\r\n"));
        assert!(!is_error(b"+OK\r\n"));
        assert!(!is_error(b""));
    }

    #[test]
    fn aggregate_head_cases() {
        assert_eq!(
            aggregate_head(b"*3\r\n$9\r\nsubscribe\r\n$3\r\nfoo\r\n:1\r\n"),
            Some((&b"subscribe"[..], 3))
        );
        assert_eq!(
            aggregate_head(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n"),
            Some((&b"message"[..], 3))
        );
        assert_eq!(
            aggregate_head(b"*2\r\n+pong\r\n$0\r\n\r\n"),
            Some((&b"pong"[..], 2))
        );
        assert_eq!(
            aggregate_head(b"*1\r\n$4\r\na\r\nb\r\n"),
            Some((&b"a\r\nb"[..], 1))
        );
        assert_eq!(aggregate_head(b"*1\r\n:1\r\n"), None);
        assert_eq!(aggregate_head(b"*1\r\n$-1\r\n"), None);
        assert_eq!(aggregate_head(b"*1\r\n*0\r\n"), None);
        assert_eq!(aggregate_head(b"*0\r\n"), None);
        assert_eq!(aggregate_head(b"*-1\r\n"), None);
        assert_eq!(aggregate_head(b"~1\r\n+a\r\n"), None);
        assert_eq!(aggregate_head(b"%1\r\n+a\r\n+b\r\n"), None);
        assert_eq!(aggregate_head(b"+OK\r\n"), None);
        assert_eq!(aggregate_head(b""), None);
        // Truncated or malformed frames give None, never a panic.
        assert_eq!(aggregate_head(b"*1\r\n$5\r\nab"), None);
        assert_eq!(aggregate_head(b"*1\r\n$2\r\nabXY"), None);
        assert_eq!(aggregate_head(b"*1\r\n$99999999999999999\r\n"), None);
        assert_eq!(aggregate_head(b"*x\r\n+a\r\n"), None);
        assert_eq!(aggregate_head(b"*1"), None);
    }

    #[test]
    fn aggregate_int_at_cases() {
        let sub = b"*3\r\n$9\r\nsubscribe\r\n$3\r\nfoo\r\n:1\r\n";
        assert_eq!(aggregate_int_at(sub, 2), Some(1));
        assert_eq!(aggregate_int_at(sub, 0), None);
        assert_eq!(aggregate_int_at(sub, 1), None);
        assert_eq!(aggregate_int_at(sub, 3), None);
        assert_eq!(aggregate_int_at(sub, usize::MAX), None);
        // Null bulk and simple strings may precede; so may integers.
        let unsub = b">3\r\n+unsubscribe\r\n$-1\r\n:0\r\n";
        assert_eq!(aggregate_int_at(unsub, 2), Some(0));
        assert_eq!(aggregate_int_at(b"*3\r\n:5\r\n:-6\r\n:7\r\n", 1), Some(-6));
        // Anything more complex in front gives None.
        assert_eq!(aggregate_int_at(b"*2\r\n*0\r\n:1\r\n", 1), None);
        // The RESP3 null counts as a null string (unsubscribe with nothing subscribed).
        assert_eq!(aggregate_int_at(b"*2\r\n_\r\n:1\r\n", 1), Some(1));
        assert_eq!(aggregate_int_at(b"*2\r\n%0\r\n:1\r\n", 1), None);
        // Not an array/push, or truncated.
        assert_eq!(aggregate_int_at(b"~1\r\n:1\r\n", 0), None);
        assert_eq!(aggregate_int_at(b":1\r\n", 0), None);
        assert_eq!(aggregate_int_at(b"*2\r\n$3\r\nfoo\r\n", 1), None);
        assert_eq!(aggregate_int_at(b"*2\r\n$3\r\nfoo\r\n:1", 1), None);
    }

    #[test]
    fn simple_string_and_integer() {
        assert_eq!(simple_string(b"+OK\r\n"), Some(&b"OK"[..]));
        assert_eq!(simple_string(b"+\r\n"), Some(&b""[..]));
        assert_eq!(simple_string(b"+QUEUED\r\n"), Some(&b"QUEUED"[..]));
        assert_eq!(simple_string(b"+OK\r\n+OK\r\n"), None);
        assert_eq!(simple_string(b"+OK"), None);
        assert_eq!(simple_string(b"$2\r\nOK\r\n"), None);
        assert_eq!(simple_string(b"-ERR\r\n"), None);
        assert_eq!(simple_string(b""), None);
        assert_eq!(integer(b":1\r\n"), Some(1));
        assert_eq!(integer(b":-9223372036854775808\r\n"), Some(i64::MIN));
        assert_eq!(integer(b":0\r\n"), Some(0));
        assert_eq!(integer(b":\r\n"), None);
        assert_eq!(integer(b":1x\r\n"), None);
        assert_eq!(integer(b":1\r\n:2\r\n"), None);
        assert_eq!(integer(b":1"), None);
        assert_eq!(integer(b"+1\r\n"), None);
        assert_eq!(integer(b""), None);
    }
}
