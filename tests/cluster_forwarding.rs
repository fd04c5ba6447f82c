//! keyward in front of a real Redis Cluster (3 primaries, 3 replicas), end to end.
//!
//! Clients know nothing about clusters: raw sockets, `redis-cli -p <keyward>`, redis-rs and fred
//! in their plain (non-cluster) modes, exactly as an application would connect to one Redis.
//! Every outcome is checked against ground truth read from the cluster nodes directly
//! ([`Truth`]: `CLUSTER KEYSLOT`, `CLUSTER SLOTS`, `KEYS`/`GET` on the owning primary), never
//! through keyward itself.
//!
//! The non-destructive tests share one cluster per test and run several named checks on it
//! ([`Checks`]): a failing check is reported with its name and the others still run, so one
//! bug does not hide the next. Slot migration and failover change the topology and get a
//! cluster of their own.

mod support;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::checks::Checks;
use support::cluster::{self, RedisCluster};
use support::*;

const T: Duration = IO_TIMEOUT;

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

/// Ground truth from the cluster nodes themselves, bypassing keyward.
struct Truth {
    /// `(first slot, last slot, primary port)` as `CLUSTER SLOTS` said when this was made.
    ranges: Vec<(u16, u16, u16)>,
    /// A direct connection to one primary, for `CLUSTER KEYSLOT`.
    keyslot: RefCell<redis::Connection>,
}

impl Truth {
    fn new(cluster: &RedisCluster) -> Self {
        let ranges = cluster.slot_ranges();
        let first = ranges[0].2;
        Truth {
            ranges,
            keyslot: RefCell::new(redis_conn(&format!("127.0.0.1:{first}"))),
        }
    }

    /// Primaries serving slots, in slot order.
    fn primaries(&self) -> Vec<u16> {
        let mut out = Vec::new();
        for &(_, _, port) in &self.ranges {
            if !out.contains(&port) {
                out.push(port);
            }
        }
        out
    }

    fn slot(&self, key: &str) -> u16 {
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query::<u16>(&mut self.keyslot.borrow_mut())
            .expect("CLUSTER KEYSLOT")
    }

    fn slots(&self, keys: &[String]) -> Vec<u16> {
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("CLUSTER").arg("KEYSLOT").arg(k);
        }
        pipe.query(&mut self.keyslot.borrow_mut())
            .expect("CLUSTER KEYSLOT pipeline")
    }

    fn owner_of_slot(&self, slot: u16) -> u16 {
        self.ranges
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|r| r.2)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    fn owner(&self, key: &str) -> u16 {
        self.owner_of_slot(self.slot(key))
    }

    /// `KEYS pattern` on each primary.
    fn keys_by_node(&self, pattern: &str) -> Vec<(u16, BTreeSet<String>)> {
        self.primaries()
            .into_iter()
            .map(|port| {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(pattern)
                    .query(&mut node(port))
                    .unwrap_or_else(|e| panic!("KEYS on node {port}: {e}"));
                let set: BTreeSet<String> = keys.iter().cloned().collect();
                assert_eq!(set.len(), keys.len(), "KEYS on node {port} repeats keys");
                (port, set)
            })
            .collect()
    }

    /// Every key matching `pattern` in the cluster; a key held by two primaries fails.
    fn keys(&self, pattern: &str) -> BTreeSet<String> {
        let mut all = BTreeSet::new();
        for (port, keys) in self.keys_by_node(pattern) {
            for k in keys {
                assert!(
                    all.insert(k.clone()),
                    "key {k:?} is on two primaries ({port})"
                );
            }
        }
        all
    }

    fn dbsize(&self) -> i64 {
        self.primaries()
            .into_iter()
            .map(|p| {
                redis::cmd("DBSIZE")
                    .query::<i64>(&mut node(p))
                    .expect("DBSIZE on a node")
            })
            .sum()
    }

    /// `GET key` on the primary that owns it.
    fn get(&self, key: &str) -> Option<String> {
        let port = self.owner(key);
        redis::cmd("GET")
            .arg(key)
            .query(&mut node(port))
            .unwrap_or_else(|e| panic!("GET {key} on node {port}: {e}"))
    }

    fn exists(&self, key: &str) -> bool {
        let port = self.owner(key);
        redis::cmd("EXISTS")
            .arg(key)
            .query::<i64>(&mut node(port))
            .unwrap_or_else(|e| panic!("EXISTS {key} on node {port}: {e}"))
            == 1
    }
}

/// A direct redis-rs connection to one cluster node (plain, non-cluster).
fn node(port: u16) -> redis::Connection {
    redis_conn(&format!("127.0.0.1:{port}"))
}

