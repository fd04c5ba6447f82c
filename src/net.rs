//! The sockets sessions and upstream connections read and write: a TCP connection, or one end
//! of a Unix socket pair whose other end a bridge task serves (for TLS, next).
//!
//! Sessions share one socket between a request half and a reply half (`Arc<Socket>`) and use
//! tokio's readiness calls on it directly (`try_io`, `try_read_buf`, `try_write_vectored`,
//! `readable`, `writable`): that is what keeps a plain TCP client at one system call per read and
//! per write. A TLS stream cannot be used that way (reading may need to write, and rustls holds
//! state that two halves would have to share behind a lock), so TLS is to be terminated in a
//! bridge task instead: the TLS stream on one side, one end of a `UnixStream::pair()` on the
//! other, and the session gets the other end as [`Socket::Unix`]. Plain TCP pays one `match` per
//! call for this, nothing else.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BufMut;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpStream, UnixStream};

/// A connected socket: plain TCP, or the session's end of a bridge.
#[derive(Debug)]
pub enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    /// Waits until the socket may be readable (see `TcpStream::readable`).
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.readable().await,
            Socket::Unix(s) => s.readable().await,
        }
    }

    /// Waits until the socket may be writable (see `TcpStream::writable`).
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.writable().await,
            Socket::Unix(s) => s.writable().await,
        }
    }

    /// Reads what is there without waiting; `WouldBlock` when nothing is.
    pub fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.try_read(buf),
            Socket::Unix(s) => s.try_read(buf),
        }
    }

    /// Reads what is there into the spare capacity of `buf` without waiting.
    pub fn try_read_buf<B: BufMut>(&self, buf: &mut B) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.try_read_buf(buf),
            Socket::Unix(s) => s.try_read_buf(buf),
        }
    }

    /// Writes as much of `bufs` as the socket takes without waiting.
    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.try_write_vectored(bufs),
            Socket::Unix(s) => s.try_write_vectored(bufs),
        }
    }

    /// Runs `f` as an I/O operation of the given interest; a `WouldBlock` from `f` clears the
    /// socket's readiness (see `TcpStream::try_io`).
    pub fn try_io<R>(
        &self,
        interest: Interest,
        f: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        match self {
            Socket::Tcp(s) => s.try_io(interest, f),
            Socket::Unix(s) => s.try_io(interest, f),
        }
    }

    /// Turns Nagle's algorithm off on TCP; a Unix socket has nothing to turn off (the bridge
    /// sets it on the TCP connection it serves).
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.set_nodelay(nodelay),
            Socket::Unix(_) => Ok(()),
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
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}
