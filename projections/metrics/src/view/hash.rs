//! Hashers for the view's own maps: FNV-1a for short names (field names, stream names; see
//! [`crate::hashing`]), and a pass-through for keys that are already hashes. The maps are
//! keyed by what this crate reads from its own log, so the std hasher's resistance to chosen
//! keys buys nothing here, and these cost a fraction of it on the replay's hot path.

use std::hash::{BuildHasherDefault, Hasher};

pub(crate) use crate::hashing::{fnv, FnvBuild};

/// Hashes a `u64` key as itself (for keys that are hashes already).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is expected; anything else is folded in FNV-style.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Builds [`PassThrough`] hashers.
pub(crate) type PassThroughBuild = BuildHasherDefault<PassThrough>;
