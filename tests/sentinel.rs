//! keyward in sentinel mode (`[upstream] mode = "sentinel"`), in front of a real deployment: a
//! primary, two replicas and three Redis Sentinels ([`SentinelDeployment`]), with the real
//! binary.
//!
//! What is checked, always against the data nodes themselves (ground truth):
//! - discovery: requests land on the primary the sentinels name, also when the first sentinel
//!   of the list is down, when the upstream is given by flags (`--sentinel`), and when a
//!   sentinel with a stale view names a replica (keyward confirms with `ROLE`);
//! - a forced failover (`SENTINEL FAILOVER`) and a primary killed with SIGKILL, under a client
//!   that pipelines `SET k v` / `GET k`: every reply is its own request's (OK, the value just
//!   set, or an error), the client keeps its connection, and writes land on the new primary
//!   within 5 s of the sentinels' switch; both with one upstream connection per client and with
//!   `share_connections = true`;
//! - the sentinels' own credentials (`sentinel_username` / `sentinel_password`) apart from the
//!   data nodes' (`username` / `password`), and a failover followed while a sentinel is down;
//! - sentinels and data nodes that listen for TLS only (`[upstream.tls]`): keyward finds the
//!   primary and follows a forced failover, every connection over TLS;
//! - clients with per-connection state (SELECT 1, MULTI, SUBSCRIBE) are closed, or refused,
//!   when the primary changes, while a stateless client on the same keyward carries on;
//! - no sentinel reachable at start-up: requests get `no primary for 'mymaster'`, /readyz
//!   answers 503, and keyward finds the primary once the sentinels come up.
//!
//! Each test has its own deployment on free ports (about 2.5 s to start) and every wait is
//! bounded. The sentinels run with `down-after-milliseconds 1000` and `failover-timeout 5000`.
//! `cargo test --test sentinel -- --nocapture` prints what each test measured.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::sentinel::{MASTER_NAME, SentinelDeployment, Switch, start_sentinel_keyward};
use support::*;

/// How long after the sentinels' switch writes through keyward must land on the new primary.
const SERVED_AGAIN_WITHIN: Duration = Duration::from_secs(5);
/// SET/GET pairs per pipeline of the load client.
const PAIRS: usize = 20;

// ---------------------------------------------------------------------------------------------
// helpers
// ---------------------------------------------------------------------------------------------

fn assert_no_panic(kw: &Keyward) {
    let log = kw.log();
    assert!(!log.contains("panicked"), "keyward panicked; log:\n{log}");
}

/// The log line keyward writes when it learns of a (new) primary.
fn primary_line(port: u16) -> String {
    format!("primary of '{MASTER_NAME}' is now 127.0.0.1:{port}")
}

/// Waits until keyward's log has [`primary_line`] for `port`; fails with the log otherwise.
fn assert_logged_primary(kw: &Keyward, port: u16, timeout: Duration) {
    let line = primary_line(port);
    assert!(
        kw.wait_log_line(timeout, |l| l.contains(&line)).is_some(),
        "keyward did not log {line:?} within {timeout:?}; log:\n{}",
        kw.log()
    );
}

