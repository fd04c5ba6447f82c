//! The Redis Cluster backend: keyward's own slot map, shared pipelined connections per node,
//! and requests that follow MOVED and ASK so that clients never see them.
//!
//! The map is read from the seeds at start-up (`CLUSTER SHARDS`, or `CLUSTER SLOTS` on older
//! servers) and read again on a timer, after a MOVED, and after a connection error. Reads of the
//! map never wait for a refresh: a request uses the map it finds and, when that map is stale, the
//! node's redirection corrects it.
//!
//! Redirections are followed for as long as the nodes take to agree, not for a number of hops:
//! while a slot changes hands the nodes can disagree about its owner for a while (a migration
//! whose last `CLUSTER SETSLOT slot NODE` reaches the source before the destination, or gossip
//! still spreading the new owner), the source answering `MOVED dst` and the importing destination
//! `MOVED src`. Such a ping-pong costs the client latency, never an error: see
//! [`Cluster::follow_from`].

pub mod clients;
pub mod command_info;
pub mod fanout;
pub mod housekeeping;
pub mod merge;
pub mod node;
pub mod routing;
pub mod topology;

use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dashmap::DashMap;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::fnv::BuildFnv;
use crate::metrics;
use crate::protocol::{reply, write};
use crate::upstream::WarmPool;
use crate::upstream::{DialError, DialFailure, UpstreamTarget};
use node::{NodeConn, NodeError};
use routing::{Fan, Nodes, Routing};
use topology::SlotMap;

/// How long a request keeps retrying while a node is unreachable or its slots have no owner
/// (a failover in progress, counted from when the request was queued), and how long it keeps
/// following redirections while the nodes send it from one to the other (MOVED / ASK, counted
/// from the first redirection), before the client gets an error. One figure for every way a
/// cluster in transition can keep a request from running: a transition shorter than this is
/// only latency to the client.
const RETRY_BUDGET: Duration = Duration::from_secs(6);
/// Redirections (MOVED, ASK) of one request followed at once, with no pause. The healthy cases
/// take one or two: a MOVED after a resharding, a MOVED then an ASK during a migration, an ASK
/// whose target answers MOVED back to the source (the migration of that key ended), and none of
/// them may cost the client a sleep. More than that means the nodes disagree about the slot.
const FREE_REDIRECTS: u32 = 2;
/// The pause before the first redirection beyond [`FREE_REDIRECTS`]; it doubles with each further
/// one, up to [`MAX_REDIRECT_BACKOFF`]. Short enough that a ping-pong that ends at once costs
/// about a millisecond, doubling so that one that lasts seconds does not keep two nodes (and
/// keyward) busy bouncing every in-flight request of every client.
const FIRST_REDIRECT_BACKOFF: Duration = Duration::from_millis(1);
/// The longest pause between two redirections: the most latency a request pays beyond the end
/// of the disagreement (plus the hops to the owner); under 70 hops fit in [`RETRY_BUDGET`].
const MAX_REDIRECT_BACKOFF: Duration = Duration::from_millis(100);
/// TRYAGAIN retries (20 ms apart) before the reply is passed on.
const MAX_TRYAGAIN: usize = 2;
/// CLUSTERDOWN replies retried (100 ms apart, within [`RETRY_BUDGET`]) before the reply is
/// passed on.
const MAX_CLUSTERDOWN_RETRIES: usize = 8;
/// Script bodies remembered as loaded on every primary ([`Cluster::share_script`]).
const MAX_SHARED_SCRIPTS: usize = 10_000;
/// Private connections kept ready per node (and protocol) once one was needed.
const WARM_PRIVATE_CONNECTIONS: usize = 2;
/// The map is read again at least this often.
const REFRESH_INTERVAL: Duration = Duration::from_secs(5);
/// Refreshes asked for by redirects and errors are at most this frequent.
const MIN_REFRESH_GAP: Duration = Duration::from_millis(100);

/// The state shared by every session in cluster mode.
pub struct Cluster {
    map: RwLock<Arc<SlotMap>>,
    /// The primaries that own slots, sorted; derived from `map` whenever it changes, because
    /// keyless requests need one on every call and deriving it walks all 16384 slots.
    primaries: RwLock<Arc<Vec<String>>>,
    /// Shared connections by node address: `[0]` RESP2, `[1]` RESP3.
    pool: [DashMap<String, NodeConn, BuildFnv>; 2],
    /// Private connections opened ahead of need, by node address: `[0]` RESP2, `[1]` RESP3;
    /// a node's pool is started when a client first needs a private connection to it.
    warm: [DashMap<String, Arc<WarmPool>, BuildFnv>; 2],
    seeds: Vec<String>,
    template: UpstreamTarget,
    refresh: Arc<Notify>,
    /// How long a request keeps retrying while its node is unreachable. Zero for a standalone
    /// Redis, where there is no other node to wait for: the client hears at once.
    retry_budget: Duration,
    /// A standalone Redis seen as a cluster ([`Cluster::single`]).
    single: bool,
    /// The command table learned from the cluster (`COMMAND`), read at start-up and after a
    /// topology change; empty until then, when the built-in table routes alone.
    routing: RwLock<Arc<Routing>>,
    routing_generation: std::sync::atomic::AtomicU64,
    /// keyward's own clients (`CLIENT ID`, `LIST`, `INFO`), and where their blocking commands
    /// wait (`CLIENT UNBLOCK`).
    pub clients: clients::Clients,
    /// Hashes of the script bodies `EVAL`ed through keyward and loaded into every primary's
    /// script cache since (see [`Cluster::share_script`]).
    shared_scripts: Mutex<std::collections::HashSet<u64>>,
}

