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
