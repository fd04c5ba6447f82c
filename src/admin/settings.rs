//! The admin listener's settings (`[admin]`), owned here and assembled by `config`.

/// `[admin]`: where the admin HTTP listener (metrics, health, readiness, configuration) listens,
/// and the token it asks for.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct AdminConfig {
    /// `HOST:PORT`; empty (the default) leaves the admin listener off, and metrics with it.
    pub listen: String,
    /// SHA-256 of the bearer token requests must carry (`Authorization: Bearer <token>`);
    /// required when `listen` is not a loopback address.
    pub token_sha256: Option<[u8; 32]>,
}

impl AdminConfig {
    /// Whether the admin listener (and with it the collection of metrics) is on.
    pub fn enabled(&self) -> bool {
        !self.listen.is_empty()
    }
}

/// Written by hand so that `{:?}` never shows the token's hash.
impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminConfig")
            .field("listen", &self.listen)
            .field("token_sha256", &self.token_sha256.map(|_| "<set>"))
            .finish()
    }
}
