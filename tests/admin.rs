//! The admin listener of the real binary, read with a real HTTP client (ureq): metrics after
//! known traffic (parsed strictly with a Prometheus text-format parser), health, readiness as
//! Redis goes away and comes back (and as a cluster loses a slot), the configuration without
//! secrets, and the bearer token.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use prometheus_parse::{Scrape, Value};
use support::cluster::RedisCluster;
use support::*;

/// An admin section on a free loopback port, and its URL.
fn admin_section(extra: &str) -> (String, String) {
    let port = free_port();
    (
        format!("[admin]\nlisten = \"127.0.0.1:{port}\"\n{extra}"),
        format!("http://127.0.0.1:{port}"),
    )
}

/// `GET url`: the status and the body (no error for 4xx/5xx statuses).
fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(token) = token {
        request = request.header("Authorization", &format!("Bearer {token}"));
    }
    let mut response = request.call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (status, body)
}

/// The samples of one scrape, by metric name and sorted labels.
struct Samples(BTreeMap<(String, Vec<(String, String)>), f64>);

impl Samples {
    fn scrape(base: &str) -> Samples {
        let (status, body) = get(&format!("{base}/metrics"), None);
        assert_eq!(status, 200, "{body}");
        let lines = body.lines().map(|l| Ok(l.to_string()));
        let scrape = Scrape::parse(lines).expect("a valid Prometheus exposition");
        let mut samples = BTreeMap::new();
        for sample in scrape.samples {
            let mut labels: Vec<(String, String)> = sample
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            let value = match sample.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                Value::Histogram(buckets) => {
                    // The +Inf bucket: the number of observations.
                    buckets.iter().map(|b| b.count).fold(0.0, f64::max)
                }
                Value::Summary(_) => continue,
            };
            samples.insert((sample.metric, labels), value);
        }
        Samples(samples)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut labels: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        labels.sort();
        self.0
            .get(&(name.to_string(), labels.clone()))
            .copied()
            .unwrap_or(0.0)
    }
}

