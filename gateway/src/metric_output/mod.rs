//! `crm metrics ...`, `crm metric ...` and `crm explain`: the metric engine from the command
//! line. Each function renders text (or JSON/CSV) for one verb; the verb modules parse flags.

mod line;

pub use line::{num, scorecard_line};

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use crm_domain::values::{Currency, Money};
use crm_eventstore::EventStore;
use crm_metrics::definition::Unit;
use crm_metrics::{
    compare, define_as, diff, evaluate, explain, to_csv, Evaluation, ExplainSelect, Figure, Grain,
    KnownAt, MetricError, Num, Query, Registry, Status,
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
    /// Only facts whose dimension has this value (`--where DIM=VALUE`).
    pub filter: std::collections::BTreeMap<String, String>,
    /// Only facts meeting these expressions (`--where "attr.origin == 'API'"`).
    pub conditions: Vec<String>,
}

/// Which figures to print, and in which order (`--order`, `--limit`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// Sort the figures.
    pub order: Option<Order>,
    /// Print at most this many figures per metric.
    pub limit: Option<usize>,
}

/// `--order`: `value`, `-value` (largest first), `period`, `-period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    ValueAscending,
    ValueDescending,
    PeriodAscending,
    PeriodDescending,
}

impl std::str::FromStr for Order {
    type Err = OrderError;

    fn from_str(text: &str) -> Result<Order, OrderError> {
        match text {
            "value" => Ok(Order::ValueAscending),
            "-value" => Ok(Order::ValueDescending),
            "period" => Ok(Order::PeriodAscending),
            "-period" => Ok(Order::PeriodDescending),
            other => Err(OrderError(other.to_owned())),
        }
    }
}

/// An `--order` that is none of the orders.
#[derive(Debug, thiserror::Error)]
#[error("--order {0:?}: use value, -value (largest first), period or -period")]
pub struct OrderError(String);

