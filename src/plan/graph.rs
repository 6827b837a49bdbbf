//! The execution graph of a stream plan: its operators cut into stages where
//! rows must be re-partitioned, each stage run by a number of parallel subtasks.
//!
//! Each source starts a stage that runs once (lateness is decided in source
//! order, so it never depends on parallelism). Each keyed aggregate starts a
//! stage fed by a hash exchange on its group key (a session or count-window
//! aggregate's: its partition key) when it runs in parallel; a
//! join starts a stage fed by both sides, each hashed on its join key.
//! Operators that need no re-partitioning are chained into the stage before
//! them. The view's sink runs once, behind a gather exchange when the last
//! stage is parallel. Stages are listed inputs first.
//!
//! A parallel aggregate whose keys are 64-bit values and whose aggregates
//! fold (COUNT, SUM, MIN, MAX of 64-bit integers; see [`AggCall::folds`])
//! is split in two, as Flink's local/global aggregation: its input stage
//! ends by folding each chunk's rows per key (`LocalAggregate`), so the
//! exchange carries one row per key and chunk, and the aggregate adds up
//! those folds.

use std::fmt;

use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{Expr, ExprSchemable};

use super::explain::pretty;
use super::{AggCall, PartitionWindow, PartitionWindowKind, StreamNode, StreamPlan};

/// How rows reach a stage from one before it.
#[derive(Debug, Clone, Copy)]
pub enum Exchange<'a> {
    /// Each row goes to the subtask owning the key group of these expressions
    /// (over the stage's input); watermarks and barriers go to every subtask.
    Hash(&'a [Expr]),
    /// Every row goes to the one subtask.
    Gather,
}

/// One input of a stage: an earlier stage and the exchange from it.
#[derive(Debug, Clone, Copy)]
pub struct StageInput<'a> {
    pub stage: usize,
    pub exchange: Exchange<'a>,
}

/// Operators chained in one task, run by `parallelism` subtasks.
#[derive(Debug, Clone)]
pub struct Stage<'a> {
    /// None for a source stage; two for a join (left, then right).
    pub inputs: Vec<StageInput<'a>>,
    pub parallelism: u32,
    /// First node first; identity projections (renamings) are left out.
    pub nodes: Vec<&'a StreamNode>,
    /// Whether the stage ends in the view's sink.
    pub sink: bool,
    /// The aggregate of the next stage this stage's rows leave folded for
    /// (its last operator is that aggregate's local half).
    pub folds_for: Option<&'a StreamNode>,
}

impl Stage<'_> {
    /// The stream a source stage reads.
    pub fn source(&self) -> Option<&str> {
        match self.nodes.first() {
            Some(StreamNode::Source { stream, .. }) if self.inputs.is_empty() => Some(stream),
            _ => None,
        }
    }
}

/// The stages of a job, every stage after the stages it reads.
#[derive(Debug, Clone)]
pub struct ExecutionGraph<'a> {
    pub stages: Vec<Stage<'a>>,
    /// What the last stage ends in, for EXPLAIN: a view's `MaterializeSink`,
    /// an INSERT INTO's `Sink`.
    pub sink_name: &'static str,
}

impl ExecutionGraph<'_> {
    /// The source stages' indices, left to right.
    pub fn source_stages(&self) -> Vec<usize> {
        (0..self.stages.len())
            .filter(|&i| self.stages[i].source().is_some())
            .collect()
    }
}

impl StreamPlan {
    /// Cuts the plan into stages for `parallelism` subtasks per keyed operator.
    pub fn execution_graph(&self, parallelism: u32) -> ExecutionGraph<'_> {
        let mut stages: Vec<Stage> = Vec::new();
        let root = place(&self.root, parallelism, &mut stages);
        debug_assert_eq!(root + 1, stages.len(), "the root's stage is the last");
        let last = stages.last_mut().expect("a plan has a source");
        if last.parallelism == 1 {
            last.sink = true;
        } else {
            stages.push(Stage {
                inputs: vec![StageInput {
                    stage: root,
                    exchange: Exchange::Gather,
                }],
                parallelism: 1,
                nodes: Vec::new(),
                sink: true,
                folds_for: None,
            });
        }
        ExecutionGraph {
            stages,
            sink_name: "MaterializeSink",
        }
    }
}

