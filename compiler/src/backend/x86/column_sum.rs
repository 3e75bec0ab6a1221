//! Column sums ([`ColumnSum`]: a layer's bias gradient over a batch or every step of a
//! sequence) at the CPU's vector width, accumulated in f64 as Cranelift's code does.
//!
//! A block of columns at a time, its f64 sums in L1, the rows read in order (each block's
//! part of a row one contiguous run, which the prefetchers follow), each column's sum
//! taken over the rows in order and rounded once, so the result is Cranelift's bit for
//! bit. Cranelift's `f64x2` loop over strips of sixteen columns was 2.5 % of the LSTM
//! variant's training step (its 2,048 × 1,024 bias gradient), about twice the time the
//! 8 MiB it reads take from L3.
//!
//! Rust compiled for the instruction set, as the packing is: a memory-bound loop, which
//! the compiler vectorises to the set's width.

use super::Isa;
use super::pack::prefetch_run;

/// Rows ahead whose part of a block is prefetched when the block is narrower than a row:
/// split across threads by columns, a row's part is a run that ends within its page,
/// where the hardware prefetchers stop (the LSTM variant's bias gradient, two threads,
/// 512 columns of 1,024 each: 0.42-0.55 -> 0.34-0.37 ms).
const AHEAD: usize = 4;
use crate::ir::kernel::ColumnSum;

/// Columns per block: their f64 sums take 16 KiB of L1. A row of up to 2,048 floats is
/// then one run: the hardware prefetchers stop at each 4 KiB page, and blocks of 512
/// columns had read the LSTM variant's 1,024-column `dq` as 2 KiB runs in every page, in
/// two passes (its bias gradient 0.44-0.50 -> 0.20-0.25 ms, alternating runs, 1 thread).
const BLOCK: usize = 2048;

/// One column-sum statement, ready to run.
#[derive(Debug)]
pub struct ColumnSums {
    rows: usize,
    cols: usize,
    ld: usize,
    isa: Isa,
}

impl ColumnSums {
    pub fn new(c: &ColumnSum, isa: Isa) -> ColumnSums {
        ColumnSums { rows: c.rows, cols: c.cols, ld: c.ld, isa }
    }

    /// `dst[c] = Σ_r src[r · ld + c]` from the addresses `ptrs` (`src`, then `dst`).
    ///
    /// # Safety
    /// `src` must hold `rows` rows of `ld` floats (at least `cols` each) and `dst` `cols`
    /// floats apart from them; the CPU must have the instruction set.
    pub unsafe fn run(&self, ptrs: *const *mut f32) {
        // SAFETY: as the caller promised.
        unsafe {
            let (src, dst) = (*ptrs as *const f32, *ptrs.add(1));
            match self.isa {
                Isa::Avx512 => self.run_avx512(src, dst),
                Isa::Avx2 => self.run_avx2(src, dst),
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    unsafe fn run_avx512(&self, src: *const f32, dst: *mut f32) {
        // SAFETY: as for `run`.
        unsafe { self.run_any(src, dst) }
    }

    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&self, src: *const f32, dst: *mut f32) {
        // SAFETY: as for `run`.
        unsafe { self.run_any(src, dst) }
    }

    #[inline(always)]
    unsafe fn run_any(&self, src: *const f32, dst: *mut f32) {
        let mut sums = [0.0f64; BLOCK];
        for j in (0..self.cols).step_by(BLOCK) {
            let width = BLOCK.min(self.cols - j);
            let sums = &mut sums[..width];
            sums.fill(0.0);
            // SAFETY: as the caller promised; each run lies within a row's `cols`.
            unsafe {
                for r in 0..self.rows {
                    if width < self.ld && r + AHEAD < self.rows {
                        prefetch_run(src.add((r + AHEAD) * self.ld + j), width);
                    }
                    let row = std::slice::from_raw_parts(src.add(r * self.ld + j), width);
                    for (s, &x) in sums.iter_mut().zip(row) {
                        *s += f64::from(x);
                    }
                }
                let out = std::slice::from_raw_parts_mut(dst.add(j), width);
                for (o, &s) in out.iter_mut().zip(sums.iter()) {
                    *o = s as f32;
                }
            }
        }
    }
}

/// The entry a Cranelift kernel calls for a column-sum statement.
///
/// # Safety
/// As [`ColumnSums::run`]; `routine` is the [`ColumnSums`] the back end made for it.
pub unsafe extern "sysv64" fn entry(routine: *const ColumnSums, ptrs: *const *mut f32) {
    // SAFETY: the back end passes the address of a `ColumnSums` it keeps alive with the code.
    unsafe { (*routine).run(ptrs) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::kernel::Ptr;
    use crate::ir::ops::TensorId;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn sums_are_exact_f64_sums_rounded_once(
            rows in 1..200usize, cols in 1..4500usize, gap in 0..3usize, seed in any::<u64>(),
        ) {
            let ld = cols + gap;
            let mut s = seed | 1;
            let src: Vec<f32> = (0..rows * ld)
                .map(|_| { s ^= s << 13; s ^= s >> 7; s ^= s << 17; (s % 20001) as f32 / 1000.0 - 10.0 })
                .collect();
            let want: Vec<f32> =
                (0..cols).map(|c| (0..rows).map(|r| f64::from(src[r * ld + c])).sum::<f64>() as f32).collect();
            let c = ColumnSum { src: Ptr::tensor(TensorId(0)), ld, dst: Ptr::tensor(TensorId(1)), rows, cols };
            for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                let mut dst = vec![f32::NAN; cols + 1];
                let mut ptrs = [src.as_ptr() as *mut f32, dst.as_mut_ptr()];
                // SAFETY: the operands have the statement's shape; the CPU has `isa`.
                unsafe { ColumnSums::new(&c, isa).run(ptrs.as_mut_ptr()) };
                prop_assert_eq!(&dst[..cols], &want[..], "{:?}", isa);
                prop_assert!(dst[cols].is_nan(), "wrote past the last column");
            }
        }
    }
}
