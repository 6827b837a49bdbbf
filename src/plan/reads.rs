//! Which columns of each node's output the nodes after it read. The source
//! need not build the others (it still checks them: a malformed value there
//! makes its row malformed) and a projection need not compute them; both
//! give a column of type Null in their place, so that every column keeps
//! its position.

use std::collections::HashMap;

use datafusion::common::DFSchema;
use datafusion::logical_expr::Expr;

use super::{PartitionWindowKind, StreamNode, StreamPlan};

/// Per node of a plan (renamings stand for their input, whose columns they
/// keep in place): one flag per column of its output, whether a later node
/// (or the view, which keeps every column of the last) reads it.
pub struct ColumnsRead(HashMap<*const StreamNode, Vec<bool>>);

impl ColumnsRead {
    /// The flags of `node`'s output (empty when the node is not in the plan:
    /// read every column).
    pub fn of(&self, node: &StreamNode) -> &[bool] {
        let node: *const StreamNode = node.skip_renamings();
        self.0.get(&node).map_or(&[][..], Vec::as_slice)
    }
}

impl StreamPlan {
    /// Which columns of each node's output later nodes read. A source's
    /// event-time column is read by the watermark. A column whose reference
    /// cannot be resolved makes every column of that input read.
    pub fn columns_read(&self) -> ColumnsRead {
        let mut out = HashMap::new();
        visit(
            &self.root,
            vec![true; self.schema().fields().len()],
            &mut out,
        );
        ColumnsRead(out)
    }
}

/// Records what is read of `node` and, from the expressions it evaluates,
/// what it reads of its inputs.
fn visit(node: &StreamNode, mut read: Vec<bool>, out: &mut HashMap<*const StreamNode, Vec<bool>>) {
    let node = node.skip_renamings();
    let (input, exprs): (&StreamNode, Vec<&Expr>) = match node {
        StreamNode::Source { event_time, .. } => {
            if let Some(et) = event_time {
                read[et.column] = true;
            }
            out.insert(node, read);
            return;
        }
        StreamNode::Join {
            left,
            right,
            left_keys,
            right_keys,
            filter,
            schema,
            ..
        } => {
            let width = left.schema().fields().len();
            let mut l = read[..width].to_vec();
            let mut r = read[width..].to_vec();
            mark(left_keys, left.schema(), &mut l);
            mark(right_keys, right.schema(), &mut r);
            let mut both = read.clone();
            mark(filter.iter(), schema, &mut both);
            for (j, b) in both.into_iter().enumerate() {
                match j < width {
                    true => l[j] |= b,
                    false => r[j - width] |= b,
                }
            }
            out.insert(node, read);
            visit(left, l, out);
            visit(right, r, out);
            return;
        }
        StreamNode::TopN {
            input,
            partition,
            order,
            ..
        } => {
            // Rows pass whole, plus their row number.
            let mut next = read[..read.len() - 1].to_vec();
            let exprs = partition.iter().chain(order.iter().map(|s| &s.expr));
            mark(exprs, input.schema(), &mut next);
            out.insert(node, read);
            visit(input, next, out);
            return;
        }
        StreamNode::Over {
            input,
            partition,
            time,
            aggs,
            ..
        } => {
            // Rows pass with the columns read of them (the order key holds
            // those), plus the aggregates, each reading its argument and filter.
            let width = input.schema().fields().len();
            let mut next = read[..width.min(read.len())].to_vec();
            next.resize(width, true);
            let exprs = partition
                .iter()
                .chain(std::iter::once(time))
                .chain(aggs.iter().flat_map(|a| a.args.iter().chain(&a.filter)));
            mark(exprs, input.schema(), &mut next);
            out.insert(node, read);
            visit(input, next, out);
            return;
        }
        StreamNode::LookupJoin {
            input,
            keys,
            filter,
            table_first,
            schema,
            ..
        } => {
            // The input's columns pass, beside the table's; the key and
            // the filter read some too.
            let width = input.schema().fields().len();
            let at = match table_first {
                true => schema.fields().len() - width,
                false => 0,
            };
            let mut next = read[at..at + width].to_vec();
            mark(keys, input.schema(), &mut next);
            let mut all = read.clone();
            mark(filter.iter(), schema, &mut all);
            for (j, r) in all[at..at + width].iter().enumerate() {
                next[j] |= r;
            }
            out.insert(node, read);
            visit(input, next, out);
            return;
        }
        StreamNode::Unnest { input, column, .. } => {
            // Columns keep their places; the list decides how many rows there are.
            let mut next = read.clone();
            next[*column] = true;
            out.insert(node, read);
            visit(input, next, out);
            return;
        }
        StreamNode::Filter {
            input, predicate, ..
        } => {
            // Rows pass whole: what is read after is read here, and the predicate.
            let mut next = read.clone();
            mark([predicate], input.schema(), &mut next);
            out.insert(node, read);
            visit(input, next, out);
            return;
        }
        StreamNode::Project { input, exprs, .. } => (
            input,
            exprs
                .iter()
                .zip(&read)
                .filter(|(_, r)| **r)
                .map(|(e, _)| e)
                .collect(),
        ),
        StreamNode::Aggregate {
            input,
            group,
            aggs,
            partition_window,
            ..
        } => {
            // A count window orders rows by all their columns.
            let order = match partition_window.as_ref().map(|w| &w.kind) {
                Some(PartitionWindowKind::Count { order, .. }) => order.as_slice(),
                _ => &[],
            };
            (
                input,
                group
                    .iter()
                    .chain(aggs.iter().flat_map(|a| a.args.iter().chain(&a.filter)))
                    .chain(order)
                    .collect(),
            )
        }
    };
    let mut next = vec![false; input.schema().fields().len()];
    mark(exprs, input.schema(), &mut next);
    out.insert(node, read);
    visit(input, next, out);
}

/// Flags the columns of `schema` the expressions refer to (all of them
/// when a reference does not resolve).
fn mark<'a>(exprs: impl IntoIterator<Item = &'a Expr>, schema: &DFSchema, read: &mut [bool]) {
    let width = read.len();
    for column in exprs.into_iter().flat_map(Expr::column_refs) {
        match schema.index_of_column(column) {
            Ok(j) if j < width => read[j] = true,
            _ => read.iter_mut().for_each(|r| *r = true),
        }
    }
}
