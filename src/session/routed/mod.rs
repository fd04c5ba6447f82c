//! A client whose requests are routed over pipelined connections shared by all clients: to one
//! standalone Redis (`share_connections = true`) or to the nodes of a Redis Cluster.
//!
//! The client sees one ordinary Redis server. Each request takes its place in one ordered
//! queue ([`ReplyQueue`]), so replies leave in request order however many connections answered
//! them. Requests are queued on their node's shared connection while the session reads them
//! (see [`Cluster::submit`]), so two requests of one client to one node keep their order.
//!
//! What cannot share a connection gets its own:
//! - standalone: the first request that needs per-connection state (SELECT, MULTI, blocking,
//!   pub/sub, CLIENT, AUTH, HELLO...) moves the client, with the rest of its pipeline, to a
//!   private connection ([`super::private`]) for good;
//! - cluster: blocking commands a private connection per request; WATCH / MULTI ... EXEC a
//!   private connection to the node of the transaction's slot ([`transaction`]); pub/sub and
//!   MONITOR move the client to a private connection to one node (the slot's owner for
//!   SSUBSCRIBE), for good, where its keyspace subscriptions are merged across the primaries
//!   (`private::keyspace`).

mod dispatch;
mod reply_queue;
mod transaction;

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::FutureExt;

use super::front::{Front, ReplyMode, ReplyWatch, note_idle_close};
use super::{Live, PrivateUpstream, SessionContext};
use super::{PAUSED_READ_LIMIT, ShutdownSignal};
use crate::cluster::node::NodeConn;
use crate::cluster::{Cluster, Submitted, Target};
use crate::metrics::Stamp;
use crate::net::Socket;
use crate::net::rw::{ReadChunk, release_grown_buffer, write_all_chunks};
use crate::protocol::request::RequestScanner;
use crate::protocol::write;
use reply_queue::{Out, ReplyQueue};
use transaction::{Pinned, Transaction};

/// Where a routed session's requests go.
pub(super) enum Routing {
    /// One standalone Redis: stateless requests share its pipelined connection, and a client
    /// that needs state of its own moves to a private connection from `own`.
    Shared {
        redis: Arc<Cluster>,
        own: Arc<PrivateUpstream>,
    },
    /// A Redis Cluster.
    Cluster(Arc<Cluster>),
}

/// The capacity a read buffer shrinks back to after a big request.
const READ_CHUNK: usize = 16 * 1024;

struct RoutedSession {
    /// The settings in force, and where a reload puts new ones (see [`Live`]).
    live: Arc<Live>,
    ctx_generation: u64,
    ctx: Arc<SessionContext>,
    cluster: Arc<Cluster>,
    /// Standalone (`Routing::Shared`): the private connections a client moves to.
    own: Option<Arc<PrivateUpstream>>,
    front: Front,
    resp3: bool,
    /// `CLIENT SETNAME`, kept by keyward in a cluster.
    name: Option<Bytes>,
    /// `CLIENT ID`, given by keyward in a cluster ([`crate::cluster::clients`]).
    id: u64,
    /// Cluster: this client in keyward's list of clients (`CLIENT LIST`), while the session
    /// lasts.
    listed: Option<Listed>,
    watch: Option<Pinned>,
    transaction: Option<Transaction>,
    replies: ReplyQueue,
    /// Shared connections with requests queued by this read, flushed once it is processed.
    dirty: Vec<NodeConn>,
    /// Blocking commands in flight (their replies may never come).
    blocking: Arc<std::sync::atomic::AtomicUsize>,
    /// Cluster: the client's own connections for scripts and functions, by node address,
    /// opened when first needed (see [`crate::commands::CommandSpec::runs_script`]).
    scripts: Vec<(String, NodeConn)>,
    /// Where the session's last request went.
    lane: Lane,
    /// The cluster's routing table as of `routing_generation` (see
    /// [`Cluster::routing_generation`]).
    routing: Arc<crate::cluster::routing::Routing>,
    routing_generation: u64,
    /// A request that waits for the replies before it, to change lanes.
    deferred: Option<Deferred>,
    /// The metrics stamp of the request being dispatched (None: keyward's front already
    /// counted it, or it is not a request).
    stamp: Option<Stamp>,
    /// When the read that brought the requests being handled returned (metrics on only).
    read_at: Option<std::time::Instant>,
}

/// A cluster client in keyward's list of clients; taken off it when dropped.
struct Listed {
    cluster: Arc<Cluster>,
    client: Arc<crate::cluster::clients::Client>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        self.cluster.clients.disconnect(self.client.id);
    }
}

