//! TLS: clients to keyward (`[server.tls]`, with and without required client certificates) and
//! keyward to a TLS-only Redis (`[upstream.tls]`), against a real `redis-server --tls-port`, the
//! real binary, `redis-cli --tls` and a rustls client. Certificates are generated at run time.

mod support;

use std::io::Read;
use std::time::Duration;

use support::tls::{TlsClient, TlsFiles};
use support::{Keyward, RawConn, RedisServer, Reply, redis_cli, resp_str};

/// `[server.tls]` with the certificates of `files`, requiring client certificates when asked.
fn server_tls(files: &TlsFiles, require_client_cert: bool) -> String {
    let mut toml = format!(
        "[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        files.server_cert(),
        files.server_key()
    );
    if require_client_cert {
        toml.push_str(&format!("client_ca_file = \"{}\"\n", files.ca()));
    }
    toml
}

/// `[upstream.tls]` trusting the CA of `files`, with keyward's client certificate (Redis asks for
/// one by default), and `share_connections` as given.
fn upstream_tls(files: &TlsFiles, share_connections: bool) -> String {
    format!(
        "[upstream]\nshare_connections = {share_connections}\n\
         [upstream.tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        files.ca(),
        files.client_cert(),
        files.client_key()
    )
}

/// `redis-cli --tls ...` against keyward; returns (success, stdout + stderr).
fn tls_cli(
    keyward: &Keyward,
    files: &TlsFiles,
    client_cert: bool,
    args: &[&str],
) -> (bool, String) {
    let tls = files.cli_args(client_cert);
    let mut all: Vec<&str> = tls.iter().map(String::as_str).collect();
    all.extend_from_slice(args);
    let out = redis_cli(keyward.port, &all);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A pipeline of 500 SET / GET pairs (1000 commands) and the replies it must get.
fn pipeline() -> (Vec<u8>, Vec<Reply>) {
    let mut bytes = Vec::new();
    let mut expected = Vec::new();
    for i in 0..500 {
        let key = format!("pipe:{i}");
        let value = format!("value-{i}-{}", "x".repeat(i % 50));
        bytes.extend(resp_str(&["SET", &key, &value]));
        bytes.extend(resp_str(&["GET", &key]));
        expected.push(Reply::ok());
        expected.push(Reply::bulk(value));
    }
    (bytes, expected)
}

#[test]
fn clients_speak_tls_to_keyward() {
    let files = TlsFiles::generate();
    let redis = RedisServer::start();
    let keyward = Keyward::start_with(&redis.addr(), &server_tls(&files, false));

    let (ok, out) = tls_cli(&keyward, &files, false, &["SET", "user:1", "a"]);
    assert!(ok && out.trim() == "OK", "{out}");
    let (_, out) = tls_cli(&keyward, &files, false, &["GET", "user:1"]);
    assert_eq!(out.trim(), "a");
    let (_, out) = tls_cli(&keyward, &files, false, &["DEL", "user:*"]);
    assert!(
        out.contains("keyward guard: DEL refused, key 'user:*' contains the wildcard character"),
        "{out}"
    );
    assert!(redis.exists(b"user:1"), "a refused DEL deleted nothing");
    let (_, out) = tls_cli(&keyward, &files, false, &["DEL", "user:1"]);
    assert_eq!(out.trim(), "1");
    assert!(!redis.exists(b"user:1"));

    // A pipeline over TLS, then a half-close: every reply still arrives, then keyward closes.
    let (requests, expected) = pipeline();
    let mut client = TlsClient::connect(&keyward.addr(), &files, false).expect("TLS connect");
    client.send(&requests).expect("send pipeline");
    client.half_close().expect("half-close");
    assert_eq!(client.read_replies(expected.len()), expected);
    client
        .read_close()
        .expect("keyward closes after the last reply");
    assert_eq!(
        redis.cli(&["GET", "pipe:499"]).trim(),
        format!("value-499-{}", "x".repeat(49))
    );
}

#[test]
fn client_authentication_works_over_tls() {
    let files = TlsFiles::generate();
    let redis = RedisServer::start();
    let extra = format!(
        "[server]\npassword = \"tls-s3cret\"\n{}",
        server_tls(&files, false)
    );
    let keyward = Keyward::start_with(&redis.addr(), &extra);

    let (_, out) = tls_cli(&keyward, &files, false, &["SET", "k", "v"]);
    assert!(out.contains("NOAUTH"), "{out}");
    let (ok, out) = tls_cli(
        &keyward,
        &files,
        false,
        &["--no-auth-warning", "-a", "tls-s3cret", "SET", "k", "v"],
    );
    assert!(ok && out.trim() == "OK", "{out}");
    assert_eq!(redis.cli(&["GET", "k"]).trim(), "v");
}

/// Clients Redis counts (keyward's upstream connections plus the one asking).
fn connected_clients(redis: &RedisServer) -> usize {
    let info = redis.cli(&["INFO", "clients"]);
    info.lines()
        .find_map(|l| l.strip_prefix("connected_clients:"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no connected_clients in {info}"))
}

#[test]
fn a_tls_client_that_leaves_closes_its_upstream_connection() {
    let files = TlsFiles::generate();
    let redis = RedisServer::start();
    let extra = format!(
        "{}[upstream]\nshare_connections = false\n",
        server_tls(&files, false)
    );
    let keyward = Keyward::start_with(&redis.addr(), &extra);
    let before = connected_clients(&redis);

    let mut client = TlsClient::connect(&keyward.addr(), &files, false).expect("TLS connect");
    client.send(&resp_str(&["PING"])).expect("send");
    assert_eq!(client.read_replies(1), [Reply::simple("PONG")]);
    assert_eq!(connected_clients(&redis), before + 1);
    // Gone without close_notify, as a killed process would go.
    drop(client);
    assert!(
        support::wait_until(Duration::from_secs(5), || connected_clients(&redis)
            == before),
        "keyward kept the upstream connection of a TLS client that left"
    );
}

#[test]
fn a_plain_client_on_the_tls_listener_is_dropped_and_others_carry_on() {
    let files = TlsFiles::generate();
    let redis = RedisServer::start();
    let mut keyward = Keyward::start_with(&redis.addr(), &server_tls(&files, false));

    // One connection that never says anything holds its slot until the handshake timeout; it
    // must not hold anybody else up.
    let _silent = RawConn::connect(&keyward.addr());

    let mut plain = RawConn::connect(&keyward.addr());
    plain.send(&resp_str(&["PING"]));
    let (bytes, closed) = plain.read_to_close(Duration::from_secs(5));
    assert!(
        closed,
        "keyward keeps a plain-text client on its TLS port open"
    );
    assert!(
        !String::from_utf8_lossy(&bytes).contains("PONG"),
        "a plain-text client got an answer: {bytes:?}"
    );

    let (ok, out) = tls_cli(&keyward, &files, false, &["PING"]);
    assert!(ok && out.trim() == "PONG", "{out}");
    keyward.assert_running();
    assert!(
        keyward
            .wait_log_line(Duration::from_secs(5), |l| l
                .contains("TLS handshake with a client failed"))
            .is_some(),
        "the failed handshake is not logged:\n{}",
        keyward.log()
    );
}

#[test]
fn client_certificates_are_required_when_client_ca_file_is_set() {
    let files = TlsFiles::generate();
    let redis = RedisServer::start();
    let mut keyward = Keyward::start_with(&redis.addr(), &server_tls(&files, true));

    let (ok, out) = tls_cli(&keyward, &files, false, &["SET", "k", "without-cert"]);
    assert!(
        !ok || !out.contains("OK"),
        "a client without a certificate got in: {out}"
    );
    assert_eq!(redis.cli(&["EXISTS", "k"]).trim(), "0");

    // The same with a raw client: the handshake (or the first read after it, in TLS 1.3) fails.
    let refused = TlsClient::connect(&keyward.addr(), &files, false).and_then(|mut c| {
        c.send(&resp_str(&["PING"]))?;
        c.read_close()
    });
    assert!(
        refused.is_err(),
        "a client without a certificate was served"
    );

    let (ok, out) = tls_cli(&keyward, &files, true, &["SET", "k", "with-cert"]);
    assert!(ok && out.trim() == "OK", "{out}");
    assert_eq!(redis.cli(&["GET", "k"]).trim(), "with-cert");
    keyward.assert_running();
}

/// keyward with a plain listener in front of a TLS-only Redis: a 1000-command pipeline, a guarded
/// refusal, a REMOVEKEYS, and per-connection state (SELECT) on a connection of the client's own.
fn upstream_tls_round_trip(share_connections: bool) {
    let files = TlsFiles::generate();
    let redis = RedisServer::start_tls(&files);
    let keyward = Keyward::start_with(&redis.addr(), &upstream_tls(&files, share_connections));

    let (requests, expected) = pipeline();
    let mut client = keyward.raw_conn();
    client.send(&requests);
    assert_eq!(
        client.read_n_replies(expected.len(), Duration::from_secs(10)),
        expected
    );
    assert_eq!(redis.cli(&["GET", "pipe:7"]).trim(), "value-7-xxxxxxx");

    let refused = client.request(&["DEL", "pipe:*"]);
    assert!(
        refused
            .error_text()
            .is_some_and(|e| e.contains("keyward guard: DEL refused")),
        "{refused:?}"
    );
    assert_eq!(
        client.request(&["REMOVEKEYS", "pipe:0", "pipe:1", "missing"]),
        Reply::Int(2)
    );
    assert_eq!(redis.cli(&["DBSIZE"]).trim(), "498");

    // SELECT needs a connection of its own (in shared mode, taken from the warm pool).
    assert_eq!(client.request(&["SELECT", "3"]), Reply::ok());
    assert_eq!(client.request(&["SET", "in-db-3", "yes"]), Reply::ok());
    assert_eq!(redis.cli(&["-n", "3", "GET", "in-db-3"]).trim(), "yes");
}

#[test]
fn upstream_tls_with_a_connection_per_client() {
    upstream_tls_round_trip(false);
}

#[test]
fn upstream_tls_with_shared_connections() {
    upstream_tls_round_trip(true);
}

#[test]
fn losing_a_tls_upstream_is_reported_not_hung() {
    let files = TlsFiles::generate();
    let redis = RedisServer::start_tls(&files);
    let keyward = Keyward::start_with(&redis.addr(), &upstream_tls(&files, false));
    let mut client = keyward.raw_conn();
    assert_eq!(client.request(&["PING"]), Reply::simple("PONG"));
    let addr = redis.addr();
    drop(redis);
    let reply = client.request(&["GET", "k"]);
    let error = reply.error_text().unwrap_or_default().to_string();
    assert!(
        error.starts_with("ERR keyward:") && error.contains(&format!("upstream {addr}")),
        "{reply:?}"
    );
}

#[test]
fn upstream_tls_checks_the_server_name() {
    let files = TlsFiles::generate();
    let redis = RedisServer::start_tls(&files);
    let extra = format!(
        "{}server_name = \"redis.other.example\"\n",
        upstream_tls(&files, false)
    );
    let keyward = Keyward::start_with(&redis.addr(), &extra);
    let reply = keyward.raw_conn().request(&["PING"]);
    let error = reply.error_text().unwrap_or_default().to_string();
    assert!(
        error.contains(&format!(
            "upstream {} unavailable: TLS handshake failed",
            redis.addr()
        )) && error.contains("certificate"),
        "{reply:?}"
    );
}

/// `keyward --config FILE` with `text` written to FILE: returns (exit code, stderr, FILE).
fn start_with_config(text: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tls-test.toml");
    std::fs::write(&path, text).unwrap();
    let out = support::run_with_timeout(
        support::keyward_command()
            .arg("--config")
            .arg(&path)
            .current_dir(dir.path()),
        Duration::from_secs(10),
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        path.to_string_lossy().into_owned(),
    )
}

#[test]
fn bad_tls_settings_stop_keyward_with_the_key_named() {
    let files = TlsFiles::generate();
    let missing = files.dir().join("no-such-cert.pem");
    let missing = missing.to_string_lossy();

    let (code, stderr, path) = start_with_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert_file = \"{missing}\"\nkey_file = \"{}\"\n",
        files.server_key()
    ));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&path)
            && stderr.contains("server.tls.cert_file: cannot read")
            && stderr.contains(&*missing),
        "{stderr}"
    );

    // A key that is not the certificate's.
    let (code, stderr, _) = start_with_config(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        files.server_cert(),
        files.client_key()
    ));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("server.tls.key_file"), "{stderr}");

    let (code, stderr, _) = start_with_config("[upstream.tls]\nserver_name = \"redis\"\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("upstream.tls.ca_file: is required"),
        "{stderr}"
    );
}

