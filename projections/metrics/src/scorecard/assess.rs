//! Assessment: the cascade's nodes (written and generated from the data), each measure's
//! actual, baseline, target, status and trend at a node, roll-ups, and who sees which node.
//!
//! Every figure is an evaluation of the measure's metric over the one [`LogView`] the
//! assessment holds, restricted by the node's dimension values: a node's figure and its
//! children's come from the same events, never from copied numbers. Evaluations are
//! memoised per (measure, range, written filter, generated dimensions): one evaluation
//! broken down by `region` gives every regional office's figure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use crm_domain::definitions::MeasureStatus;
use serde::Serialize;

use super::definition::{
    Baseline, Direction, Expand, Goal, Measure, NodeKind, ScorecardDefinition,
};
use super::error::ScorecardError;
use super::store::StoredScorecard;
use super::{EXPANDED_NODES_MAX, TREND_POINTS_MAX};
use crate::derivation::Num;
use crate::query::{display, evaluate_in, Figure, Query, Status};
use crate::registry::{RegisteredMetric, Registry};
use crate::view::{KnownAt, LogMark, LogView};
use crate::{Evaluation, Grain, MetricError};

/// The engine's label of a fact without a value of a dimension.
const NO_VALUE: &str = "(none)";

/// A node of the cascade, written or generated.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Node {
    pub id: String,
    pub parent: Option<String>,
    pub name: String,
    pub kind: NodeKind,
    pub owner: Option<String>,
    /// Principals who see this node and those below it.
    pub viewers: Vec<String>,
    /// The written restrictions of this node and its ancestors.
    pub base: BTreeMap<String, String>,
    /// The generated restrictions (dimension, value), outermost first.
    pub split: Vec<(String, String)>,
    /// Goals overridden here or above, by measure.
    pub goals: BTreeMap<String, Goal>,
    /// The measures read at this node.
    pub measures: Vec<String>,
    /// The measures not read here, and why.
    pub not_applicable: Vec<(String, String)>,
    pub children: Vec<String>,
}

impl Node {
    /// Every restriction of the node: written and generated.
    #[must_use]
    pub fn filter(&self) -> BTreeMap<String, String> {
        let mut f = self.base.clone();
        f.extend(self.split.iter().cloned());
        f
    }
}

/// Which range of a measure an evaluation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Range {
    Actual,
    Trend,
    Baseline,
}

type MemoKey = (String, Range, Vec<(String, String)>, Vec<String>);

/// One evaluation to run: a measure over a range, with a written filter and a breakdown.
type Job<'m> = (&'m Measure, Range, BTreeMap<String, String>, Vec<String>);

/// One scorecard version assessed over one view of the log.
pub struct Assessment {
    stored: Arc<StoredScorecard>,
    view: Arc<LogView>,
    registry: Arc<Registry>,
    as_of: Option<DateTime<Utc>>,
    known_at: Option<KnownAt>,
    metrics: BTreeMap<String, Arc<RegisteredMetric>>,
    nodes: Vec<Node>,
    memo: std::sync::Mutex<BTreeMap<MemoKey, Arc<Evaluation>>>,
}

/// A figure of a measure at a node.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Reading {
    pub value: Option<f64>,
    pub display: String,
    pub included: u64,
    pub excluded: BTreeMap<String, u64>,
    pub numerator: Option<Num>,
    pub denominator: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Why there is no value, when there is none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// One period of a trend.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TrendPoint {
    pub period: String,
    pub start: DateTime<Utc>,
    pub value: Option<f64>,
    pub display: String,
    pub included: u64,
    pub status: MeasureStatus,
}

/// The baseline as read.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct BaselineReading {
    pub value: Option<f64>,
    pub display: String,
    /// `value` (written) or `computed` (over `range`).
    pub from: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
}

/// The target as shown.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct TargetReading {
    pub value: f64,
    pub display: String,
    pub on_track: f64,
    pub on_track_display: String,
    pub at_risk: f64,
    pub at_risk_display: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by: Option<DateTime<Utc>>,
    /// `true` when this node has its own target.
    pub own: bool,
}

/// The definition a measure reads.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct MetricUsed {
    pub id: String,
    pub version: u32,
    pub name: String,
    pub spec_hash: String,
}

