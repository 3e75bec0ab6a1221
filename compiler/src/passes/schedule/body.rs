//! Loop nests for each kind of group.

use super::{At, Build, Operand, Step, Tail, TailStep, train};
use crate::ir::kernel::*;
use crate::ir::ops::elementwise::Arith;
use crate::ir::ops::{Elementwise, Op, OpNode, TensorId};

/// How a product's work is shared by threads.
pub(super) enum Split {
    Serial,
    /// Blocks of `width` columns (the last block takes any left over).
    Columns {
        blocks: usize,
        width: usize,
    },
    /// Blocks of `width` rows (the last block takes any left over).
    Rows {
        blocks: usize,
        width: usize,
    },
}

impl Build<'_> {
    /// The statements of a group's kernel and how they split across threads.
    pub(super) fn body(&mut self, nodes: &[&OpNode]) -> (Vec<Stmt>, Parallel) {
        let first = nodes[0];
        let out = Ptr::tensor(nodes[nodes.len() - 1].output);
        let at = At(first);
        let x = |i: usize| at.x(i);
        match first.op {
            Op::Conv2d { win, k, groups } => {
                let tail = Self::steps(&nodes[1..]);
                self.conv(&win, k, groups, x(0), x(1), out, &tail)
            }
            Op::MatMul { m, k, n, ta } => {
                let tail = Self::steps(&nodes[1..]);
                let sparse = self.graph.one_hot.contains(&first.inputs[0]);
                self.matmul(m, k, n, (ta, sparse), x(0), x(1), out, &tail)
            }
            Op::Elementwise { .. } | Op::AddChannel { .. } | Op::ScaleShiftChannel { .. } => {
                let tail = Self::steps(nodes);
                self.map_chain(first, &tail, out)
            }
            Op::BatchNormFold { channels, eps } => train::fold(channels, eps, [x(0), x(1), x(2), x(3)], out),
            Op::Pool2d { win, reduce } => {
                let n = self.var();
                let w = window(&win);
                let pool = Pool {
                    src: x(0).plus_var(n, win.c * win.h * win.w),
                    dst: out.plus_var(n, win.c * win.oh * win.ow),
                    win: w,
                    reduce,
                };
                (
                    vec![Stmt::Loop { var: n, extent: win.n, body: vec![Stmt::Pool(pool)] }],
                    self.parallel(win.n, win.n * win.c * win.oh * win.ow * win.kh * win.kw),
                )
            }
            Op::GlobalAvgPool { n, c, hw } => {
                let s = RowSum { src: x(0), dst: out, rows: n * c, len: hw, scale: 1.0 / hw as f32 };
                (vec![Stmt::RowSum(s)], Parallel::Serial)
            }
            Op::Softmax { rows, cols } => {
                (vec![Stmt::Softmax(Softmax { src: x(0), dst: out, rows, cols })], Parallel::Serial)
            }
            Op::Lrn { n, c, hw, size, alpha, beta, k } => {
                let b = self.var();
                let l = Lrn {
                    src: x(0).plus_var(b, c * hw),
                    dst: out.plus_var(b, c * hw),
                    c,
                    hw,
                    size,
                    alpha,
                    beta,
                    k,
                };
                (
                    vec![Stmt::Loop { var: b, extent: n, body: vec![Stmt::Lrn(l)] }],
                    self.parallel(n, n * c * hw * size),
                )
            }
            Op::Concat { outer, ref inners } => {
                let o = self.var();
                let total: usize = inners.iter().sum();
                let mut at = 0;
                let mut copies = Vec::new();
                for (i, &inner) in inners.iter().enumerate() {
                    let insts = vec![
                        Inst::Load(x(i).plus_var(o, inner)),
                        Inst::Store(out.plus(at).plus_var(o, total), 0),
                    ];
                    copies.push(Stmt::Map(Map { len: inner, insts }));
                    at += inner;
                }
                (
                    vec![Stmt::Loop { var: o, extent: outer, body: copies }],
                    self.parallel(outer, outer * total),
                )
            }
            Op::Embedding { count, vocab, dim } => {
                let g = Gather { ids: x(0), table: x(1), dst: out, count, vocab, dim };
                (vec![Stmt::Gather(g)], Parallel::Serial)
            }
            Op::Recurrent(r) => self.recurrent(&r, first, out),
            Op::RecurrentBackward(r) => self.recurrent_backward(&r, first, out),
            Op::ChannelMoments { outer, channels, inner } => {
                self.channel_moments((outer, channels, inner), at, out)
            }
            Op::BatchNormFoldTrain { channels, eps } => self.batch_norm_fold_train(channels, eps, at, out),
            Op::UpdateRunning { channels, momentum, variance, count } => {
                self.update_running((channels, momentum), (variance, count), at, out)
            }
            Op::Dropout { len, p } | Op::DropoutBackward { len, p } => self.dropout(len, p, at, out),
            Op::Conv2dBackwardData { win, k, groups } => {
                self.conv_backward_data(&win, k, groups, x(0), x(1), out)
            }
            Op::Conv2dBackwardWeight { win, k, groups, parts } => {
                self.conv_backward_weight(&win, k, groups, parts, x(0), x(1), out)
            }
            Op::SumParts { parts, len } => self.sum_parts(parts, len, at, out),
            Op::Pool2dBackward { win, reduce } => self.pool2d_backward(&win, reduce, at, out),
            Op::BroadcastChannel { outer, channels, inner, scale } => {
                self.broadcast_channel((outer, channels, inner), scale, at, out)
            }
            Op::ChannelSum { outer, channels, inner } => self.channel_sum((outer, channels, inner), at, out),
            Op::Transpose { rows, cols } => self.transpose(rows, cols, at, out),
            Op::SoftmaxBackward { rows, cols } => self.softmax_backward(rows, cols, at, out),
            Op::LrnBackward { n, c, hw, size, alpha, beta, k } => {
                self.lrn_backward((n, c, hw, size), (alpha, beta, k), at, out)
            }
            Op::Slice { outer, total, offset, len } => self.slice((outer, total), (offset, len), at, out),
            Op::EmbeddingBackward { count, vocab, dim } => {
                self.embedding_backward(count, vocab, dim, at, out)
            }
            Op::BatchNormBackwardReduce { outer, channels, inner, eps } => {
                self.batch_norm_backward_reduce((outer, channels, inner), eps, at, out)
            }
            Op::BatchNormBackwardInput { outer, channels, inner, eps } => {
                self.batch_norm_backward_input((outer, channels, inner), eps, at, out)
            }
            Op::Copy { offset, len } => self.copy(offset, len, at, out),
            Op::Fill { len, value } => self.fill(len, value, out),
            Op::SoftmaxCrossEntropy { rows, cols } => self.softmax_cross_entropy(rows, cols, at, out),
            Op::MeanSquaredError { rows, cols } => self.mean_squared_error(rows, cols, at, out),
            Op::SumSquares { len } => self.sum_squares(len, at, out),
            Op::Update { len, rule } => self.update(len, rule, at),
        }
    }

    /// A convolution per image and group: unfold the image (unless the kernel is 1×1
    /// with stride 1 and no padding) and multiply by the weights, epilogue fused. Threads
    /// split the images; a single image large enough to share is split into blocks of
    /// output rows instead, each thread unfolding only its own rows, or, where the rows
    /// do not split evenly, into blocks of output channels.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        win: &crate::ir::ops::Window2d,
        k: usize,
        groups: usize,
        x: Ptr,
        weight: Ptr,
        out: Ptr,
        tail: &Tail,
    ) -> (Vec<Stmt>, Parallel) {
        let (ohw, kk) = (win.oh * win.ow, win.c / groups * win.kh * win.kw);
        let work = win.n * k * ohw * kk;
        if let Some(rows) = self.row_blocks(win, groups, work) {
            return self.conv_rows(win, k, rows, x, weight, out, tail, work);
        }
        if let Some(split) =
            self.conv_channels(win, k, groups, x.clone(), weight.clone(), out.clone(), tail, work)
        {
            return split;
        }
        let (cg, kg) = (win.c / groups, k / groups);
        let hw = win.h * win.w;
        let n = self.var();
        let g = if groups > 1 { Some(self.var()) } else { None };
        let at_group = |p: Ptr, coef: usize| match g {
            Some(g) => p.plus_var(g, coef),
            None => p,
        };
        let image = at_group(x.plus_var(n, win.c * hw), cg * hw);
        let out_block = at_group(out.plus_var(n, k * ohw), kg * ohw);
        let mut stmts = Vec::new();
        let mut w = window(win);
        w.c = cg;
        let b = self.right(&mut stmts, image, w, None, ohw);
        let epilogue = gemm_epilogue(
            tail,
            |p| EInst::Row(at_group(p, kg)),
            |t| EInst::Elem(at_group(Ptr::tensor(t).plus_var(n, k * ohw), kg * ohw), ohw),
        );
        stmts.push(Stmt::Gemm(Gemm {
            m: kg,
            n: ohw,
            k: kk,
            a: at_group(weight, kg * kk),
            lda: kk,
            ta: false,
            b,
            c: out_block,
            ldc: ohw,
            epilogue,
            sparse_a: false,
            b_sums: Vec::new(),
        }));
        let per_image = match g {
            Some(g) => vec![Stmt::Loop { var: g, extent: groups, body: stmts }],
            None => stmts,
        };
        (vec![Stmt::Loop { var: n, extent: win.n, body: per_image }], self.parallel(win.n, work))
    }

    /// The right operand of a convolution's product over the image at `src`: the image
    /// itself when the kernel is 1×1 with stride 1 and no padding; else the image seen
    /// through the window when the back end's products read it so; else its unfolded
    /// copy in scratch, made by a statement pushed onto `stmts`.
    fn right(
        &mut self,
        stmts: &mut Vec<Stmt>,
        src: Ptr,
        win: Window,
        first_row: Option<(Var, usize)>,
        pixels: usize,
    ) -> Right {
        let (taps, ohw) = (win.c * win.kh * win.kw, win.oh * win.ow);
        if win.kh == 1
            && win.kw == 1
            && win.sh == 1
            && win.sw == 1
            && win.pad == [0; 4]
            && first_row.is_none()
        {
            return Right::Matrix { ptr: src, ld: ohw };
        }
        if self.geometry.unfolds {
            return Right::Unfolded(Unfold { src, win, first_row });
        }
        let ld = unaliased(pixels, self.geometry.pad);
        let col = self.scratch(taps * ld);
        stmts.push(Stmt::Im2col(Im2col { src, dst: col.clone(), ld, win, first_row }));
        Right::Matrix { ptr: col, ld }
    }

    /// A product `[m, k] · [k, n]`, its left operand transposed and a one-hot input as
    /// `(ta, sparse)` say, split across threads when it is worth sharing: into blocks of
    /// rows, or of columns when `b` is the larger operand (each block reads the whole of
    /// the operand it does not split, which a back end may pack per block: an LSTM's
    /// `W_hh` gradient, `[256, 2048] · [2048, 1024]`, had each of two threads pack all 8 MiB
    /// of `b`). A one-hot input's weight gradient splits by columns too: its rows are the
    /// input's classes, which a text's characters fill far from evenly (in blocks of rows,
    /// the LSTM variant's took 0.40 ms a step on two threads as on one). Rows or columns
    /// left over after the equal blocks form a last product that the thread with the last
    /// block computes. Every element is the same sum either way.
    #[allow(clippy::too_many_arguments)]
    fn matmul(
        &mut self,
        m: usize,
        k: usize,
        n: usize,
        (ta, sparse): (bool, bool),
        a: Ptr,
        b: Ptr,
        out: Ptr,
        tail: &Tail,
    ) -> (Vec<Stmt>, Parallel) {
        // A transposed left operand is stored `[k, m]`: its rows are columns.
        let lda = if ta { m } else { k };
        let a_row = if ta { 1 } else { lda };
        let riders = self.riders.clone();
        // Rows `at` moves `a` and `c` to (by a row's stride) or columns it moves `b`, `c`
        // and the epilogue's operands to (by 1).
        let gemm = |(rows, cols): (usize, usize), at: &dyn Fn(Ptr, usize) -> Ptr, by_rows: bool| -> Stmt {
            let (a_step, c_step) = if by_rows { (a_row, n) } else { (0, 1) };
            let col = |p: Ptr| EInst::Col(if by_rows { p } else { at(p, 1) });
            let epilogue = gemm_epilogue(tail, col, |t| EInst::Elem(at(Ptr::tensor(t), c_step), n));
            Stmt::Gemm(Gemm {
                m: rows,
                n: cols,
                k,
                a: if by_rows { at(a.clone(), a_step) } else { a.clone() },
                lda,
                ta,
                b: Right::Matrix { ptr: if by_rows { b.clone() } else { at(b.clone(), 1) }, ld: n },
                c: at(out.clone(), c_step),
                ldc: n,
                epilogue,
                sparse_a: sparse,
                // Blocks of columns sum their own; a product split by rows takes no
                // riders (`riders::attach`).
                b_sums: riders.iter().map(|r| r.sum(at, n)).collect(),
            })
        };
        match self.product_split(m, k, n) {
            Split::Columns { blocks, width } => {
                let stmts = self.blocks(n, blocks, width, |_, at, cols| vec![gemm((m, cols), at, false)]);
                (stmts, Parallel::Loop { extent: blocks })
            }
            Split::Rows { blocks, width } => {
                let stmts = self.blocks(m, blocks, width, |_, at, rows| vec![gemm((rows, n), at, true)]);
                (stmts, Parallel::Loop { extent: blocks })
            }
            Split::Serial => (vec![gemm((m, n), &|p, _| p, true)], Parallel::Serial),
        }
    }

    /// How a product `[m, k] · [k, n]` splits across threads ([`Build::matmul`]).
    pub(super) fn product_split(&self, m: usize, k: usize, n: usize) -> Split {
        let work = m * n * k;
        // Blocks of whole register tiles of columns, at least eight of them (a back end
        // with wider tiles of its own, as x86's products, still gets whole panels).
        let columns = self.geometry.columns;
        let col_blocks = self.threads.min(n / (8 * columns));
        if n > m && self.parallel(col_blocks, work) != Parallel::Serial {
            return Split::Columns { blocks: col_blocks, width: n / col_blocks / columns * columns };
        }
        // Each block at least two register tiles of rows.
        let rows = self.geometry.rows;
        let blocks = self.threads.min(m / (2 * rows));
        if self.parallel(blocks, work) == Parallel::Serial {
            return Split::Serial;
        }
        // Blocks of whole register tiles.
        Split::Rows { blocks, width: m / blocks / rows * rows }
    }

    /// Output rows per block when one image should be split across threads: the batch
    /// is one image, the work is worth sharing, and the rows divide into at least one
    /// block per thread of at least four register tiles' columns of pixels each.
    fn row_blocks(&self, win: &crate::ir::ops::Window2d, groups: usize, work: usize) -> Option<usize> {
        if win.n != 1 || groups != 1 || self.threads < 2 || work < super::MIN_PARALLEL_WORK {
            return None;
        }
        (1..=win.oh / self.threads)
            .rev()
            .find(|r| win.oh.is_multiple_of(*r) && r * win.ow >= 4 * self.geometry.columns)
    }

    /// A one-image convolution whose output rows do not split evenly (a small late layer)
    /// as a loop over blocks of output channels, when there are enough for each thread to
    /// have at least two register tiles of them. Each block reads the whole image (and
    /// unfolds it for itself) but only its own channels' weights, which are most of the
    /// traffic in such a layer.
    #[allow(clippy::too_many_arguments)]
    fn conv_channels(
        &mut self,
        win: &crate::ir::ops::Window2d,
        k: usize,
        groups: usize,
        x: Ptr,
        weight: Ptr,
        out: Ptr,
        tail: &Tail,
        work: usize,
    ) -> Option<(Vec<Stmt>, Parallel)> {
        let rows = self.geometry.rows;
        let blocks = self.threads.min(k / (2 * rows));
        if win.n != 1 || groups != 1 || blocks < 2 || work < super::MIN_PARALLEL_WORK {
            return None;
        }
        let (ohw, kk) = (win.oh * win.ow, win.c * win.kh * win.kw);
        let width = k / blocks / rows * rows;
        let stmts = self.blocks(k, blocks, width, |s, at, channels| {
            let mut body = Vec::new();
            let b = s.right(&mut body, x.clone(), window(win), None, ohw);
            let epilogue =
                gemm_epilogue(tail, |p| EInst::Row(at(p, 1)), |t| EInst::Elem(at(Ptr::tensor(t), ohw), ohw));
            body.push(Stmt::Gemm(Gemm {
                m: channels,
                n: ohw,
                k: kk,
                a: at(weight.clone(), kk),
                lda: kk,
                ta: false,
                b,
                c: at(out.clone(), ohw),
                ldc: ohw,
                epilogue,
                sparse_a: false,
                b_sums: Vec::new(),
            }));
            body
        });
        Some((stmts, Parallel::Loop { extent: blocks }))
    }

    /// A one-image convolution as a loop over blocks of `rows` output rows.
    #[allow(clippy::too_many_arguments)]
    fn conv_rows(
        &mut self,
        win: &crate::ir::ops::Window2d,
        k: usize,
        rows: usize,
        x: Ptr,
        weight: Ptr,
        out: Ptr,
        tail: &Tail,
        work: usize,
    ) -> (Vec<Stmt>, Parallel) {
        let (ohw, kk) = (win.oh * win.ow, win.c * win.kh * win.kw);
        let pixels = rows * win.ow;
        let blocks = win.oh / rows;
        let blk = self.var();
        let mut body = Vec::new();
        let b = if direct(win) {
            Right::Matrix { ptr: x.plus_var(blk, pixels), ld: ohw }
        } else {
            let mut w = window(win);
            w.oh = rows;
            self.right(&mut body, x, w, Some((blk, rows)), pixels)
        };
        let epilogue =
            gemm_epilogue(tail, EInst::Row, |t| EInst::Elem(Ptr::tensor(t).plus_var(blk, pixels), ohw));
        body.push(Stmt::Gemm(Gemm {
            m: k,
            n: pixels,
            k: kk,
            a: weight,
            lda: kk,
            ta: false,
            b,
            c: out.plus_var(blk, pixels),
            ldc: ohw,
            epilogue,
            sparse_a: false,
            b_sums: Vec::new(),
        }));
        (vec![Stmt::Loop { var: blk, extent: blocks, body }], self.parallel(blocks, work))
    }

    /// A run of element-wise ops as one map, looping over channels when a per-channel
    /// parameter is involved.
    fn map_chain(&mut self, first: &OpNode, tail: &Tail, out: Ptr) -> (Vec<Stmt>, Parallel) {
        // Fusion groups only channel steps that agree on their structure.
        let structure = tail.iter().find_map(|s| s.channels);
        let src = Ptr::tensor(first.inputs[0]);
        match structure {
            None => {
                let len = tail[0].len;
                let insts = map_insts(tail, src, |_, p| Inst::Load(p), |t| Inst::Load(Ptr::tensor(t)), out);
                (vec![Stmt::Map(Map { len, insts })], Parallel::Serial)
            }
            Some((outer, channels, 1)) => {
                // Channel parameters vary along the map: load them as vectors.
                let o = self.var();
                let row = |p: Ptr| p.plus_var(o, channels);
                let insts = map_insts(
                    tail,
                    row(src),
                    |_, p| Inst::Load(p),
                    |t| Inst::Load(row(Ptr::tensor(t))),
                    row(out),
                );
                let map = Stmt::Map(Map { len: channels, insts });
                (
                    vec![Stmt::Loop { var: o, extent: outer, body: vec![map] }],
                    self.parallel(outer, outer * channels),
                )
            }
            Some((outer, channels, inner)) => {
                let (o, c) = (self.var(), self.var());
                let at = |p: Ptr| p.plus_var(o, channels * inner).plus_var(c, inner);
                let insts = map_insts(
                    tail,
                    at(src),
                    |_, p| Inst::Bcast(p.plus_var(c, 1)),
                    |t| Inst::Load(at(Ptr::tensor(t))),
                    at(out),
                );
                let map = Stmt::Map(Map { len: inner, insts });
                let inner_loop = Stmt::Loop { var: c, extent: channels, body: vec![map] };
                (
                    vec![Stmt::Loop { var: o, extent: outer, body: vec![inner_loop] }],
                    self.parallel(outer, outer * channels * inner),
                )
            }
        }
    }
}

