//! The stream plan: the serialisable-in-spirit graph of streaming nodes the
//! planner produces and the runtime executes. Neither imports the other; they
//! meet here. Expressions are DataFusion logical expressions over the input
//! node's schema; the runtime compiles them to physical expressions.

mod explain;
mod graph;
mod reads;

pub use graph::{Exchange, ExecutionGraph, Stage, StageInput};
pub use reads::ColumnsRead;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::DFSchemaRef;
use datafusion::logical_expr::{Expr, SortExpr as Sort};

/// A materialized view's dataflow and the properties of its output.
#[derive(Debug, Clone)]
pub struct StreamPlan {
    pub root: StreamNode,
}

impl StreamPlan {
    pub fn schema(&self) -> &DFSchemaRef {
        self.root.schema()
    }

    /// Columns forming a unique key of the output (empty: rows have no key).
    pub fn key(&self) -> &[usize] {
        &self.root.props().key
    }

    pub fn append_only(&self) -> bool {
        self.root.props().append_only
    }
}

/// What is known about a node's output.
#[derive(Debug, Clone, PartialEq)]
pub struct Props {
    /// Only inserts, never updates or deletes.
    pub append_only: bool,
    /// Columns forming a unique key (empty when none is known).
    pub key: Vec<usize>,
    /// Per output column: its relation to event time.
    pub time: Vec<TimeProp>,
}

/// How a column relates to the watermark, which decides when state keyed by it can close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeProp {
    None,
    /// The stream's event-time column.
    EventTime,
    /// `window_start` of a tumbling window of this size (ns).
    WindowStart(i64),
    /// `window_end` of a tumbling window of this size (ns).
    WindowEnd(i64),
    /// The list of the starts of the hopping windows of this size (ns)
    /// holding the event time: unnested, a `WindowStart`.
    HopStarts(i64),
    /// The list of the ends of the cumulating windows (up to this size, ns)
    /// holding the event time: unnested, a `WindowEnd`.
    CumulateEnds(i64),
    /// `PROCTIME()`: the wall-clock time the row was processed.
    ProcTime,
    /// `window_start` / `window_end` of a tumbling window of this size (ns)
    /// over `PROCTIME()`: closed by the wall clock.
    ProcWindowStart(i64),
    ProcWindowEnd(i64),
    /// `HopStarts` / `CumulateEnds` over `PROCTIME()`.
    ProcHopStarts(i64),
    ProcCumulateEnds(i64),
}

impl TimeProp {
    /// A group whose value in this column is `v` (ns) is complete once the
    /// watermark reaches `v + offset`.
    pub fn close_offset(self) -> Option<i64> {
        match self {
            TimeProp::None
            | TimeProp::HopStarts(_)
            | TimeProp::CumulateEnds(_)
            | TimeProp::ProcHopStarts(_)
            | TimeProp::ProcCumulateEnds(_)
            | TimeProp::ProcTime => None,
            TimeProp::EventTime => Some(1),
            TimeProp::WindowStart(size) | TimeProp::ProcWindowStart(size) => Some(size),
            TimeProp::WindowEnd(_) | TimeProp::ProcWindowEnd(_) => Some(0),
        }
    }
}

/// The event-time column of a stream and its watermark delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventTimeSpec {
    pub column: usize,
    /// Watermark = largest event time seen − delay (ns).
    pub delay: i64,
}

