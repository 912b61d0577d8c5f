//! From an event type's JSON Schema to typed columns, and from a payload to the cells of one
//! row.
//!
//! A string is `Utf8` (`Timestamp` for `format: date-time`, `Date32` for `format: date`),
//! an integer `Int64`, a number `Float64`, a boolean `Boolean`, an enum `Utf8`. An object
//! with named properties is flattened: its fields become columns named `<field>_<inner>`
//! (alternatives of objects, such as a tagged enum, give the union of their fields). Lists,
//! free-form maps and values of mixed types are JSON text. A field that clashes with an
//! envelope column is prefixed `payload_`. Personal fields get no column at all.

use std::collections::BTreeMap;

use arrow_schema::{DataType, TimeUnit};
use chrono::{DateTime, NaiveDate};
use crm_app::schema::{catalog, TypeKind};
use crm_domain::definitions::{
    MetricDefaultChanged, MetricDefined, ScorecardDefined, ScorecardStatusChanged,
    METRIC_DEFAULT_CHANGED, METRIC_DEFAULT_CHANGED_VERSION, METRIC_DEFINED, METRIC_DEFINED_VERSION,
    SCORECARD_DEFINED, SCORECARD_DEFINED_VERSION, SCORECARD_STATUS_CHANGED,
    SCORECARD_STATUS_CHANGED_VERSION,
};
use crm_domain::Registry;
use schemars::generate::SchemaSettings;
use schemars::SchemaGenerator;
use serde::Serialize;
use serde_json::Value;

use crate::error::ExportError;
use crate::events::COMMON_COLUMNS;

/// Longest text of a value quoted in an error.
const QUOTED_VALUE_CHARS_MAX: usize = 80;
/// Prefix of a payload column whose name an envelope column has.
const CLASH_PREFIX: &str = "payload_";

/// The type of a payload column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnType {
    /// Text (strings, enums).
    Utf8,
    /// Integers.
    Int64,
    /// Numbers.
    Float64,
    /// Booleans.
    Boolean,
    /// `format: date-time`: microseconds since 1970, UTC.
    Timestamp,
    /// `format: date`: days since 1970.
    Date,
    /// Lists, maps and values of mixed types, as JSON text.
    Json,
}

impl ColumnType {
    /// The Arrow type of the column.
    #[must_use]
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Utf8 | ColumnType::Json => DataType::Utf8,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ColumnType::Date => DataType::Date32,
        }
    }

    /// The type in words, for errors.
    #[must_use]
    pub fn words(self) -> &'static str {
        match self {
            ColumnType::Utf8 => "a string",
            ColumnType::Int64 => "a 64-bit integer",
            ColumnType::Float64 => "a number",
            ColumnType::Boolean => "a boolean",
            ColumnType::Timestamp => "an RFC 3339 date-time",
            ColumnType::Date => "a date (YYYY-MM-DD)",
            ColumnType::Json => "any JSON",
        }
    }
}

/// One payload column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PayloadColumn {
    /// The column's name (`amount_minor_units`).
    pub name: String,
    /// The payload field it holds, as a dotted path (`amount.minor_units`).
    pub path: String,
    /// Its type.
    pub ty: ColumnType,
}

/// How one event type's payload becomes columns.
#[derive(Debug, Clone)]
pub struct TypePlan {
    /// The event type.
    pub event_type: String,
    /// Its current schema version.
    pub schema_version: u16,
    /// The payload columns, in the order of the schema's field names (alphabetical).
    pub columns: Vec<PayloadColumn>,
    /// The personal fields that get no column (dotted paths).
    pub withheld: Vec<String>,
    root: Node,
}

#[derive(Debug, Clone)]
enum Node {
    Leaf(usize),
    Object(BTreeMap<String, Node>),
    Withheld,
}

/// One cell of a row.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Microseconds since 1970, UTC.
    Micros(i64),
    /// Days since 1970.
    Days(i32),
}

/// Why a payload does not fit its plan.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum FieldError {
    Unknown(String),
    BadValue {
        field: String,
        expected: &'static str,
        found: String,
    },
}

