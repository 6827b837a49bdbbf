//! Session errors: every failure a statement can end with, and its category
//! (which the server maps to a SQLSTATE).

use datafusion::arrow::error::ArrowError;
use datafusion::error::DataFusionError;

use crate::catalog::CatalogError;
use crate::connectors::ConnectorError;
use crate::functions::FunctionError;
use crate::planner::PlanError;
use crate::runtime::RuntimeError;

/// What kind of failure an error is, independent of the wire protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCategory {
    Syntax,
    UndefinedTable,
    UndefinedColumn,
    UndefinedObject,
    DuplicateObject,
    FeatureNotSupported,
    DependentObjectsStillExist,
    InvalidParameterValue,
    UniqueViolation,
    NotNullViolation,
    DivisionByZero,
    InvalidTextRepresentation,
    NumericValueOutOfRange,
    InvalidDatetimeFormat,
    InvalidRegularExpression,
    DataException,
    DatatypeMismatch,
    /// A file a connector reads does not exist.
    UndefinedFile,
    /// Reading or writing a file failed, or the file changed under the
    /// reader (truncated).
    IoError,
    Internal,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
    #[error("{}", df_message(.0))]
    DataFusion(#[from] DataFusionError),
    #[error("duplicate key value violates primary key of \"{table}\": {key}")]
    UniqueViolation { table: String, key: String },
    #[error("null value in column \"{column}\" of \"{table}\" violates not-null constraint")]
    NotNull { table: String, column: String },
    #[error("{0}")]
    InvalidParameter(String),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error("{0}")]
    Arrow(#[from] ArrowError),
    #[error("{0} is not supported")]
    NotSupported(String),
    /// A value of the wrong type for where it goes.
    #[error("{0}")]
    DatatypeMismatch(String),
}

impl SessionError {
    pub fn category(&self) -> ErrorCategory {
        match self {
            SessionError::Plan(e) => e.category(),
            SessionError::Catalog(e) => e.category(),
            SessionError::Runtime(_) => ErrorCategory::Internal,
            SessionError::Connector(e) => connector_category(e),
            SessionError::DataFusion(e) => datafusion_category(e),
            SessionError::UniqueViolation { .. } => ErrorCategory::UniqueViolation,
            SessionError::NotNull { .. } => ErrorCategory::NotNullViolation,
            SessionError::InvalidParameter(_) => ErrorCategory::InvalidParameterValue,
            SessionError::State(_) => ErrorCategory::Internal,
            SessionError::Arrow(e) => arrow_category(e),
            SessionError::NotSupported(_) => ErrorCategory::FeatureNotSupported,
            SessionError::DatatypeMismatch(_) => ErrorCategory::DatatypeMismatch,
        }
    }
}

/// Categorises a connector's error: a missing file, another failure to read
/// or write one (or a file cut short under the reader), a write-only
/// connector read, or (otherwise) bad options.
pub fn connector_category(e: &ConnectorError) -> ErrorCategory {
    match e {
        ConnectorError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            ErrorCategory::UndefinedFile
        }
        ConnectorError::Io { .. }
        | ConnectorError::Truncated { .. }
        | ConnectorError::CutShort { .. } => ErrorCategory::IoError,
        ConnectorError::WriteOnly(_) => ErrorCategory::FeatureNotSupported,
        _ => ErrorCategory::InvalidParameterValue,
    }
}

/// Categorises an error raised inside DataFusion (planning or execution).
pub fn datafusion_category(e: &DataFusionError) -> ErrorCategory {
    match e.find_root() {
        DataFusionError::SQL(..) => ErrorCategory::Syntax,
        DataFusionError::NotImplemented(_) => ErrorCategory::FeatureNotSupported,
        DataFusionError::SchemaError(err, _) => match **err {
            datafusion::common::SchemaError::FieldNotFound { .. } => ErrorCategory::UndefinedColumn,
            _ => ErrorCategory::Syntax,
        },
        DataFusionError::ArrowError(a, _) => arrow_category(a),
        DataFusionError::External(e) => match e.downcast_ref::<FunctionError>() {
            Some(FunctionError::BadDatePattern(_)) => ErrorCategory::InvalidDatetimeFormat,
            Some(FunctionError::BadRegex { .. }) => ErrorCategory::InvalidRegularExpression,
            Some(FunctionError::BadWindow(_)) => ErrorCategory::InvalidParameterValue,
            None => match e.downcast_ref::<ConnectorError>() {
                Some(c) => connector_category(c),
                None => ErrorCategory::Internal,
            },
        },
        DataFusionError::Plan(m) if m.contains("not found") && m.contains("table") => {
            ErrorCategory::UndefinedTable
        }
        DataFusionError::Plan(m) if m.contains("No function matches") || m.contains("Cannot") => {
            ErrorCategory::DatatypeMismatch
        }
        DataFusionError::Plan(_) => ErrorCategory::Syntax,
        DataFusionError::Execution(m) if m.contains("Divide by zero") => {
            ErrorCategory::DivisionByZero
        }
        DataFusionError::Execution(m) if m.contains("overflow") => {
            ErrorCategory::NumericValueOutOfRange
        }
        DataFusionError::Execution(m) if m.contains("Cannot cast") || m.contains("parse") => {
            ErrorCategory::InvalidTextRepresentation
        }
        _ => ErrorCategory::Internal,
    }
}

pub fn arrow_category(e: &ArrowError) -> ErrorCategory {
    match e {
        ArrowError::DivideByZero => ErrorCategory::DivisionByZero,
        ArrowError::ArithmeticOverflow(_) => ErrorCategory::NumericValueOutOfRange,
        ArrowError::CastError(m) | ArrowError::ParseError(m)
            if m.contains("Timestamp") || m.contains("Date") || m.contains("date") =>
        {
            ErrorCategory::InvalidDatetimeFormat
        }
        ArrowError::CastError(m) | ArrowError::ComputeError(m) if m.contains("overflow") => {
            ErrorCategory::NumericValueOutOfRange
        }
        ArrowError::CastError(_) | ArrowError::ParseError(_) => {
            ErrorCategory::InvalidTextRepresentation
        }
        ArrowError::InvalidArgumentError(m) if m.contains("non-nullable") => {
            ErrorCategory::NotNullViolation
        }
        _ => ErrorCategory::DataException,
    }
}

/// DataFusion prefixes messages with its own context ("Error during planning: ");
/// keep the message a user needs.
pub fn df_message(e: &DataFusionError) -> String {
    let root = e.find_root();
    match root {
        DataFusionError::Plan(m) | DataFusionError::Execution(m) => m.clone(),
        DataFusionError::SQL(p, _) => p.to_string(),
        DataFusionError::External(e) => e.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_failures_are_told_apart_from_bad_options() {
        let io = |kind| ConnectorError::Io {
            path: "f.csv".into(),
            source: std::io::Error::from(kind),
        };
        let cases = [
            (
                io(std::io::ErrorKind::NotFound),
                ErrorCategory::UndefinedFile,
            ),
            (
                io(std::io::ErrorKind::PermissionDenied),
                ErrorCategory::IoError,
            ),
            (
                ConnectorError::Truncated {
                    path: "f.csv".into(),
                    len: 1,
                    offset: 2,
                },
                ErrorCategory::IoError,
            ),
            (
                ConnectorError::CutShort {
                    path: "f.csv".into(),
                },
                ErrorCategory::IoError,
            ),
            (
                ConnectorError::ReaderStopped,
                ErrorCategory::InvalidParameterValue,
            ),
        ];
        for (e, category) in cases {
            assert_eq!(connector_category(&e), category, "{e}");
        }
    }
}
