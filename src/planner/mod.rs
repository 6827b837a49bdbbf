//! The planner: SQL → DataFusion `LogicalPlan` → Weir's stream plan.

use crate::session::ErrorCategory;

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{0} is not supported")]
    Unsupported(String),
}

impl PlanError {
    pub fn category(&self) -> ErrorCategory {
        match self {
            PlanError::Unsupported(_) => ErrorCategory::FeatureNotSupported,
        }
    }
}
