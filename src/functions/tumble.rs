//! `tumble_start` / `tumble_end`: window bounds of fixed-size tumbling
//! windows aligned to the Unix epoch.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray};
use datafusion::arrow::buffer::ScalarBuffer;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType,
};
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
                if let DataType::Timestamp(unit, _) = a.data_type() {
                    let (unit_nanos, bounds): (i64, Bounds) = match unit {
                        TimeUnit::Second => (1_000_000_000, bounds_of::<TimestampSecondType>),
                        TimeUnit::Millisecond => (1_000_000, bounds_of::<TimestampMillisecondType>),
                        TimeUnit::Microsecond => (1_000, bounds_of::<TimestampMicrosecondType>),
                        TimeUnit::Nanosecond => (1, bounds_of::<TimestampNanosecondType>),
                    };
                    if size % unit_nanos == 0 && a.data_type() == &out_type {
                        return Ok(ColumnarValue::Array(bounds(a, size / unit_nanos, end)));
                    }
                }
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

/// [`bounds_of`] for one timestamp type.
type Bounds = fn(&dyn Array, i64, bool) -> ArrayRef;

/// [`window_bounds`] of a timestamp column of type `T`.
fn bounds_of<T: ArrowTimestampType>(times: &dyn Array, size: i64, end: bool) -> ArrayRef {
    let times = times.as_primitive::<T>();
    let bounds = window_bounds(times.values(), size, end);
    let bounds = PrimitiveArray::<T>::new(bounds, times.nulls().cloned());
    Arc::new(bounds.with_timezone_opt(times.timezone()))
}

/// The start (or with `end` the end) of each time's window of `size`, in
/// the times' own unit. Times in a row mostly share a window: the last
/// one found is tried first, saving a division.
fn window_bounds(times: &[i64], size: i64, end: bool) -> ScalarBuffer<i64> {
    let (mut start, mut next) = (i64::MAX, i64::MIN);
    times
        .iter()
        .map(|&t| {
            if !(start <= t && t < next) {
                start = t - t.rem_euclid(size);
                next = start.saturating_add(size);
            }
            if end {
                start + size
            } else {
                start
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::TimestampMillisecondArray;

    use super::*;
    use crate::testing::below;

    /// Times that wander back and forth across window edges (negative ones
    /// too), with NULLs, against the floor division of each time alone.
    #[test]
    fn each_time_gets_its_own_window_whatever_came_before() {
        let mut next = below(7);
        let size = 10_000;
        let mut t = -25_000i64;
        let times: Vec<Option<i64>> = (0..2_000)
            .map(|_| {
                // Whole seconds, so that times fall on the edges too.
                t += (next(9) as i64 - 3) * 1_000;
                Some(t).filter(|_| next(10) != 0)
            })
            .collect();
        let array = TimestampMillisecondArray::from(times.clone()).with_timezone("+01:00");
        for end in [false, true] {
            let out = bounds_of::<TimestampMillisecondType>(&array, size, end);
            let out = out.as_primitive::<TimestampMillisecondType>();
            assert_eq!(out.timezone(), Some("+01:00"));
            for (i, t) in times.iter().enumerate() {
                let expected = t.map(|t| t.div_euclid(size) * size + if end { size } else { 0 });
                assert_eq!(out.is_valid(i).then(|| out.value(i)), expected, "row {i}");
            }
        }
    }
}