/// Sends `SET key value` on `conn` until it is answered OK and the value is on the data node
/// `port` (checked there directly), or `deadline` passes. Error replies until then are allowed
/// when they contain `allowed_error`. Returns when it was served (None: not by the deadline),
/// with every error seen.
fn write_until_on(
    d: &SentinelDeployment,
    conn: &mut RawConn,
    key: &str,
    port: u16,
    deadline: Instant,
    allowed_error: &str,
) -> (Option<Instant>, Vec<String>) {
    let mut errors = Vec::new();
    let mut n = 0;
    loop {
        n += 1;
        let value = format!("{key}:{n}");
        match conn.request(&["SET", key, &value]) {
            Reply::Simple(ok) if ok == "OK" => {
                if d.get(port, key).as_deref() == Some(value.as_str()) {
                    return (Some(Instant::now()), errors);
                }
            }
            Reply::Error(e) => {
                assert!(
                    e.contains(allowed_error),
                    "SET {key}: unexpected error {e:?} (errors before: {errors:?})"
                );
                errors.push(e);
            }
            other => panic!("SET {key}: unexpected reply {other:?}"),
        }
        if Instant::now() >= deadline {
            return (None, errors);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Joins a thread, failing the test with its panic message if it panicked.
fn join<T>(handle: thread::JoinHandle<T>, what: &str) -> T {
    handle.join().unwrap_or_else(|e| {
        let msg = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        panic!("{what} failed: {msg}")
    })
}

// ---------------------------------------------------------------------------------------------
// the load client
// ---------------------------------------------------------------------------------------------

/// What the load client saw, shared with the test.
#[derive(Debug, Default)]
struct Progress {
    batches: usize,
    ok: usize,
    errors: usize,
    error_texts: BTreeSet<String>,
    /// Batches answered without any error: when each was sent, and the index of its last pair.
    clean: Vec<(Instant, usize)>,
    /// When each batch with at least one error was sent.
    error_batches: Vec<Instant>,
    /// GETs answered nil after an error for their SET (the SET was lost or not executed).
    nil_after_set_error: usize,
    /// Error replies that name a sentinel as if it were the data node a request went to (any
    /// error naming a sentinel other than `no primary for ...`).
    naming_a_sentinel: BTreeSet<String>,
}

/// A client that pipelines [`PAIRS`] pairs of `SET {tag}:k{i} {tag}:v{i}` / `GET {tag}:k{i}` in
/// one write, reads every reply (within 10 s), and starts again with new keys, until `stop`.
/// Each reply must be its own request's: `OK` or an error for SET; for GET, the value its SET
/// just wrote or an error (nil only when that SET was answered with an error). Anything else,
/// a closed connection or a reply that does not come panics the thread. Errors that name one of
/// `sentinels` other than `no primary for ...` are recorded apart.
struct LoadClient {
    stop: Arc<AtomicBool>,
    progress: Arc<Mutex<Progress>>,
    handle: Option<thread::JoinHandle<()>>,
}

impl LoadClient {
    fn key(tag: &str, i: usize) -> String {
        format!("{tag}:k{i}")
    }

    fn value(tag: &str, i: usize) -> String {
        format!("{tag}:v{i}")
    }

    fn spawn(addr: String, tag: &str, sentinels: Vec<String>) -> LoadClient {
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(Mutex::new(Progress::default()));
        let handle = {
            let (tag, stop, progress) = (tag.to_string(), stop.clone(), progress.clone());
            thread::spawn(move || Self::run(&addr, &tag, &sentinels, &stop, &progress))
        };
        LoadClient {
            stop,
            progress,
            handle: Some(handle),
        }
    }

    fn run(
        addr: &str,
        tag: &str,
        sentinels: &[String],
        stop: &AtomicBool,
        progress: &Mutex<Progress>,
    ) {
        let mut c = RawConn::connect(addr);
        let mut i = 0;
        while !stop.load(Ordering::Acquire) {
            let first = i;
            let mut pipeline = Vec::with_capacity(PAIRS * 80);
            for j in first..first + PAIRS {
                let (key, value) = (Self::key(tag, j), Self::value(tag, j));
                pipeline.extend(resp_str(&["SET", &key, &value]));
                pipeline.extend(resp_str(&["GET", &key]));
            }
            i += PAIRS;
            let sent = Instant::now();
            if let Err(e) = c.try_send(&pipeline) {
                panic!("{tag}: writing pipeline {first}.. failed: {e} (the connection was lost)");
            }
            let mut read = |what: &str, key: &str| {
                c.try_read_reply(Duration::from_secs(10))
                    .unwrap_or_else(|| {
                        let (rest, closed) = c.read_to_close(Duration::ZERO);
                        panic!(
                            "{tag}: no reply to {what} {key} within 10 s ({}; {} byte(s) pending: \
                         {:?})",
                            if closed {
                                "keyward closed the connection"
                            } else {
                                "timed out"
                            },
                            rest.len(),
                            String::from_utf8_lossy(&rest[..rest.len().min(200)])
                        )
                    })
            };
            let (mut ok, mut errors, mut nil_after_error) = (0, Vec::new(), 0);
            for j in first..first + PAIRS {
                let (key, value) = (Self::key(tag, j), Self::value(tag, j));
                let set = read("SET", &key);
                let set_ok = match &set {
                    Reply::Simple(s) if s == "OK" => true,
                    Reply::Error(e) => {
                        errors.push(e.clone());
                        false
                    }
                    other => panic!("{tag}: reply to SET {key} is {other:?}, not OK or an error"),
                };
                ok += usize::from(set_ok);
                match read("GET", &key) {
                    Reply::Bulk(v) if v == value.as_bytes() => ok += 1,
                    Reply::Error(e) => errors.push(e),
                    Reply::Nil if !set_ok => nil_after_error += 1,
                    Reply::Nil => panic!(
                        "{tag}: GET {key} answered nil right after its SET was answered OK \
                         (the write was acknowledged by one node and the read served by another)"
                    ),
                    other => panic!(
                        "{tag}: reply to GET {key} is {other:?}, expected {value:?} or an error \
                         (SET answered {set:?})"
                    ),
                }
            }
            let mut p = progress.lock().unwrap();
            p.batches += 1;
            p.ok += ok;
            p.errors += errors.len();
            p.nil_after_set_error += nil_after_error;
            if errors.is_empty() {
                p.clean.push((sent, first + PAIRS - 1));
            } else {
                p.error_batches.push(sent);
                for e in errors {
                    let names_a_sentinel = sentinels.iter().any(|s| e.contains(s.as_str()));
                    if names_a_sentinel && !e.contains("no primary for") {
                        p.naming_a_sentinel.insert(e.clone());
                    }
                    if p.error_texts.len() < 10 {
                        p.error_texts.insert(e);
                    }
                }
            }
            let failing = !p.error_batches.is_empty() && p.error_batches.last() == Some(&sent);
            drop(p);
            if failing {
                thread::sleep(Duration::from_millis(10));
            }
        }
        // Still in step: nothing unread, and a new request gets its own reply.
        assert!(c.pending().is_empty(), "{tag}: stray bytes after the load");
        let key = Self::key(tag, usize::MAX);
        assert_eq!(c.request(&["SET", &key, "end"]), Reply::ok(), "{tag}");
        assert_eq!(c.request(&["GET", &key]), Reply::bulk("end"), "{tag}");
    }

    /// Fails the test with the client's own panic if it has stopped.
    fn check_alive(&mut self) {
        if self.handle.as_ref().is_some_and(|h| h.is_finished()) {
            let handle = self.handle.take().expect("handle");
            join(handle, "the load client");
            panic!("the load client stopped on its own");
        }
    }

    /// The newest batch answered without errors: when it was sent and the index of its last pair.
    fn last_clean(&self) -> Option<(Instant, usize)> {
        self.progress.lock().unwrap().clean.last().copied()
    }

    /// Waits until `n` batches were answered without errors.
    fn wait_clean_batches(&mut self, n: usize, timeout: Duration) {
        let ok = wait_until(timeout, || {
            self.handle.as_ref().is_some_and(|h| h.is_finished())
                || self.progress.lock().unwrap().clean.len() >= n
        });
        self.check_alive();
        assert!(
            ok,
            "the load client did not get {n} clean batches within {timeout:?}: {:?}",
            self.progress.lock().unwrap()
        );
    }

    /// Stops the client, fails the test if it panicked, and returns what it saw.
    fn finish(mut self) -> Progress {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            join(handle, "the load client");
        }
        std::mem::take(&mut *self.progress.lock().unwrap())
    }
}

// ---------------------------------------------------------------------------------------------
// 1. discovery
// ---------------------------------------------------------------------------------------------

/// SET then GET through `kw` on a fresh connection; the value must be on `primary` (checked
/// there). keyward may answer `no primary for 'mymaster'` during its first two seconds (while
/// it asks the sentinels), nothing else.
fn assert_served_by(d: &SentinelDeployment, kw: &Keyward, primary: u16, key: &str) {
    let mut c = kw.raw_conn();
    let deadline = Instant::now() + Duration::from_secs(2);
    let no_primary = format!("no primary for '{MASTER_NAME}'");
    let (served, errors) = write_until_on(d, &mut c, key, primary, deadline, &no_primary);
    assert!(
        served.is_some(),
        "writes through keyward did not land on the primary {primary} within 2 s (errors: \
         {errors:?}); keyward log:\n{}",
        kw.log()
    );
    if !errors.is_empty() {
        eprintln!(
            "[discovery] {key}: {} error(s) before the first write: {errors:?}",
            errors.len()
        );
    }
    assert_eq!(c.request(&["SET", key, "through keyward"]), Reply::ok());
    assert_eq!(c.request(&["GET", key]), Reply::bulk("through keyward"));
    assert_eq!(d.get(primary, key).as_deref(), Some("through keyward"));
    assert_logged_primary(kw, primary, Duration::from_secs(2));
}

#[test]
fn keyward_finds_the_primary_through_the_sentinels() {
    let mut d = SentinelDeployment::start();
    let primary = d.primary_port();
    assert_eq!(primary, d.node_ports()[0]);

    // proxy.toml, every sentinel up.
    let mut kw = d.keyward("", "");
    assert_served_by(&d, &kw, primary, "disc:toml");

    // --upstream S1,S2,S3 --sentinel mymaster.
    let mut kw_flags = d.keyward_from_flags();
    assert_served_by(&d, &kw_flags, primary, "disc:flags");

    // The first sentinel of the list is down before keyward starts: it is skipped.
    d.kill_sentinel(0);
    let mut kw_one_down = d.keyward("", "");
    assert_served_by(&d, &kw_one_down, primary, "disc:one-down");

    // A sentinel with a stale view names a replica first: keyward checks ROLE and asks the
    // next one. Writes keep landing on the primary (a replica would answer READONLY) while
    // keyward re-checks the sentinels.
    let replica = d.node_ports()[1];
    let stale = d.start_stale_sentinel(replica);
    assert_eq!(
        d.cli(stale, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME])
            .lines()
            .nth(1)
            .map(str::trim),
        Some(replica.to_string().as_str()),
        "the stale sentinel names the replica"
    );
    let mut sentinels = vec![format!("127.0.0.1:{stale}")];
    sentinels.extend(d.sentinel_addrs());
    let mut kw_stale = start_sentinel_keyward(&sentinels, "", "");
    assert_served_by(&d, &kw_stale, primary, "disc:stale");
    let mut c = kw_stale.raw_conn();
    let until = Instant::now() + Duration::from_millis(2500);
    let mut n = 0;
    while Instant::now() < until {
        n += 1;
        let key = format!("disc:stale:{n}");
        assert_eq!(
            c.request(&["SET", &key, "v"]),
            Reply::ok(),
            "write {n} through keyward whose first sentinel names a replica; log:\n{}",
            kw_stale.log()
        );
        assert_eq!(d.get(primary, &key).as_deref(), Some("v"));
        thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !kw_stale.log().contains(&primary_line(replica)),
        "keyward took the replica {replica} for the primary; log:\n{}",
        kw_stale.log()
    );

    for k in [&mut kw, &mut kw_flags, &mut kw_one_down, &mut kw_stale] {
        k.assert_running();
        assert_no_panic(k);
    }
}

// ---------------------------------------------------------------------------------------------
// 2, 3, 6. failover under a pipelining client
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// `SENTINEL FAILOVER mymaster`: the old primary stays up (and writable, until the sentinels
    /// turn it into a replica some seconds after the switch).
    ForcedFailover,
    /// SIGKILL of the primary; the sentinels notice after 1 s and elect a replica.
    KillPrimary,
}

