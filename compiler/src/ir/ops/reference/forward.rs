//! Forward (inference) ops.

use super::Real;
use crate::ir::ops::cell::{Saved, Term};
use crate::ir::ops::{Elementwise, Recurrence, Reduce, Window2d};

pub(super) fn global_avg_pool<T: Real>(n: usize, c: usize, hw: usize, x: &[&[T]], out: &mut [T]) {
    for i in 0..n * c {
        out[i] = T::from_f64(x[0][i * hw..(i + 1) * hw].iter().map(|v| v.to_f64()).sum::<f64>() / hw as f64);
    }
}

pub(super) fn mat_mul<T: Real>(m: usize, k: usize, n: usize, ta: bool, x: &[&[T]], out: &mut [T]) {
    // a[i, p] at i·k + p, or at p·m + i when stored transposed.
    let a = |i: usize, p: usize| if ta { x[0][p * m + i] } else { x[0][i * k + p] };
    for i in 0..m {
        for j in 0..n {
            let s: f64 = (0..k).map(|p| a(i, p).to_f64() * x[1][p * n + j].to_f64()).sum();
            out[i * n + j] = T::from_f64(s);
        }
    }
}

pub(super) fn add_channel<T: Real>(outer: usize, channels: usize, inner: usize, x: &[&[T]], out: &mut [T]) {
    for o in 0..outer {
        for c in 0..channels {
            for i in 0..inner {
                let at = (o * channels + c) * inner + i;
                out[at] = x[0][at] + x[1][c];
            }
        }
    }
}

pub(super) fn scale_shift_channel<T: Real>(
    outer: usize,
    channels: usize,
    inner: usize,
    x: &[&[T]],
    out: &mut [T],
) {
    for o in 0..outer {
        for c in 0..channels {
            for i in 0..inner {
                let at = (o * channels + c) * inner + i;
                out[at] = x[0][at] * x[1][c] + x[1][channels + c];
            }
        }
    }
}

pub(super) fn batch_norm_fold<T: Real>(channels: usize, eps: f32, x: &[&[T]], out: &mut [T]) {
    let (gamma, beta, mean, var) = (x[0], x[1], x[2], x[3]);
    for c in 0..channels {
        let scale = gamma[c].to_f64() / (var[c].to_f64() + eps as f64).sqrt();
        out[c] = T::from_f64(scale);
        out[channels + c] = T::from_f64(beta[c].to_f64() - mean[c].to_f64() * scale);
    }
}

pub(super) fn elementwise<T: Real>(len: usize, f: &Elementwise, x: &[&[T]], out: &mut [T]) {
    let mut args = vec![T::ZERO; x.len()];
    for i in 0..len {
        for (a, t) in args.iter_mut().zip(x) {
            *a = t[i];
        }
        out[i] = f.eval(&args);
    }
}

pub(super) fn fill<T: Real>(len: usize, value: f32, out: &mut [T]) {
    out[..len].fill(T::from_f32(value));
}

pub(super) fn softmax<T: Real>(rows: usize, cols: usize, x: &[&[T]], out: &mut [T]) {
    for r in 0..rows {
        let row = &x[0][r * cols..(r + 1) * cols];
        let max = row.iter().fold(T::NEG_INFINITY, |a, &b| a.max(b)).to_f64();
        let sum: f64 = row.iter().map(|v| (v.to_f64() - max).exp()).sum();
        for (o, v) in out[r * cols..(r + 1) * cols].iter_mut().zip(row) {
            *o = T::from_f64((v.to_f64() - max).exp() / sum);
        }
    }
}

pub(super) fn lrn<T: Real>(
    (n, c, hw, size): (usize, usize, usize, usize),
    (alpha, beta, k): (f32, f32, f32),
    x: &[&[T]],
    out: &mut [T],
) {
    // As PyTorch: the window covers channels [j − ⌊size/2⌋, j + ⌈size/2⌉ − 1].
    let (before, after) = (size / 2, (size - 1) / 2);
    for b in 0..n {
        for j in 0..c {
            for p in 0..hw {
                let lo = j.saturating_sub(before);
                let hi = (j + after).min(c - 1);
                let sum: f64 = (lo..=hi).map(|q| x[0][(b * c + q) * hw + p].to_f64().powi(2)).sum();
                let d = (k as f64 + alpha as f64 / size as f64 * sum).powf(beta as f64);
                let at = (b * c + j) * hw + p;
                out[at] = T::from_f64(x[0][at].to_f64() / d);
            }
        }
    }
}

pub(super) fn concat<T: Real>(outer: usize, inners: &[usize], x: &[&[T]], out: &mut [T]) {
    let total: usize = inners.iter().sum();
    for o in 0..outer {
        let mut at = o * total;
        for (part, &inner) in x.iter().zip(inners) {
            out[at..at + inner].copy_from_slice(&part[o * inner..(o + 1) * inner]);
            at += inner;
        }
    }
}

pub(super) fn embedding<T: Real>(count: usize, vocab: usize, dim: usize, x: &[&[T]], out: &mut [T]) {
    for i in 0..count {
        let id = x[0][i].to_bits32() as i32;
        assert!((0..vocab as i32).contains(&id), "token id {id} outside the vocabulary of {vocab}");
        let row = id as usize * dim;
        out[i * dim..(i + 1) * dim].copy_from_slice(&x[1][row..row + dim]);
    }
}

