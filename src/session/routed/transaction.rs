//! Transactions in a cluster: WATCH and MULTI ... EXEC on a private connection to the node that
//! owns the transaction's slot, chosen by the first command with a key (keyless commands queued
//! before it wait, answered `QUEUED` by keyward, and are sent once the node is known).

use std::sync::Arc;

use bytes::Bytes;

use super::super::front::ReplyWatch;
use super::dispatch::{CROSSSLOT, slot_of_keys, target};
use super::{Next, RoutedSession};
use crate::cluster::node::{self, NodeConn};
use crate::cluster::{Cluster, Target};
use crate::commands::{CommandSpec, Role};
use crate::protocol::request::Request;
use crate::protocol::write;

/// A private connection pinned to one node for WATCH / MULTI.
pub(super) struct Pinned {
    pub(super) conn: NodeConn,
    pub(super) slot: Option<u16>,
}

/// A keyless command queued in a transaction before its node was known (already answered
/// QUEUED by keyward).
type Waiting = Bytes;

/// A transaction being queued.
#[derive(Default)]
pub(super) struct Transaction {
    pinned: Option<Pinned>,
    /// Keyless commands queued before the node was known.
    waiting: Vec<Waiting>,
    /// A command was refused at queue time: EXEC must fail with EXECABORT.
    pub(super) aborted: bool,
    /// The client's own `MULTI`, sent as it came (MONITOR shows it as the client wrote it).
    multi: Bytes,
}

impl RoutedSession {
    /// WATCH: a private connection to the owner of the keys' slot, kept for the transaction.
    pub(super) async fn watch(&mut self, request: &Request) {
        if self.transaction.is_some() {
            self.local(write::error("ERR WATCH inside MULTI is not allowed"));
            return;
        }
        let slot = match slot_of_keys(request.args().from(1)) {
            Ok(slot) => slot,
            Err(e) => {
                self.local(e);
                return;
            }
        };
        if let Some(p) = &self.watch
            && p.slot != Some(slot)
        {
            self.local(write::error(CROSSSLOT));
            return;
        }
        if self.watch.is_none() {
            match self.pin(Some(slot)).await {
                Ok(p) => self.watch = Some(p),
                Err(e) => {
                    self.local(e);
                    return;
                }
            }
        }
        let conn = self.watch.as_ref().map(|p| p.conn.clone());
        if let Some(conn) = conn {
            self.submit_on(&conn, request.raw().clone()).await;
        }
    }

    pub(super) async fn unwatch(&mut self, request: &Request) {
        match self.watch.take() {
            Some(p) => self.submit_on(&p.conn, request.raw().clone()).await,
            None => self.local(write::simple("OK")),
        }
    }

    /// Opens a private connection to the owner of `slot` (or any primary).
    async fn pin(&mut self, slot: Option<u16>) -> Result<Pinned, Bytes> {
        pin(self.cluster.clone(), self.resp3, slot).await
    }

    /// Writes `raw` on a pinned connection now and queues its reply.
    async fn submit_on(&mut self, conn: &NodeConn, raw: Bytes) {
        let pending = conn.submit(raw, 0).await;
        self.push(pending_reply(pending));
    }

    pub(super) async fn multi(&mut self, multi: Bytes) -> Next {
        if self.transaction.is_some() {
            self.local(write::error("ERR MULTI calls can not be nested"));
            return Next::Continue;
        }
        let mut transaction = Transaction {
            pinned: self.watch.take(),
            multi,
            ..Transaction::default()
        };
        match &transaction.pinned {
            Some(p) => {
                let conn = p.conn.clone();
                self.submit_on(&conn, transaction.multi.clone()).await;
            }
            None => self.local(write::simple("OK")),
        }
        transaction.aborted = false;
        self.transaction = Some(transaction);
        Next::Continue
    }

