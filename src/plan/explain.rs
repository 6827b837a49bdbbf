//! EXPLAIN output of a stream plan: one line per node, inputs indented.

use std::fmt;

use super::{StreamNode, StreamPlan};

impl fmt::Display for StreamPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props = self.root.props();
        let key: Vec<&str> = props
            .key
            .iter()
            .map(|&i| self.schema().field(i).name().as_str())
            .collect();
        writeln!(
            f,
            "Materialize: {} key=[{}]",
            if props.append_only {
                "append-only"
            } else {
                "updating"
            },
            key.join(", ")
        )?;
        write_node(f, &self.root, 1)
    }
}

fn write_node(f: &mut fmt::Formatter<'_>, node: &StreamNode, depth: usize) -> fmt::Result {
    let pad = "  ".repeat(depth);
    match node {
        StreamNode::Source {
            stream,
            schema,
            event_time,
            ..
        } => {
            write!(f, "{pad}Source: {stream}")?;
            if let Some(et) = event_time {
                write!(
                    f,
                    " watermark={} - {}ms",
                    schema.field(et.column).name(),
                    et.delay / 1_000_000
                )?;
            }
            writeln!(f)
        }
        StreamNode::Project { exprs, .. } => {
            let e: Vec<String> = exprs.iter().map(|e| e.to_string()).collect();
            writeln!(f, "{pad}Project: {}", e.join(", "))
        }
        StreamNode::Filter { predicate, .. } => writeln!(f, "{pad}Filter: {predicate}"),
        StreamNode::Aggregate {
            group,
            aggs,
            window,
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
                    format!(
                        "{}({}{args})",
                        c.kind.name(),
                        if c.distinct { "DISTINCT " } else { "" }
                    )
                })
                .collect();
            write!(
                f,
                "{pad}{}: group=[{}] aggs=[{}]",
                if window.is_some() {
                    "WindowAggregate"
                } else {
                    "GroupAggregate"
                },
                g.join(", "),
                a.join(", ")
            )?;
            if let Some(w) = window {
                write!(
                    f,
                    " close_when=watermark>={}+{}ms",
                    g[w.key_index],
                    w.offset / 1_000_000
                )?;
            }
            if *emit_on_window_close {
                write!(f, " emit=on-window-close")?;
            } else {
                write!(f, " emit=updates")?;
            }
            writeln!(f)
        }
    }?;
    if let Some(input) = node.input() {
        write_node(f, input, depth + 1)?;
    }
    Ok(())
}
