//! The API's errors: a status and a JSON body with a stable code, never a bare status.
//!
//! `{"success": false, "error": {"code": "...", "message": "...", "key": "..."}}`; `key` when one
//! key is the cause, `removed` when a delete failed part-way (keys removed before the failure).

use hyper::StatusCode;

use crate::guard::{Refusal, Rule};
use crate::keyops::RemoveError;

/// One error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub key: Option<String>,
    /// A delete that failed part-way: the keys removed before it did.
    pub removed: Option<i64>,
}

/// Every error code, with its status: the OpenAPI document lists them from here.
pub const CODES: &[(&str, u16, &str)] = &[
    (
        "bad_request",
        400,
        "the body is not valid JSON, has a wrong type or an unknown field, or names no key",
    ),
    (
        "unauthorized",
        401,
        "no valid credentials (HTTP Basic user:password, or Bearer <password> of the default user)",
    ),
    (
        "denied",
        403,
        "the command is in [guard] deny_commands for this user",
    ),
    ("not_found", 404, "no such route or hook"),
    (
        "method_not_allowed",
        405,
        "the route exists with another method",
    ),
    (
        "payload_too_large",
        413,
        "the body is larger than [http] max_body_bytes",
    ),
    (
        "unsupported_media_type",
        415,
        "the body is not sent as application/json",
    ),
    (
        "wildcard_chars",
        422,
        "a key holds a wildcard character; nothing was deleted",
    ),
    (
        "max_keys",
        422,
        "more distinct keys than [guard] max_keys; nothing was deleted",
    ),
    (
        "protected_prefixes",
        422,
        "a key is under a protected prefix ([guard] protected_prefixes); nothing was deleted",
    ),
    (
        "delete_prefixes",
        422,
        "a key is outside the user's delete scope (delete_prefixes); nothing was deleted",
    ),
    (
        "rate_limit",
        429,
        "the delete would exceed max_deleted_keys_per_second; nothing was deleted; the message says when to retry",
    ),
    (
        "missing_param",
        422,
        "a hook's template needs a parameter the request does not give; nothing was deleted",
    ),
    (
        "upstream",
        502,
        "Redis is unavailable or failed; `removed` tells how many keys were removed before",
    ),
];

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            key: None,
            removed: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn upstream(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, "upstream", message)
    }

    /// A guard refusal: 403 for a denied command, 422 for a key rule.
    pub fn refused(refusal: Refusal) -> Self {
        let status = match refusal.rule {
            Rule::DenyCommands => StatusCode::FORBIDDEN,
            Rule::RateLimit => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let code = match refusal.rule {
            Rule::DenyCommands => "denied",
            Rule::Arity => "bad_request",
            rule => rule.name(),
        };
        let message = refusal
            .message
            .strip_prefix("ERR ")
            .unwrap_or(&refusal.message)
            .to_string();
        ApiError {
            key: refusal.key,
            ..Self::new(status, code, message)
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({ "code": self.code, "message": self.message });
        if let Some(key) = &self.key {
            error["key"] = key.clone().into();
        }
        let mut body = serde_json::json!({ "success": false, "error": error });
        if let Some(removed) = self.removed {
            body["removed"] = removed.into();
        }
        body
    }
}

impl From<RemoveError> for ApiError {
    fn from(e: RemoveError) -> Self {
        match e {
            RemoveError::Refused(refusal) => ApiError::refused(refusal),
            RemoveError::MissingParam(missing) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "missing_param",
                missing.to_string(),
            ),
            RemoveError::Upstream { removed, message } => ApiError {
                removed: Some(removed),
                ..ApiError::upstream(format!("Redis: {message}"))
            },
        }
    }
}
