//! Laying the layers over each other: built-in defaults, then the file, then the flags (or their
//! environment variables), remembering where every value came from; then one validation of the
//! whole.

use std::time::Duration;

use super::cli::{Cli, config_file};
use super::error::{ConfigError, Origin};
use super::file::{FileConfig, ServerTlsFile, load_file};
use super::keys::*;
use super::model::{Config, TlsConfig, UpstreamMode};
use super::origins::Origins;
use super::validate::{users_from_file, validate, validate_tls};
use crate::hooks::HookConfig;
use crate::tls::{ServerTlsConfig, UpstreamTlsConfig};

/// Everything the command line asks for: loads the file [`config_file`] selects, lays the flags
/// over it and validates the result.
pub fn resolve(cli: &Cli) -> Result<Config, ConfigError> {
    let file = config_file(cli).map(|path| load_file(&path)).transpose()?;
    merge(file.as_ref(), cli)
}

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
            set.mark(SERVER_USERS);
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
        set.value(SERVER_LOG_FORMAT, &mut c.server.log_format, s.log_format);
        set.value(
            SERVER_LOG_LEVEL,
            &mut c.server.log_level,
            s.log_level.clone().map(Some),
        );
        set.value(
            SERVER_DELETE_PREFIXES,
            &mut c.server.delete_prefixes,
            s.delete_prefixes.clone().map(Some),
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
        set.value(
            UPSTREAM_SENTINEL_MASTER,
            &mut c.upstream.sentinel.master,
            u.sentinel_master.clone(),
        );
        set.value(
            UPSTREAM_SENTINEL_USERNAME,
            &mut c.upstream.sentinel.username,
            u.sentinel_username.clone().map(Some),
        );
        set.value(
            UPSTREAM_SENTINEL_PASSWORD,
            &mut c.upstream.sentinel.password,
            u.sentinel_password.clone().map(Some),
        );
        set.value(GUARD_MODE, &mut c.guard.mode, g.mode);
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
            GUARD_PROTECTED_PREFIXES,
            &mut c.guard.protected_prefixes,
            g.protected_prefixes.clone(),
        );
        set.value(
            GUARD_MAX_DELETED_KEYS_PER_SECOND,
            &mut c.guard.max_deleted_keys_per_second,
            g.max_deleted_keys_per_second.map(Some),
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
        set.value(
            LIMITS_MAX_CLIENT_OUTPUT_BYTES,
            &mut c.limits.max_client_output_bytes,
            l.max_client_output_bytes,
        );
        set.value(ADMIN_LISTEN, &mut c.admin.listen, file.admin.listen.clone());
        if let Some(hex) = &file.admin.token_sha256 {
            let Some(hash) = crate::auth::parse_sha256_hex(hex) else {
                return Err(ConfigError::new(
                    Origin::File(file.path.clone()),
                    Some(ADMIN_TOKEN_SHA256.to_string()),
                    "must be 64 hexadecimal digits: the SHA-256 of the token \
                     (printf %s 'the token' | sha256sum)"
                        .into(),
                    None,
                ));
            };
            set.value(
                ADMIN_TOKEN_SHA256,
                &mut c.admin.token_sha256,
                Some(Some(hash)),
            );
        }
        c.tls = tls_from_file(file, &mut origins)?;
        let mut set = origins.layer(Origin::File(file.path.clone()));
        set.value(HTTP_LISTEN, &mut c.http.listen, file.http.listen.clone());
        set.value(
            HTTP_MAX_BODY_BYTES,
            &mut c.http.max_body_bytes,
            file.http.max_body_bytes,
        );
        if let Some(t) = &file.http.tls {
            c.http.tls = Some(server_tls_from_file(
                t,
                [
                    HTTP_TLS,
                    HTTP_TLS_CERT_FILE,
                    HTTP_TLS_KEY_FILE,
                    HTTP_TLS_CLIENT_CA_FILE,
                ],
                file,
                &mut origins,
            )?);
        }
        if let Some(hooks) = &file.hooks {
            c.hooks = hooks
                .iter()
                .map(|h| HookConfig {
                    name: h.name.clone(),
                    remove: h.remove.clone(),
                    on_write: h.on_write.clone(),
                    delay: Duration::from_millis(h.delay_ms),
                })
                .collect();
            origins.layer(Origin::File(file.path.clone())).mark(HOOKS);
        }
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
    if let Some(master) = &cli.sentinel {
        let mut set = origins.layer(Origin::flag("--sentinel", "KEYWARD_SENTINEL"));
        set.value(
            UPSTREAM_MODE,
            &mut c.upstream.mode,
            Some(UpstreamMode::Sentinel),
        );
        set.value(
            UPSTREAM_SENTINEL_MASTER,
            &mut c.upstream.sentinel.master,
            Some(master.clone()),
        );
    }
    let mut set = origins.layer(Origin::flag("--admin-listen", "KEYWARD_ADMIN_LISTEN"));
    set.value(ADMIN_LISTEN, &mut c.admin.listen, cli.admin_listen.clone());
    let mut set = origins.layer(Origin::flag("--http-listen", "KEYWARD_HTTP_LISTEN"));
    set.value(HTTP_LISTEN, &mut c.http.listen, cli.http_listen.clone());
    let mut set = origins.layer(Origin::flag("--max-keys", "KEYWARD_MAX_KEYS"));
    set.value(GUARD_MAX_KEYS, &mut c.guard.max_keys, cli.max_keys);
    let mut set = origins.layer(Origin::flag("--log-level", "KEYWARD_LOG_LEVEL"));
    set.value(
        SERVER_LOG_LEVEL,
        &mut c.server.log_level,
        cli.log_level.clone().map(Some),
    );
    let mut set = origins.layer(Origin::flag("--log-format", "KEYWARD_LOG_FORMAT"));
    set.value(SERVER_LOG_FORMAT, &mut c.server.log_format, cli.log_format);
    let mut set = origins.layer(Origin::flag("--guard-mode", "KEYWARD_GUARD_MODE"));
    set.value(GUARD_MODE, &mut c.guard.mode, cli.guard_mode);

    validate(&mut config, &origins)?;
    validate_tls(&config, &origins)?;
    Ok(config)
}

