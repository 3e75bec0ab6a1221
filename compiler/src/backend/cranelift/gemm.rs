//! Matrix products: register tiles of the rows × columns the program was scheduled for
//! (4 × 8 by default: eight accumulators of `f32x4`), with remainder tiles of fewer rows,
//! fewer vectors, or single columns at the edges.
//!
//! Column panels are the outer loop and row tiles the inner one, so a panel of `b`
//! (`k` × the tile's columns) stays in L1 while every row of `a` passes over it. Per step of `k`
//! the tile loads its `b` vectors once, then broadcasts one `a` value per row into an FMA
//! with each. The epilogue (bias, batch-norm, activation, residual) runs on the
//! accumulators before the only store.

use super::Call;
use super::emit::{Addr, Emit, F32, LANES, VECTOR};
use crate::ir::kernel::{BSum, ColumnSum, EInst, Gemm, Ptr, Right, Unfold};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value};
use cranelift_frontend::Variable;

/// Vector registers of x64 and of aarch64's lower half, which a tile's accumulators, its
/// `b` vectors and the broadcast `a` value share.
const REGISTERS: usize = 16;

/// The addresses a product reads and writes, computed once.
struct Bases {
    a: Addr,
    b: Addr,
    /// `b`'s row stride.
    ldb: usize,
    c: Addr,
    /// Per epilogue instruction, the base address of its operand.
    epi: Vec<Option<Addr>>,
}

impl Emit<'_, '_> {
    /// A product; its right operand is a matrix (`compile` refuses an unfolded one
    /// before any code is emitted), whose row stride is `ldb`.
    pub fn gemm(&mut self, g: &Gemm) {
        let epi = g
            .epilogue
            .iter()
            .map(|e| match e {
                EInst::Row(p) | EInst::Col(p) | EInst::Elem(p, _) => Some(self.addr(p, 0)),
                _ => None,
            })
            .collect();
        let (b, ldb) = match &g.b {
            Right::Matrix { ptr, ld } => (self.addr(ptr, 0), *ld),
            Right::Unfolded(u) => (self.addr(&u.src, 0), 0),
        };
        let bases = Bases { a: self.addr(&g.a, 0), b, ldb, c: self.addr(&g.c, 0), epi };
        if let Some(call) = self.calls.get(&std::ptr::from_ref(g)).copied() {
            self.call_product(g, &bases, call);
            return;
        }
        if g.sparse_a {
            self.sparse_gemm(g, &bases);
        } else {
            self.dense_gemm(g, &bases);
        }
        self.b_sums(g);
    }

    /// Each sum over `k` of a product's `b` as the statement it equals, after the product
    /// (a product called elsewhere computes them itself).
    fn b_sums(&mut self, g: &Gemm) {
        let Right::Matrix { ptr, ld } = &g.b else { return };
        for sum in &g.b_sums {
            match sum {
                BSum::Columns { dst } => self.column_sum(&ColumnSum {
                    src: ptr.clone(),
                    ld: *ld,
                    dst: dst.clone(),
                    rows: g.k,
                    cols: g.n,
                }),
                BSum::OneHot { m, a, lda, c, ldc } => self.gemm(&Gemm {
                    m: *m,
                    n: g.n,
                    k: g.k,
                    a: a.clone(),
                    lda: *lda,
                    ta: true,
                    b: g.b.clone(),
                    c: c.clone(),
                    ldc: *ldc,
                    epilogue: Vec::new(),
                    sparse_a: true,
                    b_sums: Vec::new(),
                }),
            }
        }
    }

    /// A product over every term, in register tiles of the module's shape.
    fn dense_gemm(&mut self, g: &Gemm, bases: &Bases) {
        let (_, columns) = self.tile;
        let panels = g.n / columns;
        let rest = g.n % columns;
        if panels > 0 {
            self.for_count(None, panels, 1, |e, jt| {
                let j = e.b.ins().imul_imm_s(jt, columns as i64);
                e.row_sweep(g, bases, j, columns / LANES, 0);
            });
        }
        let mut j0 = panels * columns;
        if rest >= LANES {
            let j = self.iconst(j0 as i64);
            self.row_sweep(g, bases, j, rest / LANES, 0);
            j0 += rest / LANES * LANES;
        }
        if !rest.is_multiple_of(LANES) {
            let j = self.iconst(j0 as i64);
            self.row_sweep(g, bases, j, 0, rest % LANES);
        }
    }

