//! Projection: evaluates DataFusion physical expressions over each chunk.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use crate::runtime::chunk::Chunk;
use crate::runtime::message::Message;
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;

pub struct ProjectOp {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectOp {
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        ProjectOp { exprs, schema }
    }
}

/// Evaluates expressions to full-length arrays.
pub fn evaluate(
    exprs: &[Arc<dyn PhysicalExpr>],
    batch: &RecordBatch,
) -> Result<Vec<datafusion::arrow::array::ArrayRef>, RuntimeError> {
    exprs
        .iter()
        .map(|e| {
            e.evaluate(batch)
                .and_then(|v| v.into_array(batch.num_rows()))
                .map_err(RuntimeError::from)
        })
        .collect()
}

impl Operator for ProjectOp {
    fn name(&self) -> &'static str {
        "Project"
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let columns = evaluate(&self.exprs, &chunk.batch)?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        out.push(Message::Data(chunk.with_batch(batch)));
        Ok(())
    }
}
