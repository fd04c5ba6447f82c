//! The replies a routed session owes its client, in request order.
//!
//! Nearly every request is a command sent on a shared connection whose reply is the answer as
//! it comes. Those entries are no future at all: the queue takes the reply from the entry's
//! reply slot when the entry reaches the front. A boxed future per request (with the machinery
//! to follow redirections inside it) and a task slot in an ordered futures queue cost about a
//! third of keyward's instructions on this path, most of them in malloc and free (measured with
//! callgrind, 50 clients pipelining GET and SET).
//!
//! The rest are futures, all driven all the time, wherever their entry is in the queue:
//! - work of its own (fan-outs, blocking commands, transactions, guarded requests whose audit
//!   line is written when the reply comes): a `FuturesOrdered`, whose results wait here until
//!   their entry reaches the front;
//! - a forwarded request whose node answered with an error (MOVED, ASK, TRYAGAIN, CLUSTERDOWN
//!   to follow up) or could not be reached: [`Cluster::follow_from`], started as soon as that
//!   is known. Its node raises the session's [`ErrorAlert`] with the error reply, so that a
//!   follow-up never waits behind the requests ahead of it (a blocking command, a slow node)
//!   while its retry budget runs out.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{FuturesOrdered, FuturesUnordered, StreamExt};

use crate::cluster::node::{ErrorAlert, NodeReply};
use crate::cluster::{Cluster, Submitted};
use crate::metrics::{self, Outcome, Stamp};
use crate::protocol::reply;

/// What one request yields for the client.
pub(super) enum Out {
    Reply(Bytes),
    /// The client switched replies off (`CLIENT REPLY OFF|SKIP`).
    Nothing,
    /// Close the connection (after QUIT's `+OK`).
    Close,
}

impl Out {
    /// A reply, or nothing when the client's `CLIENT REPLY` mode drops it.
    pub(super) fn reply(frame: Bytes, deliver: bool) -> Out {
        if deliver {
            Out::Reply(frame)
        } else {
            Out::Nothing
        }
    }
}

/// One request's place in the queue.
enum Entry {
    /// Answered.
    Ready(Out),
    /// Sent on a shared connection; its first reply has not been looked at yet.
    Forwarded(Box<Forwarded>),
    /// Being followed up by a future in `following`, which answers it by its sequence number.
    Following { deliver: bool },
    /// Answered by the oldest future of `driven` not yet taken.
    Driven,
}

/// A request on a shared connection.
struct Forwarded {
    submitted: Submitted,
    cluster: Arc<Cluster>,
    /// The reply goes to the client (`CLIENT REPLY` may say otherwise).
    deliver: bool,
}

/// What became of a forwarded request's first reply.
enum First {
    Pending,
    Answer(Bytes),
    FollowUp(NodeReply),
}

impl Forwarded {
    fn poll_first(&mut self, cx: &mut Context<'_>) -> First {
        match self.submitted.poll_first(cx) {
            Poll::Pending => First::Pending,
            Poll::Ready(Ok(frame)) if !reply::is_error(&frame) => First::Answer(frame),
            Poll::Ready(first) => First::FollowUp(first),
        }
    }
}

type FollowUp = BoxFuture<'static, (u64, Bytes)>;

/// The queue; a `Stream` of each request's [`Out`], in request order.
pub(super) struct ReplyQueue {
    entries: VecDeque<Entry>,
    /// Sequence number of the front entry; entries are numbered in push order.
    front_seq: u64,
    driven: FuturesOrdered<BoxFuture<'static, Out>>,
    /// Outputs of `driven` whose entries are not at the front yet.
    driven_done: VecDeque<Out>,
    following: FuturesUnordered<FollowUp>,
    /// Raised by the nodes when a forwarded request's reply is an error.
    alert: Arc<ErrorAlert>,
    /// Each entry's metrics stamp, in step with `entries` (None: not a request, e.g. a close).
    stamps: VecDeque<Option<Stamp>>,
    /// When replies taken in this pass reach the client (metrics on only; read once per pass).
    pass_time: Option<std::time::Instant>,
}

impl Default for ReplyQueue {
    fn default() -> Self {
        ReplyQueue {
            entries: VecDeque::new(),
            front_seq: 0,
            driven: FuturesOrdered::new(),
            driven_done: VecDeque::new(),
            following: FuturesUnordered::new(),
            alert: Arc::default(),
            stamps: VecDeque::new(),
            pass_time: None,
        }
    }
}

/// Queue capacity kept once a queue runs empty: a client that once pipelined
/// `max_pending_replies` requests does not keep that much room for the rest of its connection.
const KEEP_ENTRIES: usize = 64;

impl ReplyQueue {
    /// Requests not answered yet.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// What to pass to [`Cluster::submit_alerting`] for a request queued with
    /// [`ReplyQueue::push_forwarded`].
    pub fn alert(&self) -> Arc<ErrorAlert> {
        self.alert.clone()
    }

