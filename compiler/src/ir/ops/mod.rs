//! The output of stages 5 and 6: the tensor-op graph. A network lowered to a small, closed set of
//! operations on tensors whose shapes include the batch, all fixed at compile time.
//!
//! Every op has a plain-Rust reference implementation in [`reference`]: simple loops that
//! are the oracle generated code is tested against. Parameters keep PyTorch's names;
//! where a kernel wants another layout (a dense weight as `[in, out]`), the tensor records
//! the transform so that checkpoints stay in PyTorch's layout.

pub mod cell;
pub mod elementwise;
pub mod reference;

pub use elementwise::{Elementwise, Prim};

use std::fmt;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub u32);

impl fmt::Display for TensorId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// What a tensor holds and who writes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Role {
    /// Fed by the caller before each run.
    Input,
    /// A parameter or buffer, loaded or initialised once.
    Param(ParamInfo),
    /// Computed by an op.
    Activation,
    /// Targets fed with each batch: class ids (as i32 bit patterns) or values.
    Label,
    /// Scalars the runtime writes before each training step (see [`Hyper`]).
    Hyper,
    /// Optimizer state for the trainable parameters (momentum, Adam's moments): kept
    /// across steps and saved in checkpoints under this name.
    State(String),
    /// Memory that views share: the trainable parameters, their gradients, and each
    /// optimizer state, each one contiguous block. `persistent` blocks keep their values
    /// across runs.
    Block { persistent: bool },
}

/// Positions in the hyper-parameter tensor of a training graph.
pub struct Hyper;

impl Hyper {
    /// Learning rate of this step.
    pub const LR: usize = 0;
    /// Factor the gradients are multiplied by (gradient-norm clipping; 1 otherwise).
    pub const GRAD_SCALE: usize = 1;
    /// Adam's bias corrections 1 / (1 − β₁ᵗ) and 1 / (1 − β₂ᵗ).
    pub const BIAS1: usize = 2;
    pub const BIAS2: usize = 3;
    /// Seed of this step's dropout masks (an integer's bits).
    pub const SEED: usize = 4;
    pub const LEN: usize = 8;
}

/// How a parameter tensor relates to its checkpoint form.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamInfo {
    /// PyTorch's name: `stage1.basic1.conv1.weight`.
    pub name: String,
    /// PyTorch's shape.
    pub torch_dims: Vec<usize>,
    pub layout: Layout,
    pub trainable: bool,
    pub init: crate::ir::init::Init,
}

/// Internal layout of a parameter relative to PyTorch's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Same,
    /// `[a, b, ...]` stored as the matrix `[b·..., a]` (dense and recurrent weights, and
    /// the weights of convolutions computed as one product, so that `x · w` reads `w` row
    /// by row).
    Transposed,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    /// Row-major dimensions, batch first for activations.
    pub dims: Vec<usize>,
    pub role: Role,
    /// When set, the tensor lives inside another (a block) at this element offset.
    pub view: Option<(TensorId, usize)>,
    pub origin: Origin,
}

/// What a tensor stands for, as data: messages about a tensor (the one a training step
/// found non-finite) are made from this, never parsed back out of `name`, which is for
/// people reading listings.
#[derive(Clone, Debug, PartialEq)]
pub enum Origin {
    /// Its role and name say it all: inputs, parameters, blocks, a step's statistics,
    /// copies made for a kernel's layout.
    Named,
    /// The output of `op` in `layer` (`stage1.conv1`, `conv2d`).
    Output { layer: String, op: String },
    /// The loss's gradient with respect to this tensor, or a part of it still to be
    /// summed.
    GradientOf(TensorId),
}

