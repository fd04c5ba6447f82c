//! Process lifecycle: an upstream that is down and comes back, graceful shutdown on SIGTERM and
//! SIGINT, and the client cap.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// True if a new client can connect and get `+PONG` within half a second.
fn serves_new_client(addr: &str) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &addr.parse().expect("socket addr"),
        Duration::from_millis(300),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

#[test]
fn upstream_down_gives_an_error_naming_it_then_recovers_when_it_comes_up() {
    let port = free_port();
    let upstream = format!("127.0.0.1:{port}");
    let mut kw = Keyward::start(&upstream);

    let out = kw.cli(&["PING"]);
    assert!(out.contains("ERR"), "expected an error, got {out:?}");
    assert!(
        out.contains(&upstream),
        "the error must name the upstream {upstream}: {out:?}"
    );

    let mut c = kw.raw_conn();
    let reply = c.request(&["GET", "k"]);
    let text = reply
        .error_text()
        .unwrap_or_else(|| panic!("expected an error while the upstream is down, got {reply:?}"));
    assert!(text.starts_with("ERR"), "{text}");
    assert!(text.contains(&upstream), "{text}");
    kw.assert_running();

    let redis = RedisServer::start_on(port, &[]);
    redis.cli(&["SET", "k", "from-redis"]);

    // The same client retries on its next request, and new clients are served.
    assert_eq!(c.request(&["GET", "k"]), Reply::bulk("from-redis"));
    assert_eq!(kw.cli(&["PING"]).trim(), "PONG");
    assert_eq!(kw.cli(&["GET", "k"]).trim(), "from-redis");
    kw.assert_running();
}

#[test]
fn sigterm_lets_an_in_flight_blpop_finish_then_exits_zero() {
    let (redis, mut kw) = start_pair("");
    let addr = kw.addr();
    let mut blocked = kw.raw_conn();
    assert_eq!(blocked.request(&["PING"]), Reply::simple("PONG"));
    blocked.cmd(&["BLPOP", "k", "2"]);
    thread::sleep(Duration::from_millis(300));

    let signalled = Instant::now();
    kw.send_signal(libc::SIGTERM);
    thread::sleep(Duration::from_millis(300));
    assert!(
        kw.is_running(),
        "keyward must wait for the in-flight BLPOP; log:\n{}",
        kw.log()
    );
    assert!(
        !serves_new_client(&addr),
        "keyward must stop accepting new clients after SIGTERM"
    );

    assert_eq!(
        redis.cli(&["PING"]).trim(),
        "PONG",
        "redis itself must be unaffected"
    );
    let reply = blocked.read_reply(Duration::from_secs(5));
    assert_eq!(reply, Reply::NilArray, "the blocked client gets its reply");
    let status = kw
        .wait_exit(Duration::from_secs(8))
        .unwrap_or_else(|| panic!("keyward did not exit after SIGTERM; log:\n{}", kw.log()));
    assert!(status.success(), "exit status {status}; log:\n{}", kw.log());
    let took = signalled.elapsed();
    assert!(
        took >= Duration::from_millis(1000),
        "exited before the BLPOP finished ({took:?})"
    );
}