fn failover_under_pipelined_load(fault: Fault, share: bool) {
    let name = format!("{fault:?}, share_connections = {share}");
    let tag = format!(
        "{}{}",
        if fault == Fault::KillPrimary {
            "kill"
        } else {
            "fo"
        },
        share
    );
    let mut d = SentinelDeployment::start();
    let old = d.primary_port();
    let mut kw = d.keyward(&format!("share_connections = {share}"), "");
    assert_served_by(&d, &kw, old, &format!("{tag}:first"));

    let mut load = LoadClient::spawn(kw.addr(), &tag, d.sentinel_addrs());
    load.wait_clean_batches(5, Duration::from_secs(10));
    let before = Instant::now();
    let switch: Switch = match fault {
        Fault::ForcedFailover => d.failover(),
        Fault::KillPrimary => {
            let killed = d.kill_primary();
            assert_eq!(killed, old);
            d.wait_for_new_primary(old)
        }
    };
    let new = switch.new;
    assert_ne!(new, old);
    load.check_alive();

    // The load client, on the connection it had all along, writes to the new primary within
    // 5 s of the sentinels' switch: a batch without errors, sent after the switch, whose last
    // key is on the new primary.
    let deadline = switch.at + SERVED_AGAIN_WITHIN;
    let mut served: Option<(Instant, Instant)> = None;
    let mut last_checked = None;
    while served.is_none() {
        load.check_alive();
        if let Some((sent, i)) = load.last_clean()
            && sent >= switch.at
            && last_checked != Some(i)
        {
            last_checked = Some(i);
            let key = LoadClient::key(&tag, i);
            if d.get(new, &key) == Some(LoadClient::value(&tag, i)) {
                served = Some((sent, Instant::now()));
            }
        }
        if served.is_none() && Instant::now() >= deadline {
            let progress = load.finish();
            d.fail(&format!(
                "{name}: the pipelining client's writes did not land on the new primary {new} \
                 within {SERVED_AGAIN_WITHIN:?} of the sentinels' switch (last clean batch \
                 checked: {last_checked:?}); client: {progress:?}\nkeyward log:\n{}",
                kw.log()
            ));
        }
        thread::sleep(Duration::from_millis(10));
    }
    let (served_sent, served_seen) = served.expect("served");
    assert_logged_primary(&kw, new, deadline.saturating_duration_since(Instant::now()));

    // A new client is served by the new primary too.
    let mut fresh = kw.raw_conn();
    let key = format!("{tag}:fresh");
    assert_eq!(fresh.request(&["SET", &key, "new"]), Reply::ok());
    assert_eq!(d.get(new, &key).as_deref(), Some("new"));

    // The load goes on for a while on the new primary, without errors.
    thread::sleep(Duration::from_millis(700));
    load.check_alive();
    let progress = load.finish();
    let late_errors: Vec<Duration> = progress
        .error_batches
        .iter()
        .filter(|&&t| t > served_sent)
        .map(|&t| t - switch.at)
        .collect();
    assert!(
        late_errors.is_empty(),
        "{name}: batches sent after writes were served on the new primary still got errors \
         (sent at these times after the switch: {late_errors:?}); client: {progress:?}"
    );
    let (last_sent, last_i) = *progress.clean.last().expect("clean batches");
    assert!(last_sent > served_sent);
    assert_eq!(
        d.get(new, &LoadClient::key(&tag, last_i)),
        Some(LoadClient::value(&tag, last_i)),
        "{name}: the last batch of the load is not on the new primary {new}"
    );
    kw.assert_running();
    assert_no_panic(&kw);

    let first_error = progress
        .error_batches
        .first()
        .map(|&t| t.saturating_duration_since(before));
    eprintln!(
        "[{name}] sentinels switched {:?} after the fault ({old} -> {new}), all agreed {:?} \
         later; the load client's writes were on the new primary in a batch sent {:?} after \
         the switch (seen {:?} after it); {} batches, {} OK replies, {} error replies in {} \
         batches (first sent {first_error:?} after the fault), {} nil GETs after a failed SET; \
         error texts: {:#?}",
        switch.at - before,
        switch.settled - switch.at,
        served_sent.saturating_duration_since(switch.at),
        served_seen - switch.at,
        progress.batches,
        progress.ok,
        progress.errors,
        progress.error_batches.len(),
        progress.nil_after_set_error,
        progress.error_texts,
    );
    // An error names the node whose connection failed: a sentinel never carries requests.
    assert!(
        progress.naming_a_sentinel.is_empty(),
        "{name}: error replies name a sentinel ({:?}) as the upstream whose connection was lost \
         or refused; the requests went to the primary {old} or {new}: {:#?}",
        d.sentinel_addrs(),
        progress.naming_a_sentinel
    );
}

