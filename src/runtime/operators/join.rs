//! Inner equi-join of two inputs (Flink's regular join): each side's rows
//! are kept by join key; a row from one side is added to (or, retracted,
//! taken from) its side's rows and matched with the other side's rows of
//! the same key, each pair emitted once, when the later of its two rows
//! arrives. A row with a NULL in its key matches nothing and is not kept.

use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::array::{Array, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::physical_expr::PhysicalExpr;

use super::filter::FilterOp;
use super::join_rows::SideRows;
use super::project::evaluate;
use crate::runtime::chunk::{Chunk, Op};
use crate::runtime::message::Message;
use crate::runtime::operator::Operator;
use crate::runtime::RuntimeError;
use crate::state::{Entries, OperatorWriter, RowCodec};

/// What the join needs to know of one of its inputs.
pub struct JoinSide {
    /// The key expressions over the side's rows.
    pub keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The side's schema, a column of type Null where the join's output
    /// is not read and the join does not read it either.
    pub schema: SchemaRef,
    /// The side only ever inserts.
    pub append_only: bool,
}

struct Side {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    codec: RowCodec,
    append_only: bool,
    rows: SideRows,
}

pub struct JoinOp {
    sides: [Side; 2],
    /// Encodes the keys of both sides alike (as the exchanges do).
    key_codec: RowCodec,
    /// The left side's columns, then the right side's.
    schema: SchemaRef,
    filter: Option<FilterOp>,
}

impl JoinOp {
    /// `key_schema`: the keys' types, both sides' keys being of these.
    pub fn new(
        left: JoinSide,
        right: JoinSide,
        key_schema: SchemaRef,
        filter: Option<Arc<dyn PhysicalExpr>>,
    ) -> Result<Self, RuntimeError> {
        let side = |s: JoinSide| -> Result<Side, RuntimeError> {
            let schema = nullable(&s.schema);
            Ok(Side {
                codec: RowCodec::new(schema.clone())?,
                keys: s.keys,
                schema,
                append_only: s.append_only,
                rows: SideRows::default(),
            })
        };
        let (left, right) = (side(left)?, side(right)?);
        let fields: Vec<_> = left
            .schema
            .fields()
            .iter()
            .chain(right.schema.fields())
            .cloned()
            .collect();
        Ok(JoinOp {
            schema: Arc::new(Schema::new(fields)),
            sides: [left, right],
            key_codec: RowCodec::new(key_schema)?,
            filter: filter.map(FilterOp::new),
        })
    }

    /// Whether the output carries retractions.
    fn updating(&self) -> bool {
        !self.sides.iter().all(|s| s.append_only)
    }
}

/// Every field nullable: a side's columns are checked for type only.
fn nullable(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// The batch with the columns `schema` types as Null made so (the join
/// neither reads nor outputs them).
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, RuntimeError> {
    let n = batch.num_rows();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| match f.data_type() {
            DataType::Null if c.data_type() != &DataType::Null => new_null_array(&DataType::Null, n),
            _ => c.clone(),
        })
        .collect();
    let options = RecordBatchOptions::new().with_row_count(Some(n));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options).map_err(|e| {
        RuntimeError::Internal(format!("a join input's rows do not have its schema: {e}"))
    })
}

impl Operator for JoinOp {
    fn name(&self) -> &'static str {
        "HashJoin"
    }

    fn process(&mut self, chunk: Chunk, out: &mut Vec<Message>) -> Result<(), RuntimeError> {
        self.process_input(0, chunk, out)
    }

    fn process_input(
        &mut self,
        input: usize,
        chunk: Chunk,
        out: &mut Vec<Message>,
    ) -> Result<(), RuntimeError> {
        let updating = self.updating();
        let [left, right] = &mut self.sides;
        let (me, other) = match input {
            0 => (left, &*right),
            _ => (right, &*left),
        };
        let batch = conform(&chunk.batch, &me.schema)?;
        let keys = evaluate(&me.keys, &batch)?;
        let encoded_keys = self.key_codec.rows(&keys)?;
        let rows = me.codec.rows(batch.columns())?;
        let mut probe: Vec<u32> = Vec::new();
        let mut matched: Vec<&[u8]> = Vec::new();
        let mut ops: Vec<Op> = Vec::new();
        for i in 0..batch.num_rows() {
            if keys.iter().any(|k| k.is_null(i)) {
                continue;
            }
            let (key, row) = (encoded_keys.row(i), rows.row(i));
            let add = chunk.op(i).is_addition();
            if add {
                me.rows.add(key.as_ref(), row.as_ref(), !me.append_only);
            } else if !me.rows.remove(key.as_ref(), row.as_ref()) {
                // Never added, so it never matched: nothing to take back.
                continue;
            }
            let op = if add { Op::Insert } else { Op::Delete };
            for (r, count) in other.rows.get(key.as_ref()) {
                for _ in 0..*count {
                    probe.push(i as u32);
                    matched.push(r.as_ref());
                    ops.push(op);
                }
            }
        }
        if probe.is_empty() {
            return Ok(());
        }
        let mine = take_record_batch(&batch, &UInt32Array::from(probe))?;
        let theirs = other.codec.decode(matched)?;
        let (l, r) = match input {
            0 => (mine.columns(), theirs.columns()),
            _ => (theirs.columns(), mine.columns()),
        };
        let columns: Vec<ArrayRef> = l.iter().chain(r).cloned().collect();
        let options = RecordBatchOptions::new().with_row_count(Some(ops.len()));
        let joined = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        let chunk = match updating {
            true => Chunk::with_ops(joined, ops),
            false => Chunk::inserts(joined),
        };
        match &mut self.filter {
            Some(f) => f.process(chunk, out),
            None => {
                out.push(Message::Data(chunk));
                Ok(())
            }
        }
    }

    fn checkpoint(&mut self, state: &mut OperatorWriter<'_>) -> Result<(), RuntimeError> {
        for (i, side) in self.sides.iter_mut().enumerate() {
            side.rows.checkpoint(i as u8, state);
        }
        Ok(())
    }

    fn restore_entries(&mut self, entries: Entries) -> Result<(), RuntimeError> {
        for (key, entry, value) in entries {
            let (side, record) = match entry.as_slice() {
                [s @ (0 | 1), r] => (*s as usize, *r),
                _ => {
                    return Err(RuntimeError::Internal(format!(
                        "unknown join state entry {entry:?}"
                    )))
                }
            };
            self.sides[side].rows.restore(&key, record, &value)?;
        }
        Ok(())
    }
}
