//! The parsers of `CLUSTER SHARDS` (Redis 7 and later) and `CLUSTER SLOTS` (older servers)
//! replies into a [`SlotMap`].
//!
//! Both replies name a node by its *preferred endpoint* (`cluster-preferred-endpoint-type`: an
//! IP, a hostname, or deliberately unknown). When the endpoint is unknown Redis says so with a
//! null, `?` or an empty string, and its documentation tells clients to use the host they sent the
//! command to, with the port from the reply. That is why the parsers take the seed address.
//!
//! A reply is untrusted input in the sense that a corrupt or hostile node must not make keyward
//! dial nonsense: every endpoint and port is checked before it becomes a [`NodeAddr`], and any
//! shape the parsers do not expect is a [`TopologyError::Malformed`] that says where it was.

use redis_protocol::resp2::types::OwnedFrame;

use super::error::{TopologyError, malformed};
use super::frame::{Describe, array, field, int, pairs, text};
use super::node_addr::{NodeAddr, split_host_port};
use super::slot_map::SlotMap;

impl SlotMap {
    /// Builds the map from a `CLUSTER SHARDS` reply (Redis 7+) as RESP2 sends it: each map a
    /// flat array of key/value pairs. `seed` is the `host:port` the command was sent to: its
    /// host stands in for an unknown endpoint.
    ///
    /// Only nodes with `role` `master` and `health` `online` serve slots: the slots of a shard
    /// whose primary is failed or still loading are left without an owner. Replicas must be
    /// `online` too.
    pub fn from_cluster_shards(reply: &OwnedFrame, seed: &str) -> Result<SlotMap, TopologyError> {
        Self::from_cluster_shards_on(reply, seed, Transport::Tcp)
    }

    /// [`from_cluster_shards`](Self::from_cluster_shards) for a client that connects with
    /// `transport`. A node lists its plain `port` and its `tls-port` separately (Redis leaves out
    /// the one it does not listen on, and lists `tls-port` only with `tls-cluster yes`). A plain
    /// client takes `port`, or `tls-port` when that is all there is; a TLS client takes
    /// `tls-port`, and a node without one is an error.
    pub fn from_cluster_shards_on(
        reply: &OwnedFrame,
        seed: &str,
        transport: Transport,
    ) -> Result<SlotMap, TopologyError> {
        let seed_host = split_host_port(seed).0;
        let shards = array(reply).ok_or_else(|| {
            malformed(format!(
                "CLUSTER SHARDS: expected an array, got {}",
                Describe(reply)
            ))
        })?;
        let mut map = SlotMap::empty();
        for (n, shard) in shards.iter().enumerate() {
            let fields = pairs(shard).ok_or_else(|| {
                malformed(format!("CLUSTER SHARDS: shard {n} is {}", Describe(shard)))
            })?;
            let slots = field(&fields, "slots")
                .and_then(array)
                .ok_or_else(|| malformed(format!("CLUSTER SHARDS: shard {n} has no slots list")))?;
            if slots.len() % 2 != 0 {
                return Err(malformed(format!(
                    "CLUSTER SHARDS: shard {n} has an odd number of slot bounds ({})",
                    slots.len()
                )));
            }
            let nodes = field(&fields, "nodes")
                .and_then(array)
                .ok_or_else(|| malformed(format!("CLUSTER SHARDS: shard {n} has no nodes list")))?;

            let mut primary: Option<(NodeAddr, Option<String>)> = None;
            let mut replicas = Vec::new();
            for node in nodes {
                let node = ShardNode::parse(node, seed_host, transport)
                    .map_err(|e| malformed(format!("CLUSTER SHARDS: shard {n}: {e}")))?;
                if node.health != "online" {
                    continue;
                }
                match node.role.as_str() {
                    "master" if primary.is_none() => primary = Some((node.addr, node.id)),
                    "replica" | "slave" => replicas.push(node.addr),
                    _ => {}
                }
            }
            let Some((addr, id)) = primary else {
                continue;
            };
            let idx = map.parsed_shard_index(addr, id)?;
            map.shard_mut(idx).replicas.extend(replicas);
            for bounds in slots.chunks(2) {
                let start = int(&bounds[0]).ok_or_else(|| {
                    malformed(format!(
                        "CLUSTER SHARDS: shard {n}: slot {} is not a number",
                        Describe(&bounds[0])
                    ))
                })?;
                let end = int(&bounds[1]).ok_or_else(|| {
                    malformed(format!(
                        "CLUSTER SHARDS: shard {n}: slot {} is not a number",
                        Describe(&bounds[1])
                    ))
                })?;
                map.assign(start, end, idx)?;
            }
        }
        Ok(map.canonical())
    }

