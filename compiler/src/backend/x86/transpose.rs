//! Transposes ([`Transpose`]: a weight's transpose for the backward pass, made afresh
//! at every training step) in 4 × 4 blocks of SSE registers.
//!
//! Cranelift's code moves one float at a time out of its vectors (an extract and a store
//! each): the LSTM variant's 1 MiB `W_hh` took 0.39 ms to transpose at every step, on
//! one thread, about 1 % of the step. Here each block is four loads, eight shuffles and
//! four stores. Source rows go sixteen at a time, so that each destination row receives
//! a whole cache line before the next block of columns.
//!
//! SSE is part of every x86-64 CPU, so this needs no instruction set of its own: the
//! data movement, not the vector width, is what a transpose is limited by.

use crate::ir::kernel::Transpose;
use std::arch::x86_64::*;

/// Source rows per block: 16 floats, one cache line of each destination row.
const BLOCK: usize = 16;

/// One transpose statement, ready to run.
#[derive(Debug)]
pub struct Transposes {
    rows: usize,
    cols: usize,
    lds: usize,
    ldd: usize,
}

impl Transposes {
    pub fn new(t: &Transpose) -> Transposes {
        Transposes { rows: t.rows, cols: t.cols, lds: t.lds, ldd: t.ldd }
    }

    /// `dst[c · ldd + r] = src[r · lds + c]` from the addresses `ptrs` (`src`, then
    /// `dst`).
    ///
    /// # Safety
    /// `src` must hold `rows` rows of `lds` floats (at least `cols` each) and `dst`
    /// `cols` rows of `ldd` floats (at least `rows` each), apart from `src`.
    pub unsafe fn run(&self, ptrs: *const *mut f32) {
        // SAFETY: as the caller promised.
        unsafe {
            let (src, dst) = (*ptrs as *const f32, *ptrs.add(1));
            for r0 in (0..self.rows).step_by(BLOCK) {
                self.block(src, dst, r0, BLOCK.min(self.rows - r0));
            }
        }
    }

    /// Source rows `r0 .. r0 + count` (`count ≤ BLOCK`).
    ///
    /// # Safety
    /// As [`Transposes::run`].
    unsafe fn block(&self, src: *const f32, dst: *mut f32, r0: usize, count: usize) {
        let (whole_rows, whole_cols) = (count / 4 * 4, self.cols / 4 * 4);
        // SAFETY: every index is below `rows` (for `r`) and `cols` (for `c`).
        unsafe {
            for c in (0..whole_cols).step_by(4) {
                for r in (r0..r0 + whole_rows).step_by(4) {
                    let from = src.add(r * self.lds + c);
                    let mut x = [0, 1, 2, 3].map(|i| _mm_loadu_ps(from.add(i * self.lds)));
                    transpose4(&mut x);
                    let to = dst.add(c * self.ldd + r);
                    for (i, v) in x.into_iter().enumerate() {
                        _mm_storeu_ps(to.add(i * self.ldd), v);
                    }
                }
                for r in r0 + whole_rows..r0 + count {
                    for j in c..c + 4 {
                        *dst.add(j * self.ldd + r) = *src.add(r * self.lds + j);
                    }
                }
            }
            for j in whole_cols..self.cols {
                for r in r0..r0 + count {
                    *dst.add(j * self.ldd + r) = *src.add(r * self.lds + j);
                }
            }
        }
    }
}

/// Transposes the 4 × 4 matrix whose rows are `x`, in place.
#[inline(always)]
fn transpose4(x: &mut [__m128; 4]) {
    // SAFETY: SSE is part of x86-64.
    unsafe {
        let t0 = _mm_unpacklo_ps(x[0], x[1]); // a0 b0 a1 b1
        let t1 = _mm_unpackhi_ps(x[0], x[1]); // a2 b2 a3 b3
        let t2 = _mm_unpacklo_ps(x[2], x[3]); // c0 d0 c1 d1
        let t3 = _mm_unpackhi_ps(x[2], x[3]); // c2 d2 c3 d3
        x[0] = _mm_movelh_ps(t0, t2);
        x[1] = _mm_movehl_ps(t2, t0);
        x[2] = _mm_movelh_ps(t1, t3);
        x[3] = _mm_movehl_ps(t3, t1);
    }
}

/// The entry a Cranelift kernel calls for a transpose statement.
///
/// # Safety
/// As [`Transposes::run`]; `routine` is the [`Transposes`] the back end made for it.
pub unsafe extern "sysv64" fn entry(routine: *const Transposes, ptrs: *const *mut f32) {
    // SAFETY: the back end passes the address of a `Transposes` it keeps alive with the
    // code.
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
        fn transposes_move_every_element_and_nothing_else(
            rows in 1..70usize, cols in 1..70usize, gaps in (0..3usize, 0..3usize),
        ) {
            let (lds, ldd) = (cols + gaps.0, rows + gaps.1);
            let src: Vec<f32> = (0..rows * lds).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; cols * ldd];
            let t = Transpose { src: Ptr::tensor(TensorId(0)), lds, dst: Ptr::tensor(TensorId(1)), ldd, rows, cols };
            let ptrs = [src.as_ptr() as *mut f32, dst.as_mut_ptr()];
            // SAFETY: the operands have the statement's shape.
            unsafe { Transposes::new(&t).run(ptrs.as_ptr()) };
            for c in 0..cols {
                for r in 0..ldd {
                    let got = dst[c * ldd + r];
                    if r < rows {
                        prop_assert_eq!(got, src[r * lds + c], "dst[{}, {}]", c, r);
                    } else {
                        prop_assert!(got.is_nan(), "dst[{}, {}] written past the rows", c, r);
                    }
                }
            }
        }
    }
}
