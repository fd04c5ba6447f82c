//! Keyspace notifications across a Redis Cluster, merged into one client's stream.
//!
//! Redis publishes a keyspace or keyevent notification only on the node where the key changed,
//! and a cluster does not pass it on (unlike `PUBLISH`, which reaches every node). A pub/sub
//! client of keyward has one connection of its own, to one primary (its *home*): alone, it
//! would hear only the keys of that primary. So when such a client subscribes to a channel or
//! pattern that can receive notifications ([`channels`]), keyward also subscribes one extra
//! connection per other primary ([`link`]), kept by a task of the session ([`supervisor`]):
//!
//! - the client's own connection stays the one that answers: Redis's confirmations, with
//!   their counts, come from it alone, exactly one per channel or pattern, and the extra
//!   connections' confirmations are swallowed;
//! - a keyspace subscription is sent to the home node only once every other primary has
//!   confirmed it, so the client's confirmation means that every primary delivers its events;
//!   a node that refuses, or cannot be reached, makes the whole command fail with that error
//!   (nothing is subscribed anywhere), as Redis fails a subscription an ACL refuses;
//! - from the extra connections only notifications are taken ([`Merged::Message`]), and the
//!   reply side passes one on only while the client's own connection has confirmed the
//!   subscription it is for: not before the confirmation, not after the unsubscription. It
//!   writes it between two frames, never inside one, in the client's protocol (a RESP3 push
//!   for a RESP3 client);
//! - unsubscribing unsubscribes the extra connections too; when the client has no keyspace
//!   subscription left, they are closed;
//! - while subscribed, the extra connections follow the cluster's primaries: a new primary is
//!   subscribed at once. A node that stops being a primary, or an extra connection that
//!   breaks, ends the merge ([`Merged::Lost`]): the client's connection is closed as if its
//!   own connection had broken, since events of some keys may have been missed, and a client
//!   library that reconnects subscribes again over the new topology.
//!
//! Subscriptions queued inside `MULTI` are not merged (they run at `EXEC`, inside its reply).
//!
//! `MONITOR` is merged the same way ([`monitor`]): a connection of its own to every other
//! primary, each confirmed before the client's own connection is asked, whose lines reach the
//! client between two frames of its own node's stream.

mod channels;
mod link;
mod monitor;
mod supervisor;

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::cluster::Cluster;
use crate::commands::PubSubKind;
use crate::protocol::args::Args;
use crate::protocol::write;
use supervisor::{Command, Supervisor};

/// Merged messages waiting for the reply side.
const MERGED_QUEUE: usize = 1024;
/// (Un)subscriptions waiting for the supervisor.
const COMMAND_QUEUE: usize = 16;

/// Where a cluster client's own connection goes: what its keyspace subscriptions are merged
/// around.
pub struct Origin {
    pub cluster: Arc<Cluster>,
    /// The node of the client's own connection.
    pub node: String,
}

/// What the extra connections send the reply side.
#[derive(Debug)]
pub(super) enum Merged {
    /// A notification from another primary: the kind and name of the subscription it was
    /// delivered for, and the RESP2 frame (`message` or `pmessage`).
    Message {
        kind: PubSubKind,
        subscription: Bytes,
        frame: Bytes,
    },
    /// A `MONITOR` line of another primary (a simple string, the same in RESP2 and RESP3).
    MonitorLine(Bytes),
    /// The merge cannot go on; why.
    Lost(String),
}

/// The request side's handle on the merge. The supervisor task starts at the client's first
/// keyspace subscription and ends with the session (when this handle is dropped).
pub(super) struct Merge {
    /// What starts the supervisor, until it is started.
    start: Option<(Origin, mpsc::Sender<Merged>)>,
    commands: Option<mpsc::Sender<Command>>,
    /// Where `MONITOR` connections go and send their lines: the cluster, the client's own
    /// node (not monitored twice), the reply side's queue.
    monitor_from: (Arc<Cluster>, String, mpsc::Sender<Merged>),
    /// The other primaries' `MONITOR` connections, while the client monitors.
    monitors: Vec<monitor::Monitor>,
}

impl Merge {
    /// The handle, and the queue the reply side reads merged messages from.
    pub(super) fn new(origin: Origin) -> (Merge, mpsc::Receiver<Merged>) {
        let (merged, receiver) = mpsc::channel(MERGED_QUEUE);
        let merge = Merge {
            monitor_from: (origin.cluster.clone(), origin.node.clone(), merged.clone()),
            start: Some((origin, merged)),
            commands: None,
            monitors: Vec::new(),
        };
        (merge, receiver)
    }

