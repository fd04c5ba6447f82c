//! A few upstream connections opened ahead of need, so that a client moving to a connection of
//! its own does not wait for a TCP handshake and AUTH.

use std::time::Duration;

use tokio::time::timeout;

use super::UpstreamTarget;
use crate::net::Socket;

/// A few upstream connections opened ahead of need.
///
/// A client that moves to a connection of its own (its first SELECT, BLPOP, SUBSCRIBE...) takes
/// one from here instead of waiting for a TCP handshake and AUTH. That wait matters: a client
/// that sends `BLPOP` and, through another connection, `LPUSH` right after expects Redis to see
/// them in that order, as it would without keyward in between.
///
/// A connection kept ready carries the login state Redis gave it when it was opened: Redis
/// marks a connection authenticated or not when it accepts it, and keeps that mark when
/// `requirepass` or a user changes later (HELLO, for one, still answers `NOAUTH` on a connection
/// opened while a password was set, after the password is gone). So when a client changes how
/// connections log in ([`WarmPool::forget_ready`], after `CONFIG SET` or `ACL SETUSER` come back
/// through keyward), the connections kept so far are closed and new ones opened.
pub struct WarmPool {
    target: UpstreamTarget,
    size: usize,
    ready: std::sync::Mutex<Ready>,
    wanted: std::sync::Arc<tokio::sync::Notify>,
}

/// The connections kept ready, and the generation they belong to: a connection whose opening
/// began before the last [`WarmPool::forget_ready`] is not kept.
#[derive(Default)]
struct Ready {
    connections: Vec<Socket>,
    generation: u64,
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("addr", &self.target.addr)
            .field("size", &self.size)
            .finish()
    }
}

impl WarmPool {
    /// Starts a pool that keeps `size` connections to `target` ready.
    pub fn start(target: UpstreamTarget, size: usize) -> std::sync::Arc<WarmPool> {
        let pool = std::sync::Arc::new(WarmPool {
            target,
            size,
            ready: std::sync::Mutex::new(Ready::default()),
            wanted: std::sync::Arc::new(tokio::sync::Notify::new()),
        });
        tokio::spawn(refill(
            std::sync::Arc::downgrade(&pool),
            pool.wanted.clone(),
        ));
        pool
    }

    /// A ready connection, or a new one when none is (or the pool's went stale).
    pub async fn connect(&self) -> Result<Socket, String> {
        while let Some(stream) = self.take() {
            if is_usable(&stream) {
                self.wanted.notify_one();
                return Ok(stream);
            }
        }
        self.wanted.notify_one();
        self.target.connect().await
    }

    /// Closes the connections kept ready and has new ones opened: the way new connections log
    /// in to Redis has changed (see [`WarmPool`]).
    pub fn forget_ready(&self) {
        let forgotten = {
            let mut ready = self.lock();
            ready.generation += 1;
            std::mem::take(&mut ready.connections)
        };
        drop(forgotten);
        self.wanted.notify_one();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ready> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Option<Socket> {
        self.lock().connections.pop()
    }

    /// How many connections are missing, and the generation a connection opened now belongs to.
    fn missing(&self) -> (usize, u64) {
        let ready = self.lock();
        (
            self.size.saturating_sub(ready.connections.len()),
            ready.generation,
        )
    }

    /// Keeps a new connection, unless the pool was told to forget since its opening began.
    fn keep(&self, stream: Socket, generation: u64) {
        let mut ready = self.lock();
        if ready.generation == generation && ready.connections.len() < self.size {
            ready.connections.push(stream);
        }
    }
}

/// An idle connection is usable while the server has neither closed it nor sent anything.
fn is_usable(stream: &Socket) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

async fn refill(pool: std::sync::Weak<WarmPool>, wanted: std::sync::Arc<tokio::sync::Notify>) {
    loop {
        let Some(strong) = pool.upgrade() else {
            return;
        };
        let (missing, generation) = strong.missing();
        let mut failed = false;
        for _ in 0..missing {
            match strong.target.connect().await {
                Ok(stream) => strong.keep(stream, generation),
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let notified = wanted.notified();
        drop(strong);
        if failed {
            // Upstream down: sessions connect (and report errors) themselves meanwhile.
            tokio::time::sleep(Duration::from_secs(1)).await;
        } else {
            let _ = timeout(Duration::from_secs(30), notified).await;
        }
    }
}
