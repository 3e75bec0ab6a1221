//! Stage 7's output: kernels as loop nests.
//!
//! A kernel is a loop nest with constant trip counts whose leaves are a few primitives —
//! a register-tiled matrix product with a fused epilogue ([`Gemm`]), a vectorised
//! element-wise program ([`Map`]), image-to-column unfolding, pooling, row reductions,
//! softmax, LRN and gathers. Every address is a buffer plus an offset affine in the
//! enclosing loop variables, with constant coefficients, so code generation turns each
//! into constants and one multiply-add per loop level. The listing printed by
//! `nnc compile --emit kernels` is this structure's `Display`.

mod display;
mod insts;

pub use insts::{Insts, Val};

use crate::ir::ops::TensorId;
pub use crate::ir::ops::elementwise::{BinOp, Cmp, Prim};

/// A loop variable, numbered within its kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u16);

/// Memory a kernel reads or writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Buffer {
    /// A tensor of the graph (input, parameter or activation).
    Tensor(TensorId),
    /// The kernel's `i`-th scratch buffer; each thread has its own copy.
    Scratch(u16),
}

/// An element address: `buf + offset + Σ coef · var`, in f32 elements.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Ptr {
    pub buf: Buffer,
    pub offset: i64,
    pub terms: Vec<(Var, i64)>,
}

impl Ptr {
    pub fn tensor(t: TensorId) -> Ptr {
        Ptr { buf: Buffer::Tensor(t), offset: 0, terms: Vec::new() }
    }

    pub fn scratch(i: u16) -> Ptr {
        Ptr { buf: Buffer::Scratch(i), offset: 0, terms: Vec::new() }
    }

    /// This address moved by `k` elements.
    pub fn plus(&self, k: usize) -> Ptr {
        Ptr { offset: self.offset + k as i64, ..self.clone() }
    }

    /// This address moved by `coef · var` elements.
    pub fn plus_var(&self, var: Var, coef: usize) -> Ptr {
        let mut p = self.clone();
        if coef != 0 {
            match p.terms.iter_mut().find(|(v, _)| *v == var) {
                Some((_, c)) => *c += coef as i64,
                None => p.terms.push((var, coef as i64)),
            }
        }
        p
    }

    /// This address moved by `−coef · var` elements (a loop run backwards).
    pub fn minus_var(&self, var: Var, coef: usize) -> Ptr {
        let mut p = self.clone();
        if coef != 0 {
            match p.terms.iter_mut().find(|(v, _)| *v == var) {
                Some((_, c)) => *c -= coef as i64,
                None => p.terms.push((var, -(coef as i64))),
            }
        }
        p
    }
}

/// One instruction of an element-wise program. Operands are indices of earlier
/// instructions; `Store` produces nothing.
#[derive(Clone, Debug, PartialEq)]
pub enum Inst {
    /// The element at `ptr + i`.
    Load(Ptr),
    /// The element at `ptr`, the same for every `i`.
    Bcast(Ptr),
    Const(f32),
    Prim(Prim, usize),
    Bin(BinOp, usize, usize),
    /// `if a cmp b { then } else { otherwise }`: `Select(cmp, a, b, then, otherwise)`.
    Select(Cmp, usize, usize, usize, usize),
    /// Dropout's multiplier for element `i` of the map: `1 / (1 − p)` where
    /// [`crate::ir::ops::dropout_keep`] keeps it under the seed stored (as integer bits) at
    /// `seed`, else 0. The mask is drawn for the element `index + i` addresses in its
    /// tensor (its offset and loop terms, in elements), not for `i`: a map split across
    /// threads moves `index` with its loads and stores, so every element keeps its mask
    /// whatever the thread count.
    Keep {
        seed: Ptr,
        p: f32,
        index: Ptr,
    },
    Store(Ptr, usize),
    /// A store whose value is read only after other kernels have passed over more
    /// memory than the caches hold (a recurrent layer's saved values, read by its
    /// backward pass), or once soon after and then so (its steps' gradients): a back end
    /// may write it past the caches, which spares reading each line in before writing it
    /// (the LSTM variant's forward kernel stores 14 MiB so, its backward kernel 8 MiB).
    Stream(Ptr, usize),
}

/// `for i in 0..len` (four at a time, then the rest one by one): run `insts`.
#[derive(Clone, Debug, PartialEq)]
pub struct Map {
    pub len: usize,
    pub insts: Vec<Inst>,
}

