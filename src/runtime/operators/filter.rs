//! Filter: keeps the rows where a DataFusion physical predicate is true.

use std::sync::Arc;

use datafusion::arrow::array::{AsArray, BooleanArray, RecordBatch};
use datafusion::physical_expr::PhysicalExpr;

use crate::runtime::chunk::Chunk;
use crate::runtime::message::Message;
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;

pub struct FilterOp {
    predicate: Arc<dyn PhysicalExpr>,
}

impl FilterOp {
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        FilterOp { predicate }
    }

    /// The predicate over each row of `batch` (NULL where it is unknown).
    pub fn mask(&self, batch: &RecordBatch) -> Result<BooleanArray, RuntimeError> {
        let mask = self
            .predicate
            .evaluate(batch)?
            .into_array(batch.num_rows())?;
        Ok(mask.as_boolean().clone())
    }
}

impl Operator for FilterOp {
    fn name(&self) -> &'static str {
        "Filter"
    }

    fn is_pure(&self) -> bool {
        super::project::deterministic(&self.predicate)
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let kept = chunk.filter(&self.mask(&chunk.batch)?)?;
        if !kept.is_empty() {
            out.push(Message::Data(kept));
        }
        Ok(())
    }
}
