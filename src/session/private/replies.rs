//! The reply side of a session: upstream replies and keyward's own answers, in request order,
//! to the client.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Buf, Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use super::super::front::note_idle_close;
use super::super::hook_runs::HookFuture;
use super::keyspace::{self, Merged};
use super::pubsub::{self, Subscriptions};
use super::{
    Expect, ExpectKind, Live, Pending, PrivateUpstream, SessionContext, Shared, upstream_lost,
};
use crate::cluster::housekeeping;
use crate::metrics::{self, Outcome};
use crate::net::Socket;
use crate::net::rw::{KEEP_BUFFER, ReadChunk, write_all_chunks};
use crate::protocol::reply::{self, ReplyFramer};

pub(super) struct ReplySide {
    client: Arc<Socket>,
    queue: mpsc::Receiver<Vec<Pending>>,
    peer: SocketAddr,
    /// The settings in force (idle timeout, close grace), followed across reloads.
    live: Arc<Live>,
    ctx_generation: u64,
    ctx: Arc<SessionContext>,
    upstream_settings: Arc<PrivateUpstream>,
    shared: Arc<Shared>,
    /// Entries in request order; the front is the next request to answer.
    pending: VecDeque<Pending>,
    upstream: Option<(Arc<Socket>, u64)>,
    /// Upstream bytes read and not yet passed on. `buf[..forward]` has been framed and is to be
    /// forwarded as it is; framing resumes at `forward`.
    buf: BytesMut,
    /// How much room `buf` gets.
    read_chunk: ReadChunk,
    forward: usize,
    framer: ReplyFramer,
    /// Chunks waiting to be written to the client.
    out: Vec<Bytes>,
    subscriptions: Subscriptions,
    monitoring: bool,
    /// The connection speaks RESP3 (after `HELLO 3`): messages then come as push frames only.
    resp3: bool,
    /// Set when a Close entry is waiting behind unanswered requests: the latest moment to close.
    close_deadline: Option<Instant>,
    /// Since when the front request has waited for upstream without any byte arriving (None
    /// while nothing is owed, or the front is a blocking command that may wait for ever).
    waiting_since: Option<Instant>,
    /// When bytes were last written to the client.
    last_write: Instant,
    /// Entries received from the request side so far; those no longer in `pending` are done.
    received_entries: u64,
    /// The done count last published in [`Shared::done_entries`].
    published_done: u64,
    /// The time replies framed in this pass reach the client (metrics on only; read once per
    /// pass, when the first reply needs it).
    pass_time: Option<std::time::Instant>,
    /// The one timer for the side's deadlines, made at the first deadline and kept: moving a
    /// kept timer to a later deadline is an atomic store, where a timer made afresh on every
    /// turn of the loop costs a timer-wheel insertion and removal, and, when no other timer is
    /// pending, a wake-up of the I/O driver (an eventfd write and an extra epoll event per
    /// request: measured with strace, one client, no pipelining). Boxed, and only once needed:
    /// an idle client does not carry it.
    timer: Option<Pin<Box<Sleep>>>,
    /// Hooks that writes answered in this pass triggered: they run before the replies framed
    /// so far reach the client.
    hook_runs: Vec<HookFuture>,
    /// Sentinel mode: the primary's changes, and its epoch when the current upstream
    /// connection was made; a change leaves that connection (see [`Self::primary_changed`]).
    primary_changes: Option<tokio::sync::watch::Receiver<u64>>,
    upstream_epoch: u64,
    /// In front of a cluster: the notifications of the other primaries (see
    /// [`super::keyspace`]).
    merged: Option<mpsc::Receiver<Merged>>,
}

/// What to do with one upstream frame.
enum Disposition {
    /// Pass it on and answer the front entry with it.
    Answer,
    /// Pass it on; it answers nothing (a pub/sub message, a push, a monitor line).
    OutOfBand,
    /// Drop it: a monitor line of keyward's own housekeeping ([`housekeeping`]).
    Hidden,
}

