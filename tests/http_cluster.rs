//! The HTTP API and hooks in front of a real Redis Cluster (3 primaries): 1000 keys over many
//! slots removed in one request (and 1001 refused with nothing deleted), get and set across
//! slots, and a hook triggered over HTTP, by RUNHOOK and by a write. Every check reads the
//! owning primary directly. One cluster for the whole file: starting one is slow.

#[path = "support/http.rs"]
mod http;
mod support;

use std::collections::{BTreeMap, BTreeSet};

use http::*;
use serde_json::json;
use support::cluster::RedisCluster;
use support::in_process::InProcess;
use support::*;

const HOOKS: &str = "[[hooks]]\nname = \"product-updated\"\n\
     remove = [\"cache:product:{id}\", \"cache:product:{id}:reviews\", \"cache:home\"]\n\
     on_write = [\"product:{id}\"]\n";

/// Where each key lives: slot (CLUSTER KEYSLOT on a node) and the primary serving it.
struct Placement {
    ranges: Vec<(u16, u16, u16)>,
}

impl Placement {
    fn new(cluster: &RedisCluster) -> Self {
        Placement {
            ranges: cluster.slot_ranges(),
        }
    }

    fn owner(&self, slot: u16) -> u16 {
        self.ranges
            .iter()
            .find(|(a, b, _)| (*a..=*b).contains(&slot))
            .map(|(_, _, p)| *p)
            .unwrap_or_else(|| panic!("no primary serves slot {slot}"))
    }

    /// key -> (slot, owner port), asked of the cluster in one pipeline.
    fn locate(&self, cluster: &RedisCluster, keys: &[String]) -> BTreeMap<String, (u16, u16)> {
        let port = self.ranges[0].2;
        let mut pipe = redis::pipe();
        for k in keys {
            pipe.cmd("CLUSTER").arg("KEYSLOT").arg(k);
        }
        let slots: Vec<u16> = pipe
            .query(&mut cluster.conn(port))
            .expect("CLUSTER KEYSLOT");
        keys.iter()
            .zip(slots)
            .map(|(k, s)| (k.clone(), (s, self.owner(s))))
            .collect()
    }

    /// The values of `keys`, each read on its owning primary (`None`: the key does not exist).
    fn read(&self, cluster: &RedisCluster, keys: &[String]) -> BTreeMap<String, Option<String>> {
        let located = self.locate(cluster, keys);
        let mut by_node: BTreeMap<u16, Vec<&String>> = BTreeMap::new();
        for (k, (_, owner)) in &located {
            by_node.entry(*owner).or_default().push(k);
        }
        let mut out = BTreeMap::new();
        for (port, keys) in by_node {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.cmd("GET").arg(*k);
            }
            let values: Vec<Option<String>> = pipe
                .query(&mut cluster.conn(port))
                .expect("GET on a primary");
            out.extend(keys.into_iter().cloned().zip(values));
        }
        out
    }

    /// Sets every key to `value` on its owning primary.
    fn write(&self, cluster: &RedisCluster, keys: &[String], value: &str) {
        let located = self.locate(cluster, keys);
        for (k, (_, owner)) in located {
            let () = redis::cmd("SET")
                .arg(&k)
                .arg(value)
                .query(&mut cluster.conn(owner))
                .expect("SET on a primary");
        }
    }

    /// The keys of `keys` that exist, read on their owners.
    fn existing(&self, cluster: &RedisCluster, keys: &[String]) -> Vec<String> {
        self.read(cluster, keys)
            .into_iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k)
            .collect()
    }
}

fn product_keys(id: &str) -> Vec<String> {
    vec![
        format!("cache:product:{id}"),
        format!("cache:product:{id}:reviews"),
        "cache:home".to_string(),
    ]
}

