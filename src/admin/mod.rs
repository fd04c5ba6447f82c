//! The admin listener: HTTP for operators and their tools, on an address of its own, apart from
//! the clients' port. Off unless `[admin] listen` is set; metrics are collected only then.
//!
//! - `GET /metrics`: Prometheus text exposition format ([`crate::metrics`]);
//! - `GET /healthz`: 200 while the process serves;
//! - `GET /readyz`: 200 when keyward can serve clients ([`readiness`]), else 503 with a JSON body
//!   saying why;
//! - `GET /config`: the effective configuration as JSON, secrets masked as `--check-config`
//!   masks them;
//! - `POST /reload`: reads the configuration again, as SIGHUP does ([`crate::reload`]).
//!
//! With `[admin] token_sha256`, every request must carry `Authorization: Bearer <token>` (401
//! otherwise). Errors are JSON bodies with a stable `error` code.

mod readiness;
mod settings;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

use crate::session::Backend;
pub use readiness::Readiness;
pub use settings::AdminConfig;

/// What the admin listener needs of hot reload (`reload::Reloader`), as a trait so that the
/// admin listener depends neither on the reloader nor, through it, on the configuration loader.
pub trait Reload: Send + Sync {
    /// Reads the configuration again; the settings that changed, or why nothing did.
    fn reload(&self) -> Result<Vec<String>, String>;
    /// The configuration in force as `--check-config` shows it (secrets masked).
    fn describe(&self) -> String;
    /// SHA-256 of the admin token in force, replaced by a reload.
    fn admin_token(&self) -> Arc<std::sync::RwLock<Option<[u8; 32]>>>;
}

/// What the admin endpoints answer from.
struct Admin {
    /// SHA-256 of the bearer token, replaced by a reload.
    token_sha256: Arc<std::sync::RwLock<Option<[u8; 32]>>>,
    reloader: Option<Arc<dyn Reload>>,
    readiness: Readiness,
    /// `/config` when there are no reloads: the configuration keyward started with.
    description: String,
}

/// Binds the admin listener (so that a taken port stops keyward at start-up) and starts serving
/// it in the background. Returns the bound address.
/// `description`: the configuration as `--check-config` shows it, for `/config` when there are
/// no reloads.
pub async fn start(
    settings: &AdminConfig,
    description: String,
    backend: &Backend,
    reloader: Option<Arc<dyn Reload>>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(&settings.listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on admin.listen {}: {e}", settings.listen),
        )
    })?;
    let addr = listener.local_addr()?;
    crate::metrics::enable();
    let admin = Arc::new(Admin {
        token_sha256: match &reloader {
            Some(reloader) => reloader.admin_token(),
            None => Arc::new(std::sync::RwLock::new(settings.token_sha256)),
        },
        reloader,
        readiness: Readiness::start(backend),
        description,
    });
    tokio::spawn(serve(listener, admin));
    Ok(addr)
}

async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "admin listener: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(request)) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            // A slow or silent HTTP client must not hold a task for ever.
            let _ = tokio::time::timeout(std::time::Duration::from_secs(30), connection).await;
        });
    }
}

impl Admin {
    fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if !self.authorized(&request) {
            let mut response = error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this admin listener needs `Authorization: Bearer <token>`",
            );
            response.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer"),
            );
            return response;
        }
        let path = request.uri().path();
        if path == "/reload" {
            return self.reload(request.method());
        }
        if request.method() != Method::GET {
            return match path {
                "/metrics" | "/healthz" | "/readyz" | "/config" => error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "use GET",
                ),
                _ => not_found(),
            };
        }
        match path {
            "/metrics" => {
                let text = crate::metrics::get()
                    .map(|m| m.render())
                    .unwrap_or_default();
                reply(
                    StatusCode::OK,
                    "text/plain; version=0.0.4; charset=utf-8",
                    Bytes::from(text),
                )
            }
            "/healthz" => reply(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n")),
            "/readyz" => match self.readiness.check() {
                Ok(()) => json(StatusCode::OK, &serde_json::json!({ "ready": true })),
                Err(reason) => json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({ "ready": false, "reason": reason }),
                ),
            },
            "/config" => {
                let description = match &self.reloader {
                    Some(reloader) => reloader.describe(),
                    None => self.description.clone(),
                };
                reply(
                    StatusCode::OK,
                    "application/json",
                    Bytes::from(config_json(&description)),
                )
            }
            _ => not_found(),
        }
    }

    /// `POST /reload`: as SIGHUP; 200 with the settings that changed, 400 with why nothing did.
    fn reload(&self, method: &Method) -> Response<Full<Bytes>> {
        if method != Method::POST {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "use POST",
            );
        }
        let Some(reloader) = &self.reloader else {
            return error(
                StatusCode::CONFLICT,
                "reload_unavailable",
                "this keyward was started without a command line to reload from",
            );
        };
        match reloader.reload() {
            Ok(changed) => json(
                StatusCode::OK,
                &serde_json::json!({ "reloaded": true, "changed": changed }),
            ),
            Err(message) => json(
                StatusCode::BAD_REQUEST,
                &serde_json::json!({ "reloaded": false, "error": "reload_refused", "message": message }),
            ),
        }
    }

    /// Whether the request carries the token, when one is configured (compared as digests, in
    /// constant time, as client passwords are).
    fn authorized(&self, request: &Request<Incoming>) -> bool {
        let expected = *self.token_sha256.read().unwrap_or_else(|e| e.into_inner());
        let Some(expected) = expected else {
            return true;
        };
        let Some(token) = request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        else {
            return false;
        };
        let digest: [u8; 32] = Sha256::digest(token).into();
        digest
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

/// The effective configuration as JSON: `--check-config`'s text (which masks every secret)
/// read back as TOML, so that both show the same thing.
fn config_json(description: &str) -> String {
    match description.parse::<toml::Table>() {
        Ok(table) => serde_json::to_string_pretty(&table).unwrap_or_default(),
        Err(e) => serde_json::json!({ "error": "internal", "message": e.to_string() }).to_string(),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut body = value.to_string();
    body.push('\n');
    reply(status, "application/json", Bytes::from(body))
}

fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({ "error": code, "message": message }),
    )
}

fn not_found() -> Response<Full<Bytes>> {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "endpoints: GET /metrics, /healthz, /readyz, /config; POST /reload",
    )
}
