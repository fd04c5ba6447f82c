//! Certificates made at run time for TLS tests, and a TLS-only Redis.
//!
//! [`TlsFiles::generate`] makes a fresh certificate authority and, signed by it, a server
//! certificate for `localhost` / `127.0.0.1` and a client certificate, all written as PEM files
//! into a temporary directory that lives as long as the value. Nothing is read from the
//! repository, so nothing expires.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use super::RedisServer;

/// A CA, a server certificate and a client certificate, as PEM files.
pub struct TlsFiles {
    dir: tempfile::TempDir,
}

impl TlsFiles {
    /// Generates everything into a new temporary directory; the certificates are valid for
    /// `localhost` and `127.0.0.1`.
    pub fn generate() -> TlsFiles {
        Self::generate_for(&["localhost", "127.0.0.1"])
    }

    /// [`generate`](Self::generate) with certificates valid for `names` (DNS names or IP
    /// addresses) only.
    pub fn generate_for(names: &[&str]) -> TlsFiles {
        let dir = tempfile::tempdir().expect("tempdir for certificates");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "keyward test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA certificate");
        write(dir.path(), "ca.pem", &ca.pem());

        for (name, purpose, common_name) in [
            ("server", ExtendedKeyUsagePurpose::ServerAuth, "localhost"),
            (
                "client",
                ExtendedKeyUsagePurpose::ClientAuth,
                "keyward test client",
            ),
        ] {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            let mut params = CertificateParams::new(names).expect("leaf params");
            params
                .distinguished_name
                .push(DnType::CommonName, common_name);
            params.extended_key_usages = vec![purpose];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            let key = KeyPair::generate().expect("leaf key");
            let cert = params.signed_by(&key, &ca).expect("leaf certificate");
            write(dir.path(), &format!("{name}.pem"), &cert.pem());
            write(dir.path(), &format!("{name}.key"), &key.serialize_pem());
        }
        TlsFiles { dir }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate that signed both others.
    pub fn ca(&self) -> String {
        self.path("ca.pem")
    }

    pub fn server_cert(&self) -> String {
        self.path("server.pem")
    }

    pub fn server_key(&self) -> String {
        self.path("server.key")
    }

    pub fn client_cert(&self) -> String {
        self.path("client.pem")
    }

    pub fn client_key(&self) -> String {
        self.path("client.key")
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_string_lossy().into_owned()
    }

    /// `redis-cli` options for a TLS connection that trusts the CA, with or without the client
    /// certificate.
    pub fn cli_args(&self, client_cert: bool) -> Vec<String> {
        let mut args = vec!["--tls".to_string(), "--cacert".into(), self.ca()];
        if client_cert {
            args.extend([
                "--cert".into(),
                self.client_cert(),
                "--key".into(),
                self.client_key(),
            ]);
        }
        args
    }

