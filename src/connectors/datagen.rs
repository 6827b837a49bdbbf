//! The `datagen` connector: deterministic, seeded rows.
//!
//! Every value is a pure function of (`seed`, column name, row number),
//! computed with the splitmix64 mixer, so the output does not depend on
//! batching or timing and `seek` to a row number restores it exactly.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, Int8Array, PrimitiveArray, RecordBatch, RecordBatchOptions,
    StringArray,
};
use datafusion::arrow::compute::{cast, cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, Field, SchemaRef, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};
use serde_json::json;

use super::options::{invalid, parse_duration};
use super::{ConnectorError, ConnectorOptions, Poll, SourceMetrics, SourceReader};

const ROWS_KEYS: &[&str] = &["rows", "number-of-rows"];
const RATE_KEYS: &[&str] = &["rate", "rows-per-second"];
const DEFAULT_BATCH_SIZE: u64 = 1024;
const DEFAULT_STRING_LENGTH: usize = 10;
const MAX_STRING_LENGTH: usize = 1 << 20;
const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Salts giving independent draws from one (column, row).
const SALT_HIGH: u64 = 0x6a09_e667_f3bc_c908;
const SALT_NULL: u64 = 0xbb67_ae85_84ca_a73b;

/// Whether the generator ends: a row count, or a sequence with an end.
pub(crate) fn is_bounded(options: &ConnectorOptions) -> Result<bool, ConnectorError> {
    if options.get_u64(ROWS_KEYS)?.is_some() {
        return Ok(true);
    }
    Ok(options.iter().any(|(key, value)| {
        key.strip_prefix("fields.")
            .and_then(|rest| rest.strip_suffix(".kind"))
            .is_some_and(|column| {
                value.trim().eq_ignore_ascii_case("sequence")
                    && options.get(&format!("fields.{column}.end")).is_some()
            })
    }))
}

/// The splitmix64 finaliser (Steele, Lea, Flood 2014) of `x + golden gamma`.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn mix(key: u64, row: u64) -> u64 {
    splitmix64(key ^ splitmix64(row))
}