    /// Builds the map from a `CLUSTER SLOTS` reply: one entry per slot range,
    /// `[start, end, [endpoint, port, id, ...], replica...]`. `seed` as for
    /// [`SlotMap::from_cluster_shards`].
    pub fn from_cluster_slots(reply: &OwnedFrame, seed: &str) -> Result<SlotMap, TopologyError> {
        let seed_host = split_host_port(seed).0;
        let ranges = array(reply).ok_or_else(|| {
            malformed(format!(
                "CLUSTER SLOTS: expected an array, got {}",
                Describe(reply)
            ))
        })?;
        let mut map = SlotMap::empty();
        for (n, range) in ranges.iter().enumerate() {
            let items = array(range).ok_or_else(|| {
                malformed(format!("CLUSTER SLOTS: entry {n} is {}", Describe(range)))
            })?;
            if items.len() < 3 {
                return Err(malformed(format!(
                    "CLUSTER SLOTS: entry {n} has {} elements, expected at least 3",
                    items.len()
                )));
            }
            let start = int(&items[0]).ok_or_else(|| {
                malformed(format!(
                    "CLUSTER SLOTS: entry {n}: start {} is not a number",
                    Describe(&items[0])
                ))
            })?;
            let end = int(&items[1]).ok_or_else(|| {
                malformed(format!(
                    "CLUSTER SLOTS: entry {n}: end {} is not a number",
                    Describe(&items[1])
                ))
            })?;
            let (primary, id) = slots_node(&items[2], seed_host)
                .map_err(|e| malformed(format!("CLUSTER SLOTS: entry {n}: primary: {e}")))?;
            let idx = map.parsed_shard_index(primary, id)?;
            for replica in &items[3..] {
                let (addr, _) = slots_node(replica, seed_host)
                    .map_err(|e| malformed(format!("CLUSTER SLOTS: entry {n}: replica: {e}")))?;
                let shard = map.shard_mut(idx);
                if !shard.replicas.contains(&addr) {
                    shard.replicas.push(addr);
                }
            }
            map.assign(start, end, idx)?;
        }
        Ok(map.canonical())
    }
}

/// The endpoint to use for a node: its preferred endpoint, or the seed's host when Redis says the
/// endpoint is unknown (null, `?`, or empty).
///
/// An endpoint that cannot be a host is an error. Redis announces IP addresses and hostnames of
/// letters, digits, `-` and `.` only; anything else (spaces, control characters, brackets,
/// slashes, non-ASCII) means a corrupt reply, and such a string in the map would be dialled,
/// logged and compared with `MOVED` targets as if it were an address.
fn endpoint_or_seed(endpoint: Option<&str>, seed_host: &str) -> Result<String, String> {
    match endpoint {
        Some(e) if !e.is_empty() && e != "?" => {
            if is_host(e) {
                Ok(e.to_string())
            } else {
                Err(format!("endpoint {e:?} is not a host name or IP address"))
            }
        }
        _ => Ok(seed_host.to_string()),
    }
}

/// A host name or an IP address: ASCII letters, digits, `-`, `.`, `_`, and `:` and `%` for IPv6
/// (with a zone), optionally an IPv6 address in brackets.
fn is_host(host: &str) -> bool {
    let (inner, bracketed) = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => (inner, true),
        None => (host, false),
    };
    !inner.is_empty()
        && (!bracketed || inner.contains(':'))
        && inner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'%'))
}

/// A node's port: 1 to 65535. Redis leaves a port out rather than send 0 (`CLUSTER SHARDS` has
/// no `port` for a TLS-only node), and nothing listens on port 0.
fn node_port(port: i64) -> Option<u16> {
    u16::try_from(port).ok().filter(|&p| p != 0)
}

/// How keyward connects to the cluster's nodes, which decides which of a node's ports it uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Tls,
}

/// One node of a `CLUSTER SHARDS` shard.
struct ShardNode {
    addr: NodeAddr,
    id: Option<String>,
    role: String,
    health: String,
}

