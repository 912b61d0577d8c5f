//! FNV-1a, the hasher of the engine's own maps keyed by short texts (field, stream, type and
//! entity names). The keys come from the engine's own log, so the std hasher's resistance to
//! chosen keys buys nothing here, and FNV costs a fraction of it on hot paths.

use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a, 64 bits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Builds [`Fnv`] hashers.
pub(crate) type FnvBuild = BuildHasherDefault<Fnv>;

/// The FNV-1a hash of the text `parts` make one after the other: of a name, or of a name
/// held in parts (a stream's category and the rest), the same for both.
pub(crate) fn fnv(parts: &[&str]) -> u64 {
    let mut h = Fnv::default();
    for part in parts {
        h.write(part.as_bytes());
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv_matches_its_reference_values() {
        assert_eq!(fnv(&[""]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(&["a"]), 0xaf63_dc4c_8601_ec8c);
        assert_ne!(fnv(&["account-1"]), fnv(&["account-2"]));
        assert_eq!(fnv(&["account", "-1"]), fnv(&["account-1"]));
    }
}
