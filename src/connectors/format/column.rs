//! A batch's columns built record by record: each value parsed when its
//! record is reached, so that a record's bytes come from memory once for
//! all its columns, where building one column after another read the
//! batch's whole text once per column.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{make_array, new_null_array, Array, ArrayRef, PrimitiveArray};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::datatypes::{self as t, DataType, Field, Int64Type, TimeUnit};

use super::{cannot_parse, digits_in, int64, naive, not_null, trim, LastTime, Rows};
use crate::connectors::ConnectorError;

/// One column of a batch being built, or only checked, value by value.
pub(super) struct Column<'a> {
    field: &'a Field,
    kind: Kind<'a>,
}

enum Kind<'a> {
    /// A text column nobody reads that may be NULL: nothing to check.
    Unchecked,
    /// A text column nobody reads that is NOT NULL: checked for a value.
    Present,
    /// BIGINT values, built.
    Int64(Values),
    /// BIGINT values nobody reads, checked.
    Int64Checked,
    /// Timestamps without a time zone, built as their count of `unit`s
    /// (and dropped at the end if nobody reads them).
    Time {
        read: bool,
        unit: TimeUnit,
        out: Values,
        last: LastTime,
    },
    /// Any other type: the values gathered, and built (or checked) at the
    /// end as [`Rows::column`] and [`Rows::check`] do.
    Gathered {
        read: bool,
        values: Vec<Option<&'a str>>,
    },
}

impl<'a> Column<'a> {
    /// Column `field` of `rows` records, built if `read` (else checked).
    pub fn new(field: &'a Field, read: bool, rows: usize) -> Self {
        let text = matches!(
            field.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        );
        let kind = match field.data_type() {
            _ if text && !read && field.is_nullable() => Kind::Unchecked,
            _ if text && !read => Kind::Present,
            DataType::Int64 if read => Kind::Int64(Values::new(rows)),
            DataType::Int64 => Kind::Int64Checked,
            DataType::Timestamp(unit, None) => Kind::Time {
                read,
                unit: *unit,
                out: Values::new(rows),
                last: LastTime::default(),
            },
            _ => Kind::Gathered {
                read,
                values: Vec::with_capacity(rows),
            },
        };
        Column { field, kind }
    }

    /// Whether [`Column::push`] does anything.
    pub fn checks(&self) -> bool {
        !matches!(self.kind, Kind::Unchecked)
    }

    /// Adds the values of records `rows` (`value(row)`: record `row`'s,
    /// None for none); a value that does not parse, or a missing one in a
    /// NOT NULL column, makes its row malformed. With `plain`, where the
    /// values lie in the batch's text: a BIGINT of plain digits is read
    /// from there without cutting out its value first.
    #[inline]
    pub fn push(
        &mut self,
        batch: &mut Rows<'_>,
        rows: Range<usize>,
        value: impl Fn(usize) -> Option<&'a str>,
        plain: Option<Plain<'_>>,
    ) {
        let field = self.field;
        // As the cast kernel reads numbers and times: blanks around them
        // ignored, and nothing but blanks NULL.
        let number = |row| value(row).map(trim).filter(|v| !v.is_empty());
        match &mut self.kind {
            Kind::Unchecked => {}
            Kind::Present => {
                for row in rows {
                    if value(row).is_none() {
                        batch.reject(row, || not_null(field));
                    }
                }
            }
            Kind::Int64(out) => {
                let text = batch.text;
                out.extend(rows, |row| {
                    if let Some(n) = plain.as_ref().and_then(|p| p.digits(text, row)) {
                        return Some(n);
                    }
                    let v = number(row)?;
                    let n = int64(text, v);
                    if n.is_none() {
                        batch.reject(row, || cannot_parse(field, v));
                    }
                    n
                });
            }
            Kind::Int64Checked => {
                let text = batch.text;
                for row in rows {
                    if plain
                        .as_ref()
                        .is_some_and(|p| p.digits(text, row).is_some())
                    {
                        continue;
                    }
                    match number(row) {
                        None if !field.is_nullable() => batch.reject(row, || not_null(field)),
                        Some(v) if int64(batch.text, v).is_none() => {
                            batch.reject(row, || cannot_parse(field, v))
                        }
                        _ => {}
                    }
                }
            }
            Kind::Time {
                unit, out, last, ..
            } => {
                let parse = match unit {
                    TimeUnit::Second => naive::<t::TimestampSecondType>,
                    TimeUnit::Millisecond => naive::<t::TimestampMillisecondType>,
                    TimeUnit::Microsecond => naive::<t::TimestampMicrosecondType>,
                    TimeUnit::Nanosecond => naive::<t::TimestampNanosecondType>,
                };
                out.extend(rows, |row| {
                    let v = number(row)?;
                    let n = parse(v, last);
                    if n.is_none() {
                        batch.reject(row, || cannot_parse(field, v));
                    }
                    n
                });
            }
            Kind::Gathered { values, .. } => values.extend(rows.map(value)),
        }
    }