impl ShardNode {
    fn parse(
        node: &OwnedFrame,
        seed_host: &str,
        transport: Transport,
    ) -> Result<ShardNode, String> {
        let fields = pairs(node).ok_or_else(|| format!("node is {}", Describe(node)))?;
        let string_field = |key: &str| field(&fields, key).and_then(text);
        let port = match transport {
            Transport::Tcp => field(&fields, "port").or_else(|| field(&fields, "tls-port")),
            // No fallback to `port`: a cluster with tls-cluster no lists only its plain ports,
            // where a TLS handshake would hang until the connect timeout.
            Transport::Tls => Some(field(&fields, "tls-port").ok_or(
                "node lists no tls-port: for TLS clients the cluster must run with tls-cluster yes",
            )?),
        }
        .and_then(int)
        .ok_or("node has no port")?;
        let port = node_port(port).ok_or_else(|| format!("node port {port} is out of range"))?;
        // `endpoint` is the preferred way to reach the node; it is `?` (or empty) when unknown.
        // Only a reply without an `endpoint` field at all falls back to `ip`.
        let endpoint = if field(&fields, "endpoint").is_some() {
            string_field("endpoint")
        } else {
            string_field("ip")
        };
        Ok(ShardNode {
            addr: NodeAddr::new(&endpoint_or_seed(endpoint.as_deref(), seed_host)?, port),
            id: string_field("id"),
            role: string_field("role").unwrap_or_default(),
            health: string_field("health").unwrap_or_else(|| "online".to_string()),
        })
    }
}

