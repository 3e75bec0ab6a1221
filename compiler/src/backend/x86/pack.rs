//! Packing: the operands of a product copied into the order its tiles read them —
//! `a` into slivers of `MR` rows, `b` into panels of `NR` columns, an image unfolded
//! into panels, and an image with padding copied once with its padding as zeros.

use super::b_sums::Running;
use super::product::Product;
use crate::ir::kernel::Window;

impl Product {
    /// Packs all of `a` into slivers of `MR` rows (`k`-major within a sliver); the rows
    /// past `m` in the last sliver are left as they are, since its tile does not read them.
    pub(super) unsafe fn pack_a(&self, a: *const f32, dst: *mut f32) {
        let (mr, k) = (self.mr, self.k);
        for i in (0..self.m).step_by(mr) {
            let rows = mr.min(self.m - i);
            // SAFETY: `a` holds the product's `m × k` operand; `dst` holds every sliver.
            unsafe {
                let s = dst.add(i * k);
                if self.ta {
                    for p in 0..k {
                        std::ptr::copy_nonoverlapping(a.add(p * self.lda + i), s.add(p * mr), rows);
                    }
                } else {
                    for r in 0..rows {
                        let row = a.add((i + r) * self.lda);
                        for p in 0..k {
                            *s.add(p * mr + r) = *row.add(p);
                        }
                    }
                }
            }
        }
    }

    /// Packs columns `0..nb` of `k` rows of `b` (already offset to the block) into
    /// panels of `NR` columns, `k × NR` each, zero past the last column; with `sums`,
    /// adds each row to them as it copies it (`b` starting at row `p0` and column `j` of
    /// theirs).
    pub(super) unsafe fn pack_b(
        &self,
        b: *const f32,
        (nb, k): (usize, usize),
        dst: *mut f32,
        sums: Sums<'_>,
    ) {
        // SAFETY: as the caller promised; each copy runs only where the CPU has its set.
        unsafe {
            if sums.is_some() && std::arch::is_x86_feature_detected!("avx512f") {
                self.pack_b_avx512(b, (nb, k), dst, sums)
            } else if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                self.pack_b_avx2(b, (nb, k), dst, sums)
            } else {
                self.pack_b_any(b, (nb, k), dst, sums)
            }
        }
    }

    /// [`Product::pack_b`] compiled for AVX2: its fixed-size copies are then 256-bit moves
    /// rather than SSE's 128-bit ones.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pack_b_avx2(&self, b: *const f32, shape: (usize, usize), dst: *mut f32, sums: Sums<'_>) {
        // SAFETY: as the caller promised.
        unsafe { self.pack_b_any(b, shape, dst, sums) }
    }

    /// [`Product::pack_b`] with sums, compiled for AVX-512: their conversions, additions
    /// and FMAs sixteen floats at a time.
    #[target_feature(enable = "avx512f")]
    unsafe fn pack_b_avx512(&self, b: *const f32, shape: (usize, usize), dst: *mut f32, sums: Sums<'_>) {
        // SAFETY: as the caller promised.
        unsafe { self.pack_b_any(b, shape, dst, sums) }
    }

    /// Rows a kilobyte or more apart (an LSTM's 2,048 × 1,024 `dq` for its `W_hh`
    /// gradient) are each a short run in another page, which the hardware prefetchers do
    /// not follow: each row's run is prefetched [`PREFETCH_ROWS`] rows ahead.
    #[inline(always)]
    unsafe fn pack_b_any(&self, b: *const f32, (nb, k): (usize, usize), dst: *mut f32, mut sums: Sums<'_>) {
        let nr = self.nr;
        let far = self.ldb >= 256;
        for jr in (0..nb).step_by(nr) {
            let cols = nr.min(nb - jr);
            // SAFETY: `b` holds `k` rows of `ldb`, `nb` columns from this block; `dst`
            // holds the block's panels. A prefetch reads nothing (it cannot fault).
            unsafe {
                let panel = dst.add(jr * k);
                let mut strip = sums.as_ref().and_then(|(s, (_, j))| s.strip(j + jr, cols));
                for p in 0..k {
                    if far && p + PREFETCH_ROWS < k {
                        prefetch_run(b.add((p + PREFETCH_ROWS) * self.ldb + jr), cols);
                    }
                    let from = b.add(p * self.ldb + jr);
                    let to = panel.add(p * nr);
                    copy(from, to, cols);
                    if let Some((sums, (p0, j))) = &mut sums {
                        sums.add_row(from, *p0 + p, (*j + jr, cols), strip.as_mut());
                    }
                    if cols < nr {
                        zero(to.add(cols), nr - cols);
                    }
                }
                if let (Some((sums, (_, j))), Some(strip)) = (&mut sums, strip) {
                    sums.put(*j + jr, strip);
                }
            }
        }
    }
}

/// Sums of `b` that packing adds each row to, with the row and column of `b` it starts at.
pub(super) type Sums<'a> = Option<(&'a mut Running, (usize, usize))>;

