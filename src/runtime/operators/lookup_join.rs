//! Lookup join (Flink's `JOIN t FOR SYSTEM_TIME AS OF x.proctime`): each
//! row is joined with the rows of a stored table whose primary key equals
//! the row's key, read from the table as it is when the row is processed.
//! It keeps no state: a later change to the table changes no pair already
//! emitted.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::{cast, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::filter::FilterOp;
use super::project::evaluate;
use crate::runtime::chunk::Chunk;
use crate::runtime::message::Message;
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;
use crate::state::TableStore;

pub struct LookupJoinOp {
    table: Arc<TableStore>,
    /// The key over the input, one per primary-key column.
    keys: Vec<Arc<dyn PhysicalExpr>>,
    table_first: bool,
    schema: SchemaRef,
    filter: Option<FilterOp>,
}

impl LookupJoinOp {
    pub fn new(
        table: Arc<TableStore>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        table_first: bool,
        schema: SchemaRef,
        filter: Option<Arc<dyn PhysicalExpr>>,
    ) -> Self {
        LookupJoinOp {
            table,
            keys,
            table_first,
            schema,
            filter: filter.map(FilterOp::new),
        }
    }
}

impl Operator for LookupJoinOp {
    fn name(&self) -> &'static str {
        "LookupJoin"
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        if chunk.ops.is_some() {
            return Err(RuntimeError::Internal(
                "a lookup join of an updating input".into(),
            ));
        }
        let batch = &chunk.batch;
        let pk = self.table.primary_key().to_vec();
        let key_types = pk.iter().map(|&i| self.table.schema().field(i).data_type());
        let keys = evaluate(&self.keys, batch)?
            .into_iter()
            .zip(key_types)
            .map(|(k, t)| match k.data_type() == t {
                true => Ok(k),
                false => Ok(cast(&k, t)?),
            })
            .collect::<Result<Vec<ArrayRef>, RuntimeError>>()?;
        let (found, rows) = self.table.lookup(&keys)?;
        if found.is_empty() {
            return Ok(());
        }
        let mine = take_record_batch(batch, &UInt32Array::from(found))?;
        let (first, second) = match self.table_first {
            true => (&rows, &mine),
            false => (&mine, &rows),
        };
        let columns: Vec<ArrayRef> = first
            .columns()
            .iter()
            .chain(second.columns())
            .cloned()
            .collect();
        // Columns nobody reads are Null in the input, typed in the schema.
        let columns = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| match c.data_type() == f.data_type() {
                true => c,
                false => datafusion::arrow::array::new_null_array(f.data_type(), c.len()),
            })
            .collect();
        let options = RecordBatchOptions::new().with_row_count(Some(mine.num_rows()));
        let joined = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        let chunk = Chunk::inserts(joined);
        match &mut self.filter {
            Some(f) => f.process(chunk, out),
            None => {
                out.push(Message::Data(chunk));
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::physical_expr::expressions::Column;

    fn names(rows: &[(i64, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap()
    }

    fn feed(j: &mut LookupJoinOp, keys: &[Option<i64>]) -> Vec<(i64, i64, String)> {
        let schema = Arc::new(Schema::new(vec![Field::new("k", DataType::Int64, true)]));
        let batch =
            RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(keys.to_vec()))]).unwrap();
        let mut out = Vec::new();
        j.process(Chunk::inserts(batch), &mut out).unwrap();
        let mut rows = Vec::new();
        for m in out {
            let Message::Data(c) = m else { continue };
            let b = &c.batch;
            for i in 0..b.num_rows() {
                rows.push((
                    b.column(0).as_primitive::<Int64Type>().value(i),
                    b.column(1).as_primitive::<Int64Type>().value(i),
                    b.column(2).as_string::<i32>().value(i).to_string(),
                ));
            }
        }
        rows
    }

    #[test]
    fn each_row_meets_the_table_as_it_is_when_the_row_comes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(crate::state::Store::open(dir.path()).unwrap());
        let batch = names(&[(1, "one"), (3, "three")]);
        let table = Arc::new(TableStore::open(store, 7, batch.schema(), vec![0]).unwrap());
        table.insert(&batch).unwrap().unwrap();
        let out = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut j = LookupJoinOp::new(
            table.clone(),
            vec![Arc::new(Column::new("k", 0))],
            false,
            out,
            None,
        );
        // A key absent from the table, or NULL, meets nothing.
        assert_eq!(
            feed(&mut j, &[Some(3), Some(2), None, Some(1)]),
            vec![(3, 3, "three".into()), (1, 1, "one".into())]
        );
        table.upsert(&names(&[(1, "uno"), (2, "two")])).unwrap();
        assert_eq!(
            feed(&mut j, &[Some(1), Some(2)]),
            vec![(1, 1, "uno".into()), (2, 2, "two".into())]
        );
    }
}
