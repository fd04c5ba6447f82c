//! The client request scanner.
//!
//! keyward sits between untrusted clients and Redis and must decide, per command, whether it may
//! run. That decision is only sound if keyward splits the byte stream into commands *exactly* as
//! Redis 7.0.15 would: if the two disagreed about where one command ends, a client could smuggle
//! a command past the guard (keyward sees one thing, Redis executes another). The scanner is
//! therefore a faithful re-implementation of `processInputBuffer`, `processMultibulkBuffer`,
//! `processInlineBuffer` (networking.c) and `sdssplitargs` (sds.c), quirks included:
//!
//! * The request type is decided by the first byte alone: `*` means RESP multibulk, anything else
//!   is an inline command line.
//! * Line terminators are found the way Redis finds them, with `strchr` on a NUL-terminated
//!   buffer. A NUL byte before the terminator therefore hides it: Redis keeps waiting (until the
//!   64 KiB "too big" check fires), and so do we.
//! * After a count line's `\r` and after a bulk's payload, Redis skips two bytes *without*
//!   checking that they are `\r\n`; so do we, and [`Request::raw`] keeps the client's original
//!   bytes so that Redis re-parses them into the same arguments.
//! * Numbers are parsed with Redis's strict `string2ll` ([`string2ll`] here).
//!
//! Redis's `unauthenticated multibulk/bulk length` caps apply while a client has not logged in
//! to keyward ([`RequestScanner::set_unauthenticated`]). Deliberate differences: keyward adds its
//! own cap on the declared argument count ([`ScanLimits::max_args`]), and it applies `max_args`
//! and `max_bulk_len` to inline requests too (Redis has no such limits for them), answering
//! Redis's `too big inline request`.
//!
//! Because the input is hostile the scanner never recurses, never panics, never allocates from a
//! declared count (argument positions start with room for at most 1024 and grow as arguments
//! really arrive), and keeps its progress between calls so that every byte is examined O(1)
//! times no matter how the request is fragmented.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use smallvec::SmallVec;

use super::args::{Args, Span};

/// The argument positions of one request. Most requests have a few arguments (`GET k`,
/// `SET k v`): those are kept inline, so that scanning them allocates nothing; a heap vector
/// only for more (callgrind, 50 clients pipelining GETs: the allocation and its release were a
/// tenth of keyward's instructions per request).
type Spans = SmallVec<[Span; 4]>;

/// Limits that bound what one client can make keyward buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanLimits {
    /// Largest bulk string accepted (Redis `proto-max-bulk-len`, default 512 MiB); also the
    /// largest argument of an inline request.
    pub max_bulk_len: usize,
    /// Largest declared argument count accepted; also the most arguments of an inline request.
    pub max_args: usize,
    /// Largest size of one not-yet-complete request (Redis `client-query-buffer-limit`, 1 GiB).
    pub max_query_buffer: usize,
}

impl Default for ScanLimits {
    fn default() -> Self {
        ScanLimits {
            max_bulk_len: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            max_query_buffer: 1024 * 1024 * 1024,
        }
    }
}

/// One complete client request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The bytes to send upstream: the client's own bytes for RESP requests, a RESP array
    /// re-encoded from the parsed arguments for inline requests. Private, like `spans`: the
    /// argument positions are only right for these exact bytes.
    raw: Bytes,
    /// Where each argument (command name first) lies in `raw`. Never empty.
    spans: Spans,
    /// True when the client typed an inline command.
    pub inline: bool,
}

impl Request {
    /// The bytes to send upstream (see the field).
    pub fn raw(&self) -> &Bytes {
        &self.raw
    }

    /// The bytes to send upstream, for sending.
    pub fn into_raw(self) -> Bytes {
        self.raw
    }

    /// The arguments, command name first: slices of [`raw`](Self::raw).
    pub fn args(&self) -> Args<'_> {
        Args::new(&self.raw, &self.spans)
    }

    /// Where each argument lies in [`raw`](Self::raw), as `(start, end)` byte offsets, in
    /// order: the positions behind [`args`](Self::args), for code that checks them (the fuzz
    /// checks of the scanner's invariants).
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The request a client would send for `args` (at least one): the RESP array of them.
    pub fn from_args<A: AsRef<[u8]>>(args: &[A]) -> Request {
        encode(args, false)
    }

    /// The same request under another command name (`REMOVEKEYS k...` → `UNLINK k...`). The
    /// arguments after the name are passed on as the client sent them, without re-encoding:
    /// only the array header and the name are new.
    pub fn renamed(&self, name: &[u8]) -> Request {
        let (head, rest) = self.renamed_parts(name);
        let name_start = head.len() - name.len() - 2;
        // Every later argument moves by the same distance as the end of the name.
        let old_rest = self.raw.len() - rest.len();
        let spans =
            std::iter::once((name_start, name_start + name.len()))
                .chain(self.spans.iter().skip(1).map(|&(start, end)| {
                    (start - old_rest + head.len(), end - old_rest + head.len())
                }))
                .collect();
        let mut raw = BytesMut::with_capacity(head.len() + rest.len());
        raw.extend_from_slice(&head);
        raw.extend_from_slice(&rest);
        Request {
            raw: raw.freeze(),
            spans,
            inline: self.inline,
        }
    }

    /// The bytes of [`renamed`](Self::renamed) as two pieces to be written one after the
    /// other: the new array header and name, and the rest of the client's bytes, shared, not
    /// copied (a 1000-key `REMOVEKEYS` is about 27 KB).
    pub fn renamed_parts(&self, name: &[u8]) -> (Bytes, Bytes) {
        // The rest starts after the name's payload and its two trailing bytes (which Redis
        // skips unchecked, so they are replaced rather than kept).
        let rest = self
            .spans
            .first()
            .map_or(self.raw.len(), |&(_, name_end)| name_end + 2)
            .min(self.raw.len());
        let mut head = BytesMut::with_capacity(32 + name.len());
        head.put_u8(b'*');
        put_decimal(&mut head, self.spans.len().max(1));
        head.put_slice(b"\r\n$");
        put_decimal(&mut head, name.len());
        head.put_slice(b"\r\n");
        head.put_slice(name);
        head.put_slice(b"\r\n");
        (head.freeze(), self.raw.slice(rest..))
    }
}

/// A protocol violation; the connection is answered with `-{message}` and closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProtocolError {
    /// Redis's own error text for the case, without the leading `-` and trailing CRLF,
    /// e.g. `ERR Protocol error: invalid bulk length`.
    Redis(String),
    /// The buffered request grew over `max_query_buffer`.
    QueryBufferLimit { limit: usize },
}

impl ProtocolError {
    /// The error line sent to the client, without `-` and CRLF.
    pub fn message(&self) -> String {
        match self {
            ProtocolError::Redis(m) => m.clone(),
            ProtocolError::QueryBufferLimit { limit } => {
                format!("ERR Protocol error: query buffer exceeds the limit of {limit} bytes")
            }
        }
    }
}

/// Redis's `PROTO_INLINE_MAX_SIZE`: how many bytes may be buffered while a line's terminator is
/// still missing. Redis applies it to inline requests, count lines and bulk headers alike, and
/// only while the terminator has not been seen (a longer line arriving at once is accepted).
const PROTO_INLINE_MAX_SIZE: usize = 64 * 1024;

