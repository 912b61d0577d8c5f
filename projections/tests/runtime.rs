//! The worker runtime: live following, panics and restarts, status and lag, rebuilds
//! (requested, and automatic on a version or configuration change).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

#[path = "common/gen.rs"]
mod gen;
#[path = "common/story.rs"]
mod story;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crm_domain::DomainEvent;
use crm_eventstore::{EventStore, MemoryStore, Position};
use crm_projections::read_models::{
    PipelineConfig, PipelineProjection, ReadModelConfig, ReadModels,
};
use crm_projections::{
    stored_status, EventContext, Phase, Projection, ProjectionRunner, RunnerOptions,
};

fn options() -> RunnerOptions {
    RunnerOptions {
        snapshot_every_events: 7,
        snapshot_idle_interval: Duration::from_millis(20),
        restart_backoff_initial: Duration::from_millis(5),
        restart_backoff_max: Duration::from_millis(20),
        bounded_restarts_max: 2,
    }
}

async fn store_with(ops: u16) -> (MemoryStore, gen::Gen, u64) {
    let store = MemoryStore::new();
    let mut g = gen::Gen::new(gen::t0());
    let mut serial = 0;
    for i in 0..ops {
        let events = g.op((
            (i % 29) as u8,
            (i / 3) as u8,
            (i / 7) as u8,
            i.wrapping_mul(7919),
        ));
        gen::append(&store, &events, &mut serial).await;
    }
    (store, g, serial)
}

/// Counts events; panics on the event at `poison` while `armed`.
struct Counter {
    name: &'static str,
    poison: Option<Position>,
    armed: Arc<AtomicBool>,
}

impl Projection for Counter {
    type State = u64;
    fn name(&self) -> &'static str {
        self.name
    }
    fn version(&self) -> u32 {
        1
    }
    fn wants(&self, _: &str) -> bool {
        true
    }
    fn apply(&self, state: &mut u64, ctx: &EventContext<'_>, _: &DomainEvent) {
        if Some(ctx.position) == self.poison && self.armed.load(Ordering::SeqCst) {
            panic!("poison event at {}", ctx.position);
        }
        *state += 1;
    }
}

#[tokio::test]
async fn workers_follow_the_log_live_and_report_lag() {
    let (store, mut g, mut serial) = store_with(300).await;
    let dir = tempfile::tempdir().unwrap();
    let mut runner = ProjectionRunner::new(store.clone(), dir.path(), options());
    let models = ReadModels::register(&mut runner, &ReadModelConfig::default()).unwrap();
    runner.start().unwrap();
    let head = store.head().position;
    tokio::time::timeout(Duration::from_secs(10), models.sla.wait_for(head))
        .await
        .unwrap();
    // Live: more events arrive after the catch-up.
    for i in 0..200u16 {
        let events = g.op(((i % 29) as u8, i as u8, (i / 5) as u8, i.wrapping_mul(31)));
        gen::append(&store, &events, &mut serial).await;
    }
    let head = store.head().position;
    for name in ["pipeline", "churn", "lifetime-value", "sla"] {
        assert!(runner.names().contains(&name));
    }
    tokio::time::timeout(Duration::from_secs(10), models.churn.wait_for(head))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), models.pipeline.wait_for(head))
        .await
        .unwrap();
    let status = runner.status().await;
    let churn = status.iter().find(|s| s.name == "churn").unwrap();
    assert_eq!(churn.applied_position, head);
    assert_eq!(churn.lag_events, 0);
    assert_eq!(churn.head_position, head);
    assert!(churn.progress.applied > 0 && churn.progress.ignored > 0);
    runner.stop().await.unwrap();
    // Stopping saved a snapshot at the head; another process can read it.
    let header = stored_status(dir.path(), "churn").unwrap().unwrap();
    assert_eq!(header.progress.position, head);
    let status = runner.status().await;
    assert!(status
        .iter()
        .all(|s| s.phase == Phase::Stopped && s.checkpoint_position == head));
}

