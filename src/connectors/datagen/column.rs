//! One `datagen` column: its generator, built from `fields.<column>.*`, and
//! its values as a pure function of (seed, column name, row number).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int16Array, Int32Array, Int64Array, Int8Array, PrimitiveArray, StringArray,
};
use datafusion::arrow::compute::{cast, cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{
    ArrowTimestampType, DataType, Field, TimeUnit, TimestampMicrosecondType,
    TimestampMillisecondType, TimestampNanosecondType, TimestampSecondType,
};

use crate::connectors::options::{invalid, parse_duration};
use crate::connectors::ConnectorError;

const DEFAULT_STRING_LENGTH: usize = 10;
const MAX_STRING_LENGTH: usize = 1 << 20;
pub(super) const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";
/// Salts giving independent draws from one (column, row).
const SALT_HIGH: u64 = 0x6a09_e667_f3bc_c908;
const SALT_NULL: u64 = 0xbb67_ae85_84ca_a73b;

/// The properties given for one column: property → (option key, value).
pub(super) type Props = BTreeMap<String, (String, String)>;

/// The splitmix64 output (Steele, Lea, Flood 2014) for state `x`.
pub(super) fn splitmix64(x: u64) -> u64 {
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

/// FNV-1a, to turn a column name into part of its key.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn unit_nanos(unit: &TimeUnit) -> i128 {
    match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    }
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
    /// Random letters and digits; with `var_len`, 1 to `length` of them.
    Text {
        length: usize,
        var_len: bool,
    },
    /// `start + row × step` nanoseconds, in units of `unit_nanos`.
    Timestamp {
        start: i128,
        step: i128,
        unit_nanos: i128,
    },
}

/// What a column's type allows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    Integral, // integers and decimals
    Float,
    Text,
    Boolean,
    Date,
    Timestamp,
}

fn class_of(data_type: &DataType) -> Option<Class> {
    use DataType::*;
    Some(match data_type {
        Int8 | Int16 | Int32 | Int64 => Class::Integral,
        Decimal128(p, s) => {
            // Refuse a precision or scale Arrow itself would refuse.
            Decimal128Array::from(Vec::<i128>::new())
                .with_precision_and_scale(*p, *s)
                .ok()?;
            Class::Integral
        }
        Float32 | Float64 => Class::Float,
        Utf8 | LargeUtf8 | Utf8View => Class::Text,
        Boolean => Class::Boolean,
        Date32 => Class::Date,
        Timestamp(..) => Class::Timestamp,
        _ => return None,
    })
}

/// One column's declaration and properties, while its generator is built.
struct Spec<'a> {
    field: &'a Field,
    props: &'a Props,
}

