//! The delete policy rules of issue #13, end to end: `[guard] protected_prefixes` (and the users
//! who may bypass it), per-user `delete_prefixes`, `max_deleted_keys_per_second` (a token bucket
//! per user, or per client address when keyward does not authenticate clients),
//! `REMOVEKEYS.PREVIEW` and `POST /v1/keys/remove?dry_run=true`, dry-run mode, and a hot reload.
//!
//! Every delete path is tried (DEL, UNLINK, REMOVEKEYS, GETDEL, MIGRATE, HTTP remove, hooks by
//! RUNHOOK and over HTTP), alone, in pipelines and inside MULTI, and what is left is always read
//! from Redis directly, never through keyward. The rate-limit tests run the real binary, so that
//! each test has a keyward process (and buckets) of its own; the others run keyward in-process.
//! One cluster test (3 primaries) at the end.

#[path = "support/http.rs"]
mod http;
mod support;

use std::thread;
use std::time::{Duration, Instant};

use http::*;
use serde_json::json;
use support::cluster::RedisCluster;
use support::in_process::InProcess;
use support::*;

const T: Duration = IO_TIMEOUT;

/// `[guard] protected_prefixes` as most tests use it.
const PROTECTED: &str = "[guard]\nprotected_prefixes = [\"billing:\", \"session:\"]\n";

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn sha256_hex(text: &str) -> String {
    keyward::auth::sha256(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A `[[server.users]]` entry: `name`, password `<name>-pass`, then `extra` lines as written.
fn user(name: &str, extra: &str) -> String {
    format!(
        "[[server.users]]\nname = \"{name}\"\npassword_sha256 = \"{}\"\n{extra}\n",
        sha256_hex(&format!("{name}-pass"))
    )
}

/// Sets every key to "v" on Redis directly.
fn seed(redis: &RedisServer, keys: &[&str]) {
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("SET").arg(*k).arg("v").ignore();
    }
    let () = pipe.query(&mut redis.conn()).expect("SET on redis");
}

/// Asserts that every key still exists, reading Redis directly.
#[track_caller]
fn assert_kept(redis: &RedisServer, keys: &[&str], context: &str) {
    for k in keys {
        assert!(
            redis.exists(k.as_bytes()),
            "{context}: key {k:?} was deleted"
        );
    }
}

/// Asserts that none of the keys exists, reading Redis directly.
#[track_caller]
fn assert_gone(redis: &RedisServer, keys: &[&str], context: &str) {
    for k in keys {
        assert!(
            !redis.exists(k.as_bytes()),
            "{context}: key {k:?} is still there"
        );
    }
}

fn dbsize(redis: &RedisServer) -> i64 {
    redis::cmd("DBSIZE")
        .query(&mut redis.conn())
        .expect("DBSIZE on redis")
}

/// A guard refusal (`ERR keyward guard: ...`) whose text holds every needle; returns the text.
#[track_caller]
fn assert_refused<'a>(reply: &'a Reply, needles: &[&str]) -> &'a str {
    let text = reply
        .error_text()
        .unwrap_or_else(|| panic!("expected a keyward guard refusal, got {reply:?}"));
    assert!(
        text.starts_with("ERR keyward guard:"),
        "the refusal must start with 'ERR keyward guard:': {text}"
    );
    for needle in needles {
        assert!(text.contains(needle), "refusal lacks {needle:?}: {text}");
    }
    text
}

/// The wait a rate-limit refusal announces: the number right before the first "ms".
fn retry_ms(text: &str) -> Option<u64> {
    text.match_indices("ms").find_map(|(i, _)| {
        let head = text[..i].trim_end();
        let start = head
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_ascii_digit())
            .last()
            .map(|(i, _)| i)?;
        head[start..].parse().ok()
    })
}

/// A rate-limit refusal naming `limit` and a wait in ms; returns the wait.
#[track_caller]
fn assert_rate_limited(reply: &Reply, limit: u32) -> u64 {
    let text = assert_refused(reply, &["rate_limit", &limit.to_string()]);
    retry_ms(text).unwrap_or_else(|| panic!("no wait in ms in the refusal: {text}"))
}

/// Sends `args` (command name first) as one request and reads the reply.
fn request(c: &mut RawConn, args: &[String]) -> Reply {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.request(&args)
}

/// `name` followed by `keys`.
fn with_name(name: &str, keys: &[String]) -> Vec<String> {
    let mut args = vec![name.to_string()];
    args.extend(keys.iter().cloned());
    args
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}")).collect()
}

fn strs(keys: &[String]) -> Vec<&str> {
    keys.iter().map(String::as_str).collect()
}

fn login(c: &mut RawConn, name: &str) {
    assert_eq!(
        c.request(&["AUTH", name, &format!("{name}-pass")]),
        Reply::ok(),
        "AUTH {name}"
    );
}

/// A Redis and an in-process keyward with `extra` over the defaults.
fn start(extra: &str) -> (RedisServer, InProcess) {
    let redis = RedisServer::start();
    let keyward = InProcess::standalone(&redis.addr(), extra);
    (redis, keyward)
}

/// A Redis, an in-process keyward with the HTTP API on (`extra` after the `[http]` section), and
/// a client for the API.
fn start_http(extra: &str) -> (RedisServer, InProcess, HttpApi) {
    let redis = RedisServer::start();
    let (http, port) = http_section("");
    let keyward = InProcess::standalone(&redis.addr(), &format!("{http}{extra}"));
    (redis, keyward, HttpApi::new(port))
}

/// The audit line of `command` whose outcome starts with `outcome`, waited for.
fn audit_line(kw: &Keyward, command: &str, outcome: &str) -> String {
    let command = format!("command={command} ");
    let outcome = format!("outcome={outcome}");
    kw.wait_log_line(Duration::from_secs(3), |l| {
        l.contains("keyward::audit") && l.contains(&command) && l.contains(&outcome)
    })
    .unwrap_or_else(|| panic!("no audit line `{command}... {outcome}`; log:\n{}", kw.log()))
}

// ---------------------------------------------------------------------------------------------
// protected_prefixes
// ---------------------------------------------------------------------------------------------