#[tokio::test]
async fn a_panicking_worker_restarts_with_backoff_without_stopping_the_others() {
    let (store, _, _) = store_with(120).await;
    let head = store.head().position;
    let dir = tempfile::tempdir().unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    let mut runner = ProjectionRunner::new(store.clone(), dir.path(), options());
    let bad = runner
        .register(Counter {
            name: "bad",
            poison: Some(Position(40)),
            armed: Arc::clone(&armed),
        })
        .unwrap();
    let good = runner
        .register(Counter {
            name: "good",
            poison: None,
            armed: Arc::clone(&armed),
        })
        .unwrap();
    runner.start().unwrap();
    tokio::time::timeout(Duration::from_secs(10), good.wait_for(head))
        .await
        .unwrap();
    assert_eq!(good.snapshot().0, head.0);
    // The bad one keeps failing at 40, visibly.
    let failing = loop {
        let s = runner
            .status()
            .await
            .into_iter()
            .find(|s| s.name == "bad")
            .unwrap();
        if s.restarts >= 2 {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let err = failing.last_error.unwrap();
    assert_eq!(err.position, Position(40));
    assert!(
        err.message.contains("poison event at 40"),
        "{}",
        err.message
    );
    // Its served state never shows a half-applied page: it is a saved checkpoint.
    assert!(bad.applied_position() < Position(40));
    assert_eq!(bad.snapshot().0, bad.applied_position().0);
    // Fix the cause: the next restart goes through.
    armed.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(10), bad.wait_for(head))
        .await
        .unwrap();
    assert_eq!(bad.snapshot().0, head.0);
    runner.stop().await.unwrap();
}

#[tokio::test]
async fn a_bounded_run_gives_up_on_a_poison_event() {
    let (store, _, _) = store_with(60).await;
    let dir = tempfile::tempdir().unwrap();
    let mut runner = ProjectionRunner::new(store, dir.path(), options());
    runner
        .register(Counter {
            name: "bad",
            poison: Some(Position(3)),
            armed: Arc::new(AtomicBool::new(true)),
        })
        .unwrap();
    let err = runner.run_until_head().await.unwrap_err();
    assert!(err.to_string().contains("poison event at 3"), "{err}");
    assert_eq!(runner.status().await[0].phase, Phase::Failed);
}

#[tokio::test]
async fn rebuild_switches_to_a_fresh_state_while_serving() {
    let (store, mut g, mut serial) = store_with(200).await;
    let dir = tempfile::tempdir().unwrap();
    let mut runner = ProjectionRunner::new(store.clone(), dir.path(), options());
    let models = ReadModels::register(&mut runner, &ReadModelConfig::default()).unwrap();
    runner.start().unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        models.pipeline.wait_for(store.head().position),
    )
    .await
    .unwrap();
    let before = models.pipeline.snapshot().0;
    for i in 0..50u16 {
        let events = g.op(((i % 8) as u8 + 2, i as u8, (i / 3) as u8, i));
        gen::append(&store, &events, &mut serial).await;
    }
    let report = runner.rebuild("pipeline").await.unwrap();
    assert!(report.switched_at >= Position(1));
    // Still running after the switch, and it catches the rest.
    let head = store.head().position;
    tokio::time::timeout(Duration::from_secs(10), models.pipeline.wait_for(head))
        .await
        .unwrap();
    let all = store.read_all(Position::FIRST, 10_000).await.unwrap();
    let expected = crm_projections::fold_all(models.pipeline.projection(), &all).0;
    assert_eq!(models.pipeline.snapshot().0, expected);
    assert_ne!(before, expected);
    assert!(runner.status().await.iter().all(|s| s.rebuild.is_none()));
    runner.stop().await.unwrap();
    assert!(runner
        .rebuild("nope")
        .await
        .unwrap_err()
        .to_string()
        .contains("known projections"));
}

struct Versioned(u32);