/// A uniform number in [0, 1).
fn unit_interval(h: u64) -> f64 {
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// How a column's values are made from the row number.
#[derive(Debug, Clone, PartialEq)]
enum Gen {
    /// `start + row`; for a decimal, scaled to its scale.
    Sequence {
        start: i64,
        scale: i8,
    },
    /// Uniform in `[min, max]`: integers, unscaled decimals, days, or
    /// timestamps in the column's unit.
    Int {
        min: i128,
        max: i128,
    },
    Float {
        min: f64,
        max: f64,
    },
    Bool,
    Text {
        length: usize,
    },
    /// `start + row × step` nanoseconds, in units of `unit_nanos`.
    Timestamp {
        start: i128,
        step: i128,
        unit_nanos: i128,
    },
}

#[derive(Debug)]
struct Column {
    key: u64,
    data_type: DataType,
    gen: Gen,
    null_rate: f64,
}

/// The properties given for one column: property → (option key, value).
type Props = std::collections::BTreeMap<String, (String, String)>;

fn unit_nanos(unit: &TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
}

/// Parses an option value as `data_type` with Arrow's cast.
fn parse_as(key: &str, value: &str, data_type: &DataType) -> Result<ArrayRef, ConnectorError> {
    let text: ArrayRef = Arc::new(StringArray::from(vec![value.trim()]));
    let bad = || invalid(key, format!("cannot parse '{value}' as {data_type}"));
    let parsed = cast_with_options(&text, data_type, &CastOptions::default()).map_err(|_| bad())?;
    if parsed.is_null(0) {
        return Err(bad());
    }
    Ok(parsed)
}

/// The integer behind a one-element array of an integer-like type.
fn int_of(array: &ArrayRef) -> Result<i128, ConnectorError> {
    if let Some(d) = array.as_any().downcast_ref::<Decimal128Array>() {
        return Ok(d.value(0));
    }
    let ints = cast(array, &DataType::Int64)?;
    let ints = ints.as_any().downcast_ref::<Int64Array>();
    Ok(ints.map_or(0, |a| a.value(0)) as i128)
}

fn float_of(array: &ArrayRef) -> Result<f64, ConnectorError> {
    let floats = cast(array, &DataType::Float64)?;
    let floats = floats.as_any().downcast_ref::<Float64Array>();
    Ok(floats.map_or(0.0, |a| a.value(0)))
}

/// Largest value a sequence may reach in a column of this type.
fn sequence_max(data_type: &DataType) -> i128 {
    match data_type {
        DataType::Int8 => i8::MAX as i128,
        DataType::Int16 => i16::MAX as i128,
        DataType::Int32 => i32::MAX as i128,
        DataType::Decimal128(p, s) => {
            let digits = 10i128.saturating_pow(u32::from(*p)) - 1;
            let max = if *s >= 0 {
                digits / 10i128.saturating_pow(s.unsigned_abs().into())
            } else {
                digits.saturating_mul(10i128.saturating_pow(s.unsigned_abs().into()))
            };
            max.min(i64::MAX as i128)
        }
        _ => i64::MAX as i128,
    }
}

/// Default `[min, max]` of a random integer-like column.
fn default_range(data_type: &DataType) -> (i128, i128) {
    let days = |y, m, d| {
        NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(0, |t| t.and_utc().timestamp() as i128 / 86_400)
    };
    match data_type {
        DataType::Int8 => (i8::MIN as i128, i8::MAX as i128),
        DataType::Int16 => (i16::MIN as i128, i16::MAX as i128),
        DataType::Int32 => (i32::MIN as i128, i32::MAX as i128),
        DataType::Decimal128(p, _) => {
            let max = 10i128.saturating_pow(u32::from(*p)) - 1;
            (-max, max)
        }
        DataType::Date32 => (days(2000, 1, 1), days(2029, 12, 31)),
        DataType::Timestamp(unit, _) => {
            let per_day = 86_400_000_000_000 / unit_nanos(unit);
            (days(2020, 1, 1) * per_day, days(2030, 1, 1) * per_day - 1)
        }
        _ => (i64::MIN as i128, i64::MAX as i128),
    }
}

impl Column {
    /// Builds the generator of `field` from its `fields.<column>.*`
    /// properties. Also returns how many rows it can produce, if limited.
    fn new(
        field: &Field,
        props: &Props,
        seed: u64,
    ) -> Result<(Column, Option<u64>), ConnectorError> {
        let data_type = field.data_type().clone();
        let name = field.name();
        let unsupported = || ConnectorError::UnsupportedType {
            connector: "datagen".to_string(),
            column: name.clone(),
            data_type: data_type.to_string(),
        };
        use DataType::*;
        let (numeric, integral, textual) = match &data_type {
            Int8 | Int16 | Int32 | Int64 | Decimal128(..) => (true, true, false),
            Float32 | Float64 => (true, false, false),
            Utf8 | LargeUtf8 | Utf8View => (false, false, true),
            Boolean | Date32 | Timestamp(..) => (false, false, false),
            _ => return Err(unsupported()),
        };
        let is_timestamp = matches!(data_type, Timestamp(..));
        let key_of = |prop: &str| format!("fields.{}.{prop}", name.to_lowercase());
        let kind = match props.get("kind") {
            Some((_, v)) => v.trim().to_ascii_lowercase(),
            None if is_timestamp => "timestamp".to_string(),
            None => "random".to_string(),
        };
        let allowed: &[&str] = match kind.as_str() {
            "sequence" if numeric || textual => &["kind", "start", "end"],
            "timestamp" if is_timestamp => &["kind", "start", "step"],
            "random" if textual => &["kind", "length", "null-rate"],
            "random" if data_type == Boolean => &["kind", "null-rate"],
            "random" => &["kind", "min", "max", "null-rate"],
            "sequence" | "timestamp" => {
                return Err(invalid(
                    &key_of("kind"),
                    format!("kind '{kind}' does not apply to column '{name}' of type {data_type}"),
                ))
            }
            _ => {
                return Err(invalid(
                    &key_of("kind"),
                    format!("expected 'sequence', 'random' or 'timestamp', got '{kind}'"),
                ))
            }
        };
        if let Some((prop, (key, _))) = props.iter().find(|(p, _)| !allowed.contains(&p.as_str())) {
            return Err(invalid(
                key,
                format!(
                    "unknown property '{prop}' for kind '{kind}' (expected one of: {})",
                    allowed.join(", ")
                ),
            ));
        }
        let get = |prop: &str| props.get(prop).map(|(k, v)| (k.as_str(), v.as_str()));

        let null_rate = match get("null-rate") {
            None => 0.0,
            Some((key, value)) => {
                let rate = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r));
                let rate = rate.ok_or_else(|| {
                    invalid(key, format!("expected a number in [0, 1], got '{value}'"))
                })?;
                if rate > 0.0 && !field.is_nullable() {
                    return Err(invalid(key, format!("column '{name}' is NOT NULL")));
                }
                rate
            }
        };

        let mut limit = None;
        let gen = match kind.as_str() {
            "sequence" => {
                let max = sequence_max(&data_type);
                let min = if matches!(data_type, Decimal128(..)) {
                    -max
                } else {
                    -max - 1
                };
                let number = |prop: &str| -> Result<Option<i128>, ConnectorError> {
                    get(prop)
                        .map(|(key, value)| {
                            value
                                .trim()
                                .parse::<i64>()
                                .ok()
                                .map(i128::from)
                                .filter(|v| (min..=max).contains(v))
                                .ok_or_else(|| {
                                    invalid(
                                        key,
                                        format!(
                                            "expected an integer in [{min}, {max}], got '{value}'"
                                        ),
                                    )
                                })
                        })
                        .transpose()
                };
                let start = number("start")?.unwrap_or(0);
                match number("end")? {
                    Some(end) if end < start => {
                        return Err(invalid(
                            &key_of("end"),
                            format!("must not be below start {start}"),
                        ))
                    }
                    Some(end) => limit = Some(u64::try_from(end - start + 1).unwrap_or(u64::MAX)),
                    None if max < i64::MAX as i128 => {
                        return Err(ConnectorError::MissingOption(key_of("end")))
                    }
                    None => {}
                }
                let scale = match data_type {
                    Decimal128(_, s) => s,
                    _ => 0,
                };
                Gen::Sequence {
                    start: start as i64,
                    scale,
                }
            }
            "timestamp" => {
                let Timestamp(unit, _) = &data_type else {
                    return Err(unsupported());
                };
                let unit_nanos = unit_nanos(unit);
                let start = match get("start") {
                    Some((key, value)) => int_of(&parse_as(key, value, &data_type)?)? * unit_nanos,
                    None => 0,
                };
                let step = match get("step") {
                    Some((key, value)) => parse_duration(value)
                        .ok_or_else(|| invalid(key, format!("expected an interval such as '1 second' or '100 ms', got '{value}'")))?
                        .as_nanos() as i128,
                    None => 1_000_000_000,
                };
                Gen::Timestamp {
                    start,
                    step,
                    unit_nanos,
                }
            }
            _ if textual => {
                let length = match get("length") {
                    None => DEFAULT_STRING_LENGTH,
                    Some((key, value)) => value
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|l| *l <= MAX_STRING_LENGTH)
                        .ok_or_else(|| {
                            invalid(
                                key,
                                format!(
                                    "expected a length up to {MAX_STRING_LENGTH}, got '{value}'"
                                ),
                            )
                        })?,
                };
                Gen::Text { length }
            }
            _ if data_type == Boolean => Gen::Bool,
            _ if numeric && !integral => {
                let bound = |prop: &str, default: f64| -> Result<f64, ConnectorError> {
                    match get(prop) {
                        None => Ok(default),
                        Some((key, value)) => float_of(&parse_as(key, value, &data_type)?)
                            .and_then(|v| {
                                v.is_finite()
                                    .then_some(v)
                                    .ok_or_else(|| invalid(key, "must be finite"))
                            }),
                    }
                };
                let (min, max) = (bound("min", 0.0)?, bound("max", 1.0)?);
                if min > max {
                    return Err(invalid(
                        &key_of("max"),
                        format!("must not be below min {min}"),
                    ));
                }
                Gen::Float { min, max }
            }
            _ => {
                let (default_min, default_max) = default_range(&data_type);
                let bound = |prop: &str, default: i128| -> Result<i128, ConnectorError> {
                    match get(prop) {
                        None => Ok(default),
                        Some((key, value)) => int_of(&parse_as(key, value, &data_type)?),
                    }
                };
                let (min, max) = (bound("min", default_min)?, bound("max", default_max)?);
                if min > max {
                    return Err(invalid(
                        &key_of("max"),
                        format!("must not be below min '{}'", get("min").map_or("", |m| m.1)),
                    ));
                }
                Gen::Int { min, max }
            }
        };
        let key = splitmix64(seed ^ fnv1a(name.to_lowercase().as_bytes()));
        Ok((
            Column {
                key,
                data_type,
                gen,
                null_rate,
            },
            limit,
        ))
    }

    fn is_null(&self, row: u64) -> bool {
        self.null_rate > 0.0 && unit_interval(mix(self.key ^ SALT_NULL, row)) < self.null_rate
    }

    /// Integer-like value: integer, unscaled decimal, days, timestamp in unit.
    fn int(&self, row: u64) -> i128 {
        match self.gen {
            Gen::Sequence { start, scale } => {
                let v = i128::from(start) + i128::from(row);
                let factor = 10i128.saturating_pow(scale.unsigned_abs().into());
                if scale >= 0 {
                    v.saturating_mul(factor)
                } else {
                    v / factor
                }
            }
            Gen::Int { min, max } => {
                // Both are in range, so the true difference fits a u128.
                let span = (max.wrapping_sub(min) as u128).wrapping_add(1);
                let h = (u128::from(mix(self.key ^ SALT_HIGH, row)) << 64)
                    | u128::from(mix(self.key, row));
                let offset = if span == 0 { h } else { h % span };
                min.wrapping_add(offset as i128)
            }
            Gen::Timestamp {
                start,
                step,
                unit_nanos,
            } => {
                let nanos = start.saturating_add(step.saturating_mul(i128::from(row)));
                nanos
                    .div_euclid(unit_nanos)
                    .clamp(i64::MIN as i128, i64::MAX as i128)
            }
            _ => 0,
        }
    }

    fn float(&self, row: u64) -> f64 {
        match self.gen {
            Gen::Sequence { start, .. } => (i128::from(start) + i128::from(row)) as f64,
            Gen::Float { min, max } => {
                let u = unit_interval(mix(self.key, row));
                (min * (1.0 - u) + max * u).clamp(min, max)
            }
            _ => 0.0,
        }
    }

    fn text(&self, row: u64) -> String {
        match self.gen {
            Gen::Text { length } => {
                let h = mix(self.key, row);
                let mut s = String::with_capacity(length);
                let mut chunk = 0u64;
                while s.len() < length {
                    let mut x = splitmix64(h.wrapping_add(chunk));
                    for _ in 0..12.min(length - s.len()) {
                        s.push(char::from(ALPHABET[(x % 36) as usize]));
                        x /= 36;
                    }
                    chunk += 1;
                }
                s
            }
            Gen::Sequence { start, .. } => (i128::from(start) + i128::from(row)).to_string(),
            _ => String::new(),
        }
    }

    fn array(&self, rows: Range<u64>) -> Result<ArrayRef, ConnectorError> {
        use DataType::*;
        let ints = || {
            rows.clone()
                .map(|r| (!self.is_null(r)).then(|| self.int(r)))
        };
        let floats = || {
            rows.clone()
                .map(|r| (!self.is_null(r)).then(|| self.float(r)))
        };
        Ok(match &self.data_type {
            Int8 => Arc::new(ints().map(|v| v.map(|v| v as i8)).collect::<Int8Array>()),
            Int16 => Arc::new(ints().map(|v| v.map(|v| v as i16)).collect::<Int16Array>()),
            Int32 => Arc::new(ints().map(|v| v.map(|v| v as i32)).collect::<Int32Array>()),
            Int64 => Arc::new(ints().map(|v| v.map(|v| v as i64)).collect::<Int64Array>()),
            Float32 => Arc::new(
                floats()
                    .map(|v| v.map(|v| v as f32))
                    .collect::<Float32Array>(),
            ),
            Float64 => Arc::new(floats().collect::<Float64Array>()),
            Decimal128(p, s) => Arc::new(
                ints()
                    .collect::<Decimal128Array>()
                    .with_precision_and_scale(*p, *s)?,
            ),
            Date32 => Arc::new(ints().map(|v| v.map(|v| v as i32)).collect::<Date32Array>()),
            Boolean => Arc::new(
                rows.map(|r| (!self.is_null(r)).then(|| mix(self.key, r) & 1 == 1))
                    .collect::<BooleanArray>(),
            ),
            Timestamp(unit, tz) => {
                let values = ints().map(|v| v.map(|v| v as i64));
                match unit {
                    TimeUnit::Second => timestamps::<TimestampSecondType>(values, tz),
                    TimeUnit::Millisecond => timestamps::<TimestampMillisecondType>(values, tz),
                    TimeUnit::Microsecond => timestamps::<TimestampMicrosecondType>(values, tz),
                    TimeUnit::Nanosecond => timestamps::<TimestampNanosecondType>(values, tz),
                }
            }
            other => {
                let text: StringArray = rows
                    .map(|r| (!self.is_null(r)).then(|| self.text(r)))
                    .collect();
                if *other == Utf8 {
                    Arc::new(text)
                } else {
                    cast(&text, other)?
                }
            }
        })
    }
}

