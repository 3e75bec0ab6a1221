//! Stage 7: scheduling. Groups the tensor ops into kernels (fusion) and writes each group
//! as a loop nest.
//!
//! - Ops that read only parameters (batch-norm folding) become prologue kernels.
//! - A convolution or matrix product absorbs the element-wise ops that follow it — bias,
//!   batch-norm affine, activations, a residual `add` — into its epilogue, as long as each
//!   intermediate feeds only the next op. Intermediates that are fused away are never
//!   stored.
//! - Other runs of element-wise ops become one vectorised `Map`.
//! - Pooling, softmax, LRN, concatenation, embedding and recurrences are kernels of
//!   their own.

use crate::backend::Geometry;
use crate::ir::kernel::*;
use crate::ir::ops::{Elementwise, Op, OpNode, Role, TensorGraph, TensorId};
use riders::{Group, Rider};

/// Below this much work (multiply-adds or elements touched), a kernel runs on one thread:
/// about 20 µs, several times the cost of a dispatch to the workers.
pub const MIN_PARALLEL_WORK: usize = 1 << 17;

/// An element-wise map at least this long is split across threads. Maps touch each
/// element once and stream through memory at several elements per cycle, so a map is
/// worth splitting at fewer elements than [`MIN_PARALLEL_WORK`] counts multiply-adds:
/// LeNet-5's 301,056-element `tanh_backward` at batch 64 halves, from 41 to 22 µs.
const MIN_PARALLEL_MAP: usize = 1 << 14;

/// Groups and schedules `graph`'s ops for `threads` threads, shaped for a back end with
/// `geometry`.
pub fn schedule(graph: &TensorGraph, threads: usize, geometry: Geometry) -> Program {
    let mut uses = vec![0usize; graph.tensors.len()];
    for node in &graph.ops {
        for t in &node.inputs {
            uses[t.0 as usize] += 1;
        }
    }
    uses[graph.output.0 as usize] += 1;
    // Ops whose inputs are all parameters (or computed only from parameters).
    let mut static_tensor: Vec<bool> =
        graph.tensors.iter().map(|t| matches!(t.role, Role::Param(_))).collect();
    let mut prologue = Vec::new();
    let mut body = Vec::new();
    for (i, node) in graph.ops.iter().enumerate() {
        if node.inputs.iter().all(|t| static_tensor[t.0 as usize]) {
            static_tensor[node.output.0 as usize] = true;
            prologue.push(i);
        } else {
            body.push(i);
        }
    }
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Option<(Vec<usize>, Shape2)> = None;
    for i in body {
        let node = &graph.ops[i];
        if let Some((group, shape)) = &mut current {
            let last = &graph.ops[*group.last().expect("groups are not empty")];
            if let Some(next) = absorb(graph, &uses, last.output, *shape, node) {
                group.push(i);
                *shape = next;
                continue;
            }
        }
        if let Some((group, _)) = current.take() {
            groups.push(group);
        }
        match anchor_shape(node) {
            Some(shape) => current = Some((vec![i], shape)),
            None => groups.push(vec![i]),
        }
    }
    if let Some((group, _)) = current {
        groups.push(group);
    }
    let mut program = Program { kernels: Vec::new(), threads, geometry };
    if !prologue.is_empty() {
        program.kernels.push(Build::new(graph, threads, geometry).prologue(&prologue));
    }
    let groups = riders::attach(graph, &Build::new(graph, threads, geometry), groups);
    for group in groups {
        let name = format!("k{}", program.kernels.len());
        let kernel = Build::new(graph, threads, geometry).kernel(name, &group);
        program.kernels.push(kernel);
    }
    program
}

/// How an element-wise tail can index the anchor's output: as rows × cols of a matrix
/// product (per-row or per-column parameters), or as `[outer, channels, inner]` of a map.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Shape2 {
    /// A product `[rows, cols]` per image, channels along rows (convolution).
    GemmRows { rows: usize, cols: usize },
    /// A product `[rows, cols]`, channels along columns (dense).
    GemmCols { rows: usize, cols: usize },
    /// An element-wise chain; `channels` once a channel op has fixed the structure.
    Map { len: usize, channels: Option<(usize, usize, usize)> },
}

