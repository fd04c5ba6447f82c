//! Configuration: `proxy.toml`, command-line flags and environment variables, merged and validated.
//!
//! Three layers, highest first: a flag (or its `KEYWARD_*` environment variable), the file, the
//! built-in defaults in [`Config::default`]. The file is parsed into [`FileConfig`], whose fields
//! are all optional so that "not written" stays distinguishable from "written with the default
//! value"; [`merge`] lays the layers over each other and then validates the result once, as a
//! whole, remembering where every value came from so that an error can point at the file (with
//! line and column when the parser knows them), the flag, or the default that supplied it.
//!
//! Nothing here prints a password: [`Config::describe`], the `Debug` impls and the error messages
//! all keep it out.
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::auth::User;
pub use crate::guard::{DEFAULT_DENY_COMMANDS, DeleteCommand, GuardConfig};
pub use crate::tls::{ServerTlsConfig, UpstreamTlsConfig};

/// How keyward reaches Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamMode {
    Standalone,
    Cluster,
}

impl UpstreamMode {
    /// The spelling used in `proxy.toml`.
    pub fn name(self) -> &'static str {
        match self {
            UpstreamMode::Standalone => "standalone",
            UpstreamMode::Cluster => "cluster",
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
        } else {
            Err(format!(
                "unknown mode `{s}`, expected \"standalone\" or \"cluster\""
            ))
        }
    }
}

impl<'de> Deserialize<'de> for UpstreamMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for DeleteCommand {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
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
                bypass_deny_commands: false,
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
            },
            upstream: UpstreamConfig {
                mode: UpstreamMode::Standalone,
                nodes: vec!["127.0.0.1:6379".into()],
                username: None,
                password: None,
                connect_timeout: Duration::from_secs(2),
                reply_timeout: Duration::from_secs(30),
                share_connections: false,
            },
            guard: GuardConfig::default(),
            limits: LimitsConfig {
                max_bulk_len: 512 * 1024 * 1024,
                max_request_args: 1024 * 1024,
                max_query_buffer: 1024 * 1024 * 1024,
                max_pending_replies: 1024,
            },
            tls: TlsConfig::default(),
        }
    }
}

impl Config {
    /// The effective configuration as TOML text in the layout of `proxy.toml`, for `--check-config`
    /// and the start-up log. The password is never shown: it appears as `"<set>"`, or not at all
    /// when there is none.
    pub fn describe(&self) -> String {
        let Config {
            server,
            upstream,
            guard,
            limits,
            tls,
        } = self;
        let mut out = String::new();
        let mut line = |text: String| {
            out.push_str(&text);
            out.push('\n');
        };
        line("[server]".into());
        line(format!("listen = {}", quote(&server.listen)));
        line(format!("max_clients = {}", server.max_clients));
        line(format!(
            "shutdown_timeout_ms = {}",
            server.shutdown_timeout.as_millis()
        ));
        line(format!("threads = {}", server.threads));
        if server.password.is_some() {
            line(format!("password = {}", quote("<set>")));
        }
        line(format!(
            "allow_unauthenticated = {}",
            server.allow_unauthenticated
        ));
        line(format!(
            "idle_timeout_ms = {}",
            server.idle_timeout.as_millis()
        ));
        for user in &server.users {
            line(String::new());
            line("[[server.users]]".into());
            line(format!("name = {}", quote(&user.name)));
            line(format!("password_sha256 = {}", quote("<set>")));
            line(format!(
                "bypass_deny_commands = {}",
                user.bypass_deny_commands
            ));
        }
        if let Some(server_tls) = &tls.server {
            line(String::new());
            describe_server_tls(server_tls, &mut line);
        }
        line(String::new());
        line("[upstream]".into());
        line(format!("mode = {}", quote(upstream.mode.name())));
        line(format!("nodes = {}", quote_list(&upstream.nodes)));
        if let Some(username) = &upstream.username {
            line(format!("username = {}", quote(username)));
        }
        if upstream.password.is_some() {
            line(format!("password = {}", quote("<set>")));
        }
        line(format!(
            "connect_timeout_ms = {}",
            upstream.connect_timeout.as_millis()
        ));
        line(format!(
            "share_connections = {}",
            upstream.share_connections
        ));
        if let Some(upstream_tls) = &tls.upstream {
            line(String::new());
            describe_upstream_tls(upstream_tls, &mut line);
        }
        line(String::new());
        line("[guard]".into());
        line(format!("max_keys = {}", guard.max_keys));
        line(format!("wildcard_chars = {}", quote(&guard.wildcard_chars)));
        line(format!(
            "delete_command = {}",
            quote(guard.delete_command.name())
        ));
        line(format!(
            "deny_commands = {}",
            quote_list(&guard.deny_commands)
        ));
        line(String::new());
        line("[limits]".into());
        line(format!("max_bulk_len = {}", limits.max_bulk_len));
        line(format!("max_request_args = {}", limits.max_request_args));
        line(format!("max_query_buffer = {}", limits.max_query_buffer));
        line(format!(
            "max_pending_replies = {}",
            limits.max_pending_replies
        ));
        out
    }
}

fn describe_server_tls(tls: &ServerTlsConfig, line: &mut impl FnMut(String)) {
    line("[server.tls]".into());
    line(format!("cert_file = {}", quote_path(&tls.cert_file)));
    line(format!("key_file = {}", quote_path(&tls.key_file)));
    if let Some(path) = &tls.client_ca_file {
        line(format!("client_ca_file = {}", quote_path(path)));
    }
}

fn describe_upstream_tls(tls: &UpstreamTlsConfig, line: &mut impl FnMut(String)) {
    line("[upstream.tls]".into());
    line(format!("ca_file = {}", quote_path(&tls.ca_file)));
    if let Some(name) = &tls.server_name {
        line(format!("server_name = {}", quote(name)));
    }
    if let Some(path) = &tls.cert_file {
        line(format!("cert_file = {}", quote_path(path)));
    }
    if let Some(path) = &tls.key_file {
        line(format!("key_file = {}", quote_path(path)));
    }
}

fn quote_path(path: &Path) -> String {
    quote(&path.to_string_lossy())
}

/// A TOML basic string: double quotes, with `"`, `\` and control characters escaped.
fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn quote_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", items.join(", "))
}

// ---------------------------------------------------------------------------------------------
// The file as written: every key optional.
// ---------------------------------------------------------------------------------------------

/// `proxy.toml` as written. A key that is absent stays `None` and falls through to the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file this was read from, used to name it in error messages. Not a key in the file.
    #[serde(skip)]
    pub path: PathBuf,
    #[serde(default)]
    pub server: ServerFile,
    #[serde(default)]
    pub upstream: UpstreamFile,
    #[serde(default)]
    pub guard: GuardFile,
    #[serde(default)]
    pub limits: LimitsFile,
}

/// `[server]`
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerFile {
    pub listen: Option<String>,
    pub max_clients: Option<usize>,
    pub shutdown_timeout_ms: Option<u64>,
    pub threads: Option<usize>,
    pub password: Option<String>,
    pub users: Option<Vec<UserFile>>,
    pub allow_unauthenticated: Option<bool>,
    pub idle_timeout_ms: Option<u64>,
    pub tls: Option<ServerTlsFile>,
}

/// `[[server.users]]`
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    pub name: String,
    pub password_sha256: String,
    pub bypass_deny_commands: Option<bool>,
}

/// Written by hand so that `{:?}` never shows the password hash.
impl fmt::Debug for UserFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserFile")
            .field("name", &self.name)
            .field("password_sha256", &"<set>")
            .field("bypass_deny_commands", &self.bypass_deny_commands)
            .finish()
    }
}

/// Written by hand so that `{:?}` never shows the password.
impl fmt::Debug for ServerFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerFile")
            .field("listen", &self.listen)
            .field("max_clients", &self.max_clients)
            .field("shutdown_timeout_ms", &self.shutdown_timeout_ms)
            .field("threads", &self.threads)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("users", &self.users)
            .field("allow_unauthenticated", &self.allow_unauthenticated)
            .field("idle_timeout_ms", &self.idle_timeout_ms)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `[upstream]`
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFile {
    pub mode: Option<UpstreamMode>,
    pub nodes: Option<Vec<String>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout_ms: Option<u64>,
    pub reply_timeout_ms: Option<u64>,
    pub share_connections: Option<bool>,
    pub tls: Option<UpstreamTlsFile>,
}

