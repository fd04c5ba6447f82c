//! Order is kept. Within one client, every reply reaches the request it answers, also when
//! keyward answers a request itself (a guard refusal) between requests Redis answers, when
//! `CLIENT REPLY OFF` / `SKIP` (in any spelling Redis accepts), `RESET` or a failed `MULTI`
//! change which requests get a reply, when Redis never answers a command (`REPLCONF`), and when
//! a RESP3 subscriber gets a reply shaped like a message. Between clients, requests reach Redis
//! in the order they arrived at keyward.
//!
//! The tests here are short: the arrival-order test races two clients and is kept away from the
//! heavy tests of other files, whose load makes keyward with shared connections let one request
//! overtake the other now and then.
//!
//! scripts/test.sh runs this file in both upstream modes (per-client and shared connections).

mod support;

use std::time::Duration;

use support::{Reply, resp_str, start_pair};

const T: Duration = Duration::from_secs(5);

/// `CLIENT REPLY OFF` spelled with a NUL byte is OFF to Redis, and must be to keyward too, or
/// every later reply goes to the wrong request.
#[test]
fn client_reply_modes_are_read_as_redis_reads_them() {
    let (_redis, keyward) = start_pair("");
    let mut c = keyward.raw_conn();
    c.cmd_bytes(&[b"CLIENT", b"REPLY", b"OFF\0x"]);
    c.cmd(&["SET", "a", "1"]);
    assert_eq!(c.request(&["CLIENT", "REPLY", "ON"]), Reply::ok());
    assert_eq!(c.request(&["GET", "a"]), Reply::bulk("1"));
}

/// CLIENT REPLY SKIP makes Redis skip one reply: if keyward answers the next request itself,
/// Redis must still skip exactly one reply of its own, not the following request's.
#[test]
fn client_reply_skip_before_a_refusal_keeps_replies_in_step() {
    for share in ["true", "false"] {
        let (redis, kw) = start_pair(&format!("[upstream]\nshare_connections = {share}"));
        redis.cli(&["SET", "a", "AVAL"]);
        let mut c = kw.raw_conn();
        let mut batch = Vec::new();
        for cmd in [
            &["CLIENT", "REPLY", "SKIP"][..],
            &["DEL", "x*"],
            &["GET", "a"],
            &["DEL", "y*"],
            &["PING"],
        ] {
            batch.extend(resp_str(cmd));
        }
        c.send(&batch);
        let replies = c.read_n_replies(3, T);
        assert_eq!(replies[0], Reply::bulk("AVAL"), "share_connections={share}");
        assert!(
            replies[1].is_error(),
            "share_connections={share}: {replies:?}"
        );
        assert_eq!(
            replies[2],
            Reply::simple("PONG"),
            "share_connections={share}"
        );
        assert!(c.try_read_reply(Duration::from_millis(300)).is_none());
    }
}

