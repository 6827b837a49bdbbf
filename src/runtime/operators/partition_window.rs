//! What the partition-window aggregates (SESSION, COUNT_WINDOW) share: a
//! chunk's partition keys and event times, their accumulators' checkpoint
//! form, and their output rows (group columns — window bounds and partition
//! columns, in the view's order — then the aggregate values).

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, AsArray, Int64Array, RecordBatch, TimestampNanosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit, TimestampNanosecondType};
use datafusion::arrow::row::Rows;
use datafusion::common::ScalarValue;
use datafusion::physical_expr::PhysicalExpr;

use super::accumulator::{AccSnapshot, Accumulator};
use super::aggregate::{column_of, CompiledAgg};
use super::project::evaluate;
use crate::plan::WindowBound;
use crate::runtime::chunk::{Chunk, Op};
use crate::runtime::RuntimeError;
use crate::state::{RowCodec, ScalarCodec};

/// A chunk's partition keys, row-encoded (None without partition columns),
/// and its rows' event times in nanoseconds. Refuses an updating chunk.
pub fn keys_and_times(
    chunk: &Chunk,
    partition: &[Arc<dyn PhysicalExpr>],
    codec: &RowCodec,
    time: &Arc<dyn PhysicalExpr>,
) -> Result<(Option<Rows>, TimestampNanosecondArray), RuntimeError> {
    if chunk.ops.is_some() {
        return Err(RuntimeError::Internal(
            "a SESSION or COUNT_WINDOW window over an updating input".into(),
        ));
    }
    let batch = &chunk.batch;
    let keys = match partition.is_empty() {
        true => None,
        false => Some(codec.rows(&evaluate(partition, batch)?)?),
    };
    let times = time.evaluate(batch)?.into_array(batch.num_rows())?;
    let times = cast(&times, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
    Ok((
        keys,
        times.as_primitive::<TimestampNanosecondType>().clone(),
    ))
}

/// Accumulators (over append-only input) as a checkpoint stores them, whole.
pub fn snapshot_accs(
    accs: &mut [Accumulator],
    codecs: &[ScalarCodec],
) -> Result<Vec<AccSnapshot>, RuntimeError> {
    accs.iter_mut()
        .zip(codecs)
        .map(|(a, codec)| {
            // The whole state goes in the value: no change to track.
            a.take_changed();
            a.full_snapshot(codec)
        })
        .collect()
}

/// Accumulators back from their snapshots.
pub fn restore_accs(
    snapshots: Vec<AccSnapshot>,
    aggs: &[CompiledAgg],
    codecs: &[ScalarCodec],
) -> Result<Vec<Accumulator>, RuntimeError> {
    snapshots
        .into_iter()
        .zip(aggs.iter().zip(codecs))
        .map(|(snap, (agg, codec))| {
            Accumulator::from_snapshot(snap, codec, &agg.call, &agg.sum_type, false)
        })
        .collect()
}

/// Per aggregate: the codec of what it accumulates.
pub fn value_codecs(aggs: &[CompiledAgg]) -> Result<Vec<ScalarCodec>, RuntimeError> {
    aggs.iter()
        .map(|a| Ok(ScalarCodec::new(a.sum_type.clone())?))
        .collect()
}

/// The aggregates' values from their accumulators.
pub fn values_of(
    accs: &[Accumulator],
    aggs: &[CompiledAgg],
) -> Result<Vec<ScalarValue>, RuntimeError> {
    accs.iter()
        .zip(aggs)
        .map(|(a, c)| a.evaluate(&c.call))
        .collect()
}

/// One output row: a window of a partition and its aggregate values.
pub struct WindowRow<'a> {
    pub op: Op,
    /// The partition key, row-encoded.
    pub key: &'a [u8],
    /// The bounds: nanoseconds for a time column, else row numbers.
    pub start: i64,
    pub end: i64,
    pub values: &'a [ScalarValue],
}

/// How rows are laid out.
pub struct WindowOutput {
    /// Encodes partition keys (as the exchange into the stage does) and
    /// decodes them into the output.
    pub key_codec: RowCodec,
    /// The window has partition columns.
    partitioned: bool,
    /// Per group column: the bound it holds (None: the next partition column).
    pub bounds: Vec<Option<WindowBound>>,
    pub schema: SchemaRef,
}

impl WindowOutput {
    /// `keys`: the partition key's schema.
    pub fn new(
        keys: SchemaRef,
        partitioned: bool,
        bounds: Vec<Option<WindowBound>>,
        schema: SchemaRef,
    ) -> Result<Self, RuntimeError> {
        Ok(WindowOutput {
            key_codec: RowCodec::new(keys)?,
            partitioned,
            bounds,
            schema,
        })
    }

    pub fn chunk(&self, rows: &[WindowRow]) -> Result<Option<Chunk>, RuntimeError> {
        if rows.is_empty() {
            return Ok(None);
        }
        let keys = match self.partitioned {
            false => Vec::new(),
            true => self
                .key_codec
                .decode(rows.iter().map(|r| r.key))?
                .columns()
                .to_vec(),
        };
        let mut keys = keys.into_iter();
        let ngroup = self.bounds.len();
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (c, field) in self.schema.fields().iter().enumerate() {
            let arr: ArrayRef = match self.bounds.get(c) {
                Some(Some(bound)) => {
                    let values = rows.iter().map(|r| match bound {
                        WindowBound::Start => r.start,
                        WindowBound::End => r.end,
                    });
                    match field.data_type() {
                        DataType::Timestamp(_, tz) => Arc::new(
                            TimestampNanosecondArray::from_iter_values(values)
                                .with_timezone_opt(tz.clone()),
                        ),
                        _ => Arc::new(Int64Array::from_iter_values(values)),
                    }
                }
                Some(None) => keys.next().ok_or_else(|| {
                    RuntimeError::Internal("a window's partition column is missing".into())
                })?,
                None => column_of(
                    rows.iter().map(|r| &r.values[c - ngroup]),
                    field.data_type(),
                )?,
            };
            columns.push(if arr.data_type() == field.data_type() {
                arr
            } else {
                cast(&arr, field.data_type())?
            });
        }
        let ops = rows.iter().map(|r| r.op).collect();
        Ok(Some(Chunk::with_ops(
            RecordBatch::try_new(self.schema.clone(), columns)?,
            ops,
        )))
    }
}
