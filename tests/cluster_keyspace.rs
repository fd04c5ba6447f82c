//! Keyspace notifications through keyward in front of a real Redis Cluster (3 primaries, one
//! replica each): a client that subscribes to keyspace or keyevent channels or patterns hears
//! the events of the keys of every primary, merged into its one stream, as from one Redis.
//!
//! `notify-keyspace-events` is set on every node directly (keyward does not fan `CONFIG SET`
//! out here). Keys are picked per primary with `CLUSTER KEYSLOT` on the nodes, and written
//! through keyward. Every read has a deadline; "no more events" is checked by waiting
//! [`QUIET`] for a frame that must not come.
//!
//! One cluster serves the checks that leave the topology alone ([`Checks`]); the failover and
//! the killed node get a cluster of their own.

mod support;

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use support::checks::Checks;
use support::cluster::{self, RedisCluster};
use support::*;

/// How long the events of a burst of writes may take to arrive.
const EVENTS: Duration = Duration::from_secs(5);
/// How long a subscriber must stay silent to count as hearing nothing more.
const QUIET: Duration = Duration::from_millis(700);
/// How long keyward may take to notice a topology change (its slot map is read every 5 s, and
/// the merge compares it with its connections every second).
const NOTICE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn bulk(s: &str) -> Reply {
    Reply::bulk(s)
}

fn arr(items: Vec<Reply>) -> Reply {
    Reply::Array(items)
}

fn push(items: Vec<Reply>) -> Reply {
    Reply::Push(items)
}

/// A 3-primary cluster with one replica each, every node publishing every keyspace and
/// keyevent notification, and keyward in front of it.
fn start() -> (RedisCluster, Keyward) {
    let cluster = RedisCluster::start(3, 1);
    for port in cluster.alive_ports() {
        notify_everything(port);
    }
    let kw = Keyward::start_cluster(&cluster.seeds(), "");
    (cluster, kw)
}

fn notify_everything(port: u16) {
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("KEA")
        .query(&mut redis_conn(&format!("127.0.0.1:{port}")))
        .expect("CONFIG SET notify-keyspace-events on a node");
}

/// The primaries, by port, as the cluster says now.
fn primaries(cluster: &RedisCluster) -> Vec<u16> {
    cluster.primaries().into_iter().map(|(_, p)| p).collect()
}

/// The primary keyward moves a pub/sub client to: the first of the primaries' addresses in
/// order.
fn home(cluster: &RedisCluster) -> u16 {
    let mut addrs = cluster.primaries();
    addrs.sort();
    addrs[0].1
}

/// `per_primary` keys `prefix<port>:<i>` on each primary.
fn keys_everywhere(cluster: &RedisCluster, prefix: &str, per_primary: usize) -> Vec<String> {
    primaries(cluster)
        .into_iter()
        .flat_map(|port| cluster.keys_on(port, &format!("{prefix}{port}:"), per_primary))
        .collect()
}

/// Sets every key through keyward.
fn set_all(writer: &mut RawConn, keys: &[String], value: &str) {
    for key in keys {
        assert_eq!(
            writer.request(&["SET", key, value]),
            Reply::ok(),
            "SET {key}"
        );
    }
}

/// Reads `n` frames, the whole burst within [`EVENTS`].
fn read_events(sub: &mut RawConn, n: usize) -> Vec<Reply> {
    sub.read_n_replies(n, EVENTS)
}

fn assert_quiet(sub: &mut RawConn, what: &str) {
    if let Some(extra) = sub.try_read_reply(QUIET) {
        panic!("{what}: an unexpected frame arrived: {extra:?}");
    }
}

/// The elements of an array or push frame as strings.
fn texts(frame: &Reply) -> Vec<String> {
    let items = match frame {
        Reply::Array(items) | Reply::Push(items) => items,
        other => panic!("expected a pub/sub frame, got {other:?}"),
    };
    items
        .iter()
        .map(|item| match item {
            Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
            Reply::Int(n) => n.to_string(),
            other => panic!("unexpected element {other:?} in {frame:?}"),
        })
        .collect()
}