impl Shape {
    /// Sorts and cuts `ev`'s figures; the number left out.
    fn apply(self, ev: &mut Evaluation) -> usize {
        match self.order {
            Some(Order::ValueAscending) => ev.figures.sort_by(|a, b| {
                a.value
                    .unwrap_or(f64::NAN)
                    .total_cmp(&b.value.unwrap_or(f64::NAN))
            }),
            Some(Order::ValueDescending) => ev.figures.sort_by(|a, b| {
                b.value
                    .unwrap_or(f64::NEG_INFINITY)
                    .total_cmp(&a.value.unwrap_or(f64::NEG_INFINITY))
            }),
            Some(Order::PeriodAscending) => ev.figures.sort_by_key(|f| f.period.start),
            Some(Order::PeriodDescending) => {
                ev.figures
                    .sort_by_key(|f| std::cmp::Reverse(f.period.start));
            }
            None => {}
        }
        match self.limit {
            Some(limit) if ev.figures.len() > limit => {
                let cut = ev.figures.len() - limit;
                ev.figures.truncate(limit);
                cut
            }
            _ => 0,
        }
    }
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
            filter: self.filter.clone(),
            conditions: self.conditions.clone(),
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

/// `crm metric ID [ID...]`: metrics' figures with their derivation, in one output (one CSV
/// header, a JSON array when several).
///
/// # Errors
/// [`MetricError`] for an unknown metric, a bad query or a read error.
pub async fn metrics<S: EventStore>(
    store: &S,
    ids: &[String],
    version: Option<u32>,
    flags: &QueryFlags,
    shape: Shape,
    format: Format,
) -> Result<String, MetricError> {
    let ids_read: Vec<&str> = ids.iter().map(String::as_str).collect();
    let registry = Registry::load_for(store, &ids_read).await?;
    let mut evaluations = Vec::new();
    for id in ids {
        let mut ev = evaluate(store, &registry, id, version, &flags.query()).await?;
        let cut = shape.apply(&mut ev);
        evaluations.push((ev, cut));
    }
    match format {
        Format::Json => match evaluations.as_slice() {
            [(one, _)] => json(one),
            many => json(&many.iter().map(|(e, _)| e).collect::<Vec<_>>()),
        },
        Format::Csv => {
            let mut out = String::from("metric,version,spec_hash,period,period_start,period_end");
            for dim in &flags.by {
                out.push(',');
                out.push_str(&csv_field(dim));
            }
            out.push_str(
                ",value,display,numerator,denominator,included,excluded,log_position,chain_hash\n",
            );
            for (ev, _) in &evaluations {
                for f in &ev.figures {
                    let excluded: Vec<String> =
                        f.excluded.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    let _ = write!(
                        out,
                        "{},{},{},{},{},{}",
                        ev.metric.id,
                        ev.metric.version,
                        ev.metric.spec_hash,
                        csv_field(&f.period.label),
                        f.period.start.to_rfc3339(),
                        f.period.end.to_rfc3339()
                    );
                    for dim in &flags.by {
                        let _ = write!(
                            out,
                            ",{}",
                            csv_field(f.dims.get(dim).map_or("", String::as_str))
                        );
                    }
                    let (value, numerator, denominator) = display_units(ev.metric.unit, f);
                    let _ = writeln!(
                        out,
                        ",{},{},{},{},{},{},{},{}",
                        value,
                        csv_field(&f.display),
                        numerator,
                        denominator,
                        f.included,
                        csv_field(&excluded.join(";")),
                        ev.log.position,
                        ev.log.chain_hash
                    );
                }
            }
            Ok(out)
        }
        Format::Text => {
            let mut out = String::new();
            for (ev, cut) in &evaluations {
                out.push_str(&text(ev));
                if *cut > 0 {
                    let _ = writeln!(out, "  ({cut} more figures not shown: --limit)");
                }
            }
            Ok(out)
        }
    }
}

/// One evaluation as text.
fn text(ev: &Evaluation) -> String {
    let mut out = String::new();
    let single = ev.figures.len() == 1 && ev.figures.iter().all(|f| f.dims.is_empty());
    if single || ev.status != Status::Ok {
        let _ = writeln!(out, "{}", scorecard_line(ev));
    } else {
        let _ = writeln!(
            out,
            "{} v{}  {}",
            ev.metric.id, ev.metric.version, ev.metric.name
        );
    }
    if ev.status == Status::Ok && !single {
        for f in &ev.figures {
            let dims: Vec<String> = f.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
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
    if !ev.query.filter.is_empty() {
        let filter: Vec<String> = ev
            .query
            .filter
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let _ = writeln!(out, "only facts with {}", filter.join(", "));
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
    out
}

/// `crm metrics dimensions ID`: what a query may break down or filter the metric by.
///
/// # Errors
/// [`MetricError`] for an unknown metric or version.
pub async fn dimensions<S: EventStore>(
    store: &S,
    id: &str,
    version: Option<u32>,
    format: Format,
) -> Result<String, MetricError> {
    let registry = Registry::load_for(store, &[id]).await?;
    let m = registry.get(id, version)?;
    let dims = &m.definition.dimensions();
    if format == Format::Json {
        return json(dims);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} v{}: {} dimensions (--by NAME, --where NAME=VALUE)",
        m.definition.id,
        m.definition.version,
        dims.len()
    );
    for (name, expr) in dims {
        let _ = writeln!(out, "  {name:<24} {expr}");
    }
    Ok(out)
}

/// A figure's value, numerator and denominator for the CSV, in the units people read: money
/// in currency units (`10666684.54`, not minor units) where the figure names its currency
/// (the value and numerator of a money figure, whose denominator counts facts; numerator
/// and denominator of a share of money); shares as fractions, durations in seconds, counts
/// as they are.
fn display_units(unit: Unit, f: &Figure) -> (String, String, String) {
    let value = f.value.map_or_else(String::new, |v| v.to_string());
    let (numerator, denominator) = (
        num_or_blank(f.numerator.as_ref()),
        num_or_blank(f.denominator.as_ref()),
    );
    let Some(currency) = f.currency.as_deref().and_then(|c| Currency::new(c).ok()) else {
        return (value, numerator, denominator);
    };
    let money = |n: Option<&Num>| n.map_or_else(String::new, |n| in_currency_units(*n, currency));
    match unit {
        Unit::Money => (
            f.value
                .map_or_else(String::new, |v| in_currency_units(Num::Float(v), currency)),
            money(f.numerator.as_ref()),
            denominator,
        ),
        Unit::Percent => (
            value,
            money(f.numerator.as_ref()),
            money(f.denominator.as_ref()),
        ),
        _ => (value, numerator, denominator),
    }
}

/// Minor units as an exact decimal in currency units (`1066668454`, GBP → `10666684.54`).
fn in_currency_units(n: Num, currency: Currency) -> String {
    let scaled = |v: f64| {
        let exponent = i32::try_from(currency.minor_unit_exponent()).unwrap_or(2);
        (v / 10f64.powi(exponent)).to_string()
    };
    match n {
        Num::Int(minor) => i64::try_from(minor).map_or_else(
            |_| scaled(n.to_f64()),
            |m| Money::new(m, currency).decimal(),
        ),
        Num::Float(v) => scaled(v),
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
    let registry = Registry::load_for(store, &[id]).await?;
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
    format: Format,
) -> Result<String, MetricError> {
    let registry = Registry::load_for(store, &[id]).await?;
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
    if format == Format::Json {
        return json(&d);
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} v{}: known at {} (log position {}) against {} (log position {})",
        d.metric.id,
        d.metric.version,
        t1.to_rfc3339(),
        d.before.position,
        t2.to_rfc3339(),
        d.after.position
    );
    let moved: Vec<_> = d.cells.iter().filter(|c| c.before != c.after).collect();
    let _ = writeln!(out, "{} of {} figures moved:", moved.len(), d.cells.len());
    for c in moved.iter().take(DIFF_LINES_SHOWN) {
        let dims: Vec<String> = c.dims.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            out,
            "  {:<16} {:<24} {} -> {}",
            c.period,
            dims.join(" "),
            c.before_display,
            c.after_display
        );
    }
    let mut by_type: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for e in &d.accounted_by {
        *by_type.entry(e.event_type.as_str()).or_default() += 1;
    }
    let _ = writeln!(
        out,
        "{} facts changed their part, accounted for by {} events recorded in between:",
        d.changed_facts.len(),
        d.accounted_by.len()
    );
    for (event_type, n) in &by_type {
        let _ = writeln!(out, "  {n:>7} {event_type}");
    }
    if moved.len() > DIFF_LINES_SHOWN {
        let _ = writeln!(
            out,
            "({} more figures: --json gives every figure, fact and event)",
            moved.len() - DIFF_LINES_SHOWN
        );
    } else {
        let _ = writeln!(out, "--json gives every fact and event");
    }
    Ok(out)
}

/// Moved figures `crm metric diff` lists in text.
const DIFF_LINES_SHOWN: usize = 40;

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
    all: bool,
    format: Format,
) -> Result<String, MetricError> {
    let registry = Registry::load_for(store, &[id]).await?;
    let x = explain(store, &registry, id, version, &flags.query(), select).await?;
    match format {
        Format::Csv => {
            let mut csv = to_csv(&x);
            // `--all`: every page, one header.
            let mut next = x.next_offset.filter(|_| all);
            while let Some(offset) = next {
                let page = ExplainSelect {
                    offset,
                    ..select.clone()
                };
                let more = explain(store, &registry, id, version, &flags.query(), &page).await?;
                let text = to_csv(&more);
                csv.push_str(text.split_once('\n').map_or("", |(_, rows)| rows));
                next = more.next_offset;
            }
            if !all {
                if let Some(offset) = x.next_offset {
                    eprintln!(
                        "explain: wrote rows {}..{} of {}; --offset {offset} gives the next page, --all every row",
                        select.offset + 1,
                        offset,
                        x.total_rows
                    );
                }
            }
            Ok(csv)
        }
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
