//! The request side of a session: client bytes in, upstream bytes and reply-queue entries out.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::sync::{mpsc, watch};

use super::{
    Expect, ExpectKind, Pending, ReplyMode, SessionContext, Shared, read_some, write_all_chunks,
};
use crate::audit::{self, Audit};
use crate::commands::{self, Role};
use crate::guard::Verdict;
use crate::net::Socket;
use crate::protocol::request::{Request, RequestScanner};
use crate::protocol::write;

/// How much the client read buffer grows by when it needs room.
const READ_CHUNK: usize = 16 * 1024;
/// A read buffer this large is released when it runs empty, so that one big request does not
/// pin memory for the rest of a long-lived connection.
const KEEP_BUFFER: usize = 256 * 1024;

/// Name of the placeholder command sent in place of a refused command inside MULTI. Redis
/// rejects it at queue time (unknown command), which makes the transaction fail with
/// EXECABORT, exactly like a command Redis itself rejects.
const REFUSED_PLACEHOLDER: &[u8] = b"KEYWARD.REFUSED";

/// A command Redis rejects at once (unknown command) and never runs or shows in MONITOR.
fn placeholder() -> Bytes {
    write::command::<&[u8]>(REFUSED_PLACEHOLDER, &[])
}

/// The state of this session's upstream connection, as the request side sees it.
enum Link {
    Up {
        writer: Arc<Socket>,
        generation: u64,
    },
    /// Not connected; the error from the last attempt, if any.
    Down(Option<String>),
}

pub(super) struct RequestSide {
    client: Arc<Socket>,
    queue: mpsc::Sender<Vec<Pending>>,
    peer: SocketAddr,
    ctx: Arc<SessionContext>,
    shared: Arc<Shared>,
    scanner: RequestScanner,
    link: Link,
    generation: u64,
    in_multi: bool,
    reply_mode: ReplyMode,
    /// Entries and upstream bytes of the batch being built from one read.
    batch: Vec<Pending>,
    outgoing: Vec<Bytes>,
    /// A connection attempt already failed during this batch: do not retry per request.
    connect_failed_in_batch: bool,
}

/// Why the read loop stops.
enum Stop {
    /// Keep reading.
    No,
    /// A Close entry has been queued.
    Yes,
}

impl RequestSide {
    pub(super) fn new(
        client: Arc<Socket>,
        queue: mpsc::Sender<Vec<Pending>>,
        peer: SocketAddr,
        ctx: Arc<SessionContext>,
        shared: Arc<Shared>,
    ) -> Self {
        let scanner = RequestScanner::new(ctx.limits);
        RequestSide {
            client,
            queue,
            peer,
            ctx,
            shared,
            scanner,
            link: Link::Down(None),
            generation: 0,
            in_multi: false,
            reply_mode: ReplyMode::On,
            batch: Vec::new(),
            outgoing: Vec::new(),
            connect_failed_in_batch: false,
        }
    }

