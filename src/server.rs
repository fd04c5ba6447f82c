//! The listener: accepts clients up to the connection cap, runs a session for each, and shuts
//! down gracefully on SIGINT or SIGTERM.
//!
//! Shutdown order: stop accepting, tell every session to stop reading, let each one deliver
//! the replies it still owes (a TLS client's through its bridge, which must pass them on too;
//! a bounded wait, `[server] shutdown_timeout_ms`), then return.
//!
//! With `[server.tls]` every connection within `max_clients` first goes through a TLS handshake
//! in its own task (bounded by [`crate::tls::HANDSHAKE_TIMEOUT`], and counted against
//! `max_clients` meanwhile); a failed handshake closes that connection and is logged, and nobody
//! else notices. A connection over the cap is closed at once, without a handshake.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::FutureExt;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::auth::ClientAuth;
use crate::cluster::Cluster;
use crate::config::{Cli, Config, UpstreamMode};
use crate::guard::GuardPolicy;
use crate::hooks::HookSet;
use crate::net::{Bridge, Socket};
use crate::protocol::request::ScanLimits;
use crate::reload::Reloader;
use crate::session::{self, Backend, Live, PrivateUpstream, SessionContext};
use crate::tls::{ClientTls, ServerTls};
use crate::upstream::{UpstreamTarget, WarmPool};

/// Upstream connections kept open ahead of need for clients that get a connection of their own.
const WARM_CONNECTIONS: usize = 4;

/// Length of the queue of connections waiting to be accepted, as Redis's `tcp-backlog`: the
/// default of 128 makes bursts of new clients wait a second for a retransmitted SYN.
const LISTEN_BACKLOG: u32 = 511;

/// Runs the proxy until SIGINT or SIGTERM (a second signal cuts the wait for sessions short).
pub async fn run(config: Config, cli: Cli) -> std::io::Result<()> {
    raise_open_files_limit(&config);
    let listener = listen(&config.server.listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {}: {e}", config.server.listen),
        )
    })?;
    let server_tls = match &config.tls.server {
        None => "",
        Some(tls) if tls.client_ca_file.is_some() => " (TLS, client certificates required)",
        Some(_) => " (TLS)",
    };
    let upstream_tls = if config.tls.upstream.is_some() {
        " (TLS)"
    } else {
        ""
    };
    tracing::info!(
        "listening on {}{server_tls}, forwarding to {}{upstream_tls}",
        listener.local_addr()?,
        config.upstream.nodes.join(", ")
    );
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (signals_tx, signals_rx) = watch::channel(0u32);
    tokio::spawn(async move {
        loop {
            let name = tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            };
            let count = *signals_tx.borrow() + 1;
            if count == 1 {
                tracing::info!("{name} received, shutting down");
            } else {
                tracing::info!("{name} received again, closing remaining sessions now");
            }
            if signals_tx.send(count).is_err() {
                return;
            }
        }
    });
    serve(listener, config, signals_rx, Some(cli)).await
}

/// File descriptors keyward uses besides its clients' (standard streams, the listener, the
/// reactor, connections kept warm, topology reads, the spare), with room to spare (with TLS to
/// Redis, the shared connection and the 4 kept warm take 15).
const FD_OVERHEAD: libc::rlim_t = 64;

/// File descriptors one client takes: its connection, and in the default standalone mode its
/// own upstream connection (shared and cluster modes: more only while a client holds a private
/// connection for a transaction, a blocking command or pub/sub). A TLS connection takes 3: the
/// TCP connection and both ends of its bridge's Unix socket pair.
fn descriptors_per_client(config: &Config) -> libc::rlim_t {
    let connection = |tls: bool| if tls { 3 } else { 1 };
    let client = connection(config.tls.server.is_some());
    match config.upstream.mode {
        UpstreamMode::Standalone if !config.upstream.share_connections => {
            client + connection(config.tls.upstream.is_some())
        }
        _ => client,
    }
}

