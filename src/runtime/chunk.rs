//! `Chunk`: a batch of rows plus the change kind of each row.

use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::error::ArrowError;

/// The change a row carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// A new row.
    Insert,
    /// A row removed.
    Delete,
    /// The old value of an updated row; always directly followed by its `UpdateAfter`.
    UpdateBefore,
    /// The new value of an updated row.
    UpdateAfter,
}

impl Op {
    /// Whether the row adds to the result (insert or new value of an update).
    pub fn is_addition(self) -> bool {
        matches!(self, Op::Insert | Op::UpdateAfter)
    }

    /// 1 for an addition, -1 for a retraction.
    pub fn sign(self) -> i64 {
        if self.is_addition() {
            1
        } else {
            -1
        }
    }

    /// Short name used in sinks and SUBSCRIBE output.
    pub fn name(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Delete => "delete",
            Op::UpdateBefore => "update_before",
            Op::UpdateAfter => "update_after",
        }
    }
}

/// Rows flowing between operators: an Arrow batch and, for updating streams,
/// one [`Op`] per row. `ops == None` means every row is an insert
/// (the append-only fast path carries no per-row vector).
#[derive(Debug, Clone)]
pub struct Chunk {
    pub batch: RecordBatch,
    pub ops: Option<Arc<[Op]>>,
}

impl Chunk {
    /// An append-only chunk.
    pub fn inserts(batch: RecordBatch) -> Self {
        Chunk { batch, ops: None }
    }

    /// A chunk with explicit change kinds, one per row.
    pub fn with_ops(batch: RecordBatch, ops: Vec<Op>) -> Self {
        debug_assert_eq!(batch.num_rows(), ops.len());
        Chunk {
            batch,
            ops: Some(ops.into()),
        }
    }

    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.num_rows() == 0
    }

    /// The change kind of row `i`.
    pub fn op(&self, i: usize) -> Op {
        self.ops.as_ref().map_or(Op::Insert, |ops| ops[i])
    }

    /// Keeps the rows where `mask` is true, with their change kinds.
    pub fn filter(&self, mask: &BooleanArray) -> Result<Chunk, ArrowError> {
        let batch = filter_record_batch(&self.batch, mask)?;
        let ops = self.ops.as_ref().map(|ops| {
            ops.iter()
                .zip(mask.iter())
                .filter(|(_, keep)| keep.unwrap_or(false))
                .map(|(op, _)| *op)
                .collect::<Arc<[Op]>>()
        });
        Ok(Chunk { batch, ops })
    }

    /// The same change kinds over a new batch with as many rows (a projection).
    pub fn with_batch(&self, batch: RecordBatch) -> Chunk {
        debug_assert_eq!(batch.num_rows(), self.batch.num_rows());
        Chunk {
            batch,
            ops: self.ops.clone(),
        }
    }
}
