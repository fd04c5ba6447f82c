//! `keyward::cluster::topology` against a real 3-primary / 3-replica Redis Cluster: the slot map
//! from `discover()` must match what the cluster itself says (`CLUSTER SLOTS`, `CLUSTER KEYSLOT`,
//! where a `SET` is accepted), whatever the seed list holds, and must follow slot migrations and
//! failovers. And keyward itself in front of a cluster whose nodes disagree for a while about
//! who owns a slot: the redirections between them are followed until they agree.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

mod support;

use keyward::cluster::topology::{SLOT_COUNT, SlotMap, TopologyError, discover, slot_of};
use keyward::upstream::UpstreamTarget;
use keyward_fuzz_checks as fuzz_checks;
use support::cluster::{self, RedisCluster};

const TIMEOUT: Duration = Duration::from_secs(3);

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(f)
}

/// How keyward would dial the seeds: plain TCP, no credentials.
fn plain() -> UpstreamTarget {
    UpstreamTarget {
        addr: String::new(),
        primary: None,
        username: None,
        password: None,
        connect_timeout: TIMEOUT,
        reply_timeout: Duration::ZERO,
        resp3: false,
        tls: None,
    }
}

fn discover_ok(seeds: &[String]) -> SlotMap {
    block_on(discover(seeds, &plain()))
        .unwrap_or_else(|e| panic!("discover({seeds:?}) failed: {e}"))
}

/// A loopback address nothing listens on (bound, then released).
fn dead_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

/// Checks every one of the 16384 slots against the cluster's own `CLUSTER SLOTS`.
fn assert_matches_cluster(map: &SlotMap, cluster: &RedisCluster) {
    let mut truth = vec![0u16; SLOT_COUNT];
    for (start, end, port) in cluster.slot_ranges() {
        for slot in start..=end {
            truth[usize::from(slot)] = port;
        }
    }
    assert!(
        truth.iter().all(|&p| p != 0),
        "the cluster itself has unassigned slots"
    );
    assert!(
        map.is_complete(),
        "discover() left slots without owner: {map:?}"
    );
    for (slot, &port) in truth.iter().enumerate() {
        let owner = map.owner(slot as u16).expect("complete map");
        assert_eq!(
            (owner.host(), owner.port()),
            ("127.0.0.1", port),
            "slot {slot}: discover() says {owner}, CLUSTER SLOTS says port {port}"
        );
    }
    let expected: BTreeSet<String> = cluster.primaries().into_iter().map(|(a, _)| a).collect();
    let got: BTreeSet<String> = map.primaries().into_iter().map(String::from).collect();
    assert_eq!(got, expected);
}

