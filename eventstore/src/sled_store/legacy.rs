//! Converts a log written by the earlier layout (every record inside sled, in chunks of
//! frames under `C` keys of the `log` tree, sled's files directly in the store directory)
//! to segment files. The frames are copied byte for byte, so positions, hashes and the
//! chain are unchanged; the index is then rebuilt from the segments by the open's recovery.
//!
//! The conversion writes the segment to `segments.converting/`, syncs it, and renames the
//! directory to `segments/` (the step that makes it count); sled's old files are then moved
//! to `sled-before-segments/`, to be deleted once the converted log verifies. A crash
//! before the rename leaves the old log as it was, and the next open converts again.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tracing::warn;

use crate::codec;
use crate::error::OpenError;
use crate::types::Position;

use super::index::{open_db, IndexError};
use super::segment::{segment_header, segment_name, SEGMENTS_DIR, SEGMENT_HEADER_BYTES};
use super::sync_dir;

/// The file sled kept its log in, in the earlier layout.
const LEGACY_SLED_FILE: &str = "db";
const CONVERTING_DIR: &str = "segments.converting";
const KEPT_DIR: &str = "sled-before-segments";
const CHUNK_PREFIX: u8 = b'C';

/// Converts the log in `dir` if it is in the earlier layout.
pub(super) fn migrate_if_needed(dir: &Path) -> Result<(), OpenError> {
    if !dir.join(LEGACY_SLED_FILE).is_file() || dir.join(SEGMENTS_DIR).is_dir() {
        return Ok(());
    }
    let shown = dir.display().to_string();
    let storage = |reason: String| OpenError::Storage {
        path: shown.clone(),
        reason,
    };
    let damaged = |reason: String| OpenError::Damaged {
        path: shown.clone(),
        reason,
    };
    let wait = std::time::Duration::from_millis(super::OPEN_LOCK_WAIT_MS);
    let db = open_db(dir, wait, Some(64 * 1024 * 1024)).map_err(|e| match e {
        IndexError::Locked => OpenError::Locked {
            path: shown.clone(),
        },
        e if e.is_damage() => damaged(format!("the log (earlier layout) cannot be read: {e}")),
        e => storage(format!("could not open the log (earlier layout): {e}")),
    })?;
    let tree = db
        .open_tree("log")
        .map_err(|e| storage(format!("could not open the log (earlier layout): {e}")))?;
    let converting = dir.join(CONVERTING_DIR);
    if converting.exists() {
        std::fs::remove_dir_all(&converting)
            .map_err(|e| storage(format!("could not remove {}: {e}", converting.display())))?;
    }
    std::fs::create_dir_all(&converting)
        .map_err(|e| storage(format!("could not create {}: {e}", converting.display())))?;
    let path = converting.join(segment_name(Position::FIRST));
    let io = |e: std::io::Error| storage(format!("writing {}: {e}", path.display()));
    let file = File::create(&path).map_err(io)?;
    file.write_all_at(&segment_header(Position::FIRST), 0)
        .map_err(io)?;
    let mut at = SEGMENT_HEADER_BYTES;
    let mut next = Position::FIRST;
    for item in tree.scan_prefix([CHUNK_PREFIX]) {
        let (key, chunk) = item.map_err(|e| damaged(format!("reading a chunk: {e}")))?;
        let first = key
            .get(1..9)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(|b| Position(u64::from_be_bytes(b)))
            .ok_or_else(|| damaged("a malformed chunk key".into()))?;
        if first != next {
            return Err(damaged(format!(
                "records {next} to {} are missing (the next chunk starts at {first})",
                first.0.saturating_sub(1)
            )));
        }
        let mut offset = 0usize;
        while offset < chunk.len() {
            let len = codec::frame_len(&chunk[offset..])
                .filter(|l| offset + l <= chunk.len())
                .ok_or_else(|| damaged(format!("the record at position {next} is damaged")))?;
            codec::decode(&chunk[offset..offset + len], Some(next), false)
                .map_err(|e| damaged(format!("the record at position {next} is damaged ({e})")))?;
            offset += len;
            next = Position(next.0 + 1);
        }
        file.write_all_at(&chunk, at).map_err(io)?;
        at = at.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
    }
    file.sync_all().map_err(io)?;
    sync_dir(&converting).map_err(io)?;
    drop(tree);
    drop(db);
    std::fs::rename(&converting, dir.join(SEGMENTS_DIR))
        .and_then(|()| sync_dir(dir))
        .map_err(|e| {
            storage(format!(
                "could not put the converted segments in place: {e}"
            ))
        })?;
    let kept = dir.join(KEPT_DIR);
    std::fs::create_dir_all(&kept)
        .map_err(|e| storage(format!("could not create {}: {e}", kept.display())))?;
    let entries = std::fs::read_dir(dir).map_err(|e| storage(e.to_string()))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let old = name
            .to_str()
            .is_some_and(|n| n == "db" || n == "conf" || n == "blobs" || n.starts_with("snap."));
        if old {
            std::fs::rename(entry.path(), kept.join(&name))
                .map_err(|e| storage(format!("could not move {}: {e}", name.to_string_lossy())))?;
        }
    }
    sync_dir(dir).map_err(|e| storage(e.to_string()))?;
    warn!(path = %shown, records = next.0.saturating_sub(1), kept = %kept.display(),
        "converted the log to segment files; the earlier files are kept until you delete them, once the log verifies");
    Ok(())
}
