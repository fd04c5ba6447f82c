//! The HTTP API (`[http]`) in front of one Redis, through a real HTTP client (ureq): the keys
//! endpoints (remove, get, set with binary values), hooks over HTTP, the JSON errors and their
//! codes, the body limit, credentials, the OpenAPI document, and what happens when Redis is
//! gone. What keyward did is always checked on Redis directly.
//!
//! Every keyward here is served in-process (support::in_process) except in the test of the
//! command line, which needs the binary.

#[path = "support/http.rs"]
mod http;
mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use http::*;
use serde_json::{Value, json};
use support::in_process::InProcess;
use support::*;

/// A Redis and an in-process keyward with the HTTP API on (plus `extra` after the `[http]`
/// section: more `[http]` keys first, then other sections), and a client for the API.
fn start(http_extra: &str, extra: &str) -> (RedisServer, InProcess, HttpApi) {
    let redis = RedisServer::start();
    let (http, port) = http_section(http_extra);
    let keyward = InProcess::standalone(&redis.addr(), &format!("{http}{extra}"));
    let api = HttpApi::new(port);
    (redis, keyward, api)
}

/// `GET key` straight from Redis, as bytes (`None` when the key does not exist).
fn direct_get(redis: &RedisServer, key: &str) -> Option<Vec<u8>> {
    redis::cmd("GET")
        .arg(key)
        .query(&mut redis.conn())
        .expect("GET on redis")
}

fn direct_set(redis: &RedisServer, key: &str, value: &[u8]) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut redis.conn())
        .expect("SET on redis");
}

fn direct_pttl(redis: &RedisServer, key: &str) -> i64 {
    redis::cmd("PTTL")
        .arg(key)
        .query(&mut redis.conn())
        .expect("PTTL on redis")
}

fn dbsize(redis: &RedisServer) -> i64 {
    redis::cmd("DBSIZE")
        .query(&mut redis.conn())
        .expect("DBSIZE on redis")
}

