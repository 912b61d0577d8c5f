//! `crm-audit`: audit bundles, the evidence for one metric figure in one file that an
//! auditor checks on another machine, without the log and without a server.
//!
//! A bundle ([`write_bundle`]) is a gzip stream of three parts: the line
//! [`FORMAT_LINE`]; one line of JSON, the [`Manifest`] (the question, the definition's text
//! and spec hash, the answer, the explanation with every row counted and left out and its
//! rule, the signed checkpoint and the key that signed it); then the log's records from
//! position 1 to the checkpoint's position, each as the frame the store keeps (format byte,
//! length, body, previous hash, chain hash, checksum: `crm_eventstore::codec`).
//!
//! [`check_bundle`] verifies, in order: the checkpoint's signature by the key given (or,
//! said so in the report, the key the bundle names); every frame's checksum and chain hash,
//! that positions run densely from 1 and each record links to the one before, and that the
//! last record is the checkpoint's head; that this build reads the definition as the bundle
//! states it (text and spec hash); and that re-evaluating the question over the records
//! gives the bundle's answer and its explanation row for row. The first fault is the error,
//! named by position, row or figure.
//!
//! The records carry personal fields as the log holds them: sealed (ciphertext), never
//! plaintext; the engine reads them as absent, on the server as in the check.
//!
//! **Architecture Invariant:** a bundle is checked with nothing but its bytes and a public
//! key; a bundle whose records, rows or figures were changed, dropped or reordered, or that
//! another key signed, fails with the reason.

pub mod store;

use std::io::{BufRead, BufReader, Read, Write};

use chrono::{DateTime, Utc};
use crm_app::checkpoint::{
    Checkpoint, CheckpointError, CheckpointSigner, Checkpoints, SignedCheckpoint, VerifierKey,
};
use crm_eventstore::codec::{self, FRAME_OVERHEAD_BYTES};
use crm_eventstore::limits::{EVENT_SIZE_MAX_BYTES, READ_PAGE_MAX};
use crm_eventstore::{ChainHash, EventStore, Position, ReadError, RecordedEvent};
use crm_metrics::{
    evaluate_in, explain_in, load_view, ExplainSelect, MetricError, Query, Registry,
};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use store::BundleStore;

/// The first line of every bundle.
pub const FORMAT_LINE: &str = "crm-audit-bundle 1";
/// Longest manifest line read (the explanation's rows are most of it).
pub const MANIFEST_SIZE_MAX_BYTES: u64 = 512 * 1024 * 1024;
/// Most explain rows a bundle carries.
pub const ROWS_MAX: usize = 2_000_000;
/// Longest frame a record can have.
const FRAME_SIZE_MAX_BYTES: usize = EVENT_SIZE_MAX_BYTES + 4 * 1024 + FRAME_OVERHEAD_BYTES;

/// Why a bundle could not be written or does not check.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("not an audit bundle: {0}")]
    NotABundle(String),
    #[error("the bundle's manifest is not valid: {0}")]
    Manifest(#[from] serde_json::Error),
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    #[error("record at position {position}: {reason}; the bundle was altered or damaged")]
    Record { position: u64, reason: String },
    #[error("the records end at position {found}, the checkpoint covers {expected}: records were dropped or added")]
    Count { expected: u64, found: u64 },
    #[error("the chain ends at hash {found} at position {position}, the checkpoint signed {signed}: the records are not the ones the server signed")]
    Head {
        position: u64,
        found: String,
        signed: String,
    },
    #[error("the definition: {0}")]
    Definition(String),
    #[error("the answer: {0}; re-evaluating the question over the bundle's records gives another figure")]
    Answer(String),
    #[error("the explanation: {0}; the rows do not follow from the bundle's records")]
    Rows(String),
    #[error("{0}")]
    Metric(#[from] MetricError),
    #[error("{0}")]
    Read(#[from] ReadError),
}

/// The question a bundle answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub metric: String,
    /// The version asked for (`None`: the default at the time).
    pub version: Option<u32>,
    pub query: Query,
}

/// The definition the figure was computed with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    pub id: String,
    pub version: u32,
    pub spec_hash: String,
    /// The TOML text.
    pub text: String,
}

