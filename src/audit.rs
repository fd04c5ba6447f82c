//! The audit trail: one log line (target `keyward::audit`) per guarded request, whatever path
//! it took, so that an operator can answer "who deleted what, and who was stopped".

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::commands::{self, Removes};
use crate::protocol::args::Args;
use crate::protocol::reply;

/// A guarded request on its way upstream; logged once its reply is in.
#[derive(Debug)]
pub struct Audit {
    pub client: SocketAddr,
    /// The user the client logged in to keyward as; None when keyward does not authenticate
    /// clients, and then the line has no `user` field (keyward does not know who Redis
    /// takes the client for).
    pub user: Option<Arc<str>>,
    /// The command as the client named it, uppercased (`REMOVEKEYS`, not the `UNLINK` sent).
    pub command: String,
    pub keys: usize,
    pub started: Instant,
    /// How the request came: a RESP client, the HTTP API or a hook.
    pub via: Via,
}

/// How a guarded request came to keyward (the audit line's `via`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A RESP client.
    Resp,
    /// The HTTP API (`POST /v1/keys/remove`).
    Http,
    /// The named hook, whoever triggered it.
    Hook(Arc<str>),
}

impl std::fmt::Display for Via {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Via::Resp => f.write_str("resp"),
            Via::Http => f.write_str("http"),
            Via::Hook(name) => write!(f, "hook:{name}"),
        }
    }
}

impl Audit {
    /// Starts the record for a request whose arguments are `args` (command name first). `keys`
    /// counts the keys a delete removes (for MIGRATE, those after KEYS, none with COPY); for
    /// other commands, the arguments.
    pub fn start(client: SocketAddr, user: Option<&Arc<str>>, args: Args<'_>) -> Self {
        let keys = match commands::lookup(&args[0]) {
            Some(spec) if spec.removes == Removes::Migrate => {
                commands::removed_keys(spec, args).len()
            }
            _ => args.len() - 1,
        };
        Audit {
            client,
            user: user.cloned(),
            command: command_name(&args[0]),
            keys,
            started: Instant::now(),
            via: Via::Resp,
        }
    }

    /// The record of a request that came `via` the HTTP API or a hook.
    pub fn via(mut self, via: Via) -> Self {
        self.via = via;
        self
    }

    /// Logs the outcome read from the reply frame.
    pub fn answered(&self, reply_frame: &[u8]) {
        let outcome = if let Some(n) = reply::integer(reply_frame) {
            format!("removed {n}")
        } else if reply::is_error(reply_frame) {
            format!("error: {}", reply::error_text(reply_frame))
        } else if reply::simple_string(reply_frame) == Some(&b"QUEUED"[..]) {
            "queued".to_string()
        } else {
            "answered".to_string()
        };
        self.log(&outcome);
    }

    /// Logs an outcome given in words (a partial cluster delete, for instance).
    pub fn log(&self, outcome: &str) {
        tracing::info!(
            target: "keyward::audit",
            client = %self.client,
            user = self.user.as_deref().map(tracing::field::display),
            command = %self.command,
            keys = self.keys,
            outcome = %outcome,
            via = %self.via,
            duration_us = self.started.elapsed().as_micros() as u64,
            "guard"
        );
    }
}

/// Logs a request the guard refused; nothing was sent upstream.
pub fn refused(client: SocketAddr, user: Option<&Arc<str>>, args: Args<'_>, rule: &str) {
    Audit::start(client, user, args).log(&format!("refused: {rule}"));
}

/// Logs a request the guard refuses in enforce mode and forwards in dry-run mode. Written when
/// the request is admitted, the same line in the same place as a refusal's, so that every
/// `would refuse` line becomes one `refused` line once the guard enforces; a guarded delete
/// then gets its usual line when the reply comes.
pub fn would_refuse(client: SocketAddr, user: Option<&Arc<str>>, args: Args<'_>, rule: &str) {
    Audit::start(client, user, args).log(&format!("would refuse: {rule}"));
}

/// A command name for logs: uppercase, lossy for binary names.
pub fn command_name(name: &[u8]) -> String {
    String::from_utf8_lossy(name).to_ascii_uppercase()
}
