//! Softmax cross-entropy ([`CrossEntropy`]) at the CPU's vector width: per row the
//! largest score, `exp(x − max)` summed in f64, the gradient (softmax − one-hot) · scale,
//! the loss and whether the first largest score is the label, as Cranelift's kernel
//! computes them (`cranelift/loss.rs`, whose comments give the rules: a label outside
//! the classes marks a padding row of weight 0).
//!
//! Rust compiled for the instruction set, as the packing is, with `exp` evaluated as
//! `x86/math.rs` evaluates it (the same steps and coefficients, which the compiler
//! vectorises). Cranelift's four lanes made the loss kernel 0.22 ms of the LSTM variant
//! of B4's step and 0.42 ms of `char_lstm.net`'s, on one thread whatever the count.

use super::Isa;
use crate::backend::coefficients::{EXP, EXP_HI, EXP_LO};
use crate::ir::kernel::CrossEntropy;

/// Lanes of the per-row partial maxima and sums.
const W: usize = 16;

/// One cross-entropy statement, ready to run.
#[derive(Debug)]
pub struct CrossEntropyRows {
    rows: usize,
    cols: usize,
    isa: Isa,
}

/// `x86/math.rs`'s `exp`: clamped, `n = round(x · log₂e)`, `r = x − n · ln2` in two
/// parts, `1 + r + r² · P(r)`, times `2ⁿ` built in the exponent field.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let r = if EXP_LO > x { EXP_LO } else { x };
    let r = if EXP_HI < r { EXP_HI } else { r };
    let n = (r * std::f32::consts::LOG2_E).round_ties_even();
    let r = n.mul_add(-0.693_359_4, r);
    let r = n.mul_add(2.121_944_4e-4, r);
    let mut p = EXP[0];
    for &c in &EXP[1..] {
        p = p.mul_add(r, c);
    }
    let k = r * r;
    let y = p.mul_add(k, r + 1.0);
    // n + 127 (1 to 254 after the clamp) as the low bits of 2²³ + n + 127, moved into the
    // exponent field: float arithmetic that vectorises, where `as i32` (saturating, NaN
    // to 0) did not. A NaN `x` leaves `y` NaN whatever the scale.
    y * f32::from_bits((n + (127.0 + 8_388_608.0)).to_bits() << 23)
}

impl CrossEntropyRows {
    pub fn new(c: &CrossEntropy, isa: Isa) -> CrossEntropyRows {
        CrossEntropyRows { rows: c.rows, cols: c.cols, isa }
    }

