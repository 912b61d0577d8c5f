//! Reading a validated string-backed value straight from the text the format lends, so a
//! value read from a payload costs no heap allocation of its own (an id or a label of up to
//! 24 bytes is held inline, see [`compact_str::CompactString`]).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};

/// Accepts a string and validates it with `T`'s `TryFrom<&str>`.
struct TextVisitor<T>(PhantomData<T>);

impl<T> Visitor<'_> for TextVisitor<T>
where
    T: for<'a> TryFrom<&'a str>,
    for<'a> <T as TryFrom<&'a str>>::Error: fmt::Display,
{
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<T, E> {
        T::try_from(value).map_err(E::custom)
    }
}

/// Deserializes `T` from a string, validated as `T::try_from(&str)` validates it.
pub(crate) fn deserialize_text<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: for<'a> TryFrom<&'a str>,
    for<'a> <T as TryFrom<&'a str>>::Error: fmt::Display,
{
    deserializer.deserialize_str(TextVisitor(PhantomData))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use crate::values::{AccountId, Currency, Label};

    #[test]
    fn text_values_read_inline_long_escaped_and_reject_what_their_constructor_rejects() {
        // Short (held inline), long (on the heap), and written with escapes (the reader hands
        // over its own buffer instead of the payload's bytes): all equal what `new` builds.
        let long = "x".repeat(100);
        for (json, text) in [
            ("\"A1\"", "A1"),
            (&format!("\"{long}\""), long.as_str()),
            ("\"opp-\\u00e9\\u0041\"", "opp-éA"),
        ] {
            let id: AccountId = serde_json::from_str(json).unwrap();
            assert_eq!(id, AccountId::new(text).unwrap());
            assert_eq!(id.as_str(), text);
            assert_eq!(
                serde_json::to_string(&id).unwrap(),
                serde_json::to_string(text).unwrap()
            );
        }
        let label: Label = serde_json::from_str("\"Enterprise \\u0053oftware\"").unwrap();
        assert_eq!(label.as_str(), "Enterprise Software");
        assert_eq!(
            serde_json::from_str::<Currency>("\"EUR\"").unwrap(),
            Currency::EUR
        );

        // The constructor's error, and serde's own for a value that is not a string.
        let blank = serde_json::from_str::<Label>("\" x\"")
            .unwrap_err()
            .to_string();
        assert!(blank.contains("surrounding whitespace"), "{blank}");
        let spaced = serde_json::from_str::<AccountId>("\"a b\"")
            .unwrap_err()
            .to_string();
        assert!(
            spaced.contains("whitespace or a control character"),
            "{spaced}"
        );
        let number = serde_json::from_str::<AccountId>("5")
            .unwrap_err()
            .to_string();
        assert!(
            number.starts_with("invalid type: integer `5`, expected a string"),
            "{number}"
        );
        assert!(serde_json::from_str::<Currency>("\"usd\"").is_err());
    }
}
