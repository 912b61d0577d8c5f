//! Acceptance property of issue 5: for random valid event histories, rebuilding each
//! projection from position 0 yields exactly the state incremental processing reached,
//! including across a simulated crash between any two events.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

#[path = "common/gen.rs"]
mod gen;

use std::time::Duration;

use crm_eventstore::{EventStore, MemoryStore, Position};
use crm_projections::read_models::{ReadModelConfig, ReadModels};
use crm_projections::{fold_all, Projection, ProjectionHandle, ProjectionRunner, RunnerOptions};
use proptest::prelude::*;

fn options(snapshot_every_events: u64) -> RunnerOptions {
    RunnerOptions {
        snapshot_every_events,
        snapshot_idle_interval: Duration::from_secs(3600),
        restart_backoff_initial: Duration::from_millis(1),
        restart_backoff_max: Duration::from_millis(5),
        bounded_restarts_max: 1,
    }
}

fn open(
    store: &MemoryStore,
    dir: &std::path::Path,
    every: u64,
) -> (ProjectionRunner<MemoryStore>, ReadModels) {
    let mut runner = ProjectionRunner::new(store.clone(), dir, options(every));
    let models = ReadModels::register(&mut runner, &ReadModelConfig::default()).unwrap();
    (runner, models)
}

fn state<P: Projection>(h: &ProjectionHandle<P>) -> P::State {
    h.snapshot().0
}

fn assert_same(a: &ReadModels, b: &ReadModels) {
    assert_eq!(state(&a.pipeline), state(&b.pipeline), "pipeline");
    assert_eq!(state(&a.churn), state(&b.churn), "churn");
    assert_eq!(
        state(&a.lifetime_value),
        state(&b.lifetime_value),
        "lifetime value"
    );
    assert_eq!(state(&a.sla), state(&b.sla), "sla");
    assert_eq!(a.sla.snapshot().1, b.sla.snapshot().1, "sla progress");
}

async fn history(ops: &[gen::Op]) -> MemoryStore {
    let store = MemoryStore::new();
    let mut g = gen::Gen::new(gen::t0());
    let mut serial = 0;
    for op in ops {
        let events = g.op(*op);
        gen::append(&store, &events, &mut serial).await;
    }
    store
}

fn op() -> impl Strategy<Value = gen::Op> {
    (any::<u8>(), any::<u8>(), any::<u8>(), any::<u16>())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn rebuild_equals_incremental_across_a_crash(
        ops in prop::collection::vec(op(), 1..300),
        crash in (0.0f64..=1.0, 0.0f64..=1.0),
        every in 1u64..12,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let store = history(&ops).await;
            let head = store.head().position;
            let all = store.read_all(Position::FIRST, 10_000).await.unwrap();

            // Clean rebuild from position 0.
            let clean_dir = tempfile::tempdir().unwrap();
            let (clean, clean_models) = open(&store, clean_dir.path(), 1_000_000);
            clean.run_until_head().await.unwrap();

            // The same as a plain in-memory fold.
            let pipeline = clean_models.pipeline.projection();
            prop_assert_eq!(&fold_all(pipeline, &all).0, &state(&clean_models.pipeline));
            let sla = clean_models.sla.projection();
            prop_assert_eq!(&fold_all(sla, &all).0, &state(&clean_models.sla));

            // Incremental: snapshot at k1, fold on to k2 without saving, "crash", reopen.
            let k1 = Position((crash.0 * head.0 as f64) as u64);
            let k2 = Position(k1.0 + ((head.0 - k1.0) as f64 * crash.1) as u64);
            let dir = tempfile::tempdir().unwrap();
            {
                let (runner, _) = open(&store, dir.path(), every);
                runner.run_until(k1, true).await.unwrap();
                runner.run_until(k2, false).await.unwrap();
            }
            let (runner, models) = open(&store, dir.path(), every);
            let resumed_at = models.churn.applied_position();
            prop_assert!(resumed_at <= k2);
            runner.run_until_head().await.unwrap();
            prop_assert_eq!(models.churn.applied_position(), head);
            assert_same(&clean_models, &models);
            Ok(())
        })?;
    }
}