/// Open file descriptors of a process.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("cannot list /proc/{pid}/fd: {e}"))
}

/// keyward's open descriptors once the count holds still for 200 ms (connections that are
/// closing, such as the start-up probe's, gone).
fn settled_fds(pid: u32) -> usize {
    let mut last = open_fds(pid);
    for _ in 0..25 {
        std::thread::sleep(Duration::from_millis(200));
        let now = open_fds(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    panic!("keyward's open descriptors never settled (last {last})");
}

/// A TLS client that connects and PINGs: `Ok` with the reply, `Err` when the handshake or the
/// exchange failed (keyward closed the connection).
fn tls_ping(addr: &str, files: &TlsFiles) -> std::io::Result<(TlsClient, Reply)> {
    let mut client = TlsClient::connect(addr, files, false)?;
    client
        .socket()
        .set_read_timeout(Some(Duration::from_secs(3)))?;
    client.send(&resp_str(&["PING"]))?;
    let reply = client.try_read_reply()?;
    Ok((client, reply))
}

#[test]
fn graceful_shutdown_delivers_the_replies_owed_to_tls_clients() {
    let files = TlsFiles::generate();
    let redis = RedisServer::start();
    let mut keyward = Keyward::start_with(&redis.addr(), &server_tls(&files, false));
    let mut client = TlsClient::connect(&keyward.addr(), &files, false).expect("TLS connect");
    client
        .send(&resp_str(&["BLPOP", "q", "1"]))
        .expect("send BLPOP");
    std::thread::sleep(Duration::from_millis(300));
    keyward.send_signal(libc::SIGTERM);
    // The BLPOP times out a second after it was sent; its reply is still owed and delivered.
    let reply = client.try_read_reply();
    assert!(
        matches!(reply, Ok(Reply::NilArray)),
        "{reply:?}; log:\n{}",
        keyward.log()
    );
    client
        .read_close()
        .expect("keyward closes with close_notify after the last reply");
    assert!(
        keyward.wait_exit(Duration::from_secs(5)).is_some(),
        "keyward did not exit after SIGTERM; log:\n{}",
        keyward.log()
    );
}

#[test]
fn tls_connections_over_max_clients_are_closed_at_once() {
    let files = TlsFiles::generate();
    let redis = RedisServer::start();
    let extra = format!("[server]\nmax_clients = 2\n{}", server_tls(&files, false));
    let mut keyward = Keyward::start_with(&redis.addr(), &extra);
    let addr = keyward.addr();
    let (mut first, pong) = tls_ping(&addr, &files).expect("first client");
    assert_eq!(pong, Reply::simple("PONG"));
    let (mut second, pong) = tls_ping(&addr, &files).expect("second client");
    assert_eq!(pong, Reply::simple("PONG"));
    let pid = keyward.pid();
    let before = settled_fds(pid);

    // Connections that never start a handshake, beyond the cap: each is closed at once, with
    // nothing written to it, instead of holding a descriptor for the handshake timeout.
    let mut silent: Vec<RawConn> = (0..50).map(|_| RawConn::connect(&addr)).collect();
    for (i, conn) in silent.iter_mut().enumerate() {
        let (bytes, closed) = conn.read_to_close(Duration::from_secs(2));
        assert!(
            closed && bytes.is_empty(),
            "over-cap connection {i}: closed {closed}, {bytes:?}"
        );
    }
    assert!(
        support::wait_until(Duration::from_secs(2), || open_fds(pid) <= before),
        "keyward holds {} descriptors, {before} before the over-cap connections",
        open_fds(pid)
    );
    // A TLS client over the cap gets no handshake (Redis's error text would need one).
    assert!(
        tls_ping(&addr, &files).is_err(),
        "a TLS client over max_clients was served"
    );
    assert!(
        keyward
            .log()
            .lines()
            .filter(|l| l.contains("max number of clients reached"))
            .count()
            >= 51,
        "{}",
        keyward.log()
    );
    // The two clients within the cap carry on.
    for client in [&mut first, &mut second] {
        client.send(&resp_str(&["PING"])).expect("PING");
        assert_eq!(client.read_replies(1), [Reply::simple("PONG")]);
    }
    keyward.assert_running();
}

/// Bytes keyward has queued on its side of the TCP connection from `client_port` (sent but not
/// acknowledged, or not sent yet), from /proc/net/tcp.
fn send_queue(keyward_port: u16, client_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!("0100007F:{keyward_port:04X}");
    let remote = format!("0100007F:{client_port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() > 4 && fields[1] == local && fields[2] == remote {
            let tx_queue = fields[4].split(':').next()?;
            u64::from_str_radix(tx_queue, 16).ok()
        } else {
            None
        }
    })
}