/// Adds the stages computing `node` (its inputs' first); returns the index
/// of the stage whose output is the node's.
fn place<'a>(node: &'a StreamNode, parallelism: u32, stages: &mut Vec<Stage<'a>>) -> usize {
    let node = node.skip_renamings();
    let exchange = |key: &'a [Expr], p: u32| {
        if p > 1 {
            Exchange::Hash(key)
        } else {
            Exchange::Gather
        }
    };
    let start = |inputs: Vec<StageInput<'a>>, p: u32, stages: &mut Vec<Stage<'a>>| {
        stages.push(Stage {
            inputs,
            parallelism: p,
            nodes: vec![node],
            sink: false,
            folds_for: None,
        });
        stages.len() - 1
    };
    match node {
        StreamNode::Source { .. } => start(Vec::new(), 1, stages),
        StreamNode::Join {
            left,
            right,
            left_keys,
            right_keys,
            ..
        } => {
            let l = place(left, parallelism, stages);
            let r = place(right, parallelism, stages);
            let inputs = vec![
                StageInput {
                    stage: l,
                    exchange: exchange(left_keys, parallelism),
                },
                StageInput {
                    stage: r,
                    exchange: exchange(right_keys, parallelism),
                },
            ];
            start(inputs, parallelism, stages)
        }
        StreamNode::Aggregate {
            input,
            partition_window: Some(PartitionWindow { partition: key, .. }),
            ..
        }
        | StreamNode::Aggregate {
            input, group: key, ..
        }
        | StreamNode::TopN {
            input,
            partition: key,
            ..
        }
        | StreamNode::Over {
            input,
            partition: key,
            ..
        } => {
            let s = place(input, parallelism, stages);
            // A global aggregate has one group (a global Top-N one
            // partition): it runs once.
            let p = if key.is_empty() { 1 } else { parallelism };
            if p == 1 && stages[s].parallelism == 1 {
                // Same parallelism, no re-partitioning: chained.
                stages[s].nodes.push(node);
                return s;
            }
            if p > 1 && stages[s].folds_for.is_none() && folds_locally(node) {
                stages[s].folds_for = Some(node);
            }
            let input = StageInput {
                stage: s,
                exchange: exchange(key, p),
            };
            start(vec![input], p, stages)
        }
        StreamNode::Project { input, .. }
        | StreamNode::Filter { input, .. }
        | StreamNode::LookupJoin { input, .. }
        | StreamNode::Unnest { input, .. } => {
            let s = place(input, parallelism, stages);
            stages[s].nodes.push(node);
            s
        }
    }
}

/// Whether an aggregate takes its rows folded per key by a local half at
/// the end of its input stage: grouped (a global aggregate runs once), not
/// a session or count window (they order rows, not only add them up), by
/// keys of 64-bit values, with aggregates that all fold.
fn folds_locally(node: &StreamNode) -> bool {
    let StreamNode::Aggregate {
        input,
        group,
        aggs,
        partition_window: None,
        ..
    } = node
    else {
        return false;
    };
    let word = |e: &Expr| {
        matches!(
            e.get_type(input.schema().as_ref()),
            Ok(DataType::Int64 | DataType::Date64 | DataType::Timestamp(..))
        )
    };
    let append_only = input.props().append_only;
    !group.is_empty()
        && group.iter().all(word)
        && aggs.iter().all(|a: &AggCall| a.folds(append_only))
}

impl StreamNode {
    /// The names of the operators this node runs as.
    pub fn operator_names(&self) -> Vec<&'static str> {
        match self {
            StreamNode::Source { late: true, .. } => vec!["Source", "LateRows"],
            StreamNode::Source {
                event_time: Some(_),
                ..
            } => vec!["Source", "Watermark"],
            StreamNode::Source { .. } => vec!["Source"],
            StreamNode::Project { .. } => vec!["Project"],
            StreamNode::Filter { .. } => vec!["Filter"],
            StreamNode::Join { interval, .. } => match interval {
                Some(_) => vec!["IntervalJoin"],
                None => vec!["HashJoin"],
            },
            StreamNode::LookupJoin { .. } => vec!["LookupJoin"],
            StreamNode::TopN { .. } => vec!["TopN"],
            StreamNode::Over { .. } => vec!["OverAggregate"],
            StreamNode::Unnest { .. } => vec!["Unnest"],
            StreamNode::Aggregate {
                partition_window: Some(w),
                ..
            } => match w.kind {
                PartitionWindowKind::Session { .. } => vec!["SessionAggregate"],
                PartitionWindowKind::Count { .. } => vec!["CountWindowAggregate"],
            },
            StreamNode::Aggregate {
                window: Some(_), ..
            } => vec!["WindowAggregate"],
            StreamNode::Aggregate { .. } => vec!["GroupAggregate"],
        }
    }
}

impl fmt::Display for ExecutionGraph<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, stage) in self.stages.iter().enumerate() {
            let mut names: Vec<&str> = stage
                .nodes
                .iter()
                .flat_map(|n| n.operator_names())
                .collect();
            if stage.folds_for.is_some() {
                names.push("LocalAggregate");
            }
            if stage.sink {
                names.push(self.sink_name);
            }
            let exchange = |input: &StageInput| match input.exchange {
                Exchange::Hash(key) => {
                    let k: Vec<String> = key.iter().map(|e| pretty(&e.to_string())).collect();
                    format!("hash({})", k.join(", "))
                }
                Exchange::Gather => "gather".to_string(),
            };
            let input = match stage.inputs.as_slice() {
                [] => String::new(),
                // The stage just before: named by its exchange alone.
                [one] if one.stage + 1 == i => format!(" <- {}", exchange(one)),
                many => {
                    let from: Vec<String> = many
                        .iter()
                        .map(|x| format!("{} from stage {}", exchange(x), x.stage))
                        .collect();
                    format!(" <- {}", from.join(", "))
                }
            };
            writeln!(
                f,
                "  Stage {i} x{}{input}: {}",
                stage.parallelism,
                names.join(" -> ")
            )?;
        }
        Ok(())
    }
}
