//! The manifest `OUT/_export.json` and the file discipline of an export: every file is
//! written under a temporary name, synced, renamed and its folder synced; the manifest is
//! replaced last, the same way, so the previous manifest stays valid until the new one is
//! complete.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use crm_eventstore::Head;
use serde::{Deserialize, Serialize};

use crate::error::ExportError;
use crate::events::WrittenEvents;
use crate::{EVENTS_DIR, FORMAT_VERSION, METRICS_DIR, READ_MODELS_DIR};

/// The manifest's file name in the output directory.
pub const MANIFEST_FILE: &str = "_export.json";
/// Suffix of a file being written.
const TEMPORARY_SUFFIX: &str = ".tmp";
/// Longest manifest read, in bytes (a manifest lists one entry per part file).
const MANIFEST_SIZE_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// What an output directory holds: read by the next export, and by anyone who wants to know
/// which files make up the export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT_VERSION`] of the layout.
    pub format_version: u32,
    /// When the last export finished writing its files.
    pub exported_at: DateTime<Utc>,
    /// The last log position exported (0: none).
    pub last_position: u64,
    /// The chain hash of that record (hex; zeros for none).
    pub last_hash: String,
    /// Event rows in all part files.
    pub events: u64,
    /// Events withheld (the access-token register), by type.
    pub withheld: BTreeMap<String, u64>,
    /// The event partitions, keyed `event_type=<Type>/month=<YYYY-MM>`.
    pub partitions: BTreeMap<String, Partition>,
    /// The read models' files, rewritten by every export.
    pub read_models: Vec<TableEntry>,
    /// The metric answers' files, rewritten by every export.
    pub metrics: Vec<TableEntry>,
    /// Metrics without a file, with the reason.
    pub metrics_skipped: Vec<(String, String)>,
    /// Every export run into this directory, oldest first.
    pub runs: Vec<Run>,
}

/// One partition of the events: an event type in a month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// The event type.
    pub event_type: String,
    /// `YYYY-MM` of `occurred_at`, UTC.
    pub month: String,
    /// Rows in all its files.
    pub rows: u64,
    /// Its part files, in log order.
    pub files: Vec<FileEntry>,
}

/// One event part file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the output directory, with `/`.
    pub path: String,
    /// First position in it.
    pub first_position: u64,
    /// Last position in it.
    pub last_position: u64,
    /// Rows.
    pub rows: u64,
    /// Size.
    pub bytes: u64,
}

/// One read model or metric file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableEntry {
    /// The read model's name or `<metric id>@<version>`.
    pub name: String,
    /// Path relative to the output directory, with `/`.
    pub path: String,
    /// Rows.
    pub rows: u64,
    /// Size.
    pub bytes: u64,
    /// The log position its content covers.
    pub log_position: u64,
}

/// One export run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// When it finished.
    pub exported_at: DateTime<Utc>,
    /// Positions it exported, `None` when the log had nothing new.
    pub first_position: Option<u64>,
    /// The last position exported after it.
    pub last_position: u64,
    /// Event rows it wrote.
    pub events: u64,
    /// Part files it wrote.
    pub files: usize,
}

impl Manifest {
    /// The manifest of an empty output directory.
    #[must_use]
    pub fn empty() -> Manifest {
        Manifest {
            format_version: FORMAT_VERSION,
            exported_at: DateTime::<Utc>::UNIX_EPOCH,
            last_position: 0,
            last_hash: crm_eventstore::ChainHash::GENESIS.to_hex(),
            events: 0,
            withheld: BTreeMap::new(),
            partitions: BTreeMap::new(),
            read_models: Vec::new(),
            metrics: Vec::new(),
            metrics_skipped: Vec::new(),
            runs: Vec::new(),
        }
    }

