//! The settings model: the [`Config`] tree keyward runs with, assembled from the settings type
//! each subsystem owns ([`GuardConfig`] in the guard, the TLS settings in `tls`, [`User`] in
//! `auth`), and its built-in defaults.
//!
//! keyward builds its `Config` by laying the file and the flags over [`Config::default`] and
//! checking the result as a whole in [`merge`](fn@super::merge); the types here hold values and
//! check nothing themselves.

use std::fmt;
use std::time::Duration;

use crate::admin::AdminConfig;
use crate::auth::User;
use crate::guard::GuardConfig;
use crate::hooks::HookConfig;
use crate::http::HttpConfig;
use crate::sentinel::SentinelConfig;
use crate::tls::{ServerTlsConfig, UpstreamTlsConfig};

/// How keyward reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamMode {
    Standalone,
    Cluster,
    /// A primary and replicas under Redis Sentinel: `nodes` are the sentinels.
    Sentinel,
}

impl UpstreamMode {
    /// The spelling used in `proxy.toml`.
    pub fn name(self) -> &'static str {
        match self {
            UpstreamMode::Standalone => "standalone",
            UpstreamMode::Cluster => "cluster",
            UpstreamMode::Sentinel => "sentinel",
        }
    }
}

impl std::str::FromStr for UpstreamMode {
    type Err = String;

    /// Case-insensitive: `standalone` or `cluster`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("standalone") {
            Ok(UpstreamMode::Standalone)
        } else if s.eq_ignore_ascii_case("cluster") {
            Ok(UpstreamMode::Cluster)
        } else if s.eq_ignore_ascii_case("sentinel") {
            Ok(UpstreamMode::Sentinel)
        } else {
            Err(format!(
                "unknown mode `{s}`, expected \"standalone\", \"cluster\" or \"sentinel\""
            ))
        }
    }
}

/// How log lines are written (`[server] log_format`, `--log-format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event, `field=value` pairs after the message.
    #[default]
    Text,
    /// One JSON object per line, every field (the audit line's `client`, `user`, `command`,
    /// `keys`, `outcome`, `duration_us`) a member of it, for log pipelines that should not
    /// have to parse text.
    Json,
}

impl LogFormat {
    /// The spelling used in `proxy.toml` and `--log-format`.
    pub fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    /// Case-insensitive: `text` or `json`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("text") {
            Ok(LogFormat::Text)
        } else if s.eq_ignore_ascii_case("json") {
            Ok(LogFormat::Json)
        } else {
            Err(format!(
                "unknown log format `{s}`, expected \"text\" or \"json\""
            ))
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: String,
    pub max_clients: usize,
    pub shutdown_timeout: Duration,
    /// Worker threads. One keeps requests of different clients in the order they arrived
    /// (as Redis, itself single-threaded, sees them when clients talk to it directly).
    pub threads: usize,
    /// The default user's password (Redis's `requirepass`): clients must `AUTH` to keyward.
    pub password: Option<String>,
    /// Named users who may log in to keyward.
    pub users: Vec<User>,
    /// Accept clients without authentication on an address other than loopback.
    pub allow_unauthenticated: bool,
    /// Close a client that has sent nothing for this long and waits for nothing (Redis's
    /// `timeout`); zero keeps idle clients forever.
    pub idle_timeout: Duration,
    /// How log lines are written.
    pub log_format: LogFormat,
    /// What is logged (`[server] log_level`, `--log-level`): a level or a tracing filter; None
    /// leaves it to `RUST_LOG`, else `info`. Changed by a reload without a restart.
    pub log_level: Option<String>,
    /// The default user's delete scope (`[server] delete_prefixes`): with `password`, the keys
    /// it may delete; None: any.
    pub delete_prefixes: Option<Vec<String>>,
}

/// Written by hand so that `{:?}` of a configuration never shows a password.
impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("max_clients", &self.max_clients)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .field("threads", &self.threads)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("users", &self.users)
            .field("allow_unauthenticated", &self.allow_unauthenticated)
            .field("idle_timeout", &self.idle_timeout)
            .field("log_format", &self.log_format)
            .field("delete_prefixes", &self.delete_prefixes)
            .finish()
    }
}