fn anchor_shape(node: &OpNode) -> Option<Shape2> {
    match fusion(node) {
        Fusion::Product(shape) => Some(shape),
        Fusion::Step(step) => Some(Shape2::Map { len: step.len, channels: step.channels }),
        Fusion::Alone => None,
    }
}

/// How an op takes part in fusion.
enum Fusion {
    /// A product whose output an element-wise tail can follow.
    Product(Shape2),
    /// An element-wise step, which can follow a product or another step.
    Step(TailStep),
    /// A kernel of its own.
    Alone,
}

/// An element-wise op as a step on a running value, its first input.
struct TailStep {
    /// Elements of the value.
    len: usize,
    /// The `[outer, channels, inner]` structure of a per-channel step.
    channels: Option<(usize, usize, usize)>,
    /// The step's other inputs.
    operands: Vec<Operand>,
    step: Step,
}

/// How `node` fuses. The match names every op, so a new op does not build until it says.
fn fusion(node: &OpNode) -> Fusion {
    let channel = |i: usize, at: usize| Operand::Channel(node.inputs[i], at);
    match node.op {
        Op::Conv2d { win, k, .. } => Fusion::Product(Shape2::GemmRows { rows: k, cols: win.oh * win.ow }),
        Op::MatMul { m, n, .. } => Fusion::Product(Shape2::GemmCols { rows: m, cols: n }),
        Op::Elementwise { len, ref f } => Fusion::Step(TailStep {
            len,
            channels: None,
            operands: node.inputs[1..].iter().map(|t| Operand::Same(*t)).collect(),
            step: Step::Apply(f.clone()),
        }),
        Op::AddChannel { outer, channels, inner } => Fusion::Step(TailStep {
            len: outer * channels * inner,
            channels: Some((outer, channels, inner)),
            operands: vec![channel(1, 0)],
            step: Step::Add,
        }),
        Op::ScaleShiftChannel { outer, channels, inner } => Fusion::Step(TailStep {
            len: outer * channels * inner,
            channels: Some((outer, channels, inner)),
            operands: vec![channel(1, 0), channel(1, channels)],
            step: Step::ScaleShift,
        }),
        Op::Pool2d { .. }
        | Op::GlobalAvgPool { .. }
        | Op::BatchNormFold { .. }
        | Op::Fill { .. }
        | Op::Softmax { .. }
        | Op::Lrn { .. }
        | Op::Concat { .. }
        | Op::Embedding { .. }
        | Op::Recurrent(_)
        | Op::RecurrentBackward(_)
        | Op::ChannelMoments { .. }
        | Op::BatchNormFoldTrain { .. }
        | Op::UpdateRunning { .. }
        | Op::Dropout { .. }
        | Op::Conv2dBackwardData { .. }
        | Op::Conv2dBackwardWeight { .. }
        | Op::SumParts { .. }
        | Op::Pool2dBackward { .. }
        | Op::BroadcastChannel { .. }
        | Op::ChannelSum { .. }
        | Op::Transpose { .. }
        | Op::SoftmaxBackward { .. }
        | Op::LrnBackward { .. }
        | Op::Slice { .. }
        | Op::EmbeddingBackward { .. }
        | Op::DropoutBackward { .. }
        | Op::BatchNormBackwardReduce { .. }
        | Op::BatchNormBackwardInput { .. }
        | Op::Copy { .. }
        | Op::SoftmaxCrossEntropy { .. }
        | Op::MeanSquaredError { .. }
        | Op::SumSquares { .. }
        | Op::Update { .. } => Fusion::Alone,
    }
}