fn sha256_hex(text: &str) -> String {
    keyward::auth::sha256(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn set_get_and_remove_do_what_they_say_on_redis() {
    let (redis, _keyward, api) = start("", "");

    // One key, without and with a time to live.
    assert_eq!(api.set(json!({"key": "k1", "value": "v1"})).ok()["set"], 1);
    assert_eq!(direct_get(&redis, "k1").as_deref(), Some(&b"v1"[..]));
    assert_eq!(direct_pttl(&redis, "k1"), -1, "no ttl_ms, no expiry");
    let reply = api.set(json!({"key": "k2", "value": "v2", "ttl_ms": 60000}));
    assert_eq!(reply.ok()["set"], 1);
    let pttl = direct_pttl(&redis, "k2");
    assert!((1..=60000).contains(&pttl), "PTTL k2 = {pttl}");

    // Several entries in one request, one with a time to live, one with non-ASCII text.
    let reply = api.set(json!({"entries": [
        {"key": "e1", "value": "1"},
        {"key": "e2", "value": "2", "ttl_ms": 30000},
        {"key": "e3", "value": "héllo ✓"},
    ]}));
    assert_eq!(reply.ok()["set"], 3);
    assert_eq!(direct_get(&redis, "e1").as_deref(), Some(&b"1"[..]));
    assert_eq!(direct_get(&redis, "e2").as_deref(), Some(&b"2"[..]));
    assert_eq!(
        direct_get(&redis, "e3").as_deref(),
        Some("héllo ✓".as_bytes())
    );
    let pttl = direct_pttl(&redis, "e2");
    assert!((1..=30000).contains(&pttl), "PTTL e2 = {pttl}");
    assert_eq!(direct_pttl(&redis, "e1"), -1);

    // Get: one key as a string, several as a list; a missing key is null.
    assert_eq!(
        api.get_keys(json!("k1")).ok()["values"],
        json!({"k1": "v1"})
    );
    assert_eq!(
        api.get_keys(json!(["k1", "e3", "missing"])).ok()["values"],
        json!({"k1": "v1", "e3": "héllo ✓", "missing": null})
    );
    // The content type ureq's own send_json sends (with a charset) is JSON too.
    let reply = api.post_raw(
        "/v1/keys/get",
        Some("application/json; charset=utf-8"),
        br#"{"keys": ["e1"]}"#,
    );
    assert_eq!(reply.ok()["values"], json!({"e1": "1"}));

    // Remove: one key as a string; a list with a duplicate and a missing key.
    let reply = api.remove(json!("k1")).ok();
    assert_eq!(
        (&reply["requested"], &reply["removed"]),
        (&json!(1), &json!(1))
    );
    assert!(!redis.exists(b"k1"));
    let reply = api.remove(json!(["e1", "e2", "e1", "missing"])).ok();
    assert_eq!(
        (&reply["requested"], &reply["removed"]),
        (&json!(3), &json!(2)),
        "{reply}"
    );
    assert!(!redis.exists(b"e1") && !redis.exists(b"e2"));
    assert!(
        redis.exists(b"e3") && redis.exists(b"k2"),
        "only what was named"
    );
    let reply = api.remove(json!("k1")).ok();
    assert_eq!(
        (&reply["requested"], &reply["removed"]),
        (&json!(1), &json!(0))
    );
}

#[test]
fn binary_values_round_trip_as_base64() {
    let (redis, _keyward, api) = start("", "");
    // Every byte value, so certainly not UTF-8.
    let bytes: Vec<u8> = (0..=255u8).rev().collect();
    let b64 = base64_encode(&bytes);
    let reply = api.set(json!({"key": "bin", "value": {"base64": b64}}));
    assert_eq!(reply.ok()["set"], 1);
    assert_eq!(
        direct_get(&redis, "bin"),
        Some(bytes.clone()),
        "Redis has the bytes"
    );
    assert_eq!(
        api.get_keys(json!(["bin"])).ok()["values"]["bin"],
        json!({"base64": b64})
    );

    // In entries too, next to a text value.
    let reply = api.set(json!({"entries": [
        {"key": "bin2", "value": {"base64": base64_encode(b"\x00\xff\r\n")}, "ttl_ms": 60000},
        {"key": "txt", "value": "plain"},
    ]}));
    assert_eq!(reply.ok()["set"], 2);
    assert_eq!(
        direct_get(&redis, "bin2").as_deref(),
        Some(&b"\x00\xff\r\n"[..])
    );

    // A value written by someone else that is not UTF-8; one given as base64 that is UTF-8.
    direct_set(&redis, "raw", b"\xc3\x28");
    api.set(json!({"key": "utf8", "value": {"base64": base64_encode(b"plain text")}}))
        .ok();
    let values = api.get_keys(json!(["raw", "utf8", "txt", "bin2"])).ok()["values"].clone();
    assert_eq!(values["raw"], json!({"base64": base64_encode(b"\xc3\x28")}));
    assert_eq!(
        values["utf8"], "plain text",
        "valid UTF-8 comes back as a string"
    );
    assert_eq!(values["txt"], "plain");
    assert_eq!(
        base64_decode(values["bin2"]["base64"].as_str().expect("base64 string")),
        b"\x00\xff\r\n"
    );
}

#[test]
fn wildcards_and_too_many_keys_are_refused_and_nothing_is_deleted() {
    let (redis, _keyward, api) = start("", "");
    direct_set(&redis, "keep", b"1");
    for bad in ["bad*", "b?d", "b[d"] {
        direct_set(&redis, bad, b"literal");
        let error = api.remove(json!(["keep", bad])).err(422, "wildcard_chars");
        assert_eq!(error["key"], bad, "{error}");
        assert!(
            redis.exists(b"keep"),
            "nothing deleted when {bad} is refused"
        );
        assert!(redis.exists(bad.as_bytes()));
        // Alone, as a string.
        let error = api.remove(json!(bad)).err(422, "wildcard_chars");
        assert_eq!(error["key"], bad, "{error}");
        assert!(redis.exists(bad.as_bytes()));
    }

    // [guard] max_keys = 1000: 1001 distinct keys are refused, nothing deleted.
    let keys: Vec<String> = (0..1001).map(|i| format!("mk:{i}")).collect();
    let mut pipe = redis::pipe();
    for k in &keys {
        pipe.cmd("SET").arg(k).arg("v").ignore();
    }
    let () = pipe.query(&mut redis.conn()).expect("SET 1001 keys");
    let before = dbsize(&redis);
    let error = api.remove(json!(keys)).err(422, "max_keys");
    assert!(error.get("key").is_none_or(Value::is_null), "{error}");
    assert_eq!(dbsize(&redis), before, "nothing deleted");

    // 1001 entries that are 1000 distinct keys are accepted.
    let mut thousand: Vec<String> = keys[..1000].to_vec();
    thousand.push(keys[0].clone());
    let reply = api.remove(json!(thousand)).ok();
    assert_eq!(
        (&reply["requested"], &reply["removed"]),
        (&json!(1000), &json!(1000))
    );
    assert_eq!(dbsize(&redis), before - 1000);
    assert!(redis.exists(b"mk:1000") && !redis.exists(b"mk:999"));
}

#[test]
fn malformed_requests_get_json_errors_with_codes() {
    let (redis, _keyward, api) = start("", PRODUCT_HOOK);
    direct_set(&redis, "a", b"1");
    direct_set(&redis, "cache:home", b"1");

    // (path, body, whether the message must give a position in the body)
    let bad_requests: &[(&str, &str, bool)] = &[
        ("/v1/keys/remove", r#"{"keys": ["#, true),
        ("/v1/keys/remove", r#"{"keys": 5}"#, true),
        ("/v1/keys/remove", r#"{"keys": ["a", 1]}"#, true),
        ("/v1/keys/remove", r#"{"keys": "a", "extra": true}"#, true),
        ("/v1/keys/remove", r#"{"keys": []}"#, false),
        ("/v1/keys/remove", r#"{}"#, false),
        ("/v1/keys/remove", r#"["a"]"#, false),
        ("/v1/keys/remove", r#"[["a"]]"#, false),
        ("/v1/keys/set", r#"["a", "v"]"#, false),
        ("/v1/hooks/product-updated", r#"[{"id": "1"}]"#, false),
        ("/v1/keys/remove", "", false),
        ("/v1/keys/get", r#"{"keys": []}"#, false),
        ("/v1/keys/get", r#"{"keys": {"a": 1}}"#, true),
        ("/v1/keys/set", r#"{"key": "a"}"#, false),
        ("/v1/keys/set", r#"{"key": "a", "value": 5}"#, false),
        (
            "/v1/keys/set",
            r#"{"key": "a", "value": "v", "ttl_ms": "soon"}"#,
            false,
        ),
        (
            "/v1/keys/set",
            r#"{"key": "a", "value": "v", "colour": 1}"#,
            false,
        ),
        ("/v1/keys/set", r#"{"entries": []}"#, false),
        (
            "/v1/keys/set",
            r#"{"key": "a", "value": {"base64": "%%%"}}"#,
            false,
        ),
        ("/v1/hooks/product-updated", r#"{"params": ["1"]}"#, false),
        (
            "/v1/hooks/product-updated",
            r#"{"params": {"id": "1"}, "x": 1}"#,
            false,
        ),
    ];
    // Every case is tried; the failures are reported together.
    let mut failures = Vec::new();
    for &(path, body, position) in bad_requests {
        direct_set(&redis, "a", b"1");
        direct_set(&redis, "cache:home", b"1");
        let reply = api.post_raw(path, Some("application/json"), body.as_bytes());
        let json: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
        let message = json["error"]["message"].as_str().unwrap_or("");
        if reply.status != 400 || json["error"]["code"] != "bad_request" || message.is_empty() {
            failures.push(format!(
                "POST {path} {body}: {} {}",
                reply.status, reply.body
            ));
        } else if position && !message.contains("line 1 column") {
            failures.push(format!("POST {path} {body}: no position in {message:?}"));
        }
        if direct_get(&redis, "a").as_deref() != Some(&b"1"[..]) || !redis.exists(b"cache:home") {
            failures.push(format!("POST {path} {body}: changed what is on Redis"));
        }
    }
    // Not JSON at all, or no content type.
    for content_type in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        let reply = api.post_raw("/v1/keys/remove", content_type, br#"{"keys": "a"}"#);
        reply.err(415, "unsupported_media_type");
        assert!(redis.exists(b"a"), "{content_type:?}");
    }

    // Unknown routes, unknown hooks.
    api.post("/v1/keys/nope", &json!({"keys": "a"}))
        .err(404, "not_found");
    api.post("/v2/keys/remove", &json!({"keys": "a"}))
        .err(404, "not_found");
    api.get("/nope").err(404, "not_found");
    api.hook("no-such-hook", json!({"id": "1"}))
        .err(404, "not_found");
    assert!(redis.exists(b"a") && redis.exists(b"cache:home"));
    assert!(
        failures.is_empty(),
        "requests that should be 400 bad_request:\n{}",
        failures.join("\n")
    );
}

#[test]
fn bodies_over_max_body_bytes_are_refused() {
    let (redis, _keyward, api) = start("max_body_bytes = 1024", "");
    direct_set(&redis, "a", b"1");
    let body = |len: usize| {
        let mut b = br#"{"keys": ["a"]}"#.to_vec();
        b.resize(len, b' ');
        b
    };
    let reply = api.post_raw("/v1/keys/remove", Some("application/json"), &body(1025));
    reply.err(413, "payload_too_large");
    assert!(redis.exists(b"a"));
    let reply = api.post_raw("/v1/keys/remove", Some("application/json"), &body(1024));
    assert_eq!(
        reply.ok()["removed"],
        1,
        "exactly max_body_bytes is accepted"
    );
    assert!(!redis.exists(b"a"));
}

/// The default limit, 8 MiB. The body over it is sent from a raw socket that reads while it
/// writes (as curl does): keyward answers 413 as soon as it has the headers and closes, so a
/// client that writes the whole body before reading (ureq) gets a broken pipe instead.
#[test]
fn the_default_body_limit_is_8_mib() {
    let (redis, _keyward, api) = start("", "");
    direct_set(&redis, "a", b"1");
    let body = |len: usize| {
        let mut b = br#"{"keys": ["a"]}"#.to_vec();
        b.resize(len, b' ');
        b
    };
    let big = body(8 * 1024 * 1024 + 1);
    let mut request = format!(
        "POST /v1/keys/remove HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        big.len()
    )
    .into_bytes();
    request.extend_from_slice(&big);
    let answer = raw(&format!("127.0.0.1:{}", api.port), &request, IO_TIMEOUT);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer:?}");
    assert!(answer.contains("\"payload_too_large\""), "{answer:?}");
    assert!(redis.exists(b"a"));

    let reply = api.post_raw(
        "/v1/keys/remove",
        Some("application/json"),
        &body(8 * 1024 * 1024),
    );
    assert_eq!(reply.ok()["removed"], 1, "exactly 8 MiB is accepted");
}

#[test]
fn redis_down_is_a_502_upstream_error() {
    let (redis, _keyward, api) = start("", "");
    api.set(json!({"key": "k", "value": "v"})).ok();
    drop(redis);
    api.remove(json!("k")).err(502, "upstream");
    api.get_keys(json!("k")).err(502, "upstream");
    api.set(json!({"key": "k", "value": "v"}))
        .err(502, "upstream");
}

#[test]
fn with_a_password_every_call_needs_credentials() {
    const PASSWORD: &str = "s3cret-Pa55";
    let extra = format!(
        "[server]\npassword = \"{PASSWORD}\"\n{PRODUCT_HOOK}\
         [[server.users]]\nname = \"app\"\npassword_sha256 = \"{}\"\n",
        sha256_hex("app-pass"),
    );
    let (redis, _keyward, api) = start("", &extra);
    let preset = || {
        for k in ["a", "b", "cache:home"] {
            direct_set(&redis, k, b"1");
        }
    };
    preset();

    // No credentials, or wrong ones: 401, and nothing happens. (Wrong passwords are few per
    // user name: after 5 failures keyward slows the answers down, as for AUTH.)
    let no_credentials = [
        api.clone(),
        api.with_authorization("Basic !!!not-base64"),
        api.with_authorization(&format!("Token {PASSWORD}")),
    ];
    for client in &no_credentials {
        client.remove(json!(["a", "b"])).err(401, "unauthorized");
        client.get_keys(json!("a")).err(401, "unauthorized");
        client
            .set(json!({"key": "new", "value": "v"}))
            .err(401, "unauthorized");
        client
            .hook("product-updated", json!({"id": "1"}))
            .err(401, "unauthorized");
    }
    let wrong = [
        api.basic("default", "wrong"),
        api.basic("app", PASSWORD),
        api.basic("nobody", PASSWORD),
        api.bearer("wrong"),
        api.bearer("app-pass"),
    ];
    for (i, client) in wrong.iter().enumerate() {
        let reply = match i % 4 {
            0 => client.remove(json!(["a", "b"])),
            1 => client.get_keys(json!("a")),
            2 => client.set(json!({"key": "new", "value": "v"})),
            _ => client.hook("product-updated", json!({"id": "1"})),
        };
        reply.err(401, "unauthorized");
    }
    assert!(redis.exists(b"a") && redis.exists(b"b") && redis.exists(b"cache:home"));
    assert!(!redis.exists(b"new"));

    // The default user by Basic or Bearer, a named user by Basic.
    for client in [
        api.basic("default", PASSWORD),
        api.bearer(PASSWORD),
        api.basic("app", "app-pass"),
    ] {
        preset();
        let reply = client.remove(json!(["a", "b"])).ok();
        assert_eq!(reply["removed"], 2, "{reply}");
        assert_eq!(client.set(json!({"key": "c", "value": "v"})).ok()["set"], 1);
        assert_eq!(client.get_keys(json!("c")).ok()["values"]["c"], "v");
        assert_eq!(
            client.hook("product-updated", json!({"id": "1"})).ok()["removed"],
            1
        );
    }
}

/// The path's parameters (path-level and operation-level) that are `in: path`.
fn path_parameters(
    doc: &openapiv3::OpenAPI,
    item: &openapiv3::PathItem,
    op: &openapiv3::Operation,
) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for p in item.parameters.iter().chain(&op.parameters) {
        let p = match p {
            openapiv3::ReferenceOr::Item(p) => p.clone(),
            openapiv3::ReferenceOr::Reference { reference } => {
                let name = reference
                    .strip_prefix("#/components/parameters/")
                    .unwrap_or_else(|| panic!("unexpected parameter $ref {reference}"));
                match doc.components.as_ref().and_then(|c| c.parameters.get(name)) {
                    Some(openapiv3::ReferenceOr::Item(p)) => p.clone(),
                    other => panic!("{reference} does not resolve: {other:?}"),
                }
            }
        };
        if let openapiv3::Parameter::Path { parameter_data, .. } = p {
            out.push((parameter_data.name, parameter_data.required));
        }
    }
    out
}

/// Every `$ref` in `v` (JSON pointers into the document).
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Value::String(s) = v {
                        out.push(s.clone());
                    }
                } else {
                    refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_openapi_document_describes_every_route_served() {
    let (_redis, _keyward, api) = start("", PRODUCT_HOOK);
    let raw = api.get("/v1/openapi.json");
    assert_eq!(raw.status, 200, "{raw:?}");
    let json = raw.json();
    let doc: openapiv3::OpenAPI = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("not an OpenAPI 3 document: {e}\n{json:#}"));
    assert!(doc.openapi.starts_with("3."), "openapi = {}", doc.openapi);
    assert!(!doc.info.title.is_empty() && !doc.info.version.is_empty());

    // Every local $ref points at something.
    let mut all = Vec::new();
    refs(&json, &mut all);
    for r in &all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("non-local $ref {r}"));
        assert!(json.pointer(pointer).is_some(), "$ref {r} does not resolve");
    }

    let documented: BTreeSet<(String, String)> = doc
        .operations()
        .map(|(path, method, _)| (method.to_string(), path.to_string()))
        .collect();
    // The routes the server serves, each documented with its method.
    for (method, path) in [
        ("post", "/v1/keys/remove"),
        ("post", "/v1/keys/get"),
        ("post", "/v1/keys/set"),
        ("get", "/v1/openapi.json"),
    ] {
        assert!(
            documented.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is not documented; documented: {documented:?}"
        );
    }
    let hook_ops: Vec<_> = doc
        .operations()
        .filter(|(path, method, _)| *method == "post" && path.starts_with("/v1/hooks/{"))
        .collect();
    assert_eq!(hook_ops.len(), 1, "POST /v1/hooks/{{name}}: {documented:?}");
    let (hook_path, _, hook_op) = hook_ops[0];
    let param = hook_path
        .strip_prefix("/v1/hooks/{")
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or_else(|| panic!("unexpected hook path {hook_path}"));
    let item = doc.paths.paths[hook_path]
        .as_item()
        .expect("the hook path item is inline");
    assert!(
        path_parameters(&doc, item, hook_op).contains(&(param.to_string(), true)),
        "{hook_path} does not declare its required path parameter {param}"
    );

    for (path, method, op) in doc.operations() {
        assert!(
            op.responses
                .responses
                .contains_key(&openapiv3::StatusCode::Code(200)),
            "{method} {path} documents no 200 response"
        );
        if method == "post" {
            let body = match op.request_body.as_ref() {
                Some(openapiv3::ReferenceOr::Item(body)) => body.clone(),
                Some(openapiv3::ReferenceOr::Reference { reference }) => {
                    let pointer = reference.strip_prefix('#').expect("local $ref");
                    serde_json::from_value(json.pointer(pointer).expect("resolves").clone())
                        .expect("a request body")
                }
                None => panic!("POST {path} documents no request body"),
            };
            assert!(
                body.content.contains_key("application/json"),
                "POST {path}: the request body is not application/json"
            );
        }
        // And what is documented is served: no 404 for it.
        let concrete = path.replace(&format!("{{{param}}}"), "product-updated");
        let reply = match method {
            "get" => api.get(&concrete),
            "post" => api.post(&concrete, &json!({})),
            other => panic!("{other} {path}: a method the tests do not know"),
        };
        assert!(
            reply.status != 404 && reply.status != 405,
            "{method} {path} is documented but answers {reply:?}"
        );
    }
}

#[test]
fn hooks_over_http_remove_their_keys() {
    let (redis, _keyward, api) = start("", PRODUCT_HOOK);
    let preset = |id: &str| {
        for k in [
            format!("cache:product:{id}"),
            format!("cache:product:{id}:reviews"),
            "cache:home".to_string(),
        ] {
            direct_set(&redis, &k, b"1");
        }
    };
    preset("7");
    preset("42");
    let reply = api.hook("product-updated", json!({"id": "42"})).ok();
    assert_eq!(
        (&reply["requested"], &reply["removed"]),
        (&json!(3), &json!(3)),
        "{reply}"
    );
    for k in ["cache:product:42", "cache:product:42:reviews", "cache:home"] {
        assert!(!redis.exists(k.as_bytes()), "{k} is still there");
    }
    assert!(redis.exists(b"cache:product:7") && redis.exists(b"cache:product:7:reviews"));
    let reply = api.hook("product-updated", json!({"id": "42"})).ok();
    assert_eq!(
        (&reply["requested"], &reply["removed"]),
        (&json!(3), &json!(0))
    );

    // A missing parameter, a parameter that makes a wildcard: nothing deleted.
    preset("42");
    let error = api
        .hook("product-updated", json!({}))
        .err(422, "missing_param");
    assert!(
        error["message"].as_str().unwrap_or("").contains("id"),
        "the message names the parameter: {error}"
    );
    let error = api
        .hook("product-updated", json!({"other": "42"}))
        .err(422, "missing_param");
    assert!(
        error["message"].as_str().unwrap_or("").contains("id"),
        "{error}"
    );
    let error = api
        .hook("product-updated", json!({"id": "4*"}))
        .err(422, "wildcard_chars");
    assert!(
        error["key"]
            .as_str()
            .is_some_and(|k| k.starts_with("cache:product:4*")),
        "{error}"
    );
    for k in ["cache:product:42", "cache:product:42:reviews", "cache:home"] {
        assert!(
            redis.exists(k.as_bytes()),
            "{k} was deleted by a refused hook"
        );
    }
    api.hook("product-deleted", json!({"id": "42"}))
        .err(404, "not_found");
}

/// A keyward binary with `--http-listen` on the command line or `KEYWARD_HTTP_LISTEN` in the
/// environment (no `[http]` section in the file); deletes through the API are audited.
#[test]
fn the_binary_takes_the_http_listener_from_the_command_line_or_the_environment() {
    let redis = RedisServer::start();
    let port = free_port();
    let keyward = Keyward::start_with_args(
        &redis.addr(),
        "",
        &["--http-listen", &format!("127.0.0.1:{port}")],
    );
    let api = HttpApi::new(port);
    direct_set(&redis, "a", b"1");
    direct_set(&redis, "b", b"1");
    assert_eq!(api.remove(json!(["a", "b"])).ok()["removed"], 2);
    assert!(!redis.exists(b"a") && !redis.exists(b"b"));
    let line = keyward.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("keyward::audit") && l.contains("via=http") && l.contains("removed 2")
    });
    assert!(
        line.is_some(),
        "no audit line with via=http for the remove; log:\n{}",
        keyward.log()
    );
    drop(keyward);

    // KEYWARD_HTTP_LISTEN.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("proxy.toml");
    let resp_port = free_port();
    let http_port = free_port();
    std::fs::write(
        &config,
        proxy_toml(&format!("127.0.0.1:{resp_port}"), &redis.addr(), ""),
    )
    .expect("write proxy.toml");
    let mut cmd = keyward_command();
    cmd.arg("--config")
        .arg(&config)
        .env("KEYWARD_HTTP_LISTEN", format!("127.0.0.1:{http_port}"))
        .env("RUST_LOG", "info");
    let mut process =
        process::ChildProcess::spawn("keyward (env)", &mut cmd, dir.path().join("keyward.log"))
            .expect("spawn keyward");
    process
        .wait_for_port(http_port, START_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let api = HttpApi::new(http_port);
    direct_set(&redis, "c", b"1");
    assert_eq!(api.remove(json!("c")).ok()["removed"], 1);
    assert!(!redis.exists(b"c"));
}

/// `[guard] deny_commands` holds over HTTP as over RESP: the API's reads and writes are MGET
/// and SET, refused with 403 `denied` to a user who may not bypass the list.
#[test]
fn deny_commands_hold_over_http_for_users_who_may_not_bypass_them() {
    let extra = format!(
        "[guard]\ndeny_commands = [\"SET\", \"MGET\"]\n\
         [[server.users]]\nname = \"ops\"\npassword_sha256 = \"{}\"\nbypass_deny_commands = true\n\
         [[server.users]]\nname = \"app\"\npassword_sha256 = \"{}\"\n",
        sha256_hex("ops-pass"),
        sha256_hex("app-pass"),
    );
    let (redis, _keyward, api) = start("", &extra);
    let app = api.basic("app", "app-pass");
    let ops = api.basic("ops", "ops-pass");
    direct_set(&redis, "a", b"1");

    app.set(json!({"key": "b", "value": "v"}))
        .err(403, "denied");
    assert!(!redis.exists(b"b"));
    app.get_keys(json!(["a"])).err(403, "denied");
    // Deletes are not in the list.
    assert_eq!(app.remove(json!("a")).ok()["removed"], 1);

    assert_eq!(ops.set(json!({"key": "b", "value": "v"})).ok()["set"], 1);
    assert_eq!(ops.get_keys(json!("b")).ok()["values"]["b"], "v");
}

/// `[http.tls]`: the API speaks HTTPS with the configured certificate, and only HTTPS.
#[test]
fn with_http_tls_the_api_speaks_https_only() {
    let files = support::tls::TlsFiles::generate();
    let (http, port) = http_section(&format!(
        "[http.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
        files.server_cert(),
        files.server_key()
    ));
    let redis = RedisServer::start();
    let _keyward = InProcess::standalone(&redis.addr(), &http);
    let api = HttpApi::https(port, &files.ca());
    direct_set(&redis, "a", b"1");
    assert_eq!(api.get_keys(json!("a")).ok()["values"]["a"], "1");
    assert_eq!(api.remove(json!("a")).ok()["removed"], 1);
    assert!(!redis.exists(b"a"));
    assert_eq!(
        api.get("/v1/openapi.json").status,
        200,
        "the document over HTTPS"
    );

    // Plain HTTP on the same port gets no answer that a client could take for the API's.
    direct_set(&redis, "b", b"1");
    let request = b"POST /v1/keys/remove HTTP/1.1\r\nHost: 127.0.0.1\r\n\
        Content-Type: application/json\r\nContent-Length: 12\r\n\r\n{\"keys\":\"b\"}";
    let answer = raw(
        &format!("127.0.0.1:{port}"),
        request,
        Duration::from_secs(3),
    );
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    assert!(redis.exists(b"b"), "a plain-HTTP request removed nothing");
}

/// Many clients at once, each on its own keys: every answer is about the request it answers.
#[test]
fn concurrent_clients_each_get_the_answer_to_their_own_request() {
    let (redis, _keyward, api) = start("", "");
    const CLIENTS: usize = 16;
    const ROUNDS: usize = 20;
    let mut pipe = redis::pipe();
    for t in 0..CLIENTS {
        for i in 0..ROUNDS {
            pipe.cmd("SET")
                .arg(format!("c{t}:{i}"))
                .arg(format!("v{t}:{i}"))
                .ignore();
        }
    }
    let () = pipe.query(&mut redis.conn()).expect("SET on redis");
    let threads: Vec<_> = (0..CLIENTS)
        .map(|t| {
            let api = api.clone();
            std::thread::spawn(move || {
                for i in 0..ROUNDS {
                    let key = format!("c{t}:{i}");
                    let values = api.get_keys(json!([key])).ok()["values"].clone();
                    assert_eq!(values, json!({ key.clone(): format!("v{t}:{i}") }));
                    let reply = api.remove(json!([key, format!("c{t}:missing")])).ok();
                    assert_eq!(
                        (&reply["requested"], &reply["removed"]),
                        (&json!(2), &json!(1)),
                        "{key}"
                    );
                    let set = api.set(json!({"key": format!("n{t}:{i}"), "value": "x"}));
                    assert_eq!(set.ok()["set"], 1);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a client thread failed");
    }
    assert_eq!(
        dbsize(&redis),
        (CLIENTS * ROUNDS) as i64,
        "only the n* keys are left"
    );
}

/// A user for whom `[guard] deny_commands` refuses RUNHOOK on RESP is refused the same hook
/// over HTTP (as SET and MGET are for /v1/keys/set and /v1/keys/get).
#[test]
fn a_hook_denied_over_resp_is_denied_over_http() {
    let extra = format!(
        "[guard]\ndeny_commands = [\"RUNHOOK\"]\n{PRODUCT_HOOK}\
         [[server.users]]\nname = \"ops\"\npassword_sha256 = \"{}\"\nbypass_deny_commands = true\n\
         [[server.users]]\nname = \"app\"\npassword_sha256 = \"{}\"\n",
        sha256_hex("ops-pass"),
        sha256_hex("app-pass"),
    );
    let (redis, keyward, api) = start("", &extra);
    direct_set(&redis, "cache:home", b"1");

    let mut c = keyward.raw_conn();
    assert_eq!(c.request(&["AUTH", "app", "app-pass"]), Reply::ok());
    let refused = c.request(&["RUNHOOK", "product-updated", "id", "1"]);
    assert!(
        refused
            .error_text()
            .is_some_and(|e| e.contains("deny_commands")),
        "{refused:?}"
    );
    assert!(redis.exists(b"cache:home"));

    let reply = api
        .basic("app", "app-pass")
        .hook("product-updated", json!({"id": "1"}));
    let over_http = (reply.status, redis.exists(b"cache:home"));
    assert_eq!(
        over_http,
        (403, true),
        "RUNHOOK is denied to app on RESP; over HTTP: {reply:?}"
    );
    let reply = api
        .basic("ops", "ops-pass")
        .hook("product-updated", json!({"id": "1"}));
    assert_eq!(reply.ok()["removed"], 1);
}
