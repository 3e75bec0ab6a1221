//! Training ops: batch statistics, dropout, losses, and optimizer updates.

use crate::ops::{Hyper, Op, UpdateRule, dropout_keep};

/// `out[0]` is the op's output, `out[1..]` its auxiliary outputs.
pub(super) fn eval(op: &Op, x: &[&[f32]], out: &mut [&mut [f32]]) -> bool {
    match *op {
        Op::ChannelMoments { outer, channels, inner } => {
            let count = (outer * inner) as f64;
            for ch in 0..channels {
                let vals =
                    || (0..outer).flat_map(move |o| (0..inner).map(move |i| (o * channels + ch) * inner + i));
                let mean = vals().map(|at| x[0][at] as f64).sum::<f64>() / count;
                let var = vals().map(|at| (x[0][at] as f64 - mean).powi(2)).sum::<f64>() / count;
                out[0][ch] = mean as f32;
                out[0][channels + ch] = var as f32;
            }
        }
        Op::BatchNormFoldTrain { channels, eps } => {
            let (gamma, beta, m) = (x[0], x[1], x[2]);
            for c in 0..channels {
                let scale = gamma[c] as f64 / (m[channels + c] as f64 + eps as f64).sqrt();
                out[0][c] = scale as f32;
                out[0][channels + c] = (beta[c] as f64 - m[c] as f64 * scale) as f32;
            }
        }
        Op::UpdateRunning { channels, momentum, variance, count } => {
            let (m, running) = (x[0], x[1]);
            for c in 0..channels {
                let stat = if variance {
                    let unbiased = if count > 1 { count as f64 / (count - 1) as f64 } else { 1.0 };
                    m[channels + c] as f64 * unbiased
                } else {
                    m[c] as f64
                };
                let mom = momentum as f64;
                out[0][c] = ((1.0 - mom) * running[c] as f64 + mom * stat) as f32;
            }
        }
        Op::Dropout { len, p } => {
            let seed = x[1][Hyper::SEED].to_bits();
            for i in 0..len {
                out[0][i] = if dropout_keep(seed, i as u32, p) { x[0][i] / (1.0 - p) } else { 0.0 };
            }
        }
        Op::SoftmaxCrossEntropy { rows, cols } => {
            let (mut loss, mut correct) = (0.0f64, 0.0f64);
            for r in 0..rows {
                let row = &x[0][r * cols..(r + 1) * cols];
                let label = x[1][r].to_bits() as usize;
                if label >= cols {
                    // A padding row (the last batch of an evaluation): no loss, no gradient.
                    out[0][r * cols..(r + 1) * cols].fill(0.0);
                    continue;
                }
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                loss += sum.ln() + max - row[label] as f64;
                let best = (0..cols).fold(0, |b, c| if row[c] > row[b] { c } else { b });
                correct += f64::from(u8::from(best == label));
                for c in 0..cols {
                    let p = (row[c] as f64 - max).exp() / sum;
                    let target = f64::from(u8::from(c == label));
                    out[0][r * cols + c] = ((p - target) / rows as f64) as f32;
                }
            }
            out[1][0] = (loss / rows as f64) as f32;
            out[1][1] = correct as f32;
        }
        Op::MeanSquaredError { rows, cols } => {
            let n = (rows * cols) as f64;
            let mut sum = 0.0f64;
            for i in 0..rows * cols {
                let d = x[0][i] as f64 - x[1][i] as f64;
                sum += d * d;
                out[0][i] = (2.0 * d / n) as f32;
            }
            out[1][0] = (sum / n) as f32;
            out[1][1] = 0.0;
        }
        Op::SumSquares { len } => {
            out[0][0] = x[0][..len].iter().map(|v| (*v as f64).powi(2)).sum::<f64>() as f32
        }
        Op::Update { len, rule } => update(len, rule, x, out),
        _ => return false,
    }
    true
}

/// One optimizer step: inputs `params, grads, hyper, state...`; outputs `params` then the
/// state tensors.
fn update(len: usize, rule: UpdateRule, x: &[&[f32]], out: &mut [&mut [f32]]) {
    let (w, g, hyper) = (x[0], x[1], x[2]);
    let lr = hyper[Hyper::LR] as f64;
    let scale = hyper[Hyper::GRAD_SCALE] as f64;
    for i in 0..len {
        let mut wi = w[i] as f64;
        let mut gi = g[i] as f64 * scale;
        match rule {
            UpdateRule::Sgd { momentum, nesterov, weight_decay } => {
                gi += weight_decay as f64 * wi;
                let step = if momentum == 0.0 {
                    gi
                } else {
                    let v = momentum as f64 * x[3][i] as f64 + gi;
                    out[1][i] = v as f32;
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
                let m = b1 * x[3][i] as f64 + (1.0 - b1) * gi;
                let v = b2 * x[4][i] as f64 + (1.0 - b2) * gi * gi;
                out[1][i] = m as f32;
                out[2][i] = v as f32;
                let mhat = m * hyper[Hyper::BIAS1] as f64;
                let vhat = v * hyper[Hyper::BIAS2] as f64;
                wi -= lr * mhat / (vhat.sqrt() + eps as f64);
            }
        }
        out[0][i] = wi as f32;
    }
}