fn timestamps<T: ArrowTimestampType>(
    values: impl Iterator<Item = Option<i64>>,
    tz: &Option<Arc<str>>,
) -> ArrayRef {
    Arc::new(PrimitiveArray::<T>::from_iter(values).with_timezone_opt(tz.clone()))
}

/// FNV-1a, to turn a column name into part of its key.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Generates rows of a `datagen` source.
pub(crate) struct DatagenReader {
    schema: SchemaRef,
    columns: Vec<Column>,
    /// Rows in all, if bounded (by `rows` or a sequence's end).
    total: Option<u64>,
    /// Rows per second, if limited.
    rate: Option<f64>,
    batch_size: u64,
    /// The next row number.
    row: u64,
    /// When rate limiting started, and the row number then.
    clock: Option<(Instant, u64)>,
    metrics: Arc<SourceMetrics>,
}

impl DatagenReader {
    pub(crate) fn new(
        options: &ConnectorOptions,
        schema: SchemaRef,
        metrics: Arc<SourceMetrics>,
    ) -> Result<Self, ConnectorError> {
        let seed = match options.get("seed") {
            None => 0,
            Some(v) => {
                let v = v.trim();
                v.parse::<u64>()
                    .or_else(|_| v.parse::<i64>().map(|s| s as u64))
                    .map_err(|_| invalid("seed", format!("expected an integer, got '{v}'")))?
            }
        };
        let rows = options.get_u64(ROWS_KEYS)?;
        let rate = match options.find(RATE_KEYS) {
            None => None,
            Some((key, value)) => {
                let rate = value
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r >= 0.0);
                let rate = rate.ok_or_else(|| {
                    invalid(key, format!("expected rows per second, got '{value}'"))
                })?;
                (rate > 0.0).then_some(rate)
            }
        };
        let batch_size = options
            .get_u64(&["batch.size"])?
            .unwrap_or(DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            return Err(invalid("batch.size", "must be greater than zero"));
        }

