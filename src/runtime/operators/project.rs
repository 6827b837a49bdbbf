//! Projection: evaluates DataFusion physical expressions over each chunk.

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::Volatility;
use datafusion::physical_expr::{PhysicalExpr, ScalarFunctionExpr};

use crate::connectors::with_unread_as_null;
use crate::runtime::chunk::Chunk;
use crate::runtime::message::Message;
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;

pub struct ProjectOp {
    /// None for a column no later operator reads: a column of type Null
    /// stands in its place instead of being computed.
    exprs: Vec<Option<Arc<dyn PhysicalExpr>>>,
    schema: SchemaRef,
}

impl ProjectOp {
    /// Computes the columns flagged in `read` (any other length: all) of
    /// `schema`, one expression each.
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef, read: &[bool]) -> Self {
        let all = read.len() != exprs.len();
        ProjectOp {
            schema: with_unread_as_null(&schema, read),
            exprs: exprs
                .into_iter()
                .enumerate()
                .map(|(i, e)| (all || read[i]).then_some(e))
                .collect(),
        }
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

/// Whether `expr` gives the same value for the same row whenever it is
/// evaluated: no function in it is volatile or merely stable (`random()`,
/// `now()`).
pub fn deterministic(expr: &Arc<dyn PhysicalExpr>) -> bool {
    let mut fixed = true;
    let _ = expr.apply(|e| {
        if e.downcast_ref::<ScalarFunctionExpr>()
            .is_some_and(|f| f.fun().signature().volatility != Volatility::Immutable)
        {
            fixed = false;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    fixed
}

impl Operator for ProjectOp {
    fn name(&self) -> &'static str {
        "Project"
    }

    fn is_pure(&self) -> bool {
        self.exprs.iter().flatten().all(deterministic)
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let rows = chunk.batch.num_rows();
        let columns = self
            .exprs
            .iter()
            .map(|e| match e {
                Some(e) => Ok(e.evaluate(&chunk.batch)?.into_array(rows)?),
                None => Ok(new_null_array(&DataType::Null, rows)),
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        out.push(Message::Data(chunk.with_batch(batch)));
        Ok(())
    }
}
