//! `crm import telco-churn FILE`: the IBM Telco Customer Churn table, one row per customer.
//!
//! The table has tenure in months but no calendar dates, so the import fixes one snapshot
//! date, [`SNAPSHOT`] (2020-01-01T00:00:00Z), as "the day the table was taken":
//! - each customer → `AccountOpened` and `SubscriptionStarted` at `SNAPSHOT − tenure months`
//!   (tenure 0 starts at the snapshot itself), plan = `Contract`, product = internet service
//!   (`internet-dsl`, `internet-fiber-optic`, or `phone-only`), term 1, 12 or 24 months,
//!   monthly amount = `MonthlyCharges` in USD;
//! - `SubscriptionDetailsRecorded` with the services marked `Yes`, `PaymentMethod` and
//!   `PaperlessBilling`;
//! - `Churn = Yes` → `SubscriptionCancelled` effective at the snapshot, initiated by the
//!   customer (the table gives no reason).
//!
//! Segment is `Senior` for `SeniorCitizen = 1`, else `Residential`; region `Unspecified`.
//! `gender`, `Partner` and `Dependents` are not imported (no field holds them; they describe a
//! person). `TotalCharges` is checked (a number, or blank only for tenure 0: 11 such rows) but
//! not imported: it is derivable from the amounts.

use std::path::Path;

use chrono::{DateTime, Months, TimeZone, Utc};
use crm_domain::aggregates::account::{Account, OpenAccount};
use crm_domain::aggregates::subscription::{
    CancelSubscription, CancellationInitiator, RecordSubscriptionDetails, StartSubscription,
    Subscription, SubscriptionKind,
};
use crm_domain::values::{AccountId, AgentId, Currency, Label, Money, ProductId, SubscriptionId};

use super::source::{CsvSource, Row};
use super::{execute, stage, ImportError, Plan, Refused, RowError, SourceRow, Unit};

/// Importer name.
pub const NAME: &str = "telco-churn";

/// The documented snapshot instant the table is read at (see the module docs).
#[must_use]
pub fn snapshot() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2020, 1, 1, 0, 0, 0)
        .single()
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// The snapshot date, as text for documentation and notes.
pub const SNAPSHOT: &str = "2020-01-01T00:00:00Z";

/// Longest tenure accepted, in months.
pub const TENURE_MONTHS_MAX: u32 = 1_200;

const ADD_ONS: &[(&str, &str)] = &[
    ("OnlineSecurity", "Online security"),
    ("OnlineBackup", "Online backup"),
    ("DeviceProtection", "Device protection"),
    ("TechSupport", "Tech support"),
    ("StreamingTV", "Streaming TV"),
    ("StreamingMovies", "Streaming movies"),
];

struct Columns {
    id: usize,
    senior: usize,
    tenure: usize,
    phone: usize,
    lines: usize,
    internet: usize,
    add_ons: Vec<(usize, &'static str)>,
    contract: usize,
    paperless: usize,
    payment: usize,
    monthly: usize,
    total: usize,
    churn: usize,
}

/// Reads `path` and plans the import.
///
/// # Errors
/// [`ImportError`] when the file is unreadable or lacks a column.
pub fn plan(path: &Path) -> Result<Plan, ImportError> {
    let file = CsvSource::read(path, b',')?;
    let c = Columns {
        id: file.column("customerID")?,
        senior: file.column("SeniorCitizen")?,
        tenure: file.column("tenure")?,
        phone: file.column("PhoneService")?,
        lines: file.column("MultipleLines")?,
        internet: file.column("InternetService")?,
        add_ons: ADD_ONS
            .iter()
            .map(|(col, name)| file.column(col).map(|i| (i, *name)))
            .collect::<Result<_, _>>()?,
        contract: file.column("Contract")?,
        paperless: file.column("PaperlessBilling")?,
        payment: file.column("PaymentMethod")?,
        monthly: file.column("MonthlyCharges")?,
        total: file.column("TotalCharges")?,
        churn: file.column("Churn")?,
    };
    let mut plan = Plan {
        importer: NAME,
        files: vec![file.file.clone()],
        ..Plan::default()
    };
    let mut blank_total = 0u64;
    for row in file.rows() {
        let unit = customer(&row, &c);
        if unit.is_ok() && row.opt(c.total).is_none() {
            blank_total += 1;
        }
        plan.units.push(unit);
    }
    plan.notes.push(format!(
        "the table has no dates: snapshot date {SNAPSHOT}; subscriptions start at snapshot − tenure months, churned ones are cancelled at the snapshot"
    ));
    if blank_total > 0 {
        plan.notes.push(format!(
            "{blank_total} customers with tenure 0 have a blank TotalCharges: they start at the snapshot (TotalCharges is not imported)"
        ));
    }
    Ok(plan)
}

fn one_of<'a>(row: &Row<'a>, index: usize, allowed: &[&str]) -> Result<&'a str, RowError> {
    let v = row.req(index)?;
    if allowed.contains(&v) {
        Ok(v)
    } else {
        Err(row.error(
            index,
            format!(
                "unknown value `{v}`; expected one of {}",
                allowed.join(", ")
            ),
        ))
    }
}

fn label(row: &Row<'_>, index: usize, value: &str) -> Result<Label, RowError> {
    Label::new(value).map_err(|e| row.error(index, e.to_string()))
}

