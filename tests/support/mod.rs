//! Test harness shared by every integration test file (`mod support;`).
//!
//! Each test starts its own `redis-server` and its own `keyward` on free ports, so tests are
//! independent and run in parallel. Every process is a [`process::ChildProcess`], killed
//! (SIGKILL, then reaped) when the value that owns it is dropped, including when the test
//! panics. Every network read has a deadline, so a proxy that hangs makes a test fail, never
//! stall.
//!
//! What is here:
//! - [`free_port`], [`run_with_timeout`] (a command run to completion), [`keyward_command`];
//! - [`process::ChildProcess`]: the one way a long-lived child process is started and stopped;
//! - [`RedisServer`]: a throw-away Redis (ground truth: talk to it directly to check what keyward
//!   really did upstream);
//! - [`Keyward`]: the real `keyward` binary with a generated `proxy.toml` ([`proxy_toml`]);
//! - [`in_process::InProcess`]: keyward served in the test process, for fast session tests;
//! - raw sockets: [`raw`], [`raw_closed`], [`RawConn`], the RESP encoder [`resp`] and the reply
//!   parser [`parse_reply`] / [`Reply`];
//! - client libraries: [`redis_conn`] (redis-rs, blocking, with timeouts) and [`fred_client`].

#![allow(dead_code)]

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use process::{ChildProcess, accepts};

/// A real Redis Cluster (3 primaries + replicas) for the cluster tests.
/// Named checks that share one expensive set-up, each reported on its own.
pub mod checks;
pub mod cluster;
/// keyward served inside the test process, the fast seam for session tests.
pub mod in_process;
/// Starting, signalling and stopping a long-lived child process.
pub mod process;
/// A primary, two replicas and three Redis Sentinels, for the sentinel-mode tests.
pub mod sentinel;
/// Certificates generated at run time, and a TLS-only Redis.
pub mod tls;

/// How long a redis-server or keyward may take to start accepting connections.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline for one network exchange in a test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// A port that was free a moment ago on 127.0.0.1. Another process may take it before we bind it
/// again; the `start` functions retry with a new port when that happens.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local_addr").port()
}

/// Runs a command to completion with its stdout and stderr captured, killing it (and failing the
/// test) if it is still running after `timeout`.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("stdout pipe");
    let mut err = child.stderr.take().expect("stderr pipe");
    let out_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    }
}

/// `redis-cli -p PORT ARGS...`, bounded in time. Returns the whole output (redis-cli prints error
/// replies on stdout without the `(error)` prefix when stdout is not a terminal). Options such
/// as `--tls` may lead `args`.
pub fn redis_cli(port: u16, args: &[&str]) -> Output {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("-h")
        .arg("127.0.0.1")
        .arg("-p")
        .arg(port.to_string())
        .arg("--no-auth-warning")
        .args(args);
    run_with_timeout(&mut cmd, Duration::from_secs(15))
}

fn read_lossy(path: &PathBuf) -> String {
    fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// Polls `f` every 20 ms until it returns true or `timeout` elapses; returns its last answer.
/// `GET url` with a 10 s deadline: the status and the body (a 4xx or 5xx status is an answer,
/// not an error; a failed connection panics).
pub fn http_get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (status, body)
}

pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A `Command` for the keyward binary with none of the `KEYWARD_*` variables or `RUST_LOG` of
/// the test's own environment (a developer's shell must not change what a test sees).
pub fn keyward_command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEYWARD_") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd
}

// ---------------------------------------------------------------------------------------------
// redis-server
// ---------------------------------------------------------------------------------------------

/// A private `redis-server` on a free port, with no persistence, killed on drop.
pub struct RedisServer {
    pub port: u16,
    /// Options [`RedisServer::cli`] passes to redis-cli before the command (TLS settings).
    cli_args: Vec<String>,
    process: ChildProcess,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends `signal` to redis-server (`libc::SIGSTOP`, `libc::SIGCONT`, `libc::SIGKILL`...).
    pub fn signal(&self, signal: libc::c_int) {
        self.process.signal(signal);
    }