impl ReplySide {
    pub(super) fn new(
        client: Arc<Socket>,
        queue: mpsc::Receiver<Vec<Pending>>,
        peer: SocketAddr,
        live: Arc<Live>,
        upstream_settings: Arc<PrivateUpstream>,
        shared: Arc<Shared>,
        merged: Option<mpsc::Receiver<Merged>>,
    ) -> Self {
        let (ctx_generation, ctx) = live.current();
        let resp3 = upstream_settings.target.resp3;
        let primary_changes = upstream_settings
            .target
            .primary
            .as_ref()
            .map(|p| p.subscribe());
        ReplySide {
            client,
            queue,
            peer,
            live,
            ctx_generation,
            ctx,
            upstream_settings,
            shared,
            pending: VecDeque::new(),
            upstream: None,
            buf: BytesMut::new(),
            read_chunk: ReadChunk::new(),
            forward: 0,
            framer: ReplyFramer::new(),
            out: Vec::new(),
            subscriptions: Subscriptions::default(),
            monitoring: false,
            resp3,
            close_deadline: None,
            waiting_since: None,
            last_write: Instant::now(),
            received_entries: 0,
            published_done: 0,
            pass_time: None,
            timer: None,
            hook_runs: Vec::new(),
            primary_changes,
            upstream_epoch: 0,
            merged,
        }
    }

    pub(super) async fn run(mut self) {
        loop {
            let close = self.answer_local();
            // A write's reply waits for the hooks it triggered: a client that reads its cache
            // after the reply must not find the old entry.
            if !self.hook_runs.is_empty() {
                for run in std::mem::take(&mut self.hook_runs) {
                    run.await;
                }
            }
            if !self.out.is_empty() {
                if write_all_chunks(&self.client, &mut self.out).await.is_err() {
                    return;
                }
                self.last_write = Instant::now();
            }
            if close {
                return;
            }
            match self.pending.back() {
                Some(Pending::Close) if self.close_deadline.is_none() => {
                    self.close_deadline = Some(Instant::now() + self.ctx.close_grace);
                }
                Some(Pending::ClientGone) => {
                    if self.only_blocked_replies_owed() {
                        return;
                    }
                    if self.close_deadline.is_none() {
                        self.close_deadline = Some(Instant::now() + self.ctx.close_grace);
                    }
                }
                _ => {}
            }
            self.live.refresh(&mut self.ctx_generation, &mut self.ctx);
            let deadline = self.close_deadline;
            let reading = self.upstream.is_some();
            self.publish_progress();
            let reply_deadline = self.reply_deadline();
            let idle_deadline = self.idle_deadline();
            // One timer for the three deadlines: each timer inline in this loop would make every
            // session's task larger (measured: about 200 bytes per client each).
            let next_deadline = [deadline, reply_deadline, idle_deadline]
                .into_iter()
                .flatten()
                .min();
            let timer = arm(&mut self.timer, next_deadline);
            tokio::select! {
                biased;
                batch = self.queue.recv() => match batch {
                    Some(batch) => self.receive(batch),
                    // The request side is gone without a Close: nothing more will be asked.
                    None => self.pending.push_back(Pending::Close),
                },
                ready = readable(&self.upstream), if reading => {
                    match ready {
                        Ok(()) => self.read_upstream(),
                        Err(e) => self.fail_upstream(&e.to_string()),
                    }
                }
                _ = changed(&mut self.primary_changes) => self.primary_changed(),
                merged = next_merged(&mut self.merged) => self.merge(merged),
                _ = wait(timer) => {
                    let now = Instant::now();
                    let passed = |at: Option<Instant>| at.is_some_and(|at| at <= now);
                    if passed(deadline) {
                        tracing::debug!(client = %self.peer, "closing with replies still owed");
                        return;
                    }
                    if passed(reply_deadline) {
                        let waited = self.upstream_settings.target.reply_timeout.as_millis();
                        self.fail_upstream(&format!("no reply within {waited} ms"));
                    } else if passed(self.idle_deadline()) {
                        // Recomputed: the request side may have read from the client meanwhile.
                        note_idle_close(self.peer, self.ctx.idle_timeout);
                        return;
                    }
                }
            }
        }
    }

