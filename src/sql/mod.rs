//! SQL text: statement splitting and Weir's syntax beyond what sqlparser
//! reads (CREATE STREAM with WATERMARK, WITH options, EMIT ON WINDOW CLOSE,
//! SHOW/FLUSH, Flink's window TVF spelling), producing [`WeirStatement`]s.

mod ddl;
mod statement;
mod tokens;

pub use statement::{
    parse_statements, CreateMaterializedView, CreateSink, CreateStream, CreateTableAs, ObjectKind,
    ShowKind, SinkInput, WatermarkClause, WeirStatement,
};
pub use tokens::dialect;

/// A statement that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error("syntax error: {0}")]
    Syntax(String),
}

impl From<datafusion::sql::sqlparser::parser::ParserError> for SqlError {
    fn from(e: datafusion::sql::sqlparser::parser::ParserError) -> Self {
        SqlError::Syntax(e.to_string())
    }
}

impl From<datafusion::sql::sqlparser::tokenizer::TokenizerError> for SqlError {
    fn from(e: datafusion::sql::sqlparser::tokenizer::TokenizerError) -> Self {
        SqlError::Syntax(e.to_string())
    }
}