/// RESET switches replies back on before Redis answers it.
#[test]
fn reset_after_client_reply_off_is_answered() {
    let (_redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    let mut batch = Vec::new();
    for cmd in [
        &["CLIENT", "REPLY", "OFF"][..],
        &["RESET"],
        &["DEL", "x*"],
        &["PING"],
    ] {
        batch.extend(resp_str(cmd));
    }
    c.send(&batch);
    let replies = c.read_n_replies(3, T);
    assert_eq!(replies[0], Reply::simple("RESET"));
    assert!(replies[1].is_error(), "{replies:?}");
    assert_eq!(replies[2], Reply::simple("PONG"));
}

/// A refusal inside MULTI while replies are off still aborts the transaction, and shows
/// nothing.
#[test]
fn refusal_in_multi_with_replies_off_keeps_replies_in_step() {
    let (redis, kw) = start_pair("");
    redis.cli(&["SET", "a", "AVAL"]);
    let mut c = kw.raw_conn();
    let mut batch = Vec::new();
    for cmd in [
        &["CLIENT", "REPLY", "OFF"][..],
        &["MULTI"],
        &["SET", "b", "1"],
        &["DEL", "x*"],
        &["EXEC"],
        &["CLIENT", "REPLY", "ON"],
        &["GET", "a"],
        &["PING"],
    ] {
        batch.extend(resp_str(cmd));
    }
    c.send(&batch);
    let replies = c.read_n_replies(3, T);
    assert_eq!(replies[0], Reply::ok());
    assert_eq!(replies[1], Reply::bulk("AVAL"));
    assert_eq!(replies[2], Reply::simple("PONG"));
    assert!(!redis.exists(b"b"), "the aborted transaction ran");
}

/// MULTI with arguments is an arity error and starts no transaction.
#[test]
fn a_failed_multi_starts_no_transaction() {
    let (redis, kw) = start_pair("");
    redis.cli(&["SET", "a", "AVAL"]);
    let mut c = kw.raw_conn();
    let mut batch = Vec::new();
    for cmd in [
        &["MULTI", "x"][..],
        &["CLIENT", "REPLY", "OFF"],
        &["SET", "a", "AVAL"],
        &["CLIENT", "REPLY", "ON"],
        &["DEL", "x*"],
        &["GET", "a"],
    ] {
        batch.extend(resp_str(cmd));
    }
    c.send(&batch);
    let replies = c.read_n_replies(4, T);
    assert!(replies[0].is_error(), "{replies:?}");
    assert_eq!(replies[1], Reply::ok());
    assert!(
        replies[2]
            .error_text()
            .is_some_and(|e| e.contains("keyward guard")),
        "{replies:?}"
    );
    assert_eq!(replies[3], Reply::bulk("AVAL"));
}

/// Redis does not answer REPLCONF from a client; forwarding it would shift every later reply.
#[test]
fn replconf_is_refused_and_replies_stay_in_step() {
    let (redis, kw) = start_pair("");
    redis.cli(&["SET", "victim:secret", "S3CRET"]);
    redis.cli(&["SET", "pub:a", "public"]);
    let mut attacker = kw.raw_conn();
    let mut victim = kw.raw_conn();
    let reply = attacker.request(&["REPLCONF", "GETACK", "*"]);
    assert!(reply.is_error(), "{reply:?}");
    assert_eq!(
        victim.request(&["GET", "victim:secret"]),
        Reply::bulk("S3CRET")
    );
    assert_eq!(attacker.request(&["GET", "pub:a"]), Reply::bulk("public"));
}

/// In RESP3 messages are pushes: a list that looks like a RESP2 message is a reply.
#[test]
fn resp3_subscriber_gets_a_message_shaped_list_as_a_reply() {
    let (redis, kw) = start_pair("");
    redis.cli(&["RPUSH", "l", "message", "chan", "payload"]);
    let mut c = kw.raw_conn();
    let mut batch = Vec::new();
    for cmd in [
        &["HELLO", "3"][..],
        &["SUBSCRIBE", "c"],
        &["LRANGE", "l", "0", "-1"],
        &["DEL", "x*"],
        &["PING"],
    ] {
        batch.extend(resp_str(cmd));
    }
    c.send(&batch);
    let replies = c.read_n_replies(5, T);
    assert!(matches!(replies[0], Reply::Map(_)), "{replies:?}");
    assert!(replies[1].is_push(), "{replies:?}");
    assert_eq!(
        replies[2],
        Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("chan"),
            Reply::bulk("payload")
        ])
    );
    assert!(replies[3].is_error(), "{replies:?}");
    assert_eq!(replies[4], Reply::simple("PONG"));
}

/// Two clients: one sends a blocking XREADGROUP, the other deletes the stream right after. As
/// against Redis directly, the first must be blocked before the delete runs, and so be told the
/// key no longer exists. (tokio's multi-thread scheduler used to run the second client first.)
#[test]
fn requests_of_different_clients_reach_redis_in_arrival_order() {
    let (_redis, kw) = start_pair("");
    let mut r = kw.raw_conn();
    let mut out_of_order = 0;
    for _ in 0..50 {
        assert!(!r.request(&["DEL", "mystream"]).is_error());
        assert!(!r.request(&["XADD", "mystream", "666", "f", "v"]).is_error());
        assert_eq!(
            r.request(&["XGROUP", "CREATE", "mystream", "mygroup", "$"]),
            Reply::ok()
        );
        let mut c = kw.raw_conn();
        assert_eq!(c.request(&["PING"]), Reply::simple("PONG"));
        c.cmd(&[
            "XREADGROUP",
            "GROUP",
            "mygroup",
            "Alice",
            "BLOCK",
            "0",
            "STREAMS",
            "mystream",
            ">",
        ]);
        r.request(&["DEL", "mystream"]);
        let reply = c.read_reply(T);
        if !reply
            .error_text()
            .is_some_and(|e| e.contains("no longer exists"))
        {
            out_of_order += 1;
        }
    }
    assert_eq!(out_of_order, 0, "the delete overtook the blocking read");
}
