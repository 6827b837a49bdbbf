//! The streaming operators.

mod accumulator;
mod agg_value;
mod aggregate;
mod conform;
mod count_window;
mod emitted_blocks;
mod filter;
mod group_blocks;
mod group_codec;
mod group_table;
mod huge_pages;
mod join;
mod join_rows;
mod local_aggregate;
mod lookup_join;
mod mv_sink;
mod over;
mod partial;
mod partition_window;
mod plain_group;
mod project;
mod session;
mod shared_distinct;
mod top_n;
mod unnest;
mod watermark;

pub use aggregate::{AggregateOp, EMIT_INTERVAL};
pub mod aggregate_parts {
    //! Pieces of the aggregate operator the job builder uses.
    pub use super::aggregate::CompiledAgg;
}
pub use count_window::CountWindowOp;
pub use filter::FilterOp;
pub use join::{JoinOp, JoinSide};
pub use local_aggregate::LocalAggregateOp;
pub use lookup_join::LookupJoinOp;
pub use mv_sink::MvSinkOp;
pub use over::OverOp;
pub use project::{evaluate, ProjectOp};
pub use session::SessionOp;
pub use top_n::TopNOp;
pub use unnest::UnnestOp;
pub mod window_parts {
    //! Pieces of the session and count-window aggregates the job builder uses.
    pub use super::count_window::CountWindowSpec;
    pub use super::over::OverSpec;
    pub use super::session::SessionSpec;
}
pub mod top_n_parts {
    //! Pieces of the Top-N operator the job builder uses.
    pub use super::top_n::{OrderBy, TopNSpec};
}
pub use watermark::{late_batch, WatermarkAssigner, WatermarkOp};
