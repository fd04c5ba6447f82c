//! The routes: authentication, then one handler per endpoint over [`KeyOps`].

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, Request, Response, StatusCode};

use super::body::{HookRequest, KeysRequest, SetRequest, value_json};
use super::error::ApiError;
use crate::audit::Via;
use crate::auth::{DEFAULT_USER, Login};
use crate::commands;
use crate::guard::Verdict;
use crate::hooks::Params;
use crate::keyops::{Caller, KeyOps, SetEntry};
use crate::protocol::args::OwnedArgs;
use crate::session::{Live, SessionContext};

/// How long a client may take to send a request body.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// A body over `max_body_bytes` is still read and thrown away, up to this much and for up to
/// [`LINGER_TIME`], before the 413 goes out: a client that writes its whole body before reading
/// (most do) would otherwise see its connection reset instead of the answer.
const LINGER_BYTES: u64 = 64 * 1024 * 1024;
const LINGER_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// Every route, as the OpenAPI document lists it: (method, path).
pub const ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/keys/remove"),
    ("post", "/v1/keys/get"),
    ("post", "/v1/keys/set"),
    ("post", "/v1/hooks/{name}"),
    ("get", "/v1/openapi.json"),
];

/// What the handlers need.
pub struct Api {
    pub live: Arc<Live>,
    pub ops: Arc<KeyOps>,
    pub max_body_bytes: usize,
    /// The OpenAPI document, rendered once.
    pub openapi: Bytes,
}

type Answer = Result<serde_json::Value, ApiError>;

