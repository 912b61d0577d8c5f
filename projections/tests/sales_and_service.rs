//! Pipeline and SLA figures on small hand-built histories.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

#[path = "common/gen.rs"]
mod gen;
#[path = "common/history.rs"]
mod history;

use crm_domain::aggregates::case::{
    Case, PauseCaseSla, RecordFirstResponse, ResumeCaseSla, SlaPauseReason, SlaResumeReason,
};
use crm_domain::aggregates::opportunity::{
    ChangeOpportunityStage, LoseOpportunity, LossReason, Opportunity, OpportunityKind,
    VoidOpportunity, VoidReason,
};
use crm_domain::values::{AgentId, CaseId, Channel, OpportunityId};
use crm_projections::read_models::cases::TargetOutcome;
use crm_projections::read_models::pipeline::{self, PipelineConfig, PipelineQuery};
use crm_projections::read_models::sla::{self, SlaQuery};
use crm_projections::read_models::{PipelineProjection, SlaProjection};

use history::*;

#[tokio::test]
async fn pipeline_win_rate_weighted_pipeline_cycle_and_coverage() {
    let jan = |d| at(2024, 1, d, 0, 0);
    let mut h = History::default();
    let [mut a, mut b, mut c, mut d, mut e, mut f]: [Opportunity; 6] = Default::default();
    h.run(&mut a, open_opp("a", OpportunityKind::New, 100_000, jan(1)))
        .run(&mut a, win("a", 100_000, jan(11)));
    h.run(
        &mut b,
        open_opp("b", OpportunityKind::Expansion, 300_000, jan(1)),
    )
    .run(
        &mut b,
        ChangeOpportunityStage {
            opportunity_id: OpportunityId::new("b").unwrap(),
            to: l("Propose"),
            probability: 50,
            occurred_at: jan(5),
        },
    )
    .run(&mut b, win("b", 300_000, jan(21)));
    h.run(&mut c, open_opp("c", OpportunityKind::New, 50_000, jan(2)))
        .run(
            &mut c,
            LoseOpportunity {
                opportunity_id: OpportunityId::new("c").unwrap(),
                reason: LossReason::Price,
                competitor: None,
                occurred_at: jan(4),
            },
        );
    h.run(&mut d, open_opp("d", OpportunityKind::New, 200_000, jan(3)))
        .run(
            &mut d,
            ChangeOpportunityStage {
                opportunity_id: OpportunityId::new("d").unwrap(),
                to: l("Propose"),
                probability: 50,
                occurred_at: jan(13),
            },
        );
    h.run(
        &mut e,
        open_opp("e", OpportunityKind::Renewal, 900_000, jan(1)),
    )
    .run(&mut e, win("e", 900_000, jan(2)));
    h.run(&mut f, open_opp("f", OpportunityKind::New, 700_000, jan(1)))
        .run(
            &mut f,
            VoidOpportunity {
                opportunity_id: OpportunityId::new("f").unwrap(),
                reason: VoidReason::Duplicate,
                occurred_at: jan(2),
            },
        );
    let mut config = PipelineConfig::default();
    config.stage_probabilities.insert("Propose".into(), 40);
    let p = PipelineProjection::new(config.clone());
    let state = h.fold(&p).await;
    let mut q = PipelineQuery::at(jan(31));
    q.coverage_target_minor = Some(100_000);
    let r = pipeline::report(&state, &config, &q);
    assert_eq!((r.closed.won, r.closed.lost), (2, 1));
    assert_eq!(r.closed.win_rate.numerator, 2);
    assert_eq!(r.closed.win_rate.denominator, 3);
    assert!((r.closed.win_rate.percent.unwrap() - 66.666_666).abs() < 1e-3);
    assert_eq!(r.closed.won_amount_minor, 400_000);
    assert_eq!(r.closed.avg_deal_size_minor, Some(200_000.0));
    assert_eq!(r.closed.cycle_days.mean, Some(15.0));
    assert_eq!(r.closed.cycle_days.median, Some(15.0));
    assert_eq!(r.closed.loss_reasons.get("price"), Some(&1));
    assert_eq!((r.excluded.voided, r.excluded.renewal), (1, 1));
    assert_eq!(
        (r.open.count, r.open.value_minor, r.open.weighted_minor),
        (1, 200_000, 80_000)
    );
    assert_eq!(r.open.by_stage.rows[0].key, "Propose");
    let cov = r.coverage.unwrap();
    assert_eq!(cov.ratio, Some(2.0));
    assert_eq!(cov.weighted_ratio, Some(0.8));
    // Stage time (renewals included, voided out): a 10 days in Prospecting (to its win),
    // b 4, c 2, d 10, e 1.
    let prospecting = r
        .stage_time
        .iter()
        .find(|s| s.stage == "Prospecting")
        .unwrap();
    assert_eq!(prospecting.completed.count, 5);
    assert_eq!(prospecting.completed.mean, Some(5.4));
    assert_eq!(prospecting.completed.median, Some(4.0));
    let to_propose = r
        .conversions
        .iter()
        .find(|c| c.from == "Prospecting" && c.to == "Propose")
        .unwrap();
    assert_eq!(to_propose.count, 2);
    assert_eq!(to_propose.share.denominator, 5);
    // As of Jan 10, a and b were still open and nothing was won yet.
    let early = pipeline::report(&state, &config, &PipelineQuery::at(jan(10)));
    assert_eq!(early.closed.won, 0);
    assert_eq!(early.open.count, 3);
}

