//! The sockets sessions and upstream connections read and write: a TCP connection, or one end
//! of a Unix socket pair whose other end a bridge task serves.
//!
//! Sessions share one socket between a request half and a reply half (`Arc<Socket>`) and use
//! tokio's readiness calls on it directly (`try_io`, `try_read_buf`, `try_write_vectored`,
//! `readable`, `writable`): that is what keeps a plain TCP client at one system call per read and
//! per write. A TLS stream cannot be used that way (reading may need to write, and rustls holds
//! state that two halves would have to share behind a lock), so TLS is terminated in a bridge
//! task instead ([`bridge`]): the TLS stream on one side, one end of a `UnixStream::pair()` on the
//! other, and the session gets the other end as a [`Socket`]. Plain TCP pays one `match` per
//! call for this, nothing else.

pub mod rw;

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::oneshot;

/// A connected socket: plain TCP, or the session's end of a [`bridge`]; a connection to Redis
/// also counts itself in `keyward_upstream_connections` while it is open.
#[derive(Debug)]
pub struct Socket {
    kind: Kind,
    /// Held while the socket is open, when it is a connection to Redis (metrics on).
    _upstream: Option<crate::metrics::UpstreamGauge>,
}

#[derive(Debug)]
enum Kind {
    Tcp(TcpStream),
    Unix(BridgeEnd),
}

/// The session's end of a [`bridge`]: one end of the Unix socket pair, and what tells the
/// bridge task that the session has closed it.
#[derive(Debug)]
pub struct BridgeEnd {
    stream: UnixStream,
    /// Dropped right after `stream` (fields drop in order): the bridge's receiver then
    /// resolves, and the bridge has its close grace to deliver what is left.
    _closed: oneshot::Sender<()>,
}

impl Socket {
    /// A plain TCP connection.
    pub fn tcp(stream: TcpStream) -> Socket {
        Socket {
            kind: Kind::Tcp(stream),
            _upstream: None,
        }
    }

    fn unix(end: BridgeEnd) -> Socket {
        Socket {
            kind: Kind::Unix(end),
            _upstream: None,
        }
    }

    /// The local address of a TCP connection (None for the session's end of a TLS bridge,
    /// whose TCP connection the bridge holds).
    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.kind {
            Kind::Tcp(stream) => stream.local_addr().ok(),
            Kind::Unix(_) => None,
        }
    }

    /// Marks this socket as a connection to Redis: `keyward_upstream_connections` counts it
    /// until it is dropped.
    pub fn count_as_upstream(mut self) -> Socket {
        self._upstream = crate::metrics::UpstreamGauge::open();
        self
    }
    /// Waits until the socket may be readable (see `TcpStream::readable`).
    ///
    /// Through `poll_read_ready`, which keeps one waker in the socket's own slot: `readable()`
    /// would put a waiter in the socket's list, under its lock, every time a session's loop
    /// waits, and take it out again when the loop wakes for anything else. Only one task may
    /// wait on a socket's readability this way, which holds for keyward: each socket is read
    /// by one task only.
    pub async fn readable(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_read_ready(cx)).await
    }

    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.kind {
            Kind::Tcp(s) => s.poll_read_ready(cx),
            Kind::Unix(s) => s.stream.poll_read_ready(cx),
        }
    }

    /// Waits until the socket may be writable (see `TcpStream::writable`).
    pub async fn writable(&self) -> io::Result<()> {
        match &self.kind {
            Kind::Tcp(s) => s.writable().await,
            Kind::Unix(s) => s.stream.writable().await,
        }
    }

    /// Reads what is there without waiting; `WouldBlock` when nothing is.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.kind {
            Kind::Tcp(s) => s.try_read(buf),
            Kind::Unix(s) => s.stream.try_read(buf),
        }
    }

    /// Reads what is there into the spare capacity of `buf` without waiting.
    pub fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        match &self.kind {
            Kind::Tcp(s) => s.try_read_buf(buf),
            Kind::Unix(s) => s.stream.try_read_buf(buf),
        }
    }

    /// Writes as much of `bufs` as the socket takes without waiting.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match &self.kind {
            Kind::Tcp(s) => s.try_write_vectored(bufs),
            Kind::Unix(s) => s.stream.try_write_vectored(bufs),
        }
    }

    /// Runs `f` as an I/O operation of the given interest; a `WouldBlock` from `f` clears the
    /// socket's readiness (see `TcpStream::try_io`).
    pub fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        match &self.kind {
            Kind::Tcp(s) => s.try_io(interest, f),
            Kind::Unix(s) => s.stream.try_io(interest, f),
        }
    }

    /// Turns Nagle's algorithm off on TCP; a Unix socket has nothing to turn off (the bridge
    /// sets it on the TCP connection it serves).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        match &self.kind {
            Kind::Tcp(s) => s.set_nodelay(nodelay),
            Kind::Unix(_) => Ok(()),
        }
    }
}

