//! Sums over `k` of a product's `b` ([`BSum`]) taken from the panels the product packs,
//! while they are in the caches: an LSTM's bias gradient and its one-hot `W_ih` gradient
//! read the same 8 MiB of `dq` that its `W_hh` gradient packs, and as statements of their
//! own each read it from memory again.
//!
//! Each sum runs in the order of its own statement's routine, so the results are theirs
//! bit for bit: a column's sum over the rows in order in f64, rounded once (as
//! [`super::column_sum`]); a one-hot sum's `c` zeroed, then each non-zero of `a`, row by
//! row, an FMA of its row of `b` into the row of `c` it selects (as [`super::onehot`]).
//! Columns are independent, so the blocks of columns a product is split into across
//! threads, and the order in which its panels are packed, change nothing.

use super::onehot::nonzeros;
use crate::ir::kernel::BSum;

/// A sum's shape, its addresses given per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Its `dst`.
    Columns,
    /// Its `a` (`k` rows of `lda`, `m` classes) and `c` (`m` rows of `ldc`).
    OneHot { m: usize, lda: usize, ldc: usize },
}

impl Shape {
    pub fn of(sum: &BSum) -> Shape {
        match *sum {
            BSum::Columns { .. } => Shape::Columns,
            BSum::OneHot { m, lda, ldc, .. } => Shape::OneHot { m, lda, ldc },
        }
    }

    /// The addresses a call passes for it.
    fn words(self) -> usize {
        match self {
            Shape::Columns => 1,
            Shape::OneHot { .. } => 2,
        }
    }
}

/// One sum of a call, under way.
enum Sum {
    Columns {
        dst: *mut f32,
        acc: Vec<f64>,
    },
    /// `rows[p]..rows[p + 1]` of `terms` are row `p`'s non-zeros of `a`, as `(class,
    /// value)`, found once rather than again for every panel of columns.
    OneHot {
        c: *mut f32,
        ldc: usize,
        rows: Vec<usize>,
        terms: Vec<(usize, f32)>,
    },
}

/// The sums of one product call over `n` columns and `k` rows of `b`, under way: rows
/// of `b` are added in order ([`Running::add`]) until [`Running::finish`].
pub struct Running {
    sums: Vec<Sum>,
    /// Whether exactly one of the sums is a column sum.
    one_columns: bool,
}

/// The non-zeros of rows `0..k` of a one-hot input, row `p`'s at `terms[rows[p]..rows[p +
/// 1]]`, found with [`nonzeros`]' vector masks.
#[inline(always)]
fn scan<'a>(k: usize, a: impl Fn(usize) -> &'a [f32], rows: &mut Vec<usize>, terms: &mut Vec<(usize, f32)>) {
    for p in 0..k {
        rows.push(terms.len());
        let row = a(p);
        for i in nonzeros(row) {
            terms.push((i, row[i]));
        }
    }
    rows.push(terms.len());
}

/// [`scan`] compiled for AVX-512: compiled for the baseline set, its masks had taken
/// 0.13 ms of each thread's share of an LSTM's weight gradients.
#[target_feature(enable = "avx512f")]
fn scan_avx512<'a>(
    k: usize,
    a: impl Fn(usize) -> &'a [f32],
    rows: &mut Vec<usize>,
    terms: &mut Vec<(usize, f32)>,
) {
    scan(k, a, rows, terms)
}

/// Columns whose sums a caller keeps in registers: a panel of the widest tiles.
pub const STRIP: usize = 64;

/// The column sums of a strip of columns.
pub type Strip = [f64; STRIP];

impl Running {
    /// Starts the sums of `shapes` at the addresses `words` (as the call passes them):
    /// zeroes each one-hot sum's `c` and finds its `a`'s non-zeros.
    ///
    /// # Safety
    /// The addresses must hold the operands the shapes describe, for `n` columns and `k`
    /// rows, each `c` in a buffer apart from `b` and the `a`s.
    pub unsafe fn start(shapes: &[Shape], words: &[*mut f32], n: usize, k: usize) -> Running {
        let mut at = 0;
        let sums = shapes
            .iter()
            .map(|&shape| {
                let w = &words[at..at + shape.words()];
                at += shape.words();
                match shape {
                    Shape::Columns => Sum::Columns { dst: w[0], acc: vec![0.0; n] },
                    Shape::OneHot { m, lda, ldc } => {
                        let (a, c) = (w[0] as *const f32, w[1]);
                        let (mut rows, mut terms) = (Vec::with_capacity(k + 1), Vec::with_capacity(k));
                        // SAFETY: as the caller promised: `a` holds `k` rows of `lda` (at
                        // least `m` each), `c` `m` rows of `ldc` (at least `n` each).
                        unsafe {
                            let a = |p: usize| std::slice::from_raw_parts(a.add(p * lda), m);
                            if std::arch::is_x86_feature_detected!("avx512f") {
                                scan_avx512(k, a, &mut rows, &mut terms);
                            } else {
                                scan(k, a, &mut rows, &mut terms);
                            }
                            for i in 0..m {
                                std::slice::from_raw_parts_mut(c.add(i * ldc), n).fill(0.0);
                            }
                        }
                        Sum::OneHot { c, ldc, rows, terms }
                    }
                }
            })
            .collect::<Vec<_>>();
        let one_columns = sums.iter().filter(|s| matches!(s, Sum::Columns { .. })).count() == 1;
        Running { sums, one_columns }
    }

