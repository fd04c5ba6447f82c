//! Property checks shared by the cargo-fuzz targets in `fuzz/` and by keyward's
//! `tests/fuzz_corpus.rs`, which replays the committed corpora through the same functions on
//! stable Rust.
//!
//! A crate of its own, not a module of keyward, so that test code stays out of keyward's API:
//! keyward has it as a dev-dependency (for `tests/fuzz_corpus.rs` and
//! `tests/cluster_topology.rs`), and `fuzz/` as a dependency. It uses only keyward's public API.
//!
//! Each `check_*` function takes one raw fuzz input, decodes a small configuration from its first
//! bytes, runs the code under test on the rest, and panics with a description when a property
//! does not hold. The input layouts are documented on each function so that seeds can be written
//! by hand (`fuzz/seeds.py` writes the committed ones).
//!
//! Allocation bounds are checked with [`TrackingAlloc`], which a fuzz target or test installs as
//! its global allocator; without it those checks are skipped.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::BytesMut;
use keyward::cluster::topology::{NodeAddr, SLOT_COUNT, SlotMap, TopologyError};
use keyward::protocol::reply::{FrameError, ReplyFramer};
use keyward::protocol::request::{ProtocolError, Request, RequestScanner, ScanLimits};
use redis_protocol::resp2::types::OwnedFrame as Resp2Frame;
use redis_protocol::resp3::types::OwnedFrame as Resp3Frame;

// ---------------------------------------------------------------------------------------------
// Allocation probe
// ---------------------------------------------------------------------------------------------

/// The system allocator, recording per thread the largest single allocation (or reallocation)
/// made while a measurement is running. Install it with
/// `#[global_allocator] static A: keyward_fuzz_checks::TrackingAlloc = TrackingAlloc;`.
///
/// The record is per thread so that tests running in parallel do not see each other's
/// allocations.
pub struct TrackingAlloc;

static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static MEASURING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note_allocation(size: usize) {
    if !INSTALLED.load(Ordering::Relaxed) {
        INSTALLED.store(true, Ordering::Relaxed);
    }
    // `try_with`: allocations can happen while thread-locals are being torn down.
    let _ = MEASURING.try_with(|measuring| {
        if measuring.get() {
            let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
        }
    });
}

// SAFETY: every call is forwarded unchanged to `System`; the bookkeeping touches only
// const-initialised thread-locals without destructors, which never allocate.
unsafe impl GlobalAlloc for TrackingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation(layout.size());
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation(new_size);
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the largest single allocation it made on this thread
/// (0 when [`TrackingAlloc`] is not the global allocator).
pub fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    MEASURING.with(|m| m.set(true));
    let out = f();
    MEASURING.with(|m| m.set(false));
    (out, LARGEST.with(|l| l.get()))
}

/// What any single allocation made while scanning or framing `input_len` bytes may be at most:
/// a fixed allowance (the scanner's first argument vector is up to 1024 entries) plus a small
/// multiple of what was actually received. Anything sized from a *declared* count or length
/// (`*2147483647`, `$536870912`) is far above it.
fn allocation_bound(input_len: usize) -> usize {
    64 * 1024 + 64 * input_len
}

// ---------------------------------------------------------------------------------------------
// Input decoding
// ---------------------------------------------------------------------------------------------

/// Reads configuration bytes off the front of a fuzz input; past the end it reads zeros.
struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    fn byte(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// `n` bytes, or fewer at the end.
    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// Split points: a count byte (`% 9`), that many little-endian `u16`s, and then the payload
    /// they cut (everything left). Returns the payload and the sorted, distinct cut offsets
    /// strictly inside it.
    fn cuts_and_payload(mut self) -> (&'a [u8], Vec<usize>) {
        let n = usize::from(self.byte() % 9);
        let raw: Vec<u16> = (0..n).map(|_| self.u16()).collect();
        let payload = self.data;
        let mut cuts: Vec<usize> = raw
            .into_iter()
            .map(|c| usize::from(c) % (payload.len() + 1))
            .filter(|&c| c > 0 && c < payload.len())
            .collect();
        cuts.sort_unstable();
        cuts.dedup();
        (payload, cuts)
    }
}

/// Cut offsets for feeding `len` bytes in small reads: one byte at a time up to 1 KiB, beyond
/// that reads of 1, 2, 3, 5, 8, 13 and 21 bytes in turn (still thousands of resumptions, at a
/// fraction of the cost, so that the fuzzer keeps its pace on long inputs).
fn small_reads(len: usize) -> Vec<usize> {
    if len <= 1024 {
        return (1..len).collect();
    }
    let mut cuts = Vec::new();
    let mut at = 0;
    for size in [1, 2, 3, 5, 8, 13, 21].into_iter().cycle() {
        at += size;
        if at >= len {
            break;
        }
        cuts.push(at);
    }
    cuts
}

// ---------------------------------------------------------------------------------------------
// The request scanner
// ---------------------------------------------------------------------------------------------

/// Redis's `PROTO_INLINE_MAX_SIZE` (the scanner's private constant of the same name).
const INLINE_MAX: usize = 64 * 1024;

