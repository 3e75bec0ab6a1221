//! Sliding windows for pooling: each window is clipped to the image once, so the inner
//! loops reduce without a bounds check per pixel, and the windows wholly inside the
//! image are reduced a vector of outputs at a time.

use super::emit::{Addr, Emit, F32, LANES, VECTOR};

/// See [`Emit::pool_span`].
pub(super) struct Span {
    pub lo: Value,
    pub hi: Value,
    pub counted: Value,
}
use crate::ir::kernel::{Pool, Window};
use crate::ir::ops::Reduce;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{ConstantData, Endianness, InstBuilder, MemFlagsData, Type, Value, types};

impl Emit<'_, '_> {
    pub(super) fn imin(&mut self, a: Value, b: Value) -> Value {
        let lt = self.b.ins().icmp(IntCC::SignedLessThan, a, b);
        self.b.ins().select(lt, a, b)
    }

    pub(super) fn imax(&mut self, a: Value, b: Value) -> Value {
        let gt = self.b.ins().icmp(IntCC::SignedGreaterThan, a, b);
        self.b.ins().select(gt, a, b)
    }

    /// One axis of the pooling window of output position `o`: the input positions
    /// `[lo, hi)` it covers inside the image, and how many positions an average divides
    /// by — PyTorch's count includes padding, but not beyond it.
    pub(super) fn pool_span(
        &mut self,
        o: Value,
        stride: usize,
        k: usize,
        size: usize,
        pad: [usize; 2],
    ) -> Span {
        let start = self.b.ins().imul_imm_s(o, stride as i64);
        let start = self.b.ins().iadd_imm_s(start, -(pad[0] as i64));
        let end = self.b.ins().iadd_imm_s(start, k as i64);
        let zero = self.iconst(0);
        let size_v = self.iconst(size as i64);
        let lo = self.imax(start, zero);
        let hi = self.imin(end, size_v);
        let padded = self.iconst((size + pad[1]) as i64);
        let limit = self.imin(end, padded);
        Span { lo, hi, counted: self.b.ins().isub(limit, start) }
    }

    /// The divisor of an average over a window of `rows` × `cols` counted positions.
    pub(super) fn window_count(&mut self, rows: &Span, cols: &Span) -> Value {
        let count = self.b.ins().imul(rows.counted, cols.counted);
        self.b.ins().fcvt_from_sint(F32, count)
    }

    /// Pooling, each output plane in up to five parts: the rows and columns whose windows
    /// lie wholly inside the image take their taps at constant offsets from the window's
    /// corner (as many loads as taps, no bounds), [`LANES`] outputs at a time at strides
    /// 1 and 2, and only the border, where windows reach into the padding or past the
    /// edge, clips each window to the image.
    pub fn pool(&mut self, p: &Pool) {
        let w: Window = p.win;
        let src = self.addr(&p.src, 0);
        let dst = self.addr(&p.dst, 0);
        let dilated = w.dh != 1 || w.dw != 1;
        let (ylo, yhi) = if dilated { (0, 0) } else { inside(w.oh, w.sh, w.kh, w.h, w.pad[0]) };
        let (xlo, xhi) = if dilated { (0, 0) } else { inside(w.ow, w.sw, w.kw, w.w, w.pad[2]) };
        self.for_count(None, w.c, 1, |e, ch| {
            let plane = e.b.ins().imul_imm_s(ch, (w.h * w.w) as i64);
            let src_plane = e.at(src, plane);
            let out_plane = e.b.ins().imul_imm_s(ch, (w.oh * w.ow) as i64);
            let dst_plane = e.at(dst, out_plane);
            let planes = (src_plane, dst_plane);
            let clipped_rows = |e: &mut Self, from: usize, to: usize| {
                e.count_range(from, to, |e, oy| {
                    e.for_count(None, w.ow, 1, |e, ox| e.pool_clipped(p, planes, oy, ox));
                });
            };
            clipped_rows(e, 0, ylo);
            e.count_range(ylo, yhi, |e, oy| {
                e.count_range(0, xlo, |e, ox| e.pool_clipped(p, planes, oy, ox));
                let vectors = lanes_inside(&w, xlo, xhi);
                if vectors > 0 {
                    let (from, to) = (e.iconst(xlo as i64), e.iconst((xlo + vectors * LANES) as i64));
                    e.for_range(None, from, to, LANES as i64, true, |e, ox| {
                        e.pool_inside(p, planes, oy, ox, VECTOR)
                    });
                }
                e.count_range(xlo + vectors * LANES, xhi, |e, ox| e.pool_inside(p, planes, oy, ox, F32));
                e.count_range(xhi, w.ow, |e, ox| e.pool_clipped(p, planes, oy, ox));
            });
            clipped_rows(e, yhi.max(ylo), w.oh);
        });
    }

