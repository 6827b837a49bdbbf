//! What the partition-window aggregates (SESSION, COUNT_WINDOW, OVER)
//! share: a chunk's partition keys and event times, rows waiting for the
//! watermark in (time, row) order and their checkpoint form, their
//! accumulators' checkpoint form, and their output rows (group columns —
//! window bounds and partition columns, in the view's order — then the
//! aggregate values).

use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, BinaryArray, BooleanArray, Int64Array, RecordBatch, TimestampNanosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{Row, RowConverter, Rows};
use datafusion::common::ScalarValue;
use datafusion::physical_expr::PhysicalExpr;

use super::accumulator::{AccSnapshot, Accumulator, Arg};
use super::aggregate::{column_of, evaluate_args, CompiledAgg};
use super::conform::nanos;
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
    Ok((keys, nanos(&times)?))
}

/// The rows of a chunk (or of a partition's restored rows) as they wait
/// for the watermark: each row's order key and, per aggregate, its argument
/// (None for COUNT(*)) and FILTER. Shared by its waiting rows, so that a
/// row costs no allocation of its own.
pub struct RowsOf {
    pub order: Rows,
    pub args: Vec<Option<ArrayRef>>,
    pub filters: Vec<Option<BooleanArray>>,
}

impl RowsOf {
    /// A chunk's rows as they wait: each row's order key (`order` over the
    /// batch, encoded by `converter`), and each aggregate's argument and FILTER.
    pub fn of(
        batch: &RecordBatch,
        converter: &RowConverter,
        order: &[Arc<dyn PhysicalExpr>],
        aggs: &[CompiledAgg],
    ) -> Result<Arc<RowsOf>, RuntimeError> {
        let (args, filters) = evaluate_args(aggs, batch)?;
        Ok(Arc::new(RowsOf {
            order: converter.convert_columns(&evaluate(order, batch)?)?,
            args,
            filters,
        }))
    }
}

/// A row waiting for the watermark: its time, and where it is.
pub struct Waiting {
    pub time: i64,
    pub rows: Arc<RowsOf>,
    pub row: u32,
}

/// A waiting row as a checkpoint stores it: order, time, and per aggregate
/// its encoded argument (None: its FILTER leaves it out; empty: COUNT(*)).
pub type StoredWaiting = (Vec<u8>, i64, Vec<Option<Vec<u8>>>);

impl Waiting {
    pub fn order(&self) -> Row<'_> {
        self.rows.order.row(self.row as usize)
    }

    /// Per aggregate: its argument, if the row is aggregated at all (its
    /// FILTER holds). COUNT(*) counts rows: its argument is a 1.
    pub fn arg(&self, agg: usize) -> Result<Option<ScalarValue>, RuntimeError> {
        let arg =
            Arg::new(self.rows.args[agg].as_ref()).with_filter(self.rows.filters[agg].as_ref());
        let row = self.row as usize;
        let passes = self.rows.filters[agg]
            .as_ref()
            .is_none_or(|f| f.is_valid(row) && f.value(row));
        Ok(match passes {
            true => Some(arg.scalar(row)?),
            false => None,
        })
    }

    pub fn stored(&self, codecs: &[ScalarCodec]) -> Result<StoredWaiting, RuntimeError> {
        let row = self.row as usize;
        let rows = &self.rows;
        let values = rows
            .args
            .iter()
            .zip(&rows.filters)
            .zip(codecs)
            .map(|((c, f), codec)| {
                let passes = f.as_ref().is_none_or(|f| f.is_valid(row) && f.value(row));
                match (passes, c) {
                    (false, _) => Ok(None),
                    (true, Some(c)) => {
                        Ok(Some(codec.encode(&ScalarValue::try_from_array(c, row)?)?))
                    }
                    (true, None) => Ok(Some(Vec::new())),
                }
            })
            .collect::<Result<Vec<_>, RuntimeError>>()?;
        Ok((self.order().as_ref().to_vec(), self.time, values))
    }
}

/// Row `row` of `rows` waits in a partition (`waiting`, whose smallest time
/// is `earliest`) for the watermark; `due` learns of the partition (`key`)
/// when the row is its earliest.
pub fn wait(
    waiting: &mut Vec<Waiting>,
    earliest: &mut i64,
    due: &mut std::collections::BTreeMap<i64, Vec<Vec<u8>>>,
    key: &[u8],
    time: i64,
    rows: &Arc<RowsOf>,
    row: usize,
) {
    if time < *earliest {
        *earliest = time;
        due.entry(time).or_default().push(key.to_vec());
    }
    waiting.push(Waiting {
        time,
        rows: rows.clone(),
        row: row as u32,
    });
}

/// A partition's stored waiting rows, as one set of rows in memory.
pub fn restore_waiting(
    order: &RowConverter,
    aggs: &[CompiledAgg],
    codecs: &[ScalarCodec],
    stored: Vec<StoredWaiting>,
) -> Result<Vec<Waiting>, RuntimeError> {
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    let order = order.from_binary(BinaryArray::from_iter_values(
        stored.iter().map(|(order, _, _)| order.as_slice()),
    ));
    let mut args = Vec::with_capacity(aggs.len());
    let mut filters = Vec::with_capacity(aggs.len());
    for (i, (agg, codec)) in aggs.iter().zip(codecs).enumerate() {
        let present: Vec<bool> = stored.iter().map(|(_, _, v)| v[i].is_some()).collect();
        filters.push(match present.contains(&false) {
            true => Some(BooleanArray::from(present)),
            false => None,
        });
        args.push(match agg.arg {
            None => None,
            Some(_) => {
                let null = ScalarValue::try_from(&agg.sum_type)?;
                let values = stored
                    .iter()
                    .map(|(_, _, v)| match &v[i] {
                        Some(bytes) => Ok(codec.decode(bytes)?),
                        None => Ok(null.clone()),
                    })
                    .collect::<Result<Vec<_>, RuntimeError>>()?;
                Some(ScalarValue::iter_to_array(values)?)
            }
        });
    }
    let rows = Arc::new(RowsOf {
        order,
        args,
        filters,
    });
    Ok(stored
        .iter()
        .enumerate()
        .map(|(i, (_, time, _))| Waiting {
            time: *time,
            rows: rows.clone(),
            row: i as u32,
        })
        .collect())
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

/// Rows (k, v, ts in ns) as a chunk of BIGINT k, v and TIMESTAMP ts: the
/// input the partition-window operators' tests feed.
#[cfg(test)]
pub fn kvts_message(rows: &[(i64, i64, i64)]) -> crate::runtime::message::Message {
    crate::runtime::message::Message::Data(kvts_chunk(rows))
}

#[cfg(test)]
pub fn kvts_chunk(rows: &[(i64, i64, i64)]) -> Chunk {
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), false),
    ]));
    let col = |f: fn(&(i64, i64, i64)) -> i64| rows.iter().map(f).collect::<Vec<_>>();
    Chunk::inserts(
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(col(|r| r.0))),
                Arc::new(Int64Array::from(col(|r| r.1))),
                Arc::new(TimestampNanosecondArray::from(col(|r| r.2))),
            ],
        )
        .expect("columns of the schema's types"),
    )
}