fn customer(row: &Row<'_>, c: &Columns) -> Result<Unit, RowError> {
    row.check_width()?;
    let key = row.req(c.id)?;
    let account_id = AccountId::new(key).map_err(|e| row.error(c.id, e.to_string()))?;
    let subscription_id = SubscriptionId::new(key).map_err(|e| row.error(c.id, e.to_string()))?;
    let senior = one_of(row, c.senior, &["0", "1"])? == "1";
    let tenure: u32 = row
        .req(c.tenure)?
        .parse()
        .ok()
        .filter(|t| *t <= TENURE_MONTHS_MAX)
        .ok_or_else(|| {
            row.error(
                c.tenure,
                format!(
                    "{:?} is not a tenure in whole months (0..={TENURE_MONTHS_MAX})",
                    row.raw(c.tenure)
                ),
            )
        })?;
    let snapshot = snapshot();
    let start = snapshot
        .checked_sub_months(Months::new(tenure))
        .ok_or_else(|| row.error(c.tenure, "the tenure reaches before the supported calendar"))?;
    let phone = one_of(row, c.phone, &["Yes", "No"])? == "Yes";
    let lines = one_of(row, c.lines, &["Yes", "No", "No phone service"])? == "Yes";
    let product = match one_of(row, c.internet, &["DSL", "Fiber optic", "No"])? {
        "DSL" => "internet-dsl",
        "Fiber optic" => "internet-fiber-optic",
        _ if phone => "phone-only",
        _ => {
            return Err(row.error(
                c.internet,
                "the customer has neither phone nor internet service; correct PhoneService or InternetService",
            ))
        }
    };
    let (plan, term_months) =
        match one_of(row, c.contract, &["Month-to-month", "One year", "Two year"])? {
            "One year" => ("One year", 12),
            "Two year" => ("Two year", 24),
            _ => ("Month-to-month", 1),
        };
    let mut services = Vec::new();
    if phone {
        services.push(label(row, c.phone, "Phone")?);
    }
    if lines {
        services.push(label(row, c.lines, "Multiple lines")?);
    }
    for (index, name) in &c.add_ons {
        if one_of(row, *index, &["Yes", "No", "No internet service"])? == "Yes" {
            services.push(label(row, *index, name)?);
        }
    }
    let paperless = one_of(row, c.paperless, &["Yes", "No"])? == "Yes";
    let payment = label(row, c.payment, row.req(c.payment)?)?;
    let exponent = Currency::USD.minor_unit_exponent();
    let monthly = Money::new(row.minor_units(c.monthly, exponent)?, Currency::USD);
    match row.opt(c.total) {
        Some(_) => {
            row.minor_units(c.total, exponent)?;
        }
        None if tenure == 0 => {}
        None => {
            return Err(row.error(
                c.total,
                "TotalCharges is blank but tenure is above 0; fill in the amount",
            ))
        }
    }
    let churned = one_of(row, c.churn, &["Yes", "No"])? == "Yes";

    let rule = |e: Refused| row.row_error(e.to_string());
    let owner =
        AgentId::new(super::maven::UNASSIGNED_OWNER).map_err(|e| row.row_error(e.to_string()))?;
    let mut events = Vec::new();
    execute(
        &mut Account::default(),
        OpenAccount {
            account_id: account_id.clone(),
            name: label(row, c.id, key)?,
            segment: label(row, c.senior, if senior { "Senior" } else { "Residential" })?,
            region: label(row, c.id, "Unspecified")?,
            industry: None,
            owner,
            is_internal: false,
            is_test: false,
            occurred_at: start,
        }
        .into(),
        &mut events,
    )
    .map_err(rule)?;
    let mut subscription = Subscription::default();
    execute(
        &mut subscription,
        StartSubscription {
            subscription_id: subscription_id.clone(),
            account_id,
            plan: label(row, c.contract, plan)?,
            product: ProductId::new(product).map_err(|e| row.row_error(e.to_string()))?,
            kind: SubscriptionKind::Product,
            monthly_amount: monthly,
            term_months,
            trial: false,
            order: None,
            opportunity: None,
            is_test: false,
            occurred_at: start,
        }
        .into(),
        &mut events,
    )
    .map_err(rule)?;
    execute(
        &mut subscription,
        RecordSubscriptionDetails {
            subscription_id: subscription_id.clone(),
            services,
            payment_method: Some(payment),
            paperless_billing: Some(paperless),
            occurred_at: start,
        }
        .into(),
        &mut events,
    )
    .map_err(rule)?;
    if churned {
        execute(
            &mut subscription,
            CancelSubscription {
                subscription_id,
                reason: label(row, c.churn, "churned (the source gives no reason)")?,
                effective_at: snapshot,
                initiated_by: CancellationInitiator::Customer,
                occurred_at: snapshot,
            }
            .into(),
            &mut events,
        )
        .map_err(rule)?;
    }
    let source = SourceRow {
        importer: NAME,
        file: row.file().to_owned(),
        line: row.line,
        key: key.to_owned(),
        content_sha256: None,
    };
    stage(&source, events, &[])
        .map(|events| Unit { rows: 1, events })
        .map_err(|e| row.row_error(e.to_string()))
}