pub(super) fn conv2d<T: Real>(w: &Window2d, k: usize, groups: usize, x: &[T], weight: &[T], out: &mut [T]) {
    let (cg, kg) = (w.c / groups, k / groups);
    for n in 0..w.n {
        for o in 0..k {
            let g = o / kg;
            for oy in 0..w.oh {
                for ox in 0..w.ow {
                    let mut s = 0.0f64;
                    for ci in 0..cg {
                        let c = g * cg + ci;
                        for i in 0..w.kh {
                            for j in 0..w.kw {
                                let (y, xx) = (
                                    (oy * w.sh + i * w.dh) as isize - w.pad[0] as isize,
                                    (ox * w.sw + j * w.dw) as isize - w.pad[2] as isize,
                                );
                                if y < 0 || xx < 0 || y >= w.h as isize || xx >= w.w as isize {
                                    continue;
                                }
                                let xv = x[((n * w.c + c) * w.h + y as usize) * w.w + xx as usize];
                                let wv = weight[((o * cg + ci) * w.kh + i) * w.kw + j];
                                s += xv.to_f64() * wv.to_f64();
                            }
                        }
                    }
                    out[((n * k + o) * w.oh + oy) * w.ow + ox] = T::from_f64(s);
                }
            }
        }
    }
}

pub(super) fn pool2d<T: Real>(w: &Window2d, reduce: Reduce, x: &[T], out: &mut [T]) {
    for nc in 0..w.n * w.c {
        for oy in 0..w.oh {
            for ox in 0..w.ow {
                let mut max = T::NEG_INFINITY;
                let mut sum = 0.0f64;
                for i in 0..w.kh {
                    for j in 0..w.kw {
                        let y = (oy * w.sh + i) as isize - w.pad[0] as isize;
                        let xx = (ox * w.sw + j) as isize - w.pad[2] as isize;
                        if y < 0 || xx < 0 || y >= w.h as isize || xx >= w.w as isize {
                            continue; // padding: never the max, zero in the sum
                        }
                        let v = x[(nc * w.h + y as usize) * w.w + xx as usize];
                        max = max.max(v);
                        sum += v.to_f64();
                    }
                }
                out[(nc * w.oh + oy) * w.ow + ox] = match reduce {
                    Reduce::Max => max,
                    Reduce::Mean => {
                        // PyTorch divides by the window clipped to the padded input.
                        let y0 = oy * w.sh;
                        let x0 = ox * w.sw;
                        let hs = (y0 + w.kh).min(w.h + w.pad[0] + w.pad[1]) - y0;
                        let ws = (x0 + w.kw).min(w.w + w.pad[2] + w.pad[3]) - x0;
                        T::from_f64(sum / (hs * ws) as f64)
                    }
                };
            }
        }
    }
}

/// `out[0]` the output; with `train`, `out[1]` the state entering each step and `out[2]`
/// the values each step saves for its backward pass.
pub(super) fn recurrent<T: Real>(r: &Recurrence, x: &[&[T]], out: &mut [&mut [T]]) {
    let (h, g) = (r.h, r.cell.gates() * r.h);
    let zeros = vec![T::ZERO; g];
    let (xs, w_ih, w_hh) = (x[0], x[1], x[2]);
    let (b_ih, b_hh) = if r.bias { (x[3], x[4]) } else { (&zeros[..], &zeros[..]) };
    let step = r.cell.step();
    let saved = step.saved();
    for n in 0..r.n {
        let mut state = vec![0.0f64; h];
        let mut cell = vec![0.0f64; h];
        for t in 0..r.t {
            let at = n * r.t + t;
            let input = &xs[at * r.f..(at + 1) * r.f];
            // xi = x·W_ih + b_ih and hh = h·W_hh + b_hh, each [g·h].
            let xi: Vec<f64> = (0..g)
                .map(|j| {
                    b_ih[j].to_f64()
                        + (0..r.f).map(|p| input[p].to_f64() * w_ih[p * g + j].to_f64()).sum::<f64>()
                })
                .collect();
            let hh: Vec<f64> = (0..g)
                .map(|j| b_hh[j].to_f64() + (0..h).map(|p| state[p] * w_hh[p * g + j].to_f64()).sum::<f64>())
                .collect();
            let next: Vec<f64> = (0..h)
                .map(|j| {
                    let term = |t: Term| match t {
                        Term::P(k) => xi[k * h + j],
                        Term::Q(k) => hh[k * h + j],
                        Term::Sum(k) => xi[k * h + j] + hh[k * h + j],
                        Term::H => state[j],
                        Term::C => cell[j],
                    };
                    let values = step.eval(term);
                    if r.train {
                        out[1][at * h + j] = T::from_f64(state[j]);
                        for (i, s) in saved.iter().enumerate() {
                            let v = match *s {
                                Saved::Stage(k) => values[k],
                                Saved::Term(t) => term(t),
                            };
                            out[2][(at * saved.len() + i) * h + j] = T::from_f64(v);
                        }
                    }
                    if let Some(c) = step.cell {
                        cell[j] = values[c];
                    }
                    values[step.hidden]
                })
                .collect();
            state = next;
            if !r.last {
                for j in 0..h {
                    out[0][at * h + j] = T::from_f64(state[j]);
                }
            }
        }
        if r.last {
            for j in 0..h {
                out[0][n * h + j] = T::from_f64(state[j]);
            }
        }
    }
}
