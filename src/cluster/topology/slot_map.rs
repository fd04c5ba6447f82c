//! The slot map: which primary serves each of the 16384 hash slots.
//!
//! The map is a plain value: one `u16` per slot pointing into a short list of shards. Routing
//! code holds it behind whatever sharing it needs (an `ArcSwap`, a lock) and replaces or patches
//! it ([`SlotMap::set_owner`] after a `MOVED`) as the topology changes. The parsers that build it
//! from a node's reply live in `parse.rs`; this file only knows slots and shards.

use std::fmt;

use super::error::{TopologyError, malformed};
use super::node_addr::NodeAddr;

/// The number of hash slots in a Redis Cluster.
pub const SLOT_COUNT: usize = 16384;

/// Marks a slot that no known primary serves.
pub(super) const UNOWNED: u16 = u16::MAX;

/// The hash slot of a key, exactly as Redis computes it (CRC16 of the key, or of the part between
/// the first `{` and the next `}` when that part is not empty).
pub fn slot_of(key: &[u8]) -> u16 {
    redis_protocol::redis_keyslot(key)
}

/// One primary and the replicas that copy it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub primary: NodeAddr,
    /// The primary's 40-character node id, when the reply carried one.
    pub primary_id: Option<String>,
    /// Replicas that were healthy when the map was read (`CLUSTER SLOTS` leaves out failed ones;
    /// for `CLUSTER SHARDS` only those with `health` `online` are kept).
    pub replicas: Vec<NodeAddr>,
}

/// Which primary serves each of the 16384 hash slots.
///
/// A slot with no owner (unassigned, or served by a primary the reply marked as failed) has no
/// entry: routing code answers `CLUSTERDOWN` for it or refreshes the map.
#[derive(Clone, PartialEq, Eq)]
pub struct SlotMap {
    /// One entry per slot: an index into `shards`, or [`UNOWNED`].
    slots: Box<[u16]>,
    shards: Vec<Shard>,
}

impl SlotMap {
    /// A map in which no slot has an owner.
    pub fn empty() -> Self {
        SlotMap {
            slots: vec![UNOWNED; SLOT_COUNT].into_boxed_slice(),
            shards: Vec::new(),
        }
    }

    /// The primary that serves `slot`, if any. Slots of 16384 and above have no owner.
    pub fn owner(&self, slot: u16) -> Option<&NodeAddr> {
        self.shard_of(slot).map(|shard| &shard.primary)
    }

    /// The primary that serves `key`'s slot, if any.
    pub fn owner_of_key(&self, key: &[u8]) -> Option<&NodeAddr> {
        self.owner(slot_of(key))
    }

    /// The shard (primary and replicas) that serves `slot`, if any.
    pub fn shard_of(&self, slot: u16) -> Option<&Shard> {
        match self.slots.get(usize::from(slot)) {
            Some(&idx) if idx != UNOWNED => self.shards.get(usize::from(idx)),
            _ => None,
        }
    }

    /// Every primary that serves at least one slot, each once, in the order of the first slot it
    /// serves.
    /// A primary with no slots holds no reachable keys, so fan-out commands (DBSIZE, SCAN, KEYS,
    /// FLUSHALL) can leave it out.
    pub fn primaries(&self) -> Vec<NodeAddr> {
        let mut serving = vec![false; self.shards.len()];
        for &idx in self.slots.iter() {
            if idx != UNOWNED {
                serving[usize::from(idx)] = true;
            }
        }
        self.shards
            .iter()
            .zip(serving)
            .filter(|(_, serving)| *serving)
            .map(|(shard, _)| shard.primary.clone())
            .collect()
    }

    /// The healthy replicas of `primary` (`host:port`); empty when it is not a known primary.
    pub fn replicas_of(&self, primary: &str) -> &[NodeAddr] {
        self.shards
            .iter()
            .find(|shard| shard.primary == primary)
            .map(|shard| shard.replicas.as_slice())
            .unwrap_or(&[])
    }

