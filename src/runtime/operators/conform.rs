//! Rows brought to the schema an operator was built for: a column no one
//! reads arrives as it is (a filter before passes it on) and is made a
//! column of type Null, as its stored rows have it (`conform`); or it
//! arrives as Null from the reader and is given its declared type, as a
//! column of NULLs (`typed`).

use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions,
    TimestampNanosecondArray,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampNanosecondType,
};

use crate::runtime::RuntimeError;

/// A timestamp column (of any unit) as nanoseconds since the epoch, the
/// unit of watermarks.
pub fn nanos(times: &dyn Array) -> Result<TimestampNanosecondArray, RuntimeError> {
    let ns = cast(times, &DataType::Timestamp(TimeUnit::Nanosecond, None))?;
    Ok(ns.as_primitive::<TimestampNanosecondType>().clone())
}

/// Every field nullable: input columns are checked for type only.
pub fn nullable(schema: &SchemaRef) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    Arc::new(Schema::new(fields))
}

/// The batch with the columns `schema` types as Null made so (the
/// operator neither reads nor outputs them).
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch, RuntimeError> {
    let n = batch.num_rows();
    let columns: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .zip(batch.columns())
        .map(|(f, c)| match f.data_type() {
            DataType::Null if c.data_type() != &DataType::Null => {
                new_null_array(&DataType::Null, n)
            }
            _ => c.clone(),
        })
        .collect();
    let options = RecordBatchOptions::new().with_row_count(Some(n));
    RecordBatch::try_new_with_options(schema.clone(), columns, &options).map_err(|e| {
        RuntimeError::Internal(format!(
            "an input's rows do not have the schema its operator was built for: {e}"
        ))
    })
}

/// A batch of `schema` from these columns, a column of type Null given the
/// schema's type there (a column the reader left out, nobody reading it).
pub fn typed(
    columns: Vec<ArrayRef>,
    schema: &SchemaRef,
    rows: usize,
) -> Result<RecordBatch, RuntimeError> {
    let columns = columns
        .into_iter()
        .zip(schema.fields())
        .map(|(c, f)| match c.data_type() == f.data_type() {
            true => c,
            false => new_null_array(f.data_type(), c.len()),
        })
        .collect();
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema.clone(),
        columns,
        &options,
    )?)
}
