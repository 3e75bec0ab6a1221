//! Stage 5: lowering. Turns a checked layer graph into a [`TensorGraph`] for one batch
//! size, each layer through its own `lower` (in its file under `layers/`).
//!
//! `flatten` and inference-mode `dropout` lower to nothing: their output is their input
//! tensor, read with other dimensions. In training mode, layers that behave differently
//! while training (batch-norm's batch statistics, dropout, recurrent layers that save what
//! backpropagation through time reads) lower to their training forms; [`crate::passes::autodiff`] then adds
//! the backward pass.

use crate::ir::graph::{Graph, InputEncoding, Node, NodeKind};
use crate::ir::ops::{Layout, Op, OpNode, Origin, ParamInfo, Role, Tensor, TensorGraph, TensorId};
use crate::ir::shape::Shape;

/// The dimensions of a per-example shape with the batch in front.
pub fn batched(batch: usize, shape: &Shape) -> Vec<usize> {
    std::iter::once(batch).chain(shape.dims().into_iter().map(|d| d as usize)).collect()
}

/// Which form of the network to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Inference,
    Training,
}

/// What a layer's `lower` builds with.
pub struct Lower<'g> {
    graph: TensorGraph,
    node: Option<&'g Node>,
    mode: Mode,
    hyper: Option<TensorId>,
}

impl Lower<'_> {
    pub fn batch(&self) -> usize {
        self.graph.batch
    }

    pub fn training(&self) -> bool {
        self.mode == Mode::Training
    }

    /// The training step's hyper-parameter tensor (learning rate, dropout seed, ...).
    pub fn hyper(&mut self) -> TensorId {
        if let Some(h) = self.hyper {
            return h;
        }
        let h = self.tensor("hyper".into(), vec![crate::ir::ops::Hyper::LEN], Role::Hyper);
        self.hyper = Some(h);
        h
    }

    /// Adds `op` on `inputs`, writing its result over `target` (running statistics).
    pub fn op_in_place(&mut self, op: Op, inputs: Vec<TensorId>, target: TensorId) {
        let layer = self.node.map(|n| n.path.clone()).unwrap_or_default();
        self.graph.ops.push(OpNode { op, inputs, output: target, aux: Vec::new(), layer });
    }

    /// The current layer's `index`-th parameter (in the order its `params` lists them),
    /// stored in `layout`.
    pub fn param(&mut self, index: usize, layout: Layout) -> TensorId {
        let node = self.node.expect("params are read while lowering a layer");
        let p = &node.params[index];
        let torch_dims: Vec<usize> = p.dims.iter().map(|&d| d as usize).collect();
        let dims = match layout {
            Layout::Same => torch_dims.clone(),
            Layout::Transposed => vec![torch_dims[1..].iter().product(), torch_dims[0]],
        };
        let info = ParamInfo {
            name: p.name.clone(),
            torch_dims,
            layout,
            trainable: p.role == crate::front::layers::ParamRole::Trainable,
            init: p.init,
        };
        self.tensor(p.name.clone(), dims, Role::Param(info))
    }

    /// Adds `op` on `inputs`, producing a new tensor of `dims`.
    pub fn op(&mut self, op: Op, inputs: Vec<TensorId>, dims: Vec<usize>) -> TensorId {
        let layer = self.node.map(|n| n.path.clone()).unwrap_or_default();
        let output = self.tensor(format!("{layer}:{}", op.name()), dims, Role::Activation);
        self.graph.tensors[output.0 as usize].origin =
            Origin::Output { layer: layer.clone(), op: op.name().to_string() };
        self.graph.ops.push(OpNode { op, inputs, output, aux: Vec::new(), layer });
        output
    }

    /// Adds `op` on `inputs`, producing a new tensor of `dims` and, as its auxiliary
    /// outputs, one named `{layer}:{name}` of its dimensions for each of `aux`.
    pub fn op_with_aux(
        &mut self,
        op: Op,
        inputs: Vec<TensorId>,
        dims: Vec<usize>,
        aux: Vec<(&str, Vec<usize>)>,
    ) -> TensorId {
        let output = self.op(op, inputs, dims);
        let layer = self.node.map(|n| n.path.clone()).unwrap_or_default();
        let aux: Vec<TensorId> = aux
            .into_iter()
            .map(|(name, dims)| self.tensor(format!("{layer}:{name}"), dims, Role::Activation))
            .collect();
        self.graph.ops.last_mut().expect("the op was just added").aux = aux;
        output
    }

    fn tensor(&mut self, name: String, dims: Vec<usize>, role: Role) -> TensorId {
        self.graph.tensors.push(Tensor { name, dims, role, view: None, origin: Origin::Named });
        TensorId(self.graph.tensors.len() as u32 - 1)
    }
}

/// Lowers a checked network for `batch` examples per run, for inference.
pub fn lower(graph: &Graph, batch: usize) -> TensorGraph {
    lower_for(graph, batch, Mode::Inference)
}

/// Lowers a checked network for `batch` examples per run in `mode`.
pub fn lower_for(graph: &Graph, batch: usize, mode: Mode) -> TensorGraph {
    let mut cx =
        Lower { graph: TensorGraph { batch, ..TensorGraph::default() }, node: None, mode, hyper: None };
    let mut tensor_of: Vec<TensorId> = Vec::with_capacity(graph.nodes.len());
    for node in &graph.nodes {
        let id = match &node.kind {
            NodeKind::Input(encoding) => {
                let t = cx.tensor(node.name.clone(), batched(batch, &node.shape), Role::Input);
                cx.graph.inputs.push(t);
                if *encoding == InputEncoding::OneHot {
                    cx.graph.one_hot.push(t);
                }
                t
            }
            NodeKind::Layer { layer, .. } => {
                let inputs: Vec<TensorId> = node.inputs.iter().map(|i| tensor_of[i.0 as usize]).collect();
                let shapes: Vec<Shape> = node.inputs.iter().map(|i| graph.node(*i).shape).collect();
                cx.node = Some(node);
                layer.lower(&mut cx, &inputs, &shapes, &node.shape)
            }
        };
        tensor_of.push(id);
    }
    cx.graph.output = tensor_of[graph.output.0 as usize];
    cx.graph
}
