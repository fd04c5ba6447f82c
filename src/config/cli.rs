//! The command line: flags and the `KEYWARD_*` environment variables clap reads for them, which
//! configuration file they select, and the check of `--log-level` (not part of [`Config`]:
//! logging is set up before the configuration is read).
//!
//! [`Config`]: super::Config

use std::path::{Path, PathBuf};

use super::error::{ConfigError, Origin};
use super::model::LogFormat;
use crate::guard::GuardMode;

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

    /// Follow the primary that Redis Sentinel names NAME (upstream.mode = "sentinel",
    /// upstream.sentinel_master = NAME); the upstream nodes are then the sentinels.
    #[arg(
        long,
        value_name = "NAME",
        env = "KEYWARD_SENTINEL",
        conflicts_with = "cluster"
    )]
    pub sentinel: Option<String>,

    /// Serve metrics, health, readiness and the configuration over HTTP on this address
    /// (HOST:PORT), overriding admin.listen; an empty value turns the admin listener off.
    #[arg(long, value_name = "ADDR", env = "KEYWARD_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,

    /// Serve the HTTP API (POST /v1/keys/remove, /v1/keys/get, /v1/keys/set, /v1/hooks/NAME)
    /// on this address (HOST:PORT), overriding http.listen; an empty value turns it off.
    #[arg(long, value_name = "ADDR", env = "KEYWARD_HTTP_LISTEN")]
    pub http_listen: Option<String>,

    /// Refuse a delete that names more than N keys, overriding guard.max_keys.
    #[arg(long, value_name = "N", env = "KEYWARD_MAX_KEYS")]
    pub max_keys: Option<usize>,

    /// "enforce" refuses what the guard's rules refuse; "dry-run" forwards it and logs
    /// `would refuse: <rule>` instead. Overrides guard.mode.
    #[arg(long, value_name = "MODE", env = "KEYWARD_GUARD_MODE")]
    pub guard_mode: Option<GuardMode>,

    /// Log at this level (error, warn, info, debug, trace or off) or with a tracing filter such
    /// as "keyward=debug,info"; without it RUST_LOG is used, and "info" if that is unset too.
    #[arg(long, value_name = "LEVEL", env = "KEYWARD_LOG_LEVEL")]
    pub log_level: Option<String>,

    /// Write log lines as "text" or as "json" (one JSON object per line, every field a member),
    /// overriding server.log_format.
    #[arg(long, value_name = "FORMAT", env = "KEYWARD_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

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

/// Checks a `--log-level` value. A bare word must be a level: tracing would otherwise take a
/// misspelt level such as `verbose` for the name of a module and silently log nothing.
pub fn check_log_level(level: &str) -> Result<(), ConfigError> {
    log_level_problem(level).map_or(Ok(()), |message| {
        let origin = Origin::flag("--log-level", "KEYWARD_LOG_LEVEL");
        Err(ConfigError::new(origin, None, message, None))
    })
}

/// What is wrong with a log level or filter, if anything (shared by the flag's check and the
/// check of `[server] log_level`).
pub(super) fn log_level_problem(level: &str) -> Option<String> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    if level.trim().is_empty() {
        return Some("the log level is empty".into());
    }
    for directive in level.split(',') {
        let word = directive.trim();
        let is_bare_word = !word.contains(['=', '[', ':']);
        if is_bare_word && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(word)) {
            return Some(format!(
                "unknown log level `{word}`, expected one of {} or a filter such as \
                 \"keyward=debug,info\"",
                LEVELS.join(", ")
            ));
        }
    }
    tracing_subscriber::EnvFilter::try_new(level)
        .err()
        .map(|err| format!("invalid log filter `{level}`: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn upstream_flag_repeated_or_comma_separated() {
        let cli =
            Cli::try_parse_from(["keyward", "--upstream", "a:1,b:2", "--upstream", "c:3"]).unwrap();
        assert_eq!(cli.upstream, ["a:1", "b:2", "c:3"]);
    }

    #[test]
    fn log_format_flag_is_parsed() {
        let cli = Cli::try_parse_from(["keyward", "--log-format", "json"]).unwrap();
        assert_eq!(cli.log_format, Some(LogFormat::Json));
        assert!(Cli::try_parse_from(["keyward", "--log-format", "logfmt"]).is_err());
    }

    #[test]
    fn guard_mode_flag_is_parsed() {
        let cli = Cli::try_parse_from(["keyward", "--guard-mode", "dry-run"]).unwrap();
        assert_eq!(cli.guard_mode, Some(GuardMode::DryRun));
        assert!(Cli::try_parse_from(["keyward", "--guard-mode", "loose"]).is_err());
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
}