impl Api {
    /// Answers one request; every error is a JSON body.
    pub async fn handle(
        &self,
        peer: SocketAddr,
        request: Request<Incoming>,
    ) -> Response<Full<Bytes>> {
        let path = request.uri().path().to_string();
        let method = request.method().clone();
        let dry_run = request.uri().query().is_some_and(|q| {
            q.split('&')
                .any(|p| p == "dry_run=true" || p == "dry_run=1")
        });
        if path == "/v1/openapi.json" {
            if method != Method::GET {
                return unread(request, &method_not_allowed("GET")).await;
            }
            return response(StatusCode::OK, self.openapi.clone());
        }
        let hook = path.strip_prefix("/v1/hooks/").map(str::to_string);
        let known = matches!(
            path.as_str(),
            "/v1/keys/remove" | "/v1/keys/get" | "/v1/keys/set"
        ) || hook
            .as_deref()
            .is_some_and(|h| !h.is_empty() && !h.contains('/'));
        if !known {
            let e = ApiError::not_found(format!("no route {method} {path}"));
            return unread(request, &e).await;
        }
        if method != Method::POST {
            return unread(request, &method_not_allowed("POST")).await;
        }
        let (_, ctx) = self.live.current();
        let caller = match authenticate(&ctx, peer, &request).await {
            Ok(caller) => caller,
            Err(e) => {
                let mut response = unread(request, &e).await;
                response.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"keyward\""),
                );
                return response;
            }
        };
        let empty_allowed = hook.is_some();
        let body = match self.read_body(request, empty_allowed).await {
            Ok(body) => body,
            Err(e) => return error_response(&e),
        };
        let answer = match (path.as_str(), hook) {
            ("/v1/keys/remove", _) if dry_run => self.preview(&ctx, &caller, &body).await,
            ("/v1/keys/remove", _) => self.remove(&ctx, &caller, &body).await,
            ("/v1/keys/get", _) => self.get(&ctx, &caller, &body).await,
            ("/v1/keys/set", _) => self.set(&ctx, &caller, &body).await,
            (_, Some(name)) => self.hook(&ctx, &caller, &name, &body).await,
            _ => Err(ApiError::not_found(format!("no route {method} {path}"))),
        };
        match answer {
            Ok(body) => response(StatusCode::OK, Bytes::from(body.to_string())),
            Err(e) => error_response(&e),
        }
    }

    /// The body, within `max_body_bytes` and sent as JSON (an empty body may come without a
    /// content type where `empty_allowed`).
    async fn read_body(
        &self,
        request: Request<Incoming>,
        empty_allowed: bool,
    ) -> Result<Bytes, ApiError> {
        let too_large = || {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "the body is larger than {} bytes ([http] max_body_bytes)",
                    self.max_body_bytes
                ),
            )
        };
        let declared = request
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json);
        let has_type = request.headers().contains_key(CONTENT_TYPE);
        if declared.is_some_and(|n| n > self.max_body_bytes as u64) {
            if declared.is_some_and(|n| n <= LINGER_BYTES) {
                drain(request.into_body()).await;
            }
            return Err(too_large());
        }
        let mut body = request.into_body();
        let mut collected = bytes::BytesMut::new();
        let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
        loop {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Err(_) => return Err(ApiError::bad_request("the body did not arrive in time")),
                Ok(None) => break,
                Ok(Some(Ok(frame))) => {
                    if let Ok(data) = frame.into_data() {
                        if collected.len() + data.len() > self.max_body_bytes {
                            drain(body).await;
                            return Err(too_large());
                        }
                        collected.extend_from_slice(&data);
                    }
                }
                Ok(Some(Err(e))) => {
                    return Err(ApiError::bad_request(format!("reading the body: {e}")));
                }
            }
        }
        let body = collected.freeze();
        let empty_without_type = empty_allowed && body.is_empty() && !has_type;
        if !(json || empty_without_type) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON, with Content-Type: application/json",
            ));
        }
        Ok(body)
    }

    async fn remove(&self, ctx: &SessionContext, caller: &Caller, body: &[u8]) -> Answer {
        let request: KeysRequest = parse(body)?;
        let keys = keys_of(&request)?;
        let removed = self
            .ops
            .remove_guarded(&ctx.rules(), caller, Via::Http, keys)
            .await?;
        Ok(serde_json::json!({
            "success": true,
            "requested": removed.requested,
            "removed": removed.removed,
        }))
    }

    /// `POST /v1/keys/remove?dry_run=true`: every rule, then the keys that exist now.
    async fn preview(&self, ctx: &SessionContext, caller: &Caller, body: &[u8]) -> Answer {
        let request: KeysRequest = parse(body)?;
        let keys = keys_of(&request)?;
        let preview = self.ops.preview_guarded(&ctx.rules(), caller, keys).await?;
        Ok(serde_json::json!({
            "success": true,
            "dry_run": true,
            "requested": preview.requested,
            "would_remove": preview.removed,
        }))
    }

    async fn get(&self, ctx: &SessionContext, caller: &Caller, body: &[u8]) -> Answer {
        let request: KeysRequest = parse(body)?;
        let mut keys = keys_of(&request)?;
        keys.sort_unstable();
        keys.dedup();
        check_allowed(ctx, caller, b"MGET")?;
        check_count(ctx, keys.len(), "get")?;
        let values = self
            .ops
            .get(&keys)
            .await
            .map_err(|e| ApiError::upstream(format!("Redis: {e}")))?;
        let mut map = serde_json::Map::with_capacity(keys.len());
        for (key, value) in keys.iter().zip(values) {
            let key = String::from_utf8_lossy(key).into_owned();
            let value = value.map_or(serde_json::Value::Null, |v| value_json(&v));
            map.insert(key, value);
        }
        Ok(serde_json::json!({ "success": true, "values": map }))
    }

    async fn set(&self, ctx: &SessionContext, caller: &Caller, body: &[u8]) -> Answer {
        let request: SetRequest = parse(body)?;
        let entries = request.into_entries().map_err(ApiError::bad_request)?;
        check_allowed(ctx, caller, b"SET")?;
        check_count(ctx, entries.len(), "set")?;
        let entries: Vec<SetEntry> = entries
            .into_iter()
            .map(|e| SetEntry {
                key: e.key.into_bytes(),
                value: e.value.0,
                ttl_ms: e.ttl_ms,
            })
            .collect();
        if entries.iter().any(|e| e.ttl_ms == Some(0)) {
            return Err(ApiError::bad_request("ttl_ms must be at least 1"));
        }
        match self.ops.set(&entries).await {
            Ok(set) => Ok(serde_json::json!({ "success": true, "set": set })),
            Err((set, message)) => Err(ApiError {
                message: format!("Redis: {message} ({set} of {} entries set)", entries.len()),
                ..ApiError::upstream("")
            }),
        }
    }

    async fn hook(&self, ctx: &SessionContext, caller: &Caller, name: &str, body: &[u8]) -> Answer {
        let request: HookRequest = if body.is_empty() {
            HookRequest::default()
        } else {
            parse(body)?
        };
        let Some(hook) = ctx.hooks.get(name.as_bytes()) else {
            return Err(ApiError::not_found(format!("no hook named '{name}'")));
        };
        check_allowed(ctx, caller, b"RUNHOOK")?;
        let mut params = Params::new();
        for (name, value) in request.params {
            params.set(&name, value.0.into_bytes());
        }
        let removed = self
            .ops
            .run_hook(&ctx.rules(), caller, hook, &params)
            .await?;
        Ok(serde_json::json!({
            "success": true,
            "requested": removed.requested,
            "removed": removed.removed,
        }))
    }
}

