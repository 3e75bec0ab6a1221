//! Sliding windows for pooling: each window is clipped to the image once, so the inner
//! loops reduce without a bounds check per pixel.

use super::emit::{Addr, Emit, F32};

/// See [`Emit::pool_span`].
pub(super) struct Span {
    pub lo: Value,
    pub hi: Value,
    pub counted: Value,
}
use crate::ir::kernel::{Pool, Window};
use crate::ir::ops::Reduce;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Value};

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

    pub fn pool(&mut self, p: &Pool) {
        let w: Window = p.win;
        let src = self.addr(&p.src, 0);
        let dst = self.addr(&p.dst, 0);
        if tiles(&w) {
            return self.pool_tiles(p, src, dst);
        }
        self.for_count(None, w.c, 1, |e, ch| {
            let plane = e.b.ins().imul_imm_s(ch, (w.h * w.w) as i64);
            let src_plane = e.at(src, plane);
            let out_plane = e.b.ins().imul_imm_s(ch, (w.oh * w.ow) as i64);
            let dst_plane = e.at(dst, out_plane);
            e.for_count(None, w.oh, 1, |e, oy| {
                let rows = e.pool_span(oy, w.sh, w.kh, w.h, [w.pad[0], w.pad[1]]);
                e.for_count(None, w.ow, 1, |e, ox| {
                    let cols = e.pool_span(ox, w.sw, w.kw, w.w, [w.pad[2], w.pad[3]]);
                    let init = match p.reduce {
                        Reduce::Max => f32::NEG_INFINITY,
                        Reduce::Mean => 0.0,
                    };
                    let acc = e.b.declare_var(F32);
                    let start = e.fconst(F32, init);
                    e.b.def_var(acc, start);
                    e.for_range(None, rows.lo, rows.hi, 1, false, |e, y| {
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
                    let mut result = e.b.use_var(acc);
                    if p.reduce == Reduce::Mean {
                        let count = e.window_count(&rows, &cols);
                        result = e.b.ins().fdiv(result, count);
                    }
                    let o = e.b.ins().imul_imm_s(oy, w.ow as i64);
                    let o = e.b.ins().iadd(o, ox);
                    let at = e.at(dst_plane, o);
                    e.store(result, at, 0);
                });
            });
        });
    }

    /// Pooling over windows that tile the image (stride = window, no padding, every
    /// window inside): each window's taps are constant offsets from its corner.
    fn pool_tiles(&mut self, p: &Pool, src: Addr, dst: Addr) {
        let w = p.win;
        let inv = 1.0 / (w.kh * w.kw) as f32;
        self.for_count(None, w.c, 1, |e, ch| {
            let plane = e.b.ins().imul_imm_s(ch, (w.h * w.w) as i64);
            let src_plane = e.at(src, plane);
            let out_plane = e.b.ins().imul_imm_s(ch, (w.oh * w.ow) as i64);
            let dst_plane = e.at(dst, out_plane);
            e.for_count(None, w.oh, 1, |e, oy| {
                let row = e.b.ins().imul_imm_s(oy, (w.sh * w.w) as i64);
                let src_row = e.at(src_plane, row);
                let out_row = e.b.ins().imul_imm_s(oy, w.ow as i64);
                let dst_row = e.at(dst_plane, out_row);
                e.for_count(None, w.ow, 1, |e, ox| {
                    let col = e.b.ins().imul_imm_s(ox, w.sw as i64);
                    let corner = e.at(src_row, col);
                    let mut acc = None;
                    for i in 0..w.kh {
                        for j in 0..w.kw {
                            let v = e.load(F32, corner, ((i * w.w + j) * 4) as i32, Some(&p.src));
                            acc = Some(match (acc, p.reduce) {
                                (None, _) => v,
                                (Some(a), Reduce::Max) => e.max(F32, v, a),
                                (Some(a), Reduce::Mean) => e.b.ins().fadd(a, v),
                            });
                        }
                    }
                    let mut result = acc.expect("a window has taps");
                    if p.reduce == Reduce::Mean {
                        let k = e.fconst(F32, inv);
                        result = e.b.ins().fmul(result, k);
                    }
                    let at = e.at(dst_row, ox);
                    e.store(result, at, 0);
                });
            });
        });
    }
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