/// Shrinks a socket's receive buffer (and so the window it advertises).
fn set_receive_buffer(socket: &std::net::TcpStream, bytes: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF: {}", std::io::Error::last_os_error());
}

/// A TLS client that never reads leaves replies behind in its bridge once its session has
/// closed. The bridge gives up on them `shutdown_timeout_ms` later, and until then the client
/// still counts against max_clients: keyward never holds more connections than the cap allows.
#[test]
fn a_tls_client_that_never_reads_is_counted_until_its_bridge_gives_up() {
    let files = TlsFiles::generate();
    let redis = RedisServer::start();
    let value = vec![b'x'; 64 * 1024];
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&value)
        .query(&mut redis.conn())
        .expect("SET big");
    let extra = format!(
        "[server]\nmax_clients = 1\nshutdown_timeout_ms = 500\n\
         [upstream]\nshare_connections = false\n{}",
        server_tls(&files, false)
    );
    let keyward = Keyward::start_with(&redis.addr(), &extra);
    let (addr, pid) = (keyward.addr(), keyward.pid());
    let idle = settled_fds(pid);

    // GETs until keyward's send queue towards the client stops growing: the client's window
    // and keyward's send buffer are full, and the last reply waits in the bridge.
    let mut stuck = TlsClient::connect(&addr, &files, false).expect("TLS connect");
    set_receive_buffer(stuck.socket(), 4096);
    let client_port = stuck.socket().local_addr().expect("local addr").port();
    let get = resp_str(&["GET", "big"]);
    let mut queued = 0;
    let mut full = false;
    for _ in 0..200 {
        stuck.send(&get).expect("send GET");
        std::thread::sleep(Duration::from_millis(20));
        let now = send_queue(keyward.port, client_port).expect("connection in /proc/net/tcp");
        if now <= queued {
            std::thread::sleep(Duration::from_millis(200));
            full = send_queue(keyward.port, client_port) == Some(now);
            if full {
                break;
            }
        }
        queued = now;
    }
    assert!(full, "keyward's send queue kept growing ({queued} bytes)");
    // The session writes the rest into its end of the bridge and closes on QUIT.
    stuck.send(&resp_str(&["QUIT"])).expect("send QUIT");
    let quit = std::time::Instant::now();

    // Another client is served only once the first one's connection is closed.
    let (probe, pong, fds) = loop {
        if let Ok((probe, reply)) = tls_ping(&addr, &files) {
            let fds = open_fds(pid);
            break (probe, reply, fds);
        }
        assert!(
            quit.elapsed() < Duration::from_secs(5),
            "no client served within 5 s of the first one's QUIT ({} descriptors open, {idle} \
             with no client); log:\n{}",
            open_fds(pid),
            keyward.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let waited = quit.elapsed();
    assert_eq!(pong, Reply::simple("PONG"));
    // One TLS client in the default mode: its TCP connection, the bridge's Unix socket pair and
    // its upstream connection.
    assert!(
        fds <= idle + 4,
        "a client was served while keyward still held the first one's connection: {fds} \
         descriptors open, {idle} with no client"
    );
    drop(probe);
    assert!(
        support::wait_until(Duration::from_secs(2), || open_fds(pid) == idle),
        "{} descriptors open, {idle} with no client",
        open_fds(pid)
    );
    eprintln!(
        "{} bytes queued towards the client that never reads; the next client was served {} \
         ms after its QUIT",
        queued,
        waited.as_millis()
    );
}

/// Out of file descriptors, keyward accepts a waiting client with its spare descriptor only to
/// close it; on a TLS listener that close is all the client gets, not plain-text bytes that
/// its TLS library would take for a broken handshake record.
#[test]
fn a_tls_listener_out_of_descriptors_closes_clients_without_writing_plain_text() {
    let files = TlsFiles::generate();
    let redis = RedisServer::start();
    let keyward = Keyward::start_with_nofile(&redis.addr(), &server_tls(&files, false), 48, 48);
    // Connections that never start their handshake each hold a descriptor (for up to the
    // handshake timeout) until keyward has none left.
    let conns: Vec<RawConn> = (0..80).map(|_| RawConn::connect(&keyward.addr())).collect();
    std::thread::sleep(Duration::from_millis(500));
    let (mut closed, mut open) = (0, 0);
    for (i, conn) in conns.iter().enumerate() {
        conn.stream.set_nonblocking(true).expect("non-blocking");
        let mut buf = [0u8; 256];
        match (&conn.stream).read(&mut buf) {
            Ok(0) => closed += 1,
            Ok(n) => panic!(
                "connection {i} got plain text from a TLS listener: {:?}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open += 1,
            Err(_) => closed += 1,
        }
    }
    assert!(
        closed > 0 && open > 0,
        "{closed} closed, {open} open: the descriptor limit was not reached; log:\n{}",
        keyward.log()
    );
    assert!(
        keyward
            .log()
            .contains("out of file descriptors, client refused"),
        "{}",
        keyward.log()
    );
    eprintln!("RLIMIT_NOFILE 48: {open} connections in their handshake, {closed} closed");
}

/// What each client costs in file descriptors with TLS on either side (a TLS connection is its
/// TCP connection plus both ends of its bridge's Unix socket pair): measured with one client,
/// and what keyward counts when it sizes its open-files limit at start-up.
#[test]
fn the_open_files_limit_counts_the_descriptors_of_tls_connections() {
    let files = TlsFiles::generate();
    let plain_redis = RedisServer::start();
    let tls_redis = RedisServer::start_tls(&files);
    // (TLS clients, TLS to Redis, shared connections, descriptors per client)
    for (tls_clients, tls_redis_side, shared, per_client) in [
        (true, false, false, 4),
        (true, true, false, 6),
        (false, true, false, 4),
        (true, false, true, 3),
    ] {
        let case =
            format!("TLS clients {tls_clients}, TLS to Redis {tls_redis_side}, shared {shared}");
        let mut extra = String::new();
        if tls_clients {
            extra.push_str(&server_tls(&files, false));
        }
        let redis = if tls_redis_side {
            extra.push_str(&upstream_tls(&files, shared));
            &tls_redis
        } else {
            extra.push_str(&format!("[upstream]\nshare_connections = {shared}\n"));
            &plain_redis
        };
        let keyward = Keyward::start_with_nofile(&redis.addr(), &extra, 256, 1024);
        // max_clients is 10,000 (the default): more than a hard limit of 1024 allows.
        let fit = (1024 - 64) / per_client;
        let wanted = 10_000 * per_client + 64;
        let log = keyward.log();
        assert!(
            log.contains("open files limit raised from 256 to 1024")
                && log.contains(&format!(
                    "about {fit} clients fit, fewer than max_clients = 10000"
                ))
                && log.contains(&format!("at least {wanted} ({per_client} per client")),
            "{case}: {log}"
        );

        let pid = keyward.pid();
        // The first request opens the shared connection (shared mode), which is keyward's own,
        // not the client's: one client comes and goes before the count.
        let ping = || -> Box<dyn std::any::Any> {
            if tls_clients {
                let (client, pong) = tls_ping(&keyward.addr(), &files).expect("TLS client");
                assert_eq!(pong, Reply::simple("PONG"), "{case}");
                Box::new(client)
            } else {
                let mut client = keyward.raw_conn();
                assert_eq!(client.request(&["PING"]), Reply::simple("PONG"), "{case}");
                Box::new(client)
            }
        };
        drop(ping());
        let idle = settled_fds(pid);
        let client = ping();
        assert_eq!(
            open_fds(pid) - idle,
            per_client as usize,
            "{case}: descriptors taken by one client"
        );
        drop(client);
    }
}
