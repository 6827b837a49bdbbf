//! Projection: evaluates DataFusion physical expressions over each chunk.

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

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
        if read.len() != exprs.len() || !read.contains(&false) {
            return ProjectOp {
                exprs: exprs.into_iter().map(Some).collect(),
                schema,
            };
        }
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .zip(read)
            .map(|(f, &r)| match r {
                true => f.as_ref().clone(),
                false => Field::new(f.name(), DataType::Null, true),
            })
            .collect();
        ProjectOp {
            exprs: exprs
                .into_iter()
                .zip(read)
                .map(|(e, &r)| r.then_some(e))
                .collect(),
            schema: Arc::new(Schema::new(fields)),
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

impl Operator for ProjectOp {
    fn name(&self) -> &'static str {
        "Project"
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