    /// Tells the request side how many entries are done, waking it if it waits for that.
    fn publish_progress(&mut self) {
        // Saturating: the reply side adds a Close entry of its own when a session ends.
        let done = self
            .received_entries
            .saturating_sub(self.pending.len() as u64);
        if done != self.published_done {
            self.published_done = done;
            self.shared.done_entries.store(done, Ordering::Release);
            if self.shared.reader_waiting.load(Ordering::Acquire) {
                self.shared.progress.notify_one();
            }
        }
    }

    /// Takes a batch of entries from the request side, in order.
    fn receive(&mut self, batch: Vec<Pending>) {
        self.received_entries += batch.len() as u64;
        for entry in batch {
            match entry {
                Pending::Attach(reader, generation, epoch) => {
                    self.upstream = Some((reader, generation));
                    self.upstream_epoch = epoch;
                    self.buf.clear();
                    self.forward = 0;
                    self.framer = ReplyFramer::new();
                }
                Pending::Broken(reason) => {
                    if self.upstream.is_some() {
                        self.fail_upstream(&reason);
                    }
                }
                Pending::Reply(_) | Pending::Replace(_) | Pending::Swallow
                    if self.upstream.is_none() =>
                {
                    // Written to a connection that is already gone: it will never be answered.
                    if !matches!(entry, Pending::Swallow) {
                        self.pending.push_back(Pending::Local(upstream_lost(
                            &self.upstream_settings,
                            "the connection was closed",
                        )));
                    }
                }
                other => self.pending.push_back(other),
            }
        }
    }

    /// Moves keyward's own answers at the front of the queue to the output. Returns true when a
    /// Close entry has been reached.
    fn answer_local(&mut self) -> bool {
        loop {
            match self.pending.front() {
                Some(Pending::Local(_)) => {
                    self.flush_forward();
                    if let Some(Pending::Local(reply)) = self.pending.pop_front() {
                        self.out.push(reply);
                    }
                }
                Some(Pending::Close) | Some(Pending::ClientGone) => {
                    self.flush_forward();
                    return true;
                }
                _ => return false,
            }
        }
    }

    /// When the client counts as idle (`idle_timeout_ms`): nothing read from it or written to it
    /// for the timeout, nothing owed to it, and not subscribed (Redis exempts subscribers and
    /// blocked clients, which wait by design).
    fn idle_deadline(&self) -> Option<Instant> {
        let timeout = self.ctx.idle_timeout;
        // MONITOR clients are exempt too, as in Redis (which flags them as replicas).
        if timeout.is_zero()
            || !self.pending.is_empty()
            || self.subscriptions.active()
            || self.monitoring
        {
            return None;
        }
        Some(self.last_write.max(self.shared.last_read()) + timeout)
    }

    /// When the front request's wait for upstream becomes a failure (`reply_timeout_ms`).
    fn reply_deadline(&mut self) -> Option<Instant> {
        let timeout = self.upstream_settings.target.reply_timeout;
        let owed = self.upstream.is_some()
            && !timeout.is_zero()
            && match self.pending.front() {
                Some(Pending::Reply(expect)) => !expect.blocking,
                Some(Pending::Replace(_)) | Some(Pending::Swallow) => true,
                _ => false,
            };
        if !owed {
            self.waiting_since = None;
            return None;
        }
        let since = *self.waiting_since.get_or_insert_with(Instant::now);
        Some(since + timeout)
    }

    /// True when every reply still owed belongs to a blocking command.
    fn only_blocked_replies_owed(&self) -> bool {
        // Everything behind a blocked command waits for it: once the first entry still owed is
        // a blocked command, nothing more can reach a client that has gone.
        for entry in &self.pending {
            match entry {
                Pending::Reply(expect) => return expect.blocking,
                Pending::Replace(_) | Pending::Swallow | Pending::Local(_) => return false,
                _ => {}
            }
        }
        true
    }

