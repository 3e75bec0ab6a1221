//! The layer graph as Graphviz DOT (`nnc graph`): one box per layer labelled with its
//! call and output shape, each block use a cluster, nested as the blocks are.

use crate::ir::graph::{Graph, NodeKind, ScopeId};
use std::fmt::Write;

pub fn to_dot(graph: &Graph) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(&graph.name));
    let _ = writeln!(out, "  rankdir=TB;");
    let _ = writeln!(out, "  node [shape=box, style=rounded, fontname=\"Helvetica\", fontsize=10];");
    let _ = writeln!(out, "  edge [fontname=\"Helvetica\", fontsize=9];");
    write_scope(graph, ScopeId::ROOT, 1, &mut out);
    for (i, n) in graph.nodes.iter().enumerate() {
        for input in &n.inputs {
            let _ = writeln!(out, "  n{} -> n{i};", input.0);
        }
    }
    out.push_str("}\n");
    out
}

/// Writes the nodes of `scope` and, as nested clusters, its child scopes.
fn write_scope(graph: &Graph, scope: ScopeId, depth: usize, out: &mut String) {
    let pad = "  ".repeat(depth);
    for (i, n) in graph.nodes.iter().enumerate().filter(|(_, n)| n.scope == scope) {
        let shape = match n.kind {
            NodeKind::Input(_) => ", shape=ellipse",
            NodeKind::Layer { .. } => "",
        };
        let label =
            format!("{}\\n{}\\n{}", escape(&n.name), escape(&n.description), escape(&n.shape.to_string()));
        let _ = writeln!(out, "{pad}n{i} [label=\"{label}\"{shape}];");
    }
    for (i, s) in graph.scopes.iter().enumerate().filter(|(_, s)| s.parent == Some(scope)) {
        let _ = writeln!(out, "{pad}subgraph cluster_{i} {{");
        let _ = writeln!(out, "{pad}  label=\"{}: {}\";", escape(&s.name), escape(&s.call));
        let _ = writeln!(out, "{pad}  style=rounded; color=gray60;");
        write_scope(graph, ScopeId(i as u32), depth + 1, out);
        let _ = writeln!(out, "{pad}}}");
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}
