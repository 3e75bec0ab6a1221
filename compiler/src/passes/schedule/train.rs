//! Kernels for the training ops: batch statistics, dropout, gradients, losses and
//! optimizer updates. Most are element-wise programs and reductions over the loop nests
//! of their tensors; convolution gradients are products like the forward pass
//! (`conv_backward.rs`). [`Build::body`] calls one method per op.

use super::body::window;
use super::update::update_program;
use super::{At, Build};
use crate::ir::kernel::*;
use crate::ir::ops::{Hyper, Reduce as Pooling, UpdateRule, Window2d};

/// Elements per parallel block of an optimizer update.
const UPDATE_BLOCK: usize = 1 << 14;

type Scheduled = (Vec<Stmt>, Parallel);

/// One map over `len` elements, on one thread.
fn serial_map(len: usize, insts: Insts) -> Scheduled {
    (vec![Stmt::Map(Map { len, insts: insts.finish() })], Parallel::Serial)
}

impl Build<'_> {
    /// Each channel's mean, then its variance about that mean (two passes, as the
    /// reference, rather than E[x²] − E[x]², which cancels).
    pub(super) fn channel_moments(
        &mut self,
        (outer, channels, inner): (usize, usize, usize),
        at: At,
        out: Ptr,
    ) -> Scheduled {
        let (c, o) = (self.var(), self.var());
        let x = at.x(0).plus_var(o, channels * inner).plus_var(c, inner);
        let scale = 1.0 / (outer * inner) as f32;
        let mean = out.plus_var(c, 1);
        let mut sum = Insts::default();
        sum.load(x.clone());
        let mut squares = Insts::default();
        let (v, m) = (squares.load(x), squares.bcast(mean.clone()));
        let d = squares.sub(v, m);
        squares.mul(d, d);
        let body = vec![
            Stmt::Reduce(Reduce { var: o, outer, len: inner, insts: sum.finish(), dst: mean, scale }),
            Stmt::Reduce(Reduce {
                var: o,
                outer,
                len: inner,
                insts: squares.finish(),
                dst: out.plus(channels).plus_var(c, 1),
                scale,
            }),
        ];
        let work = 2 * outer * channels * inner;
        (vec![Stmt::Loop { var: c, extent: channels, body }], self.parallel(channels, work))
    }

    /// Batch-norm's affine from the batch's moments.
    pub(super) fn batch_norm_fold_train(&mut self, channels: usize, eps: f32, at: At, out: Ptr) -> Scheduled {
        let moments = at.x(2);
        fold(channels, eps, [at.x(0), at.x(1), moments.clone(), moments.plus(channels)], out)
    }

    /// running ← (1 − momentum) · running + momentum · statistic, the variance made
    /// unbiased.
    pub(super) fn update_running(
        &mut self,
        (channels, momentum): (usize, f32),
        (variance, count): (bool, usize),
        at: At,
        out: Ptr,
    ) -> Scheduled {
        let (stat, unbiased) = if variance {
            (at.x(0).plus(channels), if count > 1 { count as f32 / (count - 1) as f32 } else { 1.0 })
        } else {
            (at.x(0), 1.0)
        };
        let mut p = Insts::default();
        let stat = p.load(stat);
        let new = p.scale(stat, momentum * unbiased);
        let running = p.load(at.x(1));
        let kept = p.scale(running, 1.0 - momentum);
        let sum = p.add(new, kept);
        p.store(out, sum);
        serial_map(channels, p)
    }

    /// Dropout and its backward pass: the same mask, regenerated from the seed.
    pub(super) fn dropout(&mut self, len: usize, p: f32, at: At, out: Ptr) -> Scheduled {
        let mut prog = Insts::default();
        let x = prog.load(at.x(0));
        let keep = prog.keep(at.x(1).plus(Hyper::SEED), p, out.clone());
        let y = prog.mul(x, keep);
        prog.store(out, y);
        serial_map(len, prog)
    }

    pub(super) fn sum_parts(&mut self, parts: usize, len: usize, at: At, out: Ptr) -> Scheduled {
        let mut p = Insts::default();
        let mut sum = p.load(at.x(0));
        for part in 1..parts {
            let v = p.load(at.x(0).plus(part * len));
            sum = p.add(sum, v);
        }
        p.store(out, sum);
        serial_map(len, p)
    }

    pub(super) fn pool2d_backward(&mut self, win: &Window2d, reduce: Pooling, at: At, out: Ptr) -> Scheduled {
        let n = self.var();
        let image = win.c * win.h * win.w;
        let body = vec![Stmt::PoolBackward(PoolBackward {
            dy: at.x(0).plus_var(n, win.c * win.oh * win.ow),
            x: at.x(1).plus_var(n, image),
            dx: out.plus_var(n, image),
            win: window(win),
            reduce,
        })];
        let work = win.n * win.c * win.oh * win.ow * win.kh * win.kw;
        (vec![Stmt::Loop { var: n, extent: win.n, body }], self.parallel(win.n, work))
    }

    pub(super) fn broadcast_channel(
        &mut self,
        (outer, channels, inner): (usize, usize, usize),
        scale: f32,
        at: At,
        out: Ptr,
    ) -> Scheduled {
        let oc = self.var();
        let mut p = Insts::default();
        let v = p.bcast(at.x(0).plus_var(oc, 1));
        let scaled = p.scale(v, scale);
        p.store(out.plus_var(oc, inner), scaled);
        let map = Map { len: inner, insts: p.finish() };
        let n = outer * channels;
        (vec![Stmt::Loop { var: oc, extent: n, body: vec![Stmt::Map(map)] }], self.parallel(n, n * inner))
    }

    pub(super) fn channel_sum(
        &mut self,
        (outer, channels, inner): (usize, usize, usize),
        at: At,
        out: Ptr,
    ) -> Scheduled {
        if inner == 1 {
            return self.column_sums(outer, channels, at.x(0), out);
        }
        let (c, o) = (self.var(), self.var());
        let mut p = Insts::default();
        p.load(at.x(0).plus_var(o, channels * inner).plus_var(c, inner));
        let sum =
            Reduce { var: o, outer, len: inner, insts: p.finish(), dst: out.plus_var(c, 1), scale: 1.0 };
        let work = outer * channels * inner;
        (
            vec![Stmt::Loop { var: c, extent: channels, body: vec![Stmt::Reduce(sum)] }],
            self.parallel(channels, work),
        )
    }

    pub(super) fn transpose(&mut self, rows: usize, cols: usize, at: At, out: Ptr) -> Scheduled {
        let t = Transpose { src: at.x(0), lds: cols, dst: out, ldd: rows, rows, cols };
        (vec![Stmt::Transpose(t)], Parallel::Serial)
    }

    /// dx = y · (dy − Σ dy · y), per row.
    pub(super) fn softmax_backward(&mut self, rows: usize, cols: usize, at: At, out: Ptr) -> Scheduled {
        let (r, o) = (self.var(), self.var());
        let dot = self.scratch(1);
        let dy = at.x(0).plus_var(r, cols);
        let y = at.x(1).plus_var(r, cols);
        let mut products = Insts::default();
        let (a, b) = (products.load(dy.clone()), products.load(y.clone()));
        products.mul(a, b);
        let mut p = Insts::default();
        let g = p.load(dy);
        let d = p.bcast(dot.clone());
        let centred = p.sub(g, d);
        let yv = p.load(y);
        let dx = p.mul(centred, yv);
        p.store(out.plus_var(r, cols), dx);
        let body = vec![
            Stmt::Reduce(Reduce {
                var: o,
                outer: 1,
                len: cols,
                insts: products.finish(),
                dst: dot,
                scale: 1.0,
            }),
            Stmt::Map(Map { len: cols, insts: p.finish() }),
        ];
        (vec![Stmt::Loop { var: r, extent: rows, body }], Parallel::Serial)
    }

    pub(super) fn lrn_backward(
        &mut self,
        (n, c, hw, size): (usize, usize, usize, usize),
        (alpha, beta, k): (f32, f32, f32),
        at: At,
        out: Ptr,
    ) -> Scheduled {
        let b = self.var();
        let scratch = self.scratch(2 * c * hw);
        let l = LrnBackward {
            dy: at.x(0).plus_var(b, c * hw),
            x: at.x(1).plus_var(b, c * hw),
            dx: out.plus_var(b, c * hw),
            scratch,
            c,
            hw,
            size,
            alpha,
            beta,
            k,
        };
        (
            vec![Stmt::Loop { var: b, extent: n, body: vec![Stmt::LrnBackward(l)] }],
            self.parallel(n, 2 * n * c * hw * size),
        )
    }

    /// Columns `offset..offset + len` of each of `outer` rows.
    pub(super) fn slice(
        &mut self,
        (outer, total): (usize, usize),
        (offset, len): (usize, usize),
        at: At,
        out: Ptr,
    ) -> Scheduled {
        let o = self.var();
        let mut p = Insts::default();
        let v = p.load(at.x(0).plus(offset).plus_var(o, total));
        p.store(out.plus_var(o, len), v);
        let map = Map { len, insts: p.finish() };
        (
            vec![Stmt::Loop { var: o, extent: outer, body: vec![Stmt::Map(map)] }],
            self.parallel(outer, outer * len),
        )
    }

    pub(super) fn embedding_backward(
        &mut self,
        count: usize,
        vocab: usize,
        dim: usize,
        at: At,
        out: Ptr,
    ) -> Scheduled {
        let acc = self.scratch(2 * vocab * dim);
        let scatter = Scatter { ids: at.x(0), src: at.x(1), table: out, acc: acc.clone(), count, vocab, dim };
        (vec![zero(acc, 2 * vocab * dim), Stmt::Scatter(scatter)], Parallel::Serial)
    }

    /// Σ dy (β's gradient) and Σ dy · x̂ (γ's), per channel.
    pub(super) fn batch_norm_backward_reduce(
        &mut self,
        (outer, channels, inner): (usize, usize, usize),
        eps: f32,
        at: At,
        out: Ptr,
    ) -> Scheduled {
        let (c, o) = (self.var(), self.var());
        let here = |p: Ptr| p.plus_var(o, channels * inner).plus_var(c, inner);
        let mut sum = Insts::default();
        sum.load(here(at.x(0)));
        let mut dot = Insts::default();
        let (dy, x) = (dot.load(here(at.x(0))), dot.load(here(at.x(1))));
        let moments = at.x(2).plus_var(c, 1);
        let (_, xhat) = normalise(&mut dot, x, moments.clone(), moments.plus(channels), eps);
        dot.mul(dy, xhat);
        let body = vec![
            Stmt::Reduce(Reduce {
                var: o,
                outer,
                len: inner,
                insts: sum.finish(),
                dst: out.plus_var(c, 1),
                scale: 1.0,
            }),
            Stmt::Reduce(Reduce {
                var: o,
                outer,
                len: inner,
                insts: dot.finish(),
                dst: out.plus(channels).plus_var(c, 1),
                scale: 1.0,
            }),
        ];
        let work = 2 * outer * channels * inner;
        (vec![Stmt::Loop { var: c, extent: channels, body }], self.parallel(channels, work))
    }

    /// dx = γ · invstd / N · (N · dy − Σdy − x̂ · Σ(dy · x̂)).
    pub(super) fn batch_norm_backward_input(
        &mut self,
        (outer, channels, inner): (usize, usize, usize),
        eps: f32,
        at: At,
        out: Ptr,
    ) -> Scheduled {
        let (o, c) = (self.var(), self.var());
        let here = |p: Ptr| p.plus_var(o, channels * inner).plus_var(c, inner);
        let channel = |p: Ptr| p.plus_var(c, 1);
        let count = (outer * inner) as f32;
        let mut p = Insts::default();
        let (dy, x) = (p.load(here(at.x(0))), p.load(here(at.x(1))));
        let moments = channel(at.x(2));
        let (invstd, xhat) = normalise(&mut p, x, moments.clone(), moments.plus(channels), eps);
        let n_dy = p.scale(dy, count);
        let sum_dy = p.bcast(channel(at.x(4)));
        let centred = p.sub(n_dy, sum_dy);
        let sum_dy_xhat = p.bcast(channel(at.x(4).plus(channels)));
        let along = p.mul(xhat, sum_dy_xhat);
        let inner_term = p.sub(centred, along);
        let gamma = p.bcast(channel(at.x(3)));
        let factor = p.mul(gamma, invstd);
        let factor = p.scale(factor, 1.0 / count);
        let dx = p.mul(inner_term, factor);
        p.store(here(out), dx);
        let map = Stmt::Map(Map { len: inner, insts: p.finish() });
        let work = outer * channels * inner;
        let inner_loop = Stmt::Loop { var: c, extent: channels, body: vec![map] };
        (vec![Stmt::Loop { var: o, extent: outer, body: vec![inner_loop] }], self.parallel(outer, work))
    }

    pub(super) fn copy(&mut self, offset: usize, len: usize, at: At, out: Ptr) -> Scheduled {
        let mut p = Insts::default();
        let v = p.load(at.x(0).plus(offset));
        p.store(out, v);
        serial_map(len, p)
    }

    pub(super) fn fill(&mut self, len: usize, value: f32, out: Ptr) -> Scheduled {
        (vec![fill(out, len, value)], Parallel::Serial)
    }

    pub(super) fn softmax_cross_entropy(&mut self, rows: usize, cols: usize, at: At, out: Ptr) -> Scheduled {
        let ce = CrossEntropy { logits: at.x(0), labels: at.x(1), grad: out, stats: at.aux(0), rows, cols };
        (vec![Stmt::CrossEntropy(ce)], Parallel::Serial)
    }

    /// The mean of (y − target)² into the statistics (and 0 as the second), and the
    /// gradient 2 · (y − target) / len.
    pub(super) fn mean_squared_error(&mut self, rows: usize, cols: usize, at: At, out: Ptr) -> Scheduled {
        let len = rows * cols;
        let o = self.var();
        let difference = |p: &mut Insts| {
            let (y, target) = (p.load(at.x(0)), p.load(at.x(1)));
            p.sub(y, target)
        };
        let mut squares = Insts::default();
        let d = difference(&mut squares);
        squares.mul(d, d);
        let mut grad = Insts::default();
        let d = difference(&mut grad);
        let g = grad.scale(d, 2.0 / len as f32);
        grad.store(out, g);
        let stmts = vec![
            Stmt::Reduce(Reduce {
                var: o,
                outer: 1,
                len,
                insts: squares.finish(),
                dst: at.aux(0),
                scale: 1.0 / len as f32,
            }),
            fill(at.aux(0).plus(1), 1, 0.0),
            Stmt::Map(Map { len, insts: grad.finish() }),
        ];
        (stmts, Parallel::Serial)
    }

    pub(super) fn sum_squares(&mut self, len: usize, at: At, out: Ptr) -> Scheduled {
        let o = self.var();
        let mut p = Insts::default();
        let v = p.load(at.x(0));
        p.mul(v, v);
        (
            vec![Stmt::Reduce(Reduce { var: o, outer: 1, len, insts: p.finish(), dst: out, scale: 1.0 })],
            Parallel::Serial,
        )
    }

    /// The optimizer step, in blocks that threads share.
    pub(super) fn update(&mut self, len: usize, rule: UpdateRule, at: At) -> Scheduled {
        let ptrs = at.inputs();
        let program = |here: &dyn Fn(&Ptr) -> Ptr| update_program(rule, &ptrs, here);
        let blocks = len / UPDATE_BLOCK;
        let mut stmts = Vec::new();
        let mut parallel = Parallel::Serial;
        if blocks > 0 {
            let b = self.var();
            let insts = program(&|p: &Ptr| p.plus_var(b, UPDATE_BLOCK));
            let map = Stmt::Map(Map { len: UPDATE_BLOCK, insts });
            stmts.push(Stmt::Loop { var: b, extent: blocks, body: vec![map] });
            parallel = self.parallel(blocks, len);
        }
        let done = blocks * UPDATE_BLOCK;
        if done < len {
            let insts = program(&|p: &Ptr| p.plus(done));
            stmts.push(Stmt::Map(Map { len: len - done, insts }));
        }
        (stmts, parallel)
    }
}

