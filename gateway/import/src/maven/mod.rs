//! `crm import maven-crm DIR`: the Maven Analytics "CRM + Sales Opportunities" export
//! (`products.csv`, `sales_teams.csv`, `accounts.csv`, `sales_pipeline.csv`).
//!
//! What becomes what (documented in the README):
//! - products → `ProductListed` (list price in USD);
//! - sales agents → `AgentRegistered` (name as personal data, opaque id) + `RepAssigned` (team
//!   of their manager, regional office); managers → `AgentRegistered`;
//! - accounts → `AccountOpened` (segment from the employee count, industry = sector, region =
//!   office location, owner `unassigned`: the export names none);
//! - each pipeline row → `OpportunityOpened` (stage Prospecting, amount = the product's list
//!   price), `OpportunityStageChanged` to Engaging at `engage_date`, and `OpportunityWon`
//!   (amount = `close_value`) or `OpportunityLost` (reason `other`; `close_value` is 0) at
//!   `close_date`.
//!
//! Dates: an opportunity that reached Engaging is opened at its engage date (the export has no
//! earlier date); one still in Prospecting has no date at all and is opened at the export's
//! last date (the latest date in the pipeline, 2017-12-31), its expected close likewise.
//! Reference data (products, agents, accounts) is dated at the export's first date (the
//! earliest engage date, 2016-10-20). Dates are read as midnight UTC.
//!
//! Cleansing, reported in the summary and in each affected event's metadata: the pipeline
//! spells `GTXPro` where products.csv has `GTX Pro`; accounts.csv misspells the sector
//! `technolgy` and the country `Philipines`. Pipeline rows with a blank account (1,425 in the
//! bundled file) are real deals without a known customer: they are attached to the account
//! `unknown`, which this import opens.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use chrono::{DateTime, NaiveDate, Utc};
use crm_domain::aggregates::account::{Account, OpenAccount};
use crm_domain::aggregates::agent::{Agent, AssignRep, RegisterAgent};
use crm_domain::aggregates::product::{ListProduct, Product};
use crm_domain::values::{AccountId, AgentId, Currency, Label, Money, ProductId, TeamId};
use crm_domain::{DomainEvent, PersonalData};

mod pipeline;

use super::source::{CsvSource, Row};
use super::{execute, stage, ImportError, Plan, RowError, SourceRow, Unit};
use crm_app::ids;

/// Importer name.
pub const NAME: &str = "maven-crm";

/// Spellings in the source that are read as another value: (column, found, read as).
pub const NORMALISATION: &[(&str, &str, &str)] = &[
    ("product", "GTXPro", "GTX Pro"),
    ("sector", "technolgy", "technology"),
    ("office_location", "Philipines", "Philippines"),
];

/// Account that owns pipeline rows with a blank account.
pub const UNKNOWN_ACCOUNT: &str = "unknown";

/// Owner of imported accounts (the export names none).
pub const UNASSIGNED_OWNER: &str = "unassigned";

/// Win probability recorded for the export's open stages, percent.
const PROSPECTING_PROBABILITY: u8 = 10;
const ENGAGING_PROBABILITY: u8 = 50;

fn normalise(column: &str, value: &str) -> (String, Option<String>) {
    for (col, found, read_as) in NORMALISATION {
        if *col == column && *found == value {
            return (
                (*read_as).to_owned(),
                Some(format!("{column} `{found}` read as `{read_as}`")),
            );
        }
    }
    (value.to_owned(), None)
}

fn midnight(date: NaiveDate) -> DateTime<Utc> {
    date.and_time(chrono::NaiveTime::MIN).and_utc()
}

fn label(row: &Row<'_>, index: usize, value: &str) -> Result<Label, RowError> {
    Label::new(value).map_err(|e| row.error(index, e.to_string()))
}

fn usd(row: &Row<'_>, index: usize) -> Result<Money, RowError> {
    let exponent = Currency::USD.minor_unit_exponent();
    Ok(Money::new(row.minor_units(index, exponent)?, Currency::USD))
}

fn source_row(row: &Row<'_>, key: &str) -> SourceRow {
    SourceRow {
        importer: NAME,
        file: row.file().to_owned(),
        line: row.line,
        key: key.to_owned(),
        content_sha256: None,
    }
}

/// Counts of cleansing steps, for the summary notes.
#[derive(Default)]
struct Cleansing {
    counts: BTreeMap<String, u64>,
    blank_accounts: u64,
}

struct Reference {
    products: HashMap<String, (ProductId, Money)>,
    agents: HashMap<String, AgentId>,
    accounts: HashMap<String, AccountId>,
}

