//! The shape plan: what `nnc compile` prints. One row per layer (and one per block use,
//! with its layers indented under it), totals, memory at a batch size, and the training
//! set-up. It is plain data: [`text`] renders it for people, serde for tools.

mod text;
pub mod training;

use crate::front::train::TrainConfig;
use crate::ir::graph::{Graph, NodeId, ScopeId};
use crate::support::source::SourceMap;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub network: String,
    /// `file:line:col` of the network's name.
    pub defined_at: String,
    pub rows: Vec<Row>,
    pub totals: Totals,
    pub memory: Memory,
    pub train: Option<TrainConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    Input,
    Layer,
    /// A block use; the rows under it (one level deeper) are its contents.
    Block,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub kind: RowKind,
    /// Block nesting depth (0 for the network's own layers).
    pub depth: usize,
    /// `conv2` or `basic3`; unique within its block.
    pub name: String,
    /// `stage2.bottleneck1.conv2`: the prefix of its parameters' names.
    pub path: String,
    /// The layer kind (`conv`), `input`, or for a block use the block's name.
    pub op_kind: String,
    /// The call with evaluated arguments.
    pub op: String,
    /// Output shape (for a block, of its last layer).
    pub output: String,
    /// The same shape as numbers, outermost first (empty for a block).
    pub dims: Vec<u64>,
    /// Trainable parameters (for a block, of everything in it).
    pub params: u64,
    /// Multiply-accumulates per example (for a block, of everything in it).
    pub macs: u64,
    /// Where it is written: a line of the network's file, or `file:line` elsewhere.
    pub line: String,
    /// The layer's parameter tensors, with the names checkpoints use.
    pub tensors: Vec<TensorRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TensorRow {
    pub name: String,
    pub dims: Vec<u64>,
    pub role: crate::front::layers::ParamRole,
    /// `he`, `xavier`, `zeros`, `normal(0.01)`, ...
    pub init: String,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Totals {
    pub layers: usize,
    pub params: u64,
    /// Non-trainable state such as batch-norm running statistics.
    pub buffers: u64,
    pub macs: u64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Memory {
    pub batch: u64,
    /// Threads the kernels are scheduled for (each has its own scratch).
    pub threads: usize,
    /// The arena a compiled run needs: parameters, inputs, stored activations and
    /// scratch, with buffers whose lifetimes do not overlap sharing memory. `None` when
    /// sizes or work at this batch could pass 64 bits (no plan is made then).
    pub arena_bytes: Option<u64>,
    /// The same if no two buffers shared memory.
    pub arena_without_reuse_bytes: Option<u64>,
    /// Parameters and buffers, f32.
    pub parameter_bytes: u64,
}

impl Plan {
    /// The plan of `graph`, with memory figures for `batch` examples on `threads` threads,
    /// scheduled for a back end of `geometry`.
    pub fn new(
        graph: &Graph,
        sources: &SourceMap,
        batch: u64,
        threads: usize,
        geometry: crate::backend::Geometry,
        train: Option<TrainConfig>,
    ) -> Plan {
        let home = graph.span.file;
        let home_dir = std::path::Path::new(&sources.get(home).name).parent().map(|p| p.to_path_buf());
        let line = |span: crate::support::source::Span| {
            let l = sources.line(span);
            if span.file == home {
                return l.to_string();
            }
            // Other files as the main file's `include` names them: `blocks/resnet.net:22`.
            let name = std::path::Path::new(&sources.get(span.file).name);
            let short = home_dir.as_deref().and_then(|d| name.strip_prefix(d).ok()).unwrap_or(name);
            format!("{}:{l}", short.display())
        };
        // Sums over each scope's subtree, and the last node created in it.
        let n_scopes = graph.scopes.len();
        let mut params = vec![0u64; n_scopes];
        let mut macs = vec![0u64; n_scopes];
        let mut last: Vec<Option<NodeId>> = vec![None; n_scopes];
        for (i, n) in graph.nodes.iter().enumerate() {
            for s in graph.scope_chain(n.scope) {
                let s = s.0 as usize;
                // Expansion checked that the whole network's counts fit.
                params[s] += n.trainable_params();
                macs[s] += n.macs;
                last[s] = Some(NodeId(i as u32));
            }
        }
        let mut rows = Vec::new();
        let mut open: Vec<ScopeId> = Vec::new();
        for n in &graph.nodes {
            let chain = graph.scope_chain(n.scope);
            let common = open.iter().zip(&chain).take_while(|(a, b)| a == b).count();
            open.truncate(common);
            for &s in &chain[common..] {
                let scope = graph.scope(s);
                let i = s.0 as usize;
                rows.push(Row {
                    kind: RowKind::Block,
                    depth: open.len(),
                    name: scope.name.clone(),
                    path: scope.path.clone(),
                    op_kind: scope.block.clone(),
                    op: scope.call.clone(),
                    output: last[i].map(|l| graph.node(l).shape.to_string()).unwrap_or_default(),
                    dims: Vec::new(),
                    params: params[i],
                    macs: macs[i],
                    line: line(scope.span),
                    tensors: Vec::new(),
                });
                open.push(s);
            }
            let is_input = matches!(n.kind, crate::ir::graph::NodeKind::Input(_));
            rows.push(Row {
                kind: if is_input { RowKind::Input } else { RowKind::Layer },
                depth: open.len(),
                name: n.name.clone(),
                path: n.path.clone(),
                op_kind: n.kind_name().to_string(),
                op: n.description.clone(),
                output: n.shape.to_string(),
                dims: n.shape.dims(),
                params: n.trainable_params(),
                macs: n.macs,
                line: line(n.span),
                tensors: n
                    .params
                    .iter()
                    .map(|p| TensorRow {
                        name: p.name.clone(),
                        dims: p.dims.clone(),
                        role: p.role,
                        init: p.init.to_string(),
                    })
                    .collect(),
            });
        }
        // Lowering multiplies every size and every kernel's work by the batch; when that
        // could pass 64 bits there is no arena to plan.
        let options = crate::pipeline::Options { threads, guard: 0, geometry };
        let arena = graph
            .macs()
            .checked_mul(batch)
            .and_then(|_| crate::pipeline::inference(graph, batch as usize, options).ok())
            .map(|stages| stages.into_parts().2);
        let all_params = graph.trainable_params().saturating_add(graph.buffer_params());
        Plan {
            network: graph.name.clone(),
            defined_at: sources.location(graph.span),
            rows,
            totals: Totals {
                layers: graph
                    .nodes
                    .iter()
                    .filter(|n| !matches!(n.kind, crate::ir::graph::NodeKind::Input(_)))
                    .count(),
                params: graph.trainable_params(),
                buffers: graph.buffer_params(),
                macs: graph.macs(),
            },
            memory: Memory {
                batch,
                threads,
                arena_bytes: arena.as_ref().map(|a| a.size as u64),
                arena_without_reuse_bytes: arena.as_ref().map(|a| a.without_reuse as u64),
                parameter_bytes: all_params.saturating_mul(4),
            },
            train,
        }
    }
}
