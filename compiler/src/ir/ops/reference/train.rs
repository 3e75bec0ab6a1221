//! Training ops: batch statistics, dropout, losses, and optimizer updates. Each writes
//! `out[0]`, the op's output, and `out[1..]`, its auxiliary outputs.

use super::Real;
use crate::ir::ops::{Hyper, UpdateRule, dropout_keep};

pub(super) fn channel_moments<T: Real>(
    outer: usize,
    channels: usize,
    inner: usize,
    x: &[&[T]],
    out: &mut [&mut [T]],
) {
    let count = (outer * inner) as f64;
    for ch in 0..channels {
        let vals = || (0..outer).flat_map(move |o| (0..inner).map(move |i| (o * channels + ch) * inner + i));
        let mean = vals().map(|at| x[0][at].to_f64()).sum::<f64>() / count;
        let var = vals().map(|at| (x[0][at].to_f64() - mean).powi(2)).sum::<f64>() / count;
        out[0][ch] = T::from_f64(mean);
        out[0][channels + ch] = T::from_f64(var);
    }
}

pub(super) fn batch_norm_fold_train<T: Real>(channels: usize, eps: f32, x: &[&[T]], out: &mut [&mut [T]]) {
    let (gamma, beta, m) = (x[0], x[1], x[2]);
    for c in 0..channels {
        let scale = gamma[c].to_f64() / (m[channels + c].to_f64() + eps as f64).sqrt();
        out[0][c] = T::from_f64(scale);
        out[0][channels + c] = T::from_f64(beta[c].to_f64() - m[c].to_f64() * scale);
    }
}

pub(super) fn update_running<T: Real>(
    channels: usize,
    momentum: f32,
    variance: bool,
    count: usize,
    x: &[&[T]],
    out: &mut [&mut [T]],
) {
    let (m, running) = (x[0], x[1]);
    for c in 0..channels {
        let stat = if variance {
            let unbiased = if count > 1 { count as f64 / (count - 1) as f64 } else { 1.0 };
            m[channels + c].to_f64() * unbiased
        } else {
            m[c].to_f64()
        };
        let mom = momentum as f64;
        out[0][c] = T::from_f64((1.0 - mom) * running[c].to_f64() + mom * stat);
    }
}

pub(super) fn dropout<T: Real>(len: usize, p: f32, x: &[&[T]], out: &mut [&mut [T]]) {
    let seed = x[1][Hyper::SEED].to_bits32();
    for i in 0..len {
        out[0][i] =
            if dropout_keep(seed, i as u32, p) { x[0][i] / (T::ONE - T::from_f32(p)) } else { T::ZERO };
    }
}

pub(super) fn softmax_cross_entropy<T: Real>(rows: usize, cols: usize, x: &[&[T]], out: &mut [&mut [T]]) {
    let (mut loss, mut correct) = (0.0f64, 0.0f64);
    for r in 0..rows {
        let row = &x[0][r * cols..(r + 1) * cols];
        let label = x[1][r].to_bits32() as usize;
        if label >= cols {
            // A padding row (the last batch of an evaluation): no loss, no gradient.
            out[0][r * cols..(r + 1) * cols].fill(T::ZERO);
            continue;
        }
        let max = row.iter().fold(T::NEG_INFINITY, |a, &b| a.max(b)).to_f64();
        let sum: f64 = row.iter().map(|v| (v.to_f64() - max).exp()).sum();
        loss += sum.ln() + max - row[label].to_f64();
        let best = (0..cols).fold(0, |b, c| if row[c] > row[b] { c } else { b });
        correct += f64::from(u8::from(best == label));
        for c in 0..cols {
            let p = (row[c].to_f64() - max).exp() / sum;
            let target = f64::from(u8::from(c == label));
            out[0][r * cols + c] = T::from_f64((p - target) / rows as f64);
        }
    }
    out[1][0] = T::from_f64(loss / rows as f64);
    out[1][1] = T::from_f64(correct);
}

pub(super) fn mean_squared_error<T: Real>(rows: usize, cols: usize, x: &[&[T]], out: &mut [&mut [T]]) {
    let n = (rows * cols) as f64;
    let mut sum = 0.0f64;
    for i in 0..rows * cols {
        let d = x[0][i].to_f64() - x[1][i].to_f64();
        sum += d * d;
        out[0][i] = T::from_f64(2.0 * d / n);
    }
    out[1][0] = T::from_f64(sum / n);
    out[1][1] = T::ZERO;
}

pub(super) fn sum_squares<T: Real>(len: usize, x: &[&[T]], out: &mut [&mut [T]]) {
    out[0][0] = T::from_f64(x[0][..len].iter().map(|v| v.to_f64().powi(2)).sum::<f64>())
}

/// One optimizer step: inputs `params, grads, hyper, state...`; outputs `params` then the
/// state tensors.
pub(super) fn update<T: Real>(len: usize, rule: UpdateRule, x: &[&[T]], out: &mut [&mut [T]]) {
    let (w, g, hyper) = (x[0], x[1], x[2]);
    let lr = hyper[Hyper::LR].to_f64();
    let scale = hyper[Hyper::GRAD_SCALE].to_f64();
    for i in 0..len {
        let mut wi = w[i].to_f64();
        let mut gi = g[i].to_f64() * scale;
        match rule {
            UpdateRule::Sgd { momentum, nesterov, weight_decay } => {
                gi += weight_decay as f64 * wi;
                let step = if momentum == 0.0 {
                    gi
                } else {
                    let v = momentum as f64 * x[3][i].to_f64() + gi;
                    out[1][i] = T::from_f64(v);
                    if nesterov { gi + momentum as f64 * v } else { v }
                };
                wi -= lr * step;
            }
            UpdateRule::Adam { beta1, beta2, eps, weight_decay, decoupled } => {
                let (b1, b2, wd) = (beta1 as f64, beta2 as f64, weight_decay as f64);
                if decoupled {
                    wi *= 1.0 - lr * wd;
                } else {
                    gi += wd * wi;
                }
                let m = b1 * x[3][i].to_f64() + (1.0 - b1) * gi;
                let v = b2 * x[4][i].to_f64() + (1.0 - b2) * gi * gi;
                out[1][i] = T::from_f64(m);
                out[2][i] = T::from_f64(v);
                let mhat = m * hyper[Hyper::BIAS1].to_f64();
                let vhat = v * hyper[Hyper::BIAS2].to_f64();
                wi -= lr * mhat / (vhat.sqrt() + eps as f64);
            }
        }
        out[0][i] = T::from_f64(wi);
    }
}