/// The plan of every event type this build knows: the domain's catalog (each aggregate's
/// events and `AttributesSet`) and the definition events, by type name.
///
/// # Errors
/// [`ExportError::Plan`] when a schema's flattened names clash (a bug of this build).
pub fn plan_catalog() -> Result<BTreeMap<String, TypePlan>, ExportError> {
    let mut plans = BTreeMap::new();
    for t in catalog(&Registry::builtin()) {
        if t.kind != TypeKind::Event || plans.contains_key(&t.name) {
            continue;
        }
        let version = t.schema_version.unwrap_or(1);
        let plan = TypePlan::new(&t.name, version, &t.schema, &t.personal_fields)?;
        plans.insert(t.name, plan);
    }
    let mut settings = SchemaSettings::draft2020_12();
    settings.inline_subschemas = true;
    settings.meta_schema = None;
    let mut generator = SchemaGenerator::new(settings);
    let definitions = [
        (
            METRIC_DEFINED,
            METRIC_DEFINED_VERSION,
            generator.root_schema_for::<MetricDefined>(),
        ),
        (
            METRIC_DEFAULT_CHANGED,
            METRIC_DEFAULT_CHANGED_VERSION,
            generator.root_schema_for::<MetricDefaultChanged>(),
        ),
        (
            SCORECARD_DEFINED,
            SCORECARD_DEFINED_VERSION,
            generator.root_schema_for::<ScorecardDefined>(),
        ),
        (
            SCORECARD_STATUS_CHANGED,
            SCORECARD_STATUS_CHANGED_VERSION,
            generator.root_schema_for::<ScorecardStatusChanged>(),
        ),
    ];
    for (name, version, schema) in definitions {
        let plan = TypePlan::new(name, version, &schema.to_value(), &[])?;
        plans.insert(name.to_owned(), plan);
    }
    Ok(plans)
}

impl TypePlan {
    /// The plan of `event_type` from its payload schema; `personal` are the dotted paths
    /// that get no column.
    ///
    /// # Errors
    /// [`ExportError::Plan`] when two fields flatten to one column name.
    pub fn new(
        event_type: &str,
        schema_version: u16,
        schema: &Value,
        personal: &[String],
    ) -> Result<TypePlan, ExportError> {
        let mut columns = Vec::new();
        let mut withheld = Vec::new();
        let root = match shape(&[schema]) {
            Shape::Object(props) => plan_object(&props, &[], personal, &mut columns, &mut withheld),
            Shape::Scalar(_) => {
                return Err(ExportError::Plan {
                    event_type: event_type.to_owned(),
                    reason: "the payload is not an object".to_owned(),
                })
            }
        };
        let mut seen = std::collections::BTreeSet::new();
        for column in &mut columns {
            if COMMON_COLUMNS.contains(&column.name.as_str()) {
                column.name = format!("{CLASH_PREFIX}{}", column.name);
            }
            if !seen.insert(column.name.clone()) {
                return Err(ExportError::Plan {
                    event_type: event_type.to_owned(),
                    reason: format!("two fields flatten to the column `{}`", column.name),
                });
            }
        }
        Ok(TypePlan {
            event_type: event_type.to_owned(),
            schema_version,
            columns,
            withheld,
            root,
        })
    }

    /// The cells of `payload` (the current version's JSON), one per column.
    pub(crate) fn cells(&self, payload: &Value) -> Result<Vec<Cell>, FieldError> {
        let mut cells = vec![Cell::Null; self.columns.len()];
        self.walk(&self.root, payload, "", &mut cells)?;
        Ok(cells)
    }

    fn walk(
        &self,
        node: &Node,
        value: &Value,
        path: &str,
        cells: &mut [Cell],
    ) -> Result<(), FieldError> {
        match node {
            Node::Withheld => Ok(()),
            Node::Leaf(index) => {
                let Some(column) = self.columns.get(*index) else {
                    return Ok(());
                };
                let cell = convert(value, column.ty).ok_or_else(|| FieldError::BadValue {
                    field: path.to_owned(),
                    expected: column.ty.words(),
                    found: quoted(value),
                })?;
                if let Some(slot) = cells.get_mut(*index) {
                    *slot = cell;
                }
                Ok(())
            }
            Node::Object(children) => match value {
                Value::Null => Ok(()),
                Value::Object(fields) => {
                    for (name, inner) in fields {
                        let inner_path = if path.is_empty() {
                            name.clone()
                        } else {
                            format!("{path}.{name}")
                        };
                        let Some(child) = children.get(name) else {
                            return Err(FieldError::Unknown(inner_path));
                        };
                        self.walk(child, inner, &inner_path, cells)?;
                    }
                    Ok(())
                }
                other => Err(FieldError::BadValue {
                    field: if path.is_empty() {
                        "(payload)".to_owned()
                    } else {
                        path.to_owned()
                    },
                    expected: "an object",
                    found: quoted(other),
                }),
            },
        }
    }
}