        let fields = schema.fields();
        let mut props = vec![Props::new(); fields.len()];
        for (key, value) in options.iter() {
            let Some(rest) = key.strip_prefix("fields.") else {
                continue;
            };
            let Some((column, prop)) = rest.rsplit_once('.') else {
                return Err(invalid(key, "expected fields.<column>.<property>"));
            };
            let Some(index) = fields
                .iter()
                .position(|f| f.name().to_lowercase() == column)
            else {
                let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
                return Err(invalid(
                    key,
                    format!(
                        "no column '{column}' in the stream (columns: {})",
                        names.join(", ")
                    ),
                ));
            };
            props[index].insert(prop.to_string(), (key.to_string(), value.to_string()));
        }
        let mut columns = Vec::with_capacity(fields.len());
        let mut total = rows;
        for (field, props) in fields.iter().zip(&props) {
            let (column, limit) = Column::new(field, props, seed)?;
            total = match (total, limit) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            columns.push(column);
        }
        Ok(DatagenReader {
            schema,
            columns,
            total,
            rate,
            batch_size,
            row: 0,
            clock: None,
            metrics,
        })
    }

    /// Rows `[from, from + n)`.
    fn batch(&self, from: u64, n: u64) -> Result<RecordBatch, ConnectorError> {
        let rows = from..from.saturating_add(n);
        let arrays = self
            .columns
            .iter()
            .map(|c| c.array(rows.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(n as usize));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &options,
        )?)
    }
}