/// Which connections a cluster client's requests go over. A script runs over the client's own
/// connection to its node (so that a busy script holds up only its client); everything else
/// over the shared ones (or connections of their own that are opened in order). Requests of one
/// client on one lane reach Redis in order, as on one connection; across lanes they could
/// overtake each other (a pipelined `FUNCTION LOAD` then `FCALL`, or `EVAL` then `PING` that
/// must wait for the script as on one Redis connection). So a request that changes lanes waits
/// until every earlier request of its client has been answered: a pipeline that mixes scripts
/// and other commands costs a round trip per change, never its order.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Lane {
    Shared,
    Script(String),
}

/// A request admitted by the front that waits to change lanes.
struct Deferred {
    spec: Option<&'static crate::commands::CommandSpec>,
    role: crate::commands::Role,
    request: crate::protocol::request::Request,
    watch: Option<Box<ReplyWatch>>,
    stamp: Option<Stamp>,
}

/// What the read loop does after a request.
enum Next {
    Continue,
    /// Stop reading: a Close is queued.
    Stop,
    /// Hand the connection over to a private connection to this node, starting with this
    /// request.
    Handoff {
        addr: String,
        raw: Bytes,
    },
}

pub(super) async fn run(
    client: Socket,
    live: Arc<Live>,
    routing: Routing,
    front: Front,
    mut shutdown: ShutdownSignal,
) {
    let (cluster, own) = match routing {
        Routing::Shared { redis, own } => (redis, Some(own)),
        Routing::Cluster(cluster) => (cluster, None),
    };
    let peer = front.peer;
    let (ctx_generation, ctx) = live.current();
    let listed = own.is_none().then(|| Listed {
        client: cluster.clients.connect(front.peer, client.local_addr()),
        cluster: cluster.clone(),
    });
    let id = listed.as_ref().map_or(0, |l| l.client.id);
    let (routing_generation, table) = (cluster.routing_generation(), cluster.routing());
    let mut session = RoutedSession {
        live: live.clone(),
        ctx_generation,
        ctx,
        cluster,
        own,
        front,
        resp3: false,
        id,
        listed,
        name: None,
        watch: None,
        transaction: None,
        replies: ReplyQueue::default(),
        dirty: Vec::new(),
        blocking: Arc::default(),
        scripts: Vec::new(),
        lane: Lane::Shared,
        routing_generation,
        routing: table,
        deferred: None,
        stamp: None,
        read_at: None,
    };
    let mut scanner = session.front.scanner(&session.ctx);
    let alert = session.replies.alert();
    alert.set_limit(session.ctx.max_client_output_bytes);
    let mut reload = live.reload_signal();
    let mut buf = BytesMut::new();
    let mut read_chunk = ReadChunk::new();
    let mut out: Vec<Bytes> = Vec::new();
    let mut reading = true;
    let mut closing_at: Option<tokio::time::Instant> = None;
    let mut handoff: Option<(String, BytesMut)> = None;

    // The client closed its end: replies on their way are still delivered (it may only have
    // half-closed), but blocked commands are not waited for, as Redis drops them on a close.
    let mut client_gone = false;
    // Read from or written to the client (for `idle_timeout_ms`).
    let mut last_activity = tokio::time::Instant::now();
    // Requests read but not handled yet, because max_pending_replies paused the scan.
    let mut unhandled = false;
    loop {
        let (close_grace, idle_timeout) = (session.ctx.close_grace, session.ctx.idle_timeout);
        if !reading && session.replies.is_empty() {
            break;
        }
        if client_gone
            && session.replies.len() <= session.blocking.load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        if !reading && closing_at.is_none() && handoff.is_none() {
            closing_at = Some(tokio::time::Instant::now() + close_grace);
        }
        let limit = session.front.pending_limit(&session.ctx);
        let at_limit = session.replies.len() >= limit;
        // A request waiting to change lanes is sent (and reading goes on) once every reply
        // before it has left.
        let waiting_lane = session.deferred.is_some() && !session.replies.is_empty();
        let can_read = reading && !at_limit && !waiting_lane;
        if reading && at_limit {
            session.front.note_pending_limit(limit);
        }
        // Idle: nothing owed (a blocked command is owed), nothing read or written for the timeout.
        let idle_at = (!idle_timeout.is_zero() && reading && session.replies.is_empty())
            .then(|| last_activity + idle_timeout);
        if unhandled && can_read {
            unhandled = session
                .handle_requests(&mut scanner, &mut buf, &mut reading, &mut handoff)
                .await;
            continue;
        }
        tokio::select! {
            biased;
            Some(first) = session.replies.next_in_new_pass(), if !session.replies.is_empty() => {
                let mut close = false;
                let mut next = Some(first);
                while let Some(item) = next.take() {
                    match item {
                        Out::Reply(bytes) => out.push(bytes),
                        Out::Nothing => {}
                        Out::Close => { close = true; break; }
                    }
                    next = session.replies.next().now_or_never().flatten();
                }
                let bytes: usize = out.iter().map(Bytes::len).sum();
                // A client that does not read blocks this write while replies keep coming for
                // it into the node connections' slots: race the write against their limit.
                let written = tokio::select! {
                    written = write_all_chunks(&client, &mut out) => written.is_ok(),
                    () = alert.went_over() => {
                        note_output_limit(peer, &alert, session.ctx.max_client_output_bytes);
                        return;
                    }
                };
                if !written || close {
                    return;
                }
                alert.released(bytes);
                last_activity = tokio::time::Instant::now();
            }
            // Replies pile up behind one that is not there yet (a blocked command at the front)
            // while the client reads nothing: the same limit.
            () = alert.went_over() => {
                note_output_limit(peer, &alert, session.ctx.max_client_output_bytes);
                return;
            }
            // Paused at the pending limit, the client is still read (up to PAUSED_READ_LIMIT, not
            // handled) so that a hang-up behind a blocked command is noticed.
            ready = client.readable(), if reading && (can_read || buf.len() < PAUSED_READ_LIMIT) => {
                if ready.is_err() {
                    reading = false;
                    client_gone = true;
                    continue;
                }
                match read_chunk.read(&client, &mut buf) {
                    Ok(0) => { reading = false; client_gone = true; continue; }
                    Ok(_) => last_activity = tokio::time::Instant::now(),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(_) => { reading = false; client_gone = true; continue; }
                }
                unhandled = session
                    .handle_requests(&mut scanner, &mut buf, &mut reading, &mut handoff)
                    .await;
            }
            _ = shutdown.fired(), if reading => { reading = false; }
            // Only a client logged in as a named user can be disconnected by a reload.
            _ = reload.fired(), if reading && session.front.login.is_user() => {
                if !session.take_reload(&mut scanner) {
                    session.replies.push_ready(Out::Close, None);
                    reading = false;
                }
            }
            _ = sleep_until(closing_at), if closing_at.is_some() => { return; }
            _ = sleep_until(idle_at), if idle_at.is_some() => {
                note_idle_close(peer, idle_timeout);
                return;
            }
        }
    }
    if let Some((addr, input)) = handoff {
        let upstream = match &session.own {
            Some(own) => own.clone(),
            None => Arc::new(PrivateUpstream {
                target: session.cluster.target(&addr, session.resp3),
                warm: None,
            }),
        };
        // In a cluster, keyspace subscriptions are merged around the node it moves to.
        let keyspace = session
            .own
            .is_none()
            .then(|| super::private::KeyspaceOrigin {
                cluster: session.cluster.clone(),
                node: addr.clone(),
            });
        tracing::debug!(client = %peer, node = %addr, "session moves to a connection of its own");
        let mut front = session.front;
        // A new connection replies to everything: what CLIENT REPLY said here was kept by
        // keyward, not by that connection.
        front.reply_mode = ReplyMode::On;
        super::private::run(client, live, upstream, front, shutdown, input, keyspace).await;
    }
}

