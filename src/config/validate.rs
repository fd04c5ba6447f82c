//! Checks of the merged configuration, run once on the whole so that rules spanning several
//! settings (a network listener needs authentication, a bulk must fit in the query buffer) see
//! the final values. TLS files are read and built here as at start-up, so a bad file is an
//! invalid configuration rather than a failure at the first handshake.

use std::net::SocketAddr;

use super::error::{ConfigError, Origin};
use super::file::UserFile;
use super::keys::*;
use super::model::{Config, UpstreamMode};
use super::origins::Origins;
use super::quote::quote;
use crate::auth::User;

/// Reads every TLS file the configuration names and builds what keyward would build at
/// start-up, so that a bad file is an invalid configuration (exit status 2) naming its key.
pub(super) fn validate_tls(config: &Config, origins: &Origins) -> Result<(), ConfigError> {
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
pub(super) fn validate(config: &mut Config, origins: &Origins) -> Result<(), ConfigError> {
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

    if let Some(message) = config
        .server
        .log_level
        .as_deref()
        .and_then(super::cli::log_level_problem)
    {
        return fail(SERVER_LOG_LEVEL, message);
    }

    let admin = &config.admin;
    if admin.enabled() {
        if let Err(message) = check_host_port(&admin.listen, true) {
            return fail(ADMIN_LISTEN, message);
        }
        if admin.token_sha256.is_none() && !is_loopback_listen(&admin.listen) {
            return fail(
                ADMIN_TOKEN_SHA256,
                format!(
                    "is required because admin.listen = {} is not a loopback address: set it to \
                     the SHA-256 of a token (printf %s 'the token' | sha256sum), which requests \
                     then carry as `Authorization: Bearer <token>`",
                    quote(&admin.listen)
                ),
            );
        }
    }

    let http = &config.http;
    if http.enabled() {
        if let Err(message) = check_host_port(&http.listen, true) {
            return fail(HTTP_LISTEN, message);
        }
        if !authenticates
            && !config.server.allow_unauthenticated
            && !is_loopback_listen(&http.listen)
        {
            return fail(
                HTTP_LISTEN,
                format!(
                    "{} is not a loopback address and keyward does not authenticate clients; \
                     set server.password or add [[server.users]] (the HTTP API takes the same \
                     credentials), or set server.allow_unauthenticated = true",
                    http.listen
                ),
            );
        }
    }
    if http.max_body_bytes < 1024 {
        return fail(
            HTTP_MAX_BODY_BYTES,
            format!("must be at least 1024, got {}", http.max_body_bytes),
        );
    }
    if let Err(message) = crate::hooks::HookSet::new(&config.hooks) {
        return fail(HOOKS, message);
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
    if upstream.mode == UpstreamMode::Sentinel && upstream.sentinel.master.is_empty() {
        return fail(
            UPSTREAM_MODE,
            "is \"sentinel\" but upstream.sentinel_master is not set: the master name the \
             sentinels monitor (`sentinel monitor <name> ...` in their configuration), or pass \
             --sentinel NAME"
                .into(),
        );
    }
    if upstream.mode != UpstreamMode::Sentinel && !upstream.sentinel.master.is_empty() {
        return fail(
            UPSTREAM_SENTINEL_MASTER,
            "is set but upstream.mode is not \"sentinel\"; set mode = \"sentinel\" (nodes are \
             then the sentinels) or remove it"
                .into(),
        );
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
    if let Err(message) = check_prefixes(&guard.protected_prefixes) {
        return fail(GUARD_PROTECTED_PREFIXES, message);
    }
    if guard.max_deleted_keys_per_second == Some(0) {
        return fail(
            GUARD_MAX_DELETED_KEYS_PER_SECOND,
            "must be at least 1; remove it for no limit".into(),
        );
    }
    if let Some(prefixes) = &config.server.delete_prefixes
        && let Err(message) = check_prefixes(prefixes)
    {
        return fail(SERVER_DELETE_PREFIXES, message);
    }

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
pub(super) fn users_from_file(users: &[UserFile]) -> Result<Vec<User>, String> {
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
        if let Some(prefixes) = &user.delete_prefixes
            && let Err(message) = check_prefixes(prefixes)
        {
            return Err(format!("{which}: delete_prefixes {message}"));
        }
        if user.max_deleted_keys_per_second == Some(0) {
            return Err(format!(
                "{which}: max_deleted_keys_per_second must be at least 1 (remove it for no limit)"
            ));
        }
        out.push(User {
            name: user.name.clone(),
            password_sha256,
            bypass_deny_commands: user.bypass_deny_commands.unwrap_or(false),
            bypass_protected_prefixes: user.bypass_protected_prefixes.unwrap_or(false),
            delete_prefixes: user.delete_prefixes.clone(),
            max_deleted_keys_per_second: user.max_deleted_keys_per_second,
        });
    }
    Ok(out)
}

/// A list of key prefixes: none empty (an empty prefix would take in every key; to allow
/// every key, leave the setting out).
fn check_prefixes(prefixes: &[String]) -> Result<(), String> {
    if prefixes.iter().any(|p| p.is_empty()) {
        return Err("has an empty prefix, which would match every key; remove it".into());
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{merged, pem_files, rejected};
    use crate::config::{Cli, merge};

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
    fn threads_must_be_at_least_one() {
        rejected("[server]\nthreads = 0\n", "server.threads");
        assert_eq!(merged("[server]\nthreads = 4\n").unwrap().server.threads, 4);
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
