//! The task that keeps a client's extra connections: one per primary other than the client's
//! own node, each subscribed to the client's keyspace subscriptions, following the cluster's
//! primaries while the client is subscribed.
//!
//! It takes the request side's (un)subscriptions in order, one at a time; a subscription is
//! answered only once every other primary has confirmed it, so that by the time the client
//! reads its confirmation (which its own connection sends after that), every primary delivers
//! its events. What it cannot keep, it does not hide (see [`Supervisor::lose`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::Merged;
use super::link::{Link, LinkEvent, LinkNews};
use crate::cluster::Cluster;
use crate::commands::PubSubKind;
use crate::protocol::write;

/// How often the primaries are compared with the extra connections while subscribed. The slot
/// map itself is read again on its own timer, and at once after a MOVED or a lost connection.
const FOLLOW_EVERY: Duration = Duration::from_secs(1);
/// How long a subscription waits for the other primaries' confirmations when the upstream has
/// no reply timeout (`reply_timeout_ms = 0`).
const CONFIRM_WAIT_WITHOUT_TIMEOUT: Duration = Duration::from_secs(30);
/// Link events (confirmations, errors, losses) waiting for the supervisor.
const NEWS_QUEUE: usize = 256;

/// What the request side asks for.
pub(super) enum Command {
    /// Subscribe the extra connections; answered when every one confirmed, or with the error
    /// reply the client gets instead of its confirmations.
    Subscribe {
        kind: PubSubKind,
        names: Vec<Bytes>,
        done: oneshot::Sender<Result<(), Bytes>>,
    },
    /// Unsubscribe them; no names: every subscription of the kind.
    Unsubscribe { kind: PubSubKind, names: Vec<Bytes> },
    /// `RESET`: nothing is subscribed any more.
    Reset,
}

pub(super) struct Supervisor {
    cluster: Arc<Cluster>,
    /// The node the client's own connection goes to: its events come over that connection.
    home: String,
    commands: mpsc::Receiver<Command>,
    merged: mpsc::Sender<Merged>,
    news_tx: mpsc::Sender<LinkEvent>,
    news: mpsc::Receiver<LinkEvent>,
    /// The client's keyspace subscriptions, as asked (confirmed or about to be).
    wanted: HashSet<(PubSubKind, Bytes)>,
    links: Vec<Link>,
    next_id: u64,
    /// Why the merge was lost, once it was: nothing is merged for this client any more.
    broken: Option<String>,
}

impl Supervisor {
    pub(super) fn new(
        cluster: Arc<Cluster>,
        home: String,
        commands: mpsc::Receiver<Command>,
        merged: mpsc::Sender<Merged>,
    ) -> Self {
        let (news_tx, news) = mpsc::channel(NEWS_QUEUE);
        Supervisor {
            cluster,
            home,
            commands,
            merged,
            news_tx,
            news,
            wanted: HashSet::new(),
            links: Vec::new(),
            next_id: 0,
            broken: None,
        }
    }