const ERR_TOO_BIG_MBULK: &str = "ERR Protocol error: too big mbulk count string";
const ERR_TOO_BIG_BULK: &str = "ERR Protocol error: too big bulk count string";
const ERR_TOO_BIG_INLINE: &str = "ERR Protocol error: too big inline request";
/// Every error text the scanner may produce besides `expected '$', got 'c'` and the query buffer
/// limit: Redis's own texts for the cases.
const SCANNER_ERRORS: [&str; 6] = [
    ERR_TOO_BIG_MBULK,
    ERR_TOO_BIG_BULK,
    ERR_TOO_BIG_INLINE,
    "ERR Protocol error: invalid multibulk length",
    "ERR Protocol error: invalid bulk length",
    "ERR Protocol error: unbalanced quotes in request",
];

/// The scanner limits for a configuration byte: two bits each pick `max_args`, `max_bulk_len`
/// and `max_query_buffer` from a tiny value, two small ones, and the default.
pub fn scan_limits(config: u8) -> ScanLimits {
    let d = ScanLimits::default();
    let pick = |shift: u8, values: [usize; 4]| values[usize::from((config >> shift) & 3)];
    ScanLimits {
        max_args: pick(0, [1, 3, 16, d.max_args]),
        max_bulk_len: pick(2, [0, 5, 64, d.max_bulk_len]),
        max_query_buffer: pick(4, [16, 100, 2000, d.max_query_buffer]),
    }
}

/// What one way of feeding the input produced.
#[derive(Debug)]
struct ScanRun {
    requests: Vec<Request>,
    error: Option<ProtocolError>,
    /// What was left in the buffer (moot after an error).
    rest: Vec<u8>,
    /// The error is one of those that depend on how much had arrived (see [`check_scan_error`]).
    stopped_by_arrival: bool,
}

/// Checks the request scanner on one fuzz input.
///
/// Layout: `[limits][n][n × u16 cut offsets][payload]`; see [`scan_limits`] and
/// `Input::cuts_and_payload`.
///
/// Properties:
/// * Resumability: feeding the payload whole, cut at the chosen offsets, and in small reads
///   (`small_reads`: one byte at a time up to 1 KiB) gives the same requests, the same error and
///   the same leftover. The exceptions are the errors that by design depend on how much has
///   arrived (the query buffer limit, and Redis's 64 KiB "too big" checks for a line whose end
///   has not arrived yet): then the run that stopped earlier must have seen a prefix of the
///   other's requests.
/// * Every request respects the limits: 1..=`max_args` arguments, each at most `max_bulk_len`
///   bytes, arguments are slices of `raw`, an inline request's `raw` is the canonical RESP
///   encoding of its arguments, and scanning `raw` again gives the same arguments (what Redis
///   executes is what keyward checked).
/// * A request is a function of its own bytes: the bytes it consumed, scanned alone, give exactly
///   that request (and the skipped bytes before a RESP request are empty requests only).
/// * While waiting for more bytes the scanner never holds more than `max_query_buffer`.
/// * Errors are Redis's texts (or keyward's query-buffer text with the configured limit), a
///   size-dependent error only fires when that much is really buffered, and `too big inline
///   request` for less than 64 KiB only for a complete line over `max_args` / `max_bulk_len`.
/// * No single allocation is sized from a declared count or length ([`allocation_bound`]).
pub fn check_request_scanner(data: &[u8]) {
    let mut input = Input { data };
    let limits = scan_limits(input.byte());
    let (payload, cuts) = input.cuts_and_payload();

    let whole = scan_run(limits, payload, &[]);
    let split = scan_run(limits, payload, &cuts);
    compare_scans(&whole, &split, "whole vs split");
    let small = scan_run(limits, payload, &small_reads(payload.len()));
    compare_scans(&whole, &small, "whole vs small reads");
}

fn scan_run(limits: ScanLimits, payload: &[u8], cuts: &[usize]) -> ScanRun {
    let mut scanner = RequestScanner::new(limits);
    let mut buf = BytesMut::new();
    let mut requests = Vec::new();
    let (mut fed, mut consumed, mut largest) = (0, 0, 0);
    for end in cuts.iter().copied().chain(std::iter::once(payload.len())) {
        buf.extend_from_slice(&payload[fed..end]);
        fed = end;
        loop {
            let (outcome, allocated) = largest_allocation(|| scanner.next(&mut buf));
            largest = largest.max(allocated);
            let now = fed - buf.len();
            assert!(now >= consumed, "the scanner un-consumed bytes");
            match outcome {
                Ok(Some(request)) => {
                    assert!(now > consumed, "a request consumed no bytes");
                    check_request(limits, &request, &payload[consumed..now]);
                    requests.push(request);
                    consumed = now;
                }
                Ok(None) => {
                    assert!(
                        buf.len() <= limits.max_query_buffer,
                        "waiting with {} bytes buffered, over max_query_buffer {}",
                        buf.len(),
                        limits.max_query_buffer
                    );
                    consumed = now;
                    break;
                }
                Err(error) => {
                    let stopped_by_arrival = check_scan_error(limits, &error, &buf);
                    check_allocation(largest, payload.len(), "request scanner");
                    return ScanRun {
                        requests,
                        error: Some(error),
                        rest: buf.to_vec(),
                        stopped_by_arrival,
                    };
                }
            }
        }
    }
    check_allocation(largest, payload.len(), "request scanner");
    assert_eq!(
        &buf[..],
        &payload[consumed..],
        "the buffer is not the unread input"
    );
    ScanRun {
        requests,
        error: None,
        rest: buf.to_vec(),
        stopped_by_arrival: false,
    }
}

