//! Reading CSV sources with positions: every value knows its file, line and column, so an error
//! can name them. Rows with too few or too many fields are reported, never padded.

use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::{ColumnRef, ImportError, RowError};

/// A CSV file with a header row, read whole (the sources are small; limits below).
pub struct CsvSource {
    /// File name as shown in errors and metadata (no directory).
    pub file: String,
    headers: Vec<String>,
    rows: Vec<(u64, csv::StringRecord)>,
}

/// Most data rows one CSV source may hold; larger exports should be split.
pub const CSV_ROWS_MAX: usize = 2_000_000;
/// Most bytes of a source once decompressed (a gzip file is read up to this).
pub const CSV_SIZE_MAX_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// The 1-based line of byte offsets, counted incrementally (offsets only grow).
#[derive(Debug, Default)]
struct LineCounter {
    offset: usize,
    newlines: u64,
}

impl LineCounter {
    /// The line a record starting at `byte` is on. A record that starts on the `\n` of a
    /// CRLF (the reader ends records at the `\r`) is on the next line.
    fn line_at(&mut self, bytes: &[u8], byte: u64) -> u64 {
        let mut start = usize::try_from(byte).unwrap_or(usize::MAX).min(bytes.len());
        while bytes.get(start).is_some_and(|b| *b == b'\n' || *b == b'\r') {
            start += 1;
        }
        if start >= self.offset {
            self.newlines += bytecount(&bytes[self.offset..start]);
            self.offset = start;
        }
        self.newlines + 1
    }
}

fn bytecount(bytes: &[u8]) -> u64 {
    u64::try_from(bytes.iter().filter(|b| **b == b'\n').count()).unwrap_or(u64::MAX)
}

impl CsvSource {
    /// Reads `path` with `delimiter`.
    ///
    /// # Errors
    /// [`ImportError::Io`] if the file cannot be read, [`ImportError::Csv`] if it is not CSV.
    pub fn read(path: &Path, delimiter: u8) -> Result<Self, ImportError> {
        let file = file_name(path);
        let io = |source| ImportError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut bytes = std::fs::read(path).map_err(io)?;
        // gzip (`.csv.gz`), recognised by its magic bytes whatever the file is called.
        if bytes.starts_with(&[0x1f, 0x8b]) {
            use std::io::Read as _;
            let mut plain = Vec::new();
            flate2::read::MultiGzDecoder::new(bytes.as_slice())
                .take(CSV_SIZE_MAX_BYTES + 1)
                .read_to_end(&mut plain)
                .map_err(io)?;
            if u64::try_from(plain.len()).unwrap_or(u64::MAX) > CSV_SIZE_MAX_BYTES {
                return Err(ImportError::TooLarge {
                    file,
                    limit: CSV_ROWS_MAX,
                });
            }
            bytes = plain;
        }
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .has_headers(true)
            .from_reader(bytes.as_slice());
        let headers = reader
            .headers()
            .map_err(|e| csv_error(&file, &e))?
            .iter()
            .map(|h| h.trim_start_matches('\u{feff}').trim().to_owned())
            .collect();
        let mut rows = Vec::new();
        // Lines counted from the bytes: the reader's own count is one short in CRLF files.
        let mut lines = LineCounter::default();
        for record in reader.records() {
            let record = record.map_err(|e| csv_error(&file, &e))?;
            let line = record
                .position()
                .map_or(0, |p| lines.line_at(&bytes, p.byte()));
            if rows.len() >= CSV_ROWS_MAX {
                return Err(ImportError::TooLarge {
                    file,
                    limit: CSV_ROWS_MAX,
                });
            }
            rows.push((line, record));
        }
        Ok(Self {
            file,
            headers,
            rows,
        })
    }

    /// Index of the column `name`.
    ///
    /// # Errors
    /// [`ImportError::MissingColumn`] naming the file and the columns it has.
    pub fn column(&self, name: &str) -> Result<usize, ImportError> {
        self.headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| ImportError::MissingColumn {
                file: self.file.clone(),
                column: name.to_owned(),
                found: format!("{}{}", self.headers.join(", "), self.delimiter_hint()),
            })
    }

    /// A hint when the header reads as one column that holds another likely delimiter (the
    /// mapping's `delimiter` is wrong), else nothing.
    fn delimiter_hint(&self) -> String {
        let [only] = self.headers.as_slice() else {
            return String::new();
        };
        [';', '\t', '|', ',']
            .into_iter()
            .filter(|d| only.contains(*d))
            .max_by_key(|d| only.matches(*d).count())
            .map(|d| {
                format!(
                    " (one column only: the header looks {}-delimited; set delimiter = {:?} in the mapping)",
                    match d {
                        '\t' => "tab".to_owned(),
                        other => format!("`{other}`"),
                    },
                    d
                )
            })
            .unwrap_or_default()
    }

    /// The column names, in file order.
    #[must_use]
    pub fn headers(&self) -> &[String] {
        &self.headers
    }

    /// Number of data rows.
    #[must_use]
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when the file has no data rows.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The data rows, in file order.
    pub fn rows(&self) -> impl Iterator<Item = Row<'_>> {
        self.rows.iter().map(move |(line, record)| Row {
            source: self,
            line: *line,
            record,
        })
    }
}

