//! The local half of a split aggregate (Flink's local/global aggregation):
//! at the end of the stage before the exchange, each chunk's rows are
//! folded per key into one partial row per key (the key's columns, each
//! aggregate's fold, the net rows), so the shuffle hashes and copies a row
//! per key and chunk instead of a row per input row, and the global half
//! adds the folds up (`AggregateOp` merging). It keeps no state: a chunk
//! leaves as soon as it is folded, so watermarks, barriers and the end of
//! input pass it in order, and a checkpoint holds nothing of it.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

use super::aggregate::{args_of, evaluate_args, CompiledAgg};
use super::partial::{ChunkFold, ChunkGroups, FoldKind, GroupingPause};
use super::project::evaluate;
use crate::runtime::chunk::Chunk;
use crate::runtime::message::Message;
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;

pub struct LocalAggregateOp {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    aggs: Vec<CompiledAgg>,
    kinds: Vec<FoldKind>,
    /// The key's columns, each aggregate's fold columns, `rows`.
    schema: SchemaRef,
    /// Chunks go a row each for a while after one whose keys hardly repeated.
    pause: GroupingPause,
}

impl LocalAggregateOp {
    /// The local half of the aggregate over `group_exprs` (whose columns
    /// are `key_schema`'s) computing `aggs`, which must all fold.
    pub fn new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        key_schema: &Schema,
        aggs: Vec<CompiledAgg>,
        append_only: bool,
    ) -> Result<Self, RuntimeError> {
        let kinds = aggs
            .iter()
            .map(|a| FoldKind::of(&a.call, append_only))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                RuntimeError::Internal(
                    "a local aggregate of an aggregate that does not fold".into(),
                )
            })?;
        Ok(LocalAggregateOp {
            schema: partial_schema(key_schema, &kinds),
            group_exprs,
            aggs,
            kinds,
            pause: GroupingPause::default(),
        })
    }
}

/// The schema of partial rows: the key's columns, each aggregate's fold
/// columns ([`FoldKind::fields`]), then the net rows folded (`rows`).
fn partial_schema(key_schema: &Schema, kinds: &[FoldKind]) -> SchemaRef {
    let mut fields: Vec<Field> = key_schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    for (i, kind) in kinds.iter().enumerate() {
        fields.extend(kind.fields(i));
    }
    fields.push(Field::new("rows", DataType::Int64, false));
    Arc::new(Schema::new(fields))
}