fn check_allocation(largest: usize, input_len: usize, what: &str) {
    let bound = allocation_bound(input_len);
    assert!(
        largest <= bound,
        "{what}: one allocation of {largest} bytes for {input_len} input bytes (bound {bound})"
    );
}

/// The properties of one accepted request; `span` is exactly the input it consumed (empty
/// requests skipped before it included).
fn check_request(limits: ScanLimits, request: &Request, span: &[u8]) {
    let args = request.args();
    assert!(!args.is_empty(), "a request without arguments");
    assert!(
        args.len() <= limits.max_args,
        "{} arguments accepted with max_args {} (inline: {})",
        args.len(),
        limits.max_args,
        request.inline
    );
    for arg in args {
        assert!(
            arg.len() <= limits.max_bulk_len,
            "an argument of {} bytes accepted with max_bulk_len {} (inline: {})",
            arg.len(),
            limits.max_bulk_len,
            request.inline
        );
    }
    // Every argument lies inside raw, in order and without overlap: the guard's one-pass
    // wildcard search over the run that covers a request's keys relies on it.
    let mut after_previous = 0;
    for &(start, end) in request.spans() {
        assert!(
            after_previous <= start && start <= end && end <= request.raw().len(),
            "argument span {start}..{end} is not inside raw ({} bytes) after the previous \
             argument (ending at {after_previous})",
            request.raw().len()
        );
        after_previous = end;
    }
    if request.inline {
        assert_eq!(
            span.last(),
            Some(&b'\n'),
            "an inline request not ended by \\n"
        );
        assert_eq!(
            &request.raw()[..],
            &keyward::protocol::write::command(&args[0], &args.from(1).to_vec())[..],
            "inline raw is not the RESP encoding of its arguments"
        );
    } else {
        assert!(
            span.ends_with(request.raw()),
            "a RESP request's raw is not the client's bytes"
        );
        let skipped = &span[..span.len() - request.raw().len()];
        let alone = scan_once(limits, skipped);
        assert!(
            alone.requests.is_empty() && alone.error.is_none() && alone.rest.is_empty(),
            "bytes skipped before a request are not empty requests: {skipped:?}"
        );
    }
    // The request is a function of its own bytes.
    let alone = scan_once(limits, span);
    assert!(
        alone.error.is_none() && alone.rest.is_empty() && alone.requests.len() == 1,
        "the request's own bytes scanned alone give {alone:?}"
    );
    assert_eq!(
        &alone.requests[0], request,
        "scanned alone: another request"
    );
    // What goes upstream parses to what was checked.
    let again = scan_once(limits, request.raw());
    assert!(
        again.error.is_none() && again.rest.is_empty() && again.requests.len() == 1,
        "raw scanned again gives {again:?}"
    );
    assert_eq!(
        again.requests[0].args(),
        request.args(),
        "raw re-scans differently"
    );
    assert_eq!(again.requests[0].raw(), request.raw());
}

/// Scans `bytes` given at once, without the run checks (used inside them).
fn scan_once(limits: ScanLimits, bytes: &[u8]) -> ScanRun {
    let mut scanner = RequestScanner::new(limits);
    let mut buf = BytesMut::from(bytes);
    let mut requests = Vec::new();
    loop {
        match scanner.next(&mut buf) {
            Ok(Some(r)) => requests.push(r),
            Ok(None) => {
                return ScanRun {
                    requests,
                    error: None,
                    rest: buf.to_vec(),
                    stopped_by_arrival: false,
                };
            }
            Err(e) => {
                return ScanRun {
                    requests,
                    error: Some(e),
                    rest: buf.to_vec(),
                    stopped_by_arrival: false,
                };
            }
        }
    }
}

/// Is the error one the scanner may give, given what was buffered when it gave it? Returns
/// whether it is one of the errors that depend on how much has arrived.
fn check_scan_error(limits: ScanLimits, error: &ProtocolError, buf: &[u8]) -> bool {
    let buffered = buf.len();
    match error {
        ProtocolError::QueryBufferLimit { limit } => {
            assert_eq!(
                *limit, limits.max_query_buffer,
                "query buffer error names another limit"
            );
            assert!(
                buffered > *limit,
                "query buffer limit {limit} reported with {buffered} bytes buffered"
            );
            true
        }
        ProtocolError::Redis(text) if text == ERR_TOO_BIG_INLINE && buffered <= INLINE_MAX => {
            // Not the 64 KiB check: a complete inline line over max_args or max_bulk_len.
            let relaxed = ScanLimits {
                max_args: usize::MAX,
                max_bulk_len: usize::MAX,
                ..limits
            };
            let line = scan_once(relaxed, buf);
            let over = line.requests.first().is_some_and(|r| {
                r.inline
                    && (r.args().len() > limits.max_args
                        || r.args().iter().any(|a| a.len() > limits.max_bulk_len))
            });
            assert!(
                over,
                "{text:?} with {buffered} bytes buffered for a line within the limits: {buf:?}"
            );
            false
        }
        ProtocolError::Redis(text) => {
            let too_big =
                [ERR_TOO_BIG_MBULK, ERR_TOO_BIG_BULK, ERR_TOO_BIG_INLINE].contains(&text.as_str());
            if too_big {
                assert!(
                    buffered > INLINE_MAX,
                    "{text:?} with only {buffered} bytes buffered"
                );
            }
            let expected_dollar = text
                .strip_prefix("ERR Protocol error: expected '$', got '")
                .and_then(|rest| rest.strip_suffix('\''))
                .is_some_and(|got| {
                    let mut chars = got.chars();
                    matches!((chars.next(), chars.next()), (Some(c), None) if c != '$' && u32::from(c) < 256)
                });
            assert!(
                expected_dollar || SCANNER_ERRORS.contains(&text.as_str()),
                "not a Redis error text: {text:?}"
            );
            too_big
        }
    }
}