/// Raises the soft limit on open files as far as `max_clients` needs, up to the hard limit, as
/// Redis does for `maxclients`: the usual soft default of 1024 would otherwise stop keyward at a
/// few hundred clients, whatever `max_clients` says. When even the hard limit falls short, says
/// so at start-up, with the number to set: clients beyond what fits are refused.
fn raise_open_files_limit(config: &Config) {
    let per_client = descriptors_per_client(config);
    let max_clients = config.server.max_clients as libc::rlim_t;
    let wanted = max_clients
        .saturating_mul(per_client)
        .saturating_add(FD_OVERHEAD);
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write a correctly sized struct.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < wanted && limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: wanted.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
            tracing::info!(
                "open files limit raised from {before} to {}",
                limit.rlim_cur
            );
        }
    }
    let have = limit.rlim_cur;
    if have < wanted {
        let fit = have.saturating_sub(FD_OVERHEAD) / per_client;
        let refused = if config.tls.server.is_some() {
            "are closed"
        } else {
            "get \"max number of clients reached\""
        };
        tracing::warn!(
            "the open files limit is {have}: about {fit} clients fit, fewer than max_clients = \
             {max_clients}; clients beyond that {refused}; raise the hard limit to at least \
             {wanted} ({per_client} per client plus {FD_OVERHEAD}; ulimit -Hn, or LimitNOFILE= \
             in a systemd unit)"
        );
    }
}

/// Binds with Redis's backlog rather than the OS default.
async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for addr in tokio::net::lookup_host(addr).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket
            .bind(addr)
            .and_then(|()| socket.listen(LISTEN_BACKLOG))
        {
            Ok(listener) => return Ok(listener),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("the address resolves to nothing")))
}

