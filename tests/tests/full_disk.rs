//! A full disk, simulated with a file-size limit on a child process: `crash-writer` runs
//! under bash's `ulimit -f` with SIGXFSZ ignored, so a write past the limit fails with
//! `EFBIG` ("File too large") as a full disk fails with `ENOSPC`. The child's appends must
//! end with a clear error, every append it saw acknowledged must be in the log with its
//! content, and the store must work again once the limit is gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};

use crm_eventstore::{EventStore, ExpectedVersion, Position, SledStore, StreamId};
use crm_tests::crash::proposed;
use uuid::Uuid;

const CHILD: &str = env!("CARGO_BIN_EXE_crash-writer");
/// The child's file-size limit, in KiB (bash's unit for `ulimit -f`).
const LIMIT_KIB: u64 = 3 * 1024;

#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f {LIMIT_KIB}; exec \"$0\" \"$@\""
        ))
        .arg(CHILD)
        .arg(dir.path())
        .arg("7")
        .stdin(Stdio::null())
        .output()
        .expect("run crash-writer under a file-size limit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the child never met the limit");
    assert!(
        stderr.contains("File too large") && stderr.contains("refuses writes until it is reopened"),
        "the child's error does not say what happened: {stderr}"
    );
    let acks: Vec<(Uuid, u64)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut parts = l.split(' ');
            (parts.next()? == "ACK").then_some(())?;
            let id = Uuid::parse_str(parts.next()?).ok()?;
            let position = parts.next()?.parse().ok()?;
            Some((id, position))
        })
        .collect();
    assert!(
        acks.len() > 1_000,
        "only {} acknowledged appends",
        acks.len()
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let store = SledStore::open(dir.path()).unwrap();
        let head = store.head().position;
        for (id, position) in &acks {
            assert!(Position(*position) <= head, "acknowledged {position} is past the head {head}");
            let rec = store.read_all(Position(*position), 1).await.unwrap();
            let rec = &rec[0];
            let want = proposed(*id);
            assert_eq!(rec.event_id.0, *id, "position {position} holds another event");
            assert_eq!(rec.payload, want.payload);
            assert_eq!(rec.event_type, want.event_type);
        }
        assert!(store.verify(Position::FIRST, None).await.unwrap().is_ok());
        // Space is back: the same store takes appends again.
        let stream = StreamId::new("after-the-disk-was-full").unwrap();
        let r = store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                vec![proposed(Uuid::from_u128(u128::MAX))],
            )
            .await
            .unwrap();
        assert_eq!(r.last_position, Position(head.0 + 1));
        store.close().await;
        eprintln!(
            "full disk: {} appends acknowledged under a {LIMIT_KIB} KiB file limit, head {head}; child said: {}",
            acks.len(),
            stderr.lines().last().unwrap_or_default()
        );
    });
}
