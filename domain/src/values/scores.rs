//! Bounded scores: survey answers (NPS, CSAT, CES), review ratings, lead scores and win
//! probabilities. Each type can only hold an in-range value; deserialization validates too.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Largest review scale accepted (`Rating::scale_max`).
pub const RATING_SCALE_MAX: u8 = 10;

/// Why a score is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScoreError {
    /// The value lies outside the scale of its kind.
    #[error("{what} {value} is out of range {min}..={max}; send a value inside the scale")]
    OutOfRange {
        /// Kind of score (`"NPS score"` …).
        what: &'static str,
        /// The rejected value.
        value: u8,
        /// Smallest valid value.
        min: u8,
        /// Largest valid value.
        max: u8,
    },
    /// A review scale that is empty or larger than [`RATING_SCALE_MAX`].
    #[error(
        "review scale 1..={scale_max} is not supported; scale_max must be 1..={RATING_SCALE_MAX} \
         (for example 5 for stars)"
    )]
    InvalidScale {
        /// The rejected scale maximum.
        scale_max: u8,
    },
}

macro_rules! bounded_score {
    ($(#[$doc:meta])* $name:ident, $what:literal, $min:literal, $max:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "u8", into = "u8")]
        pub struct $name(u8);

        impl $name {
            /// Smallest valid value.
            pub const MIN: u8 = $min;
            /// Largest valid value.
            pub const MAX: u8 = $max;

            /// Validates a score.
            ///
            /// # Errors
            /// [`ScoreError::OutOfRange`] outside `MIN..=MAX`.
            pub fn new(value: u8) -> Result<Self, ScoreError> {
                if (Self::MIN..=Self::MAX).contains(&value) {
                    Ok(Self(value))
                } else {
                    Err(ScoreError::OutOfRange {
                        what: $what,
                        value,
                        min: Self::MIN,
                        max: Self::MAX,
                    })
                }
            }

            /// The raw value.
            #[must_use]
            pub const fn value(self) -> u8 {
                self.0
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "description": concat!("A ", $what, ", ", stringify!($min), "..=", stringify!($max), "."),
                    "type": "integer",
                    "minimum": $min,
                    "maximum": $max,
                })
            }
        }

        impl TryFrom<u8> for $name {
            type Error = ScoreError;
            fn try_from(value: u8) -> Result<Self, ScoreError> {
                Self::new(value)
            }
        }

        impl From<$name> for u8 {
            fn from(score: $name) -> u8 {
                score.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

bounded_score!(
    /// Net Promoter Score answer, 0..=10 (promoter 9–10, detractor 0–6).
    NpsScore,
    "NPS score",
    0,
    10
);
bounded_score!(
    /// Customer satisfaction answer, 1..=5.
    CsatScore,
    "CSAT score",
    1,
    5
);
bounded_score!(
    /// Customer effort score answer, 1..=7.
    CesScore,
    "CES score",
    1,
    7
);
bounded_score!(
    /// Lead score from a scoring model, 0..=100.
    LeadScore,
    "lead score",
    0,
    100
);
bounded_score!(
    /// Win probability of an opportunity stage, in percent 0..=100.
    Probability,
    "probability (percent)",
    0,
    100
);

/// Which survey instrument.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SurveyKind {
    /// Net Promoter Score, 0..=10.
    Nps,
    /// Customer satisfaction, 1..=5.
    Csat,
    /// Customer effort, 1..=7.
    Ces,
}

impl SurveyKind {
    /// Upper end of the instrument's scale.
    #[must_use]
    pub const fn scale_max(self) -> u8 {
        match self {
            Self::Nps => NpsScore::MAX,
            Self::Csat => CsatScore::MAX,
            Self::Ces => CesScore::MAX,
        }
    }
}

impl fmt::Display for SurveyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Nps => "NPS",
            Self::Csat => "CSAT",
            Self::Ces => "CES",
        })
    }
}

/// A validated survey answer; JSON `{"kind": "nps", "score": 9}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", content = "score", rename_all = "snake_case")]
pub enum SurveyScore {
    /// An NPS answer.
    Nps(NpsScore),
    /// A CSAT answer.
    Csat(CsatScore),
    /// A CES answer.
    Ces(CesScore),
}

impl SurveyScore {
    /// Validates a raw answer for `kind`.
    ///
    /// # Errors
    /// [`ScoreError::OutOfRange`] when `value` is outside the instrument's scale.
    pub fn new(kind: SurveyKind, value: u8) -> Result<Self, ScoreError> {
        Ok(match kind {
            SurveyKind::Nps => Self::Nps(NpsScore::new(value)?),
            SurveyKind::Csat => Self::Csat(CsatScore::new(value)?),
            SurveyKind::Ces => Self::Ces(CesScore::new(value)?),
        })
    }