/// Accepts clients until the first signal, then drains the sessions until they are done, the
/// shutdown timeout passes, or a second signal arrives.
/// `reload_from`: the command line keyward started with, which SIGHUP and `POST /reload` read the
/// configuration again from (None: no reloads).
pub async fn serve(
    listener: TcpListener,
    config: Config,
    mut signals: watch::Receiver<u32>,
    reload_from: Option<Cli>,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = watch::channel(false);
    if config.admin.enabled() {
        // Before the backend starts, so that what it counts at start-up is counted.
        crate::metrics::enable().config_loaded();
    }
    let live = Arc::new(Live::new(session_context(&config)));
    let backend = start_backend(&config).await?;
    // The client TLS set-up, replaced by a reload (certificate rotation); new handshakes use
    // the one in force.
    let tls = match &config.tls.server {
        Some(settings) => Some(Arc::new(std::sync::RwLock::new(
            ServerTls::new(settings)
                .map_err(|e| {
                    std::io::Error::other(format!("server.tls.{}: {}", e.field, e.message))
                })?
                .with_close_grace(config.server.shutdown_timeout),
        ))),
        None => None,
    };
    let reloader = reload_from.map(|cli| {
        Arc::new(Reloader::new(
            cli,
            config.clone(),
            live.clone(),
            session_context,
            tls.clone(),
        ))
    });
    if let Some(reloader) = &reloader {
        tokio::spawn(reload_on_sighup(reloader.clone()));
    }
    if config.admin.enabled() {
        let reload = reloader.clone().map(|r| r as Arc<dyn crate::admin::Reload>);
        let addr = crate::admin::start(&config.admin, config.describe(), &backend, reload).await?;
        tracing::info!(
            "admin listener on http://{addr} (/metrics, /healthz, /readyz, /config, POST /reload)"
        );
    }
    let key_ops = backend.key_ops();
    if let Some(primary) = backend.primary() {
        tokio::spawn(follow_failovers(primary, backend.clone(), key_ops.clone()));
    }
    if config.http.enabled() {
        let addr = crate::http::start(&config.http, live.clone(), key_ops.clone()).await?;
        let scheme = if config.http.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(
            "HTTP API on {scheme}://{addr} (/v1/keys/remove, /v1/keys/get, /v1/keys/set, /v1/hooks/NAME, /v1/openapi.json)"
        );
    }
    let clients = Arc::new(AtomicUsize::new(0));
    let max_clients = config.server.max_clients;
    // Every session holds a clone of `done_tx`; when all are dropped, `done_rx` yields None.
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let mut spare = SpareDescriptor::open();

    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = signals.wait_for(|&n| n >= 1) => break,
        };
        let accepted = match accepted {
            // Linux reports EMFILE before it looks at the backlog: no client need be waiting.
            Err(e) if is_out_of_descriptors(&e) && spare.release() => {
                // Accept with the freed descriptor at once, before any other task runs: if no
                // client is waiting, the spare is taken back before a session's upstream
                // connect can take it, which would leave the next client in the backlog with
                // no descriptor to be refused with (seen in CI). Unconstrained: a Pending
                // here must mean an empty backlog, not a spent cooperative budget.
                match tokio::task::coop::unconstrained(listener.accept()).now_or_never() {
                    Some(accepted) => accepted,
                    None => {
                        spare.reopen();
                        continue;
                    }
                }
            }
            accepted => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Some other failure (or out of descriptors with no spare left to give back):
                // keep serving the clients we have, and take the spare back when a
                // descriptor frees up.
                spare.reopen();
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if !spare.reopen() {
            // Out of file descriptors: this client was accepted with the spare descriptor only
            // to be told so, or on a TLS listener closed (left in the backlog, it would wait
            // for ever).
            tracing::warn!(
                client = %peer,
                "out of file descriptors, client refused; raise the open files limit (ulimit -n)"
            );
            if let Some(m) = crate::metrics::get() {
                m.client_rejected(crate::metrics::Rejection::Descriptors);
            }
            match &tls {
                None => refuse_now(stream),
                // Plain text would read as a broken TLS record; the close says enough.
                Some(_) => drop(stream),
            }
            continue;
        }
        if clients.fetch_add(1, Ordering::AcqRel) >= max_clients {
            clients.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(client = %peer, max_clients, "max number of clients reached");
            if let Some(m) = crate::metrics::get() {
                m.client_rejected(crate::metrics::Rejection::MaxClients);
            }
            match &tls {
                None => {
                    tokio::spawn(refuse(Socket::tcp(stream)));
                }
                // Closed at once, without the handshake that Redis's error text would need: a
                // handshake for every connection over the cap would hold a task and a
                // descriptor each, uncounted, for up to the handshake timeout.
                Some(_) => drop(stream),
            }
            continue;
        }
        let backend = backend.clone();
        let key_ops = key_ops.clone();
        let live = live.clone();
        let stop = stop_rx.clone();
        let clients = clients.clone();
        let done = done_tx.clone();
        let tls = tls
            .as_ref()
            .map(|tls| tls.read().unwrap_or_else(|e| e.into_inner()).clone());
        tokio::spawn(async move {
            let client = match &tls {
                None => Some((Socket::tcp(stream), None)),
                // Boxed: a TLS handshake's state is large, and inline it would make every
                // connection's task that large, TLS or not (measured: 1.5 KB per client).
                Some(tls) => Box::pin(handshake(tls, stream, peer, stop.clone()))
                    .await
                    .map(|(socket, bridge)| (socket, Some(bridge))),
            };
            if let Some((client, bridge)) = client {
                let metrics = crate::metrics::get();
                if let Some(m) = metrics {
                    m.client_connected();
                }
                session::run(client, peer, live, backend, key_ops, stop).await;
                if let Some(m) = metrics {
                    m.client_disconnected();
                }
                // A TLS client is still connected until its bridge has passed on the last
                // replies and closed the connection: it stays counted against max_clients, and
                // shutdown waits for it, until then.
                if let Some(bridge) = bridge {
                    bridge.finished().await;
                }
            }
            clients.fetch_sub(1, Ordering::AcqRel);
            drop(done);
        });
    }

    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    let open = clients.load(Ordering::Acquire);
    if open > 0 {
        tracing::info!(sessions = open, "waiting for sessions to finish");
    }
    let wait = config.server.shutdown_timeout;
    tokio::select! {
        _ = done_rx.recv() => {}
        _ = tokio::time::sleep(wait) => {
            tracing::warn!(
                sessions = clients.load(Ordering::Acquire),
                "shutdown timeout of {} ms reached, closing remaining sessions",
                wait.as_millis()
            );
        }
        _ = signals.wait_for(|&n| n >= 2) => {}
    }
    tracing::info!("keyward stopped");
    Ok(())
}