    /// Queues a command inside MULTI; a guarded one (DEL, REMOVEKEYS...) gets its audit line
    /// with the node's answer (`queued`) or the error that aborts the transaction.
    pub(super) async fn queue_in_transaction(
        &mut self,
        spec: Option<&CommandSpec>,
        request: Request,
        watch: Option<Box<ReplyWatch>>,
    ) {
        let refuse = |session: &mut Self, error: Bytes| {
            if let Some(watch) = &watch {
                watch.answered(&error);
            }
            session.local(error);
        };
        let slot = match target(&self.cluster, spec, request.args()) {
            Ok(Target::Slot(s)) => Some(s),
            Ok(_) => None,
            Err(e) => {
                if let Some(t) = self.transaction.as_mut() {
                    t.aborted = true;
                }
                refuse(self, e);
                return;
            }
        };
        let Some(mut transaction) = self.transaction.take() else {
            return;
        };
        if let (Some(slot), Some(p)) = (slot, transaction.pinned.as_mut()) {
            match p.slot {
                Some(s) if s != slot => {
                    transaction.aborted = true;
                    self.transaction = Some(transaction);
                    refuse(self, write::error(CROSSSLOT));
                    return;
                }
                None => p.slot = Some(slot),
                _ => {}
            }
        }
        if transaction.pinned.is_none() && slot.is_some() {
            match self.pin(slot).await {
                Ok(p) => {
                    open_transaction(&p.conn, transaction.multi.clone(), &mut transaction.waiting)
                        .await;
                    transaction.pinned = Some(p);
                }
                Err(e) => {
                    transaction.aborted = true;
                    self.transaction = Some(transaction);
                    refuse(self, e);
                    return;
                }
            }
        }
        match &transaction.pinned {
            Some(p) => {
                let conn = p.conn.clone();
                self.transaction = Some(transaction);
                let pending = conn.submit(request.into_raw(), 0).await;
                self.push(async move {
                    let frame = pending_reply(pending).await;
                    if let Some(watch) = watch {
                        watch.answered(&frame);
                    }
                    frame
                });
            }
            None => {
                // No key yet, so no node: keyward answers QUEUED itself (MULTI's OK was its own
                // too) and sends the command once the node is known. Should the node reject it
                // then, EXEC fails with EXECABORT, as Redis would have made it fail.
                transaction.waiting.push(request.into_raw());
                self.transaction = Some(transaction);
                if let Some(watch) = &watch {
                    watch.outcome("queued");
                }
                self.local(write::simple("QUEUED"));
            }
        }
    }

    /// EXEC or DISCARD (`role`).
    pub(super) async fn end_transaction(
        &mut self,
        role: Role,
        request: &Request,
        watch: Option<Box<ReplyWatch>>,
    ) -> Next {
        let exec = role == Role::Exec;
        let Some(mut transaction) = self.transaction.take() else {
            let name = if exec { "EXEC" } else { "DISCARD" };
            self.local(write::error(&format!("ERR {name} without MULTI")));
            return Next::Continue;
        };
        if transaction.aborted {
            if let Some(p) = &transaction.pinned {
                let _ = p
                    .conn
                    .submit(write::command::<&[u8]>(b"DISCARD", &[]), 0)
                    .await;
            }
            self.local(if exec {
                write::error("EXECABORT Transaction discarded because of previous errors.")
            } else {
                write::simple("OK")
            });
            return Next::Continue;
        }
        if transaction.pinned.is_none() {
            if transaction.waiting.is_empty() {
                self.local(if exec {
                    Bytes::from_static(b"*0\r\n")
                } else {
                    write::simple("OK")
                });
                return Next::Continue;
            }
            match self.pin(None).await {
                Ok(p) => {
                    open_transaction(&p.conn, transaction.multi.clone(), &mut transaction.waiting)
                        .await;
                    transaction.pinned = Some(p);
                }
                Err(e) => {
                    self.local(e);
                    return Next::Continue;
                }
            }
        }
        if let Some(p) = transaction.pinned {
            // EXEC's reply goes to its watch: the hooks of the queued writes that succeeded
            // run before it is delivered.
            let pending = p.conn.submit(request.raw().clone(), 0).await;
            self.push(async move {
                let frame = pending_reply(pending).await;
                if let Some(watch) = watch {
                    watch.settle(&frame).await;
                }
                frame
            });
        }
        Next::Continue
    }
}

/// Opens a private connection to the owner of `slot` (or any primary).
async fn pin(cluster: Arc<Cluster>, resp3: bool, slot: Option<u16>) -> Result<Pinned, Bytes> {
    let map = cluster.map();
    let addr = match slot {
        Some(s) => map.owner(s).map(|a| a.to_string()),
        None => cluster.primaries().into_iter().next(),
    }
    .ok_or_else(|| write::error("CLUSTERDOWN keyward: no node serves the slot"))?;
    let conn = cluster
        .private(&addr, resp3)
        .await
        .map_err(|e| write::error(&format!("ERR keyward: {e}")))?;
    Ok(Pinned { conn, slot })
}

/// Sends MULTI and the commands that waited for the transaction's node.
async fn open_transaction(conn: &NodeConn, multi: Bytes, waiting: &mut Vec<Waiting>) {
    // keyward already answered MULTI and the waiting commands: dropping their pending replies
    // discards what the node says.
    let _ = conn.submit(multi, 0).await;
    for raw in waiting.drain(..) {
        let _ = conn.submit(raw, 0).await;
    }
}

async fn pending_reply(pending: Result<node::Pending, node::NodeError>) -> Bytes {
    let result = match pending {
        Ok(p) => p.reply().await,
        Err(e) => Err(e),
    };
    result.unwrap_or_else(|e| write::error(&format!("ERR keyward: {}", e.message())))
}
