//! `crm schema [TYPE]`: the commands and events the domain knows, and one type's fields
//! (types, enum values, which are personal), generated from the domain's types. What a
//! mapping or a metric definition may name is exactly what this prints.

use std::io::Write;
use std::process::ExitCode;

use clap::Args;
use crm_app::schema::{self, TypeKind};
use crm_domain::Registry;

/// Flags of `crm schema`.
#[derive(Debug, Args)]
pub struct SchemaArgs {
    /// A command or event type, e.g. `CaptureLead` or `LeadCaptured`; without it, every type
    /// per aggregate.
    #[arg(value_name = "TYPE")]
    name: Option<String>,
    /// The JSON Schema (2020-12) instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs `crm schema`.
///
/// # Errors
/// An unknown type (naming the nearest), or the output cannot be written.
pub fn run(args: &SchemaArgs) -> anyhow::Result<ExitCode> {
    let registry = Registry::builtin();
    let mut out = std::io::stdout().lock();
    let Some(name) = &args.name else {
        let types = schema::catalog(&registry);
        if args.json {
            writeln!(out, "{}", schema::as_json(&types))?;
            return Ok(ExitCode::SUCCESS);
        }
        for kind in registry.kinds() {
            let of = |k: TypeKind| -> Vec<&str> {
                types
                    .iter()
                    .filter(|t| t.aggregate == kind.category() && t.kind == k)
                    .map(|t| t.name.as_str())
                    .collect()
            };
            writeln!(out, "{}", kind.category())?;
            writeln!(out, "  commands: {}", of(TypeKind::Command).join(", "))?;
            writeln!(out, "  events:   {}", of(TypeKind::Event).join(", "))?;
        }
        writeln!(
            out,
            "\n`crm schema TYPE` shows a type's fields; personal fields are sealed at rest and erasable."
        )?;
        return Ok(ExitCode::SUCCESS);
    };
    let found = schema::find(&registry, name)?;
    if args.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&found)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    let what = match found.kind {
        TypeKind::Command => "command".to_owned(),
        TypeKind::Event => format!(
            "event, schema version {}",
            found.schema_version.unwrap_or_default()
        ),
    };
    writeln!(
        out,
        "{} ({what}) of aggregate `{}`",
        found.name, found.aggregate
    )?;
    if let Some(text) = found.schema.get("description").and_then(|d| d.as_str()) {
        writeln!(out, "  {}", text.replace('\n', " "))?;
    }
    for field in schema::fields(&found.schema) {
        let mut notes = Vec::new();
        if !field.required {
            notes.push("optional");
        }
        if field.personal {
            notes.push("personal data: sealed at rest, erasable");
        }
        let notes = if notes.is_empty() {
            String::new()
        } else {
            format!("  [{}]", notes.join("; "))
        };
        writeln!(out, "  {:<16} {}{notes}", field.name, field.shape)?;
    }
    Ok(ExitCode::SUCCESS)
}
