//! Redis Sentinel for integration tests: [`SentinelDeployment`].
//!
//! `SentinelDeployment::start()` starts a primary and two replicas (`redis-server --replicaof`),
//! waits until both replicas are in sync, then starts three sentinels (`redis-server CONF
//! --sentinel`), each with its own configuration file in the deployment's temporary directory
//! (sentinels rewrite that file, so each needs a writable one of its own):
//!
//! ```text
//! port S
//! sentinel resolve-hostnames no
//! sentinel monitor mymaster 127.0.0.1 PRIMARY 2
//! sentinel down-after-milliseconds mymaster 1000
//! sentinel failover-timeout mymaster 5000
//! sentinel parallel-syncs mymaster 1
//! ```
//!
//! It returns once every sentinel sees the primary, both replicas and the two other sentinels,
//! so that a failover (forced, or after the primary dies) can start at once. Every process is on
//! a free loopback port and is killed (SIGKILL, then reaped) when the value is dropped, also when
//! the test panics. Every wait is bounded and panics with what it last saw and the tail of every
//! process's log.
//!
//! The data nodes run with `repl-diskless-sync-delay 0`, so that a replica that needs a full
//! resynchronisation after a failover gets it at once instead of five seconds later.
//!
//! Ports are `u16` client ports; addresses are `"127.0.0.1:PORT"`.
//!
//! `SentinelDeployment::start_tls()` starts the same deployment speaking TLS only, with the
//! certificates of a fresh [`TlsFiles`] (a CA and a server certificate for `localhost` /
//! `127.0.0.1`): every data node has `--port 0 --tls-port P --tls-replication yes` (the
//! replicas replicate over TLS and announce their TLS port), every sentinel has `port 0`,
//! `tls-port S` and `tls-replication yes` in its configuration (so it talks TLS to the data
//! nodes and to the other sentinels, and announces its TLS port), and none asks for a client
//! certificate (`tls-auth-clients no`). The ports this harness gives out are then the TLS
//! ports, and its helpers (`cli`, `get`, the waits) talk TLS trusting the CA.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::ChildProcess;
use super::tls::{TlsClient, TlsFiles};
use super::{Keyward, Reply, answers_ping, free_port, resp_str, run_with_timeout, wait_until};

/// The name the sentinels monitor the primary under.
pub const MASTER_NAME: &str = "mymaster";
/// How long the deployment may take to start and be seen whole by every sentinel.
pub const DEPLOYMENT_READY_TIMEOUT: Duration = Duration::from_secs(40);
/// How long the sentinels may take to elect and announce a new primary (a forced failover, or
/// a failover after the primary died: 1 s to notice, then an election that may have to be
/// retried once after `2 * failover-timeout`).
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one process may take to answer PING after being spawned.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for one `redis-cli` run.
const CLI_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the sentinels are polled while waiting for a failover.
const POLL: Duration = Duration::from_millis(50);

/// One `redis-server` that stores data (the primary or a replica).
struct DataNode {
    port: u16,
    /// `None` once killed; its log stays in the deployment's directory.
    process: Option<ChildProcess>,
}

/// One `redis-server --sentinel`.
struct Sentinel {
    port: u16,
    process: Option<ChildProcess>,
    conf: PathBuf,
}

/// What a failover changed, as the sentinels tell it.
#[derive(Debug, Clone, Copy)]
pub struct Switch {
    /// The primary before the failover.
    pub old: u16,
    /// The primary the sentinels elected.
    pub new: u16,
    /// When the first sentinel was seen naming `new` (`SENTINEL GET-MASTER-ADDR-BY-NAME`): the
    /// moment the sentinels switched, as far as a client polling them can tell (at most one
    /// poll, 50 ms, late).
    pub at: Instant,
    /// When every running sentinel named `new` and `new` itself said `ROLE` master.
    pub settled: Instant,
}

