//! The parts of a mapping that look at more than one cell: `when` conditions that decide
//! whether a command applies to a row, templates that build a value from several columns, a
//! constant and the row number, and dates assembled from parts (a day column, a month name, a
//! year the file lacks).

use std::collections::BTreeMap;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};
use serde::Deserialize;

use super::super::source::{Header, Row};
use super::super::{ImportError, RowError};

/// One test of a row's cell; a command's `when` holds one or a list (all must hold).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Condition {
    /// The column tested.
    pub column: String,
    /// The cell equals this text (after trimming).
    pub equals: Option<String>,
    /// The cell differs from this text.
    pub not_equals: Option<String>,
    /// The cell is one of these texts.
    pub one_of: Option<Vec<String>>,
    /// `true`: the cell is blank; `false`: it is not.
    pub blank: Option<bool>,
    /// The cell is a number greater than this.
    pub above: Option<f64>,
    /// The cell is a number less than this.
    pub below: Option<f64>,
    /// The cell matches this regular expression (Rust `regex` syntax, unanchored).
    pub matches: Option<String>,
}

/// `when = {..}` or `when = [{..}, {..}]`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum When {
    /// One condition.
    One(Condition),
    /// All of these.
    All(Vec<Condition>),
}

impl When {
    fn conditions(&self) -> &[Condition] {
        match self {
            When::One(c) => std::slice::from_ref(c),
            When::All(all) => all,
        }
    }
}

enum Test {
    Equals(String),
    NotEquals(String),
    OneOf(Vec<String>),
    Blank(bool),
    Above(f64),
    Below(f64),
    Matches(regex::Regex),
}

/// A `when` resolved against the file's header.
pub struct Guard(Vec<(usize, Test)>);

impl Guard {
    /// Resolves `when` (`at` names it in errors, e.g. `commands[1].when`).
    ///
    /// # Errors
    /// A condition with no test or several, a bad pattern (as text for the mapping error), or
    /// a missing column.
    pub fn resolve(when: &When, at: &str, file: &Header) -> Result<Guard, GuardError> {
        let mut tests = Vec::new();
        for (i, c) in when.conditions().iter().enumerate() {
            let at = format!("{at}[{i}]");
            let mut found: Vec<Test> = Vec::new();
            if let Some(v) = &c.equals {
                found.push(Test::Equals(v.trim().to_owned()));
            }
            if let Some(v) = &c.not_equals {
                found.push(Test::NotEquals(v.trim().to_owned()));
            }
            if let Some(v) = &c.one_of {
                found.push(Test::OneOf(v.iter().map(|s| s.trim().to_owned()).collect()));
            }
            if let Some(v) = c.blank {
                found.push(Test::Blank(v));
            }
            if let Some(v) = c.above {
                found.push(Test::Above(v));
            }
            if let Some(v) = c.below {
                found.push(Test::Below(v));
            }
            if let Some(pattern) = &c.matches {
                let re = regex::Regex::new(pattern).map_err(|e| {
                    GuardError::Mapping(format!("{at}.matches: not a regular expression: {e}"))
                })?;
                found.push(Test::Matches(re));
            }
            if found.len() != 1 {
                return Err(GuardError::Mapping(format!(
                    "{at}: give exactly one test of `{}`: equals, not_equals, one_of, blank, above, below or matches",
                    c.column
                )));
            }
            let column = file.column(&c.column).map_err(GuardError::Column)?;
            tests.extend(found.into_iter().map(|t| (column, t)));
        }
        Ok(Guard(tests))
    }

