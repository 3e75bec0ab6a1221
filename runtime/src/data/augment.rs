//! On-the-fly augmentation of one image, stored row-major as `[c, h, w]` f32.
//!
//! Apply these to raw pixels (scaled to 0..1) and normalise afterwards, as torchvision
//! does (its `RandomCrop` pads the image before `ToTensor` and `Normalize`). The order
//! matters for padding: a padded zero is then a black pixel, the background of digits and
//! the usual border of photos. Padding after normalisation would instead fill the border
//! with the dataset's mean grey, a value the network never sees at the edges in testing.

use crate::init::Rng;
use std::ops::Range;

/// Pads `image` with `pad` zeros on every side and crops an `h`×`w` window back out of it,
/// at an offset drawn uniformly from `0..=2*pad` along each axis (rows first, then
/// columns, as torchvision draws them). The same offset applies to every channel.
///
/// # Panics
/// If `image` or `out` does not hold `c * h * w` values: the buffers are sized from the
/// compiled network's input, so a mismatch is a bug rather than bad data.
pub fn random_crop(image: &[f32], c: usize, h: usize, w: usize, pad: usize, rng: &mut Rng, out: &mut [f32]) {
    check_len("image", image.len(), c, h, w);
    check_len("output", out.len(), c, h, w);
    let span = 2 * pad as u64 + 1;
    let dy = rng.below(span) as isize - pad as isize;
    let dx = rng.below(span) as isize - pad as isize;
    let columns = overlap(w, dx);
    for (row, out_row) in out.chunks_exact_mut(w.max(1)).enumerate() {
        let (channel, y) = (row / h, row % h);
        let source_y = y as isize + dy;
        out_row.fill(0.0);
        if (0..h as isize).contains(&source_y) && !columns.is_empty() {
            let start = (channel * h + source_y as usize) * w;
            let source = &image[start..start + w];
            let from = (columns.start as isize + dx) as usize;
            out_row[columns.clone()].copy_from_slice(&source[from..from + columns.len()]);
        }
    }
}

/// The output positions along an axis of length `len` whose source position `x + shift`
/// lies inside the image; empty when the shift moves past the whole axis (`pad > len`).
fn overlap(len: usize, shift: isize) -> Range<usize> {
    let start = (-shift).clamp(0, len as isize) as usize;
    let end = (len as isize - shift).clamp(0, len as isize) as usize;
    start..end.max(start)
}

/// Mirrors every row of `image` left to right (every channel alike). Whether to flip is
/// the caller's draw, typically with probability one half.
///
/// # Panics
/// If `image` does not hold `c * h * w` values (see `random_crop`).
pub fn hflip(image: &mut [f32], c: usize, h: usize, w: usize) {
    check_len("image", image.len(), c, h, w);
    image.chunks_exact_mut(w.max(1)).for_each(|row| row.reverse());
}

fn check_len(what: &str, len: usize, c: usize, h: usize, w: usize) {
    assert_eq!(
        len,
        c * h * w,
        "augmentation {what} buffer has {len} values, but [{c}, {h}, {w}] needs {}",
        c * h * w
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Random crop done the obvious way: build the padded image, then cut the window.
    fn reference_crop(
        image: &[f32],
        c: usize,
        h: usize,
        w: usize,
        pad: usize,
        oy: usize,
        ox: usize,
    ) -> Vec<f32> {
        let (ph, pw) = (h + 2 * pad, w + 2 * pad);
        let mut padded = vec![0.0; c * ph * pw];
        for ch in 0..c {
            for y in 0..h {
                for x in 0..w {
                    padded[(ch * ph + y + pad) * pw + x + pad] = image[(ch * h + y) * w + x];
                }
            }
        }
        let mut out = Vec::with_capacity(c * h * w);
        for ch in 0..c {
            for y in 0..h {
                out.extend_from_slice(&padded[(ch * ph + y + oy) * pw + ox..][..w]);
            }
        }
        out
    }

    /// An image whose values are all distinct and non-zero, so a misplaced one shows.
    fn numbered(n: usize) -> Vec<f32> {
        (1..=n).map(|v| v as f32).collect()
    }

    #[test]
    fn crop_matches_pad_then_cut() {
        for (c, h, w, pad) in [(1, 5, 4, 2), (3, 4, 6, 1), (2, 3, 3, 4), (1, 1, 7, 3)] {
            let image = numbered(c * h * w);
            let mut out = vec![f32::NAN; image.len()];
            for seed in 0..50 {
                let mut rng = Rng::new(seed);
                let mut draws = rng.clone();
                let span = 2 * pad as u64 + 1;
                let (oy, ox) = (draws.below(span) as usize, draws.below(span) as usize);
                random_crop(&image, c, h, w, pad, &mut rng, &mut out);
                assert_eq!(
                    out,
                    reference_crop(&image, c, h, w, pad, oy, ox),
                    "[{c}, {h}, {w}] pad {pad} at ({oy}, {ox})"
                );
                assert_eq!(rng.next_u64(), draws.next_u64(), "two draws per crop");
            }
        }
    }

    #[test]
    fn crop_offsets_cover_every_position() {
        let (h, w, pad) = (3, 3, 2);
        let image = numbered(h * w);
        let mut out = vec![0.0; h * w];
        let mut rng = Rng::new(7);
        let mut seen = [[false; 5]; 5];
        for _ in 0..500 {
            random_crop(&image, 1, h, w, pad, &mut rng, &mut out);
            // Every offset shows a different part of the numbered image, so exactly one fits.
            let fits: Vec<(usize, usize)> = (0..5)
                .flat_map(|oy| (0..5).map(move |ox| (oy, ox)))
                .filter(|&(oy, ox)| reference_crop(&image, 1, h, w, pad, oy, ox) == out)
                .collect();
            assert_eq!(fits.len(), 1, "{out:?}");
            seen[fits[0].0][fits[0].1] = true;
        }
        assert!(seen.iter().flatten().all(|&s| s), "{seen:?}");
    }

    #[test]
    fn no_padding_is_the_identity() {
        let image = numbered(2 * 3 * 4);
        let mut out = vec![0.0; image.len()];
        random_crop(&image, 2, 3, 4, 0, &mut Rng::new(3), &mut out);
        assert_eq!(out, image);
    }

    #[test]
    fn empty_images_are_fine() {
        let mut out = [];
        random_crop(&[], 0, 28, 28, 2, &mut Rng::new(1), &mut out);
        random_crop(&[], 1, 28, 0, 2, &mut Rng::new(1), &mut out);
        hflip(&mut out, 3, 0, 5);
    }

    #[test]
    #[should_panic(expected = "augmentation output buffer has 3 values, but [1, 2, 2] needs 4")]
    fn wrong_buffer_sizes_are_bugs() {
        random_crop(&[0.0; 4], 1, 2, 2, 1, &mut Rng::new(1), &mut [0.0; 3]);
    }

    #[test]
    fn hflip_mirrors_each_row_of_each_channel() {
        let mut image = numbered(2 * 2 * 3);
        hflip(&mut image, 2, 2, 3);
        assert_eq!(image, [3.0, 2.0, 1.0, 6.0, 5.0, 4.0, 9.0, 8.0, 7.0, 12.0, 11.0, 10.0]);
        hflip(&mut image, 2, 2, 3);
        assert_eq!(image, numbered(12));
    }
}
