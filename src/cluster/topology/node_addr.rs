//! The address of a cluster node, in the one spelling keyward uses everywhere.
//!
//! The slot map, the connection pool and `MOVED` redirections all name nodes by address, and they
//! are compared as strings: one canonical form (`host:port`, IPv6 hosts in brackets) keeps
//! `[::1]:7000` from one reply and `::1` + `7000` from another from looking like two nodes.

use std::borrow::Borrow;
use std::fmt;

/// The address of a cluster node as keyward connects to it: `host:port`, with an IPv6 host in
/// brackets (`[::1]:7000`) so that the string can be handed to `TcpStream::connect` as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr(String);

impl NodeAddr {
    /// The address of `port` on `host` (an IP address or a hostname, IPv6 with or without
    /// brackets).
    pub fn new(host: &str, port: u16) -> Self {
        if host.contains(':') && !host.starts_with('[') {
            NodeAddr(format!("[{host}]:{port}"))
        } else {
            NodeAddr(format!("{host}:{port}"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host part, without IPv6 brackets.
    pub fn host(&self) -> &str {
        let (host, _) = split_host_port(&self.0);
        host
    }

    /// The port part.
    pub fn port(&self) -> u16 {
        let (_, port) = split_host_port(&self.0);
        port.and_then(|p| p.parse().ok()).unwrap_or(0)
    }
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for NodeAddr {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for NodeAddr {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for NodeAddr {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NodeAddr {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for NodeAddr {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl From<NodeAddr> for String {
    fn from(addr: NodeAddr) -> String {
        addr.0
    }
}

/// Splits `host:port`, `[v6]:port` or a bare host into the host (brackets removed) and the port
/// text, if there is one.
pub(super) fn split_host_port(addr: &str) -> (&str, Option<&str>) {
    if let Some(rest) = addr.strip_prefix('[') {
        if let Some((host, tail)) = rest.split_once(']') {
            return (host, tail.strip_prefix(':'));
        }
        return (addr, None);
    }
    match addr.rsplit_once(':') {
        // More than one colon without brackets: a bare IPv6 address, no port.
        Some((host, _)) if host.contains(':') => (addr, None),
        Some((host, port)) => (host, Some(port)),
        None => (addr, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addr_formats_and_splits() {
        let a = NodeAddr::new("127.0.0.1", 7000);
        assert_eq!(a.as_str(), "127.0.0.1:7000");
        assert_eq!((a.host(), a.port()), ("127.0.0.1", 7000));
        let v6 = NodeAddr::new("::1", 7000);
        assert_eq!(v6.to_string(), "[::1]:7000");
        assert_eq!((v6.host(), v6.port()), ("::1", 7000));
        assert_eq!(NodeAddr::new("[::1]", 7000), v6);
        let h = NodeAddr::new("redis.example", 6379);
        assert_eq!((h.host(), h.port()), ("redis.example", 6379));
        assert_eq!(split_host_port("::1"), ("::1", None));
        assert_eq!(split_host_port("host"), ("host", None));
    }
}
