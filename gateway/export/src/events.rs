//! The events: the log read page by page after the last exported position, each event decoded
//! through the domain (old versions upcast), its current payload laid out by its type's plan
//! and buffered in its partition (event type, month of `occurred_at`), a partition written as
//! a part file once it holds [`PARTITION_ROWS_MAX`] rows, the largest one once all partitions
//! together hold [`BUFFERED_ROWS_MAX`], and every partition at the end.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Date32Builder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMicrosecondBuilder, UInt16Builder, UInt64Builder,
};
use arrow_array::ArrayRef;
use arrow_schema::{DataType, Field, TimeUnit};
use crm_domain::access::ACCESS_EVENT_TYPES;
use crm_domain::attributes::{self, ATTRIBUTES_SET};
use crm_domain::definitions::DefinitionEvent;
use crm_domain::{DomainEvent, PERSONAL_DATA_FIELD};
use crm_eventstore::limits::READ_PAGE_MAX;
use crm_eventstore::{AnyStore, EventStore, Head, Position, RecordedEvent};
use serde_json::Value;

use crate::columns::{Cell, ColumnType, FieldError, TypePlan};
use crate::error::ExportError;
use crate::manifest::{partition_key, relative, FileEntry};
use crate::tables::safe_name;
use crate::{parquet_file, Progress, BUFFERED_ROWS_MAX, EVENTS_DIR, PARTITION_ROWS_MAX};

/// The envelope's columns, first in every event file, in this order.
pub const COMMON_COLUMNS: &[&str] = &[
    "position",
    "stream_id",
    "stream_category",
    "stream_version",
    "event_id",
    "event_type",
    "schema_version",
    "occurred_at",
    "recorded_at",
    "actor",
    "causation_id",
    "correlation_id",
    "hash",
];

/// The one payload column of an event type this build has no schema of: its stored payload
/// as JSON text (a top-level `personal` field removed).
pub const UNTYPED_PAYLOAD_COLUMN: &str = "payload_json";

/// Rows a new partition's columns reserve room for (they grow as rows come): a log has
/// hundreds of partitions, most of them small.
const ROWS_RESERVED: usize = 64;
/// Bytes per row a new text column reserves.
const TEXT_BYTES_RESERVED: usize = 16;
/// Digits of a position in a part file's name.
const POSITION_DIGITS: usize = 20;

/// One part file written.
#[derive(Debug, Clone)]
pub(crate) struct WrittenFile {
    pub event_type: String,
    pub month: String,
    pub entry: FileEntry,
}

/// What the event phase wrote.
#[derive(Debug, Clone, Default)]
pub(crate) struct WrittenEvents {
    pub files: Vec<WrittenFile>,
    pub events: u64,
    pub withheld: BTreeMap<String, u64>,
    pub first_position: Option<u64>,
}

impl WrittenEvents {
    pub(crate) fn withheld_total(&self) -> u64 {
        self.withheld.values().sum()
    }
}

/// An event's payload as the export sees it.
enum Payload {
    /// The current version's JSON, to lay out by the type's plan.
    Typed(Value),
    /// A type this build has no schema of: the stored JSON, personal field removed.
    Untyped(Value),
    /// Not exported (the access-token register).
    Withheld,
}

/// Exports the events after `after` up to `head` into `out/events`.
pub(crate) async fn export_events(
    store: &AnyStore,
    out: &Path,
    plans: &BTreeMap<String, TypePlan>,
    after: Position,
    head: Head,
    progress: &mut (impl FnMut(Progress) + Send),
) -> Result<WrittenEvents, ExportError> {
    let mut buffers = Buffers {
        out,
        partitions: HashMap::new(),
        buffered: 0,
        written: WrittenEvents::default(),
    };
    let mut next = Position(after.0.saturating_add(1));
    while next <= head.position {
        let page = store
            .read_all(next, READ_PAGE_MAX)
            .await
            .map_err(|source| ExportError::Read {
                position: next,
                source,
            })?;
        let Some(last) = page.last() else { break };
        next = Position(last.position.0.saturating_add(1));
        for event in page.iter().filter(|e| e.position <= head.position) {
            buffers.add(event, plans)?;
        }
        progress(Progress::Events {
            position: last.position.0.min(head.position.0),
            head: head.position.0,
        });
    }
    buffers.flush_all()?;
    let mut written = buffers.written;
    written.files.sort_by_key(|f| f.entry.first_position);
    Ok(written)
}

