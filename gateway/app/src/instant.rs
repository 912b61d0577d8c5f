//! Instants as users type them, for every edge (CLI flags, HTTP query parameters): RFC 3339,
//! or a date or date-time without offset taken as UTC (`2017-01-01` is its midnight).

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use serde::{Deserialize, Deserializer};

/// Text that is no instant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a date or an instant: give YYYY-MM-DD (midnight UTC), YYYY-MM-DDTHH:MM:SS (UTC) or RFC 3339 with an offset, e.g. 2017-01-01 or 2017-01-01T09:30:00+01:00")]
pub struct InstantError(pub String);

/// The instant `text` names.
///
/// # Errors
/// [`InstantError`] naming the accepted forms.
pub fn parse(text: &str) -> Result<DateTime<Utc>, InstantError> {
    let text = text.trim();
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S").map(|t| t.and_utc()))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_time(NaiveTime::MIN).and_utc())
        })
        .map_err(|_| InstantError(text.to_owned()))
}

/// Deserializes an optional instant in any form [`parse`] takes (for query parameters).
///
/// # Errors
/// When the text is no instant.
pub fn deserialize_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
    Option::<String>::deserialize(d)?
        .map(|text| parse(&text).map_err(serde::de::Error::custom))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instant_is_a_date_a_utc_date_time_or_rfc_3339() {
        assert_eq!(
            parse("2017-01-01").unwrap().to_rfc3339(),
            "2017-01-01T00:00:00+00:00"
        );
        assert_eq!(
            parse("2017-01-01T09:30:00").unwrap().to_rfc3339(),
            "2017-01-01T09:30:00+00:00"
        );
        assert_eq!(
            parse("2017-01-01T09:30:00+01:00").unwrap().to_rfc3339(),
            "2017-01-01T08:30:00+00:00"
        );
        let e = parse("01/02/2017").unwrap_err().to_string();
        assert!(e.contains("YYYY-MM-DD"), "{e}");
    }
}
