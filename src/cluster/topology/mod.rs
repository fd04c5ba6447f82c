//! The cluster's slot map: which primary serves each of the 16384 hash slots.
//!
//! keyward keeps its own copy of the map instead of asking Redis where each key lives, so that a
//! request goes straight to the right node and a multi-key command can be split by slot before
//! anything is sent. The map is built from one node's answer to `CLUSTER SHARDS` (Redis 7 and
//! later) or, on older servers, `CLUSTER SLOTS`; [`discover`] asks the seed nodes in turn.
//!
//! - `slot_map.rs`: the map itself ([`SlotMap`], [`Shard`], [`slot_of`]);
//! - `node_addr.rs`: how a node's address is spelled ([`NodeAddr`]);
//! - `parse.rs` and `frame.rs`: the two replies, decoded RESP2 frames, into a map;
//! - `discover.rs`: asking the seeds;
//! - `error.rs`: what can go wrong, per seed.

mod discover;
mod error;
mod frame;
mod node_addr;
mod parse;
mod slot_map;

pub use discover::discover;
pub use error::{SeedFailure, TopologyError};
pub use node_addr::NodeAddr;
pub use parse::Transport;
pub use slot_map::{SLOT_COUNT, Shard, SlotMap, slot_of};
