//! TLS with rustls: the listener's side (`[server.tls]`) and keyward's side as a client of a
//! TLS-enabled Redis (`[upstream.tls]`).
//!
//! Everything here is built from the files the configuration names, once at start-up; the same
//! builders run when the configuration is validated, so that a missing, unreadable or malformed
//! file, or a key that does not belong to its certificate, stops keyward before it listens (with
//! the key and the file named) instead of failing every handshake later.
//!
//! The cryptography is rustls's `ring` provider, chosen explicitly rather than through rustls's
//! process-wide default, so that no other crate in the build can change it. A finished handshake
//! becomes a [`Socket`] through [`net::bridge`]: sessions never see TLS.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

use crate::net::{self, Socket};

/// `[server.tls]`: keyward's certificate for its clients. Defined here, next to the code that
/// reads the files it names, so that TLS does not depend on the configuration loader.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsConfig {
    /// PEM: keyward's certificate, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM: the private key of `cert_file`.
    pub key_file: PathBuf,
    /// PEM: authorities whose client certificates are accepted. When set, a client without
    /// such a certificate cannot connect.
    pub client_ca_file: Option<PathBuf>,
}

/// `[upstream.tls]`: how keyward connects to a TLS-enabled Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamTlsConfig {
    /// PEM: the authorities that may sign Redis's certificate (no system roots are used).
    pub ca_file: PathBuf,
    /// The name Redis's certificate must carry; `None`: the host of the upstream address.
    pub server_name: Option<String>,
    /// PEM: keyward's client certificate, for a Redis with `tls-auth-clients yes`.
    pub cert_file: Option<PathBuf>,
    /// PEM: the private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// Longest a client may take to finish its TLS handshake. A connection that sends nothing (or
/// too little) would otherwise hold one of `max_clients` slots for ever.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a bridge may take, once its session has closed, to deliver what the session wrote
/// last, unless [`ServerTls::with_close_grace`] / [`ClientTls::with_close_grace`] say otherwise
/// (keyward passes `shutdown_timeout_ms`, whose default this is).
const DEFAULT_CLOSE_GRACE: Duration = Duration::from_secs(5);

/// A TLS file that cannot be used: `field` is the key inside `[server.tls]` or `[upstream.tls]`
/// (such as `"cert_file"`) that names it, `message` says which file and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsError {
    pub field: &'static str,
    pub message: String,
}

impl TlsError {
    fn new(field: &'static str, message: String) -> TlsError {
        TlsError { field, message }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a whole file, with an error that names it.
fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path)
        .map_err(|e| TlsError::new(field, format!("cannot read `{}`: {e}", path.display())))
}

/// Every certificate in a PEM file, in order (a chain: the certificate first, then the
/// intermediates); at least one.
fn certificates(
    field: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(field, path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            TlsError::new(
                field,
                format!("`{}` is not a valid PEM file: {e}", path.display()),
            )
        })?;
    if certs.is_empty() {
        return Err(TlsError::new(
            field,
            format!(
                "`{}` holds no certificate (expected a PEM block \"-----BEGIN CERTIFICATE-----\")",
                path.display()
            ),
        ));
    }
    Ok(certs)
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
fn private_key(field: &'static str, path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(field, path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| {
        let cause = match e {
            rustls_pki_types::pem::Error::NoItemsFound => {
                "holds no private key (expected a PEM block such as \
                 \"-----BEGIN PRIVATE KEY-----\")"
                    .to_string()
            }
            e => format!("is not a valid PEM file: {e}"),
        };
        TlsError::new(field, format!("`{}` {cause}", path.display()))
    })
}

/// The trusted certificate authorities in a PEM file.
fn roots(field: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(field, path)? {
        store.add(cert).map_err(|e| {
            TlsError::new(
                field,
                format!(
                    "`{}` holds a certificate rustls cannot use: {e}",
                    path.display()
                ),
            )
        })?;
    }
    Ok(store)
}

/// A private key rustls refused together with its certificate.
fn key_error(e: rustls::Error, key_file: &Path, cert_file: &Path) -> TlsError {
    let cause = match e {
        rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
            "is not the private key of the certificate".to_string()
        }
        e => format!("cannot be used with the certificate: {e}"),
    };
    TlsError::new(
        "key_file",
        format!(
            "`{}` {cause} in `{}`",
            key_file.display(),
            cert_file.display()
        ),
    )
}

