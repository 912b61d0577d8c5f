//! `crm metric sql ID`: a metric's definition compiled to SQL over the Parquet export
//! (`crm export --out DIR`) for DuckDB, Spark SQL or Trino (`crm_metrics::sql`); `--all`
//! says for every definition whether it has a SQL form, and why not.

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use crm_app::config::Flags;
use crm_app::store::{self, Create, StoreOpenError};
use crm_export::ColumnType;
use crm_metrics::sql::{
    to_sql, ColumnKind, Dialect, EventLayout, LayoutColumn, SqlError, SqlOptions, TypeLayout,
};
use crm_metrics::{Grain, Registry};
use serde::Serialize;

use super::Globals;

/// The export directory the SQL reads when none is given.
pub const DEFAULT_EXPORT_DIR: &str = "crm-export";

/// Flags of `crm metric sql`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// The metric, e.g. sales.win_rate (or --all).
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    id: Option<String>,
    /// Definition version (default: the metric's default version).
    #[arg(long)]
    version: Option<u32>,
    /// Period grain: all (default: one period over the whole range), day, week, month,
    /// quarter, year.
    #[arg(long, default_value = "all")]
    period: Grain,
    /// The export directory DuckDB reads (`crm export --out DIR`).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_EXPORT_DIR)]
    export_dir: String,
    /// The engine: duckdb (reads the files itself), spark or trino (read a table `events`).
    #[arg(long, default_value = "duckdb")]
    dialect: Dialect,
    /// Every definition (all versions): whether it has a SQL form, and why not.
    #[arg(long)]
    all: bool,
    /// With --all: the status and the SQL of each definition as JSON.
    #[arg(long, requires = "all")]
    json: bool,
}

/// One definition in `crm metric sql --all`.
#[derive(Debug, Serialize)]
struct Status {
    id: String,
    version: u32,
    default: bool,
    /// The event types whose events are its facts (none in the log: no data).
    needs: Vec<String>,
    /// The SQL, when the definition has a SQL form.
    sql: Option<String>,
    /// The construct without a SQL form (`stock measure`, `ref(..)`), when it has none.
    construct: Option<String>,
    /// Why it has none.
    reason: Option<String>,
}

#[derive(Debug, Serialize)]
struct Listing {
    dialect: Dialect,
    period: Grain,
    export_dir: String,
    with_sql: usize,
    without_sql: usize,
    metrics: Vec<Status>,
}

/// The export's columns (crm-export's own plan of every event type) as the compiler reads
/// them.
///
/// # Errors
/// A plan the export refuses (a build defect).
pub fn export_layout() -> anyhow::Result<EventLayout> {
    let mut layout = EventLayout::new();
    for (event_type, plan) in crm_export::plan_catalog()? {
        let columns = plan
            .columns
            .iter()
            .map(|c| LayoutColumn {
                name: c.name.clone(),
                path: c.path.clone(),
                kind: match c.ty {
                    ColumnType::Utf8 => ColumnKind::Text,
                    ColumnType::Int64 => ColumnKind::Int,
                    ColumnType::Float64 => ColumnKind::Float,
                    ColumnType::Boolean => ColumnKind::Bool,
                    ColumnType::Timestamp => ColumnKind::Timestamp,
                    ColumnType::Date => ColumnKind::Date,
                    ColumnType::Json => ColumnKind::Json,
                },
            })
            .collect();
        layout.insert(
            event_type,
            TypeLayout {
                columns,
                withheld: plan.withheld.clone(),
            },
        );
    }
    Ok(layout)
}

/// The registry of the log when there is one (its own definitions join the catalog), else
/// the built-in catalog.
async fn registry(globals: &Globals) -> anyhow::Result<Registry> {
    let config = globals.config(Flags::default())?;
    match store::open(&config, Create::Never).await {
        Ok(store) => {
            let registry = Registry::load(&store).await;
            store.close().await;
            Ok(registry?)
        }
        Err(StoreOpenError::Missing(_)) => Ok(Registry::builtin()?),
        Err(e) => Err(e.into()),
    }
}