#[test]
fn protected_prefixes_refuse_every_delete_command_and_delete_nothing() {
    let (redis, kw) = start(PROTECTED);
    let target = RedisServer::start();
    let tport = target.port.to_string();
    let keys = [
        "billing:1",
        "session:abc",
        "cache:1",
        "xbilling:1",
        "billing",
    ];
    seed(&redis, &keys);
    let mut c = kw.raw_conn();

    let attempts: Vec<(Vec<&str>, &str)> = vec![
        (vec!["DEL", "billing:1"], "billing:1"),
        (vec!["DEL", "cache:1", "billing:1"], "billing:1"),
        (
            vec!["del", "cache:1", "session:abc", "xbilling:1"],
            "session:abc",
        ),
        (vec!["UNLINK", "session:abc", "cache:1"], "session:abc"),
        (vec!["REMOVEKEYS", "cache:1", "billing:1"], "billing:1"),
        (vec!["removekeys", "billing:1"], "billing:1"),
        (vec!["GETDEL", "billing:1"], "billing:1"),
        (
            vec![
                "MIGRATE",
                "127.0.0.1",
                &tport,
                "",
                "0",
                "5000",
                "KEYS",
                "cache:1",
                "billing:1",
            ],
            "billing:1",
        ),
        (
            vec!["MIGRATE", "127.0.0.1", &tport, "session:abc", "0", "5000"],
            "session:abc",
        ),
    ];
    for (args, key) in &attempts {
        let reply = c.request(args);
        assert_refused(&reply, &["protected_prefixes", key]);
        assert_kept(&redis, &keys, &format!("{args:?}"));
    }
    assert_eq!(
        target.cli(&["DBSIZE"]).trim(),
        "0",
        "a refused MIGRATE moved keys"
    );

    // A protected key that is missing is refused too: the rule is about names.
    let reply = c.request(&["DEL", "billing:missing"]);
    assert_refused(&reply, &["protected_prefixes", "billing:missing"]);

    // MIGRATE with COPY leaves the key in place: not a delete, so not refused.
    let reply = c.request(&[
        "MIGRATE",
        "127.0.0.1",
        &tport,
        "",
        "0",
        "5000",
        "COPY",
        "KEYS",
        "billing:1",
    ]);
    assert_eq!(reply, Reply::ok(), "MIGRATE COPY of a protected key");
    assert!(target.exists(b"billing:1") && redis.exists(b"billing:1"));

    // Keys that only look alike are ordinary: a prefix is where a key starts.
    assert_eq!(
        c.request(&["DEL", "xbilling:1", "billing", "cache:1"]),
        Reply::Int(3)
    );
    assert_gone(
        &redis,
        &["xbilling:1", "billing", "cache:1"],
        "accepted DEL",
    );
    assert_kept(&redis, &["billing:1", "session:abc"], "end");
    assert_eq!(c.request(&["PING"]), Reply::simple("PONG"));
}

#[test]
fn without_the_new_settings_every_key_may_be_deleted_at_any_rate() {
    let (redis, kw) = start("");
    let mut c = kw.raw_conn();
    seed(&redis, &["billing:1", "session:1"]);
    assert_eq!(c.request(&["DEL", "billing:1", "session:1"]), Reply::Int(2));
    // No rate limit by default: 30 deletes of 100 keys each in a row.
    for round in 0..30 {
        let keys = names(&format!("r{round}:"), 100);
        let refs = strs(&keys);
        seed(&redis, &refs);
        assert_eq!(
            request(&mut c, &with_name("REMOVEKEYS", &keys)),
            Reply::Int(100),
            "round {round}"
        );
    }
    assert_eq!(dbsize(&redis), 0);
    // The preview exists by default.
    seed(&redis, &["p1"]);
    assert_eq!(
        c.request(&["REMOVEKEYS.PREVIEW", "p1", "p2"]),
        Reply::Int(1)
    );
    assert!(redis.exists(b"p1"));
}

#[test]
fn a_user_with_bypass_protected_prefixes_may_delete_protected_keys() {
    let extra = format!(
        "{PROTECTED}{}{}",
        user("ops", "bypass_protected_prefixes = true"),
        user("app", "")
    );
    let (redis, kw) = start(&extra);
    let keys = ["billing:1", "billing:2", "session:1"];
    seed(&redis, &keys);

    let mut app = kw.raw_conn();
    login(&mut app, "app");
    assert_refused(
        &app.request(&["DEL", "billing:1"]),
        &["protected_prefixes", "billing:1"],
    );
    assert_kept(&redis, &keys, "app");

    let mut ops = kw.raw_conn();
    // Before logging in, nothing at all.
    assert!(
        ops.request(&["DEL", "billing:1"])
            .error_text()
            .is_some_and(|e| e.starts_with("NOAUTH")),
        "DEL before AUTH"
    );
    login(&mut ops, "ops");
    assert_eq!(
        ops.request(&["REMOVEKEYS.PREVIEW", "billing:1", "session:1", "billing:9"]),
        Reply::Int(2)
    );
    assert_eq!(
        ops.request(&["DEL", "billing:1", "session:1"]),
        Reply::Int(2)
    );
    assert_eq!(ops.request(&["GETDEL", "billing:2"]), Reply::bulk("v"));
    assert_gone(&redis, &keys, "ops");
    // The bypass is about prefixes only: wildcards are still refused.
    assert_refused(&ops.request(&["DEL", "billing:*"]), &["wildcard_chars"]);
}

// ---------------------------------------------------------------------------------------------
// delete_prefixes
// ---------------------------------------------------------------------------------------------

#[test]
fn delete_prefixes_limit_what_a_user_may_delete() {
    let extra = user("app", "delete_prefixes = [\"cache:\", \"tmp:\"]") + &user("admin", "");
    let (redis, kw) = start(&extra);
    let keys = ["cache:1", "cache:2", "tmp:1", "user:1", "cache", "xcache:1"];
    seed(&redis, &keys);

    let mut app = kw.raw_conn();
    login(&mut app, "app");
    for (args, key) in [
        (&["DEL", "cache:1", "user:1"][..], "user:1"),
        (&["UNLINK", "user:1", "tmp:1"], "user:1"),
        (&["REMOVEKEYS", "cache:1", "cache"], "cache"),
        (&["GETDEL", "xcache:1"], "xcache:1"),
        (&["DEL", "tmp:1", "cache:2", "missing"], "missing"),
    ] {
        assert_refused(&app.request(args), &["delete_prefixes", key]);
        assert_kept(&redis, &keys, &format!("{args:?}"));
    }
    assert_eq!(
        app.request(&["REMOVEKEYS", "cache:1", "tmp:1", "cache:nope"]),
        Reply::Int(2)
    );
    assert_eq!(app.request(&["GETDEL", "cache:2"]), Reply::bulk("v"));
    assert_gone(&redis, &["cache:1", "cache:2", "tmp:1"], "app");

    // A user without delete_prefixes may delete any key.
    let mut admin = kw.raw_conn();
    login(&mut admin, "admin");
    assert_eq!(
        admin.request(&["DEL", "user:1", "cache", "xcache:1"]),
        Reply::Int(3)
    );
    assert_eq!(dbsize(&redis), 0);

    // The scope belongs to the login: the same connection logged in as admin, then as app.
    seed(&redis, &["user:2"]);
    assert_eq!(admin.request(&["AUTH", "app", "app-pass"]), Reply::ok());
    assert_refused(
        &admin.request(&["DEL", "user:2"]),
        &["delete_prefixes", "user:2"],
    );
    assert!(redis.exists(b"user:2"));
}

