//! Connections to Redis: where and how keyward connects ([`UpstreamTarget`]), the dialer every
//! connection goes through (`dial.rs`), and a few connections kept ready ahead of need
//! (`warm_pool.rs`).

mod dial;
mod warm_pool;

use std::time::Duration;

use crate::protocol::write;
use crate::tls::ClientTls;

pub use dial::{DialError, DialFailure};
pub use warm_pool::WarmPool;

/// Where and how keyward connects upstream.
#[derive(Debug, Clone)]
pub struct UpstreamTarget {
    pub addr: String,
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