/// One streaming operator and its inputs.
#[derive(Debug, Clone)]
pub enum StreamNode {
    /// Reads a stream through its connector; assigns watermarks and drops
    /// late rows (with `late`, `LATE(stream)`: keeps only them, each with
    /// the watermark it was late against as a last column).
    Source {
        stream: String,
        schema: DFSchemaRef,
        event_time: Option<EventTimeSpec>,
        late: bool,
        props: Props,
    },
    Project {
        input: Box<StreamNode>,
        exprs: Vec<Expr>,
        schema: DFSchemaRef,
        props: Props,
    },
    Filter {
        input: Box<StreamNode>,
        predicate: Expr,
        props: Props,
    },
    /// An equi-join of two inputs, each row of one side matched with every
    /// row of the other side having equal keys (a NULL key matches
    /// nothing). The output is the left columns, then the right ones, where
    /// `filter` holds; both sides' rows are kept, as in Flink's regular join.
    Join {
        left: Box<StreamNode>,
        right: Box<StreamNode>,
        /// Key expressions over each side's schema, pairwise of one type.
        left_keys: Vec<Expr>,
        right_keys: Vec<Expr>,
        /// A condition over the output beyond key equality.
        filter: Option<Expr>,
        /// Which sides' rows come out even when they meet nothing (with
        /// NULLs for the other side's columns): `[true, false]` is a LEFT
        /// JOIN, `[false, true]` a RIGHT JOIN, both a FULL JOIN.
        outer: [bool; 2],
        /// Time bounds `filter` puts on the two sides' event times (Flink's
        /// interval join): rows no later row can meet leave the state.
        interval: Option<JoinInterval>,
        schema: DFSchemaRef,
        props: Props,
    },
    /// Each row of `input` joined with the rows of table `table` whose
    /// primary key equals `keys` over the row, as the table is when the row
    /// is processed (Flink's lookup join, `FOR SYSTEM_TIME AS OF`): a later
    /// change to the table changes no pair already emitted. Nothing is kept.
    LookupJoin {
        input: Box<StreamNode>,
        table: String,
        /// One per primary-key column, in its order, of its type.
        keys: Vec<Expr>,
        /// The table's columns come first in the output.
        table_first: bool,
        /// Every input row comes out (LEFT JOIN): one that meets nothing,
        /// with NULLs for the table's columns.
        outer: bool,
        /// What a match must satisfy beyond the key, over the output.
        filter: Option<Expr>,
        schema: DFSchemaRef,
        props: Props,
    },
    /// Flink's Top-N: per partition, the first `limit` rows in `order`
    /// (`ROW_NUMBER() OVER (PARTITION BY .. ORDER BY ..)` filtered to at
    /// most `limit`; rows of equal order rank by arrival). The output is
    /// the input's columns, then the row number.
    TopN {
        input: Box<StreamNode>,
        partition: Vec<Expr>,
        order: Vec<Sort>,
        limit: usize,
        schema: DFSchemaRef,
        props: Props,
    },
    /// Each row once per item of a list column (UNNEST, which HOP windows
    /// are made of): the list replaced by the item, the other columns repeated.
    Unnest {
        input: Box<StreamNode>,
        /// The list column's position (the item's, in the output).
        column: usize,
        /// A NULL list gives one row with a NULL item (else none).
        keep_null: bool,
        /// An empty list gives one row with a NULL item (else none).
        keep_empty: bool,
        schema: DFSchemaRef,
        props: Props,
    },
    /// Flink's OVER aggregation: every input row once, when the watermark
    /// passes it, with aggregates over the rows of its partition up to it
    /// in `order` (the event time, then every input column), as `frame`
    /// bounds them. The output is the input's columns, then the aggregates.
    Over {
        input: Box<StreamNode>,
        partition: Vec<Expr>,
        /// The rows' event time, over the input.
        time: Expr,
        /// The event time, then every input column (the runtime keeps those
        /// of them read later: rows equal in them are alike downstream).
        order: Vec<Expr>,
        frame: OverFrame,
        aggs: Vec<AggCall>,
        schema: DFSchemaRef,
        props: Props,
    },
    /// Grouped aggregation; `window` closes groups on the watermark; with
    /// `partition_window`, the groups are SESSION or count windows instead.
    Aggregate {
        input: Box<StreamNode>,
        group: Vec<Expr>,
        aggs: Vec<AggCall>,
        window: Option<WindowClose>,
        partition_window: Option<PartitionWindow>,
        emit_on_window_close: bool,
        schema: DFSchemaRef,
        props: Props,
    },
}

/// A join's condition bounds the left time `lt` by the right time `rt`:
/// `rt + lower <= lt <= rt + upper` (ns; a missing bound is unbounded).
/// Each time column has a close offset (see [`TimeProp::close_offset`]): a
/// row arriving with value `v` there has `v + offset > watermark`, so once
/// the watermark has passed, no later row of that side can meet the rows
/// on the other side whose bound it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JoinInterval {
    /// The time column of each side, in that side's schema.
    pub left_time: usize,
    pub right_time: usize,
    /// Their close offsets (ns).
    pub left_offset: i64,
    pub right_offset: i64,
    pub lower: Option<i64>,
    pub upper: Option<i64>,
}