/// Whether a convolution reads its input directly as the product's right operand (a
/// 1×1 kernel, stride 1, no padding: the image is already `[channels, pixels]`).
pub(super) fn direct(win: &crate::ir::ops::Window2d) -> bool {
    win.kh == 1 && win.kw == 1 && win.sh == 1 && win.sw == 1 && win.pad == [0; 4]
}

/// A row stride (in floats) for `n` columns, rounded up to a multiple of `pad`, that is
/// not a multiple of 1 KiB floats: rows 4 KiB apart map to the same L1 sets, so a product
/// walking down a column panel of such a matrix would evict its own panel.
pub(super) fn unaliased(n: usize, pad: usize) -> usize {
    let padded = n.div_ceil(pad) * pad;
    let within = padded % 256;
    if within < pad || within + pad > 256 { padded + pad } else { padded }
}

pub(super) fn window(w: &crate::ir::ops::Window2d) -> Window {
    Window {
        c: w.c,
        h: w.h,
        w: w.w,
        kh: w.kh,
        kw: w.kw,
        sh: w.sh,
        sw: w.sw,
        dh: w.dh,
        dw: w.dw,
        pad: w.pad,
        oh: w.oh,
        ow: w.ow,
    }
}

/// The epilogue of a matrix product: the accumulator through each step.
/// `channel` makes a per-channel parameter operand, `same` a same-shaped tensor operand.
pub(super) fn gemm_epilogue(
    tail: &Tail,
    channel: impl Fn(Ptr) -> EInst,
    same: impl Fn(TensorId) -> EInst,
) -> Vec<EInst> {
    if tail.is_empty() {
        return Vec::new();
    }
    let mut e = vec![EInst::Acc];
    let operand = |e: &mut Vec<EInst>, o: &Operand| {
        e.push(match o {
            Operand::Channel(t, off) => channel(Ptr::tensor(*t).plus(*off)),
            Operand::Same(t) => same(*t),
        });
        e.len() - 1
    };
    for TailStep { operands, step, .. } in tail {
        let cur = e.len() - 1;
        let xs: Vec<usize> = operands.iter().map(|o| operand(&mut e, o)).collect();
        match step {
            Step::Apply(f) => {
                let args: Vec<usize> = std::iter::once(cur).chain(xs).collect();
                // A program's result is never an input (see `Elementwise::new`), so the
                // running value is again the last instruction.
                f.inline(&args, |a| {
                    e.push(match a {
                        Arith::Const(c) => EInst::Const(c),
                        Arith::Prim(p, x) => EInst::Prim(p, x),
                        Arith::Bin(op, x, y) => EInst::Bin(op, x, y),
                        Arith::Select(c, x, y, t, f) => EInst::Select(c, x, y, t, f),
                    });
                    e.len() - 1
                });
            }
            Step::Add => e.push(EInst::Bin(BinOp::Add, cur, xs[0])),
            Step::ScaleShift => {
                e.push(EInst::Bin(BinOp::Mul, cur, xs[0]));
                let scaled = e.len() - 1;
                e.push(EInst::Bin(BinOp::Add, scaled, xs[1]));
            }
        }
    }
    e
}

