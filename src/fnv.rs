//! FNV-1a, the hash of keyward's small lookup tables on the request path.
//!
//! Those tables (command names, node addresses) are filled by keyward from what it trusts (its
//! own command table, the cluster's topology), never by clients, so there is no flooding to
//! defend against; and their keys are short, for which SipHash's setup cost buys nothing
//! (measured: a tenth of the request path's instructions in the command lookup, and 2% in the
//! node pool's, under callgrind).

use std::hash::{BuildHasherDefault, Hasher};

/// Builds [`Fnv1a`] hashers, for `HashMap::with_hasher` and the like.
pub type BuildFnv = BuildHasherDefault<Fnv1a>;

/// The 64-bit FNV-1a hasher.
#[derive(Default)]
pub struct Fnv1a(u64);

impl Hasher for Fnv1a {
    fn write(&mut self, bytes: &[u8]) {
        let mut hash = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = hash;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}
