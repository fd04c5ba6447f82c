//! The `keyward` binary: command line → [`Config`] → [`keyward::server::run`].
//!
//! Exit status: 0 after a clean shutdown or a valid `--check-config`, 1 when the proxy fails
//! while running, 2 for an invalid configuration or command line (clap uses 2 for the latter).
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use keyward::config::{self, Cli, Config, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match check(&cli) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("keyward: invalid configuration: {err}");
            return ExitCode::from(2);
        }
    };
    if cli.check_config.is_some() {
        print!("{}", config.describe());
        return ExitCode::SUCCESS;
    }

    init_logging(config.server.log_level.as_deref(), config.server.log_format);
    let file = config::config_file(&cli);
    let file = file.as_ref().map_or("none, built-in defaults".into(), |f| {
        f.display().to_string()
    });
    tracing::info!(
        "keyward {} starting; configuration file: {file}; effective configuration:\n{}",
        env!("CARGO_PKG_VERSION"),
        config.describe().trim_end()
    );
    if config.guard.mode == config::GuardMode::DryRun {
        tracing::warn!(
            "the guard runs in dry-run mode: requests it would refuse are forwarded and logged \
             with outcome=would refuse: <rule>"
        );
    }

    // One thread: tokio's current-thread scheduler runs tasks in the order their sockets became
    // ready. (The multi-thread scheduler's "LIFO slot" runs the last task woken first, so two
    // clients that write a microsecond apart could reach Redis in the opposite order.)
    let mut builder = if config.server.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(config.server.threads);
        builder
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(keyward::server::run(config, cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("keyward stopped: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Everything that can be wrong with the command line and the files it names.
fn check(cli: &Cli) -> Result<Config, config::ConfigError> {
    if let Some(level) = &cli.log_level {
        config::check_log_level(level)?;
    }
    config::resolve(cli)
}

/// Logs go to stderr, filtered by `level` (`--log-level` or `[server] log_level`) if given, else
/// `RUST_LOG`, else `info`, as text or as one JSON object per line (`format`). The filter can be
/// replaced while keyward runs: a reload that changes the level calls the hook installed here.
fn init_logging(level: Option<&str>, format: LogFormat) {
    use tracing_subscriber::prelude::*;
    let (filter, handle) = tracing_subscriber::reload::Layer::new(filter_for(level, true));
    keyward::reload::set_log_level_hook(Box::new(move |level| {
        handle
            .reload(filter_for(level, false))
            .map_err(|e| e.to_string())
    }));
    let registry = tracing_subscriber::registry().with(filter);
    match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .init(),
        // The event's fields at the top level of the object (not under "fields"), so that a
        // log pipeline reads `outcome` as it reads `level`; keyward records no spans.
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(false),
            )
            .init(),
    }
}

/// The filter for `level` (already checked by the configuration), else `RUST_LOG`, else `info`.
fn filter_for(level: Option<&str>, warn_bad_env: bool) -> EnvFilter {
    match level {
        Some(level) => EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info")),
        None => match EnvFilter::try_from_default_env() {
            Ok(filter) => filter,
            Err(err) => {
                if warn_bad_env && std::env::var_os(EnvFilter::DEFAULT_ENV).is_some() {
                    eprintln!("keyward: ignoring RUST_LOG ({err}); logging at info");
                }
                EnvFilter::new("info")
            }
        },
    }
}