/// One data row.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    source: &'a CsvSource,
    /// 1-based line number of the row in its file (the header is line 1).
    pub line: u64,
    record: &'a csv::StringRecord,
}

impl<'a> Row<'a> {
    /// File name.
    #[must_use]
    pub fn file(&self) -> &'a str {
        &self.source.file
    }

    /// Checks the row has exactly as many fields as the header.
    ///
    /// # Errors
    /// A [`RowError`] naming the first missing (or first extra) column.
    pub fn check_width(&self) -> Result<(), RowError> {
        let want = self.source.headers.len();
        let got = self.record.len();
        if got == want {
            return Ok(());
        }
        let index = got.min(want);
        let name = self
            .source
            .headers
            .get(index)
            .cloned()
            .unwrap_or_else(|| format!("extra field {}", index + 1));
        Err(RowError {
            file: self.file().to_owned(),
            line: self.line,
            column: Some(ColumnRef {
                index: index + 1,
                name,
            }),
            reason: format!(
                "the row has {got} fields but the header has {want}: a ragged row (a missing or extra delimiter, or an unquoted delimiter inside a value); fix the row"
            ),
        })
    }

    /// The raw value of column `index` (empty if the row is short; check the width first).
    #[must_use]
    pub fn raw(&self, index: usize) -> &'a str {
        self.record.get(index).unwrap_or("")
    }

    /// The value of column `index`, trimmed; `None` if blank.
    #[must_use]
    pub fn opt(&self, index: usize) -> Option<&'a str> {
        let v = self.raw(index).trim();
        (!v.is_empty()).then_some(v)
    }

    /// The value of column `index`, trimmed.
    ///
    /// # Errors
    /// A [`RowError`] if it is blank.
    pub fn req(&self, index: usize) -> Result<&'a str, RowError> {
        self.opt(index)
            .ok_or_else(|| self.error(index, "the value is blank but required; fill it in"))
    }

    /// An error about column `index` of this row.
    #[must_use]
    pub fn error(&self, index: usize, reason: impl Into<String>) -> RowError {
        RowError {
            file: self.file().to_owned(),
            line: self.line,
            column: Some(ColumnRef {
                index: index + 1,
                name: self.source.headers.get(index).cloned().unwrap_or_default(),
            }),
            reason: reason.into(),
        }
    }

    /// An error about the row as a whole (a business rule, not one value).
    #[must_use]
    pub fn row_error(&self, reason: impl Into<String>) -> RowError {
        RowError {
            file: self.file().to_owned(),
            line: self.line,
            column: None,
            reason: reason.into(),
        }
    }

    /// Parses a `YYYY-MM-DD` date in column `index`.
    ///
    /// # Errors
    /// A [`RowError`] naming the value and the expected format.
    pub fn date(&self, index: usize) -> Result<NaiveDate, RowError> {
        let v = self.req(index)?;
        NaiveDate::parse_from_str(v, "%Y-%m-%d").map_err(|e| {
            self.error(
                index,
                format!("{v:?} is not a date of the form YYYY-MM-DD ({e})"),
            )
        })
    }

    /// Parses a `YYYY-MM-DD HH:MM:SS` timestamp (read as UTC) in column `index`.
    ///
    /// # Errors
    /// A [`RowError`] naming the value and the expected format.
    pub fn timestamp(&self, index: usize) -> Result<DateTime<Utc>, RowError> {
        let v = self.req(index)?;
        NaiveDateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S")
            .map(|t| t.and_utc())
            .map_err(|e| {
                self.error(
                    index,
                    format!("{v:?} is not a timestamp of the form YYYY-MM-DD HH:MM:SS ({e})"),
                )
            })
    }

    /// Parses a decimal amount (`"29.85"`, `"1054"`) into minor units with `exponent` decimals.
    ///
    /// # Errors
    /// A [`RowError`] if the value is not a plain decimal number or has too many decimals.
    pub fn minor_units(&self, index: usize, exponent: u32) -> Result<i64, RowError> {
        let v = self.req(index)?;
        parse_minor_units(v, '.', exponent).map_err(|e| self.error(index, e.to_string()))
    }
}

