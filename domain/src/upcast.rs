//! Upcasting: bringing stored payloads of older schema versions up to the current one.
//!
//! Stored events are never rewritten. When an event's payload shape changes, its schema
//! version goes up by one and a step `fn(Value) -> Result<Value, UpcastError>` from the old
//! version to the next is registered here. Decoding runs the chain `v → v+1 → … → current`
//! before deserializing. An unknown type, version 0, a version newer than this build knows, or
//! a gap in the chain is an error, never a guess.
//!
//! ## The upcast in force
//!
//! `OpportunityWon` v1 → v2. Version 1 stored the won amount as a decimal number of **major**
//! units next to a currency code, and had no list price or discount:
//!
//! ```json
//! {"opportunity_id":"42","amount":1234.5,"currency":"EUR","competitor":null,"occurred_at":"2024-03-01T10:00:00Z"}
//! ```
//!
//! Version 2 stores [`crate::values::Money`] in integer minor units and adds the optional
//! `list_price` and `discount` (unknown for v1 events, so `null`):
//!
//! ```json
//! {"opportunity_id":"42","amount":{"minor_units":123450,"currency":"EUR"},"list_price":null,"discount":null,"competitor":null,"occurred_at":"2024-03-01T10:00:00Z"}
//! ```
//!
//! The conversion is exact: the decimal is read from its shortest text form and scaled by the
//! currency's minor-unit exponent (2 for EUR, 0 for JPY, 3 for KWD); an amount with more
//! decimals than the currency has is refused rather than rounded.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde_json::{Map, Value};

use crate::event::DomainEvent;
use crate::values::Currency;

/// One upcasting step: payload at version `n` in, payload at version `n + 1` out.
pub type UpcastFn = fn(Value) -> Result<Value, UpcastError>;

/// Why a payload could not be brought to the current schema version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UpcastError {
    /// The event type is not part of this domain.
    #[error("unknown event type `{event_type}`; it was never defined here (or was misspelt in the envelope)")]
    UnknownEventType {
        /// The type name from the envelope.
        event_type: String,
    },
    /// Schema versions start at 1.
    #[error(
        "event `{event_type}` has schema version 0; versions start at 1, the envelope is corrupt"
    )]
    VersionZero {
        /// The type name.
        event_type: String,
    },
    /// Written by a newer build.
    #[error("event `{event_type}` has schema version {schema_version} but this build knows up to {current}; upgrade crm-domain before reading this log")]
    FromTheFuture {
        /// The type name.
        event_type: String,
        /// Version in the envelope.
        schema_version: u16,
        /// Newest version this build knows.
        current: u16,
    },
    /// A step of the chain is missing.
    #[error("no upcaster registered for `{event_type}` v{from_version} → v{to_version}; register one in upcast.rs")]
    MissingStep {
        /// The type name.
        event_type: String,
        /// Version the step starts from.
        from_version: u16,
        /// Version it would produce.
        to_version: u16,
    },
    /// A step was registered twice.
    #[error("an upcaster for `{event_type}` v{from_version} is already registered; keep one step per version")]
    DuplicateStep {
        /// The type name.
        event_type: String,
        /// Version the step starts from.
        from_version: u16,
    },
    /// A step would start at or beyond the current version, or at 0.
    #[error("cannot register an upcaster for `{event_type}` from v{from_version}: the current version is {current}, steps start at 1..{current}")]
    StepOutOfRange {
        /// The type name.
        event_type: String,
        /// Version the step would start from.
        from_version: u16,
        /// Current version.
        current: u16,
    },
    /// The payload is not a JSON object.
    #[error("payload is not a JSON object; event payloads are objects")]
    NotAnObject,
    /// A required field is absent.
    #[error("payload lacks the field `{field}`")]
    MissingField {
        /// The field name.
        field: &'static str,
    },
    /// A field has an unusable value.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The field name.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A step failed.
    #[error("upcasting `{event_type}` from v{from_version} failed: {source}")]
    StepFailed {
        /// The type name.
        event_type: String,
        /// Version the failing step starts from.
        from_version: u16,
        /// What the step reported.
        source: Box<UpcastError>,
    },
}

/// Map `(event type, from version) → step to from version + 1`.
#[derive(Debug, Clone, Default)]
pub struct UpcasterRegistry {
    steps: BTreeMap<(String, u16), UpcastFn>,
}

static STANDARD: LazyLock<UpcasterRegistry> = LazyLock::new(UpcasterRegistry::with_standard_steps);