    /// Whether every condition holds for `row`.
    ///
    /// # Errors
    /// A cell compared as a number that is not one.
    pub fn admits(&self, row: &Row<'_>) -> Result<bool, RowError> {
        for (column, test) in &self.0 {
            let cell = row.raw(*column).trim();
            let number = || {
                cell.parse::<f64>().map_err(|_| {
                    row.error(
                        *column,
                        format!("{cell:?} is not a number, as the `when` condition compares"),
                    )
                })
            };
            let holds = match test {
                Test::Equals(v) => cell == v,
                Test::NotEquals(v) => cell != v,
                Test::OneOf(vs) => vs.iter().any(|v| v == cell),
                Test::Blank(blank) => cell.is_empty() == *blank,
                Test::Above(v) => !cell.is_empty() && number()? > *v,
                Test::Below(v) => !cell.is_empty() && number()? < *v,
                Test::Matches(re) => re.is_match(cell),
            };
            if !holds {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Why a `when` or a template cannot be resolved.
#[derive(Debug)]
pub enum GuardError {
    /// The mapping is wrong (the text says where and how).
    Mapping(String),
    /// A named column is not in the file.
    Column(ImportError),
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Column(usize, String),
    /// The 1-based number of the data row.
    Row,
    /// The row's line in the file.
    Line,
}

/// `template = "{Invoice}-{Line}"`, resolved against the header: `{COLUMN}` is a cell,
/// `{row}` the data row's number (1 for the first row), `{line}` its line in the file;
/// `{{` and `}}` are literal braces.
#[derive(Debug, Clone)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Parses `text` against `file`'s header.
    ///
    /// # Errors
    /// An unclosed brace (as text) or a missing column.
    pub fn resolve(text: &str, at: &str, file: &Header) -> Result<Template, GuardError> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        name.push(c);
                    }
                    if !closed || name.is_empty() {
                        return Err(GuardError::Mapping(format!(
                            "{at}: template {text:?} has an unclosed or empty `{{`; write {{COLUMN}}, {{row}} or {{line}}, and {{{{ for a brace"
                        )));
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut literal)));
                    }
                    pieces.push(match name.as_str() {
                        "row" => Piece::Row,
                        "line" => Piece::Line,
                        column => Piece::Column(
                            file.column(column).map_err(GuardError::Column)?,
                            column.to_owned(),
                        ),
                    });
                }
                '}' => {
                    return Err(GuardError::Mapping(format!(
                        "{at}: template {text:?} has a `}}` without `{{`; write }}}} for a brace"
                    )))
                }
                other => literal.push(other),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    /// The text for `row` (data row number `number`); `None` when a column in it is blank.
    #[must_use]
    pub fn render(&self, row: &Row<'_>, number: u64) -> Option<String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Column(i, _) => out.push_str(row.opt(*i)?),
                Piece::Row => out.push_str(&number.to_string()),
                Piece::Line => out.push_str(&row.line.to_string()),
            }
        }
        Some(out)
    }

    /// The first column of the template, for errors.
    #[must_use]
    pub fn first_column(&self) -> Option<usize> {
        self.0.iter().find_map(|p| match p {
            Piece::Column(i, _) => Some(*i),
            _ => None,
        })
    }
}

/// Where a date part comes from.
#[derive(Debug, Clone)]
enum Part {
    Column(usize),
    Const(i64),
}

/// A date or time assembled from parts: `parts = { day = "Day", month = "Month", year = 2017 }`
/// (a string names a column, a number is a constant for what the file lacks); `month` may be a
/// number or an English month name or abbreviation; `hour`, `minute`, `second` default to 0.
#[derive(Debug, Clone)]
pub struct DateParts {
    parts: BTreeMap<&'static str, Part>,
    offset: FixedOffset,
}

/// The part names, in order.
const PART_NAMES: [&str; 6] = ["year", "month", "day", "hour", "minute", "second"];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

impl DateParts {
    /// Resolves `parts` (and `utc_offset`, e.g. `+01:00`, default UTC) against the header.
    ///
    /// # Errors
    /// An unknown part, a missing year, month or day, a bad offset, a missing column.
    pub fn resolve(
        parts: &BTreeMap<String, toml::Value>,
        utc_offset: Option<&str>,
        at: &str,
        file: &Header,
    ) -> Result<DateParts, GuardError> {
        let mut out = BTreeMap::new();
        for (name, value) in parts {
            let Some(part) = PART_NAMES.iter().find(|p| **p == name) else {
                return Err(GuardError::Mapping(format!(
                    "{at}.parts.{name}: not a date part; use {}",
                    PART_NAMES.join(", ")
                )));
            };
            let source = match value {
                toml::Value::String(column) => {
                    Part::Column(file.column(column).map_err(GuardError::Column)?)
                }
                toml::Value::Integer(n) => Part::Const(*n),
                _ => {
                    return Err(GuardError::Mapping(format!(
                    "{at}.parts.{name}: give a column name (text) or a constant (a whole number)"
                )))
                }
            };
            out.insert(*part, source);
        }
        for needed in ["year", "month", "day"] {
            if !out.contains_key(needed) {
                return Err(GuardError::Mapping(format!(
                    "{at}.parts: `{needed}` is missing; give a column or a constant (e.g. {needed} = 2017 when the file has none)"
                )));
            }
        }
        let offset = match utc_offset {
            None => FixedOffset::east_opt(0),
            Some(text) => parse_offset(text),
        }
        .ok_or_else(|| {
            GuardError::Mapping(format!(
                "{at}.utc_offset: {:?} is not an offset such as +01:00 or -05:30",
                utc_offset.unwrap_or_default()
            ))
        })?;
        Ok(DateParts { parts: out, offset })
    }

