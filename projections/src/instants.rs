//! Instants in read-model states, serialized by the format's kind: as `chrono` writes them
//! (RFC 3339 text) in human-readable formats such as JSON, so the JSON shape of a state never
//! changes; as `(seconds, nanoseconds)` since the Unix epoch in binary formats (snapshot
//! formats 3 and 4, bincode), where text would cost a formatting and a parse per instant and take
//! three times the bytes.
//!
//! Use it on a field holding instants, alone or inside options, lists, pairs and maps:
//! `#[serde(with = "crate::instants")]`. The shapes it knows are those of [`Instants`].

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use crm_domain::aggregates::case::CloseCode;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A value that holds instants (or none), serialized as this module says.
pub(crate) trait Instants: Sized {
    /// Serializes `self`, instants by the format's kind.
    fn serialize_by_kind<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error>;
    /// Deserializes what [`Instants::serialize_by_kind`] wrote.
    fn deserialize_by_kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error>;
}

/// `serialize_with` of a field.
pub(crate) fn serialize<T: Instants, S: Serializer>(
    value: &T,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    value.serialize_by_kind(serializer)
}

/// `deserialize_with` of a field.
pub(crate) fn deserialize<'de, T: Instants, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<T, D::Error> {
    T::deserialize_by_kind(deserializer)
}

/// A borrowed value serialized through [`Instants`].
struct Ser<'a, T>(&'a T);

impl<T: Instants> Serialize for Ser<'_, T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.serialize_by_kind(serializer)
    }
}

/// A value deserialized through [`Instants`].
struct De<T>(T);

impl<'de, T: Instants> Deserialize<'de> for De<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        T::deserialize_by_kind(deserializer).map(De)
    }
}

impl Instants for DateTime<Utc> {
    fn serialize_by_kind<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.serialize(serializer)
        } else {
            (self.timestamp(), self.timestamp_subsec_nanos()).serialize(serializer)
        }
    }

    fn deserialize_by_kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            return DateTime::<Utc>::deserialize(deserializer);
        }
        let (seconds, nanoseconds) = <(i64, u32)>::deserialize(deserializer)?;
        DateTime::from_timestamp(seconds, nanoseconds).ok_or_else(|| {
            D::Error::custom(format!(
                "instant {seconds} s {nanoseconds} ns after the epoch is out of range"
            ))
        })
    }
}

/// Types without instants: serialized as they are.
macro_rules! plain {
    ($($t:ty),*) => {
        $(impl Instants for $t {
            fn serialize_by_kind<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                self.serialize(serializer)
            }
            fn deserialize_by_kind<'de, D: Deserializer<'de>>(
                deserializer: D,
            ) -> Result<Self, D::Error> {
                <$t>::deserialize(deserializer)
            }
        })*
    };
}

plain!(u8, i64, CloseCode);

impl<T: Instants> Instants for Option<T> {
    fn serialize_by_kind<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_ref().map(Ser).serialize(serializer)
    }

    fn deserialize_by_kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Option::<De<T>>::deserialize(deserializer)?.map(|d| d.0))
    }
}

impl<T: Instants> Instants for Vec<T> {
    fn serialize_by_kind<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter().map(Ser))
    }

    fn deserialize_by_kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Vec::<De<T>>::deserialize(deserializer)?
            .into_iter()
            .map(|d| d.0)
            .collect())
    }
}

impl<A: Instants, B: Instants> Instants for (A, B) {
    fn serialize_by_kind<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        (Ser(&self.0), Ser(&self.1)).serialize(serializer)
    }

    fn deserialize_by_kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (a, b) = <(De<A>, De<B>)>::deserialize(deserializer)?;
        Ok((a.0, b.0))
    }
}

impl<K, T> Instants for BTreeMap<K, T>
where
    K: Ord + Serialize + for<'k> Deserialize<'k>,
    T: Instants,
{
    fn serialize_by_kind<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter().map(|(k, v)| (k, Ser(v))))
    }

    fn deserialize_by_kind<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(BTreeMap::<K, De<T>>::deserialize(deserializer)?
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        #[serde(with = "crate::instants")]
        at: DateTime<Utc>,
        #[serde(with = "crate::instants")]
        maybe: Option<DateTime<Utc>>,
        #[serde(with = "crate::instants")]
        list: Vec<DateTime<Utc>>,
        #[serde(with = "crate::instants")]
        stops: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
        #[serde(with = "crate::instants")]
        scored: Option<(DateTime<Utc>, u8)>,
        #[serde(with = "crate::instants")]
        by_key: BTreeMap<String, DateTime<Utc>>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        at: DateTime<Utc>,
        maybe: Option<DateTime<Utc>>,
        list: Vec<DateTime<Utc>>,
        stops: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)>,
        scored: Option<(DateTime<Utc>, u8)>,
        by_key: BTreeMap<String, DateTime<Utc>>,
    }

    #[test]
    fn json_is_unchanged_and_binary_round_trips() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let sample = Sample {
            at: t("2024-03-01T10:00:00Z"),
            maybe: Some(t("1969-12-31T23:59:59.999999999Z")),
            list: vec![t("2030-01-01T00:00:00.5Z"), t("+100000-01-01T00:00:00Z")],
            stops: vec![(t("2024-03-01T10:00:00Z"), None)],
            scored: Some((t("2024-03-01T10:00:00Z"), 9)),
            by_key: [("k".to_owned(), t("2024-02-29T12:00:00Z"))].into(),
        };
        let plain = Plain {
            at: sample.at,
            maybe: sample.maybe,
            list: sample.list.clone(),
            stops: sample.stops.clone(),
            scored: sample.scored,
            by_key: sample.by_key.clone(),
        };
        let json = serde_json::to_string(&sample).unwrap();
        assert_eq!(json, serde_json::to_string(&plain).unwrap());
        assert_eq!(serde_json::from_str::<Sample>(&json).unwrap(), sample);
        let config = bincode::config::standard();
        let binary = bincode::serde::encode_to_vec(&sample, config).unwrap();
        let (decoded, read): (Sample, usize) =
            bincode::serde::decode_from_slice(&binary, config).unwrap();
        assert_eq!((decoded, read), (sample, binary.len()));
        assert!(binary.len() < bincode::serde::encode_to_vec(&plain, config).unwrap().len() / 2);
    }
}
