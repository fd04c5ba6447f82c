//! Connections to Redis: where and how keyward connects ([`UpstreamTarget`]), the dialer every
//! connection goes through (`dial.rs`), and a few connections kept ready ahead of need
//! (`warm_pool.rs`).

mod dial;
mod warm_pool;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::{Notify, watch};

use crate::protocol::write;
use crate::tls::ClientTls;

pub use dial::{DialError, DialFailure};
pub use warm_pool::WarmPool;

/// The primary of a Redis monitored by Sentinel, as keyward knows it now: the address that
/// connections to "the upstream" dial, replaced when the sentinels announce a failover
/// (`crate::sentinel` keeps it up to date).
#[derive(Debug)]
pub struct Primary {
    /// The master name the sentinels know it by (`sentinel_master`).
    pub name: String,
    /// The sentinels asked, for messages.
    pub sentinels: Vec<String>,
    addr: RwLock<Option<String>>,
    /// Bumped at every change of address: a connection made at an older epoch goes to a
    /// primary keyward knows was replaced.
    changes: watch::Sender<u64>,
    /// Wakes the sentinel watcher for a check now.
    wake: Arc<Notify>,
}

impl Primary {
    pub fn new(name: String, sentinels: Vec<String>) -> Arc<Primary> {
        Arc::new(Primary {
            name,
            sentinels,
            addr: RwLock::new(None),
            changes: watch::channel(0).0,
            wake: Arc::new(Notify::new()),
        })
    }

    /// Asks for the sentinels to be asked again now (a connection to the primary broke, or it
    /// answered as a replica would).
    pub fn request_check(&self) {
        self.wake.notify_one();
    }

    /// What [`request_check`](Self::request_check) wakes.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// The address of the primary, if one is known.
    pub fn current(&self) -> Option<String> {
        self.addr.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// How many times the primary changed (or was lost).
    pub fn epoch(&self) -> u64 {
        *self.changes.borrow()
    }

    /// A receiver that wakes at every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Puts `addr` in force (None: no primary known); true when it changed.
    pub fn set(&self, addr: Option<String>) -> bool {
        let mut current = self.addr.write().unwrap_or_else(|e| e.into_inner());
        if *current == addr {
            return false;
        }
        *current = addr;
        drop(current);
        self.changes.send_modify(|epoch| *epoch += 1);
        true
    }

    /// The error a client reads while no primary is known.
    pub fn unknown(&self) -> String {
        format!(
            "no primary for '{}' known to the sentinels ({}); retry when they have elected one",
            self.name,
            self.sentinels.join(", ")
        )
    }
}

/// Where and how keyward connects upstream.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    /// The address dialled; with `primary`, the primary's address replaces it.
    pub addr: String,
    /// Sentinel mode: the primary whose current address is dialled instead of `addr`.
    pub primary: Option<Arc<Primary>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub connect_timeout: Duration,
    /// Longest wait for a reply to a non-blocking request; zero: no limit.
    pub reply_timeout: Duration,
    /// Switch the connection to RESP3 (`HELLO 3`) before use.
    pub resp3: bool,
    /// Speak TLS to the server (`[upstream.tls]`).
    pub tls: Option<ClientTls>,
}

impl UpstreamTarget {
    /// The upstream as messages name it: its address, or in Sentinel mode the primary of the
    /// master name (the address changes with failovers).
    pub fn describe(&self) -> String {
        match &self.primary {
            Some(primary) => format!("primary of '{}'", primary.name),
            None => self.addr.clone(),
        }
    }

    /// What keyward sends on a new connection before use: `HELLO 3` (with `AUTH` when it has
    /// credentials) for a RESP3 connection, else `AUTH` when it has credentials, else nothing.
    fn handshake_command(&self) -> Option<bytes::Bytes> {
        if !self.resp3 {
            return self.auth_command();
        }
        let mut args: Vec<&[u8]> = vec![b"3"];
        if let Some(password) = &self.password {
            args.push(b"AUTH");
            args.push(self.username.as_deref().unwrap_or("default").as_bytes());
            args.push(password.as_bytes());
        }
        Some(write::command(b"HELLO", &args))
    }

    /// The `AUTH` command keyward sends on a new connection, if it has credentials.
    pub fn auth_command(&self) -> Option<bytes::Bytes> {
        let password = self.password.as_ref()?;
        Some(match &self.username {
            Some(user) => write::command(b"AUTH", &[user.as_bytes(), password.as_bytes()]),
            None => write::command(b"AUTH", &[password.as_bytes()]),
        })
    }
}
