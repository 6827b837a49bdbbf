//! `RowCodec`: rows ↔ bytes with Arrow's row format, for keys (order-preserving)
//! and stored values.

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};

use super::StateError;

/// Encodes whole rows of one schema, or a subset of their columns (a key).
pub struct RowCodec {
    schema: SchemaRef,
    converter: RowConverter,
}

impl RowCodec {
    pub fn new(schema: SchemaRef) -> Result<RowCodec, StateError> {
        let fields = schema
            .fields()
            .iter()
            .map(|f| SortField::new(f.data_type().clone()))
            .collect();
        Ok(RowCodec {
            converter: RowConverter::new(fields)?,
            schema,
        })
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// One byte string per row of `columns` (which must match the schema).
    pub fn encode(&self, columns: &[ArrayRef]) -> Result<Vec<Vec<u8>>, StateError> {
        let rows = self.converter.convert_columns(columns)?;
        Ok(rows.iter().map(|r| r.as_ref().to_vec()).collect())
    }

    /// Rebuilds a batch from byte strings made by [`RowCodec::encode`].
    pub fn decode<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<RecordBatch, StateError> {
        let parser = self.converter.parser();
        let parsed: Vec<_> = rows.into_iter().map(|b| parser.parse(b)).collect();
        let columns = self.converter.convert_rows(parsed)?;
        if columns.is_empty() || self.schema.fields().is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    #[test]
    fn round_trips_rows_with_nulls() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Utf8, true),
        ]));
        let codec = RowCodec::new(schema.clone()).unwrap();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None, Some(-3)])),
            Arc::new(StringArray::from(vec![Some("x"), Some("y"), None])),
        ];
        let enc = codec.encode(&cols).unwrap();
        let batch = codec.decode(enc.iter().map(|v| v.as_slice())).unwrap();
        assert_eq!(batch, RecordBatch::try_new(schema, cols).unwrap());
    }
}