/// Written by hand so that `{:?}` never shows the password.
impl fmt::Debug for UpstreamFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamFile")
            .field("mode", &self.mode)
            .field("nodes", &self.nodes)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<set>"))
            .field("connect_timeout_ms", &self.connect_timeout_ms)
            .field("reply_timeout_ms", &self.reply_timeout_ms)
            .field("share_connections", &self.share_connections)
            .field("tls", &self.tls)
            .finish()
    }
}

/// `[server.tls]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerTlsFile {
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
}

/// `[upstream.tls]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsFile {
    pub ca_file: Option<PathBuf>,
    pub server_name: Option<String>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

/// `[guard]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardFile {
    pub max_keys: Option<usize>,
    pub wildcard_chars: Option<String>,
    pub delete_command: Option<DeleteCommand>,
    pub deny_commands: Option<Vec<String>>,
}

/// `[limits]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_bulk_len: Option<usize>,
    pub max_request_args: Option<usize>,
    pub max_query_buffer: Option<usize>,
    pub max_pending_replies: Option<usize>,
}

/// Reads and parses a configuration file. Only the syntax and the types are checked here; the
/// values are checked by [`merge`], once the flags have been applied.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|err| {
        let message = format!("cannot read the configuration file: {err}");
        ConfigError::new(Origin::File(path.to_path_buf()), None, message, None)
    })?;
    FileConfig::parse(&text, path)
}

impl FileConfig {
    /// Parses `text` as the contents of the file at `path` (used only to name it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        match toml::from_str::<FileConfig>(text) {
            Ok(mut file) => {
                file.path = path.to_path_buf();
                Ok(file)
            }
            Err(err) => Err(ConfigError::from_toml(&err, text, path)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Flags and environment variables.
// ---------------------------------------------------------------------------------------------

/// keyward's command line. Every setting flag can also come from an environment variable; a flag
/// given on the command line wins over its variable, and both win over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Parser)]
#[command(
    name = "keyward",
    version,
    about = "A Redis-protocol proxy that guards deletes.",
    after_help = "Settings are taken from flags (or their environment variables) first, then from \
                  the configuration file, then from built-in defaults. \
                  Exit status: 0 after a clean shutdown or a valid --check-config, \
                  1 if the proxy fails while running, 2 for an invalid configuration or command line."
)]
pub struct Cli {
    /// Read settings from this TOML file; without it, ./proxy.toml is read if it exists, and
    /// built-in defaults are used otherwise.
    #[arg(long, value_name = "FILE", env = "KEYWARD_CONFIG")]
    pub config: Option<PathBuf>,

    /// Accept client connections on this address (IP:PORT or HOST:PORT), overriding
    /// server.listen.
    #[arg(long, value_name = "ADDR", env = "KEYWARD_LISTEN")]
    pub listen: Option<String>,

    /// Forward commands to this Redis server (HOST:PORT); repeat the flag or separate addresses
    /// with commas to give several, which replace upstream.nodes.
    #[arg(
        long,
        value_name = "HOST:PORT",
        env = "KEYWARD_UPSTREAM",
        value_delimiter = ','
    )]
    pub upstream: Vec<String>,

    /// Treat the upstream nodes as seeds of a Redis Cluster (upstream.mode = "cluster"): keyward
    /// reads the slot map from them and routes every command to the node that owns its keys.
    #[arg(long, env = "KEYWARD_CLUSTER")]
    pub cluster: bool,

    /// Refuse a delete that names more than N keys, overriding guard.max_keys.
    #[arg(long, value_name = "N", env = "KEYWARD_MAX_KEYS")]
    pub max_keys: Option<usize>,

    /// Log at this level (error, warn, info, debug, trace or off) or with a tracing filter such
    /// as "keyward=debug,info"; without it RUST_LOG is used, and "info" if that is unset too.
    #[arg(long, value_name = "LEVEL", env = "KEYWARD_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Check FILE together with the other flags, print the effective configuration and exit with
    /// status 0 if it is valid or 2 if it is not; FILE is used instead of --config.
    #[arg(long, value_name = "FILE")]
    pub check_config: Option<PathBuf>,
}

/// The configuration file `cli` selects: `--check-config`, else `--config`, else `./proxy.toml`
/// when it exists, else none (built-in defaults).
pub fn config_file(cli: &Cli) -> Option<PathBuf> {
    if let Some(path) = cli.check_config.as_ref().or(cli.config.as_ref()) {
        return Some(path.clone());
    }
    let local = Path::new("proxy.toml");
    local.exists().then(|| local.to_path_buf())
}

/// Everything the command line asks for: loads the file [`config_file`] selects, lays the flags
/// over it and validates the result.
pub fn resolve(cli: &Cli) -> Result<Config, ConfigError> {
    let file = config_file(cli).map(|path| load_file(&path)).transpose()?;
    merge(file.as_ref(), cli)
}

/// Checks a `--log-level` value. A bare word must be a level: tracing would otherwise take a
/// misspelt level such as `verbose` for the name of a module and silently log nothing.
pub fn check_log_level(level: &str) -> Result<(), ConfigError> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let error = |message: String| {
        let origin = Origin::flag("--log-level", "KEYWARD_LOG_LEVEL");
        ConfigError::new(origin, None, message, None)
    };
    if level.trim().is_empty() {
        return Err(error("the log level is empty".into()));
    }
    for directive in level.split(',') {
        let word = directive.trim();
        let is_bare_word = !word.contains(['=', '[', ':']);
        if is_bare_word && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word)) {
            return Err(error(format!(
                "unknown log level `{word}`, expected one of {} or a filter such as \
                 \"keyward=debug,info\"",
                LEVELS.join(", ")
            )));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .map(|_| ())
        .map_err(|err| error(format!("invalid log filter `{level}`: {err}")))
}

// ---------------------------------------------------------------------------------------------
// Merge and validation.
// ---------------------------------------------------------------------------------------------

const SERVER_LISTEN: &str = "server.listen";
const SERVER_MAX_CLIENTS: &str = "server.max_clients";
const SERVER_SHUTDOWN_TIMEOUT: &str = "server.shutdown_timeout_ms";
const SERVER_THREADS: &str = "server.threads";
const SERVER_PASSWORD: &str = "server.password";
const SERVER_USERS: &str = "server.users";
const SERVER_ALLOW_UNAUTHENTICATED: &str = "server.allow_unauthenticated";
const SERVER_IDLE_TIMEOUT: &str = "server.idle_timeout_ms";
const UPSTREAM_MODE: &str = "upstream.mode";
const UPSTREAM_NODES: &str = "upstream.nodes";
const UPSTREAM_USERNAME: &str = "upstream.username";
const UPSTREAM_PASSWORD: &str = "upstream.password";
const UPSTREAM_CONNECT_TIMEOUT: &str = "upstream.connect_timeout_ms";
const UPSTREAM_SHARE_CONNECTIONS: &str = "upstream.share_connections";
const UPSTREAM_REPLY_TIMEOUT: &str = "upstream.reply_timeout_ms";
const GUARD_MAX_KEYS: &str = "guard.max_keys";
const GUARD_WILDCARD_CHARS: &str = "guard.wildcard_chars";
const GUARD_DELETE_COMMAND: &str = "guard.delete_command";
const GUARD_DENY_COMMANDS: &str = "guard.deny_commands";
const LIMITS_MAX_BULK_LEN: &str = "limits.max_bulk_len";
const LIMITS_MAX_REQUEST_ARGS: &str = "limits.max_request_args";
const LIMITS_MAX_QUERY_BUFFER: &str = "limits.max_query_buffer";
const LIMITS_MAX_PENDING_REPLIES: &str = "limits.max_pending_replies";
const SERVER_TLS: &str = "server.tls";
const SERVER_TLS_CERT_FILE: &str = "server.tls.cert_file";
const SERVER_TLS_KEY_FILE: &str = "server.tls.key_file";
const SERVER_TLS_CLIENT_CA_FILE: &str = "server.tls.client_ca_file";
const UPSTREAM_TLS: &str = "upstream.tls";
const UPSTREAM_TLS_CA_FILE: &str = "upstream.tls.ca_file";
const UPSTREAM_TLS_SERVER_NAME: &str = "upstream.tls.server_name";
const UPSTREAM_TLS_CERT_FILE: &str = "upstream.tls.cert_file";
const UPSTREAM_TLS_KEY_FILE: &str = "upstream.tls.key_file";

