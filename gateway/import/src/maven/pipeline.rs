//! The pipeline part of the maven-crm import: one unit per `sales_pipeline.csv` row, an
//! opportunity from opening through Engaging to Won or Lost (see the parent module for the
//! choices of dates and amounts).

use chrono::NaiveDate;
use crm_domain::aggregates::account::{Account, OpenAccount};
use crm_domain::aggregates::opportunity::{
    ChangeOpportunityStage, LoseOpportunity, LossReason, OpenOpportunity, Opportunity,
    OpportunityKind, WinOpportunity,
};
use crm_domain::values::{AccountId, AgentId, OpportunityId, SalesChannel};

use super::{
    label, midnight, normalise, source_row, unit, usd, Cleansing, Reference, ENGAGING_PROBABILITY,
    PROSPECTING_PROBABILITY, UNASSIGNED_OWNER, UNKNOWN_ACCOUNT,
};
use crate::source::{CsvSource, Row};
use crate::{execute, stage, ImportError, Plan, Refused, RowError, Unit};

pub(super) fn plan_pipeline(
    file: &CsvSource,
    last: NaiveDate,
    reference: &Reference,
    cleansing: &mut Cleansing,
    plan: &mut Plan,
) -> Result<(), ImportError> {
    let c = Columns {
        id: file.column("opportunity_id")?,
        agent: file.column("sales_agent")?,
        product: file.column("product")?,
        account: file.column("account")?,
        stage: file.column("deal_stage")?,
        engage: file.column("engage_date")?,
        close: file.column("close_date")?,
        value: file.column("close_value")?,
    };
    let mut unknown_opened = false;
    for row in file.rows() {
        let unit = (|| {
            row.check_width()?;
            let mut notes = Vec::new();
            let blank_account = row.opt(c.account).is_none();
            if blank_account && !unknown_opened {
                // The first blank account opens the `unknown` account, as part of this row.
                let at = midnight(row.opt(c.engage).map_or(Ok(last), |_| row.date(c.engage))?);
                let mut events = Vec::new();
                execute(
                    &mut Account::default(),
                    OpenAccount {
                        account_id: AccountId::new(UNKNOWN_ACCOUNT)
                            .map_err(|e| row.row_error(e.to_string()))?,
                        name: label(&row, c.account, "Unknown (blank in the source)")?,
                        segment: label(&row, c.account, "Unknown")?,
                        region: label(&row, c.account, "Unknown")?,
                        industry: None,
                        owner: AgentId::new(UNASSIGNED_OWNER)
                            .map_err(|e| row.row_error(e.to_string()))?,
                        is_internal: false,
                        is_test: false,
                        occurred_at: at,
                    }
                    .into(),
                    &mut events,
                )
                .map_err(|e| row.row_error(e.to_string()))?;
                let mut staged = stage(&source_row(&row, "blank-account"), events, &[])
                    .map_err(|e| row.row_error(e.to_string()))?;
                let mut opportunity = opportunity(&row, &c, last, reference, &mut notes)?;
                staged.append(&mut opportunity.events);
                return Ok(Unit {
                    rows: 1,
                    events: staged,
                });
            }
            opportunity(&row, &c, last, reference, &mut notes)
        })();
        if unit.is_ok() {
            if row.opt(c.account).is_none() {
                cleansing.blank_accounts += 1;
                unknown_opened = true;
            }
            if let (_, Some(note)) = normalise("product", row.raw(c.product).trim()) {
                *cleansing.counts.entry(note).or_default() += 1;
            }
        }
        plan.units.push(unit);
    }
    Ok(())
}

struct Columns {
    id: usize,
    agent: usize,
    product: usize,
    account: usize,
    stage: usize,
    engage: usize,
    close: usize,
    value: usize,
}