impl Projection for Versioned {
    type State = Vec<String>;
    fn name(&self) -> &'static str {
        "versioned"
    }
    fn version(&self) -> u32 {
        self.0
    }
    fn wants(&self, t: &str) -> bool {
        t == "CaseOpened"
    }
    fn apply(&self, state: &mut Vec<String>, _: &EventContext<'_>, e: &DomainEvent) {
        state.push(format!("v{}:{}", self.0, e.aggregate_id()));
    }
}

#[tokio::test]
async fn a_changed_version_or_configuration_rebuilds_from_zero() {
    let (store, _, _) = store_with(150).await;
    let dir = tempfile::tempdir().unwrap();
    {
        let mut runner = ProjectionRunner::new(store.clone(), dir.path(), options());
        let h = runner.register(Versioned(1)).unwrap();
        let p = runner
            .register(PipelineProjection::new(PipelineConfig::default()))
            .unwrap();
        runner.run_until_head().await.unwrap();
        assert!(h.snapshot().0.iter().all(|s| s.starts_with("v1:")) && !h.snapshot().0.is_empty());
        assert!(p.applied_position() > Position::ZERO);
    }
    let mut runner = ProjectionRunner::new(store.clone(), dir.path(), options());
    let h = runner.register(Versioned(2)).unwrap();
    let mut config = PipelineConfig::default();
    config.stage_probabilities.insert("Qualify".into(), 33);
    let p = runner.register(PipelineProjection::new(config)).unwrap();
    assert_eq!(h.applied_position(), Position::ZERO);
    assert_eq!(p.applied_position(), Position::ZERO);
    let status = runner.status().await;
    assert!(status[0]
        .rebuilt_because
        .as_deref()
        .unwrap()
        .contains("code version changed from 1 to 2"));
    assert!(status[1]
        .rebuilt_because
        .as_deref()
        .unwrap()
        .contains("configuration"));
    runner.run_until_head().await.unwrap();
    assert!(h.snapshot().0.iter().all(|s| s.starts_with("v2:")) && !h.snapshot().0.is_empty());
}

#[tokio::test]
async fn run_worker_runs_one_projection_until_shutdown() {
    let (store, _, _) = store_with(80).await;
    let head = store.head().position;
    let dir = tempfile::tempdir().unwrap();
    let mut runner = ProjectionRunner::new(store.clone(), dir.path(), options());
    let models = ReadModels::register(&mut runner, &ReadModelConfig::default()).unwrap();
    let sla = models.sla.clone();
    runner
        .run_worker("sla", async move { sla.wait_for(head).await })
        .await
        .unwrap();
    assert_eq!(models.sla.applied_position(), head);
    assert_eq!(models.churn.applied_position(), Position::ZERO);
    assert_eq!(
        stored_status(dir.path(), "sla")
            .unwrap()
            .unwrap()
            .progress
            .position,
        head
    );
    assert!(stored_status(dir.path(), "churn").unwrap().is_none());
}

#[tokio::test]
async fn a_crash_loses_only_unsaved_events_and_never_applies_one_twice() {
    let (store, _, _) = store_with(120).await;
    let head = store.head().position;
    assert!(head > Position(20));
    let dir = tempfile::tempdir().unwrap();
    let counter = || Counter {
        name: "count",
        poison: None,
        armed: Arc::new(AtomicBool::new(false)),
    };
    let opts = RunnerOptions {
        snapshot_every_events: 1_000,
        ..options()
    };
    {
        let mut runner = ProjectionRunner::new(store.clone(), dir.path(), opts.clone());
        let h = runner.register(counter()).unwrap();
        runner.run_until(Position(12), true).await.unwrap();
        runner.run_until(Position(17), false).await.unwrap();
        assert_eq!(h.snapshot().0, 17);
        // The process dies here: events 13..=17 were folded but never saved.
    }
    let mut runner = ProjectionRunner::new(store.clone(), dir.path(), opts);
    let h = runner.register(counter()).unwrap();
    assert_eq!((h.snapshot().0, h.applied_position()), (12, Position(12)));
    runner.run_until_head().await.unwrap();
    assert_eq!(h.snapshot().0, head.0);
}

