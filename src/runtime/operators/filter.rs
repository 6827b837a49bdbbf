//! Filter: keeps the rows where a DataFusion physical predicate is true.

use std::sync::Arc;

use datafusion::arrow::array::AsArray;
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
}

impl Operator for FilterOp {
    fn name(&self) -> &'static str {
        "Filter"
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let mask = self
            .predicate
            .evaluate(&chunk.batch)?
            .into_array(chunk.num_rows())?;
        let kept = chunk.filter(mask.as_boolean())?;
        if !kept.is_empty() {
            out.push(Message::Data(kept));
        }
        Ok(())
    }
}
