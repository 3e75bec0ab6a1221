//! Stage 6: automatic differentiation. Turns a network lowered in training mode into
//! one training step: the forward ops, the loss, the backward ops (one rule per op, in
//! [`rules`]), the squared gradient norm, and the optimizer update — all ordinary ops of
//! the same [`TensorGraph`], so that fusion, memory planning and code generation treat
//! the backward pass exactly like the forward one.
//!
//! Trainable parameters are packed into one block, their gradients into another with the
//! same offsets, and each optimizer state into a third, so that the update is a single
//! element-wise loop over all of them.

mod rules;
#[cfg(test)]
mod tests;

use crate::front::train::Loss;
use crate::ir::ops::{
    Elementwise, Hyper, Op, OpNode, Origin, Role, Tensor, TensorGraph, TensorId, UpdateRule,
};

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AutodiffError {
    #[error(
        "cross-entropy needs class scores: the network's output is {0:?}, but should be [batch, classes] or [batch, steps, classes]"
    )]
    NotScores(Vec<usize>),
    #[error("the network has no trainable parameters")]
    NothingToTrain,
    #[error("cannot differentiate `{0}` (it has no backward rule)")]
    NoRule(String),
}

/// How many parts a convolution's weight gradient over few input channels is split into
/// (by images), so that threads have work: enough for the machines nnc runs on, few enough
/// that the partial sums stay small.
const WEIGHT_PARTS: usize = 4;

/// Where the parts of a training step are in its graph.
#[derive(Clone, Debug)]
pub struct Training {
    /// Class ids (as i32 bits) or regression targets, one batch.
    pub labels: TensorId,
    /// The step's scalars, at the positions of [`Hyper`].
    pub hyper: TensorId,
    /// `[mean loss, correct predictions]` of the step.
    pub stats: TensorId,
    /// Σ g² over every gradient, for clipping and for detecting non-finite gradients.
    pub grad_norm: TensorId,
    /// The blocks of trainable parameters and of their gradients.
    pub params: TensorId,
    pub grads: TensorId,
    /// Optimizer state blocks, named as in [`UpdateRule::state`].
    pub states: Vec<TensorId>,
    /// The trainable parameters, each with its offset in the blocks.
    pub layout: Vec<(TensorId, usize)>,
    pub rule: UpdateRule,
}

