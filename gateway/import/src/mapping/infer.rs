//! `crm import csv FILE --infer [--command NAME]`: a mapping skeleton from the file's header
//! and first rows: the delimiter, each column's type guessed from samples (with the date
//! format or decimal mark it needs), and, for a named command, each of its fields matched to
//! the column of the nearest name, the rest marked TODO. A starting point to edit and
//! `--check`, never imported as is.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime};
use crm_app::schema::{self, TypeKind};
use crm_domain::registry::nearest_name;
use crm_domain::Registry;

use super::super::source::{file_name, CsvReader};
use super::super::ImportError;

/// Rows read for the samples.
const SAMPLE_ROWS: usize = 200;
/// Candidate delimiters, in order of preference on a tie.
const DELIMITERS: [u8; 4] = [b',', b';', b'\t', b'|'];
const DATETIME_FORMATS: [&str; 6] = [
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%dT%H:%M:%S",
    "%d/%m/%Y %H:%M",
    "%m/%d/%Y %H:%M",
    "%d.%m.%Y %H:%M",
    "%Y-%m-%d %H:%M",
];
const DATE_FORMATS: [&str; 5] = ["%Y-%m-%d", "%d.%m.%Y", "%d/%m/%Y", "%m/%d/%Y", "%Y%m%d"];