#[test]
fn sigint_when_idle_exits_zero_quickly() {
    let (_redis, mut kw) = start_pair("");
    assert_eq!(kw.cli(&["PING"]).trim(), "PONG");
    let started = Instant::now();
    kw.send_signal(libc::SIGINT);
    let status = kw.wait_exit(Duration::from_secs(3)).unwrap_or_else(|| {
        panic!(
            "keyward did not exit within 3 s of SIGINT; log:\n{}",
            kw.log()
        )
    });
    assert!(status.success(), "exit status {status}; log:\n{}", kw.log());
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[test]
fn sigterm_when_idle_with_connected_clients_exits_zero() {
    let (_redis, mut kw) = start_pair("");
    let mut idle = kw.raw_conn();
    assert_eq!(idle.request(&["PING"]), Reply::simple("PONG"));
    kw.send_signal(libc::SIGTERM);
    let status = kw
        .wait_exit(Duration::from_secs(8))
        .unwrap_or_else(|| panic!("keyward did not exit after SIGTERM; log:\n{}", kw.log()));
    assert!(status.success(), "exit status {status}; log:\n{}", kw.log());
}

#[test]
fn max_clients_refuses_the_connection_over_the_limit() {
    let (_redis, kw) = start_pair("[server]\nmax_clients = 2");
    // Let the start-up probe connection go away first.
    thread::sleep(Duration::from_millis(300));
    let mut c1 = kw.raw_conn();
    let mut c2 = kw.raw_conn();
    assert_eq!(c1.request(&["PING"]), Reply::simple("PONG"));
    assert_eq!(c2.request(&["PING"]), Reply::simple("PONG"));

    let mut c3 = kw.raw_conn();
    let _ = c3.try_send(b"PING\r\n");
    let (bytes, closed) = c3.read_to_close(Duration::from_secs(5));
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        "-ERR max number of clients reached\r\n"
    );
    assert!(closed, "the refused connection must be closed");

    // The admitted clients are unaffected, and a slot frees up when one leaves.
    assert_eq!(c2.request(&["SET", "a", "1"]), Reply::ok());
    drop(c1);
    assert!(
        wait_until(Duration::from_secs(3), || serves_new_client(&kw.addr())),
        "a new client must be admitted once another has left"
    );
    assert_eq!(c2.request(&["GET", "a"]), Reply::bulk("1"));
}

#[test]
fn harness_builds_proxy_toml_with_overrides() {
    let text = proxy_toml(
        "127.0.0.1:1",
        "127.0.0.1:2",
        "max_keys = 3\n[server]\nmax_clients = 2\n[guard]\ndeny_commands = []",
    );
    assert!(text.contains("[server]\nlisten = \"127.0.0.1:1\"\nmax_clients = 2\n"));
    assert!(text.contains("nodes = [\"127.0.0.1:2\"]"));
    assert!(text.contains("max_keys = 3\n"));
    assert!(text.contains("deny_commands = []\n"));
    assert!(!text.contains("FLUSHALL"));
    assert_eq!(text.matches("max_keys").count(), 1);
}

/// A Redis that stops answering (SIGSTOP) gives the waiting client an error naming it after
/// `reply_timeout_ms`, never a hang, and keyward serves again once Redis is back (SIGCONT).
#[test]
fn a_stalled_upstream_times_out_then_recovers() {
    let redis = RedisServer::start();
    let kw = Keyward::start_with(&redis.addr(), "[upstream]\nreply_timeout_ms = 500");
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["SET", "k", "v"]), Reply::ok());

    redis.signal(libc::SIGSTOP);
    let started = Instant::now();
    c.cmd(&["GET", "k"]);
    let reply = c.read_reply(Duration::from_secs(5));
    let waited = started.elapsed();
    redis.signal(libc::SIGCONT);
    let text = reply.error_text().unwrap_or_default().to_string();
    assert!(text.contains("no reply within 500 ms"), "{reply:?}");
    assert!(text.contains(&redis.addr()), "{reply:?}");
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "answered after {waited:?}"
    );

    // Back: a new client (and the old one, if its session had no state) is served.
    assert!(wait_until(Duration::from_secs(5), || {
        let mut n = kw.raw_conn();
        n.request(&["GET", "k"]) == Reply::bulk("v")
    }));
}

/// Blocking commands wait as long as they asked to, whatever the reply timeout.
#[test]
fn blocking_commands_are_not_cut_by_the_reply_timeout() {
    let redis = RedisServer::start();
    let kw = Keyward::start_with(&redis.addr(), "[upstream]\nreply_timeout_ms = 300");
    let mut c = kw.raw_conn();
    let started = Instant::now();
    let reply = c.request(&["BLPOP", "nothing", "1"]);
    assert!(
        matches!(reply, Reply::NilArray | Reply::Nil | Reply::Null),
        "{reply:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(900));
}
