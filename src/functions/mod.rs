//! SQL functions Weir adds to DataFusion: the window bounds behind TUMBLE.

mod tumble;

use std::sync::Arc;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::ScalarUDF;

pub use tumble::{TumbleBound, TUMBLE_END, TUMBLE_START};

/// `tumble_start(ts, size)`: the start of the tumbling window holding `ts`.
pub fn tumble_start() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(TumbleBound::new(false)))
}

/// `tumble_end(ts, size)`: the (exclusive) end of the tumbling window holding `ts`.
pub fn tumble_end() -> Arc<ScalarUDF> {
    Arc::new(ScalarUDF::new_from_impl(TumbleBound::new(true)))
}

/// Every function Weir registers with DataFusion.
pub fn all() -> Vec<Arc<ScalarUDF>> {
    vec![tumble_start(), tumble_end()]
}

/// A fixed-length interval in nanoseconds; `None` for month-based or non-interval values.
pub fn interval_nanos(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::IntervalMonthDayNano(Some(i)) if i.months == 0 => {
            Some(i.days as i64 * 86_400_000_000_000 + i.nanoseconds)
        }
        ScalarValue::IntervalDayTime(Some(i)) => {
            Some(i.days as i64 * 86_400_000_000_000 + i.milliseconds as i64 * 1_000_000)
        }
        ScalarValue::IntervalYearMonth(Some(0)) => Some(0),
        ScalarValue::DurationNanosecond(Some(n)) => Some(*n),
        ScalarValue::DurationMicrosecond(Some(n)) => Some(n * 1_000),
        ScalarValue::DurationMillisecond(Some(n)) => Some(n * 1_000_000),
        ScalarValue::DurationSecond(Some(n)) => Some(n * 1_000_000_000),
        _ => None,
    }
}