    /// `for i in from..to` over constants, emitting nothing when the range is empty.
    fn count_range(&mut self, from: usize, to: usize, body: impl FnMut(&mut Self, Value)) {
        if from < to {
            let (f, t) = (self.iconst(from as i64), self.iconst(to as i64));
            self.for_range(None, f, t, 1, true, body);
        }
    }

    /// Output `(oy, ox)` of a plane, its window clipped to the image.
    fn pool_clipped(&mut self, p: &Pool, (src_plane, dst_plane): (Addr, Addr), oy: Value, ox: Value) {
        let w = p.win;
        let rows = self.pool_span(oy, w.sh, w.kh, w.h, [w.pad[0], w.pad[1]]);
        let cols = self.pool_span(ox, w.sw, w.kw, w.w, [w.pad[2], w.pad[3]]);
        let init = match p.reduce {
            Reduce::Max => f32::NEG_INFINITY,
            Reduce::Mean => 0.0,
        };
        let acc = self.b.declare_var(F32);
        let start = self.fconst(F32, init);
        self.b.def_var(acc, start);
        self.for_range(None, rows.lo, rows.hi, 1, false, |e, y| {
            let row = e.b.ins().imul_imm_s(y, w.w as i64);
            let row_at = e.at(src_plane, row);
            e.for_range(None, cols.lo, cols.hi, 1, false, |e, x| {
                let at = e.at(row_at, x);
                let v = e.load(F32, at, 0, Some(&p.src));
                let old = e.b.use_var(acc);
                let new = match p.reduce {
                    Reduce::Max => e.max(F32, v, old),
                    Reduce::Mean => e.b.ins().fadd(old, v),
                };
                e.b.def_var(acc, new);
            });
        });
        let mut result = self.b.use_var(acc);
        if p.reduce == Reduce::Mean {
            let count = self.window_count(&rows, &cols);
            result = self.b.ins().fdiv(result, count);
        }
        self.pool_store(p, dst_plane, oy, ox, result);
    }

    /// Stores `result` as output `(oy, ox)` of a plane (and the outputs after it, for a
    /// vector).
    fn pool_store(&mut self, p: &Pool, dst_plane: Addr, oy: Value, ox: Value, result: Value) {
        let o = self.b.ins().imul_imm_s(oy, p.win.ow as i64);
        let o = self.b.ins().iadd(o, ox);
        let at = self.at(dst_plane, o);
        self.store(result, at, 0);
    }