/// A request queued on a node connection; see [`Cluster::submit`].
pub struct Submitted {
    target: Target,
    request: Bytes,
    resp3: bool,
    first: Result<node::Pending, NodeError>,
    /// The connection it was queued on, to flush.
    conn: Option<NodeConn>,
    started: Instant,
}

impl Submitted {
    /// Writes what is queued on this request's connection.
    pub fn flush(&self) {
        if let Some(conn) = &self.conn {
            conn.flush();
        }
    }

    /// The connection the request was queued on, if any.
    pub fn conn(&self) -> Option<&NodeConn> {
        self.conn.as_ref()
    }

    /// The reply, after following any MOVED / ASK / TRYAGAIN.
    pub async fn reply(self, cluster: &Cluster) -> Bytes {
        cluster.follow(self).await
    }

    /// Why the request was never sent, when it was not (no connection to its node): its
    /// retries can start at once.
    pub fn not_sent(&self) -> Option<NodeError> {
        self.first.as_ref().err().cloned()
    }

    /// The first reply from the node it was queued on (or why there is none), when it has
    /// come; [`Cluster::follow_from`] takes it from there when it is not the answer.
    pub fn poll_first(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<node::NodeReply> {
        match &mut self.first {
            Ok(pending) => pending.poll_reply(cx),
            Err(e) => std::task::Poll::Ready(Err(e.clone())),
        }
    }
}

/// One TLS handshake with every primary of the slot map, at start-up: the seed's certificate
/// was checked when the map was read, but the other nodes are reached by the addresses the
/// cluster announces, often IP addresses where the seed was a DNS name. A certificate keyward
/// refuses is a configuration error that no retry can mend, so it stops keyward here with the
/// node and the remedy named, rather than failing every request that reaches that node. A node
/// that cannot be reached at all is only logged: it may be restarting, and the cluster may still
/// serve (a replica takes over).
///
/// Each node is dialled as `template` says but without credentials: the dial stops after the
/// TLS handshake, which is all this checks.
async fn check_node_certificates(map: &SlotMap, template: &UpstreamTarget) -> Result<(), String> {
    for node in map.primaries() {
        let target = UpstreamTarget {
            addr: node.to_string(),
            username: None,
            password: None,
            resp3: false,
            ..template.clone()
        };
        match target.dial().await {
            Ok(_socket) => {}
            Err(DialError {
                failure: DialFailure::Tls(e),
                ..
            }) if crate::tls::is_certificate_error(&e) => {
                return Err(format!(
                    "the certificate of cluster node {node} is refused: {e}; without \
                     upstream.tls.server_name every node's certificate must be valid for the \
                     host the cluster announces for it; set server_name to the name the nodes' \
                     certificates carry"
                ));
            }
            Err(DialError {
                failure: DialFailure::ConnectTimeout | DialFailure::TlsTimeout,
                ..
            }) => tracing::warn!(
                node = %node,
                "cluster node: no TLS handshake within the connect timeout at start-up"
            ),
            Err(e) => tracing::warn!(
                node = %node,
                error = %e,
                "cluster node not reachable over TLS at start-up"
            ),
        }
    }
    Ok(())
}

/// Where a request goes first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The owner of this slot.
    Slot(u16),
    /// Any primary (keyless commands).
    Any,
    /// This node (commands sent to every primary, SCAN).
    Node(String),
}