fn compare_scans(a: &ScanRun, b: &ScanRun, what: &str) {
    if !a.stopped_by_arrival && !b.stopped_by_arrival {
        assert_eq!(a.requests, b.requests, "{what}: different requests");
        assert_eq!(a.error, b.error, "{what}: different errors");
        if a.error.is_none() {
            assert_eq!(a.rest, b.rest, "{what}: different leftovers");
        }
        return;
    }
    let (short, long) = if a.requests.len() <= b.requests.len() {
        (a, b)
    } else {
        (b, a)
    };
    assert!(
        long.requests.starts_with(&short.requests),
        "{what}: the requests differ before a size-dependent error"
    );
    if short.requests.len() < long.requests.len() {
        assert!(
            short.stopped_by_arrival,
            "{what}: one run stopped early with {:?}",
            short.error
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The reply framer
// ---------------------------------------------------------------------------------------------

/// What one way of feeding a reply stream produced.
#[derive(Debug, PartialEq, Eq)]
struct FrameRun {
    frames: Vec<usize>,
    error: Option<FrameError>,
    consumed: usize,
}

/// Checks the upstream reply framer on one fuzz input.
///
/// Layout: `[mode][n][n × u16 cut offsets][payload]`. An even `mode` frames the payload as it is
/// (raw mode); an odd one reads the payload as instructions for [`generate_replies`], which
/// writes well-formed replies (RESP2 and RESP3 types, nesting, attributes, and chains of
/// up to 16,383 nested single-element aggregates) and knows where each one ends; the cut offsets
/// then apply to the generated stream.
///
/// Properties:
/// * Feeding whole, cut at the chosen offsets, and in small reads (`small_reads`: one byte at a
///   time up to 1 KiB) give the same frame lengths and the same error.
/// * The frame lengths add up to exactly the consumed bytes; each frame framed alone is one
///   frame of the same length, and its prefix without the last byte is incomplete; when there
///   is no error the leftover framed alone is incomplete.
/// * No allocation is sized from a declared count ([`allocation_bound`]); deep nesting is
///   handled without recursion: the framing runs happen on a 128 KiB stack ([`FRAMER_STACK`]).
/// * Generated replies are framed exactly where the generator ended them, without error.
/// * Differential oracle, `redis-protocol`'s RESP3 decoder (`streaming::decode_range`, which
///   also takes RESP2 replies), run where it cannot overflow its stack (at most 256 aggregate
///   type bytes in the frame, see [`REFERENCE_MAX_AGGREGATES`]):
///   - a frame the framer accepts is either decoded with exactly the same length or rejected
///     by the reference; the reference never says "incomplete" for it, never a different length;
///   - an incomplete tail is never a complete frame for the reference;
///   - a generated reply (which stays in the subset both accept, see [`generate_replies`]) is
///     decoded by the reference with exactly its length.
///
///   The reference is stricter in ways that do not move frame boundaries, and those rejections
///   are accepted: a RESP2 null (`$-1`, `*-1`) nested in an aggregate (it reads them as RESP3
///   streaming markers), doubles that Rust's `f64` parser rejects, verbatim strings without a
///   `txt`/`mkd` format, aggregates as map keys or set members, attributes on a null or on another
///   attribute. keyward, in turn, is stricter where Redis never sends such bytes, and rejects what
///   the reference takes: non-canonical numbers (`:01`, `*+1`), a `\r` inside a line, bytes after
///   `_`, header lines over 64 bytes, streamed (`?`) aggregates and strings, `HELLO`.
pub fn check_reply_framer(data: &[u8]) {
    let mut input = Input { data };
    let generated = input.byte() & 1 == 1;
    let (payload, cuts) = input.cuts_and_payload();
    let (stream, expected) = if generated {
        let generated = generate_replies(payload);
        let mut stream = Vec::new();
        let mut lens = Vec::new();
        for frame in &generated {
            stream.extend_from_slice(frame);
            lens.push(frame.len());
        }
        (stream, Some((generated, lens)))
    } else {
        (payload.to_vec(), None)
    };
    let cuts: Vec<usize> = if generated {
        // The offsets were chosen against the payload; scale them onto the stream.
        cuts.iter()
            .map(|&c| c * stream.len() / payload.len().max(1))
            .filter(|&c| c > 0 && c < stream.len())
            .collect()
    } else {
        cuts
    };

    let (whole, split, small) = on_stack(FRAMER_STACK, || {
        (
            frame_run(&stream, &[]),
            frame_run(&stream, &cuts),
            frame_run(&stream, &small_reads(stream.len())),
        )
    });
    assert_eq!(split, whole, "whole vs split");
    assert_eq!(small, whole, "whole vs small reads");

    // The reference decoder recurses: it gets a big stack.
    on_stack(DEEP_STACK, || {
        let mut at = 0;
        for &len in &whole.frames {
            let frame = &stream[at..at + len];
            assert_eq!(
                ReplyFramer::new().next_frame_len(frame),
                Ok(Some(len)),
                "a frame framed alone"
            );
            assert_eq!(
                ReplyFramer::new().next_frame_len(&frame[..len - 1]),
                Ok(None),
                "a frame without its last byte"
            );
            match reference_frame_len(frame) {
                Reference::Skipped | Reference::Rejected => {}
                Reference::Complete(n) => {
                    assert_eq!(n, len, "redis-protocol frames {frame:?} differently")
                }
                Reference::Incomplete => {
                    panic!("redis-protocol wants more bytes after frame {frame:?}")
                }
            }
            at += len;
        }
        assert_eq!(
            at, whole.consumed,
            "frame lengths do not add up to the consumed bytes"
        );
        if whole.error.is_none() {
            let tail = &stream[at..];
            assert_eq!(
                ReplyFramer::new().next_frame_len(tail),
                Ok(None),
                "the leftover"
            );
            if let Reference::Complete(n) = reference_frame_len(tail) {
                panic!("redis-protocol finds a frame of {n} bytes in the incomplete tail {tail:?}");
            }
        }

        if let Some((frames, lens)) = expected {
            assert_eq!(whole.error, None, "a generated reply was rejected");
            assert_eq!(
                whole.frames, lens,
                "generated replies framed at other boundaries"
            );
            for frame in &frames {
                match reference_frame_len(frame) {
                    Reference::Complete(n) => {
                        assert_eq!(n, frame.len(), "redis-protocol: {frame:?}")
                    }
                    Reference::Skipped => {}
                    other => panic!("redis-protocol: {other:?} for the generated reply {frame:?}"),
                }
            }
        }
    });
}

/// The stack the framing runs get. The framer must not recurse; on this small a stack a
/// recursion over the generated 16,383-level chains overflows at once (a crash the fuzzer
/// reports) instead of only at some far greater depth on the main thread's 8 MiB.
const FRAMER_STACK: usize = 128 * 1024;

/// The stack for code that recurses once per nesting level: `redis-protocol`'s decoder, and the
/// topology parsers working on its frames. Inputs are limited to [`REFERENCE_MAX_AGGREGATES`]
/// levels, which take a few KiB each in an unoptimised build (2 MiB, a test thread's default
/// stack, is not enough); 64 MiB is a wide margin, and only reserved, not touched.
const DEEP_STACK: usize = 64 * 1024 * 1024;

/// Runs `f` on a thread of its own with `stack` bytes of stack; a panic in `f` is re-raised.
fn on_stack<T: Send>(stack: usize, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn_scoped(scope, f)
            .expect("spawning a check thread")
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

fn frame_run(stream: &[u8], cuts: &[usize]) -> FrameRun {
    let mut framer = ReplyFramer::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut frames = Vec::new();
    let (mut fed, mut consumed, mut largest) = (0, 0, 0);
    let mut error = None;
    'feed: for end in cuts.iter().copied().chain(std::iter::once(stream.len())) {
        buf.extend_from_slice(&stream[fed..end]);
        fed = end;
        loop {
            let (outcome, allocated) = largest_allocation(|| framer.next_frame_len(&buf));
            largest = largest.max(allocated);
            match outcome {
                Ok(Some(len)) => {
                    assert!(
                        len > 0 && len <= buf.len(),
                        "frame length {len} of {}",
                        buf.len()
                    );
                    frames.push(len);
                    buf.drain(..len);
                    consumed += len;
                }
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break 'feed;
                }
            }
        }
    }
    check_allocation(largest, stream.len(), "reply framer");
    FrameRun {
        frames,
        error,
        consumed,
    }
}

/// The most aggregate type bytes (`*%~>|`) a frame may contain for it to be handed to
/// `redis-protocol`, whose decoder recurses once per nesting level (ARCHITECTURE.md: about
/// 10,000 levels overflow a 2 MiB stack in RESP2, under 2,000 in RESP3, in release builds).
/// Counting every such byte, payloads included, over-estimates the depth. The calls still run on
/// a big stack ([`DEEP_STACK`]): unoptimised, 256 levels overflow a 2 MiB test thread.
pub const REFERENCE_MAX_AGGREGATES: usize = 256;

#[derive(Debug)]
enum Reference {
    Complete(usize),
    Incomplete,
    Rejected,
    /// Too deep to hand to the reference safely.
    Skipped,
}

fn aggregate_bytes(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .filter(|b| matches!(b, b'*' | b'%' | b'~' | b'>' | b'|'))
        .count()
}

fn reference_frame_len(bytes: &[u8]) -> Reference {
    if aggregate_bytes(bytes) > REFERENCE_MAX_AGGREGATES {
        return Reference::Skipped;
    }
    match redis_protocol::resp3::decode::streaming::decode_range(bytes) {
        Ok(Some((_, len))) => Reference::Complete(len),
        Ok(None) => Reference::Incomplete,
        Err(_) => Reference::Rejected,
    }
}

/// Writes well-formed replies as `payload` directs, one byte per decision (zeros once it runs
/// out), and returns each reply's bytes.
///
/// The replies stay within what both keyward's framer and `redis-protocol` accept: RESP2 nulls
/// only at top level, map keys, set members and attribute keys are scalars, doubles are Rust
/// `f64` text (or `inf`, `-inf`, `nan`), verbatim strings carry `txt:` or `mkd:`, an attribute
/// annotates neither a null nor another attribute, simple strings hold no `\r`. One decision
/// wraps a scalar in up to 16,383 single-element arrays, pushes or maps, to check that deep
/// nesting costs no stack.
pub fn generate_replies(payload: &[u8]) -> Vec<Vec<u8>> {
    let mut generator = Generator {
        input: Input { data: payload },
        deep_done: false,
    };
    let mut frames = Vec::new();
    // Bounded so that one input stays fast: one deep chain at most.
    while !generator.input.is_empty() && frames.len() < 64 {
        let mut out = Vec::new();
        generator.top_level(&mut out);
        frames.push(out);
    }
    frames
}

struct Generator<'a> {
    input: Input<'a>,
    /// A deep chain was written already.
    deep_done: bool,
}

/// Where a generated value goes: what kinds it may be.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A reply of its own.
    TopLevel,
    /// An element of an aggregate or a map value.
    Element,
    /// After an attribute: not a null, not another attribute.
    Annotated,
    /// A map key, set member or attribute key: a scalar.
    Key,
}

