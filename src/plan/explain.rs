//! EXPLAIN output of a stream plan: one line per node, inputs indented.

use std::fmt;

use datafusion::common::{Column, DFSchemaRef};

use super::reads::ColumnsRead;
use super::{OverFrame, PartitionWindowKind, StreamNode, StreamPlan};

impl fmt::Display for StreamPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_plan(f, "Materialize")
    }
}

impl StreamPlan {
    /// EXPLAIN's text: the plan, then its execution graph at `parallelism`;
    /// `into`: the table an INSERT INTO's job writes (else a view's).
    pub fn explain(&self, parallelism: u32, into: Option<&str>) -> String {
        struct Head<'a>(&'a StreamPlan, &'a str);
        impl fmt::Display for Head<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.write_plan(f, self.1)
            }
        }
        let head = into.map_or_else(|| "Materialize".to_string(), |t| format!("Sink into {t}"));
        let mut graph = self.execution_graph(parallelism);
        if into.is_some() {
            graph.sink_name = "Sink";
        }
        format!(
            "{}Execution graph (parallelism {parallelism}):\n{graph}",
            Head(self, &head)
        )
    }

    /// The plan's lines under a first line naming what it ends in.
    fn write_plan(&self, f: &mut fmt::Formatter<'_>, head: &str) -> fmt::Result {
        let props = self.root.props();
        let key: Vec<&str> = props
            .key
            .iter()
            .map(|&i| self.schema().field(i).name().as_str())
            .collect();
        writeln!(
            f,
            "{head}: {} key=[{}]",
            if props.append_only {
                "append-only"
            } else {
                "updating"
            },
            key.join(", ")
        )?;
        write_node(f, &self.root, 1, &self.columns_read())
    }
}

