//! Money: integer minor units with an ISO 4217 currency. Never floats.
//!
//! A [`Money`] may be negative as a value (a delta, a balance), but every amount that is a
//! price, a cost, a payment or a refund is checked with [`Money::non_negative`] or
//! [`Money::ensure_non_negative`] at the command boundary. Arithmetic is checked: mixing
//! currencies or overflowing `i64` is an error, never a silent conversion or wrap.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why an amount or a currency is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MoneyError {
    /// Not a 3-letter uppercase code.
    #[error(
        "currency code {code:?} is not a 3-letter uppercase ISO 4217 code; use for example \"EUR\" or \"USD\""
    )]
    InvalidCurrency {
        /// The rejected code.
        code: String,
    },
    /// Two amounts in different currencies were combined.
    #[error(
        "{what}: expected an amount in {expected} but got {found}; amounts are never converted \
         implicitly, send the amount in {expected}"
    )]
    CurrencyMismatch {
        /// What was being computed or checked.
        what: &'static str,
        /// The currency in force.
        expected: Currency,
        /// The currency received.
        found: Currency,
    },
    /// The result does not fit in `i64` minor units.
    #[error(
        "{what} overflows the amount range (±9.2e18 minor units); check the amounts for a typo"
    )]
    Overflow {
        /// What was being computed.
        what: &'static str,
    },
    /// A negative amount where only zero or more makes sense.
    #[error("{what} is {amount}, which is negative; send zero or a positive amount")]
    Negative {
        /// What the amount is (`"order line amount"`, `"refund"` …).
        what: &'static str,
        /// The rejected amount.
        amount: Money,
    },
}

/// An ISO 4217 currency code: three ASCII uppercase letters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Euro.
    pub const EUR: Currency = Currency(*b"EUR");
    /// US dollar.
    pub const USD: Currency = Currency(*b"USD");
    /// Pound sterling.
    pub const GBP: Currency = Currency(*b"GBP");
    /// Japanese yen (no minor unit).
    pub const JPY: Currency = Currency(*b"JPY");

    /// Validates a currency code.
    ///
    /// # Errors
    /// [`MoneyError::InvalidCurrency`] unless `code` is exactly three ASCII uppercase letters.
    pub fn new(code: &str) -> Result<Self, MoneyError> {
        match code.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_uppercase()) => Ok(Self([*a, *b, *c])),
            _ => Err(MoneyError::InvalidCurrency {
                code: code.to_owned(),
            }),
        }
    }

    /// The code as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Always valid: constructed only from three ASCII uppercase letters.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// Number of decimal digits of the minor unit (ISO 4217): 0 for JPY, 3 for KWD, 2 for most.
    #[must_use]
    pub fn minor_unit_exponent(self) -> u32 {
        match &self.0 {
            b"BIF" | b"CLP" | b"DJF" | b"GNF" | b"ISK" | b"JPY" | b"KMF" | b"KRW" | b"PYG"
            | b"RWF" | b"UGX" | b"UYI" | b"VND" | b"VUV" | b"XAF" | b"XOF" | b"XPF" => 0,
            b"BHD" | b"IQD" | b"JOD" | b"KWD" | b"LYD" | b"OMR" | b"TND" => 3,
            _ => 2,
        }
    }
}

impl schemars::JsonSchema for Currency {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Currency".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "ISO 4217 currency code: three upper-case ASCII letters, e.g. `EUR`.",
            "type": "string",
            "pattern": "^[A-Z]{3}$",
        })
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(code: String) -> Result<Self, MoneyError> {
        Self::new(&code)
    }
}

impl TryFrom<&str> for Currency {
    type Error = MoneyError;
    fn try_from(code: &str) -> Result<Self, MoneyError> {
        Self::new(code)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        super::text::deserialize_text(deserializer)
    }
}

impl From<Currency> for String {
    fn from(c: Currency) -> String {
        c.as_str().to_owned()
    }
}

impl std::str::FromStr for Currency {
    type Err = MoneyError;
    fn from_str(code: &str) -> Result<Self, MoneyError> {
        Self::new(code)
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Currency({})", self.as_str())
    }
}