/// The listener's TLS: keyward's certificate, and which client certificates it requires.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: tokio_rustls::TlsAcceptor,
    close_grace: Duration,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// Reads and checks the files of `[server.tls]`.
    pub fn new(config: &ServerTlsConfig) -> Result<ServerTls, TlsError> {
        let certs = certificates("cert_file", &config.cert_file)?;
        let key = private_key("key_file", &config.key_file)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("cert_file", e.to_string()))?;
        let builder = match &config.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let roots = roots("client_ca_file", path)?;
                // Without allow_unauthenticated(): a client without a certificate signed by
                // one of these authorities fails the handshake.
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| {
                            TlsError::new(
                                "client_ca_file",
                                format!("`{}` cannot be used: {e}", path.display()),
                            )
                        })?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let server = builder
            .with_single_cert(certs, key)
            .map_err(|e| key_error(e, &config.key_file, &config.cert_file))?;
        Ok(ServerTls {
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(server)),
            close_grace: DEFAULT_CLOSE_GRACE,
        })
    }

    /// Sets how long a client's bridge may take, once the session has closed, to deliver its
    /// last replies (see [`net::bridge`]).
    pub fn with_close_grace(mut self, grace: Duration) -> ServerTls {
        self.close_grace = grace;
        self
    }

    /// Runs the handshake with a client (within [`HANDSHAKE_TIMEOUT`]) and returns the socket
    /// the session uses, with the bridge that serves it. `UnexpectedEof`: the client closed
    /// before finishing the handshake.
    pub async fn accept(
        &self,
        stream: TcpStream,
        peer: String,
    ) -> std::io::Result<(Socket, net::Bridge)> {
        let _ = stream.set_nodelay(true);
        let stream =
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(stream)).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "handshake not finished within {} s",
                            HANDSHAKE_TIMEOUT.as_secs()
                        ),
                    ));
                }
            };
        net::bridge(stream, "client", peer, self.close_grace)
    }
}

/// keyward's TLS as a client of Redis: the authorities it trusts, the name it expects on the
/// server's certificate, and its own certificate when it has one.
#[derive(Clone)]
pub struct ClientTls {
    connector: tokio_rustls::TlsConnector,
    /// `upstream.tls.server_name`: the name every upstream certificate must carry. Unset, each
    /// connection expects the host it connects to, which for a Redis Cluster differs from
    /// node to node.
    server_name: Option<ServerName<'static>>,
    close_grace: Duration,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// Reads and checks the files of `[upstream.tls]`. Unless `server_name` is set, every
    /// connection expects the host of the address it connects to; `upstream` (the first
    /// configured address) is checked for that here.
    pub fn new(config: &UpstreamTlsConfig, upstream: &str) -> Result<ClientTls, TlsError> {
        let server_name = match &config.server_name {
            Some(name) => Some(
                ServerName::try_from(name.clone())
                    .map_err(|e| TlsError::new("server_name", format!("`{name}` {e}")))?,
            ),
            None => {
                // Checked here for the configured address, so that a host that cannot be a
                // server name stops keyward at start-up with the key named.
                let host = host_of(upstream);
                ServerName::try_from(host.to_string()).map_err(|e| {
                    TlsError::new(
                        "server_name",
                        format!(
                            "is not set and the host `{host}` of the upstream address {e}; set \
                             upstream.tls.server_name"
                        ),
                    )
                })?;
                None
            }
        };
        let roots = roots("ca_file", &config.ca_file)?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::new("ca_file", e.to_string()))?
            .with_root_certificates(roots);
        let client = match (&config.cert_file, &config.key_file) {
            (Some(cert_file), Some(key_file)) => {
                let certs = certificates("cert_file", cert_file)?;
                let key = private_key("key_file", key_file)?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| key_error(e, key_file, cert_file))?
            }
            (None, None) => builder.with_no_client_auth(),
            (Some(_), None) => {
                return Err(TlsError::new(
                    "cert_file",
                    "is set but upstream.tls.key_file is not; a client certificate needs its key"
                        .into(),
                ));
            }
            (None, Some(_)) => {
                return Err(TlsError::new(
                    "key_file",
                    "is set but upstream.tls.cert_file is not; a client key needs its certificate"
                        .into(),
                ));
            }
        };
        Ok(ClientTls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
            server_name,
            close_grace: DEFAULT_CLOSE_GRACE,
        })
    }

    /// Sets how long an upstream connection's bridge may take, once the session has closed the
    /// connection, to deliver what it wrote last (see [`net::bridge`]).
    pub fn with_close_grace(mut self, grace: Duration) -> ClientTls {
        self.close_grace = grace;
        self
    }

    /// Runs the handshake with Redis over `stream` and returns the socket keyward uses. The
    /// caller bounds the time (the upstream connect timeout).
    pub async fn connect(&self, stream: TcpStream, addr: &str) -> std::io::Result<Socket> {
        let server_name = match &self.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(host_of(addr).to_string())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        };
        let stream = self.connector.connect(server_name, stream).await?;
        // Nobody waits for an upstream connection's bridge: it ends on its own once the session
        // has closed its end.
        let (socket, _bridge) =
            net::bridge(stream, "upstream", addr.to_string(), self.close_grace)?;
        Ok(socket)
    }
}

/// Whether an error of [`ClientTls::connect`] is the server's certificate being refused (an
/// unknown issuer, a name it is not valid for, expired...): a configuration error, not a
/// network one.
pub fn is_certificate_error(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| matches!(e, rustls::Error::InvalidCertificate(_)))
}

/// The host part of `HOST:PORT` or `[IPv6]:PORT`, without brackets.
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_of_strips_the_port_and_brackets() {
        assert_eq!(host_of("127.0.0.1:6379"), "127.0.0.1");
        assert_eq!(host_of("redis.example:6380"), "redis.example");
        assert_eq!(host_of("[::1]:6379"), "::1");
    }
}
