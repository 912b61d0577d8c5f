//! `crm import csv FILE --mapping MAPPING.toml`: a generic importer for any CRM export.
//!
//! The mapping (TOML) names the delimiter, a source name, and one or more `[[commands]]` per
//! row. Each command names its aggregate (`account`, `subscription`, …), the domain command
//! (`OpenAccount`), the column with the aggregate id, the column (and date format) that
//! supplies `occurred_at`, and the command's fields, each from a column or a constant, with a
//! type conversion: `string` (default), `int`, `bool` (`true_values`/`false_values`), `date` /
//! `datetime` (chrono `format`), `money` (`currency`, `decimal_separator`), and an optional
//! `map` of source values to domain values (enums; an unmapped value is an error). Blank cells
//! of `optional` fields become `null`. The aggregate decides the events, so domain rules apply;
//! one row may yield several events. The file is read as a stream (see `stream.rs`), but each
//! aggregate's state is kept for the whole file, so later rows can change records earlier rows
//! created. Example: `gateway/tests/fixtures/`.
//!
//! A field may also come from a `template` (`"{Invoice}-{Line}"`, `{row}`, `{line}`) or, for a
//! date, from `parts` (`{ day = "Day", month = "Month", year = 2017 }`, `utc_offset`); a
//! command with `when` conditions applies only to the rows that pass them (equals,
//! not_equals, one_of, blank, above, below, matches). See `rules.rs`.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{NaiveDate, NaiveDateTime};
use crm_domain::registry::AggregateKind;
use crm_domain::values::Currency;
use crm_domain::Registry;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::source::{file_name, parse_minor_units, Header, Row};
use super::{ImportError, Plan, RowError};

pub mod infer;
mod rules;
mod stream;

pub use stream::{run, MappingImport, SendStreamLoader, StreamLoader};

pub use rules::{Condition, When};
use rules::{DateParts, Guard, GuardError, Template};

/// Importer name.
pub const NAME: &str = "csv";

/// A mapping file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mapping {
    /// Field delimiter, one ASCII character (default `,`).
    #[serde(default = "comma")]
    pub delimiter: char,
    /// Column whose value keys the row (ids, audit); default: the first command's id column.
    /// A value that repeats keys its later rows as `VALUE#2`, `VALUE#3`...
    pub key_column: Option<String>,
    /// Commands per row, in order.
    pub commands: Vec<CommandSpec>,
    /// Consecutive rows with the same value in this column make one group: each command runs
    /// once per group, its fields from the group's first row, and `list[].field` fields
    /// collect one list element per row (an invoice spread over its lines). A value that comes
    /// again after its group ended refuses those rows: the file must be sorted by the column.
    pub group_by: Option<String>,
}

fn comma() -> char {
    ','
}

/// One command made from each row.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSpec {
    /// Aggregate (stream category): `account`, `subscription`, …
    pub aggregate: String,
    /// Command name, e.g. `OpenAccount`.
    pub command: String,
    /// The aggregate id.
    pub id: FieldSpec,
    /// Business time of the command.
    pub occurred_at: FieldSpec,
    /// Other fields of the command.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldSpec>,
    /// Only rows that pass these conditions make this command (see [`Condition`]).
    pub when: Option<When>,
    /// With `group_by`: only the group's rows that pass these conditions make elements of
    /// the `list[].field` fields (an invoice's priced lines); a group with none makes no
    /// command.
    pub elements_when: Option<When>,
}

/// Type of a mapped value.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Text as is (trimmed).
    #[default]
    String,
    /// Whole number.
    Int,
    /// Any number, kept as written (`2.5`, `-3`, `1e3`); for custom attributes.
    Number,
    /// Boolean.
    Bool,
    /// Calendar date (`YYYY-MM-DD` in JSON).
    Date,
    /// Instant; a format without time reads midnight UTC.
    Datetime,
    /// Money in minor units.
    Money,
}

/// Where a field's value comes from and how it is converted.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    /// Source column.
    pub column: Option<String>,
    /// A constant instead of a column.
    pub value: Option<toml::Value>,
    /// Text built from columns, `{row}` (the data row's number) and `{line}`, e.g.
    /// `"{Invoice}-{Line}"`, instead of one column.
    pub template: Option<String>,
    /// A date assembled from parts (`date` / `datetime`): `{ day = "Day", month = "Month",
    /// year = 2017 }`, each a column or a constant.
    pub parts: Option<BTreeMap<String, toml::Value>>,
    /// Offset of the local times of `parts`, e.g. `+01:00` (default UTC).
    pub utc_offset: Option<String>,
    /// For `money` and `int`: multiply by the whole number in this column (a line total
    /// from a unit price and a quantity).
    pub times: Option<String>,
    /// For `money`: accept more decimals than the currency has (up to 4 more, e.g. a unit
    /// price of 0.001) and round the result (after `times`) half away from zero.
    #[serde(default)]
    pub round: bool,
    /// Conversion.
    #[serde(default, rename = "type")]
    pub kind: FieldType,
    /// Blank cells become `null` instead of an error.
    #[serde(default)]
    pub optional: bool,
    /// The text a blank cell is read as (before `map` and the conversion), e.g.
    /// `default = "unknown"`; a blank cell is otherwise an error unless `optional`.
    pub default: Option<String>,
    /// Cell texts that mean "no value" and are read as blank (placeholders such as
    /// `Select` or `N/A`), then as `optional` says.
    pub blank_values: Option<Vec<String>>,
    /// A regular expression (Rust `regex` syntax) a non-blank cell must match; its first
    /// capture group (or the whole match) is kept, before `map` and the conversion, e.g.
    /// `extract = "^(\\d+)\\.0$"` reads an id a spreadsheet wrote as `17850.0` as `17850`.
    pub extract: Option<String>,
    /// Source value → domain value, applied before the conversion.
    pub map: Option<BTreeMap<String, String>>,
    /// With `map`: values it does not list pass unchanged (default: they are an error).
    #[serde(default)]
    pub keep_unmapped: bool,
    /// chrono format for `date` / `datetime`.
    pub format: Option<String>,
    /// ISO currency for `money`.
    pub currency: Option<String>,
    /// Decimal mark for `money` (default `.`).
    pub decimal_separator: Option<char>,
    /// Text read as `true` (default `true`, `yes`, `y`, `1`; case-insensitive).
    pub true_values: Option<Vec<String>>,
    /// Text read as `false` (default `false`, `no`, `n`, `0`).
    pub false_values: Option<Vec<String>>,
}

