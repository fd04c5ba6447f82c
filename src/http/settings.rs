//! The HTTP API's settings (`[http]`), owned here and assembled by `config`.

use crate::tls::ServerTlsConfig;

/// The default `max_body_bytes`: 8 MiB, room for a thousand keys of several KiB each.
pub const DEFAULT_MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// `[http]`: where the HTTP API listens, how large a request body may be, and its TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `HOST:PORT`; empty (the default) leaves the HTTP API off.
    pub listen: String,
    /// Larger request bodies are refused with 413 before they are read whole.
    pub max_body_bytes: usize,
    /// `[http.tls]`: the API speaks HTTPS only.
    pub tls: Option<ServerTlsConfig>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: String::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            tls: None,
        }
    }
}

impl HttpConfig {
    /// Whether the HTTP API is on.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }
}
