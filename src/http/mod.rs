//! The HTTP API: keyward's "remove Redis keys" call and its get/set siblings, and the triggers
//! of invalidation hooks, for services that are not Redis clients (a CMS webhook, a database
//! trigger, a deploy script). Off unless `[http] listen` is set.
//!
//! - `POST /v1/keys/remove`, `POST /v1/keys/get`, `POST /v1/keys/set`, `POST /v1/hooks/{name}`
//!   ([`api`]), JSON in and out ([`body`]), errors as JSON with stable codes ([`error`]);
//! - `GET /v1/openapi.json`: the OpenAPI 3 document ([`openapi`]).
//!
//! It runs over the same backend as RESP clients ([`crate::keyops`]) and answers to the same
//! users; `[http.tls]` makes it HTTPS.

mod api;
mod body;
mod error;
mod openapi;
mod settings;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::keyops::KeyOps;
use crate::session::Live;
use crate::tls::ServerTls;
pub use api::ROUTES;
pub use settings::{DEFAULT_MAX_BODY_BYTES, HttpConfig};

/// How long a client may take to send a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// Binds the HTTP API's listener (so that a taken port stops keyward at start-up) and starts
/// serving it in the background. Returns the bound address.
pub async fn start(
    config: &HttpConfig,
    live: Arc<Live>,
    ops: Arc<KeyOps>,
) -> std::io::Result<SocketAddr> {
    let tls = match &config.tls {
        Some(settings) => Some(Arc::new(ServerTls::new(settings).map_err(|e| {
            std::io::Error::other(format!("http.tls.{}: {}", e.field, e.message))
        })?)),
        None => None,
    };
    let listener = TcpListener::bind(&config.listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on http.listen {}: {e}", config.listen),
        )
    })?;
    let addr = listener.local_addr()?;
    let api = Arc::new(api::Api {
        live,
        ops,
        max_body_bytes: config.max_body_bytes,
        openapi: Bytes::from(openapi::document().to_string()),
    });
    tokio::spawn(serve(listener, api, tls));
    Ok(addr)
}

async fn serve(listener: TcpListener, api: Arc<api::Api>, tls: Option<Arc<ServerTls>>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "http listener: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let api = api.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => connection(stream, peer, api).await,
                Some(tls) => match tls.accept(stream, peer.to_string()).await {
                    Ok((socket, bridge)) => {
                        serve_connection(TokioIo::new(socket), peer, api).await;
                        bridge.finished().await;
                    }
                    Err(e) => {
                        tracing::debug!(client = %peer, error = %e, "http: TLS handshake failed")
                    }
                },
            }
        });
    }
}

async fn connection(stream: TcpStream, peer: SocketAddr, api: Arc<api::Api>) {
    let _ = stream.set_nodelay(true);
    serve_connection(TokioIo::new(stream), peer, api).await;
}

/// HTTP/1.1 with keep-alive on one connection; a client that takes longer than
/// [`HEADER_TIMEOUT`] to send headers is dropped.
async fn serve_connection<IO>(io: TokioIo<IO>, peer: SocketAddr, api: Arc<api::Api>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |request| {
        let api = api.clone();
        async move { Ok::<_, Infallible>(api.handle(peer, request).await) }
    });
    let result = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service)
        .await;
    if let Err(e) = result {
        tracing::debug!(client = %peer, error = %e, "http connection ended with an error");
    }
}