/// One instruction of a matrix-product epilogue, applied to each element `(row, col)` of
/// the product before it is stored. Operands are indices of earlier instructions; the
/// last instruction's value is stored.
#[derive(Clone, Debug, PartialEq)]
pub enum EInst {
    /// The accumulated product.
    Acc,
    /// `ptr[row]`: a per-row parameter (a conv's bias or batch-norm scale).
    Row(Ptr),
    /// `ptr[col]`: a per-column parameter (a dense layer's bias).
    Col(Ptr),
    /// `ptr[row · ld + col]`: a tensor of the product's shape (a residual).
    Elem(Ptr, usize),
    Const(f32),
    Prim(Prim, usize),
    Bin(BinOp, usize, usize),
    /// As [`Inst::Select`].
    Select(Cmp, usize, usize, usize, usize),
}

/// `c[i, j] = epilogue(Σₚ a[i, p] · b[p, j])` for `i < m`, `j < n`, `p < k`, `a` and `c`
/// row-major with the given leading dimensions — except `a` when `ta` is set: then
/// `a[i, p]` is stored at `p · lda + i` (a transposed operand costs nothing, since the
/// tile reads `a` one scalar at a time).
#[derive(Clone, Debug, PartialEq)]
pub struct Gemm {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Ptr,
    pub lda: usize,
    pub ta: bool,
    pub b: Right,
    pub c: Ptr,
    pub ldc: usize,
    pub epilogue: Vec<EInst>,
    /// Whether `a` is a one-hot input, its rows zero but for one value: the product then
    /// skips `a`'s zeros, reading only the rows of `b` that `a` selects — a gather, and,
    /// with `ta`, a scatter-add in the order of `a`'s rows. It equals the full product
    /// for any `a` unless `b` holds an infinity or NaN where `a` is zero.
    pub sparse_a: bool,
    /// Sums over `k` of `b` computed as the product reads it (`b` a matrix).
    pub b_sums: Vec<BSum>,
}

/// A sum over `k` of a product's `b`, which the product computes while it reads `b`: an
/// LSTM's bias gradient and its one-hot `W_ih` gradient read the same 8 MiB of `dq` as its
/// `W_hh` gradient does, and otherwise each read it from memory again.
#[derive(Clone, Debug, PartialEq)]
pub enum BSum {
    /// `dst[j] = Σₚ b[p, j]` for `j < n`, as a [`ColumnSum`] (in f64, rounded once).
    Columns { dst: Ptr },
    /// `c[i, j] = Σₚ a[p, i] · b[p, j]` for `i < m`, `j < n`, `a` a one-hot input stored
    /// `[k, m]`: a transposed [`Gemm::sparse_a`] product with no epilogue (a scatter-add of
    /// `b`'s rows into the rows of `c` that `a` selects, in the order of `a`'s rows).
    OneHot { m: usize, a: Ptr, lda: usize, c: Ptr, ldc: usize },
}

/// A product's right operand.
#[derive(Clone, Debug, PartialEq)]
pub enum Right {
    /// A row-major matrix: `b[p, j]` at `ptr + p · ld + j`.
    Matrix { ptr: Ptr, ld: usize },
    /// An image seen through a convolution's window: `b[p, j]` is what [`Im2col`] would
    /// write at row `p`, column `j` (0 in the padding). A back end whose geometry
    /// [unfolds](crate::backend::Geometry::unfolds) reads it so, a panel at a time, and no
    /// unfolded copy is ever made.
    Unfolded(Unfold),
}

/// `c` planes of an image at `src` seen through `win`, unfolded as [`Im2col`] would.
#[derive(Clone, Debug, PartialEq)]
pub struct Unfold {
    pub src: Ptr,
    /// The window; `win.oh` output rows are unfolded.
    pub win: Window,
    /// As [`Im2col::first_row`].
    pub first_row: Option<(Var, usize)>,
}

/// A 2-D window over `c` planes of `h × w`: kernel, stride, dilation, padding (top,
/// bottom, left, right) and the output size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub kh: usize,
    pub kw: usize,
    pub sh: usize,
    pub sw: usize,
    pub dh: usize,
    pub dw: usize,
    pub pad: [usize; 4],
    pub oh: usize,
    pub ow: usize,
}

