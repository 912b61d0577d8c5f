//! The metric catalog document, `projections/metrics/CATALOG.md`, is generated from the
//! built-in definitions. This test regenerates it and fails when the checked-in file
//! differs; `UPDATE_CATALOG=1 cargo test -p crm-metrics --test catalog_doc` rewrites it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use crm_metrics::catalog::{document, REFRESH_COMMAND};
use crm_metrics::Registry;

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("CATALOG.md")
}

#[test]
fn the_checked_in_catalog_document_is_current() {
    let registry = Registry::builtin().unwrap();
    let generated = document(&registry);
    if std::env::var("UPDATE_CATALOG").is_ok_and(|v| v == "1") {
        std::fs::write(path(), &generated).unwrap();
        return;
    }
    let checked_in = std::fs::read_to_string(path()).unwrap_or_default();
    if checked_in != generated {
        let line = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| checked_in.lines().count().min(generated.lines().count()));
        panic!(
            "projections/metrics/CATALOG.md is not what the built-in definitions generate \
             (first difference at line {}: {:?} instead of {:?}). Refresh it with \
             `{REFRESH_COMMAND}` and commit the result.",
            line + 1,
            checked_in.lines().nth(line).unwrap_or("(end of file)"),
            generated.lines().nth(line).unwrap_or("(end of file)"),
        );
    }
}

#[test]
fn every_built_in_version_has_its_section() {
    let registry = Registry::builtin().unwrap();
    let doc = document(&registry);
    for m in registry.list() {
        let heading = format!("#### {}@{}", m.id, m.version);
        assert!(doc.contains(&heading), "{heading} is missing");
        let id_heading = format!("\n### {}\n", m.id);
        assert!(doc.contains(&id_heading), "{id_heading} is missing");
    }
    // Exclusions are listed with their reason code and rule.
    assert!(doc.contains("| `VOIDED` | `has('OpportunityVoided')` |"));
    // The same definitions give the same bytes.
    assert_eq!(doc, document(&Registry::builtin().unwrap()));
}
