//! `crm scorecard define|list|show`: scorecards (strategy map, measures, cascade) as
//! versioned definitions in the log, and a node's measures as of any date.

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use crm_app::config::Flags;
use crm_app::store::Create;
use crm_metrics::scorecard::{self, Assessment, ScorecardReport};
use crm_metrics::{KnownAt, Registry};

use super::{format_of, instant, with_store, Globals};
use crate::metric_output::Format;

/// Flags of `crm scorecard`.
#[derive(Debug, Args)]
pub struct ScorecardArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Check a scorecard (TOML) against the metric catalog and append it as
    /// `ScorecardDefined`; a version is never overwritten.
    Define {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Every scorecard version in the log.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A node's measures: actual, baseline, target, status and trend, as of any date.
    Show {
        id: String,
        /// The node of the cascade (default: the root); `--nodes` lists them.
        #[arg(long)]
        node: Option<String>,
        /// The scorecard version (default: the latest).
        #[arg(long)]
        version: Option<u32>,
        /// Count facts that occurred by this instant (YYYY-MM-DD or RFC 3339).
        #[arg(long, value_parser = instant)]
        as_of: Option<chrono::DateTime<chrono::Utc>>,
        /// Count only what the log had recorded by this instant.
        #[arg(long, value_parser = instant)]
        known_at: Option<chrono::DateTime<chrono::Utc>>,
        /// List the nodes of the cascade with their status instead.
        #[arg(long)]
        nodes: bool,
        #[arg(long)]
        json: bool,
        /// One row per measure and period (the actual, then the trend).
        #[arg(long, conflicts_with = "json")]
        csv: bool,
    },
}

/// Runs `crm scorecard`.
///
/// # Errors
/// No log, an unreadable file, a scorecard refused, an unknown scorecard or node.
pub async fn run(globals: &Globals, args: ScorecardArgs) -> anyhow::Result<ExitCode> {
    let config = globals.config(Flags::default())?;
    let text = match &args.action {
        Action::Define { file, .. } => Some(
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?,
        ),
        _ => None,
    };
    let output = with_store(&config, Create::Never, async |store| {
        let registry = Registry::load(store).await?;
        match &args.action {
            Action::Define { json, file } => {
                let outcome = scorecard::define_scorecard_as(
                    store,
                    &registry,
                    text.as_deref().unwrap_or_default(),
                    chrono::Utc::now(),
                    &crm_app::access::local_principal().name,
                )
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
                if *json {
                    return Ok(serde_json::to_string_pretty(&outcome)? + "\n");
                }
                Ok(format!(
                    "scorecard {} v{}: {} (stream {}, position {}, spec hash {})\n",
                    outcome.id,
                    outcome.version,
                    outcome.outcome.replace('_', " "),
                    outcome.stream,
                    outcome.position.map_or("-".into(), |p| p.to_string()),
                    outcome.spec_hash
                ))
            }
            Action::List { json } => {
                let list = registry.scorecards();
                if *json {
                    return Ok(serde_json::to_string_pretty(&list)? + "\n");
                }
                if list.is_empty() {
                    return Ok("no scorecard in the log; `crm scorecard define FILE` adds one (crm demo defines `cockpit`)\n".to_owned());
                }
                let mut out = String::new();
                for s in list {
                    writeln!(
                        out,
                        "{}@{}{}  {}  ({} objectives, {} measures; position {}, by {})",
                        s.id,
                        s.version,
                        if s.is_default { " (latest)" } else { "" },
                        s.name,
                        s.objectives,
                        s.measures,
                        s.position,
                        s.actor
                    )?;
                }
                Ok(out)
            }
            Action::Show {
                id,
                node,
                version,
                as_of,
                known_at,
                nodes,
                json,
                csv,
            } => {
                let known_at = known_at.map(KnownAt::Time);
                let a = scorecard::assess(
                    store,
                    std::sync::Arc::new(registry),
                    id,
                    *version,
                    *as_of,
                    known_at,
                )
                .await?;
                let visible = a.visible("", true);
                if *nodes {
                    return node_list(&a, format_of(*json, *csv));
                }
                let mut report = scorecard::report(&a, node.as_deref(), &visible)?;
                let below = a.subtree(&report.node.id);
                report.status_changes =
                    scorecard::recent_changes(store, id, |n| below.contains(n)).await?;
                match format_of(*json, *csv) {
                    Format::Json => Ok(serde_json::to_string_pretty(&report)? + "\n"),
                    Format::Csv => csv_rows(&report),
                    Format::Text => Ok(text_report(&report)),
                }
            }
        }
    })
    .await?;
    write!(std::io::stdout().lock(), "{output}")?;
    Ok(ExitCode::SUCCESS)
}

fn status_word(s: crm_domain::definitions::MeasureStatus) -> &'static str {
    use crm_domain::definitions::MeasureStatus as S;
    match s {
        S::OnTrack => "on track",
        S::AtRisk => "at risk",
        S::OffTrack => "off track",
        S::NoData => "no data",
    }
}

