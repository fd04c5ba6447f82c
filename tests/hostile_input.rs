//! Hostile client bytes: each malformed request gets the very error Redis sends for it, then the
//! connection is closed; keyward never crashes and other clients notice nothing. Every case is
//! also sent to Redis directly, so the expected texts are checked against the real thing.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

const T: Duration = IO_TIMEOUT;

fn assert_serves(kw: &mut Keyward) {
    kw.assert_running();
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["PING"]), Reply::simple("PONG"));
    assert_eq!(c.request(&["SET", "alive", "yes"]), Reply::ok());
    assert_eq!(c.request(&["GET", "alive"]), Reply::bulk("yes"));
}

fn assert_no_panic(kw: &Keyward) {
    let log = kw.log();
    assert!(!log.contains("panicked"), "keyward panicked; log:\n{log}");
}

/// Sends `input` to Redis and to keyward on fresh connections; both must answer exactly
/// `expected_reply` and close the connection.
fn assert_same_protocol_error(input: &[u8], expected_reply: &str) {
    let (redis, mut kw) = start_pair("");
    for (who, addr) in [("redis", redis.addr()), ("keyward", kw.addr())] {
        let (bytes, closed) = raw_closed(&addr, input, T);
        assert_eq!(
            String::from_utf8_lossy(&bytes),
            expected_reply,
            "{who} answered differently"
        );
        assert!(
            closed,
            "{who} must close the connection after a protocol error"
        );
    }
    assert_serves(&mut kw);
    assert_no_panic(&kw);
}

#[test]
fn deeply_nested_arrays_are_a_protocol_error() {
    let input = b"*1\r\n".repeat(100_000);
    assert_same_protocol_error(&input, "-ERR Protocol error: expected '$', got '*'\r\n");
}

#[test]
fn huge_bulk_length_is_refused_without_waiting_for_data() {
    assert_same_protocol_error(
        b"*1\r\n$9223372036854775807\r\n",
        "-ERR Protocol error: invalid bulk length\r\n",
    );
}

#[test]
fn negative_or_non_numeric_bulk_length_is_refused() {
    assert_same_protocol_error(
        b"*2\r\n$3\r\nGET\r\n$-5\r\n",
        "-ERR Protocol error: invalid bulk length\r\n",
    );
    assert_same_protocol_error(
        b"*1\r\n$abc\r\n",
        "-ERR Protocol error: invalid bulk length\r\n",
    );
}

#[test]
fn huge_multibulk_length_is_refused() {
    assert_same_protocol_error(
        b"*3000000000\r\n",
        "-ERR Protocol error: invalid multibulk length\r\n",
    );
    assert_same_protocol_error(
        b"*abc\r\n",
        "-ERR Protocol error: invalid multibulk length\r\n",
    );
}

#[test]
fn too_big_inline_request_is_refused() {
    let input = vec![b'a'; 70 * 1024];
    assert_same_protocol_error(&input, "-ERR Protocol error: too big inline request\r\n");
}

#[test]
fn non_bulk_element_in_array_is_refused() {
    assert_same_protocol_error(
        b"*1\r\nfoo\r\n",
        "-ERR Protocol error: expected '$', got 'f'\r\n",
    );
}

#[test]
fn unbalanced_quotes_in_inline_request_are_refused() {
    assert_same_protocol_error(
        b"SET \"a b\r\n",
        "-ERR Protocol error: unbalanced quotes in request\r\n",
    );
}

#[test]
fn good_commands_before_the_bad_one_get_their_replies_first() {
    let (redis, mut kw) = start_pair("");
    let mut input = resp_str(&["PING"]);
    input.extend(resp_str(&["SET", "a", "1"]));
    input.extend_from_slice(b"INCR a\r\n");
    input.extend(resp_str(&["GET", "a"]));
    input.extend_from_slice(b"*1\r\nfoo\r\n");
    input.extend(resp_str(&["SET", "never", "1"]));
    let (bytes, closed) = raw_closed(&kw.addr(), &input, T);
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        "+PONG\r\n+OK\r\n:2\r\n$1\r\n2\r\n-ERR Protocol error: expected '$', got 'f'\r\n"
    );
    assert!(closed);
    assert!(
        !redis.exists(b"never"),
        "nothing after the bad request may run"
    );
    assert_serves(&mut kw);
    assert_no_panic(&kw);
}

