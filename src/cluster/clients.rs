//! Client ids in a cluster: `CLIENT ID` and `CLIENT UNBLOCK` as one Redis answers them.
//!
//! A client of keyward in front of a cluster has no one connection whose id Redis could give:
//! its requests share keyward's connections, and each blocking command gets a connection of its
//! own to the node of its keys. So keyward gives every cluster client an id of its own, and
//! remembers, while a blocking command waits, which node and which of that node's connections
//! it waits on. `CLIENT UNBLOCK id` then reaches that connection (`CLIENT UNBLOCK` of the
//! node's own id for it, on that node), as it would on a single Redis.

use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use crate::fnv::BuildFnv;

/// The ids of keyward's cluster clients and where their blocking commands wait.
#[derive(Debug, Default)]
pub struct ClientIds {
    next: AtomicU64,
    /// keyward's client id -> (node address, the node's id of the connection) of the blocking
    /// command it waits for.
    blocked: DashMap<u64, (String, i64), BuildFnv>,
}

impl ClientIds {
    /// A new client's id: unique for the life of this keyward, from 1.
    pub fn new_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records that client `id` waits on the node connection `node_client_id` of `addr`, until
    /// the returned guard is dropped.
    pub fn blocked(&self, id: u64, addr: String, node_client_id: i64) -> Blocked<'_> {
        self.blocked.insert(id, (addr, node_client_id));
        Blocked { ids: self, id }
    }

    /// Where client `id` waits now, if it does.
    pub fn waiting(&self, id: u64) -> Option<(String, i64)> {
        self.blocked.get(&id).map(|e| e.value().clone())
    }
}

/// Removes a client's blocking record when its command has its reply (or is abandoned).
pub struct Blocked<'a> {
    ids: &'a ClientIds,
    id: u64,
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        self.ids.blocked.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_blocking_records_end_with_their_guard() {
        let ids = ClientIds::default();
        let (a, b) = (ids.new_id(), ids.new_id());
        assert_ne!(a, b);
        {
            let _guard = ids.blocked(a, "n:1".into(), 42);
            assert_eq!(ids.waiting(a), Some(("n:1".into(), 42)));
            assert_eq!(ids.waiting(b), None);
        }
        assert_eq!(ids.waiting(a), None);
    }
}