#[test]
fn the_default_user_takes_server_delete_prefixes() {
    let extra = format!(
        "[server]\npassword = \"pw\"\ndelete_prefixes = [\"cache:\"]\n{}",
        user("admin", "")
    );
    let (redis, kw) = start(&extra);
    seed(&redis, &["cache:1", "user:1"]);
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["AUTH", "pw"]), Reply::ok());
    assert_refused(
        &c.request(&["UNLINK", "cache:1", "user:1"]),
        &["delete_prefixes", "user:1"],
    );
    assert_kept(&redis, &["cache:1", "user:1"], "default user");
    assert_eq!(c.request(&["UNLINK", "cache:1"]), Reply::Int(1));
    // A named user without delete_prefixes of their own is not bound by [server]'s.
    let mut admin = kw.raw_conn();
    login(&mut admin, "admin");
    assert_eq!(admin.request(&["DEL", "user:1"]), Reply::Int(1));
    assert_eq!(dbsize(&redis), 0);
}

// ---------------------------------------------------------------------------------------------
// max_deleted_keys_per_second
// ---------------------------------------------------------------------------------------------

#[test]
fn the_rate_limit_refuses_at_once_and_lets_deletes_through_again_after_waiting() {
    let redis = RedisServer::start();
    let kw = Keyward::start_with(
        &redis.addr(),
        &format!("{PROTECTED}max_deleted_keys_per_second = 10"),
    );
    let mut c = kw.raw_conn();
    let ten = names("a:", 10);
    let eleven = names("b:", 11);
    seed(&redis, &strs(&ten));
    seed(&redis, &strs(&eleven));

    // More keys than the limit: always refused, even with a full bucket.
    let reply = request(&mut c, &with_name("REMOVEKEYS", &eleven));
    assert_refused(&reply, &["rate_limit", "10"]);
    assert_kept(&redis, &strs(&eleven), "11 keys");
    // Requests refused by another rule consume nothing.
    for _ in 0..3 {
        let mut keys = names("c:", 9);
        keys.push("billing:1".into());
        let reply = request(&mut c, &with_name("DEL", &keys));
        assert_refused(&reply, &["protected_prefixes"]);
    }
    // So the whole burst is still there: ten keys at once.
    assert_eq!(request(&mut c, &with_name("DEL", &ten)), Reply::Int(10));
    assert_gone(&redis, &strs(&ten), "burst of 10");

    // Five more right away: refused at once, with the wait, nothing deleted.
    let five = &eleven[..5];
    let sent = Instant::now();
    let reply = request(&mut c, &with_name("UNLINK", five));
    let answered_in = sent.elapsed();
    let wait = assert_rate_limited(&reply, 10);
    assert!(
        (200..=500).contains(&wait),
        "5 keys at 10 keys/s right after a burst: about 500 ms to wait, got {wait} ms: {reply:?}"
    );
    assert!(
        answered_in < Duration::from_millis(wait),
        "the refusal came after {answered_in:?}: it must not be delayed"
    );
    assert_kept(&redis, &strs(five), "rate-limited UNLINK");

    // After the announced wait, the same delete passes.
    thread::sleep(Duration::from_millis(wait + 100));
    assert_eq!(request(&mut c, &with_name("UNLINK", five)), Reply::Int(5));
    assert_gone(&redis, &strs(five), "after the wait");

    // After a second, a full burst again; keys that do not exist are named, so they count.
    thread::sleep(Duration::from_millis(1100));
    let missing = names("nope:", 10);
    assert_eq!(
        request(&mut c, &with_name("REMOVEKEYS", &missing)),
        Reply::Int(0)
    );
    let reply = request(&mut c, &with_name("DEL", &eleven[5..8]));
    assert_rate_limited(&reply, 10);
    assert_kept(&redis, &strs(&eleven[5..]), "after 10 missing keys");
    audit_line(&kw, "DEL", "refused: rate_limit");
}

#[test]
fn the_rate_limit_is_per_user_and_a_user_setting_overrides_the_guard_one() {
    let redis = RedisServer::start();
    let extra = format!(
        "[guard]\nmax_deleted_keys_per_second = 10\n{}{}",
        user("app", "max_deleted_keys_per_second = 3"),
        user("ops", "")
    );
    let kw = Keyward::start_with(&redis.addr(), &extra);
    let keys = names("k:", 20);
    seed(&redis, &strs(&keys));

    let mut app1 = kw.raw_conn();
    let mut app2 = kw.raw_conn();
    let mut ops = kw.raw_conn();
    login(&mut app1, "app");
    login(&mut app2, "app");
    login(&mut ops, "ops");

    // app: 3 keys per second, whatever the connection.
    // More keys than the limit: refused whatever the wait (so no wait need be given).
    let reply = request(&mut app1, &with_name("DEL", &keys[..4]));
    assert_refused(&reply, &["rate_limit", "3"]);
    assert_eq!(
        request(&mut app1, &with_name("DEL", &keys[..3])),
        Reply::Int(3)
    );
    let reply = request(&mut app2, &with_name("DEL", &keys[3..5]));
    let wait = assert_rate_limited(&reply, 3);
    assert!(wait > 0 && wait <= 1000, "{wait} ms: {reply:?}");
    assert_kept(&redis, &strs(&keys[3..]), "app is limited");

    // ops has the [guard] limit and a bucket of their own.
    assert_eq!(
        request(&mut ops, &with_name("DEL", &keys[3..13])),
        Reply::Int(10)
    );
    let reply = request(&mut ops, &with_name("DEL", &keys[13..16]));
    assert_rate_limited(&reply, 10);
    assert_kept(&redis, &strs(&keys[13..]), "ops is limited");
}

