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

/// Single values of one type ↔ bytes (the row format of a one-column row).
pub struct ScalarCodec {
    data_type: datafusion::arrow::datatypes::DataType,
    converter: RowConverter,
}

impl ScalarCodec {
    pub fn new(data_type: datafusion::arrow::datatypes::DataType) -> Result<Self, StateError> {
        Ok(ScalarCodec {
            converter: RowConverter::new(vec![SortField::new(data_type.clone())])?,
            data_type,
        })
    }

    pub fn encode(&self, v: &datafusion::common::ScalarValue) -> Result<Vec<u8>, StateError> {
        let v = if v.data_type() == self.data_type {
            v.clone()
        } else {
            v.cast_to(&self.data_type)
                .map_err(|e| StateError::Corrupt {
                    key: "scalar".into(),
                    message: e.to_string(),
                })?
        };
        let arr = v.to_array().map_err(|e| StateError::Corrupt {
            key: "scalar".into(),
            message: e.to_string(),
        })?;
        let rows = self.converter.convert_columns(&[arr])?;
        Ok(rows.row(0).as_ref().to_vec())
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<datafusion::common::ScalarValue, StateError> {
        let parser = self.converter.parser();
        let cols = self.converter.convert_rows([parser.parse(bytes)])?;
        datafusion::common::ScalarValue::try_from_array(&cols[0], 0).map_err(|e| {
            StateError::Corrupt {
                key: "scalar".into(),
                message: e.to_string(),
            }
        })
    }
}

#[cfg(test)]
mod scalar_tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;
    use datafusion::common::ScalarValue;

    #[test]
    fn round_trips_values() {
        for v in [
            ScalarValue::Int64(Some(-5)),
            ScalarValue::Utf8(Some("héllo".into())),
            ScalarValue::Float64(None),
            ScalarValue::Decimal128(Some(12345), 20, 2),
        ] {
            let c = ScalarCodec::new(v.data_type()).unwrap();
            assert_eq!(c.decode(&c.encode(&v).unwrap()).unwrap(), v);
        }
        let c = ScalarCodec::new(DataType::Int64).unwrap();
        assert_eq!(
            c.decode(&c.encode(&ScalarValue::Int32(Some(3))).unwrap())
                .unwrap(),
            ScalarValue::Int64(Some(3))
        );
    }
}
