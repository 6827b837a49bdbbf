//! Postgres' text forms for values Arrow would print differently: floats
//! (`5`, not `5.0`; `Infinity`) and timestamps (no trailing fractional zeros,
//! `+00` offsets), so psql and text-mode clients see what Postgres shows.

use std::sync::Arc;

use chrono::{DateTime, Timelike};
use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{
    DataType, Field, Float32Type, Float64Type, Schema, TimeUnit, TimestampNanosecondType,
};
use pgwire::api::results::{FieldFormat, FieldInfo};

/// Rewrites float and timestamp columns sent in text format as Postgres-style strings.
pub fn postgres_text(batch: RecordBatch, fields: &[FieldInfo]) -> RecordBatch {
    let needs = |i: usize, t: &DataType| {
        fields
            .get(i)
            .is_some_and(|f| f.format() == FieldFormat::Text)
            && matches!(
                t,
                DataType::Float32 | DataType::Float64 | DataType::Timestamp(_, _)
            )
    };
    if !batch
        .columns()
        .iter()
        .enumerate()
        .any(|(i, c)| needs(i, c.data_type()))
    {
        return batch;
    }
    let mut columns = Vec::with_capacity(batch.num_columns());
    let mut schema_fields = Vec::with_capacity(batch.num_columns());
    for (i, (c, f)) in batch
        .columns()
        .iter()
        .zip(batch.schema().fields())
        .enumerate()
    {
        let converted = if needs(i, c.data_type()) {
            to_text(c)
        } else {
            None
        };
        match converted {
            Some(text) => {
                schema_fields.push(Field::new(f.name(), DataType::Utf8, true));
                columns.push(text);
            }
            None => {
                schema_fields.push(f.as_ref().clone());
                columns.push(c.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(schema_fields)), columns).unwrap_or(batch)
}

fn to_text(c: &ArrayRef) -> Option<ArrayRef> {
    let values: Vec<Option<String>> = match c.data_type() {
        DataType::Float64 => c
            .as_primitive::<Float64Type>()
            .iter()
            .map(|v| v.map(float))
            .collect(),
        DataType::Float32 => c
            .as_primitive::<Float32Type>()
            .iter()
            .map(|v| v.map(float32))
            .collect(),
        DataType::Timestamp(_, tz) => {
            let ns = cast(c, &DataType::Timestamp(TimeUnit::Nanosecond, None)).ok()?;
            let with_tz = tz.is_some();
            ns.as_primitive::<TimestampNanosecondType>()
                .iter()
                .map(|v| v.map(|t| timestamp(t, with_tz)))
                .collect()
        }
        _ => return None,
    };
    Some(Arc::new(StringArray::from(values)))
}

fn float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else {
        format!("{f}")
    }
}

fn float32(f: f32) -> String {
    if f.is_finite() {
        format!("{f}")
    } else {
        float(f as f64)
    }
}

/// `2024-01-01 00:00:05.5`, with `+00` for a time zone-aware value (shown in UTC).
fn timestamp(ns: i64, with_tz: bool) -> String {
    let dt = DateTime::from_timestamp_nanos(ns).naive_utc();
    let mut s = dt.format("%Y-%m-%d %H:%M:%S").to_string();
    let frac = dt.nanosecond() / 1_000; // Postgres keeps microseconds
    if frac != 0 {
        let digits = format!("{frac:06}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    if with_tz {
        s.push_str("+00");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_postgres() {
        assert_eq!(float(411.0), "411");
        assert_eq!(float(2.5), "2.5");
        assert_eq!(float(f64::INFINITY), "Infinity");
        assert_eq!(float(f64::NAN), "NaN");
        assert_eq!(timestamp(0, false), "1970-01-01 00:00:00");
        assert_eq!(timestamp(5_678_000_000, false), "1970-01-01 00:00:05.678");
        assert_eq!(timestamp(-1_000, true), "1969-12-31 23:59:59.999999+00");
    }
}
