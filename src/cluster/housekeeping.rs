//! The addresses of keyward's own housekeeping connections (the topology reads, `CLUSTER
//! SHARDS` every 5 s), so that a `MONITOR` client does not see them.
//!
//! Redis's `MONITOR` shows every command of every client, keyward's own included: without
//! this, a user watching a node through keyward sees a `CLUSTER SHARDS` every few seconds that
//! no application sent. Each line names the address of the connection that sent the command,
//! which for keyward's connections is their local address (no NAT between keyward and Redis).
//! A connection's address is kept for a while after it closes: its last command's line can
//! reach the monitoring client after the connection is gone. A connection over TLS bridged
//! through a Unix socket has no TCP address of its own here, and its lines are shown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a closed connection's address still hides lines.
const LINGER: Duration = Duration::from_secs(30);

/// Address -> when its connection closed (None: still open).
fn registry() -> &'static Mutex<HashMap<SocketAddr, Option<Instant>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<SocketAddr, Option<Instant>>>> = OnceLock::new();
    REGISTRY.get_or_init(Mutex::default)
}

/// Holds an address in the registry while the connection is open.
pub struct Registered(Option<SocketAddr>);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(addr) = self.0 {
            let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
            map.insert(addr, Some(Instant::now()));
        }
    }
}

/// Notes `local` (a housekeeping connection's own address) until the guard is dropped, and
/// forgets addresses closed more than [`LINGER`] ago.
pub fn register(local: Option<SocketAddr>) -> Registered {
    if let Some(addr) = local {
        let mut map = registry().lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, closed| closed.is_none_or(|at| at.elapsed() < LINGER));
        map.insert(addr, None);
    }
    Registered(local)
}

/// Whether a `MONITOR` line (`+1700000000.123456 [0 127.0.0.1:50000] "cluster" "shards"`)
/// shows a command of one of keyward's housekeeping connections.
pub fn is_own_monitor_line(line: &[u8]) -> bool {
    let Some(open) = line.iter().position(|&b| b == b'[') else {
        return false;
    };
    let Some(close) = line[open..].iter().position(|&b| b == b']') else {
        return false;
    };
    let inside = &line[open + 1..open + close];
    let Some(space) = inside.iter().position(|&b| b == b' ') else {
        return false;
    };
    let Some(addr) = std::str::from_utf8(&inside[space + 1..])
        .ok()
        .and_then(|a| a.parse::<SocketAddr>().ok())
    else {
        return false;
    };
    let map = registry().lock().unwrap_or_else(|e| e.into_inner());
    map.get(&addr)
        .is_some_and(|closed| closed.is_none_or(|at| at.elapsed() < LINGER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_registered_connections_are_recognised() {
        let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let line = b"+1700000000.123456 [0 127.0.0.1:1] \"cluster\" \"shards\"\r\n";
        let other = b"+1700000000.123456 [0 127.0.0.1:2] \"get\" \"k\"\r\n";
        assert!(!is_own_monitor_line(line));
        let guard = register(Some(addr));
        assert!(is_own_monitor_line(line));
        assert!(!is_own_monitor_line(other));
        drop(guard);
        // A line that comes just after its connection closed is still keyward's.
        assert!(is_own_monitor_line(line));
        assert!(!is_own_monitor_line(b"+OK\r\n"));
        assert!(!is_own_monitor_line(b"+1 [0 unix:/tmp/s] \"get\"\r\n"));
    }
}
