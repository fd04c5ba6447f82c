//! The effective configuration as text (`--check-config`, the start-up log). Kept apart from the
//! model because its one job, besides the layout, is to keep every secret out.

use std::path::Path;

use super::model::Config;
use super::quote::quote;
use crate::tls::{ServerTlsConfig, UpstreamTlsConfig};

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
            admin,
            http,
            hooks,
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
        line(format!("log_format = {}", quote(server.log_format.name())));
        if let Some(level) = &server.log_level {
            line(format!("log_level = {}", quote(level)));
        }
        if let Some(prefixes) = &server.delete_prefixes {
            line(format!("delete_prefixes = {}", quote_list(prefixes)));
        }
        for user in &server.users {
            line(String::new());
            line("[[server.users]]".into());
            line(format!("name = {}", quote(&user.name)));
            line(format!("password_sha256 = {}", quote("<set>")));
            line(format!(
                "bypass_deny_commands = {}",
                user.bypass_deny_commands
            ));
            line(format!(
                "bypass_protected_prefixes = {}",
                user.bypass_protected_prefixes
            ));
            if let Some(prefixes) = &user.delete_prefixes {
                line(format!("delete_prefixes = {}", quote_list(prefixes)));
            }
            if let Some(rate) = user.max_deleted_keys_per_second {
                line(format!("max_deleted_keys_per_second = {rate}"));
            }
        }
        if let Some(server_tls) = &tls.server {
            line(String::new());
            describe_server_tls("server.tls", server_tls, &mut line);
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
        if upstream.mode == crate::config::UpstreamMode::Sentinel {
            line(format!(
                "sentinel_master = {}",
                quote(&upstream.sentinel.master)
            ));
            if let Some(username) = &upstream.sentinel.username {
                line(format!("sentinel_username = {}", quote(username)));
            }
            if upstream.sentinel.password.is_some() {
                line(format!("sentinel_password = {}", quote("<set>")));
            }
        }
        if let Some(upstream_tls) = &tls.upstream {
            line(String::new());
            describe_upstream_tls(upstream_tls, &mut line);
        }
        line(String::new());
        line("[guard]".into());
        line(format!("mode = {}", quote(guard.mode.name())));
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
        line(format!(
            "protected_prefixes = {}",
            quote_list(&guard.protected_prefixes)
        ));
        if let Some(rate) = guard.max_deleted_keys_per_second {
            line(format!("max_deleted_keys_per_second = {rate}"));
        }
        line(String::new());
        line("[limits]".into());
        line(format!("max_bulk_len = {}", limits.max_bulk_len));
        line(format!("max_request_args = {}", limits.max_request_args));
        line(format!("max_query_buffer = {}", limits.max_query_buffer));
        line(format!(
            "max_pending_replies = {}",
            limits.max_pending_replies
        ));
        line(format!(
            "max_client_output_bytes = {}",
            limits.max_client_output_bytes
        ));
        if admin.enabled() {
            line(String::new());
            line("[admin]".into());
            line(format!("listen = {}", quote(&admin.listen)));
            if admin.token_sha256.is_some() {
                line(format!("token_sha256 = {}", quote("<set>")));
            }
        }
        if http.enabled() {
            line(String::new());
            line("[http]".into());
            line(format!("listen = {}", quote(&http.listen)));
            line(format!("max_body_bytes = {}", http.max_body_bytes));
            if let Some(http_tls) = &http.tls {
                line(String::new());
                describe_server_tls("http.tls", http_tls, &mut line);
            }
        }
        for hook in hooks {
            line(String::new());
            line("[[hooks]]".into());
            line(format!("name = {}", quote(&hook.name)));
            line(format!("remove = {}", quote_list(&hook.remove)));
            if !hook.on_write.is_empty() {
                line(format!("on_write = {}", quote_list(&hook.on_write)));
            }
            if !hook.delay.is_zero() {
                line(format!("delay_ms = {}", hook.delay.as_millis()));
            }
        }
        out
    }
}

fn describe_server_tls(section: &str, tls: &ServerTlsConfig, line: &mut impl FnMut(String)) {
    line(format!("[{section}]"));
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

fn quote_list(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|item| quote(item)).collect();
    format!("[{}]", items.join(", "))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::auth::User;
    use crate::config::TlsConfig;
    use crate::config::testing::{merged, pem_files};
    use crate::guard::DeleteCommand;

    #[test]
    fn describe_hides_client_passwords() {
        let mut config = Config::default();
        config.server.password = Some("hunter2".into());
        config.server.users = vec![User {
            name: "ops".into(),
            password_sha256: crate::auth::sha256(b"opspass"),
            bypass_deny_commands: true,
            ..User::default()
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
        config.guard.mode = crate::guard::GuardMode::DryRun;
        config.server.log_format = crate::config::LogFormat::Json;
        config.guard.deny_commands = vec!["CONFIG SET".into()];
        config.server.shutdown_timeout = Duration::from_millis(1234);
        let back = merged(&config.describe()).unwrap();
        assert_eq!(back, config);
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
}