#[test]
fn forced_failover_under_a_pipelining_client() {
    failover_under_pipelined_load(Fault::ForcedFailover, false);
}

#[test]
fn primary_killed_under_a_pipelining_client() {
    failover_under_pipelined_load(Fault::KillPrimary, false);
}

#[test]
fn forced_failover_under_a_pipelining_client_shared_connection() {
    failover_under_pipelined_load(Fault::ForcedFailover, true);
}

#[test]
fn primary_killed_under_a_pipelining_client_shared_connection() {
    failover_under_pipelined_load(Fault::KillPrimary, true);
}

// ---------------------------------------------------------------------------------------------
// credentials: the sentinels' own, and the data nodes'
// ---------------------------------------------------------------------------------------------

#[test]
fn sentinels_and_data_nodes_with_credentials_of_their_own() {
    let mut d = SentinelDeployment::start_with_passwords("data-secret", "sentinel-secret");
    let old = d.primary_port();
    let credentials = "username = \"default\"\npassword = \"data-secret\"\n\
                       sentinel_username = \"default\"\nsentinel_password = \"sentinel-secret\"";
    let mut kw = d.keyward(credentials, "");
    assert_served_by(&d, &kw, old, "cred:first");

    // The data nodes' password is not the sentinels': with it, no sentinel answers.
    let wrong = "password = \"data-secret\"\nsentinel_password = \"data-secret\"";
    let mut kw_wrong = d.keyward(wrong, "");
    let no_primary = format!("no primary for '{MASTER_NAME}'");
    match kw_wrong.raw_conn().request(&["SET", "cred:wrong", "1"]) {
        Reply::Error(e) => assert!(
            e.contains(&no_primary),
            "with the wrong sentinel password: {e:?} does not say {no_primary:?}"
        ),
        other => panic!("with the wrong sentinel password: {other:?}, expected an error"),
    }
    assert!(!d.cli(old, &["EXISTS", "cred:wrong"]).contains('1'));

    // The first sentinel dies while keyward runs, then a failover: keyward follows it through
    // the two others.
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["SET", "cred:a", "before"]), Reply::ok());
    d.kill_sentinel(0);
    let switch = d.failover();
    let deadline = switch.at + SERVED_AGAIN_WITHIN;
    let (served, errors) = write_until_on(&d, &mut c, "cred:a", switch.new, deadline, "");
    assert!(
        served.is_some(),
        "writes did not land on the new primary {} within {SERVED_AGAIN_WITHIN:?} of the \
         switch (errors: {errors:?}); keyward log:\n{}",
        switch.new,
        kw.log()
    );
    assert_logged_primary(&kw, switch.new, Duration::from_secs(1));
    for k in [&mut kw, &mut kw_wrong] {
        k.assert_running();
        assert_no_panic(k);
    }
    eprintln!(
        "[credentials] switch {} -> {} with the first sentinel down: served {:?} after it \
         (errors: {errors:?})",
        switch.old,
        switch.new,
        served.expect("served") - switch.at
    );
}

