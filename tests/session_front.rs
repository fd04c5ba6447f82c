//! The session front behaves the same whatever keyward forwards to: a private upstream
//! connection per client, connections shared by all clients, or a Redis Cluster.
//!
//! keyward runs in this process ([`InProcess`], through `keyward::server::serve`) in front of
//! real Redis servers; clients are raw sockets. Each check runs against every backend, so that a
//! front concern answered differently by one backend (as the SYNC refusal once was) fails here.

mod support;

use std::time::Duration;

use support::cluster::RedisCluster;
use support::in_process::InProcess;
use support::*;

const T: Duration = IO_TIMEOUT;

/// The two standalone backends: private connections (the default) and shared ones.
const STANDALONE_MODES: [(&str, &str); 2] = [
    ("private", "[upstream]\nshare_connections = false"),
    ("shared", "[upstream]\nshare_connections = true"),
];

fn err(reply: &Reply) -> &str {
    reply
        .error_text()
        .unwrap_or_else(|| panic!("expected an error, got {reply:?}"))
}

/// SYNC, PSYNC and REPLCONF get one refusal, and the connection goes on.
fn replication_is_refused_with_one_message(keyward: &InProcess, mode: &str) {
    let mut conn = keyward.raw_conn();
    let mut texts = Vec::new();
    for args in [
        &["SYNC"][..],
        &["PSYNC", "?", "-1"],
        &["REPLCONF", "listening-port", "1"],
    ] {
        texts.push(err(&conn.request(args)).to_string());
    }
    assert!(
        texts.iter().all(|t| t == &texts[0]),
        "{mode}: different refusals: {texts:?}"
    );
    assert_eq!(
        texts[0],
        "ERR keyward: SYNC, PSYNC and REPLCONF are not supported through keyward; replicate \
         from Redis directly",
        "{mode}"
    );
    assert_eq!(conn.request(&["PING"]), Reply::simple("PONG"), "{mode}");
}

/// QUIT after a pipelined request: the earlier reply, `+OK`, then the connection closes.
fn quit_answers_ok_then_closes(keyward: &InProcess, mode: &str) {
    let mut conn = keyward.raw_conn();
    let mut pipeline = resp_str(&["PING", "hello"]);
    pipeline.extend(resp_str(&["QUIT"]));
    conn.send(&pipeline);
    assert_eq!(conn.read_reply(T), Reply::bulk("hello"), "{mode}");
    assert_eq!(conn.read_reply(T), Reply::ok(), "{mode}");
    let (rest, closed) = conn.read_to_close(T);
    assert!(
        closed && rest.is_empty(),
        "{mode}: {rest:?}, closed {closed}"
    );
}

/// A guarded delete refused in the middle of a pipeline keeps its place; REMOVEKEYS counts
/// only the keys that exist.
fn guard_refusal_keeps_its_place(keyward: &InProcess, mode: &str) {
    let mut conn = keyward.raw_conn();
    let mut pipeline = resp_str(&["SET", "{front}x", "1"]);
    pipeline.extend(resp_str(&["DEL", "{front}x*"]));
    pipeline.extend(resp_str(&["GET", "{front}x"]));
    pipeline.extend(resp_str(&["REMOVEKEYS", "{front}x", "{front}missing"]));
    conn.send(&pipeline);
    let replies = conn.read_n_replies(4, T);
    assert_eq!(replies[0], Reply::ok(), "{mode}");
    assert!(
        err(&replies[1]).starts_with(
            "ERR keyward guard: DEL refused, key '{front}x*' contains the wildcard character '*'"
        ),
        "{mode}: {:?}",
        replies[1]
    );
    assert_eq!(replies[2], Reply::bulk("1"), "{mode}");
    assert_eq!(replies[3], Reply::Int(1), "{mode}");
}

/// A refusal inside MULTI makes EXEC fail, applying nothing.
fn refusal_inside_multi_aborts_the_transaction(keyward: &InProcess, mode: &str) {
    let mut conn = keyward.raw_conn();
    assert_eq!(conn.request(&["MULTI"]), Reply::ok(), "{mode}");
    assert_eq!(
        conn.request(&["SET", "{front}t", "1"]),
        Reply::simple("QUEUED"),
        "{mode}"
    );
    assert!(err(&conn.request(&["DEL", "{front}t?"])).contains("DEL refused"));
    let exec = conn.request(&["EXEC"]);
    assert!(err(&exec).starts_with("EXECABORT"), "{mode}: {exec:?}");
    assert_eq!(conn.request(&["GET", "{front}t"]), Reply::Nil, "{mode}");
}

/// CLIENT REPLY OFF silences replies until ON (which is answered); SKIP drops one.
fn client_reply_modes(keyward: &InProcess, mode: &str) {
    let mut conn = keyward.raw_conn();
    let mut pipeline = resp_str(&["CLIENT", "REPLY", "OFF"]);
    pipeline.extend(resp_str(&["SET", "{front}r", "1"]));
    pipeline.extend(resp_str(&["DEL", "{front}r*"]));
    pipeline.extend(resp_str(&["CLIENT", "REPLY", "ON"]));
    pipeline.extend(resp_str(&["CLIENT", "REPLY", "SKIP"]));
    pipeline.extend(resp_str(&["GET", "{front}r"]));
    pipeline.extend(resp_str(&["INCR", "{front}r"]));
    conn.send(&pipeline);
    assert_eq!(conn.read_reply(T), Reply::ok(), "{mode}: ON is answered");
    assert_eq!(
        conn.read_reply(T),
        Reply::Int(2),
        "{mode}: SKIP dropped GET's reply"
    );
    assert_eq!(
        conn.try_read_reply(Duration::from_millis(200)),
        None,
        "{mode}"
    );
}