/// One piece of junk of a randomly chosen shape.
fn garbage(rng: &mut XorShift) -> Vec<u8> {
    let n = 1 + rng.below(4096) as usize;
    match rng.below(8) {
        0 => rng.bytes(n),
        1 => {
            let mut v = format!("*{}\r\n", rng.next_u64() as i64).into_bytes();
            v.extend(rng.bytes(n));
            v
        }
        2 => {
            let mut v = b"*2\r\n$3\r\nGET\r\n".to_vec();
            v.extend(format!("${}\r\n", rng.next_u64() as i64).into_bytes());
            v.extend(rng.bytes(n));
            v
        }
        3 => b"*1\r\n".repeat(n),
        4 => {
            let mut v = resp_str(&["SET", "garbage", "x"]);
            v.truncate(rng.below(v.len() as u64) as usize);
            v.extend(rng.bytes(n));
            v
        }
        5 => b"\r\n".repeat(n),
        6 => {
            let mut v = b"SET \"unterminated ".to_vec();
            v.extend(std::iter::repeat_n(b'x', n));
            v.extend_from_slice(b"\r\n");
            v
        }
        _ => {
            let mut v = format!("*1\r\n${}\r\n", n).into_bytes();
            v.extend(rng.bytes(n / 2));
            v
        }
    }
}

#[test]
fn garbage_from_many_parallel_connections_does_not_disturb_a_good_client() {
    let (redis, mut kw) = start_pair("");
    let addr = kw.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let ops = Arc::new(AtomicUsize::new(0));

    let good = {
        let addr = addr.clone();
        let stop = stop.clone();
        let ops = ops.clone();
        thread::spawn(move || {
            let mut con = redis_conn(&addr);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("good:{}", i % 100);
                let value = format!("value-{i}");
                let _: () = redis::cmd("SET")
                    .arg(&key)
                    .arg(&value)
                    .query(&mut con)
                    .unwrap_or_else(|e| panic!("SET #{i} failed during garbage: {e}"));
                let back: String = redis::cmd("GET")
                    .arg(&key)
                    .query(&mut con)
                    .unwrap_or_else(|e| panic!("GET #{i} failed during garbage: {e}"));
                assert_eq!(back, value, "GET #{i} returned a wrong value");
                i += 1;
                ops.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    let garbage_threads: Vec<_> = (0..8u64)
        .map(|t| {
            let addr = addr.clone();
            thread::spawn(move || {
                let mut rng =
                    XorShift(0x9e37_79b9_7f4a_7c15 ^ (t + 1).wrapping_mul(0x1234_5678_9abc_def1));
                for _ in 0..20 {
                    let junk = garbage(&mut rng);
                    let _ = raw_closed(&addr, &junk, Duration::from_millis(200));
                }
            })
        })
        .collect();
    for t in garbage_threads {
        t.join().expect("garbage thread");
    }
    stop.store(true, Ordering::Relaxed);
    good.join().expect("the good client saw an error");
    assert!(
        ops.load(Ordering::Relaxed) > 0,
        "the good client made no progress"
    );

    kw.assert_running();
    assert_serves(&mut kw);
    assert_no_panic(&kw);
    // Redis itself is fine too.
    assert_eq!(redis.cli(&["PING"]).trim(), "PONG");
}

#[test]
fn client_sending_half_a_pipeline_and_leaving_does_not_affect_others() {
    let (redis, mut kw) = start_pair("");
    let mut other = kw.raw_conn();
    assert_eq!(other.request(&["SET", "other", "1"]), Reply::ok());

    for round in 0..10 {
        let mut c = kw.raw_conn();
        let mut input = Vec::new();
        for i in 0..1000 {
            input.extend(resp_str(&["SET", &format!("hp:{i}"), "v"]));
        }
        // Half of one more command, cut inside its value.
        input.extend_from_slice(b"*3\r\n$3\r\nSET\r\n$4\r\nhalf\r\n$10\r\nhal");
        c.send(&input);
        drop(c); // leaves without reading a single reply

        assert_eq!(
            other.request(&["INCR", "other"]),
            Reply::Int(round + 2),
            "round {round}"
        );
    }
    thread::sleep(Duration::from_millis(200));
    assert!(!redis.exists(b"half"), "a half-sent command must not run");
    assert_serves(&mut kw);
    assert_no_panic(&kw);
}

#[test]
fn client_abandoning_a_100_mb_upload_midway_does_not_affect_others() {
    let (redis, mut kw) = start_pair("");
    let addr = kw.addr();
    let uploader = thread::spawn(move || {
        let mut c = RawConn::connect(&addr);
        c.send(b"*3\r\n$3\r\nSET\r\n$7\r\nbig:abd\r\n$104857600\r\n");
        let chunk = vec![b'z'; 1024 * 1024];
        for _ in 0..50 {
            if c.try_send(&chunk).is_err() {
                break;
            }
        }
        // Dropping the connection here abandons the other 50 MB.
    });

    let mut other = kw.raw_conn();
    let started = Instant::now();
    let mut n = 0;
    while !uploader.is_finished() && started.elapsed() < Duration::from_secs(15) {
        n += 1;
        assert_eq!(other.request(&["INCR", "counter"]), Reply::Int(n));
    }
    uploader.join().expect("uploader thread");
    thread::sleep(Duration::from_millis(300));
    assert!(!redis.exists(b"big:abd"), "the abandoned SET must not run");
    assert_eq!(other.request(&["INCR", "counter"]), Reply::Int(n + 1));
    assert_serves(&mut kw);
    assert_no_panic(&kw);
}