/// The answer `e` to a request whose body is not wanted: the body is drained first (see
/// [`LINGER_BYTES`]), since a client still writing it would otherwise have its connection reset
/// under the answer.
async fn unread(request: Request<Incoming>, e: &ApiError) -> Response<Full<Bytes>> {
    drain(request.into_body()).await;
    error_response(e)
}

/// Reads and drops what is left of a body, up to [`LINGER_BYTES`] and [`LINGER_TIME`].
async fn drain(mut body: Incoming) {
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut seen = 0u64;
    while seen <= LINGER_BYTES {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                seen += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            _ => return,
        }
    }
}

/// Who sent the request: the credentials checked against keyward's users (HTTP Basic, or a
/// bearer password for the default user), or anyone when keyward does not authenticate.
async fn authenticate(
    ctx: &SessionContext,
    peer: SocketAddr,
    request: &Request<Incoming>,
) -> Result<Caller, ApiError> {
    let open = Caller::of(peer, &Login::Open);
    let Some(auth) = ctx.auth.as_deref() else {
        return Ok(open);
    };
    let unauthorized = |why: &str| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            format!(
                "{why}: use HTTP Basic with a keyward user and password, or `Authorization: \
                 Bearer <password>` for the default user"
            ),
        )
    };
    let Some(header) = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(unauthorized("no credentials"));
    };
    let (name, password) = match header.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => {
            use base64::Engine;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| unauthorized("malformed Basic credentials"))?;
            let text = String::from_utf8(decoded)
                .map_err(|_| unauthorized("malformed Basic credentials"))?;
            let (name, password) = text
                .split_once(':')
                .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
            (name.to_string(), password.to_string())
        }
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => {
            (DEFAULT_USER.to_string(), rest.trim().to_string())
        }
        _ => return Err(unauthorized("unsupported Authorization scheme")),
    };
    match auth
        .check_credentials(peer.ip(), name.as_bytes(), password.as_bytes())
        .await
    {
        Some(login) => Ok(Caller::of(peer, &login)),
        None => Err(unauthorized("invalid user or password")),
    }
}

/// Refuses with 403 what `[guard] deny_commands` refuses this user (`MGET`, `SET`).
fn check_allowed(ctx: &SessionContext, caller: &Caller, command: &[u8]) -> Result<(), ApiError> {
    let args = OwnedArgs::from_parts(&[command]);
    let spec = commands::lookup(command);
    match ctx.guard.check_as(spec, args.args(), caller.rights()) {
        Verdict::Refuse(refusal) => Err(ApiError::refused(refusal)),
        _ => Ok(()),
    }
}

/// Refuses more keys than `max_keys` in one get or set, as the guard does for deletes.
fn check_count(ctx: &SessionContext, n: usize, what: &str) -> Result<(), ApiError> {
    let max = ctx.guard.max_keys();
    if n > max {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "max_keys",
            format!(
                "{what} refused, {n} keys exceed the limit of {max} keys per request (rule \
                 max_keys); send the keys in batches of at most {max}"
            ),
        ));
    }
    Ok(())
}

/// The keys of a request, borrowed from its body; refused when there are none.
fn keys_of<'a>(request: &'a KeysRequest<'_>) -> Result<Vec<&'a [u8]>, ApiError> {
    if request.keys.0.is_empty() {
        return Err(ApiError::bad_request("`keys` names no key"));
    }
    Ok(request.keys.0.iter().map(|k| k.as_bytes()).collect())
}

/// The body as `T`; only a JSON object is taken (serde would also fill a struct from an array,
/// field by field).
fn parse<'a, T: serde::Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        return Err(ApiError::bad_request(
            "invalid body: expected a JSON object at line 1 column 1",
        ));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid body: {e}")))
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

fn method_not_allowed(allowed: &str) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("use {allowed}"),
    )
}

fn response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    response(e.status, Bytes::from(e.body().to_string()))
}
