//! Bind parameters → DataFusion `ParamValues`, in text or binary format,
//! typed by the client's Parse types or else by the session's inference.

use std::panic::AssertUnwindSafe;

use arrow_pg::datatypes::df::deserialize_parameters;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use pgwire::api::portal::Portal;
use pgwire::error::PgWireResult;

use super::encode::{check_format_count, param_types};
use super::errors::{error_info, panic_info, parameter_error, sqlstate, user_error};
use crate::session::ErrorCategory;

/// Whether the client gave a type in Parse for every parameter (then the
/// session need not be asked).
pub(crate) fn all_typed_by_client<S: Clone>(portal: &Portal<S>) -> bool {
    (0..portal.parameter_len()).all(|i| client_type(portal, i))
}

fn client_type<S>(portal: &Portal<S>, i: usize) -> bool {
    portal
        .statement
        .parameter_types
        .get(i)
        .is_some_and(Option::is_some)
}

/// Decodes the portal's parameters. `inferred` holds the session's type for
/// each `$n` (as announced by Describe); a type the client gave in Parse
/// decides the wire format instead (the inferred type, if any, is what the
/// value is then coerced to). Unknown types are text.
pub(crate) fn decode<S: Clone>(
    portal: &Portal<S>,
    inferred: &[Option<DataType>],
) -> PgWireResult<ParamValues> {
    let count = portal.parameter_len();
    check_format_count(&portal.parameter_format, count, "parameter")?;
    let types: Vec<Option<DataType>> = (0..count)
        .map(|i| {
            let dt = inferred.get(i).and_then(Option::as_ref);
            if client_type(portal, i) {
                dt.filter(|dt| **dt != DataType::Null).cloned()
            } else {
                Some(param_types(dt).1)
            }
        })
        .collect();
    let type_refs: Vec<Option<&DataType>> = types.iter().map(Option::as_ref).collect();
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| {
        deserialize_parameters(portal, &type_refs)
    }))
    .map_err(|p| user_error(panic_info(p.as_ref())))?
    .map_err(parameter_error)?;
    // arrow-pg skips a NULL whose type it cannot resolve; never let the
    // values shift against their placeholders.
    let decoded_count = match &decoded {
        ParamValues::List(values) => values.len(),
        ParamValues::Map(_) => count,
    };
    if decoded_count != count {
        return Err(user_error(error_info(
            sqlstate(ErrorCategory::InvalidParameterValue),
            format!(
                "could decode only {decoded_count} of {count} parameters \
                 (a NULL of an unsupported type?)"
            ),
        )));
    }
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use datafusion::scalar::ScalarValue;
    use pgwire::api::stmt::StoredStatement;
    use pgwire::api::Type;
    use pgwire::error::PgWireError;
    use pgwire::messages::extendedquery::Bind;

    use super::*;

    fn portal(
        client_types: Vec<Option<Type>>,
        formats: Vec<i16>,
        values: Vec<Option<&[u8]>>,
    ) -> Portal<String> {
        let stmt = StoredStatement::new("s".into(), "SELECT".to_owned(), client_types);
        let bind = Bind::new(
            None,
            None,
            formats,
            values
                .into_iter()
                .map(|v| v.map(Bytes::copy_from_slice))
                .collect(),
            vec![],
        );
        Portal::try_new(&bind, Arc::new(stmt)).unwrap()
    }

    fn scalars(values: ParamValues) -> Vec<ScalarValue> {
        match values {
            ParamValues::List(v) => v.into_iter().map(|s| s.value).collect(),
            ParamValues::Map(_) => panic!("expected a list"),
        }
    }

    #[test]
    fn text_parameters_use_inferred_types() {
        let p = portal(
            vec![],
            vec![],
            vec![Some(b"42"), Some(b"hi"), None, Some(b"t")],
        );
        let inferred = [Some(DataType::Int64), None, None, Some(DataType::Boolean)];
        assert_eq!(
            scalars(decode(&p, &inferred).unwrap()),
            [
                ScalarValue::Int64(Some(42)),
                ScalarValue::Utf8(Some("hi".into())),
                ScalarValue::Utf8(None),
                ScalarValue::Boolean(Some(true)),
            ]
        );
    }

    #[test]
    fn binary_parameters_use_inferred_types() {
        let p = portal(
            vec![],
            vec![1],
            vec![Some(&7i64.to_be_bytes()), Some(&2.5f64.to_be_bytes()), None],
        );
        let inferred = [
            Some(DataType::Int64),
            Some(DataType::Float64),
            Some(DataType::Int32),
        ];
        assert_eq!(
            scalars(decode(&p, &inferred).unwrap()),
            [
                ScalarValue::Int64(Some(7)),
                ScalarValue::Float64(Some(2.5)),
                ScalarValue::Int32(None),
            ]
        );
    }

    #[test]
    fn client_types_decide_the_wire_format() {
        // int4 from the client, coerced to the inferred int64
        let p = portal(
            vec![Some(Type::INT4)],
            vec![1],
            vec![Some(&5i32.to_be_bytes())],
        );
        assert_eq!(
            scalars(decode(&p, &[Some(DataType::Int64)]).unwrap()),
            [ScalarValue::Int64(Some(5))]
        );
        // nothing inferred: the client's type as is
        let p = portal(
            vec![Some(Type::INT4)],
            vec![1],
            vec![Some(&5i32.to_be_bytes())],
        );
        assert_eq!(
            scalars(decode(&p, &[]).unwrap()),
            [ScalarValue::Int32(Some(5))]
        );
        assert!(all_typed_by_client(&p));
    }

    #[test]
    fn bad_values_are_client_errors() {
        let code = |e: PgWireError| match e {
            PgWireError::UserError(info) => info.code,
            other => panic!("not a user error: {other:?}"),
        };
        let p = portal(vec![], vec![], vec![Some(b"forty-two")]);
        assert_eq!(
            code(decode(&p, &[Some(DataType::Int64)]).unwrap_err()),
            "22P02"
        );
        // binary int8 with a wrong length
        let p = portal(vec![], vec![1], vec![Some(b"\x01\x02")]);
        assert_eq!(
            code(decode(&p, &[Some(DataType::Int64)]).unwrap_err()),
            "22P02"
        );
        // two format codes for three parameters
        let p = portal(vec![], vec![0, 1], vec![Some(b"1"), Some(b"2"), Some(b"3")]);
        assert_eq!(code(decode(&p, &[]).unwrap_err()), "08P01");
    }
}