impl Spec<'_> {
    fn get(&self, prop: &str) -> Option<(&str, &str)> {
        self.props.get(prop).map(|(k, v)| (k.as_str(), v.as_str()))
    }

    fn key(&self, prop: &str) -> String {
        format!("fields.{}.{prop}", self.field.name().to_lowercase())
    }

    fn data_type(&self) -> &DataType {
        self.field.data_type()
    }

    /// Parses a property as the column's type, with Arrow's cast.
    fn parse(&self, prop: &str) -> Result<Option<ArrayRef>, ConnectorError> {
        let Some((key, value)) = self.get(prop) else {
            return Ok(None);
        };
        let data_type = self.data_type();
        let bad = || invalid(key, format!("cannot parse '{value}' as {data_type}"));
        let text: ArrayRef = Arc::new(StringArray::from(vec![value.trim()]));
        let parsed =
            cast_with_options(&text, data_type, &CastOptions::default()).map_err(|_| bad())?;
        if parsed.is_null(0) {
            return Err(bad());
        }
        Ok(Some(parsed))
    }

    /// The integer behind an integer-like property (unscaled for decimals,
    /// days for dates, the column's unit for timestamps).
    fn int(&self, prop: &str) -> Result<Option<i128>, ConnectorError> {
        let Some(array) = self.parse(prop)? else {
            return Ok(None);
        };
        if let Some(d) = array.as_any().downcast_ref::<Decimal128Array>() {
            return Ok(Some(d.value(0)));
        }
        let ints = cast(&array, &DataType::Int64)?;
        let ints = ints.as_any().downcast_ref::<Int64Array>();
        Ok(ints.map(|a| i128::from(a.value(0))))
    }

    fn float(&self, prop: &str, default: f64) -> Result<f64, ConnectorError> {
        let Some(array) = self.parse(prop)? else {
            return Ok(default);
        };
        let floats = cast(&array, &DataType::Float64)?;
        let value = floats
            .as_any()
            .downcast_ref::<Float64Array>()
            .map_or(f64::NAN, |a| a.value(0));
        if !value.is_finite() {
            return Err(invalid(&self.key(prop), "must be a finite number"));
        }
        Ok(value)
    }

    fn sequence(&self) -> Result<(Gen, Option<u64>), ConnectorError> {
        let max = sequence_max(self.data_type());
        let min = if matches!(self.data_type(), DataType::Decimal128(..)) {
            -max
        } else {
            -max - 1
        };
        let number = |prop: &str| -> Result<Option<i128>, ConnectorError> {
            let Some((key, value)) = self.get(prop) else {
                return Ok(None);
            };
            let n = value.trim().parse::<i64>().ok().map(i128::from);
            match n.filter(|n| (min..=max).contains(n)) {
                Some(n) => Ok(Some(n)),
                None => Err(invalid(
                    key,
                    format!("expected an integer in [{min}, {max}], got '{value}'"),
                )),
            }
        };
        let start = number("start")?.unwrap_or(0);
        let limit = match number("end")? {
            Some(end) if end < start => {
                return Err(invalid(
                    &self.key("end"),
                    format!("must not be below start {start}"),
                ))
            }
            Some(end) => Some(u64::try_from(end - start + 1).unwrap_or(u64::MAX)),
            // Only a 64-bit sequence may go on for ever.
            None if max < i128::from(i64::MAX) => {
                return Err(ConnectorError::MissingOption(self.key("end")))
            }
            None => None,
        };
        let scale = match self.data_type() {
            DataType::Decimal128(_, s) => *s,
            _ => 0,
        };
        let start = i64::try_from(start).unwrap_or_default();
        Ok((Gen::Sequence { start, scale }, limit))
    }

    fn timestamp(&self, unit: &TimeUnit) -> Result<Gen, ConnectorError> {
        let unit_nanos = unit_nanos(unit);
        let start = self.int("start")?.unwrap_or(0) * unit_nanos;
        let step = match self.get("step") {
            None => 1_000_000_000,
            Some((key, value)) => {
                let step = parse_duration(value).ok_or_else(|| {
                    invalid(
                        key,
                        format!(
                            "expected an interval such as '1 second' or '100 ms', got '{value}'"
                        ),
                    )
                })?;
                step.as_nanos() as i128
            }
        };
        Ok(Gen::Timestamp {
            start,
            step,
            unit_nanos,
        })
    }

    fn text(&self) -> Result<Gen, ConnectorError> {
        let length = match self.get("length") {
            None => DEFAULT_STRING_LENGTH,
            Some((key, value)) => value
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|l| *l <= MAX_STRING_LENGTH)
                .ok_or_else(|| {
                    invalid(
                        key,
                        format!("expected a length up to {MAX_STRING_LENGTH}, got '{value}'"),
                    )
                })?,
        };
        let var_len = match self.get("var-len") {
            None => false,
            Some((key, value)) => match value.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(invalid(key, "expected 'true' or 'false'")),
            },
        };
        Ok(Gen::Text { length, var_len })
    }

    fn random_float(&self) -> Result<Gen, ConnectorError> {
        let (min, max) = (self.float("min", 0.0)?, self.float("max", 1.0)?);
        if min > max {
            return Err(invalid(
                &self.key("max"),
                format!("must not be below min {min}"),
            ));
        }
        Ok(Gen::Float { min, max })
    }

    fn random_int(&self) -> Result<Gen, ConnectorError> {
        let (default_min, default_max) = default_range(self.data_type());
        let min = self.int("min")?.unwrap_or(default_min);
        let max = self.int("max")?.unwrap_or(default_max);
        if min > max {
            return Err(invalid(&self.key("max"), "must not be below min"));
        }
        Ok(Gen::Int { min, max })
    }

    fn null_rate(&self) -> Result<f64, ConnectorError> {
        let Some((key, value)) = self.get("null-rate") else {
            return Ok(0.0);
        };
        let rate = value.trim().parse::<f64>().ok();
        let Some(rate) = rate.filter(|r| (0.0..=1.0).contains(r)) else {
            return Err(invalid(
                key,
                format!("expected a number in [0, 1], got '{value}'"),
            ));
        };
        if rate > 0.0 && !self.field.is_nullable() {
            let name = self.field.name();
            return Err(invalid(key, format!("column '{name}' is NOT NULL")));
        }
        Ok(rate)
    }
}

