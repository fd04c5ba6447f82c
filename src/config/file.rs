//! The file schema: `proxy.toml` as written, every key optional so that "not written" stays
//! distinguishable from "written with the default value". Only syntax and types are checked
//! here; values are checked once the flags have been laid over the file.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::{ConfigError, Origin};
use super::model::{LogFormat, UpstreamMode};
use crate::guard::{DeleteCommand, GuardMode};

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
    #[serde(default)]
    pub admin: AdminFile,
    #[serde(default)]
    pub http: HttpFile,
    /// `[[hooks]]`
    pub hooks: Option<Vec<HookFile>>,
}

/// `[http]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    pub listen: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub tls: Option<ServerTlsFile>,
}

/// `[[hooks]]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookFile {
    pub name: String,
    pub remove: Vec<String>,
    #[serde(default)]
    pub on_write: Vec<String>,
    #[serde(default)]
    pub delay_ms: u64,
}

/// `[admin]`
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminFile {
    pub listen: Option<String>,
    pub token_sha256: Option<String>,
}

/// Written by hand so that `{:?}` never shows the token's hash.
impl fmt::Debug for AdminFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminFile")
            .field("listen", &self.listen)
            .field("token_sha256", &self.token_sha256.as_ref().map(|_| "<set>"))
            .finish()
    }
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
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub delete_prefixes: Option<Vec<String>>,
    pub tls: Option<ServerTlsFile>,
}

/// `[[server.users]]`
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserFile {
    pub name: String,
    pub password_sha256: String,
    pub bypass_deny_commands: Option<bool>,
    pub bypass_protected_prefixes: Option<bool>,
    pub delete_prefixes: Option<Vec<String>>,
    pub max_deleted_keys_per_second: Option<u64>,
}

/// Written by hand so that `{:?}` never shows the password hash.
impl fmt::Debug for UserFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserFile")
            .field("name", &self.name)
            .field("password_sha256", &"<set>")
            .field("bypass_deny_commands", &self.bypass_deny_commands)
            .field("bypass_protected_prefixes", &self.bypass_protected_prefixes)
            .field("delete_prefixes", &self.delete_prefixes)
            .field(
                "max_deleted_keys_per_second",
                &self.max_deleted_keys_per_second,
            )
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
            .field("log_format", &self.log_format)
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
    pub sentinel_master: Option<String>,
    pub sentinel_username: Option<String>,
    pub sentinel_password: Option<String>,
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
            .field("sentinel_master", &self.sentinel_master)
            .field("sentinel_username", &self.sentinel_username)
            .field(
                "sentinel_password",
                &self.sentinel_password.as_ref().map(|_| "<set>"),
            )
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
    pub mode: Option<GuardMode>,
    pub max_keys: Option<usize>,
    pub wildcard_chars: Option<String>,
    pub delete_command: Option<DeleteCommand>,
    pub deny_commands: Option<Vec<String>>,
    pub protected_prefixes: Option<Vec<String>>,
    pub max_deleted_keys_per_second: Option<u64>,
}

/// `[limits]`
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsFile {
    pub max_bulk_len: Option<usize>,
    pub max_request_args: Option<usize>,
    pub max_query_buffer: Option<usize>,
    pub max_pending_replies: Option<usize>,
    pub max_client_output_bytes: Option<usize>,
}

/// Reads and parses a configuration file. Only the syntax and the types are checked here; the
/// values are checked by [`merge`](fn@super::merge), once the flags have been applied.
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

// How the file spells the enumerations: the same words their `FromStr` accepts.

impl<'de> Deserialize<'de> for UpstreamMode {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for LogFormat {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for GuardMode {
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::testing::{merged, rejected};
    use crate::config::{Cli, Config, merge};

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
        assert!(file.server.shutdown_timeout_ms.is_some() && file.server.log_format.is_some());
        assert!(file.upstream.mode.is_some() && file.upstream.nodes.is_some());
        assert!(file.upstream.connect_timeout_ms.is_some());
        assert!(file.guard.max_keys.is_some() && file.guard.wildcard_chars.is_some());
        assert!(file.guard.mode.is_some());
        assert!(file.guard.delete_command.is_some() && file.guard.deny_commands.is_some());
        assert!(file.limits.max_bulk_len.is_some() && file.limits.max_request_args.is_some());
        assert!(file.limits.max_query_buffer.is_some());
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
    fn log_format_is_parsed() {
        assert_eq!(merged("").unwrap().server.log_format, LogFormat::Text);
        let config = merged("[server]\nlog_format = \"JSON\"\n").unwrap();
        assert_eq!(config.server.log_format, LogFormat::Json);
        let shown = rejected("[server]\nlog_format = \"xml\"\n", "server.log_format");
        assert!(shown.contains("\"text\" or \"json\""), "{shown}");
    }

    #[test]
    fn guard_mode_is_parsed() {
        assert_eq!(merged("").unwrap().guard.mode, GuardMode::Enforce);
        let config = merged("[guard]\nmode = \"dry-run\"\n").unwrap();
        assert_eq!(config.guard.mode, GuardMode::DryRun);
        let shown = rejected("[guard]\nmode = \"off\"\n", "guard.mode");
        assert!(shown.contains("\"enforce\" or \"dry-run\""), "{shown}");
    }

    #[test]
    fn mode_is_parsed() {
        let config = merged("[upstream]\nmode = \"Standalone\"\n").unwrap();
        assert_eq!(config.upstream.mode, UpstreamMode::Standalone);
        rejected("[upstream]\nmode = \"replicated\"\n", "upstream.mode");
        // Sentinel mode needs the master name.
        let shown = rejected("[upstream]\nmode = \"sentinel\"\n", "upstream.mode");
        assert!(shown.contains("sentinel_master"), "{shown}");
        let config = merged(
            "[upstream]\nmode = \"sentinel\"\nsentinel_master = \"mymaster\"\nnodes = [\"127.0.0.1:26379\", \"127.0.0.1:26380\"]\n",
        )
        .unwrap();
        assert_eq!(config.upstream.mode, UpstreamMode::Sentinel);
        assert_eq!(config.upstream.sentinel.master, "mymaster");
        let config = merged(
            "[upstream]\nmode = \"cluster\"\nnodes = [\"127.0.0.1:7000\", \"127.0.0.1:7001\"]\n",
        )
        .unwrap();
        assert_eq!(config.upstream.mode, UpstreamMode::Cluster);
        assert_eq!(config.upstream.nodes.len(), 2);
    }
}
