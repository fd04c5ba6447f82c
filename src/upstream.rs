//! Opening a connection to the upstream Redis.
//!
//! A connection is ready when the TCP handshake is done, Nagle is off (keyward forwards small
//! requests and replies one by one; batching them in the kernel would add latency), the TLS
//! handshake is done when `[upstream.tls]` is set, and, when keyward has its own upstream
//! credentials, Redis has accepted them. Any failure becomes one message that names the upstream
//! address, because that is what the client gets to read. Every upstream connection keyward
//! opens, per-client or shared, is opened here.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::net::Socket;
use crate::protocol::{reply, write};
use crate::tls::ClientTls;

/// Where and how keyward connects upstream.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub addr: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    /// Longest wait for a reply to a non-blocking request; zero: no limit.
    pub reply_timeout: Duration,
    /// Switch the connection to RESP3 (`HELLO 3`) before use.
    pub resp3: bool,
    /// Speak TLS to the server (`[upstream.tls]`).
    pub tls: Option<ClientTls>,
}

impl UpstreamTarget {
    /// Connects and authenticates; the error is a sentence that names the address.
    pub async fn connect(&self) -> Result<Socket, String> {
        let stream = match timeout(self.connect_timeout, TcpStream::connect(&self.addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(format!("upstream {} unavailable: {e}", self.addr)),
            Err(_) => {
                return Err(format!(
                    "upstream {} unavailable: no connection within {} ms",
                    self.addr,
                    self.connect_timeout.as_millis()
                ));
            }
        };
        let _ = stream.set_nodelay(true);
        let mut stream = match &self.tls {
            None => Socket::Tcp(stream),
            Some(tls) => match timeout(self.connect_timeout, tls.connect(stream, &self.addr)).await
            {
                Ok(Ok(socket)) => socket,
                Ok(Err(e)) => {
                    return Err(format!(
                        "upstream {} unavailable: TLS handshake failed: {e}",
                        self.addr
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "upstream {} unavailable: no TLS handshake within {} ms",
                        self.addr,
                        self.connect_timeout.as_millis()
                    ));
                }
            },
        };
        if let Some(auth) = self.handshake_command() {
            match timeout(self.connect_timeout, handshake(&mut stream, &auth)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    return Err(format!(
                        "upstream {} refused keyward's credentials: {e}",
                        self.addr
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "upstream {} did not answer AUTH within {} ms",
                        self.addr,
                        self.connect_timeout.as_millis()
                    ));
                }
            }
        }
        Ok(stream)
    }

    /// What keyward sends on a new connection before use: `HELLO 3` (with `AUTH` when it has
    /// credentials) for a RESP3 connection, else `AUTH` when it has credentials, else nothing.
    fn handshake_command(&self) -> Option<bytes::Bytes> {
        if !self.resp3 {
            return self.auth_command();
        }
        let mut args: Vec<&[u8]> = vec![b"3"];
        if let Some(password) = &self.password {
            args.push(b"AUTH");
            args.push(self.username.as_deref().unwrap_or("default").as_bytes());
            args.push(password.as_bytes());
        }
        Some(write::command(b"HELLO", &args))
    }

    /// The `AUTH` command keyward sends on a new connection, if it has credentials.
    pub fn auth_command(&self) -> Option<bytes::Bytes> {
        let password = self.password.as_ref()?;
        Some(match &self.username {
            Some(user) => write::command(b"AUTH", &[user.as_bytes(), password.as_bytes()]),
            None => write::command(b"AUTH", &[password.as_bytes()]),
        })
    }
}

/// Sends `auth` (or `HELLO`) and reads one reply; an error reply carries Redis's text.
async fn handshake(stream: &mut Socket, auth: &[u8]) -> Result<(), String> {
    stream.write_all(auth).await.map_err(|e| e.to_string())?;
    let mut buf = BytesMut::with_capacity(256);
    let mut framer = reply::ReplyFramer::new();
    loop {
        if let Some(len) = framer.next_frame_len(&buf).map_err(|e| e.0)? {
            let frame = &buf[..len];
            return if !reply::is_error(frame) {
                Ok(())
            } else {
                Err(
                    String::from_utf8_lossy(frame.strip_prefix(b"-").unwrap_or(frame))
                        .trim_end()
                        .to_string(),
                )
            };
        }
        if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed during AUTH".into());
        }
    }
}

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