impl UpcasterRegistry {
    /// A registry without steps (only current versions decode).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The registry with every step this crate defines, built once.
    #[must_use]
    pub fn standard() -> &'static UpcasterRegistry {
        &STANDARD
    }

    /// A fresh copy of the standard registry (to extend in tests or tools).
    #[must_use]
    pub fn with_standard_steps() -> Self {
        let mut registry = Self::new();
        // Steps are listed here, one line each, oldest first.
        registry.insert("OpportunityWon", 1, opportunity_won_v1_to_v2);
        registry
    }

    fn insert(&mut self, event_type: &str, from_version: u16, step: UpcastFn) {
        self.steps
            .insert((event_type.to_owned(), from_version), step);
    }

    /// Adds a step `from_version → from_version + 1` for a known event type.
    ///
    /// # Errors
    /// Unknown type, a step outside `1..current`, or a duplicate.
    pub fn register(
        &mut self,
        event_type: &str,
        from_version: u16,
        step: UpcastFn,
    ) -> Result<&mut Self, UpcastError> {
        let current = current_version(event_type)?;
        if from_version == 0 || from_version >= current {
            return Err(UpcastError::StepOutOfRange {
                event_type: event_type.to_owned(),
                from_version,
                current,
            });
        }
        if self
            .steps
            .contains_key(&(event_type.to_owned(), from_version))
        {
            return Err(UpcastError::DuplicateStep {
                event_type: event_type.to_owned(),
                from_version,
            });
        }
        self.insert(event_type, from_version, step);
        Ok(self)
    }

    /// Brings `payload` of `event_type` at `schema_version` to the current version.
    ///
    /// # Errors
    /// See [`UpcastError`].
    pub fn upcast(
        &self,
        event_type: &str,
        schema_version: u16,
        payload: Value,
    ) -> Result<Value, UpcastError> {
        let current = current_version(event_type)?;
        if schema_version == 0 {
            return Err(UpcastError::VersionZero {
                event_type: event_type.to_owned(),
            });
        }
        if schema_version > current {
            return Err(UpcastError::FromTheFuture {
                event_type: event_type.to_owned(),
                schema_version,
                current,
            });
        }
        let mut payload = payload;
        for from_version in schema_version..current {
            let step = self
                .steps
                .get(&(event_type.to_owned(), from_version))
                .ok_or_else(|| UpcastError::MissingStep {
                    event_type: event_type.to_owned(),
                    from_version,
                    to_version: from_version.saturating_add(1),
                })?;
            payload = step(payload).map_err(|source| UpcastError::StepFailed {
                event_type: event_type.to_owned(),
                from_version,
                source: Box::new(source),
            })?;
        }
        Ok(payload)
    }

    /// Checks that every event type can be upcast from version 1 to its current version.
    ///
    /// # Errors
    /// The first [`UpcastError::MissingStep`] found.
    pub fn check_complete(&self) -> Result<(), UpcastError> {
        for (_, event_type, current) in DomainEvent::catalog() {
            for from_version in 1..current {
                if !self
                    .steps
                    .contains_key(&(event_type.to_owned(), from_version))
                {
                    return Err(UpcastError::MissingStep {
                        event_type: event_type.to_owned(),
                        from_version,
                        to_version: from_version.saturating_add(1),
                    });
                }
            }
        }
        Ok(())
    }
}

fn current_version(event_type: &str) -> Result<u16, UpcastError> {
    DomainEvent::current_schema_version(event_type).ok_or_else(|| UpcastError::UnknownEventType {
        event_type: event_type.to_owned(),
    })
}

fn take_object(payload: Value) -> Result<Map<String, Value>, UpcastError> {
    match payload {
        Value::Object(map) => Ok(map),
        _ => Err(UpcastError::NotAnObject),
    }
}

/// `OpportunityWon` v1 → v2: decimal major-unit `amount` + `currency` become
/// `amount: Money`; `list_price` and `discount` are added as `null` (unknown in v1).
///
/// # Errors
/// Missing or malformed `amount`/`currency`, or an amount not exactly representable in the
/// currency's minor units.
pub fn opportunity_won_v1_to_v2(payload: Value) -> Result<Value, UpcastError> {
    let mut map = take_object(payload)?;
    let currency = match map.remove("currency") {
        Some(Value::String(code)) => {
            Currency::new(&code).map_err(|e| UpcastError::InvalidField {
                field: "currency",
                reason: e.to_string(),
            })?
        }
        Some(_) => {
            return Err(UpcastError::InvalidField {
                field: "currency",
                reason: "expected a string such as \"EUR\"".to_owned(),
            })
        }
        None => return Err(UpcastError::MissingField { field: "currency" }),
    };
    let amount = map
        .remove("amount")
        .ok_or(UpcastError::MissingField { field: "amount" })?;
    let minor_units = major_to_minor(&amount, currency.minor_unit_exponent())?;
    map.insert(
        "amount".to_owned(),
        serde_json::json!({ "minor_units": minor_units, "currency": currency.as_str() }),
    );
    map.insert("list_price".to_owned(), Value::Null);
    map.insert("discount".to_owned(), Value::Null);
    Ok(Value::Object(map))
}

/// Exact conversion of a decimal amount in major units (JSON number or numeric string) to
/// integer minor units.
fn major_to_minor(amount: &Value, exponent: u32) -> Result<i64, UpcastError> {
    let invalid = |reason: String| UpcastError::InvalidField {
        field: "amount",
        reason,
    };
    let text = match amount {
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            // Display of f64 is the shortest text that round-trips, without exponent.
            (None, Some(f)) if f.is_finite() => format!("{f}"),
            _ => return Err(invalid(format!("{n} is not a usable amount"))),
        },
        Value::String(s) => s.clone(),
        other => return Err(invalid(format!("expected a number, got {other}"))),
    };
    parse_decimal(&text, exponent).ok_or_else(|| {
        invalid(format!(
            "{text} is not a decimal with at most {exponent} decimals that fits in 64-bit minor units"
        ))
    })
}