/// Known traffic, then the counters a user would look at.
fn check_counters_after_traffic(base: &str, keyward: &Keyward, mode: &str) {
    let mut conn = keyward.raw_conn();
    for i in 0..3 {
        assert_eq!(conn.request(&["SET", &format!("m:{i}"), "v"]), Reply::ok());
    }
    assert_eq!(conn.request(&["GET", "m:0"]), Reply::bulk("v"));
    assert_eq!(conn.request(&["GET", "m:1"]), Reply::bulk("v"));
    assert!(conn.request(&["DEL", "m:*"]).is_error());
    assert!(conn.request(&["LPUSH", "m:0", "x"]).is_error(), "WRONGTYPE");
    assert_eq!(conn.request(&["REMOVEKEYS", "m:1", "m:404"]), Reply::Int(1));
    let m = Samples::scrape(base);
    let commands = |command: &str, result: &str| {
        m.value(
            "keyward_commands_total",
            &[("command", command), ("result", result)],
        )
    };
    assert_eq!(commands("set", "ok"), 3.0, "{mode}");
    assert_eq!(commands("get", "ok"), 2.0, "{mode}");
    assert_eq!(commands("del", "refused"), 1.0, "{mode}");
    assert_eq!(commands("lpush", "error"), 1.0, "{mode}");
    assert_eq!(commands("removekeys", "ok"), 1.0, "{mode}");
    assert_eq!(
        m.value(
            "keyward_guard_refusals_total",
            &[
                ("rule", "wildcard_chars"),
                ("command", "del"),
                ("mode", "enforce")
            ]
        ),
        1.0,
        "{mode}"
    );
    assert_eq!(
        m.value("keyward_keys_requested_total", &[("command", "removekeys")]),
        2.0,
        "{mode}"
    );
    assert_eq!(
        m.value("keyward_keys_removed_total", &[("command", "removekeys")]),
        1.0,
        "{mode}"
    );
    assert_eq!(
        m.value("keyward_command_duration_seconds", &[("command", "get")]),
        2.0,
        "{mode}: two GETs observed"
    );
    assert!(
        m.value("keyward_clients_accepted_total", &[]) >= 1.0,
        "{mode}"
    );
    // The client's connection (or the shared one) and the readiness probe's, at least.
    assert!(
        m.value("keyward_upstream_connections", &[]) >= 2.0,
        "{mode}: {}",
        m.value("keyward_upstream_connections", &[])
    );
    assert_eq!(
        m.value(
            "keyward_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let (status, body) = get(&format!("{base}/metrics"), None);
    assert_eq!(status, 200);
    assert!(!body.contains("m:0"), "a key never becomes a label");
}

#[test]
fn metrics_count_what_clients_did_in_both_standalone_modes() {
    for (mode, share) in [("private", "false"), ("shared", "true")] {
        let redis = RedisServer::start();
        let (admin, base) = admin_section("");
        let keyward = Keyward::start_with(
            &redis.addr(),
            &format!("[upstream]\nshare_connections = {share}\n{admin}"),
        );
        check_counters_after_traffic(&base, &keyward, mode);
        let (status, body) = get(&format!("{base}/healthz"), None);
        assert_eq!((status, body.as_str()), (200, "ok\n"));
    }
}

/// Polls `GET url` until its status is `want`, for at most `within`.
fn wait_status(url: &str, want: u16, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let (status, body) = get(url, None);
        if status == want {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{url} still answers {status} after {within:?}: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn readiness_follows_the_upstream_redis() {
    let redis = RedisServer::start();
    let port = redis.port;
    let (admin, base) = admin_section("");
    let keyward = Keyward::start_with(&redis.addr(), &admin);
    let readyz = format!("{base}/readyz");
    wait_status(&readyz, 200, Duration::from_secs(5));

    drop(redis);
    let body = wait_status(&readyz, 503, Duration::from_secs(8));
    let reason: serde_json::Value = serde_json::from_str(&body).expect("a JSON body");
    assert_eq!(reason["ready"], false);
    assert!(
        reason["reason"]
            .as_str()
            .unwrap_or("")
            .contains(&port.to_string()),
        "{body}"
    );
    // Health is about keyward itself, not Redis.
    assert_eq!(get(&format!("{base}/healthz"), None).0, 200);

    let _redis = RedisServer::start_on(port, &[]);
    wait_status(&readyz, 200, Duration::from_secs(8));
    drop(keyward);
}

#[test]
fn in_front_of_a_cluster_readiness_needs_every_slot_covered() {
    let cluster = RedisCluster::start(3, 0);
    let (admin, base) = admin_section("");
    let keyward = Keyward::start_cluster(&cluster.seeds(), &admin);
    let readyz = format!("{base}/readyz");
    wait_status(&readyz, 200, Duration::from_secs(5));

    let mut conn = keyward.raw_conn();
    assert_eq!(conn.request(&["SET", "{c}k", "v"]), Reply::ok());
    assert_eq!(conn.request(&["GET", "{c}k"]), Reply::bulk("v"));
    let m = Samples::scrape(&base);
    assert_eq!(
        m.value(
            "keyward_commands_total",
            &[("command", "get"), ("result", "ok")]
        ),
        1.0
    );
    assert_eq!(m.value("keyward_cluster_slots_covered", &[]), 16384.0);
    dashboard_queries_use_exported_metrics(&base);

    // One slot loses its owner on every node; keyward's next map read sees it.
    let slot = 5000u16;
    let owner = cluster.owner_of_slot(slot);
    for port in cluster.ports() {
        cluster.node_cli(port, &["CLUSTER", "DELSLOTS", &slot.to_string()]);
    }
    let body = wait_status(&readyz, 503, Duration::from_secs(15));
    assert!(body.contains("16383 of 16384"), "{body}");
    cluster.node_cli(owner, &["CLUSTER", "ADDSLOTS", &slot.to_string()]);
    wait_status(&readyz, 200, Duration::from_secs(15));
}

#[test]
fn a_token_guards_the_admin_listener_and_the_configuration_shows_no_secret() {
    let redis = RedisServer::start();
    let (admin, base) = admin_section(&format!("token_sha256 = \"{}\"", hex_sha256(b"admintoken")));
    let keyward = Keyward::start_with(
        &redis.addr(),
        &format!("[server]\npassword = \"client-secret\"\n{admin}"),
    );
    let (status, body) = get(&format!("{base}/metrics"), None);
    assert_eq!(status, 401, "{body}");
    let (status, _) = get(&format!("{base}/metrics"), Some("wrong"));
    assert_eq!(status, 401);
    let (status, body) = get(&format!("{base}/config"), Some("admintoken"));
    assert_eq!(status, 200, "{body}");
    let config: serde_json::Value = serde_json::from_str(&body).expect("JSON configuration");
    assert_eq!(config["server"]["password"], "<set>");
    assert_eq!(config["admin"]["token_sha256"], "<set>");
    assert!(!body.contains("client-secret"), "{body}");
    assert!(!body.contains(&hex_sha256(b"admintoken")), "{body}");
    drop(keyward);
}

fn hex_sha256(data: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn an_admin_listener_on_the_network_needs_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, "[admin]\nlisten = \"0.0.0.0:9180\"\n").unwrap();
    let mut command = keyward_command();
    command
        .arg("--check-config")
        .arg(&path)
        .current_dir(dir.path());
    let output = run_with_timeout(&mut command, Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("admin.token_sha256: is required because admin.listen = \"0.0.0.0:9180\""),
        "{stderr}"
    );

    std::fs::write(
        &path,
        format!(
            "[admin]\nlisten = \"0.0.0.0:9180\"\ntoken_sha256 = \"{}\"\n",
            hex_sha256(b"t")
        ),
    )
    .unwrap();
    let output = run_with_timeout(&mut command, Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(0), "{output:?}");
}

/// Every metric the Grafana dashboard (docs/grafana/keyward.json) queries is one keyward exports:
/// a family announced on `/metrics` (in cluster mode, where every family is), or a histogram's
/// `_bucket` / `_sum` / `_count` series.
fn dashboard_queries_use_exported_metrics(base: &str) {
    let (_, body) = get(&format!("{base}/metrics"), None);
    let families: Vec<String> = body
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(String::from)
        .collect();
    let exported = |name: &str| {
        families.iter().any(|f| {
            name == f
                || ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name == format!("{f}{suffix}"))
        })
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/grafana/keyward.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).expect("dashboard JSON");
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 8, "queries found: {exprs:?}");
    let mut used = 0;
    for expr in &exprs {
        for name in metric_names(expr) {
            used += 1;
            assert!(
                exported(&name),
                "the dashboard queries {name}, which keyward does not export"
            );
        }
    }
    assert!(used >= exprs.len());
}

fn collect_exprs(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", serde_json::Value::String(expr)) => out.push(expr.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}

/// The `keyward_*` identifiers in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("keyward_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}
