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
//! Events hold `personal: Option<PersonalData>`: `Some` when written; a reader may see `None`
//! once the key has been shredded.

use serde::{Deserialize, Serialize};

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
