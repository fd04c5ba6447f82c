//! One client connection, from its first byte to its close, whatever keyward forwards to.
//!
//! Every session has the same front ([`front`]): it scans the client's bytes, applies the
//! login gate, answers what keyward answers itself (QUIT, the SYNC/PSYNC refusal), asks the
//! guard, starts the audit line, and keeps `CLIENT REPLY`, the idle timeout and the
//! `max_pending_replies` limit. What it admits goes to one of two drivers, chosen by the
//! [`Backend`] that `server` builds:
//!
//! - [`private`]: the client has an upstream connection of its own, and Redis's replies are
//!   passed on as a byte stream (pub/sub, MONITOR and RESP3 pushes included). The default
//!   standalone mode, and where a client of the other modes moves when it needs pub/sub or
//!   MONITOR.
//! - [`routed`]: requests are routed over pipelined connections shared by all clients (one
//!   standalone Redis with `share_connections = true`, or a Redis Cluster's nodes), and one
//!   ordered queue puts the replies back in request order.
//!
//! The drivers differ because their reply paths differ (a stream read from one socket, against
//! replies matched on connections many clients share), not because their clients do: anything
//! that concerns a client belongs in the front.

mod front;
mod hook_runs;
mod private;
mod routed;
mod shutdown;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::auth::ClientAuth;
use crate::cluster::Cluster;
use crate::guard::GuardPolicy;
use crate::hooks::HookSet;
use crate::net::Socket;
use crate::protocol::request::ScanLimits;
use crate::upstream::{UpstreamTarget, WarmPool};

pub use shutdown::{ReloadSignal, ShutdownSignal};

/// While a client is not handled for `max_pending_replies`, keyward still reads up to this much
/// of what it sends (without handling it), to notice a client that hangs up behind a blocked
/// command.
pub(crate) const PAUSED_READ_LIMIT: usize = 64 * 1024;

/// What every session shares, whatever its backend: settings prepared once at start-up.
#[derive(Debug)]
pub struct SessionContext {
    pub guard: Arc<GuardPolicy>,
    /// The delete rate buckets (`max_deleted_keys_per_second`), started afresh by a reload.
    pub rates: Arc<crate::rate_limit::DeleteRates>,
    pub limits: ScanLimits,
    /// Who may log in to keyward; `None`: keyward does not authenticate clients.
    pub auth: Option<Arc<ClientAuth>>,
    /// How long a closing session waits for replies still owed to its client.
    pub close_grace: Duration,
    /// Close a client idle this long (zero: never).
    pub idle_timeout: Duration,
    /// Requests a client may have waiting for replies before it stops being read. With shared
    /// connections, replies cannot be left in Redis for a client that does not read (that would
    /// stall every client), so this also bounds what keyward buffers for one client.
    pub max_pending_replies: usize,
    /// Reply bytes keyward may hold for a client that does not read them (0: no limit).
    pub max_client_output_bytes: usize,
    /// The invalidation hooks (`[[hooks]]`).
    pub hooks: Arc<HookSet>,
}

impl SessionContext {
    /// The rules keyward's own removals (HTTP, hooks) are checked against.
    pub fn rules(&self) -> crate::keyops::Rules {
        crate::keyops::Rules {
            guard: self.guard.clone(),
            rates: self.rates.clone(),
        }
    }
}

/// The [`SessionContext`] in force, replaced whole by a configuration reload.
///
/// A session keeps the context it read last and checks the generation once per read of its
/// client (a relaxed atomic load): requests read after a reload use the new settings, requests
/// already in flight finish under the old ones, and nobody waits on a lock on the request path
/// (the lock is taken only to pick up a new context, once per session per reload).
#[derive(Debug)]
pub struct Live {
    generation: std::sync::atomic::AtomicU64,
    current: std::sync::RwLock<Arc<SessionContext>>,
    /// Tells sessions that wait (clients logged in as a named user) that a reload happened.
    reloads: watch::Sender<u64>,
}

impl Live {
    pub fn new(ctx: SessionContext) -> Self {
        Live {
            generation: std::sync::atomic::AtomicU64::new(1),
            current: std::sync::RwLock::new(Arc::new(ctx)),
            reloads: watch::channel(1).0,
        }
    }

