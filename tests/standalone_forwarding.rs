//! Transparent forwarding to a standalone Redis: every ordinary command behaves through keyward
//! exactly as against Redis. Clients used: raw sockets, redis-cli, redis-rs and fred. Clients
//! stay independent as they are on Redis: a blocking read or the Lua debugger of one client
//! stalls no other.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::*;

const T: Duration = IO_TIMEOUT;

fn bulk(s: &str) -> Reply {
    Reply::bulk(s)
}

fn arr(items: &[&str]) -> Reply {
    Reply::Array(items.iter().map(|s| bulk(s)).collect())
}

#[test]
fn pipeline_of_10000_set_get_in_one_write_replies_in_order() {
    let (redis, kw) = start_pair("");
    let n = 10_000;
    let mut bytes = Vec::new();
    for i in 0..n {
        bytes.extend(resp_str(&[
            "SET",
            &format!("key:{i}"),
            &format!("value-{i}"),
        ]));
        bytes.extend(resp_str(&["GET", &format!("key:{i}")]));
    }
    let mut c = kw.raw_conn();
    c.send(&bytes);
    let replies = c.read_n_replies(2 * n, Duration::from_secs(20));
    for i in 0..n {
        assert_eq!(replies[2 * i], Reply::ok(), "reply to SET #{i}");
        assert_eq!(
            replies[2 * i + 1],
            bulk(&format!("value-{i}")),
            "reply to GET #{i}"
        );
    }
    // Nothing extra arrives after the last reply.
    assert_eq!(c.try_read_reply(Duration::from_millis(200)), None);
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), n.to_string());
}

#[test]
fn redis_rs_pipeline_of_10000_commands() {
    let (redis, kw) = start_pair("");
    let mut con = kw.conn();
    let mut pipe = redis::pipe();
    for i in 0..10_000 {
        pipe.cmd("INCR").arg("counter");
        pipe.cmd("RPUSH").arg("list").arg(i);
    }
    let results: Vec<i64> = pipe.query(&mut con).expect("pipeline through keyward");
    assert_eq!(results.len(), 20_000);
    for i in 0..10_000 {
        assert_eq!(results[2 * i], i as i64 + 1, "INCR #{i}");
        assert_eq!(results[2 * i + 1], i as i64 + 1, "RPUSH #{i}");
    }
    assert_eq!(redis.cli(&["GET", "counter"]).trim(), "10000");
    assert_eq!(redis.cli(&["LINDEX", "list", "9999"]).trim(), "9999");
}

#[test]
fn redis_cli_round_trip() {
    let (redis, kw) = start_pair("");
    assert_eq!(kw.cli(&["PING"]).trim(), "PONG");
    assert_eq!(kw.cli(&["SET", "greeting", "hello world"]).trim(), "OK");
    assert_eq!(kw.cli(&["GET", "greeting"]).trim(), "hello world");
    assert_eq!(redis.cli(&["GET", "greeting"]).trim(), "hello world");
    assert_eq!(kw.cli(&["RPUSH", "l", "a", "b", "c"]).trim(), "3");
    assert_eq!(kw.cli(&["LRANGE", "l", "0", "-1"]), "a\nb\nc\n");
    assert_eq!(kw.cli(&["INCRBY", "n", "41"]).trim(), "41");
    // Redis's own errors come back unchanged.
    let out = kw.cli(&["INCR", "greeting"]);
    assert!(
        out.contains("ERR value is not an integer or out of range"),
        "{out}"
    );
    let out = kw.cli(&["NOSUCHCOMMAND", "x"]);
    assert!(out.contains("ERR unknown command"), "{out}");
}

