//! Identifiers: one newtype per kind of record, so an `AccountId` can never be passed where an
//! `OpportunityId` is expected.
//!
//! Ids are strings because imported data sets bring their own keys (`"1C1I7A6R"`, `"opp-42"`).
//! Every id is validated on construction *and* on deserialization: non-empty, at most
//! [`ID_LEN_MAX_BYTES`] bytes, no whitespace, no control characters. The domain never invents
//! ids (no random or time-based generation): they arrive in commands.

use std::fmt;

use compact_str::CompactString;
use serde::{Deserialize, Serialize};

use super::text::deserialize_text;

/// Longest identifier accepted, in bytes (UTF-8).
pub const ID_LEN_MAX_BYTES: usize = 128;

/// Why a string is not a valid identifier.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The string is empty.
    #[error("{kind} id is empty; supply the record's key (for example \"1C1I7A6R\")")]
    Empty {
        /// Kind of record (`"account"`, `"case"`, …).
        kind: &'static str,
    },
    /// The string is longer than [`ID_LEN_MAX_BYTES`].
    #[error(
        "{kind} id is {len_bytes} bytes long but the limit is {max_bytes} bytes; \
         use a shorter key (or a stable hash of the long one)"
    )]
    TooLong {
        /// Kind of record.
        kind: &'static str,
        /// Length of the rejected string.
        len_bytes: usize,
        /// The limit.
        max_bytes: usize,
    },
    /// The string contains whitespace or a control character.
    #[error(
        "{kind} id {value:?} contains whitespace or a control character at byte {index}; \
         ids are single tokens such as \"1C1I7A6R\": trim or replace that character"
    )]
    InvalidChar {
        /// Kind of record.
        kind: &'static str,
        /// The rejected string.
        value: String,
        /// Byte offset of the first offending character.
        index: usize,
    },
}

/// Checks the id rules shared by every id type.
pub(crate) fn validate_id(kind: &'static str, value: &str) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > ID_LEN_MAX_BYTES {
        return Err(IdError::TooLong {
            kind,
            len_bytes: value.len(),
            max_bytes: ID_LEN_MAX_BYTES,
        });
    }
    // Printable ASCII (no space, no control character) passes at once: the common case, and
    // checked a word at a time. Anything else goes through the full rule below.
    if value.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Ok(());
    }
    if let Some((index, _)) = value
        .char_indices()
        .find(|(_, c)| c.is_whitespace() || c.is_control())
    {
        return Err(IdError::InvalidChar {
            kind,
            value: value.to_owned(),
            index,
        });
    }
    Ok(())
}

/// An id as a regular expression (ECMA-262 and Python `re` alike): no whitespace, no
/// control character. The byte limit is not expressible; `maxLength` counts characters.
pub const ID_PATTERN: &str = "^[^\\s\\u0000-\\u001f\\u007f-\\u009f]+$";

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(CompactString);

        impl $name {
            /// Human name of the record kind, used in error messages.
            pub const KIND: &'static str = $kind;

            /// Validates and wraps an id.
            ///
            /// # Errors
            /// [`IdError`] when the string is empty, too long, or contains whitespace or
            /// control characters.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate_id($kind, &value)?;
                Ok(Self(CompactString::from(value)))
            }

            /// The id as text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "description": format!("A {} id: not empty, at most {ID_LEN_MAX_BYTES} bytes of UTF-8, no whitespace, no control characters.", $kind),
                    "type": "string",
                    "minLength": 1,
                    "maxLength": ID_LEN_MAX_BYTES,
                    "pattern": ID_PATTERN,
                })
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                Self::new(value)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(value: &str) -> Result<Self, IdError> {
                validate_id($kind, value)?;
                Ok(Self(CompactString::new(value)))
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_text(deserializer)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::try_from(value)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0.into_string()
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

string_id!(
    /// A prospect before it becomes a customer (`Lead` stream).
    LeadId,
    "lead"
);
string_id!(
    /// A customer organisation (`Account` stream).
    AccountId,
    "account"
);
string_id!(
    /// A person at an account (`Contact` stream).
    ContactId,
    "contact"
);
string_id!(
    /// A potential deal (`Opportunity` stream).
    OpportunityId,
    "opportunity"
);
string_id!(
    /// A recurring contract (`Subscription` stream).
    SubscriptionId,
    "subscription"
);
string_id!(
    /// A one-off purchase with its invoices, payments and refunds (`Order` stream).
    OrderId,
    "order"
);
string_id!(
    /// An invoice inside an order.
    InvoiceId,
    "invoice"
);
string_id!(
    /// One call, email, meeting, chat… (`Interaction` stream).
    InteractionId,
    "interaction"
);
string_id!(
    /// A support ticket (`Case` stream).
    CaseId,
    "case"
);
string_id!(
    /// A survey or a review (`Feedback` stream).
    FeedbackId,
    "feedback"
);
string_id!(
    /// A marketing campaign (`Campaign` stream).
    CampaignId,
    "campaign"
);
string_id!(
    /// A person on staff: sales rep, account owner or service agent.
    AgentId,
    "agent"
);
string_id!(
    /// A team of agents or reps.
    TeamId,
    "team"
);
string_id!(
    /// A product or plan family in the catalogue.
    ProductId,
    "product"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_imported_keys() {
        assert_eq!(AccountId::new("1C1I7A6R").unwrap().as_str(), "1C1I7A6R");
        assert!(OpportunityId::new("opp-42_x.y").is_ok());
        assert!(LeadId::new("é-ünïcode").is_ok());
    }

    #[test]
    fn rejects_empty_long_whitespace_and_control() {
        assert!(matches!(
            CaseId::new(""),
            Err(IdError::Empty { kind: "case" })
        ));
        assert!(matches!(
            CaseId::new("x".repeat(ID_LEN_MAX_BYTES + 1)),
            Err(IdError::TooLong { .. })
        ));
        assert!(CaseId::new("x".repeat(ID_LEN_MAX_BYTES)).is_ok());
        assert!(matches!(
            CaseId::new("a b"),
            Err(IdError::InvalidChar { index: 1, .. })
        ));
        assert!(matches!(
            CaseId::new("ab\u{7}"),
            Err(IdError::InvalidChar { index: 2, .. })
        ));
    }

    proptest::proptest! {
        /// The printable-ASCII shortcut accepts exactly what the full rule accepts.
        #[test]
        fn the_ascii_shortcut_agrees_with_the_full_rule(
            value in proptest::prop_oneof![
                "[\\x00-\\x7f]{0,12}",
                proptest::prelude::any::<String>(),
            ]
        ) {
            let full = !value.is_empty()
                && value.len() <= ID_LEN_MAX_BYTES
                && !value.chars().any(|c| c.is_whitespace() || c.is_control());
            proptest::prop_assert_eq!(validate_id("test", &value).is_ok(), full);
        }
    }

    #[test]
    fn deserialization_validates() {
        let ok: AccountId = serde_json::from_str("\"A1\"").unwrap();
        assert_eq!(ok.to_string(), "A1");
        assert!(serde_json::from_str::<AccountId>("\"\"").is_err());
        assert!(serde_json::from_str::<AccountId>("\"a b\"").is_err());
        assert_eq!(serde_json::to_string(&ok).unwrap(), "\"A1\"");
    }

    #[test]
    fn error_message_is_actionable() {
        let msg = ContactId::new("a\tb").unwrap_err().to_string();
        assert!(msg.contains("contact id"), "{msg}");
        assert!(msg.contains("byte 1"), "{msg}");
    }
}
