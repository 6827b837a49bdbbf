//! The execution graph of a stream plan: its operators cut into stages where
//! rows must be re-partitioned, each stage run by a number of parallel subtasks.
//!
//! The source stage runs once (lateness is decided in source order, so it
//! never depends on parallelism). Each keyed aggregate starts a stage fed by a
//! hash exchange on its group key when it runs in parallel; operators that need
//! no re-partitioning are chained into the stage before them. The view's sink
//! runs once, behind a gather exchange when the last stage is parallel.

use std::fmt;

use datafusion::logical_expr::Expr;

use super::explain::pretty;
use super::{StreamNode, StreamPlan};

/// How rows reach a stage from the one before it.
#[derive(Debug, Clone, Copy)]
pub enum Exchange<'a> {
    /// The first stage reads the source itself.
    Source,
    /// Each row goes to the subtask owning the key group of these expressions
    /// (over the stage's input); watermarks and barriers go to every subtask.
    Hash(&'a [Expr]),
    /// Every row goes to the one subtask.
    Gather,
}

/// Operators chained in one task, run by `parallelism` subtasks.
#[derive(Debug, Clone)]
pub struct Stage<'a> {
    pub input: Exchange<'a>,
    pub parallelism: u32,
    /// Source first; identity projections (renamings) are left out.
    pub nodes: Vec<&'a StreamNode>,
    /// Whether the stage ends in the view's sink.
    pub sink: bool,
}

/// The stages of a job, source first.
#[derive(Debug, Clone)]
pub struct ExecutionGraph<'a> {
    pub stages: Vec<Stage<'a>>,
}

impl StreamPlan {
    /// The nodes data flows through, source first, renamings left out.
    pub fn pipeline(&self) -> Vec<&StreamNode> {
        let mut nodes = Vec::new();
        let mut node = Some(&self.root);
        while let Some(n) = node {
            if !n.is_identity() {
                nodes.push(n);
            }
            node = n.input();
        }
        nodes.reverse();
        nodes
    }

    /// Cuts the plan into stages for `parallelism` subtasks per keyed operator.
    pub fn execution_graph(&self, parallelism: u32) -> ExecutionGraph<'_> {
        let mut stages: Vec<Stage> = Vec::new();
        for node in self.pipeline() {
            let keyed_parallelism = match node {
                // A global aggregate has one group: it runs once.
                StreamNode::Aggregate { group, .. } if group.is_empty() => Some((1, None)),
                StreamNode::Aggregate { group, .. } => Some((parallelism, Some(group.as_slice()))),
                _ => None,
            };
            match (stages.last_mut(), keyed_parallelism) {
                (None, _) => stages.push(Stage {
                    input: Exchange::Source,
                    parallelism: 1,
                    nodes: vec![node],
                    sink: false,
                }),
                // Same parallelism, no re-partitioning: chained.
                (Some(last), Some((1, _))) if last.parallelism == 1 => last.nodes.push(node),
                (Some(last), None) => last.nodes.push(node),
                (Some(_), Some((p, key))) => stages.push(Stage {
                    input: match key {
                        Some(k) if p > 1 => Exchange::Hash(k),
                        _ => Exchange::Gather,
                    },
                    parallelism: p,
                    nodes: vec![node],
                    sink: false,
                }),
            }
        }
        let last = stages.last_mut().expect("a plan has a source");
        if last.parallelism == 1 {
            last.sink = true;
        } else {
            stages.push(Stage {
                input: Exchange::Gather,
                parallelism: 1,
                nodes: Vec::new(),
                sink: true,
            });
        }
        ExecutionGraph { stages }
    }
}

impl StreamNode {
    /// The names of the operators this node runs as.
    pub fn operator_names(&self) -> Vec<&'static str> {
        match self {
            StreamNode::Source {
                event_time: Some(_),
                ..
            } => vec!["Source", "Watermark"],
            StreamNode::Source { .. } => vec!["Source"],
            StreamNode::Project { .. } => vec!["Project"],
            StreamNode::Filter { .. } => vec!["Filter"],
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
            if stage.sink {
                names.push("MaterializeSink");
            }
            let input = match stage.input {
                Exchange::Source => String::new(),
                Exchange::Hash(key) => {
                    let k: Vec<String> = key.iter().map(|e| pretty(&e.to_string())).collect();
                    format!(" <- hash({})", k.join(", "))
                }
                Exchange::Gather => " <- gather".to_string(),
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