/// Largest value a sequence may reach in a column of this type.
fn sequence_max(data_type: &DataType) -> i128 {
    let max = match data_type {
        DataType::Int8 => i128::from(i8::MAX),
        DataType::Int16 => i128::from(i16::MAX),
        DataType::Int32 => i128::from(i32::MAX),
        DataType::Decimal128(p, s) => {
            let digits = 10i128.saturating_pow(u32::from(*p)) - 1;
            let factor = 10i128.saturating_pow(s.unsigned_abs().into());
            if *s >= 0 {
                digits / factor
            } else {
                digits.saturating_mul(factor)
            }
        }
        _ => i128::MAX,
    };
    max.min(i128::from(i64::MAX))
}

/// Default `[min, max]` of a random integer-like column: the type's range,
/// 2000 to 2029 for dates, 2020 to 2029 for timestamps.
fn default_range(data_type: &DataType) -> (i128, i128) {
    let days = |y| {
        NaiveDate::from_ymd_opt(y, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map_or(0, |t| i128::from(t.and_utc().timestamp()) / 86_400)
    };
    match data_type {
        DataType::Int8 => (i8::MIN.into(), i8::MAX.into()),
        DataType::Int16 => (i16::MIN.into(), i16::MAX.into()),
        DataType::Int32 => (i32::MIN.into(), i32::MAX.into()),
        DataType::Decimal128(p, _) => {
            let max = 10i128.saturating_pow(u32::from(*p)) - 1;
            (-max, max)
        }
        DataType::Date32 => (days(2000), days(2030) - 1),
        DataType::Timestamp(unit, _) => {
            let per_day = 86_400_000_000_000 / unit_nanos(unit);
            (days(2020) * per_day, days(2030) * per_day - 1)
        }
        _ => (i64::MIN.into(), i64::MAX.into()),
    }
}

/// A column's generator.
#[derive(Debug)]
pub(super) struct Column {
    key: u64,
    data_type: DataType,
    gen: Gen,
    null_rate: f64,
}

impl Column {
    /// Builds the generator of `field` from its `fields.<column>.*`
    /// properties. Also returns how many rows it can produce, if limited.
    pub(super) fn new(
        field: &Field,
        props: &Props,
        seed: u64,
    ) -> Result<(Column, Option<u64>), ConnectorError> {
        let data_type = field.data_type();
        let class = class_of(data_type).ok_or_else(|| ConnectorError::UnsupportedType {
            connector: "datagen".to_string(),
            column: field.name().clone(),
            data_type: data_type.to_string(),
        })?;
        let spec = Spec { field, props };
        let kind = match props.get("kind") {
            Some((_, v)) => v.trim().to_ascii_lowercase(),
            None if class == Class::Timestamp => "timestamp".to_string(),
            None => "random".to_string(),
        };
        let allowed: &[&str] = match (kind.as_str(), class) {
            ("sequence", Class::Integral | Class::Float | Class::Text) => &["kind", "start", "end"],
            ("timestamp", Class::Timestamp) => &["kind", "start", "step"],
            ("random", Class::Text) => &["kind", "length", "var-len", "null-rate"],
            ("random", Class::Boolean) => &["kind", "null-rate"],
            ("random", _) => &["kind", "min", "max", "null-rate"],
            ("sequence" | "timestamp", _) => {
                let message =
                    format!("kind '{kind}' does not apply to a column of type {data_type}");
                return Err(invalid(&spec.key("kind"), message));
            }
            _ => {
                let message = format!("expected 'sequence', 'random' or 'timestamp', got '{kind}'");
                return Err(invalid(&spec.key("kind"), message));
            }
        };
        if let Some((prop, (key, _))) = props.iter().find(|(p, _)| !allowed.contains(&p.as_str())) {
            let expected = allowed.join(", ");
            let message =
                format!("unknown property '{prop}' for kind '{kind}' (expected {expected})");
            return Err(invalid(key, message));
        }

        let mut limit = None;
        let gen = match (kind.as_str(), data_type) {
            ("sequence", _) => {
                let (gen, l) = spec.sequence()?;
                limit = l;
                gen
            }
            ("timestamp", DataType::Timestamp(unit, _)) => spec.timestamp(unit)?,
            _ => match class {
                Class::Text => spec.text()?,
                Class::Boolean => Gen::Bool,
                Class::Float => spec.random_float()?,
                _ => spec.random_int()?,
            },
        };
        let column = Column {
            key: splitmix64(seed ^ fnv1a(field.name().to_lowercase().as_bytes())),
            data_type: data_type.clone(),
            gen,
            null_rate: spec.null_rate()?,
        };
        Ok((column, limit))
    }

    fn is_null(&self, row: u64) -> bool {
        self.null_rate > 0.0 && unit_interval(mix(self.key ^ SALT_NULL, row)) < self.null_rate
    }

    /// An integer-like value: integer, unscaled decimal, days, or timestamp
    /// in the column's unit.
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
                // max >= min, so the true difference fits a u128.
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
                let value = nanos.div_euclid(unit_nanos);
                value.clamp(i64::MIN.into(), i64::MAX.into())
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
            Gen::Text { length, var_len } => {
                let length = if var_len && length > 0 {
                    1 + (mix(self.key ^ SALT_HIGH, row) % length as u64) as usize
                } else {
                    length
                };
                let h = mix(self.key, row);
                let mut s = String::with_capacity(length);
                // 12 base-36 digits from each 64-bit draw.
                for chunk in 0.. {
                    let mut x = splitmix64(h.wrapping_add(chunk));
                    for _ in 0..12 {
                        if s.len() == length {
                            return s;
                        }
                        s.push(char::from(ALPHABET[(x % 36) as usize]));
                        x /= 36;
                    }
                }
                s
            }
            Gen::Sequence { start, .. } => (i128::from(start) + i128::from(row)).to_string(),
            _ => String::new(),
        }
    }

    /// The values of rows `rows`, of the column's type.
    pub(super) fn array(&self, rows: Range<u64>) -> Result<ArrayRef, ConnectorError> {
        use DataType::*;
        let valid = |r: &u64| !self.is_null(*r);
        let ints = || rows.clone().map(|r| valid(&r).then(|| self.int(r)));
        let floats = || rows.clone().map(|r| valid(&r).then(|| self.float(r)));
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
            Decimal128(p, s) => {
                let values = ints().collect::<Decimal128Array>();
                Arc::new(values.with_precision_and_scale(*p, *s)?)
            }
            Date32 => Arc::new(ints().map(|v| v.map(|v| v as i32)).collect::<Date32Array>()),
            Boolean => {
                let bools = rows.map(|r| valid(&r).then(|| mix(self.key, r) & 1 == 1));
                Arc::new(bools.collect::<BooleanArray>())
            }
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
                let text: StringArray = rows.map(|r| valid(&r).then(|| self.text(r))).collect();
                match other {
                    Utf8 => Arc::new(text),
                    _ => cast(&text, other)?,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn column(
        data_type: DataType,
        nullable: bool,
        props: &[(&str, &str)],
    ) -> Result<Column, ConnectorError> {
        let field = Field::new("c", data_type, nullable);
        let props = props
            .iter()
            .map(|(p, v)| (p.to_string(), (format!("fields.c.{p}"), v.to_string())))
            .collect();
        Column::new(&field, &props, 7).map(|(c, _)| c)
    }

    fn ints(c: &Column, rows: Range<u64>) -> Vec<Option<i64>> {
        let a = cast(&c.array(rows).unwrap(), &DataType::Int64).unwrap();
        a.as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .iter()
            .collect()
    }

    fn option_of(result: Result<Column, ConnectorError>) -> String {
        match result {
            Err(ConnectorError::InvalidOption { option, .. }) => option,
            Err(e) => panic!("{e}"),
            Ok(c) => panic!("accepted {c:?}"),
        }
    }

    #[test]
    fn splitmix64_matches_the_reference() {
        // The first two outputs of the reference splitmix64 seeded with 0.
        assert_eq!(splitmix64(0), 0xe220_a839_7b1d_cdaf);
        assert_eq!(splitmix64(0x9e37_79b9_7f4a_7c15), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn random_integers_dates_and_decimals_stay_in_range() {
        let dice = column(DataType::Int32, true, &[("min", "1"), ("max", "6")]).unwrap();
        let values = ints(&dice, 0..2000);
        for v in 1..=6 {
            assert!(values.contains(&Some(v)), "{v} never drawn");
        }
        assert!(values.iter().all(|v| (1..=6).contains(&v.unwrap())));

        let small = ints(&column(DataType::Int16, true, &[]).unwrap(), 0..2000);
        assert!(small.iter().any(|v| v.unwrap() < -10_000));
        assert!(small.iter().any(|v| v.unwrap() > 10_000));

        let amounts = column(
            DataType::Decimal128(10, 2),
            true,
            &[("min", "0.05"), ("max", "0.10")],
        );
        let amounts = amounts.unwrap().array(0..500).unwrap();
        let amounts = amounts.as_any().downcast_ref::<Decimal128Array>().unwrap();
        assert_eq!(amounts.data_type(), &DataType::Decimal128(10, 2));
        assert!(amounts.values().iter().all(|v| (5..=10).contains(v)));

        // 2024-02-28 is day 19_781 after the epoch; 2024 is a leap year.
        let days = column(
            DataType::Date32,
            true,
            &[("min", "2024-02-28"), ("max", "2024-03-01")],
        );
        let days = ints(&days.unwrap(), 0..500);
        assert!(days.iter().all(|d| (19_781..=19_783).contains(&d.unwrap())));
        assert!(days.contains(&Some(19_782)));

        // Random timestamps default to 2020-01-01 .. 2030-01-01.
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        let ts = ints(&column(ts, true, &[("kind", "random")]).unwrap(), 0..500);
        assert!(ts
            .iter()
            .all(|t| (1_577_836_800_000..1_893_456_000_000).contains(&t.unwrap())));
    }

    #[test]
    fn random_floats_strings_booleans_and_nulls() {
        let f = column(DataType::Float64, true, &[("min", "-1.5"), ("max", "1.5")]).unwrap();
        let f = f.array(0..1000).unwrap();
        let f = f.as_any().downcast_ref::<Float64Array>().unwrap();
        assert!(f.values().iter().all(|v| (-1.5..=1.5).contains(v)));
        assert!(f.values().iter().any(|v| *v < -1.0) && f.values().iter().any(|v| *v > 1.0));
        let f32s = column(DataType::Float32, true, &[])
            .unwrap()
            .array(0..1000)
            .unwrap();
        let f32s = f32s.as_any().downcast_ref::<Float32Array>().unwrap();
        assert!(f32s.values().iter().all(|v| (0.0..=1.0).contains(v)));

        let names = column(
            DataType::Utf8,
            true,
            &[("length", "3"), ("null-rate", "0.5")],
        );
        let names = names.unwrap().array(0..2000).unwrap();
        let names = names.as_any().downcast_ref::<StringArray>().unwrap();
        assert!(
            (800..1200).contains(&names.null_count()),
            "{}",
            names.null_count()
        );
        let alphabet = |s: &str| s.bytes().all(|c| ALPHABET.contains(&c));
        assert!(names.iter().flatten().all(|s| s.len() == 3 && alphabet(s)));
        let long = column(DataType::Utf8, true, &[("length", "30")]).unwrap();
        assert_eq!(long.text(5).len(), 30);
        assert_eq!(
            column(DataType::Utf8, true, &[("length", "0")])
                .unwrap()
                .text(5),
            ""
        );

        let view = column(
            DataType::Utf8View,
            true,
            &[("length", "4"), ("var-len", "true")],
        );
        let view = cast(&view.unwrap().array(0..500).unwrap(), &DataType::Utf8).unwrap();
        let view = view.as_any().downcast_ref::<StringArray>().unwrap();
        let mut lengths: Vec<usize> = view.iter().flatten().map(str::len).collect();
        lengths.sort();
        lengths.dedup();
        assert_eq!(lengths, vec![1, 2, 3, 4]);

        let flags = column(DataType::Boolean, false, &[])
            .unwrap()
            .array(0..2000)
            .unwrap();
        let flags = flags.as_any().downcast_ref::<BooleanArray>().unwrap();
        assert_eq!(flags.null_count(), 0);
        assert!((800..1200).contains(&flags.true_count()));
    }

    #[test]
    fn sequences_of_each_type() {
        let field = Field::new("c", DataType::Int16, false);
        let props: Props = [("kind", "sequence"), ("start", "-2"), ("end", "2")]
            .iter()
            .map(|(p, v)| (p.to_string(), (format!("fields.c.{p}"), v.to_string())))
            .collect();
        let (c, limit) = Column::new(&field, &props, 0).unwrap();
        assert_eq!(limit, Some(5));
        assert_eq!(
            ints(&c, 0..5),
            vec![Some(-2), Some(-1), Some(0), Some(1), Some(2)]
        );

        let seq = [("kind", "sequence"), ("start", "10")];
        let f = column(DataType::Float64, false, &seq)
            .unwrap()
            .array(1..3)
            .unwrap();
        assert_eq!(
            f.as_any().downcast_ref::<Float64Array>().unwrap().values(),
            &[11.0, 12.0]
        );
        let s = column(DataType::LargeUtf8, false, &seq)
            .unwrap()
            .array(0..2)
            .unwrap();
        assert_eq!(
            cast(&s, &DataType::Utf8).unwrap().as_ref(),
            &StringArray::from(vec!["10", "11"])
        );
        // Decimal(4, 1) holds up to 999.9: the sequence can reach 999.
        let d = column(
            DataType::Decimal128(4, 1),
            false,
            &[("kind", "sequence"), ("end", "999")],
        );
        let d = d.unwrap().array(998..1000).unwrap();
        assert_eq!(
            d.as_any()
                .downcast_ref::<Decimal128Array>()
                .unwrap()
                .values(),
            &[9980, 9990]
        );
        let too_far = column(
            DataType::Decimal128(4, 1),
            false,
            &[("kind", "sequence"), ("end", "1000")],
        );
        assert_eq!(option_of(too_far), "fields.c.end");
    }

    #[test]
    fn bad_properties_name_the_option() {
        use DataType::*;
        let ts = Timestamp(TimeUnit::Second, None);
        assert_eq!(
            option_of(column(Int64, true, &[("kind", "dice")])),
            "fields.c.kind"
        );
        assert_eq!(
            option_of(column(Boolean, true, &[("kind", "sequence")])),
            "fields.c.kind"
        );
        assert_eq!(
            option_of(column(Date32, true, &[("kind", "sequence")])),
            "fields.c.kind"
        );
        assert_eq!(
            option_of(column(Int64, true, &[("kind", "timestamp")])),
            "fields.c.kind"
        );
        assert_eq!(
            option_of(column(Int64, true, &[("length", "3")])),
            "fields.c.length"
        );
        assert_eq!(
            option_of(column(Utf8, true, &[("min", "3")])),
            "fields.c.min"
        );
        assert_eq!(
            option_of(column(ts.clone(), true, &[("min", "0")])),
            "fields.c.min"
        );
        assert_eq!(
            option_of(column(Int32, true, &[("min", "ten")])),
            "fields.c.min"
        );
        assert_eq!(
            option_of(column(Int16, true, &[("max", "40000")])),
            "fields.c.max"
        );
        assert_eq!(
            option_of(column(Int32, true, &[("min", "5"), ("max", "4")])),
            "fields.c.max"
        );
        assert_eq!(
            option_of(column(Float64, true, &[("min", "2"), ("max", "1")])),
            "fields.c.max"
        );
        assert_eq!(
            option_of(column(Float64, true, &[("max", "inf")])),
            "fields.c.max"
        );
        assert_eq!(
            option_of(column(Int64, false, &[("null-rate", "0.1")])),
            "fields.c.null-rate"
        );
        assert_eq!(
            option_of(column(Utf8, true, &[("null-rate", "2")])),
            "fields.c.null-rate"
        );
        assert_eq!(
            option_of(column(Utf8, true, &[("length", "-1")])),
            "fields.c.length"
        );
        assert_eq!(
            option_of(column(Utf8, true, &[("var-len", "maybe")])),
            "fields.c.var-len"
        );
        assert_eq!(
            option_of(column(ts.clone(), true, &[("step", "1 fortnight")])),
            "fields.c.step"
        );
        assert_eq!(
            option_of(column(ts, true, &[("start", "yesterday")])),
            "fields.c.start"
        );
        let backwards = [("kind", "sequence"), ("start", "3"), ("end", "2")];
        assert_eq!(option_of(column(Int64, true, &backwards)), "fields.c.end");
        let narrow = column(Int32, true, &[("kind", "sequence")]);
        assert!(matches!(narrow, Err(ConnectorError::MissingOption(o)) if o == "fields.c.end"));
        for odd in [Binary, Decimal128(50, 0), UInt64] {
            let err = column(odd, true, &[]);
            assert!(matches!(err, Err(ConnectorError::UnsupportedType { .. })));
        }
    }
}
