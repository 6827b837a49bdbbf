//! Statement results → pgwire responses: row descriptions and data rows via
//! arrow-pg, command completion tags, and Describe types.

use std::sync::Arc;

use arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch, into_pg_type};
use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use futures::stream;
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;

use super::errors::{error_info, user_error, PROTOCOL_VIOLATION};
use crate::session::StatementResult;

/// The pgwire response for one statement's result, with result columns
/// encoded in `format`.
pub(crate) fn statement_response(
    result: StatementResult,
    format: &Format,
) -> PgWireResult<Response> {
    match result {
        StatementResult::Rows { schema, batches } => {
            Ok(Response::Query(rows_response(&schema, batches, format)?))
        }
        StatementResult::Command { tag, rows } => Ok(Response::Execution(command_tag(&tag, rows))),
    }
}

/// Row description plus data rows. Rows are encoded eagerly so that a failure
/// inside the encoder happens here (where the caller catches panics), not
/// while pgwire streams them to the socket.
pub(crate) fn rows_response(
    schema: &Schema,
    batches: Vec<RecordBatch>,
    format: &Format,
) -> PgWireResult<QueryResponse> {
    let fields = result_fields(schema, format)?;
    let mut rows = Vec::with_capacity(batches.iter().map(RecordBatch::num_rows).sum());
    for batch in batches {
        // arrow-pg 0.16 encodes a NULL interval as a zero interval
        let null_intervals: Vec<(usize, ArrayRef)> = batch
            .columns()
            .iter()
            .enumerate()
            .filter(|(_, c)| matches!(c.data_type(), DataType::Interval(_)) && c.null_count() > 0)
            .map(|(i, c)| (i, c.clone()))
            .collect();
        let batch = super::text::postgres_text(batch, &fields);
        let encoded = encode_recordbatch(fields.clone(), batch);
        if null_intervals.is_empty() {
            rows.extend(encoded);
        } else {
            rows.extend(encoded.enumerate().map(|(r, row)| {
                row.map(|row| {
                    null_out(row, |c| {
                        null_intervals
                            .iter()
                            .any(|(i, col)| *i == c && col.is_null(r))
                    })
                })
            }));
        }
    }
    Ok(QueryResponse::new(fields, stream::iter(rows)))
}

/// Rewrites the cells of `row` for which `is_null(column)` holds as NULL.
fn null_out(mut row: DataRow, is_null: impl Fn(usize) -> bool) -> DataRow {
    let mut out = BytesMut::with_capacity(row.data.len());
    let mut data = &row.data[..];
    for column in 0..row.field_count.max(0) as usize {
        let Some((len, rest)) = data.split_first_chunk::<4>() else {
            return row; // not a well-formed row: leave it alone
        };
        let len = i32::from_be_bytes(*len);
        let width = usize::try_from(len).unwrap_or(0).min(rest.len());
        if is_null(column) {
            out.put_i32(-1);
        } else {
            out.put_i32(len);
            out.put_slice(&rest[..width]);
        }
        data = &rest[width..];
    }
    row.data = out;
    row
}

/// Field descriptions for a result schema, after checking that the client
/// asked for a usable number of result format codes.
/// A column of Arrow type `Null` (e.g. `SELECT NULL`, or `$1` before its
/// type is known) is announced as text, as Postgres does; its values are
/// NULL whatever the type says.
pub(crate) fn result_fields(schema: &Schema, format: &Format) -> PgWireResult<Arc<Vec<FieldInfo>>> {
    check_format_count(format, schema.fields().len(), "result")?;
    let fields = if schema.fields().iter().any(|f| f.data_type().is_null()) {
        let texts: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| match f.data_type() {
                DataType::Null => f.as_ref().clone().with_data_type(DataType::Utf8),
                _ => f.as_ref().clone(),
            })
            .collect();
        arrow_schema_to_pg_fields(&Schema::new(texts), format, None)?
    } else {
        arrow_schema_to_pg_fields(schema, format, None)?
    };
    Ok(Arc::new(fields))
}