/// The sum of `PUBSUB NUMPAT` over `ports`, asked of each node directly.
fn numpat(ports: &[u16]) -> Vec<i64> {
    ports
        .iter()
        .map(|&port| {
            redis::cmd("PUBSUB")
                .arg("NUMPAT")
                .query(&mut redis_conn(&format!("127.0.0.1:{port}")))
                .expect("PUBSUB NUMPAT")
        })
        .collect()
}

/// Subscribes a new connection to `__keyspace@0__:*` and checks that the events of keys on
/// every primary reach it, each once.
fn subscribe_and_hear_every_primary(kw: &Keyward, cluster: &RedisCluster, prefix: &str) -> RawConn {
    let mut sub = kw.raw_conn();
    let pattern = "__keyspace@0__:*";
    assert_eq!(
        sub.request(&["PSUBSCRIBE", pattern]),
        arr(vec![bulk("psubscribe"), bulk(pattern), Reply::Int(1)])
    );
    let keys = keys_everywhere(cluster, prefix, 2);
    set_all(&mut kw.raw_conn(), &keys, "v");
    let heard: BTreeSet<String> = read_events(&mut sub, keys.len())
        .iter()
        .map(|frame| {
            let t = texts(frame);
            assert_eq!(
                (t[0].as_str(), t[1].as_str(), t[3].as_str()),
                ("pmessage", pattern, "set")
            );
            t[2].clone()
        })
        .collect();
    let expected: BTreeSet<String> = keys.iter().map(|k| format!("__keyspace@0__:{k}")).collect();
    assert_eq!(
        heard, expected,
        "the events of every primary's keys, once each"
    );
    assert_quiet(&mut sub, "after one event per key");
    sub
}

// ---------------------------------------------------------------------------------------------
// the merge, on a stable cluster
// ---------------------------------------------------------------------------------------------

