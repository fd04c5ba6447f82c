//! One extra connection of a client's keyspace merge: to a primary other than the node the
//! client's own connection goes to, subscribed to the client's keyspace subscriptions.
//!
//! It always speaks RESP2, whatever the client speaks: the messages it carries are flat arrays
//! of bulk strings, which the reply side turns into RESP3 pushes by their first byte, so a
//! client that switches protocol (`HELLO`) while subscribed needs nothing redone here.
//!
//! A task of its own reads it, so that messages reach the client as soon as they come,
//! whatever the supervisor is doing:
//! - a message on a notification channel goes straight to the client's reply side;
//! - a confirmation, or an error, goes to the supervisor, which waits for them;
//! - anything else is dropped: other messages (a `PUBLISH` reaches every node of a cluster, so
//!   a pattern such as `*` hears it here too) already reach the client over its own
//!   connection, and a second copy would be a duplicate.
//!
//! The reading task awaits room in the reply side's queue: a client that does not read its
//! messages stops keyward reading this connection, and the messages back up in the node, which
//! applies its own `client-output-buffer-limit pubsub` and closes the connection, a loss the
//! supervisor then reports, as Redis would close a slow subscriber.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::super::pubsub::{self, Confirmation};
use super::Merged;
use super::channels::is_notification_channel;
use crate::cluster::Cluster;
use crate::commands::PubSubKind;
use crate::net::Socket;
use crate::net::rw::{ReadChunk, write_all_chunks};
use crate::protocol::{reply, write};

/// What a link's reading task tells the supervisor.
#[derive(Debug)]
pub(super) struct LinkEvent {
    /// The link's id: a link replaced since is not confused with its successor.
    pub link: u64,
    pub news: LinkNews,
}

#[derive(Debug)]
pub(super) enum LinkNews {
    /// A (un)subscribe confirmation.
    Confirmed(Confirmation),
    /// An error reply to a (un)subscribe (an ACL that refuses the channel...), Redis's text.
    Refused(String),
    /// The connection is gone; why.
    Lost(String),
}

/// One extra connection and what it still owes.
pub(super) struct Link {
    pub id: u64,
    /// The node's address, as the slot map names it.
    pub node: String,
    writer: Arc<Socket>,
    reader: JoinHandle<()>,
    /// Subscribe confirmations asked for and not received yet.
    pub awaiting: HashSet<(PubSubKind, Bytes)>,
}