/// Sends raw RESP commands on one socket and returns everything read until `expected` replies
/// have arrived (decoded with `decode` to know where a reply ends).
fn raw_exchange<F>(port: u16, commands: &[&[&str]], mut frame_len: F) -> Vec<Vec<u8>>
where
    F: FnMut(&[u8]) -> Option<usize>,
{
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to node");
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut replies = Vec::new();
    for args in commands {
        let mut req = format!("*{}\r\n", args.len());
        for a in *args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = Vec::new();
        loop {
            if let Some(len) = frame_len(&buf) {
                assert_eq!(len, buf.len(), "one reply per command");
                break;
            }
            let mut chunk = [0u8; 16384];
            let n = s.read(&mut chunk).expect("read reply");
            assert!(n > 0, "node closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        }
        replies.push(buf);
    }
    replies
}

fn resp2_len(buf: &[u8]) -> Option<usize> {
    redis_protocol::resp2::decode::decode(buf)
        .expect("valid RESP2")
        .map(|(_, len)| len)
}

fn resp3_len(buf: &[u8]) -> Option<usize> {
    redis_protocol::resp3::decode::complete::decode(buf)
        .expect("valid RESP3")
        .map(|(_, len)| len)
}

/// What two maps must agree on: the ranges and each primary's replicas (shard order may differ).
type Summary = (Vec<(u16, u16, String)>, Vec<(String, BTreeSet<String>)>);

fn summary(map: &SlotMap) -> Summary {
    let ranges = map
        .ranges()
        .into_iter()
        .map(|(s, e, a)| (s, e, a.to_string()))
        .collect();
    let mut replicas: Vec<_> = map
        .primaries()
        .into_iter()
        .map(|p| {
            let r = map
                .replicas_of(p.as_str())
                .iter()
                .map(|r| r.to_string())
                .collect();
            (p.to_string(), r)
        })
        .collect();
    replicas.sort();
    (ranges, replicas)
}

#[test]
fn discover_matches_the_cluster_whatever_the_seeds() {
    let mut cluster = RedisCluster::start(3, 1);
    let seeds = cluster.seeds();
    assert_eq!(seeds.len(), 6);

    let map = discover_ok(&seeds);
    assert_matches_cluster(&map, &cluster);
    assert_eq!(map.primaries().len(), 3);
    for (addr, port) in cluster.primaries() {
        let expected: BTreeSet<u16> = cluster.replicas_of(port).into_iter().collect();
        let got: BTreeSet<u16> = map.replicas_of(&addr).iter().map(|r| r.port()).collect();
        assert_eq!(got, expected, "replicas of {addr}");
        assert_eq!(expected.len(), 1);
        let shard = map.shard_of(map.ranges().iter().find(|r| *r.2 == addr).unwrap().0);
        assert_eq!(
            shard.unwrap().primary_id.as_deref(),
            Some(cluster.node_id(port))
        );
    }

    // Seeds given as replicas only, or starting with dead ports, give the same map.
    let replica_seeds: Vec<String> = cluster
        .replicas()
        .into_iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    assert_eq!(discover_ok(&replica_seeds), map);
    let mut with_dead = vec![dead_addr(), dead_addr()];
    with_dead.extend(seeds.iter().cloned());
    assert_eq!(discover_ok(&with_dead), map);

    // Every key lands where the map says: CLUSTER KEYSLOT agrees with slot_of(), and the owner
    // accepts a SET of the key (no MOVED).
    let mut keys: Vec<Vec<u8>> = vec![
        b"".to_vec(),
        b"foo".to_vec(),
        b"{user1000}.following".to_vec(),
        b"{}user".to_vec(),
        b"foo{}{bar}".to_vec(),
        b"foo{{bar}}zap".to_vec(),
        b"foo{bar}{zap}".to_vec(),
        b"{".to_vec(),
        b"}{".to_vec(),
        b"a{b".to_vec(),
        vec![0xff, b'{', 0x00, b'}', 0x80],
    ];
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for i in 0..3000 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = (seed % 24) as usize;
        let mut key: Vec<u8> = (0..len).map(|j| (seed >> (j % 8 * 8)) as u8).collect();
        if i % 5 == 0 {
            key.extend_from_slice(format!("{{tag{}}}", i % 37).as_bytes());
        }
        keys.push(key);
    }
    let mut conn = cluster.conn(seeds[0].rsplit(':').next().unwrap().parse().unwrap());
    let mut pipe = redis::pipe();
    for key in &keys {
        pipe.cmd("CLUSTER").arg("KEYSLOT").arg(key.as_slice());
    }
    let slots: Vec<u16> = pipe.query(&mut conn).expect("CLUSTER KEYSLOT");
    for (key, slot) in keys.iter().zip(&slots) {
        assert_eq!(
            slot_of(key),
            *slot,
            "slot of {:?}",
            String::from_utf8_lossy(key)
        );
    }
    for key in keys.iter().take(300) {
        let owner = map.owner_of_key(key).unwrap();
        let mut conn = cluster.conn(owner.port());
        let _: () = redis::cmd("SET")
            .arg(key.as_slice())
            .arg("v")
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("SET {key:?} on {owner}: {e}"));
    }

    // The same map from every reply form a real Redis 7 sends: CLUSTER SHARDS and CLUSTER SLOTS
    // in RESP2, and CLUSTER SHARDS in RESP3 (real maps) turned into the RESP2 frame the parsers
    // read, as the cluster_topology fuzz target does with its RESP3 inputs.
    let port = cluster.primaries()[1].1;
    let seed_addr = format!("127.0.0.1:{port}");
    let resp2 = raw_exchange(
        port,
        &[&["CLUSTER", "SHARDS"], &["CLUSTER", "SLOTS"]],
        resp2_len,
    );
    let shards2 = redis_protocol::resp2::decode::decode(&resp2[0])
        .unwrap()
        .unwrap()
        .0;
    let slots2 = redis_protocol::resp2::decode::decode(&resp2[1])
        .unwrap()
        .unwrap()
        .0;
    let resp3 = raw_exchange(port, &[&["HELLO", "3"], &["CLUSTER", "SHARDS"]], resp3_len);
    let shards3 = redis_protocol::resp3::decode::complete::decode(&resp3[1])
        .unwrap()
        .unwrap()
        .0;
    assert!(
        matches!(&shards3, redis_protocol::resp3::types::OwnedFrame::Array { data, .. }
            if matches!(data[0], redis_protocol::resp3::types::OwnedFrame::Map { .. })),
        "RESP3 CLUSTER SHARDS should hold maps: {shards3:?}"
    );
    let from_shards2 = SlotMap::from_cluster_shards(&shards2, &seed_addr).unwrap();
    let from_slots2 = SlotMap::from_cluster_slots(&slots2, &seed_addr).unwrap();
    let from_shards3 =
        SlotMap::from_cluster_shards(&fuzz_checks::resp3_as_resp2(&shards3), &seed_addr).unwrap();
    assert_eq!(summary(&from_shards2), summary(&map));
    assert_eq!(summary(&from_slots2), summary(&map));
    assert_eq!(summary(&from_shards3), summary(&map));

    // A killed node as the first seed: the next one answers.
    let victim = cluster.replicas()[0];
    cluster.kill_node(victim);
    let mut seeds = vec![format!("127.0.0.1:{victim}")];
    seeds.extend(
        cluster
            .alive_ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}")),
    );
    let after = discover_ok(&seeds);
    assert_eq!(after.ranges(), map.ranges());

    // Only dead seeds: the error names each one and why.
    let dead = vec![format!("127.0.0.1:{victim}"), dead_addr()];
    let err = block_on(discover(&dead, &plain())).unwrap_err();
    assert!(matches!(&err, TopologyError::AllSeedsFailed(f) if f.len() == 2));
    let text = err.to_string();
    for seed in &dead {
        assert!(text.contains(&format!("{seed}: cannot connect")), "{text}");
    }
}