/// Lays `file` and then the flags in `cli` over the defaults, and validates the result. Only the
/// setting flags of `cli` are used here; which file to read is [`resolve`]'s business.
pub fn merge(file: Option<&FileConfig>, cli: &Cli) -> Result<Config, ConfigError> {
    let mut config = Config::default();
    let mut origins = Origins::default();
    let c = &mut config;

    if let Some(file) = file {
        let mut set = origins.layer(Origin::File(file.path.clone()));
        let (s, u, g, l) = (&file.server, &file.upstream, &file.guard, &file.limits);
        let ms = |millis: Option<u64>| millis.map(Duration::from_millis);
        set.value(SERVER_LISTEN, &mut c.server.listen, s.listen.clone());
        set.value(SERVER_MAX_CLIENTS, &mut c.server.max_clients, s.max_clients);
        set.value(
            SERVER_SHUTDOWN_TIMEOUT,
            &mut c.server.shutdown_timeout,
            ms(s.shutdown_timeout_ms),
        );
        set.value(SERVER_THREADS, &mut c.server.threads, s.threads);
        set.value(
            SERVER_PASSWORD,
            &mut c.server.password,
            s.password.clone().map(Some),
        );
        if let Some(users) = &s.users {
            c.server.users = users_from_file(users).map_err(|message| {
                ConfigError::new(
                    Origin::File(file.path.clone()),
                    Some(SERVER_USERS.into()),
                    message,
                    None,
                )
            })?;
            set.origins.0.insert(SERVER_USERS, set.from.clone());
        }
        set.value(
            SERVER_ALLOW_UNAUTHENTICATED,
            &mut c.server.allow_unauthenticated,
            s.allow_unauthenticated,
        );
        set.value(
            SERVER_IDLE_TIMEOUT,
            &mut c.server.idle_timeout,
            ms(s.idle_timeout_ms),
        );
        set.value(UPSTREAM_MODE, &mut c.upstream.mode, u.mode);
        set.value(UPSTREAM_NODES, &mut c.upstream.nodes, u.nodes.clone());
        set.value(
            UPSTREAM_USERNAME,
            &mut c.upstream.username,
            u.username.clone().map(Some),
        );
        set.value(
            UPSTREAM_PASSWORD,
            &mut c.upstream.password,
            u.password.clone().map(Some),
        );
        set.value(
            UPSTREAM_CONNECT_TIMEOUT,
            &mut c.upstream.connect_timeout,
            ms(u.connect_timeout_ms),
        );
        set.value(
            UPSTREAM_REPLY_TIMEOUT,
            &mut c.upstream.reply_timeout,
            ms(u.reply_timeout_ms),
        );
        set.value(
            UPSTREAM_SHARE_CONNECTIONS,
            &mut c.upstream.share_connections,
            u.share_connections,
        );
        set.value(GUARD_MAX_KEYS, &mut c.guard.max_keys, g.max_keys);
        set.value(
            GUARD_WILDCARD_CHARS,
            &mut c.guard.wildcard_chars,
            g.wildcard_chars.clone(),
        );
        set.value(
            GUARD_DELETE_COMMAND,
            &mut c.guard.delete_command,
            g.delete_command,
        );
        set.value(
            GUARD_DENY_COMMANDS,
            &mut c.guard.deny_commands,
            g.deny_commands.clone(),
        );
        set.value(
            LIMITS_MAX_BULK_LEN,
            &mut c.limits.max_bulk_len,
            l.max_bulk_len,
        );
        set.value(
            LIMITS_MAX_REQUEST_ARGS,
            &mut c.limits.max_request_args,
            l.max_request_args,
        );
        set.value(
            LIMITS_MAX_QUERY_BUFFER,
            &mut c.limits.max_query_buffer,
            l.max_query_buffer,
        );
        set.value(
            LIMITS_MAX_PENDING_REPLIES,
            &mut c.limits.max_pending_replies,
            l.max_pending_replies,
        );
        c.tls = tls_from_file(file, &mut origins)?;
    }

    // Flags and their environment variables (clap reads both) come last, so they win.
    let mut set = origins.layer(Origin::flag("--listen", "KEYWARD_LISTEN"));
    set.value(SERVER_LISTEN, &mut c.server.listen, cli.listen.clone());
    let nodes = (!cli.upstream.is_empty()).then(|| cli.upstream.clone());
    let mut set = origins.layer(Origin::flag("--upstream", "KEYWARD_UPSTREAM"));
    set.value(UPSTREAM_NODES, &mut c.upstream.nodes, nodes);
    let mode = cli.cluster.then_some(UpstreamMode::Cluster);
    let mut set = origins.layer(Origin::flag("--cluster", "KEYWARD_CLUSTER"));
    set.value(UPSTREAM_MODE, &mut c.upstream.mode, mode);
    let mut set = origins.layer(Origin::flag("--max-keys", "KEYWARD_MAX_KEYS"));
    set.value(GUARD_MAX_KEYS, &mut c.guard.max_keys, cli.max_keys);

    validate(&mut config, &origins)?;
    validate_tls(&config, &origins)?;
    Ok(config)
}

/// `[server.tls]` and `[upstream.tls]` as written, with the keys each needs. Only the file sets
/// them (there are no TLS flags).
fn tls_from_file(file: &FileConfig, origins: &mut Origins) -> Result<TlsConfig, ConfigError> {
    let from = Origin::File(file.path.clone());
    let required = |key: &'static str, what: &str| {
        let message = format!("is required when the section is present: {what}");
        ConfigError::new(from.clone(), Some(key.to_string()), message, None)
    };
    let mut set = origins.layer(from.clone());
    let mut tls = TlsConfig::default();
    if let Some(t) = &file.server.tls {
        set.mark(SERVER_TLS);
        let cert_file = t.cert_file.clone().ok_or_else(|| {
            required(
                SERVER_TLS_CERT_FILE,
                "the PEM file with keyward's certificate (and any intermediates)",
            )
        })?;
        let key_file = t.key_file.clone().ok_or_else(|| {
            required(
                SERVER_TLS_KEY_FILE,
                "the PEM file with the private key of cert_file",
            )
        })?;
        let mut server = ServerTlsConfig {
            cert_file,
            key_file,
            client_ca_file: None,
        };
        set.mark(SERVER_TLS_CERT_FILE);
        set.mark(SERVER_TLS_KEY_FILE);
        set.value(
            SERVER_TLS_CLIENT_CA_FILE,
            &mut server.client_ca_file,
            t.client_ca_file.clone().map(Some),
        );
        tls.server = Some(server);
    }
    if let Some(t) = &file.upstream.tls {
        set.mark(UPSTREAM_TLS);
        let ca_file = t.ca_file.clone().ok_or_else(|| {
            required(
                UPSTREAM_TLS_CA_FILE,
                "the PEM file with the certificate authorities that may sign the Redis \
                 server's certificate (keyward trusts no others)",
            )
        })?;
        let mut upstream = UpstreamTlsConfig {
            ca_file,
            server_name: None,
            cert_file: None,
            key_file: None,
        };
        set.mark(UPSTREAM_TLS_CA_FILE);
        set.value(
            UPSTREAM_TLS_SERVER_NAME,
            &mut upstream.server_name,
            t.server_name.clone().map(Some),
        );
        set.value(
            UPSTREAM_TLS_CERT_FILE,
            &mut upstream.cert_file,
            t.cert_file.clone().map(Some),
        );
        set.value(
            UPSTREAM_TLS_KEY_FILE,
            &mut upstream.key_file,
            t.key_file.clone().map(Some),
        );
        tls.upstream = Some(upstream);
    }
    Ok(tls)
}