#[test]
fn clients_keyward_does_not_authenticate_share_one_limit_per_address() {
    let redis = RedisServer::start();
    let kw = Keyward::start_with(&redis.addr(), "max_deleted_keys_per_second = 5");
    let keys = names("k:", 10);
    seed(&redis, &strs(&keys));
    let mut one = kw.raw_conn();
    let mut two = kw.raw_conn();
    assert_eq!(
        request(&mut one, &with_name("DEL", &keys[..5])),
        Reply::Int(5)
    );
    let reply = request(&mut two, &with_name("DEL", &keys[5..8]));
    assert_rate_limited(&reply, 5);
    assert_kept(&redis, &strs(&keys[5..]), "second connection");
}

/// Every delete path spends the same bucket: for each, a keyward whose limit is the number of
/// keys that path names; once it ran, a one-key DEL right after is refused.
#[test]
fn every_delete_path_counts_against_the_rate_limit() {
    let redis = RedisServer::start();
    let target = RedisServer::start();
    let tport = target.port.to_string();
    let hook = "[[hooks]]\nname = \"three\"\nremove = [\"h:{id}:a\", \"h:{id}:b\", \"h:{id}:c\"]\n";
    let paths: Vec<(u32, Vec<&str>, Vec<&str>)> = vec![
        (1, vec!["GETDEL", "g:1"], vec!["g:1"]),
        (2, vec!["UNLINK", "u:1", "u:2"], vec!["u:1", "u:2"]),
        (
            2,
            vec![
                "MIGRATE",
                "127.0.0.1",
                &tport,
                "",
                "0",
                "5000",
                "KEYS",
                "m:1",
                "m:2",
            ],
            vec!["m:1", "m:2"],
        ),
        (
            3,
            vec!["RUNHOOK", "three", "id", "7"],
            vec!["h:7:a", "h:7:b", "h:7:c"],
        ),
    ];
    for (limit, args, keys) in paths {
        let kw = Keyward::start_with(
            &redis.addr(),
            &format!("[guard]\nmax_deleted_keys_per_second = {limit}\n{hook}"),
        );
        seed(&redis, &keys);
        seed(&redis, &["probe"]);
        let mut c = kw.raw_conn();
        let reply = c.request(&args);
        assert!(!reply.is_error(), "{args:?} at {limit} keys/s: {reply:?}");
        assert_gone(&redis, &keys, &format!("{args:?}"));
        let reply = c.request(&["DEL", "probe"]);
        assert_rate_limited(&reply, limit);
        assert!(redis.exists(b"probe"), "after {args:?}");
    }

    // A hook over HTTP: its three keys are counted too, and the next run gets a 429.
    let (http, port) = http_section("");
    let kw = Keyward::start_with(
        &redis.addr(),
        &format!("{http}[guard]\nmax_deleted_keys_per_second = 3\n{hook}"),
    );
    let api = HttpApi::new(port);
    let keys = ["h:8:a", "h:8:b", "h:8:c", "h:9:a", "h:9:b", "h:9:c"];
    seed(&redis, &keys);
    let reply = api.hook("three", json!({"id": "8"})).ok();
    assert_eq!(reply["removed"], 3, "{reply}");
    api.hook("three", json!({"id": "9"})).err(429, "rate_limit");
    assert_kept(&redis, &keys[3..], "HTTP hook over the limit");
    let mut c = kw.raw_conn();
    assert_rate_limited(&c.request(&["DEL", "probe"]), 3);
    assert!(redis.exists(b"probe"));
}

// ---------------------------------------------------------------------------------------------
// REMOVEKEYS.PREVIEW
// ---------------------------------------------------------------------------------------------

#[test]
fn preview_counts_distinct_existing_keys_and_deletes_nothing() {
    let extra = format!(
        "{PROTECTED}max_keys = 5\n{}",
        user("app", "delete_prefixes = [\"cache:\"]")
    );
    let (redis, kw) = start(&extra);
    let keys = ["other:1", "cache:1", "billing:1"];
    seed(&redis, &keys);
    let mut c = kw.raw_conn();
    login(&mut c, "app");
    let mut anonymous = kw.raw_conn();
    // app may only delete cache: keys; the preview applies the same rules.
    assert_eq!(
        c.request(&["REMOVEKEYS.PREVIEW", "cache:1", "cache:1", "cache:2"]),
        Reply::Int(1)
    );
    assert_refused(
        &c.request(&["REMOVEKEYS.PREVIEW", "cache:1", "other:1"]),
        &["delete_prefixes", "other:1"],
    );
    assert_refused(
        &c.request(&["REMOVEKEYS.PREVIEW", "cache:1", "billing:1"]),
        &["protected_prefixes", "billing:1"],
    );
    assert_refused(
        &c.request(&["removekeys.preview", "cache:*"]),
        &["wildcard_chars", "cache:*"],
    );
    let six = names("cache:", 6);
    assert_refused(
        &request(&mut c, &with_name("REMOVEKEYS.PREVIEW", &six)),
        &["max_keys", "5"],
    );
    let arity = c.request(&["REMOVEKEYS.PREVIEW"]);
    assert!(arity.is_error(), "a preview of no keys: {arity:?}");
    assert_kept(&redis, &keys, "previews");

    // Without a login: the users section means keyward authenticates clients.
    assert!(
        anonymous
            .request(&["REMOVEKEYS.PREVIEW", "cache:1"])
            .error_text()
            .is_some_and(|e| e.starts_with("NOAUTH"))
    );
}

#[test]
fn preview_counts_duplicates_once_and_missing_keys_not_at_all() {
    let (redis, kw) = start("");
    seed(&redis, &["a", "b", "c"]);
    let mut c = kw.raw_conn();
    for (args, expected) in [
        (&["REMOVEKEYS.PREVIEW", "a"][..], 1),
        (&["REMOVEKEYS.PREVIEW", "a", "b", "c"], 3),
        (&["REMOVEKEYS.PREVIEW", "a", "a", "a"], 1),
        (&["REMOVEKEYS.PREVIEW", "a", "b", "a", "missing", "b"], 2),
        (&["REMOVEKEYS.PREVIEW", "missing", "nope"], 0),
        (&["removekeys.preview", "c", "missing", "c"], 1),
    ] {
        assert_eq!(c.request(args), Reply::Int(expected), "{args:?}");
    }
    assert_eq!(dbsize(&redis), 3, "a preview deletes nothing");
    // It counts what exists now.
    assert_eq!(c.request(&["DEL", "a"]), Reply::Int(1));
    assert_eq!(
        c.request(&["REMOVEKEYS.PREVIEW", "a", "b", "c"]),
        Reply::Int(2)
    );
}