impl Tensor {
    pub fn len(&self) -> usize {
        self.dims.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A 2-D sliding window over a batch of images.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window2d {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    /// Top, bottom, left, right.
    pub pad: [usize; 4],
    pub oh: usize,
    pub ow: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reduce {
    Max,
    /// Mean over the window including padded zeros (PyTorch's `count_include_pad`).
    Mean,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cell {
    Rnn,
    Lstm,
    Gru,
}

impl Cell {
    pub fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }
}

/// A recurrent layer over a batch of sequences.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Recurrence {
    pub cell: Cell,
    pub n: usize,
    pub t: usize,
    pub f: usize,
    pub h: usize,
    /// Output only the last step's state (`[n, h]`) instead of every step's.
    pub last: bool,
    /// Whether `b_ih` and `b_hh` are inputs.
    pub bias: bool,
    /// Whether the op also writes what backpropagation through time reads, as its two
    /// auxiliary outputs: the state entering each step (`[n, t, h]`, h₀ = 0 first) and
    /// the step's saved values (`[n, t, s·h]`, the `s` values of
    /// [`cell::CellStep::saved`], `h` apart).
    pub train: bool,
}

impl Recurrence {
    /// Values saved per step and element for the backward pass (`s`), 0 unless `train`.
    pub fn saved(&self) -> usize {
        if self.train { self.cell.step().saved().len() } else { 0 }
    }
}

/// The operations. Inputs and outputs are listed in each variant's doc.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// `x [n, c, h, w]`, `weight [k, c/groups, kh, kw]` → `[n, k, oh, ow]` (no bias).
    Conv2d { win: Window2d, k: usize, groups: usize },
    /// `x [n, c, h, w]` → `[n, c, oh, ow]`.
    Pool2d { win: Window2d, reduce: Reduce },
    /// `x [n, c, hw]` → `[n, c]`, the mean over `hw`.
    GlobalAvgPool { n: usize, c: usize, hw: usize },
    /// `x [m, k]` (stored as `[k, m]` when `ta`), `w [k, n]` → `[m, n]`.
    MatMul { m: usize, k: usize, n: usize, ta: bool },
    /// `x [outer, channels, inner]`, `shift [channels]` → `x + shift[c]`.
    AddChannel { outer: usize, channels: usize, inner: usize },
    /// `x [outer, channels, inner]`, `scale_shift [2, channels]` → `x · scale[c] + shift[c]`.
    ScaleShiftChannel { outer: usize, channels: usize, inner: usize },
    /// Batch-norm's inference affine from its parameters: `gamma, beta, mean, var` (each
    /// `[c]`) → `[2, c]`: scale = gamma / √(var + eps), shift = beta − mean · scale.
    BatchNormFold { channels: usize, eps: f32 },
    /// `x₀ [len]`, `x₁ [len]`, ... → `f(x₀, x₁, …)` element by element: activations,
    /// sums, products, scaling, and their derivatives.
    Elementwise { len: usize, f: Elementwise },
    /// No inputs → `[len]` of `value` (a recurrence's zero initial state).
    Fill { len: usize, value: f32 },
    /// `x [rows, cols]` → softmax of each row.
    Softmax { rows: usize, cols: usize },
    /// `x [n, c, hw]` → local response normalisation across channels.
    Lrn { n: usize, c: usize, hw: usize, size: usize, alpha: f32, beta: f32, k: f32 },
    /// `x₀ [outer, inner₀]`, `x₁ [outer, inner₁]`, ... → `[outer, Σ innerᵢ]`.
    Concat { outer: usize, inners: Vec<usize> },
    /// `ids [count]` (i32 bits), `table [vocab, dim]` → `[count, dim]`.
    Embedding { count: usize, vocab: usize, dim: usize },
    /// `x [n, t, f]`, `w_ih [f, g·h]`, `w_hh [h, g·h]`, then if `bias` `b_ih [g·h]`,
    /// `b_hh [g·h]` → `[n, t, h]` (or `[n, h]` when `last`). Gates in PyTorch's order;
    /// h₀ = c₀ = 0.
    Recurrent(Recurrence),

    // ---- training: forward -----------------------------------------------------------
    /// `x [outer, channels, inner]` → `[2, channels]`: each channel's mean and (biased)
    /// variance over `outer` and `inner`.
    ChannelMoments { outer: usize, channels: usize, inner: usize },
    /// `gamma, beta [c]`, `moments [2, c]` → `[2, c]`: scale = gamma / √(var + eps),
    /// shift = beta − mean · scale (batch-norm with the batch's statistics).
    BatchNormFoldTrain { channels: usize, eps: f32 },
    /// `moments [2, c]`, `running [c]` → `running` updated in place:
    /// (1 − momentum) · running + momentum · statistic, the variance made unbiased with
    /// `count / (count − 1)` (as PyTorch).
    UpdateRunning { channels: usize, momentum: f32, variance: bool, count: usize },
    /// `x [len]`, `hyper` → x · keep / (1 − p), keep drawn from a hash of the step's seed
    /// and the element's index, so the backward pass regenerates the same mask.
    Dropout { len: usize, p: f32 },

    // ---- training: backward ----------------------------------------------------------
    /// `dy [n, k, oh, ow]`, `weight [k, c/groups, kh, kw]` → `dx [n, c, h, w]`.
    Conv2dBackwardData { win: Window2d, k: usize, groups: usize },
    /// `dy [n, k, oh, ow]`, `x [n, c, h, w]` → `[parts, k, c/groups, kh, kw]`: part `p`
    /// is the weight gradient over images `p·n/parts ..` (`parts` divides `n`), so that
    /// threads can split the images when there are too few channels to split; one part
    /// is the gradient itself.
    Conv2dBackwardWeight { win: Window2d, k: usize, groups: usize, parts: usize },
    /// `x [parts, len]` → `[len]`: the sum of the parts.
    SumParts { parts: usize, len: usize },
    /// `dy [n, c, oh, ow]`, `x [n, c, h, w]` → `dx`: max routes each gradient to its
    /// window's first largest input; mean spreads it over the window.
    Pool2dBackward { win: Window2d, reduce: Reduce },
    /// `x [outer, channels]` → `[outer, channels, inner]`, each value repeated `inner`
    /// times and multiplied by `scale` (the backward of global average pooling).
    BroadcastChannel { outer: usize, channels: usize, inner: usize, scale: f32 },
    /// `x [outer, channels, inner]` → `[channels]`: sums (a bias's gradient).
    ChannelSum { outer: usize, channels: usize, inner: usize },
    /// `[rows, cols]` → `[cols, rows]`.
    Transpose { rows: usize, cols: usize },
    /// `dy`, `y` (softmax's output) → `dx = y · (dy − Σ dy · y)` per row.
    SoftmaxBackward { rows: usize, cols: usize },
    /// `dy`, `x` → `dx` of local response normalisation.
    LrnBackward { n: usize, c: usize, hw: usize, size: usize, alpha: f32, beta: f32, k: f32 },
    /// `x [outer, total]` → `[outer, len]`, the columns `offset..offset + len` (the
    /// backward of `concat`).
    Slice { outer: usize, total: usize, offset: usize, len: usize },
    /// `ids [count]`, `dy [count, dim]` → `dtable [vocab, dim]`: rows summed per id.
    EmbeddingBackward { count: usize, vocab: usize, dim: usize },
    /// `dy`, `hyper` → `dx`, with the mask `Dropout` drew.
    DropoutBackward { len: usize, p: f32 },
    /// Backpropagation through time of a [`Op::Recurrent`] run with `train`: `dy` (its
    /// output's gradient), `states [n, t, h]` and `saved [n, t, s·h]` (its auxiliary
    /// outputs), `w_hhᵀ [g·h, h]` → `dp [n, t, g·h]`, the gradient of the input projections
    /// `x·W_ih + b_ih` at every step; aux, when the cell reads a gate's projections apart
    /// ([`cell::CellStep::splits`]), `dq [n, t, g·h]`, that of the hidden projections
    /// `h·W_hh + b_hh` (otherwise they equal `dp`). The weights' and the input's gradients
    /// are then products over all steps at once.
    RecurrentBackward(Recurrence),
    /// `dy, x [outer, channels, inner]`, `moments [2, c]` → `[2, c]`: Σ dy (beta's
    /// gradient) and Σ dy · x̂ (gamma's), x̂ = (x − mean) / √(var + eps).
    BatchNormBackwardReduce { outer: usize, channels: usize, inner: usize, eps: f32 },
    /// `dy, x`, `moments`, `gamma [c]`, `reduced [2, c]` → `dx` of batch-norm with the
    /// batch's statistics.
    BatchNormBackwardInput { outer: usize, channels: usize, inner: usize, eps: f32 },
    /// `x` → `x[offset .. offset + len]`.
    Copy { offset: usize, len: usize },

    // ---- loss and update -------------------------------------------------------------
    /// `logits [rows, cols]`, `labels [rows]` (class ids) → `dlogits`, the gradient of the
    /// mean cross-entropy of softmax(logits); aux `[2]`: that mean and the number of rows
    /// whose first largest logit is the label. A row whose label is outside `0..cols` (a
    /// padding row) adds nothing to either, though the mean still divides by `rows`.
    SoftmaxCrossEntropy { rows: usize, cols: usize },
    /// `y [rows, cols]`, `target [rows, cols]` → `dy` of the mean squared error over all
    /// values; aux `[2]`: that mean, and 0.
    MeanSquaredError { rows: usize, cols: usize },
    /// `x [len]` → `[1]`: Σ x².
    SumSquares { len: usize },
    /// `params, grads, hyper` then the rule's state tensors → `params` updated in place;
    /// aux: the state tensors, updated in place. Gradients are first multiplied by the
    /// hyper `GRAD_SCALE`.
    Update { len: usize, rule: UpdateRule },
}

/// Whether dropout keeps element `index` under `seed`: a 32-bit hash of both (MurmurHash3's
/// finaliser) compared with `p · 2³²`. Generated code computes the same function, so the
/// backward pass regenerates the forward pass's mask instead of storing it.
pub fn dropout_keep(seed: u32, index: u32, p: f32) -> bool {
    dropout_hash(seed, index) >= dropout_threshold(p)
}

pub fn dropout_hash(seed: u32, index: u32) -> u32 {
    let mut h = index.wrapping_mul(0x9e37_79b1) ^ seed;
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// Hashes at or above this are kept.
pub fn dropout_threshold(p: f32) -> u32 {
    (p as f64 * 4_294_967_296.0).min(u32::MAX as f64) as u32
}

/// An optimizer step, per value (PyTorch's definitions).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UpdateRule {
    /// g ← g + wd·w; v ← μ·v + g; w ← w − lr·(g + μ·v if Nesterov, else v).
    Sgd { momentum: f32, nesterov: bool, weight_decay: f32 },
    /// Adam (L2 decay added to g) or AdamW (decay applied to w directly, `decoupled`).
    Adam { beta1: f32, beta2: f32, eps: f32, weight_decay: f32, decoupled: bool },
}

impl UpdateRule {
    /// `sgd (momentum 0.9, weight decay 0.0005)` and the like.
    pub fn describe(self) -> String {
        match self {
            UpdateRule::Sgd { momentum, nesterov, weight_decay } => {
                let n = if nesterov { ", Nesterov" } else { "" };
                format!("sgd (momentum {momentum}{n}, weight decay {weight_decay})")
            }
            UpdateRule::Adam { beta1, beta2, eps, weight_decay, decoupled } => {
                let name = if decoupled { "adamw" } else { "adam" };
                format!("{name} (β₁ {beta1}, β₂ {beta2}, ε {eps}, weight decay {weight_decay})")
            }
        }
    }