/// Reads every TLS file the configuration names and builds what keyward would build at
/// start-up, so that a bad file is an invalid configuration (exit status 2) naming its key.
fn validate_tls(config: &Config, origins: &Origins) -> Result<(), ConfigError> {
    if let Some(server) = &config.tls.server {
        crate::tls::ServerTls::new(server).map_err(|e| {
            let key = match e.field {
                "cert_file" => SERVER_TLS_CERT_FILE,
                "client_ca_file" => SERVER_TLS_CLIENT_CA_FILE,
                _ => SERVER_TLS_KEY_FILE,
            };
            origins.error(key, e.message)
        })?;
    }
    if let Some(upstream) = &config.tls.upstream {
        crate::tls::ClientTls::new(upstream, &config.upstream.nodes[0]).map_err(|e| {
            let key = match e.field {
                "ca_file" => UPSTREAM_TLS_CA_FILE,
                "server_name" => UPSTREAM_TLS_SERVER_NAME,
                "cert_file" => UPSTREAM_TLS_CERT_FILE,
                _ => UPSTREAM_TLS_KEY_FILE,
            };
            origins.error(key, e.message)
        })?;
    }
    Ok(())
}

/// Checks every value, and normalises `guard.deny_commands` (upper case, duplicates dropped).
fn validate(config: &mut Config, origins: &Origins) -> Result<(), ConfigError> {
    let fail = |key: &'static str, message: String| Err(origins.error(key, message));

    if let Err(message) = check_host_port(&config.server.listen, true) {
        return fail(SERVER_LISTEN, message);
    }
    if config.server.max_clients < 1 {
        return fail(SERVER_MAX_CLIENTS, "must be at least 1, got 0".into());
    }
    if !(1..=1024).contains(&config.server.threads) {
        return fail(
            SERVER_THREADS,
            format!("must be between 1 and 1024, got {}", config.server.threads),
        );
    }

    if config.server.password.as_deref() == Some("") {
        return fail(
            SERVER_PASSWORD,
            "is empty; remove the key to accept clients without a password".into(),
        );
    }
    if config.server.password.is_some()
        && config
            .server
            .users
            .iter()
            .any(|u| u.name == crate::auth::DEFAULT_USER)
    {
        return fail(
            SERVER_USERS,
            "defines the user \"default\" and server.password is set too; keep one of the two"
                .into(),
        );
    }
    let authenticates = !config.server.login_users().is_empty();
    if !authenticates
        && !config.server.allow_unauthenticated
        && !is_loopback_listen(&config.server.listen)
    {
        return fail(
            SERVER_LISTEN,
            format!(
                "{} is not a loopback address and keyward does not authenticate clients; set \
                 server.password or add [[server.users]], or set server.allow_unauthenticated = \
                 true to accept anyone who can reach this address",
                config.server.listen
            ),
        );
    }

    let upstream = &config.upstream;
    if upstream.nodes.is_empty() {
        return fail(UPSTREAM_NODES, "needs at least one HOST:PORT".into());
    }
    for node in &upstream.nodes {
        if let Err(message) = check_host_port(node, false) {
            return fail(UPSTREAM_NODES, message);
        }
    }
    if upstream.mode == UpstreamMode::Standalone && upstream.nodes.len() > 1 {
        return fail(
            UPSTREAM_NODES,
            format!(
                "standalone mode connects to exactly one node, got {} ({}); for a Redis Cluster \
                 set upstream.mode = \"cluster\" or pass --cluster",
                upstream.nodes.len(),
                upstream.nodes.join(", ")
            ),
        );
    }
    if upstream.username.as_deref() == Some("") {
        return fail(
            UPSTREAM_USERNAME,
            "is empty; remove the key to authenticate as the default user".into(),
        );
    }
    if upstream.password.as_deref() == Some("") {
        return fail(
            UPSTREAM_PASSWORD,
            "is empty; remove the key to connect without authentication".into(),
        );
    }
    if upstream.username.is_some() && upstream.password.is_none() {
        return fail(
            UPSTREAM_USERNAME,
            "is set but upstream.password is not; Redis needs both to authenticate a user".into(),
        );
    }
    if upstream.connect_timeout.is_zero() {
        return fail(UPSTREAM_CONNECT_TIMEOUT, "must be at least 1, got 0".into());
    }

    let guard = &mut config.guard;
    if guard.max_keys < 1 {
        return fail(GUARD_MAX_KEYS, "must be at least 1, got 0".into());
    }
    if !guard.wildcard_chars.is_ascii() {
        return fail(
            GUARD_WILDCARD_CHARS,
            format!(
                "must contain only ASCII characters, got {}",
                quote(&guard.wildcard_chars)
            ),
        );
    }
    let mut deny = Vec::with_capacity(guard.deny_commands.len());
    for entry in &guard.deny_commands {
        if let Err(message) = check_command_entry(entry) {
            return fail(GUARD_DENY_COMMANDS, message);
        }
        let entry = entry.to_ascii_uppercase();
        if !deny.contains(&entry) {
            deny.push(entry);
        }
    }
    guard.deny_commands = deny;

    let limits = &config.limits;
    for (key, value) in [
        (LIMITS_MAX_BULK_LEN, limits.max_bulk_len),
        (LIMITS_MAX_REQUEST_ARGS, limits.max_request_args),
        (LIMITS_MAX_QUERY_BUFFER, limits.max_query_buffer),
        (LIMITS_MAX_PENDING_REPLIES, limits.max_pending_replies),
    ] {
        if value < 1 {
            return fail(key, "must be at least 1, got 0".into());
        }
    }
    if limits.max_bulk_len > limits.max_query_buffer {
        // Blame whichever of the two was written by hand; the defaults agree with each other.
        let key = match origins.of(LIMITS_MAX_BULK_LEN) {
            Origin::Default => LIMITS_MAX_QUERY_BUFFER,
            _ => LIMITS_MAX_BULK_LEN,
        };
        return fail(
            key,
            format!(
                "max_bulk_len = {} (from {}) is larger than max_query_buffer = {} (from {}); \
                 one argument must fit in the query buffer",
                limits.max_bulk_len,
                origins.of(LIMITS_MAX_BULK_LEN),
                limits.max_query_buffer,
                origins.of(LIMITS_MAX_QUERY_BUFFER),
            ),
        );
    }
    Ok(())
}

/// Turns `[[server.users]]` entries into users, checking names and hashes.
fn users_from_file(users: &[UserFile]) -> Result<Vec<User>, String> {
    let mut out: Vec<User> = Vec::with_capacity(users.len());
    for (i, user) in users.iter().enumerate() {
        let which = format!("entry {} (name {})", i + 1, quote(&user.name));
        if user.name.is_empty() || user.name.bytes().any(|b| b <= b' ' || b > b'~') {
            return Err(format!(
                "{which}: the name must be non-empty printable ASCII without spaces"
            ));
        }
        if out.iter().any(|u| u.name == user.name) {
            return Err(format!("{which}: the name is used twice"));
        }
        let Some(password_sha256) = crate::auth::parse_sha256_hex(&user.password_sha256) else {
            return Err(format!(
                "{which}: password_sha256 must be 64 hexadecimal digits, the SHA-256 of the \
                 password (e.g. the output of: printf %s 'the password' | sha256sum)"
            ));
        };
        out.push(User {
            name: user.name.clone(),
            password_sha256,
            bypass_deny_commands: user.bypass_deny_commands.unwrap_or(false),
        });
    }
    Ok(out)
}

/// Whether a listen address only accepts connections from this machine. A host name other than
/// `localhost` counts as reachable from the network: it may resolve to anything.
fn is_loopback_listen(listen: &str) -> bool {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        return addr.ip().is_loopback();
    }
    listen
        .rsplit_once(':')
        .is_some_and(|(host, _)| host.eq_ignore_ascii_case("localhost"))
}

