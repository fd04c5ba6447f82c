//! The request side of a session: client bytes in, upstream bytes and reply-queue entries out.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;

use super::super::front::{Admission, Admitted, Front, ReplyMode};
use super::super::{PAUSED_READ_LIMIT, ShutdownSignal};
use super::keyspace::Merge;
use super::{Expect, ExpectKind, Live, Pending, PrivateUpstream, SessionContext, Shared};
use crate::commands::{self, ClientSubcommand, Role};
use crate::net::Socket;
use crate::net::rw::{KEEP_BUFFER, ReadChunk, write_all_chunks};
use crate::protocol::args::Args;
use crate::protocol::request::{Request, RequestScanner};
use crate::protocol::write;

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
        /// Sentinel mode: the primary's epoch when the connection was made.
        epoch: u64,
    },
    /// Not connected; the error from the last attempt, if any.
    Down(Option<String>),
}

pub(super) struct RequestSide {
    client: Arc<Socket>,
    /// How much room the client's read buffer gets.
    read_chunk: ReadChunk,
    queue: mpsc::Sender<Vec<Pending>>,
    /// The settings in force, and where a reload puts new ones (see [`Live`]).
    live: Arc<Live>,
    ctx_generation: u64,
    ctx: Arc<SessionContext>,
    upstream: Arc<PrivateUpstream>,
    shared: Arc<Shared>,
    front: Front,
    scanner: RequestScanner,
    link: Link,
    generation: u64,
    in_multi: bool,
    /// Entries and upstream bytes of the batch being built from one read.
    batch: Vec<Pending>,
    outgoing: Vec<Bytes>,
    /// A connection attempt already failed during this batch: do not retry per request.
    connect_failed_in_batch: bool,
    /// Reply-queue entries sent to the reply side so far (see [`Shared::done_entries`]).
    sent_entries: u64,
    /// When the read that brought the requests being handled returned (metrics on only).
    read_at: Option<std::time::Instant>,
    /// In front of a cluster: the keyspace subscriptions merged across the primaries.
    keyspace: Option<Merge>,
}

/// Why the read loop stops.
enum Stop {
    /// Keep reading.
    No,
    /// A Close entry has been queued.
    Yes,
    /// `max_pending_replies` reached: requests may be left in the buffer.
    Paused,
}

/// How waiting for replies ended.
enum Resume {
    /// Below the limit again: go on reading.
    Go,
    Shutdown,
    /// The client hung up (or its socket failed) while keyward was not handling its requests.
    ClientGone,
}

impl RequestSide {
    pub(super) fn new(
        client: Arc<Socket>,
        queue: mpsc::Sender<Vec<Pending>>,
        live: Arc<Live>,
        upstream: Arc<PrivateUpstream>,
        shared: Arc<Shared>,
        front: Front,
        keyspace: Option<Merge>,
    ) -> Self {
        let (ctx_generation, ctx) = live.current();
        RequestSide {
            client,
            read_chunk: ReadChunk::new(),
            queue,
            scanner: front.scanner(&ctx),
            live,
            ctx_generation,
            ctx,
            upstream,
            shared,
            front,
            link: Link::Down(None),
            generation: 0,
            in_multi: false,
            batch: Vec::new(),
            outgoing: Vec::new(),
            connect_failed_in_batch: false,
            sent_entries: 0,
            read_at: None,
            keyspace,
        }
    }

