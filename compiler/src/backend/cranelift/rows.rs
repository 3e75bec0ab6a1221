//! Row-wise primitives: sums (global average pooling), softmax, local response
//! normalisation, and embedding gathers.

use super::emit::{Addr, Emit, F32, LANES, VECTOR};
use crate::ir::kernel::{Gather, Lrn, Ptr, RowSum, Softmax};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};

impl Emit<'_, '_> {
    /// Folds `len` elements from `row` into a vector and a scalar accumulator ([`LANES`]
    /// at a time, then one by one) with `step`, and returns both.
    pub(super) fn fold_row(
        &mut self,
        row: Addr,
        len: usize,
        init: f32,
        step: &mut dyn FnMut(&mut Self, Type, Value, Value) -> Value,
    ) -> (Value, Value) {
        let vacc = self.b.declare_var(VECTOR);
        let sacc = self.b.declare_var(F32);
        let vinit = self.fconst(VECTOR, init);
        let sinit = self.fconst(F32, init);
        self.b.def_var(vacc, vinit);
        self.b.def_var(sacc, sinit);
        let vec_len = len / LANES * LANES;
        self.for_count(None, vec_len, LANES, |e, i| {
            let at = e.at(row, i);
            let v = e.load(VECTOR, at, 0, None);
            let old = e.b.use_var(vacc);
            let new = step(e, VECTOR, old, v);
            e.b.def_var(vacc, new);
        });
        if vec_len < len {
            let from = self.iconst(vec_len as i64);
            let to = self.iconst(len as i64);
            self.for_range(None, from, to, 1, true, |e, i| {
                let at = e.at(row, i);
                let v = e.load(F32, at, 0, None);
                let old = e.b.use_var(sacc);
                let new = step(e, F32, old, v);
                e.b.def_var(sacc, new);
            });
        }
        (self.b.use_var(vacc), self.b.use_var(sacc))
    }

    pub fn row_sum(&mut self, r: &RowSum) {
        let src = self.addr(&r.src, 0);
        let dst = self.addr(&r.dst, 0);
        self.for_count(None, r.rows, 1, |e, row| {
            let start = e.b.ins().imul_imm_s(row, r.len as i64);
            let at = e.at(src, start);
            let acc = e.sum64();
            e.sum_row(acc, at, r.len);
            let mean = e.total32(acc, r.scale as f64);
            let out = e.at(dst, row);
            e.store(mean, out, 0);
        });
    }

    pub fn softmax(&mut self, s: &Softmax) {
        let src = self.addr(&s.src, 0);
        let dst = self.addr(&s.dst, 0);
        self.for_count(None, s.rows, 1, |e, row| {
            let start = e.b.ins().imul_imm_s(row, s.cols as i64);
            let x = e.at(src, start);
            let y = e.at(dst, start);
            let (v, sc) = e.fold_row(x, s.cols, f32::NEG_INFINITY, &mut |e, ty, a, b| e.max(ty, a, b));
            let m = e.hmax(v);
            let m = e.max(F32, m, sc);
            // y = exp(x − max), summed on the way.
            let sum = e.sum64();
            e.sum_terms(sum, s.cols, &mut |e, ty, i| {
                let at = e.at(x, i);
                let v = e.load(ty, at, 0, None);
                let mv = e.splat(ty, m);
                let d = e.b.ins().fsub(v, mv);
                let ex = e.exp(ty, d);
                let out = e.at(y, i);
                e.store(ex, out, 0);
                ex
            });
            let total = e.b.use_var(sum);
            let one = e.b.ins().f64const(1.0);
            let inv = e.b.ins().fdiv(one, total);
            let inv = e.b.ins().fdemote(F32, inv);
            e.each(s.cols, &mut |e, ty, i| {
                let at = e.at(y, i);
                let v = e.load(ty, at, 0, None);
                let k = e.splat(ty, inv);
                let scaled = e.b.ins().fmul(v, k);
                e.store(scaled, at, 0);
            });
        });
    }

    /// Calls `body` for elements `0..len`: as vectors [`LANES`] at a time, then as scalars.
    pub(super) fn each(&mut self, len: usize, body: &mut dyn FnMut(&mut Self, Type, Value)) {
        let vec_len = len / LANES * LANES;
        self.for_count(None, vec_len, LANES, |e, i| body(e, VECTOR, i));
        if vec_len < len {
            let from = self.iconst(vec_len as i64);
            let to = self.iconst(len as i64);
            self.for_range(None, from, to, 1, true, |e, i| body(e, F32, i));
        }
    }