/// A TLS listener's section as written (`[server.tls]`, `[http.tls]`); `keys`: the section's
/// name and those of `cert_file`, `key_file` and `client_ca_file` in it.
fn server_tls_from_file(
    t: &ServerTlsFile,
    keys: [&'static str; 4],
    file: &FileConfig,
    origins: &mut Origins,
) -> Result<ServerTlsConfig, ConfigError> {
    let [section, cert_key, key_key, ca_key] = keys;
    let from = Origin::File(file.path.clone());
    let required = |key: &'static str, what: &str| {
        let message = format!("is required when the section is present: {what}");
        ConfigError::new(from.clone(), Some(key.to_string()), message, None)
    };
    let mut set = origins.layer(from.clone());
    set.mark(section);
    let cert_file = t.cert_file.clone().ok_or_else(|| {
        required(
            cert_key,
            "the PEM file with keyward's certificate (and any intermediates)",
        )
    })?;
    let key_file = t
        .key_file
        .clone()
        .ok_or_else(|| required(key_key, "the PEM file with the private key of cert_file"))?;
    let mut server = ServerTlsConfig {
        cert_file,
        key_file,
        client_ca_file: None,
    };
    set.mark(cert_key);
    set.mark(key_key);
    set.value(
        ca_key,
        &mut server.client_ca_file,
        t.client_ca_file.clone().map(Some),
    );
    Ok(server)
}

/// `[server.tls]` and `[upstream.tls]` as written, with the keys each needs. Only the file sets
/// them (there are no TLS flags).
fn tls_from_file(file: &FileConfig, origins: &mut Origins) -> Result<TlsConfig, ConfigError> {
    let from = Origin::File(file.path.clone());
    let required = |key: &'static str, what: &str| {
        let message = format!("is required when the section is present: {what}");
        ConfigError::new(from.clone(), Some(key.to_string()), message, None)
    };
    let mut tls = TlsConfig::default();
    if let Some(t) = &file.server.tls {
        tls.server = Some(server_tls_from_file(
            t,
            [
                SERVER_TLS,
                SERVER_TLS_CERT_FILE,
                SERVER_TLS_KEY_FILE,
                SERVER_TLS_CLIENT_CA_FILE,
            ],
            file,
            origins,
        )?);
    }
    let mut set = origins.layer(from.clone());
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;
    use crate::config::testing::{file, merged, pem_files, rejected};
    use crate::guard::DeleteCommand;

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
    fn the_guard_mode_flag_wins_over_the_file() {
        use crate::guard::GuardMode;
        let file = file("[guard]\nmode = \"enforce\"\n").unwrap();
        let cli = Cli {
            guard_mode: Some(GuardMode::DryRun),
            ..Cli::default()
        };
        assert_eq!(
            merge(Some(&file), &cli).unwrap().guard.mode,
            GuardMode::DryRun
        );
        assert_eq!(
            merge(Some(&file), &Cli::default()).unwrap().guard.mode,
            GuardMode::Enforce
        );
    }

    #[test]
    fn the_log_format_flag_wins_over_the_file() {
        use crate::config::LogFormat;
        let file = file("[server]\nlog_format = \"text\"\n").unwrap();
        let cli = Cli {
            log_format: Some(LogFormat::Json),
            ..Cli::default()
        };
        let config = merge(Some(&file), &cli).unwrap();
        assert_eq!(config.server.log_format, LogFormat::Json);
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
}