/// A measure at a node.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct MeasureReading {
    pub id: String,
    pub name: String,
    pub objective: String,
    pub owner: Option<String>,
    pub direction: Direction,
    pub grain: Grain,
    pub metric: MetricUsed,
    /// The query the actual figure answers (explain it with the same).
    pub query: Query,
    pub actual: Reading,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline: Option<BaselineReading>,
    pub target: TargetReading,
    pub status: MeasureStatus,
    pub trend: Vec<TrendPoint>,
}

/// Where a node's children's figures stand against the node's own.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Rollup {
    pub measure: String,
    /// The dimension the children split the node by.
    pub by: String,
    pub children: usize,
    pub node_included: u64,
    pub children_included: u64,
    pub node_numerator: Option<f64>,
    pub children_numerator: Option<f64>,
    pub node_denominator: Option<f64>,
    pub children_denominator: Option<f64>,
    /// The node's value recomputed from its children's numerators and denominators (their
    /// sum for an additive figure).
    pub from_children: Option<f64>,
    pub node_value: Option<f64>,
    /// Whether the children add up to the node (counts, numerators and denominators).
    pub adds_up: bool,
}

/// Worst of `statuses`, ignoring `no_data` unless nothing else is there.
#[must_use]
pub fn worst(statuses: impl IntoIterator<Item = MeasureStatus>) -> MeasureStatus {
    let mut out = MeasureStatus::NoData;
    for s in statuses {
        out = match (out, s) {
            (_, MeasureStatus::OffTrack) | (MeasureStatus::OffTrack, _) => MeasureStatus::OffTrack,
            (_, MeasureStatus::AtRisk) | (MeasureStatus::AtRisk, _) => MeasureStatus::AtRisk,
            (_, MeasureStatus::OnTrack) | (MeasureStatus::OnTrack, _) => MeasureStatus::OnTrack,
            _ => MeasureStatus::NoData,
        };
    }
    out
}

/// The status of `value` against `goal`.
#[must_use]
pub fn status_of(value: Option<f64>, goal: &Goal, direction: Direction) -> MeasureStatus {
    let Some(v) = value else {
        return MeasureStatus::NoData;
    };
    let better_or_equal = |a: f64, b: f64| match direction {
        Direction::Higher => a >= b,
        Direction::Lower => a <= b,
    };
    if better_or_equal(v, goal.on_track) {
        MeasureStatus::OnTrack
    } else if better_or_equal(v, goal.at_risk) {
        MeasureStatus::AtRisk
    } else {
        MeasureStatus::OffTrack
    }
}

fn slug(value: &str) -> String {
    let mut out = String::new();
    for c in value.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        out.push('x');
    }
    out.truncate(48);
    out
}

fn fill(template: &str, value: &str) -> String {
    template
        .replace("{value}", value)
        .replace("{slug}", &slug(value))
}

fn num_f64(n: Option<Num>) -> Option<f64> {
    n.map(|n| match n {
        Num::Int(i) => i as f64,
        Num::Float(f) => f,
    })
}

impl Assessment {
    /// The metrics every measure of `def` reads, for [`crate::load_view`].
    ///
    /// # Errors
    /// A measure's metric is no longer in the registry.
    pub fn metrics_of(
        def: &ScorecardDefinition,
        registry: &Registry,
    ) -> Result<Vec<Arc<RegisteredMetric>>, ScorecardError> {
        def.measures
            .iter()
            .map(|m| registry.get(&m.metric, Some(m.version)).map_err(Into::into))
            .collect()
    }

    /// Builds the cascade of `def` over `view` (loaded with the metrics of
    /// [`Assessment::metrics_of`] under `as_of` / `known_at`).
    ///
    /// # Errors
    /// A metric evaluation fails, or the cascade exceeds [`EXPANDED_NODES_MAX`].
    pub fn new(
        stored: Arc<StoredScorecard>,
        view: Arc<LogView>,
        registry: Arc<Registry>,
        as_of: Option<DateTime<Utc>>,
        known_at: Option<KnownAt>,
    ) -> Result<Self, ScorecardError> {
        let mut metrics = BTreeMap::new();
        for m in &stored.definition.measures {
            metrics.insert(m.id.clone(), registry.get(&m.metric, Some(m.version))?);
        }
        let mut a = Assessment {
            stored,
            view,
            registry,
            as_of,
            known_at,
            metrics,
            nodes: Vec::new(),
            memo: std::sync::Mutex::new(BTreeMap::new()),
        };
        a.build()?;
        Ok(a)
    }

