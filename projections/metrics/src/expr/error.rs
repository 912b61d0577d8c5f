//! [`ExprError`]: why an expression does not parse, with the character offset where the
//! parser found the fault.

use super::FUNCTIONS;

/// Why an expression of a definition does not parse. The message names the character offset
/// (from 0, in bytes) and what was found or expected; [`ExprError::position`] gives the
/// offset. A definition wraps it in [`crate::DefinitionError::Expression`] with the key and
/// the text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExprError {
    /// The text is longer than the limit.
    #[error("expression is {size_bytes} bytes, the limit is {limit}")]
    TooLong {
        /// Size of the text.
        size_bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// Nothing but blanks.
    #[error("expression is empty")]
    Empty,
    /// Parentheses, calls or operators nest deeper than the limit.
    #[error("expression nests deeper than {limit} levels")]
    TooDeep {
        /// Where the limit was passed.
        at: usize,
        /// The limit.
        limit: usize,
    },
    /// The text stops where an operand was expected.
    #[error("expression ends too early")]
    EndsEarly {
        /// The end of the text.
        at: usize,
    },
    /// A number runs into letters (`10dx`).
    #[error("bad number at character {at}")]
    BadNumber {
        /// Start of the number.
        at: usize,
    },
    /// A number that does not read as one (`1.2.3`).
    #[error("bad number `{text}` at character {at}")]
    Unreadable {
        /// The number as written.
        text: String,
        /// Start of the number.
        at: usize,
    },
    /// An integer beyond 64 bits.
    #[error("number `{text}` at character {at} is too large")]
    NumberTooLarge {
        /// The number as written.
        text: String,
        /// Start of the number.
        at: usize,
    },
    /// A duration whose number is not a whole number.
    #[error(
        "duration `{text}` at character {at} must be a whole number with a unit s, m, h, d or w"
    )]
    DurationNotWhole {
        /// The duration as written.
        text: String,
        /// Start of the duration.
        at: usize,
    },
    /// A duration whose seconds overflow 64 bits.
    #[error("duration too large")]
    DurationTooLarge {
        /// Start of the duration.
        at: usize,
    },
    /// A quoted text without its closing quote.
    #[error("text opened at character {at} is not closed")]
    UnclosedText {
        /// The opening quote.
        at: usize,
    },
    /// A character that starts no token.
    #[error("unexpected character {found:?} at character {at}")]
    UnexpectedCharacter {
        /// The character.
        found: char,
        /// Its offset.
        at: usize,
    },
    /// A token where another was needed.
    #[error("unexpected {found} at character {at}")]
    Unexpected {
        /// The token, as shown to the writer (`` `)` ``, `text 'x'`, `number`).
        found: String,
        /// Its offset.
        at: usize,
    },
    /// A required symbol is missing.
    #[error("expected `{expected}` at character {at}")]
    Expected {
        /// The symbol, e.g. `)`.
        expected: &'static str,
        /// Where it was expected.
        at: usize,
    },
    /// A `.` not followed by a field name.
    #[error("expected a field name at character {at}")]
    FieldNameExpected {
        /// Where the name was expected.
        at: usize,
    },
    /// `event.` followed by something other than one of its fields.
    #[error("`event.` at character {at} takes one of {}", .fields.join(", "))]
    EventField {
        /// Offset of `event`.
        at: usize,
        /// The fields it takes.
        fields: &'static [&'static str],
    },
    /// `attr` without exactly one lower_snake_case attribute name.
    #[error(
        "`attr` at character {at} takes one attribute name, e.g. `attr.job` (lower_snake_case)"
    )]
    AttributeName {
        /// Its offset.
        at: usize,
    },
    /// A root (`meta`, `params`, `event`) used without a field.
    #[error("`{name}` at character {at} needs a field, e.g. `{name}.x`")]
    FieldNeeded {
        /// The root.
        name: String,
        /// Its offset.
        at: usize,
    },
    /// A call of a function the language does not have.
    #[error("unknown function `{name}`; known functions: {}", known_functions())]
    UnknownFunction {
        /// The name called.
        name: String,
    },
    /// A call with too few or too many arguments.
    #[error("`{name}` takes {min}..={max} arguments, got {got}")]
    Arity {
        /// The function.
        name: String,
        /// Fewest arguments.
        min: usize,
        /// Most arguments.
        max: usize,
        /// Arguments given.
        got: usize,
    },
    /// A function whose first argument must be a quoted event type or category.
    #[error("the first argument of `{name}` must be a quoted name, e.g. {name}('CaseOpened')")]
    QuotedNameExpected {
        /// The function.
        name: String,
    },
}

impl ExprError {
    /// The character offset of the fault, when the parser knows one.
    #[must_use]
    pub fn position(&self) -> Option<usize> {
        match self {
            ExprError::TooLong { .. }
            | ExprError::Empty
            | ExprError::UnknownFunction { .. }
            | ExprError::Arity { .. }
            | ExprError::QuotedNameExpected { .. } => None,
            ExprError::TooDeep { at, .. }
            | ExprError::EndsEarly { at }
            | ExprError::BadNumber { at }
            | ExprError::Unreadable { at, .. }
            | ExprError::NumberTooLarge { at, .. }
            | ExprError::DurationNotWhole { at, .. }
            | ExprError::DurationTooLarge { at }
            | ExprError::UnclosedText { at }
            | ExprError::UnexpectedCharacter { at, .. }
            | ExprError::Unexpected { at, .. }
            | ExprError::Expected { at, .. }
            | ExprError::FieldNameExpected { at }
            | ExprError::EventField { at, .. }
            | ExprError::FieldNeeded { at, .. }
            | ExprError::AttributeName { at } => Some(*at),
        }
    }
}

fn known_functions() -> String {
    FUNCTIONS
        .iter()
        .map(|(n, ..)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}