// ---------------------------------------------------------------------------------------------
// TLS: sentinels and data nodes that speak TLS only
// ---------------------------------------------------------------------------------------------

#[test]
fn sentinels_and_data_nodes_over_tls_only() {
    let d = SentinelDeployment::start_tls();
    let primary = d.primary_port();
    assert_eq!(primary, d.node_ports()[0]);
    // Every sentinel answers over TLS (`redis-cli --tls --cacert CA`) with the primary's TLS
    // port: the sentinels reached it, and each other, over TLS.
    for sentinel in d.sentinel_ports() {
        let out = d.cli(
            sentinel,
            &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
        );
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        assert_eq!(
            lines,
            ["127.0.0.1", primary.to_string().as_str()],
            "sentinel {sentinel} over TLS"
        );
    }

    // A plain client of keyward; keyward dials the sentinels and the primary over TLS.
    let mut kw = d.keyward("", &d.upstream_tls_section());
    assert_served_by(&d, &kw, primary, "tls:first");
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["SET", "tls:a", "before"]), Reply::ok());
    assert_eq!(c.request(&["GET", "tls:a"]), Reply::bulk("before"));
    assert_eq!(d.get(primary, "tls:a").as_deref(), Some("before"));

    // A forced failover: keyward follows it, over TLS, on the connection the client had.
    let switch = d.failover();
    assert_ne!(switch.new, primary);
    let deadline = switch.at + SERVED_AGAIN_WITHIN;
    let (served, errors) = write_until_on(&d, &mut c, "tls:a", switch.new, deadline, "");
    assert!(
        served.is_some(),
        "writes did not land on the new primary {} within {SERVED_AGAIN_WITHIN:?} of the \
         switch (errors: {errors:?}); keyward log:\n{}",
        switch.new,
        kw.log()
    );
    assert_logged_primary(&kw, switch.new, Duration::from_secs(1));
    assert_eq!(c.request(&["SET", "tls:b", "after"]), Reply::ok());
    assert_eq!(c.request(&["GET", "tls:b"]), Reply::bulk("after"));
    assert_eq!(d.get(switch.new, "tls:b").as_deref(), Some("after"));
    kw.assert_running();
    assert_no_panic(&kw);
    eprintln!(
        "[tls] switch {} -> {}: served {:?} after it (errors: {errors:?})",
        switch.old,
        switch.new,
        served.expect("served") - switch.at
    );
}

