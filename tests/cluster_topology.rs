//! `keyward::cluster::topology` against a real 3-primary / 3-replica Redis Cluster: the slot map
//! from `discover()` must match what the cluster itself says (`CLUSTER SLOTS`, `CLUSTER KEYSLOT`,
//! where a `SET` is accepted), whatever the seed list holds, and must follow slot migrations and
//! failovers.

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