    /// A plain Redis on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// A Redis on a free port with extra command-line arguments, e.g. `&["--requirepass", "x"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(free_port(), extra) {
                Ok(server) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start after 3 attempts: {last_error}");
    }

    /// A Redis on exactly `port` (used to bring an upstream up where keyward already points).
    pub fn start_on(port: u16, extra: &[&str]) -> Self {
        Self::try_start(port, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    fn try_start(port: u16, extra: &[&str]) -> Result<Self, String> {
        let port_args = ["--port".to_string(), port.to_string()];
        let ready = ("answer PING", answers_ping);
        Self::try_start_args(port, &port_args, extra, Vec::new(), ready)
    }

    /// A Redis on a free port whose listening options are `port_args(port)` (for instance TLS
    /// only); it is ready once the port accepts connections. [`RedisServer::cli`] passes
    /// `cli_args` to redis-cli.
    pub fn start_custom(port_args: impl Fn(u16) -> Vec<String>, cli_args: Vec<String>) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let ready = |port: u16| accepts(&format!("127.0.0.1:{port}").parse().expect("addr"));
            let ready = ("accept connections", ready);
            match Self::try_start_args(port, &port_args(port), &[], cli_args.clone(), ready) {
                Ok(server) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start after 3 attempts: {last_error}");
    }

    /// redis-server with `port_args` and `extra`, ready once `ready.1(port)` holds (`ready.0`
    /// says what that means, for the error).
    fn try_start_args(
        port: u16,
        port_args: &[String],
        extra: &[&str],
        cli_args: Vec<String>,
        ready: (&str, impl Fn(u16) -> bool),
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir for redis-server");
        let mut cmd = Command::new("redis-server");
        cmd.args(port_args)
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .args(["--daemonize", "no"])
            .args(extra);
        let mut process = ChildProcess::spawn(
            format!("redis-server on port {port}"),
            &mut cmd,
            dir.path().join("redis.log"),
        )
        .map_err(|e| format!("{e} (is redis-server installed? scripts/test.sh installs it)"))?;
        let (what, ready) = ready;
        process.wait_ready(what, START_TIMEOUT, || ready(port))?;
        Ok(RedisServer {
            port,
            cli_args,
            process,
            _dir: dir,
        })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `redis-cli -p PORT ARGS...` straight against Redis; returns stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let mut all: Vec<&str> = self.cli_args.iter().map(String::as_str).collect();
        all.extend_from_slice(args);
        String::from_utf8_lossy(&redis_cli(self.port, &all).stdout).into_owned()
    }

    /// A redis-rs client talking to Redis directly.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis-rs client")
    }

    /// A blocking redis-rs connection straight to Redis, with timeouts.
    pub fn conn(&self) -> redis::Connection {
        redis_conn(&self.addr())
    }

    /// The server's own log.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Whether `key` exists (checked on Redis directly, db 0).
    pub fn exists(&self, key: &[u8]) -> bool {
        let n: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query(&mut self.conn())
            .expect("EXISTS on redis");
        n == 1
    }
}

/// True when something on `port` answers an inline PING with any RESP reply (`+PONG`, or
/// `-NOAUTH` when a password is required), except `-LOADING`.
pub(crate) fn answers_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("socket addr"),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(n) if n > 0 => (buf[0] == b'+' || buf[0] == b'-') && !buf[..n].starts_with(b"-LOADING"),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// keyward
// ---------------------------------------------------------------------------------------------

/// A small line-based TOML document: `[section]` headers and single-line `key = value` entries,
/// kept in order. Enough to build proxy.toml from defaults plus per-test overrides.
#[derive(Debug, Default, Clone)]
pub struct TomlDoc {
    sections: Vec<(String, Vec<(String, String)>)>,
    /// Arrays of tables (`[[server.users]]` and what follows it), written after the sections.
    tail: String,
}

impl TomlDoc {
    /// Sets `key = value` in `[section]` (value is raw TOML text), replacing an earlier entry.
    pub fn set(&mut self, section: &str, key: &str, value: &str) {
        let idx = match self.sections.iter().position(|(s, _)| s == section) {
            Some(i) => i,
            None => {
                self.sections.push((section.to_string(), Vec::new()));
                self.sections.len() - 1
            }
        };
        let entries = &mut self.sections[idx].1;
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value.to_string(),
            None => entries.push((key.to_string(), value.to_string())),
        }
    }

    /// Merges TOML text over this document. Lines before the first `[section]` header belong to
    /// `[guard]`, so `"max_keys = 3"` alone is a valid override. Each entry must fit on one line.
    pub fn merge(&mut self, text: &str) {
        let mut section = "guard".to_string();
        let mut in_tail = false;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // From the first `[[array]]` header on, the text is kept as written.
            in_tail |= line.starts_with("[[");
            if in_tail {
                self.tail.push_str(line);
                self.tail.push('\n');
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = name.trim().to_string();
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("test TOML override is not `key = value`: {line:?}"));
            self.set(&section, key.trim(), value.trim());
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for (section, entries) in &self.sections {
            out.push_str(&format!("[{section}]\n"));
            for (k, v) in entries {
                out.push_str(&format!("{k} = {v}\n"));
            }
            out.push('\n');
        }
        out.push_str(&self.tail);
        out
    }
}