#[tokio::test]
async fn sla_breach_is_seen_at_t_without_an_event_across_a_weekend_holiday_and_pause() {
    let friday_16 = at(2024, 3, 1, 16, 0);
    let mut h = History::default();
    let (mut late, mut paused, mut quick) = (Case::default(), Case::default(), Case::default());
    h.run(&mut late, open_case("late", friday_16));
    h.run(&mut paused, open_case("paused", friday_16))
        .run(
            &mut paused,
            PauseCaseSla {
                case_id: CaseId::new("paused").unwrap(),
                reason: SlaPauseReason::WaitingOnCustomer,
                occurred_at: at(2024, 3, 1, 16, 30),
            },
        )
        .run(
            &mut paused,
            ResumeCaseSla {
                case_id: CaseId::new("paused").unwrap(),
                reason: SlaResumeReason::CustomerReplied,
                occurred_at: at(2024, 3, 5, 10, 0),
            },
        );
    h.run(&mut quick, open_case("quick", friday_16)).run(
        &mut quick,
        RecordFirstResponse {
            case_id: CaseId::new("quick").unwrap(),
            agent: Some(AgentId::new("ann").unwrap()),
            channel: Channel::Email,
            automated: false,
            occurred_at: at(2024, 3, 1, 16, 45),
        },
    );
    let config = sla_config();
    let state = h.fold(&SlaProjection::new(config.clone())).await;
    // 1 h on Friday, the weekend and Monday's holiday are closed, 7 h on Tuesday.
    assert_eq!(
        state.cases.get("late").unwrap().first_response_due,
        Some(at(2024, 3, 5, 16, 0))
    );
    // Paused after 30 min; resumed Tuesday 10:00 with 7.5 h left: 7 h Tuesday, 30 min Wednesday.
    assert_eq!(
        state.cases.get("paused").unwrap().first_response_due,
        Some(at(2024, 3, 6, 9, 30))
    );
    let before = sla::case_at(&state, "late", at(2024, 3, 5, 15, 59)).unwrap();
    assert_eq!(before.first_response, TargetOutcome::Pending);
    let after_t = at(2024, 3, 5, 16, 1);
    let after = sla::case_at(&state, "late", after_t).unwrap();
    assert_eq!(
        after.first_response,
        TargetOutcome::Breached {
            due: at(2024, 3, 5, 16, 0)
        }
    );
    let r = sla::report(&state, &config, &SlaQuery::at(after_t));
    assert_eq!(r.breaches_total, 1);
    assert_eq!(r.breaches[0].case, "late");
    assert_eq!(r.overall.first_response.numerator, 1); // quick met
    assert_eq!(r.overall.first_response.denominator, 2);
    assert_eq!(r.overall.compliance.denominator, 1); // late breached; the others pending
    assert_eq!(r.overall.pending, 2);
    assert_eq!(r.backlog.open, 3);
    let wed = sla::report(&state, &config, &SlaQuery::at(at(2024, 3, 6, 9, 31)));
    assert_eq!(wed.breaches_total, 2);
}