/// Upper bound on the argument vector's initial capacity, as Redis does (`min(multibulklen,
/// 1024)`): a client may *declare* a million arguments in six bytes; memory is only spent on
/// arguments that actually arrive.
const MAX_INITIAL_ARGS: usize = 1024;

/// Redis's `LONG_STR_SIZE`: `string2ll` rejects inputs of this length or longer.
const LONG_STR_SIZE: usize = 21;

const ERR_TOO_BIG_MBULK: &str = "ERR Protocol error: too big mbulk count string";
const ERR_INVALID_MBULK: &str = "ERR Protocol error: invalid multibulk length";
const ERR_TOO_BIG_BULK: &str = "ERR Protocol error: too big bulk count string";
const ERR_INVALID_BULK: &str = "ERR Protocol error: invalid bulk length";
const ERR_TOO_BIG_INLINE: &str = "ERR Protocol error: too big inline request";
const ERR_UNBALANCED: &str = "ERR Protocol error: unbalanced quotes in request";
const ERR_UNAUTH_MBULK: &str = "ERR Protocol error: unauthenticated multibulk length";
const ERR_UNAUTH_BULK: &str = "ERR Protocol error: unauthenticated bulk length";

/// Redis's caps for a client that has not authenticated yet: at most this many arguments...
const UNAUTHENTICATED_MAX_ARGS: usize = 10;
/// ...of at most this many bytes each.
const UNAUTHENTICATED_MAX_BULK_LEN: usize = 16 * 1024;

fn redis_err(msg: &str) -> ProtocolError {
    ProtocolError::Redis(msg.to_owned())
}

/// Where the scanner is inside the request that starts at `buf[0]`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Between requests: the next byte decides inline vs multibulk.
    #[default]
    Idle,
    /// Looking for the `\n` that ends an inline request.
    Inline,
    /// Looking for the `\r` that ends the `*<count>` line.
    Count,
    /// Looking for the `\r` that ends a `$<len>` header at `pos`; `remaining` arguments are
    /// still missing, including this one.
    BulkHeader { remaining: usize },
    /// Waiting for `len` payload bytes plus two trailing bytes at `pos`.
    BulkBody { remaining: usize, len: usize },
}

/// Incremental scanner; keeps its progress across calls so a large request is not rescanned.
///
/// Contract: between calls that return `Ok(None)` the caller may only *append* to the buffer
/// (that is what a socket read does). If the buffer became shorter than what was already
/// scanned, the scanner notices and harmlessly starts over; it never panics.
#[derive(Debug, Default)]
pub struct RequestScanner {
    limits: ScanLimits,
    state: State,
    /// Offset in `buf` of the next unparsed piece (a bulk header or payload) of the current
    /// request; the request itself always starts at offset 0.
    pos: usize,
    /// Offset in `buf` where the search for the current line's terminator resumes, so that a
    /// line arriving byte by byte is searched once, not once per call.
    scan: usize,
    /// Payload ranges (`start..end` in `buf`) of the arguments read so far.
    args: Spans,
    /// The client has not authenticated to keyward yet: Redis's much smaller caps apply.
    unauthenticated: bool,
}

impl RequestScanner {
    pub fn new(limits: ScanLimits) -> Self {
        RequestScanner {
            limits,
            ..RequestScanner::default()
        }
    }

    /// Applies new limits (a configuration reload), from the next request on.
    pub fn set_limits(&mut self, limits: ScanLimits) {
        self.limits = limits;
    }

    /// Applies (or lifts) Redis's caps for unauthenticated clients: at most 10 arguments of at
    /// most 16 KiB each, with Redis's error texts. Takes effect from the next request header.
    pub fn set_unauthenticated(&mut self, unauthenticated: bool) {
        self.unauthenticated = unauthenticated;
    }

