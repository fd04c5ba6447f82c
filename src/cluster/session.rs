//! One client in front of a Redis Cluster.
//!
//! The client sees one ordinary Redis server. Each request takes its place in one ordered
//! queue (`ReplyQueue`, in `replies.rs`), so replies leave in request order however many nodes
//! answered them. Requests are queued on their node's shared connection while the session
//! reads them (see [`Cluster::submit`]), so two requests of one client to one node keep their
//! order.
//!
//! What cannot share a connection gets its own:
//! - blocking commands (BLPOP...) a private connection per request;
//! - WATCH / MULTI ... EXEC a private connection to the node of the transaction's slot, chosen
//!   by the first command with a key (keyless commands before it wait);
//! - pub/sub and MONITOR: the whole session is handed over to a standalone session on a
//!   private connection to one node (the slot's owner for SSUBSCRIBE), and stays there.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use futures_util::future::FutureExt;
use tokio::sync::watch;

use super::fanout::{self, Plan};
use super::node::{self, NodeConn};
use super::replies::{Out, ReplyQueue};
use super::topology::slot_of;
use super::{Cluster, Target};
use crate::audit::{self, Audit};
use crate::auth::{self, ClientAuth, Gate, Login};
use crate::commands::{self, CommandSpec, Fanout, Role};
use crate::guard::{GuardPolicy, Verdict};
use crate::net::Socket;
use crate::protocol::args::Args;
use crate::protocol::request::{Request, RequestScanner, ScanLimits};
use crate::protocol::write;
use crate::session::{
    PAUSED_READ_LIMIT, ReadChunk, ReplyMode, SessionContext, ShutdownSignal, write_all_chunks,
};

/// Settings shared by every session of this kind.
pub struct ClusterContext {
    pub cluster: Arc<Cluster>,
    pub guard: GuardPolicy,
    pub limits: ScanLimits,
    pub close_grace: std::time::Duration,
    /// The upstream is one standalone Redis ([`Cluster::single`]): stateless requests share its
    /// connection, and the first request that needs per-connection state (SELECT, MULTI,
    /// blocking, pub/sub, CLIENT, AUTH, HELLO...) moves the client to a connection of its own.
    pub standalone: bool,
    /// Standalone mode: the settings of the private sessions that clients move to (with a pool
    /// of connections opened ahead of need).
    pub pinned: Option<Arc<SessionContext>>,
    /// Who may log in to keyward; `None`: keyward does not authenticate clients.
    pub auth: Option<Arc<ClientAuth>>,
    /// Close a client idle this long (zero: never).
    pub idle_timeout: std::time::Duration,
    /// Requests in flight per session before keyward stops reading the client
    /// (`limits.max_pending_replies`). Replies of shared connections cannot be left in Redis for
    /// a client that does not read (that would stall every client), so this also bounds what
    /// keyward buffers for one client: at most this many replies.
    pub max_pending_replies: usize,
}

/// The capacity a read buffer shrinks back to after a big request.
const READ_CHUNK: usize = 16 * 1024;

const CROSSSLOT: &str = "CROSSSLOT Keys in request don't hash to the same slot";

/// A private connection pinned to one node for WATCH / MULTI.
struct Pinned {
    conn: NodeConn,
    slot: Option<u16>,
}

/// A keyless command queued in a transaction before its node was known (already answered
/// QUEUED by keyward).
type Waiting = Bytes;

/// A transaction being queued.
#[derive(Default)]
struct Transaction {
    pinned: Option<Pinned>,
    /// Keyless commands queued before the node was known.
    waiting: Vec<Waiting>,
    /// A command was refused at queue time: EXEC must fail with EXECABORT.
    aborted: bool,
}

struct ClusterSession {
    ctx: Arc<ClusterContext>,
    peer: SocketAddr,
    resp3: bool,
    reply_mode: ReplyMode,
    login: Login,
    name: Option<Bytes>,
    watch: Option<Pinned>,
    transaction: Option<Transaction>,
    replies: ReplyQueue,
    /// Shared connections with requests queued by this read, flushed once it is processed.
    dirty: Vec<NodeConn>,
    /// Blocking commands in flight (their replies may never come).
    blocking: Arc<std::sync::atomic::AtomicUsize>,
    commands: commands::LookupCache,
}

