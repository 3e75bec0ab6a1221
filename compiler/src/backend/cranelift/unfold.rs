//! Unfolding images for convolutions (im2col) and folding gradients back (col2im).
//!
//! Row `(ch·kh + i)·kw + j` of the unfolded matrix holds, for every output pixel, the
//! input under kernel tap `(i, j)` of channel `ch`: for one output row that is a run of
//! input columns, clipped where it falls into the padding. Both directions walk the same
//! runs. The column tap `j` is unrolled at compile time, so each run's clipped range and
//! length are constants and a run is a few unrolled vector moves; only the channel, the
//! row tap and the output row are loops. Small convolutions are dominated by this
//! traversal (LeNet-5's C3 unfolds 1,500 runs of ten floats per image), so its per-run
//! cost matters as much as the copying.

use super::emit::{Addr, Emit, F32, LANES, VECTOR};
use crate::ir::kernel::{Col2im, Im2col, Var, Window};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value};

/// Runs at most this long are unrolled; longer ones are loops.
const UNROLL: usize = 32;

/// Which way a traversal moves data.
#[derive(Clone, Copy, PartialEq)]
enum Direction {
    /// image → unfolded matrix, padding written as zeros.
    Unfold,
    /// unfolded matrix added into the image.
    Fold,
}

/// Output positions `[lo, hi)` along one axis whose input `pos·stride + tap − pad` lies
/// in `0..size`.
fn valid_range(tap: usize, pad: usize, stride: usize, size: usize, out: usize) -> (usize, usize) {
    let lo = pad.saturating_sub(tap).div_ceil(stride).min(out);
    let hi = match (size + pad).checked_sub(tap + 1) {
        Some(last) => (last / stride + 1).min(out),
        None => 0,
    };
    (lo, hi.max(lo))
}

impl Emit<'_, '_> {
    pub fn im2col(&mut self, c: &Im2col) {
        let cols = self.addr(&c.dst, 0);
        let image = self.addr(&c.src, 0);
        self.unfold(&c.win, c.first_row, c.ld, cols, image, Direction::Unfold);
    }

    /// The same traversal as [`Emit::im2col`], adding instead of copying, the other way.
    pub fn col2im(&mut self, c: &Col2im) {
        let cols = self.addr(&c.cols, 0);
        let image = self.addr(&c.image, 0);
        self.unfold(&c.win, None, c.ld, cols, image, Direction::Fold);
    }