    /// Takes the next complete request off the front of `buf`. `Ok(None)`: need more bytes.
    /// Empty requests (`*0`, `*-1`, blank inline lines) are consumed and skipped.
    ///
    /// RESP requests are split off `buf` without copying: `raw` is the client's exact bytes and
    /// every argument is a run of them (see [`Request::args`]). Inline requests are re-encoded
    /// as a RESP array so that upstream executes exactly the arguments keyward parsed (and
    /// vetted).
    ///
    /// After an error the connection must be closed; the scanner's state is then unspecified.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Request>, ProtocolError> {
        if self.pos > buf.len() || self.scan > buf.len() {
            // The caller broke the append-only contract; rescanning from the start is always
            // correct, just slower.
            self.reset();
        }
        loop {
            match self.state {
                State::Idle => {
                    let Some(&first) = buf.first() else {
                        return Ok(None);
                    };
                    self.pos = 0;
                    self.scan = 0;
                    self.state = if first == b'*' {
                        State::Count
                    } else {
                        State::Inline
                    };
                }
                State::Inline => {
                    let newline = match strchr(buf, self.scan, b'\n') {
                        Ok(newline) => newline,
                        Err(resume) => {
                            self.scan = resume;
                            if buf.len() > PROTO_INLINE_MAX_SIZE {
                                return Err(redis_err(ERR_TOO_BIG_INLINE));
                            }
                            return self.incomplete(buf);
                        }
                    };
                    // Redis strips exactly one `\r` in front of the `\n`.
                    let end = if newline > 0 && buf[newline - 1] == b'\r' {
                        newline - 1
                    } else {
                        newline
                    };
                    let args = split_args(&buf[..end]).ok_or_else(|| redis_err(ERR_UNBALANCED))?;
                    // The same limits as for RESP requests: without this an inline command
                    // carried more arguments, or longer ones, than the configuration allows.
                    if args.len() > self.limits.max_args
                        || args.iter().any(|a| a.len() > self.limits.max_bulk_len)
                    {
                        return Err(redis_err(ERR_TOO_BIG_INLINE));
                    }
                    buf.advance(newline + 1);
                    self.reset();
                    if !args.is_empty() {
                        return Ok(Some(encode(&args, true)));
                    }
                }
                State::Count => {
                    let cr = match self.find_cr(buf, ERR_TOO_BIG_MBULK)? {
                        Some(cr) => cr,
                        None => return self.incomplete(buf),
                    };
                    // `buf[0]` is the `*`. Anything over i32::MAX is rejected by Redis; over
                    // `max_args` by us, with the same text so clients see Redis's behaviour.
                    let count = match string2ll(&buf[1..cr]) {
                        Some(n) if n <= i64::from(i32::MAX) => n,
                        _ => return Err(redis_err(ERR_INVALID_MBULK)),
                    };
                    if count <= 0 {
                        buf.advance(cr + 2);
                        self.reset();
                        continue;
                    }
                    let count = usize::try_from(count).map_err(|_| redis_err(ERR_INVALID_MBULK))?;
                    if self.unauthenticated && count > UNAUTHENTICATED_MAX_ARGS {
                        return Err(redis_err(ERR_UNAUTH_MBULK));
                    }
                    if count > self.limits.max_args {
                        return Err(redis_err(ERR_INVALID_MBULK));
                    }
                    self.args.reserve(count.min(MAX_INITIAL_ARGS));
                    self.pos = cr + 2;
                    self.scan = self.pos;
                    self.state = State::BulkHeader { remaining: count };
                }
                State::BulkHeader { remaining } => {
                    match self.take_plain_bulks(buf, remaining) {
                        Quick::Done => return Ok(Some(self.finish(buf))),
                        Quick::Continue(state) => {
                            self.state = state;
                            if state != (State::BulkHeader { remaining }) {
                                continue;
                            }
                        }
                    }
                    let cr = match self.find_cr(buf, ERR_TOO_BIG_BULK)? {
                        Some(cr) => cr,
                        None => return self.incomplete(buf),
                    };
                    let kind = buf[self.pos];
                    if kind != b'$' {
                        return Err(ProtocolError::Redis(format!(
                            "ERR Protocol error: expected '$', got '{}'",
                            kind as char
                        )));
                    }
                    let len = match string2ll(&buf[self.pos + 1..cr]) {
                        Some(n) => usize::try_from(n)
                            .ok()
                            .filter(|&n| n <= self.limits.max_bulk_len),
                        None => None,
                    }
                    .ok_or_else(|| redis_err(ERR_INVALID_BULK))?;
                    if self.unauthenticated && len > UNAUTHENTICATED_MAX_BULK_LEN {
                        return Err(redis_err(ERR_UNAUTH_BULK));
                    }
                    self.pos = cr + 2;
                    self.scan = self.pos;
                    self.state = State::BulkBody { remaining, len };
                }
                State::BulkBody { remaining, len } => {
                    // `len + 2` bytes: Redis skips the two bytes after the payload unchecked.
                    let end = self.pos.saturating_add(len);
                    let next = end.saturating_add(2);
                    if buf.len() < next {
                        return self.incomplete(buf);
                    }
                    self.args.push((self.pos, end));
                    self.pos = next;
                    self.scan = next;
                    if remaining > 1 {
                        self.state = State::BulkHeader {
                            remaining: remaining - 1,
                        };
                        continue;
                    }
                    return Ok(Some(self.finish(buf)));
                }
            }
        }
    }

    /// The request whose last argument ends at `self.pos`, split off the front of `buf`.
    fn finish(&mut self, buf: &mut BytesMut) -> Request {
        let raw = buf.split_to(self.pos).freeze();
        let spans = std::mem::take(&mut self.args);
        self.reset();
        Request {
            raw,
            spans,
            inline: false,
        }
    }

    /// Takes the arguments at `self.pos` that are whole in `buf` and whose headers have the
    /// form nearly every client sends (see [`plain_bulk_header`]), in one tight loop: the state
    /// machine's way cost about 170 instructions per argument (callgrind, 1000-key deletes),
    /// and a request with many arguments spends most of keyward's time here. Stops at the
    /// first header it leaves to the general way, or at a payload not all here yet.
    fn take_plain_bulks(&mut self, buf: &[u8], mut remaining: usize) -> Quick {
        let max = if self.unauthenticated {
            UNAUTHENTICATED_MAX_BULK_LEN.min(self.limits.max_bulk_len)
        } else {
            self.limits.max_bulk_len
        };
        let mut pos = self.pos;
        let outcome = loop {
            let Some((len, payload)) = plain_bulk_header(buf, pos, max) else {
                break Quick::Continue(State::BulkHeader { remaining });
            };
            // At most nine digits: no overflow.
            let end = payload + len;
            if buf.len() < end + 2 {
                pos = payload;
                break Quick::Continue(State::BulkBody { remaining, len });
            }
            self.args.push((payload, end));
            // Redis skips the two bytes after the payload unchecked.
            pos = end + 2;
            remaining -= 1;
            if remaining == 0 {
                break Quick::Done;
            }
        };
        // Only when something was taken: otherwise `scan` holds how far the general way has
        // already searched this header for its `\r`, and resetting it would make a header
        // that arrives byte by byte cost quadratic time.
        if pos != self.pos {
            self.pos = pos;
            self.scan = pos;
        }
        outcome
    }

    /// Searches for the `\r` ending the line at `self.pos` (count line or bulk header), with
    /// Redis's rules: no `\r` yet and more than 64 KiB buffered from the line start is the error
    /// `too_big`; the `\r` must be followed by one more (unchecked) byte. `Ok(None)`: wait.
    fn find_cr(&mut self, buf: &[u8], too_big: &str) -> Result<Option<usize>, ProtocolError> {
        match strchr(buf, self.scan, b'\r') {
            Err(resume) => {
                self.scan = resume;
                if buf.len() - self.pos > PROTO_INLINE_MAX_SIZE {
                    return Err(redis_err(too_big));
                }
                Ok(None)
            }
            Ok(cr) => {
                // Remember the `\r` so the next call does not search again.
                self.scan = cr;
                if cr + 2 > buf.len() {
                    Ok(None)
                } else {
                    Ok(Some(cr))
                }
            }
        }
    }

    /// The answer when the request at the front of `buf` is not complete yet: wait, unless the
    /// client has already made us buffer more than the query-buffer limit.
    fn incomplete(&self, buf: &[u8]) -> Result<Option<Request>, ProtocolError> {
        if buf.len() > self.limits.max_query_buffer {
            return Err(ProtocolError::QueryBufferLimit {
                limit: self.limits.max_query_buffer,
            });
        }
        Ok(None)
    }

    fn reset(&mut self) {
        self.state = State::Idle;
        self.pos = 0;
        self.scan = 0;
        // A finished request took the positions with it; this only drops those of a request
        // given up on.
        self.args = Spans::new();
    }
}

/// The result of [`RequestScanner::take_plain_bulks`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Quick {
    /// The request's last argument was taken; it ends at the scanner's `pos`.
    Done,
    /// Go on in this state at the scanner's `pos`.
    Continue(State),
}

/// The bulk header at `pos` when it is in the form nearly every client sends, `$`, one to nine
/// digits without a leading zero (or just `0`), `\r` and at least one more byte, and its length
/// is at most `max`: `(length, offset of the payload)`. Anything else, including a header not
/// all here yet, is `None` and goes the general way, which gives the same answer for these
/// headers (the search for `\r` cannot stop earlier at a NUL among digits) and Redis's errors
/// for the others.
fn plain_bulk_header(buf: &[u8], pos: usize, max: usize) -> Option<(usize, usize)> {
    const MAX_DIGITS: usize = 9;
    let header = buf.get(pos..)?;
    if *header.first()? != b'$' {
        return None;
    }
    let mut len = 0usize;
    let mut cr = 1;
    loop {
        match *header.get(cr)? {
            digit @ b'0'..=b'9' if cr <= MAX_DIGITS => {
                len = len * 10 + usize::from(digit - b'0');
                cr += 1;
            }
            b'\r' if cr > 1 => break,
            _ => return None,
        }
    }
    // A leading zero is only valid as the whole number (`$0`).
    if header[1] == b'0' && cr > 2 {
        return None;
    }
    // One byte after the `\r` must be there, as for Redis.
    (len <= max && cr + 2 <= header.len()).then_some((len, pos + cr + 2))
}

/// C `strchr` over Redis's NUL-terminated query buffer, starting at `from`: `Ok(index)` of the
/// first `needle`, or `Err(resume)` when it is not there (yet). A NUL byte ends the search just
/// like the end of the buffer does; `resume` then points at that NUL so that later calls stop
/// there again at O(1) cost (Redis, too, never sees past it).
fn strchr(buf: &[u8], from: usize, needle: u8) -> Result<usize, usize> {
    let tail = buf.get(from..).unwrap_or_default();
    match tail.iter().position(|&b| b == needle || b == 0) {
        Some(i) if tail[i] == needle => Ok(from + i),
        Some(i) => Err(from + i),
        None => Err(buf.len()),
    }
}

