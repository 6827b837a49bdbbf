//! The output rows of a partition-window aggregate (SESSION, COUNT_WINDOW):
//! group columns (window bounds and partition columns, in the view's
//! order), then the aggregate values.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, TimestampNanosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;

use super::aggregate::column_of;
use crate::plan::WindowBound;
use crate::runtime::chunk::{Chunk, Op};
use crate::runtime::RuntimeError;
use crate::state::RowCodec;

/// One output row: a window of a partition and its aggregate values.
pub struct WindowRow<'a> {
    pub op: Op,
    /// The partition key, row-encoded.
    pub key: &'a [u8],
    /// The bounds: nanoseconds for a time column, else row numbers.
    pub start: i64,
    pub end: i64,
    pub values: &'a [ScalarValue],
}

/// How rows are laid out.
pub struct WindowOutput {
    /// Decodes partition keys (None: no partition columns).
    pub keys: Option<RowCodec>,
    /// Per group column: the bound it holds (None: the next partition column).
    pub bounds: Vec<Option<WindowBound>>,
    pub schema: SchemaRef,
}

impl WindowOutput {
    pub fn chunk(&self, rows: &[WindowRow]) -> Result<Option<Chunk>, RuntimeError> {
        if rows.is_empty() {
            return Ok(None);
        }
        let keys = match &self.keys {
            None => Vec::new(),
            Some(codec) => codec.decode(rows.iter().map(|r| r.key))?.columns().to_vec(),
        };
        let mut keys = keys.into_iter();
        let ngroup = self.bounds.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (c, field) in self.schema.fields().iter().enumerate() {
            let arr: ArrayRef = match self.bounds.get(c) {
                Some(Some(bound)) => {
                    let values = rows.iter().map(|r| match bound {
                        WindowBound::Start => r.start,
                        WindowBound::End => r.end,
                    });
                    match field.data_type() {
                        DataType::Timestamp(_, tz) => Arc::new(
                            TimestampNanosecondArray::from_iter_values(values)
                                .with_timezone_opt(tz.clone()),
                        ),
                        _ => Arc::new(Int64Array::from_iter_values(values)),
                    }
                }
                Some(None) => keys.next().ok_or_else(|| {
                    RuntimeError::Internal("a window's partition column is missing".into())
                })?,
                None => column_of(
                    rows.iter().map(|r| &r.values[c - ngroup]),
                    field.data_type(),
                )?,
            };
            columns.push(if arr.data_type() == field.data_type() {
                arr
            } else {
                cast(&arr, field.data_type())?
            });
        }
        let ops = rows.iter().map(|r| r.op).collect();
        Ok(Some(Chunk::with_ops(
            RecordBatch::try_new(self.schema.clone(), columns)?,
            ops,
        )))
    }
}
