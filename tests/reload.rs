//! Hot reload of the real binary (SIGHUP and `POST /reload`) in front of a real Redis: new rules
//! apply to the next request, a broken file or a setting that needs a restart changes nothing,
//! a client pipelining through 20 reloads sees no error, and a removed user's client is
//! disconnected.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use support::*;

const T: Duration = IO_TIMEOUT;

/// The number of "configuration reloaded" or "not reloaded" lines in keyward's log.
fn reload_lines(keyward: &Keyward) -> usize {
    keyward
        .log()
        .lines()
        .filter(|l| {
            l.contains("configuration reloaded") || l.contains("configuration not reloaded")
        })
        .count()
}

/// Sends SIGHUP and waits for keyward to log the outcome.
fn sighup(keyward: &Keyward) {
    let before = reload_lines(keyward);
    keyward.send_signal(libc::SIGHUP);
    assert!(
        wait_until(T, || reload_lines(keyward) > before),
        "no reload logged; log:\n{}",
        keyward.log()
    );
}

/// `POST /reload` on the admin listener: the status and the JSON body.
fn post_reload(base: &str) -> (u16, serde_json::Value) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(T))
        .build()
        .into();
    let mut response = agent
        .post(&format!("{base}/reload"))
        .send_empty()
        .expect("POST /reload");
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (status, serde_json::from_str(&body).expect("a JSON body"))
}

#[test]
fn a_reload_changes_the_rules_for_the_next_request_and_a_bad_file_changes_nothing() {
    let redis = RedisServer::start();
    let admin_port = free_port();
    let base = format!("http://127.0.0.1:{admin_port}");
    let keyward = Keyward::start_with(
        &redis.addr(),
        &format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\""),
    );
    let original = keyward.config_text();
    assert!(original.contains("max_keys = 1000"), "{original}");
    let mut conn = keyward.raw_conn();
    assert_eq!(conn.request(&["DEL", "a", "b", "c"]), Reply::Int(0));

    // SIGHUP: max_keys 1000 -> 2 refuses the next 3-key delete, on the same connection.
    keyward.rewrite_config(&original.replace("max_keys = 1000", "max_keys = 2"));
    sighup(&keyward);
    let refused = conn.request(&["DEL", "a", "b", "c"]);
    assert!(
        refused
            .error_text()
            .is_some_and(|e| e.contains("limit of 2 keys") && e.contains("max_keys")),
        "{refused:?}"
    );
    assert!(
        keyward.log().contains("configuration reloaded from")
            && keyward.log().contains("guard.max_keys = 2"),
        "{}",
        keyward.log()
    );
    // The admin listener's /config shows the configuration in force, not the one at start.
    let config: serde_json::Value = {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(T))
            .build()
            .into();
        let mut response = agent.get(&format!("{base}/config")).call().unwrap();
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap()
    };
    assert_eq!(config["guard"]["max_keys"], 2, "{config}");

    // A file that would allow wildcards but does not parse: nothing changes.
    let broken =
        original.replace("wildcard_chars = \"*?[\"", "wildcard_chars = \"\"") + "\nx = = 1\n";
    keyward.rewrite_config(&broken);
    let (status, body) = post_reload(&base);
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["reloaded"], false);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("proxy.toml"),
        "{body}"
    );
    let still = conn.request(&["DEL", "x*"]);
    assert!(
        still.error_text().is_some_and(|e| e.contains("wildcard")),
        "a failed reload must leave the rules in force: {still:?}"
    );
    assert!(
        conn.request(&["DEL", "a", "b", "c"]).is_error(),
        "max_keys is still 2"
    );

    // A setting that needs a restart: refused, naming it.
    let moved = original.replace(&redis.addr(), "127.0.0.1:1");
    keyward.rewrite_config(&moved);
    let (status, body) = post_reload(&base);
    assert_eq!(status, 400, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("upstream.nodes"),
        "{body}"
    );

    // Back to the original by POST: the 3-key delete passes again.
    keyward.rewrite_config(&original);
    let (status, body) = post_reload(&base);
    assert_eq!(status, 200, "{body}");
    assert_eq!(conn.request(&["DEL", "a", "b", "c"]), Reply::Int(0));

    let (_, metrics) = {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(T))
            .build()
            .into();
        let mut response = agent.get(&format!("{base}/metrics")).call().unwrap();
        ((), response.body_mut().read_to_string().unwrap())
    };
    assert!(
        metrics.contains("keyward_config_reloads_total{result=\"ok\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("keyward_config_reloads_total{result=\"error\"} 2"),
        "{metrics}"
    );
}

#[test]
fn a_client_pipelining_through_20_reloads_sees_no_error() {
    let redis = RedisServer::start();
    let keyward = Keyward::start(&redis.addr());
    let original = keyward.config_text();
    let stop = Arc::new(AtomicBool::new(false));
    let addr = keyward.addr();
    let worker = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut conn = RawConn::connect(&addr);
            let mut batches = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut pipeline = Vec::new();
                for i in 0..50 {
                    pipeline.extend(resp_str(&["SET", &format!("p:{i}"), "v"]));
                    pipeline.extend(resp_str(&["GET", &format!("p:{i}")]));
                }
                conn.send(&pipeline);
                for reply in conn.read_n_replies(100, T) {
                    assert!(
                        reply == Reply::ok() || reply == Reply::bulk("v"),
                        "unexpected reply during reloads: {reply:?}"
                    );
                }
                batches += 1;
            }
            batches
        })
    };
    for i in 0..20 {
        let max_keys = if i % 2 == 0 {
            "max_keys = 7"
        } else {
            "max_keys = 1000"
        };
        keyward.rewrite_config(&original.replace("max_keys = 1000", max_keys));
        sighup(&keyward);
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let batches = worker.join().expect("the pipelining client saw no error");
    assert!(batches > 0);
    assert_eq!(
        keyward.log().matches("configuration reloaded from").count(),
        20,
        "{}",
        keyward.log()
    );
}

