//! Softmax cross-entropy in one pass per row: the loss, its gradient with respect to the
//! logits, and whether the row's prediction is right.

use super::emit::{Emit, F32, VECTOR};
use crate::ir::kernel::CrossEntropy;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, types};

impl Emit<'_, '_> {
    pub fn cross_entropy(&mut self, c: &CrossEntropy) {
        let logits = self.addr(&c.logits, 0);
        let labels = self.addr(&c.labels, 0);
        let grad = self.addr(&c.grad, 0);
        let stats = self.addr(&c.stats, 0);
        if let Some(call) = self.losses.get(&std::ptr::from_ref(c)).copied() {
            let words =
                [logits, labels, grad, stats].map(|at| self.b.ins().iadd_imm_s(at.base, at.offset as i64));
            self.call_out(call.entry, call.data, words.to_vec());
            return;
        }
        let scale = 1.0 / c.rows as f32;
        let loss = self.sum64();
        let correct = self.b.declare_var(F32);
        let zero = self.fconst(F32, 0.0);
        self.b.def_var(correct, zero);
        let classes = self.b.ins().iconst(types::I32, c.cols as i64);
        self.for_count(None, c.rows, 1, |e, row| {
            let start = e.b.ins().imul_imm_s(row, c.cols as i64);
            let x = e.at(logits, start);
            let g = e.at(grad, start);
            let at = e.at(labels, row);
            let flags = MemFlagsData::new().with_notrap();
            let label = e.b.ins().load(types::I32, flags, at.base, at.offset);
            // Rows with a label outside the classes are padding: weight 0, and read at
            // class 0 so that every load stays inside the row.
            let valid = e.b.ins().icmp(IntCC::UnsignedLessThan, label, classes);
            let izero = e.b.ins().iconst(types::I32, 0);
            let label = e.b.ins().select(valid, label, izero);
            let label = e.b.ins().uextend(types::I64, label);
            let one = e.fconst(F32, 1.0);
            let weight = e.b.ins().select(valid, one, zero);

            let (v, s) = e.fold_row(x, c.cols, f32::NEG_INFINITY, &mut |e, ty, a, b| e.max(ty, a, b));
            let m = e.hmax(v);
            let m = e.max(F32, m, s);
            // exp(x − max) into the gradient row, summed on the way (in f64 blocks).
            let sum = e.sum64();
            e.sum_terms(sum, c.cols, &mut |e, ty, i| {
                let a = e.at(x, i);
                let v = e.load(ty, a, 0, Some(&c.logits));
                let mv = e.splat(ty, m);
                let d = e.b.ins().fsub(v, mv);
                let ex = e.exp(ty, d);
                let o = e.at(g, i);
                e.store(ex, o, 0);
                ex
            });
            let total = e.b.use_var(sum);
            // grad = softmax · scale · weight, then minus scale · weight at the label.
            let k = e.fconst(F32, scale);
            let kw = e.b.ins().fmul(k, weight);
            let kw64 = e.b.ins().fpromote(types::F64, kw);
            let factor = e.b.ins().fdiv(kw64, total);
            let factor = e.b.ins().fdemote(F32, factor);
            let total = e.b.ins().fdemote(F32, total);
            e.each(c.cols, &mut |e, ty, i| {
                let a = e.at(g, i);
                let v = e.load(ty, a, 0, None);
                let f = e.splat(ty, factor);
                let scaled = e.b.ins().fmul(v, f);
                e.store(scaled, a, 0);
            });
            let la = e.at(g, label);
            let gl = e.load(F32, la, 0, None);
            let gl = e.b.ins().fsub(gl, kw);
            e.store(gl, la, 0);
            // loss += weight · (ln Σ + max − x[label])
            let xa = e.at(x, label);
            let xl = e.load(F32, xa, 0, Some(&c.logits));
            let ln = e.log(F32, total);
            let lse = e.b.ins().fadd(ln, m);
            let nll = e.b.ins().fsub(lse, xl);
            let nll = e.b.ins().fmul(nll, weight);
            e.add64(loss, nll);
            // The prediction is the first class holding the maximum: a vector's lanes
            // equal to it as a bitmask, and the first set bit of the first vector with
            // one (a compare per class had been 40 % of the kernel).
            let first = e.b.declare_var(types::I64);
            let none = e.iconst(c.cols as i64);
            e.b.def_var(first, none);
            e.each(c.cols, &mut |e, ty, i| {
                let a = e.at(x, i);
                let v = e.load(ty, a, 0, Some(&c.logits));
                let mv = e.splat(ty, m);
                let is_max = e.b.ins().fcmp(FloatCC::Equal, v, mv);
                let (hit, class) = if ty == VECTOR {
                    let bits = e.b.ins().vhigh_bits(types::I32, is_max);
                    let any = e.b.ins().icmp_imm_u(IntCC::NotEqual, bits, 0);
                    let lane = e.b.ins().ctz(bits);
                    let lane = e.b.ins().uextend(types::I64, lane);
                    (any, e.b.ins().iadd(i, lane))
                } else {
                    (is_max, i)
                };
                let cur = e.b.use_var(first);
                let unset = e.b.ins().icmp(IntCC::Equal, cur, none);
                let take = e.b.ins().band(hit, unset);
                let next = e.b.ins().select(take, class, cur);
                e.b.def_var(first, next);
            });
            let pred = e.b.use_var(first);
            let hit = e.b.ins().icmp(IntCC::Equal, pred, label);
            let hit = e.b.ins().select(hit, weight, zero);
            let old = e.b.use_var(correct);
            let new = e.b.ins().fadd(old, hit);
            e.b.def_var(correct, new);
        });
        let mean = self.total32(loss, 1.0 / c.rows as f64);
        self.store(mean, stats, 0);
        let hits = self.b.use_var(correct);
        self.store(hits, stats, 4);
    }
}
