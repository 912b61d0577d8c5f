//! Reading CSV sources with positions: every value knows its file, line and column, so an error
//! can name them. Rows with too few or too many fields are reported, never padded.
//!
//! [`CsvReader`] reads a file (plain or gzip) row by row, in constant memory, with exact line
//! numbers in LF and CRLF files; [`CsvSource`] reads a whole (small) file into memory for the
//! importers that look at all of it at once. [`scan`] reads a file once to count its rows and
//! hash its content.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use sha2::{Digest, Sha256};

use super::{ColumnRef, ImportError, RowError};

/// A CSV file with a header row, read whole (the sources are small; limits below).
pub struct CsvSource {
    header: Header,
    rows: Vec<(u64, csv::StringRecord)>,
}

/// Most data rows one in-memory CSV source may hold; larger exports should be split (or
/// imported with a mapping, which streams).
pub const CSV_ROWS_MAX: usize = 2_000_000;
/// Most bytes of an in-memory source once decompressed (a gzip file is read up to this).
pub const CSV_SIZE_MAX_BYTES: u64 = 4 * 1024 * 1024 * 1024;

/// Bytes the CSV parser reads ahead.
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// A source file's name and column names.
#[derive(Debug, Clone)]
pub struct Header {
    /// File name as shown in errors and metadata (no directory).
    pub file: String,
    headers: Vec<String>,
}

impl Header {
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

    /// Data row `record`, found at `line` of this file.
    #[must_use]
    pub fn row<'a>(&'a self, line: u64, record: &'a csv::StringRecord) -> Row<'a> {
        Row {
            header: self,
            line,
            record,
        }
    }
}

/// The bytes of a source as the CSV parser reads them: counts line ends (so a record's line
/// is exact, also in CRLF files, where the parser's own count is one short), counts bytes and
/// hashes them if asked.
struct Tracked {
    inner: Box<dyn Read + Send>,
    /// Bytes passed to the parser so far.
    offset: u64,
    /// Offsets of the `\r` and `\n` bytes the parser has but no record has passed yet
    /// (`true` for `\n`): at most one read-ahead buffer's worth.
    ends: VecDeque<(u64, bool)>,
    /// `\n` bytes before the last record asked about.
    newlines: u64,
    hasher: Option<Sha256>,
}

impl Read for Tracked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let bytes = buf.get(..n).unwrap_or_default();
        if let Some(hasher) = &mut self.hasher {
            hasher.update(bytes);
        }
        let mut at = self.offset;
        for b in bytes {
            if *b == b'\n' || *b == b'\r' {
                self.ends.push_back((at, *b == b'\n'));
            }
            at += 1;
        }
        self.offset = at;
        Ok(n)
    }
}

impl Tracked {
    /// The 1-based line a record starting at `byte` is on (offsets only grow). A record that
    /// starts on line ends (the `\n` of a CRLF, the reader ending records at the `\r`, or
    /// blank lines) is on the line after them.
    fn line_at(&mut self, byte: u64) -> u64 {
        while let Some(&(at, newline)) = self.ends.front() {
            if at >= byte {
                break;
            }
            self.ends.pop_front();
            self.newlines += u64::from(newline);
        }
        let mut next = byte;
        while let Some(&(at, newline)) = self.ends.front() {
            if at != next {
                break;
            }
            self.ends.pop_front();
            self.newlines += u64::from(newline);
            next += 1;
        }
        self.newlines + 1
    }
}

/// A CSV file with a header row, read row by row (plain text, or gzip recognised by its
/// magic bytes whatever the file is called).
pub struct CsvReader {
    header: Header,
    reader: csv::Reader<Tracked>,
}

impl CsvReader {
    /// Opens `path` with `delimiter` and reads its header.
    ///
    /// # Errors
    /// [`ImportError::Io`] if the file cannot be read, [`ImportError::Csv`] if its header is
    /// not CSV.
    pub fn open(path: &Path, delimiter: u8) -> Result<Self, ImportError> {
        Self::open_with(path, delimiter, false)
    }

    fn open_with(path: &Path, delimiter: u8, hash: bool) -> Result<Self, ImportError> {
        let file = file_name(path);
        let io = |source| ImportError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut buffered =
            BufReader::with_capacity(READ_BUFFER_BYTES, std::fs::File::open(path).map_err(io)?);
        let gzip = buffered.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
        let inner: Box<dyn Read + Send> = if gzip {
            Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
        } else {
            Box::new(buffered)
        };
        let tracked = Tracked {
            inner,
            offset: 0,
            ends: VecDeque::new(),
            newlines: 0,
            hasher: hash.then(Sha256::new),
        };
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .has_headers(true)
            .buffer_capacity(READ_BUFFER_BYTES)
            .from_reader(tracked);
        let headers = match reader.headers() {
            Ok(headers) => headers
                .iter()
                .map(|h| h.trim_start_matches('\u{feff}').trim().to_owned())
                .collect(),
            Err(e) => return Err(csv_error(&file, &e, reader.get_mut())),
        };
        Ok(Self {
            header: Header { file, headers },
            reader,
        })
    }