    /// The scorecard version assessed.
    #[must_use]
    pub fn def(&self) -> &ScorecardDefinition {
        &self.stored.definition
    }

    /// The stored version (text, spec hash, position).
    #[must_use]
    pub fn stored(&self) -> &StoredScorecard {
        &self.stored
    }

    /// When facts are counted to, if not now.
    #[must_use]
    pub fn as_of(&self) -> Option<DateTime<Utc>> {
        self.as_of
    }

    /// What the log had recorded by, if not now.
    #[must_use]
    pub fn known_at(&self) -> Option<KnownAt> {
        self.known_at
    }

    /// The view the figures are computed from.
    #[must_use]
    pub fn view(&self) -> &LogView {
        &self.view
    }

    /// The registry the measures' metrics come from.
    #[must_use]
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The query of measure `mid`'s actual figure at `node`.
    #[must_use]
    pub fn actual_query(&self, node: &Node, mid: &str) -> Option<Query> {
        self.stored
            .definition
            .measure(mid)
            .map(|m| self.query(m, Range::Actual, &node.filter(), &[]))
    }

    /// The metric definition measure `mid` reads.
    #[must_use]
    pub fn metric_of(&self, mid: &str) -> Option<Arc<RegisteredMetric>> {
        self.metrics.get(mid).cloned()
    }

    /// Where the log was read to.
    #[must_use]
    pub fn log(&self) -> &LogMark {
        &self.view.mark
    }

    /// Every node, parents before children.
    #[must_use]
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The node `id`.
    #[must_use]
    pub fn node(&self, id: &str) -> Option<&Node> {
        self.nodes.iter().find(|n| n.id == id)
    }

    fn applicable(
        &self,
        filter: &BTreeMap<String, String>,
        subset: Option<&Vec<String>>,
    ) -> (Vec<String>, Vec<(String, String)>) {
        let mut yes = Vec::new();
        let mut no = Vec::new();
        for m in &self.stored.definition.measures {
            if subset.is_some_and(|s| !s.contains(&m.id)) {
                continue;
            }
            if let Some(d) = filter.keys().find(|d| !m.dimensions.contains(*d)) {
                no.push((
                    m.id.clone(),
                    format!("{}@{} has no dimension {d}", m.metric, m.version),
                ));
            } else if let Some((d, v)) = m
                .filter
                .iter()
                .find(|(d, v)| filter.get(*d).is_some_and(|x| x != *v))
            {
                no.push((m.id.clone(), format!("the measure reads only {d}={v}")));
            } else {
                yes.push(m.id.clone());
            }
        }
        (yes, no)
    }

    fn build(&mut self) -> Result<(), ScorecardError> {
        let defs = self.stored.definition.nodes.clone();
        for nd in &defs {
            let parent = nd.parent.as_ref().and_then(|p| self.node(p)).cloned();
            let mut base = parent.as_ref().map(|p| p.base.clone()).unwrap_or_default();
            base.extend(nd.filter.clone());
            let mut goals = parent.as_ref().map(|p| p.goals.clone()).unwrap_or_default();
            goals.extend(nd.goals.clone());
            let subset = nd
                .measures
                .clone()
                .or_else(|| parent.as_ref().map(|p| p.measures.clone()));
            let mut filter = base.clone();
            if let Some(p) = &parent {
                filter.extend(p.split.iter().cloned());
            }
            let (measures, not_applicable) = self.applicable(&filter, subset.as_ref());
            let node = Node {
                id: nd.id.clone(),
                parent: nd.parent.clone(),
                name: nd.name.clone(),
                kind: nd.kind,
                owner: nd.owner.clone(),
                viewers: nd.viewers.clone(),
                base,
                split: parent.map(|p| p.split).unwrap_or_default(),
                goals,
                measures,
                not_applicable,
                children: Vec::new(),
            };
            self.push(node)?;
            if let Some(e) = &nd.expand {
                self.expand(&nd.id, e)?;
            }
        }
        Ok(())
    }