/// Redis's `string2ll` (util.c): the strict integer syntax Redis accepts for counts and lengths.
/// Optional `-`, then digits with no leading zero (except the single digit `0`), nothing else
/// (no `+`, no spaces, not empty, not `-0`), shorter than 21 bytes, and within `i64`.
pub(crate) fn string2ll(s: &[u8]) -> Option<i64> {
    if s.is_empty() || s.len() >= LONG_STR_SIZE {
        return None;
    }
    if s == b"0" {
        return Some(0);
    }
    let (negative, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if negative {
        // |i64::MIN| = i64::MAX + 1 is allowed; `wrapping_neg` maps 2^63 to i64::MIN.
        if v > i64::MAX as u64 + 1 {
            return None;
        }
        Some((v as i64).wrapping_neg())
    } else {
        i64::try_from(v).ok()
    }
}

/// C `isspace` in the "C" locale (bytes >= 0x80 are not spaces).
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Double,
    Single,
}

/// Splits an inline command line exactly like Redis's `sdssplitargs` (sds.c); `None` is its
/// `NULL` ("unbalanced quotes"). The rules, with their quirks:
///
/// * Blanks between arguments are anything `isspace` accepts (including `\v` and `\f`), but an
///   unquoted argument only ends at space, `\t`, `\r`, `\n` (so `a\vb` is one argument).
/// * A quote may open in the middle of an argument: `ab"c d"` is the one argument `abc d`.
/// * In double quotes: `\xHH` (two hex digits), `\n \r \t \b \a`, and `\<any>` for that byte.
/// * In single quotes only `\'` is an escape; every other byte, backslashes included, is literal.
/// * A closing quote must be followed by a blank or the end of the line, else it is an error,
///   as is a quote left open.
///
/// Redis runs it on a C string; a NUL ends the line. (The scanner never passes a NUL, since Redis's
/// `strchr` would not have found the line end past one, but the function stays faithful anyway.)
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let line = match line.iter().position(|&b| b == 0) {
        Some(nul) => &line[..nul],
        None => line,
    };
    // Reading past the end yields the C terminator.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while p < line.len() && is_space(line[p]) {
            p += 1;
        }
        if p >= line.len() {
            return Some(args);
        }
        let mut current = Vec::new();
        let mut quote = Quote::None;
        loop {
            let c = at(p);
            match quote {
                Quote::Double => {
                    if c == b'\\'
                        && at(p + 1) == b'x'
                        && let (Some(hi), Some(lo)) = (hex_value(at(p + 2)), hex_value(at(p + 3)))
                    {
                        current.push(hi * 16 + lo);
                        p += 4;
                        continue;
                    }
                    if c == b'\\' && at(p + 1) != 0 {
                        current.push(match at(p + 1) {
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'b' => 0x08,
                            b'a' => 0x07,
                            other => other,
                        });
                        p += 2;
                    } else if c == b'"' {
                        let after = at(p + 1);
                        if after != 0 && !is_space(after) {
                            return None;
                        }
                        p += 1;
                        break;
                    } else if c == 0 {
                        return None;
                    } else {
                        current.push(c);
                        p += 1;
                    }
                }
                Quote::Single => {
                    if c == b'\\' && at(p + 1) == b'\'' {
                        current.push(b'\'');
                        p += 2;
                    } else if c == b'\'' {
                        let after = at(p + 1);
                        if after != 0 && !is_space(after) {
                            return None;
                        }
                        p += 1;
                        break;
                    } else if c == 0 {
                        return None;
                    } else {
                        current.push(c);
                        p += 1;
                    }
                }
                Quote::None => match c {
                    0 => break,
                    b' ' | b'\n' | b'\r' | b'\t' => {
                        p += 1;
                        break;
                    }
                    b'"' => {
                        quote = Quote::Double;
                        p += 1;
                    }
                    b'\'' => {
                        quote = Quote::Single;
                        p += 1;
                    }
                    _ => {
                        current.push(c);
                        p += 1;
                    }
                },
            }
        }
        args.push(current);
    }
}

/// Number of decimal digits of `n` (for sizing the encoding buffer exactly).
fn decimal_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

fn put_decimal(out: &mut BytesMut, n: usize) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut n = n;
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&digits[i..]);
}

/// Builds the request for `args` (at least one): `raw` is the RESP array `*N\r\n$len\r\n...`
/// and the arguments are slices of it. Inline requests are sent upstream this way, so that
/// upstream cannot re-split the line differently from keyward.
fn encode<A: AsRef<[u8]>>(args: &[A], inline: bool) -> Request {
    let size = 3
        + decimal_len(args.len())
        + args
            .iter()
            .map(|a| 5 + decimal_len(a.as_ref().len()) + a.as_ref().len())
            .sum::<usize>();
    let mut out = BytesMut::with_capacity(size);
    let mut spans = Spans::with_capacity(args.len());
    out.put_u8(b'*');
    put_decimal(&mut out, args.len());
    out.put_slice(b"\r\n");
    for arg in args {
        let arg = arg.as_ref();
        out.put_u8(b'$');
        put_decimal(&mut out, arg.len());
        out.put_slice(b"\r\n");
        let start = out.len();
        out.put_slice(arg);
        spans.push((start, out.len()));
        out.put_slice(b"\r\n");
    }
    Request {
        raw: out.freeze(),
        spans,
        inline,
    }
}

#[cfg(test)]
mod rename_tests {
    use super::*;

    #[test]
    fn renamed_keeps_the_arguments_bytes() {
        let mut scanner = RequestScanner::new(ScanLimits::default());
        for input in [
            &b"*3\r\n$10\r\nREMOVEKEYS\r\n$1\r\na\r\n$3\r\nb\r\nc\r\n"[..],
            // Redis skips the two bytes after a payload unchecked; the rename must too.
            b"*3\r\n$10\r\nREMOVEKEYSzz$1\r\na\r\n$3\r\nb\r\nc\r\n",
            b"removekeys a \"b\\r\\nc\"\r\n",
        ] {
            let mut buf = BytesMut::from(input);
            let request = scanner.next(&mut buf).unwrap().unwrap();
            let renamed = request.renamed(b"UNLINK");
            let mut again = BytesMut::from(&renamed.raw[..]);
            let rescanned = scanner.next(&mut again).unwrap().unwrap();
            assert_eq!(&rescanned.args()[0], b"UNLINK");
            assert_eq!(rescanned.args().from(1), request.args().from(1));
            assert_eq!(renamed.args(), rescanned.args());
            assert_eq!(renamed.spans(), rescanned.spans());
            let (head, rest) = request.renamed_parts(b"UNLINK");
            assert_eq!([&head[..], &rest[..]].concat(), renamed.raw);
            assert!(again.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> RequestScanner {
        RequestScanner::new(ScanLimits::default())
    }

    /// Feeds `input` at once and drains every request; returns the requests, the final error
    /// (if any) and what is left in the buffer.
    fn scan_all(
        s: &mut RequestScanner,
        input: &[u8],
    ) -> (Vec<Request>, Option<ProtocolError>, Vec<u8>) {
        scan_chunked(s, input, input.len().max(1))
    }

    fn scan_chunked(
        s: &mut RequestScanner,
        input: &[u8],
        chunk: usize,
    ) -> (Vec<Request>, Option<ProtocolError>, Vec<u8>) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            buf.extend_from_slice(piece);
            loop {
                match s.next(&mut buf) {
                    Ok(Some(r)) => out.push(r),
                    Ok(None) => break,
                    Err(e) => return (out, Some(e), buf.to_vec()),
                }
            }
        }
        (out, None, buf.to_vec())
    }

    fn args_of(r: &Request) -> Vec<&[u8]> {
        r.args().to_vec()
    }

    fn one(input: &[u8]) -> Request {
        let (reqs, err, rest) = scan_all(&mut scanner(), input);
        assert_eq!(err, None, "input {:?}", String::from_utf8_lossy(input));
        assert!(rest.is_empty(), "leftover {rest:?}");
        assert_eq!(reqs.len(), 1);
        reqs.into_iter().next().unwrap()
    }

    fn err_of(input: &[u8]) -> String {
        err_with(scanner(), input)
    }

    fn err_with(mut s: RequestScanner, input: &[u8]) -> String {
        let (_, err, _) = scan_all(&mut s, input);
        err.expect("expected an error").message()
    }

    fn resp(args: &[&[u8]]) -> Vec<u8> {
        let mut v = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            v.extend_from_slice(a);
            v.extend_from_slice(b"\r\n");
        }
        v
    }