    /// The file's name and columns.
    #[must_use]
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Reads the next data row into `record`: its line, or `None` at the end of the file.
    ///
    /// # Errors
    /// [`ImportError::Csv`] (with the line) if the file is not CSV or not UTF-8 there.
    pub fn read(&mut self, record: &mut csv::StringRecord) -> Result<Option<u64>, ImportError> {
        match self.reader.read_record(record) {
            Ok(false) => Ok(None),
            Ok(true) => Ok(Some(
                record
                    .position()
                    .map_or(0, |p| self.reader.get_mut().line_at(p.byte())),
            )),
            Err(e) => Err(csv_error(&self.header.file, &e, self.reader.get_mut())),
        }
    }

    /// Bytes read so far (decompressed).
    fn bytes_read(&self) -> u64 {
        self.reader.get_ref().offset
    }
}

/// What one read of a whole file found: its data rows and the hash of its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Data rows (records after the header).
    pub rows: u64,
    /// SHA-256 of the file's bytes after decompression (of a `.gz`, its CSV text), as
    /// lower-case hex: `sha256sum FILE` (or `zcat FILE.gz | sha256sum`) prints it.
    pub content_sha256: String,
}

/// Reads `path` once: checks it is CSV (and UTF-8), counts its data rows and hashes it.
///
/// # Errors
/// As [`CsvReader::open`] and [`CsvReader::read`].
pub fn scan(path: &Path, delimiter: u8) -> Result<Scan, ImportError> {
    let mut reader = CsvReader::open_with(path, delimiter, true)?;
    let mut record = csv::StringRecord::new();
    let mut rows = 0u64;
    while reader.read(&mut record)?.is_some() {
        rows += 1;
    }
    let digest = reader
        .reader
        .into_inner()
        .hasher
        .map(Sha256::finalize)
        .unwrap_or_default();
    Ok(Scan {
        rows,
        content_sha256: digest.iter().map(|b| format!("{b:02x}")).collect(),
    })
}

impl std::ops::Deref for CsvSource {
    type Target = Header;

    fn deref(&self) -> &Header {
        &self.header
    }
}

impl CsvSource {
    /// Reads `path` with `delimiter`.
    ///
    /// # Errors
    /// [`ImportError::Io`] if the file cannot be read, [`ImportError::Csv`] if it is not CSV,
    /// [`ImportError::TooLarge`] beyond [`CSV_ROWS_MAX`] rows or [`CSV_SIZE_MAX_BYTES`].
    pub fn read(path: &Path, delimiter: u8) -> Result<Self, ImportError> {
        let mut reader = CsvReader::open(path, delimiter)?;
        let mut rows = Vec::new();
        let mut record = csv::StringRecord::new();
        while let Some(line) = reader.read(&mut record)? {
            if rows.len() >= CSV_ROWS_MAX || reader.bytes_read() > CSV_SIZE_MAX_BYTES {
                return Err(ImportError::TooLarge {
                    file: reader.header.file,
                    limit: CSV_ROWS_MAX,
                });
            }
            rows.push((line, std::mem::take(&mut record)));
        }
        Ok(Self {
            header: reader.header,
            rows,
        })
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
        self.rows
            .iter()
            .map(move |(line, record)| self.header.row(*line, record))
    }
}

/// One data row.
#[derive(Clone, Copy)]
pub struct Row<'a> {
    header: &'a Header,
    /// 1-based line number of the row in its file (the header is line 1).
    pub line: u64,
    record: &'a csv::StringRecord,
}

impl<'a> Row<'a> {
    /// File name.
    #[must_use]
    pub fn file(&self) -> &'a str {
        &self.header.file
    }

    /// Checks the row has exactly as many fields as the header.
    ///
    /// # Errors
    /// A [`RowError`] naming the first missing (or first extra) column.
    pub fn check_width(&self) -> Result<(), RowError> {
        let want = self.header.headers.len();
        let got = self.record.len();
        if got == want {
            return Ok(());
        }
        let index = got.min(want);
        let name = self
            .header
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
                name: self.header.headers.get(index).cloned().unwrap_or_default(),
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

fn csv_error(file: &str, e: &csv::Error, lines: &mut Tracked) -> ImportError {
    let line = e.position().map_or(0, |p| lines.line_at(p.byte()));
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
        // Blank lines are no rows, but they are lines.
        assert_eq!(lines_of("a,b\n1,2\n\n\n3,4\n"), [2, 5]);
        assert_eq!(lines_of("a,b\r\n1,2\r\n\r\n3,4"), [2, 4]);
    }

    #[test]
    fn lines_stay_exact_across_read_buffers_and_a_scan_counts_and_hashes() {
        use std::fmt::Write as _;
        let mut content = String::from("id,note\r\n");
        for i in 0..60_000 {
            if i % 1000 == 7 {
                let _ = write!(content, "{i},\"two\r\nlines\"\r\n");
            } else {
                let _ = write!(content, "{i},plain\r\n");
            }
        }
        let got = lines_of(&content);
        assert_eq!(got.len(), 60_000);
        let mut line = 2;
        for (i, at) in got.iter().enumerate() {
            assert_eq!(*at, line, "row {i}");
            line += if i % 1000 == 7 { 2 } else { 1 };
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rows.csv");
        std::fs::write(&path, "a,b\n1,2\n").unwrap();
        let found = scan(&path, b',').unwrap();
        assert_eq!(found.rows, 1);
        // `printf 'a,b\n1,2\n' | sha256sum`
        assert_eq!(
            found.content_sha256,
            "492d5ea496056f1a6a6592241032fab764c321596317930b4fa0e1e8bc3b7470"
        );
    }
}