    /// Walks every run of the unfolded matrix `cols` (rows `ld` floats apart) against
    /// `image`. With `first_row`, output row `y` is row `first·rows + y` of the image.
    fn unfold(
        &mut self,
        w: &Window,
        first_row: Option<(Var, usize)>,
        ld: usize,
        cols: Addr,
        image: Addr,
        dir: Direction,
    ) {
        let ohw = w.oh * w.ow;
        self.for_count(None, w.c, 1, |e, ch| {
            e.for_count(None, w.kh, 1, |e, i| {
                let r = e.b.ins().imul_imm_s(ch, (w.kh * w.kw) as i64);
                let ri = e.b.ins().imul_imm_s(i, w.kw as i64);
                let r = e.b.ins().iadd(r, ri);
                let r = e.b.ins().imul_imm_s(r, ld as i64);
                let tap_row = e.at(cols, r);
                let mut tap_y = e.b.ins().imul_imm_s(i, w.dh as i64);
                if let Some((var, rows)) = first_row {
                    let first = e.b.ins().imul_imm_s(e.vars[&var], (rows * w.sh) as i64);
                    tap_y = e.b.ins().iadd(tap_y, first);
                }
                let (y0, y1) = e.valid_rows(tap_y, w.pad[0], w.sh, w.h, w.oh);
                // Input row of output row 0 (negative in the padding; only valid rows are
                // read), as an element offset into the image.
                let plane = e.b.ins().imul_imm_s(ch, w.h as i64);
                let row0 = e.b.ins().iadd(plane, tap_y);
                let row0 = e.b.ins().iadd_imm_s(row0, -(w.pad[0] as i64));
                let row0 = e.b.ins().imul_imm_s(row0, w.w as i64);
                let image_row0 = e.at(image, row0);
                if dir == Direction::Unfold {
                    // Output rows above and below the image are zero in every column tap.
                    let zero = e.iconst(0);
                    let head = e.b.ins().imul_imm_s(y0, w.ow as i64);
                    let tail = e.b.ins().imul_imm_s(y1, w.ow as i64);
                    let end = e.iconst(ohw as i64);
                    for j in 0..w.kw {
                        let row = e.shift(tap_row, (j * ld * 4) as i64);
                        e.zero_range(row, zero, head);
                        e.zero_range(row, tail, end);
                    }
                }
                // Unfolding visits every column tap of an output row in turn. Folding
                // visits every row of one column tap first: the runs of neighbouring
                // column taps overlap in the image, and adding one right after the other
                // would load what the previous run has just stored.
                let taps: Vec<Vec<usize>> = match dir {
                    Direction::Unfold => vec![(0..w.kw).collect()],
                    Direction::Fold => (0..w.kw).map(|j| vec![j]).collect(),
                };
                for group in taps {
                    e.for_range(None, y0, y1, 1, false, |e, y| {
                        let seg = e.b.ins().imul_imm_s(y, w.ow as i64);
                        let seg = e.at(tap_row, seg);
                        let iy = e.b.ins().imul_imm_s(y, (w.sh * w.w) as i64);
                        let src = e.at(image_row0, iy);
                        for &j in &group {
                            e.tap_run(w, j, ld, seg, src, dir);
                        }
                    });
                }
            });
        });
    }

    /// The run of column tap `j` in one output row: `seg` is the row's start in tap row
    /// 0 of the unfolded matrix, `src` the input row's start in the image.
    fn tap_run(&mut self, w: &Window, j: usize, ld: usize, seg: Addr, src: Addr, dir: Direction) {
        let tap_x = j * w.dw;
        let (x0, x1) = valid_range(tap_x, w.pad[2], w.sw, w.w, w.ow);
        let row = self.shift(seg, (j * ld * 4) as i64);
        if dir == Direction::Unfold {
            self.zero_run(row, 0, x0);
            self.zero_run(row, x1, w.ow);
        }
        let col = self.shift(row, (x0 * 4) as i64);
        let img = self.shift(src, ((x0 * w.sw + tap_x) as i64 - w.pad[2] as i64) * 4);
        self.run(img, col, x1 - x0, w.sw, dir);
    }

    /// Output rows `[lo, hi)` whose input row `pos·stride + tap − pad` lies in `0..size`,
    /// for a row tap known only at run time.
    fn valid_rows(
        &mut self,
        tap: Value,
        pad: usize,
        stride: usize,
        size: usize,
        out: usize,
    ) -> (Value, Value) {
        let zero = self.iconst(0);
        let out_v = self.iconst(out as i64);
        let pad_v = self.iconst(pad as i64);
        let diff = self.b.ins().isub(pad_v, tap);
        // lo = ceil(max(pad − tap, 0) / stride)
        let need = self.imax(diff, zero);
        let need = self.b.ins().iadd_imm_s(need, stride as i64 - 1);
        let lo = self.b.ins().udiv_imm_u(need, stride as i64);
        let lo = self.imin(lo, out_v);
        // hi = floor((size − 1 + pad − tap) / stride) + 1, or 0 when that is negative
        let last = self.b.ins().iadd_imm_s(diff, size as i64 - 1);
        let negative = self.b.ins().icmp(IntCC::SignedLessThan, last, zero);
        let safe = self.imax(last, zero);
        let hi = self.b.ins().udiv_imm_u(safe, stride as i64);
        let hi = self.b.ins().iadd_imm_s(hi, 1);
        let hi = self.b.ins().select(negative, zero, hi);
        let hi = self.imin(hi, out_v);
        let hi = self.imax(hi, lo);
        (lo, hi)
    }

