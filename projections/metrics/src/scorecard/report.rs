//! A node of a scorecard as a manager reads it: its place in the cascade, its measures by
//! perspective and objective, the strategy map, roll-ups; and the status changes an
//! assessment finds against the last recorded ones.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use crm_domain::definitions::{MeasureStatus, ScorecardStatusChanged};
use serde::Serialize;

use super::assess::{worst, Assessment, MeasureReading, Node, Rollup};
use super::definition::NodeKind;
use super::error::ScorecardError;
use super::store::{StatusBoard, StatusChangeLine};
use crate::view::LogMark;

/// A node named in a path or a list of children.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct NodeRef {
    pub id: String,
    pub name: String,
    pub kind: NodeKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<MeasureStatus>,
}

/// The node shown.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct NodeReport {
    pub id: String,
    pub name: String,
    pub kind: NodeKind,
    pub owner: Option<String>,
    /// Every restriction of the node (its own and its ancestors').
    #[serde(rename = "where")]
    pub filter: BTreeMap<String, String>,
    /// From the caller's top visible node down to this one.
    pub path: Vec<NodeRef>,
    pub children: Vec<NodeRef>,
}

/// A measure at the node, with the links and pictures the edge adds.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct MeasureReport {
    #[serde(flatten)]
    pub reading: MeasureReading,
    /// Where the figure is explained.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trend_svg: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bullet_svg: Option<String>,
}

/// An objective at the node.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ObjectiveReport {
    pub id: String,
    pub name: String,
    pub description: String,
    pub status: MeasureStatus,
    /// Objectives that drive this one.
    pub causes: Vec<String>,
    /// Objectives this one drives.
    pub drives: Vec<String>,
    pub measures: Vec<MeasureReport>,
}

/// A perspective at the node.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct PerspectiveReport {
    pub id: String,
    pub name: String,
    pub status: MeasureStatus,
    pub objectives: Vec<ObjectiveReport>,
}

/// A measure not read at the node, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct NotApplicable {
    pub measure: String,
    pub reason: String,
}

/// Which scorecard version answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct ScorecardRef {
    pub id: String,
    pub version: u32,
    pub name: String,
    pub spec_hash: String,
}

/// One node of a scorecard, assessed.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ScorecardReport {
    pub scorecard: ScorecardRef,
    pub as_of: Option<DateTime<Utc>>,
    pub log: LogMark,
    pub node: NodeReport,
    pub status: MeasureStatus,
    pub perspectives: Vec<PerspectiveReport>,
    pub not_applicable: Vec<NotApplicable>,
    pub rollups: Vec<Rollup>,
    pub status_changes: Vec<StatusChangeLine>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy_map_svg: Option<String>,
}

fn node_ref(a: &Assessment, n: &Node, with_status: bool) -> Result<NodeRef, ScorecardError> {
    Ok(NodeRef {
        id: n.id.clone(),
        name: n.name.clone(),
        kind: n.kind,
        owner: n.owner.clone(),
        status: if with_status {
            Some(a.node_status(n)?)
        } else {
            None
        },
    })
}

