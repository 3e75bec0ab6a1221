//! Sums that stay within a few float32 roundings of the exact result at any length.
//!
//! Adding n terms one after another in f32 can be off by n·ε relative to Σ|x|, and is
//! systematically so when the terms share a sign (means, variances, squared norms): one
//! `f32x4` accumulator over the 25,088 values of a batch-norm channel lost four decimal
//! digits. Here terms are added in f32 only within short blocks — [`BLOCK`] elements, so
//! each vector lane adds `BLOCK / LANES` of them — and the block sums are accumulated in f64,
//! which is exact enough for any tensor that fits in memory; the total is scaled in f64
//! and rounded to f32 once. The blocks keep the vector loop's speed: folding a block into
//! f64 costs a dozen instructions per 32 elements. Column sums, whose terms come straight
//! from memory, convert each pair of floats to f64 as they are loaded.
//!
//! The order of every sum depends only on the shapes, never on the threads: a sum is
//! always computed by one call, from its first element to its last.

use super::emit::{Addr, Emit, F32, LANES, VECTOR};
use crate::ir::kernel::ColumnSum;
use cranelift_codegen::ir::{Endianness, InstBuilder, MemFlagsData, Type, Value, types};
use cranelift_frontend::Variable;

/// Elements added in f32 before a block's sum joins the f64 total.
pub const BLOCK: usize = 32;

const F64: Type = types::F64;
const F64X2: Type = types::F64X2;

/// Columns of one pass of a column sum: four vectors, one cache line of each row.
const STRIP: usize = 16;

impl Emit<'_, '_> {
    /// A new f64 accumulator holding zero.
    pub fn sum64(&mut self) -> Variable {
        let acc = self.b.declare_var(F64);
        let zero = self.b.ins().f64const(0.0);
        self.b.def_var(acc, zero);
        acc
    }

    /// Adds `x` (`F32` or the lanes of a `VECTOR`) to `acc`, exactly.
    pub fn add64(&mut self, acc: Variable, x: Value) {
        let ty = self.b.func.dfg.value_type(x);
        let part = if ty == VECTOR {
            let lanes: Vec<Value> = (0..LANES)
                .map(|l| {
                    let s = self.b.ins().extractlane(x, l as u8);
                    self.b.ins().fpromote(F64, s)
                })
                .collect();
            self.pairwise(lanes, &mut |e, a, b| e.b.ins().fadd(a, b))
        } else {
            self.b.ins().fpromote(F64, x)
        };
        let old = self.b.use_var(acc);
        let new = self.b.ins().fadd(old, part);
        self.b.def_var(acc, new);
    }

    /// `scale · acc`, rounded to f32 once.
    pub fn total32(&mut self, acc: Variable, scale: f64) -> Value {
        let sum = self.b.use_var(acc);
        let sum = if scale == 1.0 {
            sum
        } else {
            let k = self.b.ins().f64const(scale);
            self.b.ins().fmul(sum, k)
        };
        self.b.ins().fdemote(F32, sum)
    }

    /// Adds `term(i)` for `i < len` to `acc`: vectors of [`LANES`] terms summed in f32
    /// within blocks of [`BLOCK`], each block then added in f64, and the last
    /// `len % LANES` terms one at a time. `term` is called with `VECTOR` (lanes
    /// `i..i + LANES`) or `F32`.
    pub fn sum_terms(
        &mut self,
        acc: Variable,
        len: usize,
        term: &mut dyn FnMut(&mut Self, Type, Value) -> Value,
    ) {
        let vec_len = len / LANES * LANES;
        let blocks = vec_len / BLOCK;
        // A block's vectors, unrolled, into two partial sums that alternate so that the
        // additions do not wait on each other.
        let mut block = |e: &mut Self, from: Value, vectors: usize| {
            let mut parts: Vec<Value> = Vec::with_capacity(2);
            for u in 0..vectors {
                let i = e.b.ins().iadd_imm_s(from, (LANES * u) as i64);
                let v = term(e, VECTOR, i);
                match parts.get(u % 2) {
                    Some(&p) => parts[u % 2] = e.b.ins().fadd(p, v),
                    None => parts.push(v),
                }
            }
            let sum = match parts[..] {
                [a, b] => e.b.ins().fadd(a, b),
                [a] => a,
                _ => unreachable!("a block holds at least one vector"),
            };
            e.add64(acc, sum);
        };
        if blocks > 0 {
            self.for_count(None, blocks, 1, |e, b| {
                let from = e.b.ins().imul_imm_s(b, BLOCK as i64);
                block(e, from, BLOCK / LANES);
            });
        }
        let done = blocks * BLOCK;
        if done < vec_len {
            let from = self.iconst(done as i64);
            block(self, from, (vec_len - done) / LANES);
        }
        for i in vec_len..len {
            let at = self.iconst(i as i64);
            let x = term(self, F32, at);
            self.add64(acc, x);
        }
    }

    /// Sums `len` consecutive floats from `row` into `acc`.
    pub fn sum_row(&mut self, acc: Variable, row: Addr, len: usize) {
        self.sum_terms(acc, len, &mut |e, ty, i| {
            let at = e.at(row, i);
            e.load(ty, at, 0, None)
        });
    }