/// A client's TLS handshake: the session's socket and the bridge serving it; `None` when it
/// failed, timed out, or keyward began shutting down meanwhile. A client that connects and
/// leaves without a word (a port probe, a load balancer's health check) is logged at debug
/// level only, any other failure as a warning.
async fn handshake(
    tls: &ServerTls,
    stream: TcpStream,
    peer: SocketAddr,
    mut stop: watch::Receiver<bool>,
) -> Option<(Socket, Bridge)> {
    let result = tokio::select! {
        result = tls.accept(stream, peer.to_string()) => result,
        _ = stop.wait_for(|&stop| stop) => return None,
    };
    match result {
        Ok(socket) => Some(socket),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            tracing::debug!(client = %peer, "client left during the TLS handshake");
            None
        }
        Err(e) => {
            tracing::warn!(client = %peer, error = %e, "TLS handshake with a client failed");
            if let Some(m) = crate::metrics::get() {
                m.client_rejected(crate::metrics::Rejection::TlsHandshake);
            }
            None
        }
    }
}

/// Reloads the configuration on every SIGHUP (as nginx and twemproxy do).
async fn reload_on_sighup(reloader: Arc<Reloader>) {
    let Ok(mut hangup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: configuration reloads only by POST /reload");
        return;
    };
    while hangup.recv().await.is_some() {
        tracing::info!("SIGHUP received, reloading the configuration");
        let _ = reloader.reload();
    }
}

/// What every session shares, from the configuration.
fn session_context(config: &Config) -> SessionContext {
    SessionContext {
        guard: Arc::new(GuardPolicy::new(&config.guard)),
        rates: Arc::default(),
        limits: ScanLimits {
            max_bulk_len: config.limits.max_bulk_len,
            max_args: config.limits.max_request_args,
            max_query_buffer: config.limits.max_query_buffer,
        },
        auth: ClientAuth::new(config.server.login_users()).map(Arc::new),
        close_grace: config.server.shutdown_timeout,
        idle_timeout: config.server.idle_timeout,
        max_pending_replies: config.limits.max_pending_replies,
        max_client_output_bytes: config.limits.max_client_output_bytes,
        // Checked when the configuration was read.
        hooks: Arc::new(HookSet::new(&config.hooks).unwrap_or_else(|_| HookSet::empty())),
    }
}

/// Sentinel mode: when the primary changes, the connections that all clients share (and those
/// kept ready) are dropped, so that the next requests dial the new primary. Connections of
/// clients' own are left by their sessions, which watch the same change.
async fn follow_failovers(
    primary: Arc<crate::upstream::Primary>,
    backend: Backend,
    key_ops: Arc<crate::keyops::KeyOps>,
) {
    let mut changes = primary.subscribe();
    while changes.changed().await.is_ok() {
        key_ops.reset_connections();
        if let Backend::Shared { redis, own } = &backend {
            redis.reset_connections();
            if let Some(warm) = &own.warm {
                warm.forget_ready();
            }
        }
    }
}