    /// A signal that fires at every reload.
    pub fn reload_signal(&self) -> ReloadSignal {
        ReloadSignal::new(self.reloads.subscribe())
    }

    /// The context in force and its generation.
    pub fn current(&self) -> (u64, Arc<SessionContext>) {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        (
            self.generation.load(std::sync::atomic::Ordering::Acquire),
            current.clone(),
        )
    }

    /// Puts `ctx` in force for every session's next read.
    pub fn replace(&self, ctx: SessionContext) {
        let mut current = self.current.write().unwrap_or_else(|e| e.into_inner());
        *current = Arc::new(ctx);
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel)
            + 1;
        drop(current);
        self.reloads.send_replace(generation);
    }

    /// Whether a reload happened since `generation`.
    pub fn changed(&self, generation: u64) -> bool {
        self.generation.load(std::sync::atomic::Ordering::Acquire) != generation
    }

    /// Replaces `ctx` with the context in force when a reload happened since `generation`;
    /// true when it did.
    pub fn refresh(&self, generation: &mut u64, ctx: &mut Arc<SessionContext>) -> bool {
        if self.generation.load(std::sync::atomic::Ordering::Acquire) == *generation {
            return false;
        }
        (*generation, *ctx) = self.current();
        true
    }
}

/// An upstream connection of a client's own: where it goes, and the connections kept ready
/// ahead of need, when keyward keeps some.
#[derive(Debug)]
pub struct PrivateUpstream {
    pub target: UpstreamTarget,
    pub warm: Option<Arc<WarmPool>>,
}

/// What sessions forward to.
#[derive(Clone)]
pub enum Backend {
    /// One standalone Redis, one upstream connection per client (the default).
    Private(Arc<PrivateUpstream>),
    /// One standalone Redis whose pipelined connection stateless requests of all clients share
    /// (`share_connections = true`); the first request that needs state of its own on the
    /// connection moves its client to a private connection from `own`, for good.
    Shared {
        redis: Arc<Cluster>,
        own: Arc<PrivateUpstream>,
    },
    /// A Redis Cluster: slot map, shared node connections, redirections, fan-out.
    Cluster(Arc<Cluster>),
}

impl Backend {
    /// What keyward's own key operations (the HTTP API, hooks) go over: the shared connections
    /// of the shared and cluster modes, and in the default mode a shared pipelined connection
    /// of their own to the same Redis, opened at first use.
    /// Sentinel mode: the primary the upstream connections follow.
    pub fn primary(&self) -> Option<Arc<crate::upstream::Primary>> {
        match self {
            Backend::Private(upstream) | Backend::Shared { own: upstream, .. } => {
                upstream.target.primary.clone()
            }
            Backend::Cluster(_) => None,
        }
    }

    pub fn key_ops(&self) -> Arc<crate::keyops::KeyOps> {
        let cluster = match self {
            Backend::Private(upstream) => Cluster::single(upstream.target.clone()),
            Backend::Shared { redis, .. } => redis.clone(),
            Backend::Cluster(cluster) => cluster.clone(),
        };
        crate::keyops::KeyOps::new(cluster)
    }
}

/// Serves one client until it leaves, the upstream connection is lost with state on it, or
/// keyward shuts down.
pub async fn run(
    stream: Socket,
    peer: SocketAddr,
    live: Arc<Live>,
    backend: Backend,
    key_ops: Arc<crate::keyops::KeyOps>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let (_, ctx) = live.current();
    let front = front::Front::new(peer, ctx.auth.as_deref(), key_ops);
    let shutdown = ShutdownSignal::new(shutdown);
    match backend {
        Backend::Private(upstream) => {
            private::run(
                stream,
                live,
                upstream,
                front,
                shutdown,
                Default::default(),
                None,
            )
            .await
        }
        Backend::Shared { redis, own } => {
            routed::run(
                stream,
                live,
                routed::Routing::Shared { redis, own },
                front,
                shutdown,
            )
            .await
        }
        Backend::Cluster(cluster) => {
            routed::run(
                stream,
                live,
                routed::Routing::Cluster(cluster),
                front,
                shutdown,
            )
            .await
        }
    }
    tracing::debug!(client = %peer, "session closed");
}
