//! Flink's date and time field functions (`HOUR(ts)`, `DAYOFWEEK(ts)`, ...):
//! one field as a BIGINT, through Arrow's `date_part` kernel.

use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::temporal::{date_part, DatePart};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

/// The functions, with the field each returns.
pub const FIELDS: [(&str, DatePart); 10] = [
    ("year", DatePart::Year),
    ("quarter", DatePart::Quarter),
    ("month", DatePart::Month),
    // ISO 8601 week, 1–53.
    ("week", DatePart::Week),
    ("dayofyear", DatePart::DayOfYear),
    ("dayofmonth", DatePart::Day),
    // 1 (Sunday) to 7 (Saturday), as in Flink.
    ("dayofweek", DatePart::DayOfWeekSunday1),
    ("hour", DatePart::Hour),
    ("minute", DatePart::Minute),
    ("second", DatePart::Second),
];

/// One field function.
#[derive(Debug, PartialEq, Eq)]
pub struct TimeField {
    name: &'static str,
    part: DatePart,
    signature: Signature,
}

/// `DatePart` is not `Hash`; the name tells the functions apart.
impl std::hash::Hash for TimeField {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

impl TimeField {
    pub fn new(name: &'static str, part: DatePart) -> Self {
        TimeField {
            name,
            part,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TimeField {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let upper = self.name.to_uppercase();
        match arg_types {
            [t] => Ok(vec![super::timestamp_arg(&upper, t)?]),
            _ => plan_err!("{upper} takes one timestamp"),
        }
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let times = args.args[0].to_array(1.max(args.number_rows))?;
        let field = date_part(&times, self.part)?;
        let field = cast(&field, &DataType::Int64)?;
        super::columnar(field, scalar)
    }
}