    /// Runs until the session drops its handle.
    pub(super) async fn run(mut self) {
        let mut follow = tokio::time::interval(FOLLOW_EVERY);
        follow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(command) => self.command(command).await,
                    None => return,
                },
                Some(event) = self.news.recv() => self.event(event).await,
                _ = follow.tick(), if !self.wanted.is_empty() => self.follow().await,
            }
        }
    }

    async fn command(&mut self, command: Command) {
        match command {
            Command::Subscribe { kind, names, done } => {
                let result = self.subscribe(kind, names).await;
                let _ = done.send(result);
            }
            Command::Unsubscribe { kind, names } => self.unsubscribe(kind, names).await,
            Command::Reset => {
                self.wanted.clear();
                self.links.clear();
            }
        }
    }

    /// Subscribes every other primary to `names`, and waits for their confirmations. On a
    /// failure the names it added are taken back, and the client gets an error instead of its
    /// confirmations (its own connection is not asked at all), as when Redis refuses a
    /// channel to an ACL user: nothing is subscribed.
    async fn subscribe(&mut self, kind: PubSubKind, names: Vec<Bytes>) -> Result<(), Bytes> {
        if let Some(reason) = &self.broken {
            return Err(error(reason));
        }
        // Without subscriptions there are no links either: they close with the last one.
        let had_subscriptions = !self.wanted.is_empty();
        if had_subscriptions {
            // Whatever changed since the last look is dealt with first (and may end the merge).
            self.follow().await;
            if let Some(reason) = &self.broken {
                return Err(error(reason));
            }
        }
        let primaries = self.cluster.primaries();
        if !primaries.contains(&self.home) {
            return Err(error(&format!(
                "cluster node {} that this connection is on is no longer a primary; reconnect \
                 to subscribe to keyspace notifications",
                self.home
            )));
        }
        let added: Vec<Bytes> = names
            .iter()
            .filter(|name| !self.wanted.contains(&(kind, (*name).clone())))
            .cloned()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        self.wanted
            .extend(names.iter().map(|name| (kind, name.clone())));

        let result = self.subscribe_everywhere(kind, &names, &primaries).await;
        let Err(failure) = result else {
            return Ok(());
        };
        if let Failure::Lost { node, reason } = &failure
            && had_subscriptions
        {
            // A connection that carried the earlier subscriptions too.
            self.lose(lost(node, reason)).await;
        }
        for name in &added {
            self.wanted.remove(&(kind, name.clone()));
        }
        if self.wanted.is_empty() {
            self.links.clear();
        } else {
            for link in &mut self.links {
                link.awaiting.clear();
                // (With no names, UNSUBSCRIBE would drop every subscription of the kind.)
                if !added.is_empty() {
                    let _ = link.send(kind, false, &added).await;
                }
            }
        }
        Err(match failure {
            Failure::Reply(reply) => reply,
            Failure::Lost { node, reason } => error(&lost(&node, &reason)),
        })
    }

    async fn subscribe_everywhere(
        &mut self,
        kind: PubSubKind,
        names: &[Bytes],
        primaries: &[String],
    ) -> Result<(), Failure> {
        for link in &mut self.links {
            if let Err(reason) = link.send(kind, true, names).await {
                return Err(Failure::lost(&link.node, reason));
            }
        }
        let missing: Vec<(String, u64)> = primaries
            .iter()
            .filter(|p| **p != self.home && !self.links.iter().any(|l| &l.node == *p))
            .map(|node| {
                self.next_id += 1;
                (node.clone(), self.next_id)
            })
            .collect();
        let cluster = &self.cluster;
        let opened = futures_util::future::join_all(missing.into_iter().map(|(node, id)| {
            Link::open(cluster, node, id, self.news_tx.clone(), self.merged.clone())
        }))
        .await;
        for link in opened {
            let mut link = link.map_err(|e| {
                Failure::Reply(error(&format!(
                    "cannot subscribe to the keyspace notifications of every primary: {e}"
                )))
            })?;
            // A new connection takes every keyspace subscription of the client, these included.
            if let Err(reason) = subscribe_all(&mut link, &self.wanted).await {
                return Err(Failure::lost(&link.node, reason));
            }
            self.links.push(link);
        }
        self.confirmations().await
    }

    /// Waits until every link has confirmed what it was asked to subscribe to.
    async fn confirmations(&mut self) -> Result<(), Failure> {
        let timeout = self.cluster.target(&self.home, false).reply_timeout;
        let wait = if timeout.is_zero() {
            CONFIRM_WAIT_WITHOUT_TIMEOUT
        } else {
            timeout
        };
        let deadline = Instant::now() + wait;
        while let Some(link) = self.links.iter().find(|l| !l.awaiting.is_empty()) {
            let node = link.node.clone();
            let event = tokio::select! {
                event = self.news.recv() => event,
                _ = tokio::time::sleep_until(deadline) => {
                    return Err(Failure::Reply(error(&format!(
                        "cluster node {node} did not confirm a keyspace subscription within {} ms",
                        wait.as_millis()
                    ))));
                }
            };
            let Some(event) = event else {
                return Err(Failure::Reply(error(
                    "keyspace notifications are not available",
                )));
            };
            let Some(link) = self.links.iter_mut().find(|l| l.id == event.link) else {
                continue;
            };
            match event.news {
                LinkNews::Confirmed(c) => note_confirmation(link, c),
                // The node's own error, as the client would have read it from that node.
                LinkNews::Refused(text) => return Err(Failure::Reply(write::error(&text))),
                LinkNews::Lost(reason) => return Err(Failure::lost(&link.node, reason)),
            }
        }
        Ok(())
    }

    /// Unsubscribes the other primaries; once nothing is subscribed, their connections close.
    async fn unsubscribe(&mut self, kind: PubSubKind, names: Vec<Bytes>) {
        if self.broken.is_some() {
            return;
        }
        if names.is_empty() {
            self.wanted.retain(|(k, _)| *k != kind);
        } else {
            for name in &names {
                self.wanted.remove(&(kind, name.clone()));
            }
        }
        if self.wanted.is_empty() {
            self.links.clear();
            return;
        }
        let mut failed = None;
        for link in &mut self.links {
            if let Err(e) = link.send(kind, false, &names).await {
                failed = Some(lost(&link.node, &e));
                break;
            }
        }
        if let Some(reason) = failed {
            self.lose(reason).await;
        }
    }

    /// A link's news outside a subscription's wait.
    async fn event(&mut self, event: LinkEvent) {
        let Some(link) = self.links.iter_mut().find(|l| l.id == event.link) else {
            // A link dropped since (unsubscribed, replaced): nothing to do.
            return;
        };
        match event.news {
            LinkNews::Confirmed(c) => note_confirmation(link, c),
            LinkNews::Refused(text) => {
                let reason = format!(
                    "cluster node {} refused a keyspace subscription: {text}",
                    link.node
                );
                self.lose(reason).await;
            }
            LinkNews::Lost(reason) => {
                let reason = lost(&link.node, &reason);
                self.lose(reason).await;
            }
        }
    }

    /// Compares the cluster's primaries with the connections: a new primary gets a connection
    /// subscribed to everything the client is subscribed to; a node that is no longer a
    /// primary (the client's own node included) ends the merge, since the events of the keys
    /// it served may have been missed in between.
    async fn follow(&mut self) {
        if self.broken.is_some() || self.wanted.is_empty() {
            return;
        }
        let primaries = self.cluster.primaries();
        if !primaries.contains(&self.home) {
            let reason = format!(
                "cluster node {} that this connection is on is no longer a primary (failover or \
                 resharding): keyspace notifications may have been missed",
                self.home
            );
            return self.lose(reason).await;
        }
        if let Some(link) = self.links.iter().find(|l| !primaries.contains(&l.node)) {
            let reason = format!(
                "cluster node {} is no longer a primary (failover or resharding): keyspace \
                 notifications may have been missed",
                link.node
            );
            return self.lose(reason).await;
        }
        let new: Vec<String> = primaries
            .into_iter()
            .filter(|p| *p != self.home && !self.links.iter().any(|l| l.node == *p))
            .collect();
        for node in new {
            tracing::info!(node = %node, "keyspace notifications: subscribing a new primary");
            self.next_id += 1;
            let opened = Link::open(
                &self.cluster,
                node.clone(),
                self.next_id,
                self.news_tx.clone(),
                self.merged.clone(),
            )
            .await;
            let subscribed = match opened {
                Ok(mut link) => match subscribe_all(&mut link, &self.wanted).await {
                    Ok(()) => Ok(link),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match subscribed {
                Ok(link) => self.links.push(link),
                Err(e) => {
                    let reason = format!(
                        "cannot subscribe new primary {node} to keyspace notifications: {e}"
                    );
                    return self.lose(reason).await;
                }
            }
        }
    }

    /// The merge cannot go on: a node whose events it merged went away (connection lost, no
    /// longer a primary) or refused. The client is told the way Redis tells a subscriber that
    /// its server went away: its connection is closed (after error replies for what it
    /// waits for), so that its library reconnects and subscribes again, rather than going on
    /// without the events of some keys and not knowing it.
    async fn lose(&mut self, reason: String) {
        if self.broken.is_some() {
            return;
        }
        tracing::warn!(node = %self.home, %reason, "keyspace notification merge lost; closing the client");
        self.links.clear();
        self.wanted.clear();
        self.cluster.request_refresh();
        self.broken = Some(reason.clone());
        let _ = self.merged.send(Merged::Lost(reason)).await;
    }
}

fn note_confirmation(link: &mut Link, confirmation: super::super::pubsub::Confirmation) {
    if confirmation.subscribe
        && let Some(name) = confirmation.channel
    {
        link.awaiting.remove(&(confirmation.kind, name));
    }
}

/// Subscribes a new link to every subscription in `wanted`.
async fn subscribe_all(
    link: &mut Link,
    wanted: &HashSet<(PubSubKind, Bytes)>,
) -> Result<(), String> {
    for kind in [PubSubKind::Channel, PubSubKind::Pattern] {
        let names: Vec<Bytes> = wanted
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, name)| name.clone())
            .collect();
        link.send(kind, true, &names).await?;
    }
    Ok(())
}

/// Why a subscription of the other primaries failed.
enum Failure {
    /// The error reply the client gets (a node's refusal, a connection that could not be made,
    /// no confirmation in time).
    Reply(Bytes),
    /// A connection broke.
    Lost { node: String, reason: String },
}

impl Failure {
    fn lost(node: &str, reason: String) -> Failure {
        Failure::Lost {
            node: node.to_string(),
            reason,
        }
    }
}

/// The error reply a client gets from keyward's side of a keyspace subscription.
fn error(reason: &str) -> Bytes {
    write::error(&format!("ERR keyward: {reason}"))
}

/// Why the merge ends when a link broke.
fn lost(node: &str, reason: &str) -> String {
    format!("connection to cluster node {node} (keyspace notifications) lost: {reason}")
}
