//! Custom attributes: typed values (text, number, bool, date) that any aggregate instance can
//! carry beside its domain fields, so an analyst's columns (a lead's origin, a customer's job)
//! can be grouped and filtered by without a new definition or a new event type.
//!
//! Attributes are kept out of the domain's rules: no aggregate reads them, and they are not
//! an aggregate's events. Any command may carry an `attributes` object (set at creation, or
//! with any later command), and every aggregate takes [`SET_ATTRIBUTES`] to change them
//! alone; the registry (see [`crate::registry`]) records the changed values as one
//! [`ATTRIBUTES_SET`] event in the instance's stream, after the command's own events. A value
//! of `null` removes the attribute. The metric engine reads them as `attr.NAME` (the value at
//! or before the fact's time).
//!
//! **Architecture Invariant:** attributes hold no personal data: they are stored in plain
//! text and cannot be erased; names, emails and phones go in a `personal` field
//! ([`crate::personal`]).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Event type that records changed attributes, in any aggregate's stream.
pub const ATTRIBUTES_SET: &str = "AttributesSet";
/// Current schema version of [`ATTRIBUTES_SET`].
pub const ATTRIBUTES_SET_VERSION: u16 = 1;
/// The command, taken by every aggregate, that changes attributes alone.
pub const SET_ATTRIBUTES: &str = "SetAttributes";
/// The field of any command body (and of [`AttributesSet`]) that holds attributes.
pub const ATTRIBUTES_FIELD: &str = "attributes";
/// Most attributes one command or event names.
pub const ATTRIBUTES_MAX: usize = 64;
/// Longest attribute name, in bytes.
pub const ATTRIBUTE_NAME_MAX_BYTES: usize = 64;
/// Longest text value, in characters.
pub const ATTRIBUTE_TEXT_MAX_CHARS: usize = 1_000;

/// One attribute's value. In JSON: `true`, `12.5`, `"2017-03-01"` (a date), `"text"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum AttributeValue {
    /// `true` or `false`.
    Bool(bool),
    /// A number, kept as written (`3`, `2.5`).
    Number(serde_json::Number),
    /// A calendar date, `YYYY-MM-DD`.
    Date(NaiveDate),
    /// Any other text.
    Text(String),
}

/// Attribute changes by name: a value sets the attribute, `null` removes it.
pub type Attributes = BTreeMap<String, Option<AttributeValue>>;

/// Payload of [`ATTRIBUTES_SET`]: the attributes a command changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttributesSet {
    /// The changed attributes (`null`: removed).
    pub attributes: Attributes,
    /// Business time of the change.
    pub occurred_at: DateTime<Utc>,
}

/// The body of [`SET_ATTRIBUTES`]: change the attributes of an existing instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SetAttributes {
    /// The instance's id (the stream is `{category}-{id}`).
    pub id: String,
    /// The attributes to set (`null`: remove).
    pub attributes: Attributes,
    /// Business time of the change.
    pub occurred_at: DateTime<Utc>,
}

/// Why attributes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AttributeError {
    /// The `attributes` field is not an object of names to values.
    #[error(
        "`attributes` must be an object of names to values (text, number, bool, date or null): {0}"
    )]
    Malformed(String),
    /// A name that is not lower_snake_case or too long.
    #[error("attribute name `{0}` is not allowed: use lower_snake_case (a-z, 0-9, _; starting with a letter), at most {ATTRIBUTE_NAME_MAX_BYTES} bytes")]
    Name(String),
    /// Too many attributes.
    #[error("{count} attributes in one command; the limit is {ATTRIBUTES_MAX}")]
    TooMany {
        /// How many were given.
        count: usize,
    },
    /// A text value over the limit.
    #[error("attribute `{name}` has {chars} characters; the limit is {ATTRIBUTE_TEXT_MAX_CHARS}")]
    TooLong {
        /// The attribute.
        name: String,
        /// Its length.
        chars: usize,
    },
    /// Attributes for an instance that does not exist.
    #[error(
        "`{stream}` does not exist; create it first (attributes belong to an existing record)"
    )]
    NoSuchInstance {
        /// The stream.
        stream: String,
    },
}

/// Parses and checks an `attributes` value.
///
/// # Errors
/// [`AttributeError`] for a malformed value, a bad name, too many names or too long a text.
pub fn parse(value: Value) -> Result<Attributes, AttributeError> {
    let attributes: Attributes =
        serde_json::from_value(value).map_err(|e| AttributeError::Malformed(e.to_string()))?;
    check(&attributes)?;
    Ok(attributes)
}

