//! Personal data, kept apart so that it can be erased.
//!
//! **Architecture Invariant:** every fact about a natural person that identifies them (name,
//! email, phone) lives in a [`PersonalData`] value, stored in the event field named
//! [`PERSONAL_DATA_FIELD`] and nowhere else. Non-personal facts (account, role, opted-out
//! channels, lead source…) live in ordinary fields. This lets the event store encrypt the
//! `personal` subtree with a per-person key and erase a person by destroying that key
//! (crypto-shredding) while the log itself stays append-only and the non-personal facts keep
//! feeding the metrics. The erasure is also recorded as a domain fact
//! (`ContactPersonalDataErased`, `LeadPersonalDataErased`), after which the aggregate refuses
//! new personal data for that person.
//!
//! Events hold `personal: Option<PersonalData>`: `Some` when decided. In the log the field
//! holds a [`StoredPersonalData`]: the plain value only in logs written before sealing
//! existed, otherwise a [`SealedPersonalData`] (the value encrypted with its subject's key),
//! or a [`Marker`] where a reader was shown a stand-in. Domain decoding reads every stored
//! form other than the plain one as `None`: no rule and no metric reads personal fields.
//!
//! The data subjects are the streams of [`SUBJECTS`]' categories: each has its own key, and
//! its erasure command records the erasure event after which its key is destroyed.

use serde::{Deserialize, Deserializer, Serialize};

/// Name of the JSON field that holds [`PersonalData`] in event payloads; the only field the
/// event store has to encrypt.
pub const PERSONAL_DATA_FIELD: &str = "personal";

/// Longest full name accepted, in bytes.
pub const NAME_LEN_MAX_BYTES: usize = 200;
/// Longest email address accepted, in bytes (RFC 5321 path limit).
pub const EMAIL_LEN_MAX_BYTES: usize = 254;
/// Longest phone number accepted, in bytes.
pub const PHONE_LEN_MAX_BYTES: usize = 32;

/// Why personal data is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PersonalDataError {
    /// Nothing given at all.
    #[error("personal data is empty; give at least a name, an email or a phone number")]
    Empty,
    /// A field is blank, too long or has control characters.
    #[error("{field} is blank, longer than {max_bytes} bytes or contains control characters; correct it")]
    Malformed {
        /// Which field.
        field: &'static str,
        /// Its length limit.
        max_bytes: usize,
    },
    /// Not shaped like `local@domain`.
    #[error("email is not of the form local@domain without spaces; correct the address")]
    InvalidEmail,
    /// Characters other than digits, spaces, `+ - ( ) .`.
    #[error("phone number may contain only digits, spaces and + - ( ) .; correct it")]
    InvalidPhone,
}

/// Identifying data of one person (contact or lead). See the module docs for why it is separate.
#[derive(
    Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct PersonalData {
    /// Full name as the person gives it.
    pub full_name: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
}

/// Reads a command's `personal` that may be `null` (nothing known) as empty personal data.
///
/// # Errors
/// As deserializing [`PersonalData`].
pub(crate) fn or_none<'de, D: serde::Deserializer<'de>>(d: D) -> Result<PersonalData, D::Error> {
    Ok(Option::<PersonalData>::deserialize(d)?.unwrap_or_default())
}

/// A data subject's category, the command that erases one, and the event it records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubjectKind {
    /// Stream category, e.g. `contact`; the subject is the stream (`contact-c1`).
    pub category: &'static str,
    /// Field of the erase command naming the subject, e.g. `contact_id`.
    pub id_field: &'static str,
    /// The command that erases the subject's personal data.
    pub erase_command: &'static str,
    /// The event that command records.
    pub erased_event: &'static str,
}

/// Every kind of data subject: the categories whose events carry personal data.
pub const SUBJECTS: &[SubjectKind] = &[
    SubjectKind {
        category: "contact",
        id_field: "contact_id",
        erase_command: "EraseContactPersonalData",
        erased_event: "ContactPersonalDataErased",
    },
    SubjectKind {
        category: "lead",
        id_field: "lead_id",
        erase_command: "EraseLeadPersonalData",
        erased_event: "LeadPersonalDataErased",
    },
    SubjectKind {
        category: "agent",
        id_field: "agent_id",
        erase_command: "EraseAgentPersonalData",
        erased_event: "AgentPersonalDataErased",
    },
];