fn parse_decimal(text: &str, exponent: u32) -> Option<i64> {
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int_part.is_empty() || !all_digits(int_part) || !all_digits(frac_part) {
        return None;
    }
    let exponent_len = usize::try_from(exponent).ok()?;
    let significant = frac_part.trim_end_matches('0');
    if significant.len() > exponent_len {
        return None;
    }
    let mut value: i64 = int_part.parse().ok()?;
    value = value.checked_mul(10_i64.checked_pow(exponent)?)?;
    if !significant.is_empty() {
        let padded = format!("{significant:0<exponent_len$}");
        value = value.checked_add(padded.parse::<i64>().ok()?)?;
    }
    Some(if negative {
        value.checked_neg()?
    } else {
        value
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decimal_parsing_is_exact() {
        assert_eq!(parse_decimal("1234.5", 2), Some(123_450));
        assert_eq!(parse_decimal("1234.50", 2), Some(123_450));
        assert_eq!(parse_decimal("0.07", 2), Some(7));
        assert_eq!(parse_decimal("-3.1", 2), Some(-310));
        assert_eq!(parse_decimal("1200", 0), Some(1200));
        assert_eq!(parse_decimal("1.234", 3), Some(1234));
        assert_eq!(parse_decimal("1.005", 2), None, "would need rounding");
        assert_eq!(parse_decimal("1e5", 2), None);
        assert_eq!(parse_decimal(".5", 2), None);
        assert_eq!(parse_decimal("99999999999999999999", 2), None, "overflow");
    }

    #[test]
    fn amounts_from_json_numbers() {
        assert_eq!(major_to_minor(&json!(1234.56), 2), Ok(123_456));
        assert_eq!(major_to_minor(&json!(0.1), 2), Ok(10));
        assert_eq!(major_to_minor(&json!(19.99), 2), Ok(1999));
        assert_eq!(major_to_minor(&json!(42), 2), Ok(4200));
        assert_eq!(major_to_minor(&json!("12.30"), 2), Ok(1230));
        assert!(major_to_minor(&json!(true), 2).is_err());
    }

    #[test]
    fn standard_registry_is_complete() {
        UpcasterRegistry::standard().check_complete().unwrap();
    }

    #[test]
    fn empty_registry_reports_the_gap() {
        let err = UpcasterRegistry::new()
            .upcast("OpportunityWon", 1, json!({}))
            .unwrap_err();
        assert!(matches!(
            err,
            UpcastError::MissingStep {
                from_version: 1,
                to_version: 2,
                ..
            }
        ));
        assert!(UpcasterRegistry::new().check_complete().is_err());
    }

    #[test]
    fn register_validates() {
        let mut r = UpcasterRegistry::new();
        r.register("OpportunityWon", 1, opportunity_won_v1_to_v2)
            .unwrap();
        assert!(matches!(
            r.register("OpportunityWon", 1, opportunity_won_v1_to_v2),
            Err(UpcastError::DuplicateStep { .. })
        ));
        assert!(matches!(
            r.register("OpportunityWon", 2, opportunity_won_v1_to_v2),
            Err(UpcastError::StepOutOfRange { .. })
        ));
        assert!(matches!(
            r.register("NoSuchEvent", 1, opportunity_won_v1_to_v2),
            Err(UpcastError::UnknownEventType { .. })
        ));
    }

    #[test]
    fn version_checks() {
        let r = UpcasterRegistry::standard();
        assert!(matches!(
            r.upcast("OpportunityWon", 0, json!({})),
            Err(UpcastError::VersionZero { .. })
        ));
        assert!(matches!(
            r.upcast("OpportunityWon", 3, json!({})),
            Err(UpcastError::FromTheFuture {
                schema_version: 3,
                current: 2,
                ..
            })
        ));
        assert!(matches!(
            r.upcast("Nope", 1, json!({})),
            Err(UpcastError::UnknownEventType { .. })
        ));
        // Current version passes through untouched.
        assert_eq!(
            r.upcast("CaseOpened", 1, json!({"x": 1})),
            Ok(json!({"x": 1}))
        );
    }

    #[test]
    fn step_errors_are_wrapped_with_context() {
        let err = UpcasterRegistry::standard()
            .upcast(
                "OpportunityWon",
                1,
                json!({"amount": 1.005, "currency": "EUR"}),
            )
            .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("OpportunityWon") && msg.contains("amount"),
            "{msg}"
        );
        assert!(matches!(
            opportunity_won_v1_to_v2(json!({"amount": 1})),
            Err(UpcastError::MissingField { field: "currency" })
        ));
        assert!(matches!(
            opportunity_won_v1_to_v2(json!([1])),
            Err(UpcastError::NotAnObject)
        ));
    }
}
