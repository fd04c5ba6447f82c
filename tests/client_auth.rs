//! Client authentication at keyward (`[server] password`, `[[server.users]]`): what a client
//! sees before and after logging in, Redis's caps for anonymous sockets, the throttle on wrong
//! passwords, protected mode, and that no credential reaches Redis, a log or `--check-config`.
//!
//! scripts/test.sh runs this file in both upstream modes (per-client and shared connections).

mod support;

use std::time::{Duration, Instant};

use support::*;

const PASSWORD: &str = "s3cret-Pa55";

fn sha256_hex(text: &str) -> String {
    keyward::auth::sha256(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn with_password() -> (RedisServer, Keyward) {
    start_pair(&format!("[server]\npassword = \"{PASSWORD}\""))
}

fn error(reply: &Reply) -> &str {
    reply
        .error_text()
        .unwrap_or_else(|| panic!("expected an error, got {reply:?}"))
}

#[test]
fn nothing_but_auth_hello_ping_and_quit_before_the_password() {
    let (redis, keyward) = with_password();
    redis.cli(&["SET", "k", "v"]);
    let mut c = keyward.raw_conn();
    assert_eq!(
        error(&c.request(&["GET", "k"])),
        "NOAUTH Authentication required."
    );
    assert_eq!(
        error(&c.request(&["DEL", "k"])),
        "NOAUTH Authentication required."
    );
    assert_eq!(c.request(&["PING"]), Reply::simple("PONG"));
    assert_eq!(
        error(&c.request(&["AUTH", "wrong"])),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        error(&c.request(&["AUTH", "default", "wrong"])),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(
        error(&c.request(&["AUTH"])),
        "ERR wrong number of arguments for 'auth' command"
    );
    assert!(redis.exists(b"k"), "nothing ran before the login");
    assert_eq!(c.request(&["AUTH", PASSWORD]), Reply::ok());
    assert_eq!(c.request(&["GET", "k"]), Reply::bulk("v"));
    // `AUTH default <password>` is the same login.
    let mut d = keyward.raw_conn();
    assert_eq!(d.request(&["AUTH", "default", PASSWORD]), Reply::ok());
    assert_eq!(d.request(&["DEL", "k"]), Reply::Int(1));

    // RESET logs the client out again, as Redis does with requirepass.
    assert_eq!(c.request(&["RESET"]), Reply::simple("RESET"));
    assert_eq!(
        error(&c.request(&["GET", "k"])),
        "NOAUTH Authentication required."
    );
    assert_eq!(c.request(&["QUIT"]), Reply::ok());

    // redis-cli's own -a works, and the credentials never reached Redis.
    let out = keyward.cli(&["-a", PASSWORD, "--no-auth-warning", "SET", "cli", "1"]);
    assert_eq!(out.trim(), "OK");
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert!(
        !stats.contains("cmdstat_auth"),
        "AUTH reached Redis:\n{stats}"
    );
    let log = keyward.log();
    assert!(
        !log.contains(PASSWORD),
        "the password is in the log:\n{log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn hello_logs_in_and_switches_protocol_in_one_request() {
    let (redis, keyward) = with_password();
    let mut c = keyward.raw_conn();
    let refused = c.request(&["HELLO", "3"]);
    assert!(
        error(&refused).starts_with("NOAUTH HELLO must be called with the client already"),
        "{refused:?}"
    );
    assert_eq!(
        error(&c.request(&["HELLO", "3", "AUTH", "default", "nope"])),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    let hello = c.request(&["HELLO", "3", "AUTH", "default", PASSWORD, "SETNAME", "app"]);
    let Reply::Map(fields) = &hello else {
        panic!("HELLO 3 should answer a RESP3 map, got {hello:?}");
    };
    assert!(
        fields.contains(&(Reply::bulk("proto"), Reply::Int(3))),
        "{fields:?}"
    );
    assert_eq!(c.request(&["SET", "h", "1"]), Reply::ok());
    assert_eq!(c.request(&["CLIENT", "GETNAME"]), Reply::bulk("app"));
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert!(!stats.contains("cmdstat_auth"), "{stats}");
}

#[test]
fn anonymous_sockets_get_redis_caps_on_request_size() {
    let (_redis, keyward) = with_password();
    // Eleven arguments before the login: Redis's error, then the connection closes.
    let mut c = keyward.raw_conn();
    let args: Vec<String> = (0..11).map(|i| format!("a{i}")).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    c.cmd(&args);
    let (bytes, closed) = c.read_to_close(IO_TIMEOUT);
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        "-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    assert!(closed);

    // A bulk string over 16 KiB is refused at its header, before its bytes are buffered.
    let mut c = keyward.raw_conn();
    c.send(b"*2\r\n$4\r\nAUTH\r\n$100000000\r\n");
    let (bytes, closed) = c.read_to_close(IO_TIMEOUT);
    assert_eq!(
        String::from_utf8_lossy(&bytes),
        "-ERR Protocol error: unauthenticated bulk length\r\n"
    );
    assert!(closed);

    // Logged in, the ordinary limits apply: a 1 MB value in the same pipeline as the AUTH.
    let mut c = keyward.raw_conn();
    let big = "x".repeat(1 << 20);
    let mut pipeline = resp_str(&["AUTH", PASSWORD]);
    pipeline.extend(resp_str(&["SET", "big", &big]));
    pipeline.extend(resp_str(&["STRLEN", "big"]));
    c.send(&pipeline);
    assert_eq!(
        c.read_n_replies(3, IO_TIMEOUT),
        [Reply::ok(), Reply::ok(), Reply::Int(1 << 20)]
    );
}

#[test]
fn users_log_in_by_name_and_only_some_may_bypass_deny_commands() {
    let extra = format!(
        "[[server.users]]\nname = \"ops\"\npassword_sha256 = \"{}\"\nbypass_deny_commands = true\n\
         [[server.users]]\nname = \"app\"\npassword_sha256 = \"{}\"\n",
        sha256_hex("ops-pass"),
        sha256_hex("app-pass"),
    );
    let (redis, keyward) = start_pair(&extra);
    redis.cli(&["MSET", "a1", "1", "a2", "2"]);

    let mut app = keyward.raw_conn();
    assert_eq!(
        error(&app.request(&["AUTH", "app-pass"])),
        "ERR AUTH <password> called without any password configured for the default user. \
         Are you sure your configuration is correct?"
    );
    assert_eq!(
        error(&app.request(&["AUTH", "app", "ops-pass"])),
        "WRONGPASS invalid username-password pair or user is disabled."
    );
    assert_eq!(app.request(&["AUTH", "app", "app-pass"]), Reply::ok());
    assert!(error(&app.request(&["FLUSHDB"])).contains("rule deny_commands"));
    assert!(redis.exists(b"a1"));

    let mut ops = keyward.raw_conn();
    assert_eq!(ops.request(&["AUTH", "ops", "ops-pass"]), Reply::ok());
    // The key rules still hold for a user who may run denied commands.
    assert!(error(&ops.request(&["DEL", "a*"])).contains("rule wildcard_chars"));
    assert_eq!(ops.request(&["FLUSHDB"]), Reply::ok());
    assert!(!redis.exists(b"a1") && !redis.exists(b"a2"));
}

#[test]
fn repeated_wrong_passwords_from_one_address_are_slowed_down() {
    let (_redis, keyward) = with_password();
    let mut c = keyward.raw_conn();
    let start = Instant::now();
    for _ in 0..5 {
        c.request(&["AUTH", "guess"]);
    }
    let free = start.elapsed();
    assert!(free < Duration::from_millis(500), "{free:?}");
    // Failures 5, 6 and 7 queue waits of 100, 200 and 400 ms before the next attempts.
    let start = Instant::now();
    for _ in 0..3 {
        assert!(error(&c.request(&["AUTH", "guess"])).starts_with("WRONGPASS"));
    }
    let slowed = start.elapsed();
    assert!(
        slowed >= Duration::from_millis(700) && slowed < Duration::from_secs(5),
        "{slowed:?}"
    );
    // A wrong guess from a second connection of the same address waits its turn too; the
    // right password is answered at once, and logged-in clients are not slowed.
    let mut other = keyward.raw_conn();
    let start = Instant::now();
    assert!(error(&other.request(&["AUTH", "guess"])).starts_with("WRONGPASS"));
    assert!(
        start.elapsed() >= Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    let start = Instant::now();
    assert_eq!(other.request(&["AUTH", PASSWORD]), Reply::ok());
    assert_eq!(other.request(&["PING"]), Reply::simple("PONG"));
    assert!(
        start.elapsed() < Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
    let log = keyward.log();
    assert!(log.contains("authentication failed"), "{log}");
    assert!(
        !log.contains("guess"),
        "the guessed password is in the log:\n{log}"
    );
}

#[test]
fn shared_connection_sessions_keep_their_login_when_they_move_to_their_own() {
    let (_redis, keyward) = start_pair(&format!(
        "[server]\npassword = \"{PASSWORD}\"\n[upstream]\nshare_connections = true"
    ));
    let mut c = keyward.raw_conn();
    assert_eq!(c.request(&["AUTH", PASSWORD]), Reply::ok());
    assert_eq!(c.request(&["SET", "k", "1"]), Reply::ok());
    // MULTI moves the client to a connection of its own; it stays logged in there.
    assert_eq!(c.request(&["MULTI"]), Reply::ok());
    assert_eq!(c.request(&["INCR", "k"]), Reply::simple("QUEUED"));
    assert_eq!(c.request(&["EXEC"]), Reply::Array(vec![Reply::Int(2)]));
    assert_eq!(c.request(&["GET", "k"]), Reply::bulk("2"));
    // A pipeline that logs in and subscribes in one write.
    let mut s = keyward.raw_conn();
    let mut pipeline = resp_str(&["AUTH", PASSWORD]);
    pipeline.extend(resp_str(&["SUBSCRIBE", "ch"]));
    s.send(&pipeline);
    let replies = s.read_n_replies(2, IO_TIMEOUT);
    assert_eq!(replies[0], Reply::ok());
    assert_eq!(
        replies[1],
        Reply::Array(vec![
            Reply::bulk("subscribe"),
            Reply::bulk("ch"),
            Reply::Int(1)
        ])
    );
    // A client that never logged in cannot get around it by moving.
    let mut anon = keyward.raw_conn();
    assert_eq!(
        error(&anon.request(&["SUBSCRIBE", "ch"])),
        "NOAUTH Authentication required."
    );
    assert_eq!(
        error(&anon.request(&["MULTI"])),
        "NOAUTH Authentication required."
    );
}

#[test]
fn auth_inside_multi_is_refused_and_aborts_the_transaction() {
    let (redis, keyward) = with_password();
    let mut c = keyward.raw_conn();
    assert_eq!(c.request(&["AUTH", PASSWORD]), Reply::ok());
    assert_eq!(c.request(&["MULTI"]), Reply::ok());
    assert_eq!(c.request(&["SET", "t", "1"]), Reply::simple("QUEUED"));
    assert!(error(&c.request(&["AUTH", PASSWORD])).contains("AUTH inside MULTI"));
    assert!(error(&c.request(&["EXEC"])).starts_with("EXECABORT"));
    assert!(!redis.exists(b"t"));
}

/// Runs the keyward binary on a configuration (`--check-config FILE` when `check`, else
/// `--config FILE`) and returns (exit code, stdout + stderr).
fn keyward_with(config: &str, check: bool) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = keyward_command();
    cmd.current_dir(dir.path())
        .arg(if check { "--check-config" } else { "--config" })
        .arg(&path);
    let out = run_with_timeout(&mut cmd, Duration::from_secs(10));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn a_network_address_without_authentication_is_refused_at_start() {
    let port = free_port();
    let open = format!("[server]\nlisten = \"0.0.0.0:{port}\"\n");
    let (code, text) = keyward_with(&open, false);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("server.listen") && text.contains("allow_unauthenticated = true"),
        "{text}"
    );
    // Saying so explicitly, or setting a password, passes the check.
    let (code, text) = keyward_with(&format!("{open}allow_unauthenticated = true\n"), true);
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn check_config_shows_no_credentials() {
    let config = format!(
        "[server]\nlisten = \"0.0.0.0:{}\"\npassword = \"{PASSWORD}\"\n\
         [upstream]\nusername = \"proxy\"\npassword = \"upstream-Secret\"\n\
         [[server.users]]\nname = \"ops\"\npassword_sha256 = \"{}\"\n",
        free_port(),
        sha256_hex("ops-pass")
    );
    let (code, text) = keyward_with(&config, true);
    assert_eq!(code, Some(0), "{text}");
    for secret in [PASSWORD, "upstream-Secret", &sha256_hex("ops-pass")] {
        assert!(!text.contains(secret), "{secret} shown:\n{text}");
    }
    assert!(
        text.contains("[[server.users]]") && text.contains("name = \"ops\""),
        "{text}"
    );
}

/// Found in review: Redis cuts option names at a NUL byte, so `AUTH\0x` inside HELLO was AUTH
/// to Redis but not to keyward, which forwarded the client's credentials and let Redis switch
/// keyward's upstream connection to the client's user.
#[test]
fn no_hello_spelling_switches_the_upstream_user() {
    let redis = RedisServer::start_with(&[
        "--user", "kw", "on", ">kwpw", "~*", "&*", "+@all", "-config",
    ]);
    let keyward = Keyward::start_with(
        &redis.addr(),
        &format!(
            "[server]\npassword = \"{PASSWORD}\"\n[upstream]\nusername = \"kw\"\npassword = \"kwpw\""
        ),
    );
    let mut c = keyward.raw_conn();
    assert_eq!(c.request(&["AUTH", PASSWORD]), Reply::ok());
    assert!(error(&c.request(&["CONFIG", "GET", "maxmemory"])).starts_with("NOPERM"));
    for option in [&b"AUTH\0x"[..], b"auth", b"AuTh\0"] {
        let reply = c.request_bytes(&[b"HELLO", b"2", option, b"default", b"anything"]);
        assert_eq!(
            error(&reply),
            "WRONGPASS invalid username-password pair or user is disabled.",
            "{option:?}"
        );
    }
    // keyward's own password in the same places logs in to keyward, not to Redis.
    let hello = c.request_bytes(&[b"HELLO", b"2", b"AUTH\0x", b"default", PASSWORD.as_bytes()]);
    assert!(matches!(hello, Reply::Array(_)), "{hello:?}");
    let info = c.request(&["CLIENT", "INFO"]);
    assert!(
        matches!(&info, Reply::Bulk(b) if String::from_utf8_lossy(b).contains("user=kw")),
        "{info:?}"
    );
    assert!(error(&c.request(&["CONFIG", "GET", "maxmemory"])).starts_with("NOPERM"));
}

/// Found in review: a burst of wrong passwords from one address used to push every later
/// attempt from it, the right password included, minutes into the future.
#[test]
fn a_burst_of_wrong_passwords_does_not_lock_out_the_right_one() {
    let (_redis, keyward) = with_password();
    let addr = keyward.addr();
    let guessers: Vec<_> = (0..8)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut c = RawConn::connect(&addr);
                c.cmd(&["AUTH", "wrong"]);
                c
            })
        })
        .collect();
    let mut guessers: Vec<RawConn> = guessers.into_iter().map(|t| t.join().unwrap()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let start = Instant::now();
    let mut c = keyward.raw_conn();
    assert_eq!(c.request(&["AUTH", PASSWORD]), Reply::ok());
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "{:?}",
        start.elapsed()
    );
    // Every wrong guess is answered, none after more than 10 s.
    for g in &mut guessers {
        assert!(error(&g.read_reply(Duration::from_secs(12))).starts_with("WRONGPASS"));
    }
}

/// Found in review: an anonymous client could make Redis (or keyward) buffer megabytes with
/// pipelined 16 KiB PINGs it never read, and could move itself to a private connection with
/// RESET in shared mode.
#[test]
fn anonymous_clients_reach_nothing_upstream_and_are_held_to_a_few_replies() {
    let (redis, keyward) = with_password();
    let arg = "p".repeat(16 * 1024);
    let mut c = keyward.raw_conn();
    let mut pipeline = Vec::new();
    for _ in 0..200 {
        pipeline.extend(resp_str(&["PING", &arg]));
    }
    let before = redis.cli(&["INFO", "clients"]);
    let pings = |stats: &str| -> String {
        stats
            .lines()
            .find(|l| l.starts_with("cmdstat_ping:"))
            .and_then(|l| l.split(',').next())
            .unwrap_or("")
            .to_string()
    };
    let pings_before = pings(&redis.cli(&["INFO", "commandstats"]));
    // Written from a thread: keyward stops reading this client, so the write may block.
    let mut writer = c.stream.try_clone().unwrap();
    let _writer = std::thread::spawn(move || {
        use std::io::Write;
        let _ = writer.write_all(&pipeline);
    });
    std::thread::sleep(Duration::from_millis(500));
    let stats = redis.cli(&["INFO", "commandstats"]);
    assert_eq!(pings(&stats), pings_before, "a PING reached Redis");
    let omem: u64 = redis
        .cli(&["CLIENT", "LIST"])
        .split_whitespace()
        .filter_map(|f| f.strip_prefix("omem="))
        .filter_map(|v| v.parse().ok())
        .max()
        .unwrap_or(0);
    assert!(omem < 64 * 1024, "Redis buffers {omem} bytes");
    for i in 0..200 {
        assert_eq!(c.read_reply(IO_TIMEOUT), Reply::bulk(&arg), "reply {i}");
    }
    // Fifty anonymous RESETs open no upstream connection.
    let mut r = keyward.raw_conn();
    for _ in 0..50 {
        assert_eq!(r.request(&["RESET"]), Reply::simple("RESET"));
    }
    let after = redis.cli(&["INFO", "clients"]);
    let connected = |info: &str| -> u64 {
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    };
    assert!(
        connected(&after) <= connected(&before) + 2,
        "{before}\n{after}"
    );
    // A forged log line in a user name stays on one line.
    let mut f = keyward.raw_conn();
    f.request(&["AUTH", "x\nINFO keyward::audit: forged", "pw"]);
    assert!(
        !keyward
            .log()
            .lines()
            .any(|l| l.starts_with("INFO keyward::audit: forged")),
        "{}",
        keyward.log()
    );
}

#[test]
fn audit_lines_name_the_user_the_client_logged_in_as() {
    let extra = format!(
        "[server]\npassword = \"{PASSWORD}\"\n\
         [[server.users]]\nname = \"app\"\npassword_sha256 = \"{}\"\n",
        sha256_hex("app-pass"),
    );
    let (redis, keyward) = start_pair(&extra);
    redis.cli(&["MSET", "a1", "1", "a2", "2"]);
    let mut app = keyward.raw_conn();
    assert_eq!(app.request(&["AUTH", "app", "app-pass"]), Reply::ok());
    assert_eq!(app.request(&["DEL", "a1"]), Reply::Int(1));
    assert!(error(&app.request(&["UNLINK", "a*"])).contains("wildcard_chars"));
    let mut default = keyward.raw_conn();
    assert_eq!(default.request(&["AUTH", PASSWORD]), Reply::ok());
    assert_eq!(default.request(&["REMOVEKEYS", "a2"]), Reply::Int(1));

    for (user, command, outcome) in [
        ("app", "DEL", "removed 1"),
        ("app", "UNLINK", "refused: wildcard_chars"),
        ("default", "REMOVEKEYS", "removed 1"),
    ] {
        let fields = format!("user={user} command={command} ");
        let outcome = format!("outcome={outcome} ");
        let line = keyward.wait_log_line(Duration::from_secs(3), |l| {
            l.contains("keyward::audit") && l.contains(&fields) && l.contains(&outcome)
        });
        assert!(
            line.is_some(),
            "no audit line `{fields}... {outcome}`; log:\n{}",
            keyward.log()
        );
    }
}