// ---------------------------------------------------------------------------------------------
// 4. clients with per-connection state
// ---------------------------------------------------------------------------------------------

/// Waits until `deadline` for keyward to close `conn` (only error replies may come before);
/// if it is still open then, sends `probe` and requires an error reply or a close. Anything
/// else fails the test with `what`. Returns what happened, in words.
fn stateful_outcome(conn: &mut RawConn, what: &str, probe: &[&str], deadline: Instant) -> String {
    let (bytes, closed) = conn.read_to_close(deadline.saturating_duration_since(Instant::now()));
    let mut errors = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        match parse_reply(rest) {
            Ok(Some((Reply::Error(e), used))) => {
                errors.push(e);
                rest = &rest[used..];
            }
            Ok(Some((other, _))) => {
                panic!("{what}: after the primary changed, keyward sent {other:?} unasked")
            }
            _ => panic!(
                "{what}: after the primary changed, keyward sent {:?}",
                String::from_utf8_lossy(rest)
            ),
        }
    }
    if closed {
        return format!("closed by keyward after the error replies {errors:?}");
    }
    assert!(
        errors.is_empty(),
        "{what}: errors {errors:?} but the connection stays open"
    );
    if conn.try_send(&resp_str(probe)).is_err() {
        return format!("still open at the deadline; writing {probe:?} failed (closed)");
    }
    match conn.try_read_reply(Duration::from_secs(5)) {
        Some(Reply::Error(e)) => {
            let (_, closed) = conn.read_to_close(Duration::from_millis(500));
            format!("still open at the deadline; {probe:?} answered {e:?}, closed: {closed}")
        }
        None => {
            let (_, closed) = conn.read_to_close(Duration::ZERO);
            assert!(closed, "{what}: {probe:?} got no reply within 5 s");
            format!("still open at the deadline; {probe:?} got the connection closed")
        }
        Some(other) => panic!(
            "{what}: after the primary changed, the connection was neither closed nor refused: \
             {probe:?} was answered {other:?}"
        ),
    }
}

