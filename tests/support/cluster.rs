//! A real Redis Cluster for integration tests: [`RedisCluster`].
//!
//! `RedisCluster::start(3, 1)` starts six `redis-server --cluster-enabled yes` processes on free
//! loopback ports, each in the same private temporary directory, joins them with
//! `redis-cli --cluster create`, and returns once every node agrees on the topology. Dropping the
//! value kills every process (SIGKILL, then reaped), also when the test panics.
//!
//! A test uses it through the shared harness:
//!
//! ```ignore
//! mod support;
//! use support::cluster::RedisCluster;
//! ```
//!
//! Parallel tests are safe: each cluster has its own ports (the client port and the cluster bus
//! port are picked separately, `--cluster-port`, so no `port + 10000` arithmetic can collide or
//! overflow), its own directory, and talks only to its own nodes. A port that someone else took
//! between being picked and being bound makes that node exit at once; it is restarted on new
//! ports before the cluster is created.
//!
//! Every wait is bounded and panics with what it last saw, plus the tail of every node's log.
//! Ports are `u16` client ports; addresses are `"127.0.0.1:PORT"`.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::process::ChildProcess;
use super::{answers_ping, free_port, run_with_timeout, wait_until};

/// How long the whole cluster may take to be created and to agree on its topology.
pub const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a topology change (failover, end of a slot migration) may take to reach every node.
pub const CLUSTER_CHANGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one node may take to answer PING after being spawned.
const NODE_START_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for one `redis-cli` run or one command sent to a node.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Keys moved per `MIGRATE` call.
const MIGRATE_BATCH: usize = 100;

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    bus_port: u16,
    /// The TLS client port of a cluster started with [`RedisCluster::start_tls`].
    tls_port: Option<u16>,
    /// The 40-character cluster node id (`CLUSTER MYID`).
    id: String,
    /// `None` once the node has been killed; its log stays in the cluster's directory.
    process: Option<ChildProcess>,
}

/// A running Redis Cluster, killed on drop.
pub struct RedisCluster {
    nodes: Vec<Node>,
    primaries: usize,
    replicas_per_primary: usize,
    dir: tempfile::TempDir,
}

impl RedisCluster {
    /// Starts `primaries * (1 + replicas_per_primary)` nodes and makes a cluster of them with
    /// `redis-cli --cluster create ... --cluster-replicas N`. Returns when every node reports
    /// `cluster_state:ok`, all nodes agree on roles and slots, and every replica's link to its
    /// primary is up. Panics (after killing everything) when that takes longer than
    /// [`CLUSTER_READY_TIMEOUT`].
    ///
    /// `redis-cli` needs at least 3 primaries.
    pub fn start(primaries: usize, replicas_per_primary: usize) -> Self {
        Self::start_nodes(primaries, replicas_per_primary, None)
    }

    /// [`start`](Self::start) for a cluster that also speaks TLS with the certificates of
    /// `files`: every node keeps its plain port (which this harness uses) and listens for TLS
    /// clients on a port of its own ([`tls_seeds`](Self::tls_seeds)), with `tls-cluster yes`,
    /// so that the cluster itself tells TLS clients the TLS ports (in `CLUSTER SHARDS` as
    /// `tls-port`, and in MOVED and ASK).
    pub fn start_tls(
        primaries: usize,
        replicas_per_primary: usize,
        files: &super::tls::TlsFiles,
    ) -> Self {
        Self::start_nodes(primaries, replicas_per_primary, Some(files))
    }