/// `[guard] deny_commands` as keyward's built-in default, as TOML text.
pub fn default_deny_commands() -> String {
    let quoted: Vec<String> = keyward::guard::DEFAULT_DENY_COMMANDS
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect();
    format!("[{}]", quoted.join(", "))
}

/// The proxy.toml a test keyward runs with: listen address, one standalone upstream, the
/// documented guard defaults written out, then `extra` merged over it (see [`TomlDoc::merge`]).
pub fn proxy_toml(listen: &str, upstream: &str, extra: &str) -> String {
    let mut doc = TomlDoc::default();
    doc.set("server", "listen", &format!("\"{listen}\""));
    doc.set("upstream", "mode", "\"standalone\"");
    doc.set("upstream", "nodes", &format!("[\"{upstream}\"]"));
    doc.set("guard", "max_keys", "1000");
    doc.set("guard", "wildcard_chars", "\"*?[\"");
    doc.set("guard", "delete_command", "\"UNLINK\"");
    doc.set("guard", "deny_commands", &default_deny_commands());
    // scripts/test.sh runs the standalone tests twice: with the default (one upstream
    // connection per client) and with KEYWARD_TEST_SHARE_CONNECTIONS=true (the shared
    // pipelined connection).
    if let Ok(share) = std::env::var("KEYWARD_TEST_SHARE_CONNECTIONS") {
        doc.set("upstream", "share_connections", &share);
    }
    doc.merge(extra);
    doc.render()
}

/// The proxy.toml of a keyward in front of a Redis Cluster: like [`proxy_toml`], with
/// `[upstream] mode = "cluster"` and every address of `seeds` in `nodes`.
pub fn proxy_toml_cluster(listen: &str, seeds: &[String], extra: &str) -> String {
    assert!(
        !seeds.is_empty(),
        "a cluster keyward needs at least one seed"
    );
    let mut doc = TomlDoc::default();
    doc.set("server", "listen", &format!("\"{listen}\""));
    doc.set("upstream", "mode", "\"cluster\"");
    let nodes: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    doc.set("upstream", "nodes", &format!("[{}]", nodes.join(", ")));
    doc.set("guard", "max_keys", "1000");
    doc.set("guard", "wildcard_chars", "\"*?[\"");
    doc.set("guard", "delete_command", "\"UNLINK\"");
    doc.set("guard", "deny_commands", &default_deny_commands());
    doc.merge(extra);
    doc.render()
}