#[test]
fn in_front_of_a_cluster_the_api_and_hooks_reach_every_slot() {
    let cluster = RedisCluster::start(3, 0);
    let (http, port) = http_section("");
    let keyward = InProcess::cluster(&cluster.seeds(), &format!("{http}{HOOKS}"));
    let api = HttpApi::new(port);
    let place = Placement::new(&cluster);

    // Set 1000 keys in one request; each is on its owner.
    let keys: Vec<String> = (0..1001).map(|i| format!("ck:{i}")).collect();
    let located = place.locate(&cluster, &keys);
    let owners: BTreeSet<u16> = located.values().map(|(_, o)| *o).collect();
    let slots: BTreeSet<u16> = located.values().map(|(s, _)| *s).collect();
    assert_eq!(owners.len(), 3, "the keys are spread over every primary");
    assert!(slots.len() > 900, "{} slots", slots.len());
    let entries: Vec<_> = keys[..1000]
        .iter()
        .map(|k| json!({"key": k, "value": format!("v-{k}")}))
        .collect();
    assert_eq!(api.set(json!({ "entries": entries })).ok()["set"], 1000);
    let values = place.read(&cluster, &keys[..1000]);
    for (k, v) in &values {
        assert_eq!(v.as_deref(), Some(format!("v-{k}").as_str()), "{k}");
    }
    place.write(&cluster, &keys[1000..], "v-ck:1000");

    // Get across slots (and nodes), with a missing key.
    let some: Vec<&String> = owners
        .iter()
        .map(|o| {
            located
                .iter()
                .find(|(_, (_, owner))| owner == o)
                .map(|(k, _)| k)
                .expect("a key on every primary")
        })
        .collect();
    let reply = api
        .get_keys(json!([some[0], some[1], some[2], "ck:missing"]))
        .ok();
    let mut want = serde_json::Map::new();
    for k in &some {
        want.insert(k.to_string(), json!(format!("v-{k}")));
    }
    want.insert("ck:missing".into(), json!(null));
    assert_eq!(reply["values"], serde_json::Value::Object(want));

    // 1001 keys: refused, nothing deleted anywhere.
    api.remove(json!(keys)).err(422, "max_keys");
    assert_eq!(place.existing(&cluster, &keys).len(), 1001);
    // A wildcard among them: refused, nothing deleted.
    let mut with_wildcard = keys[..10].to_vec();
    with_wildcard.push("ck:*".into());
    let error = api.remove(json!(with_wildcard)).err(422, "wildcard_chars");
    assert_eq!(error["key"], "ck:*");
    assert_eq!(place.existing(&cluster, &keys).len(), 1001);

    // 1000 keys over every slot they are in: all removed, on every primary.
    let reply = api.remove(json!(&keys[..1000])).ok();
    assert_eq!(
        (&reply["requested"], &reply["removed"]),
        (&json!(1000), &json!(1000)),
        "{reply}"
    );
    assert_eq!(
        place.existing(&cluster, &keys),
        ["ck:1000"],
        "every key named is gone, the other one is not"
    );

    // A hook whose keys are in different slots: over HTTP, by RUNHOOK, by a write.
    let cache = product_keys("42");
    let cache_owners: BTreeSet<u16> = place
        .locate(&cluster, &cache)
        .values()
        .map(|(_, o)| *o)
        .collect();
    eprintln!("the hook's keys are on {} primaries", cache_owners.len());
    place.write(&cluster, &cache, "cached");
    let reply = api.hook("product-updated", json!({"id": "42"})).ok();
    assert_eq!(
        (&reply["requested"], &reply["removed"]),
        (&json!(3), &json!(3)),
        "{reply}"
    );
    assert_eq!(place.existing(&cluster, &cache), Vec::<String>::new());

    place.write(&cluster, &cache, "cached");
    let mut c = keyward.raw_conn();
    assert_eq!(
        c.request(&["RUNHOOK", "product-updated", "id", "42"]),
        Reply::Int(3)
    );
    assert_eq!(place.existing(&cluster, &cache), Vec::<String>::new());

    place.write(&cluster, &cache, "cached");
    assert_eq!(c.request(&["SET", "product:42", "x"]), Reply::ok());
    assert_eq!(
        place.existing(&cluster, &cache),
        Vec::<String>::new(),
        "right after the SET's reply"
    );
    assert_eq!(
        place.read(&cluster, &["product:42".to_string()])["product:42"].as_deref(),
        Some("x")
    );
    place.write(&cluster, &cache, "cached");
    assert_eq!(c.request(&["SET", "other:42", "x"]), Reply::ok());
    assert_eq!(place.existing(&cluster, &cache).len(), 3);
}
