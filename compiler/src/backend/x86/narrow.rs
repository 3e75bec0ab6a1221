//! A product's last few columns (a 65-class output layer's 65th) with the rows, not the
//! columns, in the vector lanes. A tile holds a vector per group of columns, so a panel
//! of one column uses one lane of each vector and, at six rows, waits on six chains of
//! FMAs: the LSTM variant of B4 spent 0.12 ms of its step on its output weights'
//! gradient's 65th column (0.38 ms for the product against 0.29 ms at 64 classes; 0.30
//! ms so), and its logits 0.20 ms (a 2,048 × 65 × 256 product 0.79 ms against 0.59 ms at
//! 64 classes on Zen 4; 0.66 ms so).
//!
//! A column of `c` is then `Σ_p a[p, rows] · b[p, j]`: each step of `k` one vector of
//! `a` per 16 rows and one FMA, in the order a tile takes, each block of `k` added to `c`
//! as the tiles of its phase add it and the last applying the bias (the one epilogue
//! taken), so the result is the tile's bit for bit. That matters: splitting a product
//! across threads by columns moves its remainder columns into tiles, and every element
//! must be the same sum on any thread count. A transposed `a` (stored `[k, m]`) holds
//! those vectors as they are; an untransposed one is read 16 rows by 16 steps at a time
//! and transposed in registers, on AVX-512 (dot products along `k` would be another
//! order, and without AVX-512 the tiles keep its columns).

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
    /// Whether `a` is stored transposed (`[k, m]`, its columns already rows).
    pub ta: bool,
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
    /// `epilogue` (as the tiles would apply it): its last panel, if `a` is transposed or
    /// the CPU has AVX-512, the panel holds at most [`MAX_COLS`] columns and the epilogue
    /// is nothing or a per-column bias.
    pub fn new(n: usize, nr: usize, ta: bool, epilogue: &[EInst]) -> Option<Narrow> {
        let cols = n % nr.max(1);
        let bias = match epilogue {
            [] => false,
            [EInst::Acc, EInst::Col(_), EInst::Bin(BinOp::Add, 0, 1)] => true,
            _ => return None,
        };
        let rows_in_lanes = ta || std::arch::is_x86_feature_detected!("avx512f");
        (rows_in_lanes && (1..=MAX_COLS).contains(&cols)).then_some(Narrow {
            first: n - cols,
            cols,
            bias,
            ta,
        })
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
            if !self.ta {
                // `new` takes an untransposed `a` only where the CPU has AVX-512.
                self.transposing_avx512(o, rows, steps, (phase, last))
            } else if std::arch::is_x86_feature_detected!("avx512f") {
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

    /// An untransposed `a` on AVX-512: 16 rows by 16 steps of `k` at a time, read as rows
    /// (from the tiles' block, still in cache) and transposed in registers, so that each
    /// step's column of 16 rows is a vector. Gathering those columns took longer than the
    /// tile (1.05 against 0.79 ms for a 2,048 × 65 × 256 product on Zen 4).
    ///
    /// Every loop over registers has a constant bound, so that the vectors stay in
    /// registers (accumulators indexed at run time lived on the stack, each FMA waiting on
    /// the store of the one before); columns past `cols` are summed against zeros and
    /// dropped. No closures either: they are not compiled for the instruction set, and
    /// each intrinsic in one becomes a call.
    #[target_feature(enable = "avx512f")]
    unsafe fn transposing_avx512(
        &self,
        o: &Operands,
        (i0, m): (usize, usize),
        (p0, kb): (usize, usize),
        (phase, last): (Phase, bool),
    ) {
        use std::arch::x86_64::*;
        let (first, cols) = (self.first, self.cols);
        for r0 in (i0..i0 + m).step_by(16) {
            let rows = 16.min(i0 + m - r0);
            let mut acc = [_mm512_setzero_ps(); MAX_COLS];
            for q0 in (p0..p0 + kb).step_by(16) {
                let steps = 16.min(p0 + kb - q0);
                let mask = ((1u32 << steps) - 1) as __mmask16;
                let mut v = [_mm512_setzero_ps(); 16];
                for (r, v) in v.iter_mut().enumerate() {
                    if r < rows {
                        // SAFETY: row `r0 + r` of `a` holds steps `q0..q0 + steps`.
                        *v = unsafe { _mm512_maskz_loadu_ps(mask, o.a.add((r0 + r) * o.lda + q0)) };
                    }
                }
                let columns = transpose16(&v);
                if steps == 16 {
                    for (s, column) in columns.iter().enumerate() {
                        step(&mut acc, *column, o, (q0 + s, first, cols));
                    }
                } else {
                    for (s, column) in columns.iter().enumerate().take(steps) {
                        step(&mut acc, *column, o, (q0 + s, first, cols));
                    }
                }
            }
            for (c, &acc) in acc[..cols].iter().enumerate() {
                let mut sums = [0.0f32; 16];
                // SAFETY: `sums` holds 16 floats.
                unsafe { _mm512_storeu_ps(sums.as_mut_ptr(), acc) };
                // SAFETY: as `run`'s caller promised.
                unsafe { self.finish(o, first + c, r0, &sums[..rows], (phase, last)) };
            }
        }
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
                    self.finish(o, j, r0, &acc[..rows], (phase, last));
                }
            }
        }
    }

    /// Column `j` of the rows from `r0` takes `sums` as the tiles of `phase` take theirs:
    /// the first block of `k` stores them, later ones add them to `c`, and the `last` adds
    /// the bias.
    ///
    /// # Safety
    /// `c` must hold those rows of column `j`, and the bias column `j` when there is one.
    #[inline(always)]
    unsafe fn finish(&self, o: &Operands, j: usize, r0: usize, sums: &[f32], (phase, last): (Phase, bool)) {
        // SAFETY: as the caller promised.
        unsafe {
            let bias = if self.bias && last { Some(*o.bias.add(j)) } else { None };
            for (r, &sum) in sums.iter().enumerate() {
                let at = o.c.add((r0 + r) * o.ldc + j);
                let v = if phase == Phase::Start { sum } else { sum + *at };
                *at = bias.map_or(v, |b| v + b);
            }
        }
    }
}