/// The backend the configuration names: a private upstream connection per client, connections
/// shared by all clients, or a Redis Cluster.
async fn start_backend(config: &Config) -> std::io::Result<Backend> {
    let upstream = UpstreamTarget {
        addr: config.upstream.nodes[0].clone(),
        primary: None,
        username: config.upstream.username.clone(),
        password: config.upstream.password.clone(),
        connect_timeout: config.upstream.connect_timeout,
        reply_timeout: config.upstream.reply_timeout,
        resp3: false,
        tls: match &config.tls.upstream {
            Some(settings) => Some(
                ClientTls::new(settings, &config.upstream.nodes[0])
                    .map_err(|e| {
                        std::io::Error::other(format!("upstream.tls.{}: {}", e.field, e.message))
                    })?
                    .with_close_grace(config.server.shutdown_timeout),
            ),
            None => None,
        },
    };
    Ok(match config.upstream.mode {
        UpstreamMode::Standalone if config.upstream.share_connections => Backend::Shared {
            redis: Cluster::single(upstream.clone()),
            // Clients that move off the shared connection take one opened ahead of need, so
            // that the move costs no TCP handshake (during which another client's later
            // request could overtake theirs).
            own: Arc::new(PrivateUpstream {
                warm: Some(WarmPool::start(upstream.clone(), WARM_CONNECTIONS)),
                target: upstream,
            }),
        },
        // Without sharing, every client connects as it arrives, as it would to Redis: Redis
        // then counts exactly the clients it would count without keyward.
        UpstreamMode::Standalone => Backend::Private(Arc::new(PrivateUpstream {
            target: upstream,
            warm: None,
        })),
        UpstreamMode::Sentinel => {
            let primary = crate::sentinel::start(
                config.upstream.nodes.clone(),
                config.upstream.sentinel.clone(),
                upstream.clone(),
            )
            .await;
            match primary.current() {
                Some(addr) => tracing::info!(
                    "primary of '{}' is {addr}, as the sentinels say",
                    primary.name
                ),
                None => tracing::warn!("{}", primary.unknown()),
            }
            // Every connection to "the upstream" dials the primary's address now.
            let target = UpstreamTarget {
                primary: Some(primary),
                ..upstream
            };
            if config.upstream.share_connections {
                Backend::Shared {
                    redis: Cluster::single(target.clone()),
                    own: Arc::new(PrivateUpstream {
                        warm: Some(WarmPool::start(target.clone(), WARM_CONNECTIONS)),
                        target,
                    }),
                }
            } else {
                Backend::Private(Arc::new(PrivateUpstream { target, warm: None }))
            }
        }
        UpstreamMode::Cluster => {
            let cluster = Cluster::start(config.upstream.nodes.clone(), upstream)
                .await
                .map_err(|e| std::io::Error::other(format!("cannot start in cluster mode: {e}")))?;
            Backend::Cluster(cluster)
        }
    })
}

/// A descriptor held in reserve (on /dev/null) for the moment keyward runs out of them.
///
/// When the process has no file descriptor left, `accept` fails with EMFILE (or ENFILE for the
/// whole system) and the client stays in the listen backlog: connected as far as it can tell,
/// and never answered. Giving the spare back lets keyward accept that client and refuse it with
/// an error, as Redis does once it reaches the number of clients its descriptors allow.
struct SpareDescriptor(Option<std::fs::File>);

impl SpareDescriptor {
    fn open() -> Self {
        SpareDescriptor(std::fs::File::open("/dev/null").ok())
    }

    /// Closes the spare; false when there was none to close.
    fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Makes sure the spare is held again; false when no descriptor is free for it.
    fn reopen(&mut self) -> bool {
        if self.0.is_none() {
            *self = SpareDescriptor::open();
        }
        self.0.is_some()
    }
}

fn is_out_of_descriptors(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// Refuses a plain-TCP client at once, without a task: its descriptor is needed back before
/// the next accept. The reply is one small write into an empty socket buffer, so it does not
/// block; what the client already sent is read away first, so that closing sends a FIN, not a
/// reset that could discard the reply before the client reads it.
fn refuse_now(stream: TcpStream) {
    use std::io::{Read, Write};
    // A plain non-blocking socket: its reads and writes are system calls made now, whatever
    // the reactor has yet to learn about the new socket's readiness.
    let Ok(mut stream) = stream.into_std() else {
        return;
    };
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let _ = stream.write(MAX_CLIENTS_REACHED);
}

/// What Redis answers a client over `maxclients`.
const MAX_CLIENTS_REACHED: &[u8] = b"-ERR max number of clients reached\r\n";

/// Answers a client over the connection cap the way Redis does, then closes.
async fn refuse(mut stream: Socket) {
    let _ = stream.write_all(MAX_CLIENTS_REACHED).await;
    let _ = stream.shutdown().await;
}