/// One field of `INFO section` on a node, as a number (0 when absent).
fn info_count(port: u16, section: &str, field: &str, key: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query(&mut node(port))
        .expect("INFO on a node");
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|rest| {
            rest.split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// `errorstat_<PREFIX>:count=N` on a node: how many error replies of that kind it sent.
fn error_count(port: u16, prefix: &str) -> u64 {
    info_count(port, "errorstats", &format!("errorstat_{prefix}"), "count")
}

fn bulk(s: &str) -> Reply {
    Reply::bulk(s)
}

fn arr(items: Vec<Reply>) -> Reply {
    Reply::Array(items)
}

fn error_of(reply: &Reply) -> &str {
    reply
        .error_text()
        .unwrap_or_else(|| panic!("expected an error reply, got {reply:?}"))
}

/// Sends one command with arbitrary many arguments and reads its reply.
fn request_owned(c: &mut RawConn, args: &[String]) -> Reply {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.request(&args)
}

fn with_name(name: &str, keys: &[String]) -> Vec<String> {
    std::iter::once(name.to_string())
        .chain(keys.iter().cloned())
        .collect()
}

/// Sets each key to `value_of(key)` through keyward in one redis-rs pipeline.
fn set_through(kw: &Keyward, keys: &[String], value_of: impl Fn(&str) -> String) {
    let mut conn = kw.conn();
    let mut pipe = redis::pipe();
    for k in keys {
        pipe.cmd("SET").arg(k).arg(value_of(k)).ignore();
    }
    pipe.query::<()>(&mut conn)
        .expect("SET pipeline through keyward");
}

fn shuffle<V>(rng: &mut XorShift, v: &mut [V]) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// Names `prefix<n>` for n = 0.., until `per_node` of them land on every primary; returns them
/// grouped by primary port.
fn keys_on_every_primary(
    truth: &Truth,
    prefix: &str,
    per_node: usize,
) -> BTreeMap<u16, Vec<String>> {
    let mut out: BTreeMap<u16, Vec<String>> = truth
        .primaries()
        .into_iter()
        .map(|p| (p, Vec::new()))
        .collect();
    let mut n = 0;
    while out.values().any(|v| v.len() < per_node) {
        let key = format!("{prefix}{n}");
        n += 1;
        let owner = truth.owner(&key);
        let list = out.get_mut(&owner).expect("owner is a primary");
        if list.len() < per_node {
            list.push(key);
        }
        assert!(n < 10_000, "could not spread keys over the primaries");
    }
    out
}

fn start_cluster_and_keyward() -> (RedisCluster, Keyward) {
    let cluster = RedisCluster::start(3, 1);
    let kw = Keyward::start_cluster(&cluster.seeds(), "");
    (cluster, kw)
}

// ---------------------------------------------------------------------------------------------
// 1, 2: guarded deletes across slots, and refusals identical to standalone mode
// ---------------------------------------------------------------------------------------------

#[test]
fn guarded_deletes_across_slots_and_refusals() {
    let (cluster, mut kw) = start_cluster_and_keyward();
    let truth = Truth::new(&cluster);
    assert_eq!(truth.primaries().len(), 3);
    let mut checks = Checks::new("guarded_deletes_across_slots_and_refusals");

    checks.run("removekeys_1000_random_keys_over_all_primaries", || {
        let mut rng = XorShift(0x5eed_1234_abcd_0001);
        let mut keys: BTreeSet<String> = BTreeSet::new();
        while keys.len() < 1500 {
            keys.insert(format!("rk:{:016x}", rng.next_u64()));
        }
        let mut keys: Vec<String> = keys.into_iter().collect();
        set_through(&kw, &keys, |k| format!("value of {k}"));
        assert_eq!(
            truth.keys("rk:*"),
            keys.iter().cloned().collect::<BTreeSet<_>>(),
            "the 1500 keys written through keyward are not all on the nodes"
        );

        shuffle(&mut rng, &mut keys);
        let doomed: Vec<String> = keys[..1000].to_vec();
        let kept: BTreeSet<String> = keys[1000..].iter().cloned().collect();
        let missing: Vec<String> = (0..50).map(|i| format!("rk-missing:{i}")).collect();
        for (port, on_node) in truth.keys_by_node("rk:*") {
            let n = doomed.iter().filter(|k| on_node.contains(*k)).count();
            assert!(
                n >= 200,
                "only {n} of the doomed keys live on primary {port}"
            );
        }
        let distinct_slots: BTreeSet<u16> = truth.slots(&doomed).into_iter().collect();
        assert!(distinct_slots.len() > 900, "{distinct_slots:?}");

        // 950 existing keys and the 50 missing names, mixed: exactly 1000 names.
        let mut first: Vec<String> = doomed[..950].to_vec();
        first.extend(missing.iter().cloned());
        shuffle(&mut rng, &mut first);
        let mut c = kw.raw_conn();
        assert_eq!(
            request_owned(&mut c, &with_name("REMOVEKEYS", &first)),
            Reply::Int(950)
        );
        // The other 50 existing ones, with the missing names again, through redis-cli.
        let mut second: Vec<String> = doomed[950..].to_vec();
        second.extend(missing.iter().cloned());
        let args = with_name("REMOVEKEYS", &second);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_eq!(kw.cli(&args).trim(), "50");

        assert_eq!(
            truth.keys("rk:*"),
            kept,
            "after removing 1000 keys, exactly the other 500 must remain on the nodes"
        );
        assert!(truth.keys("rk-missing:*").is_empty());
        // A second REMOVEKEYS of the same keys finds nothing.
        assert_eq!(
            request_owned(&mut c, &with_name("REMOVEKEYS", &doomed)),
            Reply::Int(0)
        );
        let audit = kw.wait_log_line(T, |l| {
            l.contains("keyward::audit")
                && l.contains("command=REMOVEKEYS")
                && l.contains("keys=1000")
                && l.contains("outcome=removed 950")
        });
        assert!(
            audit.is_some(),
            "no audit line `command=REMOVEKEYS keys=1000 ... outcome=removed 950`; log:\n{}",
            kw.log()
        );
    });

    checks.run("removekeys_hash_tagged_keys", || {
        let keys: Vec<String> = [
            "{user1}:a",
            "{user1}:b",
            "{user1}:c",
            "{user2}:a",
            "{user2}:b",
            "{user3}:x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        set_through(&kw, &keys, |_| "1".into());
        let slots = truth.slots(&keys);
        assert!(slots[0] == slots[1] && slots[1] == slots[2]);
        assert_eq!(slots[3], slots[4]);
        assert_ne!(slots[0], slots[3], "pick tags of different slots");
        let mut c = kw.raw_conn();
        assert_eq!(
            c.request(&[
                "REMOVEKEYS",
                "{user1}:a",
                "{user2}:a",
                "{user1}:b",
                "{user1}:nope",
                "{user2}:nope"
            ]),
            Reply::Int(3)
        );
        for (key, present) in [
            ("{user1}:a", false),
            ("{user1}:b", false),
            ("{user1}:c", true),
            ("{user2}:a", false),
            ("{user2}:b", true),
            ("{user3}:x", true),
        ] {
            assert_eq!(truth.exists(key), present, "{key}");
        }
        // One slot only: a single command upstream.
        assert_eq!(
            c.request(&["REMOVEKEYS", "{user1}:c", "{user1}:a"]),
            Reply::Int(1)
        );
        assert!(!truth.exists("{user1}:c"));
    });

    checks.run("del_and_unlink_across_slots", || {
        let keys: Vec<String> = (0..300).map(|i| format!("du:{i}")).collect();
        set_through(&kw, &keys, |_| "x".into());
        let missing: Vec<String> = (0..10).map(|i| format!("du-missing:{i}")).collect();
        let mut c = kw.raw_conn();

        let mut del: Vec<String> = keys[..150].to_vec();
        del.extend(missing.iter().cloned());
        assert_eq!(
            request_owned(&mut c, &with_name("DEL", &del)),
            Reply::Int(150)
        );

        // UNLINK through fred (plain, non-cluster client).
        let mut unlink: Vec<String> = keys[150..250].to_vec();
        unlink.extend(missing.iter().cloned());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let removed: i64 = rt.block_on(async {
            use fred::prelude::*;
            let client = fred_client(&kw.addr()).await;
            let n: i64 = client
                .unlink(unlink.clone())
                .await
                .expect("UNLINK via fred");
            let _ = client.quit().await;
            n
        });
        assert_eq!(removed, 100);

        let remaining: BTreeSet<String> = keys[250..].iter().cloned().collect();
        assert_eq!(truth.keys("du:*"), remaining);

        // In a pipeline, a multi-slot delete keeps its place among the other replies.
        let mut pipeline = Vec::new();
        pipeline.extend(resp_str(&["SET", "du:p", "1"]));
        pipeline.extend(resp_str(&["DEL", "du:250", "du:251", "du:252", "du:nope"]));
        pipeline.extend(resp_str(&["GET", "du:p"]));
        pipeline.extend(resp_str(&["UNLINK", "du:253", "du:p"]));
        pipeline.extend(resp_str(&["EXISTS", "du:253", "du:254", "du:p"]));
        pipeline.extend(resp_str(&["PING"]));
        c.send(&pipeline);
        assert_eq!(
            c.read_n_replies(6, T),
            vec![
                Reply::ok(),
                Reply::Int(3),
                bulk("1"),
                Reply::Int(2),
                Reply::Int(1),
                Reply::simple("PONG"),
            ]
        );
        assert_eq!(truth.keys("du:*").len(), 50 - 4);
    });

    checks.run("refusals_identical_to_standalone", || {
        let redis = RedisServer::start();
        let standalone = Keyward::start(&redis.addr());
        let lim: Vec<String> = (0..1001).map(|i| format!("lim:{i}")).collect();
        let plain: Vec<String> = ["plain:1", "plain:2", "wild*card", "a?b", "x[y"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        set_through(&kw, &lim, |_| "1".into());
        set_through(&kw, &plain, |_| "1".into());
        let before = truth.dbsize();

        let mut requests: Vec<Vec<String>> = vec![
            vec![
                "DEL".into(),
                "plain:1".into(),
                "wild*card".into(),
                "plain:2".into(),
            ],
            vec!["UNLINK".into(), "plain:1".into(), "a?b".into()],
            vec!["REMOVEKEYS".into(), "plain:2".into(), "x[y".into()],
            vec!["del".into(), "lim:*".into()],
            with_name("REMOVEKEYS", &lim),
            with_name("DEL", &lim),
            with_name("UNLINK", &lim),
            vec!["FLUSHALL".into()],
            vec!["FLUSHDB".into()],
            vec!["FLUSHALL".into(), "ASYNC".into()],
        ];
        let mut cluster_conn = kw.raw_conn();
        let mut standalone_conn = standalone.raw_conn();
        let mut replies = Vec::new();
        for request in requests.drain(..) {
            let from_cluster = request_owned(&mut cluster_conn, &request);
            let from_standalone = request_owned(&mut standalone_conn, &request);
            let shown = &request[..request.len().min(3)];
            assert!(from_cluster.is_error(), "{shown:?}...: {from_cluster:?}");
            assert_eq!(
                from_cluster, from_standalone,
                "cluster and standalone keyward answer {shown:?}... differently"
            );
            replies.push(from_cluster);
        }
        for (i, key) in [(0, "wild*card"), (1, "a?b"), (2, "x[y"), (3, "lim:*")] {
            let text = error_of(&replies[i]);
            assert!(text.starts_with("ERR keyward guard:"), "{text}");
            assert!(text.contains("wildcard"), "{text}");
            assert!(text.contains(&format!("'{key}'")), "{text}");
        }
        for reply in &replies[4..7] {
            let text = error_of(reply);
            assert!(text.starts_with("ERR keyward guard:"), "{text}");
            assert!(text.contains("max_keys") && text.contains("1000"), "{text}");
            assert!(text.contains("1001"), "{text}");
        }
        for reply in &replies[7..] {
            let text = error_of(reply);
            assert!(text.starts_with("ERR keyward guard:"), "{text}");
            assert!(text.contains("deny_commands"), "{text}");
        }
        // An inline command (telnet) is guarded the same way.
        cluster_conn.send(b"DEL plain:1 plain*\r\n");
        let inline = cluster_conn.read_reply(T);
        assert!(
            error_of(&inline).starts_with("ERR keyward guard:"),
            "{inline:?}"
        );
        // redis-cli shows the same text.
        let cli = kw.cli(&["DEL", "user:*"]);
        assert!(
            cli.starts_with("ERR keyward guard: DEL refused, key 'user:*'"),
            "{cli}"
        );

        // Nothing was deleted anywhere.
        assert_eq!(truth.dbsize(), before, "a refused request deleted keys");
        assert_eq!(truth.keys("lim:*").len(), 1001);
        for k in &plain {
            assert!(truth.exists(k), "{k} was deleted by a refused request");
        }
        // The connection stays usable.
        assert_eq!(cluster_conn.request(&["GET", "plain:1"]), bulk("1"));
    });

    checks.run("getdel_and_migrate_are_guarded_and_audited", || {
        // GETDEL and MIGRATE remove keys from a node: the key rules apply before routing.
        let keys: Vec<String> = ["gd:{t}1", "gd:{t}2", "gd:{t}*"]
            .iter()
            .map(|k| k.to_string())
            .collect();
        set_through(&kw, &keys, |_| "1".into());
        let mut c = kw.raw_conn();
        let reply = c.request(&["GETDEL", "gd:{t}*"]);
        assert!(
            error_of(&reply).starts_with("ERR keyward guard: GETDEL refused"),
            "{reply:?}"
        );
        let reply = c.request(&[
            "MIGRATE",
            "127.0.0.1",
            "1",
            "",
            "0",
            "100",
            "KEYS",
            "gd:{t}1",
            "gd:{t}*",
        ]);
        assert!(
            error_of(&reply).starts_with("ERR keyward guard: MIGRATE refused"),
            "{reply:?}"
        );
        assert!(
            keys.iter().all(|k| truth.exists(k)),
            "a refusal deleted keys"
        );

        // An allowed GETDEL goes to the key's owner, and is audited.
        assert_eq!(c.request(&["GETDEL", "gd:{t}1"]), bulk("1"));
        assert!(!truth.exists("gd:{t}1"));
        let audit = kw.wait_log_line(T, |l| {
            l.contains("keyward::audit")
                && l.contains("command=GETDEL")
                && l.contains("outcome=answered")
        });
        assert!(
            audit.is_some(),
            "no audit line for GETDEL; log:\n{}",
            kw.log()
        );

        // A delete queued inside MULTI is audited as in standalone mode.
        assert_eq!(c.request(&["MULTI"]), Reply::ok());
        assert_eq!(c.request(&["DEL", "gd:{t}2"]), Reply::simple("QUEUED"));
        assert_eq!(c.request(&["EXEC"]), arr(vec![Reply::Int(1)]));
        assert!(!truth.exists("gd:{t}2"));
        let audit = kw.wait_log_line(T, |l| {
            l.contains("keyward::audit")
                && l.contains("command=DEL")
                && l.contains("outcome=queued")
        });
        assert!(
            audit.is_some(),
            "no audit line for DEL in MULTI; log:\n{}",
            kw.log()
        );
    });

    kw.assert_running();
    checks.finish();
}

// ---------------------------------------------------------------------------------------------
// 3, 4, 5: multi-key commands, commands on every primary, keyless commands
// ---------------------------------------------------------------------------------------------

#[test]
fn multi_key_and_keyless_commands() {
    let (cluster, mut kw) = start_cluster_and_keyward();
    let truth = Truth::new(&cluster);
    let mut checks = Checks::new("multi_key_and_keyless_commands");

    checks.run("mset_mget_exists_touch_across_slots", || {
        let keys: Vec<String> = (0..20).map(|i| format!("mm:{i}")).collect();
        let owners: BTreeSet<u16> = keys.iter().map(|k| truth.owner(k)).collect();
        assert_eq!(owners.len(), 3, "the MSET keys must span every primary");
        let mut mset = vec!["MSET".to_string()];
        for (i, k) in keys.iter().enumerate() {
            mset.push(k.clone());
            mset.push(format!("val{i}"));
        }
        let mut c = kw.raw_conn();
        assert_eq!(request_owned(&mut c, &mset), Reply::ok());
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(truth.get(k), Some(format!("val{i}")), "{k} on its owner");
        }

        assert_eq!(
            c.request(&[
                "MGET",
                "mm:3",
                "mm:missing1",
                "mm:0",
                "mm:17",
                "nope",
                "mm:3"
            ]),
            arr(vec![
                bulk("val3"),
                Reply::Nil,
                bulk("val0"),
                bulk("val17"),
                Reply::Nil,
                bulk("val3"),
            ])
        );
        let all: Vec<String> = keys.iter().rev().cloned().collect();
        let expected: Vec<Reply> = (0..20).rev().map(|i| bulk(&format!("val{i}"))).collect();
        assert_eq!(
            request_owned(&mut c, &with_name("MGET", &all)),
            arr(expected)
        );

        assert_eq!(
            c.request(&["EXISTS", "mm:1", "mm:2", "nope", "mm:1", "mm:19"]),
            Reply::Int(4)
        );
        assert_eq!(c.request(&["TOUCH", "mm:1", "mm:5", "nope"]), Reply::Int(2));

        // The same through redis-rs and fred, plain clients.
        let mut conn = kw.conn();
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(&["mm:4", "mm:none", "mm:12"])
            .query(&mut conn)
            .expect("MGET via redis-rs");
        assert_eq!(
            values,
            vec![Some("val4".into()), None, Some("val12".into())]
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            use fred::prelude::*;
            let client = fred_client(&kw.addr()).await;
            let _: () = client
                .mset(vec![
                    ("mf:a", "A"),
                    ("mf:b", "B"),
                    ("mf:c", "C"),
                    ("mf:d", "D"),
                ])
                .await
                .expect("MSET via fred");
            let got: Vec<Option<String>> = client
                .mget(vec!["mf:d", "mf:x", "mf:a", "mf:c", "mf:b"])
                .await
                .expect("MGET via fred");
            assert_eq!(
                got,
                vec![
                    Some("D".to_string()),
                    None,
                    Some("A".to_string()),
                    Some("C".to_string()),
                    Some("B".to_string())
                ]
            );
            let n: i64 = client
                .exists(vec!["mf:a", "mf:b", "mf:c", "mf:d", "mf:x"])
                .await
                .expect("EXISTS via fred");
            assert_eq!(n, 4);
            let _ = client.quit().await;
        });
        for (k, v) in [("mf:a", "A"), ("mf:b", "B"), ("mf:c", "C"), ("mf:d", "D")] {
            assert_eq!(truth.get(k).as_deref(), Some(v));
        }
    });

    checks.run(
        "other_multi_key_commands_across_slots_get_crossslot",
        || {
            let (a, b) = ("cs:a", "cs:b");
            assert_ne!(truth.slot(a), truth.slot(b));
            let mut c = kw.raw_conn();
            assert_eq!(c.request(&["SADD", a, "1", "2"]), Reply::Int(2));
            assert_eq!(c.request(&["SADD", b, "2", "3"]), Reply::Int(2));
            let dest = "cs:dest";
            // (request, the keys it names)
            let cases: [(&[&str], &[&str]); 5] = [
                (&["SUNIONSTORE", dest, a, b], &[dest, a, b]),
                (&["SUNION", a, b], &[a, b]),
                (&["RENAME", a, "cs:renamed"], &[a, "cs:renamed"]),
                (&["MSETNX", "cs:n1", "1", "cs:n2", "2"], &["cs:n1", "cs:n2"]),
                (&["SMOVE", a, b, "1"], &[a, b]),
            ];
            for (request, keys) in cases {
                let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
                let slots: BTreeSet<u16> = truth.slots(&keys).into_iter().collect();
                assert!(
                    slots.len() > 1,
                    "{request:?} does not span slots: {slots:?}"
                );
                let reply = c.request(request);
                let text = error_of(&reply);
                assert!(
                    text.starts_with("CROSSSLOT"),
                    "{request:?}: expected CROSSSLOT, got {text}"
                );
            }
            assert!(!truth.exists(dest));
            assert!(truth.exists(a) && truth.exists(b));
            assert!(
                !truth.exists("cs:renamed") && !truth.exists("cs:n1") && !truth.exists("cs:n2")
            );
            // With one hash tag the same commands work.
            assert_eq!(c.request(&["SADD", "{cs}a", "1", "2"]), Reply::Int(2));
            assert_eq!(c.request(&["SADD", "{cs}b", "2", "3"]), Reply::Int(2));
            assert_eq!(
                c.request(&["SUNIONSTORE", "{cs}dest", "{cs}a", "{cs}b"]),
                Reply::Int(3)
            );
            assert_eq!(c.request(&["RENAME", "{cs}a", "{cs}c"]), Reply::ok());
            assert!(truth.exists("{cs}dest") && truth.exists("{cs}c") && !truth.exists("{cs}a"));
        },
    );

    checks.run("dbsize_scan_keys_over_every_primary", || {
        let keys: Vec<String> = (0..700).map(|i| format!("sc:{i}")).collect();
        set_through(&kw, &keys, |_| "s".into());
        let all = truth.keys("*");
        assert!(all.len() >= 700);
        for (port, on_node) in truth.keys_by_node("sc:*") {
            assert!(
                on_node.len() > 100,
                "node {port} holds {} sc: keys",
                on_node.len()
            );
        }
        let mut c = kw.raw_conn();
        assert_eq!(c.request(&["DBSIZE"]), Reply::Int(truth.dbsize()));
        assert_eq!(truth.dbsize(), all.len() as i64);

        let scan = |c: &mut RawConn, extra: &[&str]| -> (Vec<String>, usize) {
            let mut cursor = "0".to_string();
            let mut seen = Vec::new();
            let mut calls = 0;
            loop {
                calls += 1;
                assert!(calls < 5000, "SCAN did not come back to cursor 0");
                let mut args = vec!["SCAN", cursor.as_str()];
                args.extend_from_slice(extra);
                let reply = c.request(&args);
                let Reply::Array(parts) = &reply else {
                    panic!("SCAN reply is not an array: {reply:?}");
                };
                let (Reply::Bulk(next), Reply::Array(batch)) = (&parts[0], &parts[1]) else {
                    panic!("unexpected SCAN reply {reply:?}");
                };
                for k in batch {
                    let Reply::Bulk(k) = k else {
                        panic!("SCAN key is not a bulk string: {k:?}");
                    };
                    seen.push(String::from_utf8(k.clone()).expect("utf-8 key"));
                }
                cursor = String::from_utf8(next.clone()).expect("cursor");
                if cursor == "0" {
                    return (seen, calls);
                }
            }
        };
        let (seen, calls) = scan(&mut c, &["COUNT", "10"]);
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for k in &seen {
            *counts.entry(k).or_default() += 1;
        }
        let repeated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            repeated.is_empty(),
            "SCAN returned keys more than once: {repeated:?}"
        );
        let seen_set: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(
            seen_set.len(),
            all.len(),
            "SCAN missed {:?}",
            all.difference(&seen_set).take(10).collect::<Vec<_>>()
        );
        assert_eq!(seen_set, all);
        assert!(
            calls >= all.len() / 40,
            "only {calls} SCAN calls for {} keys",
            all.len()
        );

        let (matched, _) = scan(&mut c, &["MATCH", "sc:1*", "COUNT", "50"]);
        let expected: BTreeSet<String> = truth.keys("sc:1*");
        assert_eq!(matched.len(), expected.len(), "SCAN MATCH repeated keys");
        assert_eq!(matched.into_iter().collect::<BTreeSet<_>>(), expected);

        let mut conn = kw.conn();
        let listed: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut conn)
            .expect("KEYS *");
        assert_eq!(listed.len(), all.len(), "KEYS * repeated or missed keys");
        assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), all);
        let listed: Vec<String> = redis::cmd("KEYS")
            .arg("sc:2?")
            .query(&mut conn)
            .expect("KEYS");
        assert_eq!(
            listed.into_iter().collect::<BTreeSet<_>>(),
            truth.keys("sc:2?")
        );
        assert_eq!(kw.cli(&["DBSIZE"]).trim(), truth.dbsize().to_string());
    });

    checks.run("long_pipeline_over_every_slot_keeps_order", || {
        // 3000 requests in one write, alternating slots and fan-out classes.
        let mut c = kw.raw_conn();
        let mut bytes = Vec::new();
        let mut expected = Vec::new();
        for i in 0..500 {
            let (a, b) = (format!("pl:{i}"), format!("pl:{}", i + 1000));
            bytes.extend(resp_str(&["SET", &a, &i.to_string()]));
            expected.push(Reply::ok());
            bytes.extend(resp_str(&["MSET", &b, "x", &format!("{{pl}}{i}"), "y"]));
            expected.push(Reply::ok());
            bytes.extend(resp_str(&["MGET", &a, "pl:none", &b]));
            expected.push(arr(vec![bulk(&i.to_string()), Reply::Nil, bulk("x")]));
            bytes.extend(resp_str(&["EXISTS", &a, &b, "pl:none"]));
            expected.push(Reply::Int(2));
            bytes.extend(resp_str(&["DEL", &b, &format!("{{pl}}{i}")]));
            expected.push(Reply::Int(2));
            bytes.extend(resp_str(&["ECHO", &format!("e{i}")]));
            expected.push(bulk(&format!("e{i}")));
        }
        c.send(&bytes);
        let got = c.read_n_replies(expected.len(), Duration::from_secs(30));
        for (i, (g, e)) in got.iter().zip(&expected).enumerate() {
            assert_eq!(g, e, "reply {i} of the pipeline");
        }
        assert_eq!(truth.keys("pl:*").len(), 500);
        assert!(truth.keys("{pl}*").is_empty());
    });

    checks.run("resp3_session_across_slots", || {
        let mut c = kw.raw_conn();
        let hello = c.request(&["HELLO", "3"]);
        assert!(matches!(hello, Reply::Map(_)), "HELLO 3: {hello:?}");
        assert_eq!(c.request(&["SET", "r3:a", "1"]), Reply::ok());
        assert_eq!(c.request(&["SET", "r3:b", "2"]), Reply::ok());
        assert_ne!(truth.slot("r3:a"), truth.slot("r3:b"));
        assert_eq!(
            c.request(&["MGET", "r3:a", "r3:none", "r3:b"]),
            arr(vec![bulk("1"), Reply::Null, bulk("2")])
        );
        assert_eq!(c.request(&["EXISTS", "r3:a", "r3:b"]), Reply::Int(2));
        assert_eq!(c.request(&["DBSIZE"]), Reply::Int(truth.dbsize()));
        assert_eq!(c.request(&["REMOVEKEYS", "r3:a", "r3:b"]), Reply::Int(2));
        assert!(!truth.exists("r3:a") && !truth.exists("r3:b"));
        assert_eq!(c.request(&["CLIENT", "SETNAME", "app"]), Reply::ok());
        assert_eq!(c.request(&["CLIENT", "GETNAME"]), bulk("app"));
    });

    checks.run("select_ping_echo", || {
        let mut c = kw.raw_conn();
        assert_eq!(c.request(&["SELECT", "0"]), Reply::ok());
        assert_eq!(
            c.request(&["SELECT", "1"]),
            Reply::Error("ERR SELECT is not allowed in cluster mode".into())
        );
        assert_eq!(c.request(&["PING"]), Reply::simple("PONG"));
        assert_eq!(c.request(&["PING", "hello"]), bulk("hello"));
        assert_eq!(c.request(&["ECHO", "hello world"]), bulk("hello world"));
        assert_eq!(c.request(&["ping"]), Reply::simple("PONG"));
        assert_eq!(kw.cli(&["PING"]).trim(), "PONG");
        assert_eq!(kw.cli(&["-n", "0", "PING"]).trim(), "PONG");
        // redis-cli reports a failed SELECT on stderr.
        let refused = kw.cli_output(&["-n", "1", "PING"]);
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(
            stderr.contains("SELECT 1 failed: ERR SELECT is not allowed in cluster mode"),
            "{stderr}"
        );
        // redis-rs selects db 0 from the URL path and works.
        let pong: String = redis::cmd("PING").query(&mut kw.conn()).expect("PING");
        assert_eq!(pong, "PONG");
    });

    kw.assert_running();
    checks.finish();
}