#[test]
fn keyspace_notifications_of_every_primary_reach_one_subscriber() {
    let (cluster, mut kw) = start();
    let mut checks = Checks::new("keyspace_notifications_of_every_primary_reach_one_subscriber");
    let all_primaries = primaries(&cluster);

    checks.run("psubscribe_keyspace_pattern_resp2", || {
        let pattern = "__keyspace@0__:*";
        let mut sub = kw.raw_conn();
        assert_eq!(
            sub.request(&["PSUBSCRIBE", pattern]),
            arr(vec![bulk("psubscribe"), bulk(pattern), Reply::Int(1)])
        );
        // Exactly one confirmation: the next frame answers PING (RESP2, subscribed mode).
        assert_eq!(sub.request(&["PING"]), arr(vec![bulk("pong"), bulk("")]));
        // Every primary holds the pattern: the client's own node and one extra connection each.
        assert_eq!(numpat(&all_primaries), vec![1; all_primaries.len()]);

        let keys = keys_everywhere(&cluster, "ks:", 2);
        let mut writer = kw.raw_conn();
        set_all(&mut writer, &keys, "v1");
        let mut heard = BTreeSet::new();
        for frame in read_events(&mut sub, keys.len()) {
            let t = texts(&frame);
            assert_eq!(t.len(), 4, "{frame:?}");
            assert_eq!((t[0].as_str(), t[1].as_str()), ("pmessage", pattern));
            assert_eq!(t[3], "set", "{frame:?}");
            heard.insert(t[2].clone());
        }
        let expected: BTreeSet<String> =
            keys.iter().map(|k| format!("__keyspace@0__:{k}")).collect();
        assert_eq!(heard, expected, "events of the keys of every primary");
        assert_quiet(&mut sub, "one event per SET");

        // Unsubscribing stops the events of every node.
        assert_eq!(
            sub.request(&["PUNSUBSCRIBE", pattern]),
            arr(vec![bulk("punsubscribe"), bulk(pattern), Reply::Int(0)])
        );
        set_all(&mut writer, &keys, "v2");
        assert_quiet(&mut sub, "after PUNSUBSCRIBE");
        // The connection goes on as an ordinary one.
        assert_eq!(sub.request(&["PING"]), Reply::simple("PONG"));
        assert_eq!(sub.request(&["ECHO", "still here"]), bulk("still here"));
        // And the extra connections are gone from the other primaries.
        assert!(
            wait_until(Duration::from_secs(5), || numpat(&all_primaries)
                .iter()
                .all(|&n| n == 0)),
            "patterns left on the nodes: {:?}",
            numpat(&all_primaries)
        );
    });

    checks.run("subscribe_keyevent_channel_and_an_ordinary_one", || {
        let channel = "__keyevent@0__:set";
        let mut sub = kw.raw_conn();
        sub.cmd(&["SUBSCRIBE", channel, "news"]);
        assert_eq!(
            sub.read_n_replies(2, T),
            vec![
                arr(vec![bulk("subscribe"), bulk(channel), Reply::Int(1)]),
                arr(vec![bulk("subscribe"), bulk("news"), Reply::Int(2)]),
            ]
        );
        let keys = keys_everywhere(&cluster, "kev:", 2);
        let mut writer = kw.raw_conn();
        set_all(&mut writer, &keys, "v");
        let heard: BTreeSet<String> = read_events(&mut sub, keys.len())
            .iter()
            .map(|frame| {
                let t = texts(frame);
                assert_eq!(
                    (t[0].as_str(), t[1].as_str()),
                    ("message", channel),
                    "{frame:?}"
                );
                t[2].clone()
            })
            .collect();
        assert_eq!(heard, keys.iter().cloned().collect::<BTreeSet<_>>());
        assert_quiet(&mut sub, "one event per SET");

        // An ordinary channel: one message per PUBLISH, not one per primary.
        let _receivers = writer.request(&["PUBLISH", "news", "hello"]);
        assert_eq!(
            sub.read_reply(EVENTS),
            arr(vec![bulk("message"), bulk("news"), bulk("hello")])
        );
        assert_quiet(&mut sub, "one message per PUBLISH");

        // UNSUBSCRIBE without arguments: one confirmation per channel, counting down.
        sub.cmd(&["UNSUBSCRIBE"]);
        let replies = sub.read_n_replies(2, T);
        let mut channels = BTreeSet::new();
        let mut counts = Vec::new();
        for r in &replies {
            let t = texts(r);
            assert_eq!(t[0], "unsubscribe", "{r:?}");
            channels.insert(t[1].clone());
            counts.push(t[2].clone());
        }
        assert_eq!(
            channels,
            BTreeSet::from([channel.to_string(), "news".to_string()])
        );
        assert_eq!(counts, vec!["1", "0"]);
        set_all(&mut writer, &keys, "again");
        assert_quiet(&mut sub, "after UNSUBSCRIBE");
        assert_eq!(sub.request(&["PING"]), Reply::simple("PONG"));
    });

    checks.run("resp3_pushes_between_replies", || {
        let pattern = "__key*__:*";
        let mut sub = kw.raw_conn();
        assert!(
            matches!(sub.request(&["HELLO", "3"]), Reply::Map(_)),
            "HELLO 3 answers a map"
        );
        assert_eq!(
            sub.request(&["PSUBSCRIBE", pattern]),
            push(vec![bulk("psubscribe"), bulk(pattern), Reply::Int(1)])
        );
        // Both kinds of event for every key, as pushes.
        let keys = keys_everywhere(&cluster, "r3:", 2);
        let mut writer = kw.raw_conn();
        set_all(&mut writer, &keys, "v");
        let mut heard = BTreeSet::new();
        for frame in read_events(&mut sub, 2 * keys.len()) {
            assert!(frame.is_push(), "a RESP3 client gets pushes: {frame:?}");
            let t = texts(&frame);
            assert_eq!((t[0].as_str(), t[1].as_str()), ("pmessage", pattern));
            heard.insert((t[2].clone(), t[3].clone()));
        }
        let mut expected = BTreeSet::new();
        for k in &keys {
            expected.insert((format!("__keyspace@0__:{k}"), "set".to_string()));
            expected.insert(("__keyevent@0__:set".to_string(), k.clone()));
        }
        assert_eq!(heard, expected);
        assert_quiet(&mut sub, "two events per SET");

        // Requests keep their replies whole and in order while events of every primary pour
        // in: a push is written between frames, never inside one.
        let burst_keys = keys_everywhere(&cluster, "burst:", 5);
        let rounds = 20;
        let writer_addr = kw.addr();
        let writer_keys = burst_keys.clone();
        let burst = thread::spawn(move || {
            let mut w = RawConn::connect(&writer_addr);
            for round in 0..rounds {
                set_all(&mut w, &writer_keys, &format!("r{round}"));
            }
        });
        let payload = "x".repeat(3000);
        let mut pushes = 0;
        for i in 0..60 {
            let text = format!("{i}:{payload}");
            sub.cmd(&["ECHO", &text]);
            loop {
                let frame = sub.read_reply(T);
                if frame.is_push() {
                    pushes += 1;
                    continue;
                }
                assert_eq!(frame, bulk(&text), "ECHO {i} answered in order");
                break;
            }
        }
        burst.join().expect("the writer thread");
        let expected_pushes = 2 * burst_keys.len() * rounds;
        assert!(
            pushes <= expected_pushes,
            "{pushes} pushes, at most {expected_pushes}"
        );
        let rest = read_events(&mut sub, expected_pushes - pushes);
        assert!(rest.iter().all(Reply::is_push), "{rest:?}");
        assert_quiet(&mut sub, "two events per SET of the burst");

        assert_eq!(
            sub.request(&["PUNSUBSCRIBE", pattern]),
            push(vec![bulk("punsubscribe"), bulk(pattern), Reply::Int(0)])
        );
        set_all(&mut writer, &keys, "after");
        assert_quiet(&mut sub, "after PUNSUBSCRIBE");
        assert_eq!(sub.request(&["PING"]), Reply::simple("PONG"));
    });

    checks.run("ordinary_pubsub_is_not_merged", || {
        // A pattern that cannot match a notification channel stays on one node.
        let mut psub = kw.raw_conn();
        assert_eq!(
            psub.request(&["PSUBSCRIBE", "ne*"]),
            arr(vec![bulk("psubscribe"), bulk("ne*"), Reply::Int(1)])
        );
        // (The extra connections of the checks before close as they unsubscribe.)
        assert!(
            wait_until(Duration::from_secs(5), || numpat(&cluster.alive_ports())
                .iter()
                .sum::<i64>()
                == 1),
            "an ordinary pattern is subscribed on one node: {:?}",
            numpat(&cluster.alive_ports())
        );
        let mut writer = kw.raw_conn();
        let _ = writer.request(&["PUBLISH", "news", "one"]);
        assert_eq!(
            psub.read_reply(EVENTS),
            arr(vec![
                bulk("pmessage"),
                bulk("ne*"),
                bulk("news"),
                bulk("one")
            ])
        );
        assert_quiet(&mut psub, "one message per PUBLISH");
        assert_eq!(
            psub.request(&["PUNSUBSCRIBE", "ne*"]),
            arr(vec![bulk("punsubscribe"), bulk("ne*"), Reply::Int(0)])
        );

        // `*` matches notification channels too: it is merged, yet a PUBLISH (which reaches
        // every node of a cluster) arrives once, and only the home node's copy.
        let mut star = kw.raw_conn();
        assert_eq!(
            star.request(&["PSUBSCRIBE", "*"]),
            arr(vec![bulk("psubscribe"), bulk("*"), Reply::Int(1)])
        );
        assert_eq!(numpat(&all_primaries), vec![1; all_primaries.len()]);
        let _ = writer.request(&["PUBLISH", "news", "two"]);
        assert_eq!(
            star.read_reply(EVENTS),
            arr(vec![bulk("pmessage"), bulk("*"), bulk("news"), bulk("two")])
        );
        assert_quiet(&mut star, "one message per PUBLISH under *");
        // A key on a primary other than the home node: its two events.
        let away = all_primaries
            .iter()
            .copied()
            .find(|&p| p != home(&cluster))
            .expect("a second primary");
        let key = &cluster.keys_on(away, "star:", 1)[0];
        assert_eq!(writer.request(&["SET", key, "v"]), Reply::ok());
        let heard: BTreeSet<(String, String)> = read_events(&mut star, 2)
            .iter()
            .map(|f| {
                let t = texts(f);
                (t[2].clone(), t[3].clone())
            })
            .collect();
        assert_eq!(
            heard,
            BTreeSet::from([
                (format!("__keyspace@0__:{key}"), "set".to_string()),
                ("__keyevent@0__:set".to_string(), key.clone()),
            ])
        );
        assert_quiet(&mut star, "two events for one SET under *");
    });

    kw.assert_running();
    checks.finish();
}

