//! `DATE_FORMAT(ts, pattern)`: Flink's timestamp formatting, with the pattern
//! letters of Java's `DateTimeFormatter` (`yyyy-MM-dd HH:mm:ss.SSS`). The
//! pattern is compiled once per batch and each value is written digit by
//! digit. A pattern holding `%` keeps the strftime meaning DataFusion gives
//! `date_format` (an alias of its `to_char`), and is handed to it.

use std::fmt::Write;
use std::sync::Arc;

use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampNanosecondType};
use datafusion::arrow::datatypes::{Field as ArrowField, FieldRef};
use datafusion::common::{exec_err, plan_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{ArgColumn, FunctionError};

use super::civil::{civil_from_days, NANOS_PER_DAY};

/// The `date_format` function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DateFormat {
    signature: Signature,
}

impl DateFormat {
    pub fn new() -> Self {
        DateFormat {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Default for DateFormat {
    fn default() -> Self {
        Self::new()
    }
}

impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        "date_format"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        let [time, pattern] = arg_types else {
            return plan_err!("DATE_FORMAT takes a timestamp and a pattern");
        };
        Ok(vec![
            super::timestamp_arg("DATE_FORMAT", time)?,
            string_arg(pattern)?,
        ])
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    /// Checks a constant pattern when the query is planned.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if let Some(p) = super::constant_text(args.scalar_arguments, 1) {
            if !p.contains('%') {
                Pattern::compile(p).map_err(FunctionError::BadDatePattern)?;
            }
        }
        Ok(Arc::new(ArrowField::new(self.name(), DataType::Utf8, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let pattern = ArgColumn::new(&args.args[1], &DataType::Utf8)?;
        let patterns = pattern.array.as_string::<i32>();
        if pattern.constant && patterns.is_valid(0) && patterns.value(0).contains('%') {
            return datafusion::functions::datetime::to_char().invoke_with_args(args);
        }
        let times = ArgColumn::new(&args.args[0], &args.args[0].data_type())?;
        let rows = if times.constant && pattern.constant {
            1
        } else {
            args.number_rows
        };
        let out = format_array(&times, &pattern, rows)?;
        super::columnar(out, times.constant && pattern.constant)
    }
}

fn string_arg(t: &DataType) -> Result<DataType> {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View | DataType::Null => {
            Ok(DataType::Utf8)
        }
        other => plan_err!("DATE_FORMAT's pattern must be text, not {other}"),
    }
}

/// Formats `rows` timestamps, each with the pattern of its row.
fn format_array(times: &ArgColumn, pattern: &ArgColumn, rows: usize) -> Result<ArrayRef> {
    let tz = match times.array.data_type() {
        DataType::Timestamp(_, Some(tz)) => Some(tz.parse::<Tz>()?),
        _ => None,
    };
    let ns = cast(
        &times.array,
        &DataType::Timestamp(TimeUnit::Nanosecond, None),
    )?;
    let ns = ns.as_primitive::<TimestampNanosecondType>();
    let patterns = pattern.array.as_string::<i32>();
    let mut out = StringBuilder::with_capacity(rows, rows * 16);
    let mut compiled: Option<(&str, Pattern)> = None;
    let mut text = String::new();
    for i in 0..rows {
        let (t, p) = (times.row(i), pattern.row(i));
        if ns.is_null(t) || patterns.is_null(p) {
            out.append_null();
            continue;
        }
        let p = patterns.value(p);
        if compiled.as_ref().is_none_or(|(c, _)| *c != p) {
            if p.contains('%') {
                return exec_err!("DATE_FORMAT: a strftime pattern ('%') must be a constant");
            }
            compiled = Some((
                p,
                Pattern::compile(p).map_err(FunctionError::BadDatePattern)?,
            ));
        }
        let pattern = &compiled.as_ref().expect("compiled above").1;
        let mut t = ns.value(t);
        if let Some(tz) = &tz {
            t += local_offset_nanos(tz, t);
        }
        text.clear();
        pattern.write(t, &mut text);
        out.append_value(&text);
    }
    Ok(Arc::new(out.finish()))
}

/// The offset of `tz` from UTC at the instant `utc_nanos`, in nanoseconds.
fn local_offset_nanos(tz: &Tz, utc_nanos: i64) -> i64 {
    use chrono::{Offset, TimeZone};
    let utc = chrono::DateTime::from_timestamp_nanos(utc_nanos).naive_utc();
    tz.offset_from_utc_datetime(&utc).fix().local_minus_utc() as i64 * 1_000_000_000
}

/// A numeric field of a date and time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Field {
    Year,
    Month,
    Day,
    DayOfYear,
    /// `H`: 0–23.
    Hour,
    /// `k`: 1–24.
    ClockHourOfDay,
    /// `K`: 0–11.
    HourOfAmPm,
    /// `h`: 1–12.
    ClockHourOfAmPm,
    Minute,
    Second,
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq)]
enum Item {
    Literal(String),
    /// A number, zero-padded to at least `width` digits.
    Number(Field, usize),
    /// `yy`: the last two digits of the year.
    TwoDigitYear,
    /// `S`..: the first `n` digits of the fraction of the second.
    Fraction(usize),
    /// `MMM` (short), `MMMM` (full), `MMMMM` (narrow).
    MonthName(TextStyle),
    /// `E`/`EE`/`EEE` (short), `EEEE` (full), `EEEEE` (narrow).
    DayName(TextStyle),
    /// `a`: AM or PM.
    AmPm,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum TextStyle {
    Short,
    Full,
    Narrow,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
/// Sunday first, as `days_from_sunday` counts.
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    items: Vec<Item>,
}

impl Pattern {
    /// Compiles a `DateTimeFormatter` pattern; the error says what to change.
    pub fn compile(pattern: &str) -> Result<Pattern, String> {
        let chars: Vec<char> = pattern.chars().collect();
        let mut items = Vec::new();
        let mut literal = String::new();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if c == '\'' {
                // '' is a quote; 'text' is text.
                if chars.get(i + 1) == Some(&'\'') {
                    literal.push('\'');
                    i += 2;
                    continue;
                }
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => {
                            return Err(format!(
                                "DATE_FORMAT pattern '{pattern}' has an unterminated quote"
                            ))
                        }
                        Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                            literal.push('\'');
                            j += 2;
                        }
                        Some('\'') => break,
                        Some(&ch) => {
                            literal.push(ch);
                            j += 1;
                        }
                    }
                }
                i = j + 1;
                continue;
            }
            if !c.is_ascii_alphabetic() {
                match c {
                    // Optional sections: a timestamp has every field, so their content is printed.
                    '[' | ']' => {}
                    '#' | '{' | '}' => {
                        return Err(format!(
                            "DATE_FORMAT pattern '{pattern}': '{c}' is reserved; quote it ('{c}')"
                        ))
                    }
                    _ => literal.push(c),
                }
                i += 1;
                continue;
            }
            let mut n = 1;
            while chars.get(i + n) == Some(&c) {
                n += 1;
            }
            let too_many = || {
                Err(format!(
                    "DATE_FORMAT pattern '{pattern}': too many '{c}' letters ({n})"
                ))
            };
            let item = match c {
                'y' if n == 2 => Item::TwoDigitYear,
                'y' => Item::Number(Field::Year, n),
                'M' | 'L' => match n {
                    1 | 2 => Item::Number(Field::Month, n),
                    3 => Item::MonthName(TextStyle::Short),
                    4 => Item::MonthName(TextStyle::Full),
                    5 => Item::MonthName(TextStyle::Narrow),
                    _ => return too_many(),
                },
                'E' => match n {
                    1..=3 => Item::DayName(TextStyle::Short),
                    4 => Item::DayName(TextStyle::Full),
                    5 => Item::DayName(TextStyle::Narrow),
                    _ => return too_many(),
                },
                'a' if n == 1 => Item::AmPm,
                'D' if n <= 3 => Item::Number(Field::DayOfYear, n),
                'S' if n <= 9 => Item::Fraction(n),
                'd' | 'H' | 'k' | 'K' | 'h' | 'm' | 's' if n <= 2 => {
                    let field = match c {
                        'd' => Field::Day,
                        'H' => Field::Hour,
                        'k' => Field::ClockHourOfDay,
                        'K' => Field::HourOfAmPm,
                        'h' => Field::ClockHourOfAmPm,
                        'm' => Field::Minute,
                        _ => Field::Second,
                    };
                    Item::Number(field, n)
                }
                'a' | 'D' | 'S' | 'd' | 'H' | 'k' | 'K' | 'h' | 'm' | 's' => return too_many(),
                _ => {
                    return Err(format!(
                        "DATE_FORMAT pattern '{pattern}': the letter '{c}' is not supported \
                         (supported: y M L d D E a H k K h m s S; quote text as 'text')"
                    ))
                }
            };
            if !literal.is_empty() {
                items.push(Item::Literal(std::mem::take(&mut literal)));
            }
            items.push(item);
            i += n;
        }
        if !literal.is_empty() {
            items.push(Item::Literal(literal));
        }
        Ok(Pattern { items })
    }

    /// Appends the local date and time `t` (nanoseconds since the epoch) to `out`.
    pub fn write(&self, t: i64, out: &mut String) {
        let days = t.div_euclid(NANOS_PER_DAY);
        let nanos = t.rem_euclid(NANOS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let secs = nanos / 1_000_000_000;
        let hour = secs / 3600;
        for item in &self.items {
            match item {
                Item::Literal(s) => out.push_str(s),
                Item::Number(field, width) => {
                    let v = match field {
                        Field::Year => year,
                        Field::Month => month as i64,
                        Field::Day => day as i64,
                        Field::DayOfYear => super::civil::day_of_year(year, month, day) as i64,
                        Field::Hour => hour,
                        Field::ClockHourOfDay => {
                            if hour == 0 {
                                24
                            } else {
                                hour
                            }
                        }
                        Field::HourOfAmPm => hour % 12,
                        Field::ClockHourOfAmPm => match hour % 12 {
                            0 => 12,
                            h => h,
                        },
                        Field::Minute => secs / 60 % 60,
                        Field::Second => secs % 60,
                    };
                    push_padded(out, v, *width);
                }
                Item::TwoDigitYear => push_padded(out, year.rem_euclid(100), 2),
                Item::Fraction(n) => {
                    let frac = nanos % 1_000_000_000;
                    push_padded(out, frac / 10i64.pow(9 - *n as u32), *n);
                }
                Item::MonthName(style) => push_name(out, MONTHS[month as usize - 1], *style),
                Item::DayName(style) => {
                    let weekday = (days + 4).rem_euclid(7) as usize;
                    push_name(out, DAYS[weekday], *style)
                }
                Item::AmPm => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            }
        }
    }
}