/// The real `keyward` binary, started with `--config <generated proxy.toml>`, killed on drop.
pub struct Keyward {
    pub port: u16,
    pub upstream: String,
    process: ChildProcess,
    config_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Keyward {
    /// keyward in front of `upstream` ("127.0.0.1:PORT") with the default guard settings.
    pub fn start(upstream: &str) -> Self {
        Self::start_with(upstream, "")
    }

    /// keyward with TOML overrides, e.g. `"max_keys = 3\ndeny_commands = []"` (entries before
    /// any header go to `[guard]`) or `"[server]\nmax_clients = 2"`.
    pub fn start_with(upstream: &str, toml_extra: &str) -> Self {
        Self::start_with_args(upstream, toml_extra, &[])
    }

    /// Like [`Keyward::start_with`], with `args` added to the command line after `--config`.
    pub fn start_with_args(upstream: &str, toml_extra: &str, args: &[&str]) -> Self {
        Self::start_config(upstream, None, args, |listen| {
            proxy_toml(listen, upstream, toml_extra)
        })
    }

    /// Like [`Keyward::start_with`], with the process's limit on open files set to `soft` /
    /// `hard` (RLIMIT_NOFILE) before it starts.
    pub fn start_with_nofile(upstream: &str, toml_extra: &str, soft: u64, hard: u64) -> Self {
        Self::start_config(upstream, Some((soft, hard)), &[], |listen| {
            proxy_toml(listen, upstream, toml_extra)
        })
    }

    /// keyward in front of a Redis Cluster (`[upstream] mode = "cluster"`, `nodes` = every
    /// address of `seeds`), with TOML overrides as in [`Keyward::start_with`]. `upstream` is then
    /// the seeds joined with `,`.
    pub fn start_cluster(seeds: &[String], toml_extra: &str) -> Self {
        Self::start_config(&seeds.join(","), None, &[], |listen| {
            proxy_toml_cluster(listen, seeds, toml_extra)
        })
    }

    /// Starts keyward on a free port with the configuration `config(listen address)`, retrying
    /// on a new port when the one picked was taken meanwhile.
    fn start_config(
        upstream: &str,
        nofile: Option<(u64, u64)>,
        args: &[&str],
        config: impl Fn(&str) -> String,
    ) -> Self {
        let mut last_error = String::new();
        for _ in 0..3 {
            let port = free_port();
            let text = config(&format!("127.0.0.1:{port}"));
            match Self::try_start(port, upstream, text, nofile, args) {
                Ok(k) => return k,
                Err(e) => last_error = e,
            }
        }
        panic!("keyward did not start after 3 attempts: {last_error}");
    }

    fn try_start(
        port: u16,
        upstream: &str,
        config: String,
        nofile: Option<(u64, u64)>,
        args: &[&str],
    ) -> Result<Self, String> {
        let dir = tempfile::tempdir().expect("tempdir for keyward");
        let config_path = dir.path().join("proxy.toml");
        fs::write(&config_path, &config).expect("write proxy.toml");
        let mut cmd = keyward_command();
        if let Some((soft, hard)) = nofile {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    let limit = libc::rlimit {
                        rlim_cur: soft as libc::rlim_t,
                        rlim_max: hard as libc::rlim_t,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        cmd.arg("--config")
            .arg(&config_path)
            .args(args)
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1")
            .current_dir(dir.path());
        let mut process = ChildProcess::spawn(
            format!("keyward on port {port}"),
            &mut cmd,
            dir.path().join("keyward.log"),
        )?;
        process
            .wait_for_port(port, START_TIMEOUT)
            .map_err(|e| format!("{e}\nconfig:\n{config}"))?;
        Ok(Keyward {
            port,
            upstream: upstream.to_string(),
            process,
            config_path,
            _dir: dir,
        })
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// `redis-cli -p PORT ARGS...` through keyward; returns stdout (error replies included).
    pub fn cli(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.cli_output(args).stdout).into_owned()
    }

    /// Like [`Keyward::cli`], with the exit status and stderr too.
    pub fn cli_output(&self, args: &[&str]) -> Output {
        redis_cli(self.port, args)
    }

    /// A redis-rs client pointed at keyward.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("redis-rs client")
    }

    /// A blocking redis-rs connection through keyward, with timeouts.
    pub fn conn(&self) -> redis::Connection {
        redis_conn(&self.addr())
    }

    /// A raw socket to keyward.
    pub fn raw_conn(&self) -> RawConn {
        RawConn::connect(&self.addr())
    }

    /// Everything keyward wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Polls the log until a line satisfies `pred` (the log is written asynchronously).
    pub fn wait_log_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        let mut found = None;
        wait_until(timeout, || {
            found = self.log().lines().find(|l| pred(l)).map(str::to_string);
            found.is_some()
        });
        found
    }

    /// Replaces the configuration file keyward was started with (for reload tests).
    pub fn rewrite_config(&self, text: &str) {
        fs::write(&self.config_path, text).expect("rewrite proxy.toml");
    }

    pub fn config_text(&self) -> String {
        read_lossy(&self.config_path)
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Sends `signal` (`libc::SIGTERM`, `libc::SIGINT`, ...) to keyward.
    pub fn send_signal(&self, signal: libc::c_int) {
        self.process.signal(signal);
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        self.process.wait_exit(timeout)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.wait_exit(Duration::ZERO).is_none()
    }

    /// Fails the test, with the log, if keyward has exited (crashed).
    pub fn assert_running(&mut self) {
        if let Some(status) = self.wait_exit(Duration::ZERO) {
            panic!("keyward exited ({status}); log:\n{}", self.log());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// RESP: encoding requests, parsing replies
// ---------------------------------------------------------------------------------------------

/// Encodes one command as a RESP array of bulk strings.
pub fn resp(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// [`resp`] for text arguments.
pub fn resp_str(args: &[&str]) -> Vec<u8> {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    resp(&args)
}

/// One decoded reply (RESP2 and RESP3). Attributes (`|`) are skipped.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Vec<u8>),
    /// `$-1`
    Nil,
    /// `*-1`
    NilArray,
    /// RESP3 `_`
    Null,
    Array(Vec<Reply>),
    Map(Vec<(Reply, Reply)>),
    Set(Vec<Reply>),
    Push(Vec<Reply>),
    Double(String),
    Bool(bool),
    BigNumber(String),
    Verbatim(Vec<u8>),
}

impl Reply {
    pub fn bulk(b: impl AsRef<[u8]>) -> Reply {
        Reply::Bulk(b.as_ref().to_vec())
    }

    pub fn simple(s: &str) -> Reply {
        Reply::Simple(s.to_string())
    }

    pub fn ok() -> Reply {
        Reply::simple("OK")
    }

    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The error text (without the leading `-`), if this is an error.
    pub fn error_text(&self) -> Option<&str> {
        match self {
            Reply::Error(e) => Some(e),
            _ => None,
        }
    }

    pub fn is_push(&self) -> bool {
        matches!(self, Reply::Push(_))
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn parse_int(line: &[u8]) -> Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad integer in reply: {:?}", String::from_utf8_lossy(line)))
}

/// Parses one reply from the start of `buf`: `Ok(None)` if it is incomplete, else the reply and
/// the number of bytes it used. Replies come from Redis (through keyward), so plain recursion is
/// fine here.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    let Some(eol) = find_crlf(buf) else {
        return Ok(None);
    };
    let kind = buf[0];
    let line = &buf[1..eol];
    let text = || String::from_utf8_lossy(line).into_owned();
    let mut pos = eol + 2;
    let reply = match kind {
        b'+' => Reply::Simple(text()),
        b'-' => Reply::Error(text()),
        b':' => Reply::Int(parse_int(line)?),
        b'_' => Reply::Null,
        b',' => Reply::Double(text()),
        b'(' => Reply::BigNumber(text()),
        b'#' => Reply::Bool(line == b"t"),
        b'$' | b'=' | b'!' => {
            let len = parse_int(line)?;
            if len < 0 {
                Reply::Nil
            } else {
                let len = len as usize;
                if buf.len() < pos + len + 2 {
                    return Ok(None);
                }
                let data = buf[pos..pos + len].to_vec();
                if &buf[pos + len..pos + len + 2] != b"\r\n" {
                    return Err("bulk string not followed by CRLF".into());
                }
                pos += len + 2;
                match kind {
                    b'$' => Reply::Bulk(data),
                    b'=' => Reply::Verbatim(data),
                    _ => Reply::Error(String::from_utf8_lossy(&data).into_owned()),
                }
            }
        }
        b'*' | b'~' | b'>' => {
            let n = parse_int(line)?;
            if n < 0 {
                Reply::NilArray
            } else {
                let mut items = Vec::with_capacity((n as usize).min(1 << 16));
                for _ in 0..n {
                    match parse_reply(&buf[pos..])? {
                        Some((r, used)) => {
                            items.push(r);
                            pos += used;
                        }
                        None => return Ok(None),
                    }
                }
                match kind {
                    b'*' => Reply::Array(items),
                    b'~' => Reply::Set(items),
                    _ => Reply::Push(items),
                }
            }
        }
        b'%' | b'|' => {
            let n = parse_int(line)?;
            let mut pairs = Vec::new();
            for _ in 0..n.max(0) {
                let Some((k, used)) = parse_reply(&buf[pos..])? else {
                    return Ok(None);
                };
                pos += used;
                let Some((v, used)) = parse_reply(&buf[pos..])? else {
                    return Ok(None);
                };
                pos += used;
                pairs.push((k, v));
            }
            if kind == b'|' {
                // An attribute precedes the real reply: return that one.
                let Some((r, used)) = parse_reply(&buf[pos..])? else {
                    return Ok(None);
                };
                return Ok(Some((r, pos + used)));
            }
            Reply::Map(pairs)
        }
        other => {
            return Err(format!(
                "unexpected reply type byte {:?} in {:?}",
                other as char,
                String::from_utf8_lossy(&buf[..buf.len().min(80)])
            ));
        }
    };
    Ok(Some((reply, pos)))
}

// ---------------------------------------------------------------------------------------------
// raw sockets
// ---------------------------------------------------------------------------------------------

/// Connects, writes `bytes` (from a second thread, so a server that replies and closes early is
/// still read), and reads until the peer closes or `read_timeout` elapses. Returns what was read.
pub fn raw(addr: &str, bytes: &[u8], read_timeout: Duration) -> Vec<u8> {
    raw_closed(addr, bytes, read_timeout).0
}

/// Like [`raw`], also telling whether the peer closed the connection (EOF or reset) in time.
pub fn raw_closed(addr: &str, bytes: &[u8], read_timeout: Duration) -> (Vec<u8>, bool) {
    let mut stream = connect(addr);
    let mut writer_stream = stream.try_clone().expect("clone socket");
    let data = bytes.to_vec();
    let writer = thread::spawn(move || {
        let _ = writer_stream.write_all(&data);
    });
    let deadline = Instant::now() + read_timeout;
    let mut out = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let closed = loop {
        let now = Instant::now();
        if now >= deadline {
            break false;
        }
        let _ = stream.set_read_timeout(Some(deadline - now));
        match stream.read(&mut chunk) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) => break false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break true,
        }
    };
    let _ = stream.shutdown(Shutdown::Both);
    let _ = writer.join();
    (out, closed)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn connect(addr: &str) -> TcpStream {
    let sock = addr
        .parse()
        .unwrap_or_else(|e| panic!("bad address {addr}: {e}"));
    let stream = TcpStream::connect_timeout(&sock, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("cannot connect to {addr}: {e}"));
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    stream
}

/// A raw client connection with a read buffer and reply-aware reads. Every read has a deadline;
/// the panicking variants report what had arrived so far.
pub struct RawConn {
    pub stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

/// What one bounded read produced.
enum Fill {
    Data,
    Closed,
    TimedOut,
}

impl RawConn {
    pub fn connect(addr: &str) -> Self {
        RawConn {
            stream: connect(addr),
            buf: Vec::new(),
            start: 0,
        }
    }

    /// Writes all of `bytes`; panics on error.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write to keyward failed: {e}"));
    }

    /// Writes all of `bytes`, returning the error instead of panicking.
    pub fn try_send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends one command as RESP.
    pub fn cmd(&mut self, args: &[&str]) {
        self.send(&resp_str(args));
    }

    /// Sends one binary command as RESP.
    pub fn cmd_bytes(&mut self, args: &[&[u8]]) {
        self.send(&resp(args));
    }

    /// Sends a command and reads its reply (within [`IO_TIMEOUT`]).
    pub fn request(&mut self, args: &[&str]) -> Reply {
        self.cmd(args);
        self.read_reply(IO_TIMEOUT)
    }

    /// Sends one binary command and reads its reply.
    pub fn request_bytes(&mut self, args: &[&[u8]]) -> Reply {
        self.cmd_bytes(args);
        self.read_reply(IO_TIMEOUT)
    }

    /// Bytes received but not consumed yet.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 1 << 20 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }

    fn fill(&mut self, deadline: Instant) -> Fill {
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Fill::TimedOut;
            }
            let _ = self.stream.set_read_timeout(Some(deadline - now));
            match self.stream.read(&mut chunk) {
                Ok(0) => return Fill::Closed,
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Fill::Data;
                }
                Err(e) if is_timeout(&e) => return Fill::TimedOut,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => return Fill::Closed,
            }
        }
    }