    fn start_nodes(
        primaries: usize,
        replicas_per_primary: usize,
        tls: Option<&super::tls::TlsFiles>,
    ) -> Self {
        assert!(
            primaries >= 3,
            "redis-cli --cluster create needs at least 3 primaries, not {primaries}"
        );
        let dir = tempfile::tempdir().expect("tempdir for the cluster");
        let count = primaries * (1 + replicas_per_primary);
        let mut cluster = RedisCluster {
            nodes: Vec::with_capacity(count),
            primaries,
            replicas_per_primary,
            dir,
        };
        for _ in 0..count {
            let node = start_node(cluster.dir.path(), tls);
            cluster.nodes.push(node);
        }
        for i in 0..cluster.nodes.len() {
            let port = cluster.nodes[i].port;
            let id = match query_string(port, &["CLUSTER", "MYID"]) {
                Ok(id) => id,
                Err(e) => cluster.fail(&format!("CLUSTER MYID on node {port}: {e}")),
            };
            cluster.nodes[i].id = id;
        }

        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster").arg("create");
        for node in &cluster.nodes {
            cmd.arg(format!("127.0.0.1:{}", node.port));
        }
        cmd.args(["--cluster-replicas", &replicas_per_primary.to_string()])
            .arg("--cluster-yes");
        let out = run_with_timeout(&mut cmd, COMMAND_TIMEOUT);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        if !out.status.success() || !stdout.contains("All 16384 slots covered") {
            cluster.fail(&format!(
                "redis-cli --cluster create failed ({}):\n{stdout}{stderr}",
                out.status
            ));
        }
        cluster.nudge_replication_offsets();
        if let Err(last) = cluster.try_wait_stable(CLUSTER_READY_TIMEOUT) {
            cluster.fail(&format!(
                "the cluster did not become ready within {CLUSTER_READY_TIMEOUT:?}: {last}"
            ));
        }
        cluster
    }

    /// The TLS addresses of the primaries, for a cluster from [`start_tls`](Self::start_tls).
    pub fn tls_seeds(&self) -> Vec<String> {
        let primaries: Vec<u16> = self.primaries().into_iter().map(|(_, p)| p).collect();
        self.nodes
            .iter()
            .filter(|n| primaries.contains(&n.port))
            .map(|n| format!("127.0.0.1:{}", n.tls_port.expect("a TLS cluster")))
            .collect()
    }

