//! Hot reload (SIGHUP, `POST /reload`): the configuration file is read again and, when all of it
//! is valid and it changes only settings that can change while keyward runs, put in force at
//! once; otherwise nothing changes at all.
//!
//! Live: everything in `[guard]`, `[limits]`, `[[hooks]]`, users and passwords, the idle timeout, the log
//! level (`[server] log_level`), `[admin] token_sha256`, and the client TLS certificate and key
//! (read again at every reload, so a rotated certificate needs only a SIGHUP). Requests read after a reload use the new settings; requests in
//! flight finish under the old ones; no client is disconnected, except one logged in as a user
//! the reload removed or whose password it changed (at its next read). Everything else (listen
//! addresses, `[upstream]` and its TLS, turning client TLS on or off, threads, the client cap,
//! the log format) needs a restart: a
//! file that changes it is refused whole, naming the settings.

use std::sync::{Arc, Mutex, RwLock};

use crate::config::{self, Cli, Config};
use crate::session::Live;

/// Changes the log filter while keyward runs (installed by the binary, which owns logging);
/// `None` goes back to `RUST_LOG`, else `info`.
pub type SetLogLevel = Box<dyn Fn(Option<&str>) -> Result<(), String> + Send + Sync>;

static LOG_LEVEL_HOOK: std::sync::OnceLock<SetLogLevel> = std::sync::OnceLock::new();

/// Installs the hook a reload calls when `[server] log_level` changes (once; later calls are
/// ignored).
pub fn set_log_level_hook(hook: SetLogLevel) {
    let _ = LOG_LEVEL_HOOK.set(hook);
}