#[test]
fn preview_is_not_rate_limited_and_spends_nothing() {
    let redis = RedisServer::start();
    let kw = Keyward::start_with(&redis.addr(), "max_deleted_keys_per_second = 3");
    let keys = names("k:", 8);
    seed(&redis, &strs(&keys));
    let mut c = kw.raw_conn();
    // More keys than the limit, many times over.
    for _ in 0..5 {
        assert_eq!(
            request(&mut c, &with_name("REMOVEKEYS.PREVIEW", &keys)),
            Reply::Int(8)
        );
    }
    assert_eq!(dbsize(&redis), 8);
    // The whole burst is still there.
    assert_eq!(
        request(&mut c, &with_name("DEL", &keys[..3])),
        Reply::Int(3)
    );
    // And with an empty bucket, a preview still answers.
    assert_eq!(
        request(&mut c, &with_name("REMOVEKEYS.PREVIEW", &keys)),
        Reply::Int(5)
    );
    assert_rate_limited(&c.request(&["DEL", "k:3", "k:4"]), 3);
    assert_eq!(dbsize(&redis), 5);
}

// ---------------------------------------------------------------------------------------------
// the order of the rules
// ---------------------------------------------------------------------------------------------

/// deny_commands, arity, max_keys, wildcard_chars, protected_prefixes, delete_prefixes,
/// rate_limit: a request that breaks two rules is refused by the earlier one, whatever the order
/// of its keys.
#[test]
fn a_request_breaking_two_rules_names_the_earlier_one() {
    let redis = RedisServer::start();
    let extra = format!(
        "[guard]\nmax_keys = 3\ndeny_commands = [\"GETDEL\"]\n\
         protected_prefixes = [\"billing:\"]\n{}",
        user(
            "app",
            "delete_prefixes = [\"cache:\"]\nmax_deleted_keys_per_second = 2"
        )
    );
    let kw = Keyward::start_with(&redis.addr(), &extra);
    let keys = [
        "billing:1",
        "billing:*",
        "cache:1",
        "cache:2",
        "cache:3",
        "x:1",
    ];
    seed(&redis, &keys);
    let mut c = kw.raw_conn();
    login(&mut c, "app");

    let cases: [(&[&str], &str, &[&str]); 8] = [
        // deny_commands before everything about keys.
        (&["GETDEL", "billing:1"], "deny_commands", &["GETDEL"]),
        // max_keys before wildcard_chars and protected_prefixes.
        (
            &["DEL", "billing:*", "x:1", "cache:1", "cache:2"],
            "max_keys",
            &["3"],
        ),
        // wildcard_chars before protected_prefixes (billing:* breaks both).
        (&["DEL", "billing:*"], "wildcard_chars", &["billing:*"]),
        (
            &["UNLINK", "billing:1", "billing:*"],
            "wildcard_chars",
            &["billing:*"],
        ),
        // protected_prefixes before delete_prefixes, although x:1 comes first.
        (
            &["DEL", "x:1", "billing:1"],
            "protected_prefixes",
            &["billing:1"],
        ),
        (
            &["REMOVEKEYS.PREVIEW", "x:1", "billing:1"],
            "protected_prefixes",
            &["billing:1"],
        ),
        // delete_prefixes before rate_limit (3 keys > 2 per second).
        (
            &["DEL", "cache:1", "x:1", "cache:2"],
            "delete_prefixes",
            &["x:1"],
        ),
        // rate_limit last.
        (
            &["DEL", "cache:1", "cache:2", "cache:3"],
            "rate_limit",
            &["2"],
        ),
    ];
    for (args, rule, needles) in cases {
        let reply = c.request(args);
        let text = assert_refused(&reply, needles);
        assert!(text.contains(rule), "{args:?} must name {rule}: {text}");
        for other in [
            "deny_commands",
            "max_keys",
            "wildcard_chars",
            "protected_prefixes",
            "delete_prefixes",
            "rate_limit",
        ] {
            if other != rule {
                assert!(
                    !text.contains(other),
                    "{args:?} must name {rule} only: {text}"
                );
            }
        }
        assert_kept(&redis, &keys, &format!("{args:?}"));
    }
    // Arity comes before the key rules: REMOVEKEYS without keys.
    assert_eq!(
        c.request(&["REMOVEKEYS"]),
        Reply::Error("ERR wrong number of arguments for 'removekeys' command".into())
    );
    // And the rate limit lets through what it should.
    assert_eq!(c.request(&["DEL", "cache:1", "cache:2"]), Reply::Int(2));
}

// ---------------------------------------------------------------------------------------------
// MULTI and pipelines
// ---------------------------------------------------------------------------------------------

