//! A pipelined connection to one cluster node, shared by many sessions.
//!
//! Requests from any number of callers are written in the order they arrive and their replies
//! are handed back in the same order: Redis answers a connection's requests in order, so a FIFO
//! of reply slots is all the matching needed. Only stateless requests use a shared connection;
//! anything that leaves state on a connection (MULTI, blocking commands, subscriptions) gets a
//! private one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::reply::ReplyFramer;
use crate::upstream::UpstreamTarget;

/// How a request on a node connection ended.
pub type NodeReply = Result<Bytes, NodeError>;

/// Why a request got no reply from the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeError {
    /// The request was never written: it is safe to send it elsewhere.
    NotSent(String),
    /// The request may have reached the node but its reply was lost with the connection.
    Lost(String),
}

impl NodeError {
    pub fn message(&self) -> &str {
        match self {
            NodeError::NotSent(m) | NodeError::Lost(m) => m,
        }
    }
}

struct Job {
    bytes: Bytes,
    /// Replies to drop before the one that answers (1 after an `ASKING` prefix).
    skip: usize,
    reply: oneshot::Sender<NodeReply>,
}

struct Waiting {
    skip: usize,
    reply: oneshot::Sender<NodeReply>,
}

/// Jobs queued per connection before callers wait (backpressure towards sessions).
const JOB_QUEUE: usize = 4096;

/// A connection to one node. Cloning shares it.
#[derive(Clone)]
pub struct NodeConn {
    addr: Arc<str>,
    jobs: mpsc::Sender<Job>,
    alive: Arc<AtomicBool>,
}

impl NodeConn {
    /// Connects (and authenticates, and switches to RESP3 when the target says so) to `target`.
    pub async fn connect(target: &UpstreamTarget) -> Result<Self, String> {
        let stream = target.connect().await?;
        let (reader, writer) = stream.into_split();
        let (jobs, rx) = mpsc::channel(JOB_QUEUE);
        let alive = Arc::new(AtomicBool::new(true));
        let conn = NodeConn {
            addr: Arc::from(target.addr.as_str()),
            jobs,
            alive: alive.clone(),
        };
        let waiting = Arc::new(Mutex::new(VecDeque::new()));
        tokio::spawn(run(reader, writer, rx, waiting, alive, conn.addr.clone()));
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// False once the connection has failed; a pool replaces it.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Sends `bytes` (one or more commands) and waits for the reply that answers it, after
    /// dropping `skip` replies.
    pub async fn request(&self, bytes: Bytes, skip: usize) -> NodeReply {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            bytes,
            skip,
            reply: tx,
        };
        if self.jobs.send(job).await.is_err() {
            return Err(self.closed());
        }
        self.wait(rx).await
    }

    /// Queues `bytes` without waiting for the reply, so that requests submitted one after the
    /// other reach the node in that order; the reply comes through [`Pending::reply`]. Waits
    /// only while the connection's queue is full (backpressure).
    pub async fn submit(&self, bytes: Bytes, skip: usize) -> Result<Pending, NodeError> {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            bytes,
            skip,
            reply: tx,
        };
        match self.jobs.send(job).await {
            Ok(()) => Ok(Pending {
                rx,
                addr: self.addr.clone(),
            }),
            Err(_) => Err(self.closed()),
        }
    }

    async fn wait(&self, rx: oneshot::Receiver<NodeReply>) -> NodeReply {
        Pending {
            rx,
            addr: self.addr.clone(),
        }
        .reply()
        .await
    }

    fn closed(&self) -> NodeError {
        NodeError::NotSent(format!("connection to {} is closed", self.addr))
    }
}

/// A submitted request whose reply is still to come.
pub struct Pending {
    rx: oneshot::Receiver<NodeReply>,
    addr: Arc<str>,
}

impl Pending {
    pub async fn reply(self) -> NodeReply {
        self.rx.await.unwrap_or_else(|_| {
            Err(NodeError::Lost(format!(
                "connection to {} closed before its reply",
                self.addr
            )))
        })
    }
}

async fn run(
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    jobs: mpsc::Receiver<Job>,
    waiting: Arc<Mutex<VecDeque<Waiting>>>,
    alive: Arc<AtomicBool>,
    addr: Arc<str>,
) {
    let error = tokio::select! {
        e = write_loop(writer, jobs, waiting.clone()) => e,
        e = read_loop(reader, waiting.clone()) => e,
    };
    if error.is_empty() {
        // Every user is gone and every reply delivered: a quiet close.
        alive.store(false, Ordering::Release);
        return;
    }
    alive.store(false, Ordering::Release);
    tracing::warn!(node = %addr, %error, "cluster node connection closed");
    let message = format!("connection to {addr} lost: {error}");
    let mut waiting = waiting.lock().unwrap_or_else(|e| e.into_inner());
    for w in waiting.drain(..) {
        let _ = w.reply.send(Err(NodeError::Lost(message.clone())));
    }
}

/// Writes jobs as they come, many per system call when callers are busy. Each job's reply slot
/// is queued before its bytes are written, so the reader always finds it.
async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut jobs: mpsc::Receiver<Job>,
    waiting: Arc<Mutex<VecDeque<Waiting>>>,
) -> String {
    let mut chunks: Vec<Bytes> = Vec::new();
    loop {
        let Some(job) = jobs.recv().await else {
            // No one can ask anything more; let the reader deliver what is still wanted, then
            // stop. Replies nobody waits for any more (a blocked BLPOP whose client left) are
            // not worth keeping the connection for: closing it also unblocks Redis.
            loop {
                let nobody_waits = waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .iter()
                    .all(|w| w.reply.is_closed());
                if nobody_waits {
                    return String::new();
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        };
        let mut next = Some(job);
        {
            let mut queue = waiting.lock().unwrap_or_else(|e| e.into_inner());
            while let Some(job) = next.take() {
                queue.push_back(Waiting {
                    skip: job.skip,
                    reply: job.reply,
                });
                chunks.push(job.bytes);
                if chunks.len() < 256 {
                    next = jobs.try_recv().ok();
                }
            }
        }
        if let Err(e) = crate::session::write_chunks(&mut writer, &mut chunks).await {
            return e.to_string();
        }
    }
}

async fn read_loop(mut reader: OwnedReadHalf, waiting: Arc<Mutex<VecDeque<Waiting>>>) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut framer = ReplyFramer::new();
    loop {
        match reader.read_buf(&mut buf).await {
            Ok(0) => return "closed by the node".into(),
            Ok(_) => {}
            Err(e) => return e.to_string(),
        }
        loop {
            let len = match framer.next_frame_len(&buf) {
                Ok(Some(len)) => len,
                Ok(None) => break,
                Err(e) => return format!("invalid reply: {}", e.0),
            };
            let frame = buf.split_to(len).freeze();
            let mut queue = waiting.lock().unwrap_or_else(|e| e.into_inner());
            let Some(front) = queue.front_mut() else {
                // Shared connections never subscribe, so nothing arrives unasked.
                return "unexpected reply from the node".into();
            };
            if front.skip > 0 {
                front.skip -= 1;
                continue;
            }
            if let Some(w) = queue.pop_front() {
                let _ = w.reply.send(Ok(frame));
            }
        }
        if buf.capacity() < 4096 {
            buf.reserve(16 * 1024);
        }
    }
}