/// The records a bundle carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Records {
    /// Always 1: the chain is checked from its start.
    pub first: u64,
    pub last: u64,
}

/// Everything of a bundle but its records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub created_at: DateTime<Utc>,
    /// Who made it.
    pub created_by: String,
    pub question: Question,
    pub definition: Definition,
    /// The engine's answer (`crm metric ID --json`).
    pub answer: Value,
    /// The engine's explanation with every row (`crm explain ID --json`, all pages).
    pub explanation: Value,
    /// The signed checkpoint of the records' last position.
    pub checkpoint: String,
    /// The key that signed it, as the bundle names it; check with the published key.
    pub key: String,
    pub records: Records,
}

/// What [`write_bundle`] wrote.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Written {
    pub records: u64,
    pub rows: usize,
    pub figures: Vec<String>,
    pub checkpoint: Checkpoint,
    pub checkpoint_new: bool,
}

/// What [`check_bundle`] found (all of it holds, or it returned an error).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    pub metric: String,
    pub version: u32,
    pub spec_hash: String,
    /// The figures as displayed, `label: value`.
    pub figures: Vec<String>,
    pub rows: usize,
    pub rows_included: usize,
    pub rows_excluded: usize,
    pub records: u64,
    pub checkpoint: Checkpoint,
    pub key: String,
    /// False when no key was given and the bundle's own key was used: compare it with the
    /// key the server publishes.
    pub key_given: bool,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// The answer and the explanation (all rows, merged into one page) of `question` over
/// `store`, with the definition used.
async fn answer<S: EventStore>(
    store: &S,
    question: &Question,
) -> Result<(Definition, Value, Value), AuditError> {
    let registry = Registry::load(store).await?;
    let m = registry.get(&question.metric, question.version)?;
    let view = load_view(store, &registry, std::slice::from_ref(&m), &question.query).await?;
    let evaluation = evaluate_in(&view, &registry, &m, &question.query)?;
    let mut select = ExplainSelect::default();
    let first = explain_in(&view, &registry, &m, &question.query, &select)?;
    let mut rows: Vec<Value> = Vec::new();
    let mut page = first.clone();
    loop {
        if rows.len() + page.rows.len() > ROWS_MAX {
            return Err(AuditError::Rows(format!(
                "more than {ROWS_MAX} rows: narrow the question (a period, a filter)"
            )));
        }
        for row in &page.rows {
            rows.push(serde_json::to_value(row)?);
        }
        let Some(next) = page.next_offset else { break };
        select.offset = next;
        page = explain_in(&view, &registry, &m, &question.query, &select)?;
    }
    let mut explanation = serde_json::to_value(&first)?;
    if let Some(object) = explanation.as_object_mut() {
        object.insert("rows".into(), Value::Array(rows));
        object.insert("next_offset".into(), Value::Null);
    }
    let definition = Definition {
        id: m.definition.id.clone(),
        version: m.definition.version,
        spec_hash: m.spec_hash.clone(),
        text: m.text.clone(),
    };
    Ok((definition, serde_json::to_value(&evaluation)?, explanation))
}

