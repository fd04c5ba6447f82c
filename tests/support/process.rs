//! The one way a test runs a long-lived child process (redis-server, keyward, a cluster node):
//! [`ChildProcess`].
//!
//! The child's stdout and stderr go to a log file (no pipe can fill up and stall it), every wait
//! has a deadline, a failure to start reports the log, signals are sent with kill(2), and the
//! process is killed (SIGKILL) and reaped when the value is dropped, also when the test panics.
//! Commands that are run to completion (`redis-cli ...`, `keyward --check-config`) use
//! [`super::run_with_timeout`] instead.

use std::fs::{self, File};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// A running child process with its output in a log file; killed and reaped on drop.
pub struct ChildProcess {
    /// What the process is, for messages ("redis-server on port 6379").
    name: String,
    child: Child,
    /// The exit status, once the process has been reaped.
    exit: Option<ExitStatus>,
    log_path: PathBuf,
}

impl ChildProcess {
    /// Spawns `cmd` with stdin closed and stdout and stderr both written to `log_path` (created,
    /// or truncated). `name` names the process in every message.
    pub fn spawn(
        name: impl Into<String>,
        cmd: &mut Command,
        log_path: impl Into<PathBuf>,
    ) -> Result<ChildProcess, String> {
        let name = name.into();
        let log_path = log_path.into();
        let log = File::create(&log_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", log_path.display()));
        let log_err = log.try_clone().expect("clone the log file handle");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("cannot spawn {name} ({:?}): {e}", cmd.get_program()))?;
        Ok(ChildProcess {
            name,
            child,
            exit: None,
            log_path,
        })
    }

    /// Waits until `ready()` holds while the process is still running, then checks once more,
    /// 30 ms later, that it is still running (a server that lost its port to another process
    /// exits right away). On failure (the process exited, or `timeout` passed; it is then
    /// killed) the error says so, naming the process, `what` it was waiting for, and its log.
    pub fn wait_ready(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.wait_exit(Duration::ZERO) {
                return Err(format!(
                    "{} exited before it would {what} ({status}); log:\n{}",
                    self.name,
                    self.log()
                ));
            }
            if ready() {
                thread::sleep(Duration::from_millis(30));
                if self.is_running() {
                    return Ok(());
                }
                continue;
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "{} did not {what} within {timeout:?}; log:\n{}",
                    self.name,
                    self.log()
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// [`wait_ready`](Self::wait_ready) for a TCP listener on 127.0.0.1:`port`.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) -> Result<(), String> {
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("socket addr");
        self.wait_ready(
            &format!("accept connections on port {port}"),
            timeout,
            || accepts(&addr),
        )
    }

    /// The process id (to read `/proc/PID/...`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub fn log(&self) -> String {
        fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Sends `signal` (`libc::SIGTERM`, `libc::SIGSTOP`, ...) with kill(2). Panics when the
    /// process has already been reaped (its pid may belong to another process by now) or when
    /// kill fails.
    pub fn signal(&self, signal: libc::c_int) {
        assert!(
            self.exit.is_none(),
            "cannot signal {}: it has already exited ({:?})",
            self.name,
            self.exit
        );
        let pid = libc::pid_t::try_from(self.pid()).expect("pid fits pid_t");
        // SAFETY: kill(2) has no memory-safety preconditions; the child is not reaped yet, so
        // the pid is still ours.
        let rc = unsafe { libc::kill(pid, signal) };
        assert!(
            rc == 0,
            "kill({pid}, {signal}) on {} failed: {}",
            self.name,
            std::io::Error::last_os_error()
        );
    }

    /// Waits up to `timeout` for the process to exit and returns its status; `None` while it
    /// is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if self.exit.is_some() {
                return self.exit;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exit = Some(status);
                return self.exit;
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.wait_exit(Duration::ZERO).is_none()
    }

    /// Kills the process (SIGKILL) unless it has exited already, and reaps it.
    pub fn kill(&mut self) {
        if self.exit.is_some() {
            return;
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        if let Ok(status) = self.child.wait() {
            self.exit = Some(status);
        }
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// True when something listens on `addr`. A connection whose local and peer addresses are the
/// same is a TCP self-connect (the kernel picked the very port as the source port while nothing
/// listened), not a listener.
pub fn accepts(addr: &SocketAddr) -> bool {
    match TcpStream::connect_timeout(addr, Duration::from_millis(200)) {
        Ok(s) => s.local_addr().ok() != s.peer_addr().ok(),
        Err(_) => false,
    }
}