/// A node of a `CLUSTER SLOTS` entry: `[endpoint, port, id?, metadata?]`.
fn slots_node(node: &OwnedFrame, seed_host: &str) -> Result<(NodeAddr, Option<String>), String> {
    let items = array(node).ok_or_else(|| format!("node is {}", Describe(node)))?;
    if items.len() < 2 {
        return Err(format!(
            "node has {} elements, expected at least 2",
            items.len()
        ));
    }
    let endpoint = match &items[0] {
        OwnedFrame::Null => None,
        other => Some(
            text(other).ok_or_else(|| format!("endpoint {} is not a string", Describe(other)))?,
        ),
    };
    let port =
        int(&items[1]).ok_or_else(|| format!("port {} is not a number", Describe(&items[1])))?;
    let port = node_port(port).ok_or_else(|| format!("port {port} is out of range"))?;
    let id = items.get(2).and_then(text);
    Ok((
        NodeAddr::new(&endpoint_or_seed(endpoint.as_deref(), seed_host)?, port),
        id,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_protocol::resp2::types::OwnedFrame as Resp2Frame;

    fn bulk(s: &str) -> Resp2Frame {
        Resp2Frame::BulkString(s.as_bytes().to_vec())
    }

    fn int(i: i64) -> Resp2Frame {
        Resp2Frame::Integer(i)
    }

    fn arr(items: Vec<Resp2Frame>) -> Resp2Frame {
        Resp2Frame::Array(items)
    }

    /// A `CLUSTER SHARDS` node in RESP2: a flat array of key/value pairs, as Redis 7.0 sends it.
    fn shard_node(endpoint: &str, port: i64, id: &str, role: &str, health: &str) -> Resp2Frame {
        arr(vec![
            bulk("id"),
            bulk(id),
            bulk("port"),
            int(port),
            bulk("ip"),
            bulk("10.0.0.1"),
            bulk("endpoint"),
            bulk(endpoint),
            bulk("role"),
            bulk(role),
            bulk("replication-offset"),
            int(1234),
            bulk("health"),
            bulk(health),
        ])
    }

    fn shard(slots: &[(i64, i64)], nodes: Vec<Resp2Frame>) -> Resp2Frame {
        let bounds = slots
            .iter()
            .flat_map(|&(start, end)| [int(start), int(end)])
            .collect();
        arr(vec![bulk("slots"), arr(bounds), bulk("nodes"), arr(nodes)])
    }

    /// Three shards of a primary and a replica each, covering every slot.
    fn three_shards() -> Resp2Frame {
        arr(vec![
            shard(
                &[(0, 5460)],
                vec![
                    shard_node("127.0.0.1", 7001, "a1", "master", "online"),
                    shard_node("127.0.0.1", 7004, "a2", "replica", "online"),
                ],
            ),
            shard(
                &[(5461, 10922)],
                vec![
                    shard_node("127.0.0.1", 7005, "b2", "replica", "online"),
                    shard_node("127.0.0.1", 7002, "b1", "master", "online"),
                ],
            ),
            shard(
                &[(10923, 16383)],
                vec![
                    shard_node("127.0.0.1", 7003, "c1", "master", "online"),
                    shard_node("127.0.0.1", 7006, "c2", "replica", "online"),
                ],
            ),
        ])
    }

    #[test]
    fn shards_resp2_flat_pairs() {
        let map = SlotMap::from_cluster_shards(&three_shards(), "127.0.0.1:7001").unwrap();
        assert!(map.is_complete());
        assert_eq!(map.owner(0).unwrap(), "127.0.0.1:7001");
        assert_eq!(map.owner(5460).unwrap(), "127.0.0.1:7001");
        assert_eq!(map.owner(5461).unwrap(), "127.0.0.1:7002");
        assert_eq!(map.owner(10922).unwrap(), "127.0.0.1:7002");
        assert_eq!(map.owner(10923).unwrap(), "127.0.0.1:7003");
        assert_eq!(map.owner(16383).unwrap(), "127.0.0.1:7003");
        assert_eq!(map.owner(16384), None);
        assert_eq!(
            map.primaries(),
            vec![
                NodeAddr::new("127.0.0.1", 7001),
                NodeAddr::new("127.0.0.1", 7002),
                NodeAddr::new("127.0.0.1", 7003)
            ]
        );
        assert_eq!(
            map.replicas_of("127.0.0.1:7002"),
            &[NodeAddr::new("127.0.0.1", 7005)]
        );
        assert_eq!(map.replicas_of("127.0.0.1:7005"), &[] as &[NodeAddr]);
        assert_eq!(map.shard_of(1).unwrap().primary_id.as_deref(), Some("a1"));
        assert_eq!(
            map.ranges()
                .iter()
                .map(|(s, e, a)| (*s, *e, a.port()))
                .collect::<Vec<_>>(),
            vec![(0, 5460, 7001), (5461, 10922, 7002), (10923, 16383, 7003)]
        );
    }

    #[test]
    fn a_tls_client_takes_the_tls_port_and_a_plain_one_the_plain_port() {
        // With tls-cluster yes a node lists both; a TLS-only node (port 0) only its tls-port;
        // with tls-cluster no, only its plain port.
        let node = |port: Option<i64>, tls_port: Option<i64>, id: &str| {
            let mut pairs = vec![bulk("id"), bulk(id)];
            if let Some(port) = port {
                pairs.extend([bulk("port"), int(port)]);
            }
            if let Some(tls_port) = tls_port {
                pairs.extend([bulk("tls-port"), int(tls_port)]);
            }
            pairs.extend([
                bulk("endpoint"),
                bulk("127.0.0.1"),
                bulk("role"),
                bulk("master"),
                bulk("health"),
                bulk("online"),
            ]);
            arr(pairs)
        };
        let reply = arr(vec![
            shard(&[(0, 8191)], vec![node(Some(7001), Some(8001), "a")]),
            shard(&[(8192, 16383)], vec![node(None, Some(8002), "b")]),
        ]);
        let seed = "127.0.0.1:8001";
        let plain = SlotMap::from_cluster_shards_on(&reply, seed, Transport::Tcp).unwrap();
        assert_eq!(plain.owner(0).unwrap(), "127.0.0.1:7001");
        assert_eq!(plain.owner(16383).unwrap(), "127.0.0.1:8002");
        assert_eq!(SlotMap::from_cluster_shards(&reply, seed).unwrap(), plain);
        let tls = SlotMap::from_cluster_shards_on(&reply, seed, Transport::Tls).unwrap();
        assert_eq!(tls.owner(0).unwrap(), "127.0.0.1:8001");
        assert_eq!(tls.owner(16383).unwrap(), "127.0.0.1:8002");
        let plain_only = arr(vec![shard(
            &[(0, 16383)],
            vec![node(Some(7001), None, "a")],
        )]);
        let err = SlotMap::from_cluster_shards_on(&plain_only, seed, Transport::Tls).unwrap_err();
        assert!(err.to_string().contains("tls-cluster yes"), "{err}");
    }

    #[test]
    fn the_order_of_the_reply_does_not_matter() {
        let Resp2Frame::Array(mut shards) = three_shards() else {
            unreachable!()
        };
        let forward = SlotMap::from_cluster_shards(&arr(shards.clone()), "127.0.0.1:7001").unwrap();
        shards.reverse();
        let backward = SlotMap::from_cluster_shards(&arr(shards), "127.0.0.1:7001").unwrap();
        assert_eq!(forward, backward);
        assert_eq!(forward.shards()[0].primary, "127.0.0.1:7001");
    }

    #[test]
    fn shards_unknown_endpoints_use_the_seed_host() {
        let reply = arr(vec![
            shard(
                &[(0, 99)],
                vec![shard_node("?", 7001, "a", "master", "online")],
            ),
            shard(
                &[(100, 199)],
                vec![shard_node("", 7002, "b", "master", "online")],
            ),
            shard(
                &[(200, 299)],
                vec![shard_node(
                    "redis-2.internal",
                    7003,
                    "c",
                    "master",
                    "online",
                )],
            ),
            shard(
                &[(300, 399)],
                vec![shard_node("::1", 7004, "d", "master", "online")],
            ),
        ]);
        let map = SlotMap::from_cluster_shards(&reply, "lb.example:6379").unwrap();
        assert_eq!(map.owner(0).unwrap(), "lb.example:7001");
        assert_eq!(map.owner(150).unwrap(), "lb.example:7002");
        assert_eq!(map.owner(250).unwrap(), "redis-2.internal:7003");
        assert_eq!(map.owner(399).unwrap(), "[::1]:7004");
        assert_eq!(map.owner(400), None);
        assert_eq!(map.assigned_slots(), 400);
        assert!(!map.is_complete());

        // An IPv6 seed in brackets gives its bare host.
        let map = SlotMap::from_cluster_shards(&reply, "[fe80::1]:6379").unwrap();
        assert_eq!(map.owner(0).unwrap(), "[fe80::1]:7001");
    }

    #[test]
    fn shards_without_endpoint_field_fall_back_to_ip() {
        let node = arr(vec![
            bulk("id"),
            bulk("x"),
            bulk("port"),
            int(7001),
            bulk("ip"),
            bulk("10.1.2.3"),
            bulk("role"),
            bulk("master"),
            bulk("health"),
            bulk("online"),
        ]);
        let map = SlotMap::from_cluster_shards(&arr(vec![shard(&[(0, 16383)], vec![node])]), "s:1")
            .unwrap();
        assert_eq!(map.owner(42).unwrap(), "10.1.2.3:7001");
    }

    #[test]
    fn shards_keep_only_online_primaries_and_replicas() {
        let reply = arr(vec![
            // The primary failed and its replica is not promoted yet: nobody serves 0-8191.
            shard(
                &[(0, 8191)],
                vec![
                    shard_node("127.0.0.1", 7001, "a1", "master", "failed"),
                    shard_node("127.0.0.1", 7004, "a2", "replica", "online"),
                ],
            ),
            // Two ranges, one loading replica.
            shard(
                &[(8192, 9000), (9001, 16383)],
                vec![
                    shard_node("127.0.0.1", 7002, "b1", "master", "online"),
                    shard_node("127.0.0.1", 7005, "b2", "replica", "loading"),
                    shard_node("127.0.0.1", 7006, "b3", "replica", "online"),
                ],
            ),
            // A primary with no slots yet.
            shard(
                &[],
                vec![shard_node("127.0.0.1", 7007, "e", "master", "online")],
            ),
        ]);
        let map = SlotMap::from_cluster_shards(&reply, "127.0.0.1:7002").unwrap();
        assert_eq!(map.owner(0), None);
        assert_eq!(map.owner(8191), None);
        assert_eq!(map.owner(8192).unwrap(), "127.0.0.1:7002");
        assert_eq!(map.owner(16383).unwrap(), "127.0.0.1:7002");
        assert_eq!(map.assigned_slots(), 16384 - 8192);
        assert_eq!(map.primaries(), vec![NodeAddr::new("127.0.0.1", 7002)]);
        assert_eq!(
            map.shards().len(),
            2,
            "the slotless primary is still listed as a shard"
        );
        assert_eq!(
            map.replicas_of("127.0.0.1:7002"),
            &[NodeAddr::new("127.0.0.1", 7006)]
        );
    }

    #[test]
    fn shards_malformed_replies_are_errors() {
        let cases: Vec<(Resp2Frame, &str)> = vec![
            (bulk("nope"), "expected an array"),
            (arr(vec![bulk("slots")]), "shard 0 is"),
            (
                arr(vec![arr(vec![bulk("nodes"), arr(vec![])])]),
                "no slots list",
            ),
            (
                arr(vec![shard(
                    &[(0, 16384)],
                    vec![shard_node("h", 1, "a", "master", "online")],
                )]),
                "outside 0-16383",
            ),
            (
                arr(vec![shard(
                    &[(10, 5)],
                    vec![shard_node("h", 1, "a", "master", "online")],
                )]),
                "10-5",
            ),
            (
                arr(vec![arr(vec![
                    bulk("slots"),
                    arr(vec![int(1)]),
                    bulk("nodes"),
                    arr(vec![]),
                ])]),
                "odd number",
            ),
            (
                arr(vec![shard(
                    &[(0, 1)],
                    vec![arr(vec![
                        bulk("id"),
                        bulk("x"),
                        bulk("role"),
                        bulk("master"),
                    ])],
                )]),
                "no port",
            ),
            (
                arr(vec![shard(
                    &[(0, 1)],
                    vec![shard_node("h", 70000, "a", "master", "online")],
                )]),
                "out of range",
            ),
        ];
        for (reply, expected) in cases {
            let err = SlotMap::from_cluster_shards(&reply, "s:1")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    /// A `CLUSTER SLOTS` node: `[endpoint, port, id, metadata]` (Redis 7 adds the metadata map).
    fn slots_node(endpoint: Option<&str>, port: i64, id: &str) -> Resp2Frame {
        arr(vec![
            endpoint.map(bulk).unwrap_or(Resp2Frame::Null),
            int(port),
            bulk(id),
            arr(vec![]),
        ])
    }

    #[test]
    fn slots_reply_with_replicas_and_split_ranges() {
        let reply = arr(vec![
            arr(vec![
                int(0),
                int(5460),
                slots_node(Some("127.0.0.1"), 7001, "a1"),
                slots_node(Some("127.0.0.1"), 7004, "a2"),
            ]),
            arr(vec![
                int(10923),
                int(16383),
                slots_node(Some("127.0.0.1"), 7003, "c1"),
            ]),
            arr(vec![
                int(5461),
                int(10000),
                slots_node(Some("127.0.0.1"), 7002, "b1"),
                slots_node(Some("127.0.0.1"), 7005, "b2"),
            ]),
            // The same primary again, for another range, replica listed again.
            arr(vec![
                int(10001),
                int(10922),
                slots_node(Some("127.0.0.1"), 7002, "b1"),
                slots_node(Some("127.0.0.1"), 7005, "b2"),
            ]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply, "127.0.0.1:7003").unwrap();
        assert!(map.is_complete());
        assert_eq!(map.owner(5460).unwrap(), "127.0.0.1:7001");
        assert_eq!(map.owner(10000).unwrap(), "127.0.0.1:7002");
        assert_eq!(map.owner(10922).unwrap(), "127.0.0.1:7002");
        assert_eq!(map.owner(10923).unwrap(), "127.0.0.1:7003");
        assert_eq!(map.shards().len(), 3);
        assert_eq!(map.primaries().len(), 3);
        assert_eq!(
            map.replicas_of("127.0.0.1:7002"),
            &[NodeAddr::new("127.0.0.1", 7005)]
        );
        assert_eq!(map.replicas_of("127.0.0.1:7003"), &[] as &[NodeAddr]);
        assert_eq!(
            map.shard_of(7000).unwrap().primary_id.as_deref(),
            Some("b1")
        );
        // Ranges come back merged, in slot order.
        assert_eq!(
            map.ranges()
                .iter()
                .map(|(s, e, a)| (*s, *e, a.port()))
                .collect::<Vec<_>>(),
            vec![(0, 5460, 7001), (5461, 10922, 7002), (10923, 16383, 7003)]
        );
    }

    #[test]
    fn slots_unknown_endpoints_use_the_seed_host() {
        let reply = arr(vec![
            arr(vec![int(0), int(10), slots_node(None, 7001, "a")]),
            arr(vec![int(11), int(20), slots_node(Some("?"), 7002, "b")]),
            arr(vec![int(21), int(30), slots_node(Some(""), 7003, "c")]),
            // Redis 3: no id at all.
            arr(vec![int(31), int(40), arr(vec![bulk("host-4"), int(7004)])]),
        ]);
        let map = SlotMap::from_cluster_slots(&reply, "seed.example:7000").unwrap();
        assert_eq!(map.owner(0).unwrap(), "seed.example:7001");
        assert_eq!(map.owner(15).unwrap(), "seed.example:7002");
        assert_eq!(map.owner(30).unwrap(), "seed.example:7003");
        assert_eq!(map.owner(40).unwrap(), "host-4:7004");
        assert_eq!(map.shard_of(40).unwrap().primary_id, None);
        assert_eq!(map.owner(41), None);
    }

    #[test]
    fn slots_malformed_replies_are_errors() {
        let cases: Vec<(Resp2Frame, &str)> = vec![
            (int(3), "expected an array"),
            (arr(vec![arr(vec![int(0), int(1)])]), "at least 3"),
            (
                arr(vec![arr(vec![
                    bulk("x"),
                    int(1),
                    slots_node(Some("h"), 1, "a"),
                ])]),
                "not a number",
            ),
            (
                arr(vec![arr(vec![
                    int(0),
                    int(99999),
                    slots_node(Some("h"), 1, "a"),
                ])]),
                "outside",
            ),
            (
                arr(vec![arr(vec![int(0), int(1), arr(vec![bulk("h")])])]),
                "primary",
            ),
            (
                arr(vec![arr(vec![int(0), int(1), arr(vec![int(5), int(1)])])]),
                "not a string",
            ),
        ];
        for (reply, expected) in cases {
            let err = SlotMap::from_cluster_slots(&reply, "s:1")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }

    #[test]
    fn endpoints_that_are_no_host_and_port_zero_are_malformed() {
        // Found by the cluster_topology fuzz target: a CLUSTER SLOTS endpoint "127.\x10.0.1"
        // (one flipped bit) made the node address "127.\x10.0.1:7001"; port 0 was accepted too.
        for endpoint in [
            "127.\x10.0.1",
            "a b",
            "evil\r\nhost",
            "[x",
            "[x]",
            "host/path",
            "h\u{e9}",
        ] {
            let reply = arr(vec![arr(vec![
                int(0),
                int(16383),
                slots_node(Some(endpoint), 7001, "a"),
            ])]);
            let err = SlotMap::from_cluster_slots(&reply, "s:1")
                .unwrap_err()
                .to_string();
            assert!(err.contains("is not a host name or IP address"), "{err}");
            let reply = arr(vec![shard(
                &[(0, 16383)],
                vec![shard_node(endpoint, 7001, "a", "master", "online")],
            )]);
            let err = SlotMap::from_cluster_shards(&reply, "s:1")
                .unwrap_err()
                .to_string();
            assert!(err.contains("is not a host name or IP address"), "{err}");
        }
        let reply = arr(vec![arr(vec![
            int(0),
            int(1),
            slots_node(Some("h"), 0, "a"),
        ])]);
        let err = SlotMap::from_cluster_slots(&reply, "s:1").unwrap_err();
        assert!(err.to_string().contains("port 0 is out of range"), "{err}");
        let reply = arr(vec![shard(
            &[(0, 1)],
            vec![shard_node("h", 0, "a", "master", "online")],
        )]);
        let err = SlotMap::from_cluster_shards(&reply, "s:1").unwrap_err();
        assert!(err.to_string().contains("port 0 is out of range"), "{err}");
        // Host names, IPv4 and IPv6 (bare, bracketed, with a zone) are fine.
        for (endpoint, addr) in [
            ("node-1.example", "node-1.example:7001"),
            ("redis_0", "redis_0:7001"),
            ("10.0.0.7", "10.0.0.7:7001"),
            ("::1", "[::1]:7001"),
            ("[::1]", "[::1]:7001"),
            ("fe80::1%eth0", "[fe80::1%eth0]:7001"),
        ] {
            let reply = arr(vec![arr(vec![
                int(0),
                int(16383),
                slots_node(Some(endpoint), 7001, "a"),
            ])]);
            let map = SlotMap::from_cluster_slots(&reply, "s:1").unwrap();
            assert_eq!(map.owner(0).unwrap(), addr);
        }
    }
}