    /// Reads what upstream has sent and deals with every complete frame.
    fn read_upstream(&mut self) {
        // The request side queues an entry before it writes the request upstream, so every
        // reply read below has its entry in the channel already, though perhaps not yet here.
        while let Ok(batch) = self.queue.try_recv() {
            self.receive(batch);
        }
        let Some((reader, _)) = &self.upstream else {
            return;
        };
        self.pass_time = None;
        match self.read_chunk.read(reader, &mut self.buf) {
            Ok(0) => {
                self.fail_upstream("closed by the upstream");
                return;
            }
            Ok(_) => self.waiting_since = None,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) => {
                self.fail_upstream(&e.to_string());
                return;
            }
        }
        loop {
            match self.framer.next_frame_len(&self.buf[self.forward..]) {
                Ok(Some(len)) => self.dispatch(len),
                Ok(None) => break,
                Err(e) => {
                    tracing::error!(client = %self.peer, error = %e.0, "upstream sent invalid RESP");
                    self.fail_upstream(&format!("invalid reply from upstream: {}", e.0));
                    return;
                }
            }
            if self.answer_local() {
                break;
            }
        }
        self.flush_forward();
        if self.buf.is_empty() && self.buf.capacity() > KEEP_BUFFER {
            self.buf = BytesMut::new();
        }
    }

    /// Handles the frame of `len` bytes at `buf[forward..]`.
    fn dispatch(&mut self, len: usize) {
        let start = self.forward;
        let frame = &self.buf[start..start + len];
        // Sentinel mode: a primary that answers as a replica was demoted; ask the sentinels now
        // rather than at the next periodic check.
        if frame.starts_with(b"-READONLY")
            && let Some(primary) = &self.upstream_settings.target.primary
        {
            primary.request_check();
        }
        match self.disposition(frame) {
            Disposition::OutOfBand => self.forward += len,
            Disposition::Hidden => self.drop_frame(len),
            Disposition::Answer => self.answer(len),
        }
    }

    fn disposition(&self, frame: &[u8]) -> Disposition {
        let expecting_confirmation = matches!(
            self.pending.front(),
            Some(Pending::Reply(Expect {
                kind: ExpectKind::Subscription { .. },
                ..
            }))
        );
        if reply::is_push(frame) {
            // RESP3: subscribe confirmations are pushes too; everything else pushed is out of band.
            if expecting_confirmation && pubsub::confirmation(frame).is_some() {
                return Disposition::Answer;
            }
            return Disposition::OutOfBand;
        }
        // In RESP2 a message is an ordinary array; in RESP3 it is always a push (above), and an
        // array that looks like one is a reply, e.g. a list holding "message", "chan", "x".
        if !self.resp3 && self.subscriptions.active() && pubsub::is_message(frame) {
            return Disposition::OutOfBand;
        }
        if self.monitoring && is_monitor_line(frame) {
            if housekeeping::is_own_monitor_line(frame) {
                return Disposition::Hidden;
            }
            return Disposition::OutOfBand;
        }
        Disposition::Answer
    }

    /// The frame of `len` bytes at `buf[forward..]` answers the front entry.
    fn answer(&mut self, len: usize) {
        let start = self.forward;
        let Some(front) = self.pending.front_mut() else {
            // Nothing is waiting for a reply: pass it on rather than lose it.
            tracing::debug!(client = %self.peer, "unexpected reply from upstream, passed on");
            self.forward += len;
            return;
        };
        let frame = &self.buf[start..start + len];
        let done = match front {
            Pending::Reply(expect) => {
                let done = match &mut expect.kind {
                    ExpectKind::One => true,
                    ExpectKind::Subscription {
                        kind,
                        subscribe,
                        remaining,
                    } => match pubsub::confirmation(frame) {
                        Some(c) if c.kind == *kind && c.subscribe == *subscribe => {
                            let left = remaining
                                .get_or_insert_with(|| self.subscriptions.count(*kind).max(1));
                            self.subscriptions.apply(&c);
                            *left = left.saturating_sub(1);
                            *left == 0
                        }
                        // An error, or +QUEUED inside MULTI: the only reply.
                        _ => true,
                    },
                    ExpectKind::Monitor => {
                        if reply::simple_string(frame) == Some(&b"OK"[..]) {
                            self.monitoring = true;
                        }
                        true
                    }
                    ExpectKind::Reset => {
                        if reply::simple_string(frame) == Some(&b"RESET"[..]) {
                            self.subscriptions.clear();
                            self.monitoring = false;
                            self.resp3 = false;
                        }
                        true
                    }
                    ExpectKind::Hello => {
                        match frame.first() {
                            Some(b'%') => self.resp3 = true,
                            Some(b'*') => self.resp3 = false,
                            _ => {}
                        }
                        true
                    }
                };
                if done && let Some(watch) = expect.watch.take() {
                    watch.answered(frame);
                    if let Some(run) = watch.hooks_due(frame) {
                        self.hook_runs.push(run);
                    }
                }
                if done && let Some(m) = metrics::get() {
                    let now = *self.pass_time.get_or_insert_with(std::time::Instant::now);
                    m.answered(expect.stamp, Outcome::of_reply(frame), Some(now));
                }
                self.forward += len;
                done
            }
            Pending::Replace(_) => {
                self.drop_frame(len);
                if let Some(Pending::Replace(reply)) = self.pending.pop_front() {
                    self.out.push(reply);
                }
                return;
            }
            Pending::Swallow => {
                self.drop_frame(len);
                self.pending.pop_front();
                return;
            }
            // Local and Close never stay at the front (answer_local runs after every frame).
            _ => {
                self.forward += len;
                false
            }
        };
        if done {
            self.pending.pop_front();
        }
    }

    /// Removes the frame of `len` bytes at `buf[forward..]`, keeping what precedes it.
    fn drop_frame(&mut self, len: usize) {
        self.flush_forward();
        self.buf.advance(len);
    }

    /// Moves the framed bytes that are to be forwarded to the output, without copying.
    fn flush_forward(&mut self) {
        if self.forward > 0 {
            self.out.push(self.buf.split_to(self.forward).freeze());
            self.forward = 0;
        }
    }

    /// A notification from another primary, or the end of the merge. A notification goes out
    /// only while the client's own connection has confirmed the subscription it was delivered
    /// for, and only here, between two frames: `out` holds whole frames only, and the framed
    /// bytes not moved there yet go first.
    fn merge(&mut self, merged: Merged) {
        match merged {
            Merged::Message {
                kind,
                subscription,
                frame,
            } => {
                if self.upstream.is_some() && self.subscriptions.contains(kind, &subscription) {
                    self.flush_forward();
                    keyspace::write_for_client(frame, self.resp3, &mut self.out);
                }
            }
            // Another primary's MONITOR line, while this client monitors.
            Merged::MonitorLine(frame) => {
                if self.upstream.is_some() && self.monitoring {
                    self.flush_forward();
                    self.out.push(frame);
                }
            }
            // The client's subscriptions no longer hear every primary: as when its own
            // connection breaks, it gets errors for what it waits for, and is closed.
            Merged::Lost(reason) => self.fail_upstream(&reason),
        }
    }

    /// Sentinel mode: the primary changed. A connection made to the old one is left: what it
    /// owes becomes an error (never a reply from a server keyward knows was demoted), and a
    /// client with state on it is closed, as when a connection is lost.
    fn primary_changed(&mut self) {
        let Some(primary) = &self.upstream_settings.target.primary else {
            return;
        };
        if self.upstream.is_some() && primary.epoch() != self.upstream_epoch {
            let reason = format!("the primary of '{}' changed (failover)", primary.name);
            self.fail_upstream(&reason);
        }
    }

    /// The upstream connection is gone: every reply it owed becomes an error, in place.
    fn fail_upstream(&mut self, reason: &str) {
        // Sentinel mode: a lost connection may be a failover the sentinels have not announced.
        if let Some(primary) = &self.upstream_settings.target.primary {
            primary.request_check();
        }
        let Some((_, generation)) = self.upstream.take() else {
            return;
        };
        tracing::warn!(client = %self.peer, upstream = %self.upstream_settings.target.describe(), %reason, "upstream connection lost");
        metrics::upstream_lost(reason);
        // What was framed already goes out; a partial frame is lost with the connection.
        self.flush_forward();
        self.buf.clear();
        self.framer = ReplyFramer::new();
        let error = upstream_lost(&self.upstream_settings, reason);
        let pending = std::mem::take(&mut self.pending);
        for entry in pending {
            match entry {
                Pending::Reply(expect) => {
                    if let Some(m) = metrics::get() {
                        m.answered(
                            expect.stamp,
                            Outcome::Error,
                            Some(std::time::Instant::now()),
                        );
                    }
                    self.pending.push_back(Pending::Local(error.clone()))
                }
                Pending::Replace(_) => self.pending.push_back(Pending::Local(error.clone())),
                Pending::Swallow => {}
                other => self.pending.push_back(other),
            }
        }
        let had_state = self.shared.stateful.load(Ordering::Acquire)
            || self.subscriptions.active()
            || self.monitoring;
        self.subscriptions.clear();
        self.monitoring = false;
        self.shared
            .failed_generation
            .store(generation, Ordering::Release);
        if had_state {
            // SELECT, MULTI, subscriptions... lived on that connection. A silent reconnect
            // would run the client's next commands in a state it did not ask for; closing
            // tells its library to reconnect and set the state up again.
            self.pending.push_back(Pending::Close);
        }
    }
}

