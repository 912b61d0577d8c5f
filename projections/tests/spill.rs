//! Read-model state beyond its memory budget: with generations of a few entries, every
//! table of the four read models spills to disk, and the states, their snapshot bytes and
//! their reports are exactly those of a fold held in memory; a runner that saves, stops and
//! resumes over spilled state reaches the same state and leaves no spill files behind.
//!
//! One test: the generation size is process-wide, so the phases run in order.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

#[path = "common/gen.rs"]
mod gen;
#[path = "common/story.rs"]
mod story;

use std::time::Duration;

use crm_eventstore::{EventStore, MemoryStore, Position, RecordedEvent};
use crm_projections::read_models::{churn, lifetime_value, sla, ReadModelConfig, ReadModels};
use crm_projections::{
    fold_all, table, Projection, ProjectionHandle, ProjectionRunner, RunnerOptions,
};

/// Customers in the log (about 20 events each).
const CUSTOMERS: u64 = 300;

fn bytes<T: serde::Serialize>(state: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(state, bincode::config::standard()).unwrap()
}

struct Folded {
    pipeline: <crm_projections::read_models::pipeline::PipelineProjection as Projection>::State,
    churn: churn::ChurnState,
    lifetime_value:
        <crm_projections::read_models::lifetime_value::LifetimeValueProjection as Projection>::State,
    sla: sla::SlaState,
}

fn fold(models: &ReadModels, all: &[RecordedEvent]) -> Folded {
    Folded {
        pipeline: fold_all(models.pipeline.projection(), all).0,
        churn: fold_all(models.churn.projection(), all).0,
        lifetime_value: fold_all(models.lifetime_value.projection(), all).0,
        sla: fold_all(models.sla.projection(), all).0,
    }
}

fn state<P: Projection>(h: &ProjectionHandle<P>) -> P::State {
    h.snapshot().0
}

fn options() -> RunnerOptions {
    RunnerOptions {
        snapshot_every_events: 500,
        snapshot_idle_interval: Duration::from_secs(3600),
        restart_backoff_initial: Duration::from_millis(1),
        restart_backoff_max: Duration::from_millis(5),
        bounded_restarts_max: 1,
    }
}