/// Where a resolved field's value comes from.
enum Source {
    Column(usize),
    Constant,
    Template(Template),
    Parts(DateParts),
}

/// A field spec resolved against the file's header.
struct Field<'m> {
    name: String,
    spec: &'m FieldSpec,
    source: Source,
    /// The column of `times`.
    times: Option<usize>,
    /// The compiled `extract` pattern.
    extract: Option<regex::Regex>,
}

impl Field<'_> {
    /// The column errors of this field point at, if it reads one.
    fn column(&self) -> Option<usize> {
        match &self.source {
            Source::Column(i) => Some(*i),
            Source::Template(t) => t.first_column(),
            Source::Constant | Source::Parts(_) => None,
        }
    }
}

fn guard_error(file: &str, e: GuardError) -> ImportError {
    match e {
        GuardError::Mapping(reason) => ImportError::Mapping {
            file: file.to_owned(),
            reason,
        },
        GuardError::Column(e) => e,
    }
}

/// Reads `mapping` and `path` and plans the import, for the domain's aggregates.
///
/// # Errors
/// [`ImportError::Mapping`] for an invalid mapping; [`ImportError`] for unreadable files and
/// missing columns.
pub fn plan(path: &Path, mapping: &Path) -> Result<Plan, ImportError> {
    plan_with(path, mapping, &Registry::builtin())
}

/// As [`plan`], for the aggregates of `registry`, deciding against the file alone.
///
/// # Errors
/// As [`plan`].
pub fn plan_with(path: &Path, mapping: &Path, registry: &Registry) -> Result<Plan, ImportError> {
    plan_with_log(path, mapping, registry, &mut |_| Ok(Vec::new()))
}

/// As [`plan_with`], deciding each row against the state the log already holds for the
/// streams it touches (`load` reads a stream), so a file can continue what an earlier import
/// or a command began. Events this same source (this file's name, or its content under any
/// name) imported before are left out of that state, so importing the file again decides the
/// same events and appends nothing. The plan holds every unit: [`run`] streams instead.
///
/// # Errors
/// As [`plan`]; a stream that cannot be read refuses the row that needs it.
pub fn plan_with_log(
    path: &Path,
    mapping: &Path,
    registry: &Registry,
    load: &mut StreamLoader<'_>,
) -> Result<Plan, ImportError> {
    let import = MappingImport::open(path, mapping, registry)?;
    let mut plan = Plan {
        importer: NAME,
        files: vec![import.file().to_owned()],
        rows_total: Some(import.rows()),
        ..Plan::default()
    };
    plan.notes = import.decide(registry, load, &mut |batch| {
        plan.units.extend(batch.units);
        plan.initial_versions.extend(batch.initial_versions);
        Ok(())
    })?;
    Ok(plan)
}

/// Reads the mapping file and checks it against the command schemas: the mapping, its
/// file name and its delimiter.
fn read_mapping(mapping: &Path, registry: &Registry) -> Result<(Mapping, String, u8), ImportError> {
    let mapping_file = file_name(mapping);
    let bad = |reason: String| ImportError::Mapping {
        file: mapping_file.clone(),
        reason,
    };
    let text = std::fs::read_to_string(mapping).map_err(|source| ImportError::Io {
        path: mapping.display().to_string(),
        source,
    })?;
    let spec: Mapping = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let delimiter = u8::try_from(spec.delimiter)
        .ok()
        .filter(u8::is_ascii)
        .ok_or_else(|| {
            bad(format!(
                "delimiter {:?} is not one ASCII character",
                spec.delimiter
            ))
        })?;
    if spec.commands.is_empty() {
        return Err(bad(
            "no [[commands]]: give at least one command per row".into()
        ));
    }
    check_against_schema(&spec, registry, &mapping_file)?;
    Ok((spec, mapping_file, delimiter))
}

/// The commands of a mapping resolved against a file's header.
struct Compiled<'m> {
    commands: Vec<Command<'m>>,
    /// The column keying each row (ids, audit); `None`: the row's line.
    key_column: Option<usize>,
    /// The `group_by` column.
    group_column: Option<usize>,
}

/// One `[[commands]]` resolved: the spec, its aggregate, its fields (the id first, then
/// `occurred_at`), its `when` and its `elements_when`.
type Command<'m> = (
    &'m CommandSpec,
    &'static dyn AggregateKind,
    Vec<Field<'m>>,
    Option<Guard>,
    Option<Guard>,
);

