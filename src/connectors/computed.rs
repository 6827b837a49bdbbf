//! Flink's computed columns (`p AS PROCTIME()`, `ts AS TO_TIMESTAMP(s)`): a
//! reader of the stored columns whose batches gain the computed ones, in
//! their declared places, as they are read, so that everything after the
//! reader (the watermark included) sees the stream's whole schema.

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::utils::collect_columns;
use datafusion::physical_expr::PhysicalExpr;

use super::{with_unread_as_null, ConnectorError, Poll, SourceReader};

/// A computed column: its place among all the columns, and its expression
/// over the stored columns.
#[derive(Clone)]
pub struct Computed {
    pub position: usize,
    pub expr: Arc<dyn PhysicalExpr>,
}

impl std::fmt::Debug for Computed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} at {}", self.expr, self.position)
    }
}

pub struct ComputedReader {
    inner: Box<dyn SourceReader>,
    computed: Arc<[Computed]>,
    /// The stream's whole schema.
    schema: SchemaRef,
    /// Per column of it: whether the job reads it (empty: all).
    read: Vec<bool>,
}

impl ComputedReader {
    pub fn new(inner: Box<dyn SourceReader>, computed: Arc<[Computed]>, schema: SchemaRef) -> Self {
        ComputedReader {
            inner,
            computed,
            schema,
            read: Vec::new(),
        }
    }

    fn complete(&self, stored: RecordBatch) -> Result<RecordBatch, ConnectorError> {
        let schema = with_unread_as_null(&self.schema, &self.read);
        let mut stored_columns = stored.columns().iter();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
        for (i, field) in schema.fields().iter().enumerate() {
            match self.computed.iter().find(|c| c.position == i) {
                Some(_) if field.data_type().is_null() => {
                    columns.push(new_null_array(field.data_type(), stored.num_rows()))
                }
                Some(c) => {
                    let v = c
                        .expr
                        .evaluate(&stored)
                        .and_then(|v| v.into_array(stored.num_rows()))
                        .map_err(|e| ConnectorError::Computed(e.to_string()))?;
                    columns.push(match v.data_type() == field.data_type() {
                        true => v,
                        false => cast(&v, field.data_type())?,
                    });
                }
                None => {
                    let c = stored_columns.next().cloned().ok_or_else(|| {
                        ConnectorError::Computed("a stored column is missing".into())
                    })?;
                    // Read only to compute another: Null, as the job does not read it.
                    columns.push(match field.data_type().is_null() {
                        true => new_null_array(field.data_type(), c.len()),
                        false => c,
                    });
                }
            }
        }
        Ok(RecordBatch::try_new(schema, columns)?)
    }
}

impl SourceReader for ComputedReader {
    fn poll(&mut self) -> Result<Poll, ConnectorError> {
        Ok(match self.inner.poll()? {
            Poll::Batch(b) => Poll::Batch(self.complete(b)?),
            other => other,
        })
    }

    fn offset(&self) -> serde_json::Value {
        self.inner.offset()
    }

    fn seek(&mut self, offset: &serde_json::Value) -> Result<(), ConnectorError> {
        self.inner.seek(offset)
    }

    fn always_available(&self) -> bool {
        self.inner.always_available()
    }

    fn set_decode_threads(&mut self, threads: usize) {
        self.inner.set_decode_threads(threads)
    }

    /// The stored columns read: those read themselves, and those a read
    /// computed column is computed from.
    fn set_read_columns(&mut self, read: &[bool]) {
        self.read = read.to_vec();
        if read.len() != self.schema.fields().len() {
            return;
        }
        let stored: Vec<usize> = (0..read.len())
            .filter(|i| !self.computed.iter().any(|c| c.position == *i))
            .collect();
        let mut stored_read: Vec<bool> = stored.iter().map(|&i| read[i]).collect();
        for c in self.computed.iter().filter(|c| read[c.position]) {
            for col in collect_columns(&c.expr) {
                if let Some(r) = stored_read.get_mut(col.index()) {
                    *r = true;
                }
            }
        }
        self.inner.set_read_columns(&stored_read);
    }
}
