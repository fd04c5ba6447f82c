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
}
