//! keyward's own clients in a cluster: `CLIENT ID`, `CLIENT LIST`, `CLIENT INFO` and
//! `CLIENT UNBLOCK` as one Redis answers them.
//!
//! A client of keyward in front of a cluster has no one connection Redis could describe: its
//! requests share keyward's connections, and each blocking command gets a connection of its
//! own to the node of its keys. Asked through keyward, a node would list keyward's
//! connections, not its clients. So keyward keeps the list of its cluster clients itself
//! ([`Clients`]): an id of its own for each, its addresses, name, age, idle time and last
//! command, and, while a blocking command waits, which node and which of that node's
//! connections it waits on, so that `CLIENT UNBLOCK id` reaches that connection (`CLIENT
//! UNBLOCK` of the node's own id for it, on that node).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use dashmap::DashMap;

use crate::fnv::BuildFnv;

/// keyward's cluster clients, and where their blocking commands wait.
#[derive(Debug)]
pub struct Clients {
    next: AtomicU64,
    /// When this keyward started: the clock of [`Client`]'s idle times.
    epoch: Instant,
    connected: DashMap<u64, Arc<Client>, BuildFnv>,
    /// keyward's client id -> (node address, the node's id of the connection) of the blocking
    /// command it waits for.
    blocked: DashMap<u64, (String, i64), BuildFnv>,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            next: AtomicU64::new(0),
            epoch: Instant::now(),
            connected: DashMap::default(),
            blocked: DashMap::default(),
        }
    }
}

/// One connected client, as `CLIENT LIST` describes it.
#[derive(Debug)]
pub struct Client {
    pub id: u64,
    addr: SocketAddr,
    laddr: Option<SocketAddr>,
    connected_at: Instant,
    /// Milliseconds from [`Clients::epoch`] to the client's last request.
    last_active_ms: AtomicU64,
    /// The command table id of its last command.
    last_command: AtomicU16,
    resp: AtomicU8,
    name: Mutex<Option<Bytes>>,
}

impl Client {
    /// The client sent requests now; the last of them is the command of table id `command`.
    pub fn active(&self, clients: &Clients, command: u16) {
        let ms = clients.epoch.elapsed().as_millis() as u64;
        self.last_active_ms.store(ms, Ordering::Relaxed);
        self.last_command.store(command, Ordering::Relaxed);
    }

    pub fn set_name(&self, name: Option<Bytes>) {
        *self.name.lock().unwrap_or_else(|e| e.into_inner()) = name;
    }

    pub fn name(&self) -> Option<Bytes> {
        self.name.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_resp(&self, resp: u8) {
        self.resp.store(resp, Ordering::Relaxed);
    }

    /// Its `CLIENT LIST` line. `current` is the request being answered when this client is the
    /// one asking (its command, and its query buffer holding that request, as Redis shows).
    fn line(&self, clients: &Clients, current: Option<(&str, usize)>) -> String {
        let now_ms = clients.epoch.elapsed().as_millis() as u64;
        let idle = match current {
            Some(_) => 0,
            None => now_ms.saturating_sub(self.last_active_ms.load(Ordering::Relaxed)) / 1000,
        };
        let (cmd, qbuf) = match current {
            Some((cmd, len)) => (cmd.to_string(), len),
            None => {
                let id = usize::from(self.last_command.load(Ordering::Relaxed));
                let name = crate::commands::names().get(id).copied().unwrap_or("NULL");
                (name.to_string(), 0)
            }
        };
        let name = self
            .name()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .unwrap_or_default();
        let laddr = self
            .laddr
            .map_or_else(|| "?".to_string(), |a| a.to_string());
        format!(
            "id={} addr={} laddr={laddr} fd=-1 name={name} age={} idle={idle} flags=N db=0 \
             sub=0 psub=0 ssub=0 multi=-1 qbuf={qbuf} qbuf-free=0 argv-mem=0 multi-mem=0 \
             rbs=0 rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd={cmd} user=default \
             redir=-1 resp={}",
            self.id,
            self.addr,
            self.connected_at.elapsed().as_secs(),
            self.resp.load(Ordering::Relaxed),
        )
    }
}

impl Clients {
    /// Lists a new client, with an id unique for the life of this keyward (from 1).
    pub fn connect(&self, addr: SocketAddr, laddr: Option<SocketAddr>) -> Arc<Client> {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let client = Arc::new(Client {
            id,
            addr,
            laddr,
            connected_at: Instant::now(),
            last_active_ms: AtomicU64::new(self.epoch.elapsed().as_millis() as u64),
            last_command: AtomicU16::new(0),
            resp: AtomicU8::new(2),
            name: Mutex::new(None),
        });
        self.connected.insert(id, client.clone());
        client
    }

