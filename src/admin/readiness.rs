//! Whether keyward can serve clients now (`GET /readyz`), for load balancers and orchestrators.
//!
//! - Standalone: a probe keeps one connection to Redis (opened like every other, with keyward's
//!   credentials and TLS) and sends it a PING every second; keyward is ready while a PING was
//!   answered within the last [`WINDOW`]. Redis lists the probe as one more client.
//! - Cluster: the slot map gives an owner to all 16384 slots.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{Instant, timeout};

use crate::cluster::Cluster;
use crate::cluster::topology::SLOT_COUNT;
use crate::net::Socket;
use crate::protocol::reply::ReplyFramer;
use crate::session::Backend;
use crate::upstream::UpstreamTarget;

/// How often the standalone probe PINGs Redis.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How recent the last answered PING must be for keyward to count as ready.
const WINDOW: Duration = Duration::from_secs(3);

pub enum Readiness {
    Standalone(Arc<Probe>),
    Cluster(Arc<Cluster>),
}

/// The standalone probe's findings.
pub struct Probe {
    addr: String,
    epoch: Instant,
    /// Milliseconds after `epoch` of the last answered PING, plus one (0: never).
    last_ok_ms: AtomicU64,
    /// Why the last probe failed, for the 503 body.
    last_error: std::sync::Mutex<String>,
    /// Sentinel mode: not ready while no primary is known, whatever the probe last heard.
    primary: Option<Arc<crate::upstream::Primary>>,
}

impl Readiness {
    /// Starts watching `backend` (for a standalone Redis, a probe task).
    pub fn start(backend: &Backend) -> Readiness {
        let target = match backend {
            Backend::Cluster(cluster) => return Readiness::Cluster(cluster.clone()),
            Backend::Private(upstream) => &upstream.target,
            Backend::Shared { own, .. } => &own.target,
        };
        let probe = Arc::new(Probe {
            addr: target.addr.clone(),
            epoch: Instant::now(),
            last_ok_ms: AtomicU64::new(0),
            last_error: std::sync::Mutex::new("no PING answered yet".into()),
            primary: target.primary.clone(),
        });
        tokio::spawn(run_probe(probe.clone(), target.clone()));
        Readiness::Standalone(probe)
    }

    /// `Ok` when ready, else why not.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Readiness::Cluster(cluster) => {
                let covered = cluster.map().assigned_slots();
                if covered == SLOT_COUNT {
                    Ok(())
                } else {
                    Err(format!(
                        "the cluster's slot map gives an owner to {covered} of {SLOT_COUNT} slots"
                    ))
                }
            }
            Readiness::Standalone(probe) => {
                if let Some(primary) = &probe.primary
                    && primary.current().is_none()
                {
                    return Err(primary.unknown());
                }
                let last = probe.last_ok_ms.load(Ordering::Acquire);
                let fresh = last > 0
                    && probe.epoch + Duration::from_millis(last - 1) + WINDOW >= Instant::now();
                if fresh {
                    Ok(())
                } else {
                    let error = probe
                        .last_error
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .clone();
                    Err(format!(
                        "upstream {} answered no PING in the last {} s: {error}",
                        probe.addr,
                        WINDOW.as_secs()
                    ))
                }
            }
        }
    }
}

async fn run_probe(probe: Arc<Probe>, target: UpstreamTarget) {
    let mut connection: Option<Socket> = None;
    loop {
        let outcome = match connection.take() {
            Some(socket) => ping(socket, target.connect_timeout).await,
            None => match target.connect().await {
                Ok(socket) => ping(socket, target.connect_timeout).await,
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(socket) => {
                let ms = probe.epoch.elapsed().as_millis() as u64 + 1;
                probe.last_ok_ms.store(ms, Ordering::Release);
                connection = Some(socket);
            }
            Err(e) => *probe.last_error.lock().unwrap_or_else(|e| e.into_inner()) = e,
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// One PING on `socket`; the socket back when Redis answered `+PONG` in time.
async fn ping(mut socket: Socket, within: Duration) -> Result<Socket, String> {
    let exchange = async {
        socket
            .write_all(b"*1\r\n$4\r\nPING\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = BytesMut::with_capacity(64);
        let mut framer = ReplyFramer::new();
        loop {
            if let Some(len) = framer.next_frame_len(&buf).map_err(|e| e.0)? {
                return if &buf[..len] == b"+PONG\r\n" {
                    Ok(())
                } else {
                    Err(String::from_utf8_lossy(&buf[..len]).trim_end().to_string())
                };
            }
            if socket.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed".into());
            }
        }
    };
    match timeout(within, exchange).await {
        Ok(Ok(())) => Ok(socket),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(format!("no PONG within {} ms", within.as_millis())),
    }
}