/// Sentinel mode: the next change of the primary (never, in other modes).
async fn changed(changes: &mut Option<tokio::sync::watch::Receiver<u64>>) {
    match changes {
        Some(rx) => {
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending().await,
    }
}

/// The next merged notification (never, outside a cluster or once the merge is gone).
async fn next_merged(merged: &mut Option<mpsc::Receiver<Merged>>) -> Merged {
    if let Some(receiver) = merged
        && let Some(message) = receiver.recv().await
    {
        return message;
    }
    *merged = None;
    std::future::pending().await
}

async fn readable(upstream: &Option<(Arc<Socket>, u64)>) -> std::io::Result<()> {
    match upstream {
        Some((reader, _)) => reader.readable().await,
        None => std::future::pending().await,
    }
}

/// Sets `timer` to `deadline` (making it if there is none yet) and returns it; None when there
/// is no deadline. A timer left at an older deadline may fire once more for nothing: it is not
/// polled then, and the loop only acts on deadlines it computes afresh.
fn arm(timer: &mut Option<Pin<Box<Sleep>>>, deadline: Option<Instant>) -> Option<Pin<&mut Sleep>> {
    let at = deadline?;
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
    if timer.deadline() != at {
        timer.as_mut().reset(at);
    }
    Some(timer.as_mut())
}

async fn wait(timer: Option<Pin<&mut Sleep>>) {
    match timer {
        Some(timer) => timer.await,
        None => std::future::pending().await,
    }
}

/// A MONITOR line: `+1700000000.123456 [0 127.0.0.1:6379] "get" "k"`.
fn is_monitor_line(frame: &[u8]) -> bool {
    let Some(text) = reply::simple_string(frame) else {
        return false;
    };
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && text.get(digits) == Some(&b'.') && text.windows(2).any(|w| w == b" [")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_lines() {
        assert!(is_monitor_line(
            b"+1700000000.123456 [0 127.0.0.1:6379] \"get\" \"k\"\r\n"
        ));
        assert!(!is_monitor_line(b"+OK\r\n"));
        assert!(!is_monitor_line(b"+123\r\n"));
    }
}