/// Resolves `spec`'s commands against `file`'s header.
fn compile<'m>(
    spec: &'m Mapping,
    registry: &Registry,
    file: &Header,
    mapping_file: &str,
) -> Result<Compiled<'m>, ImportError> {
    let bad = |reason: String| ImportError::Mapping {
        file: mapping_file.to_owned(),
        reason,
    };
    let mut commands = Vec::new();
    for (i, command) in spec.commands.iter().enumerate() {
        let Some(kind) = registry.get(&command.aggregate) else {
            return Err(bad(format!(
                "command #{} names aggregate `{}`; use one of {}",
                i + 1,
                command.aggregate,
                registry.categories().join(", ")
            )));
        };
        let mut fields = Vec::new();
        let fixed = [
            (id_field(command), &command.id),
            ("occurred_at".to_owned(), &command.occurred_at),
        ];
        let named = command.fields.iter().map(|(k, v)| (k.clone(), v));
        for (name, field) in fixed.into_iter().chain(named) {
            let at = format!("commands[{i}].fields.{name}");
            let source = match (&field.column, &field.value, &field.template, &field.parts) {
                (Some(col), None, None, None) => Source::Column(file.column(col)?),
                (None, Some(_), None, None) => Source::Constant,
                (None, None, Some(text), None) => Source::Template(
                    Template::resolve(text, &at, file).map_err(|e| guard_error(mapping_file, e))?,
                ),
                (None, None, None, Some(parts)) => {
                    if !matches!(field.kind, FieldType::Date | FieldType::Datetime) {
                        return Err(bad(format!(
                            "{at}: `parts` builds a date: give type = \"date\" or \"datetime\""
                        )));
                    }
                    Source::Parts(
                        DateParts::resolve(parts, field.utc_offset.as_deref(), &at, file)
                            .map_err(|e| guard_error(mapping_file, e))?,
                    )
                }
                _ => {
                    return Err(bad(format!(
                        "field `{name}` of command #{} needs exactly one of `column`, `value`, `template` or `parts`",
                        i + 1
                    )))
                }
            };
            if let Some(code) = &field.currency {
                Currency::new(code).map_err(|e| bad(format!("field `{name}`: {e}")))?;
            } else if field.kind == FieldType::Money {
                return Err(bad(format!("money field `{name}` needs a `currency`")));
            }
            let times = match &field.times {
                Some(column) if matches!(field.kind, FieldType::Money | FieldType::Int) => {
                    Some(file.column(column)?)
                }
                Some(_) => {
                    return Err(bad(format!(
                        "{at}.times: only `money` and `int` fields can be multiplied"
                    )))
                }
                None => None,
            };
            let extract = field
                .extract
                .as_deref()
                .map(|pattern| {
                    regex::Regex::new(pattern)
                        .map_err(|e| bad(format!("{at}.extract: not a regular expression: {e}")))
                })
                .transpose()?;
            fields.push(Field {
                name,
                spec: field,
                source,
                times,
                extract,
            });
        }
        let guard = command
            .when
            .as_ref()
            .map(|when| Guard::resolve(when, &format!("commands[{i}].when"), file))
            .transpose()
            .map_err(|e| guard_error(mapping_file, e))?;
        let elements = command
            .elements_when
            .as_ref()
            .map(|w| Guard::resolve(w, &format!("commands[{i}].elements_when"), file))
            .transpose()
            .map_err(|e| guard_error(mapping_file, e))?;
        commands.push((command, kind, fields, guard, elements));
    }
    let key_column = match &spec.key_column {
        Some(col) => Some(file.column(col)?),
        None => commands
            .first()
            .and_then(|c| c.2.first())
            .and_then(Field::column),
    };
    let group_column = spec
        .group_by
        .as_deref()
        .map(|c| file.column(c))
        .transpose()?;
    Ok(Compiled {
        commands,
        key_column,
        group_column,
    })
}

/// Merges the per-row `items` of one list field into `body[list]`, element by element (the
/// fields of one element come from several `list[].x` mappings).
fn merge_list(body: &mut Map<String, Value>, list: &str, items: Vec<Map<String, Value>>) {
    let entry = body
        .entry(list.to_owned())
        .or_insert_with(|| Value::Array(Vec::new()));
    if !entry.is_array() {
        *entry = Value::Array(Vec::new());
    }
    if let Value::Array(existing) = entry {
        for (i, item) in items.into_iter().enumerate() {
            if existing.len() <= i {
                existing.push(Value::Object(Map::new()));
            }
            if let Some(Value::Object(element)) = existing.get_mut(i) {
                element.extend(item);
            }
        }
    }
}

/// Puts `value` at the dotted `path` of `body` (`personal.email` into the `personal` object).
fn insert_path(body: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            body.insert(path.to_owned(), value);
        }
        Some((head, rest)) => {
            let entry = body
                .entry(head.to_owned())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            if let Value::Object(inner) = entry {
                insert_path(inner, rest, value);
            }
        }
    }
}

/// Replaces every object built from dotted fields whose values are all null by null (an
/// optional nested value the row leaves blank).
fn null_empty_objects(body: &mut Map<String, Value>) {
    for value in body.values_mut() {
        if let Value::Object(inner) = value {
            null_empty_objects(inner);
            if inner.values().all(Value::is_null) {
                *value = Value::Null;
            }
        }
    }
}

/// The field of a command's body that holds its aggregate's id: `{aggregate}_id`, or `id`
/// for `SetAttributes`, which every aggregate takes.
fn id_field(command: &CommandSpec) -> String {
    if command.command == crm_domain::attributes::SET_ATTRIBUTES {
        "id".to_owned()
    } else {
        format!("{}_id", command.aggregate)
    }
}