#[test]
fn inside_multi_a_refusal_by_any_new_rule_aborts_the_transaction() {
    let redis = RedisServer::start();
    let extra = format!(
        "{PROTECTED}{}",
        user(
            "app",
            "delete_prefixes = [\"cache:\"]\nmax_deleted_keys_per_second = 5"
        )
    );
    let kw = Keyward::start_with(&redis.addr(), &extra);
    let keys = ["cache:1", "cache:2", "billing:1", "user:1"];
    seed(&redis, &keys);
    let mut c = kw.raw_conn();
    login(&mut c, "app");

    for (refused, rule) in [
        (&["DEL", "billing:1"][..], "protected_prefixes"),
        (&["GETDEL", "user:1"], "delete_prefixes"),
        (
            &[
                "REMOVEKEYS",
                "cache:1",
                "cache:2",
                "cache:3",
                "cache:4",
                "cache:5",
                "cache:6",
            ],
            "rate_limit",
        ),
    ] {
        let mut batch = resp_str(&["MULTI"]);
        batch.extend(resp_str(&["SET", "marker", "1"]));
        batch.extend(resp_str(&["DEL", "cache:1"]));
        batch.extend(resp_str(refused));
        batch.extend(resp_str(&["EXEC"]));
        c.send(&batch);
        let replies = c.read_n_replies(5, T);
        assert_eq!(replies[0], Reply::ok(), "{refused:?}");
        assert_eq!(replies[1], Reply::simple("QUEUED"), "{refused:?}");
        assert_eq!(replies[2], Reply::simple("QUEUED"), "{refused:?}");
        assert_refused(&replies[3], &[rule]);
        let exec = replies[4].error_text().unwrap_or_default();
        assert!(exec.starts_with("EXECABORT"), "{refused:?}: {replies:?}");
        assert!(!redis.exists(b"marker"), "{refused:?}: EXEC applied");
        assert_kept(&redis, &keys, &format!("{refused:?}"));
    }

    // Out of the transaction; an accepted delete inside MULTI runs at EXEC.
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(c.request(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.request(&["UNLINK", "cache:1", "cache:2"]),
        Reply::simple("QUEUED")
    );
    assert!(redis.exists(b"cache:1"), "nothing runs before EXEC");
    assert_eq!(c.request(&["EXEC"]), Reply::Array(vec![Reply::Int(2)]));
    assert_gone(&redis, &["cache:1", "cache:2"], "EXEC");
    assert_kept(&redis, &["billing:1", "user:1"], "end");
}

#[test]
fn in_a_pipeline_each_refusal_keeps_its_place() {
    let redis = RedisServer::start();
    let kw = Keyward::start_with(
        &redis.addr(),
        &format!("{PROTECTED}max_deleted_keys_per_second = 3"),
    );
    seed(&redis, &["billing:1", "c:1", "c:2", "c:3", "c:4"]);
    let mut c = kw.raw_conn();
    let mut batch = resp_str(&["SET", "x", "1"]);
    batch.extend(resp_str(&["DEL", "c:1", "billing:1"]));
    batch.extend(resp_str(&["GET", "x"]));
    batch.extend(resp_str(&[
        "REMOVEKEYS.PREVIEW",
        "c:1",
        "c:2",
        "c:1",
        "nope",
    ]));
    batch.extend(resp_str(&["UNLINK", "c:1", "c:2"]));
    batch.extend(resp_str(&["ECHO", "between"]));
    batch.extend(resp_str(&["REMOVEKEYS", "c:3", "c:4"]));
    batch.extend(resp_str(&["GETDEL", "session:9"]));
    batch.extend(resp_str(&["ECHO", "after"]));
    c.send(&batch);
    let replies = c.read_n_replies(9, T);
    assert_eq!(replies[0], Reply::ok());
    assert_refused(&replies[1], &["protected_prefixes", "billing:1"]);
    assert_eq!(replies[2], Reply::bulk("1"));
    assert_eq!(replies[3], Reply::Int(2), "preview");
    assert_eq!(replies[4], Reply::Int(2), "UNLINK c:1 c:2");
    assert_eq!(replies[5], Reply::bulk("between"));
    assert_rate_limited(&replies[6], 3);
    assert_refused(&replies[7], &["protected_prefixes", "session:9"]);
    assert_eq!(replies[8], Reply::bulk("after"));
    assert_gone(&redis, &["c:1", "c:2"], "pipeline");
    assert_kept(&redis, &["billing:1", "c:3", "c:4", "x"], "pipeline");
}

// ---------------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------------

#[test]
fn http_remove_refuses_protected_and_out_of_scope_keys_with_422() {
    let extra = format!(
        "{PROTECTED}{}{}",
        user("app", "delete_prefixes = [\"cache:\"]"),
        user("ops", "bypass_protected_prefixes = true")
    );
    let (redis, _kw, api) = start_http(&extra);
    let keys = ["billing:1", "session:1", "cache:1", "user:1"];
    seed(&redis, &keys);
    let app = api.basic("app", "app-pass");
    let ops = api.basic("ops", "ops-pass");

    let error = app
        .remove(json!(["cache:1", "billing:1"]))
        .err(422, "protected_prefixes");
    assert_eq!(error["key"], "billing:1", "{error}");
    let reply = ops.remove(json!("session:1")).ok();
    assert_eq!(reply["removed"], 1, "{reply}");
    let error = app
        .remove(json!(["cache:1", "user:1"]))
        .err(422, "delete_prefixes");
    assert_eq!(error["key"], "user:1", "{error}");
    // The order of the rules holds over HTTP too.
    let error = app
        .remove(json!(["user:1", "billing:1"]))
        .err(422, "protected_prefixes");
    assert_eq!(error["key"], "billing:1", "{error}");
    let error = app.remove(json!(["billing:*"])).err(422, "wildcard_chars");
    assert_eq!(error["key"], "billing:*", "{error}");
    assert_kept(&redis, &["billing:1", "cache:1", "user:1"], "refusals");

    let reply = app.remove(json!(["cache:1", "cache:2"])).ok();
    assert_eq!(
        (&reply["requested"], &reply["removed"]),
        (&json!(2), &json!(1))
    );
    assert!(!redis.exists(b"cache:1"));
    // ops may delete billing keys, and any other key.
    let reply = ops.remove(json!(["billing:1", "user:1"])).ok();
    assert_eq!(reply["removed"], 2, "{reply}");
    assert_eq!(dbsize(&redis), 0);
}

#[test]
fn http_dry_run_answers_what_would_be_removed() {
    let extra = format!("{PROTECTED}max_keys = 4");
    let (redis, _kw, api) = start_http(&extra);
    seed(&redis, &["a", "b", "c", "billing:1"]);
    let dry = |keys: serde_json::Value| {
        api.post("/v1/keys/remove?dry_run=true", &json!({ "keys": keys }))
    };
    let reply = dry(json!(["a", "b", "a", "missing"])).ok();
    assert_eq!(reply["dry_run"], true, "{reply}");
    assert_eq!(reply["requested"], 3, "{reply}");
    assert_eq!(reply["would_remove"], 2, "{reply}");
    assert!(reply.get("removed").is_none(), "{reply}");
    let reply = dry(json!("c")).ok();
    assert_eq!(
        (&reply["requested"], &reply["would_remove"]),
        (&json!(1), &json!(1)),
        "{reply}"
    );
    assert_eq!(dbsize(&redis), 4, "a dry run deletes nothing");

    // Refusals as for a real remove.
    let error = dry(json!(["a", "billing:1"])).err(422, "protected_prefixes");
    assert_eq!(error["key"], "billing:1", "{error}");
    let error = dry(json!(["a*"])).err(422, "wildcard_chars");
    assert_eq!(error["key"], "a*", "{error}");
    dry(json!(["k1", "k2", "k3", "k4", "k5"])).err(422, "max_keys");
    assert_eq!(dbsize(&redis), 4);

    // dry_run=false is an ordinary remove.
    let reply = api
        .post("/v1/keys/remove?dry_run=false", &json!({"keys": ["a"]}))
        .ok();
    assert_eq!(reply["removed"], 1, "{reply}");
    assert!(!redis.exists(b"a"));
}

#[test]
fn http_remove_is_rate_limited_with_429_and_shares_the_address_bucket() {
    let redis = RedisServer::start();
    let (http, port) = http_section("");
    let kw = Keyward::start_with(
        &redis.addr(),
        &format!("{http}[guard]\nmax_deleted_keys_per_second = 4"),
    );
    let api = HttpApi::new(port);
    let keys = names("k:", 12);
    seed(&redis, &strs(&keys));

    // A dry run of more keys than the limit is not limited and spends nothing.
    let reply = api
        .post("/v1/keys/remove?dry_run=true", &json!({"keys": keys}))
        .ok();
    assert_eq!(reply["would_remove"], 12, "{reply}");
    // Five keys: more than the limit, always refused.
    api.remove(json!(keys[..5])).err(429, "rate_limit");
    assert_eq!(api.remove(json!(keys[..4])).ok()["removed"], 4);
    let error = api.remove(json!(keys[4..6])).err(429, "rate_limit");
    assert!(
        error["message"].as_str().unwrap_or("").contains('4'),
        "{error}"
    );
    assert_kept(&redis, &strs(&keys[4..]), "HTTP 429");

    // The same address over RESP: the same (empty) bucket.
    let mut c = kw.raw_conn();
    assert_rate_limited(&c.request(&["DEL", "k:4", "k:5"]), 4);
    assert_kept(&redis, &strs(&keys[4..]), "RESP after HTTP");

    // After a second, both pass again.
    thread::sleep(Duration::from_millis(1100));
    assert_eq!(api.remove(json!(keys[4..6])).ok()["removed"], 2);
    assert_eq!(c.request(&["DEL", "k:6", "k:7"]), Reply::Int(2));
    assert_kept(&redis, &strs(&keys[8..]), "end");
}

// ---------------------------------------------------------------------------------------------
// hooks
// ---------------------------------------------------------------------------------------------

#[test]
fn hooks_are_refused_by_protected_prefixes_and_delete_prefixes() {
    let hooks = "[[hooks]]\nname = \"invoice\"\n\
         remove = [\"cache:invoice:{id}\", \"billing:invoice:{id}\"]\n\
         [[hooks]]\nname = \"product\"\n\
         remove = [\"cache:product:{id}\", \"cache:home\"]\n\
         [[hooks]]\nname = \"profile\"\n\
         remove = [\"cache:user:{id}\", \"user:{id}:view\"]\n";
    let extra = format!(
        "{PROTECTED}{hooks}{}{}",
        user("app", "delete_prefixes = [\"cache:\"]"),
        user("ops", "bypass_protected_prefixes = true")
    );
    let (redis, kw, api) = start_http(&extra);
    let keys = [
        "cache:invoice:1",
        "billing:invoice:1",
        "cache:product:1",
        "cache:home",
        "cache:user:1",
        "user:1:view",
    ];
    seed(&redis, &keys);

    let mut app = kw.raw_conn();
    login(&mut app, "app");
    assert_refused(
        &app.request(&["RUNHOOK", "invoice", "id", "1"]),
        &["protected_prefixes", "billing:invoice:1"],
    );
    assert_refused(
        &app.request(&["RUNHOOK", "profile", "id", "1"]),
        &["delete_prefixes", "user:1:view"],
    );
    let http_app = api.basic("app", "app-pass");
    let error = http_app
        .hook("invoice", json!({"id": "1"}))
        .err(422, "protected_prefixes");
    assert_eq!(error["key"], "billing:invoice:1", "{error}");
    let error = http_app
        .hook("profile", json!({"id": "1"}))
        .err(422, "delete_prefixes");
    assert_eq!(error["key"], "user:1:view", "{error}");
    assert_kept(&redis, &keys, "refused hooks");

    // A hook within the rules runs.
    assert_eq!(
        app.request(&["RUNHOOK", "product", "id", "1"]),
        Reply::Int(2)
    );
    assert_gone(&redis, &["cache:product:1", "cache:home"], "product hook");
    // ops may run the invoice hook, by RUNHOOK and over HTTP.
    let mut ops = kw.raw_conn();
    login(&mut ops, "ops");
    assert_eq!(
        ops.request(&["RUNHOOK", "invoice", "id", "1"]),
        Reply::Int(2)
    );
    assert_gone(&redis, &["cache:invoice:1", "billing:invoice:1"], "ops");
    seed(&redis, &["billing:invoice:2"]);
    let reply = api
        .basic("ops", "ops-pass")
        .hook("invoice", json!({"id": "2"}))
        .ok();
    assert!(!redis.exists(b"billing:invoice:2"), "{reply}");
}

// ---------------------------------------------------------------------------------------------
// dry-run mode, reload
// ---------------------------------------------------------------------------------------------

#[test]
fn dry_run_mode_lets_refused_deletes_through_and_logs_the_rule() {
    let redis = RedisServer::start();
    let extra = format!(
        "[guard]\nmode = \"dry-run\"\nprotected_prefixes = [\"billing:\"]\n\
         max_deleted_keys_per_second = 2\n{}",
        user("app", "delete_prefixes = [\"cache:\"]")
    );
    let kw = Keyward::start_with(&redis.addr(), &extra);
    let keys = ["billing:1", "user:1", "cache:1", "cache:2", "cache:3"];
    seed(&redis, &keys);
    let mut c = kw.raw_conn();
    login(&mut c, "app");
    assert_eq!(c.request(&["DEL", "billing:1"]), Reply::Int(1));
    audit_line(&kw, "DEL", "would refuse: protected_prefixes");
    assert_eq!(c.request(&["UNLINK", "user:1"]), Reply::Int(1));
    audit_line(&kw, "UNLINK", "would refuse: delete_prefixes");
    assert_eq!(
        c.request(&["REMOVEKEYS", "cache:1", "cache:2", "cache:3"]),
        Reply::Int(3)
    );
    audit_line(&kw, "REMOVEKEYS", "would refuse: rate_limit");
    assert_eq!(
        dbsize(&redis),
        0,
        "dry-run deletes what enforce would refuse"
    );
    assert!(!kw.log().contains("outcome=refused"), "{}", kw.log());
}

#[test]
fn a_protected_prefix_added_by_sighup_applies_to_the_next_request() {
    let redis = RedisServer::start();
    let kw = Keyward::start(&redis.addr());
    seed(&redis, &["billing:1", "billing:2"]);
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["DEL", "billing:1"]), Reply::Int(1));

    let original = kw.config_text();
    assert!(original.contains("[guard]\n"), "{original}");
    let reloads = |kw: &Keyward| {
        kw.log()
            .lines()
            .filter(|l| {
                l.contains("configuration reloaded") || l.contains("configuration not reloaded")
            })
            .count()
    };
    let before = reloads(&kw);
    kw.rewrite_config(&original.replace(
        "[guard]\n",
        "[guard]\nprotected_prefixes = [\"billing:\"]\n",
    ));
    kw.send_signal(libc::SIGHUP);
    assert!(
        wait_until(T, || reloads(&kw) > before),
        "no reload logged; log:\n{}",
        kw.log()
    );
    assert!(
        !kw.log().contains("configuration not reloaded"),
        "the reload was refused; log:\n{}",
        kw.log()
    );
    assert_refused(
        &c.request(&["DEL", "billing:2"]),
        &["protected_prefixes", "billing:2"],
    );
    assert!(redis.exists(b"billing:2"));
    // A new connection sees it too.
    let mut d = kw.raw_conn();
    assert_refused(
        &d.request(&["UNLINK", "billing:2"]),
        &["protected_prefixes"],
    );
    assert!(redis.exists(b"billing:2"));
}

