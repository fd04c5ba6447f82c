//! The cluster session's reply queue (`src/cluster/replies.rs`): requests behind others that
//! take long (a blocking command, a failing node) are followed up and audited on their own,
//! not only when they reach the front of the queue. Both tests failed on the first version of
//! the queue, which did just that (found in review).

mod support;

use std::time::{Duration, Instant};

use support::cluster::RedisCluster;
use support::*;

/// A primary dies; its replica is elected within a few seconds, well inside keyward's 6 s
/// retry budget. Every request a client pipelined meanwhile is answered once the replica has
/// taken over, each retrying on its own, and so is a request behind a blocking command that
/// outlasts the budget.
#[test]
fn pipelined_requests_to_a_failed_over_primary_are_all_served() {
    let mut cluster = RedisCluster::start(3, 1);
    let kw = Keyward::start_cluster(&cluster.seeds(), "");
    // keyward sends keyless blocking commands (WAIT) to the first primary in address order:
    // the victim is another one.
    let mut addrs: Vec<String> = cluster
        .primaries()
        .into_iter()
        .map(|(_, p)| format!("127.0.0.1:{p}"))
        .collect();
    addrs.sort();
    let victim: u16 = addrs[1].rsplit_once(':').unwrap().1.parse().unwrap();
    let keys = cluster.keys_on(victim, "rv:", 60);
    {
        let mut c = kw.raw_conn();
        for k in &keys {
            assert_eq!(c.request(&["SET", k, "v"]), Reply::ok());
        }
    }
    cluster.sync_replica(victim, &keys[0]);

    let mut pipelined = kw.raw_conn();
    let mut behind_blocking = kw.raw_conn();
    assert_eq!(pipelined.request(&["PING"]), Reply::simple("PONG"));
    assert_eq!(behind_blocking.request(&["PING"]), Reply::simple("PONG"));

    cluster.kill_node(victim);
    // keyward sees its shared connection to the victim close; new requests find the node
    // refusing connections (NotSent: retried for up to 6 s).
    std::thread::sleep(Duration::from_millis(300));
    let sent = Instant::now();

    // A: a request behind a 7 s blocking command (WAIT for more replicas than there are).
    let mut bytes = resp_str(&["WAIT", "5", "7000"]);
    bytes.extend(resp_str(&["GET", &keys[0]]));
    behind_blocking.send(&bytes);
    // B: 60 GETs in one write.
    let mut bytes = Vec::new();
    for k in &keys {
        bytes.extend(resp_str(&["GET", k]));
    }
    pipelined.send(&bytes);

    let mut errors = Vec::new();
    let mut last_ok = None;
    for k in &keys {
        match pipelined.try_read_reply(Duration::from_secs(30)) {
            Some(Reply::Bulk(v)) if v == b"v" => last_ok = Some(sent.elapsed()),
            other => errors.push(format!("GET {k} at {:?}: {other:?}", sent.elapsed())),
        }
    }
    let wait = behind_blocking.try_read_reply(Duration::from_secs(30));
    let get = behind_blocking.try_read_reply(Duration::from_secs(30));
    eprintln!(
        "pipeline: {} errors of {}; last success at {last_ok:?}; first errors: {:?}",
        errors.len(),
        keys.len(),
        &errors[..errors.len().min(3)]
    );
    eprintln!("behind WAIT 5 7000: {wait:?} then {get:?}");
    assert_eq!(get, Some(Reply::bulk("v")), "the GET behind WAIT");
    assert!(
        errors.is_empty(),
        "{} of {} pipelined GETs failed after the failover: {:?}",
        errors.len(),
        keys.len(),
        &errors[..errors.len().min(5)]
    );
}

/// A guarded GETDEL behind a blocked BLPOP: its audit line is written when its node answers,
/// not when the BLPOP does, and so is written even when the client leaves first.
#[test]
fn audit_line_of_a_getdel_behind_a_blocked_command() {
    let cluster = RedisCluster::start(3, 0);
    let kw = Keyward::start_cluster(&cluster.seeds(), "[server]\nshutdown_timeout_ms = 200");
    let primaries: Vec<u16> = cluster.primaries().into_iter().map(|(_, p)| p).collect();
    let key = cluster.keys_on(primaries[0], "ad:", 1).remove(0);
    let queue = cluster.keys_on(primaries[1], "adq:", 1).remove(0);
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["SET", &key, "1"]), Reply::ok());

    let mut bytes = resp_str(&["BLPOP", &queue, "0"]);
    bytes.extend(resp_str(&["GETDEL", &key]));
    c.send(&bytes);
    // The GETDEL ran on its node.
    assert!(wait_until(Duration::from_secs(5), || {
        let n: i64 = redis::cmd("EXISTS")
            .arg(&key)
            .query(&mut cluster.conn(primaries[0]))
            .unwrap();
        n == 0
    }));
    let logged = |kw: &Keyward| {
        kw.wait_log_line(Duration::from_secs(2), |l| {
            l.contains("keyward::audit") && l.contains("command=GETDEL")
        })
    };
    let while_blocked = logged(&kw);
    drop(c);
    std::thread::sleep(Duration::from_secs(1));
    let after_close = logged(&kw);
    eprintln!(
        "audit line while blocked: {while_blocked:?}; after the client left: {after_close:?}"
    );
    assert!(
        after_close.is_some(),
        "GETDEL deleted {key} but no audit line was ever written; log:\n{}",
        kw.log()
    );
}