/// Checks names, count and text lengths.
///
/// # Errors
/// As [`parse`].
pub fn check(attributes: &Attributes) -> Result<(), AttributeError> {
    if attributes.len() > ATTRIBUTES_MAX {
        return Err(AttributeError::TooMany {
            count: attributes.len(),
        });
    }
    for (name, value) in attributes {
        if !valid_name(name) {
            return Err(AttributeError::Name(name.clone()));
        }
        if let Some(AttributeValue::Text(text)) = value {
            let chars = text.chars().count();
            if chars > ATTRIBUTE_TEXT_MAX_CHARS {
                return Err(AttributeError::TooLong {
                    name: name.clone(),
                    chars,
                });
            }
        }
    }
    Ok(())
}

/// Whether `name` is a valid attribute name.
#[must_use]
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= ATTRIBUTE_NAME_MAX_BYTES
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The current attributes of one instance, folded from its [`AttributesSet`] events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentAttributes(BTreeMap<String, AttributeValue>);

impl CurrentAttributes {
    /// Folds one change.
    pub fn apply(&mut self, event: &AttributesSet) {
        for (name, value) in &event.attributes {
            match value {
                Some(v) => {
                    self.0.insert(name.clone(), v.clone());
                }
                None => {
                    self.0.remove(name);
                }
            }
        }
    }

    /// The entries of `wanted` that differ from the current values (what to record).
    #[must_use]
    pub fn changes(&self, wanted: &Attributes) -> Attributes {
        wanted
            .iter()
            .filter(|(name, value)| self.0.get(name.as_str()) != value.as_ref())
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect()
    }

    /// The value of `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&AttributeValue> {
        self.0.get(name)
    }
}

/// Decodes an [`ATTRIBUTES_SET`] payload of schema version `schema_version`.
///
/// # Errors
/// The JSON error, or an unknown schema version (as a custom serde error).
pub fn decode(schema_version: u16, payload: &[u8]) -> Result<AttributesSet, serde_json::Error> {
    if schema_version != ATTRIBUTES_SET_VERSION {
        return Err(serde::de::Error::custom(format!(
            "`{ATTRIBUTES_SET}` schema version {schema_version} is unknown to this build (current: {ATTRIBUTES_SET_VERSION})"
        )));
    }
    serde_json::from_slice(payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_keep_their_type_and_null_removes() {
        let a = parse(json!({"job": "admin", "age": 41, "score": 2.5, "vip": true,
                             "since": "2017-03-01", "old": null}))
        .unwrap();
        assert_eq!(a["job"], Some(AttributeValue::Text("admin".into())));
        assert_eq!(a["vip"], Some(AttributeValue::Bool(true)));
        assert_eq!(
            a["since"],
            Some(AttributeValue::Date(
                NaiveDate::from_ymd_opt(2017, 3, 1).unwrap()
            ))
        );
        assert_eq!(serde_json::to_value(&a["age"]).unwrap(), json!(41));
        assert_eq!(serde_json::to_value(&a["score"]).unwrap(), json!(2.5));
        assert_eq!(a["old"], None);
        let mut current = CurrentAttributes::default();
        current.apply(&AttributesSet {
            attributes: a.clone(),
            occurred_at: DateTime::<Utc>::UNIX_EPOCH,
        });
        assert_eq!(
            current.get("job"),
            Some(&AttributeValue::Text("admin".into()))
        );
        assert!(
            current.changes(&a).is_empty(),
            "the same values change nothing"
        );
        let mut again = Attributes::new();
        again.insert("job".into(), None);
        again.insert("vip".into(), Some(AttributeValue::Bool(true)));
        assert_eq!(current.changes(&again).len(), 1);
    }

    #[test]
    fn names_counts_and_lengths_are_bounded() {
        assert!(matches!(parse(json!({"Job": 1})), Err(AttributeError::Name(n)) if n == "Job"));
        assert!(matches!(
            parse(json!({"9a": 1})),
            Err(AttributeError::Name(_))
        ));
        assert!(matches!(
            parse(json!(["a"])),
            Err(AttributeError::Malformed(_))
        ));
        assert!(matches!(
            parse(json!({"a": {"b": 1}})),
            Err(AttributeError::Malformed(_))
        ));
        let many: serde_json::Map<String, Value> = (0..=ATTRIBUTES_MAX)
            .map(|i| (format!("a{i}"), json!(i)))
            .collect();
        assert!(matches!(
            parse(Value::Object(many)),
            Err(AttributeError::TooMany { count }) if count == ATTRIBUTES_MAX + 1
        ));
        let long = "x".repeat(ATTRIBUTE_TEXT_MAX_CHARS + 1);
        assert!(matches!(
            parse(json!({"note": long})),
            Err(AttributeError::TooLong { .. })
        ));
    }
}