    /// Runs the statement from the addresses `ptrs`: logits, labels, gradient, stats.
    ///
    /// # Safety
    /// The logits and gradient must hold `rows × cols` floats (apart from each other),
    /// the labels `rows` class ids, the stats two floats; the CPU must have the set.
    pub unsafe fn run(&self, ptrs: *const *mut f32) {
        // SAFETY: as the caller promised.
        unsafe {
            let (x, labels) = (*ptrs as *const f32, *ptrs.add(1) as *const u32);
            let (grad, stats) = (*ptrs.add(2), *ptrs.add(3));
            match self.isa {
                Isa::Avx512 => self.run_avx512(x, labels, grad, stats),
                Isa::Avx2 => self.run_avx2(x, labels, grad, stats),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(&self, x: *const f32, labels: *const u32, grad: *mut f32, stats: *mut f32) {
        // SAFETY: as for `run`; the CPU has AVX-512.
        unsafe { self.rows(x, labels, grad, stats, |x, g| exps_avx512(x, g)) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, x: *const f32, labels: *const u32, grad: *mut f32, stats: *mut f32) {
        // SAFETY: as for `run`.
        unsafe { self.rows(x, labels, grad, stats, exps) }
    }

    /// Each row, `exps(x, g)` writing its `exp(x − max)` into the gradient and returning
    /// the row's largest score and their sum.
    #[inline(always)]
    unsafe fn rows(
        &self,
        x: *const f32,
        labels: *const u32,
        grad: *mut f32,
        stats: *mut f32,
        exps: impl Fn(&[f32], &mut [f32]) -> (f32, f64),
    ) {
        let (rows, cols) = (self.rows, self.cols);
        let scale = 1.0 / rows as f32;
        let (mut loss, mut correct) = (0.0f64, 0.0f32);
        for r in 0..rows {
            // SAFETY: as `run`'s caller promised.
            let (x, g, label) = unsafe {
                (
                    std::slice::from_raw_parts(x.add(r * cols), cols),
                    std::slice::from_raw_parts_mut(grad.add(r * cols), cols),
                    *labels.add(r),
                )
            };
            let valid = (label as usize) < cols;
            let label = if valid { label as usize } else { 0 };
            let weight = if valid { 1.0f32 } else { 0.0 };
            let (m, total) = exps(x, g);
            let kw = scale * weight;
            let factor = (f64::from(kw) / total) as f32;
            for o in g.iter_mut() {
                *o *= factor;
            }
            g[label] -= kw;
            loss += f64::from(((total as f32).ln() + m - x[label]) * weight);
            // The prediction is the first class holding the maximum.
            let first = first_equal(x, m).unwrap_or(cols);
            if first == label {
                correct += weight;
            }
        }
        // SAFETY: as `run`'s caller promised.
        unsafe {
            *stats = (loss * (1.0 / rows as f64)) as f32;
            *stats.add(1) = correct;
        }
    }
}

/// A row's largest score `m` (the first of the per-lane maxima of [`W`] lanes, then the
/// rest in order) and the sum in f64 of `exp(x − m)` (per lane, the lanes then added in
/// order, then the rest), each written to `g`.
#[inline(always)]
fn exps(x: &[f32], g: &mut [f32]) -> (f32, f64) {
    let (full, tail) = (x.chunks_exact(W), x.len() / W * W);
    let mut most = [f32::NEG_INFINITY; W];
    for chunk in full.clone() {
        for (m, &v) in most.iter_mut().zip(chunk) {
            *m = if v > *m { v } else { *m };
        }
    }
    let m = largest(&most, &x[tail..]);
    let mut sums = [0.0f64; W];
    for (chunk, out) in full.zip(g.chunks_exact_mut(W)) {
        for ((s, o), &v) in sums.iter_mut().zip(out.iter_mut()).zip(chunk) {
            let e = exp(v - m);
            *o = e;
            *s += f64::from(e);
        }
    }
    (m, total(&sums, &x[tail..], &mut g[tail..], m))
}

/// The first largest of the lanes' maxima `most`, then of `rest`.
#[inline(always)]
fn largest(most: &[f32; W], rest: &[f32]) -> f32 {
    let m = most.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
    rest.iter().fold(m, |m, &v| if v > m { v } else { m })
}

/// The lanes' sums `sums` added in order, then `exp(x − m)` of the scores `rest` past the
/// last whole vector, each written to `out`.
#[inline(always)]
fn total(sums: &[f64; W], rest: &[f32], out: &mut [f32], m: f32) -> f64 {
    let mut total: f64 = sums.iter().sum();
    for (o, &v) in out.iter_mut().zip(rest) {
        let e = exp(v - m);
        *o = e;
        total += f64::from(e);
    }
    total
}

/// [`exps`] in AVX-512 registers, step for step: the compiler had evaluated `exp` eight
/// lanes at a time, reloading its constants each time, and kept the lanes' f64 sums on
/// the stack (the loss kernel 0.32 ms of `char_lstm.net`'s step, on one thread whatever
/// the count).
#[target_feature(enable = "avx512f")]
fn exps_avx512(x: &[f32], g: &mut [f32]) -> (f32, f64) {
    use std::arch::x86_64::*;
    let full = x.len() / W * W;
    let at = |c: usize| -> __m512 {
        let v: &[f32; W] = x[c..c + W].try_into().expect("a whole vector");
        // SAFETY: `v` holds `W` floats.
        unsafe { _mm512_loadu_ps(v.as_ptr()) }
    };
    // `max(v, m)` is `v > m ? v : m`, as `exps` takes it.
    let mut most = _mm512_set1_ps(f32::NEG_INFINITY);
    for c in (0..full).step_by(W) {
        most = _mm512_max_ps(at(c), most);
    }
    let mut lanes = [0.0f32; W];
    // SAFETY: `lanes` holds `W` floats.
    unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), most) };
    let m = largest(&lanes, &x[full..]);
    let mv = _mm512_set1_ps(m);
    let (mut low, mut high) = (_mm512_setzero_pd(), _mm512_setzero_pd());
    for c in (0..full).step_by(W) {
        let e = exp_avx512(_mm512_sub_ps(at(c), mv));
        let out: &mut [f32; W] = (&mut g[c..c + W]).try_into().expect("a whole vector");
        // SAFETY: `out` holds `W` floats.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), e) };
        low = _mm512_add_pd(low, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        let upper = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(e)));
        high = _mm512_add_pd(high, _mm512_cvtps_pd(upper));
    }
    let mut sums = [0.0f64; W];
    // SAFETY: `sums` holds two vectors of eight f64.
    unsafe {
        _mm512_storeu_pd(sums.as_mut_ptr(), low);
        _mm512_storeu_pd(sums.as_mut_ptr().add(W / 2), high);
    }
    (m, total(&sums, &x[full..], &mut g[full..], m))
}

