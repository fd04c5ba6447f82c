//! keyward in front of a Redis Cluster over TLS (`[upstream.tls]` in cluster mode).
//!
//! The cluster (3 primaries, `tls-cluster yes`) listens for TLS clients on ports of their own
//! and keeps plain ports, which only the test uses, to read the truth from the nodes. keyward is
//! given a TLS port as its seed. What a user must see: every command works as against a plain
//! cluster; keyward reaches every node over TLS, on the ports the cluster announces for TLS
//! (`tls-port` in `CLUSTER SHARDS`, the port in MOVED); and a certificate keyward cannot trust
//! stops it at start-up with a message that says so.

mod support;

use std::time::Duration;

use support::cluster::RedisCluster;
use support::tls::TlsFiles;
use support::*;

/// `[upstream.tls]` trusting the test CA; the server name is each node's host (127.0.0.1,
/// which the test certificate carries).
fn upstream_tls(files: &TlsFiles) -> String {
    format!("[upstream.tls]\nca_file = \"{}\"\n", files.ca())
}

/// The local ports of every client connection `CLIENT LIST` shows on a node (plain port).
fn client_local_ports(cluster: &RedisCluster, port: u16) -> Vec<u16> {
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut cluster.conn(port))
        .expect("CLIENT LIST");
    list.lines()
        .filter_map(|line| {
            let laddr = line.split(' ').find_map(|f| f.strip_prefix("laddr="))?;
            laddr.rsplit_once(':')?.1.parse().ok()
        })
        .collect()
}

/// Runs keyward in cluster mode with `seeds` and `toml_extra`, expects it to stop with an error
/// (at start-up, within 20 s), and returns what it wrote on stderr.
fn refused_start(seeds: &[String], toml_extra: &str) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("proxy.toml");
    let listen = format!("127.0.0.1:{}", free_port());
    std::fs::write(&config, proxy_toml_cluster(&listen, seeds, toml_extra))
        .expect("write proxy.toml");
    let mut command = keyward_command();
    command.arg("--config").arg(&config).current_dir(dir.path());
    let out = run_with_timeout(&mut command, Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "keyward started: {stderr}");
    stderr
}

#[test]
fn keyward_speaks_tls_to_every_node_of_a_cluster() {
    let files = TlsFiles::generate();
    let cluster = RedisCluster::start_tls(3, 0, &files);
    let seeds = cluster.tls_seeds();
    let keyward = Keyward::start_cluster(&seeds[..1], &upstream_tls(&files));
    let mut client = keyward.raw_conn();

    // Keys on every primary: reads, writes and a multi-slot fan-out.
    let primaries: Vec<u16> = cluster.primaries().into_iter().map(|(_, p)| p).collect();
    let mut keys = Vec::new();
    for &primary in &primaries {
        keys.extend(cluster.keys_on(primary, &format!("tls:{primary}:"), 4));
    }
    for key in &keys {
        assert_eq!(client.request(&["SET", key, key]), Reply::simple("OK"));
    }
    let mut mget = vec!["MGET"];
    mget.extend(keys.iter().map(String::as_str));
    assert_eq!(
        client.request(&mget),
        Reply::Array(keys.iter().map(Reply::bulk).collect())
    );
    for (key, &primary) in keys.iter().zip(primaries.iter().flat_map(|p| [p; 4])) {
        let direct: Option<String> = redis::cmd("GET")
            .arg(key)
            .query(&mut cluster.conn(primary))
            .expect("GET on the owner");
        assert_eq!(direct.as_deref(), Some(key.as_str()), "{key} on {primary}");
    }

    // The guard and the fan-out of a guarded delete work as on a plain cluster.
    let reply = client.request(&["REMOVEKEYS", "tls:*"]);
    assert!(
        reply.error_text().is_some_and(|e| e.contains("wildcard")),
        "{reply:?}"
    );
    let mut removekeys = vec!["REMOVEKEYS"];
    removekeys.extend(keys.iter().map(String::as_str));
    removekeys.push("tls:missing");
    assert_eq!(client.request(&removekeys), Reply::Int(keys.len() as i64));
    for &primary in &primaries {
        let left: i64 = redis::cmd("DBSIZE")
            .query(&mut cluster.conn(primary))
            .expect("DBSIZE");
        assert_eq!(left, 0, "keys left on {primary}");
    }

    // Every connection keyward holds to a node is on that node's TLS port: nothing went to a
    // plain port, neither from the slot map nor from a redirection.
    for &primary in &primaries {
        let tls_port = cluster.tls_port_of(primary);
        let ports = client_local_ports(&cluster, primary);
        assert!(
            ports.contains(&tls_port),
            "no connection on the TLS port {tls_port} of node {primary}: {ports:?}"
        );
        // The only plain connection is this test's own CLIENT LIST.
        assert_eq!(
            ports.iter().filter(|&&p| p == primary).count(),
            1,
            "plain connections on node {primary}: {ports:?}"
        );
    }
}