#[tokio::test]
async fn fred_commands_pipeline_and_transaction() {
    use fred::prelude::*;
    let (redis, kw) = start_pair("");
    let client = fred_client(&kw.addr()).await;

    let _: () = client
        .set("fred:k", "v1", None, None, false)
        .await
        .expect("SET");
    let v: String = client.get("fred:k").await.expect("GET");
    assert_eq!(v, "v1");
    let n: i64 = client
        .hset("fred:h", [("f1", "a"), ("f2", "b")])
        .await
        .expect("HSET");
    assert_eq!(n, 2);
    let h: std::collections::HashMap<String, String> =
        client.hgetall("fred:h").await.expect("HGETALL");
    assert_eq!(h.get("f1").map(String::as_str), Some("a"));
    assert_eq!(h.get("f2").map(String::as_str), Some("b"));
    let missing: Option<String> = client.get("fred:missing").await.expect("GET missing");
    assert_eq!(missing, None);

    // A pipeline of 1,000 INCRs: the replies must come back in order.
    let pipe = client.pipeline();
    for _ in 0..1000 {
        let _: () = pipe.incr("fred:counter").await.expect("queue INCR");
    }
    let results: Vec<i64> = pipe.all().await.expect("pipeline");
    assert_eq!(results, (1..=1000).collect::<Vec<i64>>());

    // MULTI/EXEC through fred.
    let trx = client.multi();
    let _: () = trx.incr("fred:tx").await.expect("queue");
    let _: () = trx.incr("fred:tx").await.expect("queue");
    let _: () = trx
        .set("fred:tx2", "done", None, None, false)
        .await
        .expect("queue");
    let res: Vec<Value> = trx.exec(true).await.expect("EXEC");
    assert_eq!(res.len(), 3, "{res:?}");
    assert_eq!(res[0].as_i64(), Some(1));
    assert_eq!(res[1].as_i64(), Some(2));
    assert_eq!(res[2].as_string().as_deref(), Some("OK"));

    let _ = client.quit().await;
    assert_eq!(redis.cli(&["GET", "fred:tx"]).trim(), "2");
    assert_eq!(redis.cli(&["GET", "fred:tx2"]).trim(), "done");
    assert_eq!(redis.cli(&["GET", "fred:counter"]).trim(), "1000");
}