#[tokio::test]
async fn benchmark_stories_are_valid_histories_the_read_models_fold() {
    let store = MemoryStore::new();
    let mut serial = 0;
    for i in 0..40 {
        for events in story::story(i) {
            gen::append(&store, &events, &mut serial).await;
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let mut runner = ProjectionRunner::new(store.clone(), dir.path(), options());
    let models = ReadModels::register(&mut runner, &ReadModelConfig::default()).unwrap();
    runner.run_until_head().await.unwrap();
    let (sla, progress) = models.sla.snapshot();
    assert_eq!(progress.undecodable + progress.unknown_type, 0);
    assert_eq!(sla.cases.len(), 40);
    assert_eq!(models.churn.snapshot().0.subscriptions.len(), 40);
    assert_eq!(models.pipeline.snapshot().0.opportunities.len(), 80);
}

/// A log built from other operations than `store_with`'s: another history.
async fn other_store(ops: u16) -> MemoryStore {
    let store = MemoryStore::new();
    let mut g = gen::Gen::new(gen::t0());
    let mut serial = 0;
    for i in 0..ops {
        let events = g.op(((i % 8) as u8 + 2, i as u8, (i / 3) as u8, i));
        gen::append(&store, &events, &mut serial).await;
    }
    store
}

/// A snapshot folded from one log, found beside another (the log was replaced, restored
/// from an older backup, or truncated): the worker does not resume from it but rebuilds
/// from position 0, says why, and reaches exactly the state a fresh fold of this log gives.
#[tokio::test]
async fn a_snapshot_of_another_log_is_not_resumed() {
    let (first, _, _) = store_with(150).await;
    let dir = tempfile::tempdir().unwrap();
    {
        let mut runner = ProjectionRunner::new(first.clone(), dir.path(), options());
        let p = runner
            .register(PipelineProjection::new(PipelineConfig::default()))
            .unwrap();
        runner.run_until_head().await.unwrap();
        assert_eq!(p.applied_position(), first.head().position);
    }
    let checkpoint = first.head().position;
    let longer = other_store(400).await;
    let shorter = other_store(10).await;
    assert!(longer.head().position > checkpoint && shorter.head().position < checkpoint);
    for (replacement, expect_reason) in [
        (longer, "chain hash"),
        (shorter, "ends before the snapshot's checkpoint"),
    ] {
        let snapshot_dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("pipeline");
        let to = snapshot_dir.path().join("pipeline");
        std::fs::create_dir_all(&to).unwrap();
        for entry in std::fs::read_dir(&from).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
        let mut runner = ProjectionRunner::new(replacement.clone(), snapshot_dir.path(), options());
        let p = runner
            .register(PipelineProjection::new(PipelineConfig::default()))
            .unwrap();
        runner.run_until_head().await.unwrap();
        let reason = runner.status().await[0].rebuilt_because.clone();
        assert!(
            reason.as_deref().is_some_and(|r| r.contains(expect_reason)),
            "{reason:?}"
        );
        let all = replacement.read_all(Position::FIRST, 10_000).await.unwrap();
        let expected = crm_projections::fold_all(p.projection(), &all);
        assert_eq!(p.snapshot(), expected);
    }

    // The same log again: the snapshot is resumed, nothing is rebuilt.
    let mut runner = ProjectionRunner::new(first.clone(), dir.path(), options());
    let p = runner
        .register(PipelineProjection::new(PipelineConfig::default()))
        .unwrap();
    assert_eq!(p.applied_position(), first.head().position);
    runner.run_until_head().await.unwrap();
    assert_eq!(runner.status().await[0].rebuilt_because, None);
    assert_eq!(p.applied_position(), first.head().position);
}
