//! Dialling Redis: the one place where keyward opens a connection to a Redis server.
//!
//! A connection is ready when the TCP handshake is done, Nagle is off (keyward forwards small
//! requests and replies one by one; batching them in the kernel would add latency), the TLS
//! handshake is done when `[upstream.tls]` is set, and, when keyward has its own upstream
//! credentials (or speaks RESP3), Redis has accepted `AUTH` / `HELLO`. Each step has the connect
//! timeout.
//!
//! Every caller dials through here: per-client and shared connections, the cluster's node
//! connections, topology discovery and the start-up certificate check. They differ only in what
//! they do with a failure, so [`DialError`] keeps the step that failed and its cause: a session
//! shows the client one sentence that names the address ([`DialError`]'s `Display`); discovery
//! sorts it into its own per-seed causes; the certificate check looks for a refused certificate.

use std::fmt;
use std::io;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::UpstreamTarget;
use crate::net::Socket;
use crate::protocol::reply;

/// Why a connection to Redis could not be made ready.
#[derive(Debug)]
pub struct DialError {
    /// The address dialled, `host:port`.
    pub addr: String,
    /// The connect timeout, for the sentences of the timeouts.
    pub timeout: Duration,
    pub failure: DialFailure,
}

/// The step that failed, and how.
#[derive(Debug)]
pub enum DialFailure {
    /// The TCP connection could not be opened.
    Connect(io::Error),
    /// No TCP connection within the connect timeout.
    ConnectTimeout,
    /// The TLS handshake failed (a refused certificate included, see
    /// [`is_certificate_error`](crate::tls::is_certificate_error)).
    Tls(io::Error),
    /// No TLS handshake within the connect timeout.
    TlsTimeout,
    /// Redis answered `AUTH` or `HELLO` with an error; carries Redis's text.
    Refused(String),
    /// Writing `AUTH` / `HELLO` or reading its reply failed, or Redis closed the connection.
    HandshakeIo(io::Error),
    /// The reply to `AUTH` / `HELLO` was not valid RESP.
    HandshakeProtocol(String),
    /// No reply to `AUTH` / `HELLO` within the connect timeout.
    HandshakeTimeout,
    /// Sentinel mode: the sentinels know no primary now; carries the sentence for the client.
    NoPrimary(String),
}

impl fmt::Display for DialError {
    /// The sentence a client reads after `-ERR keyward: `; README quotes its forms.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (addr, ms) = (&self.addr, self.timeout.as_millis());
        match &self.failure {
            DialFailure::NoPrimary(sentence) => f.write_str(sentence),
            DialFailure::Connect(e) => write!(f, "upstream {addr} unavailable: {e}"),
            DialFailure::ConnectTimeout => {
                write!(
                    f,
                    "upstream {addr} unavailable: no connection within {ms} ms"
                )
            }
            DialFailure::Tls(e) => {
                write!(f, "upstream {addr} unavailable: TLS handshake failed: {e}")
            }
            DialFailure::TlsTimeout => {
                write!(
                    f,
                    "upstream {addr} unavailable: no TLS handshake within {ms} ms"
                )
            }
            DialFailure::Refused(e) => {
                write!(f, "upstream {addr} refused keyward's credentials: {e}")
            }
            DialFailure::HandshakeIo(e) => {
                write!(f, "upstream {addr} refused keyward's credentials: {e}")
            }
            DialFailure::HandshakeProtocol(e) => {
                write!(f, "upstream {addr} refused keyward's credentials: {e}")
            }
            DialFailure::HandshakeTimeout => {
                write!(f, "upstream {addr} did not answer AUTH within {ms} ms")
            }
        }
    }
}

impl std::error::Error for DialError {}

impl UpstreamTarget {
    /// Connects and authenticates; the error is a sentence that names the address.
    pub async fn connect(&self) -> Result<Socket, String> {
        self.dial().await.map_err(|e| e.to_string())
    }

    /// Counts a failed dial in `keyward_upstream_errors_total`.
    fn count(failure: &DialFailure) {
        use crate::metrics::UpstreamError as Kind;
        let Some(m) = crate::metrics::get() else {
            return;
        };
        m.upstream_error(match failure {
            DialFailure::ConnectTimeout
            | DialFailure::TlsTimeout
            | DialFailure::HandshakeTimeout => Kind::Timeout,
            DialFailure::Tls(_) => Kind::Tls,
            DialFailure::Connect(_)
            | DialFailure::NoPrimary(_)
            | DialFailure::Refused(_)
            | DialFailure::HandshakeIo(_)
            | DialFailure::HandshakeProtocol(_) => Kind::Connect,
        });
    }

    /// Like [`connect`](Self::connect), with the failed step as a value for callers that report
    /// it their own way.
    pub async fn dial(&self) -> Result<Socket, DialError> {
        // Sentinel mode: the primary's address now, not the configured one.
        let addr = match &self.primary {
            None => self.addr.clone(),
            Some(primary) => match primary.current() {
                Some(addr) => addr,
                None => {
                    return Err(DialError {
                        addr: self.addr.clone(),
                        timeout: self.connect_timeout,
                        failure: DialFailure::NoPrimary(primary.unknown()),
                    });
                }
            },
        };
        let fail = |failure| {
            Self::count(&failure);
            DialError {
                addr: addr.clone(),
                timeout: self.connect_timeout,
                failure,
            }
        };
        let stream = match timeout(self.connect_timeout, TcpStream::connect(&addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(fail(DialFailure::Connect(e))),
            Err(_) => return Err(fail(DialFailure::ConnectTimeout)),
        };
        let _ = stream.set_nodelay(true);
        let mut stream = match &self.tls {
            None => Socket::tcp(stream),
            Some(tls) => match timeout(self.connect_timeout, tls.connect(stream, &addr)).await {
                Ok(Ok(socket)) => socket,
                Ok(Err(e)) => return Err(fail(DialFailure::Tls(e))),
                Err(_) => return Err(fail(DialFailure::TlsTimeout)),
            },
        };
        if let Some(command) = self.handshake_command() {
            match timeout(self.connect_timeout, handshake(&mut stream, &command)).await {
                Ok(Ok(())) => {}
                Ok(Err(failure)) => return Err(fail(failure)),
                Err(_) => return Err(fail(DialFailure::HandshakeTimeout)),
            }
        }
        Ok(stream.count_as_upstream())
    }
}

/// Sends `command` (`AUTH` or `HELLO`) and reads one reply; an error reply carries Redis's text.
async fn handshake(stream: &mut Socket, command: &[u8]) -> Result<(), DialFailure> {
    stream
        .write_all(command)
        .await
        .map_err(DialFailure::HandshakeIo)?;
    let mut buf = BytesMut::with_capacity(256);
    let mut framer = reply::ReplyFramer::new();
    loop {
        if let Some(len) = framer
            .next_frame_len(&buf)
            .map_err(|e| DialFailure::HandshakeProtocol(e.0))?
        {
            let frame = &buf[..len];
            return if !reply::is_error(frame) {
                Ok(())
            } else {
                Err(DialFailure::Refused(reply::error_text(frame)))
            };
        }
        if stream
            .read_buf(&mut buf)
            .await
            .map_err(DialFailure::HandshakeIo)?
            == 0
        {
            return Err(DialFailure::HandshakeIo(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed during AUTH",
            )));
        }
    }
}
