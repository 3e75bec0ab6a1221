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
        // SAFETY: as for `run`.
        unsafe { self.run_any(x, labels, grad, stats) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, x: *const f32, labels: *const u32, grad: *mut f32, stats: *mut f32) {
        // SAFETY: as for `run`.
        unsafe { self.run_any(x, labels, grad, stats) }
    }

    #[inline(always)]
    unsafe fn run_any(&self, x: *const f32, labels: *const u32, grad: *mut f32, stats: *mut f32) {
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
            let (full, tail) = (x.chunks_exact(W), x.len() / W * W);
            let mut most = [f32::NEG_INFINITY; W];
            for chunk in full.clone() {
                for (m, &v) in most.iter_mut().zip(chunk) {
                    *m = if v > *m { v } else { *m };
                }
            }
            let mut m = most.iter().fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m });
            for &v in &x[tail..] {
                m = if v > m { v } else { m };
            }
            // exp(x − max) into the gradient row, summed in f64 per lane.
            let mut sums = [0.0f64; W];
            for (chunk, out) in full.zip(g.chunks_exact_mut(W)) {
                for ((s, o), &v) in sums.iter_mut().zip(out.iter_mut()).zip(chunk) {
                    let e = exp(v - m);
                    *o = e;
                    *s += f64::from(e);
                }
            }
            let mut total: f64 = sums.iter().sum();
            for (o, &v) in g[tail..].iter_mut().zip(&x[tail..]) {
                let e = exp(v - m);
                *o = e;
                total += f64::from(e);
            }
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
    }
}