    /// The instrument.
    #[must_use]
    pub const fn kind(self) -> SurveyKind {
        match self {
            Self::Nps(_) => SurveyKind::Nps,
            Self::Csat(_) => SurveyKind::Csat,
            Self::Ces(_) => SurveyKind::Ces,
        }
    }

    /// The raw answer.
    #[must_use]
    pub const fn value(self) -> u8 {
        match self {
            Self::Nps(s) => s.value(),
            Self::Csat(s) => s.value(),
            Self::Ces(s) => s.value(),
        }
    }

    /// Upper end of the scale the answer was given on.
    #[must_use]
    pub const fn scale_max(self) -> u8 {
        self.kind().scale_max()
    }
}

/// A review rating: `value` stars out of `scale_max`, `1 <= value <= scale_max <= 10`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "RatingRepr", into = "RatingRepr")]
pub struct Rating {
    value: u8,
    scale_max: u8,
}

#[derive(Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
/// A review rating: `value` stars out of `scale_max`, `1 <= value <= scale_max <= 10`.
struct RatingRepr {
    /// Stars given, `1..=scale_max`.
    #[schemars(range(min = 1, max = 10))]
    value: u8,
    /// Top of the scale, `1..=10`.
    #[schemars(range(min = 1, max = 10))]
    scale_max: u8,
}

impl Rating {
    /// Validates a rating.
    ///
    /// # Errors
    /// [`ScoreError::InvalidScale`] when `scale_max` is not in `1..=10`;
    /// [`ScoreError::OutOfRange`] when `value` is not in `1..=scale_max`.
    pub fn new(value: u8, scale_max: u8) -> Result<Self, ScoreError> {
        if !(1..=RATING_SCALE_MAX).contains(&scale_max) {
            return Err(ScoreError::InvalidScale { scale_max });
        }
        if !(1..=scale_max).contains(&value) {
            return Err(ScoreError::OutOfRange {
                what: "review rating",
                value,
                min: 1,
                max: scale_max,
            });
        }
        Ok(Self { value, scale_max })
    }

    /// Stars given.
    #[must_use]
    pub const fn value(self) -> u8 {
        self.value
    }

    /// Top of the scale.
    #[must_use]
    pub const fn scale_max(self) -> u8 {
        self.scale_max
    }
}

impl TryFrom<RatingRepr> for Rating {
    type Error = ScoreError;
    fn try_from(r: RatingRepr) -> Result<Self, ScoreError> {
        Self::new(r.value, r.scale_max)
    }
}

impl From<Rating> for RatingRepr {
    fn from(r: Rating) -> Self {
        Self {
            value: r.value,
            scale_max: r.scale_max,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn survey_ranges() {
        assert!(NpsScore::new(0).is_ok() && NpsScore::new(10).is_ok());
        assert!(NpsScore::new(11).is_err());
        assert!(CsatScore::new(0).is_err() && CsatScore::new(6).is_err());
        assert!(CsatScore::new(1).is_ok() && CsatScore::new(5).is_ok());
        assert!(CesScore::new(0).is_err() && CesScore::new(8).is_err());
        assert!(CesScore::new(7).is_ok());
        assert!(SurveyScore::new(SurveyKind::Csat, 6).is_err());
        assert_eq!(SurveyScore::new(SurveyKind::Ces, 7).unwrap().scale_max(), 7);
    }

    #[test]
    fn rating_within_scale() {
        assert!(Rating::new(5, 5).is_ok());
        assert!(matches!(
            Rating::new(6, 5),
            Err(ScoreError::OutOfRange { max: 5, .. })
        ));
        assert!(matches!(
            Rating::new(0, 5),
            Err(ScoreError::OutOfRange { .. })
        ));
        assert!(matches!(
            Rating::new(1, 0),
            Err(ScoreError::InvalidScale { .. })
        ));
        assert!(matches!(
            Rating::new(1, 11),
            Err(ScoreError::InvalidScale { .. })
        ));
    }

    #[test]
    fn serde_validates() {
        assert!(serde_json::from_str::<NpsScore>("11").is_err());
        assert!(serde_json::from_str::<Rating>(r#"{"value":6,"scale_max":5}"#).is_err());
        let s = SurveyScore::new(SurveyKind::Nps, 9).unwrap();
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(json, r#"{"kind":"nps","score":9}"#);
        assert!(serde_json::from_str::<SurveyScore>(r#"{"kind":"csat","score":9}"#).is_err());
    }
}