/// What a schema (or a set of alternatives) is, as columns see it.
enum Shape<'a> {
    Scalar(ColumnType),
    /// Properties in the order of their names, each with its schemas (one per alternative naming it).
    Object(Vec<(String, Vec<&'a Value>)>),
}

fn plan_object(
    props: &[(String, Vec<&Value>)],
    path: &[&str],
    personal: &[String],
    columns: &mut Vec<PayloadColumn>,
    withheld: &mut Vec<String>,
) -> Node {
    let mut children = BTreeMap::new();
    for (name, schemas) in props {
        let mut inner: Vec<&str> = path.to_vec();
        inner.push(name);
        let dotted = inner.join(".");
        if personal.contains(&dotted) {
            withheld.push(dotted);
            children.insert(name.clone(), Node::Withheld);
            continue;
        }
        let node = match shape(schemas) {
            Shape::Object(inner_props) => {
                plan_object(&inner_props, &inner, personal, columns, withheld)
            }
            Shape::Scalar(ty) => {
                columns.push(PayloadColumn {
                    name: inner.join("_"),
                    path: dotted,
                    ty,
                });
                Node::Leaf(columns.len() - 1)
            }
        };
        children.insert(name.clone(), node);
    }
    Node::Object(children)
}

/// The shape of a value any of `schemas` describes.
fn shape<'a>(schemas: &[&'a Value]) -> Shape<'a> {
    let mut alternatives = Vec::new();
    for schema in schemas {
        expand(schema, &mut alternatives);
    }
    let shapes: Vec<Shape<'a>> = alternatives.into_iter().map(shape_one).collect();
    let mut props: Vec<(String, Vec<&'a Value>)> = Vec::new();
    let mut scalar: Option<ColumnType> = None;
    let (mut objects, mut scalars) = (0, 0);
    for s in shapes {
        match s {
            Shape::Object(p) => {
                objects += 1;
                for (name, mut schemas) in p {
                    match props.iter_mut().find(|(n, _)| *n == name) {
                        Some((_, existing)) => existing.append(&mut schemas),
                        None => props.push((name, schemas)),
                    }
                }
            }
            Shape::Scalar(ty) => {
                scalars += 1;
                scalar = Some(match (scalar, ty) {
                    (None, t) => t,
                    (Some(a), b) if a == b => a,
                    (Some(ColumnType::Int64), ColumnType::Float64)
                    | (Some(ColumnType::Float64), ColumnType::Int64) => ColumnType::Float64,
                    _ => ColumnType::Json,
                });
            }
        }
    }
    match (objects, scalars) {
        (0, _) => Shape::Scalar(scalar.unwrap_or(ColumnType::Json)),
        (_, 0) => Shape::Object(props),
        _ => Shape::Scalar(ColumnType::Json),
    }
}

/// The alternatives of `schema` (`anyOf`, `oneOf`, a lone `allOf`), without `null`.
fn expand<'a>(schema: &'a Value, out: &mut Vec<&'a Value>) {
    let own_type = schema.get("type").is_some() || schema.get("properties").is_some();
    if !own_type {
        for key in ["anyOf", "oneOf"] {
            if let Some(items) = schema.get(key).and_then(Value::as_array) {
                for item in items {
                    expand(item, out);
                }
                return;
            }
        }
        if let Some([only]) = schema
            .get("allOf")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
        {
            expand(only, out);
            return;
        }
    }
    let is_null = schema.get("type").and_then(Value::as_str) == Some("null")
        || schema.get("const").is_some_and(Value::is_null);
    if !is_null {
        out.push(schema);
    }
}

fn shape_one(schema: &Value) -> Shape<'_> {
    if schema.get("$ref").is_some() {
        return Shape::Scalar(ColumnType::Json);
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let texts = values.iter().filter(|v| !v.is_null()).all(Value::is_string);
        return Shape::Scalar(if texts {
            ColumnType::Utf8
        } else {
            ColumnType::Json
        });
    }
    if let Some(value) = schema.get("const") {
        return Shape::Scalar(match value {
            Value::String(_) => ColumnType::Utf8,
            Value::Bool(_) => ColumnType::Boolean,
            Value::Number(n) if n.is_i64() || n.is_u64() => ColumnType::Int64,
            Value::Number(_) => ColumnType::Float64,
            _ => ColumnType::Json,
        });
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect(),
        _ => Vec::new(),
    };
    let props = schema.get("properties").and_then(Value::as_object);
    let open = schema
        .get("additionalProperties")
        .is_some_and(|a| !matches!(a, Value::Bool(false)));
    match types.as_slice() {
        ["object"] | [] if props.is_some_and(|p| !p.is_empty()) && !open => Shape::Object(
            props
                .into_iter()
                .flatten()
                .map(|(name, s)| (name.clone(), vec![s]))
                .collect(),
        ),
        ["string"] => Shape::Scalar(match schema.get("format").and_then(Value::as_str) {
            Some("date-time") => ColumnType::Timestamp,
            Some("date") => ColumnType::Date,
            _ => ColumnType::Utf8,
        }),
        ["integer"] => Shape::Scalar(ColumnType::Int64),
        ["number"] => Shape::Scalar(ColumnType::Float64),
        ["boolean"] => Shape::Scalar(ColumnType::Boolean),
        _ => Shape::Scalar(ColumnType::Json),
    }
}

