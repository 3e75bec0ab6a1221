//! Backward ops: gradients of the forward ops, each written from its definition.

use super::Real;
use crate::ir::ops::cell::{Adjoint, Saved, Term};
use crate::ir::ops::{Elementwise, Hyper, Recurrence, Reduce, Window2d, dropout_keep};

pub(super) fn conv2d_backward_data<T: Real>(
    win: Window2d,
    k: usize,
    groups: usize,
    x: &[&[T]],
    out: &mut [T],
) {
    conv_taps(&win, k, groups, &mut |yi, wi, xi| out[xi] += x[0][yi] * x[1][wi])
}

pub(super) fn conv2d_backward_weight<T: Real>(
    win: Window2d,
    k: usize,
    groups: usize,
    parts: usize,
    x: &[&[T]],
    out: &mut [T],
) {
    // Output index `yi` belongs to image yi / (k·oh·ow), which part owns.
    let (per_image, images) = (k * win.oh * win.ow, win.n / parts);
    let len = out.len() / parts;
    conv_taps(&win, k, groups, &mut |yi, wi, xi| {
        out[yi / per_image / images * len + wi] += x[0][yi] * x[1][xi]
    })
}

pub(super) fn sum_parts<T: Real>(parts: usize, len: usize, x: &[&[T]], out: &mut [T]) {
    for (i, o) in out[..len].iter_mut().enumerate() {
        *o = T::from_f64((0..parts).map(|p| x[0][p * len + i].to_f64()).sum::<f64>());
    }
}

pub(super) fn broadcast_channel<T: Real>(
    outer: usize,
    channels: usize,
    inner: usize,
    scale: f32,
    x: &[&[T]],
    out: &mut [T],
) {
    for oc in 0..outer * channels {
        for i in 0..inner {
            out[oc * inner + i] = x[0][oc] * T::from_f32(scale);
        }
    }
}

pub(super) fn channel_sum<T: Real>(outer: usize, channels: usize, inner: usize, x: &[&[T]], out: &mut [T]) {
    for (c, o) in out[..channels].iter_mut().enumerate() {
        let s: f64 = (0..outer)
            .flat_map(|o| (0..inner).map(move |i| (o * channels + c) * inner + i))
            .map(|at| x[0][at].to_f64())
            .sum();
        *o = T::from_f64(s);
    }
}

pub(super) fn transpose<T: Real>(rows: usize, cols: usize, x: &[&[T]], out: &mut [T]) {
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = x[0][r * cols + c];
        }
    }
}

pub(super) fn softmax_backward<T: Real>(rows: usize, cols: usize, x: &[&[T]], out: &mut [T]) {
    for r in 0..rows {
        let at = r * cols;
        let dot: f64 = (0..cols).map(|c| x[0][at + c].to_f64() * x[1][at + c].to_f64()).sum();
        for c in 0..cols {
            out[at + c] = T::from_f64(x[1][at + c].to_f64() * (x[0][at + c].to_f64() - dot));
        }
    }
}

pub(super) fn slice<T: Real>(
    outer: usize,
    total: usize,
    offset: usize,
    len: usize,
    x: &[&[T]],
    out: &mut [T],
) {
    for o in 0..outer {
        out[o * len..(o + 1) * len].copy_from_slice(&x[0][o * total + offset..o * total + offset + len]);
    }
}

pub(super) fn embedding_backward<T: Real>(count: usize, vocab: usize, dim: usize, x: &[&[T]], out: &mut [T]) {
    for i in 0..count {
        let id = x[0][i].to_bits32() as usize;
        assert!(id < vocab, "token id {id} outside the vocabulary of {vocab}");
        for d in 0..dim {
            out[id * dim + d] += x[1][i * dim + d];
        }
    }
}

pub(super) fn dropout_backward<T: Real>(len: usize, p: f32, x: &[&[T]], out: &mut [T]) {
    let seed = x[1][Hyper::SEED].to_bits32();
    for i in 0..len {
        let keep = dropout_keep(seed, i as u32, p);
        out[i] = if keep { x[0][i] / (T::ONE - T::from_f32(p)) } else { T::ZERO };
    }
}

pub(super) fn batch_norm_backward_reduce<T: Real>(
    outer: usize,
    channels: usize,
    inner: usize,
    eps: f32,
    x: &[&[T]],
    out: &mut [T],
) {
    for ch in 0..channels {
        let (mean, invstd) = moments(x[2], channels, ch, eps);
        let (mut sum, mut dot) = (0.0f64, 0.0f64);
        for o in 0..outer {
            for i in 0..inner {
                let at = (o * channels + ch) * inner + i;
                sum += x[0][at].to_f64();
                dot += x[0][at].to_f64() * (x[1][at].to_f64() - mean) * invstd;
            }
        }
        out[ch] = T::from_f64(sum);
        out[channels + ch] = T::from_f64(dot);
    }
}

