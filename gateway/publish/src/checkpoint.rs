//! The publisher's durable checkpoint: the last log position JetStream acknowledged, in
//! `<data-dir>/publisher/checkpoint`.
//!
//! The file is one JSON object (`{"format":1,"position":N,"stream":"CRM_EVENTS"}`), replaced
//! atomically: write `checkpoint.tmp`, `fsync` it, rename it over `checkpoint`, `fsync` the
//! directory. After a crash the file holds the previous or the new checkpoint, never a torn
//! one. The publisher saves it after each acknowledged batch (coalesced, at most every
//! [`super::CHECKPOINT_SAVE_INTERVAL`]), not after each event.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The checkpoint file's format version.
pub const CHECKPOINT_FORMAT: u32 = 1;
/// Largest checkpoint file read, in bytes (it holds a few dozen).
const CHECKPOINT_SIZE_MAX_BYTES: u64 = 4 * 1024;

/// What the checkpoint file holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version ([`CHECKPOINT_FORMAT`]).
    pub format: u32,
    /// The last position JetStream acknowledged (0: none).
    pub position: u64,
    /// The JetStream stream the events went to.
    pub stream: String,
}

/// Why the checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// A file operation failed.
    #[error("could not {action} the publisher checkpoint {path}: {source}; check the data directory's permissions and free space")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a checkpoint this build reads.
    #[error("the publisher checkpoint {path} is damaged or of another format ({reason}); delete it: the publisher then resumes after the last event the JetStream stream holds")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

/// The checkpoint file of the data directory `data_dir`.
#[must_use]
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("publisher").join("checkpoint")
}

/// Reads the checkpoint at `path`; `None` when there is none.
///
/// # Errors
/// [`CheckpointError`] when the file cannot be read or is not a checkpoint.
pub fn load(path: &Path) -> Result<Option<Checkpoint>, CheckpointError> {
    let io = |action, source| CheckpointError::Io {
        action,
        path: path.display().to_string(),
        source,
    };
    let size = match fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("read", e)),
    };
    let invalid = |reason: String| CheckpointError::Invalid {
        path: path.display().to_string(),
        reason,
    };
    if size > CHECKPOINT_SIZE_MAX_BYTES {
        return Err(invalid(format!(
            "{size} bytes, more than {CHECKPOINT_SIZE_MAX_BYTES}"
        )));
    }
    let bytes = fs::read(path).map_err(|e| io("read", e))?;
    let checkpoint: Checkpoint =
        serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if checkpoint.format != CHECKPOINT_FORMAT {
        return Err(invalid(format!(
            "format {}, this build reads {CHECKPOINT_FORMAT}",
            checkpoint.format
        )));
    }
    Ok(Some(checkpoint))
}

/// Replaces the checkpoint at `path` atomically and durably (creating its directory).
///
/// # Errors
/// [`CheckpointError::Io`] when a write, `fsync` or rename fails.
pub fn save(path: &Path, checkpoint: &Checkpoint) -> Result<(), CheckpointError> {
    let io = |action, source| CheckpointError::Io {
        action,
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(checkpoint).map_err(|e| io("encode", e.into()))?;
    {
        let mut file = fs::File::create(&tmp).map_err(|e| io("create", e))?;
        file.write_all(&bytes).map_err(|e| io("write", e))?;
        file.sync_all().map_err(|e| io("fsync", e))?;
    }
    fs::rename(&tmp, path).map_err(|e| io("rename into place", e))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io("fsync the directory of", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_checkpoint_loads_back_and_a_damaged_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = path(dir.path());
        assert_eq!(load(&file).unwrap(), None);
        let first = Checkpoint {
            format: CHECKPOINT_FORMAT,
            position: 41,
            stream: "CRM_EVENTS".into(),
        };
        save(&file, &first).unwrap();
        assert_eq!(load(&file).unwrap(), Some(first.clone()));
        let second = Checkpoint {
            position: 42,
            ..first
        };
        save(&file, &second).unwrap();
        assert_eq!(load(&file).unwrap(), Some(second));
        assert!(!file.with_extension("tmp").exists());

        fs::write(&file, b"{\"format\":1,\"posi").unwrap();
        let err = load(&file).unwrap_err().to_string();
        assert!(
            err.contains("damaged") && err.contains("delete it"),
            "{err}"
        );
        fs::write(&file, br#"{"format":9,"position":1,"stream":"S"}"#).unwrap();
        let err = load(&file).unwrap_err().to_string();
        assert!(err.contains("format 9"), "{err}");
    }
}