impl Drop for Link {
    /// Dropping a link closes its connection: the node forgets its subscriptions with it.
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Link {
    /// Connects to `node` with keyward's credentials and starts reading it.
    pub async fn open(
        cluster: &Cluster,
        node: String,
        id: u64,
        news: mpsc::Sender<LinkEvent>,
        merged: mpsc::Sender<Merged>,
    ) -> Result<Link, String> {
        let socket = Arc::new(cluster.target(&node, false).connect().await?);
        let reader = tokio::spawn(read(socket.clone(), id, news, merged));
        Ok(Link {
            id,
            node,
            writer: socket,
            reader,
            awaiting: HashSet::new(),
        })
    }

    /// Sends `SUBSCRIBE` / `PSUBSCRIBE` (noting the confirmations to wait for) or their
    /// `UNSUBSCRIBE` counterparts; unsubscribing with no names drops every subscription of the
    /// kind on this connection.
    pub async fn send(
        &mut self,
        kind: PubSubKind,
        subscribe: bool,
        names: &[Bytes],
    ) -> Result<(), String> {
        if subscribe {
            if names.is_empty() {
                return Ok(());
            }
            self.awaiting
                .extend(names.iter().map(|name| (kind, name.clone())));
        }
        let mut chunks = vec![write::command(command_name(kind, subscribe), names)];
        write_all_chunks(&self.writer, &mut chunks)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The command keyward sends to (un)subscribe a connection of its own.
fn command_name(kind: PubSubKind, subscribe: bool) -> &'static [u8] {
    match (kind, subscribe) {
        (PubSubKind::Channel, true) => b"SUBSCRIBE",
        (PubSubKind::Channel, false) => b"UNSUBSCRIBE",
        (PubSubKind::Pattern, true) => b"PSUBSCRIBE",
        (PubSubKind::Pattern, false) => b"PUNSUBSCRIBE",
        (PubSubKind::Shard, true) => b"SSUBSCRIBE",
        (PubSubKind::Shard, false) => b"SUNSUBSCRIBE",
    }
}

/// The reading task: frames what the node sends and passes each frame where it belongs, until
/// the connection ends or the session is gone.
async fn read(
    socket: Arc<Socket>,
    id: u64,
    news: mpsc::Sender<LinkEvent>,
    merged: mpsc::Sender<Merged>,
) {
    let mut buf = BytesMut::new();
    let mut chunk = ReadChunk::new();
    let mut framer = reply::ReplyFramer::new();
    let reason = 'read: loop {
        if let Err(e) = socket.readable().await {
            break e.to_string();
        }
        match chunk.read(&socket, &mut buf) {
            Ok(0) => break "closed by the node".to_string(),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => break e.to_string(),
        }
        loop {
            match framer.next_frame_len(&buf) {
                Ok(Some(len)) => {
                    let frame = buf.split_to(len).freeze();
                    let delivered = match classify(frame) {
                        Frame::News(news_item) => news
                            .send(LinkEvent {
                                link: id,
                                news: news_item,
                            })
                            .await
                            .is_ok(),
                        Frame::Message(message) => merged.send(message).await.is_ok(),
                        Frame::Other => true,
                    };
                    if !delivered {
                        // The session is gone.
                        return;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'read format!("invalid reply: {}", e.0),
            }
        }
    };
    let _ = news
        .send(LinkEvent {
            link: id,
            news: LinkNews::Lost(reason),
        })
        .await;
}

/// Where one frame from the node goes.
enum Frame {
    News(LinkNews),
    Message(Merged),
    Other,
}

fn classify(frame: Bytes) -> Frame {
    if let Some(confirmation) = pubsub::confirmation(&frame) {
        return Frame::News(LinkNews::Confirmed(confirmation));
    }
    if reply::is_error(&frame) {
        return Frame::News(LinkNews::Refused(reply::error_text(&frame)));
    }
    match notification(&frame) {
        Some((kind, subscription)) => Frame::Message(Merged::Message {
            kind,
            subscription,
            frame,
        }),
        None => Frame::Other,
    }
}

/// For a `message` or `pmessage` on a notification channel: the kind of subscription it was
/// delivered for and that subscription's name (the channel, or the pattern).
fn notification(frame: &Bytes) -> Option<(PubSubKind, Bytes)> {
    let (head, _) = reply::aggregate_head(frame)?;
    let kind = match head {
        b"message" => PubSubKind::Channel,
        b"pmessage" => PubSubKind::Pattern,
        _ => return None,
    };
    if !pubsub::is_message(frame) {
        return None;
    }
    let elements = reply::elements(frame)?;
    let subscription = reply::bulk_string(&elements[1])?;
    let channel = match kind {
        PubSubKind::Pattern => reply::bulk_string(&elements[2])?,
        _ => subscription,
    };
    is_notification_channel(channel).then(|| (kind, Bytes::copy_from_slice(subscription)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_sorted() {
        let message = Bytes::from_static(
            b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$18\r\n__keyspace@0__:key\r\n$3\r\nset\r\n",
        );
        match classify(message.clone()) {
            Frame::Message(Merged::Message {
                kind,
                subscription,
                frame,
            }) => {
                assert_eq!(kind, PubSubKind::Pattern);
                assert_eq!(&subscription[..], b"*");
                assert_eq!(frame, message);
            }
            _ => panic!("a notification is merged"),
        }
        let event =
            Bytes::from_static(b"*3\r\n$7\r\nmessage\r\n$18\r\n__keyevent@0__:set\r\n$1\r\nk\r\n");
        assert!(matches!(
            classify(event),
            Frame::Message(Merged::Message {
                kind: PubSubKind::Channel,
                ..
            })
        ));
        // A PUBLISH broadcast to every node: the client's own connection delivers it.
        let published =
            Bytes::from_static(b"*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n$4\r\nnews\r\n$5\r\nhello\r\n");
        assert!(matches!(classify(published), Frame::Other));
        assert!(matches!(
            classify(Bytes::from_static(
                b"*3\r\n$10\r\npsubscribe\r\n$1\r\n*\r\n:1\r\n"
            )),
            Frame::News(LinkNews::Confirmed(_))
        ));
        assert!(matches!(
            classify(Bytes::from_static(b"-NOPERM no\r\n")),
            Frame::News(LinkNews::Refused(_))
        ));
    }
}