    /// Runs until the client leaves, QUITs, breaks the protocol or keyward shuts down, having
    /// queued a closing entry for the reply side, which finishes answering. Returns itself: the
    /// caller drops it only once the reply side is done.
    pub(super) async fn run(mut self, mut shutdown: ShutdownSignal, input: BytesMut) -> Self {
        let mut reload = self.live.reload_signal();
        // The upstream connection is opened with the session, so that a client's first request
        // does not pay for it; a failure is reported on the first request.
        self.connect().await;
        self.send_batch().await;

        let mut buf = input;
        // Requests already in `buf` that are not handled yet: a handed-over client's first
        // bytes, or what was left when max_pending_replies paused the scan.
        let mut unhandled = !buf.is_empty();
        loop {
            let buffered = buf.len();
            let resume = if self.owed() < self.pending_limit() {
                Resume::Go
            } else {
                // Boxed: rarely taken, and inline its state would enlarge every session's task.
                Box::pin(self.wait_for_replies(&mut shutdown, &mut buf)).await
            };
            match resume {
                Resume::Go => {}
                Resume::Shutdown => {
                    self.batch.push(Pending::Close);
                    self.send_batch().await;
                    return self;
                }
                Resume::ClientGone => {
                    self.batch.push(Pending::ClientGone);
                    self.send_batch().await;
                    return self;
                }
            }
            // Bytes read while paused are handled before anything new is read.
            unhandled |= buf.len() > buffered;
            if unhandled {
                let stop = self.process(&mut buf).await;
                self.send_batch().await;
                match stop {
                    Stop::Yes => return self,
                    Stop::Paused => continue,
                    Stop::No => unhandled = false,
                }
                continue;
            }
            tokio::select! {
                ready = self.client.readable() => {
                    if ready.is_err() {
                        self.batch.push(Pending::ClientGone);
                        self.send_batch().await;
                        return self;
                    }
                }
                _ = shutdown.fired() => {
                    self.batch.push(Pending::Close);
                    self.send_batch().await;
                    return self;
                }
                // Only a client logged in as a named user can be disconnected by a reload.
                _ = reload.fired(), if self.front.login.is_user() => {
                    if !self.take_reload() {
                        self.batch.push(Pending::Close);
                        self.send_batch().await;
                        return self;
                    }
                    continue;
                }
            }
            match self.read_chunk.read(&self.client, &mut buf) {
                Ok(0) => {
                    // End of stream: answer what was asked, then close.
                    self.batch.push(Pending::ClientGone);
                    self.send_batch().await;
                    return self;
                }
                Ok(_) => {
                    if !self.ctx.idle_timeout.is_zero() {
                        self.shared.note_read();
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => {
                    tracing::debug!(client = %self.front.peer, error = %e, "client read failed");
                    self.batch.push(Pending::ClientGone);
                    self.send_batch().await;
                    return self;
                }
            }
            let stop = self.process(&mut buf).await;
            self.send_batch().await;
            match stop {
                Stop::Yes => return self,
                Stop::Paused => unhandled = true,
                Stop::No => {}
            }
            if buf.is_empty() && buf.capacity() > KEEP_BUFFER {
                buf = BytesMut::new();
            }
        }
    }

    /// Scans the complete requests in `buf` and handles them, pausing when the client has
    /// `max_pending_replies` requests waiting for replies.
    async fn process(&mut self, buf: &mut BytesMut) -> Stop {
        self.connect_failed_in_batch = false;
        if !self.take_reload() {
            self.batch.push(Pending::Close);
            return Stop::Yes;
        }
        self.read_at = crate::metrics::read_time();
        loop {
            // Checked per request: a login in this batch raises the limit.
            if self.owed() + self.batch.len() as u64 >= self.pending_limit() {
                return Stop::Paused;
            }
            match self.scanner.next(buf) {
                Ok(Some(request)) => {
                    if let Stop::Yes = self.handle(request).await {
                        return Stop::Yes;
                    }
                }
                Ok(None) => return Stop::No,
                Err(e) => {
                    tracing::info!(client = %self.front.peer, error = %e.message(), "protocol error, closing");
                    self.batch.push(Pending::Local(write::error(&e.message())));
                    self.batch.push(Pending::Close);
                    return Stop::Yes;
                }
            }
        }
    }

    async fn handle(&mut self, mut request: Request) -> Stop {
        let admission = self
            .front
            .admit(
                &self.ctx,
                self.upstream.warm.as_ref(),
                &mut request,
                self.in_multi,
                &mut self.scanner,
            )
            .await;
        match admission {
            Admission::Answer { reply, refused } => {
                if self.in_multi && refused {
                    self.refuse_in_transaction(reply).await;
                } else {
                    self.local(reply);
                }
                Stop::No
            }
            Admission::Quit => {
                self.local(write::simple("OK"));
                self.batch.push(Pending::Close);
                Stop::Yes
            }
            Admission::Forward(admitted) => {
                self.forward(request, admitted).await;
                Stop::No
            }
        }
    }

    /// Writes an admitted request to the client's upstream connection, with its entry.
    async fn forward(&mut self, request: Request, admitted: Admitted) {
        let Admitted {
            spec,
            role,
            rename,
            watch,
        } = admitted;
        if !self.ensure_upstream().await || !self.merge_keyspace(role, &request).await {
            if let Some(m) = crate::metrics::get() {
                let stamp = crate::metrics::Stamp::new(crate::commands::id_of(spec), None);
                m.answered(stamp, crate::metrics::Outcome::Error, None);
            }
            return;
        }

        if spec.is_some_and(|s| s.stateful) {
            self.shared.stateful.store(true, Ordering::Release);
        }
        let kind = match role {
            Role::Subscribe(kind) => ExpectKind::Subscription {
                kind,
                subscribe: true,
                remaining: Some((request.args().len() - 1).max(1)),
            },
            Role::Unsubscribe(kind) => ExpectKind::Subscription {
                kind,
                subscribe: false,
                remaining: (request.args().len() > 1).then(|| request.args().len() - 1),
            },
            Role::Monitor => ExpectKind::Monitor,
            Role::Reset => ExpectKind::Reset,
            Role::Hello => ExpectKind::Hello,
            _ => ExpectKind::One,
        };
        match role {
            // MULTI with arguments is an arity error and starts nothing.
            Role::Multi if request.args().len() == 1 => self.in_multi = true,
            Role::Exec | Role::Discard => self.in_multi = false,
            _ => {}
        }

        let replies = self.takes_reply(role, request.args());
        if replies {
            self.batch.push(Pending::Reply(Expect {
                kind,
                watch,
                blocking: spec.is_some_and(|s| s.blocking),
                stamp: crate::metrics::Stamp::new(crate::commands::id_of(spec), self.read_at),
            }));
        }
        match rename {
            Some(name) => {
                let (head, rest) = request.renamed_parts(name.as_bytes());
                self.outgoing.push(head);
                self.outgoing.push(rest);
            }
            None => self.outgoing.push(request.into_raw()),
        }

        if role == Role::Reset {
            self.in_multi = false;
            self.front.reply_mode = ReplyMode::On;
            // RESET de-authenticates the upstream connection; restore keyward's own login.
            if let Some(auth) = self.upstream.target.auth_command() {
                self.batch.push(Pending::Swallow);
                self.outgoing.push(auth);
            }
        }
    }

    /// In front of a cluster, keeps the other primaries' subscriptions in step with a
    /// (un)subscription or `RESET` about to go to the client's own connection (see
    /// [`super::keyspace`]). False when a keyspace subscription failed: its error has been
    /// queued as the reply, and the request must not be sent.
    async fn merge_keyspace(&mut self, role: Role, request: &Request) -> bool {
        let Some(merge) = self.keyspace.as_mut() else {
            return true;
        };
        match role {
            // Queued inside MULTI, a (un)subscription runs at EXEC: not merged.
            Role::Subscribe(_) | Role::Unsubscribe(_) if self.in_multi => {}
            Role::Subscribe(kind) => {
                if !merge.concerns(kind, request.args()) {
                    return true;
                }
                // What this read queued so far goes out first, not after the other primaries'
                // confirmations.
                self.send_batch().await;
                let Some(merge) = self.keyspace.as_mut() else {
                    return true;
                };
                if let Err(reply) = merge.subscribe(kind, request.args()).await {
                    self.local(reply);
                    return false;
                }
            }
            Role::Unsubscribe(kind) => merge.unsubscribe(kind, request.args()).await,
            Role::Monitor if !self.in_multi => {
                self.send_batch().await;
                let Some(merge) = self.keyspace.as_mut() else {
                    return true;
                };
                if let Err(reply) = merge.monitor().await {
                    self.local(reply);
                    return false;
                }
            }
            Role::Reset => merge.reset().await,
            _ => {}
        }
        true
    }

    /// Puts the settings of a reload since the last read in force for the requests read from
    /// now on. False when the client must be disconnected (its user is gone).
    fn take_reload(&mut self) -> bool {
        if !self.live.changed(self.ctx_generation) {
            return true;
        }
        let before = self.ctx.clone();
        self.live.refresh(&mut self.ctx_generation, &mut self.ctx);
        self.front.reloaded(&before, &self.ctx, &mut self.scanner)
    }

    /// Whether Redis will reply to this request, following `CLIENT REPLY`.
    fn takes_reply(&mut self, role: Role, args: Args<'_>) -> bool {
        let mode = &mut self.front.reply_mode;
        if role == Role::Reset && *mode == ReplyMode::Off {
            // Redis switches replies back on before it answers RESET.
            *mode = ReplyMode::On;
            return true;
        }
        if role == Role::Client
            && !self.in_multi
            && commands::client_subcommand(args) == ClientSubcommand::Reply
            && let Some(switch) = commands::reply_switch(&args[2])
        {
            return mode.switch(switch);
        }
        mode.take_delivery()
    }

    /// Queues a reply made by keyward, unless the client asked Redis not to reply.
    fn local(&mut self, reply: Bytes) {
        match self.front.reply_mode {
            ReplyMode::On => self.batch.push(Pending::Local(reply)),
            ReplyMode::Off => {}
            ReplyMode::SkipNext => {
                // Redis is waiting to skip one reply. It must skip one that keyward sends it
                // now, not the next real request's: the placeholder's error is that reply.
                self.front.reply_mode = ReplyMode::On;
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
        if self.front.reply_mode.take_delivery() {
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
        if let Link::Up { epoch, .. } = &self.link
            && let Some(primary) = &self.upstream.target.primary
            && primary.epoch() != *epoch
        {
            // Sentinel mode, after a failover: nothing more goes to the old primary. The
            // reply side fails what is in flight there (and closes a client with state on
            // it); a client without state carries on over a connection to the new primary.
            let reason = format!("the primary of '{}' changed (failover)", primary.name);
            self.batch.push(Pending::Broken(reason.clone()));
            self.link = Link::Down(Some(reason.clone()));
            self.in_multi = false;
            if self.shared.stateful.load(Ordering::Acquire) {
                self.connect_failed_in_batch = true;
                self.local(write::error(&format!(
                    "ERR keyward: {reason}; this connection's state (SELECT, MULTI, \
                     subscriptions...) was on the old primary: reconnect"
                )));
                return false;
            }
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
        // Boxed: a connection attempt (with its TLS handshake) has a large state, which inline
        // would stay part of every session's task for the session's whole life.
        let epoch = self
            .upstream
            .target
            .primary
            .as_ref()
            .map_or(0, |p| p.epoch());
        let connected = match &self.upstream.warm {
            Some(pool) => Box::pin(pool.connect()).await,
            None => Box::pin(self.upstream.target.connect()).await,
        };
        match connected {
            Ok(stream) => {
                self.generation += 1;
                let writer = Arc::new(stream);
                self.batch
                    .push(Pending::Attach(writer.clone(), self.generation, epoch));
                self.link = Link::Up {
                    writer,
                    generation: self.generation,
                    epoch,
                };
            }
            Err(e) => {
                // Without a primary (Sentinel mode, mid-failover) every request would log this;
                // the sentinel watcher has said it once.
                let no_primary = self
                    .upstream
                    .target
                    .primary
                    .as_ref()
                    .is_some_and(|p| p.current().is_none());
                if no_primary {
                    tracing::debug!(client = %self.front.peer, error = %e, "no primary to connect to");
                } else {
                    tracing::warn!(client = %self.front.peer, error = %e, "upstream connection failed");
                }
                self.link = Link::Down(Some(e));
            }
        }
    }

    /// Requests of this client waiting for their replies (or behind one that is).
    fn owed(&self) -> u64 {
        self.sent_entries
            .saturating_sub(self.shared.done_entries.load(Ordering::Acquire))
    }

    /// How many requests may wait for replies: `max_pending_replies`, or a handful before the
    /// client has logged in.
    fn pending_limit(&self) -> u64 {
        self.front.pending_limit(&self.ctx) as u64
    }

    /// Backpressure: while the pending limit's worth of requests wait for replies that the
    /// client is not reading, keyward stops handling the client's requests, so that neither it
    /// nor Redis buffers without bound. It still reads up to [`PAUSED_READ_LIMIT`] into `buf`,
    /// so that a client that hangs up is noticed (its blocked command is then dropped upstream).
    async fn wait_for_replies(
        &mut self,
        shutdown: &mut ShutdownSignal,
        buf: &mut BytesMut,
    ) -> Resume {
        let limit = self.pending_limit();
        if self.owed() < limit {
            return Resume::Go;
        }
        self.front.note_pending_limit(limit as usize);
        let resume = loop {
            let progress = self.shared.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            self.shared.reader_waiting.store(true, Ordering::Release);
            if self.owed() < limit {
                break Resume::Go;
            }
            let watch_client = buf.len() < PAUSED_READ_LIMIT;
            tokio::select! {
                _ = progress => {}
                _ = shutdown.fired() => break Resume::Shutdown,
                ready = self.client.readable(), if watch_client => {
                    if ready.is_err() {
                        break Resume::ClientGone;
                    }
                    match self.read_chunk.read(&self.client, buf) {
                        Ok(0) => break Resume::ClientGone,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => break Resume::ClientGone,
                    }
                }
            }
        };
        self.shared.reader_waiting.store(false, Ordering::Release);
        resume
    }

    /// Sends the queued entries to the reply side, then the bytes upstream. Entries go first so
    /// that the reply side always knows about a request before its reply can arrive.
    async fn send_batch(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            self.sent_entries += batch.len() as u64;
            // If the reply side is gone the session is ending; nothing to deliver to.
            let _ = self.queue.send(batch).await;
        }
        if self.outgoing.is_empty() {
            return;
        }
        if let Link::Up { writer, .. } = &mut self.link
            && let Err(e) = write_all_chunks(writer, &mut self.outgoing).await
        {
            self.sent_entries += 1;
            let _ = self.queue.send(vec![Pending::Broken(e.to_string())]).await;
            self.link = Link::Down(Some(format!(
                "connection to upstream {} lost: {e}",
                self.upstream.target.addr
            )));
            self.in_multi = false;
        }
        self.outgoing.clear();
    }
}