/// What the read loop does after a request.
enum Next {
    Continue,
    /// Stop reading: a Close is queued.
    Stop,
    /// Hand the connection over to a standalone session on a private connection to this node,
    /// starting with this request.
    Handoff {
        addr: String,
        raw: Bytes,
    },
}

pub async fn run(
    stream: Socket,
    peer: SocketAddr,
    ctx: Arc<ClusterContext>,
    shutdown: watch::Receiver<bool>,
) {
    let mut shutdown = ShutdownSignal::new(shutdown);
    let _ = stream.set_nodelay(true);
    let client = stream;
    let mut session = ClusterSession {
        ctx: ctx.clone(),
        peer,
        resp3: false,
        reply_mode: ReplyMode::On,
        login: Login::new(ctx.auth.as_deref()),
        name: None,
        watch: None,
        transaction: None,
        replies: ReplyQueue::default(),
        dirty: Vec::new(),
        blocking: Arc::default(),
        commands: commands::LookupCache::default(),
    };
    let mut scanner = RequestScanner::new(ctx.limits);
    scanner.set_unauthenticated(!session.login.is_authenticated());
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
    // The max_pending_replies log line is written once per session.
    let mut told_limit = false;
    // Requests read but not handled yet, because max_pending_replies paused the scan.
    let mut unhandled = false;
    loop {
        if !reading && session.replies.is_empty() {
            break;
        }
        if client_gone
            && session.replies.len() <= session.blocking.load(std::sync::atomic::Ordering::Acquire)
        {
            return;
        }
        if !reading && closing_at.is_none() && handoff.is_none() {
            closing_at = Some(tokio::time::Instant::now() + ctx.close_grace);
        }
        let can_read = reading && session.replies.len() < session.pending_limit();
        if reading && !can_read && !told_limit {
            told_limit = true;
            tracing::info!(
                client = %peer,
                max_pending_replies = session.pending_limit(),
                "client has reached max_pending_replies; not reading it until it reads replies"
            );
        }
        // Idle: nothing owed (a blocked command is owed), nothing read or written for the timeout.
        let idle_at = (!ctx.idle_timeout.is_zero() && reading && session.replies.is_empty())
            .then(|| last_activity + ctx.idle_timeout);
        if unhandled && can_read {
            unhandled = session
                .handle_requests(&mut scanner, &mut buf, &mut reading, &mut handoff)
                .await;
            continue;
        }
        tokio::select! {
            biased;
            Some(first) = session.replies.next(), if !session.replies.is_empty() => {
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
                if write_all_chunks(&client, &mut out).await.is_err() || close {
                    return;
                }
                last_activity = tokio::time::Instant::now();
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
            _ = sleep_until(closing_at), if closing_at.is_some() => { return; }
            _ = sleep_until(idle_at), if idle_at.is_some() => {
                tracing::info!(
                    client = %peer,
                    idle_timeout_ms = ctx.idle_timeout.as_millis() as u64,
                    "closing idle client"
                );
                return;
            }
        }
    }
    if let Some((addr, input)) = handoff {
        let stream = client;
        let standalone = match &ctx.pinned {
            Some(pinned) => pinned.clone(),
            None => Arc::new(SessionContext {
                guard: ctx.guard.clone(),
                limits: ctx.limits,
                upstream: ctx.cluster.target(&addr, session.resp3),
                warm: None,
                close_grace: ctx.close_grace,
                auth: ctx.auth.clone(),
                idle_timeout: ctx.idle_timeout,
                max_pending_replies: ctx.max_pending_replies,
            }),
        };
        tracing::debug!(client = %peer, node = %addr, "session pinned to a node for pub/sub or MONITOR");
        crate::session::run_with_input(stream, peer, standalone, shutdown, input, session.login)
            .await;
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl ClusterSession {
    /// How many requests may wait for replies: `max_pending_replies`, or a handful before the
    /// client has logged in.
    fn pending_limit(&self) -> usize {
        self.login.pending_limit(self.ctx.max_pending_replies)
    }

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
        loop {
            // Checked per request: a login in this read raises the limit.
            if self.replies.len() >= self.pending_limit() {
                paused = true;
                break;
            }
            match scanner.next(buf) {
                Ok(Some(request)) => match self.dispatch(request, scanner).await {
                    Next::Continue => {}
                    Next::Stop => {
                        *reading = false;
                        break;
                    }
                    Next::Handoff { addr, raw } => {
                        let mut input = BytesMut::from(&raw[..]);
                        input.extend_from_slice(buf);
                        buf.clear();
                        *handoff = Some((addr, input));
                        *reading = false;
                        break;
                    }
                },
                Ok(None) => break,
                Err(e) => {
                    self.local(write::error(&e.message()));
                    self.replies.push_ready(Out::Close);
                    *reading = false;
                    break;
                }
            }
        }
        self.flush();
        crate::session::release_grown_buffer(buf, READ_CHUNK);
        paused
    }

    fn cluster(&self) -> Arc<Cluster> {
        self.ctx.cluster.clone()
    }

    /// Whether the reply to the request being dispatched goes to the client.
    fn deliver(&mut self) -> bool {
        self.reply_mode.take_delivery()
    }

    /// Queues a reply that takes work of its own (fan-outs, blocking commands, transactions).
    fn push(&mut self, future: impl Future<Output = Bytes> + Send + 'static) {
        let deliver = self.deliver();
        self.replies
            .push_future(async move { Out::reply(future.await, deliver) }.boxed());
    }

    /// Remembers the connection a request was queued on, to flush it after this read.
    fn note(&mut self, submitted: &super::Submitted) {
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
        self.replies.push_ready(Out::reply(reply, deliver));
    }

    /// Sends a request over a shared connection now; its reply comes in order, and goes in the
    /// audit line of a guarded request (GETDEL, MIGRATE).
    async fn forward(&mut self, target: Target, request: Bytes, audit: Option<Audit>) {
        let cluster = self.cluster();
        if let Some(audit) = audit {
            // A guarded request: its audit line is written when the reply comes, whatever is
            // ahead of it, so it is a future of its own.
            let submitted = cluster.submit(target, request, self.resp3).await;
            self.note(&submitted);
            self.push(async move {
                let frame = submitted.reply(&cluster).await;
                audit.answered(&frame);
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
        self.replies.push_forwarded(submitted, cluster, deliver);
    }

    async fn dispatch(&mut self, request: Request, scanner: &mut RequestScanner) -> Next {
        let spec = self.commands.lookup(&request.args()[0]);
        // Without client authentication there is nothing to check: no future to build.
        let request = match self.ctx.auth.clone() {
            None => request,
            Some(client_auth) => {
                let in_transaction = self.transaction.is_some();
                // Boxed: inline, its state would enlarge every session's task.
                let gate = Box::pin(auth::gate(
                    &client_auth,
                    &mut self.login,
                    self.peer.ip(),
                    spec,
                    request,
                    in_transaction,
                ))
                .await;
                scanner.set_unauthenticated(!self.login.is_authenticated());
                match gate {
                    Gate::Pass(request) => request,
                    Gate::Answer(reply) => {
                        if let Some(t) = self.transaction.as_mut()
                            && reply.starts_with(b"-")
                        {
                            t.aborted = true;
                        }
                        self.local(reply);
                        return Next::Continue;
                    }
                }
            }
        };
        let role = spec.map_or(Role::Ordinary, |s| s.role);
        match role {
            Role::Quit => {
                self.local(write::simple("OK"));
                self.replies.push_ready(Out::Close);
                return Next::Stop;
            }
            Role::Replication => {
                self.local(write::error(
                    "ERR keyward: SYNC and PSYNC are not supported through keyward",
                ));
                return Next::Continue;
            }
            _ => {}
        }

        let verdict =
            self.ctx
                .guard
                .check_as(spec, request.args(), self.login.bypasses_deny_commands());
        // The audit line names the command as the client sent it (REMOVEKEYS, not UNLINK).
        let audit = matches!(role, Role::Delete | Role::RemoveKeys)
            .then(|| Audit::start(self.peer, request.args()));
        let request = match verdict {
            Verdict::Refuse(refusal) => {
                audit::refused(self.peer, request.args(), refusal.rule.name());
                if let Some(t) = self.transaction.as_mut() {
                    t.aborted = true;
                }
                self.local(write::error(&refusal.message));
                return Next::Continue;
            }
            Verdict::Rewrite(delete) => request.renamed(delete.name().as_bytes()),
            Verdict::Forward => request,
        };

        if self.ctx.standalone {
            return self.dispatch_standalone(spec, role, request, audit).await;
        }
        match role {
            Role::Subscribe(kind) | Role::Unsubscribe(kind) if self.transaction.is_none() => {
                let addr = if kind == commands::PubSubKind::Shard && request.args().len() > 1 {
                    match self.slot_of_keys(request.args().from(1)) {
                        Ok(slot) => self.ctx.cluster.map().owner(slot).map(|a| a.to_string()),
                        Err(e) => {
                            self.local(e);
                            return Next::Continue;
                        }
                    }
                } else {
                    self.ctx.cluster.primaries().into_iter().next()
                };
                return self.handoff(addr, request.into_raw());
            }
            Role::Monitor if self.transaction.is_none() => {
                let addr = self.ctx.cluster.primaries().into_iter().next();
                return self.handoff(addr, request.into_raw());
            }
            Role::Multi => return self.multi().await,
            Role::EndTransaction => return self.end_transaction(&request).await,
            _ => {}
        }
        if let Some(next) = self.session_command(spec, &request).await {
            return next;
        }
        if self.transaction.is_some() {
            self.queue_in_transaction(spec, request, audit).await;
            return Next::Continue;
        }
        // Blocking commands, and connection state no case above handles (SCRIPT DEBUG, ACL,
        // DEBUG): a private connection for this one request, never a shared one.
        if spec.is_some_and(|s| s.blocking || s.stateful) {
            self.blocking(spec, request).await;
            return Next::Continue;
        }

        let fanout = spec.map_or(Fanout::Keyless, |s| s.fanout);
        match fanout {
            Fanout::SplitSum if request.args().len() > 1 => {
                self.split_sum(request, audit).await;
            }
            Fanout::SplitMerge if request.args().len() > 1 => {
                let plan = fanout::plan_split(b"MGET", request.args().from(1));
                let keys = request.args().len() - 1;
                self.run_plan(plan, move |groups, replies| {
                    fanout::merge_mget(groups, replies, keys)
                })
                .await;
            }
            Fanout::SplitPairs if request.args().len() >= 3 && request.args().len() % 2 == 1 => {
                let plan = fanout::plan_mset(request.args().from(1));
                self.run_plan(plan, |_, replies| fanout::all_ok(replies))
                    .await;
            }
            Fanout::AllPrimaries => self.all_primaries(&request).await,
            _ => match self.target(spec, request.args()) {
                Ok(target) => self.forward(target, request.into_raw(), audit).await,
                Err(e) => self.local(e),
            },
        }
        Next::Continue
    }

    /// Commands about the client connection itself, which keyward answers without sharing a
    /// connection's state: SELECT, CLIENT SETNAME/GETNAME/REPLY, AUTH, HELLO, WATCH, UNWATCH...
    async fn session_command(
        &mut self,
        spec: Option<&CommandSpec>,
        request: &Request,
    ) -> Option<Next> {
        let args = request.args();
        // The table's lowercase name: no per-request lowercasing.
        let name = spec?.name;
        match name.as_bytes() {
            b"select" if args.len() == 2 => {
                if &args[1][..] == b"0" {
                    self.local(write::simple("OK"));
                } else {
                    self.local(write::error("ERR SELECT is not allowed in cluster mode"));
                }
            }
            b"client" if args.len() >= 2 => {
                let sub = commands::effective_name(&args[1]).to_ascii_lowercase();
                match (sub.as_slice(), args.len()) {
                    (b"setname", 3) => {
                        if args[2].iter().any(|&b| b <= b' ' || b > b'~') {
                            self.local(write::error(
                                "ERR Client names cannot contain spaces, newlines or special characters.",
                            ));
                        } else {
                            self.name = (!args[2].is_empty()).then(|| args.bytes(2));
                            self.local(write::simple("OK"));
                        }
                    }
                    (b"getname", 2) => {
                        let reply = match &self.name {
                            Some(n) => write::bulk(n),
                            None if self.resp3 => Bytes::from_static(b"_\r\n"),
                            None => Bytes::from_static(b"$-1\r\n"),
                        };
                        self.local(reply);
                    }
                    (b"reply", 3) => {
                        // Cut at a NUL byte, as Redis's strcasecmp reads it.
                        let mode = commands::effective_name(&args[2]).to_ascii_lowercase();
                        match mode.as_slice() {
                            b"on" => {
                                self.reply_mode = ReplyMode::On;
                                self.local(write::simple("OK"));
                            }
                            b"off" => self.reply_mode = ReplyMode::Off,
                            b"skip" => {
                                if self.reply_mode == ReplyMode::On {
                                    self.reply_mode = ReplyMode::SkipNext;
                                }
                            }
                            _ => self.local(write::error("ERR syntax error")),
                        }
                    }
                    (b"tracking", _) | (b"caching", _) => self.local(write::error(
                        "ERR keyward: client-side caching is not supported in cluster mode",
                    )),
                    _ => return None,
                }
            }
            b"auth" | b"hello" => {
                // Checked on a private connection so that the shared ones keep keyward's login.
                if name == "hello"
                    && let Some(v) = args.get(1)
                {
                    match v {
                        b"2" => self.resp3 = false,
                        b"3" => self.resp3 = true,
                        _ => {}
                    }
                }
                let cluster = self.cluster();
                let raw = request.raw().clone();
                self.push(async move {
                    let Some(addr) = cluster.primaries().into_iter().next() else {
                        return write::error("CLUSTERDOWN keyward: no primary known");
                    };
                    match cluster.private(&addr, false).await {
                        Ok(conn) => conn.request(raw, 0).await.unwrap_or_else(|e| {
                            write::error(&format!("ERR keyward: {}", e.message()))
                        }),
                        Err(e) => write::error(&format!("ERR keyward: {e}")),
                    }
                });
            }
            b"readonly" | b"readwrite" | b"asking" => self.local(write::simple("OK")),
            b"watch" if args.len() >= 2 => {
                if self.transaction.is_some() {
                    self.local(write::error("ERR WATCH inside MULTI is not allowed"));
                    return Some(Next::Continue);
                }
                let slot = match self.slot_of_keys(args.from(1)) {
                    Ok(slot) => slot,
                    Err(e) => {
                        self.local(e);
                        return Some(Next::Continue);
                    }
                };
                if let Some(p) = &self.watch
                    && p.slot != Some(slot)
                {
                    self.local(write::error(CROSSSLOT));
                    return Some(Next::Continue);
                }
                if self.watch.is_none() {
                    match self.pin(Some(slot)).await {
                        Ok(p) => self.watch = Some(p),
                        Err(e) => {
                            self.local(e);
                            return Some(Next::Continue);
                        }
                    }
                }
                let conn = self.watch.as_ref().map(|p| p.conn.clone());
                if let Some(conn) = conn {
                    self.submit_on(&conn, request.raw().clone()).await;
                }
            }
            b"unwatch" => match self.watch.take() {
                Some(p) => self.submit_on(&p.conn, request.raw().clone()).await,
                None => self.local(write::simple("OK")),
            },
            _ => return None,
        }
        Some(Next::Continue)
    }

    fn handoff(&mut self, addr: Option<String>, raw: Bytes) -> Next {
        match addr {
            Some(addr) => Next::Handoff { addr, raw },
            None => {
                self.local(write::error("CLUSTERDOWN keyward: no node serves the slot"));
                Next::Continue
            }
        }
    }

    /// Where a single-slot or keyless request goes: CROSSSLOT when its keys span slots.
    fn target(&self, spec: Option<&CommandSpec>, args: Args<'_>) -> Result<Target, Bytes> {
        let Some(spec) = spec else {
            // Not in the table: any node; if it has keys elsewhere, MOVED is followed.
            return Ok(Target::Any);
        };
        let mut slot = None;
        for i in spec.keys.positions(args.len()) {
            let s = slot_of(&args[i]);
            match slot {
                None => slot = Some(s),
                Some(prev) if prev != s => return Err(write::error(CROSSSLOT)),
                _ => {}
            }
        }
        Ok(slot.map_or(Target::Any, Target::Slot))
    }

    fn slot_of_keys(&self, keys: Args<'_>) -> Result<u16, Bytes> {
        let first = slot_of(&keys[0]);
        if keys.iter().any(|k| slot_of(k) != first) {
            return Err(write::error(CROSSSLOT));
        }
        Ok(first)
    }

    async fn split_sum(&mut self, request: Request, audit: Option<Audit>) {
        let plan = fanout::plan_split(&request.args()[0], request.args().from(1));
        let keys = request.args().len() - 1;
        self.run_plan(plan, move |groups, replies| {
            let sum = fanout::sum(groups, replies);
            if sum.failures.is_empty() {
                if let Some(audit) = &audit {
                    audit.log(&format!(
                        "removed {} (in {} slots)",
                        sum.total,
                        groups.len()
                    ));
                }
                return fanout::integer(sum.total);
            }
            let failed_keys: usize = sum.failures.iter().map(|f| f.1).sum();
            let (slot, _, first) = &sum.failures[0];
            match &audit {
                Some(audit) => {
                    let message = format!(
                        "partial delete: removed {} keys; {failed_keys} of {keys} keys in {} \
                         slot(s) failed, first failure (slot {slot}): {first}",
                        sum.total,
                        sum.failures.len(),
                    );
                    audit.log(&message);
                    write::error(&format!("ERR keyward: {message}"))
                }
                None => write::error(first),
            }
        })
        .await;
    }

    /// A standalone upstream: stateless requests go over the shared connection; anything that
    /// needs state of its own on the connection moves the client to a private one for good.
    async fn dispatch_standalone(
        &mut self,
        spec: Option<&CommandSpec>,
        role: Role,
        request: Request,
        audit: Option<Audit>,
    ) -> Next {
        // Only commands keyward knows to be stateless share the connection: anything it does
        // not know (a module's command, a newer Redis's) might block it or leave state on it.
        let needs_own_connection = match (role, spec) {
            (Role::Ordinary | Role::Delete | Role::RemoveKeys, Some(spec)) => {
                spec.stateful || spec.blocking
            }
            _ => true,
        };
        if needs_own_connection {
            let addr = self.ctx.cluster.primaries().into_iter().next();
            return self.handoff(addr, request.into_raw());
        }
        // `resp3` is false here: HELLO moved the client to a connection of its own.
        self.forward(Target::Any, request.into_raw(), audit).await;
        Next::Continue
    }

    /// Submits every part of a plan now, and queues the combination of their replies.
    async fn run_plan<F>(&mut self, plan: Plan, combine: F)
    where
        F: FnOnce(&[(u16, Vec<usize>)], &[Bytes]) -> Bytes + Send + 'static,
    {
        let cluster = self.cluster();
        let submitted = fanout::submit_all(&cluster, plan.parts, self.resp3).await;
        for s in &submitted {
            self.note(s);
        }
        let groups = plan.groups;
        let by_key = plan.by_key;
        let resp3 = self.resp3;
        self.push(async move {
            let mut replies = fanout::replies(&cluster, submitted).await;
            if let Some(by_key) = &by_key {
                fanout::split_tryagain(&cluster, &groups, by_key, &mut replies, resp3).await;
            }
            combine(&groups, &replies)
        });
    }

    async fn all_primaries(&mut self, request: &Request) {
        let cluster = self.cluster();
        let primaries = cluster.primaries();
        let name = request.args()[0].to_ascii_lowercase();
        if name.as_slice() == b"scan" {
            match fanout::plan_scan(&primaries, request.args()) {
                Ok(step) => {
                    let count = primaries.len();
                    let submitted = cluster.submit(step.target, step.request, self.resp3).await;
                    self.note(&submitted);
                    let node = step.node;
                    self.push(async move {
                        let frame = submitted.reply(&cluster).await;
                        fanout::finish_scan(&frame, node, count)
                    });
                }
                Err(e) => self.local(e),
            }
            return;
        }
        let parts = fanout::plan_every_primary(&primaries, request.raw());
        let plan = Plan {
            groups: Vec::new(),
            parts,
            by_key: None,
        };
        match name.as_slice() {
            b"dbsize" => self.run_plan(plan, |_, r| fanout::sum_integers(r)).await,
            b"keys" => self.run_plan(plan, |_, r| fanout::concat_arrays(r)).await,
            _ => self.run_plan(plan, |_, r| fanout::all_ok(r)).await,
        }
    }

    /// A blocking command on a private connection of its own, closed after the reply.
    async fn blocking(&mut self, spec: Option<&CommandSpec>, request: Request) {
        let target = match self.target(spec, request.args()) {
            Ok(t) => t,
            Err(e) => {
                self.local(e);
                return;
            }
        };
        let cluster = self.cluster();
        let resp3 = self.resp3;
        let blocking = self.blocking.clone();
        blocking.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        let done = BlockingDone(blocking);
        self.push(async move {
            let _done = done;
            let map = cluster.map();
            let addr = match &target {
                Target::Slot(s) => map.owner(*s).map(|a| a.to_string()),
                _ => cluster.primaries().into_iter().next(),
            };
            let Some(addr) = addr else {
                return write::error("CLUSTERDOWN keyward: no node serves the slot");
            };
            match cluster.private(&addr, resp3).await {
                Ok(conn) => conn
                    .request(request.into_raw(), 0)
                    .await
                    .unwrap_or_else(|e| write::error(&format!("ERR keyward: {}", e.message()))),
                Err(e) => write::error(&format!("ERR keyward: {e}")),
            }
        });
    }

    /// Opens a private connection to the owner of `slot` (or any primary).
    async fn pin(&mut self, slot: Option<u16>) -> Result<Pinned, Bytes> {
        pin(self.cluster(), self.resp3, slot).await
    }

    /// Writes `raw` on a pinned connection now and queues its reply.
    async fn submit_on(&mut self, conn: &NodeConn, raw: Bytes) {
        let pending = conn.submit(raw, 0).await;
        self.push(pending_reply(pending));
    }

    async fn multi(&mut self) -> Next {
        if self.transaction.is_some() {
            self.local(write::error("ERR MULTI calls can not be nested"));
            return Next::Continue;
        }
        let mut transaction = Transaction {
            pinned: self.watch.take(),
            ..Transaction::default()
        };
        match &transaction.pinned {
            Some(p) => {
                let conn = p.conn.clone();
                self.submit_on(&conn, write::command::<&[u8]>(b"MULTI", &[]))
                    .await;
            }
            None => self.local(write::simple("OK")),
        }
        transaction.aborted = false;
        self.transaction = Some(transaction);
        Next::Continue
    }

    /// Queues a command inside MULTI; a guarded one (DEL, REMOVEKEYS...) gets its audit line
    /// with the node's answer (`queued`) or the error that aborts the transaction.
    async fn queue_in_transaction(
        &mut self,
        spec: Option<&CommandSpec>,
        request: Request,
        audit: Option<Audit>,
    ) {
        let refuse = |session: &mut Self, error: Bytes| {
            if let Some(audit) = &audit {
                audit.answered(&error);
            }
            session.local(error);
        };
        let slot = match self.target(spec, request.args()) {
            Ok(Target::Slot(s)) => Some(s),
            Ok(_) => None,
            Err(e) => {
                if let Some(t) = self.transaction.as_mut() {
                    t.aborted = true;
                }
                refuse(self, e);
                return;
            }
        };
        let Some(mut transaction) = self.transaction.take() else {
            return;
        };
        if let (Some(slot), Some(p)) = (slot, transaction.pinned.as_mut()) {
            match p.slot {
                Some(s) if s != slot => {
                    transaction.aborted = true;
                    self.transaction = Some(transaction);
                    refuse(self, write::error(CROSSSLOT));
                    return;
                }
                None => p.slot = Some(slot),
                _ => {}
            }
        }
        if transaction.pinned.is_none() && slot.is_some() {
            match self.pin(slot).await {
                Ok(p) => {
                    open_transaction(&p.conn, &mut transaction.waiting).await;
                    transaction.pinned = Some(p);
                }
                Err(e) => {
                    transaction.aborted = true;
                    self.transaction = Some(transaction);
                    refuse(self, e);
                    return;
                }
            }
        }
        match &transaction.pinned {
            Some(p) => {
                let conn = p.conn.clone();
                self.transaction = Some(transaction);
                let pending = conn.submit(request.into_raw(), 0).await;
                self.push(async move {
                    let frame = pending_reply(pending).await;
                    if let Some(audit) = audit {
                        audit.answered(&frame);
                    }
                    frame
                });
            }
            None => {
                // No key yet, so no node: keyward answers QUEUED itself (MULTI's OK was its own
                // too) and sends the command once the node is known. Should the node reject it
                // then, EXEC fails with EXECABORT, as Redis would have made it fail.
                transaction.waiting.push(request.into_raw());
                self.transaction = Some(transaction);
                if let Some(audit) = &audit {
                    audit.log("queued");
                }
                self.local(write::simple("QUEUED"));
            }
        }
    }

    async fn end_transaction(&mut self, request: &Request) -> Next {
        let exec = request.args()[0].eq_ignore_ascii_case(b"exec");
        let Some(mut transaction) = self.transaction.take() else {
            let name = if exec { "EXEC" } else { "DISCARD" };
            self.local(write::error(&format!("ERR {name} without MULTI")));
            return Next::Continue;
        };
        if transaction.aborted {
            if let Some(p) = &transaction.pinned {
                let _ = p
                    .conn
                    .submit(write::command::<&[u8]>(b"DISCARD", &[]), 0)
                    .await;
            }
            self.local(if exec {
                write::error("EXECABORT Transaction discarded because of previous errors.")
            } else {
                write::simple("OK")
            });
            return Next::Continue;
        }
        if transaction.pinned.is_none() {
            if transaction.waiting.is_empty() {
                self.local(if exec {
                    Bytes::from_static(b"*0\r\n")
                } else {
                    write::simple("OK")
                });
                return Next::Continue;
            }
            match self.pin(None).await {
                Ok(p) => {
                    open_transaction(&p.conn, &mut transaction.waiting).await;
                    transaction.pinned = Some(p);
                }
                Err(e) => {
                    self.local(e);
                    return Next::Continue;
                }
            }
        }
        if let Some(p) = transaction.pinned {
            self.submit_on(&p.conn, request.raw().clone()).await;
        }
        Next::Continue
    }
}

/// Counts a blocking command out of the session's count when its future ends (or is dropped).
struct BlockingDone(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for BlockingDone {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Opens a private connection to the owner of `slot` (or any primary).
async fn pin(cluster: Arc<Cluster>, resp3: bool, slot: Option<u16>) -> Result<Pinned, Bytes> {
    let map = cluster.map();
    let addr = match slot {
        Some(s) => map.owner(s).map(|a| a.to_string()),
        None => cluster.primaries().into_iter().next(),
    }
    .ok_or_else(|| write::error("CLUSTERDOWN keyward: no node serves the slot"))?;
    let conn = cluster
        .private(&addr, resp3)
        .await
        .map_err(|e| write::error(&format!("ERR keyward: {e}")))?;
    Ok(Pinned { conn, slot })
}

/// Sends MULTI and the commands that waited for the transaction's node.
async fn open_transaction(conn: &NodeConn, waiting: &mut Vec<Waiting>) {
    // keyward already answered MULTI and the waiting commands: dropping their pending replies
    // discards what the node says.
    let _ = conn.submit(write::command::<&[u8]>(b"MULTI", &[]), 0).await;
    for raw in waiting.drain(..) {
        let _ = conn.submit(raw, 0).await;
    }
}

async fn pending_reply(pending: Result<node::Pending, node::NodeError>) -> Bytes {
    let result = match pending {
        Ok(p) => p.reply().await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| write::error(&format!("ERR keyward: {}", e.message())))
}