/// The subject kind of stream category `category`, `None` if its streams hold no personal data.
#[must_use]
pub fn subject_kind(category: &str) -> Option<&'static SubjectKind> {
    SUBJECTS.iter().find(|k| k.category == category)
}

/// Whether `event_type` records an erasure (after which the subject's key is destroyed).
#[must_use]
pub fn is_erasure(event_type: &str) -> bool {
    SUBJECTS.iter().any(|k| k.erased_event == event_type)
}

/// A personal value encrypted with its subject's data key, as the log stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SealedPersonalData {
    /// The data subject whose key sealed the value: the event's stream, e.g. `contact-c1`.
    pub sealed_with: String,
    /// Base64 (standard alphabet, padded) of a format version byte, a 24-byte nonce and the
    /// XChaCha20-Poly1305 ciphertext of the value's JSON, with the event id and field as
    /// associated data.
    pub ciphertext: String,
}

/// What a reader is shown in place of personal data it does not get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Marker {
    /// The subject's key was destroyed: the data is gone for good.
    #[serde(rename = "[erased]")]
    Erased,
    /// The reader may not see personal data (lacks the `read_personal_data` permission).
    #[serde(rename = "[masked: needs permission read_personal_data]")]
    Masked,
    /// The value is sealed and the reader was given no key to open it (no master key).
    #[serde(rename = "[sealed]")]
    Sealed,
}

impl Marker {
    /// The marker's text, as it appears in a payload.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Marker::Erased => "[erased]",
            Marker::Masked => "[masked: needs permission read_personal_data]",
            Marker::Sealed => "[sealed]",
        }
    }
}

/// Every form the `personal` field of a stored or shown event may take.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(
    untagged,
    expecting = "personal data as {full_name, email, phone}, a sealed value {sealed_with, ciphertext}, a marker (\"[erased]\", \"[sealed]\", \"[masked: needs permission read_personal_data]\") or null"
)]
pub enum StoredPersonalData {
    /// In the clear (logs written before sealing; what an allowed reader is shown).
    Plain(PersonalData),
    /// Encrypted with the subject's key.
    Sealed(SealedPersonalData),
    /// A stand-in shown to a reader.
    Withheld(Marker),
}

/// Deserializes an event's `personal` field from any [`StoredPersonalData`] form: `Some`
/// only for the plain form.
///
/// # Errors
/// When the value is none of the forms.
pub fn stored<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PersonalData>, D::Error> {
    Ok(match Option::<StoredPersonalData>::deserialize(d)? {
        Some(StoredPersonalData::Plain(p)) => Some(p),
        _ => None,
    })
}

fn check_text(value: &str, field: &'static str, max_bytes: usize) -> Result<(), PersonalDataError> {
    if value.trim().is_empty() || value.len() > max_bytes || value.chars().any(char::is_control) {
        Err(PersonalDataError::Malformed { field, max_bytes })
    } else {
        Ok(())
    }
}

