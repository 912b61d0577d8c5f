//! The schema of every command and event the domain knows, generated from the domain's types
//! (`schemars`), never written by hand: fields, types, enum values, which fields are
//! personal. `crm schema [TYPE]` prints it, `GET /v1/schema` serves it; mapping and definition
//! authors read it, and the checks of metric definitions use the same event schemas.

use crm_domain::attributes::{
    AttributesSet, SetAttributes, ATTRIBUTES_SET, ATTRIBUTES_SET_VERSION, SET_ATTRIBUTES,
};
use crm_domain::{DomainEvent, Registry, PERSONAL_DATA_FIELD};
use schemars::generate::SchemaSettings;
use schemars::{Schema, SchemaGenerator};
use serde::Serialize;
use serde_json::{Map, Value};

/// Whether a type is a command or an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TypeKind {
    /// A command: what a client sends (`POST /v1/aggregates/{category}/commands`, a mapping).
    Command,
    /// An event: what the log stores and a metric definition reads.
    Event,
}

/// One command or event type and its schema.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct TypeSchema {
    /// The type's name, e.g. `CaptureLead`, `LeadCaptured`.
    pub name: String,
    /// Command or event.
    pub kind: TypeKind,
    /// The aggregate (stream category), e.g. `lead`.
    pub aggregate: String,
    /// For an event: its current schema version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u16>,
    /// The fields that hold personal data (sealed at rest, erasable), as dotted paths.
    pub personal_fields: Vec<String>,
    /// JSON Schema 2020-12 of the body (command) or payload (event), self-contained.
    #[schema(value_type = Object)]
    pub schema: Value,
}

fn generator() -> SchemaGenerator {
    let mut settings = SchemaSettings::draft2020_12();
    settings.inline_subschemas = true;
    settings.meta_schema = None;
    SchemaGenerator::new(settings)
}

/// The personal fields of `schema`: its `personal` property and that property's own fields.
fn personal_fields(schema: &Schema) -> Vec<String> {
    let Some(personal) = schema
        .get("properties")
        .and_then(Value::as_object)
        .and_then(|p| p.get(PERSONAL_DATA_FIELD))
    else {
        return Vec::new();
    };
    let mut out = vec![PERSONAL_DATA_FIELD.to_owned()];
    let mut inner = field_names(personal);
    inner.sort();
    out.extend(
        inner
            .into_iter()
            .map(|f| format!("{PERSONAL_DATA_FIELD}.{f}")),
    );
    out
}