#[test]
fn clients_with_state_are_closed_when_the_primary_changes_others_carry_on() {
    let d = SentinelDeployment::start();
    let old = d.primary_port();
    let mut kw = d.keyward("", "");
    assert_served_by(&d, &kw, old, "state:first");

    // A: stateless, keeps its connection.
    let mut a = kw.raw_conn();
    assert_eq!(a.request(&["SET", "state:a", "1"]), Reply::ok());
    // B: SELECT 1. The same key in db 0 (set on the primary directly, replicated) tells a
    // silent move to db 0 of another node.
    let mut b = kw.raw_conn();
    assert_eq!(b.request(&["SELECT", "1"]), Reply::ok());
    assert_eq!(b.request(&["SET", "state:db", "db1"]), Reply::ok());
    assert_eq!(b.request(&["GET", "state:db"]), Reply::bulk("db1"));
    let _: () = redis::cmd("SET")
        .arg("state:db")
        .arg("db0")
        .query(&mut d.conn(old))
        .expect("SET in db 0 of the primary");
    // C: inside MULTI, one command queued.
    let mut c = kw.raw_conn();
    assert_eq!(c.request(&["MULTI"]), Reply::ok());
    assert_eq!(
        c.request(&["SET", "state:multi", "x"]),
        Reply::simple("QUEUED")
    );
    // D: subscribed.
    let mut s = kw.raw_conn();
    s.cmd(&["SUBSCRIBE", "state:chan"]);
    assert_eq!(
        s.read_reply(IO_TIMEOUT),
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("state:chan"),
            Reply::Int(1)
        ])
    );
    d.wait_for_replicas_synced();

    let switch = d.failover();
    let new = switch.new;
    let deadline = switch.at + SERVED_AGAIN_WITHIN;

    // A carries on, on the same connection, on the new primary.
    let (served, errors) = write_until_on(&d, &mut a, "state:a", new, deadline, "");
    assert!(
        served.is_some(),
        "the stateless client's writes did not land on the new primary {new} within \
         {SERVED_AGAIN_WITHIN:?} of the switch (errors: {errors:?}); keyward log:\n{}",
        kw.log()
    );
    assert_eq!(
        a.request(&["GET", "state:a"]),
        a_value_on(&d, new, "state:a")
    );

    let b_out = stateful_outcome(
        &mut b,
        "the client after SELECT 1",
        &["GET", "state:db"],
        deadline,
    );
    let c_out = stateful_outcome(&mut c, "the client inside MULTI", &["EXEC"], deadline);
    let s_out = stateful_outcome(&mut s, "the subscribed client", &["PING"], deadline);
    assert_eq!(
        d.get(new, "state:multi"),
        None,
        "the transaction begun on the old primary was executed on the new one"
    );

    // A is still fine afterwards.
    assert_eq!(a.request(&["SET", "state:a", "end"]), Reply::ok());
    assert_eq!(d.get(new, "state:a").as_deref(), Some("end"));
    kw.assert_running();
    assert_no_panic(&kw);
    eprintln!(
        "[state] switch {} -> {new}; stateless client served on the new primary {:?} after \
         the switch (errors: {errors:?}); SELECT 1 client: {b_out}; MULTI client: {c_out}; \
         subscriber: {s_out}",
        switch.old,
        served.expect("served") - switch.at,
    );
}

