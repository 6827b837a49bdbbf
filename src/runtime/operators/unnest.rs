//! UNNEST of one list column (the rows of a HOP window): each row once per
//! item of its list, the item in the list's place, the other columns and
//! the change kind repeated.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::runtime::chunk::{Chunk, Op};
use crate::runtime::message::Message;
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;

pub struct UnnestOp {
    column: usize,
    keep_null: bool,
    keep_empty: bool,
}

impl UnnestOp {
    pub fn new(column: usize, keep_null: bool, keep_empty: bool) -> Self {
        UnnestOp {
            column,
            keep_null,
            keep_empty,
        }
    }
}

impl Operator for UnnestOp {
    fn name(&self) -> &'static str {
        "Unnest"
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let batch = &chunk.batch;
        let lists = batch.column(self.column);
        let DataType::List(item) = lists.data_type() else {
            return Err(RuntimeError::Internal(format!(
                "UNNEST of a {} column",
                lists.data_type()
            )));
        };
        let lists = lists.as_list::<i32>();
        let offsets = lists.value_offsets();
        // Per output row: its input row, and its item (None: a NULL item).
        let mut rows: Vec<u32> = Vec::with_capacity(lists.values().len());
        let mut items: Vec<Option<u32>> = Vec::with_capacity(lists.values().len());
        for i in 0..batch.num_rows() {
            let (from, to) = (offsets[i] as u32, offsets[i + 1] as u32);
            let keep = match (lists.is_null(i), from == to) {
                (true, _) => self.keep_null,
                (false, true) => self.keep_empty,
                (false, false) => {
                    rows.extend(std::iter::repeat_n(i as u32, (to - from) as usize));
                    items.extend((from..to).map(Some));
                    continue;
                }
            };
            if keep {
                rows.push(i as u32);
                items.push(None);
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let rows = UInt32Array::from(rows);
        let items = UInt32Array::from(items);
        let mut columns = Vec::with_capacity(batch.num_columns());
        for (c, array) in batch.columns().iter().enumerate() {
            columns.push(match c == self.column {
                true => take(lists.values(), &items, None)?,
                false => take(array, &rows, None)?,
            });
        }
        let mut fields: Vec<Field> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields[self.column] =
            Field::new(fields[self.column].name(), item.data_type().clone(), true);
        let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
        let unnested =
            RecordBatch::try_new_with_options(Arc::new(Schema::new(fields)), columns, &options)?;
        let ops: Option<Vec<Op>> = chunk
            .ops
            .as_ref()
            .map(|ops| rows.values().iter().map(|&r| ops[r as usize]).collect());
        out.push(Message::Data(match ops {
            Some(ops) => Chunk::with_ops(unnested, ops),
            None => Chunk::inserts(unnested),
        }));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, ListArray};
    use datafusion::arrow::datatypes::Int64Type;

    fn chunk() -> Chunk {
        // k: 1 [10, 11], 2 NULL, 3 [], 4 [40]
        let lists = ListArray::from_iter_primitive::<Int64Type, _, _>(vec![
            Some(vec![Some(10), Some(11)]),
            None,
            Some(vec![]),
            Some(vec![Some(40)]),
        ]);
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("l", lists.data_type().clone(), true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2, 3, 4])),
                Arc::new(lists),
            ],
        )
        .unwrap();
        Chunk::with_ops(batch, vec![Op::Insert, Op::Insert, Op::Insert, Op::Delete])
    }

    fn run(op: &mut UnnestOp) -> Vec<(i64, Option<i64>, Op)> {
        let mut out = Vec::new();
        op.process(chunk(), &mut out).unwrap();
        let Some(Message::Data(c)) = out.pop() else {
            panic!("no rows")
        };
        let k = c.batch.column(0).as_primitive::<Int64Type>();
        let v = c.batch.column(1).as_primitive::<Int64Type>();
        (0..c.num_rows())
            .map(|i| (k.value(i), v.is_valid(i).then(|| v.value(i)), c.op(i)))
            .collect()
    }

    #[test]
    fn each_item_makes_a_row_with_its_change_kind() {
        use Op::{Delete as D, Insert as I};
        assert_eq!(
            run(&mut UnnestOp::new(1, false, false)),
            vec![(1, Some(10), I), (1, Some(11), I), (4, Some(40), D)]
        );
        assert_eq!(
            run(&mut UnnestOp::new(1, true, false)),
            vec![
                (1, Some(10), I),
                (1, Some(11), I),
                (2, None, I),
                (4, Some(40), D)
            ]
        );
        assert_eq!(
            run(&mut UnnestOp::new(1, true, true)),
            vec![
                (1, Some(10), I),
                (1, Some(11), I),
                (2, None, I),
                (3, None, I),
                (4, Some(40), D)
            ]
        );
    }
}