/// [`exp`] on sixteen lanes, the same operations in the same order.
#[target_feature(enable = "avx512f")]
fn exp_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use std::arch::x86_64::*;
    // `max(LO, x)` is `LO > x ? LO : x` and `min(HI, r)` is `HI < r ? HI : r`.
    let r = _mm512_min_ps(_mm512_set1_ps(EXP_HI), _mm512_max_ps(_mm512_set1_ps(EXP_LO), x));
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT }>(_mm512_mul_ps(
        r,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-0.693_359_4), r);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(EXP[0]);
    for &c in &EXP[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let k = _mm512_mul_ps(r, r);
    let y = _mm512_fmadd_ps(p, k, _mm512_add_ps(r, _mm512_set1_ps(1.0)));
    let biased = _mm512_castps_si512(_mm512_add_ps(n, _mm512_set1_ps(127.0 + 8_388_608.0)));
    _mm512_mul_ps(y, _mm512_castsi512_ps(_mm512_slli_epi32::<23>(biased)))
}

/// The first position of `m` in `x`, from a mask of [`W`] values at a time (vector
/// compares, where a compare and branch per value ran through half a row on average).
#[inline(always)]
fn first_equal(x: &[f32], m: f32) -> Option<usize> {
    let chunks = x.chunks_exact(W);
    let rest = chunks.remainder();
    chunks.chain(std::iter::once(rest)).enumerate().find_map(|(c, chunk)| {
        let mask = chunk.iter().enumerate().fold(0u32, |k, (l, &v)| k | u32::from(v == m) << l);
        (mask != 0).then(|| c * W + mask.trailing_zeros() as usize)
    })
}