#[test]
fn discover_follows_migrations_and_failovers() {
    let mut cluster = RedisCluster::start(3, 1);
    let seeds = cluster.seeds();

    // Fill one slot with keys, then move it to another primary step by step.
    let slot = slot_of(b"moving");
    let from = cluster.owner_of_slot(slot);
    let to = cluster
        .primaries()
        .into_iter()
        .map(|(_, p)| p)
        .find(|&p| p != from)
        .unwrap();
    let mut conn = cluster.conn(from);
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("{{moving}}:{i}"))
            .arg(i)
            .query(&mut conn)
            .unwrap();
    }
    cluster.setslot_importing(slot, from, to);
    cluster.setslot_migrating(slot, from, to);
    assert_eq!(cluster.migrate_keys(slot, from, to, 10), 10);

    // Mid-migration the slot still belongs to `from`; a moved key answers ASK there.
    let map = discover_ok(&seeds);
    assert_eq!(map.owner(slot).unwrap().port(), from);
    let keys_left: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut conn)
        .unwrap();
    assert_eq!(keys_left, 40);
    let moved_key = (0..50)
        .map(|i| format!("{{moving}}:{i}"))
        .find(|k| cluster.node_cli(from, &["GET", k]).starts_with("ASK "))
        .expect("a key already moved answers ASK on the source");
    assert!(
        cluster
            .node_cli(from, &["GET", &moved_key])
            .contains(&format!(":{to}"))
    );

    assert_eq!(cluster.migrate_keys(slot, from, to, usize::MAX), 40);
    cluster.setslot_node(slot, from, to);
    let map = discover_ok(&seeds);
    assert_eq!(map.owner(slot).unwrap().port(), to);
    assert_matches_cluster(&map, &cluster);
    let on_target: i64 = redis::cmd("CLUSTER")
        .arg("COUNTKEYSINSLOT")
        .arg(slot)
        .query(&mut cluster.conn(to))
        .unwrap();
    assert_eq!(on_target, 50);

    // And back in one call.
    assert_eq!(cluster.migrate_slot(slot, to, from), 50);
    let map = discover_ok(&seeds);
    assert_matches_cluster(&map, &cluster);
    assert_eq!(map.owner(slot).unwrap().port(), from);

    // Manual failover: the replica takes over its primary's slots.
    let (_, primary) = cluster.primaries()[0];
    let replica = cluster.replicas_of(primary)[0];
    let primary_slots: Vec<u16> = (0..SLOT_COUNT as u16)
        .filter(|&s| map.owner(s).unwrap().port() == primary)
        .collect();
    cluster.failover(replica);
    let map = discover_ok(&seeds);
    assert_matches_cluster(&map, &cluster);
    for &s in &primary_slots {
        assert_eq!(
            map.owner(s).unwrap().port(),
            replica,
            "slot {s} after failover"
        );
    }
    assert_eq!(cluster.replicas_of(replica), vec![primary]);

    // The new primary dies: the old one is elected back; a seed list led by the dead node works.
    cluster.kill_node(replica);
    cluster.wait_stable(cluster::CLUSTER_CHANGE_TIMEOUT);
    let mut seeds = vec![format!("127.0.0.1:{replica}")];
    seeds.extend(cluster.seeds());
    let map = discover_ok(&seeds);
    assert_matches_cluster(&map, &cluster);
    for &s in &primary_slots {
        assert_eq!(
            map.owner(s).unwrap().port(),
            primary,
            "slot {s} after the kill"
        );
    }
    assert!(map.replicas_of(&format!("127.0.0.1:{primary}")).is_empty());
}