/// `HOST:PORT`, `IPv4:PORT` or `[IPv6]:PORT`. Port 0 ("any free port") only where `allow_port_zero`.
fn check_host_port(value: &str, allow_port_zero: bool) -> Result<(), String> {
    if value.is_empty() {
        return Err("an address is empty; expected HOST:PORT".into());
    }
    let port = if let Ok(addr) = value.parse::<SocketAddr>() {
        addr.port()
    } else {
        let Some((host, port)) = value.rsplit_once(':') else {
            return Err(format!("`{value}` is not HOST:PORT: the port is missing"));
        };
        if host.is_empty() {
            return Err(format!("`{value}` is not HOST:PORT: the host is missing"));
        }
        if host.contains(':') || host.starts_with('[') {
            return Err(format!(
                "`{value}` is not a valid address; write an IPv6 address in brackets, \
                 as in [::1]:6379"
            ));
        }
        let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
        if !host.chars().all(host_char) {
            return Err(format!(
                "`{value}` is not HOST:PORT: the host `{host}` contains characters not allowed \
                 in a host name"
            ));
        }
        port.parse::<u16>().map_err(|_| {
            format!("`{value}` is not HOST:PORT: the port `{port}` is not a number from 0 to 65535")
        })?
    };
    if port == 0 && !allow_port_zero {
        return Err(format!(
            "`{value}` has port 0, which cannot be connected to"
        ));
    }
    Ok(())
}

/// `NAME` or `NAME SUBCOMMAND`: one or two words of visible ASCII, one space between them.
fn check_command_entry(entry: &str) -> Result<(), String> {
    if entry.is_empty() {
        return Err("contains an empty entry".into());
    }
    if entry.trim() != entry {
        return Err(format!(
            "entry {} has leading or trailing spaces",
            quote(entry)
        ));
    }
    let words: Vec<&str> = entry.split(' ').collect();
    let well_formed = words.len() <= 2
        && words
            .iter()
            .all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_graphic()));
    if !well_formed {
        return Err(format!(
            "entry {} is not \"NAME\" or \"NAME SUBCOMMAND\" (visible ASCII, one space between)",
            quote(entry)
        ));
    }
    Ok(())
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
enum Origin {
    #[default]
    Default,
    File(PathBuf),
    Flag {
        flag: &'static str,
        env: &'static str,
    },
}

impl Origin {
    fn flag(flag: &'static str, env: &'static str) -> Origin {
        Origin::Flag { flag, env }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the built-in default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Flag { flag, env } => write!(f, "{flag} (or {env})"),
        }
    }
}

/// The origin of every value that did not come from the defaults.
#[derive(Default)]
struct Origins(HashMap<&'static str, Origin>);

impl Origins {
    /// Sets values from one source, recording it as their origin.
    fn layer(&mut self, from: Origin) -> Layer<'_> {
        Layer {
            origins: self,
            from,
        }
    }

    fn of(&self, key: &str) -> Origin {
        self.0.get(key).cloned().unwrap_or_default()
    }

    fn error(&self, key: &'static str, message: String) -> ConfigError {
        ConfigError::new(self.of(key), Some(key.to_string()), message, None)
    }
}

/// One source of values being laid over the configuration; see [`Origins::layer`].
struct Layer<'a> {
    origins: &'a mut Origins,
    from: Origin,
}

impl Layer<'_> {
    /// Records that `key` was written in this source (for keys whose values are taken apart).
    fn mark(&mut self, key: &'static str) {
        self.origins.0.insert(key, self.from.clone());
    }

    /// Overwrites `slot` with `value`, if there is one, and records where it came from.
    fn value<T>(&mut self, key: &'static str, slot: &mut T, value: Option<T>) {
        if let Some(value) = value {
            *slot = value;
            self.origins.0.insert(key, self.from.clone());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

/// A configuration that cannot be used. Its `Display` names where the bad value came from (the
/// file, with line and column when known, or the flag), the key, and what is wrong, in the form
/// `proxy.toml:12:12: guard.max_keys: must be at least 1, got 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(Box<ErrorDetail>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorDetail {
    origin: Origin,
    key: Option<String>,
    message: String,
    position: Option<Position>,
}

/// Where in the file a parse error is, with the offending line for context.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Position {
    line: usize,
    column: usize,
    /// The offending line with a caret under the error; `None` for lines holding a secret.
    excerpt: Option<String>,
}

impl ConfigError {
    fn new(
        origin: Origin,
        key: Option<String>,
        message: String,
        position: Option<Position>,
    ) -> ConfigError {
        ConfigError(Box::new(ErrorDetail {
            origin,
            key,
            message,
            position,
        }))
    }

    /// The dotted key at fault, such as `guard.max_keys`, when there is one.
    pub fn key(&self) -> Option<&str> {
        self.0.key.as_deref()
    }

    /// The configuration file at fault, when the bad value came from a file.
    pub fn file(&self) -> Option<&Path> {
        match &self.0.origin {
            Origin::File(path) => Some(path),
            _ => None,
        }
    }

