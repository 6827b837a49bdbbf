//! A batch's columns built record by record: each value parsed when its
//! record is reached, so that a record's bytes come from memory once for
//! all its columns, where building one column after another read the
//! batch's whole text once per column.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{make_array, new_null_array, Array, ArrayRef, PrimitiveBuilder};
use datafusion::arrow::datatypes::{self as t, DataType, Field, Int64Type, TimeUnit};

use super::{cannot_parse, int64, naive, not_null, trim, LastTime, Rows};
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
    Int64(PrimitiveBuilder<Int64Type>),
    /// BIGINT values nobody reads, checked.
    Int64Checked,
    /// Timestamps without a time zone, built as their count of `unit`s
    /// (and dropped at the end if nobody reads them).
    Time {
        read: bool,
        unit: TimeUnit,
        out: PrimitiveBuilder<Int64Type>,
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
            DataType::Int64 if read => Kind::Int64(PrimitiveBuilder::with_capacity(rows)),
            DataType::Int64 => Kind::Int64Checked,
            DataType::Timestamp(unit, None) => Kind::Time {
                read,
                unit: *unit,
                out: PrimitiveBuilder::with_capacity(rows),
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
    /// NOT NULL column, makes its row malformed.
    #[inline]
    pub fn push(
        &mut self,
        batch: &mut Rows<'_>,
        rows: Range<usize>,
        value: impl Fn(usize) -> Option<&'a str>,
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
                for row in rows {
                    match number(row) {
                        None => out.append_null(),
                        Some(v) => match int64(batch.text, v) {
                            Some(n) => out.append_value(n),
                            None => {
                                out.append_null();
                                batch.reject(row, || cannot_parse(field, v));
                            }
                        },
                    }
                }
            }
            Kind::Int64Checked => {
                for row in rows {
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
                for row in rows {
                    match number(row) {
                        None => out.append_null(),
                        Some(v) => match parse(v, last) {
                            Some(n) => out.append_value(n),
                            None => {
                                out.append_null();
                                batch.reject(row, || cannot_parse(field, v));
                            }
                        },
                    }
                }
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
            Kind::Int64(mut out) => Arc::new(out.finish()),
            Kind::Time {
                mut out, read: r, ..
            } => {
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