    /// Names of the state tensors the rule keeps per parameter.
    pub fn state(self) -> &'static [&'static str] {
        match self {
            UpdateRule::Sgd { momentum: 0.0, .. } => &[],
            UpdateRule::Sgd { .. } => &["momentum"],
            UpdateRule::Adam { .. } => &["exp_avg", "exp_avg_sq"],
        }
    }
}

impl Op {
    /// The op's name in plans and kernel listings.
    pub fn name(&self) -> &str {
        match self {
            Op::Conv2d { .. } => "conv2d",
            Op::Pool2d { reduce: Reduce::Max, .. } => "maxpool2d",
            Op::Pool2d { reduce: Reduce::Mean, .. } => "avgpool2d",
            Op::GlobalAvgPool { .. } => "global_avgpool",
            Op::MatMul { .. } => "matmul",
            Op::AddChannel { .. } => "add_channel",
            Op::ScaleShiftChannel { .. } => "scale_shift_channel",
            Op::BatchNormFold { .. } => "batchnorm_fold",
            Op::Elementwise { f, .. } => &f.name,
            Op::Fill { .. } => "fill",
            Op::Softmax { .. } => "softmax",
            Op::Lrn { .. } => "lrn",
            Op::Concat { .. } => "concat",
            Op::Embedding { .. } => "embedding",
            Op::Recurrent(r) => match r.cell {
                Cell::Rnn => "rnn",
                Cell::Lstm => "lstm",
                Cell::Gru => "gru",
            },
            Op::ChannelMoments { .. } => "channel_moments",
            Op::BatchNormFoldTrain { .. } => "batchnorm_fold_train",
            Op::UpdateRunning { .. } => "update_running",
            Op::Dropout { .. } => "dropout",
            Op::Conv2dBackwardData { .. } => "conv2d_backward_data",
            Op::Conv2dBackwardWeight { .. } => "conv2d_backward_weight",
            Op::SumParts { .. } => "sum_parts",
            Op::Pool2dBackward { reduce: Reduce::Max, .. } => "maxpool2d_backward",
            Op::Pool2dBackward { reduce: Reduce::Mean, .. } => "avgpool2d_backward",
            Op::BroadcastChannel { .. } => "broadcast_channel",
            Op::ChannelSum { .. } => "channel_sum",
            Op::Transpose { .. } => "transpose",
            Op::SoftmaxBackward { .. } => "softmax_backward",
            Op::LrnBackward { .. } => "lrn_backward",
            Op::Slice { .. } => "slice",
            Op::EmbeddingBackward { .. } => "embedding_backward",
            Op::DropoutBackward { .. } => "dropout_backward",
            Op::RecurrentBackward(r) => match r.cell {
                Cell::Rnn => "rnn_backward",
                Cell::Lstm => "lstm_backward",
                Cell::Gru => "gru_backward",
            },
            Op::BatchNormBackwardReduce { .. } => "batchnorm_backward_reduce",
            Op::BatchNormBackwardInput { .. } => "batchnorm_backward_input",
            Op::Copy { .. } => "copy",
            Op::SoftmaxCrossEntropy { .. } => "softmax_cross_entropy",
            Op::MeanSquaredError { .. } => "mean_squared_error",
            Op::SumSquares { .. } => "sum_squares",
            Op::Update { rule: UpdateRule::Sgd { .. }, .. } => "sgd_update",
            Op::Update { rule: UpdateRule::Adam { decoupled: false, .. }, .. } => "adam_update",
            Op::Update { rule: UpdateRule::Adam { decoupled: true, .. }, .. } => "adamw_update",
        }
    }