    /// `redis-server` options for TLS only on `port` (plain TCP off), with client certificates
    /// signed by the CA required (Redis's default `tls-auth-clients yes`).
    pub fn redis_args(&self, port: u16) -> Vec<String> {
        vec![
            "--port".into(),
            "0".into(),
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            self.server_cert(),
            "--tls-key-file".into(),
            self.server_key(),
            "--tls-ca-cert-file".into(),
            self.ca(),
        ]
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl RedisServer {
    /// A Redis that speaks TLS only, with the certificates of `files`; [`RedisServer::cli`]
    /// talks to it with TLS and the client certificate.
    pub fn start_tls(files: &TlsFiles) -> RedisServer {
        let files_args = files.cli_args(true);
        Self::start_custom(|port| files.redis_args(port), files_args)
    }
}

/// A TLS client connection made with rustls (ring), for raw RESP over TLS.
pub struct TlsClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
}

impl TlsClient {
    /// Connects to `addr` trusting the CA of `files` (expecting the name `127.0.0.1` on the
    /// server's certificate), presenting the client certificate when `client_cert`.
    pub fn connect(addr: &str, files: &TlsFiles, client_cert: bool) -> std::io::Result<TlsClient> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(files.ca()).expect("CA file") {
            roots.add(cert.expect("CA certificate")).expect("add CA");
        }
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots);
        let config = if client_cert {
            let certs = CertificateDer::pem_file_iter(files.client_cert())
                .expect("client cert file")
                .collect::<Result<Vec<_>, _>>()
                .expect("client certificate");
            let key = PrivateKeyDer::from_pem_file(files.client_key()).expect("client key");
            builder
                .with_client_auth_cert(certs, key)
                .expect("client auth")
        } else {
            builder.with_no_client_auth()
        };
        let name = ServerName::try_from("127.0.0.1").expect("server name");
        let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
            .map_err(std::io::Error::other)?;
        let sock = std::net::TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(super::IO_TIMEOUT))?;
        sock.set_write_timeout(Some(super::IO_TIMEOUT))?;
        Ok(TlsClient {
            stream: rustls::StreamOwned::new(conn, sock),
        })
    }

    /// Writes all of `bytes` (the handshake runs on first use).
    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write;
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Sends TLS `close_notify` and closes the TCP connection for writing: the server sees the
    /// end of the client's requests, and may still answer them.
    pub fn half_close(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        self.stream.conn.send_close_notify();
        self.stream.flush()?;
        self.stream.sock.shutdown(std::net::Shutdown::Write)
    }

    /// Reads `n` replies (each within the I/O timeout); panics with what arrived otherwise.
    pub fn read_replies(&mut self, n: usize) -> Vec<super::Reply> {
        use std::io::Read;
        let mut buf = Vec::new();
        let mut replies = Vec::with_capacity(n);
        let mut chunk = [0u8; 16 * 1024];
        while replies.len() < n {
            match super::parse_reply(&buf) {
                Ok(Some((reply, used))) => {
                    buf.drain(..used);
                    replies.push(reply);
                    continue;
                }
                Ok(None) => {}
                Err(e) => panic!("malformed reply over TLS: {e}"),
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("connection closed after {} of {n} replies", replies.len()),
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                Err(e) => panic!("read failed after {} of {n} replies: {e}", replies.len()),
            }
        }
        assert!(
            buf.is_empty(),
            "unexpected bytes after {n} replies: {buf:?}"
        );
        replies
    }

    /// The TCP connection under the TLS session (to set socket options or read its address).
    pub fn socket(&self) -> &std::net::TcpStream {
        &self.stream.sock
    }

    /// Reads one reply; an error when the connection ends or fails first, or the read times
    /// out (the I/O timeout unless [`TlsClient::socket`] was given another).
    pub fn try_read_reply(&mut self) -> std::io::Result<super::Reply> {
        use std::io::Read;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match super::parse_reply(&buf) {
                Ok(Some((reply, used))) if used == buf.len() => return Ok(reply),
                Ok(Some(_)) => {
                    return Err(std::io::Error::other(format!(
                        "more than one reply: {buf:?}"
                    )));
                }
                Ok(None) => {}
                Err(e) => return Err(std::io::Error::other(format!("malformed reply: {e}"))),
            }
            match self.stream.read(&mut chunk)? {
                0 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("closed after {} bytes", buf.len()),
                    ));
                }
                k => buf.extend_from_slice(&chunk[..k]),
            }
        }
    }

    /// Waits for the server to close: `Ok(())` on a clean end of stream, the error otherwise
    /// (a timeout included).
    pub fn read_close(&mut self) -> std::io::Result<()> {
        use std::io::Read;
        let mut chunk = [0u8; 1024];
        match self.stream.read(&mut chunk)? {
            0 => Ok(()),
            k => Err(std::io::Error::other(format!(
                "unexpected {k} bytes before the close"
            ))),
        }
    }
}