impl JoinInterval {
    /// A left row with time `lt` is no longer needed once the watermark
    /// reaches `lt` plus this: no right row still to come is early enough
    /// to meet it, and the row itself can no longer be taken back.
    pub fn left_retention(&self) -> Option<i64> {
        let lower = self.lower?;
        Some((self.right_offset - lower).max(self.left_offset))
    }

    /// The same for a right row with time `rt`.
    pub fn right_retention(&self) -> Option<i64> {
        let upper = self.upper?;
        Some((upper + self.left_offset).max(self.right_offset))
    }

    /// How far behind its input watermark the join's output watermark
    /// stays, so that both time columns keep their offsets in the output:
    /// a pair made when its right row arrives can carry a left time up to
    /// `right_offset - lower - left_offset` behind the watermark, and
    /// likewise the other way. None without both bounds.
    pub fn hold(&self) -> Option<i64> {
        let (lower, upper) = (self.lower?, self.upper?);
        Some(
            0.max(upper + self.left_offset - self.right_offset)
                .max(self.right_offset - self.left_offset - lower),
        )
    }
}

/// The rows an OVER aggregate sees, up to the current one (`ROWS` /
/// `RANGE BETWEEN ... PRECEDING AND CURRENT ROW`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverFrame {
    /// The current row and at most this many before it.
    Rows(u64),
    /// Rows at most this much (ns) older than the current one, and every
    /// row of its time (its peers, after it too).
    Range(i64),
    /// Every row before it (`ROWS` `UNBOUNDED PRECEDING`).
    RowsUnbounded,
    /// Every row before it, and its peers (`RANGE` `UNBOUNDED PRECEDING`).
    RangeUnbounded,
}

/// An aggregate over windows found per partition from the rows around each
/// row, rather than from its own time: SESSION windows and count windows.
#[derive(Debug, Clone)]
pub struct PartitionWindow {
    /// The partition key: the group expressions other than the bounds.
    pub partition: Vec<Expr>,
    /// Per group expression: the window bound it stands for (None: a
    /// partition column). Below the aggregate, a bound's column holds the
    /// row's event time.
    pub bounds: Vec<Option<WindowBound>>,
    /// The rows' event time, over the aggregate's input.
    pub time: Expr,
    pub kind: PartitionWindowKind,
}

#[derive(Debug, Clone)]
pub enum PartitionWindowKind {
    /// The rows whose event times follow each other by at most `gap` (ns)
    /// form one session, from its first row's time to its last's plus
    /// `gap`. Sessions merge as rows arrive between them, and close once the
    /// watermark passes their end.
    Session { gap: i64 },
    /// Rows numbered from 0 in the order of `order` (the event time, then
    /// every column of the windowed relation), each run of `size` rows one
    /// window `[start, end)` of row numbers. A row is numbered once the
    /// watermark passes it.
    Count { size: i64, order: Vec<Expr> },
}

/// `window_start` or `window_end` of a partition window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowBound {
    Start,
    End,
}

/// When a windowed aggregate's groups are complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowClose {
    /// The group-key position holding the window bound or event time.
    pub key_index: usize,
    /// A group with value `v` there closes when the watermark reaches `v + offset` (ns).
    pub offset: i64,
    /// The wall clock, not the watermark, closes it (a window over `PROCTIME()`).
    pub processing_time: bool,
}

/// The aggregate functions the streaming aggregate maintains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

impl AggKind {
    pub fn name(self) -> &'static str {
        match self {
            AggKind::Count => "count",
            AggKind::Sum => "sum",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::Avg => "avg",
        }
    }
}

/// One aggregate call: `kind([DISTINCT] args)` producing `output_type`.
#[derive(Debug, Clone)]
pub struct AggCall {
    pub kind: AggKind,
    /// Zero (COUNT(*)) or one argument, over the aggregate's input.
    pub args: Vec<Expr>,
    pub distinct: bool,
    /// `FILTER (WHERE ...)`: only rows for which it is true are aggregated.
    pub filter: Option<Expr>,
    pub output_type: DataType,
}