/// Whether `node` can join a group whose current value is `value`, and the group's shape
/// after it does.
fn absorb(
    graph: &TensorGraph,
    uses: &[usize],
    value: TensorId,
    shape: Shape2,
    node: &OpNode,
) -> Option<Shape2> {
    if uses[value.0 as usize] != 1 || node.inputs.first() != Some(&value) {
        return None;
    }
    let Fusion::Step(step) = fusion(node) else { return None };
    match (step.channels, shape) {
        // The group's value must not be read twice: only one of the reads is the value
        // in registers.
        (None, s) if node.inputs.iter().filter(|t| **t == value).count() == 1 => Some(s),
        (None, _) => None,
        (Some((_, channels, inner)), s) => match s {
            Shape2::GemmRows { rows, cols } if channels == rows && inner == cols => Some(s),
            Shape2::GemmCols { cols, .. } if channels == cols && inner == 1 => Some(s),
            Shape2::Map { len, channels: None } => {
                let outer = len / (channels * inner);
                Some(Shape2::Map { len, channels: Some((outer, channels, inner)) })
            }
            Shape2::Map { channels: Some((_, c, i)), .. } if (c, i) == (channels, inner) => Some(s),
            _ => None,
        },
    }
    .filter(|_| graph.output != value)
}

/// Writes groups as kernels.
struct Build<'g> {
    graph: &'g TensorGraph,
    threads: usize,
    geometry: Geometry,
    vars: u16,
    scratch: Vec<usize>,
    /// The sums riding on the group's product ([`riders`]).
    riders: Vec<Rider>,
}

/// An operand of the element-wise tail, before it is placed in a loop nest.
enum Operand {
    /// A per-channel parameter at this element offset from the tensor's start.
    Channel(TensorId, usize),
    /// A tensor of the group's shape.
    Same(TensorId),
}

/// The addresses of one op's tensors.
#[derive(Clone, Copy)]
struct At<'n>(&'n OpNode);

impl At<'_> {
    /// Input `i`.
    fn x(self, i: usize) -> Ptr {
        Ptr::tensor(self.0.inputs[i])
    }

    /// Auxiliary output `i`.
    fn aux(self, i: usize) -> Ptr {
        Ptr::tensor(self.0.aux[i])
    }

    /// Every input, in order.
    fn inputs(self) -> Vec<Ptr> {
        self.0.inputs.iter().map(|t| Ptr::tensor(*t)).collect()
    }
}

