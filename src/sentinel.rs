//! Sentinel mode: which server is the primary of a Redis monitored by Sentinel, kept up to date
//! across failovers.
//!
//! keyward asks the sentinels in turn for the primary (`SENTINEL GET-MASTER-ADDR-BY-NAME`) and
//! believes an answer only when the server itself confirms it with `ROLE`. It subscribes to
//! `+switch-master` on every sentinel it can reach, so that it hears of a failover as the
//! sentinels announce it, and asks again every second and whenever a connection to the primary
//! breaks, so that a missed announcement costs at most a second. The answer goes into the
//! shared [`Primary`], whose address every connection to "the upstream" dials; sessions watch
//! its epoch and leave connections made to a primary that was replaced.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;

use crate::cluster::node::NodeConn;
use crate::protocol::{reply, write};
use crate::upstream::{Primary, UpstreamTarget};

/// How often the sentinels are asked even without an announcement.
const RECHECK_INTERVAL: Duration = Duration::from_secs(1);
/// How long a lost subscription waits before it is made again.
const RESUBSCRIBE_DELAY: Duration = Duration::from_millis(500);

/// The sentinels' own settings (`[upstream] sentinel_*`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SentinelConfig {
    /// The master name the sentinels monitor (`sentinel_master`).
    pub master: String,
    /// The sentinels' credentials, when they require them (the data nodes' are
    /// `upstream.username` / `upstream.password`).
    pub username: Option<String>,
    pub password: Option<String>,
}

/// What keeps a [`Primary`] up to date.
struct Watcher {
    primary: Arc<Primary>,
    sentinels: Vec<String>,
    config: SentinelConfig,
    /// How the data nodes are dialled (credentials, TLS, timeouts), without a primary.
    data: UpstreamTarget,
    /// Asks for a check now (an announcement, or a session that lost its primary).
    wake: Arc<Notify>,
}

/// Finds the primary once (within the connect timeout per server asked), then keeps it up to
/// date in the background. The returned [`Primary`] may know no primary yet: sessions then get
/// [`Primary::unknown`]'s error until one is found.
pub async fn start(
    sentinels: Vec<String>,
    config: SentinelConfig,
    data: UpstreamTarget,
) -> Arc<Primary> {
    let primary = Primary::new(config.master.clone(), sentinels.clone());
    let data = UpstreamTarget {
        primary: None,
        resp3: false,
        ..data
    };
    let watcher = Arc::new(Watcher {
        primary: primary.clone(),
        sentinels,
        config,
        data,
        wake: primary.wake_handle(),
    });
    watcher.check().await;
    for sentinel in watcher.sentinels.clone() {
        tokio::spawn(subscribe(Arc::downgrade(&watcher), sentinel));
    }
    tokio::spawn(recheck(watcher));
    primary
}

/// Checks every [`RECHECK_INTERVAL`], or at once when woken, until keyward stops.
async fn recheck(watcher: Arc<Watcher>) {
    loop {
        tokio::select! {
            _ = watcher.wake.notified() => {}
            _ = tokio::time::sleep(RECHECK_INTERVAL) => {}
        }
        watcher.check().await;
    }
}

/// What the sentinels said.
enum Answer {
    /// A primary its own ROLE confirms.
    Confirmed(String),
    /// Sentinels answered, but no answer was confirmed (none knows a primary, or ROLE says it
    /// is a replica: a failover is under way).
    Unconfirmed,
    /// No sentinel could be asked.
    Unreachable,
}

impl Watcher {
    async fn check(&self) {
        match self.ask().await {
            Answer::Confirmed(addr) => {
                if self.primary.set(Some(addr.clone())) {
                    tracing::warn!(
                        master = %self.config.master,
                        "primary of '{}' is now {addr}",
                        self.config.master
                    );
                }
            }
            Answer::Unconfirmed => {
                if self.primary.set(None) {
                    tracing::warn!(
                        master = %self.config.master,
                        "no primary of '{}' is known: the sentinels name none that ROLE confirms",
                        self.config.master
                    );
                }
            }
            // Keep what we have: a primary that worked stays the best guess while no sentinel
            // answers (a sentinel outage is not a failover).
            Answer::Unreachable => {}
        }
    }

    /// Asks the sentinels in turn; the first answer ROLE confirms wins.
    async fn ask(&self) -> Answer {
        let mut reached = false;
        for sentinel in &self.sentinels {
            let Some(addr) = self.ask_sentinel(sentinel).await else {
                continue;
            };
            reached = true;
            let Some(addr) = addr else {
                continue;
            };
            if self.confirm(&addr).await {
                return Answer::Confirmed(addr);
            }
            tracing::info!(
                sentinel = %sentinel,
                master = %self.config.master,
                "sentinel names {addr} as the primary, but its ROLE does not say master"
            );
        }
        if reached {
            Answer::Unconfirmed
        } else {
            Answer::Unreachable
        }
    }