/// Logs that a client is closed for not reading its replies.
fn note_output_limit(
    peer: std::net::SocketAddr,
    alert: &crate::cluster::node::ErrorAlert,
    limit: usize,
) {
    tracing::warn!(
        client = %peer,
        held_bytes = alert.held(),
        max_client_output_bytes = limit,
        "closing the client: it does not read its replies and keyward holds more than \
         max_client_output_bytes of them"
    );
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl RoutedSession {
    /// Scans and dispatches the complete requests in `buf`, then writes what they queued on
    /// shared connections (one write per connection for the whole read). Returns true when it
    /// paused because `max_pending_replies` requests wait for replies: requests may be left in
    /// `buf`. Clears `reading` when the session is to stop reading (QUIT, protocol error,
    /// handoff).
    async fn handle_requests(
        &mut self,
        scanner: &mut RequestScanner,
        buf: &mut BytesMut,
        reading: &mut bool,
        handoff: &mut Option<(String, BytesMut)>,
    ) -> bool {
        let mut paused = false;
        // Requests read from here on use the settings in force now (a reload since the last
        // read included).
        if !self.take_reload(scanner) {
            self.replies.push_ready(Out::Close, None);
            *reading = false;
            return false;
        }

        self.read_at = crate::metrics::read_time();
        loop {
            // Checked per request: a login in this read raises the limit.
            if self.replies.len() >= self.front.pending_limit(&self.ctx) {
                paused = true;
                break;
            }
            if self.deferred.is_some() {
                match self.resume_deferred().await {
                    // Still waiting: the rest of the read waits with it.
                    None => {
                        paused = true;
                        break;
                    }
                    Some(next) => {
                        if self.after(next, buf, reading, handoff) {
                            break;
                        }
                        continue;
                    }
                }
            }
            match scanner.next(buf) {
                Ok(Some(request)) => {
                    let next = self.dispatch(request, scanner).await;
                    if self.after(next, buf, reading, handoff) {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    self.stamp = None;
                    self.local(write::error(&e.message()));
                    self.replies.push_ready(Out::Close, None);
                    *reading = false;
                    break;
                }
            }
        }
        self.flush();
        release_grown_buffer(buf, READ_CHUNK);
        paused
    }

    /// What the read loop does after a request's `next`: true when it stops reading (QUIT,
    /// a handoff to a connection of the client's own).
    fn after(
        &mut self,
        next: Next,
        buf: &mut BytesMut,
        reading: &mut bool,
        handoff: &mut Option<(String, BytesMut)>,
    ) -> bool {
        match next {
            Next::Continue => false,
            Next::Stop => {
                *reading = false;
                true
            }
            Next::Handoff { addr, raw } => {
                let mut input = BytesMut::from(&raw[..]);
                input.extend_from_slice(buf);
                buf.clear();
                *handoff = Some((addr, input));
                *reading = false;
                true
            }
        }
    }

    /// Puts the settings of a reload since the last read in force for the requests read from
    /// now on. False when the client must be disconnected (its user is gone).
    fn take_reload(&mut self, scanner: &mut RequestScanner) -> bool {
        if !self.live.changed(self.ctx_generation) {
            return true;
        }
        let before = self.ctx.clone();
        self.live.refresh(&mut self.ctx_generation, &mut self.ctx);
        self.replies
            .alert()
            .set_limit(self.ctx.max_client_output_bytes);
        self.front.reloaded(&before, &self.ctx, scanner)
    }

    /// Whether the reply to the request being dispatched goes to the client.
    fn deliver(&mut self) -> bool {
        self.front.reply_mode.take_delivery()
    }

    /// Queues a reply that takes work of its own (fan-outs, blocking commands, transactions).
    fn push(&mut self, future: impl Future<Output = Bytes> + Send + 'static) {
        let deliver = self.deliver();
        self.replies.push_future(
            async move { Out::reply(future.await, deliver) }.boxed(),
            self.stamp,
        );
    }

    /// Remembers the connection a request was queued on, to flush it after this read.
    fn note(&mut self, submitted: &Submitted) {
        if let Some(conn) = submitted.conn()
            && !self.dirty.iter().any(|c| c.same(conn))
        {
            self.dirty.push(conn.clone());
        }
    }

    /// Writes what this read queued on shared connections.
    fn flush(&mut self) {
        for conn in self.dirty.drain(..) {
            conn.flush();
        }
    }

    /// Queues a reply keyward gives itself.
    fn local(&mut self, reply: Bytes) {
        let deliver = self.deliver();
        self.replies
            .push_ready(Out::reply(reply, deliver), self.stamp);
    }

    /// Sends a request over a shared connection now; its reply comes in order, and goes to its
    /// watch (the audit line of a guarded request such as GETDEL or MIGRATE).
    async fn forward(&mut self, target: Target, request: Bytes, watch: Option<Box<ReplyWatch>>) {
        let cluster = self.cluster.clone();
        if let Some(watch) = watch {
            // Watched: its reply is looked at when it comes, whatever is ahead of it, so it is
            // a future of its own.
            let submitted = cluster.submit(target, request, self.resp3).await;
            self.note(&submitted);
            self.push(async move {
                let frame = submitted.reply(&cluster).await;
                watch.settle(&frame).await;
                frame
            });
            return;
        }
        let alert = Some(self.replies.alert());
        let submitted = cluster
            .submit_alerting(target, request, self.resp3, alert)
            .await;
        self.note(&submitted);
        let deliver = self.deliver();
        self.replies
            .push_forwarded(submitted, cluster, deliver, self.stamp);
    }
}