fn payload(event: &RecordedEvent) -> Result<Payload, ExportError> {
    let decode_error = |reason: String| ExportError::Decode {
        position: event.position.0,
        event_type: event.event_type.clone(),
        reason,
    };
    let json = |bytes: Vec<u8>| {
        serde_json::from_slice::<Value>(&bytes).map_err(|e| decode_error(e.to_string()))
    };
    let (event_type, version) = (event.event_type.as_str(), event.schema_version);
    if ACCESS_EVENT_TYPES.iter().any(|(t, _)| *t == event_type) {
        return Ok(Payload::Withheld);
    }
    if DomainEvent::current_schema_version(event_type).is_some() {
        let decoded = DomainEvent::from_payload(event_type, version, &event.payload)
            .map_err(|e| decode_error(e.to_string()))?;
        let bytes = decoded
            .to_payload()
            .map_err(|e| decode_error(e.to_string()))?;
        return json(bytes).map(Payload::Typed);
    }
    if event_type == ATTRIBUTES_SET {
        let decoded =
            attributes::decode(version, &event.payload).map_err(|e| decode_error(e.to_string()))?;
        return serde_json::to_value(decoded)
            .map(Payload::Typed)
            .map_err(|e| decode_error(e.to_string()));
    }
    if DefinitionEvent::current_schema_version(event_type).is_some() {
        let decoded = DefinitionEvent::from_payload(event_type, version, &event.payload)
            .map_err(|e| decode_error(e.to_string()))?;
        let bytes = decoded
            .to_payload()
            .map_err(|e| decode_error(e.to_string()))?;
        return json(bytes).map(Payload::Typed);
    }
    let mut stored = json(event.payload.clone())?;
    if let Value::Object(fields) = &mut stored {
        fields.remove(PERSONAL_DATA_FIELD);
    }
    Ok(Payload::Untyped(stored))
}

fn field_error(event: &RecordedEvent, error: FieldError) -> ExportError {
    match error {
        FieldError::Unknown(field) => ExportError::UnknownField {
            position: event.position.0,
            event_type: event.event_type.clone(),
            field,
        },
        FieldError::BadValue {
            field,
            expected,
            found,
        } => ExportError::BadValue {
            position: event.position.0,
            event_type: event.event_type.clone(),
            field,
            expected,
            found,
        },
    }
}

struct Buffers<'a> {
    out: &'a Path,
    partitions: HashMap<(String, String), Partition>,
    buffered: usize,
    written: WrittenEvents,
}

impl Buffers<'_> {
    fn add(
        &mut self,
        event: &RecordedEvent,
        plans: &BTreeMap<String, TypePlan>,
    ) -> Result<(), ExportError> {
        let (cells, plan) = match payload(event)? {
            Payload::Withheld => {
                *self
                    .written
                    .withheld
                    .entry(event.event_type.clone())
                    .or_default() += 1;
                return Ok(());
            }
            Payload::Typed(value) => {
                let Some(plan) = plans.get(&event.event_type) else {
                    return Err(ExportError::Plan {
                        event_type: event.event_type.clone(),
                        reason: "the domain decodes it but the export has no plan of it".to_owned(),
                    });
                };
                let cells = plan.cells(&value).map_err(|e| field_error(event, e))?;
                (cells, Some(plan))
            }
            Payload::Untyped(value) => (vec![Cell::Text(value.to_string())], None),
        };
        let key = (
            event.event_type.clone(),
            event.occurred_at.format("%Y-%m").to_string(),
        );
        let partition = self.partitions.entry(key.clone()).or_insert_with(|| {
            Partition::new(plan.map_or_else(
                || vec![(UNTYPED_PAYLOAD_COLUMN.to_owned(), ColumnType::Json)],
                |p| p.columns.iter().map(|c| (c.name.clone(), c.ty)).collect(),
            ))
        });
        partition.push(event, cells)?;
        let full = partition.rows >= PARTITION_ROWS_MAX;
        self.buffered += 1;
        self.written.events += 1;
        if self.written.first_position.is_none() {
            self.written.first_position = Some(event.position.0);
        }
        if full {
            self.flush(&key)?;
        }
        if self.buffered >= BUFFERED_ROWS_MAX {
            let largest = self
                .partitions
                .iter()
                .max_by_key(|(_, p)| p.rows)
                .map(|(k, _)| k.clone());
            if let Some(key) = largest {
                self.flush(&key)?;
            }
        }
        Ok(())
    }

    fn flush(&mut self, key: &(String, String)) -> Result<(), ExportError> {
        let Some(partition) = self.partitions.remove(key) else {
            return Ok(());
        };
        let (event_type, month) = key;
        let rows = partition.rows;
        let (first, last) = (partition.first, partition.last);
        let dir = self
            .out
            .join(EVENTS_DIR)
            .join(path_value("event_type", event_type))
            .join(path_value("month", month));
        let path = dir.join(format!(
            "part-{first:0width$}-{last:0width$}.parquet",
            width = POSITION_DIGITS
        ));
        let (fields, arrays) = partition.finish()?;
        let bytes = parquet_file::write(&path, fields, arrays)?;
        self.buffered = self.buffered.saturating_sub(rows);
        self.written.files.push(WrittenFile {
            event_type: event_type.clone(),
            month: month.clone(),
            entry: FileEntry {
                path: relative(self.out, &path),
                first_position: first,
                last_position: last,
                rows: u64::try_from(rows).unwrap_or(u64::MAX),
                bytes,
            },
        });
        tracing::debug!(partition = %partition_key(event_type, month), rows, bytes, "part file written");
        Ok(())
    }

    fn flush_all(&mut self) -> Result<(), ExportError> {
        let mut keys: Vec<(String, String)> = self.partitions.keys().cloned().collect();
        keys.sort();
        for key in keys {
            self.flush(&key)?;
        }
        Ok(())
    }
}

