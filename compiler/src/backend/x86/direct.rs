//! Convolutions whose tiles read the image where it is. Packing unfolds `k × NR` values
//! of the image per panel, and pays once enough row tiles reuse the panel; a layer with
//! few output channels has one or two row tiles, so packing costs about as much as the
//! tiles do (LeNet-5's C1 has 6 channels and 25 taps, C3 16 and 150). Here a tile's
//! columns are instead whole output rows, each in vectors whose last one is masked, and
//! at stride 1 every tap of an output row is one vector load from the (padded) image at
//! a constant offset: the tiles loop over channels with each channel's taps unrolled.
//! The lanes an output row leaves idle in its last vector are work lost, so this
//! applies where they cost less than packing would.

use super::isa::Simd;
use super::micro::displacement;
use crate::ir::kernel::Window;

/// A convolution's `b` as a tile reads it from the padded image: tap `(ch, ky, kx)` of
/// the output pixel in vector `v` of the tile's output row `r` is at
/// `ch·plane + ky·tap_row + kx·tap_col + r·out_row + 64v` bytes (for 16 lanes) from
/// where the tile's first output row reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Direct {
    /// Pixels in an output row.
    pub ow: usize,
    /// Bytes between the image rows consecutive output rows start at (stride · row).
    pub out_row: i32,
    pub kh: usize,
    pub kw: usize,
    /// Bytes between consecutive taps down a kernel column (dilation · row) and along a
    /// kernel row (dilation · 4).
    pub tap_row: i32,
    pub tap_col: i32,
    /// Bytes between channels, and how many there are.
    pub plane: i32,
    pub channels: usize,
}

/// Most taps per channel: they are unrolled, about 30 instructions each.
const MAX_TAPS: usize = 64;

/// What packing costs per value of `b`, in lane FMAs: about 2.5 cycles a value, which
/// matches the measured choice either way — reading directly was 1.6× faster for
/// LeNet-5's C3 (16 channels of 10-pixel rows: 6 lanes idle in 16), 1.1× for
/// ResNet-18's 64 to 256 channels of 56- to 14-pixel rows (2 in 16), 7 % for
/// ResNet-18-CIFAR's 64 and 128 channels of 32 and 16 pixels (none), and 1.8× slower
/// for its 256 channels of 8 pixels (8 in 16).
const PACK_LANES: usize = 40;

impl Direct {
    /// The layout of `win` (a window without padding, see [`super::pack::padded`]) for
    /// tiles of up to `out_rows` output rows, if its offsets fit instruction
    /// displacements.
    pub fn new(win: &Window, out_rows: usize) -> Option<Direct> {
        let row = 4 * win.w;
        let last = (out_rows.checked_sub(1)?)
            .checked_mul(win.sh * row)?
            .checked_add((win.kh - 1).checked_mul(win.dh * row)?)?
            .checked_add((win.kw - 1).checked_mul(win.dw * 4)?)?
            .checked_add(4 * win.ow.next_multiple_of(16))?;
        displacement(last)?;
        Some(Direct {
            ow: win.ow,
            out_row: displacement(win.sh * row)?,
            kh: win.kh,
            kw: win.kw,
            tap_row: displacement(win.dh * row)?,
            tap_col: displacement(win.dw * 4)?,
            plane: displacement(win.h.checked_mul(row)?)?,
            channels: win.c,
        })
    }

    /// The offsets of one channel's taps, in the order of `k` (kernel row, then column).
    pub fn taps(&self) -> impl Iterator<Item = i32> + use<> {
        let d = *self;
        (0..d.kh as i32).flat_map(move |ky| (0..d.kw as i32).map(move |kx| ky * d.tap_row + kx * d.tap_col))
    }
}

/// The register tile `(rows, output rows)` for an `m`-channel convolution of `n` output
/// pixels through `win` read directly, or `None` where packing serves it better or the
/// tiles cannot read it so: a stride along rows, outputs that are not whole rows, or too
/// many taps.
pub fn shape<S: Simd>(m: usize, n: usize, win: &Window) -> Option<(usize, usize)> {
    let ow = win.ow;
    if win.sw != 1 || ow == 0 || n == 0 || !n.is_multiple_of(ow) || win.kh * win.kw > MAX_TAPS {
        return None;
    }
    // Each idle lane costs an FMA per output channel.
    let per_row = ow.div_ceil(S::LANES);
    if m * (per_row * S::LANES - ow) > PACK_LANES * ow {
        return None;
    }
    let out_rows = n / ow;
    // Of the set's shapes that hold a whole output row, the one whose tiles take the
    // fewest cycles: each step of `k` is bound by its FMAs or by its loads (two a cycle),
    // so remainder tiles of few rows or output rows count what they waste.
    let cost = |(mr, r): (usize, usize)| {
        let tile =
            |rows: usize, outs: usize| (rows * outs * per_row).max((rows + outs * per_row).div_ceil(2));
        let (full_m, rest_m) = (m / mr, m % mr);
        let (full_n, rest_n) = (out_rows / r, out_rows % r);
        let mut cycles = full_m * full_n * tile(mr, r);
        cycles += full_m * rest_n.min(1) * tile(mr, rest_n);
        cycles += rest_m.min(1) * full_n * tile(rest_m, r);
        cycles += rest_m.min(1) * rest_n.min(1) * tile(rest_m, rest_n);
        cycles
    };
    S::SHAPES
        .iter()
        .filter(|&&(_, nv)| nv >= per_row)
        .map(|&(rows, nv)| (rows, (nv / per_row).min(out_rows)))
        .min_by_key(|&s| cost(s))
}