/// Reads the four files of `dir` and plans the import.
///
/// # Errors
/// [`ImportError`] when a file is missing, unreadable or lacks a column; bad rows are
/// reported per unit in the plan.
pub fn plan(dir: &Path) -> Result<Plan, ImportError> {
    let products = CsvSource::read(&dir.join("products.csv"), b',')?;
    let teams = CsvSource::read(&dir.join("sales_teams.csv"), b',')?;
    let accounts = CsvSource::read(&dir.join("accounts.csv"), b',')?;
    let pipeline = CsvSource::read(&dir.join("sales_pipeline.csv"), b',')?;
    let (first, last) = date_range(&pipeline)?;
    let reference_at = midnight(first);

    let mut plan = Plan {
        importer: NAME,
        files: [
            "products.csv",
            "sales_teams.csv",
            "accounts.csv",
            "sales_pipeline.csv",
        ]
        .map(str::to_owned)
        .to_vec(),
        ..Plan::default()
    };
    let mut reference = Reference {
        products: HashMap::new(),
        agents: HashMap::new(),
        accounts: HashMap::new(),
    };
    let mut cleansing = Cleansing::default();
    plan_products(&products, reference_at, &mut reference, &mut plan)?;
    plan_agents(&teams, reference_at, &mut reference, &mut plan)?;
    plan_accounts(
        &accounts,
        reference_at,
        &mut reference,
        &mut cleansing,
        &mut plan,
    )?;
    pipeline::plan_pipeline(&pipeline, last, &reference, &mut cleansing, &mut plan)?;

    plan.notes.push(format!(
        "reference data (products, agents, accounts) dated at the export's first date {first}; Prospecting deals (no date in the export) opened at its last date {last}"
    ));
    for (step, count) in &cleansing.counts {
        plan.notes
            .push(format!("data cleansing: {step} in {count} rows"));
    }
    if cleansing.blank_accounts > 0 {
        plan.notes.push(format!(
            "{} pipeline rows have a blank account: their opportunities belong to account `{UNKNOWN_ACCOUNT}`",
            cleansing.blank_accounts
        ));
    }
    Ok(plan)
}

/// Earliest and latest parsable date of the pipeline (engage and close dates).
fn date_range(pipeline: &CsvSource) -> Result<(NaiveDate, NaiveDate), ImportError> {
    let engage = pipeline.column("engage_date")?;
    let close = pipeline.column("close_date")?;
    let dates = pipeline.rows().flat_map(|row| {
        [engage, close]
            .into_iter()
            .filter_map(move |i| NaiveDate::parse_from_str(row.raw(i).trim(), "%Y-%m-%d").ok())
    });
    let (mut first, mut last) = (None::<NaiveDate>, None::<NaiveDate>);
    for d in dates {
        first = Some(first.map_or(d, |f| f.min(d)));
        last = Some(last.map_or(d, |l| l.max(d)));
    }
    match (first, last) {
        (Some(f), Some(l)) => Ok((f, l)),
        _ => Err(ImportError::Csv {
            file: pipeline.file.clone(),
            line: 1,
            reason: "no engage_date or close_date in the pipeline: the import needs at least one date to date the reference data".into(),
        }),
    }
}

fn plan_products(
    file: &CsvSource,
    at: DateTime<Utc>,
    reference: &mut Reference,
    plan: &mut Plan,
) -> Result<(), ImportError> {
    let (c_name, c_series, c_price) = (
        file.column("product")?,
        file.column("series")?,
        file.column("sales_price")?,
    );
    for row in file.rows() {
        let unit = (|| {
            row.check_width()?;
            let name = row.req(c_name)?;
            let product_id =
                ProductId::new(ids::slug(name)).map_err(|e| row.error(c_name, e.to_string()))?;
            let price = usd(&row, c_price)?;
            let series = row
                .opt(c_series)
                .map(|s| label(&row, c_series, s))
                .transpose()?;
            let mut events = Vec::new();
            execute(
                &mut Product::default(),
                ListProduct {
                    product_id: product_id.clone(),
                    name: label(&row, c_name, name)?,
                    series,
                    list_price: Some(price),
                    occurred_at: at,
                }
                .into(),
                &mut events,
            )
            .map_err(|e| row.row_error(e.to_string()))?;
            if reference
                .products
                .insert(name.to_owned(), (product_id, price))
                .is_some()
            {
                return Err(row.error(
                    c_name,
                    format!("product `{name}` is listed twice; keep one row"),
                ));
            }
            unit(&row, name, events, &[])
        })();
        plan.units.push(unit);
    }
    Ok(())
}

