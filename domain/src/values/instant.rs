//! Instants in payloads: the RFC 3339 text chrono writes (`2024-05-01T09:30:00Z`, with an
//! optional fraction of up to nine digits) is read by a fixed-layout parser; any other
//! spelling (an offset, a lower-case `t`, a leap second, ...) goes to chrono's own parser,
//! with chrono's own error. The result is always the instant chrono would give: the fast
//! path only accepts text whose every field it checks (`fast_path_agrees_with_chrono`).
//!
//! Why: decoding a payload parses its `occurred_at`, and chrono's general parser was about a
//! fifth of the payload decoding a projection catch-up does (profile in the README).

use std::fmt;

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveTime, Utc};
use serde::de::{self, Deserializer, Visitor};

/// For `#[serde(deserialize_with = "crate::values::instant::deserialize")]` on a
/// `DateTime<Utc>` field: accepts and rejects exactly what chrono's `Deserialize` does.
///
/// # Errors
/// The deserializer's error for a value that is not an RFC 3339 date and time.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<DateTime<Utc>, D::Error> {
    deserializer.deserialize_str(InstantVisitor)
}

struct InstantVisitor;

impl Visitor<'_> for InstantVisitor {
    type Value = DateTime<Utc>;

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        // chrono's wording, so an error reads the same whichever parser saw the text.
        formatter.write_str("an RFC 3339 formatted date and time string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<DateTime<Utc>, E> {
        if let Some(instant) = parse_utc(text) {
            return Ok(instant);
        }
        text.parse::<DateTime<FixedOffset>>()
            .map(|t| t.with_timezone(&Utc))
            .map_err(E::custom)
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.F{1,9}]Z` with a valid date and time, else `None`.
fn parse_utc(text: &str) -> Option<DateTime<Utc>> {
    let b = text.as_bytes();
    let (&last, head) = b.split_last()?;
    if last != b'Z' || head.len() < 19 {
        return None;
    }
    let separators = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
    if separators.iter().any(|&(i, c)| head.get(i) != Some(&c)) {
        return None;
    }
    let year = digits(head.get(0..4)?)?;
    let month = digits(head.get(5..7)?)?;
    let day = digits(head.get(8..10)?)?;
    let hour = digits(head.get(11..13)?)?;
    let minute = digits(head.get(14..16)?)?;
    let second = digits(head.get(17..19)?)?;
    let nanos = match head.get(19..) {
        Some([]) => 0,
        Some([b'.', fraction @ ..]) if (1..=9).contains(&fraction.len()) => {
            let value = digits(fraction)?;
            let scale = 10u32.checked_pow(9 - u32::try_from(fraction.len()).ok()?)?;
            value.checked_mul(scale)?
        }
        _ => return None,
    };
    if second > 59 {
        return None; // a leap second: chrono's parser knows how to read it
    }
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, month, day)?;
    let time = NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)?;
    Some(date.and_time(time).and_utc())
}

/// The decimal value of ASCII digits, `None` if any byte is not a digit (or it overflows).
fn digits(bytes: &[u8]) -> Option<u32> {
    bytes.iter().try_fold(0u32, |value, &c| {
        if c.is_ascii_digit() {
            value.checked_mul(10)?.checked_add(u32::from(c - b'0'))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn chrono_parse(text: &str) -> Option<DateTime<Utc>> {
        text.parse::<DateTime<FixedOffset>>()
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    #[test]
    fn reads_what_chrono_writes() {
        for text in [
            "2024-05-01T09:30:00Z",
            "2024-02-29T23:59:59.5Z",
            "1999-12-31T00:00:00.123456789Z",
            "0001-01-01T00:00:00.000001Z",
        ] {
            let fast = parse_utc(text).unwrap();
            assert_eq!(Some(fast), chrono_parse(text), "{text}");
            let written = serde_json::to_string(&fast).unwrap();
            let read: DateTime<Utc> = serde_json::from_str(&written).unwrap();
            assert_eq!(read, fast, "{written}");
        }
    }

    #[test]
    fn other_spellings_go_to_chrono_with_its_errors() {
        #[derive(Debug, serde::Deserialize)]
        struct Fast {
            #[serde(deserialize_with = "deserialize")]
            at: DateTime<Utc>,
        }
        #[derive(Debug, serde::Deserialize)]
        struct Chrono {
            at: DateTime<Utc>,
        }
        for text in [
            r#"{"at":"2024-05-01T09:30:00+02:00"}"#,
            r#"{"at":"2024-05-01t09:30:00z"}"#,
            r#"{"at":"2024-05-01 09:30:00Z"}"#,
            r#"{"at":"2016-12-31T23:59:60Z"}"#,
            r#"{"at":"2024-05-01T09:30:00.1234567891Z"}"#,
            r#"{"at":"2024-05-01T09:30:00\u005A"}"#,
            r#"{"at":"2023-02-29T09:30:00Z"}"#,
            r#"{"at":"2024-13-01T09:30:00Z"}"#,
            r#"{"at":"2024-05-01T24:00:00Z"}"#,
            r#"{"at":"2024-05-01T09:30Z"}"#,
            r#"{"at":"+2024-05-01T09:30:00Z"}"#,
            r#"{"at":""}"#,
            r#"{"at":17}"#,
            r#"{"at":null}"#,
        ] {
            let fast = serde_json::from_str::<Fast>(text).map(|f| f.at);
            let chrono = serde_json::from_str::<Chrono>(text).map(|c| c.at);
            match (fast, chrono) {
                (Ok(a), Ok(b)) => assert_eq!(a, b, "{text}"),
                (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "{text}"),
                (a, b) => panic!("{text}: {a:?} against chrono's {b:?}"),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        /// Whatever the fast path accepts, chrono reads as the same instant; whatever
        /// chrono refuses, the fast path refuses too.
        #[test]
        fn fast_path_agrees_with_chrono(
            year in 0u32..10_000,
            month in 0u32..14,
            day in 0u32..33,
            hour in 0u32..26,
            minute in 0u32..62,
            second in 0u32..62,
            fraction in proptest::option::of("[0-9]{1,11}"),
            suffix in prop::sample::select(vec!["Z", "z", "+00:00", "-05:30", ""]),
        ) {
            let fraction = fraction.map(|f| format!(".{f}")).unwrap_or_default();
            let text = format!(
                "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}{suffix}"
            );
            let chrono = chrono_parse(&text);
            if let Some(fast) = parse_utc(&text) {
                prop_assert_eq!(Some(fast), chrono, "{}", text);
            }
            if chrono.is_none() {
                prop_assert!(parse_utc(&text).is_none(), "{}", text);
            }
        }
    }
}
