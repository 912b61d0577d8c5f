//! Campaign rules, given/when/then.

mod common;

use common::*;
use crm_domain::aggregates::campaign::*;
use crm_domain::values::{CampaignId, MoneyError};

fn cid() -> CampaignId {
    id("spring-2024")
}

fn launch_cmd() -> LaunchCampaign {
    LaunchCampaign {
        campaign_id: cid(),
        name: label("Spring promo"),
        channel: label("Email"),
        cost: eur(150_000),
        product: Some(id("GTX-Pro")),
        segment: Some(label("SMB")),
        audience_size: 20_000,
        is_test: false,
        occurred_at: day(1),
    }
}

fn launched() -> CampaignEvent {
    let c = launch_cmd();
    CampaignLaunched {
        campaign_id: c.campaign_id,
        name: c.name,
        channel: c.channel,
        cost: c.cost,
        product: c.product,
        segment: c.segment,
        audience_size: c.audience_size,
        is_test: c.is_test,
        occurred_at: c.occurred_at,
    }
    .into()
}

fn cost_cmd(amount: crm_domain::values::Money) -> RecordCampaignCost {
    RecordCampaignCost {
        campaign_id: cid(),
        amount,
        category: label("media"),
        occurred_at: day(15),
    }
}

fn response_cmd() -> RecordCampaignResponse {
    RecordCampaignResponse {
        campaign_id: cid(),
        respondent: Respondent::Lead(id("L-1")),
        response_type: ResponseType::Form,
        occurred_at: day(5),
    }
}

fn ended(d: u32) -> CampaignEvent {
    CampaignEnded {
        campaign_id: cid(),
        reason: label("planned end"),
        occurred_at: day(d),
    }
    .into()
}

fn cancelled(d: u32) -> CampaignEvent {
    CampaignCancelled {
        campaign_id: cid(),
        reason: label("budget cut"),
        occurred_at: day(d),
    }
    .into()
}

fn end_cmd(d: u32) -> EndCampaign {
    EndCampaign {
        campaign_id: cid(),
        reason: label("planned end"),
        occurred_at: day(d),
    }
}

fn cancel_cmd(d: u32) -> CancelCampaign {
    CancelCampaign {
        campaign_id: cid(),
        reason: label("budget cut"),
        occurred_at: day(d),
    }
}

#[test]
fn launching_records_the_campaign() {
    let state = given_nothing::<Campaign>()
        .when(launch_cmd())
        .then(vec![launched()]);
    assert_eq!(state.status(), Some(CampaignStatus::Running));
}

#[test]
fn launching_twice_is_an_error() {
    given::<Campaign>(vec![launched()])
        .when(launch_cmd())
        .then_err(|e| matches!(e, CampaignError::AlreadyExists { .. }));
}

#[test]
fn commands_on_a_missing_campaign_are_errors() {
    given_nothing::<Campaign>()
        .when(response_cmd())
        .then_err(|e| matches!(e, CampaignError::NotFound { .. }));
}

#[test]
fn costs_are_positive_and_in_the_campaign_currency() {
    let mut negative_launch = launch_cmd();
    negative_launch.cost = eur(-1);
    given_nothing::<Campaign>()
        .when(negative_launch)
        .then_err(|e| {
            matches!(
                e,
                CampaignError::Money {
                    source: MoneyError::Negative { .. },
                    ..
                }
            )
        });
    given::<Campaign>(vec![launched()])
        .when(cost_cmd(eur(-500)))
        .then_err(|e| matches!(e, CampaignError::Money { .. }));
    given::<Campaign>(vec![launched()])
        .when(cost_cmd(eur(0)))
        .then_err(|e| matches!(e, CampaignError::ZeroCost { .. }));
    given::<Campaign>(vec![launched()])
        .when(cost_cmd(usd(500)))
        .then_err(|e| {
            matches!(
                e,
                CampaignError::Money {
                    source: MoneyError::CurrencyMismatch { .. },
                    ..
                }
            )
        });
}

#[test]
fn late_costs_are_accepted_after_the_end() {
    given::<Campaign>(vec![launched(), ended(10)])
        .when(cost_cmd(eur(20_000)))
        .then(vec![CampaignCostRecorded {
            campaign_id: cid(),
            amount: eur(20_000),
            category: label("media"),
            occurred_at: day(15),
        }
        .into()]);
}

#[test]
fn responses_are_recorded_but_not_on_a_cancelled_campaign() {
    given::<Campaign>(vec![launched()])
        .when(response_cmd())
        .then(vec![CampaignResponded {
            campaign_id: cid(),
            respondent: Respondent::Lead(id("L-1")),
            response_type: ResponseType::Form,
            occurred_at: day(5),
        }
        .into()]);
    given::<Campaign>(vec![launched(), ended(4)])
        .when(response_cmd())
        .then_ok();
    given::<Campaign>(vec![launched(), cancelled(4)])
        .when(response_cmd())
        .then_err(|e| {
            matches!(
                e,
                CampaignError::Finished {
                    status: "cancelled",
                    ..
                }
            )
        });
}

#[test]
fn a_campaign_ends_or_is_cancelled_once() {
    given::<Campaign>(vec![launched()])
        .when(end_cmd(10))
        .then(vec![ended(10)]);
    given::<Campaign>(vec![launched(), ended(10)])
        .when(end_cmd(11))
        .then_err(|e| matches!(e, CampaignError::Finished { .. }));
    given::<Campaign>(vec![launched(), ended(10)])
        .when(cancel_cmd(11))
        .then_err(|e| {
            matches!(
                e,
                CampaignError::Finished {
                    status: "ended",
                    ..
                }
            )
        });
    given::<Campaign>(vec![launched(), cancelled(3)])
        .when(end_cmd(11))
        .then_err(|e| {
            matches!(
                e,
                CampaignError::Finished {
                    status: "cancelled",
                    ..
                }
            )
        });
    given::<Campaign>(vec![launched()])
        .when(cancel_cmd(3))
        .then(vec![cancelled(3)]);
}