// ---------------------------------------------------------------------------------------------
// 6, 7, 8: transactions, blocking commands, pub/sub
// ---------------------------------------------------------------------------------------------

#[test]
fn transactions_blocking_and_pubsub() {
    let (cluster, mut kw) = start_cluster_and_keyward();
    let truth = Truth::new(&cluster);
    let mut checks = Checks::new("transactions_blocking_and_pubsub");

    checks.run("multi_exec_on_one_slot", || {
        let mut c = kw.raw_conn();
        let mut other = kw.raw_conn();
        assert_eq!(c.request(&["MULTI"]), Reply::ok());
        assert_eq!(c.request(&["SET", "{t}a", "1"]), Reply::simple("QUEUED"));
        assert_eq!(c.request(&["INCR", "{t}b"]), Reply::simple("QUEUED"));
        assert_eq!(c.request(&["GET", "{t}a"]), Reply::simple("QUEUED"));
        // Nothing is applied before EXEC.
        assert_eq!(other.request(&["GET", "{t}a"]), Reply::Nil);
        assert!(!truth.exists("{t}a"));
        assert_eq!(
            c.request(&["EXEC"]),
            arr(vec![Reply::ok(), Reply::Int(1), bulk("1")])
        );
        assert_eq!(truth.get("{t}a").as_deref(), Some("1"));
        assert_eq!(truth.get("{t}b").as_deref(), Some("1"));

        // Keyless commands before the first key, pipelined.
        let mut pipeline = resp_str(&["MULTI"]);
        pipeline.extend(resp_str(&["PING"]));
        pipeline.extend(resp_str(&["INCR", "{t}b"]));
        pipeline.extend(resp_str(&["EXEC"]));
        c.send(&pipeline);
        assert_eq!(
            c.read_n_replies(4, T),
            vec![
                Reply::ok(),
                Reply::simple("QUEUED"),
                Reply::simple("QUEUED"),
                arr(vec![Reply::simple("PONG"), Reply::Int(2)])
            ]
        );

        // REMOVEKEYS inside MULTI is queued and EXEC returns its count.
        assert_eq!(c.request(&["MULTI"]), Reply::ok());
        assert_eq!(
            c.request(&["REMOVEKEYS", "{t}b", "{t}nope"]),
            Reply::simple("QUEUED")
        );
        assert_eq!(c.request(&["EXEC"]), arr(vec![Reply::Int(1)]));
        assert!(!truth.exists("{t}b"));

        // DISCARD drops everything.
        assert_eq!(c.request(&["MULTI"]), Reply::ok());
        assert_eq!(
            c.request(&["SET", "{t}a", "discarded"]),
            Reply::simple("QUEUED")
        );
        assert_eq!(c.request(&["DISCARD"]), Reply::ok());
        assert_eq!(truth.get("{t}a").as_deref(), Some("1"));
        assert_eq!(c.request(&["PING"]), Reply::simple("PONG"));
    });

    checks.run("multi_keyless_command_first_one_at_a_time", || {
        // What redis-cli (interactive) and every client that waits for each reply does: the
        // keyless command's QUEUED must come before the client sends the next command.
        let mut c = kw.raw_conn();
        assert_eq!(c.request(&["MULTI"]), Reply::ok());
        c.cmd(&["PING"]);
        let queued = c.try_read_reply(Duration::from_secs(3));
        assert_eq!(
            queued,
            Some(Reply::simple("QUEUED")),
            "PING inside MULTI got no QUEUED within 3 s while no key was sent yet"
        );
        assert_eq!(c.request(&["SET", "{t}k1", "1"]), Reply::simple("QUEUED"));
        assert_eq!(
            c.request(&["EXEC"]),
            arr(vec![Reply::simple("PONG"), Reply::ok()])
        );
        assert_eq!(truth.get("{t}k1").as_deref(), Some("1"));

        // A transaction of keyless commands only.
        let mut c = kw.raw_conn();
        assert_eq!(c.request(&["MULTI"]), Reply::ok());
        c.cmd(&["ECHO", "x"]);
        let queued = c.try_read_reply(Duration::from_secs(3));
        assert_eq!(queued, Some(Reply::simple("QUEUED")));
        assert_eq!(c.request(&["EXEC"]), arr(vec![bulk("x")]));
    });

    checks.run("multi_with_keys_of_two_slots_is_aborted", || {
        assert_ne!(truth.slot("{t}a"), truth.slot("{u}a"));
        let mut c = kw.raw_conn();
        let _ = c.request(&["SET", "{t}a", "1"]);
        assert_eq!(c.request(&["MULTI"]), Reply::ok());
        assert_eq!(c.request(&["SET", "{t}a", "2"]), Reply::simple("QUEUED"));
        let cross = c.request(&["SET", "{u}a", "2"]);
        assert!(error_of(&cross).starts_with("CROSSSLOT"), "{cross:?}");
        let exec = c.request(&["EXEC"]);
        assert!(error_of(&exec).starts_with("EXECABORT"), "{exec:?}");
        assert_eq!(truth.get("{t}a").as_deref(), Some("1"));
        assert!(!truth.exists("{u}a"));

        // One command spanning two slots inside MULTI.
        assert_eq!(c.request(&["MULTI"]), Reply::ok());
        let cross = c.request(&["MSET", "{t}a", "3", "{u}a", "3"]);
        assert!(error_of(&cross).starts_with("CROSSSLOT"), "{cross:?}");
        let exec = c.request(&["EXEC"]);
        assert!(error_of(&exec).starts_with("EXECABORT"), "{exec:?}");

        // A guard refusal inside MULTI aborts the transaction, as in standalone mode.
        assert_eq!(c.request(&["MULTI"]), Reply::ok());
        assert_eq!(c.request(&["SET", "{t}a", "4"]), Reply::simple("QUEUED"));
        let refused = c.request(&["DEL", "{t}*"]);
        assert!(
            error_of(&refused).starts_with("ERR keyward guard:"),
            "{refused:?}"
        );
        let exec = c.request(&["EXEC"]);
        assert!(error_of(&exec).starts_with("EXECABORT"), "{exec:?}");
        assert_eq!(truth.get("{t}a").as_deref(), Some("1"));
        assert!(!truth.exists("{u}a"));
        assert_eq!(c.request(&["GET", "{t}a"]), bulk("1"));
    });

    checks.run("watch_with_a_conflicting_write", || {
        let mut c = kw.raw_conn();
        let mut other = kw.conn();
        assert_eq!(c.request(&["SET", "{w}k", "start"]), Reply::ok());
        assert_eq!(c.request(&["WATCH", "{w}k"]), Reply::ok());
        assert_eq!(c.request(&["GET", "{w}k"]), bulk("start"));
        let _: () = redis::cmd("SET")
            .arg("{w}k")
            .arg("theirs")
            .query(&mut other)
            .expect("conflicting SET through keyward");
        assert_eq!(c.request(&["MULTI"]), Reply::ok());
        assert_eq!(c.request(&["SET", "{w}k", "mine"]), Reply::simple("QUEUED"));
        assert_eq!(c.request(&["EXEC"]), Reply::NilArray);
        assert_eq!(truth.get("{w}k").as_deref(), Some("theirs"));

        // Without a conflict the transaction applies.
        assert_eq!(c.request(&["WATCH", "{w}k"]), Reply::ok());
        assert_eq!(c.request(&["MULTI"]), Reply::ok());
        assert_eq!(c.request(&["SET", "{w}k", "mine"]), Reply::simple("QUEUED"));
        assert_eq!(c.request(&["EXEC"]), arr(vec![Reply::ok()]));
        assert_eq!(truth.get("{w}k").as_deref(), Some("mine"));

        // WATCH of keys in two slots is refused like Redis Cluster does.
        let cross = c.request(&["WATCH", "{w}k", "{u}k"]);
        assert!(error_of(&cross).starts_with("CROSSSLOT"), "{cross:?}");
    });

    checks.run("blpop_timeout_and_wakeup", || {
        let mut c = kw.raw_conn();
        let started = Instant::now();
        assert_eq!(c.request(&["BLPOP", "bl:empty", "1"]), Reply::NilArray);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
            "BLPOP 1 answered after {waited:?}"
        );

        c.cmd(&["BLPOP", "{bl}q", "0"]);
        assert_eq!(c.try_read_reply(Duration::from_millis(400)), None);
        let mut pusher = kw.raw_conn();
        assert_eq!(pusher.request(&["LPUSH", "{bl}q", "hello"]), Reply::Int(1));
        assert_eq!(
            c.read_reply(Duration::from_secs(5)),
            arr(vec![bulk("{bl}q"), bulk("hello")])
        );
        assert!(!truth.exists("{bl}q"), "BLPOP did not pop on the node");
        // The client goes on after the blocking command.
        assert_eq!(c.request(&["PING"]), Reply::simple("PONG"));

        // Two blocked clients on different slots, woken in turn.
        let mut a = kw.raw_conn();
        let mut b = kw.raw_conn();
        assert_ne!(truth.slot("bl:x"), truth.slot("bl:y"));
        a.cmd(&["BRPOP", "bl:x", "5"]);
        b.cmd(&["BLPOP", "bl:y", "5"]);
        thread::sleep(Duration::from_millis(200));
        assert_eq!(pusher.request(&["RPUSH", "bl:y", "Y"]), Reply::Int(1));
        assert_eq!(pusher.request(&["RPUSH", "bl:x", "X"]), Reply::Int(1));
        assert_eq!(a.read_reply(T), arr(vec![bulk("bl:x"), bulk("X")]));
        assert_eq!(b.read_reply(T), arr(vec![bulk("bl:y"), bulk("Y")]));

        let cross = c.request(&["BLPOP", "bl:x", "bl:y", "1"]);
        assert!(error_of(&cross).starts_with("CROSSSLOT"), "{cross:?}");
    });

    checks.run("subscribe_and_publish", || {
        let mut sub = kw.raw_conn();
        assert_eq!(
            sub.request(&["SUBSCRIBE", "news"]),
            arr(vec![bulk("subscribe"), bulk("news"), Reply::Int(1)])
        );
        let numsub: i64 = cluster
            .alive_ports()
            .into_iter()
            .map(|p| {
                let v: (String, i64) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg("news")
                    .query(&mut node(p))
                    .expect("PUBSUB NUMSUB");
                v.1
            })
            .sum();
        assert_eq!(
            numsub, 1,
            "the subscription is not registered on exactly one node"
        );
        let mut psub = kw.raw_conn();
        assert_eq!(
            psub.request(&["PSUBSCRIBE", "ne*"]),
            arr(vec![bulk("psubscribe"), bulk("ne*"), Reply::Int(1)])
        );

        let mut publisher = kw.conn();
        let _receivers: i64 = redis::cmd("PUBLISH")
            .arg("news")
            .arg("hello")
            .query(&mut publisher)
            .expect("PUBLISH through keyward");
        assert_eq!(
            sub.read_reply(Duration::from_secs(5)),
            arr(vec![bulk("message"), bulk("news"), bulk("hello")])
        );
        assert_eq!(
            psub.read_reply(Duration::from_secs(5)),
            arr(vec![
                bulk("pmessage"),
                bulk("ne*"),
                bulk("news"),
                bulk("hello")
            ])
        );
        // A message published straight on another node reaches the subscriber too.
        for port in truth.primaries() {
            let _: i64 = redis::cmd("PUBLISH")
                .arg("news")
                .arg(format!("from {port}"))
                .query(&mut node(port))
                .expect("PUBLISH on a node");
            assert_eq!(
                sub.read_reply(Duration::from_secs(5)),
                arr(vec![
                    bulk("message"),
                    bulk("news"),
                    bulk(&format!("from {port}"))
                ])
            );
        }
        assert_eq!(
            sub.request(&["UNSUBSCRIBE", "news"]),
            arr(vec![bulk("unsubscribe"), bulk("news"), Reply::Int(0)])
        );
        assert_eq!(sub.request(&["PING"]), Reply::simple("PONG"));
    });

    checks.run("ssubscribe_and_spublish", || {
        let channel = "{sh}news";
        let owner = truth.owner(channel);
        let mut sub = kw.raw_conn();
        assert_eq!(
            sub.request(&["SSUBSCRIBE", channel]),
            arr(vec![bulk("ssubscribe"), bulk(channel), Reply::Int(1)])
        );
        let on_owner: (String, i64) = redis::cmd("PUBSUB")
            .arg("SHARDNUMSUB")
            .arg(channel)
            .query(&mut node(owner))
            .expect("PUBSUB SHARDNUMSUB");
        assert_eq!(
            on_owner.1, 1,
            "the shard subscription is not on the slot owner"
        );
        let mut publisher = kw.raw_conn();
        assert_eq!(
            publisher.request(&["SPUBLISH", channel, "shard hello"]),
            Reply::Int(1)
        );
        assert_eq!(
            sub.read_reply(Duration::from_secs(5)),
            arr(vec![bulk("smessage"), bulk(channel), bulk("shard hello")])
        );
        let cross = publisher.request(&["SSUBSCRIBE", "{sh}a", "{other}b"]);
        assert!(error_of(&cross).starts_with("CROSSSLOT"), "{cross:?}");
    });

    checks.run("client_authentication_in_cluster_mode", || {
        let secured = Keyward::start_cluster(&cluster.seeds(), "[server]\npassword = \"pw-7\"");
        let mut c = secured.raw_conn();
        assert_eq!(
            error_of(&c.request(&["GET", "{a}1"])),
            "NOAUTH Authentication required."
        );
        assert_eq!(
            error_of(&c.request(&["SUBSCRIBE", "news"])),
            "NOAUTH Authentication required."
        );
        assert_eq!(c.request(&["AUTH", "pw-7"]), Reply::ok());
        // Keys on every primary, a fan-out delete, then a move to a node for pub/sub.
        let keys: Vec<String> = (0..30).map(|i| format!("auth:{i}")).collect();
        for k in &keys {
            assert_eq!(c.request(&["SET", k, "1"]), Reply::ok());
        }
        let mut del = vec!["REMOVEKEYS".to_string()];
        del.extend(keys.iter().cloned());
        assert_eq!(request_owned(&mut c, &del), Reply::Int(30));
        assert_eq!(
            c.request(&["SUBSCRIBE", "news"]),
            arr(vec![bulk("subscribe"), bulk("news"), Reply::Int(1)])
        );
        let mut anon = secured.raw_conn();
        assert_eq!(
            error_of(&anon.request(&["PUBLISH", "news", "x"])),
            "NOAUTH Authentication required."
        );
        assert!(!secured.log().contains("pw-7"));
    });

    kw.assert_running();
    checks.finish();
}