    /// The next output, beginning a new pass of taking replies for the client: durations
    /// measured from here on end at a new time.
    pub fn next_in_new_pass(&mut self) -> futures_util::stream::Next<'_, Self> {
        self.pass_time = None;
        self.next()
    }

    /// An answer known now.
    pub fn push_ready(&mut self, out: Out, stamp: Option<Stamp>) {
        self.entries.push_back(Entry::Ready(out));
        self.stamps.push_back(stamp);
    }

    /// A request already queued on a shared connection ([`Cluster::submit_alerting`], with
    /// this queue's [`ReplyQueue::alert`]).
    pub fn push_forwarded(
        &mut self,
        submitted: Submitted,
        cluster: Arc<Cluster>,
        deliver: bool,
        stamp: Option<Stamp>,
    ) {
        self.stamps.push_back(stamp);
        let seq = self.front_seq + self.entries.len() as u64;
        // Not sent at all (no connection to its node): the retries start now.
        if let Some(e) = submitted.not_sent() {
            let first = Err(e);
            self.follow_up(seq, submitted, cluster, first);
            self.entries.push_back(Entry::Following { deliver });
            return;
        }
        self.entries.push_back(Entry::Forwarded(Box::new(Forwarded {
            submitted,
            cluster,
            deliver,
        })));
    }

    /// An answer that takes work of its own; the future is driven from now on, whatever is
    /// ahead of it.
    pub fn push_future(&mut self, future: BoxFuture<'static, Out>, stamp: Option<Stamp>) {
        self.stamps.push_back(stamp);
        self.entries.push_back(Entry::Driven);
        self.driven.push_back(future);
    }

    fn follow_up(
        &mut self,
        seq: u64,
        submitted: Submitted,
        cluster: Arc<Cluster>,
        first: NodeReply,
    ) {
        self.following
            .push(async move { (seq, cluster.follow_from(submitted, first).await) }.boxed());
    }

    /// Looks at the first reply of every forwarded request, answering those that came and
    /// starting the follow-up of those that are errors.
    fn scan_for_errors(&mut self, cx: &mut Context<'_>) {
        for index in 0..self.entries.len() {
            let Entry::Forwarded(forwarded) = &mut self.entries[index] else {
                continue;
            };
            let deliver = forwarded.deliver;
            match forwarded.poll_first(cx) {
                First::Pending => {}
                First::Answer(frame) => {
                    if !deliver {
                        self.alert.released(frame.len());
                    }
                    self.entries[index] = Entry::Ready(Out::reply(frame, deliver));
                }
                First::FollowUp(first) => self.start_follow_up(index, first),
            }
        }
    }

    /// Turns the forwarded entry at `index`, whose first reply calls for it, into a follow-up.
    fn start_follow_up(&mut self, index: usize, first: NodeReply) {
        let Some(Entry::Forwarded(forwarded)) = self.entries.get(index) else {
            return;
        };
        let deliver = forwarded.deliver;
        if let Entry::Forwarded(forwarded) =
            std::mem::replace(&mut self.entries[index], Entry::Following { deliver })
        {
            let Forwarded {
                submitted, cluster, ..
            } = *forwarded;
            self.follow_up(self.front_seq + index as u64, submitted, cluster, first);
        }
    }

    /// Takes the front entry off, whose output is `out`, keeping little room once the queue is
    /// empty.
    fn pop_front(&mut self, out: &Out) {
        if let (Some(Some(stamp)), Some(m)) = (self.stamps.pop_front(), metrics::get()) {
            let outcome = match out {
                Out::Reply(frame) => Outcome::of_reply(frame),
                _ => Outcome::Ok,
            };
            let now = *self.pass_time.get_or_insert_with(std::time::Instant::now);
            m.answered(stamp, outcome, Some(now));
        }
        self.entries.pop_front();
        self.front_seq += 1;
        if self.entries.is_empty() && self.entries.capacity() > KEEP_ENTRIES {
            self.entries.shrink_to(KEEP_ENTRIES);
        }
        if self.stamps.is_empty() && self.stamps.capacity() > KEEP_ENTRIES {
            self.stamps.shrink_to(KEEP_ENTRIES);
        }
        if self.driven_done.is_empty() && self.driven_done.capacity() > KEEP_ENTRIES {
            self.driven_done.shrink_to(KEEP_ENTRIES);
        }
    }
}

impl Stream for ReplyQueue {
    type Item = Out;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Out>> {
        let this = &mut *self;
        if this.alert.take(cx) {
            this.scan_for_errors(cx);
        }
        loop {
            if !this.driven.is_empty() {
                while let Poll::Ready(Some(out)) = this.driven.poll_next_unpin(cx) {
                    this.driven_done.push_back(out);
                }
            }
            while let Poll::Ready(Some((seq, frame))) = this.following.poll_next_unpin(cx) {
                // Sequence numbers of entries still queued: a follow-up answers before its
                // entry can leave.
                let index = seq.saturating_sub(this.front_seq) as usize;
                if let Some(Entry::Following { deliver }) = this.entries.get(index) {
                    this.entries[index] = Entry::Ready(Out::reply(frame, *deliver));
                }
            }
            let out = match this.entries.front_mut() {
                None => return Poll::Ready(None),
                Some(Entry::Ready(out)) => std::mem::replace(out, Out::Nothing),
                Some(Entry::Following { .. }) => return Poll::Pending,
                Some(Entry::Driven) => match this.driven_done.pop_front() {
                    Some(out) => out,
                    None => return Poll::Pending,
                },
                Some(Entry::Forwarded(forwarded)) => {
                    let deliver = forwarded.deliver;
                    match forwarded.poll_first(cx) {
                        First::Pending => return Poll::Pending,
                        First::Answer(frame) => {
                            // Held on arrival (max_client_output_bytes); a reply the client
                            // switched off is never written, so it is let go here.
                            if !deliver {
                                this.alert.released(frame.len());
                            }
                            Out::reply(frame, deliver)
                        }
                        First::FollowUp(first) => {
                            // Its alert has not been seen yet (or it has none): start the
                            // follow-up now and poll it.
                            this.start_follow_up(0, first);
                            continue;
                        }
                    }
                }
            };
            this.pop_front(&out);
            return Poll::Ready(Some(out));
        }
    }
}