/// Asks for the cache lines of the `n` floats from `p` to be brought into L1, for a run
/// in a page the hardware prefetchers have not entered yet.
#[inline(always)]
pub(super) fn prefetch_run(p: *const f32, n: usize) {
    use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
    for line in (0..n).step_by(16) {
        // SAFETY: a prefetch reads nothing and cannot fault, wherever it points.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(p.wrapping_add(line).cast()) };
    }
}

/// How many rows ahead [`Product::pack_b`] prefetches rows that lie far apart.
const PREFETCH_ROWS: usize = 8;

/// Copies `n` floats in fixed-size pieces of 16, 8, 4 and single floats. The runs packing
/// copies are short (an output row of a small image: 10 floats in LeNet-5's C3), and a
/// call per run cost more than the copy: `memmove` and `memset` called from the packing
/// took a quarter of LeNet-5's inference time at batch 256.
///
/// # Safety
/// As [`std::ptr::copy_nonoverlapping`].
#[inline(always)]
unsafe fn copy(from: *const f32, to: *mut f32, n: usize) {
    // SAFETY: as the caller promised; the arrays are read and written unaligned, each
    // within the first `n` floats.
    unsafe {
        let mut at = 0;
        while at + 16 <= n {
            to.add(at).cast::<[f32; 16]>().write_unaligned(from.add(at).cast::<[f32; 16]>().read_unaligned());
            at += 16;
        }
        if at + 8 <= n {
            to.add(at).cast::<[f32; 8]>().write_unaligned(from.add(at).cast::<[f32; 8]>().read_unaligned());
            at += 8;
        }
        if at + 4 <= n {
            to.add(at).cast::<[f32; 4]>().write_unaligned(from.add(at).cast::<[f32; 4]>().read_unaligned());
            at += 4;
        }
        while at < n {
            *to.add(at) = *from.add(at);
            at += 1;
        }
    }
}

/// Writes `n` zeros, in pieces as [`copy`] copies.
///
/// # Safety
/// As [`std::ptr::write_bytes`].
#[inline(always)]
unsafe fn zero(to: *mut f32, n: usize) {
    // SAFETY: as the caller promised; each write is within the first `n` floats.
    unsafe {
        let mut at = 0;
        while at + 16 <= n {
            to.add(at).cast::<[f32; 16]>().write_unaligned([0.0; 16]);
            at += 16;
        }
        if at + 8 <= n {
            to.add(at).cast::<[f32; 8]>().write_unaligned([0.0; 8]);
            at += 8;
        }
        if at + 4 <= n {
            to.add(at).cast::<[f32; 4]>().write_unaligned([0.0; 4]);
            at += 4;
        }
        while at < n {
            *to.add(at) = 0.0;
            at += 1;
        }
    }
}

/// Most pixels of a panel, and so most runs along output rows one can span.
pub const MAX_NR: usize = 64;

/// What [`Product::pack_image`] packs: output pixels `first..first + count` of the image
/// at `x` unfolded through `win`, taps `taps.0..taps.0 + taps.1`.
#[derive(Clone, Copy)]
pub(super) struct Pixels<'w> {
    pub(super) x: *const f32,
    pub(super) win: &'w Window,
    pub(super) first: usize,
    pub(super) count: usize,
    pub(super) taps: (usize, usize),
}

impl Product {
    /// Packs `pixels` into panels of `NR` columns, as [`Product::pack_b`] packs a matrix:
    /// row `p` of a panel is kernel tap `taps.0 + p` (taps ordered by channel, then kernel
    /// row, then column) of each pixel, for `p < taps.1`, 0 in the padding and past the
    /// last pixel. Each panel's
    /// pixels are split once into runs along output rows; a run whose taps lie inside the
    /// image at stride 1 is one copy.
    pub(super) unsafe fn pack_image(&self, pixels: Pixels, dst: *mut f32) {
        // SAFETY: as the caller promised; the AVX2 copy runs only where the CPU has AVX2.
        unsafe {
            if std::arch::is_x86_feature_detected!("avx2") {
                self.pack_image_avx2(pixels, dst)
            } else {
                self.pack_image_any(pixels, dst)
            }
        }
    }

    /// [`Product::pack_image`] compiled for AVX2 (see [`Product::pack_b_avx2`]).
    #[target_feature(enable = "avx2")]
    unsafe fn pack_image_avx2(&self, pixels: Pixels, dst: *mut f32) {
        // SAFETY: as the caller promised.
        unsafe { self.pack_image_any(pixels, dst) }
    }