    /// Every shard the reply described, including primaries that serve no slot: in the order of
    /// their first slot (slotless ones last), replicas sorted by address. Two replies that
    /// describe the same topology give equal maps.
    pub fn shards(&self) -> &[Shard] {
        &self.shards
    }

    /// The map as contiguous ranges: `(first slot, last slot, primary)`, in slot order.
    pub fn ranges(&self) -> Vec<(u16, u16, &NodeAddr)> {
        let mut out: Vec<(u16, u16, &NodeAddr)> = Vec::new();
        let mut start = 0usize;
        while start < SLOT_COUNT {
            let idx = self.slots[start];
            let mut end = start;
            while end + 1 < SLOT_COUNT && self.slots[end + 1] == idx {
                end += 1;
            }
            if idx != UNOWNED {
                out.push((
                    start as u16,
                    end as u16,
                    &self.shards[usize::from(idx)].primary,
                ));
            }
            start = end + 1;
        }
        out
    }

    /// How many slots have an owner.
    pub fn assigned_slots(&self) -> usize {
        self.slots.iter().filter(|&&idx| idx != UNOWNED).count()
    }

    /// True when every one of the 16384 slots has an owner.
    pub fn is_complete(&self) -> bool {
        self.slots.iter().all(|&idx| idx != UNOWNED)
    }

    /// Records that `primary` now serves `slot`, as a `MOVED slot host:port` redirection says.
    /// A primary the map does not know yet is added as a shard without replicas; the next full
    /// refresh fills in the rest. Slots of 16384 and above are ignored.
    pub fn set_owner(&mut self, slot: u16, primary: NodeAddr) {
        if usize::from(slot) >= SLOT_COUNT {
            return;
        }
        if let Some(idx) = self.shard_index(primary, None) {
            self.slots[usize::from(slot)] = idx;
        }
    }

    /// The index of the shard whose primary is `primary`, added if it is new; `None` when the
    /// map already holds the most shards an index can name (65535, far beyond any real cluster).
    fn shard_index(&mut self, primary: NodeAddr, id: Option<String>) -> Option<u16> {
        if let Some(i) = self.shards.iter().position(|s| s.primary == primary) {
            if self.shards[i].primary_id.is_none() {
                self.shards[i].primary_id = id;
            }
            return Some(i as u16);
        }
        let idx = u16::try_from(self.shards.len())
            .ok()
            .filter(|&i| i != UNOWNED)?;
        self.shards.push(Shard {
            primary,
            primary_id: id,
            replicas: Vec::new(),
        });
        Some(idx)
    }

    /// [`shard_index`](Self::shard_index) for the parsers, where too many shards is an error.
    pub(super) fn parsed_shard_index(
        &mut self,
        primary: NodeAddr,
        id: Option<String>,
    ) -> Result<u16, TopologyError> {
        self.shard_index(primary, id)
            .ok_or_else(|| malformed(format!("more than {UNOWNED} primaries")))
    }

    pub(super) fn assign(&mut self, start: i64, end: i64, idx: u16) -> Result<(), TopologyError> {
        let max = SLOT_COUNT as i64 - 1;
        if start < 0 || end > max || start > end {
            return Err(malformed(format!(
                "slot range {start}-{end} is outside 0-{max}"
            )));
        }
        for slot in start..=end {
            self.slots[slot as usize] = idx;
        }
        Ok(())
    }