/// A text that is not an amount of money in the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not an amount: use digits with at most {exponent} decimals after {separator:?} and no thousands separator")]
pub struct NotAnAmount {
    /// The text.
    pub value: String,
    /// The decimal mark expected.
    pub separator: char,
    /// Decimals the currency allows.
    pub exponent: u32,
}

/// Parses `"1234.5"` (with `separator` as the decimal mark) into minor units of a currency with
/// `exponent` decimals: `("29.85", '.', 2)` → 2985. No floats; no thousands separators.
///
/// # Errors
/// [`NotAnAmount`] naming the value when it is not a decimal number or has more than
/// `exponent` decimals.
pub fn parse_minor_units(value: &str, separator: char, exponent: u32) -> Result<i64, NotAnAmount> {
    let bad = || NotAnAmount {
        value: value.to_owned(),
        separator,
        exponent,
    };
    let (negative, digits) = match value.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, value),
    };
    let (whole, fraction) = digits.split_once(separator).unwrap_or((digits, ""));
    let fraction_len = u32::try_from(fraction.len()).map_err(|_| bad())?;
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
        || fraction_len > exponent
        || (digits.contains(separator) && fraction.is_empty())
    {
        return Err(bad());
    }
    let scale = 10_i64.checked_pow(exponent).ok_or_else(bad)?;
    let whole: i64 = whole.parse().map_err(|_| bad())?;
    let mut frac: i64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| bad())?
    };
    frac = frac
        .checked_mul(
            10_i64
                .checked_pow(exponent - fraction_len)
                .ok_or_else(bad)?,
        )
        .ok_or_else(bad)?;
    let units = whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(frac))
        .ok_or_else(bad)?;
    Ok(if negative { -units } else { units })
}

/// The file name of `path`, for messages and metadata.
#[must_use]
pub fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn csv_error(file: &str, e: &csv::Error) -> ImportError {
    let line = e.position().map_or(0, csv::Position::line);
    ImportError::Csv {
        file: file.to_owned(),
        line,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_minor_units;

    #[test]
    fn amounts_in_minor_units() {
        assert_eq!(parse_minor_units("29.85", '.', 2), Ok(2985));
        assert_eq!(parse_minor_units("1054", '.', 2), Ok(105_400));
        assert_eq!(parse_minor_units("18.8", '.', 2), Ok(1880));
        assert_eq!(parse_minor_units("1234,5", ',', 2), Ok(123_450));
        assert_eq!(parse_minor_units("-0.05", '.', 2), Ok(-5));
        assert_eq!(parse_minor_units("7", '.', 0), Ok(7));
        for bad in ["", " ", "1.234", "1,000.00", "abc", "1.", ".5", "1e3"] {
            assert!(parse_minor_units(bad, '.', 2).is_err(), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod line_tests {
    use super::*;

    fn lines_of(content: &str) -> Vec<u64> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        std::fs::write(&path, content).unwrap();
        let source = CsvSource::read(&path, b',').unwrap();
        source.rows().map(|r| r.line).collect()
    }

    #[test]
    fn a_wrong_delimiter_is_named_in_the_missing_column_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("semi.csv");
        std::fs::write(&path, "id;name;amount\n1;a;2\n").unwrap();
        let source = CsvSource::read(&path, b',').unwrap();
        let e = source.column("name").unwrap_err().to_string();
        assert!(
            e.contains("missing column `name`") && e.contains("set delimiter = ';'"),
            "{e}"
        );
        let right = CsvSource::read(&path, b';').unwrap();
        assert_eq!(right.column("name").unwrap(), 1);
        assert!(!right
            .column("nope")
            .unwrap_err()
            .to_string()
            .contains("delimiter"));
    }

    #[test]
    fn a_gzip_file_reads_like_its_plain_text() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"a,b\r\n1,2\r\n3,4\r\n").unwrap();
        std::fs::write(&path, gz.finish().unwrap()).unwrap();
        let source = CsvSource::read(&path, b',').unwrap();
        assert_eq!(source.rows().map(|r| r.line).collect::<Vec<_>>(), [2, 3]);
        assert_eq!(source.column("b").unwrap(), 1);
    }

    #[test]
    fn line_numbers_are_exact_for_lf_and_crlf_files() {
        assert_eq!(lines_of("a,b\n1,2\n3,4\n"), [2, 3]);
        assert_eq!(lines_of("a,b\r\n1,2\r\n3,4\r\n"), [2, 3]);
        assert_eq!(lines_of("a,b\r\n1,2\r\n\"x\r\ny\",4\r\n5,6\r\n"), [2, 3, 5]);
    }
}