    /// The primary `sentinel` names: None when it cannot be asked, Some(None) when it knows
    /// none.
    async fn ask_sentinel(&self, sentinel: &str) -> Option<Option<String>> {
        let target = UpstreamTarget {
            addr: sentinel.to_string(),
            username: self.config.username.clone(),
            password: self.config.password.clone(),
            ..self.data.clone()
        };
        let conn = match NodeConn::connect(&target).await {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(sentinel = %sentinel, error = %e, "sentinel unreachable");
                return None;
            }
        };
        let command = write::command(
            b"SENTINEL",
            &[b"GET-MASTER-ADDR-BY-NAME", self.config.master.as_bytes()],
        );
        let frame = conn.request(command, 0).await.ok()?;
        if reply::is_error(&frame) {
            tracing::info!(
                sentinel = %sentinel,
                error = %reply::error_text(&frame),
                "sentinel refused SENTINEL GET-MASTER-ADDR-BY-NAME"
            );
            return None;
        }
        Some(master_addr(&frame))
    }

    /// Whether the server at `addr` says it is a primary.
    async fn confirm(&self, addr: &str) -> bool {
        let target = UpstreamTarget {
            addr: addr.to_string(),
            ..self.data.clone()
        };
        let Ok(conn) = NodeConn::connect(&target).await else {
            return false;
        };
        let Ok(frame) = conn.request(write::command::<&[u8]>(b"ROLE", &[]), 0).await else {
            return false;
        };
        reply::elements(&frame)
            .and_then(|e| e.into_iter().next())
            .is_some_and(|role| reply::bulk_string(&role) == Some(&b"master"[..]))
    }
}

/// `host:port` from a `SENTINEL GET-MASTER-ADDR-BY-NAME` reply (`[host, port]`, or nil).
fn master_addr(frame: &Bytes) -> Option<String> {
    let elements = reply::elements(frame)?;
    let host = std::str::from_utf8(reply::bulk_string(elements.first()?)?).ok()?;
    let port = std::str::from_utf8(reply::bulk_string(elements.get(1)?)?).ok()?;
    Some(if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    })
}

/// Keeps a subscription to `+switch-master` on `sentinel`, waking the watcher at every
/// announcement for our master; made again when lost, until keyward stops.
async fn subscribe(watcher: std::sync::Weak<Watcher>, sentinel: String) {
    loop {
        let Some(w) = watcher.upgrade() else {
            return;
        };
        let target = UpstreamTarget {
            addr: sentinel.clone(),
            username: w.config.username.clone(),
            password: w.config.password.clone(),
            ..w.data.clone()
        };
        let wake = w.wake.clone();
        let master = w.config.master.clone();
        drop(w);
        if let Ok(mut socket) = target.dial().await {
            let subscribe = write::command(b"SUBSCRIBE", &[b"+switch-master"]);
            if socket.write_all(&subscribe).await.is_ok() {
                listen(&mut socket, &master, &wake).await;
            }
        }
        tokio::time::sleep(RESUBSCRIBE_DELAY).await;
    }
}

/// Reads announcements until the connection ends; wakes the watcher for those of `master`
/// (`+switch-master <master> <old ip> <old port> <new ip> <new port>`).
async fn listen(socket: &mut crate::net::Socket, master: &str, wake: &Notify) {
    let mut buf = BytesMut::with_capacity(4096);
    let mut framer = reply::ReplyFramer::new();
    loop {
        while let Ok(Some(len)) = framer.next_frame_len(&buf) {
            let frame = buf.split_to(len).freeze();
            let Some(parts) = reply::elements(&frame) else {
                continue;
            };
            let is_message = parts
                .first()
                .and_then(|p| reply::bulk_string(p))
                .is_some_and(|kind| kind == b"message");
            let payload = parts.get(2).and_then(|p| reply::bulk_string(p));
            if is_message
                && payload
                    .is_some_and(|p| p.split(|&b| b == b' ').next() == Some(master.as_bytes()))
            {
                wake.notify_one();
            }
        }
        match socket.read_buf(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_addresses_are_read_from_the_reply() {
        let frame = Bytes::from_static(b"*2\r\n$9\r\n127.0.0.1\r\n$4\r\n6379\r\n");
        assert_eq!(master_addr(&frame).as_deref(), Some("127.0.0.1:6379"));
        let v6 = Bytes::from_static(b"*2\r\n$3\r\n::1\r\n$4\r\n6379\r\n");
        assert_eq!(master_addr(&v6).as_deref(), Some("[::1]:6379"));
        assert_eq!(master_addr(&Bytes::from_static(b"*-1\r\n")), None);
    }
}