/// An amount of money: integer minor units (cents) and a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Money {
    /// Amount in the currency's minor unit (cents for EUR, yen for JPY).
    pub minor_units: i64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// Any amount, negative included (deltas, balances).
    #[must_use]
    pub const fn new(minor_units: i64, currency: Currency) -> Self {
        Self {
            minor_units,
            currency,
        }
    }

    /// Zero in `currency`.
    #[must_use]
    pub const fn zero(currency: Currency) -> Self {
        Self::new(0, currency)
    }

    /// An amount that must not be negative (prices, costs, payments, refunds).
    ///
    /// # Errors
    /// [`MoneyError::Negative`] when `minor_units < 0`.
    pub fn non_negative(minor_units: i64, currency: Currency) -> Result<Self, MoneyError> {
        Self::new(minor_units, currency).ensure_non_negative("amount")
    }

    /// Returns `self` if it is zero or more.
    ///
    /// # Errors
    /// [`MoneyError::Negative`] naming `what`.
    pub fn ensure_non_negative(self, what: &'static str) -> Result<Self, MoneyError> {
        if self.minor_units < 0 {
            Err(MoneyError::Negative { what, amount: self })
        } else {
            Ok(self)
        }
    }

    /// Returns `self` if it is in `expected`.
    ///
    /// # Errors
    /// [`MoneyError::CurrencyMismatch`] naming `what`.
    pub fn ensure_currency(
        self,
        expected: Currency,
        what: &'static str,
    ) -> Result<Self, MoneyError> {
        if self.currency == expected {
            Ok(self)
        } else {
            Err(MoneyError::CurrencyMismatch {
                what,
                expected,
                found: self.currency,
            })
        }
    }

    /// `self + other`.
    ///
    /// # Errors
    /// Currency mismatch or overflow.
    pub fn checked_add(self, other: Money) -> Result<Money, MoneyError> {
        let other = other.ensure_currency(self.currency, "adding amounts")?;
        self.minor_units
            .checked_add(other.minor_units)
            .map(|m| Money::new(m, self.currency))
            .ok_or(MoneyError::Overflow {
                what: "adding amounts",
            })
    }

    /// `self - other`.
    ///
    /// # Errors
    /// Currency mismatch or overflow.
    pub fn checked_sub(self, other: Money) -> Result<Money, MoneyError> {
        let other = other.ensure_currency(self.currency, "subtracting amounts")?;
        self.minor_units
            .checked_sub(other.minor_units)
            .map(|m| Money::new(m, self.currency))
            .ok_or(MoneyError::Overflow {
                what: "subtracting amounts",
            })
    }

    /// True when the amount is below zero.
    #[must_use]
    pub const fn is_negative(self) -> bool {
        self.minor_units < 0
    }

    /// True when the amount is zero.
    #[must_use]
    pub const fn is_zero(self) -> bool {
        self.minor_units == 0
    }
}

impl Money {
    /// The amount in currency units, without the code: `1234.50`, `1200` (JPY), `-0.05`.
    #[must_use]
    pub fn decimal(&self) -> String {
        let exponent = self.currency.minor_unit_exponent();
        let sign = if self.minor_units < 0 { "-" } else { "" };
        let abs = self.minor_units.unsigned_abs();
        let scale = 10_u64.pow(exponent);
        match usize::try_from(exponent) {
            Ok(width) if width > 0 => format!("{sign}{}.{:0width$}", abs / scale, abs % scale),
            _ => format!("{sign}{abs}"),
        }
    }
}

impl fmt::Display for Money {
    /// `EUR 1234.50`, `JPY 1200`, `EUR -0.05`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.currency, self.decimal())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn currency_validation() {
        assert_eq!(Currency::new("EUR").unwrap(), Currency::EUR);
        for bad in ["eur", "EU", "EURO", "E1R", "", "ÉUR"] {
            assert!(Currency::new(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Currency>("\"usd\"").is_err());
    }

    #[test]
    fn non_negative_rejects_negative() {
        assert!(Money::non_negative(0, Currency::EUR).is_ok());
        assert!(matches!(
            Money::non_negative(-1, Currency::EUR),
            Err(MoneyError::Negative { .. })
        ));
    }

    #[test]
    fn checked_arithmetic() {
        let a = Money::new(150, Currency::EUR);
        let b = Money::new(50, Currency::EUR);
        assert_eq!(a.checked_add(b).unwrap(), Money::new(200, Currency::EUR));
        assert_eq!(b.checked_sub(a).unwrap(), Money::new(-100, Currency::EUR));
        assert!(matches!(
            a.checked_add(Money::new(1, Currency::USD)),
            Err(MoneyError::CurrencyMismatch { .. })
        ));
        assert!(matches!(
            Money::new(i64::MAX, Currency::EUR).checked_add(Money::new(1, Currency::EUR)),
            Err(MoneyError::Overflow { .. })
        ));
        assert!(matches!(
            Money::new(i64::MIN, Currency::EUR).checked_sub(Money::new(1, Currency::EUR)),
            Err(MoneyError::Overflow { .. })
        ));
    }

    #[test]
    fn display_uses_minor_unit_exponent() {
        assert_eq!(
            Money::new(123_450, Currency::EUR).to_string(),
            "EUR 1234.50"
        );
        assert_eq!(Money::new(-5, Currency::EUR).to_string(), "EUR -0.05");
        assert_eq!(Money::new(1200, Currency::JPY).to_string(), "JPY 1200");
        let kwd = Currency::new("KWD").unwrap();
        assert_eq!(Money::new(1_234, kwd).to_string(), "KWD 1.234");
        assert_eq!(
            Money::new(i64::MIN, Currency::EUR).to_string(),
            "EUR -92233720368547758.08"
        );
    }

    #[test]
    fn json_shape() {
        let m = Money::new(1999, Currency::USD);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#"{"minor_units":1999,"currency":"USD"}"#);
        assert_eq!(serde_json::from_str::<Money>(&json).unwrap(), m);
    }
}
