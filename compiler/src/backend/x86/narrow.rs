//! A product's last few columns (a 65-class output layer's 65th) with the rows, not the
//! columns, in the vector lanes, where `a` is transposed (stored `[k, m]`). A tile holds
//! a vector per group of columns, so a panel of one column uses one lane of each vector
//! and, at six rows, waits on six chains of FMAs: the LSTM variant of B4 spent 0.12 ms of
//! its step on its output weights' gradient's 65th column (0.38 ms for the product
//! against 0.29 ms at 64 classes; 0.30 ms so).
//!
//! A column of `c` is then `Σ_p a[p, rows] · b[p, j]`: each step of `k` one vector of
//! `a` per 16 rows and one FMA, in the order a tile takes, each block of `k` added to `c`
//! as the tiles of its phase add it and the last applying the bias (the one epilogue
//! taken), so the result is the tile's bit for bit. That matters: splitting a product
//! across threads by columns moves its remainder columns into tiles, and every element
//! must be the same sum on any thread count. An untransposed `a` would need its column
//! gathered for the same order (dot products along `k` are another order), and stays
//! with the tiles.

use super::product::Phase;
use crate::ir::kernel::{BinOp, EInst};

/// The most columns computed so; a panel of more fills enough of a tile's lanes.
pub const MAX_COLS: usize = 3;

/// Rows of a transposed `a` summed together: four AVX-512 vectors of accumulators.
const ROWS: usize = 64;

/// Columns `first..first + cols` of a product, computed here instead of by tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Narrow {
    pub first: usize,
    pub cols: usize,
    /// Whether the epilogue adds a per-column bias (its only operand).
    pub bias: bool,
}

/// Where a call reads and writes: `a` (transposed), `b` and `c` as the product's
/// statement has them (none packed), the bias, and their strides.
#[derive(Clone, Copy)]
pub struct Operands {
    pub a: *const f32,
    pub lda: usize,
    pub b: *const f32,
    pub ldb: usize,
    pub c: *mut f32,
    pub ldc: usize,
    pub bias: *const f32,
}

impl Narrow {
    /// For a product of `n` columns in panels of `nr`, `a` transposed as `ta` says, with
    /// `epilogue` (as the tiles would apply it): its last panel, if `a` is transposed,
    /// the panel holds at most [`MAX_COLS`] columns and the epilogue is nothing or a
    /// per-column bias.
    pub fn new(n: usize, nr: usize, ta: bool, epilogue: &[EInst]) -> Option<Narrow> {
        let cols = n % nr.max(1);
        let bias = match epilogue {
            [] => false,
            [EInst::Acc, EInst::Col(_), EInst::Bin(BinOp::Add, 0, 1)] => true,
            _ => return None,
        };
        (ta && (1..=MAX_COLS).contains(&cols)).then_some(Narrow { first: n - cols, cols, bias })
    }

    /// Rows `rows.0..rows.0 + rows.1` of the columns over steps `steps.0..steps.0 +
    /// steps.1` of `k`, as the tiles of `phase` compute them: the first block stores its
    /// sums, later ones add them to `c`, and the `last` applies the bias.
    ///
    /// # Safety
    /// The operands must hold the product's matrices (the bias its `n` floats when
    /// `self.bias`), and the rows, steps and columns must lie within them.
    pub unsafe fn run(
        &self,
        o: &Operands,
        rows: (usize, usize),
        steps: (usize, usize),
        (phase, last): (Phase, bool),
    ) {
        // SAFETY: as the caller promised; the AVX2 code runs only where the CPU has it.
        unsafe {
            if std::arch::is_x86_feature_detected!("avx512f") {
                self.run_avx512(o, rows, steps, (phase, last))
            } else if std::arch::is_x86_feature_detected!("fma") {
                self.run_avx2(o, rows, steps, (phase, last))
            } else {
                self.run_any(o, rows, steps, (phase, last))
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(
        &self,
        o: &Operands,
        rows: (usize, usize),
        steps: (usize, usize),
        at: (Phase, bool),
    ) {
        // SAFETY: as for `run`.
        unsafe { self.run_any(o, rows, steps, at) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, o: &Operands, rows: (usize, usize), steps: (usize, usize), at: (Phase, bool)) {
        // SAFETY: as for `run`.
        unsafe { self.run_any(o, rows, steps, at) }
    }

    #[inline(always)]
    unsafe fn run_any(
        &self,
        o: &Operands,
        (i0, m): (usize, usize),
        (p0, kb): (usize, usize),
        (phase, last): (Phase, bool),
    ) {
        for j in self.first..self.first + self.cols {
            // SAFETY: as `run`'s caller promised.
            unsafe {
                let bias = if self.bias && last { Some(*o.bias.add(j)) } else { None };
                let finish = |i: usize, sum: f32| {
                    let at = o.c.add(i * o.ldc + j);
                    let v = if phase == Phase::Start { sum } else { sum + *at };
                    *at = bias.map_or(v, |b| v + b);
                };
                for r0 in (i0..i0 + m).step_by(ROWS) {
                    let rows = ROWS.min(i0 + m - r0);
                    let mut acc = [0.0f32; ROWS];
                    for p in p0..p0 + kb {
                        let x = *o.b.add(p * o.ldb + j);
                        let a = o.a.add(p * o.lda + r0);
                        if rows == ROWS {
                            // A whole block: the accumulators stay in registers.
                            let a = &*a.cast::<[f32; ROWS]>();
                            for r in 0..ROWS {
                                acc[r] = a[r].mul_add(x, acc[r]);
                            }
                        } else {
                            let a = std::slice::from_raw_parts(a, rows);
                            for (s, &v) in acc.iter_mut().zip(a) {
                                *s = v.mul_add(x, *s);
                            }
                        }
                    }
                    for (r, &s) in acc[..rows].iter().enumerate() {
                        finish(r0 + r, s);
                    }
                }
            }
        }
    }
}