fn node_list(a: &Assessment, format: Format) -> anyhow::Result<String> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        id: &'a str,
        parent: Option<&'a str>,
        name: &'a str,
        owner: Option<&'a str>,
        status: &'static str,
        measures: usize,
        viewers: &'a [String],
    }
    let mut lines = Vec::new();
    for n in a.nodes() {
        lines.push(Line {
            id: &n.id,
            parent: n.parent.as_deref(),
            name: &n.name,
            owner: n.owner.as_deref(),
            status: a.node_status(n)?.name(),
            measures: n.measures.len(),
            viewers: &n.viewers,
        });
    }
    match format {
        Format::Json => Ok(serde_json::to_string_pretty(&lines)? + "\n"),
        Format::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            w.write_record(["node", "parent", "name", "owner", "status", "measures"])?;
            for l in &lines {
                w.write_record([
                    l.id,
                    l.parent.unwrap_or_default(),
                    l.name,
                    l.owner.unwrap_or_default(),
                    l.status,
                    &l.measures.to_string(),
                ])?;
            }
            Ok(String::from_utf8(w.into_inner()?)?)
        }
        Format::Text => {
            let mut out = String::new();
            for n in a.nodes() {
                let depth = {
                    let mut d = 0;
                    let mut c = n.parent.as_deref();
                    while let Some(p) = c {
                        d += 1;
                        c = a.node(p).and_then(|x| x.parent.as_deref());
                    }
                    d
                };
                writeln!(
                    out,
                    "{:indent$}{}  {}  [{}]",
                    "",
                    n.id,
                    n.name,
                    status_word(a.node_status(n)?),
                    indent = depth * 2
                )?;
            }
            Ok(out)
        }
    }
}

fn text_report(r: &ScorecardReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} v{} (spec {}), log position {} (chain {}){}",
        r.scorecard.name,
        r.scorecard.version,
        r.scorecard.spec_hash.get(..12).unwrap_or_default(),
        r.log.position,
        r.log.chain_hash.get(..16).unwrap_or_default(),
        r.as_of
            .map(|t| format!(", as of {}", t.format("%Y-%m-%d %H:%M")))
            .unwrap_or_default()
    );
    let path: Vec<&str> = r.node.path.iter().map(|n| n.name.as_str()).collect();
    let _ = writeln!(out, "{}  [{}]", path.join(" > "), status_word(r.status));
    if !r.node.children.is_empty() {
        let children: Vec<String> = r
            .node
            .children
            .iter()
            .map(|c| {
                format!(
                    "{} ({}) [{}]",
                    c.name,
                    c.id,
                    c.status.map_or("", status_word)
                )
            })
            .collect();
        let _ = writeln!(out, "below: {}", children.join(", "));
    }
    for p in &r.perspectives {
        let _ = writeln!(out, "\n{}  [{}]", p.name, status_word(p.status));
        for o in &p.objectives {
            let _ = writeln!(out, "  {}  [{}]", o.name, status_word(o.status));
            for m in &o.measures {
                let m = &m.reading;
                let trend: Vec<&str> = m.trend.iter().map(|t| t.display.as_str()).collect();
                let _ = writeln!(
                    out,
                    "    {:<34} {:>18}  target {:>16}{}  [{}]  {}{}",
                    m.name,
                    m.actual.display,
                    m.target.display,
                    m.target
                        .by
                        .map(|b| format!(" by {}", b.format("%Y-%m-%d")))
                        .unwrap_or_default(),
                    status_word(m.status),
                    m.owner.as_deref().unwrap_or(""),
                    m.baseline
                        .as_ref()
                        .map(|b| format!("; baseline {}", b.display))
                        .unwrap_or_default(),
                );
                if !trend.is_empty() {
                    let _ = writeln!(out, "      trend: {}", trend.join(" · "));
                }
            }
        }
    }
    for ru in &r.rollups {
        let _ = writeln!(
            out,
            "roll-up {} by {}: {} children count {} of {} facts{}",
            ru.measure,
            ru.by,
            ru.children,
            ru.children_included,
            ru.node_included,
            if ru.adds_up {
                ", add up"
            } else {
                ", do not add up"
            }
        );
    }
    for c in &r.status_changes {
        let _ = writeln!(
            out,
            "status change at position {}: {} {} -> {} ({})",
            c.position,
            c.measure,
            c.from.map_or("(first)", status_word),
            status_word(c.to),
            c.actual_display
        );
    }
    out
}

fn csv_rows(r: &ScorecardReport) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "scorecard",
        "version",
        "node",
        "perspective",
        "objective",
        "measure",
        "metric",
        "metric_version",
        "kind",
        "period",
        "value",
        "display",
        "target",
        "status",
        "owner",
    ])?;
    for p in &r.perspectives {
        for o in &p.objectives {
            for m in &o.measures {
                let m = &m.reading;
                let version = r.scorecard.version.to_string();
                let metric_version = m.metric.version.to_string();
                let target = m.target.value.to_string();
                let mut row =
                    |kind: &str, period: &str, value: Option<f64>, display: &str, status: &str| {
                        w.write_record([
                            r.scorecard.id.as_str(),
                            &version,
                            &r.node.id,
                            &p.id,
                            &o.id,
                            &m.id,
                            &m.metric.id,
                            &metric_version,
                            kind,
                            period,
                            &value.map_or(String::new(), |v| v.to_string()),
                            display,
                            &target,
                            status,
                            m.owner.as_deref().unwrap_or_default(),
                        ])
                    };
                row(
                    "actual",
                    "",
                    m.actual.value,
                    &m.actual.display,
                    m.status.name(),
                )?;
                for t in &m.trend {
                    row("trend", &t.period, t.value, &t.display, t.status.name())?;
                }
            }
        }
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}
