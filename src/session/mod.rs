//! One client connection, from its first byte to its close.
//!
//! A session is two halves that run in one task and talk through an ordered channel:
//! - the **request side** ([`requests`]) reads the client, scans requests, asks the guard, writes
//!   what may run to the session's own upstream connection, and for every request puts a
//!   [`Pending`] entry on the channel *before* the request is written upstream;
//! - the **reply side** ([`replies`]) reads the upstream connection, frames replies, and matches
//!   them to the entries in order, writing to the client. Entries answered by keyward itself (a
//!   refusal, an unreachable upstream) wait in the same queue, so the client always gets its
//!   replies in request order whoever made them.
//!
//! The two sides never block each other: a client that writes a long pipeline before reading
//! keeps being read while its replies wait, and when the client stops reading, the reply side
//! stops reading upstream so the replies back up in Redis, not in keyward.

mod pubsub;
mod replies;
mod requests;

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::{mpsc, watch};

use crate::audit::Audit;
use crate::auth::{ClientAuth, Login};
use crate::commands::PubSubKind;
use crate::guard::GuardPolicy;
use crate::net::Socket;
use crate::protocol::request::ScanLimits;
use crate::upstream::{UpstreamTarget, WarmPool};

/// What every session shares: settings prepared once at start-up.
#[derive(Debug)]
pub struct SessionContext {
    pub guard: GuardPolicy,
    pub limits: ScanLimits,
    pub upstream: UpstreamTarget,
    /// Connections to `upstream` opened ahead of need, when keyward keeps some.
    pub warm: Option<Arc<WarmPool>>,
    /// How long a closing session waits for replies still owed to its client.
    pub close_grace: Duration,
    /// Who may log in to keyward; `None`: keyward does not authenticate clients.
    pub auth: Option<Arc<ClientAuth>>,
    /// Close a client idle this long (zero: never).
    pub idle_timeout: Duration,
    /// Requests a client may have waiting for replies before it stops being read.
    pub max_pending_replies: usize,
}

/// While a client is not handled for `max_pending_replies`, keyward still reads up to this much
/// of what it sends (without handling it), to notice a client that hangs up behind a blocked
/// command.
pub(crate) const PAUSED_READ_LIMIT: usize = 64 * 1024;

/// How many request batches may wait between the two halves before the request side stops
/// reading the client (backpressure for clients that write without reading).
const BATCH_QUEUE: usize = 1024;

/// Whether Redis replies on a connection (`CLIENT REPLY ON|OFF|SKIP`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyMode {
    On,
    Off,
    /// The next command gets no reply.
    SkipNext,
}

impl ReplyMode {
    /// Whether the next request's reply reaches the client; a SKIP is used up by it.
    pub(crate) fn take_delivery(&mut self) -> bool {
        match *self {
            ReplyMode::On => true,
            ReplyMode::Off => false,
            ReplyMode::SkipNext => {
                *self = ReplyMode::On;
                false
            }
        }
    }
}

/// One entry in the session's reply queue, in request order.
#[derive(Debug)]
enum Pending {
    /// Upstream answers this request; its reply goes to the client.
    Reply(Expect),
    /// keyward answers this request itself.
    Local(Bytes),
    /// Upstream answers a placeholder request with an error; the client gets this reply instead.
    /// Used for a refusal inside MULTI, so that Redis marks the transaction as failed and EXEC
    /// answers EXECABORT, as it does for a command rejected at queue time.
    Replace(Bytes),
    /// Upstream answers a request keyward made itself; the reply is dropped.
    Swallow,
    /// Close the client connection once everything before this entry has been answered.
    Close,
    /// The client is gone (end of stream): answer what is already on its way, but do not keep
    /// the upstream connection open for blocked commands, which Redis would drop on a client's
    /// close too (and which would otherwise stay blocked and counted in `blocked_clients`).
    ClientGone,
    /// A new upstream connection (the reply side reads it) with its generation number.
    Attach(Arc<Socket>, u64),
    /// Writing to the current upstream connection failed.
    Broken(String),
}

