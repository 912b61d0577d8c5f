//! `crm metrics ...`, `crm metric ...` and `crm explain`: the metric engine from the command
//! line. Each function renders text (or JSON/CSV) for one verb; the verb modules parse flags.

mod line;

pub use line::{num, scorecard_line};

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use crm_eventstore::EventStore;
use crm_metrics::{
    compare, define_as, diff, evaluate, explain, to_csv, ExplainSelect, Grain, KnownAt,
    MetricError, Num, Query, Registry, Status,
};

/// Output form of a metric verb.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
    Csv,
}

/// The query flags shared by the metric verbs.
#[derive(Debug, Clone, Default)]
pub struct QueryFlags {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub period: Option<Grain>,
    pub by: Vec<String>,
    pub as_of: Option<DateTime<Utc>>,
    pub known_at: Option<DateTime<Utc>>,
}

impl QueryFlags {
    /// The engine's query.
    #[must_use]
    pub fn query(&self) -> Query {
        Query {
            from: self.from,
            to: self.to,
            period: self.period.unwrap_or_default(),
            by: self.by.clone(),
            filter: Default::default(),
            as_of: self.as_of,
            known_at: self.known_at.map(KnownAt::Time),
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Result<String, MetricError> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| MetricError::Query(format!("could not render JSON: {e}")))
}

/// `crm metrics list`: every definition with what it needs, and whether the log has it.
///
/// # Errors
/// [`MetricError`] when the registry cannot be loaded.
pub async fn list<S: EventStore>(store: &S, format: Format) -> Result<String, MetricError> {
    let registry = Registry::load(store).await?;
    let list = registry.list();
    if format == Format::Json {
        return json(&list);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<40} {:>3} {:<3} {:<44} needs",
        "id", "ver", "def", "name"
    );
    for m in &list {
        let needs = match &m.unsupported {
            Some(missing) => format!("not computable yet: needs {missing}"),
            None => m.needs.join(", "),
        };
        let _ = writeln!(
            out,
            "{:<40} {:>3} {:<3} {:<44} {needs}",
            m.id,
            m.version,
            if m.is_default { "*" } else { "" },
            m.name
        );
    }
    let _ = writeln!(out, "{} definitions; * = default version", list.len());
    Ok(out)
}

/// `crm metrics define FILE`: validates and appends a definition as `MetricDefined`.
///
/// # Errors
/// [`MetricError`] naming the offending key, a version conflict, or a store error.
pub async fn define_file<S: EventStore>(
    store: &S,
    text: &str,
    now: DateTime<Utc>,
    actor: &str,
    format: Format,
) -> Result<String, MetricError> {
    let outcome = define_as(store, text, now, actor).await?;
    if format == Format::Json {
        return json(&outcome);
    }
    Ok(format!(
        "{} v{}: {} (stream {}, position {}, spec hash {})\n",
        outcome.id,
        outcome.version,
        outcome.outcome,
        outcome.stream,
        outcome
            .position
            .map_or_else(|| "-".to_owned(), |p| p.to_string()),
        outcome.spec_hash
    ))
}

/// `crm metric ID`: one metric's figures with their derivation.
///
/// # Errors
/// [`MetricError`] for an unknown metric, a bad query or a read error.
pub async fn metric<S: EventStore>(
    store: &S,
    id: &str,
    version: Option<u32>,
    flags: &QueryFlags,
    format: Format,
) -> Result<String, MetricError> {
    let registry = Registry::load(store).await?;
    let ev = evaluate(store, &registry, id, version, &flags.query()).await?;
    match format {
        Format::Json => json(&ev),
        Format::Csv => {
            let mut out = String::from(
                "metric,version,spec_hash,period,dims,value,numerator,denominator,included,excluded,log_position,chain_hash\n",
            );
            for f in &ev.figures {
                let dims: Vec<String> = f.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let excluded: Vec<String> =
                    f.excluded.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(
                    out,
                    "{},{},{},{},{},{},{},{},{},{},{},{}",
                    ev.metric.id,
                    ev.metric.version,
                    ev.metric.spec_hash,
                    csv_field(&f.period.label),
                    csv_field(&dims.join(";")),
                    f.value.map_or_else(String::new, |v| v.to_string()),
                    num_or_blank(f.numerator.as_ref()),
                    num_or_blank(f.denominator.as_ref()),
                    f.included,
                    csv_field(&excluded.join(";")),
                    ev.log.position,
                    ev.log.chain_hash
                );
            }
            Ok(out)
        }
        Format::Text => {
            let mut out = String::new();
            let single = ev.figures.len() == 1 && ev.figures.iter().all(|f| f.dims.is_empty());
            if single || ev.status != Status::Ok {
                let _ = writeln!(out, "{}", scorecard_line(&ev));
            } else {
                let _ = writeln!(
                    out,
                    "{} v{}  {}",
                    ev.metric.id, ev.metric.version, ev.metric.name
                );
            }
            if ev.status == Status::Ok && !single {
                for f in &ev.figures {
                    let dims: Vec<String> =
                        f.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = writeln!(
                        out,
                        "  {:<28} {:<30} {:>16}  included {} excluded {:?}",
                        f.period.label,
                        dims.join(" "),
                        f.display,
                        f.included,
                        f.excluded
                    );
                }
            }
            let _ = writeln!(
                out,
                "definition {} v{} spec hash {}; computed at log position {} chain hash {} ({} events scanned)",
                ev.metric.id,
                ev.metric.version,
                ev.metric.spec_hash,
                ev.log.position,
                ev.log.chain_hash,
                ev.log.events_scanned
            );
            Ok(out)
        }
    }
}

