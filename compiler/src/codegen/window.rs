//! Sliding windows: im2col for convolutions, and pooling. For each kernel tap and output
//! row, the range of output columns whose input lies inside the image is computed once,
//! so the inner loops copy (or reduce) without a bounds check per pixel.

use super::emit::{Addr, Emit, F32, F32X4};
use crate::kernel::{Im2col, Pool, Window};
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

    /// Output positions `[lo, hi)` along one axis whose input `pos·stride + tap − pad` lies
    /// in `0..size`; `tap` is the (dilated) kernel offset.
    pub(super) fn valid_range(
        &mut self,
        tap: Value,
        pad: usize,
        stride: usize,
        size: usize,
        out: usize,
    ) -> (Value, Value) {
        let zero = self.iconst(0);
        let out_v = self.iconst(out as i64);
        let pad_v = self.iconst(pad as i64);
        let diff = self.b.ins().isub(pad_v, tap);
        // lo = ceil(max(pad − tap, 0) / stride)
        let need = self.imax(diff, zero);
        let need = self.b.ins().iadd_imm_s(need, stride as i64 - 1);
        let lo = self.b.ins().udiv_imm_u(need, stride as i64);
        let lo = self.imin(lo, out_v);
        // hi = floor((size − 1 + pad − tap) / stride) + 1, or 0 when that is negative
        let last = self.b.ins().iadd_imm_s(diff, size as i64 - 1);
        let negative = self.b.ins().icmp(IntCC::SignedLessThan, last, zero);
        let safe = self.imax(last, zero);
        let hi = self.b.ins().udiv_imm_u(safe, stride as i64);
        let hi = self.b.ins().iadd_imm_s(hi, 1);
        let hi = self.b.ins().select(negative, zero, hi);
        let hi = self.imin(hi, out_v);
        let hi = self.imax(hi, lo);
        (lo, hi)
    }

    /// Stores zeros to elements `[from, to)` after `a`.
    fn zero_range(&mut self, a: Addr, from: Value, to: Value) {
        let zero = self.fconst(F32, 0.0);
        self.for_range(None, from, to, 1, false, |e, x| {
            let at = e.at(a, x);
            e.store(zero, at, 0);
        });
    }

    pub fn im2col(&mut self, c: &Im2col) {
        let w = c.win;
        let src = self.addr(&c.src, 0);
        let dst = self.addr(&c.dst, 0);
        let ohw = w.oh * w.ow;
        self.for_count(None, w.c, 1, |e, ch| {
            e.for_count(None, w.kh, 1, |e, i| {
                e.for_count(None, w.kw, 1, |e, j| {
                    // Row (ch·kh + i)·kw + j of the unfolded matrix.
                    let r = e.b.ins().imul_imm_s(ch, (w.kh * w.kw) as i64);
                    let ri = e.b.ins().imul_imm_s(i, w.kw as i64);
                    let r = e.b.ins().iadd(r, ri);
                    let r = e.b.ins().iadd(r, j);
                    let r = e.b.ins().imul_imm_s(r, c.ld as i64);
                    let dst_row = e.at(dst, r);
                    let tap_x = e.b.ins().imul_imm_s(j, w.dw as i64);
                    let (x0, x1) = e.valid_range(tap_x, w.pad[2], w.sw, w.w, w.ow);
                    let mut tap_y = e.b.ins().imul_imm_s(i, w.dh as i64);
                    if let Some((var, rows)) = c.first_row {
                        // Output row y of the block is row first + y of the image.
                        let first = e.b.ins().imul_imm_s(e.vars[&var], (rows * w.sh) as i64);
                        tap_y = e.b.ins().iadd(tap_y, first);
                    }
                    let (y0, y1) = e.valid_range(tap_y, w.pad[0], w.sh, w.h, w.oh);
                    let zero = e.iconst(0);
                    let ow = e.iconst(w.ow as i64);
                    // Rows above and below the image are zero.
                    let head = e.b.ins().imul_imm_s(y0, w.ow as i64);
                    e.zero_range(dst_row, zero, head);
                    let tail = e.b.ins().imul_imm_s(y1, w.ow as i64);
                    let end = e.iconst(ohw as i64);
                    e.zero_range(dst_row, tail, end);
                    e.for_range(None, y0, y1, 1, false, |e, y| {
                        let seg_start = e.b.ins().imul_imm_s(y, w.ow as i64);
                        let seg = e.at(dst_row, seg_start);
                        e.zero_range(seg, zero, x0);
                        e.zero_range(seg, x1, ow);
                        // Input row y·sh + i·dh − pad_top of channel ch, from column
                        // x0·sw + j·dw − pad_left.
                        let iy = e.b.ins().imul_imm_s(y, w.sh as i64);
                        let iy = e.b.ins().iadd(iy, tap_y);
                        let iy = e.b.ins().iadd_imm_s(iy, -(w.pad[0] as i64));
                        let plane = e.b.ins().imul_imm_s(ch, w.h as i64);
                        let row = e.b.ins().iadd(plane, iy);
                        let row = e.b.ins().imul_imm_s(row, w.w as i64);
                        let ix0 = e.b.ins().imul_imm_s(x0, w.sw as i64);
                        let ix0 = e.b.ins().iadd(ix0, tap_x);
                        let ix0 = e.b.ins().iadd_imm_s(ix0, -(w.pad[2] as i64));
                        let start = e.b.ins().iadd(row, ix0);
                        let from = e.at(src, start);
                        let to = e.at(seg, x0);
                        let count = e.b.ins().isub(x1, x0);
                        e.strided_copy(from, to, count, w.sw);
                    });
                });
            });
        });
    }

    /// Copies `count` elements, reading every `stride`-th from `src`, writing contiguously.
    fn strided_copy(&mut self, src: Addr, dst: Addr, count: Value, stride: usize) {
        let zero = self.iconst(0);
        let mut from = zero;
        if stride == 1 {
            // Four at a time while at least four remain.
            let vec_end = self.b.ins().band_imm_s(count, !3i64);
            self.for_range(None, zero, vec_end, 4, false, |e, x| {
                let s = e.at(src, x);
                let v = e.load(F32X4, s, 0, None);
                let d = e.at(dst, x);
                e.store(v, d, 0);
            });
            from = vec_end;
        }
        self.for_range(None, from, count, 1, false, |e, x| {
            let sx = e.b.ins().imul_imm_s(x, stride as i64);
            let s = e.at(src, sx);
            let v = e.load(F32, s, 0, None);
            let d = e.at(dst, x);
            e.store(v, d, 0);
        });
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
