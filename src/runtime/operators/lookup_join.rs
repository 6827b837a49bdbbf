//! Lookup join (Flink's `JOIN t FOR SYSTEM_TIME AS OF x.proctime`): each
//! row is joined with the rows of a stored table whose primary key equals
//! the row's key, read from the table as it is when the row is processed.
//! It keeps no state: a later change to the table changes no pair already
//! emitted. Outer (`LEFT JOIN`): a row that meets nothing comes out with
//! NULLs for the table's columns.

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{filter_record_batch, take_record_batch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use super::conform::typed;
use super::project::evaluate;
use crate::runtime::chunk::Chunk;
use crate::runtime::message::Message;
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;
use crate::state::TableStore;

pub struct LookupJoinOp {
    table: Arc<TableStore>,
    /// The key over the input, one per primary-key column, of its type.
    keys: Vec<Arc<dyn PhysicalExpr>>,
    table_first: bool,
    /// Every input row comes out: without a match, with NULLs for the table.
    outer: bool,
    schema: SchemaRef,
    /// What a match must satisfy besides its key, over the output.
    filter: Option<Arc<dyn PhysicalExpr>>,
}

impl LookupJoinOp {
    pub fn new(
        table: Arc<TableStore>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        table_first: bool,
        outer: bool,
        schema: SchemaRef,
        filter: Option<Arc<dyn PhysicalExpr>>,
    ) -> Self {
        LookupJoinOp {
            table,
            keys,
            table_first,
            outer,
            schema,
            filter,
        }
    }

    /// Output rows from the input's rows and the table's, side by side.
    fn pairs(&self, mine: &RecordBatch, theirs: &[ArrayRef]) -> Result<RecordBatch, RuntimeError> {
        let (first, second) = match self.table_first {
            true => (theirs, mine.columns()),
            false => (mine.columns(), theirs),
        };
        let columns = first.iter().chain(second).cloned().collect();
        typed(columns, &self.schema, mine.num_rows())
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
        // The planner cast the key to the primary key's types.
        let keys = evaluate(&self.keys, batch)?;
        let (mut found, rows) = self.table.lookup(&keys)?;
        let mine = take_record_batch(batch, &UInt32Array::from(found.clone()))?;
        let mut joined = self.pairs(&mine, rows.columns())?;
        if let Some(f) = &self.filter {
            let keep = f.evaluate(&joined)?.into_array(joined.num_rows())?;
            let keep = keep.as_boolean();
            found = found
                .iter()
                .zip(keep.iter())
                .filter(|(_, k)| k.unwrap_or(false))
                .map(|(i, _)| *i)
                .collect();
            joined = filter_record_batch(&joined, keep)?;
        }
        if joined.num_rows() > 0 {
            out.push(Message::Data(Chunk::inserts(joined)));
        }
        if self.outer && found.len() < batch.num_rows() {
            // The rows that met nothing, with NULLs for the table's columns.
            let mut met = vec![false; batch.num_rows()];
            for i in found {
                met[i as usize] = true;
            }
            let alone = UInt32Array::from_iter_values(
                (0..batch.num_rows() as u32).filter(|&i| !met[i as usize]),
            );
            let mine = take_record_batch(batch, &alone)?;
            let nulls: Vec<ArrayRef> = self
                .table
                .schema()
                .fields()
                .iter()
                .map(|f| new_null_array(f.data_type(), mine.num_rows()))
                .collect();
            out.push(Message::Data(Chunk::inserts(self.pairs(&mine, &nulls)?)));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Array;
    use datafusion::arrow::array::{AsArray, Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::logical_expr::Operator as BinOp;
    use datafusion::physical_expr::expressions::{lit, BinaryExpr, Column};

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

    /// (k, id, name) per output row; a NULL id or name as -1 / "NULL".
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
                let (id, name) = (b.column(1), b.column(2));
                rows.push((
                    b.column(0).as_primitive::<Int64Type>().value(i),
                    match id.is_null(i) {
                        true => -1,
                        false => id.as_primitive::<Int64Type>().value(i),
                    },
                    match name.is_null(i) {
                        true => "NULL".into(),
                        false => name.as_string::<i32>().value(i).to_string(),
                    },
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
        // Outer, with a condition on the match (name <> 'two'): every row comes out.
        let outer_schema = j.schema.clone();
        let not_two = Arc::new(BinaryExpr::new(
            Arc::new(Column::new("name", 2)),
            BinOp::NotEq,
            lit("two"),
        ));
        let mut outer = LookupJoinOp::new(
            table.clone(),
            vec![Arc::new(Column::new("k", 0))],
            false,
            true,
            outer_schema,
            Some(not_two),
        );
        assert_eq!(
            feed(&mut outer, &[Some(1), Some(2), Some(5), None]),
            vec![
                (1, 1, "uno".into()),
                (2, -1, "NULL".into()),
                (5, -1, "NULL".into()),
                (0, -1, "NULL".into())
            ]
        );
        assert_eq!(
            feed(&mut j, &[Some(1), Some(2)]),
            vec![(1, 1, "uno".into()), (2, 2, "two".into())]
        );
    }
}