    fn from_toml(err: &toml::de::Error, text: &str, path: &Path) -> ConfigError {
        let span = err.span();
        let key = span.as_ref().and_then(|span| key_at(text, span.start));
        let secret = key.as_deref().is_some_and(is_secret_key);
        let mut message = err.message().trim_end().to_string();
        if secret {
            // serde's messages quote the value ("invalid type: integer `1234`").
            message = "invalid value (not shown because it is a secret); expected a string".into();
        }
        let position = span.map(|span| position(text, span, secret));
        ConfigError::new(Origin::File(path.to_path_buf()), key, message, position)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ErrorDetail {
            origin,
            key,
            message,
            position,
        } = &*self.0;
        match (origin, position) {
            (Origin::File(path), Some(at)) => {
                write!(f, "{}:{}:{}", path.display(), at.line, at.column)?
            }
            (origin, _) => write!(f, "{origin}")?,
        }
        if let Some(key) = key {
            write!(f, ": {key}")?;
        }
        write!(f, ": {message}")?;
        if let Some(excerpt) = position.as_ref().and_then(|at| at.excerpt.as_ref()) {
            write!(f, "\n{excerpt}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

fn is_secret_key(key: &str) -> bool {
    key == UPSTREAM_PASSWORD || key == SERVER_PASSWORD || key.ends_with("password_sha256")
}

/// The dotted path of the key whose name or value covers byte `offset` of the TOML `text`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let (document, _errors) = toml::de::DeTable::parse_recoverable(text);
    let mut path = Vec::new();
    find_key(document.get_ref(), offset, &mut path).then(|| path.join("."))
}

fn find_key(table: &toml::de::DeTable<'_>, offset: usize, path: &mut Vec<String>) -> bool {
    for (key, value) in table {
        path.push(bare_or_quoted(key.get_ref()));
        if key.span().contains(&offset) {
            return true;
        }
        if let toml::de::DeValue::Table(inner) = value.get_ref()
            && find_key(inner, offset, path)
        {
            return true;
        }
        if value.span().contains(&offset) {
            return true;
        }
        path.pop();
    }
    false
}

fn bare_or_quoted(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { key.to_string() } else { quote(key) }
}

/// Line and column (1-based, in characters) of `span` in `text`, and the line with a caret.
fn position(text: &str, span: std::ops::Range<usize>, secret: bool) -> Position {
    let mut start = span.start.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let content = text[line_start..line_end].trim_end_matches('\r');
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    // A syntax error in the password line would otherwise print the password.
    let secret = secret || content.to_ascii_lowercase().contains("password");
    let excerpt = (!secret).then(|| {
        let end = span.end.clamp(start, line_end);
        let width = text.get(start..end).map_or(1, |s| s.chars().count()).max(1);
        let indent: String = text[line_start..start]
            .chars()
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        let gutter = " ".repeat(line.to_string().len());
        format!(
            "{gutter} |\n{line} | {content}\n{gutter} | {indent}{}",
            "^".repeat(width)
        )
    });
    Position {
        line,
        column,
        excerpt,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    fn file(text: &str) -> Result<FileConfig, ConfigError> {
        FileConfig::parse(text, Path::new("/etc/keyward/test.toml"))
    }

    fn merged(text: &str) -> Result<Config, ConfigError> {
        merge(Some(&file(text)?), &Cli::default())
    }

    /// Asserts that `text` is rejected, naming the file and `key`, and returns the message.
    fn rejected(text: &str, key: &str) -> String {
        let err = merged(text).expect_err("configuration should be rejected");
        let shown = err.to_string();
        assert_eq!(err.key(), Some(key), "{shown}");
        assert_eq!(
            err.file(),
            Some(Path::new("/etc/keyward/test.toml")),
            "{shown}"
        );
        assert!(shown.contains("/etc/keyward/test.toml"), "{shown}");
        assert!(shown.contains(key), "{shown}");
        shown
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_valid() {
        let config = merge(None, &Cli::default()).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.guard.max_keys, 1000);
        assert_eq!(config.upstream.nodes, ["127.0.0.1:6379"]);
        assert_eq!(
            config.guard.deny_commands,
            [
                "FLUSHALL",
                "FLUSHDB",
                "SWAPDB",
                "FUNCTION FLUSH",
                "REPLICAOF",
                "SLAVEOF",
                "SHUTDOWN",
                "DEBUG"
            ]
        );
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(merged("").unwrap(), Config::default());
    }

    #[test]
    fn repository_proxy_toml_holds_exactly_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
        let file = load_file(&path).unwrap();
        assert_eq!(
            merge(Some(&file), &Cli::default()).unwrap(),
            Config::default()
        );
        // Every key is written out, so the file documents all of them.
        assert!(file.server.listen.is_some() && file.server.max_clients.is_some());
        assert!(file.server.shutdown_timeout_ms.is_some());
        assert!(file.upstream.mode.is_some() && file.upstream.nodes.is_some());
        assert!(file.upstream.connect_timeout_ms.is_some());
        assert!(file.guard.max_keys.is_some() && file.guard.wildcard_chars.is_some());
        assert!(file.guard.delete_command.is_some() && file.guard.deny_commands.is_some());
        assert!(file.limits.max_bulk_len.is_some() && file.limits.max_request_args.is_some());
        assert!(file.limits.max_query_buffer.is_some());
    }

    #[test]
    fn file_values_override_defaults() {
        let config = merged(
            r#"
            [server]
            listen = "0.0.0.0:7000"
            max_clients = 5
            shutdown_timeout_ms = 250
            allow_unauthenticated = true
            idle_timeout_ms = 300000
            [upstream]
            nodes = ["redis.internal:6400"]
            username = "proxy"
            password = "hunter2"
            connect_timeout_ms = 100
            [guard]
            max_keys = 10
            wildcard_chars = ""
            delete_command = "DEL"
            deny_commands = []
            [limits]
            max_bulk_len = 1024
            max_request_args = 16
            max_query_buffer = 4096
            "#,
        )
        .unwrap();
        assert_eq!(config.server.listen, "0.0.0.0:7000");
        assert_eq!(config.server.max_clients, 5);
        assert_eq!(config.server.shutdown_timeout, Duration::from_millis(250));
        assert_eq!(config.upstream.nodes, ["redis.internal:6400"]);
        assert_eq!(config.upstream.username.as_deref(), Some("proxy"));
        assert_eq!(config.upstream.password.as_deref(), Some("hunter2"));
        assert_eq!(config.upstream.connect_timeout, Duration::from_millis(100));
        assert_eq!(config.guard.max_keys, 10);
        assert_eq!(config.guard.wildcard_chars, "");
        assert_eq!(config.guard.delete_command, DeleteCommand::Del);
        assert!(config.guard.deny_commands.is_empty());
        assert_eq!(config.limits.max_bulk_len, 1024);
        assert_eq!(config.limits.max_request_args, 16);
        assert_eq!(config.limits.max_query_buffer, 4096);
    }

    #[test]
    fn keys_not_written_keep_their_defaults() {
        let config = merged("[guard]\nmax_keys = 3\n").unwrap();
        let mut expected = Config::default();
        expected.guard.max_keys = 3;
        assert_eq!(config, expected);
    }

    #[test]
    fn flags_override_file_and_file_overrides_defaults() {
        let file = file(
            "[server]\nlisten = \"127.0.0.1:7000\"\nmax_clients = 7\n\
             [upstream]\nnodes = [\"file-host:6379\"]\n[guard]\nmax_keys = 50\n",
        )
        .unwrap();
        let cli = Cli {
            listen: Some("127.0.0.1:9000".into()),
            upstream: vec!["flag-host:6379".into()],
            max_keys: Some(7),
            ..Cli::default()
        };
        let config = merge(Some(&file), &cli).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:9000");
        assert_eq!(config.upstream.nodes, ["flag-host:6379"]);
        assert_eq!(config.guard.max_keys, 7);
        assert_eq!(config.server.max_clients, 7, "from the file");
        assert_eq!(config.limits, Config::default().limits, "from the defaults");

        let config = merge(Some(&file), &Cli::default()).unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:7000");
        assert_eq!(config.upstream.nodes, ["file-host:6379"]);
        assert_eq!(config.guard.max_keys, 50);
    }

    #[test]
    fn flag_errors_name_the_flag_and_the_key() {
        let cli = Cli {
            max_keys: Some(0),
            ..Cli::default()
        };
        let err = merge(Some(&file("[guard]\nmax_keys = 5\n").unwrap()), &cli).unwrap_err();
        assert_eq!(err.key(), Some("guard.max_keys"));
        assert_eq!(err.file(), None);
        let shown = err.to_string();
        assert!(
            shown.contains("--max-keys") && shown.contains("KEYWARD_MAX_KEYS"),
            "{shown}"
        );

        let cli = Cli {
            upstream: vec!["redis:6379".into(), "".into()],
            ..Cli::default()
        };
        let shown = merge(None, &cli).unwrap_err().to_string();
        assert!(
            shown.contains("--upstream") && shown.contains("upstream.nodes"),
            "{shown}"
        );
    }

    #[test]
    fn upstream_flag_repeated_or_comma_separated() {
        let cli =
            Cli::try_parse_from(["keyward", "--upstream", "a:1,b:2", "--upstream", "c:3"]).unwrap();
        assert_eq!(cli.upstream, ["a:1", "b:2", "c:3"]);
    }

    #[test]
    fn check_config_takes_the_place_of_config() {
        let cli =
            Cli::try_parse_from(["keyward", "--config", "a.toml", "--check-config", "b.toml"])
                .unwrap();
        assert_eq!(config_file(&cli), Some(PathBuf::from("b.toml")));
        let cli = Cli {
            config: Some("a.toml".into()),
            ..Cli::default()
        };
        assert_eq!(config_file(&cli), Some(PathBuf::from("a.toml")));
    }

    #[test]
    fn resolve_reports_a_missing_file() {
        let cli = Cli {
            config: Some("/nonexistent/keyward.toml".into()),
            ..Cli::default()
        };
        let err = resolve(&cli).unwrap_err();
        assert_eq!(err.file(), Some(Path::new("/nonexistent/keyward.toml")));
        assert!(
            err.to_string()
                .contains("/nonexistent/keyward.toml: cannot read")
        );
    }

    #[test]
    fn load_file_reads_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, "[guard]\nmax_keys = 0\n").unwrap();
        let file = load_file(&path).unwrap();
        assert_eq!(file.path, path);
        let err = merge(Some(&file), &Cli::default()).unwrap_err();
        assert_eq!(err.file(), Some(path.as_path()));
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn unknown_key_is_rejected_by_name() {
        let shown = rejected("[guard]\nmax_keys = 5\nmax_kyes = 6\n", "guard.max_kyes");
        assert!(
            shown.starts_with("/etc/keyward/test.toml:3:1: guard.max_kyes: "),
            "{shown}"
        );
        assert!(shown.contains("unknown field `max_kyes`"), "{shown}");
        assert!(shown.contains("3 | max_kyes = 6"), "{shown}");
    }

    #[test]
    fn unknown_section_is_rejected_by_name() {
        let shown = rejected("[gaurd]\nmax_keys = 5\n", "gaurd");
        assert!(shown.contains("unknown field `gaurd`"), "{shown}");
        rejected("path = \"/tmp\"\n", "path");
    }

    #[test]
    fn unknown_key_in_dotted_or_inline_form_is_named() {
        rejected("guard.colour = 1\n", "guard.colour");
        rejected(
            "server = { listen = \"a:1\", bogus = true }\n",
            "server.bogus",
        );
    }

    #[test]
    fn wrong_type_is_rejected_with_line_and_key() {
        let shown = rejected("[guard]\n\nmax_keys = \"lots\"\n", "guard.max_keys");
        assert!(
            shown.starts_with("/etc/keyward/test.toml:3:12: guard.max_keys: "),
            "{shown}"
        );
        assert!(shown.contains("invalid type"), "{shown}");
        rejected("[upstream]\nnodes = \"a:1\"\n", "upstream.nodes");
        rejected("[upstream]\nnodes = [\"a:1\", 2]\n", "upstream.nodes");
        rejected("[server]\nmax_clients = -1\n", "server.max_clients");
        rejected(
            "[server]\nshutdown_timeout_ms = 1.5\n",
            "server.shutdown_timeout_ms",
        );
        rejected("guard = 3\n", "guard");
    }

    #[test]
    fn syntax_errors_name_the_file_and_line() {
        let err = file("[guard]\nmax_keys = = 5\n").unwrap_err();
        let shown = err.to_string();
        assert!(shown.starts_with("/etc/keyward/test.toml:2:"), "{shown}");
        let err = file("[guard]\nmax_keys = 1\nmax_keys = 2\n").unwrap_err();
        assert!(
            err.to_string().contains("/etc/keyward/test.toml:3:"),
            "{err}"
        );
    }

    #[test]
    fn delete_command_is_case_insensitive() {
        for (text, expected) in [
            ("unlink", DeleteCommand::Unlink),
            ("Unlink", DeleteCommand::Unlink),
            ("UNLINK", DeleteCommand::Unlink),
            ("del", DeleteCommand::Del),
            ("Del", DeleteCommand::Del),
        ] {
            let config = merged(&format!("[guard]\ndelete_command = \"{text}\"\n")).unwrap();
            assert_eq!(config.guard.delete_command, expected, "{text}");
        }
        let shown = rejected(
            "[guard]\ndelete_command = \"FLUSHALL\"\n",
            "guard.delete_command",
        );
        assert!(shown.contains("expected \"UNLINK\" or \"DEL\""), "{shown}");
    }

    #[test]
    fn threads_must_be_at_least_one() {
        rejected("[server]\nthreads = 0\n", "server.threads");
        assert_eq!(merged("[server]\nthreads = 4\n").unwrap().server.threads, 4);
    }

    #[test]
    fn mode_is_parsed() {
        let config = merged("[upstream]\nmode = \"Standalone\"\n").unwrap();
        assert_eq!(config.upstream.mode, UpstreamMode::Standalone);
        rejected("[upstream]\nmode = \"sentinel\"\n", "upstream.mode");
        let config = merged(
            "[upstream]\nmode = \"cluster\"\nnodes = [\"127.0.0.1:7000\", \"127.0.0.1:7001\"]\n",
        )
        .unwrap();
        assert_eq!(config.upstream.mode, UpstreamMode::Cluster);
        assert_eq!(config.upstream.nodes.len(), 2);
    }

    #[test]
    fn the_cluster_flag_selects_cluster_mode() {
        let cli = Cli {
            cluster: true,
            upstream: vec!["127.0.0.1:7000".into(), "127.0.0.1:7001".into()],
            ..Cli::default()
        };
        let config = merge(None, &cli).unwrap();
        assert_eq!(config.upstream.mode, UpstreamMode::Cluster);
        assert_eq!(config.upstream.nodes, ["127.0.0.1:7000", "127.0.0.1:7001"]);
    }

    #[test]
    fn listen_must_be_an_address() {
        for good in [
            "127.0.0.1:6380",
            "[::1]:6380",
            "localhost:6380",
            "0.0.0.0:0",
        ] {
            let text = format!("[server]\nlisten = \"{good}\"\nallow_unauthenticated = true\n");
            assert!(merged(&text).is_ok(), "{good}");
        }
        for bad in [
            "",
            "6380",
            "localhost",
            ":6380",
            "host:99999",
            "host:port",
            "::1:6380",
            "a b:1",
        ] {
            rejected(&format!("[server]\nlisten = \"{bad}\"\n"), "server.listen");
        }
    }

    #[test]
    fn nodes_must_be_host_port() {
        rejected("[upstream]\nnodes = []\n", "upstream.nodes");
        rejected("[upstream]\nnodes = [\"redis\"]\n", "upstream.nodes");
        rejected("[upstream]\nnodes = [\"redis:0\"]\n", "upstream.nodes");
        rejected("[upstream]\nnodes = [\"redis:65536\"]\n", "upstream.nodes");
        let shown = rejected("[upstream]\nnodes = [\"a:1\", \"b:2\"]\n", "upstream.nodes");
        assert!(shown.contains("exactly one node"), "{shown}");
        let config = merged("[upstream]\nnodes = [\"[::1]:6379\"]\n").unwrap();
        assert_eq!(config.upstream.nodes, ["[::1]:6379"]);
    }

    #[test]
    fn credentials_are_checked() {
        rejected("[upstream]\nusername = \"app\"\n", "upstream.username");
        rejected(
            "[upstream]\nusername = \"\"\npassword = \"x\"\n",
            "upstream.username",
        );
        rejected("[upstream]\npassword = \"\"\n", "upstream.password");
        assert!(merged("[upstream]\npassword = \"x\"\n").is_ok());
    }

    #[test]
    fn numbers_must_be_at_least_one() {
        rejected("[server]\nmax_clients = 0\n", "server.max_clients");
        rejected(
            "[upstream]\nconnect_timeout_ms = 0\n",
            "upstream.connect_timeout_ms",
        );
        let shown = rejected("[guard]\nmax_keys = 0\n", "guard.max_keys");
        assert!(shown.contains("must be at least 1"), "{shown}");
        rejected("[limits]\nmax_bulk_len = 0\n", "limits.max_bulk_len");
        rejected(
            "[limits]\nmax_request_args = 0\n",
            "limits.max_request_args",
        );
        rejected(
            "[limits]\nmax_query_buffer = 0\n",
            "limits.max_query_buffer",
        );
        assert!(merged("[server]\nshutdown_timeout_ms = 0\n").is_ok());
    }

    #[test]
    fn bulk_len_must_fit_in_the_query_buffer() {
        let shown = rejected(
            "[limits]\nmax_bulk_len = 2048\nmax_query_buffer = 1024\n",
            "limits.max_bulk_len",
        );
        assert!(shown.contains("is larger than max_query_buffer"), "{shown}");
        // Only the buffer was written: it is the one to blame.
        rejected(
            "[limits]\nmax_query_buffer = 1024\n",
            "limits.max_query_buffer",
        );
        assert!(merged("[limits]\nmax_bulk_len = 1024\nmax_query_buffer = 1024\n").is_ok());
    }

    #[test]
    fn wildcard_chars_may_be_empty_but_must_be_ascii() {
        assert_eq!(
            merged("[guard]\nwildcard_chars = \"\"\n")
                .unwrap()
                .guard
                .wildcard_chars,
            ""
        );
        rejected("[guard]\nwildcard_chars = \"*é\"\n", "guard.wildcard_chars");
    }

    #[test]
    fn deny_commands_are_checked_and_uppercased() {
        let config = merged(
            "[guard]\ndeny_commands = [\"flushall\", \"Config Set\", \"FT.DROPINDEX\", \"FLUSHALL\"]\n",
        )
        .unwrap();
        assert_eq!(
            config.guard.deny_commands,
            ["FLUSHALL", "CONFIG SET", "FT.DROPINDEX"]
        );
        for bad in [
            "",
            " FLUSHALL",
            "FLUSHALL ",
            "CONFIG  SET",
            "A B C",
            "CONFIG\tSET",
        ] {
            let text = format!("[guard]\ndeny_commands = [{}]\n", quote(bad));
            rejected(&text, "guard.deny_commands");
        }
    }

    #[test]
    fn network_listen_needs_client_authentication_or_an_explicit_opt_out() {
        let err = merged("[server]\nlisten = \"0.0.0.0:6380\"\n").unwrap_err();
        assert_eq!(err.key(), Some("server.listen"));
        assert!(err.to_string().contains("allow_unauthenticated"), "{err}");
        for ok in [
            "[server]\nlisten = \"0.0.0.0:6380\"\npassword = \"pw\"\n",
            "[server]\nlisten = \"0.0.0.0:6380\"\nallow_unauthenticated = true\n",
            "[server]\nlisten = \"[::1]:6380\"\n",
            "[server]\nlisten = \"localhost:6380\"\n",
        ] {
            assert!(merged(ok).is_ok(), "{ok}");
        }
        let hash = "a".repeat(64);
        let users = format!(
            "[server]\nlisten = \"10.0.0.1:6380\"\n[[server.users]]\nname = \"ops\"\n\
             password_sha256 = \"{hash}\"\nbypass_deny_commands = true\n"
        );
        let config = merged(&users).unwrap();
        assert_eq!(config.server.users.len(), 1);
        assert!(config.server.users[0].bypass_deny_commands);
    }

    #[test]
    fn users_are_checked() {
        let user = |name: &str, hash: &str| {
            format!("[[server.users]]\nname = \"{name}\"\npassword_sha256 = \"{hash}\"\n")
        };
        let good = "b".repeat(64);
        rejected(&user("ops", "abc"), "server.users");
        rejected(&user("has space", &good), "server.users");
        rejected(
            &format!("{}{}", user("ops", &good), user("ops", &good)),
            "server.users",
        );
        rejected(
            &format!("[server]\npassword = \"pw\"\n{}", user("default", &good)),
            "server.users",
        );
        rejected("[server]\npassword = \"\"\n", "server.password");
        let err = merged(&user("ops", "xyz")).unwrap_err().to_string();
        assert!(err.contains("sha256sum"), "{err}");
    }

    #[test]
    fn describe_hides_client_passwords() {
        let mut config = Config::default();
        config.server.password = Some("hunter2".into());
        config.server.users = vec![User {
            name: "ops".into(),
            password_sha256: crate::auth::sha256(b"opspass"),
            bypass_deny_commands: true,
        }];
        let text = config.describe();
        let hash: String = crate::auth::sha256(b"opspass")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(!text.contains("hunter2") && !text.contains(&hash), "{text}");
        assert!(text.contains("[[server.users]]\nname = \"ops\""), "{text}");
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("opspass"),
            "{debug}"
        );
    }

    #[test]
    fn describe_hides_the_password() {
        let mut config = Config::default();
        config.upstream.username = Some("proxy".into());
        config.upstream.password = Some("hunter2".into());
        let text = config.describe();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("password = \"<set>\""), "{text}");
        assert!(text.contains("username = \"proxy\""), "{text}");
        assert!(!format!("{config:?}").contains("hunter2"));

        let text = Config::default().describe();
        assert!(!text.contains("password"), "{text}");
        assert!(text.contains("max_keys = 1000\n"), "{text}");
    }