/// The field names of an object schema, of its alternatives and of a list's elements, in
/// schema order, each once (what a dotted `a.b` or `a[].b` may name below field `a`).
#[must_use]
pub fn field_names(schema: &Value) -> Vec<String> {
    fn collect(schema: &Value, out: &mut Vec<String>) {
        if let Some(items) = schema.get("items") {
            collect(items, out);
        }
        if let Some(props) = schema.get("properties").and_then(Value::as_object) {
            for k in props.keys() {
                if !out.contains(k) {
                    out.push(k.clone());
                }
            }
        }
        for key in ["anyOf", "oneOf", "allOf"] {
            if let Some(items) = schema.get(key).and_then(Value::as_array) {
                for item in items {
                    collect(item, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    collect(schema, &mut out);
    out
}

/// The values of a field whose schema is an enum (`enum`, or alternatives that are each a
/// `const`, a `null` alternative aside); `None` for any other field.
#[must_use]
pub fn enum_values(field: &Value) -> Option<Vec<String>> {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    if let Some(values) = field.get("enum").and_then(Value::as_array) {
        return values.iter().map(text).collect();
    }
    for key in ["oneOf", "anyOf"] {
        if let Some(items) = field.get(key).and_then(Value::as_array) {
            let consts: Option<Vec<String>> = items
                .iter()
                .filter(|i| i.get("type").and_then(Value::as_str) != Some("null"))
                .map(|i| i.get("const").and_then(text))
                .collect();
            return consts.filter(|c| !c.is_empty());
        }
    }
    None
}

/// Every command and event type of `registry`'s aggregates, commands first, per aggregate.
#[must_use]
pub fn catalog(registry: &Registry) -> Vec<TypeSchema> {
    let mut generator = generator();
    let mut out = Vec::new();
    for kind in registry.kinds() {
        for (name, mut schema) in kind.command_schemas(&mut generator) {
            schema.insert("title".into(), Value::from(name));
            out.push(TypeSchema {
                name: name.to_owned(),
                kind: TypeKind::Command,
                aggregate: kind.category().to_owned(),
                schema_version: None,
                personal_fields: personal_fields(&schema),
                schema: schema.to_value(),
            });
        }
        for (name, mut schema) in kind.event_schemas(&mut generator) {
            schema.insert("title".into(), Value::from(name));
            let version = kind
                .event_types()
                .iter()
                .find(|(t, _)| *t == name)
                .map(|(_, v)| *v);
            out.push(TypeSchema {
                name: name.to_owned(),
                kind: TypeKind::Event,
                aggregate: kind.category().to_owned(),
                schema_version: version,
                personal_fields: personal_fields(&schema),
                schema: schema.to_value(),
            });
        }
        // Custom attributes: every aggregate takes the command, and records the event.
        let mut set = generator.root_schema_for::<SetAttributes>();
        set.insert("additionalProperties".into(), Value::Bool(false));
        set.insert("title".into(), Value::from(SET_ATTRIBUTES));
        out.push(TypeSchema {
            name: SET_ATTRIBUTES.to_owned(),
            kind: TypeKind::Command,
            aggregate: kind.category().to_owned(),
            schema_version: None,
            personal_fields: Vec::new(),
            schema: set.to_value(),
        });
        let mut recorded = generator.root_schema_for::<AttributesSet>();
        recorded.insert("title".into(), Value::from(ATTRIBUTES_SET));
        out.push(TypeSchema {
            name: ATTRIBUTES_SET.to_owned(),
            kind: TypeKind::Event,
            aggregate: kind.category().to_owned(),
            schema_version: Some(ATTRIBUTES_SET_VERSION),
            personal_fields: Vec::new(),
            schema: recorded.to_value(),
        });
    }
    out
}

/// The schema of the command or event `name`; `Err` with the nearest known name otherwise.
///
/// # Errors
/// [`UnknownType`] naming the nearest type.
pub fn find(registry: &Registry, name: &str) -> Result<TypeSchema, UnknownType> {
    let all = catalog(registry);
    if let Some(found) = all.iter().find(|t| t.name == name) {
        return Ok(found.clone());
    }
    Err(UnknownType {
        name: name.to_owned(),
        nearest: crm_domain::registry::nearest_name(name, all.iter().map(|t| t.name.as_str())),
    })
}

/// A name that is no command or event type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("there is no command or event type `{name}`{}; `crm schema` lists them", .nearest.as_ref().map(|n| format!(" (did you mean `{n}`?)")).unwrap_or_default())]
pub struct UnknownType {
    /// The name asked for.
    pub name: String,
    /// The nearest known name.
    pub nearest: Option<String>,
}

/// One field of a type, as `crm schema TYPE` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldLine {
    /// The field's name.
    pub name: String,
    /// Its type in words: `string`, `integer`, `one of a, b`, `date-time`, `object {x, y}`...
    pub shape: String,
    /// Whether the field must be given.
    pub required: bool,
    /// Whether it holds personal data.
    pub personal: bool,
    /// Its description, if the type documents it.
    pub description: Option<String>,
}

/// The fields of `schema` (a [`TypeSchema::schema`]), in schema order.
#[must_use]
pub fn fields(schema: &Value) -> Vec<FieldLine> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(name, field)| FieldLine {
            name: name.clone(),
            shape: shape(field),
            required: required.contains(&name.as_str()),
            personal: name == PERSONAL_DATA_FIELD,
            description: field
                .get("description")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
        .collect()
}

/// A schema in words.
#[must_use]
pub fn shape(schema: &Value) -> String {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let values: Vec<String> = values.iter().map(literal).collect();
        return format!("one of {}", values.join(", "));
    }
    if let Some(value) = schema.get("const") {
        return format!("= {}", literal(value));
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(items) = schema.get(key).and_then(Value::as_array) {
            // An enum whose values are documented one by one: a `const` per alternative.
            let consts: Option<Vec<String>> =
                items.iter().map(|i| i.get("const").map(literal)).collect();
            if let Some(values) = consts.filter(|v| !v.is_empty()) {
                return format!("one of {}", values.join(", "));
            }
            let parts: Vec<String> = items.iter().map(shape).collect();
            return merge_alternatives(&parts);
        }
    }
    let types: Vec<&str> = match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    let nullable = types.contains(&"null");
    let main: Vec<&str> = types.iter().copied().filter(|t| *t != "null").collect();
    let mut text = match main.as_slice() {
        ["object"] => object_shape(schema),
        ["array"] => format!(
            "list of {}",
            schema
                .get("items")
                .map_or_else(|| "anything".to_owned(), shape)
        ),
        [one] => match schema.get("format").and_then(Value::as_str) {
            Some(format) => format!("{one} ({format})"),
            None => (*one).to_owned(),
        },
        [] if schema.get("properties").is_some() => object_shape(schema),
        [] => "anything".to_owned(),
        many => many.join(" or "),
    };
    if nullable {
        text.push_str(" or null");
    }
    text
}

fn object_shape(schema: &Value) -> String {
    match schema.get("properties").and_then(Value::as_object) {
        Some(props) if !props.is_empty() => format!(
            "object {{{}}}",
            props.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        _ => "object".to_owned(),
    }
}

fn merge_alternatives(parts: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for part in parts {
        if !seen.contains(&part.as_str()) {
            seen.push(part);
        }
    }
    seen.join(" or ")
}

fn literal(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The catalog as one JSON object: `{"commands": {...}, "events": {...}}` keyed by type name.
#[must_use]
pub fn as_json(types: &[TypeSchema]) -> Value {
    let mut commands = Map::new();
    let mut events = Map::new();
    for t in types {
        let entry = serde_json::to_value(t).unwrap_or(Value::Null);
        match t.kind {
            TypeKind::Command => commands.insert(t.name.clone(), entry),
            TypeKind::Event => events.insert(t.name.clone(), entry),
        };
    }
    serde_json::json!({ "commands": commands, "events": events })
}

/// Whether every event type of the domain's catalog is in `types` (a check for tests and the
/// HTTP document).
#[must_use]
pub fn covers_domain_events(types: &[TypeSchema]) -> bool {
    DomainEvent::catalog().all(|(_, name, _)| {
        types
            .iter()
            .any(|t| t.kind == TypeKind::Event && t.name == name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_and_event_has_a_self_contained_schema() {
        let types = catalog(&Registry::builtin());
        assert!(covers_domain_events(&types));
        let lead = types
            .iter()
            .find(|t| t.name == "LeadCaptured")
            .expect("LeadCaptured");
        assert_eq!(
            (lead.kind, lead.aggregate.as_str(), lead.schema_version),
            (TypeKind::Event, "lead", Some(1))
        );
        assert_eq!(
            lead.personal_fields,
            [
                "personal",
                "personal.ciphertext",
                "personal.email",
                "personal.full_name",
                "personal.phone",
                "personal.sealed_with"
            ]
        );
        // Self-contained: no reference to definitions elsewhere.
        assert!(
            !lead.schema.to_string().contains("\"$ref\""),
            "{}",
            lead.schema
        );
        let capture = find(&Registry::builtin(), "CaptureLead").unwrap();
        assert_eq!(capture.kind, TypeKind::Command);
        assert_eq!(
            capture.personal_fields,
            [
                "personal",
                "personal.email",
                "personal.full_name",
                "personal.phone"
            ]
        );
        let lines = fields(&capture.schema);
        let channel = lines.iter().find(|f| f.name == "channel").unwrap();
        assert!(
            channel.shape.starts_with("one of ") && channel.shape.contains("email"),
            "{channel:?}"
        );
        assert!(channel.required);
        let personal = lines.iter().find(|f| f.name == "personal").unwrap();
        assert!(
            personal.personal && personal.shape.contains("full_name"),
            "{personal:?}"
        );
        let err = find(&Registry::builtin(), "LeadCapture").unwrap_err();
        assert_eq!(err.nearest.as_deref(), Some("LeadCaptured"));
        assert!(
            err.to_string().contains("did you mean `LeadCaptured`"),
            "{err}"
        );
    }
}