    #[inline(always)]
    unsafe fn pack_image_any(&self, pixels: Pixels, dst: *mut f32) {
        let Pixels { x, win, first, count: nb, taps: (p0, k) } = pixels;
        let nr = self.nr;
        let (h, w) = (win.h as isize, win.w as isize);
        let (top, left) = (win.pad[0] as isize, win.pad[2] as isize);
        for jr in (0..nb).step_by(nr) {
            let cols = nr.min(nb - jr);
            // (column in the panel, output row, output column, length)
            let mut runs = [(0usize, 0usize, 0usize, 0usize); MAX_NR];
            let mut count = 0;
            let mut j = 0;
            while j < cols {
                let pixel = first + jr + j;
                let (oy, ox) = (pixel / win.ow, pixel % win.ow);
                let len = (win.ow - ox).min(cols - j);
                runs[count] = (j, oy, ox, len);
                count += 1;
                j += len;
            }
            // SAFETY: `x` holds the `c × h × w` image; `dst` holds the block's panels, and
            // every read below is checked to lie inside the image.
            unsafe {
                let panel = dst.add(jr * k);
                for &(at, oy, ox, len) in &runs[..count] {
                    let x0 = (ox * win.sw) as isize - left;
                    let mut row = panel.add(at);
                    // The first tap's channel, kernel row and column; then whole rows.
                    let (mut ch, mut ky0, mut kx0) =
                        (p0 / (win.kh * win.kw), p0 / win.kw % win.kh, p0 % win.kw);
                    let mut taps = k;
                    while taps > 0 {
                        let plane = x.add(ch * win.h * win.w);
                        for ky in ky0..win.kh {
                            let here = (win.kw - kx0).min(taps);
                            let iy = (oy * win.sh + ky * win.dh) as isize - top;
                            if iy < 0 || iy >= h {
                                for _ in 0..here {
                                    zero(row, len);
                                    row = row.add(nr);
                                }
                            } else {
                                let line = plane.offset(iy * w);
                                for kx in kx0..kx0 + here {
                                    let ix0 = x0 + (kx * win.dw) as isize;
                                    if win.sw == 1 && ix0 >= 0 && ix0 + len as isize <= w {
                                        copy(line.offset(ix0), row, len);
                                    } else {
                                        clipped(line, w, ix0, win.sw, row, len);
                                    }
                                    row = row.add(nr);
                                }
                            }
                            taps -= here;
                            kx0 = 0;
                            if taps == 0 {
                                break;
                            }
                        }
                        ky0 = 0;
                        ch += 1;
                    }
                }
                if cols < nr {
                    for p in 0..k {
                        zero(panel.add(p * nr + cols), nr - cols);
                    }
                }
            }
        }
    }
}

/// The window over `win`'s image with its padding written out (see [`pad_image`]).
pub fn padded(win: &Window) -> Window {
    let [top, bottom, left, right] = win.pad;
    Window { h: top + win.h + bottom, w: left + win.w + right, pad: [0; 4], ..*win }
}

/// Copies the `c × h × w` image at `x` into `dst` as the `c × (h + top + bottom) × (w +
/// left + right)` image with `win`'s padding as zeros.
///
/// # Safety
/// `x` must hold the image and `dst` the padded one.
pub(super) unsafe fn pad_image(x: *const f32, win: &Window, dst: *mut f32) {
    let [top, bottom, left, right] = win.pad;
    let w = left + win.w + right;
    // SAFETY: as the caller promised; every write is inside the padded image and every
    // read inside the image.
    unsafe {
        let mut to = dst;
        for ch in 0..win.c {
            zero(to, top * w);
            to = to.add(top * w);
            for y in 0..win.h {
                zero(to, left);
                copy(x.add((ch * win.h + y) * win.w), to.add(left), win.w);
                zero(to.add(left + win.w), right);
                to = to.add(w);
            }
            zero(to, bottom * w);
            to = to.add(bottom * w);
        }
    }
}

/// `out[t] = line[ix0 + t · stride]` for `t < len`, 0 where that lies outside `0..w`.
///
/// # Safety
/// `line` must hold `w` floats and `out` `len`.
unsafe fn clipped(line: *const f32, w: isize, ix0: isize, stride: usize, out: *mut f32, len: usize) {
    let sw = stride as isize;
    // The pixels whose tap lies inside the row: `lo..hi` (without a division at stride 1,
    // the padded border of most convolutions).
    let (lo, hi) = if sw == 1 {
        let lo = (-ix0).clamp(0, len as isize);
        (lo, (w - ix0).clamp(lo, len as isize))
    } else {
        let lo = if ix0 >= 0 { 0 } else { ((-ix0 + sw - 1) / sw).min(len as isize) };
        (lo, if ix0 >= w { lo } else { ((w - ix0 + sw - 1) / sw).clamp(lo, len as isize) })
    };
    let (lo, hi) = (lo as usize, hi as usize);
    // SAFETY: as the caller promised; `ix0 + t · stride` is inside the row for `lo ≤ t < hi`.
    unsafe {
        zero(out, lo);
        zero(out.add(hi), len - hi);
        let from = line.offset(ix0 + lo as isize * sw);
        if stride == 1 {
            copy(from, out.add(lo), hi - lo);
        } else {
            for t in 0..hi - lo {
                *out.add(lo + t) = *from.add(t * stride);
            }
        }
    }
}