    /// The instant of `row`, `None` when a part's cell is blank.
    ///
    /// # Errors
    /// A part that is no number (or month name), or no valid date.
    pub fn instant(
        &self,
        row: &Row<'_>,
    ) -> Result<Option<chrono::DateTime<chrono::Utc>>, RowError> {
        let mut values = [0i64; 6];
        for (slot, name) in PART_NAMES.iter().enumerate() {
            let Some(part) = self.parts.get(name) else {
                continue;
            };
            values[slot] = match part {
                Part::Const(n) => *n,
                Part::Column(i) => {
                    let Some(cell) = row.opt(*i) else {
                        return Ok(None);
                    };
                    part_value(name, cell).ok_or_else(|| {
                        row.error(
                            *i,
                            format!(
                                "{cell:?} is not a {name}{}",
                                if *name == "month" {
                                    " (a number or a month name)"
                                } else {
                                    ""
                                }
                            ),
                        )
                    })?
                }
            };
        }
        let [year, month, day, hour, minute, second] = values;
        let date = i32::try_from(year)
            .ok()
            .zip(u32::try_from(month).ok())
            .zip(u32::try_from(day).ok())
            .and_then(|((y, m), d)| NaiveDate::from_ymd_opt(y, m, d));
        let time = u32::try_from(hour)
            .ok()
            .zip(u32::try_from(minute).ok())
            .zip(u32::try_from(second).ok())
            .and_then(|((h, m), s)| NaiveTime::from_hms_opt(h, m, s));
        let local = date.zip(time).map(|(d, t)| NaiveDateTime::new(d, t)).ok_or_else(|| {
            row.row_error(format!(
                "year {year}, month {month}, day {day}, {hour:02}:{minute:02}:{second:02} is no valid date and time"
            ))
        })?;
        let instant = self
            .offset
            .from_local_datetime(&local)
            .single()
            .map(|t| t.with_timezone(&chrono::Utc))
            .ok_or_else(|| {
                row.row_error("the date and time do not exist at the mapping's utc_offset")
            })?;
        Ok(Some(instant))
    }
}

fn part_value(name: &str, cell: &str) -> Option<i64> {
    if let Ok(n) = cell.trim().parse::<i64>() {
        return Some(n);
    }
    if name != "month" {
        return None;
    }
    let lower = cell.trim().trim_end_matches('.').to_lowercase();
    if lower.len() < 3 {
        return None;
    }
    MONTHS
        .iter()
        .position(|m| m.starts_with(&lower))
        .and_then(|i| i64::try_from(i + 1).ok())
}

fn parse_offset(text: &str) -> Option<FixedOffset> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("z") || text.eq_ignore_ascii_case("utc") {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match text.split_at_checked(1)? {
        ("+", rest) => (1, rest),
        ("-", rest) => (-1, rest),
        _ => return None,
    };
    let (h, m) = rest.split_once(':').unwrap_or((rest, "0"));
    let seconds = h.parse::<i32>().ok()? * 3600 + m.parse::<i32>().ok()? * 60;
    FixedOffset::east_opt(sign * seconds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn month_names_and_offsets() {
        assert_eq!(part_value("month", "May"), Some(5));
        assert_eq!(part_value("month", "sept"), Some(9));
        assert_eq!(part_value("month", "Dec."), Some(12));
        assert_eq!(part_value("month", "12"), Some(12));
        assert_eq!(part_value("month", "xyz"), None);
        assert_eq!(part_value("day", "May"), None);
        assert_eq!(
            parse_offset("+01:00").map(|o| o.local_minus_utc()),
            Some(3600)
        );
        assert_eq!(
            parse_offset("-05:30").map(|o| o.local_minus_utc()),
            Some(-19800)
        );
        assert_eq!(parse_offset("UTC").map(|o| o.local_minus_utc()), Some(0));
        assert_eq!(parse_offset("1:00"), None);
    }
}