fn figures(answer: &Value) -> Vec<String> {
    answer["figures"]
        .as_array()
        .map(|figures| {
            figures
                .iter()
                .map(|f| {
                    let label = f["period"]["label"].as_str().unwrap_or_default();
                    let dims = f["dims"]
                        .as_object()
                        .filter(|d| !d.is_empty())
                        .map(|d| format!(" {}", Value::Object(d.clone())))
                        .unwrap_or_default();
                    format!(
                        "{label}{dims}: {}",
                        f["display"].as_str().unwrap_or_default()
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes the bundle of `question` over `store` to `out`: answers it, signs the log's head
/// with `signer` (kept in `checkpoints`, or the checkpoint kept for it) and writes every
/// record up to it.
///
/// # Errors
/// [`AuditError`] when the question cannot be answered, the head cannot be signed, or a
/// record cannot be read or written.
pub async fn write_bundle<S: EventStore>(
    store: &S,
    question: Question,
    created_by: &str,
    checkpoints: &Checkpoints,
    signer: &CheckpointSigner,
    out: impl Write,
) -> Result<Written, AuditError> {
    let head = store.head();
    let (definition, answer, explanation) = answer(store, &question).await?;
    if store.head() != head {
        return Err(AuditError::NotABundle(
            "the log moved while the question was answered; run it again (or bundle from a copy of the log)".into(),
        ));
    }
    let signed = checkpoints.sign_head(head, signer)?;
    let rows = explanation["rows"].as_array().map_or(0, Vec::len);
    let manifest = Manifest {
        created_at: Utc::now(),
        created_by: created_by.to_owned(),
        question,
        definition,
        answer,
        explanation,
        checkpoint: signed.checkpoint.note.clone(),
        key: signer.verifier().to_string(),
        records: Records {
            first: 1,
            last: head.position.0,
        },
    };
    let mut gz = GzEncoder::new(out, flate2::Compression::default());
    writeln!(gz, "{FORMAT_LINE}")?;
    serde_json::to_writer(&mut gz, &manifest)?;
    writeln!(gz)?;
    let mut next = Position::FIRST;
    while next <= head.position {
        let page = store.read_all(next, READ_PAGE_MAX).await?;
        let Some(last) = page.last().map(|r| r.position) else {
            break;
        };
        for record in page.iter().filter(|r| r.position <= head.position) {
            let frame = codec::encode_recorded(record).map_err(|e| AuditError::Record {
                position: record.position.0,
                reason: e.to_string(),
            })?;
            gz.write_all(&frame)?;
        }
        next = Position(last.0 + 1);
    }
    gz.finish()?.flush()?;
    Ok(Written {
        records: head.position.0,
        rows,
        figures: figures(&manifest.answer),
        checkpoint: signed.checkpoint.checkpoint,
        checkpoint_new: signed.new,
    })
}

/// Reads one `\n`-terminated line of at most `max` bytes.
fn read_line(reader: &mut impl BufRead, max: u64, what: &str) -> Result<String, AuditError> {
    let mut line = Vec::new();
    reader.take(max + 1).read_until(b'\n', &mut line)?;
    if line.last() != Some(&b'\n') {
        return Err(AuditError::NotABundle(format!(
            "{what} is missing or longer than {max} bytes"
        )));
    }
    line.pop();
    String::from_utf8(line).map_err(|_| AuditError::NotABundle(format!("{what} is not UTF-8")))
}

/// Reads the next frame; `None` at the end of the bundle.
fn read_frame(reader: &mut impl Read, position: u64) -> Result<Option<Vec<u8>>, AuditError> {
    let mut header = [0u8; 5];
    let mut got = 0;
    while got < header.len() {
        match reader.read(&mut header[got..])? {
            0 if got == 0 => return Ok(None),
            0 => {
                return Err(AuditError::Record {
                    position,
                    reason: "the bundle ends inside its frame".into(),
                })
            }
            n => got += n,
        }
    }
    let len = codec::frame_len(&header)
        .filter(|len| *len <= FRAME_SIZE_MAX_BYTES && *len >= header.len())
        .ok_or_else(|| AuditError::Record {
            position,
            reason: "its frame header states a length no record can have".into(),
        })?;
    let mut frame = vec![0u8; len];
    frame[..header.len()].copy_from_slice(&header);
    reader
        .read_exact(&mut frame[header.len()..])
        .map_err(|_| AuditError::Record {
            position,
            reason: "the bundle ends inside its frame".into(),
        })?;
    Ok(Some(frame))
}

/// Checks a bundle read from `input` with `key` (or the key the bundle names); see the
/// crate's notes for what is checked.
///
/// # Errors
/// The first fault found, as an [`AuditError`] naming where.
pub async fn check_bundle(
    input: impl Read,
    key: Option<&VerifierKey>,
) -> Result<CheckReport, AuditError> {
    let mut reader = BufReader::new(GzDecoder::new(input));
    let format = read_line(&mut reader, 64, "the format line")?;
    if format != FORMAT_LINE {
        return Err(AuditError::NotABundle(format!(
            "it starts with {format:?}, a bundle with {FORMAT_LINE:?}"
        )));
    }
    let manifest: Manifest = serde_json::from_str(&read_line(
        &mut reader,
        MANIFEST_SIZE_MAX_BYTES,
        "the manifest",
    )?)?;
    let named: VerifierKey = manifest.key.parse()?;
    let key_given = key.is_some();
    let key = key.unwrap_or(&named);
    let checkpoint = SignedCheckpoint::verify(&manifest.checkpoint, key)?.checkpoint;
    let signed = checkpoint.head()?;

    let mut records: Vec<RecordedEvent> = Vec::new();
    let mut prev = ChainHash::GENESIS;
    let mut position = 1u64;
    while let Some(frame) = read_frame(&mut reader, position)? {
        if position > signed.position.0 {
            return Err(AuditError::Count {
                expected: signed.position.0,
                found: position,
            });
        }
        let record = codec::decode(&frame, Some(Position(position)), true).map_err(|e| {
            AuditError::Record {
                position,
                reason: e.to_string(),
            }
        })?;
        if record.prev_hash != prev {
            return Err(AuditError::Record {
                position,
                reason:
                    "it does not link to the record before it (records dropped, added or reordered)"
                        .into(),
            });
        }
        prev = record.hash;
        records.push(record);
        position += 1;
    }
    let found = u64::try_from(records.len()).unwrap_or(u64::MAX);
    if found != signed.position.0 {
        return Err(AuditError::Count {
            expected: signed.position.0,
            found,
        });
    }
    if prev != signed.hash {
        return Err(AuditError::Head {
            position: found,
            found: prev.to_hex(),
            signed: signed.hash.to_hex(),
        });
    }

    let store = BundleStore::new(records);
    let (definition, answer, explanation) = answer(&store, &manifest.question).await?;
    if definition != manifest.definition {
        return Err(AuditError::Definition(format!(
            "the bundle states {} v{} with spec hash {}, the records and this build give spec hash {}; check with the build of crm that made the bundle, or the definition text was altered",
            manifest.definition.id,
            manifest.definition.version,
            manifest.definition.spec_hash,
            definition.spec_hash
        )));
    }
    compare_answer(&manifest.answer, &answer)?;
    compare_rows(&manifest.explanation, &explanation)?;
    let rows = explanation["rows"].as_array().cloned().unwrap_or_default();
    let included = rows.iter().filter(|r| r["decision"] == "included").count();
    Ok(CheckReport {
        metric: definition.id,
        version: definition.version,
        spec_hash: definition.spec_hash,
        figures: figures(&answer),
        rows: rows.len(),
        rows_included: included,
        rows_excluded: rows.len() - included,
        records: found,
        checkpoint,
        key: key.to_string(),
        key_given,
        created_by: manifest.created_by,
        created_at: manifest.created_at,
    })
}

fn compare_answer(bundled: &Value, computed: &Value) -> Result<(), AuditError> {
    if bundled == computed {
        return Ok(());
    }
    let (b, c) = (figures(bundled), figures(computed));
    if let Some((i, (x, y))) = b.iter().zip(&c).enumerate().find(|(_, (x, y))| x != y) {
        return Err(AuditError::Answer(format!(
            "figure {} reads {x}, re-evaluation gives {y}",
            i + 1
        )));
    }
    if b.len() != c.len() {
        return Err(AuditError::Answer(format!(
            "the bundle holds {} figures, re-evaluation gives {}",
            b.len(),
            c.len()
        )));
    }
    Err(AuditError::Answer(
        "it differs from re-evaluation in its details (counts, log mark or query)".into(),
    ))
}

fn compare_rows(bundled: &Value, computed: &Value) -> Result<(), AuditError> {
    if bundled == computed {
        return Ok(());
    }
    let empty = Vec::new();
    let b = bundled["rows"].as_array().unwrap_or(&empty);
    let c = computed["rows"].as_array().unwrap_or(&empty);
    if let Some((i, (x, y))) = b.iter().zip(c).enumerate().find(|(_, (x, y))| x != y) {
        return Err(AuditError::Rows(format!(
            "row {} lists position {} ({}, {}), re-evaluation gives position {} ({}, {})",
            i + 1,
            x["position"],
            x["event_type"],
            x["decision"],
            y["position"],
            y["event_type"],
            y["decision"]
        )));
    }
    if b.len() != c.len() {
        return Err(AuditError::Rows(format!(
            "the bundle lists {} rows, re-evaluation gives {}",
            b.len(),
            c.len()
        )));
    }
    Err(AuditError::Rows(
        "its totals or figures differ from re-evaluation".into(),
    ))
}