    /// The TLS port of the node whose plain port is `port`.
    pub fn tls_port_of(&self, port: u16) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .and_then(|n| n.tls_port)
            .expect("a node of a TLS cluster")
    }

    /// Addresses of every running node, primaries first: seed nodes for keyward or a client.
    pub fn seeds(&self) -> Vec<String> {
        let primaries: Vec<u16> = self.primaries().into_iter().map(|(_, p)| p).collect();
        let mut ports = primaries.clone();
        ports.extend(
            self.alive_ports()
                .into_iter()
                .filter(|p| !primaries.contains(p)),
        );
        ports.into_iter().map(addr).collect()
    }

    /// The primaries that serve slots, as `("127.0.0.1:PORT", PORT)`, in the order of their first
    /// slot (from `CLUSTER SLOTS` on a running node).
    pub fn primaries(&self) -> Vec<(String, u16)> {
        let ranges = self.slot_ranges();
        let mut seen = Vec::new();
        for (_, _, port) in ranges {
            if !seen.contains(&port) {
                seen.push(port);
            }
        }
        seen.into_iter().map(|p| (addr(p), p)).collect()
    }

    /// Every running node that is a replica, by port.
    pub fn replicas(&self) -> Vec<u16> {
        self.alive_ports()
            .into_iter()
            .filter(|&p| self.role_of(p) == "slave")
            .collect()
    }

    /// The running replicas of `primary_port`, by port.
    pub fn replicas_of(&self, primary_port: u16) -> Vec<u16> {
        let primary_id = self.node_id(primary_port);
        let view = self.nodes_view(self.any_alive_port());
        self.alive_ports()
            .into_iter()
            .filter(|&p| {
                view.get(self.node_id(p))
                    .is_some_and(|n| n.role == "slave" && n.master_id == primary_id)
            })
            .collect()
    }

    /// The primary `replica_port` replicates from, by port (as that replica itself says).
    pub fn primary_of(&self, replica_port: u16) -> u16 {
        let view = self.nodes_view(replica_port);
        let me = &view[self.node_id(replica_port)];
        assert_eq!(me.role, "slave", "node {replica_port} is not a replica");
        self.port_of_id(&me.master_id)
    }

    /// Client ports of every node ever started, including killed ones.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Client ports of the nodes that are still running.
    pub fn alive_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.process.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The cluster node id of the node on `port`.
    pub fn node_id(&self, port: u16) -> &str {
        &self.node(port).id
    }

    /// `redis-cli -h 127.0.0.1 -p PORT ARGS...`; returns its standard output (error replies
    /// included: redis-cli prints them on stdout when it is not writing to a terminal).
    pub fn node_cli(&self, port: u16, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args([
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "--no-auth-warning",
        ])
        .args(args);
        text(&run_with_timeout(&mut cmd, COMMAND_TIMEOUT).stdout)
    }

    /// A blocking redis-rs connection straight to one node, with 10 s read/write timeouts.
    pub fn conn(&self, port: u16) -> redis::Connection {
        connect(port).unwrap_or_else(|e| panic!("cannot connect to cluster node {port}: {e}"))
    }

    /// Kills the node on `port` (SIGKILL) and waits for it to exit. Its peers notice after the
    /// node timeout (2 s); if it was a primary, one of its replicas is then elected in its place
    /// (wait for that with [`RedisCluster::wait_stable`]).
    pub fn kill_node(&mut self, port: u16) {
        let node = self.node_mut(port);
        let mut process = node
            .process
            .take()
            .unwrap_or_else(|| panic!("node {port} was already killed"));
        process.kill();
    }

    /// The port of the primary that serves `slot`, from `CLUSTER SLOTS` on the first running
    /// node. (Once a migration or failover helper has returned, every node agrees.)
    pub fn owner_of_slot(&self, slot: u16) -> u16 {
        let port = self.any_alive_port();
        match owner_seen_by(port, slot) {
            Ok(Some(owner)) => owner,
            Ok(None) => panic!("node {port} says no primary serves slot {slot}"),
            Err(e) => panic!("CLUSTER SLOTS on node {port}: {e}"),
        }
    }

    /// `n` key names `prefix<i>` (i = 0, 1, ...) that the primary on `primary` serves, per
    /// `CLUSTER KEYSLOT` and `CLUSTER SLOTS` on that node.
    pub fn keys_on(&self, primary: u16, prefix: &str, n: usize) -> Vec<String> {
        let mut conn = self.conn(primary);
        let mut out = Vec::new();
        let mut i = 0;
        while out.len() < n {
            let key = format!("{prefix}{i}");
            i += 1;
            assert!(i < 100_000, "no {n} keys {prefix}N on node {primary}");
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&key)
                .query(&mut conn)
                .expect("CLUSTER KEYSLOT");
            if self.owner_of_slot(slot) == primary {
                out.push(key);
            }
        }
        out
    }

    /// Makes sure the replicas of the primary on `primary` have everything written so far: a
    /// write of ours there (in the slot of `key`, which it serves), then `WAIT 1`.
    pub fn sync_replica(&self, primary: u16, key: &str) {
        let mut conn = self.conn(primary);
        let _: () = redis::cmd("SET")
            .arg(format!("{{{key}}}-sync"))
            .arg("1")
            .query(&mut conn)
            .expect("SET on the primary");
        let acked: i64 = redis::cmd("WAIT")
            .arg(1)
            .arg(5000)
            .query(&mut conn)
            .expect("WAIT");
        assert_eq!(acked, 1, "the replica of {primary} did not acknowledge");
    }

    /// `(first slot, last slot, primary port)` for every range, from `CLUSTER SLOTS` on the first
    /// running node, in slot order.
    pub fn slot_ranges(&self) -> Vec<(u16, u16, u16)> {
        let port = self.any_alive_port();
        cluster_slots(port).unwrap_or_else(|e| panic!("CLUSTER SLOTS on node {port}: {e}"))
    }

    /// Waits until the cluster is stable (see [`RedisCluster::start`]; nodes that were killed are
    /// left out, and every slot must be served by a running primary). Panics on timeout.
    pub fn wait_stable(&self, timeout: Duration) {
        if let Err(last) = self.try_wait_stable(timeout) {
            self.fail(&format!(
                "the cluster did not become stable within {timeout:?}: {last}"
            ));
        }
    }

    // --- slot migration, step by step ----------------------------------------------------------

    /// Moves `slot` from primary `from` to primary `to` the way `redis-cli --cluster reshard`
    /// does: [`setslot_importing`](Self::setslot_importing),
    /// [`setslot_migrating`](Self::setslot_migrating), [`migrate_keys`](Self::migrate_keys) until
    /// the slot is empty on `from`, then [`setslot_node`](Self::setslot_node). Returns how many
    /// keys were moved.
    pub fn migrate_slot(&self, slot: u16, from: u16, to: u16) -> usize {
        self.setslot_importing(slot, from, to);
        self.setslot_migrating(slot, from, to);
        let moved = self.migrate_keys(slot, from, to, usize::MAX);
        self.setslot_node(slot, from, to);
        moved
    }

    /// Step 1: `CLUSTER SETSLOT slot IMPORTING <from id>` on `to`. From now on `to` accepts
    /// commands for the slot that come after `ASKING`.
    pub fn setslot_importing(&self, slot: u16, from: u16, to: u16) {
        let from_id = self.node_id(from).to_string();
        self.expect_ok(
            to,
            &[
                "CLUSTER",
                "SETSLOT",
                &slot.to_string(),
                "IMPORTING",
                &from_id,
            ],
        );
    }

    /// Step 2: `CLUSTER SETSLOT slot MIGRATING <to id>` on `from`. From now on `from` answers
    /// `-ASK slot 127.0.0.1:to` for keys of the slot it no longer has.
    pub fn setslot_migrating(&self, slot: u16, from: u16, to: u16) {
        let to_id = self.node_id(to).to_string();
        self.expect_ok(
            from,
            &["CLUSTER", "SETSLOT", &slot.to_string(), "MIGRATING", &to_id],
        );
    }

    /// Step 3: moves up to `max_keys` keys of `slot` from `from` to `to` (`CLUSTER
    /// GETKEYSINSLOT`, then `MIGRATE ... REPLACE KEYS ...` in batches). Returns how many keys were
    /// handed to MIGRATE. Call it with a small `max_keys` to leave the slot half-migrated, so that
    /// some keys answer from `from` and others with ASK.
    pub fn migrate_keys(&self, slot: u16, from: u16, to: u16, max_keys: usize) -> usize {
        let mut moved = 0;
        while moved < max_keys {
            let batch = MIGRATE_BATCH.min(max_keys - moved);
            let keys: Vec<Vec<u8>> = query(
                from,
                &[
                    "CLUSTER",
                    "GETKEYSINSLOT",
                    &slot.to_string(),
                    &batch.to_string(),
                ],
            )
            .unwrap_or_else(|e| self.fail(&format!("GETKEYSINSLOT {slot} on {from}: {e}")));
            if keys.is_empty() {
                break;
            }
            // With `tls-cluster yes` a node migrates over TLS: to the TLS port.
            let to_port = self.node(to).tls_port.unwrap_or(to);
            let mut cmd = redis::cmd("MIGRATE");
            cmd.arg("127.0.0.1")
                .arg(to_port)
                .arg("")
                .arg(0)
                .arg(COMMAND_TIMEOUT.as_millis() as u64)
                .arg("REPLACE")
                .arg("KEYS");
            for key in &keys {
                cmd.arg(key.as_slice());
            }
            let reply: Result<redis::Value, _> =
                connect(from).and_then(|mut c| cmd.query(&mut c).map_err(|e| e.to_string()));
            match reply {
                Ok(_) => {}
                // Every key of the batch was deleted since GETKEYSINSLOT: nothing to move.
                Err(e) if e.contains("NOKEY") => {}
                Err(e) => self.fail(&format!(
                    "MIGRATE of {} keys of slot {slot} from {from} to {to}: {e}",
                    keys.len()
                )),
            }
            moved += keys.len();
        }
        moved
    }

    /// Step 4: `CLUSTER SETSLOT slot NODE <to id>` on `to`, then on `from`, then on every other
    /// running primary (the order Redis documents), and waits until every running node says `to`
    /// serves the slot.
    pub fn setslot_node(&self, slot: u16, from: u16, to: u16) {
        let to_id = self.node_id(to).to_string();
        let args = ["CLUSTER", "SETSLOT", &slot.to_string(), "NODE", &to_id];
        self.expect_ok(to, &args);
        self.expect_ok(from, &args);
        for (_, port) in self.primaries() {
            if port != to && port != from {
                self.expect_ok(port, &args);
            }
        }
        let mut last = String::new();
        let agreed = wait_until(CLUSTER_CHANGE_TIMEOUT, || {
            for port in self.alive_ports() {
                match owner_seen_by(port, slot) {
                    Ok(Some(owner)) if owner == to => {}
                    other => {
                        last = format!("node {port} says slot {slot} is served by {other:?}");
                        return false;
                    }
                }
            }
            true
        });
        if !agreed {
            self.fail(&format!(
                "after SETSLOT {slot} NODE {to}, the nodes did not agree within \
                 {CLUSTER_CHANGE_TIMEOUT:?}: {last}"
            ));
        }
    }

    // --- failover ------------------------------------------------------------------------------

    /// Promotes the replica on `replica_port` with `CLUSTER FAILOVER` (or `CLUSTER FAILOVER
    /// FORCE` when its primary is unreachable), waits until it is a primary serving its old
    /// primary's slots and the cluster is stable again. Panics after [`CLUSTER_CHANGE_TIMEOUT`].
    pub fn failover(&self, replica_port: u16) {
        let old_primary = self.primary_of(replica_port);
        let link_up = query_string(replica_port, &["INFO", "replication"])
            .map(|info| info.contains("master_link_status:up"))
            .unwrap_or(false);
        let mut args = vec!["CLUSTER", "FAILOVER"];
        if !link_up {
            args.push("FORCE");
        }
        self.expect_ok(replica_port, &args);
        let mut last = String::new();
        let done = wait_until(CLUSTER_CHANGE_TIMEOUT, || {
            if self.role_of(replica_port) != "master" {
                last = format!(
                    "node {replica_port} is still a replica of {old_primary} (`{}`)",
                    args.join(" ")
                );
                return false;
            }
            match self.stable_state() {
                Ok(()) => true,
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        if !done {
            self.fail(&format!(
                "failover of {replica_port} did not complete within {CLUSTER_CHANGE_TIMEOUT:?}: \
                 {last}"
            ));
        }
    }

    // --- internals -----------------------------------------------------------------------------

    fn node(&self, port: u16) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node of this cluster listens on port {port}"))
    }

    fn node_mut(&mut self, port: u16) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no node of this cluster listens on port {port}"))
    }

    fn port_of_id(&self, id: &str) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .map(|n| n.port)
            .unwrap_or_else(|| panic!("no node of this cluster has id {id}"))
    }

    fn any_alive_port(&self) -> u16 {
        *self
            .alive_ports()
            .first()
            .expect("every node of the cluster was killed")
    }

    /// `master` or `slave`, as the node itself says in `CLUSTER NODES`.
    fn role_of(&self, port: u16) -> String {
        self.nodes_view(port)
            .get(self.node_id(port))
            .map(|n| n.role.clone())
            .unwrap_or_default()
    }

    fn nodes_view(&self, port: u16) -> BTreeMap<String, NodeView> {
        query_string(port, &["CLUSTER", "NODES"])
            .map(|text| parse_cluster_nodes(&text))
            .unwrap_or_else(|e| self.fail(&format!("CLUSTER NODES on node {port}: {e}")))
    }

    fn expect_ok(&self, port: u16, args: &[&str]) {
        match query::<redis::Value>(port, args) {
            Ok(_) => {}
            Err(e) => self.fail(&format!("`{}` on node {port}: {e}", args.join(" "))),
        }
    }

    /// `CLUSTER SHARDS` calls a replica `loading` until its peers have heard of a replication
    /// offset above 0, which on an idle new cluster takes up to `repl-ping-replica-period` (10 s).
    /// Once every replica is linked, a `FLUSHALL` on each (still empty) primary moves the offsets
    /// at once.
    fn nudge_replication_offsets(&self) {
        let linked = wait_until(CLUSTER_READY_TIMEOUT, || {
            self.alive_ports().into_iter().all(|port| {
                query_string(port, &["INFO", "replication"]).is_ok_and(|info| {
                    info.contains("role:master") || info.contains("master_link_status:up")
                })
            })
        });
        if !linked {
            // try_wait_stable reports what is wrong.
            return;
        }
        for port in self.alive_ports() {
            if self.role_of(port) == "master" {
                self.expect_ok(port, &["FLUSHALL"]);
            }
        }
    }

    fn try_wait_stable(&self, timeout: Duration) -> Result<(), String> {
        let mut last = String::from("(not checked yet)");
        if wait_until(timeout, || match self.stable_state() {
            Ok(()) => true,
            Err(e) => {
                last = e;
                false
            }
        }) {
            Ok(())
        } else {
            Err(last)
        }
    }

    /// `Ok` when the running nodes form a healthy cluster that they all see the same way;
    /// otherwise the first thing found wrong.
    fn stable_state(&self) -> Result<(), String> {
        let alive = self.alive_ports();
        let alive_ids: BTreeSet<&str> = alive.iter().map(|&p| self.node_id(p)).collect();
        let mut reference: Option<(u16, BTreeMap<String, NodeView>)> = None;
        for &port in &alive {
            let info = query_string(port, &["CLUSTER", "INFO"])
                .map_err(|e| format!("CLUSTER INFO on node {port}: {e}"))?;
            for needed in [
                "cluster_state:ok",
                "cluster_slots_assigned:16384",
                "cluster_slots_ok:16384",
            ] {
                if !info.lines().any(|l| l.trim() == needed) {
                    return Err(format!("node {port} lacks {needed}:\n{info}"));
                }
            }
            let text = query_string(port, &["CLUSTER", "NODES"])
                .map_err(|e| format!("CLUSTER NODES on node {port}: {e}"))?;
            let mut view = parse_cluster_nodes(&text);
            for id in &alive_ids {
                match view.get(*id) {
                    None => return Err(format!("node {port} does not know node {id} yet")),
                    Some(n) if !n.healthy => {
                        return Err(format!(
                            "node {port} sees running node {id} as `{}` ({})",
                            n.flags, n.link
                        ));
                    }
                    Some(_) => {}
                }
            }
            // Killed nodes: whatever the view says about them, they must serve no slot.
            for (id, n) in &view {
                if !alive_ids.contains(id.as_str()) && n.role == "master" && !n.slots.is_empty() {
                    return Err(format!(
                        "node {port} still sees killed node {id} as the primary of {:?}",
                        n.slots
                    ));
                }
            }
            view.retain(|id, _| alive_ids.contains(id.as_str()));
            // Replicas must be connected to a running primary.
            let me = &view[self.node_id(port)];
            if me.role == "slave" {
                if !alive_ids.contains(me.master_id.as_str()) {
                    return Err(format!("replica {port} follows a killed primary"));
                }
                let repl = query_string(port, &["INFO", "replication"])
                    .map_err(|e| format!("INFO replication on node {port}: {e}"))?;
                if !repl.contains("master_link_status:up") {
                    return Err(format!("replica {port} is not in sync yet:\n{repl}"));
                }
            }
            // CLUSTER SHARDS must call every running node `online` (not `loading`/`fail`).
            let health = shards_health(port)?;
            for id in &alive_ids {
                match health.get(*id).map(String::as_str) {
                    Some("online") => {}
                    other => {
                        return Err(format!(
                            "CLUSTER SHARDS on node {port} gives node {id} health {other:?}"
                        ));
                    }
                }
            }
            match &reference {
                None => reference = Some((port, view)),
                Some((ref_port, ref_view)) => {
                    if *ref_view != view {
                        return Err(format!(
                            "nodes {ref_port} and {port} disagree:\n{ref_view:#?}\n{view:#?}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Panics with `msg` and the end of every node's log. The cluster is killed when the value
    /// is dropped during unwinding.
    fn fail(&self, msg: &str) -> ! {
        let mut logs = String::new();
        for node in &self.nodes {
            let log = std::fs::read(node_log(self.dir.path(), node.port))
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(15)..].join("\n");
            logs.push_str(&format!(
                "\n--- node {} (bus {}, {}) log tail ---\n{tail}",
                node.port,
                node.bus_port,
                if node.process.is_some() {
                    "running"
                } else {
                    "killed"
                }
            ));
        }
        panic!("RedisCluster: {msg}{logs}");
    }
}

// ---------------------------------------------------------------------------------------------
// Starting one node
// ---------------------------------------------------------------------------------------------

/// A free client port and a free bus port, then `redis-server` on them; retried on new ports when
/// the node exits at once (a port taken in between by someone else).
fn start_node(dir: &Path, tls: Option<&super::tls::TlsFiles>) -> Node {
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port();
        let mut bus_port = free_port();
        while bus_port == port {
            bus_port = free_port();
        }
        let tls = tls.map(|files| {
            let mut tls_port = free_port();
            while tls_port == port || tls_port == bus_port {
                tls_port = free_port();
            }
            (tls_port, files)
        });
        match try_start_node(dir, port, bus_port, tls) {
            Ok(node) => return node,
            Err(e) => last_error = e,
        }
    }
    panic!("RedisCluster: a cluster node did not start after 5 attempts: {last_error}");
}

fn try_start_node(
    dir: &Path,
    port: u16,
    bus_port: u16,
    tls: Option<(u16, &super::tls::TlsFiles)>,
) -> Result<Node, String> {
    let mut command = Command::new("redis-server");
    if let Some((tls_port, files)) = tls {
        // TLS for clients on tls_port (no client certificate asked for) and for the cluster
        // bus, where Redis always asks for one: a node connecting to a peer presents the
        // client certificate (the server one is for server authentication only).
        command
            .args(["--tls-port", &tls_port.to_string()])
            .args(["--tls-cluster", "yes"])
            .args(["--tls-auth-clients", "no"])
            .args(["--tls-cert-file", &files.server_cert()])
            .args(["--tls-key-file", &files.server_key()])
            .args(["--tls-client-cert-file", &files.client_cert()])
            .args(["--tls-client-key-file", &files.client_key()])
            .args(["--tls-ca-cert-file", &files.ca()]);
    }
    command
        .args(["--port", &port.to_string()])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-port", &bus_port.to_string()])
        .arg("--cluster-config-file")
        .arg(dir.join(format!("nodes-{port}.conf")))
        .args(["--cluster-node-timeout", "2000"])
        // A replica may always be promoted, however long it was cut off: tests kill primaries.
        .args(["--cluster-replica-validity-factor", "0"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--bind", "127.0.0.1"])
        .arg("--dir")
        .arg(dir)
        .args(["--daemonize", "no"]);
    let mut process = ChildProcess::spawn(
        format!("cluster node redis-server on port {port} (bus {bus_port})"),
        &mut command,
        node_log(dir, port),
    )
    .map_err(|e| format!("{e} (is redis-server installed?)"))?;
    process.wait_ready("answer PING", NODE_START_TIMEOUT, || answers_ping(port))?;
    Ok(Node {
        port,
        bus_port,
        tls_port: tls.map(|(tls_port, _)| tls_port),
        id: String::new(),
        process: Some(process),
    })
}

/// The log file of the node on `port`, in the cluster's directory.
fn node_log(dir: &Path, port: u16) -> std::path::PathBuf {
    dir.join(format!("node-{port}.log"))
}

/// Output bytes as text.
fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

// ---------------------------------------------------------------------------------------------
// Talking to one node
// ---------------------------------------------------------------------------------------------

fn connect(port: u16) -> Result<redis::Connection, String> {
    let client =
        redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .map_err(|e| e.to_string())?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    conn.set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// One command on a fresh connection; an error reply is an `Err` with Redis's text.
fn query<T: redis::FromRedisValue>(port: u16, args: &[&str]) -> Result<T, String> {
    let mut conn = connect(port)?;
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut conn).map_err(|e| e.to_string())
}

fn query_string(port: u16, args: &[&str]) -> Result<String, String> {
    query::<String>(port, args).map(|s| s.trim().to_string())
}

/// `CLUSTER SLOTS` as `(first slot, last slot, primary port)`, in slot order.
fn cluster_slots(port: u16) -> Result<Vec<(u16, u16, u16)>, String> {
    let reply: redis::Value = query(port, &["CLUSTER", "SLOTS"])?;
    let redis::Value::Array(entries) = reply else {
        return Err(format!("CLUSTER SLOTS is not an array: {reply:?}"));
    };
    let mut out = Vec::new();
    for entry in entries {
        let shape = || format!("unexpected CLUSTER SLOTS entry {entry:?}");
        let redis::Value::Array(items) = &entry else {
            return Err(shape());
        };
        let (Some(redis::Value::Int(start)), Some(redis::Value::Int(end))) =
            (items.first(), items.get(1))
        else {
            return Err(shape());
        };
        let Some(redis::Value::Array(primary)) = items.get(2) else {
            return Err(shape());
        };
        let Some(redis::Value::Int(primary_port)) = primary.get(1) else {
            return Err(shape());
        };
        out.push((*start as u16, *end as u16, *primary_port as u16));
    }
    out.sort_unstable();
    Ok(out)
}

/// The primary that serves `slot` according to the node on `port`.
fn owner_seen_by(port: u16, slot: u16) -> Result<Option<u16>, String> {
    Ok(cluster_slots(port)?
        .into_iter()
        .find(|(start, end, _)| (*start..=*end).contains(&slot))
        .map(|(_, _, owner)| owner))
}

/// `CLUSTER SHARDS` on `port` as node id → `health` (RESP2: every map is a flat key/value array).
fn shards_health(port: u16) -> Result<BTreeMap<String, String>, String> {
    fn text(v: &redis::Value) -> Option<String> {
        match v {
            redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            redis::Value::SimpleString(s) => Some(s.clone()),
            _ => None,
        }
    }
    fn get<'v>(pairs: &'v [redis::Value], key: &str) -> Option<&'v redis::Value> {
        pairs
            .chunks(2)
            .find(|kv| kv.len() == 2 && text(&kv[0]).as_deref() == Some(key))
            .map(|kv| &kv[1])
    }
    let reply: redis::Value = query(port, &["CLUSTER", "SHARDS"])?;
    let redis::Value::Array(shards) = &reply else {
        return Err(format!("CLUSTER SHARDS is not an array: {reply:?}"));
    };
    let mut out = BTreeMap::new();
    for shard in shards {
        let redis::Value::Array(fields) = shard else {
            return Err(format!("unexpected CLUSTER SHARDS entry {shard:?}"));
        };
        let Some(redis::Value::Array(nodes)) = get(fields, "nodes") else {
            return Err(format!("CLUSTER SHARDS entry without nodes: {shard:?}"));
        };
        for node in nodes {
            let redis::Value::Array(node) = node else {
                return Err(format!("unexpected CLUSTER SHARDS node {node:?}"));
            };
            if let (Some(id), Some(health)) = (
                get(node, "id").and_then(text),
                get(node, "health").and_then(text),
            ) {
                out.insert(id, health);
            }
        }
    }
    Ok(out)
}

/// One line of `CLUSTER NODES`, reduced to what every node should agree on.
#[derive(Debug, Clone)]
struct NodeView {
    /// `master` or `slave`.
    role: String,
    /// The primary's id for a replica; `-` for a primary.
    master_id: String,
    /// Slot ranges as printed (`0-5460`, `7000`); migration markers (`[...]`) left out, since
    /// only the node itself shows them.
    slots: Vec<String>,
    /// Flags without `myself`, and the link state: for messages only.
    flags: String,
    link: String,
    healthy: bool,
}

/// Two views agree when roles, primaries and slots agree; flags and link state are seen
/// differently from each node and do not count.
impl PartialEq for NodeView {
    fn eq(&self, other: &Self) -> bool {
        self.role == other.role && self.master_id == other.master_id && self.slots == other.slots
    }
}

/// `CLUSTER NODES`: `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot>...`,
/// keyed by node id. `healthy` is false for a node flagged `fail`, `fail?`, `handshake` or
/// `noaddr`, or whose link is down.
fn parse_cluster_nodes(text: &str) -> BTreeMap<String, NodeView> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let flags: Vec<&str> = fields[2].split(',').collect();
        let role = if flags.contains(&"master") {
            "master"
        } else if flags.contains(&"slave") {
            "slave"
        } else {
            "unknown"
        };
        let myself = flags.contains(&"myself");
        let healthy = !flags
            .iter()
            .any(|f| matches!(*f, "fail" | "fail?" | "handshake" | "noaddr"))
            && (myself || fields[7] == "connected");
        out.insert(
            fields[0].to_string(),
            NodeView {
                role: role.to_string(),
                master_id: fields[3].to_string(),
                slots: fields[8..]
                    .iter()
                    .filter(|s| !s.starts_with('['))
                    .map(|s| s.to_string())
                    .collect(),
                flags: fields[2].replace("myself,", ""),
                link: fields[7].to_string(),
                healthy,
            },
        );
    }
    out
}
