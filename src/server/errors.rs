//! Error mapping for the wire: `ErrorCategory` → SQLSTATE (the one place it
//! is decided) and `SessionError` / panics → Postgres `ErrorInfo`.

use std::any::Any;

use pgwire::error::{ErrorInfo, PgWireError};

use crate::session::{ErrorCategory, SessionError};

/// The SQLSTATE code Postgres clients see for an error category.
pub fn sqlstate(category: ErrorCategory) -> &'static str {
    match category {
        ErrorCategory::Syntax => "42601",
        ErrorCategory::UndefinedTable => "42P01",
        ErrorCategory::UndefinedColumn => "42703",
        ErrorCategory::UndefinedObject => "42704",
        ErrorCategory::DuplicateObject => "42P07",
        ErrorCategory::FeatureNotSupported => "0A000",
        ErrorCategory::DependentObjectsStillExist => "2BP01",
        ErrorCategory::InvalidParameterValue => "22023",
        ErrorCategory::UniqueViolation => "23505",
        ErrorCategory::NotNullViolation => "23502",
        ErrorCategory::DivisionByZero => "22012",
        ErrorCategory::InvalidTextRepresentation => "22P02",
        ErrorCategory::NumericValueOutOfRange => "22003",
        ErrorCategory::InvalidDatetimeFormat => "22007",
        ErrorCategory::InvalidRegularExpression => "2201B",
        ErrorCategory::DataException => "22000",
        ErrorCategory::DatatypeMismatch => "42804",
        ErrorCategory::UndefinedFile => "58P01",
        ErrorCategory::IoError => "58030",
        ErrorCategory::Internal => "XX000",
    }
}

/// SQLSTATE for a malformed parameter value sent with Bind.
pub(crate) const INVALID_TEXT_REPRESENTATION: &str = "22P02";
/// SQLSTATE for a message that breaks the protocol (e.g. bad format counts).
pub(crate) const PROTOCOL_VIOLATION: &str = "08P01";
/// SQLSTATE for an internal error (a panic caught in a statement).
pub(crate) const INTERNAL: &str = "XX000";

/// An `ERROR`-severity error with the given code and message.
pub(crate) fn error_info(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message.into())
}

/// The wire form of a session error: its category's SQLSTATE and its Display.
pub(crate) fn session_error_info(e: &SessionError) -> ErrorInfo {
    error_info(sqlstate(e.category()), e.to_string())
}

/// The wire form of a panic caught while running a statement.
pub(crate) fn panic_info(payload: &(dyn Any + Send)) -> ErrorInfo {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown cause".to_owned());
    error_info(INTERNAL, format!("internal error: {what}"))
}

/// Wraps an `ErrorInfo` so that pgwire sends it as an ErrorResponse.
pub(crate) fn user_error(info: ErrorInfo) -> PgWireError {
    PgWireError::UserError(Box::new(info))
}

/// Gives a parameter decoding failure a SQLSTATE a client can act on.
pub(crate) fn parameter_error(e: PgWireError) -> PgWireError {
    match e {
        PgWireError::UserError(_) => e,
        PgWireError::FailedToParseParameter(inner) => user_error(error_info(
            INVALID_TEXT_REPRESENTATION,
            format!("invalid parameter value: {inner}"),
        )),
        other => user_error(error_info(
            sqlstate(ErrorCategory::InvalidParameterValue),
            format!("invalid parameter: {other}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [(ErrorCategory, &str); 20] = [
        (ErrorCategory::Syntax, "42601"),
        (ErrorCategory::UndefinedTable, "42P01"),
        (ErrorCategory::UndefinedColumn, "42703"),
        (ErrorCategory::UndefinedObject, "42704"),
        (ErrorCategory::DuplicateObject, "42P07"),
        (ErrorCategory::FeatureNotSupported, "0A000"),
        (ErrorCategory::DependentObjectsStillExist, "2BP01"),
        (ErrorCategory::InvalidParameterValue, "22023"),
        (ErrorCategory::UniqueViolation, "23505"),
        (ErrorCategory::NotNullViolation, "23502"),
        (ErrorCategory::DivisionByZero, "22012"),
        (ErrorCategory::InvalidTextRepresentation, "22P02"),
        (ErrorCategory::NumericValueOutOfRange, "22003"),
        (ErrorCategory::InvalidDatetimeFormat, "22007"),
        (ErrorCategory::InvalidRegularExpression, "2201B"),
        (ErrorCategory::DataException, "22000"),
        (ErrorCategory::DatatypeMismatch, "42804"),
        (ErrorCategory::UndefinedFile, "58P01"),
        (ErrorCategory::IoError, "58030"),
        (ErrorCategory::Internal, "XX000"),
    ];

    #[test]
    fn every_category_has_its_sqlstate() {
        for (category, code) in ALL {
            assert_eq!(sqlstate(category), code, "{category:?}");
        }
    }

    #[test]
    fn sqlstates_are_five_distinct_characters() {
        let mut codes: Vec<&str> = ALL.iter().map(|(c, _)| sqlstate(*c)).collect();
        assert!(codes
            .iter()
            .all(|c| c.len() == 5 && c.chars().all(|ch| ch.is_ascii_alphanumeric())));
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ALL.len());
    }

    #[test]
    fn session_errors_keep_their_message() {
        let e = SessionError::NotSupported("SUBSCRIBE over the extended protocol".into());
        let info = session_error_info(&e);
        assert_eq!(info.code, "0A000");
        assert_eq!(info.severity, "ERROR");
        assert_eq!(
            info.message,
            "SUBSCRIBE over the extended protocol is not supported"
        );

        let e = SessionError::UniqueViolation {
            table: "prices".into(),
            key: "AAPL".into(),
        };
        assert_eq!(session_error_info(&e).code, "23505");
    }

    #[test]
    fn panics_become_internal_errors() {
        let info = panic_info(&"boom");
        assert_eq!(info.code, "XX000");
        assert_eq!(info.message, "internal error: boom");
        let info = panic_info(&String::from("index out of bounds"));
        assert_eq!(info.message, "internal error: index out of bounds");
        let info = panic_info(&42u8);
        assert_eq!(info.message, "internal error: unknown cause");
    }

    #[test]
    fn parameter_errors_get_a_sqlstate() {
        let e = parameter_error(PgWireError::FailedToParseParameter("bad digit".into()));
        match e {
            PgWireError::UserError(info) => {
                assert_eq!(info.code, "22P02");
                assert!(info.message.contains("bad digit"));
            }
            other => panic!("unexpected {other:?}"),
        }
        match parameter_error(PgWireError::ParameterIndexOutOfBound(3)) {
            PgWireError::UserError(info) => assert_eq!(info.code, "22023"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