/// Batch-norm's affine from `gamma, beta, mean, var` (each `[channels]`) into `out
/// [2, channels]`: scale = γ / √(var + ε), shift = β − mean · scale.
pub(super) fn fold(channels: usize, eps: f32, [gamma, beta, mean, var]: [Ptr; 4], out: Ptr) -> Scheduled {
    let mut p = Insts::default();
    let (gamma, beta, mean, var) = (p.load(gamma), p.load(beta), p.load(mean), p.load(var));
    let e = p.constant(eps);
    let shifted = p.add(var, e);
    let root = p.prim(Prim::Sqrt, shifted);
    let scale = p.div(gamma, root);
    p.store(out.clone(), scale);
    let moved = p.mul(mean, scale);
    let shift = p.sub(beta, moved);
    p.store(out.plus(channels), shift);
    serial_map(channels, p)
}

/// Stores `value` to `len` elements at `p`.
fn fill(p: Ptr, len: usize, value: f32) -> Stmt {
    let mut prog = Insts::default();
    let v = prog.constant(value);
    prog.store(p, v);
    Stmt::Map(Map { len, insts: prog.finish() })
}

/// Stores zeros to `len` elements at `p`.
pub(super) fn zero(p: Ptr, len: usize) -> Stmt {
    fill(p, len, 0.0)
}