    /// True when a (un)subscribe request (`args`, the whole request) names a channel or
    /// pattern that can hear notifications.
    pub(super) fn concerns(&self, kind: PubSubKind, args: Args<'_>) -> bool {
        args.from(1)
            .iter()
            .any(|name| channels::can_hear_notifications(kind, name))
    }

    /// Before a `SUBSCRIBE` / `PSUBSCRIBE` (`args`, the whole request) goes to the client's own
    /// connection: subscribes the other primaries to the names that can hear notifications.
    /// An error is the reply the client gets instead; the request must not be sent then.
    pub(super) async fn subscribe(
        &mut self,
        kind: PubSubKind,
        args: Args<'_>,
    ) -> Result<(), Bytes> {
        let names = notification_names(kind, args);
        if names.is_empty() {
            return Ok(());
        }
        let commands = self.supervisor();
        let (done, answer) = oneshot::channel();
        if commands
            .send(Command::Subscribe { kind, names, done })
            .await
            .is_err()
        {
            return Err(unavailable());
        }
        answer.await.unwrap_or_else(|_| Err(unavailable()))
    }

    /// With an `UNSUBSCRIBE` / `PUNSUBSCRIBE` (`args`, the whole request): unsubscribes the
    /// other primaries. Does not wait: the client's own connection confirms, and the reply side
    /// stops passing messages on at that confirmation.
    pub(super) async fn unsubscribe(&mut self, kind: PubSubKind, args: Args<'_>) {
        let Some(commands) = &self.commands else {
            return;
        };
        if kind == PubSubKind::Shard {
            return;
        }
        // No names: all of the kind.
        let names = notification_names(kind, args);
        if args.len() > 1 && names.is_empty() {
            return;
        }
        let _ = commands.send(Command::Unsubscribe { kind, names }).await;
    }

    /// Before a `MONITOR` goes to the client's own connection: every other primary monitored
    /// too, each confirmed. An error is the reply the client gets instead (nothing is
    /// monitored then); the request must not be sent.
    pub(super) async fn monitor(&mut self) -> Result<(), Bytes> {
        if !self.monitors.is_empty() {
            return Ok(()); // Already monitoring: Redis just confirms again.
        }
        let (cluster, home, merged) = &self.monitor_from;
        let others: Vec<String> = cluster
            .primaries()
            .into_iter()
            .filter(|p| p != home)
            .collect();
        let opened = futures_util::future::join_all(
            others
                .iter()
                .map(|node| monitor::Monitor::open(cluster, node, merged.clone())),
        )
        .await;
        let mut failure = None;
        for (node, result) in others.iter().zip(opened) {
            match result {
                Ok(monitor) => self.monitors.push(monitor),
                Err(e) => {
                    failure.get_or_insert(format!("{node}: {e}"));
                }
            }
        }
        match failure {
            Some(e) => {
                self.monitors.clear();
                Err(write::error(&format!(
                    "ERR keyward: cannot MONITOR every primary ({e})"
                )))
            }
            None => Ok(()),
        }
    }

    /// With a `RESET`: the client's own connection forgets every subscription and leaves
    /// MONITOR, and so do the extra ones.
    pub(super) async fn reset(&mut self) {
        self.monitors.clear();
        if let Some(commands) = &self.commands {
            let _ = commands.send(Command::Reset).await;
        }
    }

    /// The supervisor's queue, starting the supervisor at the first call.
    fn supervisor(&mut self) -> mpsc::Sender<Command> {
        if let Some((origin, merged)) = self.start.take() {
            let (commands, receiver) = mpsc::channel(COMMAND_QUEUE);
            let supervisor = Supervisor::new(origin.cluster, origin.node, receiver, merged);
            tokio::spawn(supervisor.run());
            self.commands = Some(commands);
        }
        self.commands
            .clone()
            .expect("the supervisor is started above")
    }
}

/// The names of a (un)subscribe request that can hear notifications, copied out of the
/// request (a subscription outlives it).
fn notification_names(kind: PubSubKind, args: Args<'_>) -> Vec<Bytes> {
    args.from(1)
        .iter()
        .filter(|name| channels::can_hear_notifications(kind, name))
        .map(Bytes::copy_from_slice)
        .collect()
}

fn unavailable() -> Bytes {
    write::error("ERR keyward: keyspace notifications of the other primaries are not available")
}

/// Appends a merged message to `out` in the client's protocol: the RESP2 frame as it came, or
/// for a RESP3 client the same elements as a push (`>` instead of `*`), without a copy.
pub(super) fn write_for_client(frame: Bytes, resp3: bool, out: &mut Vec<Bytes>) {
    if resp3 {
        out.push(Bytes::from_static(b">"));
        out.push(frame.slice(1..));
    } else {
        out.push(frame);
    }
}