    fn push(&mut self, node: Node) -> Result<(), ScorecardError> {
        if self.nodes.len() >= EXPANDED_NODES_MAX {
            return Err(ScorecardError::TooManyNodes {
                id: self.stored.definition.id.clone(),
                limit: EXPANDED_NODES_MAX,
            });
        }
        if let Some(p) = node.parent.clone() {
            if let Some(parent) = self.nodes.iter_mut().find(|n| n.id == p) {
                parent.children.push(node.id.clone());
            }
        }
        self.nodes.push(node);
        Ok(())
    }

    /// The values of `by` among the facts of `measures` at `node`.
    fn values_of(
        &self,
        node: &Node,
        by: &str,
        measures: &[String],
    ) -> Result<BTreeSet<String>, ScorecardError> {
        let mut out = BTreeSet::new();
        let mut dims: Vec<String> = node.split.iter().map(|(d, _)| d.clone()).collect();
        dims.push(by.to_owned());
        for mid in measures {
            let Some(m) = self.stored.definition.measure(mid) else {
                continue;
            };
            if !m.dimensions.contains(by) {
                continue;
            }
            let ev = self.evaluation(m, Range::Actual, &node.base, &dims)?;
            for f in &ev.figures {
                let matches = node
                    .split
                    .iter()
                    .all(|(d, v)| f.dims.get(d).is_some_and(|x| x == v));
                // Facts without a value of `by` belong to no child (a roll-up shows them).
                if let Some(v) = f
                    .dims
                    .get(by)
                    .filter(|v| matches && !v.is_empty() && *v != NO_VALUE)
                {
                    out.insert(v.clone());
                }
            }
        }
        Ok(out)
    }

    fn expand(&mut self, parent_id: &str, e: &Expand) -> Result<(), ScorecardError> {
        let Some(parent) = self.node(parent_id).cloned() else {
            return Ok(());
        };
        // The children's measures: those the expansion names, else the parent's.
        let subset: Vec<String> = match &e.measures {
            Some(chosen) => parent
                .measures
                .iter()
                .filter(|m| chosen.contains(m))
                .cloned()
                .collect(),
            None => parent.measures.clone(),
        };
        // One evaluation per measure gives every child's value: run them side by side.
        let mut dims: Vec<String> = parent.split.iter().map(|(d, _)| d.clone()).collect();
        dims.push(e.by.clone());
        let jobs: Vec<_> = subset
            .iter()
            .filter_map(|mid| self.stored.definition.measure(mid))
            .filter(|m| m.dimensions.contains(&e.by))
            .map(|m| (m, Range::Actual, parent.base.clone(), dims.clone()))
            .collect();
        self.run_jobs(&jobs);
        for value in self.values_of(&parent, &e.by, &subset)? {
            let id = if parent.parent.is_none() {
                slug(&value)
            } else {
                format!("{}.{}", parent.id, slug(&value))
            };
            let mut split = parent.split.clone();
            split.push((e.by.clone(), value.clone()));
            let mut filter = parent.base.clone();
            filter.extend(split.iter().cloned());
            let (measures, mut not_applicable) = self.applicable(&filter, Some(&subset));
            not_applicable.extend(parent.not_applicable.iter().cloned());
            let node = Node {
                id: id.clone(),
                parent: Some(parent.id.clone()),
                name: fill(&e.name, &value),
                kind: e.kind,
                owner: e.owner.as_deref().map(|o| fill(o, &value)),
                viewers: e.viewers.iter().map(|v| fill(v, &value)).collect(),
                base: parent.base.clone(),
                split,
                goals: {
                    let mut g = parent.goals.clone();
                    g.extend(e.goals.clone());
                    g
                },
                measures,
                not_applicable,
                children: Vec::new(),
            };
            self.push(node)?;
            if let Some(next) = &e.then {
                self.expand(&id, next)?;
            }
        }
        Ok(())
    }

    fn query(
        &self,
        m: &Measure,
        range: Range,
        base: &BTreeMap<String, String>,
        by: &[String],
    ) -> Query {
        let mut filter = m.filter.clone();
        filter.extend(base.clone());
        let (from, to, period) = match (range, &m.baseline) {
            (Range::Baseline, Some(Baseline::Computed { from, to })) => {
                (Some(*from), Some(*to), Grain::All)
            }
            (Range::Trend, _) => (m.from, m.to, m.grain),
            _ => (m.from, m.to, Grain::All),
        };
        Query {
            from,
            to,
            period,
            by: by.to_vec(),
            filter,
            conditions: Vec::new(),
            as_of: self.as_of,
            known_at: self.known_at,
        }
    }