/// 1/√(var + ε) of the value `var`.
fn inverse_root(p: &mut Insts, var: Val, eps: f32) -> Val {
    let e = p.constant(eps);
    let shifted = p.add(var, e);
    let root = p.prim(Prim::Sqrt, shifted);
    let one = p.constant(1.0);
    p.div(one, root)
}

/// invstd = 1/√(var + ε) and x̂ = (x − mean) · invstd, from a channel's moments.
fn normalise(p: &mut Insts, x: Val, mean: Ptr, var: Ptr, eps: f32) -> (Val, Val) {
    let (mean, var) = (p.bcast(mean), p.bcast(var));
    let invstd = inverse_root(p, var, eps);
    let centred = p.sub(x, mean);
    (invstd, p.mul(centred, invstd))
}

impl Build<'_> {
    /// The sums of the columns of an `[outer, channels]` matrix (a dense layer's bias
    /// gradient over a batch, or over every step of a sequence), accumulated in f64 a row
    /// of cache lines at a time; summing one column at a time would read one float per
    /// cache line, rows a whole stride apart — 9.3 ms instead of 0.25–0.5 for the 2,048 ×
    /// 1,024 bias gradient of an LSTM over 64 steps. Threads take blocks of columns; no
    /// column's sum depends on the blocks.
    fn column_sums(&mut self, outer: usize, channels: usize, x: Ptr, out: Ptr) -> Scheduled {
        let threads = match self.parallel(channels, outer * channels) {
            Parallel::Serial => 1,
            _ => self.threads,
        };
        let lanes = self.geometry.lanes;
        let width = (channels / threads / lanes * lanes).max(1);
        let blocks = channels / width;
        let body = self.blocks(channels, blocks, width, |_, at, len| {
            vec![Stmt::ColumnSum(ColumnSum {
                src: at(x.clone(), 1),
                ld: channels,
                dst: at(out.clone(), 1),
                rows: outer,
                cols: len,
            })]
        });
        let parallel = if blocks > 1 { Parallel::Loop { extent: blocks } } else { Parallel::Serial };
        (body, parallel)
    }
}