/// What the samples of a column look like.
#[derive(Debug, Clone, PartialEq)]
enum Guess {
    Blank,
    Bool,
    Int,
    Decimal { comma: bool },
    Date(&'static str),
    Datetime(&'static str),
    Text,
}

impl Guess {
    fn describe(&self) -> String {
        match self {
            Guess::Blank => "always blank in the sample".to_owned(),
            Guess::Bool => "yes/no".to_owned(),
            Guess::Int => "whole number".to_owned(),
            Guess::Decimal { comma: true } => "decimal with a comma".to_owned(),
            Guess::Decimal { comma: false } => "decimal".to_owned(),
            Guess::Date(f) => format!("date {f}"),
            Guess::Datetime(f) => format!("date and time {f}"),
            Guess::Text => "text".to_owned(),
        }
    }

    /// The conversion keys of a field reading this column.
    fn conversion(&self) -> String {
        match self {
            Guess::Int => ", type = \"int\"".to_owned(),
            Guess::Bool => ", type = \"bool\"".to_owned(),
            Guess::Date(f) => format!(", type = \"date\", format = \"{f}\""),
            Guess::Datetime(f) => format!(", type = \"datetime\", format = \"{f}\""),
            Guess::Decimal { comma } => format!(
                ", type = \"money\", currency = \"TODO\"{}",
                if *comma {
                    ", decimal_separator = \",\""
                } else {
                    ""
                }
            ),
            Guess::Blank | Guess::Text => String::new(),
        }
    }
}

fn guess(samples: &[&str]) -> Guess {
    let values: Vec<&str> = samples.iter().copied().filter(|v| !v.is_empty()).collect();
    if values.is_empty() {
        return Guess::Blank;
    }
    let all = |f: &dyn Fn(&str) -> bool| values.iter().all(|v| f(v));
    if all(&|v| v.parse::<i64>().is_ok()) {
        return Guess::Int;
    }
    if all(&|v| {
        [
            "yes", "no", "true", "false", "y", "n", "ja", "nein", "oui", "non",
        ]
        .contains(&v.to_lowercase().as_str())
    }) {
        return Guess::Bool;
    }
    if all(&|v| v.parse::<f64>().is_ok()) {
        return Guess::Decimal { comma: false };
    }
    if all(&|v| v.replace(',', ".").parse::<f64>().is_ok() && v.matches(',').count() == 1) {
        return Guess::Decimal { comma: true };
    }
    for format in DATETIME_FORMATS {
        if all(&|v| NaiveDateTime::parse_from_str(v, format).is_ok()) {
            return Guess::Datetime(format);
        }
    }
    for format in DATE_FORMATS {
        if all(&|v| NaiveDate::parse_from_str(v, format).is_ok()) {
            return Guess::Date(format);
        }
    }
    Guess::Text
}

/// The first line of `path` (of a `.gz`, of its text), at most 64 KiB of it.
fn first_line(path: &Path) -> Result<Vec<u8>, ImportError> {
    use std::io::{BufRead, BufReader, Read};
    let io = |source| ImportError::Io {
        path: path.display().to_string(),
        source,
    };
    let mut buffered = BufReader::new(std::fs::File::open(path).map_err(io)?);
    let gzip = buffered.fill_buf().map_err(io)?.starts_with(&[0x1f, 0x8b]);
    let text: Box<dyn Read> = if gzip {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut line = Vec::new();
    BufReader::new(text.take(64 * 1024))
        .read_until(b'\n', &mut line)
        .map_err(io)?;
    Ok(line)
}

/// The delimiter that splits `header` into the most columns.
fn delimiter_of(header: &[u8]) -> u8 {
    DELIMITERS
        .into_iter()
        .max_by_key(|d| {
            // Fewer-preferred delimiters lose ties.
            let rank = DELIMITERS.iter().position(|x| x == d).unwrap_or(0);
            (header.iter().filter(|b| *b == d).count(), usize::MAX - rank)
        })
        .unwrap_or(b',')
}

fn normalise(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .flat_map(char::to_lowercase)
        .collect()
}

/// The mapping skeleton for `path` (and `command`, if named).
///
/// # Errors
/// An unreadable file, or a command the registry does not know (naming the nearest).
pub fn infer(
    path: &Path,
    command: Option<&str>,
    registry: &Registry,
) -> Result<String, ImportError> {
    let delimiter = delimiter_of(&first_line(path)?);
    let mut reader = CsvReader::open(path, delimiter)?;
    let mut rows: Vec<csv::StringRecord> = Vec::new();
    let mut record = csv::StringRecord::new();
    while rows.len() < SAMPLE_ROWS && reader.read(&mut record)?.is_some() {
        rows.push(std::mem::take(&mut record));
    }
    let columns: Vec<(String, Guess, bool, String)> = reader
        .header()
        .headers()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let samples: Vec<&str> = rows
                .iter()
                .map(|r| r.get(i).unwrap_or_default().trim())
                .collect();
            let blanks = samples.iter().any(|v| v.is_empty());
            let example = samples
                .iter()
                .find(|v| !v.is_empty())
                .map(|v| (*v).to_owned())
                .unwrap_or_default();
            (name.clone(), guess(&samples), blanks, example)
        })
        .collect();
    let name = file_name(path);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Mapping skeleton inferred from {name} ({} rows sampled). Check every line, then\n#   crm import csv {name} --mapping THIS.toml --check",
        rows.len()
    );
    let _ = writeln!(
        out,
        "delimiter = \"{}\"",
        if delimiter == b'\t' {
            "\\t".to_owned()
        } else {
            char::from(delimiter).to_string()
        }
    );
    let _ = writeln!(
        out,
        "\n# Columns: type guessed from the sample, an example value"
    );
    for (column, guess, blanks, example) in &columns {
        let _ = writeln!(
            out,
            "#   {column}: {}{} (e.g. {example:?})",
            guess.describe(),
            if *blanks { ", sometimes blank" } else { "" }
        );
    }
    let Some(command) = command else {
        let _ = writeln!(
            out,
            "\n# Name the command each row makes: `crm schema` lists them; `--infer --command NAME`\n# fills in its fields.\n[[commands]]\naggregate = \"TODO\"\ncommand = \"TODO\"\nid = {{ column = {:?} }}\noccurred_at = {{ column = \"TODO\", type = \"datetime\", format = \"%Y-%m-%dT%H:%M:%S\" }}",
            columns.first().map(|c| c.0.as_str()).unwrap_or("TODO")
        );
        return Ok(out);
    };
    let found = schema::find(registry, command).map_err(|e| ImportError::Mapping {
        file: name.clone(),
        reason: e.to_string(),
    })?;
    if found.kind != TypeKind::Command {
        return Err(ImportError::Mapping {
            file: name,
            reason: format!("`{command}` is an event; name a command (`crm schema` lists them)"),
        });
    }
    let column_for = |field: &str| -> Option<&(String, Guess, bool, String)> {
        let exact = |wanted: &str| columns.iter().find(|c| normalise(&c.0) == wanted);
        let wanted = normalise(field);
        // `full_name` also matches a column `Name`.
        let last = field.rsplit('_').next().map(normalise).unwrap_or_default();
        exact(&wanted)
            .or_else(|| {
                let names: Vec<String> = columns.iter().map(|c| normalise(&c.0)).collect();
                let nearest = nearest_name(&wanted, names.iter().map(String::as_str))?;
                exact(&nearest)
            })
            .or_else(|| (last.len() >= 3).then(|| exact(&last)).flatten())
    };
    let id_field = format!("{}_id", found.aggregate);
    let _ = writeln!(out, "\n[[commands]]");
    let _ = writeln!(out, "aggregate = {:?}", found.aggregate);
    let _ = writeln!(out, "command = {:?}", found.name);
    let id_column = column_for(&id_field)
        .or_else(|| column_for("id"))
        .or_else(|| columns.first());
    let _ = writeln!(
        out,
        "id = {{ column = {:?} }}",
        id_column.map_or("TODO", |c| c.0.as_str())
    );
    let time = column_for("occurred_at")
        .filter(|c| matches!(c.1, Guess::Date(_) | Guess::Datetime(_)))
        .or_else(|| {
            columns
                .iter()
                .find(|c| matches!(c.1, Guess::Datetime(_) | Guess::Date(_)))
        });
    match time {
        Some((column, guess, _, _)) => {
            let format = match guess {
                Guess::Date(f) | Guess::Datetime(f) => *f,
                _ => "%Y-%m-%d",
            };
            let _ = writeln!(
                out,
                "occurred_at = {{ column = {column:?}, type = \"datetime\", format = \"{format}\" }}"
            );
        }
        None => {
            let _ = writeln!(
                out,
                "occurred_at = {{ column = \"TODO\", type = \"datetime\", format = \"%Y-%m-%d\" }}  # no date column found; or parts = {{ day = .., month = .., year = .. }}"
            );
        }
    }
    let _ = writeln!(out, "\n[commands.fields]");
    for field in schema::fields(&found.schema) {
        if field.name == id_field || field.name == "occurred_at" {
            continue;
        }
        // A nested object: one line per field of it, by dotted name.
        let nested: Vec<String> = found
            .schema
            .get("properties")
            .and_then(|p| p.get(&field.name))
            .and_then(|f| f.get("properties"))
            .and_then(|p| p.as_object())
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        if !nested.is_empty() {
            let _ = writeln!(
                out,
                "# {}: {}{}",
                field.name,
                field.shape,
                if field.personal {
                    " (personal data: sealed at rest)"
                } else {
                    ""
                }
            );
            for sub in nested {
                match column_for(&sub) {
                    Some((column, _, blanks, _)) => {
                        let _ = writeln!(
                            out,
                            "\"{}.{sub}\" = {{ column = {column:?}{} }}",
                            field.name,
                            if *blanks { ", optional = true" } else { "" }
                        );
                    }
                    None => {
                        let _ =
                            writeln!(out, "# \"{}.{sub}\" = {{ column = \"...\" }}", field.name);
                    }
                }
            }
            continue;
        }
        let note = format!("# {}", field.shape);
        match column_for(&field.name) {
            Some((column, guess, blanks, _)) => {
                let optional = if *blanks && !field.required {
                    ", optional = true"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "{} = {{ column = {column:?}{}{optional} }}  {note}",
                    field.name,
                    guess.conversion()
                );
            }
            None if field.required => {
                let _ = writeln!(
                    out,
                    "{} = {{ value = \"TODO\" }}  {note}; no column matched",
                    field.name
                );
            }
            None => {
                let _ = writeln!(out, "# {} = {{ column = \"...\" }}  {note}", field.name);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guesses_types_formats_and_the_delimiter() {
        assert_eq!(guess(&["1", "2", ""]), Guess::Int);
        assert_eq!(guess(&["12,50", "3,00"]), Guess::Decimal { comma: true });
        assert_eq!(guess(&["12.5", "3"]), Guess::Decimal { comma: false });
        assert_eq!(guess(&["yes", "No"]), Guess::Bool);
        assert_eq!(
            guess(&["31.12.2017", "01.02.2018"]),
            Guess::Date("%d.%m.%Y")
        );
        assert_eq!(
            guess(&["2017-12-01 08:26:00"]),
            Guess::Datetime("%Y-%m-%d %H:%M:%S")
        );
        assert_eq!(guess(&["", ""]), Guess::Blank);
        assert_eq!(guess(&["web", "mail"]), Guess::Text);
        assert_eq!(delimiter_of(b"a;b;c"), b';');
        assert_eq!(delimiter_of(b"a,b;c,d"), b',');
        assert_eq!(delimiter_of(b"a\tb"), b'\t');
    }

    #[test]
    fn a_gzip_file_is_inferred_from_its_text() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("calls.csv.gz");
        let mut gz = flate2::write::GzEncoder::new(
            std::fs::File::create(&path).unwrap(),
            flate2::Compression::default(),
        );
        gz.write_all(b"Id;Day;Amount\nA1;2017-05-01;12,50\nA2;2017-05-02;3,00\n")
            .unwrap();
        gz.finish().unwrap();
        let skeleton = infer(&path, None, &Registry::builtin()).unwrap();
        assert!(skeleton.contains("delimiter = \";\""), "{skeleton}");
        assert!(skeleton.contains("2 rows sampled"), "{skeleton}");
        assert!(skeleton.contains("%Y-%m-%d"), "{skeleton}");
    }
}
