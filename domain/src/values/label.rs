//! Free-text labels for open vocabularies.
//!
//! Dimension values whose vocabulary belongs to the tenant or to an imported data set
//! (segment, region, industry, lead source, plan, stage, case type, reason text…) are
//! [`Label`]s. Closed vocabularies that metrics branch on (opportunity kind, interaction
//! outcome, close code…) are enums next to their aggregate.

use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::text::deserialize_text;

/// Longest label accepted, in bytes (UTF-8).
pub const LABEL_LEN_MAX_BYTES: usize = 256;

/// Why a string is not a valid label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LabelError {
    /// Empty or only whitespace.
    #[error("label is empty; send a non-blank value (for example \"Enterprise\")")]
    Empty,
    /// Longer than [`LABEL_LEN_MAX_BYTES`].
    #[error("label is {len_bytes} bytes long, the limit is {LABEL_LEN_MAX_BYTES}; shorten it")]
    TooLong {
        /// Length of the rejected text.
        len_bytes: usize,
    },
    /// Leading/trailing whitespace or a control character.
    #[error("label {value:?} has surrounding whitespace or a control character; trim it and remove control characters")]
    Malformed {
        /// The rejected text.
        value: String,
    },
}

/// A short, trimmed, non-empty text without control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Label(CompactString);

impl Label {
    /// Validates a label.
    ///
    /// # Errors
    /// [`LabelError`] when blank, too long, untrimmed or containing control characters.
    pub fn new(value: impl Into<String>) -> Result<Self, LabelError> {
        let value = value.into();
        check(&value)?;
        Ok(Self(CompactString::from(value)))
    }

    /// The label as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The label rules.
fn check(value: &str) -> Result<(), LabelError> {
    if value.trim().is_empty() {
        return Err(LabelError::Empty);
    }
    if value.len() > LABEL_LEN_MAX_BYTES {
        return Err(LabelError::TooLong {
            len_bytes: value.len(),
        });
    }
    if value.trim() != value || value.chars().any(char::is_control) {
        return Err(LabelError::Malformed {
            value: value.to_owned(),
        });
    }
    Ok(())
}

impl Serialize for Label {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Label {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_text(deserializer)
    }
}

impl schemars::JsonSchema for Label {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Label".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": format!("Free text of an open vocabulary: not blank, at most {LABEL_LEN_MAX_BYTES} bytes of UTF-8, no surrounding whitespace, no control characters."),
            "type": "string",
            "minLength": 1,
            "maxLength": LABEL_LEN_MAX_BYTES,
            "pattern": LABEL_PATTERN,
        })
    }
}

/// A [`Label`] as a regular expression (ECMA-262 and Python `re` alike): no control
/// character, no whitespace at either end. The byte limit is not expressible; `maxLength`
/// counts characters.
pub const LABEL_PATTERN: &str = "^[^\\s\\u0000-\\u001f\\u007f-\\u009f](?:[^\\u0000-\\u001f\\u007f-\\u009f]*[^\\s\\u0000-\\u001f\\u007f-\\u009f])?$";

impl TryFrom<String> for Label {
    type Error = LabelError;
    fn try_from(value: String) -> Result<Self, LabelError> {
        Self::new(value)
    }
}

impl TryFrom<&str> for Label {
    type Error = LabelError;
    fn try_from(value: &str) -> Result<Self, LabelError> {
        check(value)?;
        Ok(Self(CompactString::new(value)))
    }
}

impl From<Label> for String {
    fn from(l: Label) -> String {
        l.0.into_string()
    }
}

impl AsRef<str> for Label {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(
            Label::new("Enterprise Software").unwrap().as_str(),
            "Enterprise Software"
        );
        assert!(matches!(Label::new("  "), Err(LabelError::Empty)));
        assert!(matches!(
            Label::new(" x"),
            Err(LabelError::Malformed { .. })
        ));
        assert!(matches!(
            Label::new("a\nb"),
            Err(LabelError::Malformed { .. })
        ));
        assert!(matches!(
            Label::new("x".repeat(LABEL_LEN_MAX_BYTES + 1)),
            Err(LabelError::TooLong { .. })
        ));
        assert!(serde_json::from_str::<Label>("\"\"").is_err());
    }
}