    #[test]
    fn describe_is_toml_that_reads_back_the_same() {
        let mut config = Config::default();
        config.guard.wildcard_chars = "*\"\\".into();
        config.guard.delete_command = DeleteCommand::Del;
        config.guard.deny_commands = vec!["CONFIG SET".into()];
        config.server.shutdown_timeout = Duration::from_millis(1234);
        let back = merged(&config.describe()).unwrap();
        assert_eq!(back, config);
    }

    #[test]
    fn password_errors_do_not_show_the_password() {
        let err = file("[upstream]\npassword = 123456789\n").unwrap_err();
        let shown = err.to_string();
        assert_eq!(err.key(), Some("upstream.password"));
        assert!(!shown.contains("123456789"), "{shown}");
        let shown = file("[upstream]\npassword = \"hunter2\n")
            .unwrap_err()
            .to_string();
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn log_levels_are_checked() {
        for good in [
            "info",
            "DEBUG",
            "off",
            "keyward=debug,info",
            "warn,keyward::session=trace",
        ] {
            assert!(check_log_level(good).is_ok(), "{good}");
        }
        for bad in ["verbose", "", "info,loud"] {
            let err = check_log_level(bad).unwrap_err();
            assert!(err.to_string().contains("--log-level"), "{err}");
        }
    }

    /// A self-signed certificate and its key as PEM files, kept alive by the directory; the
    /// certificate also serves as a CA file.
    fn pem_files() -> (tempfile::TempDir, String, String) {
        let dir = tempfile::tempdir().unwrap();
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        (dir, path(cert), path(key))
    }

    #[test]
    fn tls_sections_are_read_and_described() {
        let (_dir, cert, key) = pem_files();
        let config = merged(&format!(
            "[server.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nclient_ca_file = \"{cert}\"\n\
             [upstream.tls]\nca_file = \"{cert}\"\nserver_name = \"localhost\"\n\
             cert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
        ))
        .unwrap();
        let server = config.tls.server.as_ref().unwrap();
        assert_eq!(server.cert_file, PathBuf::from(&cert));
        assert_eq!(server.client_ca_file, Some(PathBuf::from(&cert)));
        let upstream = config.tls.upstream.as_ref().unwrap();
        assert_eq!(upstream.server_name.as_deref(), Some("localhost"));
        assert_eq!(upstream.key_file, Some(PathBuf::from(&key)));
        let described = config.describe();
        assert!(described.contains("[server.tls]") && described.contains("[upstream.tls]"));
        assert_eq!(merged(&described).unwrap(), config);
        // Without the sections: no TLS.
        assert_eq!(merged("").unwrap().tls, TlsConfig::default());
    }

    #[test]
    fn tls_sections_need_their_files() {
        let (_dir, cert, key) = pem_files();
        let shown = rejected(
            &format!("[server.tls]\nkey_file = \"{key}\"\n"),
            "server.tls.cert_file",
        );
        assert!(shown.contains("is required"), "{shown}");
        rejected(
            &format!("[server.tls]\ncert_file = \"{cert}\"\n"),
            "server.tls.key_file",
        );
        rejected(
            "[upstream.tls]\nserver_name = \"redis\"\n",
            "upstream.tls.ca_file",
        );
        rejected(
            &format!("[upstream.tls]\nca_file = \"{cert}\"\ncert_file = \"{cert}\"\n"),
            "upstream.tls.cert_file",
        );
        rejected(
            &format!("[upstream.tls]\nca_file = \"{cert}\"\nkey_file = \"{key}\"\n"),
            "upstream.tls.key_file",
        );
        rejected("[server.tls]\ncertfile = \"x\"\n", "server.tls.certfile");
    }

    #[test]
    fn tls_files_must_be_readable_and_hold_what_they_should() {
        let (dir, cert, key) = pem_files();
        let missing = dir
            .path()
            .join("missing.pem")
            .to_string_lossy()
            .into_owned();
        let shown = rejected(
            &format!("[server.tls]\ncert_file = \"{missing}\"\nkey_file = \"{key}\"\n"),
            "server.tls.cert_file",
        );
        assert!(
            shown.contains("cannot read") && shown.contains(&missing),
            "{shown}"
        );
        // A key where the certificate should be, and the other way round.
        let shown = rejected(
            &format!("[server.tls]\ncert_file = \"{key}\"\nkey_file = \"{key}\"\n"),
            "server.tls.cert_file",
        );
        assert!(shown.contains("holds no certificate"), "{shown}");
        let shown = rejected(
            &format!("[server.tls]\ncert_file = \"{cert}\"\nkey_file = \"{cert}\"\n"),
            "server.tls.key_file",
        );
        assert!(shown.contains("holds no private key"), "{shown}");
        rejected(
            &format!(
                "[server.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\nclient_ca_file = \"{missing}\"\n"
            ),
            "server.tls.client_ca_file",
        );
        rejected(
            &format!("[upstream.tls]\nca_file = \"{missing}\"\n"),
            "upstream.tls.ca_file",
        );
        let shown = rejected(
            &format!("[upstream.tls]\nca_file = \"{cert}\"\nserver_name = \"not a name\"\n"),
            "upstream.tls.server_name",
        );
        assert!(shown.contains("not a name"), "{shown}");
    }

    #[test]
    fn upstream_and_listener_tls_work_in_cluster_mode() {
        let (_dir, cert, _key) = pem_files();
        merged(&format!(
            "[upstream]\nmode = \"cluster\"\n[upstream.tls]\nca_file = \"{cert}\"\n"
        ))
        .unwrap();
        let (_dir, cert, key) = pem_files();
        merged(&format!(
            "[upstream]\nmode = \"cluster\"\n[server.tls]\ncert_file = \"{cert}\"\nkey_file = \"{key}\"\n"
        ))
        .unwrap();
    }
}