// ---------------------------------------------------------------------------------------------
// 9: a live slot migration
// ---------------------------------------------------------------------------------------------

/// What one client thread did and saw during the migration.
#[derive(Default)]
struct LoadReport {
    iterations: u64,
    /// Error replies (or I/O errors), by command kind, the first few of each in full.
    errors: BTreeMap<&'static str, (u64, Vec<String>)>,
    /// Values that did not match what was written.
    mismatches: Vec<String>,
    /// Expected state of every key the thread touched: `Some(value)` or `None` (deleted).
    /// Keys whose state is unknown after an error are left out.
    model: BTreeMap<String, Option<String>>,
}

impl LoadReport {
    fn error(&mut self, kind: &'static str, what: String) {
        let entry = self.errors.entry(kind).or_default();
        entry.0 += 1;
        if entry.1.len() < 3 {
            entry.1.push(what);
        }
    }

    fn mismatch(&mut self, what: String) {
        if self.mismatches.len() < 20 {
            self.mismatches.push(what);
        }
    }
}

/// Keys `{m}:k<i>` = `v<i>`, read all along and never deleted.
const PRELOADED: usize = 200;
/// Keys `{m}:d<i>`, deleted two at a time by the multi-key client.
const DOOMED: usize = 400;

fn preloaded(i: u64) -> (String, String) {
    let i = i as usize % PRELOADED;
    (format!("{{m}}:k{i}"), format!("v{i}"))
}

