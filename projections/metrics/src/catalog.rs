//! The built-in catalog: every metric of METRICS.md §3 as a versioned definition in the
//! definition language, one TOML file per domain under `projections/metrics/catalog/`, embedded in
//! the binary. Entries the language cannot express yet are `type = "unsupported"` with
//! what they need, so `list` still shows them and evaluation says why there is no figure.

use crate::definition::{parse_catalog, MetricDefinition};
use crate::error::DefinitionError;

/// The catalog files, by name.
pub const CATALOG_FILES: &[(&str, &str)] = &[
    ("marketing.toml", include_str!("../catalog/marketing.toml")),
    ("sales.toml", include_str!("../catalog/sales.toml")),
    ("service.toml", include_str!("../catalog/service.toml")),
    ("customer.toml", include_str!("../catalog/customer.toml")),
    (
        "relationship.toml",
        include_str!("../catalog/relationship.toml"),
    ),
];

/// Every built-in definition.
///
/// # Errors
/// A catalog file that does not validate, naming the file and key.
pub fn definitions() -> Result<Vec<MetricDefinition>, DefinitionError> {
    let mut out = Vec::new();
    for (file, text) in CATALOG_FILES {
        let defs = parse_catalog(text).map_err(|e| match e {
            DefinitionError::Syntax { message } => DefinitionError::Syntax {
                message: format!("{file}: {message}"),
            },
            DefinitionError::Invalid { key, reason } => DefinitionError::Invalid {
                key: format!("{file}: {key}"),
                reason,
            },
            other => other,
        })?;
        out.extend(defs);
    }
    Ok(out)
}
