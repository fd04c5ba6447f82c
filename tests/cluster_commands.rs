//! A Redis Cluster that looks like one Redis: commands routed by the cluster's own command
//! metadata (`COMMAND`: key specifications, request and response tips), end to end against
//! real clusters. Every effect is checked on the nodes themselves, not through keyward.

mod support;

use std::thread;
use std::time::{Duration, Instant};

use support::cluster::RedisCluster;
use support::*;

/// How many MOVED redirections keyward has followed, from its metrics.
fn moved_count(admin: &str) -> u64 {
    let (_, body) = http_get(&format!("{admin}/metrics"));
    body.lines()
        .find(|l| l.starts_with("keyward_cluster_redirects_total{kind=\"moved\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or_else(|| panic!("no moved counter in {body}"))
}

fn start_with_admin(cluster: &RedisCluster) -> (Keyward, String) {
    let port = free_port();
    let kw = Keyward::start_cluster(
        &cluster.seeds(),
        &format!("[admin]\nlisten = \"127.0.0.1:{port}\""),
    );
    let admin = format!("http://127.0.0.1:{port}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        }),
        "admin listener not up"
    );
    (kw, admin)
}

fn primary_ports(cluster: &RedisCluster) -> Vec<u16> {
    cluster.primaries().iter().map(|(_, p)| *p).collect()
}

fn node_query<T: redis::FromRedisValue>(cluster: &RedisCluster, port: u16, args: &[&str]) -> T {
    let mut conn = cluster.conn(port);
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut conn)
        .unwrap_or_else(|e| panic!("{args:?} on node {port}: {e}"))
}

/// Settings, scripts and functions reach every node; per-node views come back as one; commands
/// are routed by the key specifications the cluster publishes.
#[test]
fn the_cluster_answers_as_one_redis() {
    let cluster = RedisCluster::start(3, 1);
    let (kw, admin) = start_with_admin(&cluster);
    let mut c = kw.conn();
    let primaries = primary_ports(&cluster);
    // Keys owned by each primary.
    let keys: Vec<String> = primaries
        .iter()
        .map(|&p| cluster.keys_on(p, "k", 1).remove(0))
        .collect();

    // CONFIG SET reaches every node, replicas included (the replicas may join the map a
    // moment after the primaries).
    let every_node = cluster.ports();
    assert!(wait_until(Duration::from_secs(20), || {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("hash-max-listpack-entries")
            .arg("77")
            .query(&mut c)
            .unwrap();
        every_node.iter().all(|&p| {
            let v: Vec<String> =
                node_query(&cluster, p, &["CONFIG", "GET", "hash-max-listpack-entries"]);
            v[1] == "77"
        })
    }));

    // SCRIPT LOAD then EVALSHA on keys of every primary.
    let sha: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg("return redis.call('incr', KEYS[1])")
        .query(&mut c)
        .unwrap();
    for key in &keys {
        let n: i64 = redis::cmd("EVALSHA")
            .arg(&sha)
            .arg(1)
            .arg(key)
            .query(&mut c)
            .unwrap_or_else(|e| panic!("EVALSHA on {key}: {e}"));
        assert_eq!(n, 1);
    }
    let exists: Vec<i64> = redis::cmd("SCRIPT")
        .arg("EXISTS")
        .arg(&sha)
        .arg("0000000000000000000000000000000000000000")
        .query(&mut c)
        .unwrap();
    assert_eq!(exists, vec![1, 0]);

    // An EVAL caches its script for EVALSHA on keys of every primary, as one Redis would.
    let body = "return redis.call('exists', KEYS[1])";
    let got: i64 = redis::cmd("EVAL")
        .arg(body)
        .arg(1)
        .arg(&keys[0])
        .query(&mut c)
        .unwrap();
    assert_eq!(got, 1);
    let evalsha: String = node_query(&cluster, primaries[0], &["SCRIPT", "LOAD", body]);
    for &p in &primaries {
        let cached: Vec<i64> = node_query(&cluster, p, &["SCRIPT", "EXISTS", &evalsha]);
        assert_eq!(
            cached,
            vec![1],
            "the EVAL's script is not cached on node {p}"
        );
    }
    for key in &keys {
        let got: i64 = redis::cmd("EVALSHA")
            .arg(&evalsha)
            .arg(1)
            .arg(key)
            .query(&mut c)
            .unwrap_or_else(|e| panic!("EVALSHA of an EVAL's script on {key}: {e}"));
        assert_eq!(got, 1);
    }

    // FUNCTION LOAD then FCALL on keys of every primary.
    let lib = "#!lua name=kwlib\nredis.register_function('kwget', function(keys, args) return redis.call('get', keys[1]) end)";
    let name: String = redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg(lib)
        .query(&mut c)
        .unwrap();
    assert_eq!(name, "kwlib");
    for key in &keys {
        let v: String = redis::cmd("FCALL")
            .arg("kwget")
            .arg(1)
            .arg(key)
            .query(&mut c)
            .unwrap_or_else(|e| panic!("FCALL on {key}: {e}"));
        assert_eq!(v, "1");
    }

    // A pipeline that loads a function, calls it and goes on with other commands: the call
    // goes over the client's script connection, yet sees the load and is answered in order.
    let lib2 = "#!lua name=kwpipe\nredis.register_function('kwpipe', function(keys, args) return redis.call('incr', keys[1]) end)";
    let (loaded, called, pong, got): (String, i64, String, String) = redis::pipe()
        .cmd("FUNCTION")
        .arg("LOAD")
        .arg(lib2)
        .cmd("FCALL")
        .arg("kwpipe")
        .arg(1)
        .arg(&keys[2])
        .cmd("PING")
        .cmd("GET")
        .arg(&keys[2])
        .query(&mut c)
        .unwrap();
    assert_eq!(
        (loaded.as_str(), called, pong.as_str(), got.as_str()),
        ("kwpipe", 2, "PONG", "2")
    );

    // Routed by the cluster's key specifications: commands the built-in table does not locate
    // the keys of (ZRANGESTORE is not in it; EVAL's keys follow numkeys) reach the owner
    // directly, with no redirection.
    let moved_before = moved_count(&admin);
    for (i, &p) in primaries.iter().enumerate() {
        let tag = cluster.keys_on(p, "z", 1).remove(0);
        let src = format!("{{{tag}}}src");
        let dst = format!("{{{tag}}}dst");
        let _: i64 = redis::cmd("ZADD")
            .arg(&src)
            .arg(1)
            .arg("a")
            .arg(2)
            .arg("b")
            .query(&mut c)
            .unwrap();
        let stored: i64 = redis::cmd("ZRANGESTORE")
            .arg(&dst)
            .arg(&src)
            .arg(0)
            .arg(-1)
            .query(&mut c)
            .unwrap();
        assert_eq!(stored, 2);
        let on_node: i64 = node_query(&cluster, p, &["ZCARD", &dst]);
        assert_eq!(on_node, 2, "ZRANGESTORE's destination on its owner");
        let got: String = redis::cmd("EVAL")
            .arg("return redis.call('get', KEYS[1])")
            .arg(1)
            .arg(&keys[i])
            .query(&mut c)
            .unwrap();
        assert_eq!(got, if i == 2 { "2" } else { "1" });
    }
    assert_eq!(
        moved_count(&admin),
        moved_before,
        "commands routed by key specs were redirected"
    );
    let cross = redis::cmd("ZRANGESTORE")
        .arg(&keys[0])
        .arg(&keys[1])
        .arg(0)
        .arg(-1)
        .query::<i64>(&mut c)
        .unwrap_err();
    assert!(
        cross.to_string().to_lowercase().contains("crossslot"),
        "{cross}"
    );

    // INFO: one keyspace, counters summed over the primaries.
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut c).unwrap();
    let info: String = redis::cmd("INFO").arg("keyspace").query(&mut c).unwrap();
    assert!(
        info.contains(&format!("db0:keys={dbsize},")),
        "INFO keyspace {info:?} vs DBSIZE {dbsize}"
    );
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    for key in &keys {
        let _: () = redis::cmd("SET").arg(key).arg("v").query(&mut c).unwrap();
    }
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    assert!(
        info.contains("cmdstat_set:calls=3,"),
        "one SET per primary, counted once each: {info}"
    );
    // A command keyward sent to every node counts once, as the one call it was.
    let _: () = redis::cmd("CONFIG").arg("RESETSTAT").query(&mut c).unwrap();
    let _: String = redis::cmd("INFO").arg("server").query(&mut c).unwrap();
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .unwrap();
    assert!(
        info.contains("cmdstat_info:calls=1,"),
        "INFO ran on every primary, counted once: {info}"
    );
    let histogram: redis::Value = redis::cmd("LATENCY")
        .arg("HISTOGRAM")
        .arg("config|resetstat")
        .query(&mut c)
        .unwrap();
    let text = format!("{histogram:?}");
    assert!(
        text.contains("bulk-string('\"calls\"'), int(1),"),
        "CONFIG RESETSTAT ran on every node, counted once: {text}"
    );

    // SLOWLOG: every primary's entries, newest first.
    let _: () = redis::cmd("SLOWLOG").arg("RESET").query(&mut c).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg("0")
        .query(&mut c)
        .unwrap();
    for key in &keys {
        let _: Option<String> = redis::cmd("GET").arg(key).query(&mut c).unwrap();
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg("10000")
        .query(&mut c)
        .unwrap();
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query(&mut c)
        .unwrap();
    let text = format!("{log:?}");
    for key in &keys {
        assert!(
            text.contains(&format!("\"{key}\"")) || text.contains(key),
            "GET {key} missing from the merged slow log: {text}"
        );
    }
    let len: i64 = redis::cmd("SLOWLOG").arg("LEN").query(&mut c).unwrap();
    assert_eq!(len as usize, log.len(), "SLOWLOG LEN vs SLOWLOG GET -1");

    // Unsubscribing from nothing is answered as Redis does, and the client keeps reaching
    // every primary (it is not tied to one node's connection).
    let mut raw = kw.raw_conn();
    assert_eq!(
        raw.request(&["PUNSUBSCRIBE"]),
        Reply::Array(vec![
            Reply::Bulk(b"punsubscribe".to_vec()),
            Reply::Nil,
            Reply::Int(0)
        ])
    );
    assert_eq!(
        raw.request(&["UNSUBSCRIBE", "a"]),
        Reply::Array(vec![
            Reply::Bulk(b"unsubscribe".to_vec()),
            Reply::Bulk(b"a".to_vec()),
            Reply::Int(0)
        ])
    );
    for key in &keys {
        assert_eq!(
            raw.request(&["SET", key, "after-unsubscribe"]),
            Reply::Simple("OK".into())
        );
    }

    // CLIENT LIST and CLIENT INFO describe keyward's own clients, as one Redis describes its
    // clients; a client that leaves is no longer listed.
    let mut named = kw.conn();
    let _: () = redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("kw-named")
        .query(&mut named)
        .unwrap();
    let named_id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut named).unwrap();
    let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
    assert!(
        list.lines()
            .any(|l| l.starts_with(&format!("id={named_id} ")) && l.contains(" name=kw-named ")),
        "{list}"
    );
    let info: String = redis::cmd("CLIENT").arg("INFO").query(&mut named).unwrap();
    assert!(
        info.starts_with(&format!("id={named_id} ")) && info.contains(" cmd=client|info "),
        "{info}"
    );
    let only: String = redis::cmd("CLIENT")
        .arg("LIST")
        .arg("ID")
        .arg(named_id)
        .query(&mut c)
        .unwrap();
    assert_eq!(only.lines().count(), 1, "{only}");
    drop(named);
    assert!(wait_until(Duration::from_secs(5), || {
        let list: String = redis::cmd("CLIENT").arg("LIST").query(&mut c).unwrap();
        !list.contains("name=kw-named")
    }));

    // CLIENT ID and CLIENT UNBLOCK: a client blocked on a key of the last primary is unblocked
    // by its keyward id, with a timeout reply and then with an error.
    let list = cluster
        .keys_on(*primaries.last().unwrap(), "blocked", 1)
        .remove(0);
    let mut blocked = kw.conn();
    let id: i64 = redis::cmd("CLIENT").arg("ID").query(&mut blocked).unwrap();
    let other: i64 = redis::cmd("CLIENT").arg("ID").query(&mut c).unwrap();
    assert!(id > 0 && id != other, "two clients, two ids: {id} {other}");
    for mode in ["TIMEOUT", "ERROR"] {
        let list2 = list.clone();
        let waiter = thread::spawn(move || {
            let outcome = redis::cmd("BLPOP")
                .arg(&list2)
                .arg(0)
                .query::<Option<Vec<String>>>(&mut blocked);
            (blocked, outcome)
        });
        let mut unblocked = 0;
        assert!(wait_until(Duration::from_secs(10), || {
            unblocked = redis::cmd("CLIENT")
                .arg("UNBLOCK")
                .arg(id)
                .arg(mode)
                .query(&mut c)
                .unwrap();
            unblocked == 1
        }));
        let (conn, outcome) = waiter.join().unwrap();
        blocked = conn;
        match mode {
            "TIMEOUT" => assert_eq!(outcome.unwrap(), None),
            _ => {
                let e = outcome.unwrap_err().to_string();
                assert!(e.contains("UNBLOCKED"), "{e}");
            }
        }
    }
    let none: i64 = redis::cmd("CLIENT")
        .arg("UNBLOCK")
        .arg(id)
        .query(&mut c)
        .unwrap();
    assert_eq!(none, 0, "not blocked any more");

    // MONITOR shows the commands of every primary, and none of keyward's own housekeeping
    // (its topology reads, every 5 s).
    let mut monitor = std::net::TcpStream::connect(kw.addr()).unwrap();
    monitor
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    std::io::Write::write_all(&mut monitor, b"MONITOR\r\n").unwrap();
    let mut lines = std::io::BufReader::new(monitor);
    let mut read_line = || {
        let mut line = String::new();
        match std::io::BufRead::read_line(&mut lines, &mut line) {
            Ok(_) => Some(line),
            Err(_) => None, // nothing within the read timeout
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let confirmation = loop {
        if let Some(line) = read_line() {
            break line;
        }
        assert!(Instant::now() < deadline, "no reply to MONITOR");
    };
    assert_eq!(confirmation, "+OK\r\n");
    for key in &keys {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("watched")
            .query(&mut c)
            .unwrap();
    }
    // A transaction shows as the client wrote it, its MULTI included.
    let _: () = redis::cmd("multi").query(&mut c).unwrap();
    let _: () = redis::cmd("set")
        .arg(&keys[1])
        .arg("in-multi")
        .query(&mut c)
        .unwrap();
    let _: Vec<String> = redis::cmd("exec").query(&mut c).unwrap();
    let mut seen = Vec::new();
    let watch_until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < watch_until {
        if let Some(line) = read_line() {
            seen.push(line);
        }
    }
    let transaction: Vec<&String> = seen
        .iter()
        .filter(|l| l.contains("\"multi\"") || l.contains("in-multi") || l.contains("\"exec\""))
        .collect();
    assert_eq!(
        transaction.len(),
        3,
        "MULTI, SET, EXEC in MONITOR: {seen:?}"
    );
    for key in &keys {
        assert!(
            seen.iter()
                .any(|l| l.contains(&format!("\"SET\" \"{key}\" \"watched\""))),
            "the SET of {key} is missing from MONITOR: {seen:?}"
        );
    }
    assert!(
        !seen
            .iter()
            .any(|l| l.to_lowercase().contains("\"cluster\"")),
        "keyward's own topology reads showed in MONITOR: {seen:?}"
    );

    // CLIENT PAUSE holds writes on every primary; CLIENT UNPAUSE reaches a node even though
    // a paused write waits on keyward's shared connection to it.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(60_000)
        .arg("WRITE")
        .query(&mut c)
        .unwrap();
    let mut writer = kw.conn();
    let paused_key = keys[0].clone();
    let write = thread::spawn(move || {
        let started = Instant::now();
        let _: () = redis::cmd("SET")
            .arg(&paused_key)
            .arg("after-pause")
            .query(&mut writer)
            .unwrap();
        started.elapsed()
    });
    thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut c).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "CLIENT UNPAUSE took {:?}",
        started.elapsed()
    );
    let waited = write.join().unwrap();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(10),
        "the paused SET waited {waited:?}"
    );
    let value: String = node_query(&cluster, primaries[0], &["GET", &keys[0]]);
    assert_eq!(value, "after-pause");
}