/// Appends element-wise program `f` to a map program whose instructions `args` hold its
/// inputs; returns the index of its result.
pub(super) fn inline(m: &mut Vec<Inst>, f: &Elementwise, args: &[usize]) -> usize {
    f.inline(args, |a| {
        m.push(match a {
            Arith::Const(c) => Inst::Const(c),
            Arith::Prim(p, x) => Inst::Prim(p, x),
            Arith::Bin(op, x, y) => Inst::Bin(op, x, y),
            Arith::Select(c, x, y, t, f) => Inst::Select(c, x, y, t, f),
        });
        m.len() - 1
    })
}

/// A map program: load `src`, apply each step, store to `dst`.
pub(super) fn map_insts(
    tail: &Tail,
    src: Ptr,
    channel: impl Fn(usize, Ptr) -> Inst,
    same: impl Fn(TensorId) -> Inst,
    dst: Ptr,
) -> Vec<Inst> {
    let mut m = vec![Inst::Load(src)];
    let operand = |m: &mut Vec<Inst>, o: &Operand| {
        m.push(match o {
            Operand::Channel(t, off) => channel(*off, Ptr::tensor(*t).plus(*off)),
            Operand::Same(t) => same(*t),
        });
        m.len() - 1
    };
    for TailStep { operands, step, .. } in tail {
        let cur = m.len() - 1;
        let xs: Vec<usize> = operands.iter().map(|o| operand(&mut m, o)).collect();
        match step {
            Step::Apply(f) => {
                let args: Vec<usize> = std::iter::once(cur).chain(xs).collect();
                inline(&mut m, f, &args);
            }
            Step::Add => m.push(Inst::Bin(BinOp::Add, cur, xs[0])),
            Step::ScaleShift => {
                m.push(Inst::Bin(BinOp::Mul, cur, xs[0]));
                let scaled = m.len() - 1;
                m.push(Inst::Bin(BinOp::Add, scaled, xs[1]));
            }
        }
    }
    let last = m.len() - 1;
    m.push(Inst::Store(dst, last));
    m
}
