//! An aggregate's value as a group keeps its last output: 16 bytes, with
//! integers and doubles in place and other values boxed (a `ScalarValue`
//! is 64 bytes, and every group holds one per aggregate).

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;
use std::sync::Arc;

use crate::runtime::RuntimeError;

#[derive(Debug, Clone)]
pub enum AggValue {
    /// NULL, of the aggregate's output type.
    Null,
    Int(i64),
    Float(f64),
    Other(Box<ScalarValue>),
}

const _: () = assert!(std::mem::size_of::<AggValue>() == 16);

/// Equal as the `ScalarValue`s they stand for: doubles by their bits.
impl PartialEq for AggValue {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (AggValue::Null, AggValue::Null) => true,
            (AggValue::Int(a), AggValue::Int(b)) => a == b,
            (AggValue::Float(a), AggValue::Float(b)) => a.to_bits() == b.to_bits(),
            (AggValue::Other(a), AggValue::Other(b)) => a == b,
            _ => false,
        }
    }
}

impl AggValue {
    /// `v`, an aggregate's value of its output type.
    pub fn from_scalar(v: ScalarValue) -> Self {
        match v {
            ScalarValue::Int64(Some(i)) => AggValue::Int(i),
            ScalarValue::Float64(Some(f)) => AggValue::Float(f),
            v if v.is_null() => AggValue::Null,
            v => AggValue::Other(Box::new(v)),
        }
    }

    /// The value as a `ScalarValue` of `data_type`, its aggregate's output type.
    pub fn to_scalar(&self, data_type: &DataType) -> Result<ScalarValue, RuntimeError> {
        Ok(match self {
            AggValue::Null => ScalarValue::try_from(data_type)?,
            AggValue::Int(i) => ScalarValue::Int64(Some(*i)),
            AggValue::Float(f) => ScalarValue::Float64(Some(*f)),
            AggValue::Other(v) => (**v).clone(),
        })
    }
}

/// One output column of `data_type` from one aggregate's values: BIGINT
/// and DOUBLE directly, others through `ScalarValue`.
pub fn column_of_values<'a>(
    values: impl ExactSizeIterator<Item = &'a AggValue> + Clone,
    data_type: &DataType,
) -> Result<ArrayRef, RuntimeError> {
    let all = |f: fn(&AggValue) -> bool| values.clone().all(f);
    Ok(match data_type {
        DataType::Int64 if all(|v| matches!(v, AggValue::Int(_) | AggValue::Null)) => {
            Arc::new(Int64Array::from_iter(values.map(|v| match v {
                AggValue::Int(i) => Some(*i),
                _ => None,
            })))
        }
        DataType::Float64 if all(|v| matches!(v, AggValue::Float(_) | AggValue::Null)) => {
            Arc::new(Float64Array::from_iter(values.map(|v| match v {
                AggValue::Float(f) => Some(*f),
                _ => None,
            })))
        }
        _ => {
            let scalars = values
                .map(|v| v.to_scalar(data_type))
                .collect::<Result<Vec<_>, _>>()?;
            super::aggregate::column_of(scalars.iter(), data_type)?
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Array;

    #[test]
    fn values_come_back_as_the_scalars_they_were() {
        let cases = [
            (ScalarValue::Int64(Some(-7)), DataType::Int64),
            (ScalarValue::Int64(None), DataType::Int64),
            (ScalarValue::Float64(Some(2.5)), DataType::Float64),
            (ScalarValue::Float64(None), DataType::Float64),
            (
                ScalarValue::Decimal128(Some(1234), 38, 2),
                DataType::Decimal128(38, 2),
            ),
            (
                ScalarValue::Decimal128(None, 38, 2),
                DataType::Decimal128(38, 2),
            ),
            (ScalarValue::Utf8(Some("fig".into())), DataType::Utf8),
        ];
        for (v, ty) in cases {
            let a = AggValue::from_scalar(v.clone());
            assert_eq!(a.to_scalar(&ty).unwrap(), v);
        }
        // As ScalarValue compares doubles: NaN equals itself, -0 is not 0.
        assert_eq!(AggValue::Float(f64::NAN), AggValue::Float(f64::NAN));
        assert_ne!(AggValue::Float(-0.0), AggValue::Float(0.0));
        assert_ne!(AggValue::Int(0), AggValue::Null);
    }

    #[test]
    fn columns_are_built_from_values_and_nulls() {
        let ints = [AggValue::Int(3), AggValue::Null, AggValue::Int(-1)];
        let col = column_of_values(ints.iter(), &DataType::Int64).unwrap();
        let col = col.as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(
            col.iter().collect::<Vec<_>>(),
            vec![Some(3), None, Some(-1)]
        );
        let decimals = [
            AggValue::from_scalar(ScalarValue::Decimal128(Some(150), 10, 1)),
            AggValue::Null,
        ];
        let col = column_of_values(decimals.iter(), &DataType::Decimal128(10, 1)).unwrap();
        assert_eq!(col.data_type(), &DataType::Decimal128(10, 1));
        assert_eq!(
            ScalarValue::try_from_array(&col, 0).unwrap(),
            ScalarValue::Decimal128(Some(150), 10, 1)
        );
        assert!(col.is_null(1));
    }
}