/// One step `p` of `k` for each column `first + c` below `first + cols`: `acc[c] +=
/// column · b[p, first + c]` (columns past `cols` add zeros, never read).
#[inline(always)]
fn step(
    acc: &mut [std::arch::x86_64::__m512; MAX_COLS],
    column: std::arch::x86_64::__m512,
    o: &Operands,
    (p, first, cols): (usize, usize, usize),
) {
    use std::arch::x86_64::*;
    for (c, acc) in acc.iter_mut().enumerate() {
        // SAFETY: `b` holds step `p` of the columns below `first + cols`.
        let x = if c < cols { unsafe { *o.b.add(p * o.ldb + first + c) } } else { 0.0 };
        // SAFETY: only called from code compiled for AVX-512.
        *acc = unsafe { _mm512_fmadd_ps(column, _mm512_set1_ps(x), *acc) };
    }
}

/// The 16 × 16 floats of `r` (a row per vector) transposed: element `i` of vector `j` of
/// the result is element `j` of `r[i]`. Pairs of rows interleave by floats, then by pairs
/// of floats, which leaves in each 128-bit lane `l` of vector `4i + j` column `4l + j`
/// of rows `4i..4i + 4`; two rounds of lane shuffles gather each column's four lanes.
#[target_feature(enable = "avx512f")]
fn transpose16(r: &[std::arch::x86_64::__m512; 16]) -> [std::arch::x86_64::__m512; 16] {
    use std::arch::x86_64::*;
    let mut t = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    let mut u = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let (lo, hi) = (_mm512_castps_pd(t[4 * i]), _mm512_castps_pd(t[4 * i + 2]));
        u[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, hi));
        u[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, hi));
        let (lo, hi) = (_mm512_castps_pd(t[4 * i + 1]), _mm512_castps_pd(t[4 * i + 3]));
        u[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo, hi));
        u[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo, hi));
    }
    let mut out = [_mm512_setzero_ps(); 16];
    for j in 0..4 {
        let low = _mm512_shuffle_f32x4::<0x44>(u[j], u[4 + j]);
        let high = _mm512_shuffle_f32x4::<0x44>(u[8 + j], u[12 + j]);
        out[j] = _mm512_shuffle_f32x4::<0x88>(low, high);
        out[4 + j] = _mm512_shuffle_f32x4::<0xdd>(low, high);
        let low = _mm512_shuffle_f32x4::<0xee>(u[j], u[4 + j]);
        let high = _mm512_shuffle_f32x4::<0xee>(u[8 + j], u[12 + j]);
        out[8 + j] = _mm512_shuffle_f32x4::<0x88>(low, high);
        out[12 + j] = _mm512_shuffle_f32x4::<0xdd>(low, high);
    }
    out
}