/// A request whose reply comes from upstream.
#[derive(Debug)]
struct Expect {
    kind: ExpectKind,
    audit: Option<Box<Audit>>,
    /// A blocking command (BLPOP...): its reply may never come.
    blocking: bool,
}

#[derive(Debug)]
enum ExpectKind {
    /// Exactly one reply.
    One,
    /// (Un)subscribe: one confirmation per channel. `remaining` is `None` for an UNSUBSCRIBE
    /// without arguments, whose count is known only once the replies before it are in.
    Subscription {
        kind: PubSubKind,
        subscribe: bool,
        remaining: Option<usize>,
    },
    /// MONITOR: after its `+OK` the connection streams monitor lines.
    Monitor,
    /// RESET: Redis drops subscriptions and monitor mode, and goes back to RESP2.
    Reset,
    /// HELLO: its reply says which protocol the connection now speaks.
    Hello,
}

/// State both halves read.
#[derive(Debug)]
struct Shared {
    /// Set once a command that leaves per-connection state upstream (SELECT, AUTH, MULTI,
    /// SUBSCRIBE...) has been forwarded: losing that connection cannot be hidden from the client.
    stateful: AtomicBool,
    /// Generation of the upstream connection that the reply side saw fail (0: none).
    failed_generation: AtomicU64,
    /// When the request side last read bytes from the client, in milliseconds since `epoch`
    /// (kept only with an idle timeout).
    last_read_ms: AtomicU64,
    epoch: tokio::time::Instant,
    /// Reply-queue entries the reply side is done with (answered, or never needing an
    /// answer), out of all it received. The request side compares it with the number it sent
    /// to know how many requests wait for replies.
    done_entries: AtomicU64,
    /// The request side has stopped reading until `done_entries` moves.
    reader_waiting: AtomicBool,
    progress: tokio::sync::Notify,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            stateful: AtomicBool::new(false),
            failed_generation: AtomicU64::new(0),
            last_read_ms: AtomicU64::new(0),
            epoch: tokio::time::Instant::now(),
            done_entries: AtomicU64::new(0),
            reader_waiting: AtomicBool::new(false),
            progress: tokio::sync::Notify::new(),
        }
    }
}

/// keyward's shutdown signal, as one future that a session keeps for its whole life.
///
/// `watch::Receiver::changed()` made afresh on every turn of a session's loop puts a waiter in
/// the channel's list, under its lock, and takes it out again whenever the loop wakes for
/// anything else: per request, for every client. Kept, it is registered once.
pub struct ShutdownSignal {
    signal: Pin<Box<dyn Future<Output = ()> + Send>>,
    fired: bool,
}

impl ShutdownSignal {
    pub fn new(mut stop: watch::Receiver<bool>) -> Self {
        ShutdownSignal {
            // A dropped sender also means keyward is going away.
            signal: Box::pin(async move {
                let _ = stop.wait_for(|&stop| stop).await;
            }),
            fired: false,
        }
    }

    /// Resolves once keyward begins shutting down; after that, never again.
    pub async fn fired(&mut self) {
        if self.fired {
            return std::future::pending().await;
        }
        (&mut self.signal).await;
        self.fired = true;
    }
}

/// Serves one client until it leaves, the upstream connection is lost with state on it, or
/// keyward shuts down.
pub async fn run(
    stream: Socket,
    peer: SocketAddr,
    ctx: Arc<SessionContext>,
    shutdown: watch::Receiver<bool>,
) {
    let login = Login::new(ctx.auth.as_deref());
    let shutdown = ShutdownSignal::new(shutdown);
    run_with_input(stream, peer, ctx, shutdown, BytesMut::new(), login).await
}

