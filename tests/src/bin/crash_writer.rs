//! `crash-writer DIR SEED [hold]`: the child process of the crash test
//! (`tests/tests/crash.rs`).
//!
//! Opens the `SledStore` at `DIR` and runs [`WRITERS`] concurrent writer tasks
//! that append forever: each to its own stream `crash-<task>` and, one append
//! in four, to the shared stream `crash-shared` (all with `Exact` expected
//! versions; a conflict reloads the version and retries). Every event's content
//! is derived from its id (see `crm_tests::crash::proposed`), so the parent can check what it
//! finds after the crash. After an append returns `Ok` the child prints one
//! line per event and flushes stdout:
//!
//! ```text
//! ACK <event_id> <position> <stream> <version>
//! ```
//!
//! With `hold` it only opens the store, prints `OPEN` and waits to be killed.
//!
//! The content function lives in `crm_tests::crash`, shared with the parent.

use std::io::Write;
use std::process::ExitCode;

use crm_eventstore::{
    AppendError, AppendResult, EventStore, ExpectedVersion, OpenError, ReadError, SledStore,
    StreamId, StreamIdError, StreamVersion,
};
use crm_tests::crash::{proposed, Rng};
use uuid::Uuid;

/// Concurrent writer tasks.
const WRITERS: u64 = 8;

/// The stream all writers share.
const SHARED_STREAM: &str = "crash-shared";

/// Why the child stopped before it was killed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
enum WriterError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("cannot write to stdout: {0}")]
    Stdout(std::io::Error),
    #[error(transparent)]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    StreamId(#[from] StreamIdError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("append to {stream} failed: {reason}")]
    Append {
        stream: StreamId,
        reason: AppendError,
    },
    #[error("fresh ids reported as already present: {0:?}")]
    AlreadyPresent(AppendResult),
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(seed)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: crash-writer DIR SEED [hold]");
        return ExitCode::from(2);
    };
    let hold = args.get(3).is_some_and(|a| a == "hold");
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crash-writer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(dir, seed, hold)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crash-writer: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(dir: &str, seed: u64, hold: bool) -> Result<(), WriterError> {
    let store = SledStore::open(dir)?;
    if hold {
        print_lines("OPEN\n")?;
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
        }
    }
    let mut tasks = Vec::new();
    for task in 0..WRITERS {
        tasks.push(tokio::spawn(writer(store.clone(), seed, task)));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

fn print_lines(lines: &str) -> Result<(), WriterError> {
    let mut out = std::io::stdout().lock();
    out.write_all(lines.as_bytes())
        .and_then(|()| out.flush())
        .map_err(WriterError::Stdout)
}

/// Appends forever; returns only on an unexpected error.
async fn writer(store: SledStore, seed: u64, task: u64) -> Result<(), WriterError> {
    let mut rng = Rng::new(seed.wrapping_mul(31).wrapping_add(task));
    let own = StreamId::new(format!("crash-{task}"))?;
    let shared = StreamId::new(SHARED_STREAM)?;
    let mut own_version = store.stream_version(&own).await?;
    let mut shared_version = store.stream_version(&shared).await?;
    let mut counter: u64 = 0;
    loop {
        let to_shared = rng.next().is_multiple_of(4);
        let (stream, version) = if to_shared {
            (&shared, &mut shared_version)
        } else {
            (&own, &mut own_version)
        };
        let count = rng.range(1, 5);
        let mut ids = Vec::new();
        let mut events = Vec::new();
        for _ in 0..count {
            counter += 1;
            // Unique across children as long as seeds differ.
            let id = Uuid::from_u128(
                (u128::from(seed) << 64) | (u128::from(task) << 48) | u128::from(counter),
            );
            ids.push(id);
            events.push(proposed(id));
        }
        let result = loop {
            match store
                .append(stream, ExpectedVersion::Exact(*version), events.clone())
                .await
            {
                Ok(r) => break r,
                Err(AppendError::WrongExpectedVersion { actual, .. }) => *version = actual,
                Err(reason) => {
                    return Err(WriterError::Append {
                        stream: stream.clone(),
                        reason,
                    })
                }
            }
        };
        if result.already_present {
            return Err(WriterError::AlreadyPresent(result));
        }
        *version = result.stream_version;
        let first_version = result.stream_version.0 + 1 - count;
        let mut lines = String::new();
        for (i, id) in (0..count).zip(&ids) {
            lines.push_str(&format!(
                "ACK {id} {} {stream} {}\n",
                result.first_position.0 + i,
                StreamVersion(first_version + i)
            ));
        }
        print_lines(&lines)?;
    }
}
