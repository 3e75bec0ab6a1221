//! The adjoints of the sliding-window and gather primitives, for backward passes:
//! col2im, pooling's gradient routing, embedding scatter, the LRN gradient, and plain
//! transposition.

use super::emit::{Addr, Emit, F32, LANES, VECTOR};
use crate::ir::kernel::{LrnBackward, PoolBackward, Scatter, Transpose};
use crate::ir::ops::Reduce;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Value, types};

impl Emit<'_, '_> {
    pub fn transpose(&mut self, t: &Transpose) {
        let src = self.addr(&t.src, 0);
        let dst = self.addr(&t.dst, 0);
        if let Some(call) = self.transposes.get(&std::ptr::from_ref(t)).copied() {
            let words = [src, dst].map(|at| self.b.ins().iadd_imm_s(at.base, at.offset as i64));
            self.call_out(call.entry, call.data, words.to_vec());
            return;
        }
        // Source rows in blocks of 16: a block writes 16 consecutive floats of each
        // destination row, so each destination line is finished while it is in L1 (row
        // by row, an LSTM's 1 MiB W_hh took 0.84 ms to transpose, every line fetched
        // again for each of its 16 floats). Per vector of columns of a block's rows: a
        // load, its lanes stored down as many destination rows at constant offsets.
        const BLOCK: usize = 16;
        let fits = |bytes: usize| i32::try_from(bytes).is_ok();
        let block = if fits(4 * BLOCK * t.lds) && fits(4 * (LANES * t.ldd + BLOCK)) { BLOCK } else { 1 };
        let vec_cols = t.cols / LANES * LANES;
        let rows = |e: &mut Self, r0: Value, count: usize| {
            let row = e.b.ins().imul_imm_s(r0, t.lds as i64);
            let from = e.at(src, row);
            let to = e.at(dst, r0);
            e.for_count(None, vec_cols, LANES, |e, c| {
                let s = e.at(from, c);
                let at = e.b.ins().imul_imm_s(c, t.ldd as i64);
                let d = e.at(to, at);
                for i in 0..count {
                    let v = e.load(VECTOR, s, (4 * i * t.lds) as i32, Some(&t.src));
                    for lane in 0..LANES {
                        let x = e.b.ins().extractlane(v, lane as u8);
                        e.store(x, d, (4 * (lane * t.ldd + i)) as i32);
                    }
                }
            });
            for c in vec_cols..t.cols {
                for i in 0..count {
                    let v = e.load(F32, from, (4 * (i * t.lds + c)) as i32, Some(&t.src));
                    e.store(v, to, (4 * (c * t.ldd + i)) as i32);
                }
            }
        };
        let blocks = t.rows / block;
        if blocks > 0 {
            self.for_count(None, blocks, 1, |e, b| {
                let r0 = e.b.ins().imul_imm_s(b, block as i64);
                rows(e, r0, block)
            });
        }
        if !t.rows.is_multiple_of(block) {
            let r0 = self.iconst((blocks * block) as i64);
            rows(self, r0, t.rows % block);
        }
    }

    pub fn pool_backward(&mut self, p: &PoolBackward) {
        let w = p.win;
        let dy = self.addr(&p.dy, 0);
        let x = self.addr(&p.x, 0);
        let dx = self.addr(&p.dx, 0);
        if super::window::tiles(&w) {
            return self.pool_backward_tiles(p, dy, x, dx);
        }
        let fz = self.fconst(F32, 0.0);
        self.for_count(None, w.c * w.h * w.w, 1, |e, i| {
            let at = e.at(dx, i);
            e.store(fz, at, 0);
        });
        self.for_count(None, w.c, 1, |e, ch| {
            let plane = e.b.ins().imul_imm_s(ch, (w.h * w.w) as i64);
            let x_plane = e.at(x, plane);
            let dx_plane = e.at(dx, plane);
            let out_plane = e.b.ins().imul_imm_s(ch, (w.oh * w.ow) as i64);
            let dy_plane = e.at(dy, out_plane);
            e.for_count(None, w.oh, 1, |e, oy| {
                let rows = e.pool_span(oy, w.sh, w.kh, w.h, [w.pad[0], w.pad[1]]);
                e.for_count(None, w.ow, 1, |e, ox| {
                    let cols = e.pool_span(ox, w.sw, w.kw, w.w, [w.pad[2], w.pad[3]]);
                    let o = e.b.ins().imul_imm_s(oy, w.ow as i64);
                    let o = e.b.ins().iadd(o, ox);
                    let g_at = e.at(dy_plane, o);
                    let g = e.load(F32, g_at, 0, Some(&p.dy));
                    match p.reduce {
                        Reduce::Max => {
                            // The first largest input of the window, as the forward pass.
                            let best = e.b.declare_var(F32);
                            let best_at = e.b.declare_var(types::I64);
                            let ninf = e.fconst(F32, f32::NEG_INFINITY);
                            e.b.def_var(best, ninf);
                            let first = e.b.ins().imul_imm_s(rows.lo, w.w as i64);
                            let first = e.b.ins().iadd(first, cols.lo);
                            e.b.def_var(best_at, first);
                            e.for_range(None, rows.lo, rows.hi, 1, false, |e, y| {
                                let row = e.b.ins().imul_imm_s(y, w.w as i64);
                                e.for_range(None, cols.lo, cols.hi, 1, false, |e, xx| {
                                    let idx = e.b.ins().iadd(row, xx);
                                    let at = e.at(x_plane, idx);
                                    let v = e.load(F32, at, 0, Some(&p.x));
                                    let old = e.b.use_var(best);
                                    let gt = e.b.ins().fcmp(FloatCC::GreaterThan, v, old);
                                    let nb = e.b.ins().select(gt, v, old);
                                    e.b.def_var(best, nb);
                                    let old_at = e.b.use_var(best_at);
                                    let na = e.b.ins().select(gt, idx, old_at);
                                    e.b.def_var(best_at, na);
                                });
                            });
                            let idx = e.b.use_var(best_at);
                            let at = e.at(dx_plane, idx);
                            let old = e.load(F32, at, 0, None);
                            let sum = e.b.ins().fadd(old, g);
                            e.store(sum, at, 0);
                        }
                        Reduce::Mean => {
                            let count = e.window_count(&rows, &cols);
                            let share = e.b.ins().fdiv(g, count);
                            e.for_range(None, rows.lo, rows.hi, 1, false, |e, y| {
                                let row = e.b.ins().imul_imm_s(y, w.w as i64);
                                e.for_range(None, cols.lo, cols.hi, 1, false, |e, xx| {
                                    let idx = e.b.ins().iadd(row, xx);
                                    let at = e.at(dx_plane, idx);
                                    let old = e.load(F32, at, 0, None);
                                    let sum = e.b.ins().fadd(old, share);
                                    e.store(sum, at, 0);
                                });
                            });
                        }
                    }
                });
            });
        });
    }