/// Adds the loss, the backward pass and the update `rule` to `forward`, a network lowered
/// in training mode. The graph does not depend on the threads the step will run on, so
/// neither does the order of any sum in it: the same seed gives the same weights on any
/// machine.
pub fn training(
    mut forward: TensorGraph,
    loss: Loss,
    rule: UpdateRule,
) -> Result<(TensorGraph, Training), AutodiffError> {
    let mut g = Grad::new(&mut forward);
    // A final softmax is part of the loss: its input is what the loss reads.
    let mut output = g.graph.output;
    if let Some(last) = g.graph.ops.last()
        && matches!(last.op, Op::Softmax { .. })
        && last.output == output
    {
        output = last.inputs[0];
        g.graph.ops.pop();
    }
    let forward_ops = g.graph.ops.len();
    let dims = g.graph.tensor(output).dims.clone();
    let cols = *dims.last().unwrap_or(&1);
    let rows = g.graph.tensor(output).len() / cols.max(1);
    let (labels, loss_op) = match loss {
        Loss::CrossEntropy => {
            if dims.len() < 2 || dims.len() > 3 {
                return Err(AutodiffError::NotScores(dims));
            }
            (g.tensor("labels", vec![rows], Role::Label), Op::SoftmaxCrossEntropy { rows, cols })
        }
        Loss::MeanSquaredError => {
            (g.tensor("targets", dims.clone(), Role::Label), Op::MeanSquaredError { rows, cols })
        }
    };
    let hyper = g.hyper();
    let stats = g.tensor("loss", vec![2], Role::Activation);
    let dout = g.tensor("d loss", dims, Role::Activation);
    g.graph.tensors[dout.0 as usize].origin = Origin::GradientOf(output);
    g.graph.ops.push(OpNode {
        op: loss_op,
        inputs: vec![output, labels],
        output: dout,
        aux: vec![stats],
        layer: "loss".into(),
    });

    let needs = g.requires_grad();
    g.accumulate(output, dout);
    for i in (0..forward_ops).rev() {
        let node = g.graph.ops[i].clone();
        if node.inputs.contains(&node.output) {
            continue; // running statistics: updated in place, not differentiated
        }
        g.layer = node.layer.clone();
        let Some(dy) = g.take(node.output) else { continue };
        rules::backward(&mut g, &node, dy, &needs)?;
    }

    // Blocks: parameters, gradients, optimizer state.
    let trainable: Vec<TensorId> = (0..g.graph.tensors.len() as u32)
        .map(TensorId)
        .filter(|t| matches!(&g.graph.tensor(*t).role, Role::Param(p) if p.trainable))
        .collect();
    if trainable.is_empty() {
        return Err(AutodiffError::NothingToTrain);
    }
    let mut layout = Vec::with_capacity(trainable.len());
    let mut total = 0;
    for &p in &trainable {
        layout.push((p, total));
        total += g.graph.tensor(p).len();
    }
    let params = g.tensor("__params", vec![total], Role::Block { persistent: true });
    let grads = g.tensor("__grads", vec![total], Role::Block { persistent: false });
    for &(p, offset) in &layout {
        g.graph.tensors[p.0 as usize].view = Some((params, offset));
        g.layer = g.graph.tensor(p).name.rsplit_once('.').map_or("", |(layer, _)| layer).to_string();
        let len = g.graph.tensor(p).len();
        let dims = g.graph.tensor(p).dims.clone();
        let grad = match g.take(p) {
            // Computed by an op for this alone: that op writes straight into the block.
            Some(t) if g.producer(t).is_some() && g.uses(t) == 0 && g.graph.tensor(t).view.is_none() => t,
            Some(t) => g.gradient(Op::Copy { offset: 0, len }, vec![t], p, dims),
            // Not reached from the loss: its gradient is zero.
            None => g.gradient(Op::Fill { len, value: 0.0 }, vec![], p, dims),
        };
        g.graph.tensors[grad.0 as usize].view = Some((grads, offset));
    }
    g.layer = "optimizer".into();
    let grad_norm = g.op(Op::SumSquares { len: total }, vec![grads], "grad_norm", vec![1]);
    let states: Vec<TensorId> = rule
        .state()
        .iter()
        .map(|name| g.tensor(name, vec![total], Role::State((*name).to_string())))
        .collect();
    let mut inputs = vec![params, grads, hyper];
    inputs.extend(&states);
    g.graph.ops.push(OpNode {
        op: Op::Update { len: total, rule },
        inputs,
        output: params,
        aux: states.clone(),
        layer: "optimizer".into(),
    });
    forward.output = stats;
    Ok((forward, Training { labels, hyper, stats, grad_norm, params, grads, states, layout, rule }))
}

/// The graph being differentiated, and the gradient contributions collected so far.
pub(crate) struct Grad<'g> {
    pub graph: &'g mut TensorGraph,
    /// Per tensor: the sum of the full contributions so far, and slices of it from
    /// `slice` ops (`offset`, `len`, `outer`, `total`, gradient), kept apart until all
    /// arrive so that they can be joined with one `concat`.
    full: Vec<Option<TensorId>>,
    pieces: Vec<Vec<Piece>>,
    /// Uses of each tensor by ops added so far.
    uses: Vec<usize>,
    /// The layer new ops are attributed to (the forward op's, for its backward ops).
    pub layer: String,
    /// Transposed copies made so far, by the tensor they transpose.
    transposes: Vec<(TensorId, TensorId)>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct Piece {
    pub outer: usize,
    pub total: usize,
    pub offset: usize,
    pub len: usize,
    pub grad: TensorId,
}