    /// Output `(oy, ox)` of a plane whose window lies inside the image (undilated), or
    /// with `ty` a vector the [`LANES`] outputs from there: its taps at constant offsets
    /// from the corner, an average over all of them. Each lane reduces its window's taps
    /// in the same order as a single output does, so both give the same bits.
    fn pool_inside(
        &mut self,
        p: &Pool,
        (src_plane, dst_plane): (Addr, Addr),
        oy: Value,
        ox: Value,
        ty: Type,
    ) {
        let w = p.win;
        let y0 = self.b.ins().imul_imm_s(oy, w.sh as i64);
        let y0 = self.b.ins().iadd_imm_s(y0, -(w.pad[0] as i64));
        let x0 = self.b.ins().imul_imm_s(ox, w.sw as i64);
        let x0 = self.b.ins().iadd_imm_s(x0, -(w.pad[2] as i64));
        let row = self.b.ins().imul_imm_s(y0, w.w as i64);
        let corner = self.b.ins().iadd(row, x0);
        let corner = self.at(src_plane, corner);
        let mut acc = None;
        for i in 0..w.kh {
            for j in 0..w.kw {
                let v = self.taps(ty, corner, ((i * w.w + j) * 4) as i32, w.sw, &p.src);
                acc = Some(match (acc, p.reduce) {
                    (None, _) => v,
                    (Some(a), Reduce::Max) => self.max(ty, v, a),
                    (Some(a), Reduce::Mean) => self.b.ins().fadd(a, v),
                });
            }
        }
        let mut result = acc.expect("a window has taps");
        if p.reduce == Reduce::Mean {
            let k = self.fconst(ty, 1.0 / (w.kh * w.kw) as f32);
            result = self.b.ins().fmul(result, k);
        }
        self.pool_store(p, dst_plane, oy, ox, result);
    }

    /// The float at `at` plus `bytes`, or as a vector those at `stride` apart from there
    /// (stride 1 or 2: at 2, the even lanes of two loads).
    fn taps(
        &mut self,
        ty: Type,
        at: Addr,
        bytes: i32,
        stride: usize,
        from: &crate::ir::kernel::Ptr,
    ) -> Value {
        let first = self.load(ty, at, bytes, Some(from));
        if ty != VECTOR || stride == 1 {
            return first;
        }
        debug_assert_eq!(stride, 2, "vectors of windows at strides 1 and 2 only");
        let second = self.load(ty, at, bytes + 4 * LANES as i32, Some(from));
        let little = MemFlagsData::new().with_endianness(Endianness::Little);
        let (a, b) = (
            self.b.ins().bitcast(types::I8X16, little, first),
            self.b.ins().bitcast(types::I8X16, little, second),
        );
        // Bytes of lanes 0, 2 of `a` and 0, 2 of `b` (lanes 4, 6 of the pair).
        let evens: Vec<u8> =
            [0u8, 2, 4, 6].iter().flat_map(|&l| (0..4).map(move |byte| 4 * l + byte)).collect();
        let mask = self.b.func.dfg.immediates.push(ConstantData::from(evens));
        let picked = self.b.ins().shuffle(a, b, mask);
        self.b.ins().bitcast(VECTOR, little, picked)
    }
}

/// How many vectors of [`LANES`] outputs, from `lo`, a row's inside windows `lo..hi`
/// fill such that every load of them stays inside the row: at stride 2 a vector of
/// taps reads `2 · LANES` floats of which it keeps every other one. Other strides take
/// one output at a time.
fn lanes_inside(w: &Window, lo: usize, hi: usize) -> usize {
    if w.sw > 2 || w.dw != 1 || w.dh != 1 {
        return 0;
    }
    // The vector from output `o` reads up to `o · sw − pad + (kw − 1) + LANES · sw − 1`.
    let reach = w.kw - 1 + LANES * w.sw - 1;
    let mut n = 0;
    while lo + (n + 1) * LANES <= hi && (lo + n * LANES) * w.sw + reach < w.w + w.pad[2] {
        n += 1;
    }
    n
}

/// The outputs `lo..hi` along one axis whose windows (`k` taps at `stride`, after `pad`)
/// lie wholly inside `0..size`.
fn inside(outputs: usize, stride: usize, k: usize, size: usize, pad: usize) -> (usize, usize) {
    let lo = pad.div_ceil(stride).min(outputs);
    // `o · stride − pad + k ≤ size`.
    let hi = if size + pad >= k { ((size + pad - k) / stride + 1).min(outputs) } else { 0 };
    (lo, hi.max(lo))
}

/// Whether the windows tile the image: stride equal to the window, no padding or
/// dilation, and the last window inside the image.
pub(super) fn tiles(w: &Window) -> bool {
    w.sh == w.kh
        && w.sw == w.kw
        && w.dh == 1
        && w.dw == 1
        && w.pad == [0; 4]
        && w.oh * w.sh <= w.h
        && w.ow * w.sw <= w.w
}