/// With a password at keyward: NOAUTH before the login, WRONGPASS for a wrong one, then the
/// client is served.
fn login_gate(keyward: &InProcess, mode: &str) {
    let mut conn = keyward.raw_conn();
    assert_eq!(
        err(&conn.request(&["GET", "{front}a"])),
        "NOAUTH Authentication required.",
        "{mode}"
    );
    assert!(
        err(&conn.request(&["AUTH", "wrong"])).starts_with("WRONGPASS"),
        "{mode}"
    );
    assert_eq!(conn.request(&["AUTH", "s3cret"]), Reply::ok(), "{mode}");
    assert_eq!(
        conn.request(&["SET", "{front}a", "v"]),
        Reply::ok(),
        "{mode}"
    );
    assert_eq!(
        conn.request(&["GET", "{front}a"]),
        Reply::bulk("v"),
        "{mode}"
    );
}

/// `[guard] mode = "dry-run"`: what the guard would refuse is forwarded (a wildcard DEL, a
/// REMOVEKEYS over max_keys, a denied FLUSHALL), inside MULTI too.
fn dry_run_forwards_refusals(keyward: &InProcess, mode: &str) {
    let mut conn = keyward.raw_conn();
    let set = ["MSET", "{dry}a", "1", "{dry}b*", "2"];
    assert_eq!(conn.request(&set), Reply::ok(), "{mode}");
    let del = conn.request(&["DEL", "{dry}a", "{dry}b*"]);
    assert_eq!(del, Reply::Int(2), "{mode}");
    let keys: Vec<String> = (0..1001).map(|i| format!("{{dry}}k{i}")).collect();
    let mut removekeys = vec!["REMOVEKEYS"];
    removekeys.extend(keys.iter().map(String::as_str));
    assert_eq!(conn.request(&removekeys), Reply::Int(0), "{mode}");
    assert_eq!(conn.request(&["MULTI"]), Reply::ok(), "{mode}");
    let queued = conn.request(&["UNLINK", "{dry}?"]);
    assert_eq!(queued, Reply::simple("QUEUED"), "{mode}");
    let exec = conn.request(&["EXEC"]);
    assert_eq!(exec, Reply::Array(vec![Reply::Int(0)]), "{mode}");
    assert_eq!(conn.request(&["FLUSHALL"]), Reply::ok(), "{mode}");
}

const DRY_RUN: &str = "[guard]\nmode = \"dry-run\"";

fn front_checks(keyward: &InProcess, mode: &str) {
    replication_is_refused_with_one_message(keyward, mode);
    quit_answers_ok_then_closes(keyward, mode);
    guard_refusal_keeps_its_place(keyward, mode);
    refusal_inside_multi_aborts_the_transaction(keyward, mode);
    client_reply_modes(keyward, mode);
}

const PASSWORD: &str = "[server]\npassword = \"s3cret\"";

#[test]
fn the_front_is_the_same_for_private_and_shared_connections() {
    let redis = RedisServer::start();
    for (mode, toml) in STANDALONE_MODES {
        let keyward = InProcess::standalone(&redis.addr(), toml);
        front_checks(&keyward, mode);
        let keyward = InProcess::standalone(&redis.addr(), &format!("{toml}\n{PASSWORD}"));
        login_gate(&keyward, mode);
        let keyward = InProcess::standalone(&redis.addr(), &format!("{toml}\n{DRY_RUN}"));
        dry_run_forwards_refusals(&keyward, mode);
    }
}

#[test]
fn the_front_is_the_same_in_front_of_a_cluster() {
    let cluster = RedisCluster::start(3, 0);
    let keyward = InProcess::cluster(&cluster.seeds(), "");
    front_checks(&keyward, "cluster");
    let keyward = InProcess::cluster(&cluster.seeds(), PASSWORD);
    login_gate(&keyward, "cluster");
    let keyward = InProcess::cluster(&cluster.seeds(), DRY_RUN);
    dry_run_forwards_refusals(&keyward, "cluster");
}

/// Redis marks a connection authenticated when it accepts it. A connection kept ready while a
/// password was set must not be handed to a client after the password is gone: HELLO would
/// answer NOAUTH where Redis, connected to directly, answers the HELLO map.
#[test]
fn hello_works_after_the_password_is_removed_again() {
    for (mode, toml) in STANDALONE_MODES {
        let redis = RedisServer::start();
        let keyward = InProcess::standalone(&redis.addr(), toml);
        let pause = || std::thread::sleep(Duration::from_millis(150));

        let mut a = keyward.raw_conn();
        assert!(
            matches!(a.request(&["HELLO", "3"]), Reply::Map(_)),
            "{mode}"
        );
        let set = a.request(&["CONFIG", "SET", "requirepass", "foo"]);
        assert_eq!(set, Reply::ok(), "{mode}");
        pause();

        let mut b = keyward.raw_conn();
        assert_eq!(b.request(&["AUTH", "foo"]), Reply::ok(), "{mode}");
        assert!(
            matches!(b.request(&["HELLO", "3"]), Reply::Map(_)),
            "{mode}"
        );
        let unset = b.request(&["CONFIG", "SET", "requirepass", ""]);
        assert_eq!(unset, Reply::ok(), "{mode}");
        pause();

        let mut c = keyward.raw_conn();
        let hello = c.request(&["HELLO", "3"]);
        assert!(
            matches!(hello, Reply::Map(_)),
            "{mode}: a new client's HELLO 3 got {hello:?}"
        );
        assert_eq!(c.request(&["PING"]), Reply::simple("PONG"), "{mode}");
    }
}