    /// Computes, on every core, the evaluations a reader of `node` needs that are not
    /// memoised yet: each measure's actual, trend and baseline at the node, and its
    /// children's actuals. Errors are left for the reading that follows to report.
    pub fn warm(&self, node: &Node) {
        let mut jobs: Vec<Job<'_>> = Vec::new();
        let mut seen = BTreeSet::new();
        let mut add = |m: &'_ Measure, range: Range, n: &Node| {
            let dims: Vec<String> = n.split.iter().map(|(d, _)| d.clone()).collect();
            let key: MemoKey = (
                m.id.clone(),
                range,
                n.base.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
                dims.clone(),
            );
            let known = self
                .memo
                .lock()
                .map(|g| g.contains_key(&key))
                .unwrap_or(false);
            if !known && seen.insert(key) {
                Some((range, n.base.clone(), dims))
            } else {
                None
            }
        };
        for mid in &node.measures {
            let Some(m) = self.stored.definition.measure(mid) else {
                continue;
            };
            let mut ranges = vec![Range::Actual];
            if m.grain != Grain::All {
                ranges.push(Range::Trend);
            }
            if matches!(m.baseline, Some(Baseline::Computed { .. })) {
                ranges.push(Range::Baseline);
            }
            for range in ranges {
                if let Some((r, base, dims)) = add(m, range, node) {
                    jobs.push((m, r, base, dims));
                }
            }
            for child in node.children.iter().filter_map(|c| self.node(c)) {
                if child.measures.contains(mid) {
                    if let Some((r, base, dims)) = add(m, Range::Actual, child) {
                        jobs.push((m, r, base, dims));
                    }
                }
            }
        }
        self.run_jobs(&jobs);
    }

    /// Evaluates `jobs` spread over the machine's cores (at most one thread per job).
    fn run_jobs(&self, jobs: &[Job<'_>]) {
        if jobs.len() < 2 {
            for (m, range, base, dims) in jobs {
                let _ = self.evaluation(m, *range, base, dims);
            }
            return;
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .clamp(1, jobs.len().max(1));
        let per = jobs.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            for chunk in jobs.chunks(per) {
                scope.spawn(move || {
                    for (m, range, base, dims) in chunk {
                        let _ = self.evaluation(m, *range, base, dims);
                    }
                });
            }
        });
    }

    fn evaluation(
        &self,
        m: &Measure,
        range: Range,
        base: &BTreeMap<String, String>,
        by: &[String],
    ) -> Result<Arc<Evaluation>, ScorecardError> {
        let key: MemoKey = (
            m.id.clone(),
            range,
            base.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
            by.to_vec(),
        );
        if let Some(ev) = self.memo.lock().ok().and_then(|g| g.get(&key).cloned()) {
            return Ok(ev);
        }
        let metric = self
            .metrics
            .get(&m.id)
            .ok_or_else(|| MetricError::UnknownMetric {
                id: m.metric.clone(),
            })?;
        let query = self.query(m, range, base, by);
        let ev = Arc::new(evaluate_in(&self.view, &self.registry, metric, &query)?);
        if let Ok(mut g) = self.memo.lock() {
            g.insert(key, Arc::clone(&ev));
        }
        Ok(ev)
    }

    /// The figures of `m` at `node` over `range` (one per period).
    fn figures(
        &self,
        m: &Measure,
        range: Range,
        node: &Node,
    ) -> Result<(Vec<Figure>, Status), ScorecardError> {
        let dims: Vec<String> = node.split.iter().map(|(d, _)| d.clone()).collect();
        let ev = self.evaluation(m, range, &node.base, &dims)?;
        let figures = ev
            .figures
            .iter()
            .filter(|f| {
                node.split
                    .iter()
                    .all(|(d, v)| f.dims.get(d).is_some_and(|x| x == v))
            })
            .cloned()
            .collect();
        Ok((figures, ev.status.clone()))
    }

    fn goal(&self, m: &Measure, node: &Node) -> (Goal, bool) {
        match node.goals.get(&m.id) {
            Some(g) => (g.clone(), true),
            None => (m.goal.clone(), false),
        }
    }

    fn reading(
        &self,
        m: &Measure,
        figure: Option<&Figure>,
        status: &Status,
        goal: &Goal,
    ) -> Reading {
        let note = match (figure, status) {
            (_, Status::NoData { needs }) => Some(format!("no {} events in the log", needs.join(" or "))),
            (_, Status::Unsupported { needs }) => Some(format!("the metric cannot be computed yet: {needs}")),
            (None, _) => Some("no facts in the range".to_owned()),
            (Some(f), _) => match (&goal.currency, &f.currency) {
                (Some(want), Some(got)) if want != got => Some(format!(
                    "the figure is in {got}, the target in {want}; restrict the measure with where = [\"currency={want}\"]"
                )),
                _ => None,
            },
        };
        let mismatch = matches!(
            (&goal.currency, figure.and_then(|f| f.currency.as_ref())),
            (Some(want), Some(got)) if want != got
        );
        let value = if mismatch {
            None
        } else {
            figure.and_then(|f| f.value)
        };
        Reading {
            value,
            display: figure.map_or_else(|| display(m.unit, None, None), |f| f.display.clone()),
            included: figure.map_or(0, |f| f.included),
            excluded: figure.map(|f| f.excluded.clone()).unwrap_or_default(),
            numerator: figure.and_then(|f| f.numerator),
            denominator: figure.and_then(|f| f.denominator),
            currency: figure.and_then(|f| f.currency.clone()),
            note,
        }
    }

    /// The actual figure and status of measure `mid` at `node` (no trend, no baseline).
    ///
    /// # Errors
    /// A metric evaluation fails.
    pub fn status(
        &self,
        node: &Node,
        mid: &str,
    ) -> Result<(Reading, MeasureStatus), ScorecardError> {
        let Some(m) = self.stored.definition.measure(mid) else {
            return Err(ScorecardError::UnknownMeasure {
                node: node.id.clone(),
                measure: mid.to_owned(),
                nearest: None,
            });
        };
        let (figures, st) = self.figures(m, Range::Actual, node)?;
        let (goal, _) = self.goal(m, node);
        let reading = self.reading(m, figures.first(), &st, &goal);
        let status = status_of(reading.value, &goal, m.direction);
        Ok((reading, status))
    }

    /// The worst status of the measures read at `node`.
    ///
    /// # Errors
    /// A metric evaluation fails.
    pub fn node_status(&self, node: &Node) -> Result<MeasureStatus, ScorecardError> {
        let mut all = Vec::new();
        for mid in &node.measures {
            all.push(self.status(node, mid)?.1);
        }
        Ok(worst(all))
    }

    /// Everything about measure `mid` at `node`: actual, baseline, target, status, trend.
    ///
    /// # Errors
    /// A metric evaluation fails.
    pub fn measure(&self, node: &Node, mid: &str) -> Result<MeasureReading, ScorecardError> {
        let Some(m) = self.stored.definition.measure(mid) else {
            return Err(ScorecardError::UnknownMeasure {
                node: node.id.clone(),
                measure: mid.to_owned(),
                nearest: None,
            });
        };
        let metric = self
            .metrics
            .get(&m.id)
            .ok_or_else(|| MetricError::UnknownMetric {
                id: m.metric.clone(),
            })?;
        let (actual, status) = self.status(node, mid)?;
        let (goal, own) = self.goal(m, node);
        let currency = goal.currency.clone().or_else(|| actual.currency.clone());
        let currency = currency.as_deref();
        let shown = |v: f64| display(m.unit, Some(v), currency);
        let baseline = match &m.baseline {
            None => None,
            Some(Baseline::Value { value }) => Some(BaselineReading {
                value: Some(*value),
                display: shown(*value),
                from: "value",
                range: None,
            }),
            Some(Baseline::Computed { from, to }) => {
                let (f, _) = self.figures(m, Range::Baseline, node)?;
                let first = f.first();
                Some(BaselineReading {
                    value: first.and_then(|f| f.value),
                    display: first
                        .map_or_else(|| display(m.unit, None, None), |f| f.display.clone()),
                    from: "computed",
                    range: Some(format!(
                        "{}..{}",
                        from.format("%Y-%m-%d"),
                        to.format("%Y-%m-%d")
                    )),
                })
            }
        };
        let trend = if m.grain == Grain::All {
            Vec::new()
        } else {
            let (figures, _) = self.figures(m, Range::Trend, node)?;
            let mut points: Vec<TrendPoint> = figures
                .iter()
                .map(|f| TrendPoint {
                    period: f.period.label.clone(),
                    start: f.period.start,
                    value: f.value,
                    display: f.display.clone(),
                    included: f.included,
                    status: status_of(f.value, &goal, m.direction),
                })
                .collect();
            // Leading and trailing periods without facts are outside the data.
            let empty = |p: &TrendPoint| p.value.is_none() || p.included == 0;
            while points.first().is_some_and(empty) {
                points.remove(0);
            }
            while points.last().is_some_and(empty) {
                points.pop();
            }
            let skip = points.len().saturating_sub(TREND_POINTS_MAX);
            points.drain(..skip);
            points
        };
        Ok(MeasureReading {
            id: m.id.clone(),
            name: m.name.clone(),
            objective: m.objective.clone(),
            owner: m.owner.clone(),
            direction: m.direction,
            grain: m.grain,
            metric: MetricUsed {
                id: m.metric.clone(),
                version: m.version,
                name: metric.definition.name.clone(),
                spec_hash: metric.spec_hash.clone(),
            },
            query: self.query(m, Range::Actual, &node.filter(), &[]),
            actual,
            baseline,
            target: TargetReading {
                value: goal.target,
                display: shown(goal.target),
                on_track: goal.on_track,
                on_track_display: shown(goal.on_track),
                at_risk: goal.at_risk,
                at_risk_display: shown(goal.at_risk),
                by: m.target_by,
                own,
            },
            status,
            trend,
        })
    }

    /// For each measure of `node` whose children split it by one dimension: whether the
    /// children's figures add up to the node's.
    ///
    /// # Errors
    /// A metric evaluation fails.
    pub fn rollups(&self, node: &Node) -> Result<Vec<Rollup>, ScorecardError> {
        let children: Vec<&Node> = node
            .children
            .iter()
            .filter_map(|c| self.node(c))
            .filter(|c| c.split.len() == node.split.len() + 1 && c.base == node.base)
            .collect();
        let Some(by) = children
            .first()
            .and_then(|c| c.split.last())
            .map(|(d, _)| d.clone())
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for mid in &node.measures {
            if children.iter().any(|c| !c.measures.contains(mid)) {
                continue;
            }
            let (own, _) = self.status(node, mid)?;
            let mut included = 0u64;
            let mut num = None::<f64>;
            let mut den = None::<f64>;
            for c in &children {
                let (r, _) = self.status(c, mid)?;
                included += r.included;
                if let Some(n) = num_f64(r.numerator) {
                    num = Some(num.unwrap_or(0.0) + n);
                }
                if let Some(d) = num_f64(r.denominator) {
                    den = Some(den.unwrap_or(0.0) + d);
                }
            }
            let node_num = num_f64(own.numerator);
            let node_den = num_f64(own.denominator);
            let from_children = match (num, den) {
                (Some(n), Some(d)) if d != 0.0 => Some(n / d),
                (Some(n), None) => Some(n),
                _ => None,
            };
            let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) => (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0),
                (None, None) => true,
                _ => false,
            };
            out.push(Rollup {
                measure: mid.clone(),
                by: by.clone(),
                children: children.len(),
                node_included: own.included,
                children_included: included,
                node_numerator: node_num,
                children_numerator: num,
                node_denominator: node_den,
                children_denominator: den,
                from_children,
                node_value: own.value,
                adds_up: included == own.included && close(num, node_num) && close(den, node_den),
            });
        }
        Ok(out)
    }

    /// `id` and every node below it.
    #[must_use]
    pub fn subtree(&self, id: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo = vec![id.to_owned()];
        while let Some(n) = todo.pop() {
            if let Some(node) = self.node(&n) {
                todo.extend(node.children.iter().cloned());
                out.insert(n);
            }
        }
        out
    }

    /// The nodes a caller sees: every node when `all`, else the nodes naming `principal` a
    /// viewer and those below them.
    #[must_use]
    pub fn visible(&self, principal: &str, all: bool) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for n in &self.nodes {
            let parent_seen = n.parent.as_ref().is_some_and(|p| out.contains(p));
            if all || parent_seen || n.viewers.iter().any(|v| v == principal) {
                out.insert(n.id.clone());
            }
        }
        out
    }
}