// ---------------------------------------------------------------------------------------------
// cluster
// ---------------------------------------------------------------------------------------------

/// One cluster (3 primaries, no replicas) for: a protected key among keys of every primary
/// (refused, nothing deleted anywhere), a user's delete_prefixes across slots, and a preview
/// count across slots.
#[test]
fn cluster_protected_prefixes_delete_prefixes_and_preview_across_slots() {
    let cluster = RedisCluster::start(3, 0);
    let extra = format!(
        "{PROTECTED}{}{}",
        user("app", "delete_prefixes = [\"cache:\"]"),
        user("admin", "")
    ) + &user("slow", "max_deleted_keys_per_second = 3");
    let kw = InProcess::cluster(&cluster.seeds(), &extra);
    let primaries: Vec<u16> = cluster.primaries().into_iter().map(|(_, p)| p).collect();
    assert_eq!(primaries.len(), 3);

    // On every primary: two cache keys, one user key, one billing key.
    let mut all: Vec<(u16, String)> = Vec::new();
    for &p in &primaries {
        for prefix in ["cache:", "user:", "billing:"] {
            let n = if prefix == "cache:" { 2 } else { 1 };
            for k in cluster.keys_on(p, prefix, n) {
                all.push((p, k));
            }
        }
    }
    let set_all = || {
        for (p, k) in &all {
            let _: () = redis::cmd("SET")
                .arg(k)
                .arg("v")
                .query(&mut cluster.conn(*p))
                .expect("SET on its primary");
        }
    };
    let exists_on_owner = |p: u16, k: &str| -> bool {
        let n: i64 = redis::cmd("EXISTS")
            .arg(k)
            .query(&mut cluster.conn(p))
            .expect("EXISTS on its primary");
        n == 1
    };
    let count_left = |prefix: &str| {
        all.iter()
            .filter(|(p, k)| k.starts_with(prefix) && exists_on_owner(*p, k))
            .count()
    };
    set_all();
    let keys_with = |prefix: &str| -> Vec<String> {
        all.iter()
            .filter(|(_, k)| k.starts_with(prefix))
            .map(|(_, k)| k.clone())
            .collect()
    };
    let caches = keys_with("cache:");
    let users = keys_with("user:");
    let billing = keys_with("billing:");
    assert_eq!((caches.len(), users.len(), billing.len()), (6, 3, 3));

    let mut admin = kw.raw_conn();
    login(&mut admin, "admin");
    // Keys of every primary and one protected key last: refused, nothing deleted anywhere.
    let mut mixed: Vec<String> = caches.clone();
    mixed.extend(users.iter().cloned());
    mixed.push(billing[2].clone());
    for cmd in ["REMOVEKEYS", "DEL", "UNLINK"] {
        let reply = request(&mut admin, &with_name(cmd, &mixed));
        assert_refused(&reply, &["protected_prefixes", &billing[2]]);
        assert_eq!(
            (
                count_left("cache:"),
                count_left("user:"),
                count_left("billing:")
            ),
            (6, 3, 3),
            "{cmd}: refused, yet keys were deleted"
        );
    }

    // Preview across slots, with duplicates and missing keys.
    let mut preview = caches.clone();
    preview.extend(users.iter().cloned());
    preview.push(caches[0].clone());
    preview.push(users[1].clone());
    preview.push("user:missing:{x}".into());
    assert_eq!(
        request(&mut admin, &with_name("REMOVEKEYS.PREVIEW", &preview)),
        Reply::Int(9)
    );
    let reply = request(&mut admin, &with_name("REMOVEKEYS.PREVIEW", &mixed));
    assert_refused(&reply, &["protected_prefixes"]);

    // app may delete cache keys only, across slots.
    let mut app = kw.raw_conn();
    login(&mut app, "app");
    let mut out_of_scope = caches.clone();
    out_of_scope.push(users[0].clone());
    let reply = request(&mut app, &with_name("REMOVEKEYS", &out_of_scope));
    assert_refused(&reply, &["delete_prefixes", &users[0]]);
    assert_eq!(
        count_left("cache:"),
        6,
        "refused, yet cache keys were deleted"
    );
    assert_eq!(
        request(&mut app, &with_name("REMOVEKEYS.PREVIEW", &caches)),
        Reply::Int(6)
    );
    assert_eq!(
        request(&mut app, &with_name("REMOVEKEYS", &caches)),
        Reply::Int(6)
    );
    assert_eq!(
        (
            count_left("cache:"),
            count_left("user:"),
            count_left("billing:")
        ),
        (0, 3, 3)
    );

    // The rate limit counts keys across slots: three keys of three primaries, then no more.
    let mut slow = kw.raw_conn();
    login(&mut slow, "slow");
    assert_eq!(request(&mut slow, &with_name("DEL", &users)), Reply::Int(3));
    set_all();
    let reply = request(&mut slow, &with_name("UNLINK", &caches[..2]));
    assert_rate_limited(&reply, 3);
    assert_eq!(
        count_left("cache:"),
        6,
        "rate-limited, yet keys were deleted"
    );
}
