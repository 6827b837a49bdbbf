//! The planner: SQL → DataFusion `LogicalPlan` (DataFusion's SQL front end
//! and analyzer) → Weir's stream plan; and the schemas of CREATE STREAM / TABLE.

mod ddl;
mod interval;
mod over;
mod partition_window;
mod query;
mod stream;
mod window;

pub use ddl::{column_schema, computed_columns, sql_type, watermark_delay};
pub use query::{plan_statement, relations_read, rewrite_and_check};
pub use stream::to_stream_plan;

use datafusion::error::DataFusionError;

use crate::connectors::ConnectorError;
use crate::session::{error::datafusion_category, ErrorCategory};
use crate::sql::SqlError;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Syntax(String),
    #[error("{0} is not supported")]
    Unsupported(String),
    #[error("relation \"{0}\" does not exist")]
    UndefinedTable(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{}", crate::session::error::df_message(.0))]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Connector(#[from] ConnectorError),
}

impl From<SqlError> for PlanError {
    fn from(e: SqlError) -> Self {
        PlanError::Syntax(e.to_string())
    }
}

impl PlanError {
    pub fn category(&self) -> ErrorCategory {
        match self {
            PlanError::Syntax(_) => ErrorCategory::Syntax,
            PlanError::Unsupported(_) => ErrorCategory::FeatureNotSupported,
            PlanError::UndefinedTable(_) => ErrorCategory::UndefinedTable,
            PlanError::Invalid(_) => ErrorCategory::InvalidParameterValue,
            PlanError::DataFusion(e) => datafusion_category(e),
            PlanError::Connector(_) => ErrorCategory::InvalidParameterValue,
        }
    }
}
