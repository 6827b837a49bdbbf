//! `RowCodec`: rows ↔ bytes with Arrow's row format, for keys (order-preserving)
//! and stored values.

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, Rows, SortField};

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
        let rows = self.rows(columns)?;
        Ok(rows.iter().map(|r| r.as_ref().to_vec()).collect())
    }

    /// The same encodings in one buffer (no allocation per row).
    pub fn rows(&self, columns: &[ArrayRef]) -> Result<Rows, StateError> {
        Ok(self.converter.convert_columns(columns)?)
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

/// Appends `[0]` for NULL, else `[1]` and the 8 bytes.
fn fixed(v: Option<[u8; 8]>, out: &mut Vec<u8>) {
    match v {
        None => out.push(0),
        Some(b) => {
            out.push(1);
            out.extend_from_slice(&b);
        }
    }
}

/// Single values of one type ↔ bytes (the row format of a one-column row;
/// 64-bit integers and floats, the accumulators' usual types, directly).
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

    /// The type of the values it encodes.
    pub fn data_type(&self) -> &datafusion::arrow::datatypes::DataType {
        &self.data_type
    }

    pub fn encode(&self, v: &datafusion::common::ScalarValue) -> Result<Vec<u8>, StateError> {
        let mut out = Vec::new();
        self.encode_into(v, &mut out)?;
        Ok(out)
    }

    /// Appends the encoding of the BIGINT `v`, as [`ScalarCodec::encode_into`]
    /// would, without making a `ScalarValue` of it where the type is BIGINT.
    #[inline]
    pub fn encode_int_into(&self, v: i64, out: &mut Vec<u8>) -> Result<(), StateError> {
        match self.data_type {
            datafusion::arrow::datatypes::DataType::Int64 => {
                fixed(Some(v.to_le_bytes()), out);
                Ok(())
            }
            _ => self.encode_into(&datafusion::common::ScalarValue::Int64(Some(v)), out),
        }
    }

    /// Appends the encoding of `v` to `out`.
    pub fn encode_into(
        &self,
        v: &datafusion::common::ScalarValue,
        out: &mut Vec<u8>,
    ) -> Result<(), StateError> {
        use datafusion::arrow::datatypes::DataType as T;
        use datafusion::common::ScalarValue as S;
        // Fast path for the accumulator types of COUNT/SUM/AVG: a null flag
        // and 8 bytes, without computing the value's type or copying it.
        let fixed_bits = |v: &S| match (v, &self.data_type) {
            (S::Int64(x), T::Int64) => Some(x.map(i64::to_le_bytes)),
            (S::Float64(x), T::Float64) => Some(x.map(|f| f.to_bits().to_le_bytes())),
            _ => None,
        };
        if let Some(bits) = fixed_bits(v) {
            fixed(bits, out);
            return Ok(());
        }
        let v = if v.data_type() == self.data_type {
            v.clone()
        } else {
            v.cast_to(&self.data_type)
                .map_err(|e| StateError::Corrupt {
                    key: "scalar".into(),
                    message: e.to_string(),
                })?
        };
        if let Some(bits) = fixed_bits(&v) {
            fixed(bits, out);
            return Ok(());
        }
        let arr = v.to_array().map_err(|e| StateError::Corrupt {
            key: "scalar".into(),
            message: e.to_string(),
        })?;
        let rows = self.converter.convert_columns(&[arr])?;
        out.extend_from_slice(rows.row(0).as_ref());
        Ok(())
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<datafusion::common::ScalarValue, StateError> {
        use datafusion::arrow::datatypes::DataType as T;
        use datafusion::common::ScalarValue as S;
        match (&self.data_type, bytes) {
            (T::Int64, [0]) => return Ok(S::Int64(None)),
            (T::Float64, [0]) => return Ok(S::Float64(None)),
            (T::Int64, [1, rest @ ..]) if rest.len() == 8 => {
                return Ok(S::Int64(Some(i64::from_le_bytes(
                    rest.try_into().expect("8 bytes"),
                ))))
            }
            (T::Float64, [1, rest @ ..]) if rest.len() == 8 => {
                let bits = u64::from_le_bytes(rest.try_into().expect("8 bytes"));
                return Ok(S::Float64(Some(f64::from_bits(bits))));
            }
            _ => {}
        }
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
            ScalarValue::Int64(None),
            ScalarValue::Float64(Some(-2.5)),
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