#[tokio::test]
async fn spilled_read_models_equal_the_ones_held_in_memory() {
    let store = MemoryStore::new();
    let mut serial = 0;
    for i in 0..CUSTOMERS {
        for events in story::story(i) {
            gen::append(&store, &events, &mut serial).await;
        }
    }
    let head = store.head().position;
    let mut all = Vec::new();
    let mut from = Position::FIRST;
    while from <= head {
        let page = store.read_all(from, 5_000).await.unwrap();
        let Some(last) = page.last() else { break };
        from = last.position.next().unwrap();
        all.extend(page);
    }
    assert!(all.len() > 5_000, "{} events", all.len());

    let dir = tempfile::tempdir().unwrap();
    let mut runner = ProjectionRunner::new(store.clone(), dir.path().join("held"), options());
    let models = ReadModels::register(&mut runner, &ReadModelConfig::default()).unwrap();

    // Held in memory (the default budget is far above this log).
    let held = fold(&models, &all);
    assert_eq!(held.sla.cases.spilled(), 0);
    // The churn report regroups rows by account: in memory here, on disk below.
    let t = gen::t0() + chrono::Duration::days(400);
    let churn_config = models.churn.projection().config_ref();
    let churn_query = |limit| churn::ChurnQuery {
        as_of: t,
        period: None,
        limit,
    };
    let held_customers = churn::customers(&held.churn, churn_config, t).unwrap();
    let held_reports = [None, Some(3)]
        .map(|limit| churn::report(&held.churn, churn_config, &churn_query(limit)).unwrap());
    // So does the lifetime-value report, twice over.
    let ltv_config = models.lifetime_value.projection().config_ref();
    let ltv_query = |limit, account: Option<&str>| lifetime_value::LifetimeValueQuery {
        as_of: t,
        account: account.map(str::to_owned),
        limit,
    };
    let held_ltv =
        lifetime_value::report(&held.lifetime_value, ltv_config, &ltv_query(None, None)).unwrap();
    let one_account = held_ltv.customers[5].account.clone();
    let held_ltv_cut =
        [(Some(3), None), (None, Some(one_account.as_str()))].map(|(limit, account)| {
            lifetime_value::report(&held.lifetime_value, ltv_config, &ltv_query(limit, account))
                .unwrap()
        });

    // Sixteen entries per generation: every large table spills.
    table::set_generation_bytes(1);
    let spilled = fold(&models, &all);
    assert!(spilled.sla.cases.spilled() > 0);
    assert!(spilled.churn.subscriptions.spilled() > 0);
    assert!(spilled.pipeline.opportunities.spilled() > 0);
    assert!(spilled.lifetime_value.orders.spilled() > 0);

    assert!(held.pipeline == spilled.pipeline, "pipeline");
    assert!(held.churn == spilled.churn, "churn");
    assert!(
        held.lifetime_value == spilled.lifetime_value,
        "lifetime value"
    );
    assert!(held.sla == spilled.sla, "sla");
    assert_eq!(bytes(&held.pipeline), bytes(&spilled.pipeline));
    assert_eq!(bytes(&held.churn), bytes(&spilled.churn));
    assert_eq!(bytes(&held.lifetime_value), bytes(&spilled.lifetime_value));
    assert_eq!(bytes(&held.sla), bytes(&spilled.sla));

    // Reports read spilled entries back.
    let sla_query = sla::SlaQuery::at(t);
    let sla_config = models.sla.projection().config_ref();
    assert_eq!(
        serde_json::to_value(sla::report(&held.sla, sla_config, &sla_query)).unwrap(),
        serde_json::to_value(sla::report(&spilled.sla, sla_config, &sla_query)).unwrap()
    );
    let customers = churn::customers(&spilled.churn, churn_config, t).unwrap();
    assert!(customers.len() > 100, "{}", customers.len());
    assert_eq!(
        serde_json::to_value(&held_customers).unwrap(),
        serde_json::to_value(&customers).unwrap()
    );
    for (limit, held_report) in [None, Some(3)].into_iter().zip(&held_reports) {
        let report = churn::report(&spilled.churn, churn_config, &churn_query(limit)).unwrap();
        assert_eq!(
            serde_json::to_value(held_report).unwrap(),
            serde_json::to_value(&report).unwrap(),
            "{limit:?}"
        );
        assert_eq!(
            report.customers_total,
            u64::try_from(customers.len()).unwrap()
        );
    }
    let ltv = lifetime_value::report(&spilled.lifetime_value, ltv_config, &ltv_query(None, None))
        .unwrap();
    assert!(ltv.customers_total > 100, "{}", ltv.customers_total);
    assert_eq!(
        serde_json::to_value(&held_ltv).unwrap(),
        serde_json::to_value(&ltv).unwrap()
    );
    for ((limit, account), held_report) in [(Some(3), None), (None, Some(one_account.as_str()))]
        .into_iter()
        .zip(&held_ltv_cut)
    {
        let report = lifetime_value::report(
            &spilled.lifetime_value,
            ltv_config,
            &ltv_query(limit, account),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(held_report).unwrap(),
            serde_json::to_value(&report).unwrap(),
            "{limit:?} {account:?}"
        );
    }
    let [three, one] = &held_ltv_cut;
    assert_eq!(
        serde_json::to_value(&three.customers).unwrap(),
        serde_json::to_value(&held_ltv.customers[..3]).unwrap()
    );
    assert_eq!(one.customers.len(), 1);
    assert_eq!(
        serde_json::to_value(&one.customers[0]).unwrap(),
        serde_json::to_value(&held_ltv.customers[5]).unwrap()
    );
    // Every customer's RFM cell counts, whichever are listed.
    assert_eq!(three.rfm_cells, held_ltv.rfm_cells);
    // The list is the riskiest customers, in order, whatever the limit.
    let [full, three] = &held_reports;
    assert_eq!(three.customers.len(), 3);
    assert_eq!(
        serde_json::to_value(&three.customers).unwrap(),
        serde_json::to_value(&full.customers[..3]).unwrap()
    );

    // A runner with spilled state: save part way, stop, resume from the snapshot.
    let data = dir.path().join("runner");
    let middle = Position(head.0 / 2);
    {
        let mut runner = ProjectionRunner::new(store.clone(), &data, options());
        ReadModels::register(&mut runner, &ReadModelConfig::default()).unwrap();
        runner.run_until(middle, true).await.unwrap();
    }
    let mut runner = ProjectionRunner::new(store.clone(), &data, options());
    let resumed = ReadModels::register(&mut runner, &ReadModelConfig::default()).unwrap();
    assert_eq!(resumed.sla.applied_position(), middle);
    runner.run_until_head().await.unwrap();
    assert!(state(&resumed.sla) == held.sla, "sla after resuming");
    assert!(state(&resumed.churn) == held.churn, "churn after resuming");
    assert!(
        state(&resumed.pipeline) == held.pipeline,
        "pipeline after resuming"
    );
    assert!(
        state(&resumed.lifetime_value) == held.lifetime_value,
        "lifetime value after resuming"
    );
    let report = resumed
        .sla
        .read_checked(|s, _| sla::report(s, sla_config, &sla_query))
        .unwrap();
    assert_eq!(
        serde_json::to_value(report).unwrap(),
        serde_json::to_value(sla::report(&held.sla, sla_config, &sla_query)).unwrap()
    );

    // Every spill directory goes with the states that used it.
    drop((runner, resumed, models, spilled));
    let spill = data.join(crm_projections::runner::SPILL_DIR);
    let left: Vec<_> = std::fs::read_dir(&spill)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "left behind: {left:?}");
}