/// The entry a Cranelift kernel calls for a cross-entropy statement.
///
/// # Safety
/// As [`CrossEntropyRows::run`]; `routine` is the [`CrossEntropyRows`] the back end made.
pub unsafe extern "sysv64" fn entry(routine: *const CrossEntropyRows, ptrs: *const *mut f32) {
    // SAFETY: the back end passes the address of a routine it keeps alive with the code.
    unsafe { (*routine).run(ptrs) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cranelift::probe::{self, MathFn};
    use crate::ir::kernel::Ptr;
    use crate::ir::ops::TensorId;
    use proptest::prelude::*;

    proptest! {
        /// Every instruction set the CPU has against the definition in f64: the gradient
        /// and the mean loss within a few roundings, the right predictions exactly (scores
        /// drawn from few values, so that rows tie for the largest), padding rows nothing.
        #[test]
        fn rows_match_the_definition(rows in 1..40usize, cols in 1..150usize, seed in any::<u64>()) {
            let mut s = seed | 1;
            let mut next = move || { s ^= s << 13; s ^= s >> 7; s ^= s << 17; s };
            let x: Vec<f32> = (0..rows * cols).map(|_| (next() % 9) as f32 * 0.75 - 3.0).collect();
            let labels: Vec<u32> = (0..rows).map(|_| (next() % (cols as u64 + 2)) as u32).collect();
            let (mut grad, mut loss, mut hits) = (vec![0.0f64; rows * cols], 0.0f64, 0.0f32);
            for r in 0..rows {
                let row = &x[r * cols..][..cols];
                let m = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let total: f64 = row.iter().map(|&v| f64::from(v - m).exp()).sum();
                let label = labels[r] as usize;
                if label >= cols {
                    continue;
                }
                for (j, &v) in row.iter().enumerate() {
                    let p = f64::from(v - m).exp() / total;
                    grad[r * cols + j] = (p - f64::from(u8::from(j == label))) / rows as f64;
                }
                loss += total.ln() + f64::from(m) - f64::from(row[label]);
                if row.iter().position(|&v| v == m) == Some(label) {
                    hits += 1.0;
                }
            }
            let c = CrossEntropy {
                logits: Ptr::tensor(TensorId(0)), labels: Ptr::tensor(TensorId(1)),
                grad: Ptr::tensor(TensorId(2)), stats: Ptr::tensor(TensorId(3)), rows, cols,
            };
            let mut first: Option<(Vec<f32>, [f32; 2])> = None;
            for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                let (mut g, mut stats) = (vec![f32::NAN; rows * cols], [f32::NAN; 2]);
                let mut ptrs = [
                    x.as_ptr() as *mut f32, labels.as_ptr() as *mut f32, g.as_mut_ptr(), stats.as_mut_ptr(),
                ];
                // SAFETY: the operands have the statement's shapes; the CPU has `isa`.
                unsafe { CrossEntropyRows::new(&c, isa).run(ptrs.as_mut_ptr()) };
                for (i, (&got, &want)) in g.iter().zip(&grad).enumerate() {
                    prop_assert!((f64::from(got) - want).abs() <= 1e-6 / rows as f64, "{isa:?} grad[{i}]: {got} vs {want}");
                }
                let mean = loss / rows as f64;
                prop_assert!((f64::from(stats[0]) - mean).abs() <= 1e-5 * mean.abs().max(1.0), "{isa:?} loss {} vs {mean}", stats[0]);
                prop_assert_eq!(stats[1], hits, "{:?} right predictions", isa);
                // Every set computes the same operations in the same order.
                let bits = |g: &[f32], s: &[f32; 2]| g.iter().chain(s).map(|x| x.to_bits()).collect::<Vec<_>>();
                match &first {
                    Some((g0, s0)) => prop_assert_eq!(bits(&g, &stats), bits(g0, s0), "{:?} against the first set", isa),
                    None => first = Some((g, stats)),
                }
            }
        }
    }

    /// The routine's `exp` is `x86/math.rs`'s (which the x86 tests hold bit for bit to
    /// Cranelift's) over its whole range, edges and non-finite values included.
    #[test]
    fn exp_is_the_back_ends() {
        let mut xs: Vec<f32> = (-2000..=2000).map(|i| i as f32 * 0.0467).collect();
        xs.extend([0.0, -0.0, 88.3, 88.4, -87.3, -87.4, 1e-30, f32::INFINITY, f32::NEG_INFINITY]);
        let want = probe::evaluate(MathFn::Exp, &xs).expect("Cranelift compiles the probe");
        for (&x, &w) in xs.iter().zip(&want) {
            assert_eq!(exp(x).to_bits(), w.to_bits(), "exp({x})");
        }
        if Isa::Avx512.available() {
            use std::arch::x86_64::{_mm512_loadu_ps, _mm512_storeu_ps};
            for (xs, want) in xs.chunks_exact(W).zip(want.chunks_exact(W)) {
                let mut got = [0.0f32; W];
                // SAFETY: the CPU has AVX-512; both arrays hold `W` floats.
                unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp_avx512(_mm512_loadu_ps(xs.as_ptr()))) };
                for ((x, g), w) in xs.iter().zip(got).zip(want) {
                    assert_eq!(g.to_bits(), w.to_bits(), "exp({x}) on sixteen lanes");
                }
            }
        }
    }
}