impl SourceReader for DatagenReader {
    fn poll(&mut self) -> Result<Poll, ConnectorError> {
        let mut n = self.batch_size;
        if let Some(total) = self.total {
            if self.row >= total {
                return Ok(Poll::End);
            }
            n = n.min(total - self.row);
        }
        if let Some(rate) = self.rate {
            let now = Instant::now();
            let (t0, r0) = *self.clock.get_or_insert((now, self.row));
            let elapsed = now.duration_since(t0).as_secs_f64();
            // Row r0 + k is due at k / rate seconds.
            let due = r0.saturating_add((elapsed * rate) as u64).saturating_add(1);
            // Wait for about 10 ms worth of rows, so that a fast rate does
            // not produce tiny batches and a slow one is still prompt.
            let target = ((rate / 100.0) as u64).clamp(1, n);
            let available = due.saturating_sub(self.row);
            if available < target {
                let at = (self.row + target - 1 - r0) as f64 / rate;
                // Rounded up, so that the rows are due when polled again.
                let micros = ((at - elapsed) * 1e6).ceil().clamp(1_000.0, 3.6e9);
                let wait = Duration::from_micros(micros as u64);
                return Ok(Poll::Idle(wait));
            }
            n = n.min(available);
        }
        let batch = self.batch(self.row, n)?;
        self.row += n;
        self.metrics.rows.fetch_add(n, Ordering::Relaxed);
        Ok(Poll::Batch(batch))
    }

    fn offset(&self) -> serde_json::Value {
        json!({ "row": self.row })
    }

    fn seek(&mut self, offset: &serde_json::Value) -> Result<(), ConnectorError> {
        let row = offset.get("row").and_then(|r| r.as_u64()).ok_or_else(|| {
            ConnectorError::InvalidOffset(format!("expected {{\"row\": n}}, got {offset}"))
        })?;
        if self.total.is_some_and(|total| row > total) {
            return Err(ConnectorError::InvalidOffset(format!(
                "row {row} is past the end ({} rows)",
                self.total.unwrap_or_default()
            )));
        }
        self.row = row;
        self.clock = None;
        Ok(())
    }