fn num_or_blank(n: Option<&Num>) -> String {
    n.map(num).unwrap_or_default()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// `crm metric compare ID --versions 1,2`.
///
/// # Errors
/// As [`metric`].
pub async fn compare_versions<S: EventStore>(
    store: &S,
    id: &str,
    versions: &[u32],
    flags: &QueryFlags,
    format: Format,
) -> Result<String, MetricError> {
    let registry = Registry::load(store).await?;
    let cmp = compare(store, &registry, id, versions, &flags.query()).await?;
    if format == Format::Json {
        return json(&cmp);
    }
    let mut out = String::new();
    for m in &cmp.metrics {
        let _ = writeln!(out, "v{} {} (spec hash {})", m.version, m.name, m.spec_hash);
    }
    for row in &cmp.rows {
        let dims: Vec<String> = row.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let shown: Vec<String> = row
            .figures
            .iter()
            .map(|f| f.as_ref().map_or("-".to_owned(), |f| f.display.clone()))
            .collect();
        let _ = writeln!(
            out,
            "  {:<28} {:<24} {}  difference {}",
            row.period.label,
            dims.join(" "),
            shown.join("  vs  "),
            row.difference.map_or("-".to_owned(), |d| format!("{d:.6}"))
        );
    }
    let _ = writeln!(
        out,
        "computed at log position {} chain hash {}",
        cmp.log.position, cmp.log.chain_hash
    );
    Ok(out)
}

/// `crm metric diff ID --known-at T1 --known-at T2`.
///
/// # Errors
/// As [`metric`].
pub async fn diff_known_at<S: EventStore>(
    store: &S,
    id: &str,
    version: Option<u32>,
    flags: &QueryFlags,
    t1: DateTime<Utc>,
    t2: DateTime<Utc>,
) -> Result<String, MetricError> {
    let registry = Registry::load(store).await?;
    let d = diff(
        store,
        &registry,
        id,
        version,
        &flags.query(),
        KnownAt::Time(t1),
        KnownAt::Time(t2),
    )
    .await?;
    json(&d)
}

/// `crm explain ID`: the events behind a figure, one page.
///
/// # Errors
/// As [`metric`].
pub async fn explain_page<S: EventStore>(
    store: &S,
    id: &str,
    version: Option<u32>,
    flags: &QueryFlags,
    select: &ExplainSelect,
    format: Format,
) -> Result<String, MetricError> {
    let registry = Registry::load(store).await?;
    let x = explain(store, &registry, id, version, &flags.query(), select).await?;
    match format {
        Format::Csv => Ok(to_csv(&x)),
        Format::Json => json(&x),
        Format::Text => {
            let mut out = String::new();
            for f in &x.figures {
                let _ = writeln!(
                    out,
                    "{} v{} = {} over {} (included {}, excluded {:?})",
                    x.metric.id,
                    x.metric.version,
                    f.display,
                    f.period.label,
                    f.included,
                    f.excluded
                );
            }
            for (input, t) in &x.totals {
                let name = if input.is_empty() { "facts" } else { input };
                let _ = writeln!(
                    out,
                    "{name}: {} considered = {} included + {} excluded {:?}",
                    t.considered,
                    t.included,
                    t.excluded.values().sum::<u64>(),
                    t.excluded
                );
            }
            let _ = writeln!(
                out,
                "rows {}..{} of {}:",
                select.offset,
                select.offset + x.rows.len(),
                x.total_rows
            );
            for r in &x.rows {
                let _ = writeln!(
                    out,
                    "  position {:>7}  {:<30} {:<22} {}  {:<8} {:<12} numerator {} denominator {}",
                    r.position,
                    r.stream,
                    r.event_type,
                    r.occurred_at.format("%Y-%m-%d %H:%M:%S"),
                    r.decision,
                    r.rule.as_deref().unwrap_or("-"),
                    num_or_blank(r.numerator.as_ref()),
                    num_or_blank(r.denominator.as_ref())
                );
            }
            if let Some(next) = x.next_offset {
                let _ = writeln!(out, "more: --offset {next}");
            }
            let _ = writeln!(
                out,
                "computed at log position {} chain hash {}",
                x.log.position, x.log.chain_hash
            );
            Ok(out)
        }
    }
}
