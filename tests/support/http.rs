//! keyward's HTTP API as a client sees it, through a real HTTP client (ureq): requests with a
//! deadline, replies as status + headers + body, and the JSON error shape every failure shares.
//!
//! Not a module of `support` (so that the other test binaries do not compile it); a test file
//! that needs it says:
//!
//! ```ignore
//! mod support;
//! #[path = "support/http.rs"]
//! mod http;
//! ```

#![allow(dead_code)]

use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::support::{free_port, wait_until};

/// Deadline for one HTTP exchange.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// An `[http]` section listening on a free loopback port, `extra` lines added to it, and the
/// port. Keep it before any `[[hooks]]` or `[[server.users]]` text in the TOML overrides.
pub fn http_section(extra: &str) -> (String, u16) {
    let port = free_port();
    (
        format!("[http]\nlisten = \"127.0.0.1:{port}\"\n{extra}\n"),
        port,
    )
}

/// The hook of the spec's example: three keys per product, one of them shared by all.
pub const PRODUCT_HOOK: &str = "[[hooks]]\nname = \"product-updated\"\n\
     remove = [\"cache:product:{id}\", \"cache:product:{id}:reviews\", \"cache:home\"]\n";

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl HttpReply {
    /// The body as JSON; panics (showing the body) when it is not a JSON document served as
    /// `application/json`.
    pub fn json(&self) -> Value {
        let ct = self.content_type.as_deref().unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "status {}: content type {ct:?} is not application/json; body: {}",
            self.status,
            self.body
        );
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: the body is not JSON ({e}): {:?}",
                self.status, self.body
            )
        })
    }

    /// Asserts a 200 with `"success": true` and returns the JSON body.
    pub fn ok(&self) -> Value {
        assert_eq!(self.status, 200, "expected 200, got {self:?}");
        let v = self.json();
        assert_eq!(v["success"], true, "{v}");
        v
    }

    /// Asserts an error answer: `status`, `"success": false`, `error.code == code`, a non-empty
    /// `error.message`. Returns the `error` object.
    pub fn err(&self, status: u16, code: &str) -> Value {
        assert_eq!(
            self.status, status,
            "expected {status} {code}, got {} {}",
            self.status, self.body
        );
        let v = self.json();
        assert_eq!(v["success"], false, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        let message = v["error"]["message"].as_str().unwrap_or("");
        assert!(!message.is_empty(), "no error.message: {v}");
        v["error"].clone()
    }
}

/// A client for one keyward HTTP listener, optionally sending an `Authorization` header.
#[derive(Clone)]
pub struct HttpApi {
    pub base: String,
    pub port: u16,
    authorization: Option<String>,
    agent: ureq::Agent,
}

impl HttpApi {
    /// A client for `http://127.0.0.1:PORT`; waits (bounded) until the port accepts connections.
    pub fn new(port: u16) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .build()
            .into();
        let api = HttpApi {
            base: format!("http://127.0.0.1:{port}"),
            port,
            authorization: None,
            agent,
        };
        api.wait_up();
        api
    }

    /// A client for `https://localhost:PORT` that trusts only the CA certificate in the PEM
    /// file `ca_pem`; waits until the port accepts connections.
    pub fn https(port: u16, ca_pem: &str) -> Self {
        let pem = std::fs::read(ca_pem).unwrap_or_else(|e| panic!("read {ca_pem}: {e}"));
        let ca = ureq::tls::Certificate::from_pem(&pem).expect("a PEM certificate");
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::new_with_certs(&[ca]))
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(HTTP_TIMEOUT))
            .tls_config(tls)
            .build()
            .into();
        let api = HttpApi {
            base: format!("https://localhost:{port}"),
            port,
            authorization: None,
            agent,
        };
        api.wait_up();
        api
    }

    /// Polls until the HTTP port accepts a connection (the listener may come up after the
    /// server's start returned).
    pub fn wait_up(&self) {
        let addr = format!("127.0.0.1:{}", self.port).parse().expect("addr");
        assert!(
            wait_until(Duration::from_secs(10), || {
                TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            }),
            "the HTTP listener on port {} did not come up",
            self.port
        );
    }

    /// The same client sending `Authorization: <value>`.
    pub fn with_authorization(&self, value: &str) -> Self {
        let mut api = self.clone();
        api.authorization = Some(value.to_string());
        api
    }

    /// The same client with HTTP Basic credentials.
    pub fn basic(&self, user: &str, password: &str) -> Self {
        self.with_authorization(&format!(
            "Basic {}",
            base64_encode(format!("{user}:{password}").as_bytes())
        ))
    }

    /// The same client with `Authorization: Bearer <token>`.
    pub fn bearer(&self, token: &str) -> Self {
        self.with_authorization(&format!("Bearer {token}"))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn answer(
        what: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> HttpReply {
        let mut response = result.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .unwrap_or_else(|e| panic!("{what}: reading the body: {e}"));
        HttpReply {
            status,
            content_type,
            body,
        }
    }

    /// `POST path` with `body` as `application/json`.
    pub fn post(&self, path: &str, body: &Value) -> HttpReply {
        self.post_raw(path, Some("application/json"), body.to_string().as_bytes())
    }

    /// `POST path` with these exact body bytes and content type (none when `None`).
    pub fn post_raw(&self, path: &str, content_type: Option<&str>, body: &[u8]) -> HttpReply {
        let url = self.url(path);
        let mut request = self.agent.post(&url);
        if let Some(ct) = content_type {
            request = request.header("Content-Type", ct);
        }
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        Self::answer(&format!("POST {url}"), request.send(body))
    }

    /// `GET path`.
    pub fn get(&self, path: &str) -> HttpReply {
        let url = self.url(path);
        let mut request = self.agent.get(&url);
        if let Some(auth) = &self.authorization {
            request = request.header("Authorization", auth);
        }
        Self::answer(&format!("GET {url}"), request.call())
    }

    /// `POST /v1/keys/remove {"keys": keys}`.
    pub fn remove(&self, keys: Value) -> HttpReply {
        self.post("/v1/keys/remove", &serde_json::json!({ "keys": keys }))
    }

    /// `POST /v1/keys/get {"keys": keys}`.
    pub fn get_keys(&self, keys: Value) -> HttpReply {
        self.post("/v1/keys/get", &serde_json::json!({ "keys": keys }))
    }

    /// `POST /v1/keys/set body`.
    pub fn set(&self, body: Value) -> HttpReply {
        self.post("/v1/keys/set", &body)
    }

    /// `POST /v1/hooks/{name} {"params": params}`.
    pub fn hook(&self, name: &str, params: Value) -> HttpReply {
        self.post(
            &format!("/v1/hooks/{name}"),
            &serde_json::json!({ "params": params }),
        )
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); panics on anything else.
pub fn base64_decode(text: &str) -> Vec<u8> {
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = B64
            .iter()
            .position(|&x| x == c)
            .unwrap_or_else(|| panic!("not base64: {text:?}")) as u32;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    out
}

#[test]
fn base64_round_trips() {
    for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"\xff\x00\xfe\x80"] {
        assert_eq!(base64_decode(&base64_encode(data)), data);
    }
    assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64_encode(b"fooba"), "Zm9vYmE=");
}
