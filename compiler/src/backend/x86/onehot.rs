//! Products whose `a` is a one-hot input ([`Gemm::sparse_a`]), at the CPU's vector width:
//! a gather of the rows of `b` that `a` selects (a one-hot input's projection, with the
//! layer's bias), or with `ta` a scatter-add of `b`'s rows into the rows of `c` that `a`
//! selects (that projection's weight gradient).
//!
//! They move memory rather than compute, so they are Rust compiled for the instruction
//! set (as the packing is), not generated tiles. In Cranelift they ran at its 128-bit
//! width and kept their kernel out of its optimiser (it compiles kernels with their own
//! products unoptimised): the LSTM variant's one-hot gather and scatter-add were 6 % of
//! its training step.
//!
//! Each sum runs in the order Cranelift's loop takes (`c` zeroed, then `a`'s non-zeros in
//! the order `a` is stored, each an FMA into the row), so the two agree bit for bit; NaN
//! counts as non-zero, so that it reaches `c` as in the full product.

use super::Isa;
use super::pack::prefetch_run;
use crate::ir::kernel::{BinOp, EInst, Gemm, Right};

/// Rows of `b` ahead of the scatter-add whose runs are prefetched: each row of an LSTM's
/// `dq` is a page of its own, which the hardware prefetchers do not enter until it is
/// read (the LSTM variant's `W_ih` gradient 0.36-0.39 -> 0.29-0.31 ms, 1 thread).
const AHEAD: usize = 2;

/// One one-hot product statement, ready to run.
#[derive(Debug)]
pub struct OneHot {
    m: usize,
    n: usize,
    k: usize,
    lda: usize,
    ta: bool,
    ldb: usize,
    ldc: usize,
    /// Whether the epilogue adds a per-column bias (its only operand).
    bias: bool,
    isa: Isa,
}

impl OneHot {
    /// The routine for `g` on `isa`, if it computes it: a one-hot `a`, a matrix `b`, `c`
    /// in a buffer of its own, and an epilogue that is nothing or (without `ta`) a bias
    /// added to the sum. Others stay with Cranelift, which applies any epilogue.
    pub fn new(g: &Gemm, isa: Isa) -> Option<OneHot> {
        let Right::Matrix { ptr: b, ld: ldb } = &g.b else { return None };
        let bias = match g.epilogue.as_slice() {
            [] => false,
            [EInst::Acc, EInst::Col(p), EInst::Bin(BinOp::Add, 0, 1)] if !g.ta && p.buf != g.c.buf => true,
            _ => return None,
        };
        if !g.sparse_a || b.buf == g.c.buf || g.a.buf == g.c.buf {
            return None;
        }
        Some(OneHot { m: g.m, n: g.n, k: g.k, lda: g.lda, ta: g.ta, ldb: *ldb, ldc: g.ldc, bias, isa })
    }