/// Checks `spec` against the schema of the commands it names, before any row is read:
/// every aggregate and command exists, every field is a field of its command, no required
/// field is left out, and every constant or `map` target of an enum field is one of its
/// values. Each error names the key (`commands[2].fields.industy`) and the nearest valid name.
fn check_against_schema(
    spec: &Mapping,
    registry: &Registry,
    file: &str,
) -> Result<(), ImportError> {
    use crm_domain::registry::nearest_name;
    let bad = |reason: String| ImportError::Mapping {
        file: file.to_owned(),
        reason,
    };
    let types = crm_app::schema::catalog(registry);
    let suggest = |given: &str, known: &mut dyn Iterator<Item = &str>| {
        nearest_name(given, known)
            .map(|n| format!(" (did you mean `{n}`?)"))
            .unwrap_or_default()
    };
    for (i, command) in spec.commands.iter().enumerate() {
        let at = format!("commands[{i}]");
        let Some(kind) = registry.get(&command.aggregate) else {
            return Err(bad(format!(
                "{at}.aggregate: there is no aggregate `{}`{}; the aggregates are {}",
                command.aggregate,
                suggest(&command.aggregate, &mut registry.categories().into_iter()),
                registry.categories().join(", ")
            )));
        };
        let Some(schema) = types.iter().find(|t| {
            t.kind == crm_app::schema::TypeKind::Command
                && t.aggregate == kind.category()
                && t.name == command.command
        }) else {
            return Err(bad(format!(
                "{at}.command: aggregate `{}` has no command `{}`{}; its commands are {} (`crm schema` shows each one's fields)",
                command.aggregate,
                command.command,
                suggest(&command.command, &mut kind.command_types().iter().copied()),
                kind.command_types().join(", ")
            )));
        };
        for (key, spec) in [("id", &command.id), ("occurred_at", &command.occurred_at)] {
            if spec.optional {
                return Err(bad(format!(
                    "{at}.{key}: cannot be optional: every event needs {}; filter blank rows out of the file, or give a constant `value`",
                    if key == "id" { "the id of its aggregate" } else { "a business time" }
                )));
            }
        }
        let fields = crm_app::schema::fields(&schema.schema);
        let id_field = id_field(command);
        let given: Vec<&str> = command
            .fields
            .keys()
            .map(|k| k.split('.').next().unwrap_or(k).trim_end_matches("[]"))
            .chain([id_field.as_str(), "occurred_at"])
            .collect();
        for full in command.fields.keys() {
            let (name, sub) = match full.split_once('.') {
                Some((head, rest)) => (head.trim_end_matches("[]").to_owned(), Some(rest)),
                None => (full.clone(), None),
            };
            let name = &name;
            if name == crm_domain::attributes::ATTRIBUTES_FIELD {
                let attribute = sub.unwrap_or_default();
                if !crm_domain::attributes::valid_name(attribute) {
                    return Err(bad(format!(
                        "{at}.fields.{full}: name a custom attribute as `attributes.NAME`, NAME in lower_snake_case (a-z, 0-9, _), e.g. `attributes.lead_origin`"
                    )));
                }
                continue;
            }
            if let (Some(sub), Some(parent)) = (
                sub,
                schema
                    .schema
                    .get("properties")
                    .and_then(|p| p.get(name.as_str())),
            ) {
                let known = crm_app::schema::field_names(parent);
                let first = sub.split('.').next().unwrap_or(sub);
                if !known.is_empty() && !known.iter().any(|k| k == first) {
                    return Err(bad(format!(
                        "{at}.fields.{full}: `{name}` of `{}` has no field `{first}`{}; its fields are {}",
                        command.command,
                        suggest(first, &mut known.iter().map(String::as_str)),
                        known.join(", ")
                    )));
                }
            }
            if name == &id_field || name == "occurred_at" {
                return Err(bad(format!(
                    "{at}.fields.{name}: given by `{}` of the command already; remove it from [commands.fields]",
                    if name == "occurred_at" { "occurred_at" } else { "id" }
                )));
            }
            if !fields.iter().any(|f| &f.name == name) {
                return Err(bad(format!(
                    "{at}.fields.{name}: `{}` has no field `{name}`{}; its fields are {} (`crm schema {}`)",
                    command.command,
                    suggest(name, &mut fields.iter().map(|f| f.name.as_str())),
                    fields.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", "),
                    command.command
                )));
            }
        }
        let missing: Vec<&str> = fields
            .iter()
            .filter(|f| f.required && !given.contains(&f.name.as_str()))
            .map(|f| f.name.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(bad(format!(
                "{at}: `{}` needs {} which the mapping does not give; map a column or a constant `value` to each (`crm schema {}`)",
                command.command,
                missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", "),
                command.command
            )));
        }
        for (name, field) in &command.fields {
            let Some(values) = schema
                .schema
                .get("properties")
                .and_then(|p| p.get(name))
                .and_then(crm_app::schema::enum_values)
            else {
                continue;
            };
            let targets = field.map.iter().flat_map(|m| m.values().cloned()).chain(
                field
                    .value
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_owned)),
            );
            for target in targets {
                if !values.contains(&target) {
                    return Err(bad(format!(
                        "{at}.fields.{name}: `{target}` is not a value of `{name}`{}; the values are {}",
                        suggest(&target, &mut values.iter().map(String::as_str)),
                        values.join(", ")
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The part of a cell `extract` keeps (the whole cell without it).
fn extract(row: &Row<'_>, index: usize, field: &Field<'_>, cell: &str) -> Result<String, RowError> {
    let Some(re) = &field.extract else {
        return Ok(cell.to_owned());
    };
    match re.captures(cell) {
        Some(found) => Ok(found
            .get(1)
            .or_else(|| found.get(0))
            .map_or_else(String::new, |m| m.as_str().to_owned())),
        None => Err(row.error(
            index,
            format!(
                "`{cell}` does not match the `extract` pattern `{}` of `{}`; fix the cell or the pattern",
                re.as_str(),
                field.name
            ),
        )),
    }
}

fn convert(row: &Row<'_>, number: u64, field: &Field<'_>) -> Result<Value, RowError> {
    let spec = field.spec;
    let blank = |index: Option<usize>| {
        let reason = format!(
            "`{}` is required but the cell is blank; fill it in or mark the field optional",
            field.name
        );
        match index {
            Some(i) => row.error(i, reason),
            None => row.row_error(reason),
        }
    };
    let (raw, index) = match &field.source {
        Source::Column(index) => match row
            .opt(*index)
            .filter(|v| {
                !spec
                    .blank_values
                    .as_ref()
                    .is_some_and(|b| b.iter().any(|p| p == v))
            })
            .map(|cell| extract(row, *index, field, cell))
            .transpose()?
            .or_else(|| spec.default.clone())
        {
            Some(v) => (v, *index),
            None if spec.optional => return Ok(Value::Null),
            None => return Err(blank(Some(*index))),
        },
        Source::Template(template) => match template
            .render(row, number)
            .or_else(|| spec.default.clone())
        {
            Some(text) => (text, template.first_column().unwrap_or(0)),
            None if spec.optional => return Ok(Value::Null),
            None => return Err(blank(template.first_column())),
        },
        Source::Parts(parts) => {
            return match parts.instant(row)? {
                Some(t) if spec.kind == FieldType::Date => {
                    Ok(Value::String(t.date_naive().to_string()))
                }
                Some(t) => Ok(Value::String(t.to_rfc3339())),
                None if spec.optional => Ok(Value::Null),
                None => Err(blank(None)),
            };
        }
        Source::Constant => match &spec.value {
            // Constants: strings go through the conversion, other TOML values are taken as is.
            Some(toml::Value::String(s)) => (s.clone(), 0),
            Some(other) => {
                return serde_json::to_value(other).map_err(|e| row.row_error(e.to_string()))
            }
            None => return Ok(Value::Null),
        },
    };
    let err = |reason: String| {
        if field.column().is_some() {
            row.error(index, reason)
        } else {
            row.row_error(format!("constant of `{}`: {reason}", field.name))
        }
    };
    let text = match &spec.map {
        Some(map) if spec.keep_unmapped => map.get(&raw).cloned().unwrap_or(raw),
        Some(map) => map.get(&raw).cloned().ok_or_else(|| {
            err(format!(
                "unknown value `{raw}`; the mapping of `{}` knows: {}",
                field.name,
                map.keys()
                    .map(String::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?,
        None => raw,
    };
    let factor = match field.times {
        None => 1i64,
        Some(column) => {
            let cell = row.raw(column).trim();
            cell.parse::<i64>().map_err(|_| {
                row.error(
                    column,
                    format!(
                        "{cell:?} is not a whole number to multiply `{}` by",
                        field.name
                    ),
                )
            })?
        }
    };
    let overflow = || err(format!("`{}` times {factor} is too large", field.name));
    match spec.kind {
        FieldType::String => Ok(Value::String(text)),
        FieldType::Number => serde_json::from_str::<serde_json::Number>(&text)
            .map(Value::Number)
            .map_err(|_| err(format!("{text:?} is not a number"))),
        FieldType::Int => text
            .parse::<i64>()
            .map_err(|_| err(format!("{text:?} is not a whole number")))?
            .checked_mul(factor)
            .map(Value::from)
            .ok_or_else(overflow),
        FieldType::Bool => {
            let lower = text.to_lowercase();
            let yes = spec
                .true_values
                .clone()
                .unwrap_or_else(|| ["true", "yes", "y", "1"].map(str::to_owned).to_vec());
            let no = spec
                .false_values
                .clone()
                .unwrap_or_else(|| ["false", "no", "n", "0"].map(str::to_owned).to_vec());
            if yes.iter().any(|v| v.to_lowercase() == lower) {
                Ok(Value::Bool(true))
            } else if no.iter().any(|v| v.to_lowercase() == lower) {
                Ok(Value::Bool(false))
            } else {
                Err(err(format!(
                    "{text:?} is not a boolean; true is one of {yes:?}, false one of {no:?}"
                )))
            }
        }
        FieldType::Date | FieldType::Datetime => {
            let format = spec
                .format
                .as_deref()
                .unwrap_or(if spec.kind == FieldType::Date {
                    "%Y-%m-%d"
                } else {
                    "%Y-%m-%dT%H:%M:%S"
                });
            // Without a format, an RFC 3339 instant with its offset is read as well.
            let rfc3339 = spec
                .format
                .is_none()
                .then(|| chrono::DateTime::parse_from_rfc3339(&text).ok())
                .flatten()
                .map(|t| t.naive_utc());
            let instant = rfc3339
                .ok_or(())
                .or_else(|()| NaiveDateTime::parse_from_str(&text, format))
                .or_else(|_| {
                    NaiveDate::parse_from_str(&text, format)
                        .map(|d| d.and_time(chrono::NaiveTime::MIN))
                })
                .map_err(|e| {
                    err(format!(
                        "{text:?} is not a date in the format {format:?} ({e})"
                    ))
                })?;
            if spec.kind == FieldType::Date {
                Ok(Value::String(instant.date().to_string()))
            } else {
                Ok(Value::String(instant.and_utc().to_rfc3339()))
            }
        }
        FieldType::Money => {
            let code = spec.currency.as_deref().unwrap_or_default();
            let currency = Currency::new(code).map_err(|e| err(e.to_string()))?;
            // With `round`, four more decimals are read and the product rounded back.
            let extra: u32 = if spec.round { 4 } else { 0 };
            let scaled = parse_minor_units(
                &text,
                spec.decimal_separator.unwrap_or('.'),
                currency.minor_unit_exponent() + extra,
            )
            .map_err(|e| {
                err(if spec.round {
                    e.to_string()
                } else {
                    format!("{e}; add round = true to the field to round it")
                })
            })?
            .checked_mul(factor)
            .ok_or_else(overflow)?;
            let divisor = 10_i64.pow(extra);
            let half = divisor / 2;
            let units = if divisor == 1 {
                scaled
            } else if scaled >= 0 {
                (scaled + half) / divisor
            } else {
                (scaled - half) / divisor
            };
            Ok(json!({ "minor_units": units, "currency": code }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name)
    }

    /// The error of planning the contracts fixture with its mapping changed by `edit`.
    fn refusal(from: &str, to: &str) -> String {
        let text = std::fs::read_to_string(fixture("contracts.toml")).unwrap();
        assert!(text.contains(from), "{from}");
        let dir = tempfile::tempdir().unwrap();
        let mapping = dir.path().join("edited.toml");
        std::fs::write(&mapping, text.replacen(from, to, 1)).unwrap();
        match plan(&fixture("contracts.csv"), &mapping) {
            Err(e) => e.to_string(),
            Ok(_) => "accepted".to_owned(),
        }
    }

    #[test]
    fn a_mapping_is_checked_against_the_command_schemas_before_any_row() {
        let e = refusal("industry = {", "industy = {");
        assert!(
            e.contains("edited.toml")
                && e.contains("commands[0].fields.industy")
                && e.contains("did you mean `industry`"),
            "{e}"
        );
        let e = refusal("command = \"OpenAccount\"", "command = \"OpenAcount\"");
        assert!(
            e.contains("commands[0].command") && e.contains("did you mean `OpenAccount`"),
            "{e}"
        );
        let e = refusal(
            "aggregate = \"subscription\"",
            "aggregate = \"subscripton\"",
        );
        assert!(e.contains("did you mean `subscription`"), "{e}");
        let e = refusal("name = { column = \"Firma\" }\n", "");
        assert!(
            e.contains("commands[0]") && e.contains("needs `name`"),
            "{e}"
        );
        let e = refusal(
            "kind = { value = \"product\" }",
            "kind = { value = \"produkt\" }",
        );
        assert!(
            e.contains("commands[1].fields.kind")
                && e.contains("`produkt` is not a value")
                && e.contains("did you mean `product`"),
            "{e}"
        );
        // Unknown keys of the mapping itself are refused by the TOML reader, with the line.
        let e = refusal("key_column = \"Vertrag\"", "key_colum = \"Vertrag\"");
        assert!(e.contains("key_colum") && e.contains("line"), "{e}");
        let e = refusal(
            "occurred_at = { column = \"Beginn\", type = \"datetime\", format = \"%d.%m.%Y\" }",
            "occurred_at = { column = \"Beginn\", type = \"datetime\", format = \"%d.%m.%Y\", optional = true }",
        );
        assert!(
            e.contains("commands[0].occurred_at: cannot be optional"),
            "{e}"
        );
        assert_eq!(refusal("delimiter", "delimiter"), "accepted");
    }
}

#[cfg(test)]
mod feature_tests {
    use super::*;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name)
    }

    /// Each row's event types and payloads, from planning `csv` with `mapping`.
    fn planned(csv: &Path, mapping: &Path) -> Vec<Result<Vec<(String, Value)>, RowError>> {
        plan(csv, mapping)
            .unwrap()
            .units
            .into_iter()
            .map(|u| {
                u.map(|unit| {
                    unit.events
                        .into_iter()
                        .map(|s| {
                            (
                                s.event.event_type.clone(),
                                serde_json::from_slice(&s.event.payload).unwrap(),
                            )
                        })
                        .collect()
                })
            })
            .collect()
    }

    #[test]
    fn conditions_templates_date_parts_and_nested_fields() {
        let rows = planned(&fixture("campaign.csv"), &fixture("campaign.toml"));
        let types = |i: usize| -> Vec<String> {
            rows[i]
                .as_ref()
                .unwrap()
                .iter()
                .map(|(t, _)| t.clone())
                .collect()
        };
        // "yes" with more than one call: captured, qualified, converted.
        assert_eq!(types(0), ["LeadCaptured", "LeadQualified", "LeadConverted"]);
        // "no": captured and disqualified.
        assert_eq!(types(1), ["LeadCaptured", "LeadDisqualified"]);
        assert_eq!(types(2), ["LeadCaptured", "LeadQualified", "LeadConverted"]);
        // Another outcome: captured only.
        assert_eq!(types(3), ["LeadCaptured"]);
        let (_, captured) = &rows[0].as_ref().unwrap()[0];
        assert_eq!(captured["lead_id"], "bank-7");
        // 5 May 2017 09:00 at +01:00.
        assert_eq!(captured["occurred_at"], "2017-05-05T08:00:00Z");
        assert_eq!(captured["personal"]["full_name"], "Ana Row");
        assert_eq!(captured["personal"]["phone"], "+44 20 7000 1");
        let (_, converted) = &rows[2].as_ref().unwrap()[2];
        assert_eq!(converted["contact_id"], "contact-9-3");
        assert_eq!(converted["occurred_at"], "2017-06-07T11:00:00Z");
        // A blank optional nested field is null, the others are kept.
        let (_, no_email) = &rows[3].as_ref().unwrap()[0];
        assert_eq!(no_email["personal"]["email"], Value::Null);
        assert_eq!(no_email["personal"]["full_name"], "Di Row");
    }

    #[test]
    fn a_bad_condition_template_or_date_part_is_named() {
        let text = std::fs::read_to_string(fixture("campaign.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let attempt = |from: &str, to: &str| -> String {
            assert!(text.contains(from), "{from}");
            let mapping = dir.path().join("campaign.toml");
            std::fs::write(&mapping, text.replacen(from, to, 1)).unwrap();
            match plan(&fixture("campaign.csv"), &mapping) {
                Err(e) => e.to_string(),
                Ok(p) => p
                    .units
                    .iter()
                    .find_map(|u| u.as_ref().err().map(ToString::to_string))
                    .unwrap_or_else(|| "accepted".to_owned()),
            }
        };
        let e = attempt(
            "equals = \"yes\" }\n\n[commands.fields]\nbudget",
            "equals = \"yes\", blank = true }\n\n[commands.fields]\nbudget",
        );
        assert!(
            e.contains("commands[1].when[0]") && e.contains("exactly one test"),
            "{e}"
        );
        let e = attempt(
            "{ template = \"acct-{Id}\" }",
            "{ template = \"acct-{Idd}\" }",
        );
        assert!(e.contains("missing column `Idd`"), "{e}");
        let e = attempt(
            "{ template = \"acct-{Id}\" }",
            "{ template = \"acct-{Id\" }",
        );
        assert!(e.contains("unclosed"), "{e}");
        let e = attempt("year = 2017, hour = 9 }", "hour = 9 }");
        assert!(
            e.contains("commands[0].fields.occurred_at.parts") && e.contains("`year` is missing"),
            "{e}"
        );
        let e = attempt("\"personal.email\"", "\"personal.emial\"");
        assert!(
            e.contains("has no field `emial`") && e.contains("did you mean `email`"),
            "{e}"
        );
        let e = attempt("above = 1 }", "above = 1, matches = \"(\" }");
        assert!(
            e.contains("exactly one test") || e.contains("regular expression"),
            "{e}"
        );
        // A month that is no month: the row is refused with its place.
        let csv = dir.path().join("bad-month.csv");
        std::fs::write(
            &csv,
            std::fs::read_to_string(fixture("campaign.csv"))
                .unwrap()
                .replace("9;7;Jun", "9;7;Junk"),
        )
        .unwrap();
        let rows = planned(&csv, &fixture("campaign.toml"));
        let refused = rows[2].as_ref().unwrap_err().to_string();
        assert!(
            refused.contains("bad-month.csv:4") && refused.contains("is not a month"),
            "{refused}"
        );
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;
    use crate::Unit;

    fn fixture(name: &str) -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures")
            .join(name)
    }

    #[test]
    fn rows_of_one_key_make_one_command_with_a_list() {
        let plan = plan(&fixture("invoices.csv"), &fixture("invoices.toml")).unwrap();
        assert_eq!(plan.rows(), 8);
        let units: Vec<&Unit> = plan.units.iter().map(|u| u.as_ref().unwrap()).collect();
        assert_eq!(units.len(), 3, "three invoices");
        // Consecutive rows of one invoice make its order.
        assert_eq!(units.iter().map(|u| u.rows).collect::<Vec<_>>(), [4, 2, 2]);
        let order: Value = serde_json::from_slice(&units[0].events[0].event.payload).unwrap();
        assert_eq!(units[0].events[0].event.event_type, "OrderPlaced");
        assert_eq!(order["order_id"], "536365");
        assert_eq!(order["account_id"], "customer-17850");
        let lines = order["lines"].as_array().unwrap();
        assert_eq!(lines[0]["product"], "85123A");
        assert_eq!(lines[0]["quantity"], 6);
        // 6 × 2.55 = 15.30 GBP; 8 × 2.75 = 22.00 GBP.
        assert_eq!(lines[0]["amount"]["minor_units"], 1530);
        assert_eq!(lines[2]["amount"]["minor_units"], 2200);
        assert_eq!(order["occurred_at"], "2010-12-01T08:26:00Z");
        // 1000 × 0.0045 = 4.50 GBP, read with more decimals than pence and rounded.
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[3]["amount"]["minor_units"], 450);
        // A mapped code is renamed, the others kept.
        let second: Value = serde_json::from_slice(&units[1].events[0].event.payload).unwrap();
        assert_eq!(second["lines"][0]["product"], "22633");
        assert_eq!(second["lines"][1]["product"], "BANK-CHARGES");
    }

    #[test]
    fn rows_of_a_group_interrupted_by_others_still_make_one_unit() {
        // The second invoice's bank charges after the third invoice (as a cancellation can
        // interrupt an invoice's lines in a real export): still one order of two lines,
        // decided in the order of the groups' first rows.
        let text = std::fs::read_to_string(fixture("invoices.csv")).unwrap();
        let mut lines: Vec<&str> = text.lines().collect();
        let bank = lines.remove(6);
        lines.push(bank);
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("interleaved.csv");
        std::fs::write(&csv, lines.join("\r\n") + "\r\n").unwrap();
        let plan = plan(&csv, &fixture("invoices.toml")).unwrap();
        let units: Vec<_> = plan.units.iter().map(|u| u.as_ref().unwrap()).collect();
        assert_eq!(units.iter().map(|u| u.rows).collect::<Vec<_>>(), [4, 2, 2]);
        let second: Value = serde_json::from_slice(&units[1].events[0].event.payload).unwrap();
        assert_eq!(second["order_id"], "536366");
        assert_eq!(second["lines"][1]["product"], "BANK-CHARGES");
    }

    #[test]
    fn a_group_key_that_comes_again_after_its_group_is_refused_with_both_places() {
        // Invoice 536365 once, then GROUP_GAP_ROWS + 1 one-line invoices, then 536365 again.
        let text = std::fs::read_to_string(fixture("invoices.csv")).unwrap();
        let mut lines: Vec<String> = text.lines().take(2).map(str::to_owned).collect();
        let others = usize::try_from(stream::GROUP_GAP_ROWS).unwrap() + 1;
        for i in 0..others {
            lines.push(format!(
                "6{i:05},22633,HAND WARMER UNION JACK,6,12/1/2010 8:28,1.85,17850,United Kingdom"
            ));
        }
        lines.push(text.lines().nth(2).unwrap().to_owned());
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("unsorted.csv");
        std::fs::write(&csv, lines.join("\r\n") + "\r\n").unwrap();
        let plan = plan(&csv, &fixture("invoices.toml")).unwrap();
        assert_eq!(
            plan.units.len(),
            others + 2,
            "every group and the row that came again"
        );
        assert!(plan.units[..=others].iter().all(Result::is_ok));
        let last_line = others + 3;
        let refused = plan.units[others + 1].as_ref().unwrap_err().to_string();
        assert!(
            refused.starts_with(&format!(
                "unsorted.csv:{last_line}: column 1 `InvoiceNo`: `536365` comes again"
            )) && refused.contains("lines 2-2")
                && refused.contains("at most 1000 other rows")
                && refused.contains("sort the file by `InvoiceNo`"),
            "{refused}"
        );
    }

    #[test]
    fn more_decimals_than_the_currency_need_round() {
        let text = std::fs::read_to_string(fixture("invoices.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mapping = dir.path().join("invoices.toml");
        std::fs::write(&mapping, text.replace(", round = true", "")).unwrap();
        let plan = plan(&fixture("invoices.csv"), &mapping).unwrap();
        let refused = plan.units[0].as_ref().unwrap_err().to_string();
        assert!(
            refused.contains("0.0045") && refused.contains("round = true"),
            "{refused}"
        );
    }

    #[test]
    fn extract_keeps_a_capture_of_the_cell_and_names_a_cell_that_does_not_match() {
        // Customer ids as a spreadsheet writes them (`17850.0`), a blank one as `unknown`.
        let text = std::fs::read_to_string(fixture("invoices.csv")).unwrap();
        let text = text
            .replacen(",17850,", ",17850.0,", 4)
            .replace(",13047,", ",,");
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("floats.csv");
        std::fs::write(&csv, &text).unwrap();
        let mapping = dir.path().join("floats.toml");
        let spec = std::fs::read_to_string(fixture("invoices.toml")).unwrap().replace(
            r#"account_id = { template = "customer-{CustomerID}" }"#,
            r#"account_id = { column = "CustomerID", extract = "^(\\d+)(\\.0+)?$", default = "unknown" }"#,
        );
        std::fs::write(&mapping, &spec).unwrap();
        let planned = plan(&csv, &mapping).unwrap();
        let accounts: Vec<String> = planned
            .units
            .iter()
            .map(|u| {
                let payload = &u.as_ref().unwrap().events[0].event.payload;
                let order: Value = serde_json::from_slice(payload).unwrap();
                order["account_id"].as_str().unwrap().to_owned()
            })
            .collect();
        assert_eq!(accounts, ["17850", "17850", "unknown"]);
        // A cell the pattern does not match is refused with the pattern.
        std::fs::write(&csv, text.replacen(",17850.0,", ",C-17850,", 1)).unwrap();
        let planned = plan(&csv, &mapping).unwrap();
        let refused = planned.units[0].as_ref().unwrap_err().to_string();
        assert!(
            refused.contains("`C-17850` does not match the `extract` pattern"),
            "{refused}"
        );
        // A pattern that is no regular expression is a mapping error.
        std::fs::write(&mapping, spec.replace(r"^(\\d+)(\\.0+)?$", "^(")).unwrap();
        let e = plan(&csv, &mapping).unwrap_err().to_string();
        assert!(e.contains("extract: not a regular expression"), "{e}");
    }

    #[test]
    fn a_list_field_the_command_lacks_is_refused() {
        let text = std::fs::read_to_string(fixture("invoices.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mapping = dir.path().join("invoices.toml");
        std::fs::write(
            &mapping,
            text.replace("\"lines[].quantity\"", "\"lines[].quantty\""),
        )
        .unwrap();
        let e = plan(&fixture("invoices.csv"), &mapping)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fields.lines[].quantty") && e.contains("did you mean `quantity`"),
            "{e}"
        );
    }
}