    /// Multiply-accumulates (or comparable element operations) per run, for GFLOP/s.
    pub fn macs(&self) -> u64 {
        let u = |x: usize| x as u64;
        match *self {
            Op::Conv2d { win, k, groups } => {
                u(win.n) * u(k) * u(win.oh) * u(win.ow) * u(win.c / groups) * u(win.kh) * u(win.kw)
            }
            Op::MatMul { m, k, n, .. } => u(m) * u(k) * u(n),
            Op::Conv2dBackwardData { win, k, groups } | Op::Conv2dBackwardWeight { win, k, groups, .. } => {
                u(win.n) * u(k) * u(win.oh) * u(win.ow) * u(win.c / groups) * u(win.kh) * u(win.kw)
            }
            Op::Recurrent(r) => {
                let g = u(r.cell.gates()) * u(r.h);
                u(r.n) * u(r.t) * g * (u(r.f) + u(r.h))
            }
            // The recurrent product's transpose at every step.
            Op::RecurrentBackward(r) => u(r.n) * u(r.t) * u(r.cell.gates()) * u(r.h) * u(r.h),
            // Not counted: memory-bound ops, whose speed GFLOP/s would not describe.
            Op::Pool2d { .. }
            | Op::GlobalAvgPool { .. }
            | Op::AddChannel { .. }
            | Op::ScaleShiftChannel { .. }
            | Op::BatchNormFold { .. }
            | Op::Elementwise { .. }
            | Op::Fill { .. }
            | Op::Softmax { .. }
            | Op::Lrn { .. }
            | Op::Concat { .. }
            | Op::Embedding { .. }
            | Op::ChannelMoments { .. }
            | Op::BatchNormFoldTrain { .. }
            | Op::UpdateRunning { .. }
            | Op::Dropout { .. }
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
            | Op::Update { .. } => 0,
        }
    }
}