/// A primary, two replicas and three sentinels monitoring them as [`MASTER_NAME`]; killed on
/// drop.
pub struct SentinelDeployment {
    nodes: Vec<DataNode>,
    sentinels: Vec<Sentinel>,
    /// Sentinels with a view of their own ([`SentinelDeployment::start_stale_sentinel`]).
    extra_sentinels: Vec<Sentinel>,
    /// `requirepass` (and `masterauth`) of the data nodes, if any.
    data_password: Option<String>,
    /// `requirepass` of the sentinels, if any.
    sentinel_password: Option<String>,
    /// The certificates of a deployment that speaks TLS only ([`SentinelDeployment::start_tls`]).
    tls: Option<TlsFiles>,
    dir: tempfile::TempDir,
}

impl SentinelDeployment {
    /// A primary, two replicas and three sentinels, all on free ports (see the module docs).
    pub fn start() -> Self {
        Self::start_inner(None, None, None, None)
    }

    /// Like [`start`](Self::start), every process listening for TLS only, with the
    /// certificates of a fresh [`TlsFiles`] (see the module docs; [`tls`](Self::tls)).
    pub fn start_tls() -> Self {
        Self::start_inner(None, None, None, Some(TlsFiles::generate()))
    }

    /// Like [`start`](Self::start), with passwords: the data nodes require `data` (`requirepass`,
    /// and `masterauth` for the replicas; the sentinels get it with `sentinel auth-pass`), the
    /// sentinels require `sentinel` (`requirepass` in their configuration, which they also use
    /// with each other). The helpers of this type use them.
    pub fn start_with_passwords(data: &str, sentinel: &str) -> Self {
        Self::start_inner(None, Some(data), Some(sentinel), None)
    }

    /// Like [`start`](Self::start), with the sentinels on exactly `sentinel_ports` (three of
    /// them), for a keyward that was configured with those addresses before they existed.
    pub fn start_with_sentinel_ports(sentinel_ports: &[u16]) -> Self {
        assert_eq!(sentinel_ports.len(), 3, "three sentinels");
        Self::start_inner(Some(sentinel_ports), None, None, None)
    }