/// `name=value` for a folder name (see [`safe_name`]).
fn path_value(name: &str, value: &str) -> String {
    format!("{name}={}", safe_name(value))
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn timestamp_builder() -> TimestampMicrosecondBuilder {
    TimestampMicrosecondBuilder::with_capacity(ROWS_RESERVED).with_timezone("UTC")
}

fn text_builder() -> StringBuilder {
    StringBuilder::with_capacity(ROWS_RESERVED, ROWS_RESERVED * TEXT_BYTES_RESERVED)
}

/// The rows of one partition being gathered, column by column.
struct Partition {
    rows: usize,
    first: u64,
    last: u64,
    position: UInt64Builder,
    stream_id: StringBuilder,
    stream_category: StringBuilder,
    stream_version: UInt64Builder,
    event_id: StringBuilder,
    event_type: StringBuilder,
    schema_version: UInt16Builder,
    occurred_at: TimestampMicrosecondBuilder,
    recorded_at: TimestampMicrosecondBuilder,
    actor: StringBuilder,
    causation_id: StringBuilder,
    correlation_id: StringBuilder,
    hash: StringBuilder,
    payload: Vec<(String, ColumnBuilder)>,
}

impl Partition {
    fn new(columns: Vec<(String, ColumnType)>) -> Partition {
        Partition {
            rows: 0,
            first: 0,
            last: 0,
            position: UInt64Builder::with_capacity(ROWS_RESERVED),
            stream_id: text_builder(),
            stream_category: text_builder(),
            stream_version: UInt64Builder::with_capacity(ROWS_RESERVED),
            event_id: text_builder(),
            event_type: text_builder(),
            schema_version: UInt16Builder::with_capacity(ROWS_RESERVED),
            occurred_at: timestamp_builder(),
            recorded_at: timestamp_builder(),
            actor: text_builder(),
            causation_id: text_builder(),
            correlation_id: text_builder(),
            hash: text_builder(),
            payload: columns
                .into_iter()
                .map(|(name, ty)| (name, ColumnBuilder::new(ty)))
                .collect(),
        }
    }

    fn push(&mut self, event: &RecordedEvent, cells: Vec<Cell>) -> Result<(), ExportError> {
        if cells.len() != self.payload.len() {
            return Err(ExportError::Plan {
                event_type: event.event_type.clone(),
                reason: format!(
                    "{} cells for {} columns at position {}",
                    cells.len(),
                    self.payload.len(),
                    event.position.0
                ),
            });
        }
        for ((name, builder), cell) in self.payload.iter_mut().zip(cells) {
            if !builder.append(cell) {
                return Err(ExportError::Plan {
                    event_type: event.event_type.clone(),
                    reason: format!("a value of another type than column `{name}`'s"),
                });
            }
        }
        if self.rows == 0 {
            self.first = event.position.0;
        }
        self.last = event.position.0;
        self.rows += 1;
        self.position.append_value(event.position.0);
        self.stream_id.append_value(event.stream_id.as_str());
        self.stream_category
            .append_value(event.stream_id.category());
        self.stream_version.append_value(event.stream_version.0);
        self.event_id.append_value(event.event_id.0.to_string());
        self.event_type.append_value(&event.event_type);
        self.schema_version.append_value(event.schema_version);
        self.occurred_at
            .append_value(event.occurred_at.timestamp_micros());
        self.recorded_at
            .append_value(event.recorded_at.timestamp_micros());
        self.actor.append_value(&event.actor);
        self.causation_id
            .append_option(event.causation_id.map(|u| u.to_string()));
        self.correlation_id
            .append_option(event.correlation_id.map(|u| u.to_string()));
        self.hash.append_value(event.hash.to_hex());
        Ok(())
    }

    fn finish(mut self) -> Result<(Vec<Field>, Vec<ArrayRef>), ExportError> {
        let mut fields = vec![
            Field::new("position", DataType::UInt64, false),
            Field::new("stream_id", DataType::Utf8, false),
            Field::new("stream_category", DataType::Utf8, false),
            Field::new("stream_version", DataType::UInt64, false),
            Field::new("event_id", DataType::Utf8, false),
            Field::new("event_type", DataType::Utf8, false),
            Field::new("schema_version", DataType::UInt16, false),
            Field::new("occurred_at", timestamp(), false),
            Field::new("recorded_at", timestamp(), false),
            Field::new("actor", DataType::Utf8, false),
            Field::new("causation_id", DataType::Utf8, true),
            Field::new("correlation_id", DataType::Utf8, true),
            Field::new("hash", DataType::Utf8, false),
        ];
        let mut arrays: Vec<ArrayRef> = vec![
            Arc::new(self.position.finish()),
            Arc::new(self.stream_id.finish()),
            Arc::new(self.stream_category.finish()),
            Arc::new(self.stream_version.finish()),
            Arc::new(self.event_id.finish()),
            Arc::new(self.event_type.finish()),
            Arc::new(self.schema_version.finish()),
            Arc::new(self.occurred_at.finish()),
            Arc::new(self.recorded_at.finish()),
            Arc::new(self.actor.finish()),
            Arc::new(self.causation_id.finish()),
            Arc::new(self.correlation_id.finish()),
            Arc::new(self.hash.finish()),
        ];
        for (name, builder) in self.payload {
            fields.push(Field::new(name, builder.ty().arrow(), true));
            arrays.push(builder.finish());
        }
        Ok((fields, arrays))
    }
}

/// A payload column being gathered.
pub(crate) enum ColumnBuilder {
    Text(ColumnType, StringBuilder),
    Int(Int64Builder),
    Float(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMicrosecondBuilder),
    Date(Date32Builder),
}

impl ColumnBuilder {
    pub(crate) fn new(ty: ColumnType) -> ColumnBuilder {
        match ty {
            ColumnType::Utf8 | ColumnType::Json => ColumnBuilder::Text(ty, text_builder()),
            ColumnType::Int64 => ColumnBuilder::Int(Int64Builder::with_capacity(ROWS_RESERVED)),
            ColumnType::Float64 => {
                ColumnBuilder::Float(Float64Builder::with_capacity(ROWS_RESERVED))
            }
            ColumnType::Boolean => {
                ColumnBuilder::Bool(BooleanBuilder::with_capacity(ROWS_RESERVED))
            }
            ColumnType::Timestamp => ColumnBuilder::Timestamp(timestamp_builder()),
            ColumnType::Date => ColumnBuilder::Date(Date32Builder::with_capacity(ROWS_RESERVED)),
        }
    }

    pub(crate) fn ty(&self) -> ColumnType {
        match self {
            ColumnBuilder::Text(ty, _) => *ty,
            ColumnBuilder::Int(_) => ColumnType::Int64,
            ColumnBuilder::Float(_) => ColumnType::Float64,
            ColumnBuilder::Bool(_) => ColumnType::Boolean,
            ColumnBuilder::Timestamp(_) => ColumnType::Timestamp,
            ColumnBuilder::Date(_) => ColumnType::Date,
        }
    }

    /// Appends `cell`; false when it is of another type than the column (nothing appended).
    pub(crate) fn append(&mut self, cell: Cell) -> bool {
        match (self, cell) {
            (ColumnBuilder::Text(_, b), Cell::Null) => b.append_null(),
            (ColumnBuilder::Int(b), Cell::Null) => b.append_null(),
            (ColumnBuilder::Float(b), Cell::Null) => b.append_null(),
            (ColumnBuilder::Bool(b), Cell::Null) => b.append_null(),
            (ColumnBuilder::Timestamp(b), Cell::Null) => b.append_null(),
            (ColumnBuilder::Date(b), Cell::Null) => b.append_null(),
            (ColumnBuilder::Text(_, b), Cell::Text(s)) => b.append_value(s),
            (ColumnBuilder::Int(b), Cell::Int(v)) => b.append_value(v),
            (ColumnBuilder::Float(b), Cell::Float(v)) => b.append_value(v),
            (ColumnBuilder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (ColumnBuilder::Timestamp(b), Cell::Micros(v)) => b.append_value(v),
            (ColumnBuilder::Date(b), Cell::Days(v)) => b.append_value(v),
            _ => return false,
        }
        true
    }

    pub(crate) fn finish(mut self) -> ArrayRef {
        match &mut self {
            ColumnBuilder::Text(_, b) => Arc::new(b.finish()),
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::Float(b) => Arc::new(b.finish()),
            ColumnBuilder::Bool(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b) => Arc::new(b.finish()),
            ColumnBuilder::Date(b) => Arc::new(b.finish()),
        }
    }
}