/// One op applied to tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct OpNode {
    pub op: Op,
    pub inputs: Vec<TensorId>,
    pub output: TensorId,
    /// Further outputs of ops that produce more than one tensor (a loss's statistics, an
    /// optimizer's state).
    pub aux: Vec<TensorId>,
    /// The layer it came from (`stage1.basic1.conv1`), for kernel labels.
    pub layer: String,
}

/// A network lowered for one batch size.
#[derive(Clone, Debug, Default)]
pub struct TensorGraph {
    pub batch: usize,
    pub tensors: Vec<Tensor>,
    /// In execution order.
    pub ops: Vec<OpNode>,
    pub inputs: Vec<TensorId>,
    /// The inputs fed one-hot (`seq[n] of onehot(k)`), whose rows are zero but for one
    /// value: a product reading one as its left operand skips its zeros (see
    /// [`crate::ir::kernel::Gemm::sparse_a`]).
    pub one_hot: Vec<TensorId>,
    pub output: TensorId,
}

impl TensorGraph {
    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.0 as usize]
    }

    pub fn params(&self) -> impl Iterator<Item = (TensorId, &ParamInfo)> {
        self.tensors.iter().enumerate().filter_map(|(i, t)| match &t.role {
            Role::Param(p) => Some((TensorId(i as u32), p)),
            _ => None,
        })
    }

    pub fn macs(&self) -> u64 {
        self.ops.iter().map(|o| o.op.macs()).sum()
    }
}

