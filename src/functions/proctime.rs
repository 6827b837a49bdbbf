//! `PROCTIME()`: the time a row is processed (wall clock, UTC, milliseconds),
//! as Flink's. A view computes it where the row enters the job, and a
//! TUMBLE window over it closes on the wall clock rather than the watermark.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

pub const PROCTIME: &str = "proctime";

/// The wall clock now, in nanoseconds since the Unix epoch.
pub fn wall_clock_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ProcTime {
    signature: Signature,
}

impl ProcTime {
    pub fn new() -> Self {
        ProcTime {
            signature: Signature::exact(vec![], Volatility::Volatile),
        }
    }
}

impl Default for ProcTime {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for ProcTime {
    fn name(&self) -> &str {
        PROCTIME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Timestamp(
            TimeUnit::Millisecond,
            Some(Arc::from("+00:00")),
        ))
    }

    fn invoke_with_args(&self, _args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // One time for the whole batch: its rows are processed together.
        let ms = wall_clock_ns() / 1_000_000;
        Ok(ColumnarValue::Scalar(ScalarValue::TimestampMillisecond(
            Some(ms),
            Some(Arc::from("+00:00")),
        )))
    }
}