    /// Column sums in f64: strips of [`STRIP`] columns (eight `f64x2` accumulators) walk
    /// down the rows, so each row is read a cache line at a time; then the columns left
    /// over, two at a time and a last one alone.
    pub fn column_sum(&mut self, c: &ColumnSum) {
        let src = self.addr(&c.src, 0);
        let dst = self.addr(&c.dst, 0);
        if let Some(call) = self.sums.get(&std::ptr::from_ref(c)).copied() {
            let words = [src, dst].map(|at| self.b.ins().iadd_imm_s(at.base, at.offset as i64));
            self.call_out(call.entry, call.data, words.to_vec());
            return;
        }
        let strips = c.cols / STRIP;
        if strips > 0 {
            self.for_count(None, strips, 1, |e, s| {
                let col = e.b.ins().imul_imm_s(s, STRIP as i64);
                e.column_strip(c, src, dst, col, STRIP / 2, false);
            });
        }
        let done = strips * STRIP;
        let rest = c.cols - done;
        if rest > 0 {
            let col = self.iconst(done as i64);
            self.column_strip(c, src, dst, col, rest / 2, rest % 2 == 1);
        }
    }

    /// Sums of `pairs` pairs of columns from `col` (and one more column when `odd`).
    fn column_strip(&mut self, c: &ColumnSum, src: Addr, dst: Addr, col: Value, pairs: usize, odd: bool) {
        let accs: Vec<Variable> = (0..pairs)
            .map(|_| {
                let v = self.b.declare_var(F64X2);
                let z = self.b.ins().f64const(0.0);
                let z = self.b.ins().splat(F64X2, z);
                self.b.def_var(v, z);
                v
            })
            .collect();
        let last = odd.then(|| self.sum64());
        let top = self.at(src, col);
        self.for_count(None, c.rows, 1, |e, r| {
            let start = e.b.ins().imul_imm_s(r, c.ld as i64);
            let row = e.at(top, start);
            for (p, &acc) in accs.iter().enumerate() {
                let wide = e.load_pair64(row, 8 * p as i32);
                let old = e.b.use_var(acc);
                let new = e.b.ins().fadd(old, wide);
                e.b.def_var(acc, new);
            }
            if let Some(acc) = last {
                let x = e.load(F32, row, 8 * pairs as i32, None);
                e.add64(acc, x);
            }
        });
        let out = self.at(dst, col);
        for (p, &acc) in accs.iter().enumerate() {
            let sum = self.b.use_var(acc);
            for lane in 0..2u8 {
                let s = self.b.ins().extractlane(sum, lane);
                let s = self.b.ins().fdemote(F32, s);
                self.store(s, out, 8 * p as i32 + 4 * lane as i32);
            }
        }
        if let Some(acc) = last {
            let s = self.total32(acc, 1.0);
            self.store(s, out, 8 * pairs as i32);
        }
    }

    /// `acc[k] += row[k]` for `k < len`, where `acc` holds f64 values and `row` f32.
    pub fn add_row64(&mut self, row: Addr, acc: Addr, len: usize) {
        let pairs = len / 2;
        if pairs > 0 {
            self.for_count(None, pairs, 1, |e, p| {
                let from = e.b.ins().imul_imm_s(p, 2);
                let from = e.at(row, from);
                let wide = e.load_pair64(from, 0);
                let to = e.b.ins().imul_imm_s(p, 4);
                let to = e.at(acc, to);
                let old = e.load(F64X2, to, 0, None);
                let new = e.b.ins().fadd(old, wide);
                e.store(new, to, 0);
            });
        }
        if len % 2 == 1 {
            let x = self.load(F32, row, 4 * (len - 1) as i32, None);
            let x = self.b.ins().fpromote(F64, x);
            let old = self.load(F64, acc, 8 * (len - 1) as i32, None);
            let new = self.b.ins().fadd(old, x);
            self.store(new, acc, 8 * (len - 1) as i32);
        }
    }

    /// `dst[k] = acc[k]` rounded to f32, for `k < len` f64 values in `acc`.
    pub fn round_rows64(&mut self, acc: Addr, dst: Addr, len: usize) {
        self.for_count(None, len, 1, |e, k| {
            let from = e.b.ins().imul_imm_s(k, 2);
            let from = e.at(acc, from);
            let v = e.load(F64, from, 0, None);
            let v = e.b.ins().fdemote(F32, v);
            let to = e.at(dst, k);
            e.store(v, to, 0);
        });
    }

    /// Two floats at `at` plus `bytes`, as one 64-bit load widened to two f64 lanes.
    fn load_pair64(&mut self, at: Addr, bytes: i32) -> Value {
        let little = MemFlagsData::new().with_endianness(Endianness::Little);
        let pair = self.load(F64, at, bytes, None);
        let pair = self.b.ins().scalar_to_vector(F64X2, pair);
        // The 128-bit register's view as floats, whatever the back end's vector width.
        let pair = self.b.ins().bitcast(types::F32X4, little, pair);
        self.b.ins().fvpromote_low(pair)
    }
}