    /// Calls a product generated elsewhere with its operands' addresses (`a`, `b`, `c`;
    /// then the first output row an unfolded `b` starts at, or 0; then each `Row`, `Col`
    /// and `Elem` of the epilogue), then applies the epilogue over `c` if the callee left it.
    fn call_product(&mut self, g: &Gemm, bases: &Bases, call: Call) {
        let mut words: Vec<Value> = [bases.a, bases.b, bases.c]
            .into_iter()
            .map(|at| self.b.ins().iadd_imm_s(at.base, at.offset as i64))
            .collect();
        let first_row = match &g.b {
            Right::Unfolded(Unfold { first_row: Some((var, rows)), .. }) => {
                let v = self.vars[var];
                self.b.ins().imul_imm_s(v, *rows as i64)
            }
            Right::Unfolded(_) | Right::Matrix { .. } => self.iconst(0),
        };
        words.push(first_row);
        for at in bases.epi.iter().flatten() {
            words.push(self.b.ins().iadd_imm_s(at.base, at.offset as i64));
        }
        let sums: Vec<&Ptr> = g
            .b_sums
            .iter()
            .flat_map(|s| match s {
                BSum::Columns { dst } => vec![dst],
                BSum::OneHot { a, c, .. } => vec![a, c],
            })
            .collect();
        for p in sums {
            let at = self.addr(p, 0);
            words.push(self.b.ins().iadd_imm_s(at.base, at.offset as i64));
        }
        let entry = match call.prepare {
            Some((_, prepared)) if self.prepared.contains(&std::ptr::from_ref(g)) => prepared,
            _ => call.entry,
        };
        self.call_out(entry, call.data, words);
        if call.epilogue_after && !g.epilogue.is_empty() {
            self.epilogue_pass(g, bases);
        }
    }

    /// A product whose `a` is a one-hot input ([`Gemm::sparse_a`]): `c` is zeroed, then
    /// each non-zero `a[i, p]` adds `a[i, p] · b[p, ·]` to row `i` of `c`, in the order
    /// `a` is stored (`p` ascending for each `i`, or with `ta` each `p`'s row of `a` in
    /// turn), so each sum runs over `p` in order as the full product's does; then the
    /// epilogue runs over `c`. A one-hot row costs one row of `b` instead of `k`.
    fn sparse_gemm(&mut self, g: &Gemm, bases: &Bases) {
        let vectors = g.n / LANES * LANES;
        let zero = self.fconst(VECTOR, 0.0);
        let zero_f = self.fconst(F32, 0.0);
        let clear = |e: &mut Self, i: Value| {
            let c = e.row(bases.c, i, g.ldc);
            e.for_count(None, vectors, LANES, |e, j| {
                let at = e.at(c, j);
                e.store(zero, at, 0);
            });
            for j in vectors..g.n {
                e.store(zero_f, c, 4 * j as i32);
            }
        };
        // `c[i, ·] += a[o, q] · b[p, ·]` where `a[o, q]` (stored rows of `lda`) is not 0.
        // NaN counts as non-zero, so that it reaches `c` as in the full product.
        let add = |e: &mut Self, o: Value, q: Value, (i, p): (Value, Value)| {
            let a_row = e.row(bases.a, o, g.lda);
            let at = e.at(a_row, q);
            let x = e.load(F32, at, 0, Some(&g.a));
            let nonzero = e.b.ins().fcmp(FloatCC::NotEqual, x, zero_f);
            let yes = e.b.create_block();
            let done = e.b.create_block();
            e.b.ins().brif(nonzero, yes, &[], done, &[]);
            e.b.switch_to_block(yes);
            let (b, c) = (e.row(bases.b, p, bases.ldb), e.row(bases.c, i, g.ldc));
            let xs = e.splat(VECTOR, x);
            e.for_count(None, vectors, LANES, |e, j| {
                let (from, to) = (e.at(b, j), e.at(c, j));
                let bv = e.load(VECTOR, from, 0, None);
                let cv = e.load(VECTOR, to, 0, None);
                let sum = e.fma(xs, bv, cv);
                e.store(sum, to, 0);
            });
            for j in vectors..g.n {
                let bv = e.load(F32, b, 4 * j as i32, None);
                let cv = e.load(F32, c, 4 * j as i32, None);
                let sum = e.fma(x, bv, cv);
                e.store(sum, c, 4 * j as i32);
            }
            e.b.ins().jump(done, &[]);
            e.b.switch_to_block(done);
        };
        if g.ta {
            // A scatter: `a` is stored `[k, m]`, each of its rows adding to the rows of
            // `c` it selects; the epilogue waits for every row of `a`.
            self.for_count(None, g.m, 1, |e, i| clear(e, i));
            self.for_count(None, g.k, 1, |e, p| e.for_count(None, g.m, 1, |e, i| add(e, p, i, (i, p))));
            if !g.epilogue.is_empty() {
                self.epilogue_pass(g, bases);
            }
        } else {
            // A gather: each row of `c` is finished, epilogue and all, while in L1.
            self.for_count(None, g.m, 1, |e, i| {
                clear(e, i);
                e.for_count(None, g.k, 1, |e, p| add(e, i, p, (i, p)));
                if !g.epilogue.is_empty() {
                    e.epilogue_row(g, bases, i);
                }
            });
        }
    }