// ---------------------------------------------------------------------------------------------
// topology changes
// ---------------------------------------------------------------------------------------------

/// A node whose events are merged stops being a primary (a manual failover), or dies: the
/// keyspace subscriber's connection is closed (events may have been missed), while an
/// ordinary subscriber goes on; a client that subscribes again hears every primary of the new
/// topology.
#[test]
fn keyspace_subscriber_is_closed_when_a_merged_node_goes_away() {
    let (mut cluster, mut kw) = start();
    let mut checks = Checks::new("keyspace_subscriber_is_closed_when_a_merged_node_goes_away");

    checks.run("manual_failover_of_another_primary", || {
        let mut sub = subscribe_and_hear_every_primary(&kw, &cluster, "fo:");
        let mut ordinary = kw.raw_conn();
        assert_eq!(
            ordinary.request(&["SUBSCRIBE", "news"]),
            arr(vec![bulk("subscribe"), bulk("news"), Reply::Int(1)])
        );
        let home = home(&cluster);
        let victim = primaries(&cluster)
            .into_iter()
            .find(|&p| p != home)
            .expect("a second primary");
        let replica = cluster.replicas_of(victim)[0];
        cluster.failover(replica);
        let started = Instant::now();
        let (rest, closed) = sub.read_to_close(NOTICE);
        assert!(
            closed,
            "the keyspace subscriber was not closed within {NOTICE:?}"
        );
        assert!(rest.is_empty(), "nothing but the close: {rest:?}");
        eprintln!("closed {:?} after the failover", started.elapsed());
        // An ordinary subscription does not depend on the other primaries.
        assert_eq!(
            ordinary.request(&["PING"]),
            arr(vec![bulk("pong"), bulk("")])
        );
        // Subscribing again: the new primary is heard too.
        let _sub = subscribe_and_hear_every_primary(&kw, &cluster, "fo2:");
    });

    checks.run("killed_primary", || {
        let mut sub = subscribe_and_hear_every_primary(&kw, &cluster, "kill:");
        let home = home(&cluster);
        let victim = primaries(&cluster)
            .into_iter()
            .find(|&p| p != home)
            .expect("a second primary");
        cluster.kill_node(victim);
        let (rest, closed) = sub.read_to_close(Duration::from_secs(5));
        assert!(
            closed,
            "the keyspace subscriber was not closed when node {victim} died"
        );
        assert!(rest.is_empty(), "nothing but the close: {rest:?}");

        // Once a replica has taken over (and keyward has seen it), subscribing again works.
        cluster.wait_stable(cluster::CLUSTER_CHANGE_TIMEOUT);
        let deadline = Instant::now() + NOTICE;
        loop {
            let mut probe = kw.raw_conn();
            let reply = probe.request(&["PSUBSCRIBE", "__keyspace@0__:*"]);
            if !reply.is_error() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "subscribing still fails {NOTICE:?} after the failover: {reply:?}"
            );
            thread::sleep(Duration::from_millis(500));
        }
        let _sub = subscribe_and_hear_every_primary(&kw, &cluster, "kill2:");
    });

    kw.assert_running();
    checks.finish();
}

const T: Duration = IO_TIMEOUT;