/// One client through keyward doing single-key commands on keys of the `{m}` slot until
/// `stop`: SET a new key, GET it back, GET a preloaded key, DEL an older key of its own.
fn single_key_load(addr: String, stop: Arc<AtomicBool>, report: Arc<Mutex<LoadReport>>) {
    let mut conn = redis_conn(&addr);
    let mut live: std::collections::VecDeque<String> = Default::default();
    let mut i: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        i += 1;
        let mut r = report.lock().expect("report lock");
        r.iterations = i;

        let key = format!("{{m}}:w{i}");
        let value = format!("value-{i}");
        match redis::cmd("SET")
            .arg(&key)
            .arg(&value)
            .query::<String>(&mut conn)
        {
            Ok(ok) if ok == "OK" => {
                r.model.insert(key.clone(), Some(value.clone()));
                live.push_back(key.clone());
            }
            Ok(other) => r.error("SET", format!("SET {key}: {other:?}")),
            Err(e) => r.error("SET", format!("SET {key}: {e}")),
        }
        match redis::cmd("GET")
            .arg(&key)
            .query::<Option<String>>(&mut conn)
        {
            Ok(got) => {
                let want = r.model.get(&key).cloned().flatten();
                if want.is_some() && got != want {
                    r.mismatch(format!("GET {key}: {got:?}, wrote {want:?}"));
                }
            }
            Err(e) => r.error("GET", format!("GET {key}: {e}")),
        }
        let (k, v) = preloaded(i);
        match redis::cmd("GET").arg(&k).query::<Option<String>>(&mut conn) {
            Ok(got) if got.as_deref() == Some(v.as_str()) => {}
            Ok(got) => r.mismatch(format!("GET {k}: {got:?}, want {v:?}")),
            Err(e) => r.error("GET", format!("GET {k}: {e}")),
        }
        if i.is_multiple_of(3) && live.len() > 10 {
            let old = live.pop_front().expect("a live key");
            match redis::cmd("DEL").arg(&old).query::<i64>(&mut conn) {
                Ok(1) => {
                    r.model.insert(old, None);
                }
                Ok(n) => r.mismatch(format!("DEL {old} (it exists): {n}")),
                Err(e) => {
                    r.model.remove(&old);
                    r.error("DEL of one key", format!("DEL {old}: {e}"));
                }
            }
        }
        drop(r);
        thread::sleep(Duration::from_millis(2));
    }
}

