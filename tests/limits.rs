//! Per-client resource limits: the idle timeout, and the cap on replies pending per client.
//!
//! scripts/test.sh runs this file in both upstream modes (per-client and shared connections).

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::*;

#[test]
fn idle_clients_are_closed_but_subscribers_blocked_and_busy_clients_are_not() {
    let (redis, keyward) = start_pair("[server]\nidle_timeout_ms = 400");
    let mut idle = keyward.raw_conn();
    assert_eq!(idle.request(&["PING"]), Reply::simple("PONG"));
    let mut busy = keyward.raw_conn();
    let mut subscriber = keyward.raw_conn();
    subscriber.cmd(&["SUBSCRIBE", "news"]);
    subscriber.read_reply(IO_TIMEOUT);
    let mut blocked = keyward.raw_conn();
    blocked.cmd(&["BLPOP", "queue", "0"]);
    let mut monitor = keyward.raw_conn();
    assert_eq!(monitor.request(&["MONITOR"]), Reply::ok());

    // The busy client sends something every 100 ms for well over the timeout.
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(1200) {
        assert_eq!(busy.request(&["PING"]), Reply::simple("PONG"));
        thread::sleep(Duration::from_millis(100));
    }

    let (rest, closed) = idle.read_to_close(Duration::from_millis(100));
    assert!(
        closed && rest.is_empty(),
        "idle client: {rest:?} closed={closed}"
    );
    assert!(
        keyward.log().contains("closing idle client"),
        "{}",
        keyward.log()
    );
    redis.cli(&["PUBLISH", "news", "hello"]);
    assert_eq!(
        subscriber.read_reply(IO_TIMEOUT),
        Reply::Array(vec![
            Reply::bulk("message"),
            Reply::bulk("news"),
            Reply::bulk("hello")
        ])
    );
    redis.cli(&["LPUSH", "queue", "job"]);
    assert_eq!(
        blocked.read_reply(IO_TIMEOUT),
        Reply::Array(vec![Reply::bulk("queue"), Reply::bulk("job")])
    );
    assert_eq!(busy.request(&["PING"]), Reply::simple("PONG"));
    // MONITOR clients are exempt, as in Redis: after well over the timeout with no traffic at
    // all, the monitor still streams what Redis runs.
    let _ = monitor.read_to_close(Duration::from_millis(50));
    thread::sleep(Duration::from_millis(900));
    redis.cli(&["SET", "after-the-quiet", "1"]);
    let line = monitor.read_until(b"after-the-quiet", IO_TIMEOUT);
    assert!(
        line.starts_with(b"+"),
        "{:?}",
        String::from_utf8_lossy(&line)
    );
}

/// Resident memory of a process in bytes, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// The largest output buffer Redis holds for any of its clients (`CLIENT LIST` omem).
fn redis_max_omem(redis: &RedisServer) -> u64 {
    redis
        .cli(&["CLIENT", "LIST"])
        .split_whitespace()
        .filter_map(|field| field.strip_prefix("omem="))
        .filter_map(|v| v.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn a_client_that_writes_without_reading_stops_being_read() {
    let (redis, keyward) = start_pair("[limits]\nmax_pending_replies = 100");
    let value = "v".repeat(100 * 1024);
    redis.cli(&["SET", "big", &value]);
    let mut c = keyward.raw_conn();
    let before = rss_bytes(keyward.pid());
    // 2000 requests in one write (70 KB) whose replies are 200 MB: far more than the socket
    // buffers hold, so without the limit keyward (or Redis) would have to buffer them.
    let requests = 2000;
    let mut pipeline = Vec::new();
    for _ in 0..requests {
        pipeline.extend(resp_str(&["GET", "big"]));
    }
    c.send(&pipeline);
    thread::sleep(Duration::from_millis(1500));
    let keyward_growth = rss_bytes(keyward.pid()).saturating_sub(before);
    let redis_omem = redis_max_omem(&redis);
    assert!(
        keyward_growth < 50 << 20,
        "keyward grew by {} MiB",
        keyward_growth >> 20
    );
    assert!(
        redis_omem < 50 << 20,
        "Redis buffers {} MiB for keyward",
        redis_omem >> 20
    );
    assert!(
        keyward
            .log()
            .contains("client has reached max_pending_replies"),
        "{}",
        keyward.log()
    );
    // Another client is served meanwhile.
    assert_eq!(keyward.raw_conn().request(&["PING"]), Reply::simple("PONG"));
    // Reading resumes the flow: every reply arrives, in full.
    for i in 0..requests {
        let reply = c.read_reply(IO_TIMEOUT);
        assert!(
            matches!(&reply, Reply::Bulk(b) if b.len() == value.len()),
            "reply {i}: {:?}",
            reply.error_text()
        );
    }
    assert_eq!(c.request(&["PING"]), Reply::simple("PONG"));
}

/// Found in review: while keyward was not reading a client at the pending limit, it did not
/// notice the client hanging up behind a blocking command, which then stayed blocked in Redis.
#[test]
fn a_paused_client_that_hangs_up_behind_a_blocked_command_is_let_go() {
    let (redis, keyward) = start_pair("[limits]\nmax_pending_replies = 10");
    let mut c = keyward.raw_conn();
    let mut pipeline = resp_str(&["BLPOP", "never", "0"]);
    for _ in 0..20 {
        pipeline.extend(resp_str(&["PING"]));
    }
    c.send(&pipeline);
    let blocked = |n: &str| {
        redis
            .cli(&["INFO", "clients"])
            .contains(&format!("blocked_clients:{n}"))
    };
    assert!(wait_until(Duration::from_secs(5), || blocked("1")));
    drop(c);
    assert!(
        wait_until(Duration::from_secs(2), || blocked("0")),
        "the BLPOP is still blocked in Redis after the client left"
    );
}
