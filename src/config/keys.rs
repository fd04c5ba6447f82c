//! The dotted name of every setting, as written in `proxy.toml` (`server.listen`). Merge,
//! validation and error messages all name settings by these, so they are spelt once, here.

pub(super) const SERVER_LISTEN: &str = "server.listen";
pub(super) const SERVER_MAX_CLIENTS: &str = "server.max_clients";
pub(super) const SERVER_SHUTDOWN_TIMEOUT: &str = "server.shutdown_timeout_ms";
pub(super) const SERVER_THREADS: &str = "server.threads";
pub(super) const SERVER_PASSWORD: &str = "server.password";
pub(super) const SERVER_USERS: &str = "server.users";
pub(super) const SERVER_ALLOW_UNAUTHENTICATED: &str = "server.allow_unauthenticated";
pub(super) const SERVER_IDLE_TIMEOUT: &str = "server.idle_timeout_ms";
pub(super) const SERVER_LOG_FORMAT: &str = "server.log_format";
pub(super) const UPSTREAM_MODE: &str = "upstream.mode";
pub(super) const UPSTREAM_NODES: &str = "upstream.nodes";
pub(super) const UPSTREAM_USERNAME: &str = "upstream.username";
pub(super) const UPSTREAM_PASSWORD: &str = "upstream.password";
pub(super) const UPSTREAM_CONNECT_TIMEOUT: &str = "upstream.connect_timeout_ms";
pub(super) const UPSTREAM_SHARE_CONNECTIONS: &str = "upstream.share_connections";
pub(super) const UPSTREAM_REPLY_TIMEOUT: &str = "upstream.reply_timeout_ms";
pub(super) const GUARD_MODE: &str = "guard.mode";
pub(super) const GUARD_MAX_KEYS: &str = "guard.max_keys";
pub(super) const GUARD_WILDCARD_CHARS: &str = "guard.wildcard_chars";
pub(super) const GUARD_DELETE_COMMAND: &str = "guard.delete_command";
pub(super) const GUARD_DENY_COMMANDS: &str = "guard.deny_commands";
pub(super) const LIMITS_MAX_BULK_LEN: &str = "limits.max_bulk_len";
pub(super) const LIMITS_MAX_REQUEST_ARGS: &str = "limits.max_request_args";
pub(super) const LIMITS_MAX_QUERY_BUFFER: &str = "limits.max_query_buffer";
pub(super) const LIMITS_MAX_PENDING_REPLIES: &str = "limits.max_pending_replies";
pub(super) const SERVER_TLS: &str = "server.tls";
pub(super) const SERVER_TLS_CERT_FILE: &str = "server.tls.cert_file";
pub(super) const SERVER_TLS_KEY_FILE: &str = "server.tls.key_file";
pub(super) const SERVER_TLS_CLIENT_CA_FILE: &str = "server.tls.client_ca_file";
pub(super) const UPSTREAM_TLS: &str = "upstream.tls";
pub(super) const UPSTREAM_TLS_CA_FILE: &str = "upstream.tls.ca_file";
pub(super) const UPSTREAM_TLS_SERVER_NAME: &str = "upstream.tls.server_name";
pub(super) const UPSTREAM_TLS_CERT_FILE: &str = "upstream.tls.cert_file";
pub(super) const UPSTREAM_TLS_KEY_FILE: &str = "upstream.tls.key_file";