/// Unfolds `c` planes for a convolution: `dst[(ch·kh + i)·kw + j, y·ow + x]` (rows `ld`
/// apart) is the input pixel under kernel tap `(i, j)` of output pixel `(y, x)`, or 0 in
/// the padding.
#[derive(Clone, Debug, PartialEq)]
pub struct Im2col {
    pub src: Ptr,
    pub dst: Ptr,
    pub ld: usize,
    /// The window; `win.oh` output rows are unfolded.
    pub win: Window,
    /// When set, the unfolded rows start at output row `var · rows` instead of 0 (a block
    /// of rows, for splitting one image across threads).
    pub first_row: Option<(Var, usize)>,
}

/// Max or mean pooling of `win.c` planes.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub src: Ptr,
    pub dst: Ptr,
    pub win: Window,
    pub reduce: crate::ir::ops::Reduce,
}

/// `dst[r] = scale · Σᵢ src[r · len + i]` for `r < rows`.
#[derive(Clone, Debug, PartialEq)]
pub struct RowSum {
    pub src: Ptr,
    pub dst: Ptr,
    pub rows: usize,
    pub len: usize,
    pub scale: f32,
}

/// `dst[c] = Σ_{r < rows} src[r · ld + c]` for `c < cols`: the column sums of a matrix (a
/// dense layer's bias gradient), accumulated in f64 and rounded once.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnSum {
    pub src: Ptr,
    pub ld: usize,
    pub dst: Ptr,
    pub rows: usize,
    pub cols: usize,
}

/// Softmax of each of `rows` rows of `cols` values.
#[derive(Clone, Debug, PartialEq)]
pub struct Softmax {
    pub src: Ptr,
    pub dst: Ptr,
    pub rows: usize,
    pub cols: usize,
}

/// Local response normalisation of one image (`c` planes of `hw`), as the `Lrn` op.
#[derive(Clone, Debug, PartialEq)]
pub struct Lrn {
    pub src: Ptr,
    pub dst: Ptr,
    pub c: usize,
    pub hw: usize,
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub k: f32,
}

/// `dst[i·dim..] = table[ids[i]·dim..]` for `i < count`; ids are i32 bit patterns, and
/// an id outside `0..vocab` yields zeros.
#[derive(Clone, Debug, PartialEq)]
pub struct Gather {
    pub ids: Ptr,
    pub table: Ptr,
    pub dst: Ptr,
    pub count: usize,
    pub vocab: usize,
    pub dim: usize,
}

/// `dst = scale · Σ_{o < outer} Σ_{i < len} v(o, i)`, where `v` is the value of the last of
/// `insts` (a map program without stores) evaluated at element `i` with `var` = `o`.
/// Broadcast operands must not depend on `var`.
#[derive(Clone, Debug, PartialEq)]
pub struct Reduce {
    pub var: Var,
    pub outer: usize,
    pub len: usize,
    pub insts: Vec<Inst>,
    pub dst: Ptr,
    pub scale: f32,
}

/// `dst[c · ldd + r] = src[r · lds + c]` for `r < rows`, `c < cols`.
#[derive(Clone, Debug, PartialEq)]
pub struct Transpose {
    pub src: Ptr,
    pub lds: usize,
    pub dst: Ptr,
    pub ldd: usize,
    pub rows: usize,
    pub cols: usize,
}

/// The adjoint of [`Im2col`]: adds each element of the unfolded matrix `cols` (rows `ld`
/// apart) to the input pixel it was copied from. Padding positions are dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct Col2im {
    pub cols: Ptr,
    pub ld: usize,
    pub image: Ptr,
    pub win: Window,
}

/// The adjoint of [`Pool`] on `win.c` planes: `dx` is the sum of each output gradient of
/// `dy` placed at its window's first largest input of `x` (max), or spread evenly over
/// the window (mean). `dx` is overwritten.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolBackward {
    pub dy: Ptr,
    pub x: Ptr,
    pub dx: Ptr,
    pub win: Window,
    pub reduce: crate::ir::ops::Reduce,
}