    /// Row `i` of a matrix at `at` with rows `ld` apart.
    fn row(&mut self, at: Addr, i: Value, ld: usize) -> Addr {
        let start = self.b.ins().imul_imm_s(i, ld as i64);
        self.at(at, start)
    }

    /// Applies the epilogue to every element of `c`, read back as the accumulated product.
    fn epilogue_pass(&mut self, g: &Gemm, bases: &Bases) {
        self.for_count(None, g.m, 1, |e, i| e.epilogue_row(g, bases, i));
    }

    /// Applies the epilogue to row `i` of `c`.
    fn epilogue_row(&mut self, g: &Gemm, bases: &Bases, i: Value) {
        let vectors = g.n / LANES * LANES;
        let row_params = self.row_params(g, bases, i, 0);
        let c_row = self.b.ins().imul_imm_s(i, (g.ldc * 4) as i64);
        let c_at = Addr { base: self.b.ins().iadd(bases.c.base, c_row), offset: bases.c.offset };
        let one = |e: &mut Self, ty: Type, j: Value| {
            let at = e.at(c_at, j);
            let acc = e.load(ty, at, 0, Some(&g.c));
            let out = e.epilogue(g, bases, ty, acc, &row_params, i, 0, j, 0);
            e.store(out, at, 0);
        };
        self.for_count(None, vectors, LANES, |e, j| one(e, VECTOR, j));
        for j in vectors..g.n {
            let j = self.iconst(j as i64);
            one(self, F32, j);
        }
    }

    /// All row tiles over the columns `j..j + lanes·vecs + scalars`. A product with no
    /// more rows than fit one tile beside a full panel's operands in the vector registers
    /// (six rows of two vectors: twelve accumulators, two `b` vectors and the broadcast)
    /// is one tile, so that no tile of one or two rows reloads the `b` panel.
    fn row_sweep(&mut self, g: &Gemm, bases: &Bases, j: Value, vecs: usize, scalars: usize) {
        let (rows, columns) = self.tile;
        let panel = columns / LANES;
        if g.m <= rows.max(((REGISTERS - 1) / panel).saturating_sub(1)) {
            let i = self.iconst(0);
            self.tile(g, bases, i, g.m, j, vecs, scalars);
            return;
        }
        let tiles = g.m / rows;
        if tiles > 0 {
            self.for_count(None, tiles, 1, |e, it| {
                let i = e.b.ins().imul_imm_s(it, rows as i64);
                e.tile(g, bases, i, rows, j, vecs, scalars);
            });
        }
        if !g.m.is_multiple_of(rows) {
            let i = self.iconst((tiles * rows) as i64);
            self.tile(g, bases, i, g.m % rows, j, vecs, scalars);
        }
    }