// ---------------------------------------------------------------------------------------------
// keyward in front of the cluster while two nodes disagree about a slot's owner
// ---------------------------------------------------------------------------------------------

/// Keys `{pp}:k<i>` = `p<i>`, written before the migration and read all along.
const PING_PONG_PRELOADED: usize = 50;
/// Commands per pipeline of the load client (4 of each kind).
const PING_PONG_PIPELINE: usize = 16;

/// What the pipelining client saw and what it expects to find at the end.
#[derive(Default)]
struct PipelineReport {
    pipelines: u64,
    /// Error replies (or failures of the whole pipeline), as the client saw them.
    errors: Vec<String>,
    /// Replies that were not errors but not what the command must answer either.
    wrong: Vec<String>,
    /// The `n` of every `{pp}:w<n>` whose SET was answered OK.
    written: Vec<u64>,
    /// What `{pp}:counter` holds after the last INCR that answered.
    counter: i64,
    /// The slowest pipeline, start to last reply.
    slowest: Duration,
}

/// One redis-rs connection to keyward sending pipelines of SET, GET, INCR and GET of a
/// preloaded key, all in the `{pp}` slot, until `stop`. Every reply is checked: an error reply
/// of any kind (MOVED, ASK, CLUSTERDOWN...) is what the test must never see.
fn ping_pong_load(
    addr: String,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    report: std::sync::Arc<std::sync::Mutex<PipelineReport>>,
) {
    use std::sync::atomic::Ordering;
    let mut conn = support::redis_conn(&addr);
    let mut next: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let first = next;
        for _ in 0..PING_PONG_PIPELINE / 4 {
            pipe.cmd("SET")
                .arg(format!("{{pp}}:w{next}"))
                .arg(format!("v{next}"));
            pipe.cmd("GET").arg(format!("{{pp}}:w{next}"));
            pipe.cmd("INCR").arg("{pp}:counter");
            pipe.cmd("GET")
                .arg(format!("{{pp}}:k{}", next as usize % PING_PONG_PRELOADED));
            next += 1;
        }
        let started = std::time::Instant::now();
        let replies = pipe.query::<Vec<redis::Value>>(&mut conn);
        let took = started.elapsed();
        let mut r = report.lock().expect("report lock");
        r.pipelines += 1;
        r.slowest = r.slowest.max(took);
        let replies = match replies {
            Ok(replies) => replies,
            Err(e) => {
                r.errors.push(format!("pipeline from w{first}: {e}"));
                return;
            }
        };
        for (i, reply) in replies.iter().enumerate() {
            let n = first + (i / 4) as u64;
            let what = match i % 4 {
                0 => format!("SET {{pp}}:w{n}"),
                1 => format!("GET {{pp}}:w{n}"),
                2 => "INCR {pp}:counter".to_string(),
                _ => format!("GET {{pp}}:k{}", n as usize % PING_PONG_PRELOADED),
            };
            if let redis::Value::ServerError(e) = reply {
                if r.errors.len() < 10 {
                    r.errors.push(format!("{what}: {e:?}"));
                }
                continue;
            }
            match i % 4 {
                0 if *reply == redis::Value::Okay => r.written.push(n),
                1 if *reply == redis::Value::BulkString(format!("v{n}").into_bytes()) => {}
                2 => match reply {
                    redis::Value::Int(v) => {
                        let expected = r.counter + 1;
                        if *v != expected {
                            r.wrong.push(format!("{what}: {v}, expected {expected}"));
                        }
                        r.counter = *v;
                    }
                    other => r.wrong.push(format!("{what}: {other:?}")),
                },
                3 if *reply
                    == redis::Value::BulkString(
                        format!("p{}", n as usize % PING_PONG_PRELOADED).into_bytes(),
                    ) => {}
                _ => r.wrong.push(format!("{what}: {reply:?}")),
            }
        }
        drop(r);
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// `errorstat_MOVED` of a node: how many MOVED replies it has sent.
fn moved_sent(cluster: &RedisCluster, port: u16) -> u64 {
    let info = cluster.node_cli(port, &["INFO", "errorstats"]);
    info.lines()
        .find_map(|l| l.strip_prefix("errorstat_MOVED:count="))
        .and_then(|n| n.trim().split(',').next()?.parse().ok())
        .unwrap_or(0)
}

/// A slot migration whose last step reaches the source before the destination: the source
/// answers `MOVED dst` while the destination, still importing, answers `MOVED src`, for as long
/// as the operator (or gossip) takes to tell the destination. keyward must follow that ping-pong
/// for the client until the nodes agree: a pipelining client through keyward sees no MOVED, ASK
/// or other error, only latency, and every write lands.
#[test]
fn moved_ping_pong_during_a_migration_reaches_no_client() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let cluster = RedisCluster::start(3, 0);
    let kw = support::Keyward::start_cluster(&cluster.seeds(), "");
    let slot = slot_of(b"pp");
    let from = cluster.owner_of_slot(slot);
    let to = cluster
        .primaries()
        .into_iter()
        .map(|(_, p)| p)
        .find(|&p| p != from)
        .expect("another primary");
    let third = cluster
        .primaries()
        .into_iter()
        .map(|(_, p)| p)
        .find(|&p| p != from && p != to)
        .expect("a third primary");

    let mut conn = support::redis_conn(&kw.addr());
    let mut pipe = redis::pipe();
    for i in 0..PING_PONG_PRELOADED {
        pipe.cmd("SET")
            .arg(format!("{{pp}}:k{i}"))
            .arg(format!("p{i}"))
            .ignore();
    }
    pipe.query::<()>(&mut conn)
        .expect("preload through keyward");

    let stop = Arc::new(AtomicBool::new(false));
    let report = Arc::new(Mutex::new(PipelineReport::default()));
    let load = {
        let (addr, stop, report) = (kw.addr(), stop.clone(), report.clone());
        std::thread::spawn(move || ping_pong_load(addr, stop, report))
    };
    let pipelines = || report.lock().expect("report lock").pipelines;
    assert!(
        support::wait_until(Duration::from_secs(10), || pipelines() >= 20),
        "the pipelining client makes no progress"
    );

    // Migrate every key (new keys go to `to` by ASK meanwhile, so `from` stays empty).
    cluster.setslot_importing(slot, from, to);
    cluster.setslot_migrating(slot, from, to);
    std::thread::sleep(Duration::from_millis(100));
    cluster.migrate_keys(slot, from, to, usize::MAX);
    let keys_on_from = cluster.node_cli(from, &["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    assert_eq!(keys_on_from.trim(), "0", "keys left on the source");

    // The last step, source first: from now on `from` says MOVED `to` and `to` says MOVED `from`.
    let moved_by_to = moved_sent(&cluster, to);
    let to_id = cluster.node_id(to).to_string();
    let setslot = ["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &to_id];
    assert_eq!(cluster.node_cli(from, &setslot).trim(), "OK");
    let disagreement = std::time::Instant::now();
    let probe = cluster.node_cli(to, &["GET", "{pp}:k0"]);
    assert!(
        probe.starts_with(&format!("MOVED {slot} 127.0.0.1:{from}")),
        "the importing destination should send clients back to the source: {probe}"
    );
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(cluster.node_cli(to, &setslot).trim(), "OK");
    let disagreed_for = disagreement.elapsed();
    let ping_pong = moved_sent(&cluster, to) - moved_by_to - 1;
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(cluster.node_cli(third, &setslot).trim(), "OK");
    let agreed = support::wait_until(Duration::from_secs(10), || {
        cluster.alive_ports().iter().all(|&port| {
            let seen = cluster.node_cli(port, &["GET", "{pp}:k0"]);
            if port == to {
                seen.trim() == "p0"
            } else {
                seen.starts_with(&format!("MOVED {slot} 127.0.0.1:{to}"))
            }
        })
    });
    assert!(
        agreed,
        "the nodes do not agree that {to} serves slot {slot}"
    );

    let at_end = pipelines();
    let progressed = support::wait_until(Duration::from_secs(10), || pipelines() >= at_end + 30);
    stop.store(true, Ordering::Release);
    load.join().expect("the load thread panicked");
    let report = std::mem::take(&mut *report.lock().expect("report lock"));
    eprintln!(
        "ping-pong of slot {slot} ({from} -> {to}) for {} ms: {} MOVED from the destination, \
         {} pipelines of {PING_PONG_PIPELINE}, slowest {} ms, {} keys written, counter {}",
        disagreed_for.as_millis(),
        ping_pong,
        report.pipelines,
        report.slowest.as_millis(),
        report.written.len(),
        report.counter,
    );

    let mut problems = Vec::new();
    if !report.errors.is_empty() {
        problems.push(format!(
            "errors reached the client: {:?}",
            &report.errors[..report.errors.len().min(5)]
        ));
    }
    if !report.wrong.is_empty() {
        problems.push(format!(
            "wrong replies: {:?}",
            &report.wrong[..report.wrong.len().min(5)]
        ));
    }
    if !progressed {
        problems.push("the client stalled after the nodes agreed".into());
    }
    // The destination really sent keyward back to the source more than once: keyward's requests
    // bounced between the two (the probe above is one MOVED, left out).
    if ping_pong < 2 {
        problems.push(format!(
            "the destination answered MOVED only {ping_pong} time(s) while the nodes disagreed"
        ));
    }
    // Ground truth on the new owner: every acknowledged write and every INCR.
    let mut node = cluster.conn(to);
    let mut pipe = redis::pipe();
    for n in &report.written {
        pipe.cmd("GET").arg(format!("{{pp}}:w{n}"));
    }
    let values: Vec<Option<String>> = pipe.query(&mut node).expect("GETs on the new owner");
    let lost: Vec<u64> = report
        .written
        .iter()
        .zip(&values)
        .filter(|(n, v)| v.as_deref() != Some(format!("v{n}").as_str()))
        .map(|(n, _)| *n)
        .take(5)
        .collect();
    if !lost.is_empty() {
        problems.push(format!("writes lost on {to}: {{pp}}:w{lost:?}..."));
    }
    let counter: Option<i64> = redis::cmd("GET")
        .arg("{pp}:counter")
        .query(&mut node)
        .expect("GET counter");
    if counter != Some(report.counter) {
        problems.push(format!(
            "{{pp}}:counter is {counter:?} on {to}, the client's INCRs made it {}",
            report.counter
        ));
    }
    assert!(
        problems.is_empty(),
        "while {from} and {to} disagreed about slot {slot}:\n- {}",
        problems.join("\n- ")
    );

    // A disagreement that outlasts keyward's budget (6 s from the first redirection): the
    // client gets CLUSTERDOWN naming the slot and both nodes, not a node's MOVED, and keyward
    // serves the slot as soon as the nodes agree.
    let stuck_key = cluster.keys_on(from, "stuck:", 1).remove(0);
    let stuck = slot_of(stuck_key.as_bytes());
    cluster.setslot_importing(stuck, from, to);
    cluster.setslot_migrating(stuck, from, to);
    let setslot = ["CLUSTER", "SETSLOT", &stuck.to_string(), "NODE", &to_id];
    assert_eq!(cluster.node_cli(from, &setslot).trim(), "OK");
    let mut raw = kw.raw_conn();
    let asked = std::time::Instant::now();
    let reply = raw.request(&["GET", &stuck_key]);
    let waited = asked.elapsed();
    let text = reply.error_text().unwrap_or_default().to_string();
    eprintln!("a disagreement beyond the budget, after {waited:?}: {reply:?}");
    assert!(
        text.starts_with(&format!(
            "CLUSTERDOWN keyward: the nodes disagree about who serves slot {stuck} ("
        )) && text.contains(&format!("127.0.0.1:{from} answers MOVED 127.0.0.1:{to}"))
            && text.contains(&format!("127.0.0.1:{to} answers MOVED 127.0.0.1:{from}")),
        "a disagreement longer than the budget: {reply:?}"
    );
    assert!(
        (Duration::from_millis(5900)..Duration::from_secs(9)).contains(&waited),
        "the request gave up after {waited:?}, the budget is 6 s"
    );
    assert_eq!(cluster.node_cli(to, &setslot).trim(), "OK");
    assert_eq!(
        raw.request(&["SET", &stuck_key, "after"]),
        support::Reply::ok()
    );
    assert_eq!(
        raw.request(&["GET", &stuck_key]),
        support::Reply::bulk("after")
    );
}
