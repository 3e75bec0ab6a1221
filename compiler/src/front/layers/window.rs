//! Sliding-window size arithmetic shared by `conv`, `maxpool` and `avgpool`.

use super::ShapeError;
use super::args::Padding;

/// A 2-D window: kernel, stride, dilation and padding, per axis as (height, width).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Window {
    pub kernel: (u64, u64),
    pub stride: (u64, u64),
    pub dilation: (u64, u64),
    pub pad: Padding,
    /// Round the output size up (PyTorch's `ceil_mode`), as GoogLeNet's pools do.
    pub ceil: bool,
}

/// Output size and the concrete padding `[top, bottom, left, right]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub out: (u64, u64),
    pub pad: [u64; 4],
}

impl Window {
    pub fn place(&self, kind: &str, h: u64, w: u64) -> Result<Placement, ShapeError> {
        let pads = match self.pad {
            Padding::Explicit { top, bottom, left, right } => [top, bottom, left, right],
            Padding::Valid => [0; 4],
            Padding::Same => {
                let (t, b) = same(h, self.kernel.0, self.stride.0, self.dilation.0);
                let (l, r) = same(w, self.kernel.1, self.stride.1, self.dilation.1);
                [t, b, l, r]
            }
        };
        let oh = self.axis(h, self.kernel.0, self.stride.0, self.dilation.0, pads[0], pads[1]);
        let ow = self.axis(w, self.kernel.1, self.stride.1, self.dilation.1, pads[2], pads[3]);
        match (oh, ow) {
            (Some(oh), Some(ow)) => Ok(Placement { out: (oh, ow), pad: pads }),
            _ => Err(self.does_not_fit(kind, h, w, pads)),
        }
    }

    /// Output length along one axis, or `None` if the window does not fit even once.
    fn axis(&self, input: u64, k: u64, s: u64, d: u64, p0: u64, p1: u64) -> Option<u64> {
        let span = d.checked_mul(k - 1)?.checked_add(1)?;
        let padded = input.checked_add(p0)?.checked_add(p1)?;
        if padded < span {
            return None;
        }
        let room = padded - span;
        if !self.ceil {
            return Some(room / s + 1);
        }
        let mut out = room.div_ceil(s) + 1;
        // As PyTorch: the last window must start inside the input or the left padding.
        if (out - 1) * s >= input + p0 {
            out -= 1;
        }
        Some(out)
    }

    fn does_not_fit(&self, kind: &str, h: u64, w: u64, pads: [u64; 4]) -> ShapeError {
        let (kh, kw) = self.kernel;
        let (dh, dw) = self.dilation;
        let (eh, ew) = (dh.saturating_mul(kh - 1) + 1, dw.saturating_mul(kw - 1) + 1);
        let dilated = if (dh, dw) != (1, 1) { format!(" (dilated to {eh}×{ew})") } else { String::new() };
        let padded = if pads.iter().any(|&p| p > 0) {
            format!(" padded to {}×{}", h + pads[0] + pads[1], w + pads[2] + pads[3])
        } else {
            String::new()
        };
        let e = ShapeError::new(
            format!(
                "`{kind}` window {kh}×{kw}{dilated} does not fit its {h}×{w} input{padded}; the output would be empty"
            ),
            format!("window is larger than the {h}×{w} input"),
        );
        let (ph, pw) = (eh.saturating_sub(h).div_ceil(2), ew.saturating_sub(w).div_ceil(2));
        e.help(format!(
            "use a smaller window, remove an earlier downsampling step, or pad the input (`pad: {}`)",
            ph.max(pw)
        ))
    }
}

impl Window {
    /// The window over a batch of `[c, h, w]` images, for lowering (shapes are checked).
    pub fn batched(&self, n: usize, c: u64, h: u64, w: u64) -> crate::ir::ops::Window2d {
        let p = self.place("", h, w).expect("lowering runs on checked shapes");
        let u = |x: u64| x as usize;
        crate::ir::ops::Window2d {
            n,
            c: u(c),
            h: u(h),
            w: u(w),
            kh: u(self.kernel.0),
            kw: u(self.kernel.1),
            sh: u(self.stride.0),
            sw: u(self.stride.1),
            dh: u(self.dilation.0),
            dw: u(self.dilation.1),
            pad: p.pad.map(u),
            oh: u(p.out.0),
            ow: u(p.out.1),
        }
    }
}

/// TensorFlow's `same` padding: output `ceil(input / stride)`, the odd pixel at the end.
fn same(input: u64, k: u64, s: u64, d: u64) -> (u64, u64) {
    let out = input.div_ceil(s);
    let span = d.saturating_mul(k - 1) + 1;
    let total = ((out - 1) * s + span).saturating_sub(input);
    (total / 2, total - total / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn win(k: u64, s: u64, p: u64, ceil: bool) -> Window {
        Window {
            kernel: (k, k),
            stride: (s, s),
            dilation: (1, 1),
            pad: Padding::Explicit { top: p, bottom: p, left: p, right: p },
            ceil,
        }
    }

    #[test]
    fn floor_and_ceil_modes_match_pytorch() {
        // GoogLeNet: 112 -> maxpool(3, 2, ceil) -> 56; floor mode gives 55.
        assert_eq!(win(3, 2, 0, true).place("maxpool", 112, 112).unwrap().out, (56, 56));
        assert_eq!(win(3, 2, 0, false).place("maxpool", 112, 112).unwrap().out, (55, 55));
        // The last window may not start in the right padding.
        assert_eq!(win(2, 2, 1, true).place("maxpool", 5, 5).unwrap().out, (3, 3));
    }

    #[test]
    fn same_padding_keeps_size_over_stride() {
        let w = Window { pad: Padding::Same, ..win(3, 2, 0, false) };
        let p = w.place("conv", 7, 8).unwrap();
        assert_eq!(p.out, (4, 4));
        assert_eq!(p.pad, [1, 1, 0, 1]);
    }

    #[test]
    fn window_larger_than_input_is_an_error() {
        let e = win(5, 1, 0, false).place("conv", 3, 3).unwrap_err();
        assert!(e.message.contains("5×5"), "{}", e.message);
        assert!(e.message.contains("3×3"), "{}", e.message);
    }
}