    /// Runs until the client leaves, QUITs, breaks the protocol or keyward shuts down, having
    /// queued a closing entry for the reply side, which finishes answering. Returns itself: the
    /// caller drops it only once the reply side is done.
    pub(super) async fn run(
        mut self,
        mut shutdown: watch::Receiver<bool>,
        input: BytesMut,
    ) -> Self {
        // The upstream connection is opened with the session, so that a client's first request
        // does not pay for it; a failure is reported on the first request.
        self.connect().await;
        self.send_batch().await;

        let mut buf = input;
        if !buf.is_empty() {
            let stop = self.process(&mut buf).await;
            self.send_batch().await;
            if matches!(stop, Stop::Yes) {
                return self;
            }
        }
        loop {
            tokio::select! {
                ready = self.client.readable() => {
                    if ready.is_err() {
                        self.batch.push(Pending::ClientGone);
                        self.send_batch().await;
                        return self;
                    }
                }
                _ = shutdown.changed() => {
                    self.batch.push(Pending::Close);
                    self.send_batch().await;
                    return self;
                }
            }
            if buf.capacity() - buf.len() < READ_CHUNK / 4 {
                buf.reserve(READ_CHUNK);
            }
            match read_some(&self.client, &mut buf) {
                Ok(0) => {
                    // End of stream: answer what was asked, then close.
                    self.batch.push(Pending::ClientGone);
                    self.send_batch().await;
                    return self;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::debug!(client = %self.peer, error = %e, "client read failed");
                    self.batch.push(Pending::ClientGone);
                    self.send_batch().await;
                    return self;
                }
            }
            let stop = self.process(&mut buf).await;
            self.send_batch().await;
            if matches!(stop, Stop::Yes) {
                return self;
            }
            if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
                buf = BytesMut::new();
            }
        }
    }

    /// Scans every complete request in `buf` and handles it.
    async fn process(&mut self, buf: &mut BytesMut) -> Stop {
        self.connect_failed_in_batch = false;
        loop {
            match self.scanner.next(buf) {
                Ok(Some(request)) => {
                    if let Stop::Yes = self.handle(request).await {
                        return Stop::Yes;
                    }
                }
                Ok(None) => return Stop::No,
                Err(e) => {
                    tracing::info!(client = %self.peer, error = %e.message(), "protocol error, closing");
                    self.batch.push(Pending::Local(write::error(&e.message())));
                    self.batch.push(Pending::Close);
                    return Stop::Yes;
                }
            }
        }
    }

    async fn handle(&mut self, request: Request) -> Stop {
        let spec = commands::lookup(&request.args[0]);
        let role = spec.map_or(Role::Ordinary, |s| s.role);

        match role {
            Role::Quit => {
                self.local(write::simple("OK"));
                self.batch.push(Pending::Close);
                return Stop::Yes;
            }
            Role::Replication => {
                self.local(write::error(
                    "ERR keyward: SYNC, PSYNC and REPLCONF are not supported through keyward; \
                     replicate from Redis directly",
                ));
                return Stop::No;
            }
            _ => {}
        }

        let verdict = self.ctx.guard.check(spec, &request.args);
        let guarded = matches!(role, Role::Delete | Role::RemoveKeys);
        let bytes = match verdict {
            Verdict::Refuse(refusal) => {
                audit::refused(self.peer, &request.args, refusal.rule.name());
                let reply = write::error(&refusal.message);
                if self.in_multi {
                    self.refuse_in_transaction(reply).await;
                } else {
                    self.local(reply);
                }
                return Stop::No;
            }
            Verdict::Rewrite(delete) => request.renamed(delete.name().as_bytes()).raw,
            Verdict::Forward => request.raw,
        };

        if !self.ensure_upstream().await {
            return Stop::No;
        }

        if spec.is_some_and(|s| s.stateful) {
            self.shared.stateful.store(true, Ordering::Release);
        }
        let kind = match role {
            Role::Subscribe(kind) => ExpectKind::Subscription {
                kind,
                subscribe: true,
                remaining: Some((request.args.len() - 1).max(1)),
            },
            Role::Unsubscribe(kind) => ExpectKind::Subscription {
                kind,
                subscribe: false,
                remaining: (request.args.len() > 1).then(|| request.args.len() - 1),
            },
            Role::Monitor => ExpectKind::Monitor,
            Role::Reset => ExpectKind::Reset,
            _ if commands::effective_name(&request.args[0]).eq_ignore_ascii_case(b"hello") => {
                ExpectKind::Hello
            }
            _ => ExpectKind::One,
        };
        match role {
            // MULTI with arguments is an arity error and starts nothing.
            Role::Multi if request.args.len() == 1 => self.in_multi = true,
            Role::EndTransaction => self.in_multi = false,
            _ => {}
        }
        let audit = guarded.then(|| Box::new(Audit::start(self.peer, &request.args)));

        let replies = self.takes_reply(role, &request.args);
        if replies {
            self.batch.push(Pending::Reply(Expect {
                kind,
                audit,
                blocking: spec.is_some_and(|s| s.blocking),
            }));
        }
        self.outgoing.push(bytes);

        if role == Role::Reset {
            self.in_multi = false;
            self.reply_mode = ReplyMode::On;
            // RESET de-authenticates the upstream connection; restore keyward's own login.
            if let Some(auth) = self.ctx.upstream.auth_command() {
                self.batch.push(Pending::Swallow);
                self.outgoing.push(auth);
            }
        }
        Stop::No
    }

    /// Whether Redis will reply to this request, following `CLIENT REPLY`.
    fn takes_reply(&mut self, role: Role, args: &[Bytes]) -> bool {
        if role == Role::Reset && self.reply_mode == ReplyMode::Off {
            // Redis switches replies back on before it answers RESET.
            self.reply_mode = ReplyMode::On;
            return true;
        }
        if role == Role::Client
            && !self.in_multi
            && args.len() == 3
            && args[1].eq_ignore_ascii_case(b"reply")
        {
            let mode = &args[2];
            if mode.eq_ignore_ascii_case(b"off") {
                self.reply_mode = ReplyMode::Off;
                return false;
            }
            if mode.eq_ignore_ascii_case(b"skip") {
                // SKIP itself is not answered; under OFF it changes nothing.
                if self.reply_mode == ReplyMode::On {
                    self.reply_mode = ReplyMode::SkipNext;
                }
                return false;
            }
            if mode.eq_ignore_ascii_case(b"on") {
                self.reply_mode = ReplyMode::On;
                return true;
            }
        }
        self.reply_mode.take_delivery()
    }

    /// Queues a reply made by keyward, unless the client asked Redis not to reply.
    fn local(&mut self, reply: Bytes) {
        match self.reply_mode {
            ReplyMode::On => self.batch.push(Pending::Local(reply)),
            ReplyMode::Off => {}
            ReplyMode::SkipNext => {
                // Redis is waiting to skip one reply. It must skip one that keyward sends it
                // now, not the next real request's: the placeholder's error is that reply.
                self.reply_mode = ReplyMode::On;
                if matches!(self.link, Link::Up { .. }) {
                    self.outgoing.push(placeholder());
                }
            }
        }
    }

    /// A refusal inside MULTI: Redis must see a command it rejects, so that EXEC fails.
    async fn refuse_in_transaction(&mut self, reply: Bytes) {
        if !self.ensure_upstream().await {
            return;
        }
        if self.reply_mode.take_delivery() {
            self.batch.push(Pending::Replace(reply));
        }
        self.outgoing.push(placeholder());
    }

    /// Makes sure there is an upstream connection to write to; when there is none and none can
    /// be made, queues the error for the current request and returns false.
    async fn ensure_upstream(&mut self) -> bool {
        if let Link::Up { generation, .. } = &self.link
            && self.shared.upstream_failed(*generation)
        {
            self.link = Link::Down(Some("the connection was closed".into()));
            self.in_multi = false;
        }
        if matches!(self.link, Link::Up { .. }) {
            return true;
        }
        if !self.connect_failed_in_batch {
            self.connect().await;
        }
        match &self.link {
            Link::Up { .. } => true,
            Link::Down(err) => {
                self.connect_failed_in_batch = true;
                let message = err.clone().unwrap_or_else(|| "not connected".into());
                self.local(write::error(&format!("ERR keyward: {message}")));
                false
            }
        }
    }

    /// Opens a new upstream connection and hands its reading half to the reply side.
    async fn connect(&mut self) {
        // Replies still owed on an older connection are failed by the reply side.
        self.send_batch().await;
        let connected = match &self.ctx.warm {
            Some(pool) => pool.connect().await,
            None => self.ctx.upstream.connect().await,
        };
        match connected {
            Ok(stream) => {
                self.generation += 1;
                let writer = Arc::new(stream);
                self.batch
                    .push(Pending::Attach(writer.clone(), self.generation));
                self.link = Link::Up {
                    writer,
                    generation: self.generation,
                };
            }
            Err(e) => {
                tracing::warn!(client = %self.peer, error = %e, "upstream connection failed");
                self.link = Link::Down(Some(e));
            }
        }
    }

    /// Sends the queued entries to the reply side, then the bytes upstream. Entries go first so
    /// that the reply side always knows about a request before its reply can arrive.
    async fn send_batch(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            // If the reply side is gone the session is ending; nothing to deliver to.
            let _ = self.queue.send(batch).await;
        }
        if self.outgoing.is_empty() {
            return;
        }
        if let Link::Up { writer, .. } = &mut self.link
            && let Err(e) = write_all_chunks(writer, &mut self.outgoing).await
        {
            let _ = self.queue.send(vec![Pending::Broken(e.to_string())]).await;
            self.link = Link::Down(Some(format!(
                "connection to upstream {} lost: {e}",
                self.ctx.upstream.addr
            )));
            self.in_multi = false;
        }
        self.outgoing.clear();
    }
}