impl fmt::Display for TensorGraph {
    /// `t5 = conv2d(t0, t1) [64, 6, 28, 28]  # conv1`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "tensor graph, batch {}", self.batch)?;
        for (i, t) in self.tensors.iter().enumerate() {
            match &t.role {
                Role::Input => writeln!(f, "  t{i} = input {:?}  # {}", t.dims, t.name)?,
                Role::Param(p) => writeln!(
                    f,
                    "  t{i} = param {:?}{}  # {}",
                    t.dims,
                    if p.layout == Layout::Transposed { " (transposed)" } else { "" },
                    p.name
                )?,
                Role::Label => writeln!(f, "  t{i} = label {:?}  # {}", t.dims, t.name)?,
                Role::Hyper => writeln!(f, "  t{i} = hyper {:?}", t.dims)?,
                Role::State(name) => writeln!(f, "  t{i} = state {:?}  # {name}", t.dims)?,
                Role::Block { persistent } => writeln!(
                    f,
                    "  t{i} = block {:?}{}  # {}",
                    t.dims,
                    if *persistent { "" } else { " (per step)" },
                    t.name
                )?,
                Role::Activation => {}
            }
            if let Some((base, offset)) = t.view {
                writeln!(f, "    (t{i} is a view of {base} at {offset})")?;
            }
        }
        for o in &self.ops {
            let args: Vec<String> = o.inputs.iter().map(ToString::to_string).collect();
            let out = self.tensor(o.output);
            writeln!(
                f,
                "  {} = {}({}) {:?}  # {}",
                o.output,
                o.op.name(),
                args.join(", "),
                out.dims,
                o.layer
            )?;
        }
        writeln!(f, "  return {}", self.output)
    }
}
