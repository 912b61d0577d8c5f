//! The demo's scorecard: which metrics it reads, at which version and over which range, the
//! redefinition it shows and the figure it explains.

use crm_metrics::{self as metrics, Query};

use crate::metric_output;

/// Where a scorecard figure is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// All of history, one period.
    AllHistory,
    /// 2019, the last full year of the Telco snapshot: a stock (active customers, MRR)
    /// needs a period whose start finds customers active.
    Year2019,
    /// All of history, the figures in one currency (the Maven deals are in USD, the retail
    /// orders in GBP: money in two currencies does not add up).
    Currency(&'static str),
    /// The retail export's RFM snapshot (2011-12-10, its SOURCE.md), the champions' cell 5-5-5.
    RetailChampions,
}

/// One scorecard figure: a metric, its version (`None`: the catalog's default) and scope.
#[derive(Debug, Clone, Copy)]
pub struct ScoreEntry {
    /// Metric id.
    pub id: &'static str,
    /// Pinned version, where the default is not the reading of the data set's published
    /// reference figure.
    pub version: Option<u32>,
    /// Where it is read.
    pub scope: Scope,
}

const fn all(id: &'static str) -> ScoreEntry {
    ScoreEntry {
        id,
        version: None,
        scope: Scope::AllHistory,
    }
}

/// The scorecard: a domain and its baseline metrics. Two versions are pinned to the reading
/// of the bundled data sets' reference figures (their SOURCE.md): the helpdesk's share of
/// cases closed on the day opened (v4) and the Telco churn share (v3).
pub const SCORECARD: &[(&str, &[ScoreEntry])] = &[
    (
        "sales",
        &[
            all("sales.win_rate"),
            ScoreEntry {
                id: "sales.new_revenue",
                version: None,
                scope: Scope::Currency("USD"),
            },
            all("sales.avg_deal_size"),
            all("sales.cycle_duration"),
        ],
    ),
    (
        "commerce (online retail)",
        &[
            all("sales.orders"),
            ScoreEntry {
                id: "sales.new_revenue",
                version: None,
                scope: Scope::Currency("GBP"),
            },
            all("sales.avg_order_value"),
            all("customer.repeat_purchase_rate"),
            ScoreEntry {
                id: "customer.rfm",
                version: None,
                scope: Scope::RetailChampions,
            },
        ],
    ),
    (
        "marketing",
        &[
            all("marketing.new_leads"),
            all("marketing.lead_conversion_rate"),
        ],
    ),
    (
        "service",
        &[
            all("service.cases_opened"),
            ScoreEntry {
                id: "service.cases_closed_same_day",
                version: Some(4),
                scope: Scope::AllHistory,
            },
            all("service.time_to_resolution"),
        ],
    ),
    (
        "retention",
        &[
            ScoreEntry {
                id: "customer.churn_rate",
                version: Some(3),
                scope: Scope::AllHistory,
            },
            ScoreEntry {
                id: "customer.active_customers",
                version: None,
                scope: Scope::Year2019,
            },
            ScoreEntry {
                id: "sales.recurring_revenue",
                version: None,
                scope: Scope::Year2019,
            },
        ],
    ),
];

/// The query of a scope.
pub(super) fn scope_query(scope: Scope) -> Query {
    use chrono::TimeZone;
    match scope {
        Scope::AllHistory => Query::default(),
        Scope::Year2019 => Query {
            from: Some(utc(2019)),
            to: Some(utc(2020)),
            ..Query::default()
        },
        Scope::Currency(code) => Query {
            filter: [("currency".to_owned(), code.to_owned())].into(),
            ..Query::default()
        },
        Scope::RetailChampions => Query {
            to: Some(
                chrono::Utc
                    .with_ymd_and_hms(2011, 12, 10, 0, 0, 0)
                    .single()
                    .unwrap_or_default(),
            ),
            filter: [("rfm".to_owned(), "5-5-5".to_owned())].into(),
            ..Query::default()
        },
    }
}

/// 2018 and 2019, one period each.
pub(super) fn yearly_2018_2019() -> metric_output::QueryFlags {
    metric_output::QueryFlags {
        from: Some(utc(2018)),
        to: Some(utc(2020)),
        period: Some(metrics::Grain::Year),
        ..metric_output::QueryFlags::default()
    }
}

fn utc(year: i32) -> chrono::DateTime<chrono::Utc> {
    use chrono::TimeZone;
    chrono::Utc
        .with_ymd_and_hms(year, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or_default()
}

/// The redefinition shown: churn by customers (v1) beside churn by revenue (v2).
pub const REDEFINED: (&str, [u32; 2]) = ("customer.churn_rate", [1, 2]);

/// The figure explained.
pub const EXPLAINED: &str = "sales.win_rate";

/// Rows of the explained figure printed (the rest is one `crm explain` away).
pub(super) const EXPLAIN_ROWS_SHOWN: usize = 5;

#[cfg(test)]
mod tests {
    use super::*;
    use crm_metrics::{MetricError, Registry};

    /// Keeps `metrics` used by name in docs and the scorecard consistent with the catalog.
    #[must_use]
    fn scorecard_ids() -> Vec<&'static str> {
        SCORECARD
            .iter()
            .flat_map(|(_, entries)| entries.iter().map(|e| e.id))
            .chain([REDEFINED.0, EXPLAINED])
            .collect()
    }

    /// Builds the registry of built-in metrics (for a test that every demo metric exists).
    ///
    /// # Errors
    /// [`MetricError`] when the catalog does not parse.
    fn builtin_registry() -> Result<Registry, MetricError> {
        metrics::Registry::builtin()
    }

    #[test]
    fn every_metric_the_demo_reads_is_in_the_builtin_catalog_at_its_version() {
        let registry = builtin_registry().unwrap();
        for id in scorecard_ids() {
            assert!(
                !registry.versions(id).is_empty(),
                "{id} is not in the catalog"
            );
        }
        for (_, entries) in SCORECARD {
            for entry in *entries {
                if let Some(version) = entry.version {
                    assert!(
                        registry.versions(entry.id).contains(&version),
                        "{}",
                        entry.id
                    );
                }
            }
        }
        for version in REDEFINED.1 {
            assert!(registry.versions(REDEFINED.0).contains(&version));
        }
    }
}
