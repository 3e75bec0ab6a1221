//! Sliding windows for pooling: each window is clipped to the image once, so the inner
//! loops reduce without a bounds check per pixel.

use super::emit::{Addr, Emit, F32};
use crate::kernel::{Pool, Window};
use crate::ops::Reduce;
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

    pub fn pool(&mut self, p: &Pool) {
        let w: Window = p.win;
        let src = self.addr(&p.src, 0);
        let dst = self.addr(&p.dst, 0);
        if tiles(&w) {
            return self.pool_tiles(p, src, dst);
        }
        let zero = self.iconst(0);
        let h_v = self.iconst(w.h as i64);
        let w_v = self.iconst(w.w as i64);
        self.for_count(None, w.c, 1, |e, ch| {
            let plane = e.b.ins().imul_imm_s(ch, (w.h * w.w) as i64);
            let src_plane = e.at(src, plane);
            let out_plane = e.b.ins().imul_imm_s(ch, (w.oh * w.ow) as i64);
            let dst_plane = e.at(dst, out_plane);
            e.for_count(None, w.oh, 1, |e, oy| {
                // Window rows y0..y0+kh in image coordinates, clipped to the image.
                let y0 = e.b.ins().imul_imm_s(oy, w.sh as i64);
                let y0 = e.b.ins().iadd_imm_s(y0, -(w.pad[0] as i64));
                let y_end = e.b.ins().iadd_imm_s(y0, w.kh as i64);
                let ya = e.imax(y0, zero);
                let yb = e.imin(y_end, h_v);
                // PyTorch's divisor counts padding but not past it: min(y0 + kh, h + pad_bottom) − y0.
                let h_pad = e.iconst((w.h + w.pad[1]) as i64);
                let y_lim = e.imin(y_end, h_pad);
                let rows = e.b.ins().isub(y_lim, y0);
                e.for_count(None, w.ow, 1, |e, ox| {
                    let x0 = e.b.ins().imul_imm_s(ox, w.sw as i64);
                    let x0 = e.b.ins().iadd_imm_s(x0, -(w.pad[2] as i64));
                    let x_end = e.b.ins().iadd_imm_s(x0, w.kw as i64);
                    let xa = e.imax(x0, zero);
                    let xb = e.imin(x_end, w_v);
                    let init = match p.reduce {
                        Reduce::Max => f32::NEG_INFINITY,
                        Reduce::Mean => 0.0,
                    };
                    let acc = e.b.declare_var(F32);
                    let start = e.fconst(F32, init);
                    e.b.def_var(acc, start);
                    e.for_range(None, ya, yb, 1, false, |e, y| {
                        let row = e.b.ins().imul_imm_s(y, w.w as i64);
                        let row_at = e.at(src_plane, row);
                        e.for_range(None, xa, xb, 1, false, |e, x| {
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
                        let w_pad = e.iconst((w.w + w.pad[3]) as i64);
                        let x_lim = e.imin(x_end, w_pad);
                        let cols = e.b.ins().isub(x_lim, x0);
                        let count = e.b.ins().imul(rows, cols);
                        let count = e.b.ins().fcvt_from_sint(F32, count);
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