    /// Channels `[lo, hi]` (inclusive, clipped) of the window `ch − before ..= ch + after`.
    pub(super) fn channel_window(
        &mut self,
        ch: Value,
        before: usize,
        after: usize,
        c: usize,
    ) -> (Value, Value) {
        let zero = self.iconst(0);
        let last = self.iconst(c as i64 - 1);
        let lo = self.b.ins().iadd_imm_s(ch, -(before as i64));
        let neg = self.b.ins().icmp(IntCC::SignedLessThan, lo, zero);
        let lo = self.b.ins().select(neg, zero, lo);
        let hi = self.b.ins().iadd_imm_s(ch, after as i64);
        let over = self.b.ins().icmp(IntCC::SignedGreaterThan, hi, last);
        let hi = self.b.ins().select(over, last, hi);
        (lo, self.b.ins().iadd_imm_s(hi, 1))
    }

    /// Σ over the planes `[lo, end)` of `base` (`hw` apart) of element `p`, or of its
    /// square.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sum_across_planes(
        &mut self,
        ty: Type,
        (lo, end): (Value, Value),
        hw: usize,
        p: Value,
        base: Addr,
        from: Option<&Ptr>,
        squares: bool,
    ) -> Value {
        let acc = self.b.declare_var(ty);
        let z = self.fconst(ty, 0.0);
        self.b.def_var(acc, z);
        self.for_range(None, lo, end, 1, true, |e, q| {
            let at = e.b.ins().imul_imm_s(q, hw as i64);
            let at = e.b.ins().iadd(at, p);
            let a = e.at(base, at);
            let v = e.load(ty, a, 0, from);
            let old = e.b.use_var(acc);
            let new = if squares { e.fma(v, v, old) } else { e.b.ins().fadd(old, v) };
            e.b.def_var(acc, new);
        });
        self.b.use_var(acc)
    }

    /// LRN's denominator d = k + α/size · Σx² from the sum of squares, and d^(−β) as
    /// exp(−β · ln d).
    pub(super) fn lrn_power(
        &mut self,
        ty: Type,
        sum: Value,
        size: usize,
        alpha: f32,
        beta: f32,
        k: f32,
    ) -> (Value, Value) {
        let scale = self.fconst(ty, alpha / size as f32);
        let k = self.fconst(ty, k);
        let d = self.fma(sum, scale, k);
        let ln = self.log(ty, d);
        let nb = self.fconst(ty, -beta);
        let t = self.b.ins().fmul(ln, nb);
        (d, self.exp(ty, t))
    }

    pub fn lrn(&mut self, l: &Lrn) {
        let src = self.addr(&l.src, 0);
        let dst = self.addr(&l.dst, 0);
        let (before, after) = (l.size / 2, (l.size - 1) / 2);
        self.for_count(None, l.c, 1, |e, ch| {
            let window = e.channel_window(ch, before, after, l.c);
            let plane = e.b.ins().imul_imm_s(ch, l.hw as i64);
            e.each(l.hw, &mut |e, ty, p| {
                // y = x · (k + alpha/size · Σx²)^(−beta)
                let sum = e.sum_across_planes(ty, window, l.hw, p, src, Some(&l.src), true);
                let (_, factor) = e.lrn_power(ty, sum, l.size, l.alpha, l.beta, l.k);
                let idx = e.b.ins().iadd(plane, p);
                let xa = e.at(src, idx);
                let x = e.load(ty, xa, 0, Some(&l.src));
                let y = e.b.ins().fmul(x, factor);
                let ya = e.at(dst, idx);
                e.store(y, ya, 0);
            });
        });
    }

    pub fn gather(&mut self, g: &Gather) {
        let ids = self.addr(&g.ids, 0);
        let table = self.addr(&g.table, 0);
        let dst = self.addr(&g.dst, 0);
        let vocab = self.b.ins().iconst(types::I32, g.vocab as i64);
        self.for_count(None, g.count, 1, |e, i| {
            let at = e.at(ids, i);
            let flags = MemFlagsData::new().with_notrap();
            let id = e.b.ins().load(types::I32, flags, at.base, at.offset);
            let row_start = e.b.ins().imul_imm_s(i, g.dim as i64);
            let out = e.at(dst, row_start);
            // Unsigned comparison: negative ids are out of range too.
            let valid = e.b.ins().icmp(IntCC::UnsignedLessThan, id, vocab);
            let yes = e.b.create_block();
            let no = e.b.create_block();
            let done = e.b.create_block();
            e.b.ins().brif(valid, yes, &[], no, &[]);
            e.b.switch_to_block(yes);
            let id64 = e.b.ins().uextend(types::I64, id);
            let src_start = e.b.ins().imul_imm_s(id64, g.dim as i64);
            let src = e.at(table, src_start);
            e.each(g.dim, &mut |e, ty, k| {
                let s = e.at(src, k);
                let v = e.load(ty, s, 0, Some(&g.table));
                let d = e.at(out, k);
                e.store(v, d, 0);
            });
            e.b.ins().jump(done, &[]);
            e.b.switch_to_block(no);
            e.each(g.dim, &mut |e, ty, k| {
                let z = e.fconst(ty, 0.0);
                let d = e.at(out, k);
                e.store(z, d, 0);
            });
            e.b.ins().jump(done, &[]);
            e.b.switch_to_block(done);
        });
    }
}