    fn describe_pending(&self) -> String {
        let p = self.pending();
        format!(
            "{} byte(s) pending: {:?}",
            p.len(),
            String::from_utf8_lossy(&p[..p.len().min(300)])
        )
    }

    /// Reads one complete reply, `None` on timeout or close (the partial bytes stay buffered).
    pub fn try_read_reply(&mut self, timeout: Duration) -> Option<Reply> {
        let deadline = Instant::now() + timeout;
        loop {
            match parse_reply(self.pending()) {
                Ok(Some((reply, used))) => {
                    self.consume(used);
                    return Some(reply);
                }
                Ok(None) => {}
                Err(e) => panic!(
                    "malformed reply from keyward: {e}; {}",
                    self.describe_pending()
                ),
            }
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Closed | Fill::TimedOut => return None,
            }
        }
    }

    /// Reads one complete reply; panics on timeout or close.
    pub fn read_reply(&mut self, timeout: Duration) -> Reply {
        self.try_read_reply(timeout).unwrap_or_else(|| {
            panic!(
                "no complete reply within {timeout:?} (or connection closed); {}",
                self.describe_pending()
            )
        })
    }

    /// Reads exactly `n` replies within `timeout` in total.
    pub fn read_n_replies(&mut self, n: usize, timeout: Duration) -> Vec<Reply> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.try_read_reply(left) {
                Some(r) => out.push(r),
                None => panic!(
                    "got {} of {n} replies within {timeout:?}; last: {:?}; {}",
                    out.len(),
                    out.last(),
                    self.describe_pending()
                ),
            }
        }
        out
    }

    /// Reads until `pattern` appears; returns the bytes up to and including it (the rest stays
    /// buffered). Panics on timeout or close.
    pub fn read_until(&mut self, pattern: &[u8], timeout: Duration) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let mut searched: usize = 0;
        loop {
            let pending = self.pending();
            let from = searched.saturating_sub(pattern.len());
            if let Some(i) = pending[from..]
                .windows(pattern.len())
                .position(|w| w == pattern)
            {
                let end = from + i + pattern.len();
                let out = pending[..end].to_vec();
                self.consume(end);
                return out;
            }
            searched = pending.len();
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Closed => panic!(
                    "connection closed before {:?} arrived; {}",
                    String::from_utf8_lossy(pattern),
                    self.describe_pending()
                ),
                Fill::TimedOut => panic!(
                    "{:?} did not arrive within {timeout:?}; {}",
                    String::from_utf8_lossy(pattern),
                    self.describe_pending()
                ),
            }
        }
    }

    /// Reads until the peer closes or `timeout` elapses. Returns all unconsumed bytes and whether
    /// the connection was closed.
    pub fn read_to_close(&mut self, timeout: Duration) -> (Vec<u8>, bool) {
        let deadline = Instant::now() + timeout;
        let closed = loop {
            match self.fill(deadline) {
                Fill::Data => {}
                Fill::Closed => break true,
                Fill::TimedOut => break false,
            }
        };
        let out = self.pending().to_vec();
        self.consume(out.len());
        (out, closed)
    }
}

