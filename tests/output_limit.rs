//! `[limits] max_client_output_bytes`: a client that pipelines GETs of large values and reads
//! nothing does not make keyward hold their replies without bound, in either standalone mode;
//! everyone else is served meanwhile. Real redis-server, the real binary, a raw TCP client.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{Keyward, RedisServer, wait_until};

const VALUE_BYTES: usize = 1024 * 1024;
const GETS: usize = 200;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .expect("VmRSS");
    kib * 1024
}

/// Sends `GETS` GETs of the big value in one write and reads nothing; returns the socket.
fn greedy_client(port: u16) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let request = b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n".repeat(GETS);
    stream.write_all(&request).expect("send the pipeline");
    stream
}

/// A client that reads normally gets its answer.
fn someone_else_is_served(port: u16) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream.write_all(b"*1\r\n$4\r\nPING\r\n").unwrap();
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).expect("PONG");
    assert_eq!(&reply, b"+PONG\r\n");
}

fn start(share: bool, limit: usize) -> (RedisServer, Keyward) {
    let redis = RedisServer::start();
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(vec![b'x'; VALUE_BYTES])
        .query(&mut redis.conn())
        .expect("SET big");
    let keyward = Keyward::start_with(
        &redis.addr(),
        &format!(
            "[upstream]\nshare_connections = {share}\n[limits]\nmax_client_output_bytes = {limit}\n"
        ),
    );
    (redis, keyward)
}

#[test]
fn with_shared_connections_a_client_that_does_not_read_is_closed_at_the_byte_limit() {
    let (_redis, keyward) = start(true, 16 * 1024 * 1024);
    let before = rss_bytes(keyward.pid());
    let mut greedy = greedy_client(keyward.port);
    assert!(
        wait_until(Duration::from_secs(10), || keyward
            .log()
            .contains("max_client_output_bytes")),
        "keyward did not close the client; log:\n{}",
        keyward.log()
    );
    someone_else_is_served(keyward.port);
    // The greedy client reads what was on its way, then the end of the connection, well before
    // the 200 MB it asked for.
    let started = Instant::now();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match greedy.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no end of stream"
        );
    }
    assert!(
        total < GETS * VALUE_BYTES / 2,
        "the client read {total} bytes: it was not closed"
    );
    let grown = rss_bytes(keyward.pid()).saturating_sub(before);
    assert!(
        grown < 96 * 1024 * 1024,
        "keyward grew by {grown} bytes for one client that does not read"
    );
}

#[test]
fn with_a_connection_per_client_the_replies_wait_in_redis_not_in_keyward() {
    let (_redis, keyward) = start(false, 16 * 1024 * 1024);
    let before = rss_bytes(keyward.pid());
    let _greedy = greedy_client(keyward.port);
    // Give keyward time to take whatever it would take.
    std::thread::sleep(Duration::from_secs(2));
    someone_else_is_served(keyward.port);
    let grown = rss_bytes(keyward.pid()).saturating_sub(before);
    assert!(
        grown < 96 * 1024 * 1024,
        "keyward grew by {grown} bytes for one client that does not read"
    );
}

#[test]
fn in_front_of_a_cluster_a_client_that_does_not_read_is_closed_at_the_byte_limit() {
    let cluster = support::cluster::RedisCluster::start(3, 0);
    let owner = cluster.owner_of_slot(keyward::cluster::topology::slot_of(b"big"));
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(vec![b'x'; VALUE_BYTES])
        .query(&mut cluster.conn(owner))
        .expect("SET big on its owner");
    let keyward = Keyward::start_cluster(
        &cluster.seeds(),
        &format!("[limits]\nmax_client_output_bytes = {}\n", 16 * 1024 * 1024),
    );
    let before = rss_bytes(keyward.pid());
    let _greedy = greedy_client(keyward.port);
    assert!(
        wait_until(Duration::from_secs(10), || keyward
            .log()
            .contains("max_client_output_bytes")),
        "keyward did not close the client; log:\n{}",
        keyward.log()
    );
    someone_else_is_served(keyward.port);
    let grown = rss_bytes(keyward.pid()).saturating_sub(before);
    assert!(
        grown < 96 * 1024 * 1024,
        "keyward grew by {grown} bytes for one client that does not read"
    );
}