/// The node `node` (default: the first node `visible` holds) of the assessment, for a
/// caller who sees `visible`.
///
/// # Errors
/// The node is unknown or not visible, or an evaluation fails.
pub fn report(
    a: &Assessment,
    node: Option<&str>,
    visible: &BTreeSet<String>,
) -> Result<ScorecardReport, ScorecardError> {
    let spec_hash = a.stored().spec_hash.clone();
    let as_of = a.as_of();
    let n = node_of(a, node, visible)?;
    a.warm(n);
    let mut path = Vec::new();
    let mut cursor = Some(n);
    while let Some(c) = cursor.filter(|c| visible.contains(&c.id)) {
        path.push(node_ref(a, c, false)?);
        cursor = c.parent.as_deref().and_then(|p| a.node(p));
    }
    path.reverse();
    let mut children = Vec::new();
    for c in n.children.iter().filter_map(|c| a.node(c)) {
        children.push(node_ref(a, c, true)?);
    }
    let mut perspectives = Vec::new();
    let mut all = Vec::new();
    for p in &a.def().perspectives {
        let mut objectives = Vec::new();
        for o in a.def().objectives.iter().filter(|o| o.perspective == p.id) {
            let mut measures = Vec::new();
            for m in a.def().measures.iter().filter(|m| m.objective == o.id) {
                if n.measures.contains(&m.id) {
                    measures.push(MeasureReport {
                        reading: a.measure(n, &m.id)?,
                        explain: None,
                        trend_svg: None,
                        bullet_svg: None,
                    });
                }
            }
            if measures.is_empty() {
                continue;
            }
            let status = worst(measures.iter().map(|m| m.reading.status));
            all.push(status);
            objectives.push(ObjectiveReport {
                id: o.id.clone(),
                name: o.name.clone(),
                description: o.description.clone(),
                status,
                causes: a
                    .def()
                    .objectives
                    .iter()
                    .filter(|x| x.drives.contains(&o.id))
                    .map(|x| x.id.clone())
                    .collect(),
                drives: o.drives.clone(),
                measures,
            });
        }
        if objectives.is_empty() {
            continue;
        }
        perspectives.push(PerspectiveReport {
            id: p.id.clone(),
            name: p.name.clone(),
            status: worst(objectives.iter().map(|o| o.status)),
            objectives,
        });
    }
    Ok(ScorecardReport {
        scorecard: ScorecardRef {
            id: a.def().id.clone(),
            version: a.def().version,
            name: a.def().name.clone(),
            spec_hash,
        },
        as_of,
        log: a.log().clone(),
        node: NodeReport {
            id: n.id.clone(),
            name: n.name.clone(),
            kind: n.kind,
            owner: n.owner.clone(),
            filter: n.filter(),
            path,
            children,
        },
        status: worst(all),
        perspectives,
        not_applicable: n
            .not_applicable
            .iter()
            .map(|(measure, reason)| NotApplicable {
                measure: measure.clone(),
                reason: reason.clone(),
            })
            .collect(),
        rollups: a.rollups(n)?,
        status_changes: Vec::new(),
        strategy_map_svg: None,
    })
}

/// The node `node` if `visible` holds it, else the first visible node when none is named.
///
/// # Errors
/// [`ScorecardError::UnknownNode`] or [`ScorecardError::NothingVisible`].
pub fn node_of<'a>(
    a: &'a Assessment,
    node: Option<&str>,
    visible: &BTreeSet<String>,
) -> Result<&'a Node, ScorecardError> {
    let found = match node {
        Some(id) => a.node(id).filter(|n| visible.contains(&n.id)),
        None => a.nodes().iter().find(|n| visible.contains(&n.id)),
    };
    found.ok_or_else(|| match node {
        Some(id) => ScorecardError::UnknownNode {
            id: a.def().id.clone(),
            node: id.to_owned(),
            nearest: crm_domain::registry::nearest_name(id, visible.iter().map(String::as_str)),
        },
        None => ScorecardError::NothingVisible {
            id: a.def().id.clone(),
            principal: String::new(),
        },
    })
}

/// The status changes of every (node, measure) of the assessment against `board`: one
/// event per measure whose status differs from the last recorded (or was never recorded).
///
/// # Errors
/// An evaluation fails.
pub fn changes(
    a: &Assessment,
    board: &StatusBoard,
) -> Result<Vec<ScorecardStatusChanged>, ScorecardError> {
    let mut out = Vec::new();
    for n in a.nodes() {
        for mid in &n.measures {
            let (reading, status) = a.status(n, mid)?;
            let before = board.statuses.get(&(n.id.clone(), mid.clone())).copied();
            if before == Some(status) {
                continue;
            }
            let goal = n
                .goals
                .get(mid)
                .or_else(|| a.def().measure(mid).map(|m| &m.goal));
            out.push(ScorecardStatusChanged {
                scorecard: a.def().id.clone(),
                version: a.def().version,
                node: n.id.clone(),
                measure: mid.clone(),
                owner: n
                    .owner
                    .clone()
                    .or_else(|| a.def().measure(mid).and_then(|m| m.owner.clone())),
                from: before,
                to: status,
                actual: reading.value,
                actual_display: reading.display,
                target: goal.map(|g| g.target),
                log_position: a.log().position,
            });
        }
    }
    Ok(out)
}