impl<'g> Grad<'g> {
    fn new(graph: &'g mut TensorGraph) -> Grad<'g> {
        let n = graph.tensors.len();
        let mut uses = vec![0; n];
        for node in &graph.ops {
            for t in &node.inputs {
                uses[t.0 as usize] += 1;
            }
        }
        Grad {
            graph,
            full: vec![None; n],
            pieces: vec![Vec::new(); n],
            uses,
            layer: String::new(),
            transposes: Vec::new(),
        }
    }

    pub fn tensor(&mut self, name: &str, dims: Vec<usize>, role: Role) -> TensorId {
        self.graph.tensors.push(Tensor { name: name.into(), dims, role, view: None, origin: Origin::Named });
        self.full.push(None);
        self.pieces.push(Vec::new());
        self.uses.push(0);
        TensorId(self.graph.tensors.len() as u32 - 1)
    }

    /// Adds `op` on `inputs`, its output named `name`.
    pub fn op(&mut self, op: Op, inputs: Vec<TensorId>, name: &str, dims: Vec<usize>) -> TensorId {
        self.op_for(op, inputs, name, dims, Origin::Named)
    }

    /// Adds `op` on `inputs`, computing (a contribution to) the gradient of `of`.
    pub fn gradient(&mut self, op: Op, inputs: Vec<TensorId>, of: TensorId, dims: Vec<usize>) -> TensorId {
        let name = format!("d {}", self.graph.tensor(of).name);
        self.op_for(op, inputs, &name, dims, Origin::GradientOf(of))
    }

    /// Adds `op` on `inputs`, its output named `name` and standing for `origin`.
    pub fn op_for(
        &mut self,
        op: Op,
        inputs: Vec<TensorId>,
        name: &str,
        dims: Vec<usize>,
        origin: Origin,
    ) -> TensorId {
        let output = self.tensor(name, dims, Role::Activation);
        self.graph.tensors[output.0 as usize].origin = origin;
        for t in &inputs {
            self.uses[t.0 as usize] += 1;
        }
        self.graph.ops.push(OpNode { op, inputs, output, aux: Vec::new(), layer: self.layer.clone() });
        output
    }

    /// `t` (`rows × cols`) transposed, made once however many products read it: an
    /// unrolled recurrence multiplies by the same weights at every step, and a copy per
    /// step cost an LSTM of 256 units over 64 steps 31 ms of every training step.
    pub fn transposed(&mut self, t: TensorId, rows: usize, cols: usize) -> TensorId {
        if let Some(&(_, copy)) = self.transposes.iter().find(|(of, _)| *of == t) {
            return copy;
        }
        let name = format!("{}ᵀ", self.graph.tensor(t).name);
        let copy = self.op(Op::Transpose { rows, cols }, vec![t], &name, vec![cols, rows]);
        self.transposes.push((t, copy));
        copy
    }

    fn hyper(&mut self) -> TensorId {
        match self.graph.tensors.iter().position(|t| t.role == Role::Hyper) {
            Some(i) => TensorId(i as u32),
            None => self.tensor("hyper", vec![Hyper::LEN], Role::Hyper),
        }
    }

    /// Parts to split a convolution's weight gradient into, each summing its own images:
    /// [`WEIGHT_PARTS`] when the kernel could not otherwise give threads work (it splits
    /// input channels, and there are fewer of them than parts) and the images divide
    /// evenly; else one. The choice depends on the shapes alone, never on the thread count,
    /// so that the partial sums — and with them every weight — round the same way on any
    /// number of threads.
    fn weight_parts(&self, win: &crate::ir::ops::Window2d, groups: usize) -> usize {
        let cg = win.c / groups;
        if groups > 1 || cg >= WEIGHT_PARTS {
            return 1;
        }
        (2..=WEIGHT_PARTS).rev().find(|&p| win.n.is_multiple_of(p) && win.n >= 2 * p).unwrap_or(1)
    }

    fn producer(&self, t: TensorId) -> Option<&OpNode> {
        self.graph.ops.iter().find(|o| o.output == t)
    }

    fn uses(&self, t: TensorId) -> usize {
        self.uses[t.0 as usize]
    }

    /// Which tensors depend on a trainable parameter.
    fn requires_grad(&self) -> Vec<bool> {
        let mut needs: Vec<bool> =
            self.graph.tensors.iter().map(|t| matches!(&t.role, Role::Param(p) if p.trainable)).collect();
        for node in &self.graph.ops {
            if node.inputs.iter().any(|t| needs[t.0 as usize]) && !node.inputs.contains(&node.output) {
                needs[node.output.0 as usize] = true;
            }
        }
        needs
    }

    /// Adds `grad` to the gradient of `t`, summing as contributions arrive so that at
    /// most one partial sum per tensor is alive.
    pub fn accumulate(&mut self, t: TensorId, grad: TensorId) {
        let i = t.0 as usize;
        self.full[i] = Some(match self.full[i] {
            None => grad,
            Some(prev) => {
                let dims = self.graph.tensor(t).dims.clone();
                let len = self.graph.tensor(t).len();
                self.gradient(Op::Elementwise { len, f: Elementwise::add(2) }, vec![prev, grad], t, dims)
            }
        });
    }

    /// Adds the gradient of a slice of `t`.
    pub fn accumulate_piece(&mut self, t: TensorId, piece: Piece) {
        self.pieces[t.0 as usize].push(piece);
    }

    /// The whole gradient of `t`, once every consumer has contributed.
    fn take(&mut self, t: TensorId) -> Option<TensorId> {
        let i = t.0 as usize;
        let mut pieces = std::mem::take(&mut self.pieces[i]);
        if !pieces.is_empty() {
            let joined = self.join(t, &mut pieces);
            self.accumulate(t, joined);
        }
        self.full[i].take()
    }

    /// Slices' gradients as one tensor of `t`'s shape: pieces that tile each row are
    /// joined by `concat`, gaps filled with zeros; overlapping pieces are summed.
    fn join(&mut self, t: TensorId, pieces: &mut [Piece]) -> TensorId {
        let dims = self.graph.tensor(t).dims.clone();
        let (outer, total) = (pieces[0].outer, pieces[0].total);
        pieces.sort_by_key(|p| p.offset);
        let mut layers: Vec<Vec<Piece>> = Vec::new();
        for p in pieces.iter() {
            match layers.iter_mut().find(|l| l.last().is_none_or(|q| q.offset + q.len <= p.offset)) {
                Some(l) => l.push(*p),
                None => layers.push(vec![*p]),
            }
        }
        let mut sum = None;
        for layer in layers {
            let mut inputs = Vec::new();
            let mut inners = Vec::new();
            let mut at = 0;
            for p in layer.iter().map(Some).chain([None]) {
                let next = p.map_or(total, |p| p.offset);
                if next > at {
                    let gap = next - at;
                    inputs.push(self.gradient(
                        Op::Fill { len: outer * gap, value: 0.0 },
                        vec![],
                        t,
                        vec![outer, gap],
                    ));
                    inners.push(gap);
                }
                if let Some(p) = p {
                    inputs.push(p.grad);
                    inners.push(p.len);
                    at = p.offset + p.len;
                }
            }
            let whole = if inputs.len() == 1 {
                inputs[0]
            } else {
                self.gradient(Op::Concat { outer, inners }, inputs, t, dims.clone())
            };
            sum = Some(match sum {
                None => whole,
                Some(prev) => {
                    let len = outer * total;
                    self.gradient(
                        Op::Elementwise { len, f: Elementwise::add(2) },
                        vec![prev, whole],
                        t,
                        dims.clone(),
                    )
                }
            });
        }
        sum.expect("at least one piece")
    }
}