impl PersonalData {
    /// Checks shape and limits. Called by aggregates on every command that carries personal data.
    ///
    /// # Errors
    /// [`PersonalDataError`] describing the first problem found.
    pub fn validate(&self) -> Result<(), PersonalDataError> {
        if self.full_name.is_none() && self.email.is_none() && self.phone.is_none() {
            return Err(PersonalDataError::Empty);
        }
        if let Some(name) = &self.full_name {
            check_text(name, "full name", NAME_LEN_MAX_BYTES)?;
        }
        if let Some(email) = &self.email {
            check_text(email, "email", EMAIL_LEN_MAX_BYTES)?;
            let well_formed = match email.split_once('@') {
                Some((local, domain)) => {
                    !local.is_empty()
                        && !domain.is_empty()
                        && !domain.contains('@')
                        && !email.chars().any(char::is_whitespace)
                }
                None => false,
            };
            if !well_formed {
                return Err(PersonalDataError::InvalidEmail);
            }
        }
        if let Some(phone) = &self.phone {
            check_text(phone, "phone", PHONE_LEN_MAX_BYTES)?;
            if !phone
                .chars()
                .all(|c| c.is_ascii_digit() || " +-().".contains(c))
            {
                return Err(PersonalDataError::InvalidPhone);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pd(name: Option<&str>, email: Option<&str>, phone: Option<&str>) -> PersonalData {
        PersonalData {
            full_name: name.map(str::to_owned),
            email: email.map(str::to_owned),
            phone: phone.map(str::to_owned),
        }
    }

    #[test]
    fn validation() {
        assert!(pd(
            Some("Ada Lovelace"),
            Some("ada@example.org"),
            Some("+44 (20) 123-456")
        )
        .validate()
        .is_ok());
        assert_eq!(
            pd(None, None, None).validate(),
            Err(PersonalDataError::Empty)
        );
        assert_eq!(
            pd(None, Some("ada.example.org"), None).validate(),
            Err(PersonalDataError::InvalidEmail)
        );
        assert_eq!(
            pd(None, Some("a@b@c"), None).validate(),
            Err(PersonalDataError::InvalidEmail)
        );
        assert_eq!(
            pd(None, None, Some("call me")).validate(),
            Err(PersonalDataError::InvalidPhone)
        );
        assert!(matches!(
            pd(Some(" "), None, None).validate(),
            Err(PersonalDataError::Malformed { .. })
        ));
    }
}

#[cfg(test)]
mod stored_tests {
    use super::*;
    use crate::registry::Registry;

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[serde(default, deserialize_with = "stored")]
        personal: Option<PersonalData>,
    }

    fn read(json: &str) -> Result<Option<PersonalData>, serde_json::Error> {
        serde_json::from_str::<Holder>(json).map(|h| h.personal)
    }

    #[test]
    fn every_stored_form_decodes_and_only_the_plain_one_is_some() {
        let plain = read(r#"{"personal":{"full_name":"Ada"}}"#).unwrap();
        assert_eq!(plain.and_then(|p| p.full_name).as_deref(), Some("Ada"));
        let sealed = r#"{"personal":{"sealed_with":"contact-c1","ciphertext":"AQID"}}"#;
        assert_eq!(read(sealed).unwrap(), None);
        for marker in [Marker::Erased, Marker::Masked, Marker::Sealed] {
            let json = format!(r#"{{"personal":"{}"}}"#, marker.as_str());
            assert_eq!(read(&json).unwrap(), None, "{json}");
            assert_eq!(
                serde_json::to_value(marker).unwrap(),
                serde_json::Value::from(marker.as_str())
            );
        }
        assert_eq!(read(r#"{"personal":null}"#).unwrap(), None);
        assert_eq!(read("{}").unwrap(), None);
    }

    #[test]
    fn free_text_or_a_misspelt_field_in_place_of_personal_data_is_refused() {
        // A string that is not a marker would be personal data stored in the clear.
        let err = read(r#"{"personal":"Ada Lovelace"}"#).unwrap_err();
        assert!(err.to_string().contains("a sealed value"), "{err}");
        assert!(read(r#"{"personal":{"full_nam":"Ada"}}"#).is_err());
        assert!(read(r#"{"personal":{"sealed_with":"c","ciphertext":"x","extra":1}}"#).is_err());
    }

    #[test]
    fn every_subject_kind_names_a_command_and_an_event_of_its_aggregate() {
        let registry = Registry::builtin();
        for kind in SUBJECTS {
            let aggregate = registry
                .get(kind.category)
                .unwrap_or_else(|| panic!("no aggregate {}", kind.category));
            assert!(
                aggregate.command_types().contains(&kind.erase_command),
                "{}",
                kind.erase_command
            );
            assert_eq!(
                crate::DomainEvent::category_of(kind.erased_event),
                Some(kind.category)
            );
            assert_eq!(kind.id_field, format!("{}_id", kind.category));
        }
    }
}