    /// Takes a client off the list (its session ended).
    pub fn disconnect(&self, id: u64) {
        self.connected.remove(&id);
        self.blocked.remove(&id);
    }

    /// `CLIENT LIST [ID id ...]` as one Redis would answer it: every client of this keyward
    /// (or those named), in id order; `asking` is the client asking, with its command and
    /// request size.
    pub fn list(&self, only: Option<&[u64]>, asking: (u64, &str, usize)) -> String {
        let mut clients: Vec<Arc<Client>> = self
            .connected
            .iter()
            .filter(|c| only.is_none_or(|ids| ids.contains(c.key())))
            .map(|c| c.value().clone())
            .collect();
        clients.sort_by_key(|c| c.id);
        let mut out = String::new();
        for c in clients {
            let current = (c.id == asking.0).then_some((asking.1, asking.2));
            out.push_str(&c.line(self, current));
            out.push('\n');
        }
        out
    }

    /// `CLIENT INFO`: the line of the client asking.
    pub fn info(&self, id: u64, command: &str, request_len: usize) -> Option<String> {
        let client = self.connected.get(&id)?.value().clone();
        Some(format!(
            "{}\n",
            client.line(self, Some((command, request_len)))
        ))
    }

    /// Records that client `id` waits on the node connection `node_client_id` of `addr`, until
    /// the returned guard is dropped.
    pub fn blocked(&self, id: u64, addr: String, node_client_id: i64) -> Blocked<'_> {
        self.blocked.insert(id, (addr, node_client_id));
        Blocked { clients: self, id }
    }

    /// Where client `id` waits now, if it does.
    pub fn waiting(&self, id: u64) -> Option<(String, i64)> {
        self.blocked.get(&id).map(|e| e.value().clone())
    }
}

/// Removes a client's blocking record when its command has its reply (or is abandoned).
pub struct Blocked<'a> {
    clients: &'a Clients,
    id: u64,
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.clients.blocked.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn clients_are_listed_until_they_leave() {
        let clients = Clients::default();
        let a = clients.connect(addr(1000), Some(addr(6380)));
        let b = clients.connect(addr(1001), Some(addr(6380)));
        assert_ne!(a.id, b.id);
        b.set_name(Some(Bytes::from_static(b"worker")));
        let list = clients.list(None, (a.id, "client|list", 26));
        let lines: Vec<&str> = list.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with(&format!(
            "id={} addr=127.0.0.1:1000 laddr=127.0.0.1:6380 ",
            a.id
        )));
        assert!(lines[0].contains(" qbuf=26 ") && lines[0].contains(" cmd=client|list "));
        assert!(lines[1].contains(" name=worker "));
        let only_b = clients.list(Some(&[b.id]), (a.id, "client|list", 26));
        assert_eq!(only_b.lines().count(), 1);
        clients.disconnect(b.id);
        assert_eq!(
            clients
                .list(None, (a.id, "client|list", 26))
                .lines()
                .count(),
            1
        );
    }

    #[test]
    fn blocking_records_end_with_their_guard() {
        let clients = Clients::default();
        let a = clients.connect(addr(1000), None);
        {
            let _guard = clients.blocked(a.id, "n:1".into(), 42);
            assert_eq!(clients.waiting(a.id), Some(("n:1".into(), 42)));
        }
        assert_eq!(clients.waiting(a.id), None);
    }
}