#[test]
fn resp3_hello_and_typed_replies() {
    let (_redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    let hello = c.request(&["HELLO", "3"]);
    let Reply::Map(pairs) = &hello else {
        panic!("HELLO 3 must answer a RESP3 map, got {hello:?}");
    };
    assert!(
        pairs.contains(&(bulk("proto"), Reply::Int(3))),
        "HELLO 3 map lacks proto=3: {pairs:?}"
    );
    assert_eq!(
        c.request(&["HSET", "h", "f1", "v1", "f2", "v2"]),
        Reply::Int(2)
    );
    let all = c.request(&["HGETALL", "h"]);
    let Reply::Map(mut pairs) = all else {
        panic!("HGETALL in RESP3 must be a map, got {all:?}");
    };
    pairs.sort_by(|a, b| format!("{:?}", a.0).cmp(&format!("{:?}", b.0)));
    assert_eq!(
        pairs,
        vec![(bulk("f1"), bulk("v1")), (bulk("f2"), bulk("v2"))]
    );
    // RESP3 null, set and double types.
    assert_eq!(c.request(&["GET", "missing"]), Reply::Null);
    assert_eq!(c.request(&["SADD", "s", "x"]), Reply::Int(1));
    assert_eq!(c.request(&["SMEMBERS", "s"]), Reply::Set(vec![bulk("x")]));
    assert_eq!(c.request(&["ZADD", "z", "1.5", "m"]), Reply::Int(1));
    assert_eq!(
        c.request(&["ZSCORE", "z", "m"]),
        Reply::Double("1.5".into())
    );
    // Back to RESP2 on the same connection.
    let hello2 = c.request(&["HELLO", "2"]);
    assert!(matches!(hello2, Reply::Array(_)), "{hello2:?}");
    assert_eq!(c.request(&["GET", "missing"]), Reply::Nil);
}

#[test]
fn resp3_client_tracking_invalidation_push() {
    let (_redis, kw) = start_pair("");
    let mut tracked = kw.raw_conn();
    assert!(matches!(tracked.request(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(tracked.request(&["CLIENT", "TRACKING", "ON"]), Reply::ok());
    assert_eq!(tracked.request(&["GET", "tk"]), Reply::Null);

    let mut other = kw.raw_conn();
    assert_eq!(other.request(&["SET", "tk", "changed"]), Reply::ok());

    let push = tracked.read_reply(T);
    assert_eq!(
        push,
        Reply::Push(vec![bulk("invalidate"), arr(&["tk"])]),
        "expected an invalidation push"
    );
    // The connection keeps answering in order after the push.
    assert_eq!(tracked.request(&["GET", "tk"]), bulk("changed"));
}

#[test]
fn multi_exec_and_discard() {
    let (redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["MULTI"]), Reply::ok());
    assert_eq!(c.request(&["SET", "a", "1"]), Reply::simple("QUEUED"));
    assert_eq!(c.request(&["INCR", "a"]), Reply::simple("QUEUED"));
    assert_eq!(c.request(&["GET", "a"]), Reply::simple("QUEUED"));
    assert_eq!(
        c.request(&["EXEC"]),
        Reply::Array(vec![Reply::ok(), Reply::Int(2), bulk("2")])
    );

    assert_eq!(c.request(&["MULTI"]), Reply::ok());
    assert_eq!(c.request(&["SET", "d", "1"]), Reply::simple("QUEUED"));
    assert_eq!(c.request(&["DISCARD"]), Reply::ok());
    assert!(!redis.exists(b"d"), "DISCARD must not apply the queued SET");
    let exec = c.request(&["EXEC"]);
    assert!(
        exec.error_text()
            .is_some_and(|e| e.contains("EXEC without MULTI")),
        "{exec:?}"
    );
    // A queue-time error aborts the whole transaction, as in Redis.
    assert_eq!(c.request(&["MULTI"]), Reply::ok());
    assert_eq!(c.request(&["SET", "e", "1"]), Reply::simple("QUEUED"));
    assert!(c.request(&["NOSUCHCOMMAND"]).is_error());
    let exec = c.request(&["EXEC"]);
    assert!(
        exec.error_text()
            .is_some_and(|e| e.starts_with("EXECABORT")),
        "{exec:?}"
    );
    assert!(!redis.exists(b"e"));
}

#[test]
fn watch_conflict_makes_exec_return_nil() {
    let (redis, kw) = start_pair("");
    let mut a = kw.raw_conn();
    let mut b = kw.raw_conn();
    assert_eq!(a.request(&["SET", "w", "initial"]), Reply::ok());

    assert_eq!(a.request(&["WATCH", "w"]), Reply::ok());
    assert_eq!(b.request(&["SET", "w", "theirs"]), Reply::ok());
    assert_eq!(a.request(&["MULTI"]), Reply::ok());
    assert_eq!(a.request(&["SET", "w", "mine"]), Reply::simple("QUEUED"));
    assert_eq!(a.request(&["EXEC"]), Reply::NilArray);
    assert_eq!(redis.cli(&["GET", "w"]).trim(), "theirs");

    // Without a conflicting write the transaction applies.
    assert_eq!(a.request(&["WATCH", "w"]), Reply::ok());
    assert_eq!(a.request(&["MULTI"]), Reply::ok());
    assert_eq!(a.request(&["SET", "w", "mine"]), Reply::simple("QUEUED"));
    assert_eq!(a.request(&["EXEC"]), Reply::Array(vec![Reply::ok()]));
    assert_eq!(redis.cli(&["GET", "w"]).trim(), "mine");
}

#[test]
fn blpop_with_timeout_returns_nil_after_the_timeout() {
    let (_redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    let started = Instant::now();
    let reply = c.request(&["BLPOP", "empty", "1"]);
    let took = started.elapsed();
    assert_eq!(reply, Reply::NilArray);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "BLPOP 1 took {took:?}"
    );
    assert_eq!(c.request(&["PING"]), Reply::simple("PONG"));
}

#[test]
fn blpop_zero_is_unblocked_by_lpush_from_another_client() {
    let (_redis, kw) = start_pair("");
    let mut blocked = kw.raw_conn();
    blocked.cmd(&["BLPOP", "queue", "0"]);
    assert_eq!(blocked.try_read_reply(Duration::from_millis(300)), None);

    let mut pusher = kw.raw_conn();
    assert_eq!(pusher.request(&["LPUSH", "queue", "job-1"]), Reply::Int(1));
    assert_eq!(blocked.read_reply(T), arr(&["queue", "job-1"]));
    assert_eq!(blocked.request(&["LLEN", "queue"]), Reply::Int(0));
}

#[test]
fn pubsub_resp2_subscribe_psubscribe_messages_and_unsubscribe() {
    let (_redis, kw) = start_pair("");
    let mut sub = kw.raw_conn();
    let mut publisher = kw.raw_conn();

    sub.cmd(&["SUBSCRIBE", "a", "b"]);
    let confirmations = sub.read_n_replies(2, T);
    assert_eq!(
        confirmations,
        vec![
            Reply::Array(vec![bulk("subscribe"), bulk("a"), Reply::Int(1)]),
            Reply::Array(vec![bulk("subscribe"), bulk("b"), Reply::Int(2)]),
        ]
    );
    assert_eq!(
        sub.request(&["PSUBSCRIBE", "news.*"]),
        Reply::Array(vec![bulk("psubscribe"), bulk("news.*"), Reply::Int(3)])
    );
    // PING in subscribed mode (RESP2) answers an array.
    assert_eq!(sub.request(&["PING"]), arr(&["pong", ""]));

    assert_eq!(publisher.request(&["PUBLISH", "a", "hello"]), Reply::Int(1));
    assert_eq!(
        publisher.request(&["PUBLISH", "news.tech", "rust"]),
        Reply::Int(1)
    );
    assert_eq!(sub.read_reply(T), arr(&["message", "a", "hello"]));
    assert_eq!(
        sub.read_reply(T),
        arr(&["pmessage", "news.*", "news.tech", "rust"])
    );

    assert_eq!(
        sub.request(&["UNSUBSCRIBE", "a"]),
        Reply::Array(vec![bulk("unsubscribe"), bulk("a"), Reply::Int(2)])
    );
    assert_eq!(publisher.request(&["PUBLISH", "a", "lost"]), Reply::Int(0));
    assert_eq!(
        sub.request(&["UNSUBSCRIBE"]),
        Reply::Array(vec![bulk("unsubscribe"), bulk("b"), Reply::Int(1)])
    );
    assert_eq!(
        sub.request(&["PUNSUBSCRIBE"]),
        Reply::Array(vec![bulk("punsubscribe"), bulk("news.*"), Reply::Int(0)])
    );
    // Out of subscribed mode: ordinary commands again.
    assert_eq!(sub.request(&["PING"]), Reply::simple("PONG"));
    assert_eq!(sub.request(&["SET", "after", "1"]), Reply::ok());
}

#[test]
fn pubsub_with_redis_rs() {
    let (_redis, kw) = start_pair("");
    let mut sub_con = kw.conn();
    let mut pub_con = kw.conn();
    let mut sub = sub_con.as_pubsub();
    sub.set_read_timeout(Some(T)).expect("read timeout");
    sub.subscribe("orders").expect("SUBSCRIBE");
    sub.psubscribe("log.*").expect("PSUBSCRIBE");

    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("orders")
        .arg("order-1")
        .query(&mut pub_con)
        .expect("PUBLISH");
    assert_eq!(receivers, 1);
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("log.error")
        .arg("disk full")
        .query(&mut pub_con)
        .expect("PUBLISH");
    assert_eq!(receivers, 1);

    let msg = sub.get_message().expect("message");
    assert_eq!(msg.get_channel_name(), "orders");
    assert_eq!(msg.get_payload::<String>().unwrap(), "order-1");
    assert!(!msg.from_pattern());
    let msg = sub.get_message().expect("pmessage");
    assert_eq!(msg.get_channel_name(), "log.error");
    assert_eq!(msg.get_pattern::<String>().unwrap(), "log.*");
    assert_eq!(msg.get_payload::<String>().unwrap(), "disk full");

    sub.unsubscribe("orders").expect("UNSUBSCRIBE");
    sub.punsubscribe("log.*").expect("PUNSUBSCRIBE");
    drop(sub);
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("orders")
        .arg("order-2")
        .query(&mut pub_con)
        .expect("PUBLISH");
    assert_eq!(receivers, 0);
    let pong: String = redis::cmd("PING").query(&mut sub_con).expect("PING");
    assert_eq!(pong, "PONG");
}

#[test]
fn resp3_subscriber_keeps_issuing_commands_and_gets_pushes_and_replies() {
    let (_redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    assert!(matches!(c.request(&["HELLO", "3"]), Reply::Map(_)));
    assert_eq!(
        c.request(&["SUBSCRIBE", "ch"]),
        Reply::Push(vec![bulk("subscribe"), bulk("ch"), Reply::Int(1)])
    );

    let n = 200;
    let addr = kw.addr();
    let publisher = thread::spawn(move || {
        let mut p = RawConn::connect(&addr);
        for i in 0..n {
            let r = p.request(&["PUBLISH", "ch", &format!("msg-{i}")]);
            assert_eq!(r, Reply::Int(1), "PUBLISH #{i}");
        }
    });

    for i in 0..n {
        c.cmd(&["SET", &format!("k{i}"), &format!("v{i}")]);
        c.cmd(&["GET", &format!("k{i}")]);
        if i % 20 == 0 {
            thread::sleep(Duration::from_millis(2));
        }
    }
    publisher.join().expect("publisher thread");

    let mut replies = Vec::new();
    let mut messages = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while replies.len() < 2 * n || messages.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = c.try_read_reply(left).unwrap_or_else(|| {
            panic!(
                "timed out with {} replies and {} messages",
                replies.len(),
                messages.len()
            )
        });
        match r {
            Reply::Push(items) => messages.push(items),
            other => replies.push(other),
        }
    }
    for i in 0..n {
        assert_eq!(replies[2 * i], Reply::ok(), "SET #{i}");
        assert_eq!(replies[2 * i + 1], bulk(&format!("v{i}")), "GET #{i}");
    }
    for (i, m) in messages.iter().enumerate() {
        assert_eq!(
            m,
            &vec![bulk("message"), bulk("ch"), bulk(&format!("msg-{i}"))]
        );
    }
    assert_eq!(
        c.request(&["UNSUBSCRIBE", "ch"]),
        Reply::Push(vec![bulk("unsubscribe"), bulk("ch"), Reply::Int(0)])
    );
    assert_eq!(c.request(&["GET", "k0"]), bulk("v0"));
}

#[test]
fn select_isolates_databases_per_client() {
    let (redis, kw) = start_pair("");
    let mut a = kw.raw_conn();
    assert_eq!(a.request(&["SELECT", "2"]), Reply::ok());
    assert_eq!(a.request(&["SET", "sk", "in-db-2"]), Reply::ok());
    assert_eq!(a.request(&["GET", "sk"]), bulk("in-db-2"));

    // Another client is still on db 0.
    let mut b = kw.raw_conn();
    assert_eq!(b.request(&["GET", "sk"]), Reply::Nil);

    // Ground truth on Redis.
    assert!(!redis.exists(b"sk"), "the key must not be in db 0");
    assert_eq!(redis.cli(&["-n", "2", "GET", "sk"]).trim(), "in-db-2");
}

#[test]
fn auth_is_passed_through_to_redis() {
    let redis = RedisServer::start_with(&["--requirepass", "s3cret"]);
    let kw = Keyward::start(&redis.addr());
    let mut c = kw.raw_conn();

    let r = c.request(&["SET", "a", "1"]);
    assert!(
        r.error_text().is_some_and(|e| e.starts_with("NOAUTH")),
        "{r:?}"
    );
    let r = c.request(&["AUTH", "wrong"]);
    assert!(
        r.error_text().is_some_and(|e| e.starts_with("WRONGPASS")),
        "{r:?}"
    );
    assert_eq!(c.request(&["AUTH", "s3cret"]), Reply::ok());
    assert_eq!(c.request(&["SET", "a", "1"]), Reply::ok());
    assert_eq!(c.request(&["GET", "a"]), bulk("1"));

    // Authentication belongs to that client only.
    let mut other = kw.raw_conn();
    let r = other.request(&["GET", "a"]);
    assert!(
        r.error_text().is_some_and(|e| e.starts_with("NOAUTH")),
        "{r:?}"
    );
    assert_eq!(kw.cli(&["-a", "s3cret", "GET", "a"]).trim(), "1");
    assert_eq!(redis.cli(&["-a", "s3cret", "GET", "a"]).trim(), "1");
}

#[test]
fn client_setname_and_getname() {
    let (redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["CLIENT", "GETNAME"]), Reply::Nil);
    assert_eq!(
        c.request(&["CLIENT", "SETNAME", "kw-test-client"]),
        Reply::ok()
    );
    assert_eq!(c.request(&["CLIENT", "GETNAME"]), bulk("kw-test-client"));
    // The name is set on this client's own upstream connection.
    let list = redis.cli(&["CLIENT", "LIST"]);
    assert!(list.contains("name=kw-test-client"), "{list}");
    let mut other = kw.raw_conn();
    assert_eq!(other.request(&["CLIENT", "GETNAME"]), Reply::Nil);
}

#[test]
fn monitor_sees_commands_of_other_clients() {
    let (_redis, kw) = start_pair("");
    let mut monitor = kw.raw_conn();
    assert_eq!(monitor.request(&["MONITOR"]), Reply::ok());
    let mut other = kw.raw_conn();
    assert_eq!(other.request(&["set", "monkey", "banana"]), Reply::ok());
    let seen = monitor.read_until(b"banana\"", T);
    let line = String::from_utf8_lossy(&seen);
    let line = line.lines().last().unwrap_or_default();
    assert!(line.starts_with('+'), "{line}");
    assert!(line.contains("\"set\" \"monkey\" \"banana\""), "{line}");
}

#[test]
fn quit_replies_ok_and_closes_the_connection() {
    let (_redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["SET", "q", "1"]), Reply::ok());
    c.cmd(&["QUIT"]);
    let (bytes, closed) = c.read_to_close(T);
    assert_eq!(String::from_utf8_lossy(&bytes), "+OK\r\n");
    assert!(closed, "keyward must close the connection after QUIT");
    // keyward itself keeps serving.
    assert_eq!(kw.cli(&["GET", "q"]).trim(), "1");
}

#[test]
fn inline_commands_over_a_raw_socket() {
    let (redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    c.send(b"PING\r\n");
    assert_eq!(c.read_until(b"\r\n", T), b"+PONG\r\n");
    c.send(b"SET a b\r\n");
    assert_eq!(c.read_until(b"\r\n", T), b"+OK\r\n");
    c.send(b"GET a\r\n");
    assert_eq!(c.read_reply(T), bulk("b"));
    c.send(b"SET \"my key\" \"hello world\"\r\n");
    assert_eq!(c.read_reply(T), Reply::ok());
    c.send(b"GET \"my key\"\r\n");
    assert_eq!(c.read_reply(T), bulk("hello world"));
    let direct: String = redis::cmd("GET")
        .arg("my key")
        .query(&mut redis.conn())
        .expect("GET on redis");
    assert_eq!(direct, "hello world");
    // Several inline commands in one write, with a bare LF and an empty line.
    c.send(b"PING\nECHO hi\r\n\r\nPING\r\n");
    assert_eq!(
        c.read_n_replies(3, T),
        vec![Reply::simple("PONG"), bulk("hi"), Reply::simple("PONG")]
    );
    // Inline and RESP mixed in one write.
    let mut mixed = resp_str(&["SET", "m", "1"]);
    mixed.extend_from_slice(b"INCR m\r\n");
    mixed.extend(resp_str(&["GET", "m"]));
    c.send(&mixed);
    assert_eq!(
        c.read_n_replies(3, T),
        vec![Reply::ok(), Reply::Int(2), bulk("2")]
    );
}

#[test]
fn hundred_megabyte_value_round_trip() {
    let (redis, kw) = start_pair("");
    let len = 100 * 1024 * 1024;
    let value: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    let mut con = kw.conn();
    con.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    con.set_write_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let started = Instant::now();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value[..])
        .query(&mut con)
        .expect("SET 100 MB");
    let back: Vec<u8> = redis::cmd("GET")
        .arg("big")
        .query(&mut con)
        .expect("GET 100 MB");
    assert_eq!(back.len(), value.len());
    assert_eq!(back[..64], value[..64]);
    assert_eq!(back[len - 64..], value[len - 64..]);
    assert_eq!(fnv1a(&back), fnv1a(&value), "content differs");
    assert_eq!(redis.cli(&["STRLEN", "big"]).trim(), len.to_string());
    // The connection stays usable after the big exchange.
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn binary_keys_and_values() {
    let (redis, kw) = start_pair("");
    let key: &[u8] = b"bin\0key\r\n\xff\xfe";
    let value: &[u8] = b"\0\r\n\xff\x00payload\r\n$3\r\n*1\r\n";
    let mut con = kw.conn();
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query(&mut con)
        .expect("SET binary");
    let back: Vec<u8> = redis::cmd("GET").arg(key).query(&mut con).expect("GET");
    assert_eq!(back, value);
    let direct: Vec<u8> = redis::cmd("GET")
        .arg(key)
        .query(&mut redis.conn())
        .expect("GET on redis");
    assert_eq!(direct, value);

    // Same over a raw socket, plus a binary hash field.
    let mut c = kw.raw_conn();
    c.cmd_bytes(&[b"HSET", b"h\xff", b"f\0\r\n", value]);
    assert_eq!(c.read_reply(T), Reply::Int(1));
    c.cmd_bytes(&[b"HGET", b"h\xff", b"f\0\r\n"]);
    assert_eq!(c.read_reply(T), Reply::bulk(value));
    c.cmd_bytes(&[b"EXISTS", key]);
    assert_eq!(c.read_reply(T), Reply::Int(1));
}

#[test]
fn list_shaped_like_a_pubsub_message_keeps_replies_aligned() {
    let (_redis, kw) = start_pair("");
    let mut c = kw.raw_conn();
    assert_eq!(
        c.request(&["RPUSH", "l", "message", "chan", "payload"]),
        Reply::Int(3)
    );
    let mut batch = resp_str(&["LRANGE", "l", "0", "-1"]);
    batch.extend(resp_str(&["SET", "after", "x"]));
    batch.extend(resp_str(&["GET", "after"]));
    batch.extend(resp_str(&["LRANGE", "l", "0", "-1"]));
    c.send(&batch);
    assert_eq!(
        c.read_n_replies(4, T),
        vec![
            arr(&["message", "chan", "payload"]),
            Reply::ok(),
            bulk("x"),
            arr(&["message", "chan", "payload"]),
        ]
    );

    // The same with redis-rs, blocking and multiplexed.
    let mut con = kw.conn();
    let list: Vec<String> = redis::cmd("LRANGE")
        .arg("l")
        .arg(0)
        .arg(-1)
        .query(&mut con)
        .unwrap();
    assert_eq!(list, ["message", "chan", "payload"]);
    let after: String = redis::cmd("GET").arg("after").query(&mut con).unwrap();
    assert_eq!(after, "x");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut con = redis_async_conn(&kw.addr()).await;
        let list: Vec<String> = redis::cmd("LRANGE")
            .arg("l")
            .arg(0)
            .arg(-1)
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(list, ["message", "chan", "payload"]);
        let after: String = redis::cmd("GET")
            .arg("after")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(after, "x");
    });
}