fn opportunity(
    row: &Row<'_>,
    c: &Columns,
    last: NaiveDate,
    reference: &Reference,
    notes: &mut Vec<String>,
) -> Result<Unit, RowError> {
    let key = row.req(c.id)?;
    let opportunity_id = OpportunityId::new(key).map_err(|e| row.error(c.id, e.to_string()))?;
    let agent_name = row.req(c.agent)?;
    let owner = reference.agents.get(agent_name).cloned().ok_or_else(|| {
        row.error(c.agent, format!("sales agent `{agent_name}` is not in sales_teams.csv; add the agent there or correct the name"))
    })?;
    let (product_name, note) = normalise("product", row.req(c.product)?);
    notes.extend(note);
    let (product, list_price) = reference.products.get(&product_name).cloned().ok_or_else(|| {
        row.error(c.product, format!("product `{product_name}` is not in products.csv; add it there or correct the name"))
    })?;
    let account_id = match row.opt(c.account) {
        None => AccountId::new(UNKNOWN_ACCOUNT).map_err(|e| row.row_error(e.to_string()))?,
        Some(name) => reference.accounts.get(name).cloned().ok_or_else(|| {
            row.error(c.account, format!("account `{name}` is not in accounts.csv; add it there, correct the name or leave the cell blank"))
        })?,
    };
    let stage = row.req(c.stage)?;
    let closed = match stage {
        "Prospecting" | "Engaging" => false,
        "Won" | "Lost" => true,
        other => {
            return Err(row.error(
                c.stage,
                format!(
                "unknown deal stage `{other}`; expected one of Prospecting, Engaging, Won, Lost"
            ),
            ))
        }
    };
    let engaged = match (stage, row.opt(c.engage)) {
        ("Prospecting", None) => None,
        (_, Some(_)) => Some(row.date(c.engage)?),
        (_, None) => {
            return Err(row.error(
                c.engage,
                format!("a deal in stage {stage} needs an engage date (YYYY-MM-DD); fill it in"),
            ))
        }
    };
    let close = if closed {
        Some(row.date(c.close)?)
    } else {
        None
    };
    if let (Some(e), Some(cl)) = (engaged, close) {
        if cl < e {
            return Err(row.error(
                c.close,
                format!("close date {cl} precedes engage date {e}; correct one of them"),
            ));
        }
    }
    let opened_at = midnight(engaged.unwrap_or(last));
    let mut state = Opportunity::default();
    let mut events = Vec::new();
    let rule = |e: Refused| row.row_error(e.to_string());
    execute(
        &mut state,
        OpenOpportunity {
            opportunity_id: opportunity_id.clone(),
            account_id,
            owner,
            product,
            amount: list_price,
            expected_close: close.unwrap_or(last),
            kind: OpportunityKind::New,
            channel: SalesChannel::Direct,
            stage: label(row, c.stage, "Prospecting")?,
            probability: PROSPECTING_PROBABILITY,
            lead: None,
            campaign: None,
            is_test: false,
            occurred_at: opened_at,
        }
        .into(),
        &mut events,
    )
    .map_err(rule)?;
    if let Some(engaged) = engaged {
        execute(
            &mut state,
            ChangeOpportunityStage {
                opportunity_id: opportunity_id.clone(),
                to: label(row, c.stage, "Engaging")?,
                probability: ENGAGING_PROBABILITY,
                occurred_at: midnight(engaged),
            }
            .into(),
            &mut events,
        )
        .map_err(rule)?;
    }
    if let Some(close) = close {
        let at = midnight(close);
        let command = if stage == "Won" {
            let amount = usd(row, c.value)?;
            let discount = list_price
                .checked_sub(amount)
                .ok()
                .filter(|d| !d.is_negative());
            WinOpportunity {
                opportunity_id,
                amount,
                list_price: Some(list_price),
                discount,
                competitor: None,
                occurred_at: at,
            }
            .into()
        } else {
            LoseOpportunity {
                opportunity_id,
                reason: LossReason::Other,
                competitor: None,
                occurred_at: at,
            }
            .into()
        };
        execute(&mut state, command, &mut events).map_err(rule)?;
    }
    unit(row, key, events, notes)
}