/// One client through keyward doing multi-key commands on keys of the `{m}` slot until
/// `stop` (all keys of one slot, so Redis itself would accept them): a new key `{m}:x<i>`,
/// then MGET and EXISTS of it with a preloaded key (during the migration the two may sit on
/// different nodes), and REMOVEKEYS of two doomed keys and one that never existed.
fn multi_key_load(addr: String, stop: Arc<AtomicBool>, report: Arc<Mutex<LoadReport>>) {
    let mut conn = redis_conn(&addr);
    let mut next_doomed = 0;
    let mut i: u64 = 0;
    while !stop.load(Ordering::Acquire) {
        i += 1;
        let mut r = report.lock().expect("report lock");
        r.iterations = i;

        let new = format!("{{m}}:x{i}");
        let mut new_value = None;
        match redis::cmd("SET")
            .arg(&new)
            .arg(i)
            .query::<String>(&mut conn)
        {
            Ok(_) => {
                new_value = Some(i.to_string());
                r.model.insert(new.clone(), new_value.clone());
            }
            Err(e) => r.error("SET", format!("SET {new}: {e}")),
        }
        let (k, v) = preloaded(i * 7);
        match redis::cmd("MGET")
            .arg(&k)
            .arg(&new)
            .query::<Vec<Option<String>>>(&mut conn)
        {
            Ok(got) if got == vec![Some(v.clone()), new_value.clone()] => {}
            Ok(got) => r.mismatch(format!("MGET {k} {new}: {got:?}, want {v:?} {new_value:?}")),
            Err(e) => r.error("MGET of keys of one slot", format!("MGET {k} {new}: {e}")),
        }
        let never = format!("{{m}}:never{i}");
        match redis::cmd("EXISTS")
            .arg(&k)
            .arg(&new)
            .arg(&never)
            .query::<i64>(&mut conn)
        {
            Ok(n) if n == 1 + i64::from(new_value.is_some()) => {}
            Ok(n) => r.mismatch(format!("EXISTS {k} {new} {never}: {n}")),
            Err(e) => r.error(
                "EXISTS of keys of one slot",
                format!("EXISTS {k} {new} {never}: {e}"),
            ),
        }
        if next_doomed + 2 <= DOOMED {
            let a = format!("{{m}}:d{next_doomed}");
            let b = format!("{{m}}:d{}", next_doomed + 1);
            next_doomed += 2;
            match redis::cmd("REMOVEKEYS")
                .arg(&a)
                .arg(&never)
                .arg(&b)
                .query::<i64>(&mut conn)
            {
                Ok(2) => {
                    r.model.insert(a, None);
                    r.model.insert(b, None);
                }
                Ok(n) => {
                    r.model.remove(&a);
                    r.model.remove(&b);
                    r.mismatch(format!("REMOVEKEYS {a} {never} {b} (2 exist): {n}"));
                }
                Err(e) => {
                    // Unknown outcome: leave both keys out of the model.
                    r.model.remove(&a);
                    r.model.remove(&b);
                    r.error(
                        "REMOVEKEYS of keys of one slot",
                        format!("REMOVEKEYS {a} {never} {b}: {e}"),
                    );
                }
            }
        }
        drop(r);
        thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn live_slot_migration_is_invisible_to_clients() {
    let (cluster, mut kw) = start_cluster_and_keyward();
    let truth = Truth::new(&cluster);
    let slot = truth.slot("{m}");
    let from = truth.owner_of_slot(slot);
    let to = *truth
        .primaries()
        .iter()
        .find(|&&p| p != from)
        .expect("another primary");

    // The slot's keys: preloaded values (never deleted) and keys the client will delete.
    let mut preload: Vec<String> = (0..PRELOADED as u64).map(|i| preloaded(i).0).collect();
    preload.extend((0..DOOMED).map(|i| format!("{{m}}:d{i}")));
    set_through(&kw, &preload, |k| {
        k.strip_prefix("{m}:k")
            .map(|n| format!("v{n}"))
            .unwrap_or_else(|| "doomed".into())
    });
    let count_in_slot = |port: u16| -> i64 {
        redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(slot)
            .query(&mut node(port))
            .expect("COUNTKEYSINSLOT")
    };
    assert_eq!(count_in_slot(from), (PRELOADED + DOOMED) as i64);

    let ask_before = error_count(from, "ASK");
    let moved_before = error_count(from, "MOVED");
    let asking = || info_count(to, "commandstats", "cmdstat_asking", "calls");
    let asking_before = asking();
    let tryagain = || error_count(from, "TRYAGAIN") + error_count(to, "TRYAGAIN");
    let tryagain_before = tryagain();

    let stop = Arc::new(AtomicBool::new(false));
    let single = Arc::new(Mutex::new(LoadReport::default()));
    let multi = Arc::new(Mutex::new(LoadReport::default()));
    let threads = [
        {
            let (addr, stop, report) = (kw.addr(), stop.clone(), single.clone());
            thread::spawn(move || single_key_load(addr, stop, report))
        },
        {
            let (addr, stop, report) = (kw.addr(), stop.clone(), multi.clone());
            thread::spawn(move || multi_key_load(addr, stop, report))
        },
    ];
    let iterations = |r: &Arc<Mutex<LoadReport>>| r.lock().expect("report lock").iterations;
    assert!(
        wait_until(Duration::from_secs(10), || iterations(&single) >= 30
            && iterations(&multi) >= 10),
        "the client threads do not make progress"
    );

    cluster.setslot_importing(slot, from, to);
    cluster.setslot_migrating(slot, from, to);
    let at_migrating = (iterations(&single), iterations(&multi));

    // A key created now is not on `from`: `from` answers ASK, so keyward must send it to `to`
    // with ASKING.
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["SET", "{m}:ask-probe", "here"]), Reply::ok());
    let on_to: Vec<String> = redis::cmd("CLUSTER")
        .arg("GETKEYSINSLOT")
        .arg(slot)
        .arg(10_000)
        .query(&mut node(to))
        .expect("GETKEYSINSLOT on the target");
    assert!(
        on_to.contains(&"{m}:ask-probe".to_string()),
        "a key written during MIGRATING is not on the target"
    );
    assert_eq!(c.request(&["GET", "{m}:ask-probe"]), bulk("here"));

    // Move the keys in small batches, with the clients running all along.
    let mut batches = 0;
    let mut both_sides = false;
    loop {
        let moved = cluster.migrate_keys(slot, from, to, 25);
        if moved == 0 {
            break;
        }
        batches += 1;
        if count_in_slot(from) > 0 && count_in_slot(to) > 0 {
            both_sides = true;
        }
        thread::sleep(Duration::from_millis(80));
        assert!(batches < 100, "the slot never drained");
    }
    assert!(both_sides, "the slot never had keys on both nodes");
    let during = (
        iterations(&single) - at_migrating.0,
        iterations(&multi) - at_migrating.1,
    );
    cluster.setslot_node(slot, from, to);

    // `from` now answers MOVED for the slot.
    let moved_reply = redis::cmd("GET")
        .arg("{m}:k1")
        .query::<Option<String>>(&mut node(from));
    let moved_text = moved_reply.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        moved_text.to_ascii_uppercase().contains("MOVED"),
        "{moved_text}"
    );
    let at_end = (iterations(&single), iterations(&multi));
    assert!(
        wait_until(Duration::from_secs(10), || iterations(&single)
            >= at_end.0 + 100
            && iterations(&multi) >= at_end.1 + 20),
        "the client threads stalled after the migration"
    );
    stop.store(true, Ordering::Release);
    for t in threads {
        t.join().expect("client thread panicked");
    }

    let single = std::mem::take(&mut *single.lock().expect("report lock"));
    let multi = std::mem::take(&mut *multi.lock().expect("report lock"));
    eprintln!(
        "migration: {batches} batches; single-key client {} iterations ({} while migrating), \
         multi-key client {} ({} while migrating); ASK from `from` +{}, MOVED from `from` +{} \
         (1 of them ours), ASKING on `to` +{}, TRYAGAIN +{}",
        single.iterations,
        during.0,
        multi.iterations,
        during.1,
        error_count(from, "ASK") - ask_before,
        error_count(from, "MOVED") - moved_before,
        asking() - asking_before,
        tryagain() - tryagain_before,
    );

    let mut problems = Vec::new();
    for (who, report) in [("single-key client", &single), ("multi-key client", &multi)] {
        for (kind, (count, samples)) in &report.errors {
            problems.push(format!(
                "{who}: {count} error(s) reached the client on {kind}, e.g. {samples:?}"
            ));
        }
        for m in &report.mismatches {
            problems.push(format!("{who}: wrong result: {m}"));
        }
    }
    if during.0 < 50 || during.1 < 10 {
        problems.push(format!(
            "too few iterations while the slot was migrating: {} single-key, {} multi-key",
            during.0, during.1
        ));
    }

    // Redirections really happened, and keyward followed them.
    if error_count(from, "ASK") <= ask_before {
        problems.push("`from` never answered ASK".into());
    }
    if asking() <= asking_before {
        problems.push("keyward never sent ASKING to `to`".into());
    }
    // One MOVED is the probe above; keyward's own requests must have produced more.
    if error_count(from, "MOVED") < moved_before + 2 {
        problems.push("keyward never got a MOVED from `from`".into());
    }

    // Ground truth: everything is on `to`, as the clients wrote it.
    if count_in_slot(from) != 0 {
        problems.push(format!("{} keys left on `from`", count_in_slot(from)));
    }
    let truth = Truth::new(&cluster);
    assert_eq!(truth.owner_of_slot(slot), to);
    let mut wrong = 0;
    for (key, want) in single.model.iter().chain(multi.model.iter()) {
        let got = truth.get(key);
        if &got != want {
            wrong += 1;
            if wrong <= 5 {
                problems.push(format!(
                    "on the node {key} = {got:?}, the client expects {want:?}"
                ));
            }
        }
    }
    for i in 0..PRELOADED as u64 {
        let (key, value) = preloaded(i);
        if truth.get(&key) != Some(value) {
            problems.push(format!("{key} lost its value"));
        }
    }
    kw.assert_running();
    assert!(
        problems.is_empty(),
        "during the live migration of slot {slot} ({from} -> {to}):\n- {}",
        problems.join("\n- ")
    );
}