/// `read`: which columns of each node the plan reads (shown for sources).
fn write_node(
    f: &mut fmt::Formatter<'_>,
    node: &StreamNode,
    depth: usize,
    read: &ColumnsRead,
) -> fmt::Result {
    // A renaming (subquery alias) moves no data: show its input instead.
    let node = node.skip_renamings();
    let pad = "  ".repeat(depth);
    match node {
        StreamNode::Source {
            stream,
            schema,
            event_time,
            late,
            ..
        } => {
            write!(f, "{pad}Source: {stream}")?;
            if *late {
                write!(f, " late_rows")?;
            }
            if let Some(et) = event_time {
                write!(
                    f,
                    " watermark={} - {}ms",
                    schema.field(et.column).name(),
                    et.delay / 1_000_000
                )?;
            }
            let read = read.of(node);
            if read.contains(&false) {
                let names: Vec<&str> = schema
                    .fields()
                    .iter()
                    .zip(read)
                    .filter(|(_, r)| **r)
                    .map(|(c, _)| c.name().as_str())
                    .collect();
                write!(f, " columns=[{}]", names.join(", "))?;
            }
            writeln!(f)
        }
        StreamNode::Project { exprs, .. } => {
            let e: Vec<String> = exprs.iter().map(|e| pretty(&e.to_string())).collect();
            writeln!(f, "{pad}Project: {}", e.join(", "))
        }
        StreamNode::Filter { predicate, .. } => {
            writeln!(f, "{pad}Filter: {}", pretty(&predicate.to_string()))
        }
        StreamNode::Unnest { column, schema, .. } => {
            writeln!(f, "{pad}Unnest: {}", pretty(schema.field(*column).name()))
        }
        StreamNode::TopN {
            partition,
            order,
            limit,
            ..
        } => {
            let p: Vec<String> = partition.iter().map(|e| e.to_string()).collect();
            let o: Vec<String> = order.iter().map(|s| s.to_string()).collect();
            writeln!(
                f,
                "{pad}TopN: partition=[{}] order=[{}] limit={limit}",
                p.join(", "),
                o.join(", ")
            )
        }
        StreamNode::Over {
            partition,
            frame,
            aggs,
            schema,
            ..
        } => {
            let p: Vec<String> = partition.iter().map(|e| e.to_string()).collect();
            let width = schema.fields().len() - aggs.len();
            let a: Vec<String> = aggs
                .iter()
                .enumerate()
                .map(|(i, c)| format!("{}: {}", schema.field(width + i).name(), c.kind.name()))
                .collect();
            let frame = match frame {
                OverFrame::Rows(n) => format!("rows {n} preceding"),
                OverFrame::Range(ns) => {
                    format!("range {} preceding", interval_sql(0, 0, *ns as i128))
                }
                OverFrame::RowsUnbounded => "rows unbounded preceding".to_string(),
                OverFrame::RangeUnbounded => "range unbounded preceding".to_string(),
            };
            writeln!(
                f,
                "{pad}OverAggregate: partition=[{}] {frame} aggs=[{}]",
                pretty(&p.join(", ")),
                a.join(", ")
            )
        }
        StreamNode::Join {
            left,
            right,
            left_keys,
            right_keys,
            filter,
            outer,
            interval,
            ..
        } => {
            let on: Vec<String> = left_keys
                .iter()
                .zip(right_keys)
                .map(|(l, r)| format!("{l} = {r}"))
                .collect();
            let kind = if interval.is_some() {
                "IntervalJoin"
            } else {
                "HashJoin"
            };
            let side = match outer {
                [false, false] => "inner",
                [true, false] => "left",
                [false, true] => "right",
                [true, true] => "full",
            };
            write!(f, "{pad}{kind}: {side} on=[{}]", on.join(", "))?;
            if let Some(filter) = filter {
                write!(f, " filter={}", pretty(&filter.to_string()))?;
            }
            if let Some(i) = interval {
                let bound = |b: Option<i64>| match b {
                    Some(ns) => interval_sql(0, 0, ns as i128),
                    None => "unbounded".to_string(),
                };
                let column = |s: &DFSchemaRef, i: usize| Column::from(s.qualified_field(i));
                write!(
                    f,
                    " time={} - {} in [{}, {}]",
                    column(left.schema(), i.left_time),
                    column(right.schema(), i.right_time),
                    bound(i.lower),
                    bound(i.upper)
                )?;
            }
            writeln!(f)
        }
        StreamNode::LookupJoin {
            table,
            keys,
            outer,
            filter,
            ..
        } => {
            let k: Vec<String> = keys.iter().map(|e| e.to_string()).collect();
            let kind = if *outer { "left" } else { "inner" };
            write!(
                f,
                "{pad}LookupJoin: {kind} table={table} key=[{}]",
                k.join(", ")
            )?;
            if let Some(filter) = filter {
                write!(f, " filter={}", pretty(&filter.to_string()))?;
            }
            writeln!(f)
        }
        StreamNode::Aggregate {
            group,
            aggs,
            window,
            partition_window,
            emit_on_window_close,
            ..
        } => {
            let g: Vec<String> = group.iter().map(|e| e.to_string()).collect();
            let a: Vec<String> = aggs
                .iter()
                .map(|c| {
                    let args: Vec<String> = c.args.iter().map(|e| e.to_string()).collect();
                    let args = if args.is_empty() {
                        "*".to_string()
                    } else {
                        args.join(", ")
                    };
                    let filter = c
                        .filter
                        .as_ref()
                        .map(|f| format!(" FILTER (WHERE {f})"))
                        .unwrap_or_default();
                    format!(
                        "{}({}{args}){filter}",
                        c.kind.name(),
                        if c.distinct { "DISTINCT " } else { "" }
                    )
                })
                .collect();
            write!(
                f,
                "{pad}{}: group=[{}] aggs=[{}]",
                node.operator_names()[0],
                g.join(", "),
                a.join(", ")
            )?;
            if let Some(w) = window {
                write!(
                    f,
                    " close_when={}>={}+{}ms",
                    if w.processing_time {
                        "wall_clock"
                    } else {
                        "watermark"
                    },
                    g[w.key_index],
                    w.offset / 1_000_000
                )?;
            }
            match partition_window.as_ref().map(|w| &w.kind) {
                Some(PartitionWindowKind::Session { gap }) => write!(
                    f,
                    " session_gap={}ms close_when=watermark>window_end",
                    gap / 1_000_000
                )?,
                Some(PartitionWindowKind::Count { size, .. }) => write!(
                    f,
                    " rows_per_window={size} numbered_when=watermark>event_time"
                )?,
                None => {}
            }
            if *emit_on_window_close {
                write!(f, " emit=on-window-close")?;
            } else {
                write!(f, " emit=updates")?;
            }
            writeln!(f)
        }
    }?;
    for input in node.inputs() {
        write_node(f, input, depth + 1, read)?;
    }
    Ok(())
}

/// DataFusion prints interval literals as their struct; show them as SQL.
pub(super) fn pretty(s: &str) -> String {
    const HEAD: &str = "IntervalMonthDayNano(\"IntervalMonthDayNano { ";
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(HEAD) {
        out.push_str(&rest[..i]);
        let after = &rest[i + HEAD.len()..];
        let Some(end) = after.find(" }\")") else {
            out.push_str(&rest[i..]);
            return out;
        };
        let mut parts = [0i128; 3];
        for (slot, field) in after[..end].split(", ").enumerate().take(3) {
            parts[slot] = field
                .rsplit(": ")
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
        }
        out.push_str(&interval_sql(parts[0], parts[1], parts[2]));
        rest = &after[end + 4..];
    }
    out.push_str(rest);
    out
}

fn interval_sql(months: i128, days: i128, nanos: i128) -> String {
    let mut words = Vec::new();
    if months != 0 {
        words.push(format!("{months} months"));
    }
    if days != 0 {
        words.push(format!("{days} days"));
    }
    if nanos != 0 || words.is_empty() {
        let secs = nanos as f64 / 1e9;
        words.push(format!("{secs} seconds"));
    }
    format!("INTERVAL '{}'", words.join(" "))
}

#[cfg(test)]
mod tests {
    use super::pretty;

    #[test]
    fn intervals_print_as_sql() {
        assert_eq!(
            pretty("tumble_start(ts, IntervalMonthDayNano(\"IntervalMonthDayNano { months: 0, days: 0, nanoseconds: 10000000000 }\"))"),
            "tumble_start(ts, INTERVAL '10 seconds')"
        );
    }
}
