//! The cluster's slot map: which primary serves each of the 16384 hash slots.
//!
//! keyward keeps its own copy of the map instead of asking Redis where each key lives, so that a
//! request goes straight to the right node and a multi-key command can be split by slot before
//! anything is sent. The map is built from one node's answer to `CLUSTER SHARDS` (Redis 7 and
//! later) or, on older servers, `CLUSTER SLOTS`; [`discover`] asks the seed nodes in turn.
//!
//! Both replies name a node by its *preferred endpoint* (`cluster-preferred-endpoint-type`: an
//! IP, a hostname, or deliberately unknown). When the endpoint is unknown Redis says so with a
//! null, `?` or an empty string, and its documentation tells clients to use the host they sent the
//! command to, with the port from the reply. That is why the parsers take the seed address.
//!
//! The map is a plain value: one `u16` per slot pointing into a short list of shards. Routing
//! code holds it behind whatever sharing it needs (an `ArcSwap`, a lock) and replaces or patches
//! it ([`SlotMap::set_owner`] after a `MOVED`) as the topology changes.

use std::borrow::Borrow;
use std::fmt;
use std::io;
use std::time::Duration;

use bytes::BytesMut;
use redis_protocol::resp2::types::{BytesFrame as Resp2BytesFrame, OwnedFrame as Resp2Frame};
use redis_protocol::resp3::types::{
    BytesFrame as Resp3BytesFrame, OwnedFrame as Resp3Frame, Resp3Frame as _,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::net::Socket;
use crate::protocol::write;
use crate::tls::ClientTls;

/// The number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: usize = 16384;

/// Marks a slot that no known primary serves.
const UNOWNED: u16 = u16::MAX;

/// The largest topology reply [`discover`] accepts. `CLUSTER SHARDS` for a cluster of a thousand
/// nodes is well under a megabyte; anything near this limit is not a topology reply.
const MAX_REPLY_BYTES: usize = 64 * 1024 * 1024;

/// The hash slot of a key, exactly as Redis computes it (CRC16 of the key, or of the part between
/// the first `{` and the next `}` when that part is not empty).
pub fn slot_of(key: &[u8]) -> u16 {
    redis_protocol::redis_keyslot(key)
}

// ---------------------------------------------------------------------------------------------
// Node addresses and shards
// ---------------------------------------------------------------------------------------------

/// The address of a cluster node as keyward connects to it: `host:port`, with an IPv6 host in
/// brackets (`[::1]:7000`) so that the string can be handed to `TcpStream::connect` as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr(String);

impl NodeAddr {
    /// The address of `port` on `host` (an IP address or a hostname, IPv6 with or without
    /// brackets).
    pub fn new(host: &str, port: u16) -> Self {
        if host.contains(':') && !host.starts_with('[') {
            NodeAddr(format!("[{host}]:{port}"))
        } else {
            NodeAddr(format!("{host}:{port}"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part, without IPv6 brackets.
    pub fn host(&self) -> &str {
        let (host, _) = split_host_port(&self.0);
        host
    }

    /// The port part.
    pub fn port(&self) -> u16 {
        let (_, port) = split_host_port(&self.0);
        port.and_then(|p| p.parse().ok()).unwrap_or(0)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NodeAddr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NodeAddr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for NodeAddr {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NodeAddr {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for NodeAddr {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl From<NodeAddr> for String {
    fn from(addr: NodeAddr) -> String {
        addr.0
    }
}

/// Splits `host:port`, `[v6]:port` or a bare host into the host (brackets removed) and the port
/// text, if there is one.
fn split_host_port(addr: &str) -> (&str, Option<&str>) {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            return (host, tail.strip_prefix(':'));
        }
        return (addr, None);
    }
    match addr.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address, no port.
        Some((host, _)) if host.contains(':') => (addr, None),
        Some((host, port)) => (host, Some(port)),
        None => (addr, None),
    }
}

/// One primary and the replicas that copy it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub primary: NodeAddr,
    /// The primary's 40-character node id, when the reply carried one.
    pub primary_id: Option<String>,
    /// Replicas that were healthy when the map was read (`CLUSTER SLOTS` leaves out failed ones;
    /// for `CLUSTER SHARDS` only those with `health` `online` are kept).
    pub replicas: Vec<NodeAddr>,
}

// ---------------------------------------------------------------------------------------------
// The slot map
// ---------------------------------------------------------------------------------------------

/// Which primary serves each of the 16384 hash slots.
///
/// A slot with no owner (unassigned, or served by a primary the reply marked as failed) has no
/// entry: routing code answers `CLUSTERDOWN` for it or refreshes the map.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// One entry per slot: an index into `shards`, or [`UNOWNED`].
    slots: Box<[u16]>,
    shards: Vec<Shard>,
}

impl SlotMap {
    /// A map in which no slot has an owner.
    pub fn empty() -> Self {
        SlotMap {
            slots: vec![UNOWNED; SLOT_COUNT].into_boxed_slice(),
            shards: Vec::new(),
        }
    }

    /// The primary that serves `slot`, if any. Slots of 16384 and above have no owner.
    pub fn owner(&self, slot: u16) -> Option<&NodeAddr> {
        self.shard_of(slot).map(|shard| &shard.primary)
    }

    /// The primary that serves `key`'s slot, if any.
    pub fn owner_of_key(&self, key: &[u8]) -> Option<&NodeAddr> {
        self.owner(slot_of(key))
    }

    /// The shard (primary and replicas) that serves `slot`, if any.
    pub fn shard_of(&self, slot: u16) -> Option<&Shard> {
        match self.slots.get(usize::from(slot)) {
            Some(&idx) if idx != UNOWNED => self.shards.get(usize::from(idx)),
            _ => None,
        }
    }

    /// Every primary that serves at least one slot, each once, in the order of the first slot it
    /// serves.
    /// A primary with no slots holds no reachable keys, so fan-out commands (DBSIZE, SCAN, KEYS,
    /// FLUSHALL) can leave it out.
    pub fn primaries(&self) -> Vec<NodeAddr> {
        let mut serving = vec![false; self.shards.len()];
        for &idx in self.slots.iter() {
            if idx != UNOWNED {
                serving[usize::from(idx)] = true;
            }
        }
        self.shards
            .iter()
            .zip(serving)
            .filter(|(_, serving)| *serving)
            .map(|(shard, _)| shard.primary.clone())
            .collect()
    }

    /// The healthy replicas of `primary` (`host:port`); empty when it is not a known primary.
    pub fn replicas_of(&self, primary: &str) -> &[NodeAddr] {
        self.shards
            .iter()
            .find(|shard| shard.primary == primary)
            .map(|shard| shard.replicas.as_slice())
            .unwrap_or(&[])
    }

    /// Every shard the reply described, including primaries that serve no slot: in the order of
    /// their first slot (slotless ones last), replicas sorted by address. Two replies that
    /// describe the same topology give equal maps.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The map as contiguous ranges: `(first slot, last slot, primary)`, in slot order.
    pub fn ranges(&self) -> Vec<(u16, u16, &NodeAddr)> {
        let mut out: Vec<(u16, u16, &NodeAddr)> = Vec::new();
        let mut start = 0usize;
        while start < SLOT_COUNT {
            let idx = self.slots[start];
            let mut end = start;
            while end + 1 < SLOT_COUNT && self.slots[end + 1] == idx {
                end += 1;
            }
            if idx != UNOWNED {
                out.push((
                    start as u16,
                    end as u16,
                    &self.shards[usize::from(idx)].primary,
                ));
            }
            start = end + 1;
        }
        out
    }

    /// How many slots have an owner.
    pub fn assigned_slots(&self) -> usize {
        self.slots.iter().filter(|&&idx| idx != UNOWNED).count()
    }

    /// True when every one of the 16384 slots has an owner.
    pub fn is_complete(&self) -> bool {
        self.slots.iter().all(|&idx| idx != UNOWNED)
    }

    /// Records that `primary` now serves `slot`, as a `MOVED slot host:port` redirection says.
    /// A primary the map does not know yet is added as a shard without replicas; the next full
    /// refresh fills in the rest. Slots of 16384 and above are ignored.
    pub fn set_owner(&mut self, slot: u16, primary: NodeAddr) {
        if usize::from(slot) >= SLOT_COUNT {
            return;
        }
        if let Some(idx) = self.shard_index(primary, None) {
            self.slots[usize::from(slot)] = idx;
        }
    }

    /// The index of the shard whose primary is `primary`, added if it is new; `None` when the
    /// map already holds the most shards an index can name (65535, far beyond any real cluster).
    fn shard_index(&mut self, primary: NodeAddr, id: Option<String>) -> Option<u16> {
        if let Some(i) = self.shards.iter().position(|s| s.primary == primary) {
            if self.shards[i].primary_id.is_none() {
                self.shards[i].primary_id = id;
            }
            return Some(i as u16);
        }
        let idx = u16::try_from(self.shards.len())
            .ok()
            .filter(|&i| i != UNOWNED)?;
        self.shards.push(Shard {
            primary,
            primary_id: id,
            replicas: Vec::new(),
        });
        Some(idx)
    }

    /// [`shard_index`](Self::shard_index) for the parsers, where too many shards is an error.
    fn parsed_shard_index(
        &mut self,
        primary: NodeAddr,
        id: Option<String>,
    ) -> Result<u16, TopologyError> {
        self.shard_index(primary, id)
            .ok_or_else(|| malformed(format!("more than {UNOWNED} primaries")))
    }

    fn assign(&mut self, start: i64, end: i64, idx: u16) -> Result<(), TopologyError> {
        let max = SLOT_COUNT as i64 - 1;
        if start < 0 || end > max || start > end {
            return Err(malformed(format!(
                "slot range {start}-{end} is outside 0-{max}"
            )));
        }
        for slot in start..=end {
            self.slots[slot as usize] = idx;
        }
        Ok(())
    }

    /// Puts the shards in a canonical order (by first slot served; primaries without slots last,
    /// by address) and sorts each replica list, so that two nodes' replies describing the same
    /// topology give equal maps whatever order each node listed things in.
    fn canonical(mut self) -> SlotMap {
        let n = self.shards.len();
        let mut first_slot = vec![usize::MAX; n];
        for (slot, &idx) in self.slots.iter().enumerate() {
            if idx != UNOWNED && first_slot[usize::from(idx)] == usize::MAX {
                first_slot[usize::from(idx)] = slot;
            }
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            (first_slot[a], &self.shards[a].primary).cmp(&(first_slot[b], &self.shards[b].primary))
        });
        let mut new_index = vec![0u16; n];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new as u16;
        }
        for idx in self.slots.iter_mut() {
            if *idx != UNOWNED {
                *idx = new_index[usize::from(*idx)];
            }
        }
        let mut shards: Vec<Option<Shard>> = self.shards.into_iter().map(Some).collect();
        self.shards = order
            .iter()
            .map(|&i| shards[i].take().expect("each shard moved once"))
            .collect();
        for shard in &mut self.shards {
            shard.replicas.sort();
        }
        self
    }

    /// Builds the map from a `CLUSTER SHARDS` reply (Redis 7+), in RESP2 (each map a flat array
    /// of key/value pairs) or RESP3 (real maps). `seed` is the `host:port` the command was sent
    /// to: its host stands in for an unknown endpoint.
    ///
    /// Only nodes with `role` `master` and `health` `online` serve slots: the slots of a shard
    /// whose primary is failed or still loading are left without an owner. Replicas must be
    /// `online` too.
    pub fn from_cluster_shards<R: ClusterReply + ?Sized>(
        reply: &R,
        seed: &str,
    ) -> Result<SlotMap, TopologyError> {
        Self::from_cluster_shards_on(reply, seed, Transport::Tcp)
    }

    /// [`from_cluster_shards`](Self::from_cluster_shards) for a client that connects with
    /// `transport`. A node lists its plain `port` and its `tls-port` separately (Redis leaves out
    /// the one it does not listen on, and lists `tls-port` only with `tls-cluster yes`). A plain
    /// client takes `port`, or `tls-port` when that is all there is; a TLS client takes
    /// `tls-port`, and a node without one is an error.
    pub fn from_cluster_shards_on<R: ClusterReply + ?Sized>(
        reply: &R,
        seed: &str,
        transport: Transport,
    ) -> Result<SlotMap, TopologyError> {
        let seed_host = split_host_port(seed).0;
        let value = reply.view();
        let shards = value
            .as_array()
            .ok_or_else(|| malformed(format!("CLUSTER SHARDS: expected an array, got {value}")))?;
        let mut map = SlotMap::empty();
        for (n, shard) in shards.iter().enumerate() {
            let fields = shard
                .as_map()
                .ok_or_else(|| malformed(format!("CLUSTER SHARDS: shard {n} is {shard}")))?;
            let slots = field(&fields, "slots")
                .and_then(Value::as_array)
                .ok_or_else(|| malformed(format!("CLUSTER SHARDS: shard {n} has no slots list")))?;
            if slots.len() % 2 != 0 {
                return Err(malformed(format!(
                    "CLUSTER SHARDS: shard {n} has an odd number of slot bounds ({})",
                    slots.len()
                )));
            }
            let nodes = field(&fields, "nodes")
                .and_then(Value::as_array)
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
            map.shards[usize::from(idx)].replicas.extend(replicas);
            for bounds in slots.chunks(2) {
                let start = bounds[0].as_int().ok_or_else(|| {
                    malformed(format!(
                        "CLUSTER SHARDS: shard {n}: slot {} is not a number",
                        bounds[0]
                    ))
                })?;
                let end = bounds[1].as_int().ok_or_else(|| {
                    malformed(format!(
                        "CLUSTER SHARDS: shard {n}: slot {} is not a number",
                        bounds[1]
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
    pub fn from_cluster_slots<R: ClusterReply + ?Sized>(
        reply: &R,
        seed: &str,
    ) -> Result<SlotMap, TopologyError> {
        let seed_host = split_host_port(seed).0;
        let value = reply.view();
        let ranges = value
            .as_array()
            .ok_or_else(|| malformed(format!("CLUSTER SLOTS: expected an array, got {value}")))?;
        let mut map = SlotMap::empty();
        for (n, range) in ranges.iter().enumerate() {
            let items = range
                .as_array()
                .ok_or_else(|| malformed(format!("CLUSTER SLOTS: entry {n} is {range}")))?;
            if items.len() < 3 {
                return Err(malformed(format!(
                    "CLUSTER SLOTS: entry {n} has {} elements, expected at least 3",
                    items.len()
                )));
            }
            let start = items[0].as_int().ok_or_else(|| {
                malformed(format!(
                    "CLUSTER SLOTS: entry {n}: start {} is not a number",
                    items[0]
                ))
            })?;
            let end = items[1].as_int().ok_or_else(|| {
                malformed(format!(
                    "CLUSTER SLOTS: entry {n}: end {} is not a number",
                    items[1]
                ))
            })?;
            let (primary, id) = slots_node(&items[2], seed_host)
                .map_err(|e| malformed(format!("CLUSTER SLOTS: entry {n}: primary: {e}")))?;
            let idx = map.parsed_shard_index(primary, id)?;
            for replica in &items[3..] {
                let (addr, _) = slots_node(replica, seed_host)
                    .map_err(|e| malformed(format!("CLUSTER SLOTS: entry {n}: replica: {e}")))?;
                let shard = &mut map.shards[usize::from(idx)];
                if !shard.replicas.contains(&addr) {
                    shard.replicas.push(addr);
                }
            }
            map.assign(start, end, idx)?;
        }
        Ok(map.canonical())
    }
}

impl Default for SlotMap {
    fn default() -> Self {
        SlotMap::empty()
    }
}

impl fmt::Debug for SlotMap {
    /// Ranges and shards rather than 16384 numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges: Vec<String> = self
            .ranges()
            .into_iter()
            .map(|(start, end, addr)| format!("{start}-{end}: {addr}"))
            .collect();
        f.debug_struct("SlotMap")
            .field("ranges", &ranges)
            .field("shards", &self.shards)
            .finish()
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
    fn parse(node: &Value<'_>, seed_host: &str, transport: Transport) -> Result<ShardNode, String> {
        let fields = node.as_map().ok_or_else(|| format!("node is {node}"))?;
        let text = |key: &str| field(&fields, key).and_then(Value::as_text);
        let port = match transport {
            Transport::Tcp => field(&fields, "port").or_else(|| field(&fields, "tls-port")),
            // No fallback to `port`: a cluster with tls-cluster no lists only its plain ports,
            // where a TLS handshake would hang until the connect timeout.
            Transport::Tls => Some(field(&fields, "tls-port").ok_or(
                "node lists no tls-port: for TLS clients the cluster must run with tls-cluster yes",
            )?),
        }
        .and_then(Value::as_int)
        .ok_or("node has no port")?;
        let port = node_port(port).ok_or_else(|| format!("node port {port} is out of range"))?;
        // `endpoint` is the preferred way to reach the node; it is `?` (or empty) when unknown.
        // Only a reply without an `endpoint` field at all falls back to `ip`.
        let endpoint = if field(&fields, "endpoint").is_some() {
            text("endpoint")
        } else {
            text("ip")
        };
        Ok(ShardNode {
            addr: NodeAddr::new(&endpoint_or_seed(endpoint.as_deref(), seed_host)?, port),
            id: text("id"),
            role: text("role").unwrap_or_default(),
            health: text("health").unwrap_or_else(|| "online".to_string()),
        })
    }
}

/// A node of a `CLUSTER SLOTS` entry: `[endpoint, port, id?, metadata?]`.
fn slots_node(node: &Value<'_>, seed_host: &str) -> Result<(NodeAddr, Option<String>), String> {
    let items = node.as_array().ok_or_else(|| format!("node is {node}"))?;
    if items.len() < 2 {
        return Err(format!(
            "node has {} elements, expected at least 2",
            items.len()
        ));
    }
    let endpoint = match &items[0] {
        Value::Null => None,
        other => Some(
            other
                .as_text()
                .ok_or_else(|| format!("endpoint {other} is not a string"))?,
        ),
    };
    let port = items[1]
        .as_int()
        .ok_or_else(|| format!("port {} is not a number", items[1]))?;
    let port = node_port(port).ok_or_else(|| format!("port {port} is out of range"))?;
    let id = items.get(2).and_then(Value::as_text);
    Ok((
        NodeAddr::new(&endpoint_or_seed(endpoint.as_deref(), seed_host)?, port),
        id,
    ))
}

fn field<'v, 'a>(fields: &[(&'v Value<'a>, &'v Value<'a>)], key: &str) -> Option<&'v Value<'a>> {
    fields
        .iter()
        .find(|(k, _)| k.as_bytes() == Some(key.as_bytes()))
        .map(|(_, v)| *v)
}

// ---------------------------------------------------------------------------------------------
// A common view of RESP2 and RESP3 frames
// ---------------------------------------------------------------------------------------------

mod view {
    use std::fmt;

    /// What the topology parsers need to see of a frame, whichever RESP version it came in.
    pub enum Value<'a> {
        Text(&'a [u8]),
        Int(i64),
        Null,
        Error(&'a str),
        Array(Vec<Value<'a>>),
        Map(Vec<(Value<'a>, Value<'a>)>),
        /// Any other frame type (boolean, double...); the name is for error messages.
        Other(String),
    }

    impl<'a> Value<'a> {
        pub fn as_array(&self) -> Option<&[Value<'a>]> {
            match self {
                Value::Array(items) => Some(items),
                _ => None,
            }
        }

        /// A RESP3 map, or a RESP2 array of alternating keys and values.
        pub fn as_map(&self) -> Option<Vec<(&Value<'a>, &Value<'a>)>> {
            match self {
                Value::Map(pairs) => Some(pairs.iter().map(|(k, v)| (k, v)).collect()),
                Value::Array(items) if items.len() % 2 == 0 => {
                    Some(items.chunks(2).map(|pair| (&pair[0], &pair[1])).collect())
                }
                _ => None,
            }
        }

        pub fn as_bytes(&self) -> Option<&'a [u8]> {
            match self {
                Value::Text(b) => Some(b),
                _ => None,
            }
        }

        pub fn as_text(&self) -> Option<String> {
            self.as_bytes()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        }

        /// An integer, or a string holding one (some proxies and old servers send numbers as
        /// strings).
        pub fn as_int(&self) -> Option<i64> {
            match self {
                Value::Int(i) => Some(*i),
                Value::Text(b) => std::str::from_utf8(b).ok()?.trim().parse().ok(),
                _ => None,
            }
        }
    }

    impl fmt::Display for Value<'_> {
        /// A short description for error messages: the type, and the text of short strings.
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Value::Text(b) if b.len() <= 64 => {
                    write!(f, "the string {:?}", String::from_utf8_lossy(b))
                }
                Value::Text(b) => write!(f, "a string of {} bytes", b.len()),
                Value::Int(i) => write!(f, "the integer {i}"),
                Value::Null => f.write_str("null"),
                Value::Error(e) => write!(f, "the error {e:?}"),
                Value::Array(items) => write!(f, "an array of {} elements", items.len()),
                Value::Map(pairs) => write!(f, "a map of {} entries", pairs.len()),
                Value::Other(kind) => write!(f, "a frame of type {kind}"),
            }
        }
    }

    /// Implemented by the frame types of `redis-protocol` that the parsers accept.
    pub trait Sealed {
        fn view(&self) -> Value<'_>;
    }
}

use view::Value;

/// A decoded reply the topology parsers accept: `redis-protocol`'s RESP2 or RESP3 frames, owned or
/// `Bytes`-backed.
pub trait ClusterReply: view::Sealed {}

impl view::Sealed for Resp2Frame {
    fn view(&self) -> Value<'_> {
        match self {
            Resp2Frame::SimpleString(b) | Resp2Frame::BulkString(b) => Value::Text(b),
            Resp2Frame::Error(e) => Value::Error(e),
            Resp2Frame::Integer(i) => Value::Int(*i),
            Resp2Frame::Array(items) => Value::Array(items.iter().map(|f| f.view()).collect()),
            Resp2Frame::Null => Value::Null,
        }
    }
}
impl ClusterReply for Resp2Frame {}

impl view::Sealed for Resp2BytesFrame {
    fn view(&self) -> Value<'_> {
        match self {
            Resp2BytesFrame::SimpleString(b) | Resp2BytesFrame::BulkString(b) => Value::Text(b),
            Resp2BytesFrame::Error(e) => Value::Error(e),
            Resp2BytesFrame::Integer(i) => Value::Int(*i),
            Resp2BytesFrame::Array(items) => Value::Array(items.iter().map(|f| f.view()).collect()),
            Resp2BytesFrame::Null => Value::Null,
        }
    }
}
impl ClusterReply for Resp2BytesFrame {}

impl view::Sealed for Resp3Frame {
    fn view(&self) -> Value<'_> {
        match self {
            Resp3Frame::BlobString { data, .. }
            | Resp3Frame::SimpleString { data, .. }
            | Resp3Frame::VerbatimString { data, .. } => Value::Text(data),
            Resp3Frame::SimpleError { data, .. } => Value::Error(data),
            Resp3Frame::BlobError { data, .. } => {
                Value::Error(std::str::from_utf8(data).unwrap_or("(binary error)"))
            }
            Resp3Frame::Number { data, .. } => Value::Int(*data),
            Resp3Frame::Null => Value::Null,
            Resp3Frame::Array { data, .. } | Resp3Frame::Push { data, .. } => {
                Value::Array(data.iter().map(|f| f.view()).collect())
            }
            Resp3Frame::Set { data, .. } => Value::Array(data.iter().map(|f| f.view()).collect()),
            Resp3Frame::Map { data, .. } => {
                Value::Map(data.iter().map(|(k, v)| (k.view(), v.view())).collect())
            }
            other => Value::Other(format!("{:?}", other.kind())),
        }
    }
}
impl ClusterReply for Resp3Frame {}

impl view::Sealed for Resp3BytesFrame {
    fn view(&self) -> Value<'_> {
        match self {
            Resp3BytesFrame::BlobString { data, .. }
            | Resp3BytesFrame::SimpleString { data, .. }
            | Resp3BytesFrame::VerbatimString { data, .. } => Value::Text(data),
            Resp3BytesFrame::SimpleError { data, .. } => Value::Error(data),
            Resp3BytesFrame::BlobError { data, .. } => {
                Value::Error(std::str::from_utf8(data).unwrap_or("(binary error)"))
            }
            Resp3BytesFrame::Number { data, .. } => Value::Int(*data),
            Resp3BytesFrame::Null => Value::Null,
            Resp3BytesFrame::Array { data, .. } | Resp3BytesFrame::Push { data, .. } => {
                Value::Array(data.iter().map(|f| f.view()).collect())
            }
            Resp3BytesFrame::Set { data, .. } => {
                Value::Array(data.iter().map(|f| f.view()).collect())
            }
            Resp3BytesFrame::Map { data, .. } => {
                Value::Map(data.iter().map(|(k, v)| (k.view(), v.view())).collect())
            }
            other => Value::Other(format!("{:?}", other.kind())),
        }
    }
}
impl ClusterReply for Resp3BytesFrame {}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// Why the slot map could not be built.
#[derive(Debug)]
pub enum TopologyError {
    /// [`discover`] was given no seed at all.
    NoSeeds,
    /// A reply did not have the shape of a `CLUSTER SHARDS` / `CLUSTER SLOTS` reply.
    Malformed(String),
    /// No seed gave a usable map; one entry per seed, in the order they were tried.
    AllSeedsFailed(Vec<(String, SeedFailure)>),
}

/// What went wrong with one seed.
#[derive(Debug)]
pub enum SeedFailure {
    /// The TCP connection could not be opened.
    Connect(io::Error),
    /// Nothing happened within the timeout; says what keyward was waiting for.
    Timeout(&'static str),
    /// Reading or writing failed, or the node closed the connection.
    Io(io::Error),
    /// The node refused keyward's credentials; carries Redis's error text.
    Auth(String),
    /// Both `CLUSTER SHARDS` and `CLUSTER SLOTS` were answered with an error (for instance
    /// "ERR This instance has cluster support disabled"); carries both texts.
    Refused(String),
    /// The bytes were not valid RESP, or the reply was far too large.
    Protocol(String),
    /// The reply was valid RESP but not a topology reply.
    Malformed(String),
    /// The node answered, but knows of no slot with a live owner (a node not yet joined to a
    /// cluster, or a cluster still being created).
    NoSlots,
}

impl fmt::Display for SeedFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedFailure::Connect(e) => write!(f, "cannot connect: {e}"),
            SeedFailure::Timeout(what) => write!(f, "timed out waiting for {what}"),
            SeedFailure::Io(e) => write!(f, "connection failed: {e}"),
            SeedFailure::Auth(e) => write!(f, "authentication refused: {e}"),
            SeedFailure::Refused(e) => write!(f, "topology commands refused: {e}"),
            SeedFailure::Protocol(e) => write!(f, "invalid reply: {e}"),
            SeedFailure::Malformed(e) => write!(f, "unexpected reply: {e}"),
            SeedFailure::NoSlots => f.write_str("the node knows no slot with a live owner"),
        }
    }
}

impl fmt::Display for TopologyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopologyError::NoSeeds => f.write_str("no cluster seed node is configured"),
            TopologyError::Malformed(e) => write!(f, "malformed cluster topology: {e}"),
            TopologyError::AllSeedsFailed(failures) => {
                f.write_str("no cluster seed node gave a slot map: ")?;
                for (i, (seed, cause)) in failures.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    write!(f, "{seed}: {cause}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for TopologyError {}

fn malformed(msg: String) -> TopologyError {
    TopologyError::Malformed(msg)
}

// ---------------------------------------------------------------------------------------------
// Discovery
// ---------------------------------------------------------------------------------------------

/// Reads the slot map from the first seed that can give one.
///
/// Each seed (`host:port`) is tried in turn on a fresh TCP connection: `AUTH` when `auth` is
/// given (`(username, password)`; no username means the `default` user), then `CLUSTER SHARDS`,
/// and `CLUSTER SLOTS` if that is answered with an error (servers older than 7.0). The connect
/// and each reply are bounded by `connect_timeout` separately.
///
/// A map that covers all 16384 slots is returned at once. A partial map (a cluster that lost a
/// shard, or a node with a stale view) is kept while the remaining seeds are tried, and the most
/// complete one is returned if no seed has a complete map. When no seed gives any map, the error
/// lists every seed with its cause.
pub async fn discover(
    seeds: &[String],
    connect_timeout: Duration,
    auth: Option<(Option<String>, String)>,
    tls: Option<&ClientTls>,
) -> Result<SlotMap, TopologyError> {
    if seeds.is_empty() {
        return Err(TopologyError::NoSeeds);
    }
    let mut best: Option<SlotMap> = None;
    let mut failures = Vec::new();
    for seed in seeds {
        match query_seed(seed, connect_timeout, auth.as_ref(), tls).await {
            Ok(map) if map.is_complete() => return Ok(map),
            Ok(map) if map.assigned_slots() == 0 => {
                failures.push((seed.clone(), SeedFailure::NoSlots))
            }
            Ok(map) => {
                tracing::debug!(
                    seed = %seed,
                    assigned = map.assigned_slots(),
                    "cluster seed gave a partial slot map"
                );
                if best
                    .as_ref()
                    .is_none_or(|b| map.assigned_slots() > b.assigned_slots())
                {
                    best = Some(map);
                }
            }
            Err(cause) => {
                tracing::debug!(seed = %seed, %cause, "cluster seed gave no slot map");
                failures.push((seed.clone(), cause));
            }
        }
    }
    best.ok_or(TopologyError::AllSeedsFailed(failures))
}

/// One seed: connect, authenticate, ask for the topology, parse it.
async fn query_seed(
    seed: &str,
    io_timeout: Duration,
    auth: Option<&(Option<String>, String)>,
    tls: Option<&ClientTls>,
) -> Result<SlotMap, SeedFailure> {
    let stream = match timeout(io_timeout, TcpStream::connect(seed)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(SeedFailure::Connect(e)),
        Err(_) => return Err(SeedFailure::Timeout("the TCP connection")),
    };
    let _ = stream.set_nodelay(true);
    let (mut stream, transport) = match tls {
        None => (Socket::Tcp(stream), Transport::Tcp),
        Some(tls) => match timeout(io_timeout, tls.connect(stream, seed)).await {
            Ok(Ok(socket)) => (socket, Transport::Tls),
            Ok(Err(e)) => return Err(SeedFailure::Connect(e)),
            Err(_) => return Err(SeedFailure::Timeout("the TLS handshake")),
        },
    };
    let mut buf = BytesMut::with_capacity(16 * 1024);

    if let Some((username, password)) = auth {
        let cmd = match username {
            Some(user) => write::command(b"AUTH", &[user.as_bytes(), password.as_bytes()]),
            None => write::command(b"AUTH", &[password.as_bytes()]),
        };
        if let Resp2Frame::Error(e) =
            request(&mut stream, &mut buf, &cmd, io_timeout, "the AUTH reply").await?
        {
            return Err(SeedFailure::Auth(e));
        }
    }

    let shards = write::command(b"CLUSTER", &[b"SHARDS"]);
    let shards_error = match request(
        &mut stream,
        &mut buf,
        &shards,
        io_timeout,
        "the CLUSTER SHARDS reply",
    )
    .await?
    {
        Resp2Frame::Error(e) => e,
        frame => {
            return SlotMap::from_cluster_shards_on(&frame, seed, transport)
                .map_err(to_seed_failure);
        }
    };
    if is_auth_error(&shards_error) {
        return Err(SeedFailure::Auth(shards_error));
    }

    let slots = write::command(b"CLUSTER", &[b"SLOTS"]);
    match request(
        &mut stream,
        &mut buf,
        &slots,
        io_timeout,
        "the CLUSTER SLOTS reply",
    )
    .await?
    {
        Resp2Frame::Error(slots_error) => Err(SeedFailure::Refused(format!(
            "CLUSTER SHARDS: {shards_error}; CLUSTER SLOTS: {slots_error}"
        ))),
        frame => SlotMap::from_cluster_slots(&frame, seed).map_err(to_seed_failure),
    }
}

fn to_seed_failure(e: TopologyError) -> SeedFailure {
    SeedFailure::Malformed(e.to_string())
}

/// `NOAUTH` (no credentials given) and `NOPERM` (the ACL user may not run the command) mean the
/// other command would fail the same way: say so instead of trying it.
fn is_auth_error(e: &str) -> bool {
    e.starts_with("NOAUTH") || e.starts_with("NOPERM") || e.starts_with("WRONGPASS")
}

/// Sends one command and reads one RESP2 reply, within `io_timeout`.
async fn request<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    cmd: &[u8],
    io_timeout: Duration,
    waiting_for: &'static str,
) -> Result<Resp2Frame, SeedFailure> {
    let exchange = async {
        stream.write_all(cmd).await.map_err(SeedFailure::Io)?;
        read_reply(stream, buf).await
    };
    match timeout(io_timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err(SeedFailure::Timeout(waiting_for)),
    }
}

/// Reads until `buf` holds one whole RESP2 frame, and removes it from `buf`. The decoder is fed
/// only replies from a cluster node, never client bytes (see ARCHITECTURE.md on its recursion).
async fn read_reply<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Resp2Frame, SeedFailure> {
    loop {
        if !buf.is_empty() {
            match redis_protocol::resp2::decode::decode(buf) {
                Ok(Some((frame, len))) => {
                    let _ = buf.split_to(len);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(e) => return Err(SeedFailure::Protocol(e.to_string())),
            }
        }
        if buf.len() >= MAX_REPLY_BYTES {
            return Err(SeedFailure::Protocol(format!(
                "reply larger than {MAX_REPLY_BYTES} bytes"
            )));
        }
        buf.reserve(16 * 1024);
        match stream.read_buf(buf).await {
            Ok(0) => {
                return Err(SeedFailure::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the node closed the connection",
                )));
            }
            Ok(_) => {}
            Err(e) => return Err(SeedFailure::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis_protocol::resp3::types::FrameMap;

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

    /// The same frame in RESP3: every flat key/value array becomes a map.
    fn to_resp3(frame: &Resp2Frame, as_map: bool) -> Resp3Frame {
        match frame {
            Resp2Frame::BulkString(b) => Resp3Frame::BlobString {
                data: b.clone(),
                attributes: None,
            },
            Resp2Frame::Integer(i) => Resp3Frame::Number {
                data: *i,
                attributes: None,
            },
            Resp2Frame::Array(items) if as_map => {
                let mut data = FrameMap::default();
                for pair in items.chunks(2) {
                    let value_is_map = matches!(
                        &pair[0],
                        Resp2Frame::BulkString(k) if k == b"nodes"
                    );
                    let value = match &pair[1] {
                        // "nodes" holds a list of maps; "slots" a list of numbers.
                        Resp2Frame::Array(nodes) if value_is_map => Resp3Frame::Array {
                            data: nodes.iter().map(|n| to_resp3(n, true)).collect(),
                            attributes: None,
                        },
                        other => to_resp3(other, false),
                    };
                    data.insert(to_resp3(&pair[0], false), value);
                }
                Resp3Frame::Map {
                    data,
                    attributes: None,
                }
            }
            Resp2Frame::Array(items) => Resp3Frame::Array {
                data: items.iter().map(|i| to_resp3(i, false)).collect(),
                attributes: None,
            },
            other => panic!("not used in these tests: {other:?}"),
        }
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
    fn shards_resp3_maps_give_the_same_map() {
        let resp2 = three_shards();
        // The outer list stays an array; each shard (and each node in it) becomes a map.
        let Resp2Frame::Array(shards) = &resp2 else {
            unreachable!()
        };
        let resp3 = Resp3Frame::Array {
            data: shards.iter().map(|s| to_resp3(s, true)).collect(),
            attributes: None,
        };
        assert!(
            matches!(&resp3, Resp3Frame::Array { data, .. } if matches!(data[0], Resp3Frame::Map { .. }))
        );
        let from3 = SlotMap::from_cluster_shards(&resp3, "127.0.0.1:7001").unwrap();
        let from2 = SlotMap::from_cluster_shards(&resp2, "127.0.0.1:7001").unwrap();
        assert_eq!(from2, from3);

        // And the Bytes-backed frame types.
        let bytes2 = resp2.clone().into_bytes_frame();
        assert_eq!(
            SlotMap::from_cluster_shards(&bytes2, "127.0.0.1:7001").unwrap(),
            from2
        );
        let bytes3 = resp3.into_bytes_frame();
        assert_eq!(
            SlotMap::from_cluster_shards(&bytes3, "127.0.0.1:7001").unwrap(),
            from2
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

    #[test]
    fn set_owner_follows_moved() {
        let mut map = SlotMap::from_cluster_shards(&three_shards(), "127.0.0.1:7001").unwrap();
        map.set_owner(100, NodeAddr::new("127.0.0.1", 7002));
        assert_eq!(map.owner(100).unwrap(), "127.0.0.1:7002");
        assert_eq!(map.owner(99).unwrap(), "127.0.0.1:7001");
        assert_eq!(map.shards().len(), 3);

        map.set_owner(101, NodeAddr::new("127.0.0.1", 7010));
        assert_eq!(map.owner(101).unwrap(), "127.0.0.1:7010");
        assert_eq!(map.shards().len(), 4);
        assert!(map.primaries().contains(&NodeAddr::new("127.0.0.1", 7010)));

        map.set_owner(16384, NodeAddr::new("127.0.0.1", 7010));
        assert_eq!(map.owner(16384), None);

        let mut empty = SlotMap::empty();
        assert_eq!(empty.assigned_slots(), 0);
        assert!(empty.primaries().is_empty());
        empty.set_owner(5, NodeAddr::new("h", 1));
        assert_eq!(empty.owner_of_key(b"x").is_some(), slot_of(b"x") == 5);
        assert_eq!(empty.owner(5).unwrap(), "h:1");
    }

    #[test]
    fn slot_of_matches_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
        assert_eq!(slot_of(b""), 0);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"{user1000}.followers"), slot_of(b"user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_ne!(slot_of(b"{}user1000"), slot_of(b""));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of_whole(b"foo{}{bar}"));
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
        assert_eq!(slot_of(b"foo{bar}{zap}"), slot_of(b"bar"));
    }

    fn slot_of_whole(key: &[u8]) -> u16 {
        // The key without any `{`: hashing it is hashing the whole thing.
        redis_protocol::redis_keyslot(key)
    }

    #[test]
    fn node_addr_formats_and_splits() {
        let a = NodeAddr::new("127.0.0.1", 7000);
        assert_eq!(a.as_str(), "127.0.0.1:7000");
        assert_eq!((a.host(), a.port()), ("127.0.0.1", 7000));
        let v6 = NodeAddr::new("::1", 7000);
        assert_eq!(v6.to_string(), "[::1]:7000");
        assert_eq!((v6.host(), v6.port()), ("::1", 7000));
        assert_eq!(NodeAddr::new("[::1]", 7000), v6);
        let h = NodeAddr::new("redis.example", 6379);
        assert_eq!((h.host(), h.port()), ("redis.example", 6379));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert_eq!(split_host_port("host"), ("host", None));
    }

    // --- discover() against scripted fake nodes --------------------------------------------

    /// A fake node: answers each command (matched by its arguments joined with spaces,
    /// upper-cased) from `script`; unknown commands get `-ERR unknown`. Returns its address.
    async fn fake_node(script: Vec<(&'static str, &'static str)>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            loop {
                let Ok((mut sock, _)) = listener.accept().await else {
                    return;
                };
                let script = script.clone();
                tokio::spawn(async move {
                    let mut buf = BytesMut::new();
                    loop {
                        let frame = match read_reply(&mut sock, &mut buf).await {
                            Ok(frame) => frame,
                            Err(_) => return,
                        };
                        let Resp2Frame::Array(args) = frame else {
                            return;
                        };
                        let line = args
                            .iter()
                            .map(|a| match a {
                                Resp2Frame::BulkString(b) => {
                                    String::from_utf8_lossy(b).into_owned()
                                }
                                _ => String::new(),
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                            .to_uppercase();
                        let reply = script
                            .iter()
                            .find(|(cmd, _)| *cmd == line)
                            .map(|(_, reply)| *reply)
                            .unwrap_or("-ERR unknown\r\n");
                        if reply == "HANG" {
                            std::future::pending::<()>().await;
                        }
                        if sock.write_all(reply.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    /// CLUSTER SLOTS for one primary on port 7001 with an unknown (null) endpoint.
    const SLOTS_ONE_NODE: &str = "*1\r\n*3\r\n:0\r\n:16383\r\n*3\r\n$-1\r\n:7001\r\n$2\r\nid\r\n";

    /// A port with nothing listening (bound, then released).
    fn dead_seed() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    }

    #[tokio::test]
    async fn discover_falls_back_to_cluster_slots() {
        let seed = fake_node(vec![
            ("CLUSTER SHARDS", "-ERR unknown subcommand 'SHARDS'\r\n"),
            ("CLUSTER SLOTS", SLOTS_ONE_NODE),
        ])
        .await;
        let map = discover(&[dead_seed(), seed], Duration::from_secs(2), None, None)
            .await
            .unwrap();
        assert!(map.is_complete());
        // The null endpoint became the seed's host.
        assert_eq!(map.owner(123).unwrap(), "127.0.0.1:7001");
    }

    #[tokio::test]
    async fn discover_authenticates_first() {
        let seed = fake_node(vec![
            ("AUTH KW SECRET", "+OK\r\n"),
            (
                "CLUSTER SHARDS",
                "*1\r\n*4\r\n$5\r\nslots\r\n*2\r\n:0\r\n:16383\r\n$5\r\nnodes\r\n*1\r\n*8\r\n\
                 $4\r\nport\r\n:7009\r\n$8\r\nendpoint\r\n$9\r\nlocalhost\r\n\
                 $4\r\nrole\r\n$6\r\nmaster\r\n$6\r\nhealth\r\n$6\r\nonline\r\n",
            ),
        ])
        .await;
        let auth = Some((Some("kw".to_string()), "secret".to_string()));
        let map = discover(
            std::slice::from_ref(&seed),
            Duration::from_secs(2),
            auth,
            None,
        )
        .await
        .unwrap();
        assert_eq!(map.owner(0).unwrap(), "localhost:7009");

        // Wrong password: the AUTH error is reported with the seed.
        let auth = Some((None, "wrong".to_string()));
        let err = discover(
            std::slice::from_ref(&seed),
            Duration::from_secs(2),
            auth,
            None,
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(&seed) && err.contains("authentication refused: ERR unknown"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn discover_names_every_seed_and_cause() {
        let dead = dead_seed();
        let not_cluster = fake_node(vec![
            (
                "CLUSTER SHARDS",
                "-ERR This instance has cluster support disabled\r\n",
            ),
            (
                "CLUSTER SLOTS",
                "-ERR This instance has cluster support disabled\r\n",
            ),
        ])
        .await;
        let empty = fake_node(vec![("CLUSTER SHARDS", "*0\r\n")]).await;
        let noauth = fake_node(vec![(
            "CLUSTER SHARDS",
            "-NOAUTH Authentication required.\r\n",
        )])
        .await;
        let garbage = fake_node(vec![("CLUSTER SHARDS", "+OK\r\n")]).await;
        let hangs = fake_node(vec![("CLUSTER SHARDS", "HANG")]).await;
        let seeds = vec![
            dead.clone(),
            not_cluster.clone(),
            empty.clone(),
            noauth.clone(),
            garbage.clone(),
            hangs.clone(),
        ];
        let err = discover(&seeds, Duration::from_millis(300), None, None)
            .await
            .unwrap_err();
        let TopologyError::AllSeedsFailed(failures) = &err else {
            panic!("{err:?}");
        };
        assert_eq!(failures.len(), 6);
        let text = err.to_string();
        for (seed, cause) in [
            (&dead, "cannot connect"),
            (
                &not_cluster,
                "CLUSTER SHARDS: ERR This instance has cluster support disabled; CLUSTER SLOTS: ERR This instance",
            ),
            (&empty, "knows no slot"),
            (&noauth, "authentication refused: NOAUTH"),
            (&garbage, "expected an array"),
            (&hangs, "timed out waiting for the CLUSTER SHARDS reply"),
        ] {
            assert!(
                text.contains(&format!("{seed}: ")),
                "{seed} missing in {text}"
            );
            let entry = failures.iter().find(|(s, _)| s == seed).unwrap();
            assert!(
                entry.1.to_string().contains(cause),
                "{seed}: {} lacks {cause}",
                entry.1
            );
        }

        assert!(matches!(
            discover(&[], Duration::from_secs(1), None, None).await,
            Err(TopologyError::NoSeeds)
        ));
    }

    #[tokio::test]
    async fn discover_prefers_a_complete_map() {
        // The first seed knows only half the slots, the second all of them.
        let partial = fake_node(vec![
            ("CLUSTER SHARDS", "-ERR no\r\n"),
            (
                "CLUSTER SLOTS",
                "*1\r\n*3\r\n:0\r\n:8191\r\n*2\r\n$9\r\n127.0.0.1\r\n:7001\r\n",
            ),
        ])
        .await;
        let complete = fake_node(vec![
            ("CLUSTER SHARDS", "-ERR no\r\n"),
            ("CLUSTER SLOTS", SLOTS_ONE_NODE),
        ])
        .await;
        let map = discover(
            &[partial.clone(), complete],
            Duration::from_secs(2),
            None,
            None,
        )
        .await
        .unwrap();
        assert!(map.is_complete());
        // Only a partial map anywhere: that one is returned.
        let map = discover(&[dead_seed(), partial], Duration::from_secs(2), None, None)
            .await
            .unwrap();
        assert_eq!(map.assigned_slots(), 8192);
    }
}