impl ServerConfig {
    /// Everyone who may log in to keyward: the named users, and the default user when
    /// `password` is set. Empty when keyward does not authenticate clients.
    pub fn login_users(&self) -> Vec<User> {
        let mut users = self.users.clone();
        if let Some(password) = &self.password {
            users.push(User {
                name: crate::auth::DEFAULT_USER.into(),
                password_sha256: crate::auth::sha256(password.as_bytes()),
                delete_prefixes: self.delete_prefixes.clone(),
                ..User::default()
            });
        }
        users
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub mode: UpstreamMode,
    pub nodes: Vec<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    /// How long a request may wait for its reply from a Redis that has stopped answering
    /// before the connection is given up (blocking commands excepted); zero waits forever.
    pub reply_timeout: Duration,
    /// Standalone mode: stateless requests of all clients share one pipelined upstream
    /// connection; a client gets its own connection once it needs per-connection state. When
    /// false, every client gets its own upstream connection from the start.
    pub share_connections: bool,
    /// Sentinel mode: the master name and the sentinels' own credentials.
    pub sentinel: SentinelConfig,
}

/// Written by hand so that `{:?}` of a configuration never shows the password.
impl fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("mode", &self.mode)
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("reply_timeout", &self.reply_timeout)
            .field("share_connections", &self.share_connections)
            .field("sentinel_master", &self.sentinel.master)
            .field("sentinel_username", &self.sentinel.username)
            .field(
                "sentinel_password",
                &self.sentinel.password.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    pub max_bulk_len: usize,
    pub max_request_args: usize,
    pub max_query_buffer: usize,
    /// Requests one client may have waiting for their replies before keyward stops reading it.
    pub max_pending_replies: usize,
    /// Bytes of replies keyward may hold for one client that does not read them (shared and
    /// cluster modes); over it the client is closed. 0: no limit.
    pub max_client_output_bytes: usize,
}

/// `[server.tls]` and `[upstream.tls]`; both unset by default (plain TCP both ways).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// When set, `server.listen` speaks TLS only.
    pub server: Option<ServerTlsConfig>,
    /// When set, keyward connects to the upstream Redis with TLS (standalone mode only).
    pub upstream: Option<UpstreamTlsConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: ServerConfig,
    pub upstream: UpstreamConfig,
    pub guard: GuardConfig,
    pub limits: LimitsConfig,
    pub tls: TlsConfig,
    pub admin: AdminConfig,
    pub http: HttpConfig,
    /// `[[hooks]]`, checked: [`crate::hooks::HookSet::new`] accepts them.
    pub hooks: Vec<HookConfig>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerConfig {
                listen: "127.0.0.1:6380".into(),
                max_clients: 10_000,
                shutdown_timeout: Duration::from_secs(5),
                threads: 1,
                password: None,
                users: Vec::new(),
                allow_unauthenticated: false,
                idle_timeout: Duration::ZERO,
                log_format: LogFormat::Text,
                log_level: None,
                delete_prefixes: None,
            },
            upstream: UpstreamConfig {
                mode: UpstreamMode::Standalone,
                nodes: vec!["127.0.0.1:6379".into()],
                username: None,
                password: None,
                connect_timeout: Duration::from_secs(2),
                reply_timeout: Duration::from_secs(30),
                share_connections: false,
                sentinel: SentinelConfig::default(),
            },
            guard: GuardConfig::default(),
            limits: LimitsConfig {
                max_bulk_len: 512 * 1024 * 1024,
                max_request_args: 1024 * 1024,
                max_query_buffer: 1024 * 1024 * 1024,
                max_pending_replies: 1024,
                max_client_output_bytes: 256 * 1024 * 1024,
            },
            tls: TlsConfig::default(),
            admin: AdminConfig::default(),
            http: HttpConfig::default(),
            hooks: Vec::new(),
        }
    }
}
