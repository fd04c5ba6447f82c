//! The replies a cluster-mode session owes its client, in request order.
//!
//! Nearly every request is a command sent on a shared connection whose reply is the answer as
//! it comes. Those entries are no future at all: the queue polls the reply slot of the entry at
//! its front, and nothing else. A boxed future per request (with the machinery to follow
//! redirections inside it) and a task slot in an ordered futures queue cost about a third of
//! keyward's instructions on this path, most of them in malloc and free (measured with
//! callgrind, 50 clients pipelining GET and SET).
//!
//! The rest (fan-outs, blocking commands, transactions, a reply that turns out to be a
//! redirection) are futures. Those that run on their own (a fan-out's combination, a blocking
//! command that opens its connection) are driven all the time, as before, by a
//! `FuturesOrdered`; their results wait here until their entry reaches the front.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::Stream;
use futures_util::future::{BoxFuture, FutureExt};
use futures_util::stream::{FuturesOrdered, StreamExt};

use super::{Cluster, Submitted};
use crate::audit::Audit;
use crate::protocol::reply;

/// What one request yields for the client.
pub(super) enum Out {
    Reply(Bytes),
    /// The client switched replies off (`CLIENT REPLY OFF|SKIP`).
    Nothing,
    /// Close the connection (after QUIT's `+OK`).
    Close,
}

/// One request's place in the queue.
enum Entry {
    /// Answered already (by keyward itself).
    Ready(Out),
    /// Sent on a shared connection.
    Forwarded(Box<Forwarded>),
    /// Answered by the oldest future of `driven` not yet taken.
    Driven,
}

/// A request on a shared connection, and what to do with its reply.
struct Forwarded {
    /// Until its first reply has come.
    submitted: Option<Submitted>,
    /// Set once the first reply (or its absence) calls for [`Cluster::follow_from`]: a
    /// redirection, a lost or unreachable node.
    following: Option<BoxFuture<'static, Bytes>>,
    cluster: Arc<Cluster>,
    /// The reply goes to the client (`CLIENT REPLY` may say otherwise).
    deliver: bool,
    /// A guarded request (GETDEL, MIGRATE) logs its reply.
    audit: Option<Audit>,
}

impl Forwarded {
    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<Bytes> {
        if let Some(submitted) = &mut self.submitted {
            let first = match submitted.poll_first(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(frame)) if !reply::is_error(&frame) => return Poll::Ready(frame),
                Poll::Ready(first) => first,
            };
            if let Some(submitted) = self.submitted.take() {
                let cluster = self.cluster.clone();
                self.following =
                    Some(async move { cluster.follow_from(submitted, first).await }.boxed());
            }
        }
        match &mut self.following {
            Some(following) => following.poll_unpin(cx),
            // Not reached: `submitted` is only taken to start `following`.
            None => Poll::Pending,
        }
    }
}

/// The queue; a `Stream` of each request's [`Out`], in request order.
#[derive(Default)]
pub(super) struct ReplyQueue {
    entries: VecDeque<Entry>,
    driven: FuturesOrdered<BoxFuture<'static, Out>>,
    /// Outputs of `driven` whose entries are not at the front yet.
    driven_done: VecDeque<Out>,
}

impl ReplyQueue {
    /// Requests not answered yet.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An answer known now.
    pub fn push_ready(&mut self, out: Out) {
        self.entries.push_back(Entry::Ready(out));
    }

    /// A request already queued on a shared connection ([`Cluster::submit`]).
    pub fn push_forwarded(
        &mut self,
        submitted: Submitted,
        cluster: Arc<Cluster>,
        deliver: bool,
        audit: Option<Audit>,
    ) {
        self.entries.push_back(Entry::Forwarded(Box::new(Forwarded {
            submitted: Some(submitted),
            following: None,
            cluster,
            deliver,
            audit,
        })));
    }

    /// An answer that takes work of its own; the future is driven from now on, whatever is
    /// ahead of it.
    pub fn push_future(&mut self, future: BoxFuture<'static, Out>) {
        self.entries.push_back(Entry::Driven);
        self.driven.push_back(future);
    }
}

impl Stream for ReplyQueue {
    type Item = Out;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Out>> {
        let this = &mut *self;
        while let Poll::Ready(Some(out)) = this.driven.poll_next_unpin(cx) {
            this.driven_done.push_back(out);
        }
        let out = match this.entries.front_mut() {
            None => return Poll::Ready(None),
            Some(Entry::Ready(out)) => {
                let out = std::mem::replace(out, Out::Nothing);
                this.entries.pop_front();
                out
            }
            Some(Entry::Driven) => match this.driven_done.pop_front() {
                Some(out) => {
                    this.entries.pop_front();
                    out
                }
                None => return Poll::Pending,
            },
            Some(Entry::Forwarded(forwarded)) => {
                let Poll::Ready(frame) = forwarded.poll_reply(cx) else {
                    return Poll::Pending;
                };
                if let Some(audit) = forwarded.audit.take() {
                    audit.answered(&frame);
                }
                let deliver = forwarded.deliver;
                this.entries.pop_front();
                if deliver {
                    Out::Reply(frame)
                } else {
                    Out::Nothing
                }
            }
        };
        Poll::Ready(Some(out))
    }
}