/// Runs `crm metric sql`: prints the SQL (exit 0), or why the definition has none (exit 1).
///
/// # Errors
/// An unknown metric or version, a log that cannot be read.
pub async fn run(globals: &Globals, args: SqlArgs) -> anyhow::Result<ExitCode> {
    let registry = registry(globals).await?;
    let layout = export_layout()?;
    let options = SqlOptions {
        dialect: args.dialect,
        grain: args.period,
        export_dir: args.export_dir.clone(),
    };
    let mut out = std::io::stdout().lock();
    if !args.all {
        let Some(id) = &args.id else {
            bail!("name a metric, e.g. `crm metric sql sales.win_rate`, or give --all");
        };
        let m = registry.get(id, args.version)?;
        return match to_sql(&registry, &m, &layout, &options) {
            Ok(sql) => {
                write!(out, "{sql}")?;
                Ok(ExitCode::SUCCESS)
            }
            Err(SqlError::NoSqlForm {
                id,
                version,
                reason,
            }) => {
                drop(out);
                eprintln!("{id}@{version} has no SQL form: {reason}");
                Ok(ExitCode::FAILURE)
            }
            Err(e) => Err(e.into()),
        };
    }
    let mut metrics = Vec::new();
    for summary in registry.list() {
        let m = registry.get(&summary.id, Some(summary.version))?;
        let (sql, construct, reason) = match to_sql(&registry, &m, &layout, &options) {
            Ok(sql) => (Some(sql), None, None),
            Err(SqlError::NoSqlForm { reason, .. }) => {
                (None, Some(reason.construct()), Some(reason.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
        metrics.push(Status {
            id: summary.id,
            version: summary.version,
            default: summary.is_default,
            needs: summary.needs,
            sql,
            construct,
            reason,
        });
    }
    let with_sql = metrics.iter().filter(|s| s.sql.is_some()).count();
    let listing = Listing {
        dialect: args.dialect,
        period: args.period,
        export_dir: args.export_dir,
        with_sql,
        without_sql: metrics.len() - with_sql,
        metrics,
    };
    if args.json {
        serde_json::to_writer_pretty(&mut out, &listing)?;
        writeln!(out)?;
    } else {
        for s in &listing.metrics {
            let marker = if s.default { " (default)" } else { "" };
            match &s.reason {
                None => writeln!(out, "{}@{}{marker}: SQL", s.id, s.version)?,
                Some(reason) => {
                    writeln!(out, "{}@{}{marker}: no SQL form: {reason}", s.id, s.version)?
                }
            }
        }
        writeln!(
            out,
            "{} definitions with a SQL form, {} without ({} dialect)",
            listing.with_sql, listing.without_sql, listing.dialect
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_columns_the_sql_reads_are_the_exports() {
        for c in [
            "position",
            "stream_id",
            "stream_category",
            "stream_version",
            "event_id",
            "event_type",
            "occurred_at",
            "recorded_at",
            "actor",
        ] {
            assert!(crm_export::COMMON_COLUMNS.contains(&c), "{c}");
        }
        let layout = export_layout().unwrap();
        let won = layout.get("OpportunityWon").unwrap();
        assert!(won
            .columns
            .iter()
            .any(|c| c.name == "amount_minor_units" && c.kind == ColumnKind::Int));
    }

    /// `projections/metrics/SQL.md` is what the compiler says of the built-in definitions
    /// over the export's layout; `UPDATE_SQL_DOC=1` rewrites it.
    #[test]
    fn the_checked_in_sql_document_is_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../projections/metrics/SQL.md");
        let generated =
            crm_metrics::sql::document(&Registry::builtin().unwrap(), &export_layout().unwrap())
                .unwrap();
        if std::env::var("UPDATE_SQL_DOC").is_ok_and(|v| v == "1") {
            std::fs::write(&path, &generated).unwrap();
            return;
        }
        let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
        let line = checked_in
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b);
        assert!(
            checked_in == generated,
            "projections/metrics/SQL.md is not what the compiler generates (first difference at \
             line {}); refresh it with `{}` and commit it",
            line.map_or(0, |l| l + 1),
            crm_metrics::sql::SQL_DOC_REFRESH_COMMAND
        );
    }
}