/// Postgres accepts zero, one, or exactly one format code per column or
/// parameter; anything else would make pgwire index out of bounds.
pub(crate) fn check_format_count(format: &Format, expected: usize, what: &str) -> PgWireResult<()> {
    match format {
        Format::Individual(codes) if codes.len() != expected => Err(user_error(error_info(
            PROTOCOL_VIOLATION,
            format!(
                "bind message has {} {what} formats but query has {expected} {what} columns",
                codes.len()
            ),
        ))),
        _ => Ok(()),
    }
}

/// The command completion tag. The session may give the complete tag
/// (`INSERT 0 3`), or leave the row count to `rows` (`INSERT 0` or `INSERT`
/// with `Some(3)`, `DELETE` with `Some(2)`).
pub(crate) fn command_tag(tag: &str, rows: Option<usize>) -> Tag {
    let tag = tag.trim();
    let Some(n) = rows else {
        return Tag::new(tag);
    };
    let words: Vec<&str> = tag.split_whitespace().collect();
    let numbers = words
        .iter()
        .rev()
        .take_while(|w| w.bytes().all(|b| b.is_ascii_digit()))
        .count();
    let insert = words.len() == numbers + 1 && words[0].eq_ignore_ascii_case("INSERT");
    match (insert, numbers) {
        // `INSERT oid rows`
        (true, 0) => Tag::new(tag).with_oid(0).with_rows(n),
        (true, 1) | (false, 0) => Tag::new(tag).with_rows(n),
        _ => Tag::new(tag),
    }
}

/// The wire type announced for a `$n` parameter, and the Arrow type used to
/// decode its value. A parameter whose type cannot be inferred is text, as
/// in Postgres.
pub(crate) fn param_types(inferred: Option<&DataType>) -> (Type, DataType) {
    match inferred {
        None | Some(DataType::Null) => (Type::TEXT, DataType::Utf8),
        Some(dt) => match into_pg_type(dt) {
            Ok(t) if t != Type::UNKNOWN => (t, dt.clone()),
            _ => (Type::TEXT, DataType::Utf8),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgwire::messages::response::CommandComplete;

    fn rendered(tag: Tag) -> String {
        CommandComplete::from(tag).tag
    }

    #[test]
    fn tags_render_like_postgres() {
        assert_eq!(
            rendered(command_tag("CREATE STREAM", None)),
            "CREATE STREAM"
        );
        assert_eq!(rendered(command_tag("INSERT 0 3", Some(3))), "INSERT 0 3");
        assert_eq!(rendered(command_tag("INSERT", Some(3))), "INSERT 0 3");
        assert_eq!(rendered(command_tag("INSERT 0", Some(2))), "INSERT 0 2");
        assert_eq!(rendered(command_tag("INSERT 0", Some(0))), "INSERT 0 0");
        assert_eq!(rendered(command_tag("insert", Some(1))), "insert 0 1");
        assert_eq!(rendered(command_tag("UPDATE", Some(0))), "UPDATE 0");
        assert_eq!(rendered(command_tag("DELETE", Some(2))), "DELETE 2");
        assert_eq!(rendered(command_tag("UPDATE 1", Some(1))), "UPDATE 1");
        assert_eq!(rendered(command_tag("SELECT 5", None)), "SELECT 5");
        assert_eq!(rendered(command_tag("FLUSH", None)), "FLUSH");
        assert_eq!(
            rendered(command_tag("DROP MATERIALIZED VIEW", None)),
            "DROP MATERIALIZED VIEW"
        );
    }

    #[test]
    fn bad_format_counts_are_rejected() {
        assert!(check_format_count(&Format::UnifiedText, 3, "result").is_ok());
        assert!(check_format_count(&Format::UnifiedBinary, 0, "result").is_ok());
        assert!(check_format_count(&Format::Individual(vec![0, 1]), 2, "result").is_ok());
        assert!(check_format_count(&Format::Individual(vec![0, 1]), 3, "result").is_err());
    }

    #[test]
    fn uninferable_parameters_are_text() {
        assert_eq!(param_types(None), (Type::TEXT, DataType::Utf8));
        assert_eq!(
            param_types(Some(&DataType::Null)),
            (Type::TEXT, DataType::Utf8)
        );
        assert_eq!(
            param_types(Some(&DataType::Int64)),
            (Type::INT8, DataType::Int64)
        );
    }
}
