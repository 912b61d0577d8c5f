//! Narrow columns of a view: a log position in 4 bytes and an instant in 8, where a `u64`
//! takes 8 and a `DateTime<Utc>` 12. A view over a long log keeps millions of events, and
//! these two columns were about a quarter of what it held an event besides the payload.

use chrono::{DateTime, Utc};

/// A value that changes seldom along the entries, held once per run of entries that share
/// it: `(first entry, value)`, a new run each time the value differs from the last one's.
#[derive(Debug, Clone)]
pub(super) struct Runs<T>(Vec<(u32, T)>);

impl<T> Default for Runs<T> {
    fn default() -> Self {
        Runs(Vec::new())
    }
}

impl<T: Copy + PartialEq> Runs<T> {
    /// Sets entry `index` (the next one) to `value`.
    pub(super) fn push(&mut self, index: u32, value: T) {
        if self.0.last().is_none_or(|(_, v)| *v != value) {
            self.0.push((index, value));
        }
    }

    /// The value of entry `i`: that of the last run starting at or before it (`None` before
    /// the first run).
    pub(super) fn get(&self, i: usize) -> Option<T> {
        let after = self
            .0
            .partition_point(|(first, _)| usize::try_from(*first).is_ok_and(|f| f <= i));
        self.0.get(after.checked_sub(1)?).map(|(_, v)| *v)
    }

    pub(super) fn shrink(&mut self) {
        self.0.shrink_to_fit();
    }
}

/// Log positions in ascending order (the order a view reads them): the low 32 bits of each,
/// and the high bits in runs, one run per 2^32 positions.
#[derive(Debug, Clone, Default)]
pub(super) struct Positions {
    low: Vec<u32>,
    high: Runs<u32>,
}

/// Splits `p` into its high and low 32 bits.
fn halves(p: u64) -> (u32, u32) {
    let [h0, h1, h2, h3, l0, l1, l2, l3] = p.to_be_bytes();
    (
        u32::from_be_bytes([h0, h1, h2, h3]),
        u32::from_be_bytes([l0, l1, l2, l3]),
    )
}

impl Positions {
    /// Appends `p` as entry `index` (the next one; positions come in ascending order, so a
    /// new run starts only when the high bits change).
    pub(super) fn push(&mut self, index: u32, p: u64) {
        let (high, low) = halves(p);
        self.high.push(index, high);
        self.low.push(low);
    }

    pub(super) fn len(&self) -> usize {
        self.low.len()
    }

    /// Position of entry `i`.
    pub(super) fn get(&self, i: usize) -> Option<u64> {
        let low = *self.low.get(i)?;
        let high = self.high.get(i)?;
        Some((u64::from(high) << 32) | u64::from(low))
    }

    /// Every position, in order.
    pub(super) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    pub(super) fn shrink(&mut self) {
        self.low.shrink_to_fit();
        self.high.shrink();
    }
}

/// Marks an instant kept in [`Instants::outside`].
const OUTSIDE: i64 = i64::MIN;

/// Instants as nanoseconds since the Unix epoch: every instant from 1677-09-21 to
/// 2262-04-11. One outside that span (and the one instant whose count is [`OUTSIDE`]) is
/// kept whole beside, by entry.
#[derive(Debug, Clone, Default)]
pub(super) struct Instants {
    nanos: Vec<i64>,
    /// `(entry, instant)` for each entry marked [`OUTSIDE`], in entry order.
    outside: Vec<(u32, DateTime<Utc>)>,
}

impl Instants {
    /// Appends `t` as entry `index` (the next one).
    pub(super) fn push(&mut self, index: u32, t: DateTime<Utc>) {
        let n = match t.timestamp_nanos_opt() {
            Some(n) if n != OUTSIDE => n,
            _ => {
                self.outside.push((index, t));
                OUTSIDE
            }
        };
        self.nanos.push(n);
    }

    /// The instant of entry `i`.
    pub(super) fn get(&self, i: usize) -> Option<DateTime<Utc>> {
        match *self.nanos.get(i)? {
            OUTSIDE => {
                let i = u32::try_from(i).ok()?;
                let at = self.outside.binary_search_by_key(&i, |(e, _)| *e).ok()?;
                self.outside.get(at).map(|(_, t)| *t)
            }
            n => Some(DateTime::from_timestamp_nanos(n)),
        }
    }

    pub(super) fn shrink(&mut self) {
        self.nanos.shrink_to_fit();
        self.outside.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Positions read back as written, across the 32-bit boundaries, in one run or several.
    #[test]
    fn positions_read_back_across_high_bit_runs() {
        let written: Vec<u64> = vec![
            1,
            2,
            u64::from(u32::MAX) - 1,
            u64::from(u32::MAX),
            u64::from(u32::MAX) + 1,
            u64::from(u32::MAX) + 7,
            (3 << 32) + 5,
            u64::MAX,
        ];
        let mut p = Positions::default();
        for (i, w) in written.iter().enumerate() {
            p.push(u32::try_from(i).unwrap(), *w);
        }
        assert_eq!(p.iter().collect::<Vec<_>>(), written);
        assert_eq!(p.high.0.len(), 4);
        assert_eq!((p.len(), p.get(written.len())), (written.len(), None));
        let mut one = Positions::default();
        one.push(0, 10);
        one.push(1, 11);
        assert_eq!(
            (one.get(0), one.get(1), one.high.0.len()),
            (Some(10), Some(11), 1)
        );
    }

    /// Instants read back exactly, to the nanosecond, inside the span of `i64` nanoseconds
    /// and outside it, and the one instant whose count is the marker.
    #[test]
    fn instants_read_back_exactly_inside_and_outside_the_nanosecond_span() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let written = [
            at("2024-05-01T09:30:00.123456789Z"),
            at("1970-01-01T00:00:00Z"),
            at("1969-12-31T23:59:59.999999999Z"),
            at("1500-01-01T00:00:00Z"),
            DateTime::from_timestamp_nanos(i64::MIN),
            DateTime::from_timestamp_nanos(i64::MIN + 1),
            DateTime::from_timestamp_nanos(i64::MAX),
            at("9999-12-31T23:59:59.5Z"),
            DateTime::<Utc>::MIN_UTC,
            at("2262-04-11T23:47:16.854775807Z"),
        ];
        let mut t = Instants::default();
        for (i, w) in written.iter().enumerate() {
            t.push(u32::try_from(i).unwrap(), *w);
        }
        for (i, w) in written.iter().enumerate() {
            assert_eq!(t.get(i), Some(*w), "entry {i}");
        }
        assert_eq!(t.outside.len(), 4);
        assert_eq!(t.get(written.len()), None);
    }
}