    /// Computes the product from the operand addresses `ptrs` (as [`super::product::entry`]
    /// receives them: `a`, `b`, `c`, a word it does not read, then the bias if any).
    ///
    /// # Safety
    /// The pointers must address the matrices this routine was made for, and the CPU must
    /// have its instruction set.
    pub unsafe fn run(&self, ptrs: *const *mut f32) {
        // SAFETY: as the caller promised.
        unsafe {
            let (a, b, c) = (*ptrs as *const f32, *ptrs.add(1) as *const f32, *ptrs.add(2));
            let bias = if self.bias { *ptrs.add(4) as *const f32 } else { std::ptr::null() };
            match self.isa {
                Isa::Avx512 => self.run_avx512(a, b, c, bias),
                Isa::Avx2 => self.run_avx2(a, b, c, bias),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(&self, a: *const f32, b: *const f32, c: *mut f32, bias: *const f32) {
        // SAFETY: as for `run`.
        unsafe { self.run_any(a, b, c, bias) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, a: *const f32, b: *const f32, c: *mut f32, bias: *const f32) {
        // SAFETY: as for `run`.
        unsafe { self.run_any(a, b, c, bias) }
    }

    #[inline(always)]
    unsafe fn run_any(&self, a: *const f32, b: *const f32, c: *mut f32, bias: *const f32) {
        let n = self.n;
        // SAFETY: `c` holds `m` rows of `ldc` (at least `n`), `b` `k` rows of `ldb` and `a`
        // its rows of `lda`, `c` in a buffer of its own (`new`), and the bias `n` floats.
        unsafe {
            let row = |i: usize| std::slice::from_raw_parts_mut(c.add(i * self.ldc), n);
            let b_row = |p: usize| std::slice::from_raw_parts(b.add(p * self.ldb), n);
            if self.ta {
                // `a` is stored `[k, m]`: each of its rows adds to the rows of `c` it selects.
                for i in 0..self.m {
                    row(i).fill(0.0);
                }
                for p in 0..self.k {
                    if p + AHEAD < self.k {
                        prefetch_run(b.add((p + AHEAD) * self.ldb), n);
                    }
                    let a_row = std::slice::from_raw_parts(a.add(p * self.lda), self.m);
                    for i in nonzeros(a_row) {
                        axpy(a_row[i], b_row(p), row(i));
                    }
                }
            } else {
                // Each row of `c` is finished, bias and all, while in L1.
                let bias = self.bias.then(|| std::slice::from_raw_parts(bias, n));
                for i in 0..self.m {
                    let out = row(i);
                    let a_row = std::slice::from_raw_parts(a.add(i * self.lda), self.k);
                    let mut nonzero = nonzeros(a_row).map(|p| (p, &a_row[p]));
                    match (nonzero.next(), nonzero.next(), bias) {
                        // One term (a one-hot row): one pass writes the row, the same sums
                        // as zeroing it, adding the term and then the bias (the LSTM
                        // variant's gathers had taken three passes, 0.35 ms a step).
                        (Some((p, &x)), None, Some(bias)) => {
                            for ((o, &w), &v) in out.iter_mut().zip(b_row(p)).zip(bias) {
                                *o = x.mul_add(w, 0.0) + v;
                            }
                        }
                        (Some((p, &x)), None, None) => {
                            for (o, &w) in out.iter_mut().zip(b_row(p)) {
                                *o = x.mul_add(w, 0.0);
                            }
                        }
                        _ => {
                            out.fill(0.0);
                            for p in nonzeros(a_row) {
                                axpy(a_row[p], b_row(p), out);
                            }
                            if let Some(bias) = bias {
                                for (o, &v) in out.iter_mut().zip(bias) {
                                    *o += v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The positions of `row`'s non-zeros (NaN among them), in order: a mask of 16 values at
/// a time, which compiles to vector compares rather than a compare and branch per value
/// (65 for each row of a 65-class one-hot input, one of them mispredicted).
#[inline(always)]
pub(super) fn nonzeros(row: &[f32]) -> impl Iterator<Item = usize> + '_ {
    let chunks = row.chunks_exact(MASK);
    let rest = chunks.remainder();
    chunks.chain(std::iter::once(rest)).enumerate().flat_map(|(c, chunk)| {
        let mut mask = chunk.iter().enumerate().fold(0u32, |m, (l, &x)| m | u32::from(x != 0.0) << l);
        std::iter::from_fn(move || {
            (mask != 0).then(|| {
                let l = mask.trailing_zeros() as usize;
                mask &= mask - 1;
                c * MASK + l
            })
        })
    })
}

/// Values per mask of [`nonzeros`].
const MASK: usize = 16;

/// `c += x · b`, one rounding per element.
#[inline(always)]
fn axpy(x: f32, b: &[f32], c: &mut [f32]) {
    for (c, &b) in c.iter_mut().zip(b) {
        *c = x.mul_add(b, *c);
    }
}

/// The entry a Cranelift kernel calls for a one-hot product statement: `routine` is the
/// [`OneHot`] the back end made for it, `ptrs` its operand addresses.
///
/// # Safety
/// As [`OneHot::run`].
pub unsafe extern "sysv64" fn entry(routine: *const OneHot, ptrs: *const *mut f32) {
    // SAFETY: the back end passes the address of a `OneHot` it keeps alive with the code.
    unsafe { (*routine).run(ptrs) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::kernel::Ptr;
    use crate::ir::ops::TensorId;
    use proptest::prelude::*;

    fn tensor(i: u32) -> Ptr {
        Ptr::tensor(TensorId(i))
    }

    /// `c = a · b (+ bias)` over every term, zeros included.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        ta: bool,
        a: &[f32],
        b: &[f32],
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let mut c = vec![0.0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let mut s = 0.0f32;
                for p in 0..k {
                    let x = if ta { a[p * m + i] } else { a[i * k + p] };
                    s += x * b[p * n + j];
                }
                c[i * n + j] = s + bias.map_or(0.0, |v| v[j]);
            }
        }
        c
    }

    proptest! {
        #[test]
        fn gathers_and_scatters_match_the_full_product(
            m in 1..40usize, n in 1..70usize, k in 1..50usize, ta in any::<bool>(), bias in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let bias = bias && !ta;
            let mut s = seed | 1;
            let mut next = move || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
            // One-hot rows (some all zero: padding; some with a second term and weights
            // other than 1, powers of two so that every product is exact), stored as `a`
            // or transposed with `ta`.
            let mut a = vec![0.0f32; m * k];
            let rows = if ta { k } else { m };
            let cols = if ta { m } else { k };
            for r in 0..rows {
                let terms = [0, 1, 1, 1, 2][next() as usize % 5];
                for _ in 0..terms {
                    a[r * cols + (next() as usize % cols)] = [1.0, 2.0, -0.5][next() as usize % 3];
                }
            }
            let mut value = move || (next() % 2001) as f32 / 1000.0 - 1.0;
            let b: Vec<f32> = (0..k * n).map(|_| value()).collect();
            let bias_values: Vec<f32> = (0..n).map(|_| value()).collect();
            let epilogue = if bias {
                vec![EInst::Acc, EInst::Col(tensor(3)), EInst::Bin(BinOp::Add, 0, 1)]
            } else {
                vec![]
            };
            let g = Gemm {
                m, n, k, a: tensor(0), lda: if ta { m } else { k }, ta,
                b: Right::Matrix { ptr: tensor(1), ld: n }, c: tensor(2), ldc: n, epilogue, sparse_a: true, b_sums: Vec::new(),
            };
            let want = reference(m, n, k, ta, &a, &b, bias.then_some(&bias_values[..]));
            for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                let routine = OneHot::new(&g, isa).expect("a one-hot product with a bias or none");
                let mut c = vec![f32::NAN; m * n];
                let mut ptrs = [
                    a.as_ptr() as *mut f32, b.as_ptr() as *mut f32, c.as_mut_ptr(), std::ptr::null_mut(),
                    bias_values.as_ptr() as *mut f32,
                ];
                // SAFETY: the operands have the shapes `g` says, and the CPU has `isa`.
                unsafe { routine.run(ptrs.as_mut_ptr()) };
                prop_assert_eq!(&c, &want, "{:?}", isa);
            }
        }
    }

    #[test]
    fn other_epilogues_and_overlapping_operands_stay_with_cranelift() {
        let g = Gemm {
            m: 2,
            n: 3,
            k: 4,
            a: tensor(0),
            lda: 4,
            ta: false,
            b: Right::Matrix { ptr: tensor(1), ld: 3 },
            c: tensor(2),
            ldc: 3,
            epilogue: vec![],
            sparse_a: true,
            b_sums: Vec::new(),
        };
        assert!(OneHot::new(&g, Isa::Avx2).is_some());
        let relu = vec![EInst::Acc, EInst::Const(0.0), EInst::Bin(BinOp::Max, 0, 1)];
        assert!(OneHot::new(&Gemm { epilogue: relu, ..g.clone() }, Isa::Avx2).is_none());
        let scatter_bias = vec![EInst::Acc, EInst::Col(tensor(3)), EInst::Bin(BinOp::Add, 0, 1)];
        assert!(OneHot::new(&Gemm { epilogue: scatter_bias, ta: true, ..g.clone() }, Isa::Avx2).is_none());
        assert!(OneHot::new(&Gemm { c: tensor(1), ..g.clone() }, Isa::Avx2).is_none());
        assert!(OneHot::new(&Gemm { sparse_a: false, ..g }, Isa::Avx2).is_none());
    }
}
