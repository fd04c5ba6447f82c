//! The OpenAPI 3 document of the API, served at `GET /v1/openapi.json`. Written here, beside
//! the routes ([`super::api::ROUTES`]) and error codes ([`super::error::CODES`]) it is built
//! from; a test checks that every route the server serves is in it.

use serde_json::{Value, json};

use super::error::CODES;

/// The document.
pub fn document() -> Value {
    let error_responses = |codes: &[u16]| -> Value {
        let mut out = serde_json::Map::new();
        for status in codes {
            let described: Vec<String> = CODES
                .iter()
                .filter(|(_, s, _)| s == status)
                .map(|(code, _, what)| format!("`{code}`: {what}"))
                .collect();
            out.insert(
                status.to_string(),
                json!({
                    "description": described.join("; "),
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                }),
            );
        }
        Value::Object(out)
    };
    let with_errors = |ok: Value, codes: &[u16]| -> Value {
        let mut responses = error_responses(codes);
        responses["200"] = ok;
        responses
    };
    let ok = |schema: &str, description: &str| {
        json!({
            "description": description,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
        })
    };
    let body = |schema: &str| {
        json!({
            "required": true,
            "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}
        })
    };
    let delete_errors = [400, 401, 403, 413, 415, 422, 429, 502];
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "keyward HTTP API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Remove, read and write Redis keys through keyward, with the same guard \
                as REMOVEKEYS (no wildcard characters, at most [guard] max_keys keys per \
                request), and run invalidation hooks. Errors are JSON bodies with a stable code."
        },
        "security": [{"basic": []}, {"bearer": []}],
        "paths": {
            "/v1/keys/remove": {"post": {
                "summary": "Remove keys (missing keys are skipped); with dry_run=true, only say how many would be removed",
                "operationId": "removeKeys",
                "parameters": [{
                    "name": "dry_run", "in": "query", "required": false,
                    "schema": {"type": "boolean"},
                    "description": "Check every rule and count the keys that exist now; delete nothing"
                }],
                "requestBody": body("KeysRequest"),
                "responses": with_errors(json!({
                    "description": "The keys were removed (or, with dry_run, would be)",
                    "content": {"application/json": {"schema": {"oneOf": [
                        {"$ref": "#/components/schemas/RemoveResult"},
                        {"$ref": "#/components/schemas/PreviewResult"}
                    ]}}}
                }), &delete_errors)
            }},
            "/v1/keys/get": {"post": {
                "summary": "Read string values (null for a missing key or one that is not a string)",
                "operationId": "getKeys",
                "requestBody": body("KeysRequest"),
                "responses": with_errors(ok("GetResult", "The values"), &[400, 401, 403, 413, 415, 422, 502])
            }},
            "/v1/keys/set": {"post": {
                "summary": "Set string values, optionally with a time to live",
                "operationId": "setKeys",
                "requestBody": body("SetRequest"),
                "responses": with_errors(ok("SetResult", "The values were set"), &[400, 401, 403, 413, 415, 422, 502])
            }},
            "/v1/hooks/{name}": {"post": {
                "summary": "Run an invalidation hook ([[hooks]] in the configuration)",
                "operationId": "runHook",
                "parameters": [{
                    "name": "name", "in": "path", "required": true,
                    "schema": {"type": "string"}, "description": "The hook's name"
                }],
                "requestBody": {
                    "required": false,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/HookRequest"}}}
                },
                "responses": with_errors(ok("RemoveResult", "The hook's keys were removed"), &[400, 401, 403, 404, 413, 415, 422, 429, 502])
            }},
            "/v1/openapi.json": {"get": {
                "summary": "This document",
                "operationId": "openapi",
                "security": [],
                "responses": {"200": {"description": "The OpenAPI document", "content": {"application/json": {"schema": {"type": "object"}}}}}
            }}
        },
        "components": {
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic", "description": "A keyward user and password ([[server.users]], or `default` and [server] password)"},
                "bearer": {"type": "http", "scheme": "bearer", "description": "The default user's password ([server] password)"}
            },
            "schemas": {
                "Keys": {
                    "description": "One key or a list of keys (strings)",
                    "oneOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}, "minItems": 1}
                    ]
                },
                "Value": {
                    "description": "A string, or {\"base64\": ...} for bytes that are not UTF-8",
                    "oneOf": [
                        {"type": "string"},
                        {"type": "object", "required": ["base64"], "additionalProperties": false,
                         "properties": {"base64": {"type": "string", "format": "byte"}}}
                    ]
                },
                "KeysRequest": {
                    "type": "object", "required": ["keys"], "additionalProperties": false,
                    "properties": {"keys": {"$ref": "#/components/schemas/Keys"}}
                },
                "Entry": {
                    "type": "object", "required": ["key", "value"], "additionalProperties": false,
                    "properties": {
                        "key": {"type": "string"},
                        "value": {"$ref": "#/components/schemas/Value"},
                        "ttl_ms": {"type": "integer", "minimum": 1}
                    }
                },
                "SetRequest": {
                    "description": "One entry inline, or several in `entries`",
                    "oneOf": [
                        {"$ref": "#/components/schemas/Entry"},
                        {"type": "object", "required": ["entries"], "additionalProperties": false,
                         "properties": {"entries": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Entry"}}}}
                    ]
                },
                "HookRequest": {
                    "type": "object", "additionalProperties": false,
                    "properties": {"params": {
                        "type": "object",
                        "additionalProperties": {"oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
                    }}
                },
                "RemoveResult": {
                    "type": "object", "required": ["success", "requested", "removed"],
                    "properties": {
                        "success": {"type": "boolean"},
                        "requested": {"type": "integer", "description": "Distinct keys asked for"},
                        "removed": {"type": "integer", "description": "Keys removed (missing keys are skipped)"}
                    }
                },
                "PreviewResult": {
                    "type": "object", "required": ["success", "dry_run", "requested", "would_remove"],
                    "properties": {
                        "success": {"type": "boolean"},
                        "dry_run": {"type": "boolean", "enum": [true]},
                        "requested": {"type": "integer", "description": "Distinct keys asked for"},
                        "would_remove": {"type": "integer", "description": "Keys that exist now"}
                    }
                },
                "GetResult": {
                    "type": "object", "required": ["success", "values"],
                    "properties": {
                        "success": {"type": "boolean"},
                        "values": {"type": "object", "additionalProperties": {
                            "nullable": true,
                            "oneOf": [{"$ref": "#/components/schemas/Value"}]
                        }}
                    }
                },
                "SetResult": {
                    "type": "object", "required": ["success", "set"],
                    "properties": {"success": {"type": "boolean"}, "set": {"type": "integer"}}
                },
                "Error": {
                    "type": "object", "required": ["success", "error"],
                    "properties": {
                        "success": {"type": "boolean", "enum": [false]},
                        "error": {
                            "type": "object", "required": ["code", "message"],
                            "properties": {
                                "code": {"type": "string", "enum": CODES.iter().map(|c| c.0).collect::<Vec<_>>()},
                                "message": {"type": "string"},
                                "key": {"type": "string", "description": "The key that broke the rule, when one did"}
                            }
                        },
                        "removed": {"type": "integer", "description": "With `upstream` on a delete: keys removed before the failure"}
                    }
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::api::ROUTES;

    #[test]
    fn every_route_is_documented() {
        let doc = document();
        for (method, path) in ROUTES {
            assert!(
                doc["paths"][path][method].is_object(),
                "{method} {path} is not in the document"
            );
        }
    }
}