/// The settings a reload may not change, with how each is compared.
type Fixed = (&'static str, fn(&Config, &Config) -> bool);

const NEED_A_RESTART: &[Fixed] = &[
    ("server.listen", |a, b| a.server.listen == b.server.listen),
    ("server.max_clients", |a, b| {
        a.server.max_clients == b.server.max_clients
    }),
    ("server.shutdown_timeout_ms", |a, b| {
        a.server.shutdown_timeout == b.server.shutdown_timeout
    }),
    ("server.threads", |a, b| {
        a.server.threads == b.server.threads
    }),
    ("server.allow_unauthenticated", |a, b| {
        a.server.allow_unauthenticated == b.server.allow_unauthenticated
    }),
    ("server.log_format", |a, b| {
        a.server.log_format == b.server.log_format
    }),
    // Certificate and key files are read again at every reload; turning TLS on or off changes
    // what the listener speaks, which clients cannot follow.
    ("server.tls (TLS on or off)", |a, b| {
        a.tls.server.is_some() == b.tls.server.is_some()
    }),
    ("upstream.mode", |a, b| a.upstream.mode == b.upstream.mode),
    ("upstream.nodes", |a, b| {
        a.upstream.nodes == b.upstream.nodes
    }),
    ("upstream.username", |a, b| {
        a.upstream.username == b.upstream.username
    }),
    ("upstream.password", |a, b| {
        a.upstream.password == b.upstream.password
    }),
    ("upstream.connect_timeout_ms", |a, b| {
        a.upstream.connect_timeout == b.upstream.connect_timeout
    }),
    ("upstream.reply_timeout_ms", |a, b| {
        a.upstream.reply_timeout == b.upstream.reply_timeout
    }),
    ("upstream.share_connections", |a, b| {
        a.upstream.share_connections == b.upstream.share_connections
    }),
    ("upstream.tls", |a, b| a.tls.upstream == b.tls.upstream),
    (
        "upstream.sentinel_master / sentinel_username / sentinel_password",
        |a, b| a.upstream.sentinel == b.upstream.sentinel,
    ),
    ("admin.listen", |a, b| a.admin.listen == b.admin.listen),
    ("http.listen", |a, b| a.http.listen == b.http.listen),
    ("http.max_body_bytes", |a, b| {
        a.http.max_body_bytes == b.http.max_body_bytes
    }),
    ("http.tls", |a, b| a.http.tls == b.http.tls),
];

/// What a reload needs: the command line keyward started with (it names the file and its
/// flags still win over the file), the configuration in force, and the places that take the
/// new settings.
pub struct Reloader {
    cli: Cli,
    current: Mutex<Config>,
    live: Arc<Live>,
    /// The admin listener's token, read by it on every request.
    pub admin_token: Arc<RwLock<Option<[u8; 32]>>>,
    /// Turns a configuration into the sessions' settings (`server::session_context`).
    build: fn(&Config) -> crate::session::SessionContext,
    /// The client TLS set-up new handshakes use, when the listener speaks TLS.
    server_tls: Option<Arc<RwLock<crate::tls::ServerTls>>>,
}

impl crate::admin::Reload for Reloader {
    fn reload(&self) -> Result<Vec<String>, String> {
        Reloader::reload(self)
    }

    fn describe(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .describe()
    }

    fn admin_token(&self) -> Arc<RwLock<Option<[u8; 32]>>> {
        self.admin_token.clone()
    }
}

impl Reloader {
    pub fn new(
        cli: Cli,
        config: Config,
        live: Arc<Live>,
        build: fn(&Config) -> crate::session::SessionContext,
        server_tls: Option<Arc<RwLock<crate::tls::ServerTls>>>,
    ) -> Self {
        Reloader {
            server_tls,
            admin_token: Arc::new(RwLock::new(config.admin.token_sha256)),
            cli,
            current: Mutex::new(config),
            live,
            build,
        }
    }

    /// Reads the configuration again and puts it in force, or changes nothing. Returns the
    /// settings that changed (`key = value`, secrets masked), or why nothing did. Logs either
    /// way and counts it in `keyward_config_reloads_total`.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let file = config::config_file(&self.cli)
            .map_or("no file, built-in defaults".into(), |f| {
                f.display().to_string()
            });
        let outcome = self.try_reload();
        if let Some(m) = crate::metrics::get() {
            m.reloaded(outcome.is_ok());
        }
        match &outcome {
            Ok(changed) if changed.is_empty() => {
                tracing::info!("configuration reloaded from {file}: nothing changed")
            }
            Ok(changed) => {
                tracing::info!("configuration reloaded from {file}: {}", changed.join(", "))
            }
            Err(e) => tracing::warn!("configuration not reloaded, nothing changed: {e}"),
        }
        outcome
    }

    fn try_reload(&self) -> Result<Vec<String>, String> {
        let new = config::resolve(&self.cli).map_err(|e| e.to_string())?;
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let fixed: Vec<&str> = NEED_A_RESTART
            .iter()
            .filter(|(_, same)| !same(&current, &new))
            .map(|(key, _)| *key)
            .collect();
        if !fixed.is_empty() {
            return Err(format!(
                "the file changes {}, which {} a restart",
                fixed.join(", "),
                if fixed.len() == 1 { "needs" } else { "need" }
            ));
        }
        let changed = changes(&current.describe(), &new.describe());
        // Built before anything changes, so that unreadable files change nothing.
        let server_tls = match (&self.server_tls, &new.tls.server) {
            (Some(_), Some(settings)) => Some(
                crate::tls::ServerTls::new(settings)
                    .map_err(|e| format!("server.tls.{}: {}", e.field, e.message))?
                    .with_close_grace(new.server.shutdown_timeout),
            ),
            _ => None,
        };
        if current.server.log_level != new.server.log_level
            && let Some(hook) = LOG_LEVEL_HOOK.get()
        {
            hook(new.server.log_level.as_deref())
                .map_err(|e| format!("cannot change the log level: {e}"))?;
        }
        self.live.replace((self.build)(&new));
        if let (Some(cell), Some(tls)) = (&self.server_tls, server_tls) {
            *cell.write().unwrap_or_else(|e| e.into_inner()) = tls;
        }
        *self.admin_token.write().unwrap_or_else(|e| e.into_inner()) = new.admin.token_sha256;
        *current = new;
        Ok(changed)
    }
}

/// The settings that differ between two `describe()` texts, as `section.key = value` (values
/// as `describe` shows them: secrets masked). A setting that disappeared shows as `key unset`.
fn changes(before: &str, after: &str) -> Vec<String> {
    let settings = |text: &str| -> Vec<String> {
        let mut section = String::new();
        let mut out = Vec::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix('[') {
                section = name.trim_matches(|c| c == '[' || c == ']').to_string();
            } else if let Some((key, value)) = line.split_once(" = ") {
                out.push(format!("{section}.{key} = {value}"));
            }
        }
        out
    };
    let (old, new) = (settings(before), settings(after));
    let key = |s: &String| s.split(" = ").next().unwrap_or("").to_string();
    let mut changed: Vec<String> = new.iter().filter(|s| !old.contains(s)).cloned().collect();
    for gone in old.iter().filter(|s| !new.iter().any(|n| key(n) == key(s))) {
        changed.push(format!("{} unset", key(gone)));
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_name_the_settings_with_their_new_values() {
        let before = "[server]\nlisten = \"a\"\npassword = \"<set>\"\n\n[guard]\nmax_keys = 1000\n";
        let after = "[server]\nlisten = \"a\"\n\n[guard]\nmax_keys = 3\n";
        assert_eq!(
            changes(before, after),
            ["guard.max_keys = 3", "server.password unset"]
        );
        assert!(changes(after, after).is_empty());
    }
}