/// Like [`run`], for a client whose first bytes were already read (a cluster session handing
/// a subscriber over to a connection of its own): `input` is scanned before anything else, and
/// the client keeps its `login`.
pub async fn run_with_input(
    stream: Socket,
    peer: SocketAddr,
    ctx: Arc<SessionContext>,
    shutdown: ShutdownSignal,
    input: BytesMut,
    login: Login,
) {
    let _ = stream.set_nodelay(true);
    // Both sides hold the socket: the request side reads it, the reply side writes it. It
    // closes when both are done (never half-closed early, which Redis-side would read as the
    // client leaving).
    let client = Arc::new(stream);
    let (tx, rx) = mpsc::channel(BATCH_QUEUE);
    let shared = Arc::new(Shared::default());

    let requests =
        requests::RequestSide::new(client.clone(), tx, peer, ctx.clone(), shared.clone(), login);
    let replies = replies::ReplySide::new(client, rx, peer, ctx.clone(), shared);

    let request_task = requests.run(shutdown, input);
    let reply_task = replies.run();
    tokio::pin!(request_task, reply_task);
    tokio::select! {
        // The reply side ends the session: client gone, Close processed, or state lost.
        _ = &mut reply_task => {}
        // The request side ended (client EOF, QUIT, protocol error, shutdown) after queueing a
        // Close: the reply side finishes answering, then closes.
        requests = &mut request_task => {
            reply_task.await;
            drop(requests);
        }
    }
    tracing::debug!(client = %peer, "session closed");
}