/// The reply a GET of `key` should get: what the node `port` holds.
fn a_value_on(d: &SentinelDeployment, port: u16, key: &str) -> Reply {
    match d.get(port, key) {
        Some(v) => Reply::bulk(v),
        None => Reply::Nil,
    }
}

// ---------------------------------------------------------------------------------------------
// 5. no sentinel at start-up
// ---------------------------------------------------------------------------------------------

#[test]
fn no_sentinel_at_start_up_means_no_primary_then_keyward_finds_it() {
    let ports = [free_port(), free_port(), free_port()];
    let sentinels: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let admin_port = free_port();
    let admin = format!("[admin]\nlisten = \"127.0.0.1:{admin_port}\"\n");
    let readyz = format!("http://127.0.0.1:{admin_port}/readyz");
    let mut kw = start_sentinel_keyward(&sentinels, "", &admin);

    let no_primary = format!("no primary for '{MASTER_NAME}'");
    let mut c = kw.raw_conn();
    for args in [&["SET", "nosent:a", "1"][..], &["GET", "nosent:a"][..]] {
        match c.request(args) {
            Reply::Error(e) => assert!(
                e.contains(&no_primary),
                "{args:?} without any sentinel: {e:?} does not say {no_primary:?}"
            ),
            other => panic!("{args:?} without any sentinel: {other:?}, expected an error"),
        }
    }
    let (status, body) = http_get(&readyz);
    assert_eq!(status, 503, "/readyz without any sentinel: {body}");

    // The sentinels come up: keyward finds the primary by itself, on the same connection.
    let d = SentinelDeployment::start_with_sentinel_ports(&ports);
    let primary = d.primary_port();
    let up = Instant::now();
    let deadline = up + Duration::from_secs(10);
    let (served, errors) = write_until_on(&d, &mut c, "nosent:a", primary, deadline, &no_primary);
    assert!(
        served.is_some(),
        "keyward did not find the primary {primary} within 10 s of the sentinels coming up \
         (errors: {errors:?}); log:\n{}",
        kw.log()
    );
    assert!(
        wait_until(Duration::from_secs(5), || http_get(&readyz).0 == 200),
        "/readyz is not 200 once the primary is known: {:?}",
        http_get(&readyz)
    );
    assert_logged_primary(&kw, primary, Duration::from_secs(1));
    kw.assert_running();
    assert_no_panic(&kw);
    eprintln!(
        "[no sentinel] keyward served writes {:?} after the sentinels came up ({} error(s) \
         before)",
        served.expect("served") - up,
        errors.len()
    );
}
