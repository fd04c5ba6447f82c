//! Configuration: `proxy.toml`, command-line flags and environment variables, merged and validated.
//!
//! Three layers, highest first: a flag (or its `KEYWARD_*` environment variable), the file, the
//! built-in defaults in [`Config::default`]. The file is parsed into [`FileConfig`], whose fields
//! are all optional so that "not written" stays distinguishable from "written with the default
//! value"; [`merge`](fn@merge) lays the layers over each other and then validates the result once, as a
//! whole, remembering where every value came from so that an error can point at the file (with
//! line and column when the parser knows them), the flag, or the default that supplied it.
//!
//! Nothing here prints a password: [`Config::describe`], the `Debug` impls and the error messages
//! all keep it out.
//!
//! One layer per file, each importing only the ones below it:
//!
//! - `model`: the [`Config`] tree and its defaults. The settings of the guard, of TLS and of
//!   users are defined by those subsystems and only assembled here, so that none of them
//!   depends on this module.
//! - `file`: the schema of `proxy.toml` ([`FileConfig`]) and reading it.
//! - `cli`: the command line ([`Cli`]), which file it selects, `--log-level`.
//! - `merge`: the layers laid over each other ([`merge`](fn@merge), [`resolve`]).
//! - `validate`: the checks of the merged whole.
//! - `origins`, `error`, `keys`, `quote`: where a value came from, errors that say so, the names
//!   of the settings, and TOML quoting for messages.
//! - `describe`: the effective configuration as text, secrets masked.
//!
//! Everything public is re-exported here: callers write `keyward::config::Config`, not the file
//! it lives in.

mod cli;
mod describe;
mod error;
mod file;
mod keys;
mod merge;
mod model;
mod origins;
mod quote;
#[cfg(test)]
mod testing;
mod validate;

pub use cli::{Cli, check_log_level, config_file};
pub use error::ConfigError;
pub use file::{
    FileConfig, GuardFile, LimitsFile, ServerFile, ServerTlsFile, UpstreamFile, UpstreamTlsFile,
    UserFile, load_file,
};
pub use merge::{merge, resolve};
pub use model::{
    Config, LimitsConfig, LogFormat, ServerConfig, TlsConfig, UpstreamConfig, UpstreamMode,
};

// The settings types the subsystems own, under the paths they had when they were defined here.
pub use crate::auth::User;
pub use crate::guard::{DEFAULT_DENY_COMMANDS, DeleteCommand, GuardConfig, GuardMode};
pub use crate::tls::{ServerTlsConfig, UpstreamTlsConfig};
