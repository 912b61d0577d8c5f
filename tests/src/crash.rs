//! What the crash test's child and parent agree on: the deterministic
//! generator and the content of every event as a function of its id.

use chrono::DateTime;
use crm_eventstore::{EventId, ProposedEvent};
use uuid::Uuid;

/// A xorshift64* generator: deterministic and dependency-free.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15) | 1)
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// The event with this id: every field is a function of the id.
pub fn proposed(id: Uuid) -> ProposedEvent {
    let (hi, lo) = id.as_u64_pair();
    let mut rng = Rng::new(hi ^ lo.rotate_left(17));
    let len = 250 + usize::from(u8::try_from(rng.range(0, 100)).unwrap_or(0));
    let mut payload = Vec::with_capacity(len + 8);
    while payload.len() < len {
        payload.extend_from_slice(&rng.next().to_le_bytes());
    }
    payload.truncate(len);
    let secs = 1_600_000_000 + i64::try_from(rng.next() % 100_000_000).unwrap_or(0);
    let nanos = u32::try_from(rng.next() % 1_000_000_000).unwrap_or(0);
    ProposedEvent {
        event_id: EventId(id),
        event_type: format!("CrashTested{}", rng.range(0, 3)),
        schema_version: u16::try_from(rng.range(1, 4)).unwrap_or(1),
        occurred_at: DateTime::from_timestamp(secs, nanos).unwrap_or_default(),
        causation_id: None,
        correlation_id: Some(Uuid::from_u64_pair(lo, hi)),
        actor: "crash-writer".into(),
        metadata: format!("{{\"id\":\"{id}\"}}").into_bytes(),
        payload,
    }
}
