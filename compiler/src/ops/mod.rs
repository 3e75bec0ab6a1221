//! Stage 4's output: the tensor-op graph. A network lowered to a small, closed set of
//! operations on tensors whose shapes include the batch, all fixed at compile time.
//!
//! Every op has a plain-Rust reference implementation in [`reference`]: simple loops that
//! are the oracle generated code is tested against. Parameters keep PyTorch's names;
//! where a kernel wants another layout (a dense weight as `[in, out]`), the tensor records
//! the transform so that checkpoints stay in PyTorch's layout.

pub mod reference;

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
    pub init: crate::init::Init,
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

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryFn {
    Relu,
    LeakyRelu(f32),
    Tanh,
    Sigmoid,
}

impl UnaryFn {
    pub fn apply(self, x: f32) -> f32 {
        match self {
            UnaryFn::Relu => x.max(0.0),
            UnaryFn::LeakyRelu(s) => {
                if x > 0.0 {
                    x
                } else {
                    s * x
                }
            }
            UnaryFn::Tanh => x.tanh(),
            UnaryFn::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        }
    }
}

impl fmt::Display for UnaryFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnaryFn::Relu => write!(f, "relu"),
            UnaryFn::LeakyRelu(s) => write!(f, "leaky_relu({s})"),
            UnaryFn::Tanh => write!(f, "tanh"),
            UnaryFn::Sigmoid => write!(f, "sigmoid"),
        }
    }
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
    /// `x [m, k]`, `w [k, n]` → `[m, n]`.
    MatMul { m: usize, k: usize, n: usize },
    /// `x [outer, channels, inner]`, `shift [channels]` → `x + shift[c]`.
    AddChannel { outer: usize, channels: usize, inner: usize },
    /// `x [outer, channels, inner]`, `scale_shift [2, channels]` → `x · scale[c] + shift[c]`.
    ScaleShiftChannel { outer: usize, channels: usize, inner: usize },
    /// Batch-norm's inference affine from its parameters: `gamma, beta, mean, var` (each
    /// `[c]`) → `[2, c]`: scale = gamma / √(var + eps), shift = beta − mean · scale.
    BatchNormFold { channels: usize, eps: f32 },
    /// `x [len]` → `f(x)`.
    Unary { len: usize, f: UnaryFn },
    /// `a [len]`, `b [len]`, ... → the sum.
    Add { len: usize, inputs: usize },
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
}

impl Op {
    /// The op's name in plans and kernel listings.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Conv2d { .. } => "conv2d",
            Op::Pool2d { reduce: Reduce::Max, .. } => "maxpool2d",
            Op::Pool2d { reduce: Reduce::Mean, .. } => "avgpool2d",
            Op::GlobalAvgPool { .. } => "global_avgpool",
            Op::MatMul { .. } => "matmul",
            Op::AddChannel { .. } => "add_channel",
            Op::ScaleShiftChannel { .. } => "scale_shift_channel",
            Op::BatchNormFold { .. } => "batchnorm_fold",
            Op::Unary { f: UnaryFn::Relu, .. } => "relu",
            Op::Unary { f: UnaryFn::LeakyRelu(_), .. } => "leaky_relu",
            Op::Unary { f: UnaryFn::Tanh, .. } => "tanh",
            Op::Unary { f: UnaryFn::Sigmoid, .. } => "sigmoid",
            Op::Add { .. } => "add",
            Op::Softmax { .. } => "softmax",
            Op::Lrn { .. } => "lrn",
            Op::Concat { .. } => "concat",
            Op::Embedding { .. } => "embedding",
            Op::Recurrent(r) => match r.cell {
                Cell::Rnn => "rnn",
                Cell::Lstm => "lstm",
                Cell::Gru => "gru",
            },
        }
    }

    /// Multiply-accumulates (or comparable element operations) per run, for GFLOP/s.
    pub fn macs(&self) -> u64 {
        let u = |x: usize| x as u64;
        match *self {
            Op::Conv2d { win, k, groups } => {
                u(win.n) * u(k) * u(win.oh) * u(win.ow) * u(win.c / groups) * u(win.kh) * u(win.kw)
            }
            Op::MatMul { m, k, n } => u(m) * u(k) * u(n),
            Op::Recurrent(r) => {
                let g = u(r.cell.gates()) * u(r.h);
                u(r.n) * u(r.t) * g * (u(r.f) + u(r.h))
            }
            _ => 0,
        }
    }
}

/// One op applied to tensors.
#[derive(Clone, Debug, PartialEq)]
pub struct OpNode {
    pub op: Op,
    pub inputs: Vec<TensorId>,
    pub output: TensorId,
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
                Role::Activation => {}
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