impl Generator<'_> {
    fn top_level(&mut self, out: &mut Vec<u8>) {
        match self.input.byte() % 16 {
            0 => out.extend_from_slice(b"$-1\r\n"),
            1 => out.extend_from_slice(b"*-1\r\n"),
            2 if !self.deep_done => {
                self.deep_done = true;
                self.deep(out);
            }
            _ => self.value(out, Slot::TopLevel, 0),
        }
    }

    /// A scalar inside many single-element aggregates.
    fn deep(&mut self, out: &mut Vec<u8>) {
        let levels = usize::from(self.input.u16() & 0x3fff);
        let kind = self.input.byte() % 3;
        for _ in 0..levels {
            out.extend_from_slice(match kind {
                0 => &b"*1\r\n"[..],
                1 => b">1\r\n",
                _ => b"%1\r\n+k\r\n",
            });
        }
        self.scalar(out, Slot::Element);
    }

    fn value(&mut self, out: &mut Vec<u8>, slot: Slot, depth: u32) {
        let choice = self.input.byte();
        if slot == Slot::Key || depth >= 6 || choice % 16 < 10 {
            return self.scalar(out, slot);
        }
        let n = usize::from(self.input.byte() % 5);
        match choice % 16 {
            10 | 11 => {
                out.extend_from_slice(format!("*{n}\r\n").as_bytes());
                for _ in 0..n {
                    self.value(out, Slot::Element, depth + 1);
                }
            }
            12 => {
                out.extend_from_slice(format!(">{n}\r\n").as_bytes());
                for _ in 0..n {
                    self.value(out, Slot::Element, depth + 1);
                }
            }
            13 => {
                out.extend_from_slice(format!("~{n}\r\n").as_bytes());
                for _ in 0..n {
                    self.scalar(out, Slot::Key);
                }
            }
            14 => {
                out.extend_from_slice(format!("%{n}\r\n").as_bytes());
                for _ in 0..n {
                    self.scalar(out, Slot::Key);
                    self.value(out, Slot::Element, depth + 1);
                }
            }
            _ if slot == Slot::Annotated => self.scalar(out, slot),
            _ => {
                out.extend_from_slice(format!("|{n}\r\n").as_bytes());
                for _ in 0..n {
                    self.scalar(out, Slot::Key);
                    self.value(out, Slot::Element, depth + 1);
                }
                self.value(out, Slot::Annotated, depth + 1);
            }
        }
    }

    /// Text for a simple string or error: no `\r`, since keyward ends the line at the first one.
    fn line(&mut self) -> Vec<u8> {
        let n = usize::from(self.input.byte() % 24);
        self.input
            .take(n)
            .iter()
            .map(|&b| if b == b'\r' { b'.' } else { b })
            .collect()
    }

    fn scalar(&mut self, out: &mut Vec<u8>, slot: Slot) {
        let choice = self.input.byte() % 11;
        match choice {
            0 => {
                out.push(b'+');
                out.extend(self.line());
                out.extend_from_slice(b"\r\n");
            }
            1 => {
                out.push(b'-');
                out.extend(self.line());
                out.extend_from_slice(b"\r\n");
            }
            2 => {
                let n = i64::from_le_bytes(std::array::from_fn(|_| self.input.byte()));
                let n = if self.input.byte() & 1 == 0 {
                    n % 1000
                } else {
                    n
                };
                out.extend_from_slice(format!(":{n}\r\n").as_bytes());
            }
            3 | 4 => {
                let n = usize::from(self.input.byte() % 40);
                let data = self.input.take(n);
                out.extend_from_slice(format!("${}\r\n", data.len()).as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            5 if slot != Slot::Annotated => out.extend_from_slice(b"_\r\n"),
            5 | 6 => {
                let bits = u64::from_le_bytes(std::array::from_fn(|_| self.input.byte()));
                let x = f64::from_bits(bits);
                let text = match self.input.byte() % 4 {
                    0 => "inf".to_string(),
                    1 => "-inf".to_string(),
                    2 if x.is_finite() => format!("{x}"),
                    _ if x.is_nan() => "nan".to_string(),
                    _ => format!("{:.3}", (bits % 100_000) as f64 / 7.0),
                };
                out.extend_from_slice(format!(",{text}\r\n").as_bytes());
            }
            7 => out.extend_from_slice(if self.input.byte() & 1 == 0 {
                b"#t\r\n"
            } else {
                b"#f\r\n"
            }),
            8 => {
                let digits: String = (0..self.input.byte() % 40)
                    .map(|i| char::from(b'0' + (self.input.byte() % 10).max(u8::from(i == 0))))
                    .collect();
                let sign = if self.input.byte() & 1 == 0 { "" } else { "-" };
                out.extend_from_slice(format!("({sign}{digits}0\r\n").as_bytes());
            }
            9 => {
                let n = usize::from(self.input.byte() % 40);
                let data = self.input.take(n);
                out.extend_from_slice(format!("!{}\r\n", data.len()).as_bytes());
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
            _ => {
                let n = usize::from(self.input.byte() % 40);
                let format: &[u8] = if self.input.byte() & 1 == 0 {
                    b"txt:"
                } else {
                    b"mkd:"
                };
                let data = self.input.take(n);
                out.extend_from_slice(format!("={}\r\n", data.len() + 4).as_bytes());
                out.extend_from_slice(format);
                out.extend_from_slice(data);
                out.extend_from_slice(b"\r\n");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The cluster topology parsers
// ---------------------------------------------------------------------------------------------

/// The seed addresses a topology check may pretend the reply came from.
const SEEDS: [&str; 4] = [
    "127.0.0.1:7000",
    "[::1]:7000",
    "redis-0.example:6379",
    "seed-without-port",
];

/// Checks the `CLUSTER SHARDS` / `CLUSTER SLOTS` parsers on one fuzz input.
///
/// Layout: `[selector][RESP bytes]`. Bit 0 of the selector picks `redis-protocol`'s RESP2 or
/// RESP3 decoder, bits 1-2 the seed address. The parsers read the RESP2 frames keyward's
/// discovery decodes; a RESP3 frame is first turned into the RESP2 frame Redis would have sent
/// for it ([`resp3_as_resp2`]: maps become flat arrays of pairs), so that inputs written as RESP3
/// still reach the parsers. Inputs with more than [`REFERENCE_MAX_AGGREGATES`] aggregate type
/// bytes are not decoded (the decoder recurses), and the rest is checked on a big stack
/// ([`DEEP_STACK`]). Both parsers run on the first decoded frame, whatever its shape (a second
/// map to apply `MOVED` updates from is not needed: a few `set_owner` calls are made from the
/// last bytes).
///
/// Properties: no panic on any frame; an error is `Malformed` and displays; a map that is
/// accepted is consistent ([`check_slot_map`]), and parsing is deterministic.
pub fn check_cluster_topology(data: &[u8]) {
    let mut input = Input { data };
    let selector = input.byte();
    let seed = SEEDS[usize::from((selector >> 1) & 3)];
    let bytes = input.data;
    if aggregate_bytes(bytes) > REFERENCE_MAX_AGGREGATES {
        return;
    }
    // Decoding, converting and dropping frames all recurse per level.
    on_stack(DEEP_STACK, || {
        if selector & 1 == 0 {
            if let Ok(Some((frame, _))) = redis_protocol::resp2::decode::decode(bytes) {
                check_topology_of(&frame, seed, bytes);
            }
        } else if let Ok(Some((frame, _))) = redis_protocol::resp3::decode::complete::decode(bytes)
        {
            check_topology_of(&resp3_as_resp2(&frame), seed, bytes);
        }
    });
}

/// The RESP2 frame Redis sends where it would send `frame` to a RESP3 client: maps as flat
/// arrays of alternating keys and values, sets and pushes as arrays, booleans as 1 or 0,
/// doubles, big numbers and verbatim strings as bulk strings. Attributes are dropped (RESP2 has
/// none), and what only a request can be (`HELLO`) becomes a null.
pub fn resp3_as_resp2(frame: &Resp3Frame) -> Resp2Frame {
    let all = |frames: &mut dyn Iterator<Item = &Resp3Frame>| -> Vec<Resp2Frame> {
        frames.map(resp3_as_resp2).collect()
    };
    match frame {
        Resp3Frame::BlobString { data, .. }
        | Resp3Frame::SimpleString { data, .. }
        | Resp3Frame::BigNumber { data, .. }
        | Resp3Frame::VerbatimString { data, .. } => Resp2Frame::BulkString(data.clone()),
        Resp3Frame::ChunkedString(data) => Resp2Frame::BulkString(data.to_vec()),
        Resp3Frame::SimpleError { data, .. } => Resp2Frame::Error(data.clone()),
        Resp3Frame::BlobError { data, .. } => {
            Resp2Frame::Error(String::from_utf8_lossy(data).into_owned())
        }
        Resp3Frame::Boolean { data, .. } => Resp2Frame::Integer(i64::from(*data)),
        Resp3Frame::Number { data, .. } => Resp2Frame::Integer(*data),
        Resp3Frame::Double { data, .. } => Resp2Frame::BulkString(data.to_string().into_bytes()),
        Resp3Frame::Null | Resp3Frame::Hello { .. } => Resp2Frame::Null,
        Resp3Frame::Array { data, .. } | Resp3Frame::Push { data, .. } => {
            Resp2Frame::Array(all(&mut data.iter()))
        }
        Resp3Frame::Set { data, .. } => Resp2Frame::Array(all(&mut data.iter())),
        Resp3Frame::Map { data, .. } => {
            Resp2Frame::Array(all(&mut data.iter().flat_map(|(key, value)| [key, value])))
        }
    }
}

fn check_topology_of(frame: &Resp2Frame, seed: &str, bytes: &[u8]) {
    for (name, parse) in [
        (
            "CLUSTER SHARDS",
            SlotMap::from_cluster_shards as fn(&Resp2Frame, &str) -> _,
        ),
        ("CLUSTER SLOTS", SlotMap::from_cluster_slots),
    ] {
        match parse(frame, seed) {
            Ok(mut map) => {
                check_slot_map(&map, name);
                let again = parse(frame, seed).expect("the same reply parsed twice");
                assert!(again == map, "{name}: parsing is not deterministic");
                // MOVED updates keep the map consistent.
                let tail = &bytes[bytes.len().saturating_sub(4)..];
                for pair in tail.chunks(2) {
                    let slot = u16::from_le_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
                    let addr = NodeAddr::new("10.0.0.9", 7000 + slot % 7);
                    map.set_owner(slot, addr.clone());
                    if usize::from(slot) < SLOT_COUNT {
                        assert_eq!(map.owner(slot), Some(&addr), "set_owner then owner");
                    } else {
                        assert_eq!(map.owner(slot), None);
                    }
                    check_slot_map(&map, name);
                }
            }
            Err(e) => {
                assert!(
                    matches!(e, TopologyError::Malformed(_)),
                    "{name}: a parser returned {e:?}"
                );
                let _ = e.to_string();
            }
        }
    }
}

/// The invariants of any slot map keyward builds: slots only in 0..16383, ranges ordered and
/// disjoint, counts consistent, every owner a known shard, and every address sane
/// ([`check_node_addr`]).
pub fn check_slot_map(map: &SlotMap, what: &str) {
    let ranges = map.ranges();
    let mut assigned = 0;
    let mut previous_end: Option<u16> = None;
    for &(start, end, owner) in &ranges {
        assert!(
            start <= end && usize::from(end) < SLOT_COUNT,
            "{what}: range {start}-{end}"
        );
        if let Some(prev) = previous_end {
            assert!(start > prev, "{what}: ranges overlap or are out of order");
        }
        previous_end = Some(end);
        assigned += usize::from(end - start) + 1;
        assert_eq!(map.owner(start), Some(owner), "{what}: owner of {start}");
        assert_eq!(map.owner(end), Some(owner), "{what}: owner of {end}");
        assert!(
            map.shards().iter().any(|s| &s.primary == owner),
            "{what}: {owner} serves slots but is no shard's primary"
        );
    }
    assert_eq!(assigned, map.assigned_slots(), "{what}: assigned_slots");
    assert_eq!(
        map.is_complete(),
        assigned == SLOT_COUNT,
        "{what}: is_complete"
    );
    for slot in [SLOT_COUNT as u16, u16::MAX] {
        assert_eq!(map.owner(slot), None, "{what}: slot {slot} has an owner");
    }
    let primaries = map.primaries();
    for (i, p) in primaries.iter().enumerate() {
        assert!(!primaries[..i].contains(p), "{what}: {p} listed twice");
    }
    for (i, shard) in map.shards().iter().enumerate() {
        assert!(
            !map.shards()[..i].iter().any(|s| s.primary == shard.primary),
            "{what}: two shards with primary {}",
            shard.primary
        );
        check_node_addr(&shard.primary, what);
        assert!(
            shard.replicas.windows(2).all(|w| w[0] <= w[1]),
            "{what}: replicas not sorted"
        );
        for replica in &shard.replicas {
            check_node_addr(replica, what);
        }
    }
}

/// A node address keyward may connect to: a non-empty host without whitespace or control
/// characters, a port other than 0, IPv6 hosts in brackets, and `host()` / `port()` giving back
/// exactly the address.
pub fn check_node_addr(addr: &NodeAddr, what: &str) {
    let (host, port) = (addr.host(), addr.port());
    assert!(!host.is_empty(), "{what}: empty host in {addr:?}");
    assert_ne!(port, 0, "{what}: port 0 (or no port) in {addr:?}");
    assert!(
        !host.chars().any(|c| c.is_whitespace() || c.is_control()),
        "{what}: whitespace or control characters in the host of {addr:?}"
    );
    assert_eq!(
        &NodeAddr::new(host, port),
        addr,
        "{what}: {addr:?} does not split into host {host:?} and port {port}"
    );
}