fn push_name(out: &mut String, name: &str, style: TextStyle) {
    match style {
        TextStyle::Full => out.push_str(name),
        TextStyle::Short => out.push_str(&name[..3]),
        TextStyle::Narrow => out.push_str(&name[..1]),
    }
}

/// `v` in decimal, zero-padded to `width` digits.
fn push_padded(out: &mut String, v: i64, width: usize) {
    if v < 0 {
        out.push('-');
    }
    let mut v = v.unsigned_abs();
    // Digits from the last, at least `width` of them.
    let mut digits = [b'0'; 20];
    let mut n = 0;
    while v > 0 || n < width.max(1) {
        if n == digits.len() {
            // Wider than any i64: zeros first.
            let _ = write!(out, "{:0>1$}", "", width - n);
            break;
        }
        digits[n] = b'0' + (v % 10) as u8;
        v /= 10;
        n += 1;
    }
    out.extend(digits[..n].iter().rev().map(|&d| d as char));
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn fmt(pattern: &str, t: i64) -> String {
        let mut s = String::new();
        Pattern::compile(pattern).unwrap().write(t, &mut s);
        s
    }

    #[test]
    fn hand_worked_values() {
        // 2024-02-29 13:05:09.007 UTC, a Thursday, the 60th day of the year.
        let t = 1_709_211_909_007_000_000;
        assert_eq!(fmt("yyyy-MM-dd HH:mm:ss.SSS", t), "2024-02-29 13:05:09.007");
        assert_eq!(fmt("yyyy-MM-dd", t), "2024-02-29");
        assert_eq!(fmt("HH:mm", t), "13:05");
        assert_eq!(fmt("yy/M/d h:m:s a", t), "24/2/29 1:5:9 PM");
        assert_eq!(fmt("EEE, d MMM yyyy", t), "Thu, 29 Feb 2024");
        assert_eq!(fmt("EEEE MMMM D", t), "Thursday February 60");
        assert_eq!(fmt("DDD 'day' ''S''", t), "060 day '0'");
        assert_eq!(fmt("k K", 0), "24 0");
        assert_eq!(fmt("yyyyy y", t), "02024 2024");
        assert_eq!(fmt(&"y".repeat(22), t), format!("{}2024", "0".repeat(18)));
        // Before 1970: 1969-12-31 23:59:59.999.
        assert_eq!(
            fmt("yyyy-MM-dd HH:mm:ss.SSS", -1_000_000),
            "1969-12-31 23:59:59.999"
        );
    }

    #[test]
    fn bad_patterns_say_what_to_change() {
        assert!(Pattern::compile("yyyy-MM-dd Q")
            .unwrap_err()
            .contains("'Q' is not supported"));
        assert!(Pattern::compile("HHH")
            .unwrap_err()
            .contains("too many 'H'"));
        assert!(Pattern::compile("'open")
            .unwrap_err()
            .contains("unterminated quote"));
        assert!(Pattern::compile("#").unwrap_err().contains("reserved"));
    }

    #[test]
    fn agrees_with_chrono_over_many_instants() {
        // The same fields through chrono's strftime, an independent formatter.
        let pairs = [
            ("yyyy-MM-dd HH:mm:ss.SSS", "%Y-%m-%d %H:%M:%S.%3f"),
            (
                "yy M d D H h K k m s a",
                "%y %-m %-d %-j %-H %-I %-I %-k %-M %-S %p",
            ),
            ("EEE EEEE MMM MMMM DDD SSSSSSSSS", "%a %A %b %B %j %9f"),
        ];
        let mut t: i64 = -2_208_988_800_000_000_000; // 1900-01-01
        let end: i64 = 4_102_444_800_000_000_000; // 2100-01-01
        let mut step: i64 = 9_876_543_210_987; // about 2.7 hours, odd nanoseconds
        let mut checked = 0;
        while t < end {
            let dt = DateTime::from_timestamp_nanos(t).naive_utc();
            for (java, strftime) in pairs {
                let mut expected = dt.format(strftime).to_string();
                if java.starts_with("yy M") {
                    // chrono has no 0-11 hour; derive K from its 0-23 hour.
                    let parts: Vec<&str> = expected.split(' ').collect();
                    let h: i64 = parts[4].parse().unwrap();
                    let k = if h == 0 { 24 } else { h };
                    expected = format!(
                        "{} {} {} {} {} {} {} {} {} {} {}",
                        parts[0],
                        parts[1],
                        parts[2],
                        parts[3],
                        parts[4],
                        parts[5],
                        h % 12,
                        k,
                        parts[8],
                        parts[9],
                        parts[10]
                    );
                }
                assert_eq!(fmt(java, t), expected, "{java} at {t}");
            }
            checked += 1;
            t += step;
            step = step.wrapping_mul(3) % 40_000_000_000_000 + 7_777_777;
        }
        assert!(checked > 1000, "{checked}");
    }
}