    /// Windows that tile the image each own their inputs, so every gradient is stored
    /// (not added) at constant offsets from its window's corner; the rows and columns no
    /// window covers are zeroed.
    fn pool_backward_tiles(&mut self, p: &PoolBackward, dy: Addr, x: Addr, dx: Addr) {
        let w = p.win;
        let inv = 1.0 / (w.kh * w.kw) as f32;
        self.for_count(None, w.c, 1, |e, ch| {
            let plane = e.b.ins().imul_imm_s(ch, (w.h * w.w) as i64);
            let (x_plane, dx_plane) = (e.at(x, plane), e.at(dx, plane));
            let out_plane = e.b.ins().imul_imm_s(ch, (w.oh * w.ow) as i64);
            let dy_plane = e.at(dy, out_plane);
            e.for_count(None, w.oh, 1, |e, oy| {
                let row = e.b.ins().imul_imm_s(oy, (w.sh * w.w) as i64);
                let (x_row, dx_row) = (e.at(x_plane, row), e.at(dx_plane, row));
                let out_row = e.b.ins().imul_imm_s(oy, w.ow as i64);
                let dy_row = e.at(dy_plane, out_row);
                e.for_count(None, w.ow, 1, |e, ox| {
                    let col = e.b.ins().imul_imm_s(ox, w.sw as i64);
                    let (xc, dxc) = (e.at(x_row, col), e.at(dx_row, col));
                    let ga = e.at(dy_row, ox);
                    let g = e.load(F32, ga, 0, Some(&p.dy));
                    let taps: Vec<i32> =
                        (0..w.kh).flat_map(|i| (0..w.kw).map(move |j| ((i * w.w + j) * 4) as i32)).collect();
                    match p.reduce {
                        Reduce::Mean => {
                            let k = e.fconst(F32, inv);
                            let share = e.b.ins().fmul(g, k);
                            for &t in &taps {
                                e.store(share, dxc, t);
                            }
                        }
                        Reduce::Max => {
                            // The first largest tap takes the gradient; the others get 0.
                            let vals: Vec<Value> =
                                taps.iter().map(|&t| e.load(F32, xc, t, Some(&p.x))).collect();
                            let mut best = vals[0];
                            for &v in &vals[1..] {
                                best = e.max(F32, v, best);
                            }
                            let zero = e.fconst(F32, 0.0);
                            let taken = e.b.declare_var(F32);
                            e.b.def_var(taken, zero);
                            for (&t, &v) in taps.iter().zip(&vals) {
                                // Equal to the maximum and none taken before it.
                                let is_max = e.b.ins().fcmp(FloatCC::Equal, v, best);
                                let before = e.b.use_var(taken);
                                let free = e.b.ins().fcmp(FloatCC::Equal, before, zero);
                                let take = e.b.ins().band(is_max, free);
                                let out = e.b.ins().select(take, g, zero);
                                e.store(out, dxc, t);
                                let one = e.fconst(F32, 1.0);
                                let now = e.b.ins().select(take, one, before);
                                e.b.def_var(taken, now);
                            }
                        }
                    }
                });
                // Columns right of the last window.
                for i in 0..w.kh {
                    for xx in w.ow * w.sw..w.w {
                        let zero = e.fconst(F32, 0.0);
                        e.store(zero, dx_row, ((i * w.w + xx) * 4) as i32);
                    }
                }
            });
            // Rows below the last window.
            let covered = w.oh * w.sh * w.w;
            let fz = e.fconst(F32, 0.0);
            e.for_count(None, w.h * w.w - covered, 1, |e, i| {
                let i = e.b.ins().iadd_imm_s(i, covered as i64);
                let at = e.at(dx_plane, i);
                e.store(fz, at, 0);
            });
        });
    }