    /// One register tile: rows `i..i + rows`, columns `j..`, `vecs` vectors then `scalars`
    /// single columns.
    #[allow(clippy::too_many_arguments)]
    fn tile(
        &mut self,
        g: &Gemm,
        bases: &Bases,
        i: Value,
        rows: usize,
        j: Value,
        vecs: usize,
        scalars: usize,
    ) {
        let width = vecs + scalars;
        let ty = |c: usize| if c < vecs { VECTOR } else { F32 };
        let col_bytes =
            |c: usize| if c < vecs { 4 * LANES * c } else { 4 * LANES * vecs + 4 * (c - vecs) } as i32;
        let acc: Vec<Vec<Variable>> = (0..rows)
            .map(|_| {
                (0..width)
                    .map(|c| {
                        let var = self.b.declare_var(ty(c));
                        let zero = self.fconst(ty(c), 0.0);
                        self.b.def_var(var, zero);
                        var
                    })
                    .collect()
            })
            .collect();
        // a[i, 0] and b[0, j]; a's strides along rows and along k (in floats).
        let (a_rs, a_ks) = if g.ta { (1, g.lda) } else { (g.lda, 1) };
        let a_row = self.b.ins().imul_imm_s(i, (a_rs * 4) as i64);
        let a_base = self.b.ins().iadd(bases.a.base, a_row);
        let j_bytes = self.b.ins().ishl_imm_u(j, 2);
        let b_base = self.b.ins().iadd(bases.b.base, j_bytes);
        // The k loop, unrolled by four: constant offsets in the load immediates for the
        // unrolled steps, one counter update and one address computation per four.
        let unroll = if g.k >= 4 { 4 } else { 1 };
        let main = g.k / unroll * unroll;
        let step = |e: &mut Self, p: Value, sub: usize| {
            let b_row = e.b.ins().imul_imm_s(p, (bases.ldb * 4) as i64);
            let b_at = Addr { base: e.b.ins().iadd(b_base, b_row), offset: bases.b.offset };
            let p_bytes = e.b.ins().imul_imm_s(p, (a_ks * 4) as i64);
            let a_at = Addr { base: e.b.ins().iadd(a_base, p_bytes), offset: bases.a.offset };
            let b_sub = (sub * bases.ldb * 4) as i32;
            let bv: Vec<Value> =
                (0..width).map(|c| e.load_operand(ty(c), b_at, b_sub + col_bytes(c))).collect();
            for (r, row) in acc.iter().enumerate() {
                let a_off = (r * a_rs * 4 + sub * a_ks * 4) as i32;
                let s = e.load_operand(F32, a_at, a_off);
                let sv = if vecs > 0 { Some(e.b.ins().splat(VECTOR, s)) } else { None };
                for (c, &var) in row.iter().enumerate() {
                    let x = if c < vecs { sv.expect("splat for vectors") } else { s };
                    let old = e.b.use_var(var);
                    let new = e.fma(x, bv[c], old);
                    e.b.def_var(var, new);
                }
            }
        };
        self.for_count(None, main, unroll, |e, p| {
            for sub in 0..unroll {
                step(e, p, sub);
            }
        });
        if main < g.k {
            let from = self.iconst(main as i64);
            let to = self.iconst(g.k as i64);
            self.for_range(None, from, to, 1, true, |e, p| step(e, p, 0));
        }
        // Epilogue and store.
        let c_row = self.b.ins().imul_imm_s(i, (g.ldc * 4) as i64);
        let c_at = Addr { base: self.b.ins().iadd(bases.c.base, c_row), offset: bases.c.offset };
        let c_at = self.at(c_at, j);
        for (r, row) in acc.iter().enumerate() {
            let row_params = self.row_params(g, bases, i, r);
            for (c, &var) in row.iter().enumerate() {
                let value = self.b.use_var(var);
                let out = self.epilogue(g, bases, ty(c), value, &row_params, i, r, j, col_bytes(c));
                self.store(out, c_at, (r * g.ldc * 4) as i32 + col_bytes(c));
            }
        }
    }

    /// Per-row epilogue operands of row `i + r` (scalars).
    fn row_params(&mut self, g: &Gemm, bases: &Bases, i: Value, r: usize) -> Vec<Option<Value>> {
        g.epilogue
            .iter()
            .enumerate()
            .map(|(k, e)| match e {
                EInst::Row(p) => {
                    let at = self.at(bases.epi[k].expect("row operand address"), i);
                    Some(self.load(F32, at, (r * 4) as i32, Some(p)))
                }
                _ => None,
            })
            .collect()
    }

    /// The epilogue for one accumulator of row `i + r`, columns from `j` (+`col` bytes).
    #[allow(clippy::too_many_arguments)]
    fn epilogue(
        &mut self,
        g: &Gemm,
        bases: &Bases,
        ty: Type,
        acc: Value,
        row_params: &[Option<Value>],
        i: Value,
        r: usize,
        j: Value,
        col: i32,
    ) -> Value {
        if g.epilogue.is_empty() {
            return acc;
        }
        let mut vals: Vec<Value> = Vec::with_capacity(g.epilogue.len());
        for (k, inst) in g.epilogue.iter().enumerate() {
            let v = match inst {
                EInst::Acc => acc,
                EInst::Row(_) => {
                    let s = row_params[k].expect("row operands are loaded per row");
                    self.splat(ty, s)
                }
                EInst::Col(p) => {
                    let at = self.at(bases.epi[k].expect("column operand address"), j);
                    self.load(ty, at, col, Some(p))
                }
                EInst::Elem(p, ld) => {
                    let base = bases.epi[k].expect("element operand address");
                    let row = self.b.ins().imul_imm_s(i, (*ld * 4) as i64);
                    let at = Addr { base: self.b.ins().iadd(base.base, row), offset: base.offset };
                    let at = self.at(at, j);
                    self.load(ty, at, (r * ld * 4) as i32 + col, Some(p))
                }
                EInst::Const(c) => self.fconst(ty, *c),
                EInst::Prim(p, a) => self.prim(ty, *p, vals[*a]),
                EInst::Bin(op, a, b) => self.bin(ty, *op, vals[*a], vals[*b]),
                EInst::Select(c, a, b, t, f) => self.choose(ty, *c, vals[*a], vals[*b], vals[*t], vals[*f]),
            };
            vals.push(v);
        }
        *vals.last().expect("a non-empty epilogue has a result")
    }
}