#[test]
fn a_reload_that_removes_a_user_disconnects_its_clients() {
    let redis = RedisServer::start();
    let hash = |p: &str| {
        use sha2::Digest;
        sha2::Sha256::digest(p.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let users = format!(
        "[[server.users]]\nname = \"app\"\npassword_sha256 = \"{}\"\n\n\
         [[server.users]]\nname = \"ops\"\npassword_sha256 = \"{}\"\n",
        hash("app-pw"),
        hash("ops-pw")
    );
    let keyward = Keyward::start_with(&redis.addr(), &users);
    let original = keyward.config_text();
    let mut app = keyward.raw_conn();
    let mut ops = keyward.raw_conn();
    assert_eq!(app.request(&["AUTH", "app", "app-pw"]), Reply::ok());
    assert_eq!(ops.request(&["AUTH", "ops", "ops-pw"]), Reply::ok());

    // Remove "app" (its block is the first users block).
    let start = original.find("[[server.users]]").expect("a users block");
    let second = original[start + 1..]
        .find("[[server.users]]")
        .map(|i| i + start + 1)
        .expect("two users blocks");
    let without_app = format!("{}{}", &original[..start], &original[second..]);
    keyward.rewrite_config(&without_app);
    sighup(&keyward);

    // Disconnected by the reload itself, without sending anything (as Redis on ACL DELUSER).
    let (rest, closed) = app.read_to_close(T);
    assert!(closed, "app's client stays connected: {rest:?}");
    assert_eq!(
        ops.request(&["PING"]),
        Reply::simple("PONG"),
        "ops is unaffected"
    );
    let mut again = keyward.raw_conn();
    assert!(
        again
            .request(&["AUTH", "app", "app-pw"])
            .error_text()
            .is_some_and(|e| e.starts_with("WRONGPASS"))
    );
}

#[test]
fn a_reload_changes_the_log_level() {
    let redis = RedisServer::start();
    let keyward = Keyward::start_with(&redis.addr(), "[server]\nlog_level = \"warn\"");
    let original = keyward.config_text();
    let mut conn = keyward.raw_conn();
    assert_eq!(conn.request(&["REMOVEKEYS", "quiet"]), Reply::Int(0));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        !keyward.log().contains("command=REMOVEKEYS"),
        "no audit line at warn: {}",
        keyward.log()
    );

    keyward.rewrite_config(&original.replace("log_level = \"warn\"", "log_level = \"info\""));
    sighup(&keyward);
    assert_eq!(conn.request(&["REMOVEKEYS", "loud"]), Reply::Int(0));
    assert!(
        keyward
            .wait_log_line(T, |l| l.contains("command=REMOVEKEYS"))
            .is_some(),
        "the audit line appears at info: {}",
        keyward.log()
    );
}

#[test]
fn a_reload_rotates_the_client_certificate() {
    use support::tls::{TlsClient, TlsFiles};
    let (old, new) = (TlsFiles::generate(), TlsFiles::generate());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let install = |files: &TlsFiles| {
        std::fs::copy(files.server_cert(), &cert).unwrap();
        std::fs::copy(files.server_key(), &key).unwrap();
    };
    install(&old);
    let redis = RedisServer::start();
    let keyward = Keyward::start_with(
        &redis.addr(),
        &format!(
            "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"",
            cert.display(),
            key.display()
        ),
    );
    let ping = resp_str(&["PING"]);
    let mut before = TlsClient::connect(&keyward.addr(), &old, false).unwrap();
    before.send(&ping).unwrap();
    assert_eq!(before.read_replies(1), [Reply::simple("PONG")]);

    install(&new);
    sighup(&keyward);
    assert!(
        keyward.log().contains("configuration reloaded from"),
        "{}",
        keyward.log()
    );

    // New handshakes present the new certificate: a client trusting only the old CA fails.
    let mut stale = TlsClient::connect(&keyward.addr(), &old, false).unwrap();
    let refused = stale.send(&ping).is_err() || stale.try_read_reply().is_err();
    assert!(refused, "the old certificate is still presented");
    let mut fresh = TlsClient::connect(&keyward.addr(), &new, false).unwrap();
    fresh.send(&ping).unwrap();
    assert_eq!(fresh.read_replies(1), [Reply::simple("PONG")]);
    // The connection made before the rotation goes on.
    before.send(&ping).unwrap();
    assert_eq!(before.read_replies(1), [Reply::simple("PONG")]);
}

#[test]
fn a_reload_adds_a_hook_that_runhook_then_runs() {
    let redis = RedisServer::start();
    let keyward = Keyward::start_with(&redis.addr(), "");
    let original = keyward.config_text();
    let mut conn = keyward.raw_conn();
    let unknown = conn.request(&["RUNHOOK", "page-updated", "id", "7"]);
    assert!(
        unknown
            .error_text()
            .is_some_and(|e| e.contains("no hook named")),
        "{unknown:?}"
    );

    keyward.rewrite_config(&format!(
        "{original}\n[[hooks]]\nname = \"page-updated\"\nremove = [\"cache:page:{{id}}\"]\n"
    ));
    sighup(&keyward);
    redis.cli(&["SET", "cache:page:7", "old"]);
    assert_eq!(
        conn.request(&["RUNHOOK", "page-updated", "id", "7"]),
        Reply::Int(1)
    );
    assert_eq!(redis.cli(&["EXISTS", "cache:page:7"]).trim(), "0");
}
