//! Deterministic ids for imported events: UUID v5 in a fixed project namespace, so the same
//! source row always yields the same event id and a re-import appends nothing.

use uuid::Uuid;

/// The project's UUID namespace for imported records (a v5 id of the project's name in the URL
/// namespace, written out so it can never drift).
pub const IMPORT_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2d4e_8a3b_5c7d_9e0f_1a2b_3c4d_5e6f);

/// Event id of the `kind`-th event made from row `key` of `source` (`"maven-crm/sales_pipeline.csv"`).
#[must_use]
pub fn event_id(source: &str, key: &str, kind: &str) -> Uuid {
    Uuid::new_v5(
        &IMPORT_NAMESPACE,
        format!("event\u{1f}{source}\u{1f}{key}\u{1f}{kind}").as_bytes(),
    )
}

/// Correlation id shared by every event of one source file and importer.
#[must_use]
pub fn correlation_id(importer: &str, file: &str) -> Uuid {
    Uuid::new_v5(
        &IMPORT_NAMESPACE,
        format!("correlation\u{1f}{importer}\u{1f}{file}").as_bytes(),
    )
}

/// An opaque, stable id for a person's name (`"mc-3f2a9c0d1e"`): names are personal data and
/// must not appear in ids or stream names, which cannot be erased.
#[must_use]
pub fn pseudonym(prefix: &str, scope: &str, name: &str) -> String {
    let uuid = Uuid::new_v5(
        &IMPORT_NAMESPACE,
        format!("person\u{1f}{scope}\u{1f}{name}").as_bytes(),
    );
    let hex = uuid.simple().to_string();
    format!("{prefix}-{}", &hex[..12])
}

/// A lower-case ASCII slug usable as an id: `"Acme Corporation"` → `"acme-corporation"`.
/// Characters other than ASCII letters and digits become `-`; runs collapse.
#[must_use]
pub fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = event_id(
            "maven-crm/sales_pipeline.csv",
            "1C1I7A6R",
            "OpportunityOpened#0",
        );
        assert_eq!(
            a,
            event_id(
                "maven-crm/sales_pipeline.csv",
                "1C1I7A6R",
                "OpportunityOpened#0"
            )
        );
        assert_ne!(
            a,
            event_id(
                "maven-crm/sales_pipeline.csv",
                "1C1I7A6R",
                "OpportunityWon#2"
            )
        );
        assert_eq!(a.get_version_num(), 5);
    }

    #[test]
    fn slugs_and_pseudonyms() {
        assert_eq!(slug("Acme Corporation"), "acme-corporation");
        assert_eq!(slug("  GTX Plus--Pro "), "gtx-plus-pro");
        assert_eq!(slug("Fiber optic"), "fiber-optic");
        let p = pseudonym("mc", "maven-crm", "Anna Snelling");
        assert!(p.starts_with("mc-") && p.len() == 15, "{p}");
        assert!(!p.contains("Anna"));
    }
}