    /// Puts the shards in a canonical order (by first slot served; primaries without slots last,
    /// by address) and sorts each replica list, so that two nodes' replies describing the same
    /// topology give equal maps whatever order each node listed things in.
    pub(super) fn canonical(mut self) -> SlotMap {
        let n = self.shards.len();
        let mut first_slot = vec![usize::MAX; n];
        for (slot, &idx) in self.slots.iter().enumerate() {
            if idx != UNOWNED && first_slot[usize::from(idx)] == usize::MAX {
                first_slot[usize::from(idx)] = slot;
            }
        }
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| {
            (first_slot[a], &self.shards[a].primary).cmp(&(first_slot[b], &self.shards[b].primary))
        });
        let mut new_index = vec![0u16; n];
        for (new, &old) in order.iter().enumerate() {
            new_index[old] = new as u16;
        }
        for idx in self.slots.iter_mut() {
            if *idx != UNOWNED {
                *idx = new_index[usize::from(*idx)];
            }
        }
        let mut shards: Vec<Option<Shard>> = self.shards.into_iter().map(Some).collect();
        self.shards = order
            .iter()
            .map(|&i| shards[i].take().expect("each shard moved once"))
            .collect();
        for shard in &mut self.shards {
            shard.replicas.sort();
        }
        self
    }

    /// The shard at `idx`, as [`parsed_shard_index`](Self::parsed_shard_index) returned it: the
    /// parsers add the replicas they read.
    pub(super) fn shard_mut(&mut self, idx: u16) -> &mut Shard {
        &mut self.shards[usize::from(idx)]
    }
}

impl Default for SlotMap {
    fn default() -> Self {
        SlotMap::empty()
    }
}

impl fmt::Debug for SlotMap {
    /// Ranges and shards rather than 16384 numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ranges: Vec<String> = self
            .ranges()
            .into_iter()
            .map(|(start, end, addr)| format!("{start}-{end}: {addr}"))
            .collect();
        f.debug_struct("SlotMap")
            .field("ranges", &ranges)
            .field("shards", &self.shards)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three primaries on ports 7001-7003 of 127.0.0.1, covering every slot, as `MOVED`s
    /// alone would build it.
    fn three_primaries() -> SlotMap {
        let mut map = SlotMap::empty();
        for (range, port) in [
            (0..=5460, 7001),
            (5461..=10922, 7002),
            (10923..=16383, 7003),
        ] {
            for slot in range {
                map.set_owner(slot, NodeAddr::new("127.0.0.1", port));
            }
        }
        map
    }

    #[test]
    fn set_owner_follows_moved() {
        let mut map = three_primaries();
        assert!(map.is_complete());
        map.set_owner(100, NodeAddr::new("127.0.0.1", 7002));
        assert_eq!(map.owner(100).unwrap(), "127.0.0.1:7002");
        assert_eq!(map.owner(99).unwrap(), "127.0.0.1:7001");
        assert_eq!(map.shards().len(), 3);

        map.set_owner(101, NodeAddr::new("127.0.0.1", 7010));
        assert_eq!(map.owner(101).unwrap(), "127.0.0.1:7010");
        assert_eq!(map.shards().len(), 4);
        assert!(map.primaries().contains(&NodeAddr::new("127.0.0.1", 7010)));

        map.set_owner(16384, NodeAddr::new("127.0.0.1", 7010));
        assert_eq!(map.owner(16384), None);

        let mut empty = SlotMap::empty();
        assert_eq!(empty.assigned_slots(), 0);
        assert!(empty.primaries().is_empty());
        empty.set_owner(5, NodeAddr::new("h", 1));
        assert_eq!(empty.owner_of_key(b"x").is_some(), slot_of(b"x") == 5);
        assert_eq!(empty.owner(5).unwrap(), "h:1");
    }

    #[test]
    fn slot_of_matches_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"bar"), 5061);
        assert_eq!(slot_of(b""), 0);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        assert_eq!(slot_of(b"{user1000}.followers"), slot_of(b"user1000"));
        // An empty tag does not count: the whole key is hashed.
        assert_ne!(slot_of(b"{}user1000"), slot_of(b""));
        assert_eq!(slot_of(b"foo{}{bar}"), slot_of_whole(b"foo{}{bar}"));
        assert_eq!(slot_of(b"foo{{bar}}zap"), slot_of(b"{bar"));
        assert_eq!(slot_of(b"foo{bar}{zap}"), slot_of(b"bar"));
    }

    fn slot_of_whole(key: &[u8]) -> u16 {
        // The key without any `{`: hashing it is hashing the whole thing.
        redis_protocol::redis_keyslot(key)
    }
}