// ---------------------------------------------------------------------------------------------
// client libraries
// ---------------------------------------------------------------------------------------------

/// A blocking redis-rs connection to `addr` with connect/read/write timeouts.
pub fn redis_conn(addr: &str) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("redis-rs client");
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("redis-rs cannot connect to {addr}: {e}"));
    conn.set_read_timeout(Some(IO_TIMEOUT))
        .expect("read timeout");
    conn.set_write_timeout(Some(IO_TIMEOUT))
        .expect("write timeout");
    conn
}

/// A redis-rs multiplexed async connection to `addr` with a generous response timeout (the
/// library's default of 500 ms is too short for blocking commands and big values).
pub async fn redis_async_conn(addr: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(format!("redis://{addr}/")).expect("redis-rs client");
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(IO_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .unwrap_or_else(|e| panic!("redis-rs cannot connect to {addr}: {e}"))
}

/// A connected fred client for `addr`, with a command timeout and no reconnection, so a broken
/// proxy fails the test instead of hanging it.
pub async fn fred_client(addr: &str) -> fred::prelude::Client {
    use fred::prelude::*;
    let config = Config::from_url(&format!("redis://{addr}")).expect("fred config");
    let client = Builder::from_config(config)
        .with_performance_config(|p| p.default_command_timeout = IO_TIMEOUT)
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.internal_command_timeout = Duration::from_secs(5);
            c.max_command_attempts = 1;
        })
        .build()
        .expect("fred client");
    tokio::time::timeout(Duration::from_secs(10), client.init())
        .await
        .expect("fred init timed out")
        .unwrap_or_else(|e| panic!("fred cannot connect to {addr}: {e}"));
    client
}

/// FNV-1a, to compare big values without printing them.
pub fn fnv1a(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A small deterministic PRNG (xorshift64*) for garbage generation; no extra dependency.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// A fresh Redis and a keyward in front of it (`toml_extra` as in [`Keyward::start_with`]).
pub fn start_pair(toml_extra: &str) -> (RedisServer, Keyward) {
    let redis = RedisServer::start();
    let keyward = Keyward::start_with(&redis.addr(), toml_extra);
    (redis, keyward)
}