impl Cluster {
    /// Reads the slot map from the seeds and starts the refresher.
    pub async fn start(seeds: Vec<String>, template: UpstreamTarget) -> Result<Arc<Self>, String> {
        let map = topology::discover(&seeds, &template)
            .await
            .map_err(|e| e.to_string())?;
        tracing::info!(
            primaries = map.primaries().len(),
            slots = map.assigned_slots(),
            "cluster topology read"
        );
        if template.tls.is_some() {
            check_node_certificates(&map, &template).await?;
        }
        if let Some(m) = metrics::get() {
            m.slot_map_refreshed();
            m.set_slots_covered(map.assigned_slots());
        }
        let cluster = Arc::new(Cluster {
            primaries: RwLock::new(Arc::new(sorted_primaries(&map))),
            map: RwLock::new(Arc::new(map)),
            pool: [DashMap::default(), DashMap::default()],
            warm: [DashMap::default(), DashMap::default()],
            seeds,
            template,
            refresh: Arc::new(Notify::new()),
            retry_budget: RETRY_BUDGET,
            single: false,
            routing: RwLock::new(Arc::new(Routing::default())),
            routing_generation: std::sync::atomic::AtomicU64::new(0),
            clients: clients::Clients::default(),
            shared_scripts: Mutex::default(),
        });
        cluster.learn_commands().await;
        tokio::spawn(refresher(Arc::downgrade(&cluster), cluster.refresh.clone()));
        Ok(cluster)
    }

    /// A standalone Redis seen as a one-node cluster that owns every slot: stateless requests
    /// of all clients share its pipelined connection, with no topology to read or refresh.
    pub fn single(template: UpstreamTarget) -> Arc<Self> {
        let mut map = SlotMap::empty();
        if let Some(owner) = node_addr(&template.addr) {
            for slot in 0..topology::SLOT_COUNT as u16 {
                map.set_owner(slot, owner.clone());
            }
        }
        Arc::new(Cluster {
            primaries: RwLock::new(Arc::new(sorted_primaries(&map))),
            map: RwLock::new(Arc::new(map)),
            pool: [DashMap::default(), DashMap::default()],
            warm: [DashMap::default(), DashMap::default()],
            seeds: vec![template.addr.clone()],
            template,
            refresh: Arc::new(Notify::new()),
            retry_budget: Duration::ZERO,
            single: true,
            routing: RwLock::new(Arc::new(Routing::default())),
            routing_generation: std::sync::atomic::AtomicU64::new(0),
            clients: clients::Clients::default(),
            shared_scripts: Mutex::default(),
        })
    }

    /// Whether this is one standalone Redis ([`Cluster::single`]): a multi-key command goes to
    /// it whole, with no split by slot.
    pub fn is_single(&self) -> bool {
        self.single
    }

    /// Drops every shared connection: the next request to a node dials it again. For a
    /// standalone Redis under Sentinel whose primary changed (its one node is "the primary",
    /// whichever server that is now).
    pub fn reset_connections(&self) {
        for pool in &self.pool {
            pool.clear();
        }
        for warm in &self.warm {
            warm.clear();
        }
    }

    /// The current slot map.
    pub fn map(&self) -> Arc<SlotMap> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Asks the refresher to read the topology again soon.
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Every primary that owns slots, in a stable order.
    pub fn primaries(&self) -> Vec<String> {
        self.primaries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .to_vec()
    }