impl<'g> Build<'g> {
    fn new(graph: &'g TensorGraph, threads: usize, geometry: Geometry) -> Build<'g> {
        Build { graph, threads, geometry, vars: 0, scratch: Vec::new(), riders: Vec::new() }
    }

    fn var(&mut self) -> Var {
        self.vars += 1;
        Var(self.vars - 1)
    }

    fn scratch(&mut self, len: usize) -> Ptr {
        self.scratch.push(len);
        Ptr::scratch(self.scratch.len() as u16 - 1)
    }

    /// Splits a loop of `extent` iterations doing `work` (multiply-adds or elements) in
    /// all across threads, when there is more than one of each and enough work to pay for
    /// waking the workers.
    fn parallel(&self, extent: usize, work: usize) -> Parallel {
        if self.threads > 1 && extent > 1 && work >= MIN_PARALLEL_WORK {
            Parallel::Loop { extent }
        } else {
            Parallel::Serial
        }
    }

    fn kernel(mut self, name: String, group: &Group) -> Kernel {
        let chain: Vec<&OpNode> = group.ops.iter().map(|&i| &self.graph.ops[i]).collect();
        let last = chain[chain.len() - 1];
        let riders: Vec<&OpNode> = group.riders.iter().map(|&i| &self.graph.ops[i]).collect();
        self.riders = riders.iter().map(|n| Rider::of(n)).collect();
        let (mut body, mut parallel) = self.body(&chain);
        let nodes: Vec<&OpNode> = chain.iter().chain(&riders).copied().collect();
        if parallel == Parallel::Serial
            && self.threads > 1
            && let [Stmt::Map(map)] = body.as_slice()
            && let Some(split) = self.split_map(map)
        {
            (body, parallel) = split;
        }
        let mut reads: Vec<TensorId> = Vec::new();
        for n in &nodes {
            for t in &n.inputs {
                if !nodes.iter().any(|m| m.output == *t) && !reads.contains(t) {
                    reads.push(*t);
                }
            }
        }
        let mut layers: Vec<String> = Vec::new();
        for n in &nodes {
            if !layers.contains(&n.layer) {
                layers.push(n.layer.clone());
            }
        }
        let macs = nodes.iter().map(|n| self.macs(n)).sum();
        Kernel {
            name,
            kind: KernelKind::Body,
            label: nodes.iter().map(|n| n.op.name()).collect::<Vec<_>>().join(" + "),
            layers,
            parallel,
            body,
            scratch: self.scratch,
            reads,
            writes: std::iter::once(last.output)
                .chain(riders.iter().map(|n| n.output))
                .chain(nodes.iter().flat_map(|n| n.aux.iter().copied()))
                .collect(),
            macs,
        }
    }

    /// The multiply-accumulates `node` performs: a product reading a one-hot input
    /// computes one row of `b` per row of `a` ([`Gemm::sparse_a`]).
    fn macs(&self, node: &OpNode) -> u64 {
        match node.op {
            Op::MatMul { m, k, n, ta } if self.graph.one_hot.contains(&node.inputs[0]) => {
                (if ta { k } else { m } * n) as u64
            }
            _ => node.op.macs(),
        }
    }

    /// A long map as one block of elements per thread (a multiple of the vector lanes, so
    /// that each block's vectors stay aligned), the elements left over after the equal blocks a
    /// last map that the thread with the last block runs. A dropout mask's index moves
    /// with the block, as its loads and stores do.
    fn split_map(&mut self, map: &Map) -> Option<(Vec<Stmt>, Parallel)> {
        let blocks = self.threads;
        let lanes = self.geometry.lanes;
        let chunk = map.len / blocks / lanes * lanes;
        if map.len < MIN_PARALLEL_MAP || chunk == 0 {
            return None;
        }
        let shifted = |at: &dyn Fn(&Ptr) -> Ptr| -> Vec<Inst> {
            map.insts
                .iter()
                .map(|inst| match inst {
                    Inst::Load(p) => Inst::Load(at(p)),
                    Inst::Store(p, v) => Inst::Store(at(p), *v),
                    Inst::Stream(p, v) => Inst::Stream(at(p), *v),
                    Inst::Keep { seed, p, index } => {
                        Inst::Keep { seed: seed.clone(), p: *p, index: at(index) }
                    }
                    other => other.clone(),
                })
                .collect()
        };
        let body = self.blocks(map.len, blocks, chunk, |_, at, len| {
            vec![Stmt::Map(Map { len, insts: shifted(&|p| at(p.clone(), 1)) })]
        });
        Some((body, Parallel::Loop { extent: blocks }))
    }

    /// `body` over `blocks` blocks of `width` units of `len`, as a loop that threads can
    /// split, then over the units left after the equal blocks, as statements after the
    /// loop (run by the call whose share ends it). `body` is given how to move a pointer
    /// to its block — for a pointer whose unit is `stride` elements, `at(p, stride)` —
    /// and how many units the block holds.
    fn blocks(
        &mut self,
        len: usize,
        blocks: usize,
        width: usize,
        mut body: impl FnMut(&mut Self, &dyn Fn(Ptr, usize) -> Ptr, usize) -> Vec<Stmt>,
    ) -> Vec<Stmt> {
        let blk = self.var();
        let each = body(self, &|p, stride| p.plus_var(blk, width * stride), width);
        let mut stmts = vec![Stmt::Loop { var: blk, extent: blocks, body: each }];
        let done = width * blocks;
        if done < len {
            stmts.extend(body(self, &|p, stride| p.plus(done * stride), len - done));
        }
        stmts
    }

    /// One serial kernel computing everything that depends only on parameters (batch-norm
    /// folding), run before the rest.
    fn prologue(mut self, ops: &[usize]) -> Kernel {
        let (mut body, parallel) = match self.split_transposes(ops) {
            Some(split) => split,
            None => (Vec::new(), Parallel::Serial),
        };
        let split = parallel != Parallel::Serial;
        let mut layers = Vec::new();
        let mut reads = Vec::new();
        let mut writes = Vec::new();
        for &i in ops {
            let node = &self.graph.ops[i];
            if !split {
                body.extend(self.body(&[node]).0);
            }
            layers.push(node.layer.clone());
            reads.extend(node.inputs.iter().copied());
            writes.push(node.output);
            writes.extend(node.aux.iter().copied());
        }
        let mut names: Vec<&str> = ops.iter().map(|&i| self.graph.ops[i].op.name()).collect();
        names.dedup();
        Kernel {
            name: "k0".into(),
            kind: KernelKind::Prologue,
            label: format!("prologue: {}", names.join(", ")),
            layers,
            parallel,
            body,
            scratch: self.scratch,
            reads,
            writes,
            macs: 0,
        }
    }

    /// A prologue of transposes only (the copies of weights a training step's backward
    /// products read) as one loop over blocks of each transpose's rows that threads
    /// split, the rows left over after the equal blocks after it: run serially, an LSTM
    /// layer's 1 MiB `W_hhᵀ` took a whole thread 0.4–0.7 ms at every step.
    fn split_transposes(&mut self, ops: &[usize]) -> Option<(Vec<Stmt>, Parallel)> {
        let blocks = self.threads;
        let mut shapes = Vec::new();
        for &i in ops {
            let node = &self.graph.ops[i];
            let Op::Transpose { rows, cols } = node.op else { return None };
            shapes.push((Ptr::tensor(node.inputs[0]), Ptr::tensor(node.output), rows, cols));
        }
        let work: usize = shapes.iter().map(|&(_, _, rows, cols)| rows * cols).sum();
        // A copy, like a map, pays for splitting at fewer elements than a product.
        if blocks < 2 || work < MIN_PARALLEL_MAP {
            return None;
        }
        let blk = self.var();
        let (mut each, mut tail) = (Vec::new(), Vec::new());
        for (src, dst, rows, cols) in shapes {
            let width = rows / blocks;
            // Rows `count` of the source from where `src` and `dst` point (the destination's
            // rows stay `rows` long).
            let transpose = |src: Ptr, dst: Ptr, count| {
                Stmt::Transpose(Transpose { src, lds: cols, dst, ldd: rows, rows: count, cols })
            };
            if width > 0 {
                each.push(transpose(src.plus_var(blk, width * cols), dst.plus_var(blk, width), width));
            }
            let done = width * blocks;
            if done < rows {
                tail.push(transpose(src.plus(done * cols), dst.plus(done), rows - done));
            }
        }
        let mut body = vec![Stmt::Loop { var: blk, extent: blocks, body: each }];
        body.extend(tail);
        Some((body, Parallel::Loop { extent: blocks }))
    }

    /// Element-wise ops as steps on a running value, which each op takes as its first
    /// input (see [`absorb`]).
    fn steps(nodes: &[&OpNode]) -> Vec<TailStep> {
        let step = |node: &&OpNode| match fusion(node) {
            Fusion::Step(s) => s,
            Fusion::Product(_) | Fusion::Alone => unreachable!("groups absorb only element-wise steps"),
        };
        nodes.iter().map(step).collect()
    }
}

/// One element-wise step applied to the running value.
enum Step {
    /// The program, with the running value as its first input and the operands as the
    /// others.
    Apply(Elementwise),
    /// value + operand
    Add,
    /// value · operand₁ + operand₂
    ScaleShift,
}

type Tail = [TailStep];

mod body;
mod conv_backward;
mod recurrent;
mod riders;
mod train;
mod update;