impl AggCall {
    /// Whether a chunk's rows fold per key into a few 64-bit numbers that
    /// a global aggregate adds up (local/global aggregation): COUNT, SUM
    /// of 64-bit integers, MIN/MAX of them over append-only input (a
    /// retracted extreme needs every value); not DISTINCT, not AVG.
    pub fn folds(&self, append_only: bool) -> bool {
        let int64 = self.output_type == DataType::Int64;
        !self.distinct
            && match self.kind {
                AggKind::Count => true,
                AggKind::Sum => int64,
                AggKind::Min | AggKind::Max => int64 && append_only,
                AggKind::Avg => false,
            }
    }
}

impl StreamNode {
    pub fn schema(&self) -> &DFSchemaRef {
        match self {
            StreamNode::Source { schema, .. }
            | StreamNode::Project { schema, .. }
            | StreamNode::Join { schema, .. }
            | StreamNode::TopN { schema, .. }
            | StreamNode::Over { schema, .. }
            | StreamNode::LookupJoin { schema, .. }
            | StreamNode::Unnest { schema, .. }
            | StreamNode::Aggregate { schema, .. } => schema,
            StreamNode::Filter { input, .. } => input.schema(),
        }
    }

    pub fn props(&self) -> &Props {
        match self {
            StreamNode::Source { props, .. }
            | StreamNode::Project { props, .. }
            | StreamNode::Filter { props, .. }
            | StreamNode::Join { props, .. }
            | StreamNode::TopN { props, .. }
            | StreamNode::Over { props, .. }
            | StreamNode::LookupJoin { props, .. }
            | StreamNode::Unnest { props, .. }
            | StreamNode::Aggregate { props, .. } => props,
        }
    }

    /// The one input of a node that has exactly one (not a source or a join).
    pub fn input(&self) -> Option<&StreamNode> {
        match self {
            StreamNode::Source { .. } | StreamNode::Join { .. } => None,
            StreamNode::Project { input, .. }
            | StreamNode::Filter { input, .. }
            | StreamNode::TopN { input, .. }
            | StreamNode::Over { input, .. }
            | StreamNode::LookupJoin { input, .. }
            | StreamNode::Unnest { input, .. }
            | StreamNode::Aggregate { input, .. } => Some(input),
        }
    }

    /// Every input of a node, left first.
    pub fn inputs(&self) -> Vec<&StreamNode> {
        match self {
            StreamNode::Join { left, right, .. } => vec![left, right],
            other => other.input().into_iter().collect(),
        }
    }

    /// The node data really comes from: renamings (identity projections) skipped.
    pub fn skip_renamings(&self) -> &StreamNode {
        let mut node = self;
        while node.is_identity() {
            node = node.input().expect("a projection has an input");
        }
        node
    }

    /// A projection that only renames (keeps every input column in order).
    pub fn is_identity(&self) -> bool {
        match self {
            StreamNode::Project { input, exprs, .. } => {
                let in_schema = input.schema();
                exprs.len() == in_schema.fields().len()
                    && exprs.iter().enumerate().all(|(i, e)| {
                        matches!(e, Expr::Column(c) if in_schema.index_of_column(c).ok() == Some(i))
                    })
            }
            _ => false,
        }
    }

    /// The tables this plan looks rows up in.
    pub fn tables(&self) -> Vec<String> {
        let mut out: Vec<String> = self.inputs().into_iter().flat_map(|i| i.tables()).collect();
        if let StreamNode::LookupJoin { table, .. } = self {
            out.push(table.clone());
        }
        out
    }

    /// The streams this plan reads, left to right (a stream read twice is named twice).
    pub fn sources(&self) -> Vec<String> {
        match self {
            StreamNode::Source { stream, .. } => vec![stream.clone()],
            other => other
                .inputs()
                .into_iter()
                .flat_map(|i| i.sources())
                .collect(),
        }
    }
}

/// Number of key groups keyed state is split into; the largest parallelism.
pub const MAX_PARALLELISM: u32 = 128;