fn plan_agents(
    file: &CsvSource,
    at: DateTime<Utc>,
    reference: &mut Reference,
    plan: &mut Plan,
) -> Result<(), ImportError> {
    let (c_agent, c_manager, c_office) = (
        file.column("sales_agent")?,
        file.column("manager")?,
        file.column("regional_office")?,
    );
    let mut managers: HashMap<String, AgentId> = HashMap::new();
    for row in file.rows() {
        let unit = (|| {
            row.check_width()?;
            let name = row.req(c_agent)?;
            let manager_name = row.req(c_manager)?;
            let office = row.req(c_office)?;
            let this_agent = agent_id(&row, c_agent, name)?;
            let mut events = Vec::new();
            let manager_id = match managers.get(manager_name) {
                Some(id) => id.clone(),
                None => {
                    // First mention of a manager: register them too (same row, own stream).
                    let id = agent_id(&row, c_manager, manager_name)?;
                    register(
                        &row,
                        c_manager,
                        &mut Agent::default(),
                        &id,
                        manager_name,
                        at,
                        &mut events,
                    )?;
                    managers.insert(manager_name.to_owned(), id.clone());
                    id
                }
            };
            let team = TeamId::new(format!("{manager_id}-team"))
                .map_err(|e| row.error(c_manager, e.to_string()))?;
            let mut agent = Agent::default();
            register(
                &row,
                c_agent,
                &mut agent,
                &this_agent,
                name,
                at,
                &mut events,
            )?;
            execute(
                &mut agent,
                AssignRep {
                    agent_id: this_agent.clone(),
                    team,
                    region: label(&row, c_office, office)?,
                    manager: Some(manager_id),
                    occurred_at: at,
                }
                .into(),
                &mut events,
            )
            .map_err(|e| row.row_error(e.to_string()))?;
            // The row's key is the agent's pseudonymous id, not the name: the source
            // reference in every event's metadata is never personal data.
            let key = this_agent.to_string();
            if reference
                .agents
                .insert(name.to_owned(), this_agent)
                .is_some()
            {
                return Err(row.error(
                    c_agent,
                    format!(
                        "agent `{key}` (the id of this row's name) is listed twice; keep one row"
                    ),
                ));
            }
            unit(&row, &key, events, &[])
        })();
        plan.units.push(unit);
    }
    Ok(())
}

fn agent_id(row: &Row<'_>, index: usize, name: &str) -> Result<AgentId, RowError> {
    AgentId::new(ids::pseudonym("mc", NAME, name)).map_err(|e| row.error(index, e.to_string()))
}

fn register(
    row: &Row<'_>,
    index: usize,
    state: &mut Agent,
    id: &AgentId,
    name: &str,
    at: DateTime<Utc>,
    events: &mut Vec<DomainEvent>,
) -> Result<(), RowError> {
    execute(
        state,
        RegisterAgent {
            agent_id: id.clone(),
            personal: Some(PersonalData {
                full_name: Some(name.to_owned()),
                email: None,
                phone: None,
            }),
            occurred_at: at,
        }
        .into(),
        events,
    )
    .map_err(|e| row.error(index, e.to_string()))
}

fn segment_of(employees: u64) -> &'static str {
    match employees {
        0..1_000 => "SMB",
        1_000..5_000 => "Mid-Market",
        _ => "Enterprise",
    }
}

fn plan_accounts(
    file: &CsvSource,
    at: DateTime<Utc>,
    reference: &mut Reference,
    cleansing: &mut Cleansing,
    plan: &mut Plan,
) -> Result<(), ImportError> {
    let (c_name, c_sector, c_employees, c_office) = (
        file.column("account")?,
        file.column("sector")?,
        file.column("employees")?,
        file.column("office_location")?,
    );
    for row in file.rows() {
        let unit = (|| {
            row.check_width()?;
            let name = row.req(c_name)?;
            let account_id =
                AccountId::new(ids::slug(name)).map_err(|e| row.error(c_name, e.to_string()))?;
            let employees: u64 = row.req(c_employees)?.parse().map_err(|_| {
                row.error(
                    c_employees,
                    format!(
                        "{:?} is not a whole number of employees",
                        row.raw(c_employees)
                    ),
                )
            })?;
            let mut notes = Vec::new();
            let (sector, note) = normalise("sector", row.req(c_sector)?);
            notes.extend(note);
            let (office, note) = normalise("office_location", row.req(c_office)?);
            notes.extend(note);
            let mut events = Vec::new();
            execute(
                &mut Account::default(),
                OpenAccount {
                    account_id: account_id.clone(),
                    name: label(&row, c_name, name)?,
                    segment: label(&row, c_employees, segment_of(employees))?,
                    region: label(&row, c_office, &office)?,
                    industry: Some(label(&row, c_sector, &sector)?),
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
            if reference
                .accounts
                .insert(name.to_owned(), account_id.clone())
                .is_some()
                || account_id.as_str() == UNKNOWN_ACCOUNT
            {
                return Err(row.error(c_name, format!("account `{name}` is listed twice (or its id `{account_id}` is taken); keep one row")));
            }
            for note in &notes {
                *cleansing.counts.entry(note.clone()).or_default() += 1;
            }
            unit(&row, name, events, &notes)
        })();
        plan.units.push(unit);
    }
    Ok(())
}

fn unit(
    row: &Row<'_>,
    key: &str,
    events: Vec<DomainEvent>,
    notes: &[String],
) -> Result<Unit, RowError> {
    stage(&source_row(row, key), events, notes)
        .map(|events| Unit { rows: 1, events })
        .map_err(|e| row.row_error(e.to_string()))
}