    /// Stores zeros to elements `[from, to)` after `a`, for bounds known at run time.
    fn zero_range(&mut self, a: Addr, from: Value, to: Value) {
        let zero = self.fconst(F32, 0.0);
        self.for_range(None, from, to, 1, false, |e, x| {
            let at = e.at(a, x);
            e.store(zero, at, 0);
        });
    }

    /// Stores zeros to elements `[from, to)` after `a`, for constant bounds.
    fn zero_run(&mut self, a: Addr, from: usize, to: usize) {
        if from >= to {
            return;
        }
        if to - from > UNROLL {
            let (f, t) = (self.iconst(from as i64), self.iconst(to as i64));
            return self.zero_range(a, f, t);
        }
        let zero = self.fconst(F32, 0.0);
        for x in from..to {
            self.store(zero, a, (x * 4) as i32);
        }
    }

    /// Moves one run of `count` elements: `cols[x] = image[x·stride]` when unfolding,
    /// `image[x·stride] += cols[x]` when folding.
    fn run(&mut self, image: Addr, cols: Addr, count: usize, stride: usize, dir: Direction) {
        if count == 0 {
            return;
        }
        if count > UNROLL {
            let zero = self.iconst(0);
            let vec_end = if stride == 1 { count / LANES * LANES } else { 0 };
            if vec_end > 0 {
                let end = self.iconst(vec_end as i64);
                self.for_range(None, zero, end, LANES as i64, true, |e, x| {
                    let (img, col) = (e.at(image, x), e.at(cols, x));
                    e.move_elements(VECTOR, img, col, 0, 0, dir);
                });
            }
            if vec_end < count {
                let (from, to) = (self.iconst(vec_end as i64), self.iconst(count as i64));
                self.for_range(None, from, to, 1, true, |e, x| {
                    let ix = e.b.ins().imul_imm_s(x, stride as i64);
                    let (img, col) = (e.at(image, ix), e.at(cols, x));
                    e.move_elements(F32, img, col, 0, 0, dir);
                });
            }
            return;
        }
        let vec_end = if stride == 1 { count / LANES * LANES } else { 0 };
        for x in (0..vec_end).step_by(LANES) {
            self.move_elements(VECTOR, image, cols, (x * 4) as i32, (x * 4) as i32, dir);
        }
        for x in vec_end..count {
            self.move_elements(F32, image, cols, (x * stride * 4) as i32, (x * 4) as i32, dir);
        }
    }

    /// One scalar or vector move of a run, at byte offsets from `image` and `cols`.
    fn move_elements(
        &mut self,
        ty: Type,
        image: Addr,
        cols: Addr,
        img_bytes: i32,
        col_bytes: i32,
        dir: Direction,
    ) {
        match dir {
            Direction::Unfold => {
                let v = self.load(ty, image, img_bytes, None);
                self.store(v, cols, col_bytes);
            }
            Direction::Fold => {
                let v = self.load(ty, cols, col_bytes, None);
                let old = self.load(ty, image, img_bytes, None);
                let sum = self.b.ins().fadd(old, v);
                self.store(sum, image, img_bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_range;

    /// The constant clipping agrees with checking every output position.
    #[test]
    fn valid_range_matches_a_scan() {
        for size in 1..9 {
            for pad in 0..4 {
                for stride in 1..4 {
                    for tap in 0..7 {
                        let out = 10;
                        let inside: Vec<usize> = (0..out)
                            .filter(|&p| {
                                let at = (p * stride + tap) as i64 - pad as i64;
                                (0..size as i64).contains(&at)
                            })
                            .collect();
                        let (lo, hi) = valid_range(tap, pad, stride, size, out);
                        if inside.is_empty() {
                            assert_eq!(lo, hi, "size {size} pad {pad} stride {stride} tap {tap}");
                        } else {
                            assert_eq!((lo, hi), (inside[0], inside[inside.len() - 1] + 1));
                        }
                    }
                }
            }
        }
    }
}
