//! A client with an upstream connection of its own.
//!
//! Two halves run in one task and talk through an ordered channel:
//! - the **request side** ([`requests`]) reads the client, has the front admit each request,
//!   writes what may run to the client's own upstream connection, and for every request puts a
//!   [`Pending`] entry on the channel *before* the request is written upstream;
//! - the **reply side** ([`replies`]) reads the upstream connection, frames replies, and matches
//!   them to the entries in order, writing to the client. Entries answered by keyward itself (a
//!   refusal, an unreachable upstream) wait in the same queue, so the client always gets its
//!   replies in request order whoever made them.
//!
//! In front of a cluster, a client's keyspace subscriptions are merged across the primaries
//! ([`keyspace`]): the request side subscribes the other primaries too, and the reply side
//! writes their notifications between the replies of the client's own connection.
//!
//! The two sides never block each other: a client that writes a long pipeline before reading
//! keeps being read while its replies wait, and when the client stops reading, the reply side
//! stops reading upstream so the replies back up in Redis, not in keyward.

mod keyspace;
mod pubsub;
mod replies;
mod requests;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::ShutdownSignal;
use super::front::{Front, ReplyWatch};
use super::{Live, PrivateUpstream, SessionContext};
use crate::commands::PubSubKind;
use crate::net::Socket;

pub use keyspace::Origin as KeyspaceOrigin;

/// How many request batches may wait between the two halves before the request side stops
/// reading the client (backpressure for clients that write without reading).
const BATCH_QUEUE: usize = 1024;

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
    /// A new upstream connection: its reading half, its generation, and (Sentinel mode) the
    /// primary's epoch it was made at.
    Attach(Arc<Socket>, u64, u64),
    /// Writing to the current upstream connection failed.
    Broken(String),
}

/// A request whose reply comes from upstream.
#[derive(Debug)]
struct Expect {
    kind: ExpectKind,
    /// What happens once the reply is in (an audit line...).
    watch: Option<Box<ReplyWatch>>,
    /// Its command and read time, for metrics.
    stamp: crate::metrics::Stamp,
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

/// Serves a client on a connection of its own until it leaves, the upstream connection is lost
/// with state on it, or keyward shuts down. `input`: bytes already read from the client (a
/// client moving here from shared connections), scanned before anything else. `keyspace`: in
/// front of a cluster, the node this connection goes to, around which the client's keyspace
/// subscriptions are merged.
pub(super) async fn run(
    stream: Socket,
    live: Arc<Live>,
    upstream: Arc<PrivateUpstream>,
    front: Front,
    shutdown: ShutdownSignal,
    input: BytesMut,
    keyspace: Option<KeyspaceOrigin>,
) {
    // Both sides hold the socket: the request side reads it, the reply side writes it. It
    // closes when both are done (never half-closed early, which Redis-side would read as the
    // client leaving).
    let client = Arc::new(stream);
    let (tx, rx) = mpsc::channel(BATCH_QUEUE);
    let shared = Arc::new(Shared::default());
    let (merge, merged) = match keyspace {
        Some(origin) => {
            let (merge, merged) = keyspace::Merge::new(origin);
            (Some(merge), Some(merged))
        }
        None => (None, None),
    };

    let peer = front.peer;
    let replies = replies::ReplySide::new(
        client.clone(),
        rx,
        peer,
        live.clone(),
        upstream.clone(),
        shared.clone(),
        merged,
    );
    let requests = requests::RequestSide::new(client, tx, live, upstream, shared, front, merge);

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
}

fn upstream_lost(upstream: &PrivateUpstream, reason: &str) -> Bytes {
    crate::protocol::write::error(&format!(
        "ERR keyward: connection to upstream {} lost: {reason}",
        upstream.target.describe()
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
