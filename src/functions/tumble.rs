//! `tumble_start` / `tumble_end`: window bounds of fixed-size tumbling
//! windows aligned to the Unix epoch.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, PrimitiveArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};
use datafusion::common::{exec_err, plan_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::interval_nanos;

pub const TUMBLE_START: &str = "tumble_start";
pub const TUMBLE_END: &str = "tumble_end";

/// One of the two window-bound functions.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TumbleBound {
    end: bool,
    signature: Signature,
}

impl TumbleBound {
    pub fn new(end: bool) -> Self {
        TumbleBound {
            end,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TumbleBound {
    fn name(&self) -> &str {
        if self.end {
            TUMBLE_END
        } else {
            TUMBLE_START
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match &arg_types[0] {
            t @ DataType::Timestamp(_, _) => Ok(t.clone()),
            DataType::Date32 | DataType::Date64 | DataType::Utf8 => {
                Ok(DataType::Timestamp(TimeUnit::Nanosecond, None))
            }
            other => plan_err!("window time column must be a TIMESTAMP, not {other}"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let size = match &args.args[1] {
            ColumnarValue::Scalar(s) => interval_nanos(s),
            ColumnarValue::Array(_) => None,
        };
        let Some(size) = size.filter(|s| *s > 0) else {
            return exec_err!("window size must be a positive constant INTERVAL of days or less");
        };
        let out_type = args.return_type().clone();
        let ns_type = match &out_type {
            DataType::Timestamp(_, tz) => DataType::Timestamp(TimeUnit::Nanosecond, tz.clone()),
            _ => DataType::Timestamp(TimeUnit::Nanosecond, None),
        };
        let end = self.end;
        let bound = move |t: i64| {
            let start = t - t.rem_euclid(size);
            if end {
                start + size
            } else {
                start
            }
        };
        match &args.args[0] {
            ColumnarValue::Scalar(s) => {
                let v = s.cast_to(&ns_type)?;
                let r = match v {
                    ScalarValue::TimestampNanosecond(t, tz) => {
                        ScalarValue::TimestampNanosecond(t.map(bound), tz)
                    }
                    other => other,
                };
                Ok(ColumnarValue::Scalar(r.cast_to(&out_type)?))
            }
            ColumnarValue::Array(a) => {
                let ns = cast(a, &ns_type)?;
                let ns = ns.as_primitive::<TimestampNanosecondType>();
                let tz = match &ns_type {
                    DataType::Timestamp(_, tz) => tz.clone(),
                    _ => None,
                };
                let r: PrimitiveArray<TimestampNanosecondType> = ns.unary(bound);
                let r = r.with_timezone_opt(tz);
                let out = if r.data_type() == &out_type {
                    Arc::new(r) as _
                } else {
                    cast(&r, &out_type)?
                };
                Ok(ColumnarValue::Array(out))
            }
        }
    }
}
