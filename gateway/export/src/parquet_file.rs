//! One Parquet file from one Arrow batch: Snappy-compressed, in row groups of at most
//! [`ROW_GROUP_ROWS_MAX`] rows, written atomically (`manifest::write_atomic`).

use std::path::Path;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::error::ExportError;
use crate::manifest::{create_dir, write_atomic};
use crate::ROW_GROUP_ROWS_MAX;

/// Writes `columns` (named by `fields`) to `path`; the file's size.
pub(crate) fn write(
    path: &Path,
    fields: Vec<Field>,
    columns: Vec<ArrayRef>,
) -> Result<u64, ExportError> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(|source| {
        ExportError::Arrow {
            path: path.to_owned(),
            source,
        }
    })?;
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS_MAX))
        .set_created_by(format!("crm export {}", env!("CARGO_PKG_VERSION")))
        .build();
    let parquet_error = |source| ExportError::Parquet {
        path: path.to_owned(),
        source,
    };
    write_atomic(path, |file| {
        let mut writer =
            ArrowWriter::try_new(&mut *file, schema, Some(properties)).map_err(parquet_error)?;
        writer.write(&batch).map_err(parquet_error)?;
        writer.close().map_err(parquet_error)?;
        Ok(())
    })?;
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(ExportError::io("reading the size of", path))
}
