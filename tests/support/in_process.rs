//! keyward served in this test process, through its public entry point
//! (`keyward::server::serve`), on a listener bound to port 0: no binary to start, no port race,
//! and a start in milliseconds. The fast seam for tests of the session front; tests of the
//! command line, signals, logs and process limits keep using the real binary ([`super::Keyward`]).

use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use clap::Parser;
use tokio::sync::watch;

/// A keyward server running on a thread of its own (tokio's current-thread runtime, as the
/// binary's default `threads = 1`); stopped, as by two SIGTERMs, when dropped.
pub struct InProcess {
    pub addr: SocketAddr,
    signals: watch::Sender<u32>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl InProcess {
    /// keyward with the configuration file `toml`, whose `[server] listen` is ignored: the
    /// server listens on a port the system picks.
    pub fn start(toml: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for proxy.toml");
        let path = dir.path().join("proxy.toml");
        std::fs::write(&path, toml).expect("write proxy.toml");
        let cli = keyward::config::Cli::parse_from([
            "keyward".as_ref(),
            "--config".as_ref(),
            path.as_os_str(),
        ]);
        let config = keyward::config::resolve(&cli).expect("a valid configuration");
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("local addr");
        let (signals, signals_rx) = watch::channel(0u32);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(std_listener).expect("tokio listener");
                keyward::server::serve(listener, config, signals_rx, None)
                    .await
                    .expect("keyward serves until stopped");
            });
        });
        InProcess {
            addr,
            signals,
            thread: Some(thread),
            _dir: dir,
        }
    }

    /// keyward in front of the Redis at `upstream`, with TOML overrides as for
    /// [`super::Keyward::start_with`].
    pub fn standalone(upstream: &str, toml_extra: &str) -> Self {
        Self::start(&super::proxy_toml("127.0.0.1:0", upstream, toml_extra))
    }

    /// keyward in front of a Redis Cluster reached through `seeds`.
    pub fn cluster(seeds: &[String], toml_extra: &str) -> Self {
        Self::start(&super::proxy_toml_cluster("127.0.0.1:0", seeds, toml_extra))
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    pub fn raw_conn(&self) -> super::RawConn {
        super::RawConn::connect(&self.addr())
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        // The second signal closes the remaining sessions at once.
        let _ = self.signals.send(1);
        let _ = self.signals.send(2);
        if let Some(thread) = self.thread.take() {
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if thread.is_finished() {
                let _ = thread.join();
            }
        }
    }
}