/// Reads what `stream` has into `buf` without waiting; `Ok(0)` is the end of the stream.
///
/// A read that fills less than the space offered has drained the socket, and tokio is told so
/// at once (a `WouldBlock` returned from inside `try_io` clears its readiness flag), instead of
/// finding out with a second read that fails: one system call per request saved on a client
/// that sends one request at a time. tokio only clears the flag if no new readiness event came
/// in meanwhile, so nothing that arrives later is missed.
pub(crate) fn read_some(stream: &Socket, buf: &mut BytesMut) -> std::io::Result<usize> {
    let offered = buf.capacity() - buf.len();
    let mut read = None;
    let result = stream.try_io(tokio::io::Interest::READABLE, || {
        let n = stream.try_read_buf(buf)?;
        read = Some(n);
        if n > 0 && n < offered {
            Err(std::io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match (result, read) {
        (_, Some(n)) => Ok(n),
        (Err(e), None) => Err(e),
        (Ok(n), None) => Ok(n),
    }
}

/// The room a connection's read buffer is given before a read: small at first, because most
/// requests and replies are small and, with thousands of mostly idle clients, read buffers are
/// most of what a client costs keyward (measured: starting at 2 KiB instead of 16 KiB saves
/// about 4 KiB of resident memory per client that has sent a request); doubled whenever a read
/// fills all the room it was given, up to 16 KiB, so that a pipelining client soon reads as
/// much per system call as it would with a big buffer from the start.
pub(crate) struct ReadChunk(usize);

impl ReadChunk {
    const FIRST: usize = 2 * 1024;
    const MAX: usize = 16 * 1024;

    pub(crate) fn new() -> Self {
        ReadChunk(Self::FIRST)
    }

    /// Reads like [`read_some`], first making room in `buf` when little is left.
    pub(crate) fn read(&mut self, stream: &Socket, buf: &mut BytesMut) -> std::io::Result<usize> {
        if buf.capacity() - buf.len() < self.0 / 4 {
            buf.reserve(self.0);
        }
        let offered = buf.capacity() - buf.len();
        let result = read_some(stream, buf);
        if matches!(result, Ok(n) if n == offered) && self.0 < Self::MAX {
            self.0 *= 2;
        }
        result
    }
}

/// A read buffer whose capacity grew past this (a big request or reply) is shrunk again once
/// little of it is in use; see [`release_grown_buffer`].
pub(crate) const KEEP_BUFFER: usize = 256 * 1024;

/// Gives back the memory of a read buffer that a big request or reply made grow, once that
/// request or reply has been split off and only a little (the start of the next one, usually
/// nothing) is left in it.
///
/// The part split off is freed when its user drops it, but what remains of the buffer still
/// points into the same allocation, keeps it alive, and later reuses it: without this, one
/// 100 MB reply on a long-lived connection (a shared upstream connection lives as long as
/// keyward) pins about 128 MB for good. The leftover bytes are copied as they are, so a framer's
/// or scanner's position in the buffer stays valid. A buffer still filling with a big frame
/// holds more than a quarter of `KEEP_BUFFER` and is left alone.
pub(crate) fn release_grown_buffer(buf: &mut BytesMut, chunk: usize) {
    if buf.capacity() > KEEP_BUFFER && buf.len() <= KEEP_BUFFER / 4 {
        let mut fresh = BytesMut::with_capacity(chunk.max(buf.len() * 2));
        fresh.extend_from_slice(buf);
        *buf = fresh;
    }
}

/// Writes every chunk to `stream`, in order, waiting for the socket when it is full.
pub(crate) async fn write_all_chunks(
    stream: &Socket,
    chunks: &mut Vec<Bytes>,
) -> std::io::Result<()> {
    const MAX_SLICES: usize = 64;
    let mut first = 0;
    while first < chunks.len() {
        let written = {
            let slices: Vec<IoSlice<'_>> = chunks[first..]
                .iter()
                .take(MAX_SLICES)
                .map(|c| IoSlice::new(c))
                .collect();
            stream.try_write_vectored(&slices)
        };
        match written {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => first = consume(chunks, first, n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => stream.writable().await?,
            Err(e) => return Err(e),
        }
    }
    chunks.clear();
    Ok(())
}

/// Drops `n` written bytes from `chunks[first..]`; returns the index of the first chunk with
/// bytes left.
fn consume(chunks: &mut [Bytes], mut first: usize, mut n: usize) -> usize {
    while n > 0 {
        let chunk = &mut chunks[first];
        if n >= chunk.len() {
            n -= chunk.len();
            first += 1;
        } else {
            chunk.advance(n);
            n = 0;
        }
    }
    first
}

fn upstream_lost(ctx: &SessionContext, reason: &str) -> Bytes {
    crate::protocol::write::error(&format!(
        "ERR keyward: connection to upstream {} lost: {reason}",
        ctx.upstream.addr
    ))
}

impl Shared {
    fn note_read(&self) {
        let ms = self.epoch.elapsed().as_millis() as u64;
        self.last_read_ms.store(ms, Ordering::Relaxed);
    }

    fn last_read(&self) -> tokio::time::Instant {
        self.epoch + Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed))
    }

    fn upstream_failed(&self, generation: u64) -> bool {
        self.failed_generation.load(Ordering::Acquire) == generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_grown_by_a_big_frame_is_released_once_the_frame_is_split_off() {
        let mut buf = BytesMut::with_capacity(16 * 1024);
        buf.extend_from_slice(&vec![b'x'; 4 * 1024 * 1024]);
        buf.extend_from_slice(b"+PA");
        let frame = buf.split_to(4 * 1024 * 1024).freeze();
        assert!(
            buf.capacity() > KEEP_BUFFER,
            "the remainder still holds the allocation"
        );
        release_grown_buffer(&mut buf, 16 * 1024);
        assert_eq!(&buf[..], b"+PA", "the leftover bytes are kept as they are");
        assert_eq!(buf.capacity(), 16 * 1024);
        assert_eq!(frame.len(), 4 * 1024 * 1024);
    }

    #[test]
    fn a_buffer_filling_with_a_big_frame_is_left_alone() {
        let mut buf = BytesMut::with_capacity(1024 * 1024);
        buf.extend_from_slice(&vec![b'x'; KEEP_BUFFER / 4 + 1]);
        let capacity = buf.capacity();
        release_grown_buffer(&mut buf, 16 * 1024);
        assert_eq!(buf.capacity(), capacity);
        assert_eq!(buf.len(), KEEP_BUFFER / 4 + 1);

        let mut small = BytesMut::with_capacity(KEEP_BUFFER);
        small.extend_from_slice(b"abc");
        release_grown_buffer(&mut small, 16 * 1024);
        assert_eq!(
            small.capacity(),
            KEEP_BUFFER,
            "not grown past KEEP_BUFFER: kept"
        );
    }
}