    fn always_available(&self) -> bool {
        self.total.is_none() && self.rate.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::compute::concat_batches;
    use datafusion::arrow::datatypes::Schema;

    fn options(pairs: &[(&str, &str)]) -> ConnectorOptions {
        let mut o = ConnectorOptions::new([("connector".to_string(), "datagen".to_string())]);
        for (k, v) in pairs {
            o.insert(k, v);
        }
        o
    }

    fn reader(schema: &SchemaRef, pairs: &[(&str, &str)]) -> Result<DatagenReader, ConnectorError> {
        DatagenReader::new(
            &options(pairs),
            schema.clone(),
            Arc::new(SourceMetrics::new()),
        )
    }

    fn all_types() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("small", DataType::Int16, true),
            Field::new("i", DataType::Int32, true),
            Field::new("f32", DataType::Float32, true),
            Field::new("f64", DataType::Float64, true),
            Field::new("amount", DataType::Decimal128(10, 2), true),
            Field::new("name", DataType::Utf8, true),
            Field::new("view", DataType::Utf8View, true),
            Field::new("flag", DataType::Boolean, true),
            Field::new("day", DataType::Date32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new(
                "tz",
                DataType::Timestamp(TimeUnit::Microsecond, Some("+02:00".into())),
                true,
            ),
        ]))
    }

    /// Reads until End (or `limit` rows), concatenated.
    fn read_all(r: &mut DatagenReader, limit: usize) -> RecordBatch {
        let mut batches = Vec::new();
        let mut n = 0;
        while n < limit {
            match r.poll().unwrap() {
                Poll::Batch(b) => {
                    assert_eq!(b.schema(), r.schema);
                    assert!(b.num_rows() > 0);
                    n += b.num_rows();
                    batches.push(b);
                }
                Poll::End => break,
                Poll::Idle(_) => panic!("unthrottled datagen idled"),
            }
        }
        concat_batches(&r.schema, &batches).unwrap()
    }

    fn int64s(batch: &RecordBatch, column: usize) -> Vec<Option<i64>> {
        let c = cast(batch.column(column), &DataType::Int64).unwrap();
        c.as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .iter()
            .collect()
    }

    #[test]
    fn splitmix64_matches_the_reference() {
        // The first two outputs of the reference splitmix64 seeded with 0.
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(0x9e37_79b9_7f4a_7c15), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn deterministic_whatever_the_batch_size() {
        let schema = all_types();
        let opts = [
            ("rows", "100"),
            ("seed", "42"),
            ("fields.name.null-rate", "0.3"),
        ];
        let mut small =
            reader(&schema, &[opts.as_slice(), &[("batch.size", "7")]].concat()).unwrap();
        let mut large = reader(&schema, &opts).unwrap();
        let a = read_all(&mut small, usize::MAX);
        let b = read_all(&mut large, usize::MAX);
        assert_eq!(a.num_rows(), 100);
        assert_eq!(a, b);
        assert!(matches!(small.poll().unwrap(), Poll::End));
        assert_eq!(small.offset(), json!({"row": 100}));
        assert_eq!(small.metrics.rows.load(Ordering::Relaxed), 100);

        let mut other_seed = reader(&schema, &[("rows", "100"), ("seed", "43")]).unwrap();
        let c = read_all(&mut other_seed, usize::MAX);
        assert_ne!(int64s(&a, 0), int64s(&c, 0));
        // Same seed and column name, other columns: the same values.
        let only_id = Arc::new(Schema::new(vec![Field::new("ID", DataType::Int64, false)]));
        let mut r = reader(&only_id, &[("rows", "100"), ("seed", "42")]).unwrap();
        assert_eq!(int64s(&read_all(&mut r, usize::MAX), 0), int64s(&a, 0));
    }

    #[test]
    fn seek_restores_exactly() {
        let schema = all_types();
        let mut r = reader(&schema, &[("batch.size", "10")]).unwrap();
        assert!(r.always_available());
        let first = read_all(&mut r, 30);
        assert_eq!(r.offset(), json!({"row": 30}));
        let mut again = reader(&schema, &[("batch.size", "5")]).unwrap();
        again.seek(&json!({"row": 20})).unwrap();
        let rest = read_all(&mut again, 10);
        assert_eq!(rest, first.slice(20, 10));
        assert!(matches!(
            again.seek(&json!({"rows": 1})),
            Err(ConnectorError::InvalidOffset(_))
        ));
        let mut bounded = reader(&schema, &[("rows", "5")]).unwrap();
        assert!(bounded.seek(&json!({"row": 5})).is_ok());
        assert!(matches!(bounded.poll().unwrap(), Poll::End));
        assert!(matches!(
            bounded.seek(&json!({"row": 6})),
            Err(ConnectorError::InvalidOffset(_))
        ));
    }

    #[test]
    fn sequence_ends_the_source() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("label", DataType::Utf8, false),
            Field::new("price", DataType::Decimal128(6, 2), false),
        ]));
        let opts = [
            ("fields.id.kind", "sequence"),
            ("fields.id.start", "5"),
            ("fields.id.end", "9"),
            ("fields.label.kind", "sequence"),
            ("fields.label.start", "100"),
            ("fields.price.kind", "sequence"),
            ("fields.price.start", "-1"),
            ("fields.price.end", "9999"),
            ("batch.size", "3"),
        ];
        assert!(is_bounded(&options(&opts)).unwrap());
        let mut r = reader(&schema, &opts).unwrap();
        assert!(!r.always_available());
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert_eq!(int64s(&b, 0), vec![Some(5), Some(6), Some(7)]);
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert_eq!(int64s(&b, 0), vec![Some(8), Some(9)]);
        let labels = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(
            labels.iter().collect::<Vec<_>>(),
            vec![Some("103"), Some("104")]
        );
        let prices = b
            .column(2)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert_eq!(prices.values(), &[200, 300]); // 2.00, 3.00
        assert!(matches!(r.poll().unwrap(), Poll::End));
        assert_eq!(r.offset(), json!({"row": 5}));

        // `rows` below the sequence length wins (Flink's `number-of-rows`).
        let mut r = reader(
            &schema,
            &[opts.as_slice(), &[("number-of-rows", "2")]].concat(),
        )
        .unwrap();
        assert_eq!(
            int64s(&read_all(&mut r, usize::MAX), 0),
            vec![Some(5), Some(6)]
        );

        // A sequence of a narrow type needs an end; Int64 does not.
        let err = reader(&schema, &[("fields.id.kind", "sequence")]).err();
        assert!(matches!(err, Some(ConnectorError::MissingOption(o)) if o == "fields.id.end"));
        let wide = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let seq = [("fields.n.kind", "sequence"), ("fields.n.start", "-2")];
        assert!(!is_bounded(&options(&seq)).unwrap());
        let mut r = reader(&wide, &[seq.as_slice(), &[("batch.size", "3")]].concat()).unwrap();
        assert!(r.always_available());
        assert_eq!(
            int64s(&read_all(&mut r, 3), 0),
            vec![Some(-2), Some(-1), Some(0)]
        );
    }

    #[test]
    fn timestamps_step_from_start() {
        let schema = Arc::new(Schema::new(vec![
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, None),
                false,
            ),
            Field::new(
                "epoch",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
            Field::new(
                "secs",
                DataType::Timestamp(TimeUnit::Second, Some("UTC".into())),
                false,
            ),
        ]));
        let mut r = reader(
            &schema,
            &[
                ("fields.ts.start", "2024-01-01 00:00:00"),
                ("fields.ts.step", "100 ms"),
                ("fields.secs.kind", "timestamp"),
                ("fields.secs.start", "2024-01-01T00:00:10Z"),
                ("fields.secs.step", "2 minutes"),
                ("rows", "3"),
            ],
        )
        .unwrap();
        let b = read_all(&mut r, usize::MAX);
        assert_eq!(b.schema(), schema);
        // 2024-01-01 00:00:00 UTC is 1_704_067_200 s after the epoch.
        assert_eq!(
            int64s(&b, 0),
            vec![
                Some(1_704_067_200_000),
                Some(1_704_067_200_100),
                Some(1_704_067_200_200)
            ]
        );
        assert_eq!(
            int64s(&b, 1),
            vec![Some(0), Some(1_000_000_000), Some(2_000_000_000)]
        );
        assert_eq!(
            int64s(&b, 2),
            vec![
                Some(1_704_067_210),
                Some(1_704_067_330),
                Some(1_704_067_450)
            ]
        );
        r.seek(&json!({"row": 1})).unwrap();
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert_eq!(
            int64s(&b, 0),
            vec![Some(1_704_067_200_100), Some(1_704_067_200_200)]
        );

        let err = reader(&schema, &[("fields.ts.step", "1 fortnight")]).err();
        assert!(
            matches!(err, Some(ConnectorError::InvalidOption { option, .. }) if option == "fields.ts.step")
        );
        let err = reader(&schema, &[("fields.ts.start", "yesterday")]).err();
        assert!(
            matches!(err, Some(ConnectorError::InvalidOption { option, .. }) if option == "fields.ts.start")
        );
    }

    #[test]
    fn random_values_respect_their_ranges() {
        let schema = all_types();
        let mut r = reader(
            &schema,
            &[
                ("rows", "2000"),
                ("fields.i.min", "1"),
                ("fields.i.max", "6"),
                ("fields.f64.min", "-1.5"),
                ("fields.f64.max", "1.5"),
                ("fields.amount.min", "0.05"),
                ("fields.amount.max", "0.10"),
                ("fields.name.length", "3"),
                ("fields.name.null-rate", "0.5"),
                ("fields.day.min", "2024-02-28"),
                ("fields.day.max", "2024-03-01"),
                ("fields.ts.kind", "random"),
            ],
        )
        .unwrap();
        let b = read_all(&mut r, usize::MAX);
        let dice = int64s(&b, 2);
        for v in 1..=6 {
            assert!(dice.contains(&Some(v)), "{v} never drawn");
        }
        assert!(dice.iter().all(|v| (1..=6).contains(&v.unwrap())));
        let small = int64s(&b, 1);
        assert!(small.iter().any(|v| v.unwrap() < 0) && small.iter().any(|v| v.unwrap() > 0));
        let f = b.column(4).as_any().downcast_ref::<Float64Array>().unwrap();
        assert!(f.values().iter().all(|v| (-1.5..=1.5).contains(v)));
        assert!(f.values().iter().any(|v| *v < -1.0) && f.values().iter().any(|v| *v > 1.0));
        let f32s = b.column(3).as_any().downcast_ref::<Float32Array>().unwrap();
        assert!(f32s.values().iter().all(|v| (0.0..=1.0).contains(v)));
        let amounts = b
            .column(5)
            .as_any()
            .downcast_ref::<Decimal128Array>()
            .unwrap();
        assert!(amounts.values().iter().all(|v| (5..=10).contains(v)));
        let names = b.column(6).as_any().downcast_ref::<StringArray>().unwrap();
        let nulls = names.null_count();
        assert!((800..1200).contains(&nulls), "{nulls} nulls");
        assert!(names
            .iter()
            .flatten()
            .all(|s| s.len() == 3 && s.bytes().all(|c| ALPHABET.contains(&c))));
        let days = int64s(&b, 9);
        // 2024-02-28 is day 19_781 after the epoch; 2024 is a leap year.
        assert!(days.iter().all(|d| (19_781..=19_783).contains(&d.unwrap())));
        assert!(days.contains(&Some(19_782)));
        let flags = b.column(8).as_any().downcast_ref::<BooleanArray>().unwrap();
        assert!((800..1200).contains(&flags.true_count()));
        let ts = int64s(&b, 10);
        // Default random range: 2020-01-01 to 2030-01-01.
        assert!(ts
            .iter()
            .all(|t| (1_577_836_800_000..1_893_456_000_000).contains(&t.unwrap())));
    }

    #[test]
    fn rate_limit_yields_idle() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let mut r = reader(&schema, &[("rows-per-second", "10")]).unwrap();
        assert!(!r.always_available());
        // The first row is due at once, the next 100 ms later.
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert_eq!(b.num_rows(), 1);
        let Poll::Idle(wait) = r.poll().unwrap() else {
            panic!()
        };
        assert!(
            wait > Duration::from_millis(50) && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        std::thread::sleep(wait);
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert_eq!(b.num_rows(), 1);
        assert_eq!(r.offset(), json!({"row": 2}));

        // A fast rate waits for about 10 ms worth of rows, never a whole batch.
        let mut r = reader(&schema, &[("rate", "1000"), ("batch.size", "1000000")]).unwrap();
        assert!(matches!(r.poll().unwrap(), Poll::Idle(d) if d <= Duration::from_millis(10)));
        std::thread::sleep(Duration::from_millis(30));
        let Poll::Batch(b) = r.poll().unwrap() else {
            panic!()
        };
        assert!((10..200).contains(&b.num_rows()), "{}", b.num_rows());
        // Rate 0 means unlimited.
        assert!(reader(&schema, &[("rate", "0")])
            .unwrap()
            .always_available());
    }

    #[test]
    fn bad_options_name_the_option() {
        let schema = all_types();
        let option_of = |pairs: &[(&str, &str)]| match reader(&schema, pairs) {
            Err(ConnectorError::InvalidOption { option, .. }) => option,
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("accepted {pairs:?}"),
        };
        assert_eq!(
            option_of(&[("fields.nope.kind", "random")]),
            "fields.nope.kind"
        );
        assert_eq!(option_of(&[("fields.id", "random")]), "fields.id");
        assert_eq!(option_of(&[("fields.id.kind", "dice")]), "fields.id.kind");
        assert_eq!(
            option_of(&[("fields.flag.kind", "sequence")]),
            "fields.flag.kind"
        );
        assert_eq!(
            option_of(&[("fields.id.kind", "timestamp")]),
            "fields.id.kind"
        );
        assert_eq!(option_of(&[("fields.id.length", "3")]), "fields.id.length");
        assert_eq!(option_of(&[("fields.i.min", "ten")]), "fields.i.min");
        assert_eq!(
            option_of(&[("fields.small.max", "40000")]),
            "fields.small.max"
        );
        assert_eq!(
            option_of(&[("fields.i.min", "5"), ("fields.i.max", "4")]),
            "fields.i.max"
        );
        assert_eq!(
            option_of(&[("fields.id.null-rate", "0.1")]),
            "fields.id.null-rate"
        );
        assert_eq!(
            option_of(&[("fields.name.null-rate", "2")]),
            "fields.name.null-rate"
        );
        assert_eq!(option_of(&[("fields.f64.max", "inf")]), "fields.f64.max");
        assert_eq!(
            option_of(&[
                ("fields.id.kind", "sequence"),
                ("fields.id.start", "3"),
                ("fields.id.end", "2")
            ]),
            "fields.id.end"
        );
        assert_eq!(
            option_of(&[
                ("fields.small.kind", "sequence"),
                ("fields.small.end", "99999")
            ]),
            "fields.small.end"
        );
        assert_eq!(option_of(&[("rows", "-1")]), "rows");
        assert_eq!(option_of(&[("number-of-rows", "x")]), "number-of-rows");
        assert_eq!(option_of(&[("rate", "fast")]), "rate");
        assert_eq!(option_of(&[("seed", "1.5")]), "seed");
        assert_eq!(option_of(&[("batch.size", "0")]), "batch.size");
        assert_eq!(
            option_of(&[("fields.name.length", "-1")]),
            "fields.name.length"
        );

        let odd = Arc::new(Schema::new(vec![Field::new("b", DataType::Binary, true)]));
        assert!(matches!(
            reader(&odd, &[]),
            Err(ConnectorError::UnsupportedType { .. })
        ));
        // Names are matched case-insensitively; negative seeds are accepted.
        let mixed = Arc::new(Schema::new(vec![Field::new(
            "Price",
            DataType::Int64,
            true,
        )]));
        assert!(reader(&mixed, &[("fields.price.min", "1"), ("seed", "-7")]).is_ok());
    }

    #[test]
    fn empty_schema_still_counts_rows() {
        let empty = Arc::new(Schema::empty());
        let mut r = reader(&empty, &[("rows", "3")]).unwrap();
        assert_eq!(read_all(&mut r, usize::MAX).num_rows(), 3);
    }
}