/// A runaway script on a node that is not the first primary is killed through keyward, and
/// the node serves again.
#[test]
fn a_busy_script_is_killed_through_keyward() {
    let cluster = RedisCluster::start(3, 0);
    let kw = Keyward::start_cluster(&cluster.seeds(), "");
    let mut c = kw.conn();
    let primaries = primary_ports(&cluster);
    let busy_node = *primaries.last().unwrap();
    let key = cluster.keys_on(busy_node, "busy", 1).remove(0);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("busy-reply-threshold")
        .arg("100")
        .query(&mut c)
        .unwrap();

    for (kind, start_script) in [("SCRIPT", "EVAL"), ("FUNCTION", "FCALL")] {
        if start_script == "FCALL" {
            let lib = "#!lua name=spin\nredis.register_function('spin', function(keys, args) while true do end end)";
            let _: String = redis::cmd("FUNCTION")
                .arg("LOAD")
                .arg("REPLACE")
                .arg(lib)
                .query(&mut c)
                .unwrap();
        }
        let addr = kw.addr();
        let key2 = key.clone();
        let runaway = thread::spawn(move || {
            let mut own = redis::Client::open(format!("redis://{addr}"))
                .unwrap()
                .get_connection()
                .unwrap();
            let mut cmd = redis::cmd(start_script);
            if start_script == "EVAL" {
                cmd.arg("while true do end");
            } else {
                cmd.arg("spin");
            }
            cmd.arg(1).arg(&key2);
            cmd.query::<redis::Value>(&mut own)
        });
        // The node says BUSY once the script has run past the threshold.
        assert!(
            wait_until(Duration::from_secs(10), || {
                let mut conn = cluster.conn(busy_node);
                matches!(redis::cmd("PING").query::<String>(&mut conn), Err(e) if e.to_string().contains("BUSY"))
            }),
            "{start_script}: the node never became busy"
        );
        // Other clients of the busy node hear BUSY from it, as from Redis, rather than waiting
        // behind the script on a connection they share with it.
        let busy = redis::cmd("GET")
            .arg(&key)
            .query::<Option<String>>(&mut c)
            .unwrap_err();
        assert!(
            busy.to_string().to_lowercase().contains("busy"),
            "{start_script}: GET during the script: {busy}"
        );
        let started = Instant::now();
        let killed: String = redis::cmd(kind)
            .arg("KILL")
            .query(&mut c)
            .unwrap_or_else(|e| panic!("{kind} KILL through keyward: {e}"));
        assert_eq!(killed, "OK");
        let outcome = runaway.join().unwrap();
        let err = outcome.expect_err("the runaway script was killed");
        assert!(
            err.to_string().to_lowercase().contains("killed"),
            "{start_script}: {err}"
        );
        // The node serves again, through keyward too.
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("after")
            .query(&mut c)
            .unwrap();
        let v: String = node_query(&cluster, busy_node, &["GET", &key]);
        assert_eq!(v, "after");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
    let not_busy = redis::cmd("SCRIPT")
        .arg("KILL")
        .query::<String>(&mut c)
        .unwrap_err();
    assert!(
        not_busy.to_string().to_lowercase().contains("notbusy"),
        "{not_busy}"
    );
}
