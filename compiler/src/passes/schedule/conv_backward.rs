//! Convolution gradients as products: the input gradient through the weights read
//! transposed and `col2im`, the weight gradient accumulated over images in scratch.

use super::Build;
use super::body::window;
use super::train::zero;
use crate::backend::Geometry;
use crate::ir::kernel::*;
use BinOp::*;

impl Build<'_> {
    /// dx of a convolution, per image: the unfolded gradient `Wᵀ · dy` (the weights read
    /// transposed), folded back onto the image; a 1×1 convolution writes `dx` directly.
    pub(super) fn conv_backward_data(
        &mut self,
        win: &crate::ir::ops::Window2d,
        k: usize,
        groups: usize,
        dy: Ptr,
        weight: Ptr,
        dx: Ptr,
    ) -> (Vec<Stmt>, Parallel) {
        let (cg, kg) = (win.c / groups, k / groups);
        let (ohw, hw) = (win.oh * win.ow, win.h * win.w);
        let kk = cg * win.kh * win.kw;
        let n = self.var();
        let g = (groups > 1).then(|| self.var());
        let at_group = |p: Ptr, coef: usize| match g {
            Some(g) => p.plus_var(g, coef),
            None => p,
        };
        let dy_n = at_group(dy.plus_var(n, k * ohw), kg * ohw);
        let dx_n = at_group(dx.plus_var(n, win.c * hw), cg * hw);
        let w_g = at_group(weight, kg * kk);
        let mut stmts = Vec::new();
        if super::body::direct(win) {
            stmts.push(Stmt::Gemm(Gemm {
                m: cg,
                n: ohw,
                k: kg,
                a: w_g,
                lda: kk,
                ta: true,
                b: Right::Matrix { ptr: dy_n, ld: ohw },
                c: dx_n,
                ldc: hw,
                epilogue: Vec::new(),
                sparse_a: false,
                b_sums: Vec::new(),
            }));
        } else {
            let ld = super::body::unaliased(ohw, self.geometry.pad);
            let col = self.scratch(kk * ld);
            stmts.push(Stmt::Gemm(Gemm {
                m: kk,
                n: ohw,
                k: kg,
                a: w_g,
                lda: kk,
                ta: true,
                b: Right::Matrix { ptr: dy_n, ld: ohw },
                c: col.clone(),
                ldc: ld,
                epilogue: Vec::new(),
                sparse_a: false,
                b_sums: Vec::new(),
            }));
            stmts.push(zero(dx_n.clone(), cg * hw));
            let mut w = window(win);
            w.c = cg;
            stmts.push(Stmt::Col2im(Col2im { cols: col, ld, image: dx_n, win: w }));
        }
        let per_image = match g {
            Some(g) => vec![Stmt::Loop { var: g, extent: groups, body: stmts }],
            None => stmts,
        };
        let work = win.n * k * ohw * kk;
        (vec![Stmt::Loop { var: n, extent: win.n, body: per_image }], self.parallel(win.n, work))
    }

    /// dW of a convolution as `dWᵀ = Σₙ col(xₙ) · dyₙᵀ`, over chunks of images unfolded
    /// side by side, accumulated in scratch and transposed into place at the end. Threads split the input channels (each unfolds
    /// only its own rows of `col`), or the groups, or — with `parts` — the images, each
    /// part writing its own partial sum.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn conv_backward_weight(
        &mut self,
        win: &crate::ir::ops::Window2d,
        k: usize,
        groups: usize,
        parts: usize,
        dy: Ptr,
        x: Ptr,
        dw: Ptr,
    ) -> (Vec<Stmt>, Parallel) {
        let (cg, kg) = (win.c / groups, k / groups);
        let (ohw, hw) = (win.oh * win.ow, win.h * win.w);
        let taps = win.kh * win.kw;
        let kk = cg * taps;
        // Channel blocks per group: one per thread where they divide evenly.
        let blocks = if groups > 1 || parts > 1 {
            1
        } else {
            (1..=self.threads.min(cg)).rev().find(|b| cg % b == 0).unwrap_or(1)
        };
        let cb = cg / blocks;
        let kkb = cb * taps;
        debug_assert!(groups == 1 || parts == 1, "weight gradients split by group or by images");
        let images = win.n / parts;
        let unit = self.var();
        // `unit` is the group, the part (images `unit · images ..`) or the channel block.
        let (group_coef, part_coef, block_coef) = match (groups > 1, parts > 1) {
            (true, _) => (1, 0, 0),
            (false, true) => (0, 1, 0),
            (false, false) => (0, 0, 1),
        };
        // `per_group`, `per_part` and `per_block` elements from one unit to the next.
        let at = |p: Ptr, per_group: usize, per_part: usize, per_block: usize| {
            p.plus_var(unit, group_coef * per_group + part_coef * per_part + block_coef * per_block)
        };
        // The product's columns are the output channels: rounded up to the padding (the
        // extra columns hold garbage that is never read), a 6-wide product runs as fast
        // as an 8-wide one instead of at a third of the speed. Whole vectors need no
        // padding, and past eight vectors the scalar remainder is a small part.
        let Geometry { lanes, pad, .. } = self.geometry;
        let kp = if kg.is_multiple_of(lanes) || kg > 8 * lanes { kg } else { kg.div_ceil(pad) * pad };
        // Images per product: a product over one small image (4 × 4 pixels) has a `k` of
        // 16 and reads and writes the whole accumulator for it, so the images of a chunk
        // are unfolded side by side and multiplied at once, up to about 512 pixels. A
        // 1×1 convolution reads its images in place, one at a time.
        let direct = super::body::direct(win);
        let per = if direct {
            1
        } else {
            (1..=images).rev().find(|c| images.is_multiple_of(*c) && c * ohw <= 512).unwrap_or(1)
        };
        let pixels = per * ohw;
        let dyt = self.scratch(pixels * kp);
        let acc = self.scratch(kkb * kp);
        let (col, ld) = if direct {
            (None, hw)
        } else {
            let ld = super::body::unaliased(pixels, self.geometry.pad);
            (Some(self.scratch(kkb * ld)), ld)
        };
        let mut body = Vec::new();
        for first in [true, false] {
            let n = self.var();
            let j = self.var();
            // Image `j` of chunk `n` (of the first chunk when `first`).
            let image = |p: Ptr, per_image: usize| {
                let p = if per > 1 { p.plus_var(j, per_image) } else { p };
                if first { p } else { p.plus(per * per_image).plus_var(n, per * per_image) }
            };
            let x_n = at(image(x.clone(), win.c * hw), cg * hw, images * win.c * hw, cb * hw);
            let dy_n = at(image(dy.clone(), k * ohw), kg * ohw, images * k * ohw, 0);
            let mut unfold = Vec::new();
            let a = match &col {
                Some(col) => {
                    let mut w = window(win);
                    w.c = cb;
                    unfold.push(Stmt::Im2col(Im2col {
                        src: x_n,
                        dst: if per > 1 { col.plus_var(j, ohw) } else { col.clone() },
                        ld,
                        win: w,
                        first_row: None,
                    }));
                    col.clone()
                }
                None => x_n,
            };
            unfold.push(Stmt::Transpose(Transpose {
                src: dy_n,
                lds: ohw,
                dst: if per > 1 { dyt.plus_var(j, ohw * kp) } else { dyt.clone() },
                ldd: kp,
                rows: kg,
                cols: ohw,
            }));
            let mut stmts =
                if per > 1 { vec![Stmt::Loop { var: j, extent: per, body: unfold }] } else { unfold };
            let epilogue = if first {
                Vec::new()
            } else {
                vec![EInst::Acc, EInst::Elem(acc.clone(), kp), EInst::Bin(Add, 0, 1)]
            };
            stmts.push(Stmt::Gemm(Gemm {
                m: kkb,
                n: kp,
                k: pixels,
                a,
                lda: ld,
                ta: false,
                b: Right::Matrix { ptr: dyt.clone(), ld: kp },
                c: acc.clone(),
                ldc: kp,
                epilogue,
                sparse_a: false,
                b_sums: Vec::new(),
            }));
            let extent = if first { 1 } else { images / per - 1 };
            if extent > 0 {
                body.push(Stmt::Loop { var: n, extent, body: stmts });
            }
        }
        body.push(Stmt::Transpose(Transpose {
            src: acc,
            lds: kp,
            dst: at(dw, kg * kk, k * kk, kkb),
            ldd: kk,
            rows: kkb,
            cols: kg,
        }));
        let units = if groups > 1 { groups } else { parts.max(blocks) };
        let work = win.n * k * ohw * kk;
        (vec![Stmt::Loop { var: unit, extent: units, body }], self.parallel(units, work))
    }
}