/// Blocking commands must never hold a connection other clients share.
#[test]
fn blocking_reads_do_not_stall_other_clients() {
    let (_redis, kw) = start_pair("");
    for blocker in [
        &["XREAD", "BLOCK", "0", "STREAMS", "s", "$"][..],
        &["BLMPOP", "0", "1", "l", "LEFT"],
        &["BZMPOP", "0", "1", "z", "MIN"],
    ] {
        let mut b = kw.raw_conn();
        b.cmd(blocker);
        std::thread::sleep(Duration::from_millis(100));
        let mut other = kw.raw_conn();
        assert_eq!(
            other.request(&["PING"]),
            Reply::simple("PONG"),
            "after {blocker:?}"
        );
        drop(b);
        let mut later = kw.raw_conn();
        assert_eq!(later.request(&["PING"]), Reply::simple("PONG"));
    }
}

/// The Lua debugger is connection state: it must not take over a shared connection.
#[test]
fn script_debug_stays_on_its_own_connection() {
    let (_redis, kw) = start_pair("");
    let mut debugger = kw.raw_conn();
    assert_eq!(debugger.request(&["SCRIPT", "DEBUG", "YES"]), Reply::ok());
    debugger.cmd(&["EVAL", "local x=1\nreturn x", "0"]);
    std::thread::sleep(Duration::from_millis(200));
    let mut other = kw.raw_conn();
    assert_eq!(other.request(&["PING"]), Reply::simple("PONG"));
    assert_eq!(other.request(&["SET", "k", "v"]), Reply::ok());
}