    fn start_inner(
        sentinel_ports: Option<&[u16]>,
        data_password: Option<&str>,
        sentinel_password: Option<&str>,
        tls: Option<TlsFiles>,
    ) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for the sentinel deployment");
        let mut deployment = SentinelDeployment {
            nodes: Vec::new(),
            sentinels: Vec::new(),
            extra_sentinels: Vec::new(),
            data_password: data_password.map(str::to_string),
            sentinel_password: sentinel_password.map(str::to_string),
            tls,
            dir,
        };
        let primary = deployment.spawn_data_node(None);
        deployment.nodes.push(primary);
        let primary_port = deployment.nodes[0].port;
        for _ in 0..2 {
            let replica = deployment.spawn_data_node(Some(primary_port));
            deployment.nodes.push(replica);
        }
        if let Err(last) = deployment.try_wait_synced(primary_port, DEPLOYMENT_READY_TIMEOUT) {
            deployment.fail(&format!(
                "the replicas did not sync with the primary {primary_port} within \
                 {DEPLOYMENT_READY_TIMEOUT:?}: {last}"
            ));
        }
        for i in 0..3 {
            let sentinel = deployment.spawn_sentinel(primary_port, sentinel_ports.map(|p| p[i]));
            deployment.sentinels.push(sentinel);
        }
        let mut last = String::new();
        let ready = wait_until(DEPLOYMENT_READY_TIMEOUT, || {
            match deployment.all_sentinels_see_everything(primary_port) {
                Ok(()) => true,
                Err(e) => {
                    last = e;
                    false
                }
            }
        });
        if !ready {
            deployment.fail(&format!(
                "the sentinels did not see the whole deployment within \
                 {DEPLOYMENT_READY_TIMEOUT:?}: {last}"
            ));
        }
        deployment
    }

    /// Spawns a data node on a free port (retrying on a new port when the one picked was taken
    /// meanwhile), as a replica of `replica_of` if given.
    fn spawn_data_node(&self, replica_of: Option<u16>) -> DataNode {
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let node_dir = self.dir.path().join(format!("node-{port}"));
            std::fs::create_dir_all(&node_dir).expect("create a node directory");
            let mut cmd = Command::new("redis-server");
            match &self.tls {
                None => cmd.args(["--port", &port.to_string()]),
                Some(files) => cmd.args(files.redis_args(port)).args([
                    "--tls-auth-clients",
                    "no",
                    "--tls-replication",
                    "yes",
                ]),
            };
            cmd.args(["--bind", "127.0.0.1"])
                .args(["--save", ""])
                .args(["--appendonly", "no"])
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&node_dir)
                .args(["--daemonize", "no"]);
            if let Some(password) = &self.data_password {
                cmd.args(["--requirepass", password, "--masterauth", password]);
            }
            if let Some(primary) = replica_of {
                cmd.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
            }
            let name = format!("redis-server on port {port}");
            let mut process =
                match ChildProcess::spawn(name, &mut cmd, node_log(self.dir.path(), port)) {
                    Ok(p) => p,
                    Err(e) => self.fail(&format!("{e} (is redis-server installed?)")),
                };
            match process.wait_ready("answer PING", START_TIMEOUT, || self.answers_ping(port)) {
                Ok(()) => {
                    return DataNode {
                        port,
                        process: Some(process),
                    };
                }
                Err(e) => last_error = e,
            }
        }
        self.fail(&format!(
            "a data node did not start after 3 attempts: {last_error}"
        ))
    }

    /// Writes a sentinel configuration file and spawns `redis-server CONF --sentinel` on `port`
    /// (a free port if `None`, retried on a new one when it was taken meanwhile).
    fn spawn_sentinel(&self, primary: u16, port: Option<u16>) -> Sentinel {
        let attempts = if port.is_some() { 1 } else { 3 };
        let mut last_error = String::new();
        for _ in 0..attempts {
            let port = port.unwrap_or_else(free_port);
            let conf = self.dir.path().join(format!("sentinel-{port}.conf"));
            let text = format!(
                "{listen}\
                 bind 127.0.0.1\n\
                 daemonize no\n\
                 dir {dir}\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary} 2\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 5000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n{auth}",
                listen = self.sentinel_listen_lines(port),
                dir = self.dir.path().display(),
                auth = self.sentinel_auth_lines(),
            );
            std::fs::write(&conf, text).expect("write a sentinel configuration file");
            let mut cmd = Command::new("redis-server");
            cmd.arg(&conf).arg("--sentinel");
            let name = format!("sentinel on port {port}");
            let mut process =
                match ChildProcess::spawn(name, &mut cmd, sentinel_log(self.dir.path(), port)) {
                    Ok(p) => p,
                    Err(e) => self.fail(&e),
                };
            match process.wait_ready("answer PING", START_TIMEOUT, || self.answers_ping(port)) {
                Ok(()) => {
                    return Sentinel {
                        port,
                        process: Some(process),
                        conf,
                    };
                }
                Err(e) => last_error = e,
            }
        }
        self.fail(&format!("a sentinel did not start: {last_error}"))
    }

    /// The lines of a sentinel's configuration file that say where it listens: `port S`, or,
    /// for a TLS deployment, `port 0`, `tls-port S`, the certificates, `tls-auth-clients no` and
    /// `tls-replication yes` (TLS to the data nodes and the other sentinels too).
    fn sentinel_listen_lines(&self, port: u16) -> String {
        match &self.tls {
            None => format!("port {port}\n"),
            Some(files) => format!(
                "port 0\n\
                 tls-port {port}\n\
                 tls-cert-file {cert}\n\
                 tls-key-file {key}\n\
                 tls-ca-cert-file {ca}\n\
                 tls-auth-clients no\n\
                 tls-replication yes\n",
                cert = files.server_cert(),
                key = files.server_key(),
                ca = files.ca(),
            ),
        }
    }

    /// Whether the process on `port` answers PING (over TLS in a TLS deployment), `-NOAUTH`
    /// included, `-LOADING` not.
    fn answers_ping(&self, port: u16) -> bool {
        match &self.tls {
            None => answers_ping(port),
            Some(_) => {
                let out = self.cli(port, &["PING"]);
                let out = out.trim();
                !out.is_empty() && !out.starts_with("LOADING")
            }
        }
    }

    /// The password lines of a sentinel's configuration file.
    fn sentinel_auth_lines(&self) -> String {
        let mut out = String::new();
        if let Some(password) = &self.data_password {
            out.push_str(&format!("sentinel auth-pass {MASTER_NAME} {password}\n"));
        }
        if let Some(password) = &self.sentinel_password {
            out.push_str(&format!("requirepass {password}\n"));
        }
        out
    }

    /// The password of the process on `port`: the sentinels' for a sentinel, else the data
    /// nodes'.
    fn password_for(&self, port: u16) -> Option<&str> {
        let is_sentinel = self
            .sentinels
            .iter()
            .chain(&self.extra_sentinels)
            .any(|s| s.port == port);
        if is_sentinel {
            self.sentinel_password.as_deref()
        } else {
            self.data_password.as_deref()
        }
    }

    // -----------------------------------------------------------------------------------------
    // Addresses and views
    // -----------------------------------------------------------------------------------------

    /// Starts one more sentinel that monitors the data node on `port` as [`MASTER_NAME`] (for
    /// instance a replica: a sentinel with a stale view, whose `GET-MASTER-ADDR-BY-NAME` names a
    /// node that is not the primary) and returns its port. It is killed on drop like the
    /// others, but is not one of [`sentinel_addrs`](Self::sentinel_addrs).
    pub fn start_stale_sentinel(&mut self, port: u16) -> u16 {
        let sentinel = self.spawn_sentinel(port, None);
        let stale = sentinel.port;
        self.extra_sentinels.push(sentinel);
        stale
    }

    /// The address of every sentinel ever started, killed ones included, in start order.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| addr(s.port)).collect()
    }

    /// The port of every sentinel ever started, killed ones included, in start order.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(|s| s.port).collect()
    }

    /// Ports of the sentinels still running.
    pub fn alive_sentinel_ports(&self) -> Vec<u16> {
        self.sentinels
            .iter()
            .filter(|s| s.process.is_some())
            .map(|s| s.port)
            .collect()
    }

    /// Ports of every data node ever started, killed ones included (the first one started as
    /// the primary).
    pub fn node_ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// Ports of the data nodes still running.
    pub fn alive_node_ports(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|n| n.process.is_some())
            .map(|n| n.port)
            .collect()
    }

    /// The primary's port as the sentinels say (`SENTINEL GET-MASTER-ADDR-BY-NAME mymaster`,
    /// asked of each running sentinel in turn, the first answer wins). Panics when none answers.
    pub fn primary_port(&self) -> u16 {
        self.alive_sentinel_ports()
            .into_iter()
            .find_map(|s| self.master_addr_seen_by(s))
            .unwrap_or_else(|| self.fail("no sentinel names a primary"))
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME mymaster` on each running sentinel (`None` where it did
    /// not answer with an address), in start order.
    pub fn sentinel_views(&self) -> Vec<(u16, Option<u16>)> {
        self.alive_sentinel_ports()
            .into_iter()
            .map(|s| (s, self.master_addr_seen_by(s)))
            .collect()
    }

    /// `ROLE` of the data node on `port`: `"master"`, `"slave"`, or `""` when it does not answer.
    pub fn role_of(&self, port: u16) -> String {
        self.cli(port, &["ROLE"])
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string()
    }

    /// `redis-cli -p PORT ARGS...` against any process of the deployment; its standard output.
    /// In a TLS deployment: `redis-cli --tls --cacert CA -p PORT ARGS...`.
    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        cli(port, self.password_for(port), self.tls.as_ref(), args)
    }

    /// The certificates of a deployment from [`start_tls`](Self::start_tls).
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// A blocking redis-rs connection straight to the data node on `port` (db 0). Not for a
    /// TLS deployment (the tests' redis-rs has no TLS): use [`get`](Self::get) or
    /// [`cli`](Self::cli) there.
    pub fn conn(&self, port: u16) -> redis::Connection {
        assert!(
            self.tls.is_none(),
            "no redis-rs connection to a TLS deployment: use get or cli"
        );
        let auth = match self.password_for(port) {
            Some(password) => format!(":{password}@"),
            None => String::new(),
        };
        let url = format!("redis://{auth}127.0.0.1:{port}/");
        let client = redis::Client::open(url).expect("redis-rs client");
        let conn = client
            .get_connection_with_timeout(Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("cannot connect to node {port}: {e}"));
        conn.set_read_timeout(Some(super::IO_TIMEOUT))
            .expect("read timeout");
        conn.set_write_timeout(Some(super::IO_TIMEOUT))
            .expect("write timeout");
        conn
    }

    /// `GET key` in db 0 of the data node on `port`, asked directly (over TLS in a TLS
    /// deployment).
    pub fn get(&self, port: u16, key: &str) -> Option<String> {
        if let Some(files) = &self.tls {
            return self.get_tls(files, port, key);
        }
        redis::cmd("GET")
            .arg(key)
            .query(&mut self.conn(port))
            .unwrap_or_else(|e| panic!("GET {key} on node {port}: {e}"))
    }

    /// `GET key` over TLS (rustls, trusting the CA), after `AUTH` when the data nodes have a
    /// password.
    fn get_tls(&self, files: &TlsFiles, port: u16, key: &str) -> Option<String> {
        let mut conn = TlsClient::connect(&addr(port), files, false)
            .unwrap_or_else(|e| panic!("cannot connect over TLS to node {port}: {e}"));
        let mut request = |args: &[&str]| -> Reply {
            conn.send(&resp_str(args))
                .unwrap_or_else(|e| panic!("{} on node {port} over TLS: {e}", args[0]));
            conn.try_read_reply()
                .unwrap_or_else(|e| panic!("{} on node {port} over TLS: {e}", args[0]))
        };
        if let Some(password) = &self.data_password {
            let auth = request(&["AUTH", password]);
            assert_eq!(auth, Reply::ok(), "AUTH on node {port}");
        }
        match request(&["GET", key]) {
            Reply::Nil => None,
            Reply::Bulk(value) => Some(String::from_utf8_lossy(&value).into_owned()),
            other => panic!("GET {key} on node {port} over TLS: {other:?}"),
        }
    }

    // -----------------------------------------------------------------------------------------
    // Faults
    // -----------------------------------------------------------------------------------------

    /// `SENTINEL FAILOVER mymaster` on the first running sentinel (retried for a few seconds
    /// while it answers an error such as `-NOGOODSLAVE`), then waits until every running
    /// sentinel names a new primary and that node says `ROLE` master.
    pub fn failover(&self) -> Switch {
        let old = self.primary_port();
        let sentinel = self.alive_sentinel_ports()[0];
        let mut answer = String::new();
        let accepted = wait_until(Duration::from_secs(10), || {
            answer = self.cli(sentinel, &["SENTINEL", "FAILOVER", MASTER_NAME]);
            answer.trim() == "OK"
        });
        if !accepted {
            self.fail(&format!(
                "SENTINEL FAILOVER {MASTER_NAME} on sentinel {sentinel} answered {:?}",
                answer.trim()
            ));
        }
        self.wait_for_new_primary(old)
    }

    /// Kills the primary (as the sentinels name it) with SIGKILL and returns its port. The
    /// sentinels notice after `down-after-milliseconds` (1 s) and elect a replica in its place:
    /// wait for that with [`wait_for_new_primary`](Self::wait_for_new_primary).
    pub fn kill_primary(&mut self) -> u16 {
        let port = self.primary_port();
        self.kill_node(port);
        port
    }

    /// Kills the data node on `port` (SIGKILL) and reaps it.
    pub fn kill_node(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port)
            .unwrap_or_else(|| panic!("no data node on port {port}"));
        let mut process = node
            .process
            .take()
            .unwrap_or_else(|| panic!("data node {port} was already killed"));
        process.kill();
    }

    /// Kills the `i`-th sentinel (start order) with SIGKILL and reaps it.
    pub fn kill_sentinel(&mut self, i: usize) {
        let mut process = self.sentinels[i]
            .process
            .take()
            .unwrap_or_else(|| panic!("sentinel {i} was already killed"));
        process.kill();
    }

    /// Kills every sentinel still running.
    pub fn kill_all_sentinels(&mut self) {
        for i in 0..self.sentinels.len() {
            if self.sentinels[i].process.is_some() {
                self.kill_sentinel(i);
            }
        }
    }

    /// Waits until every running sentinel names a primary other than `old` (the same one) and
    /// that node says `ROLE` master. Panics after [`FAILOVER_TIMEOUT`].
    pub fn wait_for_new_primary(&self, old: u16) -> Switch {
        let mut first_seen: Option<Instant> = None;
        let mut last;
        let deadline = Instant::now() + FAILOVER_TIMEOUT;
        loop {
            let views = self.sentinel_views();
            let new: Vec<u16> = views
                .iter()
                .filter_map(|(_, v)| *v)
                .filter(|&p| p != old)
                .collect();
            if !new.is_empty() && first_seen.is_none() {
                first_seen = Some(Instant::now());
            }
            let agreed =
                !views.is_empty() && new.len() == views.len() && new.iter().all(|&p| p == new[0]);
            if agreed {
                let role = self.role_of(new[0]);
                if role == "master" {
                    return Switch {
                        old,
                        new: new[0],
                        at: first_seen.expect("seen before agreed"),
                        settled: Instant::now(),
                    };
                }
                last = format!("the sentinels name {} but its ROLE is {role:?}", new[0]);
            } else {
                last = format!("old primary {old}; sentinel views (sentinel, primary): {views:?}");
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "the sentinels did not agree on a new primary within {FAILOVER_TIMEOUT:?}: \
                     {last}"
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Waits until every other running data node is a replica of the current primary (as the
    /// sentinels name it), with its link up and everything the primary had written when the wait
    /// began. After a failover this includes the old primary only once the sentinels have turned
    /// it into a replica, which they do some seconds after the switch. Panics after 30 s.
    pub fn wait_for_replicas_synced(&self) {
        let primary = self.primary_port();
        if let Err(last) = self.try_wait_synced(primary, Duration::from_secs(30)) {
            self.fail(&format!(
                "the replicas did not sync with the primary {primary} within 30 s: {last}"
            ));
        }
    }

    fn try_wait_synced(&self, primary: u16, timeout: Duration) -> Result<(), String> {
        let target = field_of(
            &self.cli(primary, &["INFO", "replication"]),
            "master_repl_offset",
        )
        .and_then(|o| o.parse::<u64>().ok())
        .ok_or_else(|| format!("no master_repl_offset from the primary {primary}"))?;
        let mut last = String::new();
        let replicas: Vec<u16> = self
            .alive_node_ports()
            .into_iter()
            .filter(|&p| p != primary)
            .collect();
        let synced = wait_until(timeout, || {
            for &replica in &replicas {
                let info = self.cli(replica, &["INFO", "replication"]);
                let field = |name: &str| field_of(&info, name).unwrap_or_default();
                let offset: u64 = field("slave_repl_offset").parse().unwrap_or(0);
                if field("role") != "slave"
                    || field("master_port") != primary.to_string()
                    || field("master_link_status") != "up"
                    || offset < target
                {
                    last = format!(
                        "replica {replica}: role {:?}, master_port {:?}, link {:?}, offset \
                         {offset} of {target}",
                        field("role"),
                        field("master_port"),
                        field("master_link_status"),
                    );
                    return false;
                }
            }
            true
        });
        if synced { Ok(()) } else { Err(last) }
    }

    // -----------------------------------------------------------------------------------------
    // keyward in front of the deployment
    // -----------------------------------------------------------------------------------------

    /// The proxy.toml of a keyward in sentinel mode in front of this deployment (every sentinel
    /// in `nodes`, killed ones included), listening on `listen`, with `upstream_extra` appended
    /// to `[upstream]` (e.g. `"share_connections = true"`) and `extra` after it (more sections,
    /// with their headers).
    /// The `[upstream.tls]` section a keyward needs in front of a TLS deployment (trusting its
    /// CA; each connection checks the certificate against the host it dials, 127.0.0.1), empty
    /// for a plain one. Pass it in `extra`.
    pub fn upstream_tls_section(&self) -> String {
        match &self.tls {
            Some(files) => format!("[upstream.tls]\nca_file = \"{}\"\n", files.ca()),
            None => String::new(),
        }
    }

    pub fn proxy_toml(&self, listen: &str, upstream_extra: &str, extra: &str) -> String {
        sentinel_proxy_toml(listen, &self.sentinel_addrs(), upstream_extra, extra)
    }

    /// The real keyward binary in sentinel mode in front of this deployment (see
    /// [`proxy_toml`](Self::proxy_toml)).
    pub fn keyward(&self, upstream_extra: &str, extra: &str) -> Keyward {
        start_sentinel_keyward(&self.sentinel_addrs(), upstream_extra, extra)
    }

    /// The real keyward binary whose upstream is given by flags only: `--upstream S1,S2,S3
    /// --sentinel mymaster` (its configuration file holds nothing but `[server] listen`).
    pub fn keyward_from_flags(&self) -> Keyward {
        let upstream = self.sentinel_addrs().join(",");
        let args = ["--upstream", upstream.as_str(), "--sentinel", MASTER_NAME];
        Keyward::start_config(&upstream, None, &args, |listen| {
            format!("[server]\nlisten = \"{listen}\"\n")
        })
    }

    /// Whether every sentinel sees `primary` with both replicas and the two other sentinels.
    fn all_sentinels_see_everything(&self, primary: u16) -> Result<(), String> {
        self.sentinels
            .iter()
            .try_for_each(|s| self.sentinel_sees_everything(s.port, primary, 2, 2))
    }

    /// Whether sentinel `port` sees `primary` as a healthy master with `replicas` healthy replicas
    /// and `other_sentinels` other sentinels; else what is missing.
    fn sentinel_sees_everything(
        &self,
        port: u16,
        primary: u16,
        replicas: usize,
        other_sentinels: usize,
    ) -> Result<(), String> {
        let master = self.cli(port, &["SENTINEL", "MASTER", MASTER_NAME]);
        let fields = pairs(&master);
        let get = |name: &str| fields.get(name).map(String::as_str).unwrap_or("");
        let want = [
            ("port", primary.to_string()),
            ("flags", "master".to_string()),
            ("num-slaves", replicas.to_string()),
            ("num-other-sentinels", other_sentinels.to_string()),
        ];
        for (name, value) in want {
            if get(name) != value {
                return Err(format!(
                    "sentinel {port}: {name} is {:?}, not {value:?}",
                    get(name)
                ));
            }
        }
        let listed = self.cli(port, &["SENTINEL", "REPLICAS", MASTER_NAME]);
        let lines: Vec<&str> = listed.lines().map(str::trim).collect();
        let flags: Vec<&str> = lines
            .windows(2)
            .filter(|w| w[0] == "flags")
            .map(|w| w[1])
            .collect();
        if flags.len() != replicas || flags.iter().any(|f| *f != "slave") {
            return Err(format!("sentinel {port}: replica flags {flags:?}"));
        }
        Ok(())
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME mymaster` on sentinel `port`: the primary's port, `None`
    /// when it does not answer with an address.
    fn master_addr_seen_by(&self, port: u16) -> Option<u16> {
        let out = self.cli(port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME]);
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        match lines.as_slice() {
            [_host, port] => port.parse().ok(),
            _ => None,
        }
    }

    // -----------------------------------------------------------------------------------------
    // Failure reports
    // -----------------------------------------------------------------------------------------

    /// The last lines of every process's log.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        let tail = |path: PathBuf| {
            let log = std::fs::read(&path)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(25)..].join("\n")
        };
        for node in &self.nodes {
            out.push_str(&format!(
                "\n--- data node {} ({}) log tail ---\n{}",
                node.port,
                if node.process.is_some() {
                    "running"
                } else {
                    "killed"
                },
                tail(node_log(self.dir.path(), node.port))
            ));
        }
        for s in self.sentinels.iter().chain(&self.extra_sentinels) {
            out.push_str(&format!(
                "\n--- sentinel {} ({}) log tail ---\n{}",
                s.port,
                if s.process.is_some() {
                    "running"
                } else {
                    "killed"
                },
                tail(sentinel_log(self.dir.path(), s.port))
            ));
        }
        out
    }

    /// Panics with `msg` and the tail of every process's log (the processes are killed when the
    /// deployment is dropped during the unwind).
    pub fn fail(&self, msg: &str) -> ! {
        panic!("{msg}{}", self.log_tails());
    }
}

/// The proxy.toml of a keyward in sentinel mode: `[server] listen`, `[upstream] mode =
/// "sentinel"`, `nodes` = `sentinels`, `sentinel_master = "mymaster"`, then `upstream_extra`
/// (more `[upstream]` entries) and `extra` (other sections, with their headers).
pub fn sentinel_proxy_toml(
    listen: &str,
    sentinels: &[String],
    upstream_extra: &str,
    extra: &str,
) -> String {
    let nodes: Vec<String> = sentinels.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        "[server]\nlisten = \"{listen}\"\n\n\
         [upstream]\nmode = \"sentinel\"\nnodes = [{}]\nsentinel_master = \"{MASTER_NAME}\"\n\
         {upstream_extra}\n\n{extra}\n",
        nodes.join(", ")
    )
}

/// The real keyward binary in sentinel mode in front of `sentinels` (which need not be running):
/// see [`sentinel_proxy_toml`].
pub fn start_sentinel_keyward(sentinels: &[String], upstream_extra: &str, extra: &str) -> Keyward {
    Keyward::start_config(&sentinels.join(","), None, &[], |listen| {
        sentinel_proxy_toml(listen, sentinels, upstream_extra, extra)
    })
}

fn field_of(info: &str, name: &str) -> Option<String> {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
        .map(str::to_string)
}

/// A flat `key\nvalue\n...` redis-cli listing as a map.
fn pairs(out: &str) -> BTreeMap<String, String> {
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    lines
        .chunks(2)
        .filter(|c| c.len() == 2)
        .map(|c| (c[0].to_string(), c[1].to_string()))
        .collect()
}

/// `redis-cli -h 127.0.0.1 -p PORT [--tls --cacert CA] [-a PASSWORD] ARGS...`, bounded in time;
/// its standard output (error replies included), empty when nothing answers.
fn cli(port: u16, password: Option<&str>, tls: Option<&TlsFiles>, args: &[&str]) -> String {
    let mut cmd = Command::new("redis-cli");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .arg("--no-auth-warning");
    if let Some(files) = tls {
        cmd.args(files.cli_args(false));
    }
    if let Some(password) = password {
        cmd.args(["-a", password]);
    }
    cmd.args(args);
    String::from_utf8_lossy(&run_with_timeout(&mut cmd, CLI_TIMEOUT).stdout).into_owned()
}

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

fn node_log(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("node-{port}.log"))
}

fn sentinel_log(dir: &Path, port: u16) -> PathBuf {
    dir.join(format!("sentinel-{port}.log"))
}