    #[test]
    fn string2ll_matches_redis() {
        assert_eq!(string2ll(b"0"), Some(0));
        assert_eq!(string2ll(b"1"), Some(1));
        assert_eq!(string2ll(b"-1"), Some(-1));
        assert_eq!(string2ll(b"1234567890"), Some(1_234_567_890));
        assert_eq!(string2ll(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(string2ll(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"+1",
            b" 1",
            b"1 ",
            b"01",
            b"-0",
            b"00",
            b"1a",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"99999999999999999999",
            b"000000000000000000001",
            b"\x001",
        ] {
            assert_eq!(string2ll(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn simple_resp_request() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nvalue\r\n";
        let r = one(input);
        assert_eq!(args_of(&r), [&b"SET"[..], b"k", b"value"]);
        assert_eq!(&r.raw[..], &input[..]);
        assert!(!r.inline);
    }

    #[test]
    fn args_are_the_payloads_in_raw() {
        let r = one(b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
        assert_eq!(r.spans(), [(8, 11), (17, 20)]);
        let inline = one(b"GET key\r\n");
        assert_eq!(inline.raw, &b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n"[..]);
        assert_eq!(inline.spans(), [(8, 11), (17, 20)]);
    }

    #[test]
    fn binary_args_with_crlf_inside() {
        let arg: &[u8] = b"a\r\nb\0c\r\n*1\r\n$";
        let input = resp(&[b"SET", b"\r\n", arg, b""]);
        let r = one(&input);
        assert_eq!(args_of(&r), [&b"SET"[..], b"\r\n", arg, b""]);
        assert_eq!(&r.raw[..], &input[..]);
    }

    #[test]
    fn pipeline_of_many_requests() {
        let mut input = Vec::new();
        for i in 0..500 {
            input.extend(resp(&[b"SET", format!("k{i}").as_bytes(), b"v"]));
            input.extend_from_slice(format!("GET k{i}\r\n").as_bytes());
        }
        input.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$2\r\nk"); // incomplete tail
        let (reqs, err, rest) = scan_all(&mut scanner(), &input);
        assert_eq!(err, None);
        assert_eq!(reqs.len(), 1000);
        for (i, pair) in reqs.chunks(2).enumerate() {
            let key = format!("k{i}");
            assert_eq!(args_of(&pair[0]), [&b"SET"[..], key.as_bytes(), b"v"]);
            assert!(!pair[0].inline);
            assert_eq!(args_of(&pair[1]), [&b"GET"[..], key.as_bytes()]);
            assert!(pair[1].inline);
        }
        assert_eq!(rest, b"*2\r\n$3\r\nGET\r\n$2\r\nk");
    }

    #[test]
    fn byte_by_byte_equals_one_shot() {
        let mut input = Vec::new();
        input.extend(resp(&[b"SET", b"key", b"a\r\nb"]));
        input.extend_from_slice(b"*0\r\n*-1\r\n\r\n  \r\nPING\n");
        input.extend_from_slice(b"SET a \"hello world\" 'it\\'s'\r\n");
        input.extend(resp(&[b"MSET", b"a", b"1", b"b", b"2"]));
        input.extend_from_slice(b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n");
        input.extend_from_slice(b"*2\r\n$3\r\nGET\r\n$1");
        let whole = scan_all(&mut scanner(), &input);
        assert_eq!(whole.0.len(), 6);
        assert_eq!(whole.1, None);
        for chunk in [1, 2, 3, 5, 7, 13] {
            assert_eq!(
                scan_chunked(&mut scanner(), &input, chunk),
                whole,
                "chunk {chunk}"
            );
        }
        // Same for an input that ends in an error.
        let mut bad = input.clone();
        bad.extend_from_slice(b"\r\nk\r\n*1\r\n+OK\r\n");
        let whole = scan_all(&mut scanner(), &bad);
        assert!(whole.1.is_some());
        for chunk in [1, 2, 3, 5] {
            assert_eq!(
                scan_chunked(&mut scanner(), &bad, chunk),
                whole,
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn empty_multibulk_is_skipped() {
        let (reqs, err, rest) =
            scan_all(&mut scanner(), b"*0\r\n*-1\r\n*-5\r\n*1\r\n$4\r\nPING\r\n");
        assert_eq!(err, None);
        assert!(rest.is_empty());
        assert_eq!(reqs.len(), 1);
        assert_eq!(&reqs[0].raw[..], b"*1\r\n$4\r\nPING\r\n");
        let (reqs, err, rest) = scan_all(&mut scanner(), b"*0\r\n");
        assert_eq!((reqs.len(), err, rest.len()), (0, None, 0));
    }

    #[test]
    fn count_line_needs_the_byte_after_cr() {
        let mut s = scanner();
        let mut buf = BytesMut::from(&b"*0\r"[..]);
        assert_eq!(s.next(&mut buf), Ok(None));
        assert_eq!(&buf[..], b"*0\r");
        buf.extend_from_slice(b"\n");
        assert_eq!(s.next(&mut buf), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn bytes_after_cr_and_payload_are_not_checked() {
        // Redis skips the byte after a count/header `\r` and the two bytes after a payload.
        let r = one(b"*2\rX$3\rYGETab$1\rxkZZ");
        assert_eq!(args_of(&r), [&b"GET"[..], b"k"]);
        let r = one(b"*1\r\r$4\r\rPING\n\n");
        assert_eq!(args_of(&r), [&b"PING"[..]]);
    }

    #[test]
    fn incomplete_leaves_buffer_intact() {
        let input = resp(&[b"SET", b"key", b"value"]);
        for cut in 0..input.len() {
            let mut s = scanner();
            let mut buf = BytesMut::from(&input[..cut]);
            assert_eq!(s.next(&mut buf), Ok(None), "cut {cut}");
            assert_eq!(&buf[..], &input[..cut]);
            buf.extend_from_slice(&input[cut..]);
            let r = s.next(&mut buf).unwrap().unwrap();
            assert_eq!(&r.raw[..], &input[..]);
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn unauthenticated_clients_get_redis_caps_until_lifted() {
        let mut s = scanner();
        s.set_unauthenticated(true);
        let eleven = format!("*11\r\n{}", "$1\r\na\r\n".repeat(11));
        let (_, err, _) = scan_all(&mut s, eleven.as_bytes());
        assert_eq!(
            err.unwrap().message(),
            "ERR Protocol error: unauthenticated multibulk length"
        );
        let mut s = scanner();
        s.set_unauthenticated(true);
        let (_, err, _) = scan_all(&mut s, b"*2\r\n$3\r\nSET\r\n$16385\r\n");
        assert_eq!(
            err.unwrap().message(),
            "ERR Protocol error: unauthenticated bulk length"
        );
        // Ten arguments of 16 KiB pass; lifted, the ordinary limits apply again.
        let mut s = scanner();
        s.set_unauthenticated(true);
        let big = "x".repeat(16 * 1024);
        let ok = format!("*2\r\n$4\r\nAUTH\r\n${}\r\n{big}\r\n", big.len());
        let (reqs, err, _) = scan_all(&mut s, ok.as_bytes());
        assert_eq!((reqs.len(), err), (1, None));
        s.set_unauthenticated(false);
        let (reqs, err, _) = scan_all(&mut s, eleven.as_bytes());
        assert_eq!((reqs.len(), err), (1, None));
    }

    #[test]
    fn multibulk_count_errors() {
        let invalid = "ERR Protocol error: invalid multibulk length";
        for bad in [
            &b"*\r\n"[..],
            b"*abc\r\n",
            b"*+1\r\n",
            b"*01\r\n",
            b"* 1\r\n",
            b"*1 \r\n",
            b"*-0\r\n",
            b"*2147483648\r\n",
            b"*99999999999999999999999\r\n",
        ] {
            assert_eq!(err_of(bad), invalid, "{bad:?}");
        }
        // i32::MAX itself is a valid count for Redis; our max_args rejects it.
        assert_eq!(err_of(b"*2147483647\r\n"), invalid);
        let limits = ScanLimits {
            max_args: 3,
            ..ScanLimits::default()
        };
        assert_eq!(err_with(RequestScanner::new(limits), b"*4\r\n"), invalid);
        let (reqs, err, _) = scan_all(&mut RequestScanner::new(limits), &resp(&[b"a", b"b", b"c"]));
        assert_eq!((reqs.len(), err), (1, None));
    }

    #[test]
    fn huge_declared_count_does_not_preallocate() {
        let mut s = scanner();
        let mut buf = BytesMut::from(&b"*1048576\r\n$4\r\nPING\r\n"[..]);
        assert_eq!(s.next(&mut buf), Ok(None));
        assert!(s.args.capacity() <= MAX_INITIAL_ARGS);
        assert_eq!(s.args.len(), 1);
    }

    #[test]
    fn too_big_mbulk_count_string() {
        let mut input = b"*".to_vec();
        input.extend(std::iter::repeat_n(b'1', PROTO_INLINE_MAX_SIZE - 1));
        let mut s = scanner();
        let mut buf = BytesMut::from(&input[..]);
        assert_eq!(s.next(&mut buf), Ok(None)); // exactly 64 KiB: still waiting
        buf.extend_from_slice(b"1");
        assert_eq!(
            s.next(&mut buf).unwrap_err().message(),
            "ERR Protocol error: too big mbulk count string"
        );
    }

    #[test]
    fn long_count_line_arriving_at_once_is_invalid_not_too_big() {
        let mut input = b"*".to_vec();
        input.extend(std::iter::repeat_n(b'1', 70_000));
        input.extend_from_slice(b"\r\n");
        assert_eq!(
            err_of(&input),
            "ERR Protocol error: invalid multibulk length"
        );
    }

    #[test]
    fn bulk_header_errors() {
        assert_eq!(
            err_of(b"*1\r\n+PING\r\n"),
            "ERR Protocol error: expected '$', got '+'"
        );
        assert_eq!(
            err_of(b"*2\r\n$3\r\nGET\r\n:1\r\n"),
            "ERR Protocol error: expected '$', got ':'"
        );
        assert_eq!(
            err_of(b"*1\r\n*1\r\n$4\r\nPING\r\n"),
            "ERR Protocol error: expected '$', got '*'"
        );
        assert_eq!(
            err_of(b"*1\r\n\r\n"),
            "ERR Protocol error: expected '$', got '\r'"
        );
        assert_eq!(
            err_of(b"*1\r\n\xffabc\r\n"),
            "ERR Protocol error: expected '$', got '\u{ff}'"
        );
        let invalid = "ERR Protocol error: invalid bulk length";
        for bad in [
            &b"*1\r\n$\r\n"[..],
            b"*1\r\n$-1\r\n",
            b"*1\r\n$-5\r\n",
            b"*1\r\n$abc\r\n",
            b"*1\r\n$01\r\n",
            b"*1\r\n$00\r\n",
            b"*1\r\n$+1\r\n",
            b"*1\r\n$1000000000\r\n",
            b"*1\r\n$536870913\r\n",
            b"*1\r\n$9999999999999999999999\r\n",
        ] {
            assert_eq!(err_of(bad), invalid, "{bad:?}");
        }
        // Exactly proto-max-bulk-len is fine (just incomplete).
        let (reqs, err, _) = scan_all(&mut scanner(), b"*1\r\n$536870912\r\n");
        assert_eq!((reqs.len(), err), (0, None));
        let limits = ScanLimits {
            max_bulk_len: 3,
            ..ScanLimits::default()
        };
        assert_eq!(
            err_with(RequestScanner::new(limits), b"*1\r\n$4\r\nPING\r\n"),
            invalid
        );
        assert_eq!(
            scan_all(&mut RequestScanner::new(limits), b"*1\r\n$3\r\nGET\r\n")
                .0
                .len(),
            1
        );
    }

    #[test]
    fn too_big_bulk_count_string() {
        let mut input = b"*2\r\n$3\r\nGET\r\n$".to_vec();
        let header_start = input.len() - 1;
        input.extend(std::iter::repeat_n(b'1', PROTO_INLINE_MAX_SIZE - 1));
        assert_eq!(input.len() - header_start, PROTO_INLINE_MAX_SIZE);
        let mut s = scanner();
        let mut buf = BytesMut::from(&input[..]);
        assert_eq!(s.next(&mut buf), Ok(None));
        buf.extend_from_slice(b"1");
        assert_eq!(
            s.next(&mut buf).unwrap_err().message(),
            "ERR Protocol error: too big bulk count string"
        );
    }

    #[test]
    fn nul_hides_the_line_end_like_strchr() {
        // Redis's strchr stops at the NUL and never sees the `\r`: it keeps waiting.
        for input in [&b"*1\0\r\n"[..], b"*1\r\n$4\0\r\nPING\r\n", b"PING\0\r\n"] {
            let mut s = scanner();
            let mut buf = BytesMut::from(input);
            assert_eq!(s.next(&mut buf), Ok(None), "{input:?}");
            assert_eq!(&buf[..], input);
        }
        // ... until more than 64 KiB is buffered.
        let mut input = b"*1\r\n$4\0\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', PROTO_INLINE_MAX_SIZE));
        assert_eq!(
            err_of(&input),
            "ERR Protocol error: too big bulk count string"
        );
        let mut input = b"GET a\0b\r\n".to_vec();
        input.extend(std::iter::repeat_n(b'\n', PROTO_INLINE_MAX_SIZE));
        assert_eq!(err_of(&input), "ERR Protocol error: too big inline request");
        // NUL bytes inside bulk payloads are just data.
        let r = one(&resp(&[b"SET", b"\0", b"a\0\r\n"]));
        assert_eq!(args_of(&r), [&b"SET"[..], b"\0", b"a\0\r\n"]);
    }

    #[test]
    fn inline_basic() {
        let r = one(b"SET a b\r\n");
        assert_eq!(args_of(&r), [&b"SET"[..], b"a", b"b"]);
        assert!(r.inline);
        assert_eq!(&r.raw[..], b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nb\r\n");
        // A bare `\n` terminates too; blanks around and between are ignored.
        let r = one(b"  GET\t\t key  \n");
        assert_eq!(args_of(&r), [&b"GET"[..], b"key"]);
        assert_eq!(&r.raw[..], b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n");
        // Only one `\r` is stripped; the other is a separator.
        let r = one(b"PING\r\r\n");
        assert_eq!(args_of(&r), [&b"PING"[..]]);
    }

    #[test]
    fn inline_quoting() {
        let r = one(b"SET a \"hello world\"\r\n");
        assert_eq!(args_of(&r), [&b"SET"[..], b"a", b"hello world"]);
        assert_eq!(
            &r.raw[..],
            b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$11\r\nhello world\r\n"
        );
        let r = one(b"\"\\x41\" \"\\x4a\\x4B\" \"\\xZZ\" \"\\x4\"\r\n");
        assert_eq!(args_of(&r), [&b"A"[..], b"JK", b"xZZ", b"x4"]);
        let r = one(b"'it\\'s' 'a\\b\\n' \"\\n\\r\\t\\b\\a\\\\\\\"\\q\"\r\n");
        assert_eq!(
            args_of(&r),
            [&b"it's"[..], b"a\\b\\n", b"\n\r\t\x08\x07\\\"q"]
        );
        let r = one(b"\"\" '' x\r\n");
        assert_eq!(args_of(&r), [&b""[..], b"", b"x"]);
        assert_eq!(&r.raw[..], b"*3\r\n$0\r\n\r\n$0\r\n\r\n$1\r\nx\r\n");
        // Quotes may open mid-argument; quoted blanks are kept.
        let r = one(b"ab\"c d\" e'f g'\r\n");
        assert_eq!(args_of(&r), [&b"abc d"[..], b"ef g"]);
        // `\v`/`\f` are skipped as leading blanks but do not end an unquoted argument.
        let r = one(b"\x0bSET\x0ba \x0cb\r\n");
        assert_eq!(args_of(&r), [&b"SET\x0ba"[..], b"b"]);
        // A closing quote may be followed by any isspace byte, including `\v`.
        let r = one(b"\"a\"\x0b\"b\"\r\n");
        assert_eq!(args_of(&r), [&b"a"[..], b"b"]);
        // High bytes are ordinary argument bytes.
        let r = one(b"SET \xff\xfe \"\xc3\xa9\"\r\n");
        assert_eq!(args_of(&r), [&b"SET"[..], b"\xff\xfe", b"\xc3\xa9"]);
    }

    #[test]
    fn inline_unbalanced_quotes() {
        let unbalanced = "ERR Protocol error: unbalanced quotes in request";
        for bad in [
            &b"SET a \"abc\r\n"[..],
            b"\"a\"b\r\n",
            b"'a'b\r\n",
            b"'abc\r\n",
            b"\"abc\\\"\r\n",
            b"\"abc\\\r\n",
            b"'abc\\'\r\n",
        ] {
            assert_eq!(err_of(bad), unbalanced, "{bad:?}");
        }
        // In single quotes `\\` is literal, so `'it\\'s'` is the balanced `it\'s`.
        let r = one(b"GET 'it\\\\'s'\r\n");
        assert_eq!(args_of(&r), [&b"GET"[..], b"it\\'s"]);
        // The error comes only once the line is complete.
        let mut s = scanner();
        let mut buf = BytesMut::from(&b"\"abc"[..]);
        assert_eq!(s.next(&mut buf), Ok(None));
    }

    #[test]
    fn inline_requests_respect_max_args_and_max_bulk_len() {
        // Found by the request_scanner fuzz target: inline requests were exempt from both
        // limits (`DEL a b c d e f` with max_args 3, a 40-byte argument with max_bulk_len 5).
        let too_big = "ERR Protocol error: too big inline request";
        let limits = ScanLimits {
            max_args: 3,
            max_bulk_len: 5,
            ..ScanLimits::default()
        };
        let scan = |input: &[u8]| scan_all(&mut RequestScanner::new(limits), input);
        let (reqs, err, _) = scan(b"DEL a b\r\nDEL a b c d e f\r\n");
        assert_eq!(reqs.len(), 1);
        assert_eq!(err.unwrap().message(), too_big);
        assert_eq!(scan(b"SET key xxxxxx\r\n").1.unwrap().message(), too_big);
        // Exactly at the limits; quoted arguments are measured after unquoting.
        let (reqs, err, _) = scan(b"SET abcde \"\\x41\\x42\\x43\\x44\\x45\"\r\n");
        assert_eq!((reqs.len(), err), (1, None));
        assert_eq!(args_of(&reqs[0]), [&b"SET"[..], b"abcde", b"ABCDE"]);
        // Blank lines have no arguments to count.
        let limits = ScanLimits {
            max_args: 1,
            max_bulk_len: 0,
            ..ScanLimits::default()
        };
        let (reqs, err, rest) = scan_all(&mut RequestScanner::new(limits), b"  \r\n\n");
        assert_eq!((reqs.len(), err, rest.len()), (0, None, 0));
        // With the default limits a long inline line is still fine (see too_big_inline_request).
    }

    #[test]
    fn blank_inline_lines_are_skipped() {
        let (reqs, err, rest) = scan_all(&mut scanner(), b"\r\n\n  \t \r\n\x0b\x0c\nPING\r\n");
        assert_eq!(err, None);
        assert!(rest.is_empty());
        assert_eq!(reqs.len(), 1);
        assert_eq!(args_of(&reqs[0]), [&b"PING"[..]]);
    }

    #[test]
    fn too_big_inline_request() {
        let mut s = scanner();
        let mut buf = BytesMut::from(&vec![b'a'; PROTO_INLINE_MAX_SIZE][..]);
        assert_eq!(s.next(&mut buf), Ok(None));
        buf.extend_from_slice(b"a");
        assert_eq!(
            s.next(&mut buf).unwrap_err().message(),
            "ERR Protocol error: too big inline request"
        );
        // A long line that arrives complete is accepted, as in Redis.
        let mut line = b"ECHO ".to_vec();
        line.extend(std::iter::repeat_n(b'x', 100_000));
        line.extend_from_slice(b"\r\n");
        let r = one(&line);
        assert_eq!(r.args()[1].len(), 100_000);
    }

    #[test]
    fn query_buffer_limit() {
        let limits = ScanLimits {
            max_query_buffer: 100,
            ..ScanLimits::default()
        };
        let mut s = RequestScanner::new(limits);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(b"*2\r\n$3\r\nSET\r\n$200\r\n");
        buf.extend_from_slice(&[b'x'; 80]);
        assert_eq!(s.next(&mut buf), Ok(None));
        buf.extend_from_slice(&[b'x'; 10]);
        assert_eq!(
            s.next(&mut buf),
            Err(ProtocolError::QueryBufferLimit { limit: 100 })
        );
        assert_eq!(
            ProtocolError::QueryBufferLimit { limit: 100 }.message(),
            "ERR Protocol error: query buffer exceeds the limit of 100 bytes"
        );
        // Complete requests are taken off first; only the incomplete rest counts.
        let mut s = RequestScanner::new(limits);
        let mut input = Vec::new();
        for _ in 0..20 {
            input.extend(resp(&[b"PING"]));
        }
        input.extend_from_slice(b"*1\r\n$4\r\nPI");
        let (reqs, err, _) = scan_all(&mut s, &input);
        assert_eq!((reqs.len(), err), (20, None));
        // Inline too.
        let mut s = RequestScanner::new(limits);
        assert_eq!(
            scan_all(&mut s, &[b'a'; 101]).1,
            Some(ProtocolError::QueryBufferLimit { limit: 100 })
        );
    }

    #[test]
    fn a_bulk_header_arriving_byte_by_byte_is_linear() {
        // A header line without its `\r`, one byte per call, up to Redis's 64 KiB line cap:
        // each call may look at the new byte only (review finding: the quick path once reset
        // the search position on every call, 770 times slower than this).
        for filler in [b'7', b'x'] {
            let mut input = b"*2\r\n$3\r\nGET\r\n$".to_vec();
            input.extend(std::iter::repeat_n(filler, 60_000));
            let start = std::time::Instant::now();
            let (reqs, err, rest) = scan_chunked(&mut scanner(), &input, 1);
            let elapsed = start.elapsed();
            assert_eq!((reqs.len(), err, rest.len()), (0, None, input.len()));
            assert!(
                elapsed < std::time::Duration::from_millis(500),
                "{elapsed:?}"
            );
        }
    }

    #[test]
    fn large_bulk_in_chunks_is_linear() {
        const LEN: usize = 20 * 1024 * 1024;
        let header = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${LEN}\r\n");
        let payload: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        let mut input = header.into_bytes();
        input.extend_from_slice(&payload);
        input.extend_from_slice(b"\r\n");
        input.extend(resp(&[b"PING"]));

        let start = std::time::Instant::now();
        let mut s = scanner();
        let mut buf = BytesMut::with_capacity(input.len());
        let mut out = Vec::new();
        for piece in input.chunks(64 * 1024) {
            buf.extend_from_slice(piece);
            while let Some(r) = s.next(&mut buf).unwrap() {
                out.push(r);
            }
        }
        let elapsed = start.elapsed();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].args()[2].len(), LEN);
        assert!(out[0].args()[2][..] == payload[..]);
        assert_eq!(&out[1].raw[..], b"*1\r\n$4\r\nPING\r\n");
        assert!(elapsed < std::time::Duration::from_secs(5), "{elapsed:?}");
    }

    #[test]
    fn many_args_in_tiny_pieces_is_linear() {
        let args: Vec<Vec<u8>> = (0..20_000)
            .map(|i| format!("arg{i}").into_bytes())
            .collect();
        let refs: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
        let input = resp(&refs);
        let start = std::time::Instant::now();
        let (reqs, err, _) = scan_chunked(&mut scanner(), &input, 3);
        assert_eq!(err, None);
        assert_eq!(reqs.len(), 1);
        assert_eq!(args_of(&reqs[0]), refs);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let input = b"*1\r\n".repeat(100_000);
        assert_eq!(err_of(&input), "ERR Protocol error: expected '$', got '*'");
    }

    #[test]
    fn shrunk_buffer_does_not_panic() {
        let mut s = scanner();
        let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nk"[..]);
        assert_eq!(s.next(&mut buf), Ok(None));
        // Contract violation: the caller replaces the buffer with something shorter.
        let mut other = BytesMut::from(&b"PING\r\n"[..]);
        let r = s.next(&mut other).unwrap().unwrap();
        assert_eq!(args_of(&r), [&b"PING"[..]]);
    }

    #[test]
    fn split_args_direct() {
        assert_eq!(split_args(b""), Some(vec![]));
        assert_eq!(split_args(b"   "), Some(vec![]));
        assert_eq!(split_args(b"a\0b c"), Some(vec![b"a".to_vec()]));
        assert_eq!(split_args(b"\"a\0\""), None);
        assert_eq!(
            split_args(b"a\r\nb"),
            Some(vec![b"a".to_vec(), b"b".to_vec()])
        );
    }

    #[test]
    fn whole_headers_and_headers_in_pieces_give_the_same_requests() {
        // Whole, most headers take the quick way (`plain_bulk_header`); byte by byte, none do.
        let mut many = vec![b"DEL".to_vec()];
        many.extend((0..300).map(|i| format!("key:{i}").into_bytes()));
        let many: Vec<&[u8]> = many.iter().map(|k| &k[..]).collect();
        for input in [
            resp(&many),
            resp(&[b"SET", b"", b"x"]),
            // The two bytes after `\r` and after a payload are skipped unchecked.
            b"*2\r\n$3\rXGETzz$1\r\nk\r\n".to_vec(),
            // A NUL among the digits hides the `\r`: Redis waits, and so do we.
            b"*1\r\n$1\x00\r\nx\r\n".to_vec(),
            b"*2\r\n$3\r\nGET\r\n$123456789\r\nabc".to_vec(),
            b"*1\r\n$4\r".to_vec(),
        ] {
            let whole = scan_all(&mut scanner(), &input);
            let pieces = scan_chunked(&mut scanner(), &input, 1);
            assert_eq!(whole, pieces, "{:?}", String::from_utf8_lossy(&input));
        }
        let (reqs, err, rest) = scan_all(&mut scanner(), &resp(&many));
        assert_eq!((reqs.len(), err, rest.len()), (1, None, 0));
        assert_eq!(reqs[0].args().to_vec(), many);
        let limits = ScanLimits {
            max_bulk_len: 5,
            ..ScanLimits::default()
        };
        let mut s = RequestScanner::new(limits);
        s.set_unauthenticated(true);
        let (reqs, err, _) = scan_all(&mut s, b"*1\r\n$5\r\nhello\r\n*1\r\n$6\r\nhello!\r\n");
        assert_eq!(reqs.len(), 1);
        assert_eq!(
            err.unwrap().message(),
            "ERR Protocol error: invalid bulk length"
        );
    }

    #[test]
    fn encode_sizes_exactly() {
        let args = vec![b"x".repeat(12345), Vec::new(), b"abc".to_vec()];
        let r = encode(&args, true);
        assert_eq!(r.raw.len(), 4 + 8 + 12345 + 2 + 4 + 2 + 4 + 3 + 2);
        assert_eq!(decimal_len(0), 1);
        assert_eq!(decimal_len(9), 1);
        assert_eq!(decimal_len(10), 2);
        assert_eq!(decimal_len(usize::MAX), 20);
    }
}
