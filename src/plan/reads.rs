//! Which columns of each node's output the nodes after it read. The source
//! need not build the others (it still checks them: a malformed value there
//! makes its row malformed) and a projection need not compute them; both
//! give a column of type Null in their place, so that every column keeps
//! its position.

use datafusion::logical_expr::Expr;

use super::{StreamNode, StreamPlan};

impl StreamPlan {
    /// For each node of [`StreamPlan::pipeline`], one flag per column of its
    /// output: whether a later node (or the view, which keeps every column
    /// of the last) reads it. The source's event-time column is read by the
    /// watermark. A column whose reference cannot be resolved makes every
    /// column of that input read.
    pub fn columns_read(&self) -> Vec<Vec<bool>> {
        let pipeline = self.pipeline();
        let mut out = vec![Vec::new(); pipeline.len()];
        let mut read = vec![true; self.schema().fields().len()];
        for (i, node) in pipeline.iter().enumerate().rev() {
            let input = match node {
                StreamNode::Source { event_time, .. } => {
                    if let Some(et) = event_time {
                        read[et.column] = true;
                    }
                    out[i] = read;
                    break;
                }
                other => other.input().expect("only a source has no input"),
            };
            // Renamings between the two keep every column in place, so
            // positions in `input` are positions in the previous node.
            let width = input.schema().fields().len();
            let mut next = vec![false; width];
            let exprs: Vec<&Expr> = match node {
                StreamNode::Filter { predicate, .. } => {
                    next.clone_from(&read);
                    vec![predicate]
                }
                StreamNode::Project { exprs, .. } => exprs
                    .iter()
                    .zip(&read)
                    .filter(|(_, r)| **r)
                    .map(|(e, _)| e)
                    .collect(),
                StreamNode::Aggregate { group, aggs, .. } => group
                    .iter()
                    .chain(aggs.iter().flat_map(|a| a.args.iter().chain(&a.filter)))
                    .collect(),
                StreamNode::Source { .. } => unreachable!("handled above"),
            };
            for column in exprs.into_iter().flat_map(Expr::column_refs) {
                match input.schema().index_of_column(column) {
                    Ok(j) if j < width => next[j] = true,
                    _ => next = vec![true; width],
                }
            }
            out[i] = std::mem::replace(&mut read, next);
        }
        out
    }

    /// Which of the source's columns the plan reads.
    pub fn source_columns(&self) -> Vec<bool> {
        self.columns_read().into_iter().next().unwrap_or_default()
    }
}