/// `value` as a cell of type `ty`; `None` when it does not fit.
fn convert(value: &Value, ty: ColumnType) -> Option<Cell> {
    if value.is_null() {
        return Some(Cell::Null);
    }
    let cell = match ty {
        ColumnType::Json => Some(Cell::Text(value.to_string())),
        ColumnType::Utf8 => value.as_str().map(|s| Cell::Text(s.to_owned())),
        ColumnType::Int64 => value.as_i64().map(Cell::Int),
        ColumnType::Float64 => value.as_f64().map(Cell::Float),
        ColumnType::Boolean => value.as_bool().map(Cell::Bool),
        ColumnType::Timestamp => value
            .as_str()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| Cell::Micros(t.timestamp_micros())),
        ColumnType::Date => value
            .as_str()
            .and_then(|s| NaiveDate::parse_from_str(s, "%Y-%m-%d").ok())
            .and_then(|d| {
                i32::try_from(d.signed_duration_since(NaiveDate::default()).num_days()).ok()
            })
            .map(Cell::Days),
    };
    cell
}

fn quoted(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > QUOTED_VALUE_CHARS_MAX {
        let cut: String = text.chars().take(QUOTED_VALUE_CHARS_MAX).collect();
        format!("{cut}…")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_of_the_build_has_a_plan() {
        let plans = plan_catalog().unwrap();
        for (_, name, _) in crm_domain::DomainEvent::catalog() {
            assert!(plans.contains_key(name), "{name}");
        }
        assert!(plans.contains_key(METRIC_DEFINED));
        assert!(plans.contains_key("AttributesSet"));
    }

    #[test]
    fn money_flattens_dates_are_typed_and_personal_fields_have_no_column() {
        let plans = plan_catalog().unwrap();
        let won = &plans["OpportunityWon"];
        let column = |plan: &TypePlan, name: &str| {
            plan.columns
                .iter()
                .find(|c| c.name == name)
                .map(|c| c.ty)
                .unwrap_or_else(|| panic!("{name} in {:?}", plan.columns))
        };
        assert_eq!(column(won, "amount_minor_units"), ColumnType::Int64);
        assert_eq!(column(won, "amount_currency"), ColumnType::Utf8);
        // The payload's business time is the envelope's: a clash, so prefixed.
        assert_eq!(column(won, "payload_occurred_at"), ColumnType::Timestamp);
        let lead = &plans["LeadCaptured"];
        assert!(
            lead.columns.iter().all(|c| !c.path.starts_with("personal")),
            "{:?}",
            lead.columns
        );
        assert!(lead.withheld.contains(&"personal".to_owned()));
        assert_eq!(column(lead, "channel"), ColumnType::Utf8);
    }

    #[test]
    fn a_field_the_schema_does_not_name_is_an_error() {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {
                "a": {"type": "integer"},
                "m": {"type": ["object", "null"], "properties": {
                    "minor_units": {"type": "integer"}, "currency": {"type": "string"}}},
                "d": {"type": "string", "format": "date"},
                "tags": {"type": "array", "items": {"type": "string"}}
            }
        });
        let plan = TypePlan::new("T", 1, &schema, &[]).unwrap();
        let cells = plan
            .cells(
                &serde_json::json!({"a": 3, "m": {"minor_units": 5, "currency": "EUR"},
                "d": "1970-01-03", "tags": ["x"]}),
            )
            .unwrap();
        let by_name = |n: &str| {
            let i = plan.columns.iter().position(|c| c.name == n).unwrap();
            cells[i].clone()
        };
        assert_eq!(by_name("a"), Cell::Int(3));
        assert_eq!(by_name("m_minor_units"), Cell::Int(5));
        assert_eq!(by_name("m_currency"), Cell::Text("EUR".into()));
        assert_eq!(by_name("d"), Cell::Days(2));
        assert_eq!(by_name("tags"), Cell::Text("[\"x\"]".into()));
        assert_eq!(
            plan.cells(&serde_json::json!({"a": 1, "m": {"minor_units": 1, "cents": 2}})),
            Err(FieldError::Unknown("m.cents".into()))
        );
        assert!(matches!(
            plan.cells(&serde_json::json!({"a": "x"})),
            Err(FieldError::BadValue { .. })
        ));
    }
}