pub(super) fn batch_norm_backward_input<T: Real>(
    outer: usize,
    channels: usize,
    inner: usize,
    eps: f32,
    x: &[&[T]],
    out: &mut [T],
) {
    let count = (outer * inner) as f64;
    for ch in 0..channels {
        let (mean, invstd) = moments(x[2], channels, ch, eps);
        let gamma = x[3][ch].to_f64();
        let (dbeta, dgamma) = (x[4][ch].to_f64(), x[4][channels + ch].to_f64());
        for o in 0..outer {
            for i in 0..inner {
                let at = (o * channels + ch) * inner + i;
                let xhat = (x[1][at].to_f64() - mean) * invstd;
                let dx = gamma * invstd / count * (count * x[0][at].to_f64() - dbeta - xhat * dgamma);
                out[at] = T::from_f64(dx);
            }
        }
    }
}

pub(super) fn copy<T: Real>(offset: usize, len: usize, x: &[&[T]], out: &mut [T]) {
    out.copy_from_slice(&x[0][offset..offset + len]);
}

/// Mean and 1/√(var + eps) of channel `ch` from a `[2, channels]` moments tensor.
fn moments<T: Real>(m: &[T], channels: usize, ch: usize, eps: f32) -> (f64, f64) {
    (m[ch].to_f64(), 1.0 / (m[channels + ch].to_f64() + eps as f64).sqrt())
}