    /// The column built (a column of type Null for one only checked), its
    /// NULLs in a NOT NULL column making their rows malformed.
    pub fn finish(self, rows: &mut Rows<'_>) -> Result<ArrayRef, ConnectorError> {
        let field = self.field;
        let mut read = true;
        let array: ArrayRef = match self.kind {
            Kind::Unchecked | Kind::Present | Kind::Int64Checked => {
                return Ok(new_null_array(&DataType::Null, rows.keep.len()));
            }
            Kind::Gathered { read: true, values } => return rows.column(field, values.into_iter()),
            Kind::Gathered {
                read: false,
                values,
            } => return rows.check(field, values.into_iter()),
            Kind::Int64(out) => Arc::new(out.finish()),
            Kind::Time { out, read: r, .. } => {
                read = r;
                let data = out.finish().into_data().into_builder();
                make_array(data.data_type(field.data_type().clone()).build()?)
            }
        };
        if !field.is_nullable() {
            for row in 0..array.len() {
                if array.is_null(row) {
                    rows.reject(row, || not_null(field));
                }
            }
        }
        if !read {
            return Ok(new_null_array(&DataType::Null, rows.keep.len()));
        }
        Ok(array)
    }
}

/// Where a run of plain lines' values lie in the batch's text: value `i`
/// (record `i / stride`, field `i % stride`) between `positions[i - 1]`
/// and `positions[i]` (from the start for the first, to the end for the
/// last); this column's are field `field` of each record.
#[derive(Clone, Copy)]
pub(super) struct Plain<'p> {
    pub positions: &'p [u32],
    pub stride: usize,
    pub field: usize,
}

impl Plain<'_> {
    /// Record `row`'s value, if it is 1 to 16 ASCII digits and nothing
    /// else (anything else is read the general way).
    #[inline]
    fn digits(&self, text: &[u8], row: usize) -> Option<i64> {
        let i = row * self.stride + self.field;
        let start = match i.checked_sub(1) {
            Some(before) => *self.positions.get(before)? as usize + 1,
            None => 0,
        };
        let end = self.positions.get(i).map_or(text.len(), |&p| p as usize);
        digits_in(text, start, end)
    }
}

/// 64-bit values of a column, written record after record, and the
/// records that have none.
struct Values {
    values: Vec<i64>,
    nulls: Vec<usize>,
}

impl Values {
    fn new(rows: usize) -> Self {
        Values {
            values: Vec::with_capacity(rows),
            nulls: Vec::new(),
        }
    }

    /// Adds the values of records `rows`, which follow those added so far:
    /// `value(row)`, None for a NULL. Written straight into the vector's
    /// room, which is not filled with zeros first.
    #[inline]
    fn extend(&mut self, rows: Range<usize>, mut value: impl FnMut(usize) -> Option<i64>) {
        assert_eq!(rows.start, self.values.len(), "records added in order");
        self.values.reserve(rows.len());
        let room = &mut self.values.spare_capacity_mut()[..rows.len()];
        for (slot, row) in room.iter_mut().zip(rows.clone()) {
            slot.write(value(row).unwrap_or_else(|| {
                self.nulls.push(row);
                0
            }));
        }
        // SAFETY: the first `rows.len()` slots past the old length were
        // all written just above.
        unsafe { self.values.set_len(rows.end) };
    }

    fn finish(self) -> PrimitiveArray<Int64Type> {
        let nulls = (!self.nulls.is_empty()).then(|| {
            let mut valid = vec![true; self.values.len()];
            for row in self.nulls {
                valid[row] = false;
            }
            NullBuffer::new(BooleanBuffer::from(valid))
        });
        PrimitiveArray::new(self.values.into(), nulls)
    }
}