    pub fn scatter(&mut self, s: &Scatter) {
        let ids = self.addr(&s.ids, 0);
        let src = self.addr(&s.src, 0);
        let acc = self.addr(&s.acc, 0);
        let vocab = self.b.ins().iconst(types::I32, s.vocab as i64);
        self.for_count(None, s.count, 1, |e, i| {
            let at = e.at(ids, i);
            let flags = MemFlagsData::new().with_notrap();
            let id = e.b.ins().load(types::I32, flags, at.base, at.offset);
            let valid = e.b.ins().icmp(IntCC::UnsignedLessThan, id, vocab);
            let yes = e.b.create_block();
            let done = e.b.create_block();
            e.b.ins().brif(valid, yes, &[], done, &[]);
            e.b.switch_to_block(yes);
            let row_start = e.b.ins().imul_imm_s(i, s.dim as i64);
            let from = e.at(src, row_start);
            let id64 = e.b.ins().uextend(types::I64, id);
            // f64 elements are two floats wide.
            let dst_start = e.b.ins().imul_imm_s(id64, 2 * s.dim as i64);
            let to = e.at(acc, dst_start);
            e.add_row64(from, to, s.dim);
            e.b.ins().jump(done, &[]);
            e.b.switch_to_block(done);
        });
        let table = self.addr(&s.table, 0);
        self.round_rows64(acc, table, s.vocab * s.dim);
    }

    /// y_j = x_j · d_j^(−β) with d_j = k + α/size · Σ_{q ∈ window(j)} x_q², so
    /// dx_i = dy_i · d_i^(−β) − 2αβ/size · x_i · Σ_{j : i ∈ window(j)} dy_j · x_j · d_j^(−β−1).
    /// Pass one stores d^(−β) and dy · x · d^(−β−1) per element; pass two sums the latter
    /// over the transposed window.
    pub fn lrn_backward(&mut self, l: &LrnBackward) {
        let dy = self.addr(&l.dy, 0);
        let x = self.addr(&l.x, 0);
        let dx = self.addr(&l.dx, 0);
        let powers = self.addr(&l.scratch, 0);
        let terms = self.addr(&l.scratch, (l.c * l.hw) as i64);
        let (before, after) = (l.size / 2, (l.size - 1) / 2);
        self.for_count(None, l.c, 1, |e, ch| {
            let window = e.channel_window(ch, before, after, l.c);
            let plane = e.b.ins().imul_imm_s(ch, l.hw as i64);
            e.each(l.hw, &mut |e, ty, p| {
                let sum = e.sum_across_planes(ty, window, l.hw, p, x, Some(&l.x), true);
                let (d, power) = e.lrn_power(ty, sum, l.size, l.alpha, l.beta, l.k);
                let idx = e.b.ins().iadd(plane, p);
                let pa = e.at(powers, idx);
                e.store(power, pa, 0);
                let xa = e.at(x, idx);
                let xv = e.load(ty, xa, 0, Some(&l.x));
                let ga = e.at(dy, idx);
                let g = e.load(ty, ga, 0, Some(&l.dy));
                let gx = e.b.ins().fmul(g, xv);
                let gxp = e.b.ins().fmul(gx, power);
                let term = e.b.ins().fdiv(gxp, d);
                let ta = e.at(terms, idx);
                e.store(term, ta, 0);
            });
        });
        let factor = 2.0 * l.alpha * l.beta / l.size as f32;
        self.for_count(None, l.c, 1, |e, ch| {
            // Every j whose window holds i: j in [i − after, i + before].
            let window = e.channel_window(ch, after, before, l.c);
            let plane = e.b.ins().imul_imm_s(ch, l.hw as i64);
            e.each(l.hw, &mut |e, ty, p| {
                let sum = e.sum_across_planes(ty, window, l.hw, p, terms, None, false);
                let idx = e.b.ins().iadd(plane, p);
                let ga = e.at(dy, idx);
                let g = e.load(ty, ga, 0, Some(&l.dy));
                let pa = e.at(powers, idx);
                let power = e.load(ty, pa, 0, None);
                let direct = e.b.ins().fmul(g, power);
                let xa = e.at(x, idx);
                let xv = e.load(ty, xa, 0, Some(&l.x));
                let f = e.fconst(ty, -factor);
                let xf = e.b.ins().fmul(xv, f);
                let out = e.fma(xf, sum, direct);
                let da = e.at(dx, idx);
                e.store(out, da, 0);
            });
        });
    }
}