#[test]
fn a_slot_moved_under_keyward_is_followed_to_the_new_owners_tls_port() {
    let files = TlsFiles::generate();
    let cluster = RedisCluster::start_tls(3, 0, &files);
    let keyward = Keyward::start_cluster(&cluster.tls_seeds(), &upstream_tls(&files));
    let mut client = keyward.raw_conn();

    let primaries: Vec<u16> = cluster.primaries().into_iter().map(|(_, p)| p).collect();
    let (from, to) = (primaries[0], primaries[1]);
    let key = cluster.keys_on(from, "moved:", 1).remove(0);
    assert_eq!(
        client.request(&["SET", &key, "before"]),
        Reply::simple("OK")
    );
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(&key)
        .query(&mut cluster.conn(from))
        .expect("CLUSTER KEYSLOT");
    assert_eq!(cluster.migrate_slot(slot, from, to), 1);

    // keyward's slot map still names the old owner, which now answers MOVED with the new
    // owner's TLS port (the connection asking is TLS).
    assert_eq!(client.request(&["GET", &key]), Reply::bulk("before"));
    assert_eq!(client.request(&["SET", &key, "after"]), Reply::simple("OK"));
    let direct: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query(&mut cluster.conn(to))
        .expect("GET on the new owner");
    assert_eq!(direct.as_deref(), Some("after"));
    let tls_port = cluster.tls_port_of(to);
    assert!(client_local_ports(&cluster, to).contains(&tls_port));
}

#[test]
fn an_untrusted_cluster_certificate_stops_keyward_at_start_up() {
    let files = TlsFiles::generate();
    let cluster = RedisCluster::start_tls(3, 0, &files);
    // Certificates of another CA: keyward must not trust the cluster's.
    let other = TlsFiles::generate();
    let stderr = refused_start(&cluster.tls_seeds(), &upstream_tls(&other));
    assert!(
        stderr.contains("cannot start in cluster mode") && stderr.contains("certificate"),
        "{stderr}"
    );
}

#[test]
fn every_node_certificate_is_checked_at_start_up_by_the_host_the_cluster_announces() {
    // Certificates valid for the name `localhost` only, while the cluster announces its nodes
    // by IP address (127.0.0.1): the usual set-up of a DNS seed in front of nodes known by IP.
    let files = TlsFiles::generate_for(&["localhost"]);
    let cluster = RedisCluster::start_tls(3, 0, &files);
    let seed = vec![cluster.tls_seeds()[0].replace("127.0.0.1", "localhost")];

    // Without server_name the seed passes (it is reached as localhost) and the nodes do not:
    // keyward refuses to start and says what to set, instead of failing every request later.
    let stderr = refused_start(&seed, &upstream_tls(&files));
    assert!(
        stderr.contains("the certificate of cluster node 127.0.0.1:")
            && stderr.contains("server_name"),
        "{stderr}"
    );

    // With server_name every node's certificate is checked against that one name.
    let extra = format!("{}server_name = \"localhost\"\n", upstream_tls(&files));
    let keyward = Keyward::start_cluster(&seed, &extra);
    let mut client = keyward.raw_conn();
    for (_, primary) in cluster.primaries() {
        let key = cluster.keys_on(primary, "named:", 1).remove(0);
        assert_eq!(client.request(&["SET", &key, "v"]), Reply::simple("OK"));
        assert_eq!(client.request(&["GET", &key]), Reply::bulk("v"));
    }
}