impl Operator for LocalAggregateOp {
    fn name(&self) -> &'static str {
        "LocalAggregate"
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        let batch = &chunk.batch;
        let rows = batch.num_rows();
        let keys = evaluate(&self.group_exprs, batch)?;
        let inputs = evaluate_args(&self.aggs, batch)?;
        let args = args_of(&inputs);
        // Keys with NULLs cannot be grouped on their values, nor keys while
        // grouping pauses: a row each.
        let groups = self
            .pause
            .groups(&keys, rows)
            .unwrap_or_else(|| ChunkGroups::each_row(rows));
        let ChunkFold {
            groups,
            net,
            partials,
        } = ChunkFold::new(groups, &self.kinds, &args, chunk.ops.as_deref());
        // A key whose rows cancel out (added and taken back in the chunk)
        // changes nothing.
        let keep: Vec<u32> = (0..groups.len() as u32)
            .filter(|&g| net[g as usize] != 0 || partials.iter().any(|p| !p.is_empty(g as usize)))
            .collect();
        if keep.is_empty() {
            return Ok(());
        }
        // Every row its own group and kept: the keys are as they came.
        let mut out_columns: Vec<ArrayRef> = if keep.len() == rows {
            keys
        } else {
            let first =
                UInt32Array::from_iter_values(keep.iter().map(|&g| groups.first[g as usize]));
            keys.iter()
                .map(|k| take(k, &first, None))
                .collect::<Result<_, _>>()?
        };
        for p in &partials {
            out_columns.extend(p.columns(&keep));
        }
        out_columns.push(Arc::new(Int64Array::from_iter_values(
            keep.iter().map(|&g| net[g as usize]),
        )));
        let batch = RecordBatch::try_new(self.schema.clone(), out_columns)?;
        out.push(Message::Data(Chunk::inserts(batch)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{AggCall, AggKind};
    use crate::runtime::chunk::Op;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Int64Type;
    use datafusion::physical_expr::expressions::Column;

    /// GROUP BY k with `kinds` of v (columns 0 and 1).
    fn local(kinds: &[AggKind], append_only: bool) -> LocalAggregateOp {
        let aggs = kinds
            .iter()
            .map(|&kind| {
                let call = AggCall {
                    kind,
                    args: vec![],
                    distinct: false,
                    filter: None,
                    output_type: DataType::Int64,
                };
                CompiledAgg::new(
                    call,
                    Some(Arc::new(Column::new("v", 1))),
                    Some(DataType::Int64),
                )
            })
            .collect();
        let keys = Schema::new(vec![Field::new("k", DataType::Int64, true)]);
        LocalAggregateOp::new(
            vec![Arc::new(Column::new("k", 0))],
            &keys,
            aggs,
            append_only,
        )
        .unwrap()
    }

    fn chunk(rows: &[(Option<i64>, Option<i64>)], ops: Option<Vec<Op>>) -> Chunk {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("v", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.0))),
                Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1))),
            ],
        )
        .unwrap();
        match ops {
            Some(ops) => Chunk::with_ops(batch, ops),
            None => Chunk::inserts(batch),
        }
    }

    /// Every partial row sent, each column as an optional number.
    fn sent(op: &mut LocalAggregateOp, chunk: Chunk) -> Vec<Vec<Option<i64>>> {
        let mut out = Vec::new();
        op.process(chunk, &mut out).unwrap();
        let mut rows = Vec::new();
        for m in out {
            let Message::Data(c) = m else { continue };
            assert!(c.ops.is_none(), "partial rows are inserts");
            for r in 0..c.num_rows() {
                rows.push(
                    c.batch
                        .columns()
                        .iter()
                        .map(|a| {
                            let a = a.as_primitive::<Int64Type>();
                            a.is_valid(r).then(|| a.value(r))
                        })
                        .collect(),
                );
            }
        }
        rows
    }

    #[test]
    fn rows_fold_into_a_partial_row_per_key() {
        use AggKind::*;
        let mut op = local(&[Count, Sum, Max], true);
        // Columns: k, COUNT(v), SUM(v), inputs summed, MAX(v), rows.
        let rows = sent(
            &mut op,
            chunk(
                &[(Some(1), Some(5)), (Some(2), None), (Some(1), Some(7))],
                None,
            ),
        );
        assert_eq!(
            rows,
            vec![
                vec![Some(1), Some(2), Some(12), Some(2), Some(7), Some(2)],
                vec![Some(2), Some(0), Some(0), Some(0), None, Some(1)],
            ]
        );
        // NULL keys cannot be grouped on their values: a row each.
        let rows = sent(&mut op, chunk(&[(None, Some(3)), (None, Some(4))], None));
        assert_eq!(
            rows,
            vec![
                vec![None, Some(1), Some(3), Some(1), Some(3), Some(1)],
                vec![None, Some(1), Some(4), Some(1), Some(4), Some(1)],
            ]
        );
    }

    #[test]
    fn retractions_fold_with_their_sign_and_rows_that_cancel_send_nothing() {
        use AggKind::*;
        let mut op = local(&[Count, Sum], false);
        let ops = vec![Op::Insert, Op::Delete, Op::Delete];
        let rows = sent(
            &mut op,
            chunk(
                &[(Some(1), Some(5)), (Some(1), Some(5)), (Some(2), Some(4))],
                Some(ops),
            ),
        );
        // Key 1 added and taken back: nothing. Key 2: one row of 4 taken back.
        assert_eq!(
            rows,
            vec![vec![Some(2), Some(-1), Some(-4), Some(-1), Some(-1)]]
        );
    }

    #[test]
    fn an_extreme_that_can_be_retracted_is_not_split() {
        let keys = Schema::new(vec![Field::new("k", DataType::Int64, true)]);
        let call = AggCall {
            kind: AggKind::Min,
            args: vec![],
            distinct: false,
            filter: None,
            output_type: DataType::Int64,
        };
        let agg = CompiledAgg::new(
            call,
            Some(Arc::new(Column::new("v", 1))),
            Some(DataType::Int64),
        );
        assert!(LocalAggregateOp::new(
            vec![Arc::new(Column::new("k", 0))],
            &keys,
            vec![agg],
            false
        )
        .is_err());
    }
}