/// Used where a whole exchange is awaited at once (the upstream AUTH handshake, refusing a
/// client over the cap); the session paths use the readiness calls above.
impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().kind {
            Kind::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Kind::Unix(s) => Pin::new(&mut s.stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().kind {
            Kind::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Kind::Unix(s) => Pin::new(&mut s.stream).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().kind {
            Kind::Tcp(s) => Pin::new(s).poll_flush(cx),
            Kind::Unix(s) => Pin::new(&mut s.stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().kind {
            Kind::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Kind::Unix(s) => Pin::new(&mut s.stream).poll_shutdown(cx),
        }
    }
}

/// Bytes one bridge direction reads at a time: one TLS record's worth (at most 16 KiB of data).
/// Both directions keep their buffer for the life of the connection, so this is also most of
/// what an idle TLS connection costs on top of a plain one.
const BRIDGE_CHUNK: usize = 16 * 1024;

/// The shortest close grace a bridge gets, whatever it is given: enough to pass on what is
/// already written to a peer that reads (a zero `shutdown_timeout_ms` must not cut off the
/// reply to a QUIT), too short to matter to one that does not.
const MIN_CLOSE_GRACE: Duration = Duration::from_millis(100);

/// A running bridge task.
#[derive(Debug)]
pub struct Bridge(tokio::task::JoinHandle<()>);

impl Bridge {
    /// Waits until the bridge has ended: it has passed on what the session wrote and closed the
    /// connection, or it failed, or it gave up (at most its close grace after the session's end
    /// was closed). Dropping a `Bridge` leaves the task running on its own.
    pub async fn finished(self) {
        let _ = self.0.await;
    }
}

/// Serves `stream` (a TLS stream) through a Unix socket pair; returns the session's end and the
/// bridge task, which outlives the session's end by as long as it takes to deliver the last of
/// what the session wrote, and never by more than `grace` (at least [`MIN_CLOSE_GRACE`]).
///
/// The bridge task copies both ways until the session's side is done:
/// - the remote peer closes (end of stream): the session's end reads end of stream too, and the
///   bridge keeps delivering what the session still writes (its replies) until it closes;
/// - the session closes its end: the bridge passes on what the session wrote before, sends TLS
///   `close_notify`, closes the connection and ends, whatever the remote peer does; a peer that
///   does not take all that within `grace` of the session's close (a client that stopped
///   reading) loses the rest: the bridge closes the connection without `close_notify`, which
///   TLS peers read as a truncation;
/// - an error either way (a reset, a broken TLS record): the bridge ends at once, and the
///   session sees end of stream or an error on its end.
pub fn bridge<S>(
    stream: S,
    what: &'static str,
    peer: String,
    grace: Duration,
) -> io::Result<(Socket, Bridge)>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (local, remote) = UnixStream::pair()?;
    let grace = grace.max(MIN_CLOSE_GRACE);
    let (closed_tx, closed_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let (mut remote_read, mut remote_write) = tokio::io::split(stream);
        let (mut local_read, mut local_write) = local.into_split();
        let inbound = async {
            let result = pump(&mut remote_read, &mut local_write).await;
            // End of stream from the peer: pass it on as a half-close, so that the session
            // still delivers the replies it owes.
            let _ = local_write.shutdown().await;
            result
        };
        let outbound = async {
            let result = pump(&mut local_read, &mut remote_write).await;
            let _ = remote_write.shutdown().await;
            result
        };
        let copy = async {
            tokio::pin!(inbound, outbound);
            tokio::select! {
                result = &mut inbound => match result {
                    Ok(()) => outbound.await,
                    Err(e) => Err(e),
                },
                result = &mut outbound => result,
            }
        };
        // The session's end closed (the sender is never used, only dropped): from then on
        // the peer has `grace` to take what is left.
        let given_up = async {
            let _ = closed_rx.await;
            tokio::time::sleep(grace).await;
        };
        let outcome = tokio::select! {
            // Copying first: what can be passed on at once is, even as the grace runs out.
            biased;
            outcome = copy => outcome,
            () = given_up => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the peer did not take the last bytes within {} ms of the session's close",
                    grace.as_millis()
                ),
            )),
        };
        if let Err(e) = outcome {
            tracing::debug!(%peer, error = %e, "{what} TLS connection ended with an error");
        }
    });
    let end = BridgeEnd {
        stream: remote,
        _closed: closed_tx,
    };
    Ok((Socket::unix(end), Bridge(task)))
}

/// Copies `from` to `to` until end of stream, flushing after every read (a TLS writer holds
/// records back until it is flushed, and a reply must not wait for the next one).
async fn pump<R, W>(from: &mut R, to: &mut W) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(BRIDGE_CHUNK);
    loop {
        buf.clear();
        if from.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
        to.write_all(&buf).await?;
        to.flush().await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;
    use tokio::time::{Instant, timeout};

    #[tokio::test]
    async fn a_bridge_delivers_what_the_session_wrote_last_then_closes() {
        // A duplex stream stands in for the TLS stream; `peer` is the remote peer's side.
        let (stream, mut peer) = duplex(64 * 1024);
        // Even with no grace at all (shutdown_timeout_ms = 0).
        let (mut session, bridge) = bridge(stream, "test", "peer".into(), Duration::ZERO).unwrap();
        session.write_all(b"+last reply\r\n").await.unwrap();
        drop(session);
        let mut received = Vec::new();
        peer.read_to_end(&mut received).await.unwrap();
        assert_eq!(received, b"+last reply\r\n");
        timeout(Duration::from_secs(1), bridge.finished())
            .await
            .expect("the bridge ends once it has delivered everything");
    }

    #[tokio::test]
    async fn a_bridge_gives_up_on_a_peer_that_stops_reading_its_grace_after_the_session_closed() {
        let grace = Duration::from_millis(200);
        let (stream, peer) = duplex(1024);
        let (mut session, bridge) = bridge(stream, "test", "peer".into(), grace).unwrap();
        // Far more than the peer's side takes: the bridge waits to write the rest.
        session.write_all(&[b'x'; 32 * 1024]).await.unwrap();
        // While the session is open, a peer that does not read is the session's business.
        tokio::time::sleep(grace * 2).await;
        assert!(
            !bridge.0.is_finished(),
            "the bridge gave up on an open session"
        );
        let closed = Instant::now();
        drop(session);
        timeout(Duration::from_secs(2), bridge.finished())
            .await
            .expect("the bridge ends within its grace after the session closed");
        assert!(
            closed.elapsed() >= grace,
            "gave up after {:?}",
            closed.elapsed()
        );
        drop(peer);
    }
}
