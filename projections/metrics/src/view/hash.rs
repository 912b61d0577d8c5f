//! The hash of the view's own maps: FNV-1a for short names (field names, stream names; see
//! [`crate::hashing`]). The maps are keyed by what this crate reads from its own log, so the
//! std hasher's resistance to chosen keys buys nothing here, and FNV costs a fraction of it
//! on the replay's hot path.

pub(crate) use crate::hashing::{fnv, FnvBuild};