    /// Adds rows `p0..p0 + kb` of columns `j..j + cols` of `b`, row `p0 + r` at `rows + r ·
    /// stride` (a packed panel, or `b` where it is): rows must come in order for each
    /// column, each exactly once.
    ///
    /// # Safety
    /// `rows` must hold the `kb` rows of `cols` floats; `j + cols ≤ n`, `p0 + kb ≤ k`.
    pub unsafe fn add(
        &mut self,
        rows: *const f32,
        stride: usize,
        (p0, kb): (usize, usize),
        (j, cols): (usize, usize),
    ) {
        // SAFETY: as the caller promised; the AVX-512 and AVX2 copies run only where the
        // CPU has them.
        unsafe {
            if std::arch::is_x86_feature_detected!("avx512f") {
                self.add_avx512(rows, stride, (p0, kb), (j, cols))
            } else if std::arch::is_x86_feature_detected!("fma") {
                self.add_avx2(rows, stride, (p0, kb), (j, cols))
            } else {
                self.add_any(rows, stride, (p0, kb), (j, cols))
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn add_avx512(&mut self, rows: *const f32, stride: usize, p: (usize, usize), j: (usize, usize)) {
        // SAFETY: as for `add`.
        unsafe { self.add_any(rows, stride, p, j) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn add_avx2(&mut self, rows: *const f32, stride: usize, p: (usize, usize), j: (usize, usize)) {
        // SAFETY: as for `add`.
        unsafe { self.add_any(rows, stride, p, j) }
    }

    #[inline(always)]
    unsafe fn add_any(
        &mut self,
        rows: *const f32,
        stride: usize,
        (p0, kb): (usize, usize),
        (j, cols): (usize, usize),
    ) {
        for r in 0..kb {
            // SAFETY: as the caller of `add` promised.
            unsafe { self.add_row(rows.add(r * stride), p0 + r, (j, cols), None) };
        }
    }

    /// Adds row `p` of columns `j..j + cols` of `b`, at `row`: the packing calls this for
    /// each row it copies, while the row is in registers (reading a packed panel back
    /// for the sums had cost the LSTM variant's weight gradients 0.9 ms more, one thread).
    ///
    /// # Safety
    /// `row` must hold `cols` floats; `j + cols ≤ n`, `p < k`; rows must come in order for
    /// each column, each exactly once.
    /// With `strip` (see [`Running::strip`]), the column sums go there.
    #[inline(always)]
    pub unsafe fn add_row(
        &mut self,
        row: *const f32,
        p: usize,
        (j, cols): (usize, usize),
        strip: Option<&mut Strip>,
    ) {
        // SAFETY: as the caller promised.
        let b = unsafe { std::slice::from_raw_parts(row, cols) };
        let in_strip = strip.is_some();
        if let Some(strip) = strip {
            let b: &[f32; STRIP] = b.try_into().expect("a strip's row");
            for (s, &x) in strip.iter_mut().zip(b) {
                *s += f64::from(x);
            }
        }
        for sum in &mut self.sums {
            match sum {
                // The one column sum, in the strip.
                Sum::Columns { .. } if in_strip => {}
                Sum::Columns { acc, .. } => {
                    for (s, &x) in acc[j..j + cols].iter_mut().zip(b) {
                        *s += f64::from(x);
                    }
                }
                Sum::OneHot { c, ldc, rows, terms } => {
                    for &(i, x) in &terms[rows[p]..rows[p + 1]] {
                        // SAFETY: class `i` is a row of `c` (`start`), which holds columns
                        // `j..j + cols` apart from `b`.
                        let out = unsafe { std::slice::from_raw_parts_mut(c.add(i * *ldc + j), cols) };
                        for (o, &w) in out.iter_mut().zip(b) {
                            *o = x.mul_add(w, *o);
                        }
                    }
                }
            }
        }
    }

    /// The column sums of columns `j..j + STRIP` so far, for a caller to keep in
    /// registers over rows it adds with [`Running::add_row`] and then to [`Running::put`]
    /// back: there is one column sum, and the block is a whole strip (adding a row of a
    /// 64-column panel to the sums in memory had taken 8 loads and 8 stores).
    pub fn strip(&self, j: usize, cols: usize) -> Option<Strip> {
        if cols != STRIP || !self.one_columns {
            return None;
        }
        self.sums.iter().find_map(|s| match s {
            Sum::Columns { acc, .. } => Some(acc[j..j + STRIP].try_into().expect("a strip")),
            Sum::OneHot { .. } => None,
        })
    }

    /// Puts back a strip of column sums taken by [`Running::strip`].
    pub fn put(&mut self, j: usize, strip: Strip) {
        for s in &mut self.sums {
            if let Sum::Columns { acc, .. } = s {
                acc[j..j + STRIP].copy_from_slice(&strip);
            }
        }
    }

    /// Writes the column sums, rounded once.
    ///
    /// # Safety
    /// Each `dst` must hold `n` floats.
    pub unsafe fn finish(self) {
        for sum in self.sums {
            if let Sum::Columns { dst, acc } = sum {
                for (i, s) in acc.into_iter().enumerate() {
                    // SAFETY: as the caller promised.
                    unsafe { *dst.add(i) = s as f32 };
                }
            }
        }
    }
}

/// The words a call passes for `shapes`.
pub fn words(shapes: &[Shape]) -> usize {
    shapes.iter().map(|s| s.words()).sum()
}

#[cfg(test)]
mod tests {
    use super::super::column_sum::ColumnSums;
    use super::super::isa::Simd;
    use super::super::narrow::Narrow;
    use super::super::onehot::OneHot;
    use super::super::product::Product;
    use super::super::tests::values;
    use super::super::{Generator, Isa, avx2::Avx2, avx512::Avx512};
    use crate::ir::kernel::{BSum, ColumnSum, Gemm, Ptr, Right};
    use crate::ir::ops::TensorId;
    use proptest::prelude::*;

    fn t(i: u32) -> Ptr {
        Ptr::tensor(TensorId(i))
    }

    /// A product with sums of its `b`, and how it is cut up.
    #[derive(Clone, Copy, Debug)]
    struct Case {
        m: usize,
        n: usize,
        k: usize,
        classes: usize,
        kc: usize,
        mc: usize,
        pack_b: bool,
        narrow: bool,
        seed: u64,
    }

    /// The product's `c`, the column sums and the one-hot sum, computed with `S`'s tiles
    /// with the sums or (`sums` false) without them.
    fn run<S: Simd>(x: &Case, (a, b, onehot): (&[f32], &[f32], &[f32]), sums: bool) -> [Vec<f32>; 3] {
        let (m, n, k, classes) = (x.m, x.n, x.k, x.classes);
        let b_sums = if sums {
            vec![
                BSum::Columns { dst: t(3) },
                BSum::OneHot { m: classes, a: t(4), lda: classes + 1, c: t(5), ldc: n + 2 },
            ]
        } else {
            Vec::new()
        };
        let g = Gemm {
            m,
            n,
            k,
            a: t(0),
            lda: m,
            ta: true,
            b: Right::Matrix { ptr: t(1), ld: n + 1 },
            c: t(2),
            ldc: n,
            epilogue: Vec::new(),
            sparse_a: false,
            b_sums,
        };
        let (mr, nv) = super::super::micro::shape::<S>(n);
        let mut p = Product::new(&g, mr, S::LANES * nv);
        p.pack_b = x.pack_b;
        if x.kc > 0 {
            p.kc = x.kc;
        }
        if x.mc > 0 {
            p.mc = x.mc * mr;
        }
        p.narrow = if x.narrow { Narrow::new(n, p.nr, true, &[]) } else { None };
        let mut generator = Generator::<S>::default();
        let offsets = generator.tiles_for(&p, &[]).expect("assembles");
        generator.products.push(Box::pin(p));
        generator.tiles.push(offsets);
        let (products, _maps, _code) = generator.finish().expect("maps");
        // NaN past what each writes.
        let mut c = vec![f32::NAN; m * n];
        let mut columns = vec![f32::NAN; n + 1];
        let mut scattered = vec![f32::NAN; classes * (n + 2)];
        let ptrs = [
            a.as_ptr() as *mut f32,
            b.as_ptr() as *mut f32,
            c.as_mut_ptr(),
            std::ptr::null_mut(),
            columns.as_mut_ptr(),
            onehot.as_ptr() as *mut f32,
            scattered.as_mut_ptr(),
        ];
        // SAFETY: the pointers address operands of the shapes and strides `g` gives.
        unsafe { products[0].run(ptrs.as_ptr(), false) };
        [c, columns, scattered]
    }

    /// The sums by the routines of their own statements.
    fn routines(x: &Case, isa: Isa, (b, onehot): (&[f32], &[f32])) -> [Vec<f32>; 2] {
        let (n, k, classes) = (x.n, x.k, x.classes);
        let sum = ColumnSum { src: t(1), ld: n + 1, dst: t(3), rows: k, cols: n };
        let mut columns = vec![f32::NAN; n + 1];
        let ptrs = [b.as_ptr() as *mut f32, columns.as_mut_ptr()];
        // SAFETY: as for `run`.
        unsafe { ColumnSums::new(&sum, isa).run(ptrs.as_ptr()) };
        let g = Gemm {
            m: classes,
            n,
            k,
            a: t(4),
            lda: classes + 1,
            ta: true,
            b: Right::Matrix { ptr: t(1), ld: n + 1 },
            c: t(5),
            ldc: n + 2,
            epilogue: Vec::new(),
            sparse_a: true,
            b_sums: Vec::new(),
        };
        let mut scattered = vec![f32::NAN; classes * (n + 2)];
        let ptrs = [
            onehot.as_ptr() as *mut f32,
            b.as_ptr() as *mut f32,
            scattered.as_mut_ptr(),
            std::ptr::null_mut(),
        ];
        // SAFETY: as for `run`.
        unsafe { OneHot::new(&g, isa).expect("a scatter-add").run(ptrs.as_ptr()) };
        [columns, scattered]
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn check<S: Simd>(x: &Case, isa: Isa) {
        let (m, n, k, classes) = (x.m, x.n, x.k, x.classes);
        let a = values(k * m, x.seed);
        let b = values(k * (n + 1), x.seed + 1);
        // One-hot rows of `classes + 1` (the last never set): most with one term, some
        // with none (padding) or two, one NaN.
        let mut onehot = vec![0.0f32; k * (classes + 1)];
        let pick = values(2 * k, x.seed + 2);
        for p in 0..k {
            let u = ((pick[2 * p] + 1.0) * 1000.0) as usize;
            let terms = [1, 1, 1, 0, 2][u % 5];
            for s in 0..terms {
                let class = (u / 5 + 7 * s) % classes;
                onehot[p * (classes + 1) + class] =
                    if p == k / 2 && s == 0 { f32::NAN } else { [1.0, 0.5, -2.0][u % 3] };
            }
        }
        let [c, columns, scattered] = run::<S>(x, (&a, &b, &onehot), true);
        let [bare, ..] = run::<S>(x, (&a, &b, &onehot), false);
        let [want_columns, want_scattered] = routines(x, isa, (&b, &onehot));
        assert_eq!(bits(&c), bits(&bare), "{} {x:?}: the product", S::NAME);
        assert_eq!(bits(&columns), bits(&want_columns), "{} {x:?}: the column sums", S::NAME);
        assert_eq!(bits(&scattered), bits(&want_scattered), "{} {x:?}: the one-hot sum", S::NAME);
        assert!(columns[n].is_nan() && (0..classes).all(|i| scattered[i * (n + 2) + n].is_nan()));
    }

    fn cases() -> impl Strategy<Value = Case> {
        (
            (1usize..40, prop_oneof![1 => 1usize..20, 3 => 20usize..150], 0usize..300, 1usize..12),
            (prop_oneof![2 => Just(0usize), 1 => 1usize..40], prop_oneof![2 => Just(0usize), 1 => 1usize..3]),
            (any::<bool>(), any::<bool>(), any::<u64>()),
        )
            .prop_map(|((m, n, k, classes), (kc, mc), (pack_b, narrow, seed))| Case {
                m,
                n,
                k,
                classes,
                kc,
                mc,
                pack_b,
                narrow,
                seed,
            })
    }

    proptest! {
        /// Whether the sums are taken while packing panels (over several blocks of `k` and
        /// of rows), from `b` where it is (unpacked, or a narrow last panel's columns), or
        /// from whole strips of columns kept in registers, they are bit for bit what their
        /// own statements' routines give, and the product is unchanged.
        #[test]
        fn sums_of_b_are_their_routines_bit_for_bit(x in cases()) {
            for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                match isa {
                    Isa::Avx2 => check::<Avx2>(&x, isa),
                    Isa::Avx512 => check::<Avx512>(&x, isa),
                }
            }
        }
    }
}