/// The adjoint of [`Gather`]: `table[ids[i]·dim..] = Σ src[i·dim..]` over the rows `i`
/// whose id it is (ids outside the vocabulary are skipped). The sums run in f64 in
/// `acc`, scratch of `2 · vocab · dim` floats, and are rounded into `table` at the end.
#[derive(Clone, Debug, PartialEq)]
pub struct Scatter {
    pub ids: Ptr,
    pub src: Ptr,
    pub table: Ptr,
    pub acc: Ptr,
    pub count: usize,
    pub vocab: usize,
    pub dim: usize,
}

/// Gradient of local response normalisation for one image; `scratch` holds `2 · c · hw`
/// floats of intermediate per-pixel factors.
#[derive(Clone, Debug, PartialEq)]
pub struct LrnBackward {
    pub dy: Ptr,
    pub x: Ptr,
    pub dx: Ptr,
    pub scratch: Ptr,
    pub c: usize,
    pub hw: usize,
    pub size: usize,
    pub alpha: f32,
    pub beta: f32,
    pub k: f32,
}

/// Softmax cross-entropy over `rows` rows of `cols` logits with integer labels:
/// `grad = (softmax − onehot) · scale`, `stats[0] = mean loss`, `stats[1] = rows whose
/// first largest logit is the label`. Labels outside `0..cols` contribute nothing.
#[derive(Clone, Debug, PartialEq)]
pub struct CrossEntropy {
    pub logits: Ptr,
    pub labels: Ptr,
    pub grad: Ptr,
    pub stats: Ptr,
    pub rows: usize,
    pub cols: usize,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Loop {
        var: Var,
        extent: usize,
        body: Vec<Stmt>,
    },
    Gemm(Gemm),
    Map(Map),
    Im2col(Im2col),
    Pool(Pool),
    RowSum(RowSum),
    ColumnSum(ColumnSum),
    Softmax(Softmax),
    Lrn(Lrn),
    Gather(Gather),
    Reduce(Reduce),
    Transpose(Transpose),
    Col2im(Col2im),
    PoolBackward(PoolBackward),
    Scatter(Scatter),
    LrnBackward(LrnBackward),
    CrossEntropy(CrossEntropy),
    /// Waits until every member of a [`Parallel::Team`] has reached it, its writes before
    /// it then seen by all of them (a recurrent layer whose gate columns the threads
    /// share: each step's product reads the state every member wrote the step before).
    Barrier,
}

/// How a kernel's work is split across threads. The generated function receives the
/// range `[start, end)` of the split dimension that its thread computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parallel {
    /// One thread runs everything (`start..end` is `0..1`).
    Serial,
    /// The first statement is a loop; its iterations are split.
    Loop { extent: usize },
    /// The first statement is a loop of `members` iterations, one per thread, all running
    /// at once, so that they may meet at [`Stmt::Barrier`]s: `members` is the program's
    /// thread count.
    Team { members: usize },
}

impl Parallel {
    /// Number of units the range runs over.
    pub fn extent(self) -> usize {
        match self {
            Parallel::Serial => 1,
            Parallel::Loop { extent } => extent,
            Parallel::Team { members } => members,
        }
    }
}

/// When a kernel runs, as the passes after scheduling need to know it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelKind {
    /// Computes from parameters alone (batch-norm folding, transposed weights): its
    /// outputs change only when the parameters do, so the arena keeps them with the
    /// parameters.
    Prologue,
    /// Everything else: computes from each run's inputs.
    Body,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    /// `k7`
    pub name: String,
    pub kind: KernelKind,
    /// The fused ops, for people: `conv2d + scale_shift_channel + relu`.
    pub label: String,
    /// The layers the ops came from.
    pub layers: Vec<String>,
    pub parallel: Parallel,
    pub body: Vec<Stmt>,
    /// Sizes (in f32) of the scratch buffers, per thread.
    pub scratch: Vec<usize>,
    /// Tensors the kernel reads and the one it writes, for the memory plan.
    pub reads: Vec<TensorId>,
    pub writes: Vec<TensorId>,
    /// Multiply-accumulates it performs, for GFLOP/s.
    pub macs: u64,
}

/// The kernels of one network, in execution order.
#[derive(Clone, Debug)]
pub struct Program {
    pub kernels: Vec<Kernel>,
    /// Threads the kernels were scheduled for (scratch is sized per thread).
    pub threads: usize,
    /// The back-end geometry the kernels were shaped for; a back end refuses a program
    /// scheduled for one it cannot generate.
    pub geometry: crate::backend::Geometry,
}
