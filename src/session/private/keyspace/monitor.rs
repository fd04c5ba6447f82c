//! One other primary's `MONITOR`, for a client of keyward that monitors "the server": the
//! lines of every primary reach it, not only those of the node its own connection goes to.
//!
//! Lines of keyward's own housekeeping (its topology reads) are left out
//! ([`crate::cluster::housekeeping`]). The lines of different nodes reach the client in the
//! order they arrive, which can differ from the order of their timestamps by the time a line
//! takes to come. A connection that breaks ends the merge ([`Merged::Lost`]): the client is
//! closed rather than left watching part of the cluster without knowing it.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Merged;
use crate::cluster::{Cluster, housekeeping};
use crate::net::Socket;
use crate::net::rw::{read_some, write_all_chunks};
use crate::protocol::reply::{self, ReplyFramer};
use crate::protocol::write;

/// The longest wait for a node's `+OK` to `MONITOR`.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// A monitored node; dropping it closes the connection.
pub(super) struct Monitor {
    reader: JoinHandle<()>,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Monitor {
    /// Connects to `node` with keyward's credentials, sends `MONITOR` and returns once the
    /// node has confirmed it, its lines going to `merged` from then on.
    pub async fn open(
        cluster: &Cluster,
        node: &str,
        merged: mpsc::Sender<Merged>,
    ) -> Result<Monitor, String> {
        let socket = cluster.target(node, false).connect().await?;
        let mut chunks = vec![write::command(b"MONITOR", &[] as &[&[u8]])];
        write_all_chunks(&socket, &mut chunks)
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = BytesMut::with_capacity(16 * 1024);
        let mut framer = ReplyFramer::new();
        let confirmation =
            tokio::time::timeout(CONFIRM_TIMEOUT, next_frame(&socket, &mut buf, &mut framer))
                .await
                .map_err(|_| format!("no reply to MONITOR within {CONFIRM_TIMEOUT:?}"))??;
        if reply::simple_string(&confirmation) != Some(&b"OK"[..]) {
            let text = String::from_utf8_lossy(&confirmation);
            return Err(text.trim_start_matches(['-', '+']).trim_end().to_string());
        }
        let node = node.to_string();
        let reader = tokio::spawn(async move {
            let reason = loop {
                match next_frame(&socket, &mut buf, &mut framer).await {
                    Ok(line) if housekeeping::is_own_monitor_line(&line) => {}
                    Ok(line) => {
                        if merged.send(Merged::MonitorLine(line)).await.is_err() {
                            return; // The session is gone.
                        }
                    }
                    Err(e) => break e,
                }
            };
            let _ = merged
                .send(Merged::Lost(format!(
                    "MONITOR connection to {node} lost: {reason}"
                )))
                .await;
        });
        Ok(Monitor { reader })
    }
}

/// The next whole frame the node sends.
async fn next_frame(
    socket: &Socket,
    buf: &mut BytesMut,
    framer: &mut ReplyFramer,
) -> Result<Bytes, String> {
    loop {
        match framer.next_frame_len(buf) {
            Ok(Some(len)) => return Ok(buf.split_to(len).freeze()),
            Ok(None) => {}
            Err(e) => return Err(format!("invalid reply: {}", e.0)),
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        socket.readable().await.map_err(|e| e.to_string())?;
        match read_some(socket, buf) {
            Ok(0) => return Err("closed by the server".into()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}