    /// The manifest in `out`, `None` when there is none.
    ///
    /// # Errors
    /// [`ExportError::BadManifest`], [`ExportError::NewerManifest`], [`ExportError::Io`].
    pub fn read(out: &Path) -> Result<Option<Manifest>, ExportError> {
        let path = out.join(MANIFEST_FILE);
        let size = match fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(ExportError::io("reading", &path)(e)),
        };
        if size > MANIFEST_SIZE_MAX_BYTES {
            return Err(ExportError::BadManifest {
                path,
                reason: format!("{size} bytes, above the limit of {MANIFEST_SIZE_MAX_BYTES}"),
            });
        }
        let bytes = fs::read(&path).map_err(ExportError::io("reading", &path))?;
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| ExportError::BadManifest {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let found = value
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u32::try_from(v).ok());
        match found {
            Some(v) if v > FORMAT_VERSION => {
                return Err(ExportError::NewerManifest {
                    path,
                    found: v,
                    supported: FORMAT_VERSION,
                })
            }
            Some(_) => {}
            None => {
                return Err(ExportError::BadManifest {
                    path,
                    reason: "no format_version".to_owned(),
                })
            }
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| ExportError::BadManifest {
                path,
                reason: e.to_string(),
            })
    }

    /// Writes the manifest into `out` (temporary file, sync, rename, sync the folder).
    ///
    /// # Errors
    /// [`ExportError::Io`], [`ExportError::Json`].
    pub fn write(&self, out: &Path) -> Result<(), ExportError> {
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|source| ExportError::Json {
            what: "the manifest",
            source,
        })?;
        bytes.push(b'\n');
        write_atomic(&out.join(MANIFEST_FILE), |file| {
            file.write_all(&bytes)
                .map_err(ExportError::io("writing", out.join(MANIFEST_FILE)))
        })
    }

    /// Records the part files of one run, which read the log up to `head`.
    pub(crate) fn add_events(&mut self, written: &WrittenEvents, head: Head) {
        for file in &written.files {
            let key = partition_key(&file.event_type, &file.month);
            let partition = self.partitions.entry(key).or_insert_with(|| Partition {
                event_type: file.event_type.clone(),
                month: file.month.clone(),
                rows: 0,
                files: Vec::new(),
            });
            partition.rows += file.entry.rows;
            partition.files.push(file.entry.clone());
        }
        for (event_type, count) in &written.withheld {
            *self.withheld.entry(event_type.clone()).or_default() += count;
        }
        self.events += written.events;
        if head.position.0 > self.last_position {
            self.last_position = head.position.0;
            self.last_hash = head.hash.to_hex();
        }
        self.runs.push(Run {
            exported_at: Utc::now(),
            first_position: written.first_position,
            last_position: self.last_position,
            events: written.events,
            files: written.files.len(),
        });
    }

    /// Bytes of every event part file listed.
    #[must_use]
    pub fn event_bytes(&self) -> u64 {
        self.partitions
            .values()
            .flat_map(|p| p.files.iter())
            .map(|f| f.bytes)
            .sum()
    }

    /// Every file listed, relative to the output directory.
    fn listed(&self) -> std::collections::BTreeSet<String> {
        self.partitions
            .values()
            .flat_map(|p| p.files.iter().map(|f| f.path.clone()))
            .chain(self.read_models.iter().map(|t| t.path.clone()))
            .chain(self.metrics.iter().map(|t| t.path.clone()))
            .collect()
    }
}

/// `event_type=<Type>/month=<YYYY-MM>`.
#[must_use]
pub(crate) fn partition_key(event_type: &str, month: &str) -> String {
    format!("event_type={event_type}/month={month}")
}

/// Creates `dir` and its parents.
pub(crate) fn create_dir(dir: &Path) -> Result<(), ExportError> {
    fs::create_dir_all(dir).map_err(ExportError::io("creating the folder", dir))
}

/// Writes `path` through `fill` under a temporary name, syncs it, renames it into place and
/// syncs its folder; the size written.
pub(crate) fn write_atomic(
    path: &Path,
    fill: impl FnOnce(&mut File) -> Result<(), ExportError>,
) -> Result<(), ExportError> {
    let tmp = temporary(path);
    let mut file = File::create(&tmp).map_err(ExportError::io("creating", &tmp))?;
    fill(&mut file)?;
    file.sync_all().map_err(ExportError::io("syncing", &tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(ExportError::io("renaming into place", path))?;
    sync_parent(path)
}

/// The temporary name of `path` while it is written.
pub(crate) fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(TEMPORARY_SUFFIX);
    path.with_file_name(name)
}

fn sync_parent(path: &Path) -> Result<(), ExportError> {
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(ExportError::io("syncing the folder", dir))
}

/// Removes what an interrupted export left: temporary files, and Parquet files under
/// `events/`, `read_models/` and `metrics/` that `manifest` does not list (all of them when
/// there is no manifest). The number of files removed.
///
/// # Errors
/// [`ExportError::Io`] when a folder cannot be listed or a file removed.
pub(crate) fn remove_orphans(
    out: &Path,
    manifest: Option<&Manifest>,
) -> Result<usize, ExportError> {
    let listed = manifest.map(Manifest::listed).unwrap_or_default();
    let mut removed = 0;
    for top in [EVENTS_DIR, READ_MODELS_DIR, METRICS_DIR] {
        let mut files = Vec::new();
        walk(&out.join(top), &mut files)?;
        for file in files {
            let name = file
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default();
            let relative = relative(out, &file);
            let stale = name.ends_with(TEMPORARY_SUFFIX)
                || (name.ends_with(".parquet") && !listed.contains(&relative));
            if stale {
                fs::remove_file(&file).map_err(ExportError::io("removing", &file))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// `file` relative to `out`, with `/` between components.
pub(crate) fn relative(out: &Path, file: &Path) -> String {
    let inner = file.strip_prefix(out).unwrap_or(file);
    inner
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ExportError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ExportError::io("listing", dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(ExportError::io("listing", dir))?;
        let path = entry.path();
        let kind = entry
            .file_type()
            .map_err(ExportError::io("listing", &path))?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// The bytes of the files under `dir`, recursively.
pub(crate) fn size_on_disk(dir: &Path) -> Result<u64, ExportError> {
    let mut files = Vec::new();
    walk(dir, &mut files)?;
    let mut total = 0;
    for file in files {
        total += fs::metadata(&file)
            .map_err(ExportError::io("reading the size of", &file))?
            .len();
    }
    Ok(total)
}