    /// Every primary that owns slots, in a stable order, without copying the list.
    fn primaries_shared(&self) -> Arc<Vec<String>> {
        self.primaries
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Every node of the map, primaries and their replicas, in a stable order.
    pub fn all_nodes(&self) -> Vec<String> {
        let map = self.map();
        let mut nodes = self.primaries();
        for shard in map.shards() {
            for replica in &shard.replicas {
                let addr = replica.to_string();
                if !nodes.contains(&addr) {
                    nodes.push(addr);
                }
            }
        }
        nodes
    }

    /// The routing table: what the cluster said about its commands, with keyward's choices.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Bumped each time a new routing table is installed: a session keeps the table it took
    /// and takes the new one only when this changes, one atomic load per request instead of a
    /// lock and two reference counts.
    pub fn routing_generation(&self) -> u64 {
        self.routing_generation
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Asks a primary for `COMMAND` and routes by what it says from then on. A failure keeps
    /// the table in use (the built-in one at start-up) and is logged: routing by the built-in
    /// table still works, with a redirection where it does not know a command's keys.
    async fn learn_commands(&self) {
        let reply = self
            .execute(Target::Any, write::command::<&[u8]>(b"COMMAND", &[]), false)
            .await;
        let decoded = match redis_protocol::resp2::decode::decode(&reply) {
            Ok(Some((frame, _))) => frame,
            Ok(None) => {
                tracing::warn!("cluster COMMAND reply incomplete; routing by the built-in table");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster COMMAND reply unreadable; routing by the built-in table");
                return;
            }
        };
        match command_info::CommandInfo::from_reply(&decoded) {
            Ok(info) => {
                tracing::info!(commands = info.len(), "cluster command table read");
                *self.routing.write().unwrap_or_else(|e| e.into_inner()) =
                    Arc::new(Routing::new(info));
                self.routing_generation
                    .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            }
            Err(e) => {
                tracing::warn!(error = %e, "cluster COMMAND reply not understood; routing by the built-in table")
            }
        }
    }

    /// Sends `request` to the nodes `fan` names, all at once, and returns the nodes and their
    /// replies in the same order. Over the shared connections, or, for a command that must get
    /// through while a node is busy with a script (`SCRIPT KILL`), over a connection of its
    /// own to each node.
    pub async fn fan_out(
        &self,
        fan: Fan,
        request: Bytes,
        resp3: bool,
    ) -> (Vec<String>, Vec<Bytes>) {
        let nodes = match fan.nodes {
            Nodes::Primaries => self.primaries(),
            Nodes::All => self.all_nodes(),
        };
        let replies = if fan.private {
            let each = nodes.iter().map(|addr| {
                let request = request.clone();
                async move {
                    match self.private(addr, resp3).await {
                        Ok(conn) => conn.request(request, 0).await.unwrap_or_else(|e| {
                            write::error(&format!("ERR keyward: {addr}: {}", e.message()))
                        }),
                        Err(e) => write::error(&format!("ERR keyward: {addr}: {e}")),
                    }
                }
            });
            futures_util::future::join_all(each).await
        } else {
            let mut submitted = Vec::with_capacity(nodes.len());
            for addr in &nodes {
                submitted.push(
                    self.submit(Target::Node(addr.clone()), request.clone(), resp3)
                        .await,
                );
            }
            for s in &submitted {
                s.flush();
            }
            fanout::replies(self, submitted).await
        };
        (nodes, replies)
    }

    fn first_primary(&self) -> Option<String> {
        self.primaries_shared().first().cloned()
    }

    /// Installs a new slot map.
    fn set_map(&self, map: SlotMap) {
        if let Some(m) = metrics::get() {
            m.set_slots_covered(map.assigned_slots());
        }
        let primaries = Arc::new(sorted_primaries(&map));
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(map);
        *self.primaries.write().unwrap_or_else(|e| e.into_inner()) = primaries;
    }

    /// A template for connecting to `addr` with keyward's credentials.
    pub fn target(&self, addr: &str, resp3: bool) -> UpstreamTarget {
        UpstreamTarget {
            addr: addr.to_string(),
            resp3,
            ..self.template.clone()
        }
    }

    /// The shared connection to `addr`, opened when missing or dead.
    async fn shared(&self, addr: &str, resp3: bool) -> Result<NodeConn, String> {
        let pool = &self.pool[usize::from(resp3)];
        if let Some(conn) = pool.get(addr)
            && conn.is_alive()
        {
            return Ok(conn.clone());
        }
        let conn = NodeConn::connect(&self.target(addr, resp3)).await?;
        // Another session may have connected meanwhile: keep one, the newest is as good.
        pool.insert(addr.to_string(), conn.clone());
        Ok(conn)
    }

    /// A private connection to `addr` (blocking commands, scripts, transactions, AUTH checks),
    /// taken from the node's few connections opened ahead of need. A client that sends `BLPOP`
    /// and, through another connection, `LPUSH` right after expects Redis to see them in that
    /// order, as it would without keyward in between: a TCP handshake and AUTH first would
    /// let the LPUSH, on an open shared connection, overtake the BLPOP.
    pub async fn private(&self, addr: &str, resp3: bool) -> Result<NodeConn, String> {
        // Private connections carry blocking commands and transactions: no reply timeout.
        let target = UpstreamTarget {
            reply_timeout: Duration::ZERO,
            ..self.target(addr, resp3)
        };
        let pool = self.warm[usize::from(resp3)]
            .entry(addr.to_string())
            .or_insert_with(|| WarmPool::start(target.clone(), WARM_PRIVATE_CONNECTIONS))
            .clone();
        let socket = pool.connect().await?;
        Ok(NodeConn::over(socket, &target))
    }

    fn address_for(&self, target: &Target) -> Option<String> {
        match target {
            Target::Slot(slot) => self.map().owner(*slot).map(|a| a.to_string()),
            Target::Any => self.first_primary(),
            Target::Node(addr) => Some(addr.clone()),
        }
    }

    /// Sends one request to where `target` says over a shared connection, following
    /// redirections, and returns the reply frame (an error frame when it could not be done).
    /// After an `EVAL` of `body` ran on `ran_on`: the first time keyward sees that body, loads
    /// it into the script cache of every other primary (`SCRIPT LOAD`, in parallel, before the
    /// client gets its reply), as one Redis would have cached it for any key. So an `EVALSHA`
    /// of it works on keys of every primary, and `SCRIPT EXISTS` finds it. Best effort: a
    /// node that fails to load it (unreachable, or the script does not compile) answers
    /// `NOSCRIPT` later, as before, and a primary that takes over after a failover starts
    /// with an empty cache.
    pub async fn share_script(&self, body: &[u8], ran_on: &str) {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        body.hash(&mut hasher);
        let digest = hasher.finish();
        {
            let mut shared = self
                .shared_scripts
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if shared.contains(&digest) {
                return;
            }
            // Bounded: past this many bodies, start over (each is loaded again once).
            if shared.len() >= MAX_SHARED_SCRIPTS {
                shared.clear();
            }
            shared.insert(digest);
        }
        let load = write::command(b"SCRIPT", &[&b"LOAD"[..], body]);
        let others = self.primaries().into_iter().filter(|p| p != ran_on);
        futures_util::future::join_all(
            others.map(|node| self.execute(Target::Node(node), load.clone(), false)),
        )
        .await;
    }

    /// `SCRIPT FLUSH` emptied every node's script cache: scripts are shared again.
    pub fn forget_shared_scripts(&self) {
        self.shared_scripts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    pub async fn execute(&self, target: Target, request: Bytes, resp3: bool) -> Bytes {
        let submitted = self.submit(target, request, resp3).await;
        submitted.flush();
        submitted.reply(self).await
    }

    /// Queues a request on the shared connection of its node at once, so that a session's
    /// requests to one node keep their order; the caller flushes ([`Submitted::flush`]) once
    /// it has queued all it has, and the reply (with redirections followed) comes from
    /// [`Submitted::reply`]. Waits only when a connection has to be opened.
    pub async fn submit(&self, target: Target, request: Bytes, resp3: bool) -> Submitted {
        self.submit_alerting(target, request, resp3, None).await
    }

    /// Like [`Cluster::submit`], raising `alert` if the node's reply is an error.
    pub async fn submit_alerting(
        &self,
        target: Target,
        request: Bytes,
        resp3: bool,
        alert: Option<Arc<node::ErrorAlert>>,
    ) -> Submitted {
        let mut conn = None;
        // The owner's address is borrowed from the map: no allocation on this per-request path.
        let map = self.map();
        let primaries;
        let addr = match &target {
            Target::Slot(slot) => map.owner(*slot).map(|a| a.as_str()),
            Target::Any => {
                primaries = self.primaries_shared();
                primaries.first().map(|a| a.as_str())
            }
            Target::Node(addr) => Some(addr.as_str()),
        };
        let first = match addr {
            Some(addr) => match self.shared(addr, resp3).await {
                Ok(c) => {
                    let pending = c.enqueue_alerting(request.clone(), 0, alert).await;
                    conn = Some(c);
                    pending
                }
                Err(e) => Err(NodeError::NotSent(e)),
            },
            None => Err(NodeError::NotSent("no node serves the slot".into())),
        };
        Submitted {
            target,
            request,
            resp3,
            first,
            conn,
            started: Instant::now(),
        }
    }

    /// Queues every part like [`Cluster::submit`], in order: a fan-out of a thousand parts
    /// reads the slot map and the clock once and looks each node's connection up once, not once
    /// per part (callgrind, a 1000-key `REMOVEKEYS` over 1000 slots: the per-part look-ups were
    /// a tenth of keyward's instructions).
    pub async fn submit_many(&self, parts: Vec<(Target, Bytes)>, resp3: bool) -> Vec<Submitted> {
        let started = Instant::now();
        let map = self.map();
        let primaries = self.primaries_shared();
        // The connections looked up so far: a handful of nodes for any number of parts.
        let mut conns: Vec<(&str, NodeConn)> = Vec::new();
        let mut submitted = Vec::with_capacity(parts.len());
        for (target, request) in parts {
            let addr = match &target {
                Target::Slot(slot) => map.owner(*slot).map(|a| a.as_str()),
                Target::Any => primaries.first().map(|a| a.as_str()),
                Target::Node(_) => None,
            };
            let conn = match (addr, &target) {
                (_, Target::Node(addr)) => self.shared(addr, resp3).await,
                (Some(addr), _) => match conns.iter().find(|(a, _)| *a == addr) {
                    Some((_, conn)) => Ok(conn.clone()),
                    None => self.shared(addr, resp3).await.inspect(|conn| {
                        conns.push((addr, conn.clone()));
                    }),
                },
                (None, _) => Err("no node serves the slot".into()),
            };
            let (first, conn) = match conn {
                Ok(conn) => (conn.enqueue(request.clone(), 0).await, Some(conn)),
                Err(e) => (Err(NodeError::NotSent(e)), None),
            };
            submitted.push(Submitted {
                target,
                request,
                resp3,
                first,
                conn,
                started,
            });
        }
        submitted
    }

    async fn follow(&self, mut submitted: Submitted) -> Bytes {
        // An empty String does not allocate: a placeholder for what was moved out.
        let first =
            match std::mem::replace(&mut submitted.first, Err(NodeError::NotSent(String::new()))) {
                Ok(pending) => pending.reply().await,
                Err(e) => Err(e),
            };
        self.follow_from(submitted, first).await
    }

    /// Follows a request's redirections (or retries it while its node is unreachable) from its
    /// first reply on; the reply the client gets.
    ///
    /// Only requests whose first reply is an error (or that could not be sent) come here: the
    /// path of a request answered at once has no timer, no allocation and no counter of this.
    ///
    /// MOVED and ASK are followed with no pause for the first [`FREE_REDIRECTS`], then after a
    /// pause of [`FIRST_REDIRECT_BACKOFF`] doubling up to [`MAX_REDIRECT_BACKOFF`], with a
    /// refresh of the slot map asked for at each pause, until [`RETRY_BUDGET`] has passed since
    /// the first redirection (counted from there, not from when the request was queued, so that
    /// a request that waited behind a slow one still gets the whole budget to see the nodes
    /// agree). A MOVED or an ASK says the node did not run the command, so following them for
    /// that long can never run it twice. TRYAGAIN and CLUSTERDOWN replies keep their own, small
    /// number of retries ([`MAX_TRYAGAIN`], [`MAX_CLUSTERDOWN_RETRIES`]).
    ///
    /// When the budget runs out the client gets `CLUSTERDOWN keyward: ...` naming the slot and
    /// the last two redirections (which node sent where), not the last MOVED. A client of
    /// keyward talks to what looks like one Redis and can do nothing with a node's address (a
    /// cluster-aware client would even follow it, around keyward and its guard); CLUSTERDOWN is
    /// the error Redis itself gives when no node serves a slot, a state cluster clients know to
    /// be transient (several retry it after a pause), and it tells any client that the command
    /// was not run. A standalone
    /// Redis seen as a cluster (a zero budget) has its own reply passed on after the free
    /// redirections, as a client connected to it directly would get it.
    pub async fn follow_from(&self, submitted: Submitted, first: node::NodeReply) -> Bytes {
        let Submitted {
            target,
            request,
            resp3,
            started,
            conn: first_conn,
            ..
        } = submitted;
        let mut outcome = Some(first);
        // Where to send a retry: set by a redirection, else looked up again when needed.
        let mut addr: Option<String> = None;
        // Where the reply being looked at came from; `None`: the request's first connection.
        let mut sent_to: Option<String> = None;
        let mut asking = false;
        let mut redirects: u32 = 0;
        let mut bounces = Bounces::default();
        // When the first redirection came: the budget for following them counts from there.
        let mut first_redirect: Option<Instant> = None;
        let mut tryagain = 0;
        let mut down = 0;
        loop {
            let result = match outcome.take() {
                Some(result) => result,
                None => match addr.clone().or_else(|| self.address_for(&target)) {
                    Some(node) => {
                        let result = match self.shared(&node, resp3).await {
                            Ok(conn) => {
                                let (bytes, skip) = if asking {
                                    (with_asking(&request), 1)
                                } else {
                                    (request.clone(), 0)
                                };
                                conn.request(bytes, skip).await
                            }
                            Err(e) => Err(NodeError::NotSent(e)),
                        };
                        sent_to = Some(node);
                        result
                    }
                    None => Err(NodeError::NotSent("no node serves the slot".into())),
                },
            };
            let frame = match result {
                Ok(frame) => frame,
                Err(NodeError::NotSent(e)) => {
                    // Nothing reached a node (none reachable, or the slot has no owner during a
                    // failover): safe to try again once the map is fresh.
                    self.request_refresh();
                    if self.retry_budget.is_zero() {
                        return write::error(&format!("ERR keyward: {e}"));
                    }
                    if started.elapsed() > self.retry_budget {
                        return write::error(&format!(
                            "CLUSTERDOWN keyward: {e} (retried for {} ms)",
                            self.retry_budget.as_millis()
                        ));
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    addr = self.address_for(&target);
                    asking = false;
                    continue;
                }
                Err(NodeError::Lost(e)) => {
                    // The node may have run it: retrying could run it twice.
                    self.request_refresh();
                    return write::error(&format!("ERR keyward: {e}"));
                }
            };
            if !reply::is_error(&frame) {
                return frame;
            }
            let (slot, to, ask) = match Redirect::parse(&frame) {
                Some(Redirect::Moved { slot, addr }) => {
                    count_redirect(metrics::Redirect::Moved);
                    self.learn_owner(slot, &addr);
                    self.request_refresh();
                    (slot, addr, false)
                }
                Some(Redirect::Ask { slot, addr }) => {
                    count_redirect(metrics::Redirect::Ask);
                    (slot, addr, true)
                }
                Some(Redirect::TryAgain) => {
                    count_redirect(metrics::Redirect::TryAgain);
                    // A multi-key command on a slot being migrated, some keys on each side. It
                    // stays so until the migration ends: retry briefly, then let the caller
                    // split the command by key (fan-out classes) or hand TRYAGAIN to the
                    // client, as Redis Cluster clients expect.
                    tryagain += 1;
                    if tryagain > MAX_TRYAGAIN {
                        return frame;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Some(Redirect::Down) => {
                    self.request_refresh();
                    down += 1;
                    if down > MAX_CLUSTERDOWN_RETRIES || started.elapsed() > self.retry_budget {
                        return frame;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    addr = self.address_for(&target).or(addr);
                    continue;
                }
                None => return frame,
            };
            // A redirection: the node did not run the command.
            redirects += 1;
            let redirected_at = *first_redirect.get_or_insert_with(Instant::now);
            let by = sent_to
                .take()
                .or_else(|| first_conn.as_ref().map(|c| c.addr().to_string()))
                .unwrap_or_default();
            bounces.push(Bounce {
                slot,
                by,
                ask,
                to: to.clone(),
            });
            if let Some(pause) = redirect_backoff(redirects) {
                if self.retry_budget.is_zero() {
                    return frame;
                }
                let elapsed = redirected_at.elapsed();
                if elapsed >= self.retry_budget {
                    return bounces.give_up(redirects, elapsed);
                }
                // The nodes disagree about the slot: ask for the map again (the requests that
                // come next may then go right at once) and give the nodes time to agree.
                self.request_refresh();
                tokio::time::sleep(pause.min(self.retry_budget - elapsed)).await;
            }
            addr = Some(to);
            asking = ask;
        }
    }

    /// Records what a MOVED said, so that the next request for the slot goes right at once.
    /// Nothing to do when the map says so already (the map is copied to be changed).
    fn learn_owner(&self, slot: u16, addr: &str) {
        let Some((host, port)) = addr.rsplit_once(':') else {
            return;
        };
        let Ok(port) = port.parse() else {
            return;
        };
        let owner =
            topology::NodeAddr::new(host.trim_start_matches('[').trim_end_matches(']'), port);
        let current = self.map();
        if current.owner(slot) == Some(&owner) {
            return;
        }
        let mut map = (*current).clone();
        map.set_owner(slot, owner);
        self.set_map(map);
    }

    /// Reads the topology from the known primaries first, then the seeds.
    async fn refresh_now(&self) {
        let mut sources: Vec<String> = self.primaries();
        for seed in &self.seeds {
            if !sources.contains(seed) {
                sources.push(seed.clone());
            }
        }
        match topology::discover(&sources, &self.template).await {
            Ok(map) => {
                if let Some(m) = metrics::get() {
                    m.slot_map_refreshed();
                }
                let changed = *self.map() != map;
                if changed {
                    tracing::info!(
                        primaries = map.primaries().len(),
                        slots = map.assigned_slots(),
                        "cluster topology changed"
                    );
                }
                self.set_map(map);
                // A new node may run another Redis version (a rolling upgrade): read its
                // commands again. Also when the first reading failed.
                if changed || self.routing().learned_commands() == 0 {
                    self.learn_commands().await;
                }
                for pool in &self.pool {
                    pool.retain(|_, conn| conn.is_alive());
                }
            }
            Err(e) => tracing::warn!(error = %e, "cluster topology refresh failed"),
        }
    }
}

fn count_redirect(kind: metrics::Redirect) {
    if let Some(m) = metrics::get() {
        m.redirect(kind);
    }
}

/// Reads the topology on the timer and when asked, never more often than [`MIN_REFRESH_GAP`].
async fn refresher(cluster: std::sync::Weak<Cluster>, refresh: Arc<Notify>) {
    loop {
        let _ = tokio::time::timeout(REFRESH_INTERVAL, refresh.notified()).await;
        let Some(strong) = cluster.upgrade() else {
            return;
        };
        strong.refresh_now().await;
        drop(strong);
        tokio::time::sleep(MIN_REFRESH_GAP).await;
    }
}

fn sorted_primaries(map: &SlotMap) -> Vec<String> {
    let mut primaries: Vec<String> = map.primaries().into_iter().map(String::from).collect();
    primaries.sort();
    primaries
}

/// `host:port` (IPv6 in brackets) as a [`topology::NodeAddr`].
fn node_addr(addr: &str) -> Option<topology::NodeAddr> {
    let (host, port) = addr.rsplit_once(':')?;
    let port = port.parse().ok()?;
    Some(topology::NodeAddr::new(
        host.trim_start_matches('[').trim_end_matches(']'),
        port,
    ))
}

/// The pause before following redirection number `redirects` (1 for the first) of a request:
/// none for the first [`FREE_REDIRECTS`], then [`FIRST_REDIRECT_BACKOFF`] doubling with each
/// one up to [`MAX_REDIRECT_BACKOFF`].
fn redirect_backoff(redirects: u32) -> Option<Duration> {
    let beyond = redirects.checked_sub(FREE_REDIRECTS + 1)?;
    let pause = FIRST_REDIRECT_BACKOFF.saturating_mul(1u32 << beyond.min(16));
    Some(pause.min(MAX_REDIRECT_BACKOFF))
}

/// One redirection a request got: node `by` sent it to node `to`.
struct Bounce {
    slot: u16,
    by: String,
    ask: bool,
    to: String,
}

/// The last two redirections of a request, to name the nodes that disagree when the request
/// gives up. Built only once a request has been redirected.
#[derive(Default)]
struct Bounces {
    last: [Option<Bounce>; 2],
}

impl Bounces {
    fn push(&mut self, bounce: Bounce) {
        self.last.swap(0, 1);
        self.last[1] = Some(bounce);
    }

    /// The client's error when redirections still come after the budget: CLUSTERDOWN (see
    /// [`Cluster::follow_from`] for why), with the slot and which node sent the request where.
    fn give_up(&self, redirects: u32, elapsed: Duration) -> Bytes {
        let slot = self.last[1].as_ref().map_or(0, |b| b.slot);
        let said: Vec<String> = self
            .last
            .iter()
            .flatten()
            .map(|b| {
                let kind = if b.ask { "ASK" } else { "MOVED" };
                format!("{} answers {kind} {}", b.by, b.to)
            })
            .collect();
        write::error(&format!(
            "CLUSTERDOWN keyward: the nodes disagree about who serves slot {slot} ({}); still \
             redirected after {redirects} redirections in {} ms; the command was not run",
            said.join(", "),
            elapsed.as_millis()
        ))
    }
}

/// `ASKING` followed by the request, written together so nothing can come between them.
fn with_asking(request: &Bytes) -> Bytes {
    let mut buf = BytesMut::with_capacity(request.len() + 20);
    buf.extend_from_slice(b"*1\r\n$6\r\nASKING\r\n");
    buf.extend_from_slice(request);
    buf.freeze()
}

/// The cluster errors that mean "try elsewhere or later".
#[derive(Debug, PartialEq, Eq)]
enum Redirect {
    Moved { slot: u16, addr: String },
    Ask { slot: u16, addr: String },
    TryAgain,
    Down,
}

impl Redirect {
    fn parse(frame: &[u8]) -> Option<Redirect> {
        let line = frame.strip_prefix(b"-")?;
        let line = std::str::from_utf8(line).ok()?.trim_end();
        let mut words = line.split(' ');
        match words.next()? {
            "MOVED" => {
                let slot = words.next()?.parse().ok()?;
                let addr = words.next()?.to_string();
                Some(Redirect::Moved { slot, addr })
            }
            "ASK" => {
                let slot = words.next()?.parse().ok()?;
                let addr = words.next()?.to_string();
                Some(Redirect::Ask { slot, addr })
            }
            "TRYAGAIN" => Some(Redirect::TryAgain),
            "CLUSTERDOWN" => Some(Redirect::Down),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_recognised() {
        assert_eq!(
            Redirect::parse(b"-MOVED 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Moved {
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            Redirect::parse(b"-ASK 3999 127.0.0.1:6381\r\n"),
            Some(Redirect::Ask {
                slot: 3999,
                addr: "127.0.0.1:6381".into()
            })
        );
        assert_eq!(
            Redirect::parse(b"-TRYAGAIN Multiple keys request during rehashing of slot\r\n"),
            Some(Redirect::TryAgain)
        );
        assert_eq!(Redirect::parse(b"-ERR wrong type\r\n"), None);
        assert_eq!(Redirect::parse(b"+OK\r\n"), None);
    }

    #[test]
    fn redirections_pause_only_beyond_the_free_ones() {
        let pauses: Vec<Option<Duration>> = (1..=12).map(redirect_backoff).collect();
        let ms = |n| Some(Duration::from_millis(n));
        assert_eq!(
            pauses,
            vec![
                None,
                None,
                ms(1),
                ms(2),
                ms(4),
                ms(8),
                ms(16),
                ms(32),
                ms(64),
                ms(100),
                ms(100),
                ms(100)
            ]
        );
        assert_eq!(redirect_backoff(u32::MAX), ms(100));
    }

    #[test]
    fn giving_up_names_the_slot_and_the_nodes_that_disagree() {
        let mut bounces = Bounces::default();
        for (by, to) in [("a:1", "b:2"), ("b:2", "a:1"), ("a:1", "b:2")] {
            bounces.push(Bounce {
                slot: 13513,
                by: by.into(),
                ask: false,
                to: to.into(),
            });
        }
        let frame = bounces.give_up(67, Duration::from_millis(6001));
        assert_eq!(
            std::str::from_utf8(&frame).unwrap(),
            "-CLUSTERDOWN keyward: the nodes disagree about who serves slot 13513 (b:2 answers \
             MOVED a:1, a:1 answers MOVED b:2); still redirected after 67 redirections in 6001 \
             ms; the command was not run\r\n"
        );
    }

    #[test]
    fn asking_prefixes_the_request() {
        let r = with_asking(&Bytes::from_static(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"));
        assert_eq!(
            &r[..],
            b"*1\r\n$6\r\nASKING\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
        );
    }
}