/// Calls `f(output_index, weight_index, input_index)` for every kernel tap of every
/// output that lands inside the image.
fn conv_taps(w: &Window2d, k: usize, groups: usize, f: &mut dyn FnMut(usize, usize, usize)) {
    let (cg, kg) = (w.c / groups, k / groups);
    for n in 0..w.n {
        for o in 0..k {
            let g = o / kg;
            for oy in 0..w.oh {
                for ox in 0..w.ow {
                    for ci in 0..cg {
                        let c = g * cg + ci;
                        for i in 0..w.kh {
                            for j in 0..w.kw {
                                let y = (oy * w.sh + i * w.dh) as isize - w.pad[0] as isize;
                                let xx = (ox * w.sw + j * w.dw) as isize - w.pad[2] as isize;
                                if y < 0 || xx < 0 || y >= w.h as isize || xx >= w.w as isize {
                                    continue;
                                }
                                let yi = ((n * k + o) * w.oh + oy) * w.ow + ox;
                                let xi = ((n * w.c + c) * w.h + y as usize) * w.w + xx as usize;
                                let wi = ((o * cg + ci) * w.kh + i) * w.kw + j;
                                f(yi, wi, xi);
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn pool_backward<T: Real>(w: &Window2d, reduce: Reduce, dy: &[T], x: &[T], out: &mut [T]) {
    for nc in 0..w.n * w.c {
        for oy in 0..w.oh {
            for ox in 0..w.ow {
                let g = dy[(nc * w.oh + oy) * w.ow + ox];
                let mut taps = Vec::new();
                for i in 0..w.kh {
                    for j in 0..w.kw {
                        let y = (oy * w.sh + i) as isize - w.pad[0] as isize;
                        let xx = (ox * w.sw + j) as isize - w.pad[2] as isize;
                        if y >= 0 && xx >= 0 && y < w.h as isize && xx < w.w as isize {
                            taps.push((nc * w.h + y as usize) * w.w + xx as usize);
                        }
                    }
                }
                match reduce {
                    Reduce::Max => {
                        // The first largest input, in window order, as the forward pass.
                        let mut best = taps[0];
                        for &t in &taps[1..] {
                            if x[t] > x[best] {
                                best = t;
                            }
                        }
                        out[best] += g;
                    }
                    Reduce::Mean => {
                        let y0 = oy * w.sh;
                        let x0 = ox * w.sw;
                        let hs = (y0 + w.kh).min(w.h + w.pad[0] + w.pad[1]) - y0;
                        let ws = (x0 + w.kw).min(w.w + w.pad[2] + w.pad[3]) - x0;
                        let share = g / T::from_f64((hs * ws) as f64);
                        for t in taps {
                            out[t] += share;
                        }
                    }
                }
            }
        }
    }
}

/// Gradient of y_j = x_j · d_j^(−β), d_j = k + α/size · Σ_{q ∈ window(j)} x_q².
pub(super) fn lrn_backward<T: Real>(
    dy: &[T],
    x: &[T],
    out: &mut [T],
    (n, c, hw, size): (usize, usize, usize, usize),
    (alpha, beta, k): (f32, f32, f32),
) {
    let (before, after) = (size / 2, (size - 1) / 2);
    let (alpha, beta, k) = (alpha as f64, beta as f64, k as f64);
    for b in 0..n {
        for p in 0..hw {
            let at = |ch: usize| (b * c + ch) * hw + p;
            let d: Vec<f64> = (0..c)
                .map(|j| {
                    let lo = j.saturating_sub(before);
                    let hi = (j + after).min(c - 1);
                    k + alpha / size as f64 * (lo..=hi).map(|q| x[at(q)].to_f64().powi(2)).sum::<f64>()
                })
                .collect();
            for i in 0..c {
                let mut g = dy[at(i)].to_f64() * d[i].powf(-beta);
                // Every j whose window holds i: j in [i − after, i + before].
                let lo = i.saturating_sub(after);
                let hi = (i + before).min(c - 1);
                for j in lo..=hi {
                    g -= dy[at(j)].to_f64() * x[at(j)].to_f64() * beta * d[j].powf(-beta - 1.0) * alpha
                        / size as f64
                        * 2.0
                        * x[at(i)].to_f64();
                }
                out[at(i)] = T::from_f64(g);
            }
        }
    }
}

/// A step's saved values for one element, in f64.
struct Step<'a, T> {
    state: T,
    saved: &'a [T],
    list: &'a [Saved],
    h: usize,
}

impl<T: Real> Adjoint for Step<'_, T> {
    type V = f64;

    fn value(&mut self, s: Saved) -> f64 {
        match s {
            Saved::Term(Term::H) => self.state.to_f64(),
            s => {
                let i =
                    self.list.iter().position(|l| *l == s).expect("the step saved what its backward reads");
                self.saved[i * self.h].to_f64()
            }
        }
    }

    fn apply(&mut self, f: &Elementwise, args: &[f64]) -> f64 {
        f.eval(args)
    }

    fn add(&mut self, a: f64, b: f64) -> f64 {
        a + b
    }
}

/// Backpropagation through time, step by step from the last: the gradient reaching each
/// step's new state (from the output and from the next step through `W_hh`) taken back
/// through the cell's stages to its projections.
pub(super) fn recurrent_backward<T: Real>(r: &Recurrence, x: &[&[T]], out: &mut [&mut [T]]) {
    let (h, g) = (r.h, r.cell.gates() * r.h);
    let (dy, states, saved, w_hh_t) = (x[0], x[1], x[2], x[3]);
    let step = r.cell.step();
    let list = step.saved();
    let s = list.len();
    for n in 0..r.n {
        // The gradient of the state leaving the current step, and of its cell state.
        let mut dh = vec![0.0f64; h];
        let mut dc = vec![0.0f64; h];
        if r.last {
            for j in 0..h {
                dh[j] = dy[n * h + j].to_f64();
            }
        }
        for t in (0..r.t).rev() {
            let at = n * r.t + t;
            let (mut dp, mut dq) = (vec![0.0f64; g], vec![0.0f64; g]);
            let mut direct = vec![0.0f64; h];
            for j in 0..h {
                if !r.last {
                    dh[j] += dy[at * h + j].to_f64();
                }
                let mut a =
                    Step { state: states[at * h + j], saved: &saved[at * s * h + j..], list: &list, h };
                let d_cell = step.cell.map(|_| std::mem::take(&mut dc[j]));
                for (term, d) in step.backward(&mut a, dh[j], d_cell) {
                    match term {
                        Term::Sum(k) => {
                            dp[k * h + j] += d;
                            dq[k * h + j] += d;
                        }
                        Term::P(k) => dp[k * h + j] += d,
                        Term::Q(k) => dq[k * h + j] += d,
                        Term::H => direct[j] = d,
                        Term::C => dc[j] = d,
                    }
                }
            }
            for i in 0..g {
                out[0][at * g + i] = T::from_f64(dp[i]);
                if let Some(q) = out.get_mut(1) {
                    q[at * g + i] = T::from_f64(dq[i]);
                }
            }
            for j in 0..h {
                dh[j] = direct[j] + (0..g).map(|i| dq[i] * w_hh_t[i * h + j].to_f64()).sum::<f64>();
            }
        }
    }
}