// ---------------------------------------------------------------------------------------------
// 10: failover
// ---------------------------------------------------------------------------------------------

/// SET then GET `key` through keyward (new connection each try) until both succeed or
/// `timeout` passes. Returns when it succeeded and the errors seen before.
fn poll_set_get(
    addr: &str,
    key: &str,
    value: &str,
    timeout: Duration,
) -> (Option<Instant>, Vec<String>) {
    let deadline = Instant::now() + timeout;
    let mut errors = Vec::new();
    while Instant::now() < deadline {
        let mut conn = redis_conn(addr);
        let set = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query::<String>(&mut conn);
        match set {
            Ok(_) => match redis::cmd("GET")
                .arg(key)
                .query::<Option<String>>(&mut conn)
            {
                Ok(Some(v)) if v == value => return (Some(Instant::now()), errors),
                Ok(other) => errors.push(format!("GET {key}: {other:?}")),
                Err(e) => errors.push(format!("GET {key}: {e}")),
            },
            Err(e) => errors.push(format!("SET {key}: {e}")),
        }
        thread::sleep(Duration::from_millis(100));
    }
    (None, errors)
}

#[test]
fn failover_is_followed_without_restart() {
    let (mut cluster, mut kw) = start_cluster_and_keyward();
    let addr = kw.addr();

    // Keys on every primary, written through keyward and replicated.
    let (by_node, primary_a) = {
        let truth = Truth::new(&cluster);
        let by_node = keys_on_every_primary(&truth, "fo:", 3);
        for keys in by_node.values() {
            set_through(&kw, keys, |k| format!("before {k}"));
        }
        for (port, keys) in &by_node {
            cluster.sync_replica(*port, &keys[0]);
        }
        (by_node, truth.primaries()[0])
    };
    let all_keys: Vec<String> = by_node.values().flatten().cloned().collect();

    // Part 1: a graceful CLUSTER FAILOVER on A's replica. A becomes a replica and answers MOVED.
    let replica_a = cluster.replicas_of(primary_a)[0];
    cluster.failover(replica_a);
    let moved_before = error_count(primary_a, "MOVED");
    let started = Instant::now();
    let key_a = &by_node[&primary_a][0];
    let (ok, errors) = poll_set_get(&addr, key_a, "after graceful failover", T);
    let ok = ok.unwrap_or_else(|| {
        panic!("keyward never served {key_a} after CLUSTER FAILOVER; errors: {errors:?}")
    });
    assert!(
        ok - started < Duration::from_secs(3),
        "keyward took {:?} after a graceful failover; errors: {errors:?}",
        ok - started
    );
    assert!(
        errors.is_empty(),
        "a graceful failover showed errors: {errors:?}"
    );
    let truth = Truth::new(&cluster);
    assert_eq!(truth.owner(key_a), replica_a);
    assert_eq!(truth.get(key_a).as_deref(), Some("after graceful failover"));
    for key in &by_node[&primary_a][1..] {
        let got: Option<String> = redis::cmd("GET")
            .arg(key)
            .query(&mut kw.conn())
            .expect("GET through keyward");
        assert_eq!(got, Some(format!("before {key}")));
    }
    eprintln!(
        "graceful failover: served after {:?}, MOVED from the old primary +{}",
        ok - started,
        error_count(primary_a, "MOVED") - moved_before
    );

    // Part 2: kill another primary B; its replica is elected.
    let primary_b = truth
        .primaries()
        .into_iter()
        .find(|&p| p != replica_a)
        .expect("another primary");
    let replica_b = cluster.replicas_of(primary_b)[0];
    let keys_b = by_node[&primary_b].clone();
    drop(truth);
    let promoted: Arc<Mutex<Option<Instant>>> = Arc::default();
    let watcher = {
        let promoted = promoted.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(40);
            while Instant::now() < deadline {
                let role: Result<Vec<redis::Value>, _> =
                    redis::cmd("ROLE").query(&mut node(replica_b));
                if let Ok(role) = role
                    && matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master")
                {
                    *promoted.lock().expect("lock") = Some(Instant::now());
                    return;
                }
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let killed_at = Instant::now();
    cluster.kill_node(primary_b);

    // A delete over every primary while B is down: either it waits for the new primary, or it
    // says exactly what was removed.
    let doomed: Vec<String> = by_node.values().map(|keys| keys[2].clone()).collect();
    let mut c = kw.raw_conn();
    let delete_reply = request_owned(&mut c, &with_name("REMOVEKEYS", &doomed));
    let partial = match &delete_reply {
        Reply::Int(3) => false,
        Reply::Error(text) if text.starts_with("ERR keyward: partial delete: removed 2 keys;") => {
            true
        }
        other => panic!("REMOVEKEYS during the failover: {other:?}"),
    };

    let (ok, errors) = poll_set_get(&addr, &keys_b[0], "after kill", Duration::from_secs(30));
    watcher.join().expect("watcher");
    let promoted_at = promoted
        .lock()
        .expect("lock")
        .unwrap_or_else(|| panic!("{replica_b} was never promoted"));
    let ok = ok.unwrap_or_else(|| {
        panic!(
            "keyward never served {} again after killing {primary_b}; errors: {errors:?}; log:\n{}",
            keys_b[0],
            kw.log()
        )
    });
    let after_promotion = ok.saturating_duration_since(promoted_at);
    eprintln!(
        "kill: replica promoted after {:?}, keyward served after {:?} ({after_promotion:?} after \
         the promotion); {} errors while polling: {:?}; REMOVEKEYS during failover: {delete_reply:?}",
        promoted_at - killed_at,
        ok - killed_at,
        errors.len(),
        errors.iter().take(3).collect::<Vec<_>>()
    );
    assert!(
        after_promotion <= Duration::from_secs(10),
        "keyward served again only {after_promotion:?} after the promotion"
    );

    cluster.wait_stable(cluster::CLUSTER_CHANGE_TIMEOUT);
    kw.assert_running();
    let truth = Truth::new(&cluster);
    assert_eq!(truth.primaries().len(), 3);
    assert!(truth.primaries().contains(&replica_b));
    // Whatever REMOVEKEYS said is what happened.
    for key in &doomed {
        let expect_present = partial && keys_b.contains(key);
        assert_eq!(
            truth.exists(key),
            expect_present,
            "{key} after REMOVEKEYS answered {delete_reply:?}"
        );
    }
    // Every primary serves reads and writes through keyward again.
    let mut conn = kw.conn();
    for key in &all_keys {
        if doomed.contains(key) || key == key_a || key == &keys_b[0] {
            continue;
        }
        let got: Option<String> = redis::cmd("GET")
            .arg(key)
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("GET {key} after the failover: {e}"));
        assert_eq!(got, Some(format!("before {key}")), "{key}");
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("after")
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("SET {key} after the failover: {e}"));
        assert_eq!(truth.get(key).as_deref(), Some("after"));
    }
    let dbsize: i64 = redis::cmd("DBSIZE").query(&mut conn).expect("DBSIZE");
    assert_eq!(dbsize, truth.dbsize());

    // Part 3: a primary C and its replica both die, so C's slots stay without owner; the other
    // primaries go on serving theirs (cluster-require-full-coverage no). A delete over every
    // primary must say exactly what it removed.
    let primaries_now = truth.primaries();
    let primary_c = *primaries_now
        .iter()
        .find(|&&p| p != replica_a && p != replica_b)
        .expect("a third primary");
    let survivors = [replica_a, replica_b];
    for port in cluster.alive_ports() {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("cluster-require-full-coverage")
            .arg("no")
            .query(&mut node(port))
            .expect("CONFIG SET cluster-require-full-coverage no");
    }
    // One key on each current primary, still holding "after".
    let pick = |owner: u16| -> String {
        all_keys
            .iter()
            .find(|&k| {
                truth.owner(k) == owner && !doomed.contains(k) && k != key_a && k != &keys_b[0]
            })
            .cloned()
            .expect("a key on that primary")
    };
    let victims: Vec<String> = vec![pick(replica_a), pick(primary_c), pick(replica_b)];
    drop(truth);
    let replica_c = cluster.replicas_of(primary_c)[0];
    cluster.kill_node(replica_c);
    cluster.kill_node(primary_c);
    let started = Instant::now();
    let reply = request_owned(&mut c, &with_name("REMOVEKEYS", &victims));
    let text = error_of(&reply);
    assert!(
        text.starts_with("ERR keyward: partial delete: removed 2 keys; 1 of 3 keys"),
        "REMOVEKEYS with one of three primaries gone: {text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the partial delete took {:?}",
        started.elapsed()
    );
    for (key, port) in [(&victims[0], survivors[0]), (&victims[2], survivors[1])] {
        let n: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query(&mut node(port))
            .expect("EXISTS on a surviving primary");
        assert_eq!(
            n, 0,
            "{key} is still on {port} although REMOVEKEYS counted it"
        );
    }
    let audit = kw.wait_log_line(T, |l| {
        l.contains("keyward::audit")
            && l.contains("command=REMOVEKEYS")
            && l.contains("partial delete: removed 2 keys")
    });
    assert!(audit.is_some(), "no audit line for the partial delete");
    // The surviving primaries still serve through keyward.
    for (i, port) in survivors.iter().enumerate() {
        let key = &victims[2 * i];
        let mut conn = kw.conn();
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("still served")
            .query(&mut conn)
            .unwrap_or_else(|e| panic!("SET {key} on surviving primary {port}: {e}"));
        let got: Option<String> = redis::cmd("GET")
            .arg(key)
            .query(&mut node(*port))
            .expect("GET on a surviving primary");
        assert_eq!(got.as_deref(), Some("still served"));
    }
    kw.assert_running();
}
