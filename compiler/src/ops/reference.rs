//! The reference interpreter: each op as the plainest loops that compute it, summing in
//! f64. Slow and obviously right; every generated kernel is tested against it.

use super::{Cell, Op, Recurrence, Reduce, Role, TensorGraph, Window2d};

/// Runs the graph. `values[i]` holds tensor `i`: inputs and parameters must be filled;
/// activations are (re)computed in op order.
pub fn run(graph: &TensorGraph, values: &mut [Vec<f32>]) {
    for (i, t) in graph.tensors.iter().enumerate() {
        if t.role == Role::Activation {
            values[i] = vec![0.0; t.len()];
        }
    }
    for node in &graph.ops {
        let mut out = std::mem::take(&mut values[node.output.0 as usize]);
        let inputs: Vec<&[f32]> = node.inputs.iter().map(|t| values[t.0 as usize].as_slice()).collect();
        eval(&node.op, &inputs, &mut out);
        values[node.output.0 as usize] = out;
    }
}

/// Computes one op.
pub fn eval(op: &Op, x: &[&[f32]], out: &mut [f32]) {
    match *op {
        Op::Conv2d { win, k, groups } => conv2d(&win, k, groups, x[0], x[1], out),
        Op::Pool2d { win, reduce } => pool2d(&win, reduce, x[0], out),
        Op::GlobalAvgPool { n, c, hw } => {
            for i in 0..n * c {
                out[i] =
                    (x[0][i * hw..(i + 1) * hw].iter().map(|&v| v as f64).sum::<f64>() / hw as f64) as f32;
            }
        }
        Op::MatMul { m, k, n } => {
            for i in 0..m {
                for j in 0..n {
                    let s: f64 = (0..k).map(|p| x[0][i * k + p] as f64 * x[1][p * n + j] as f64).sum();
                    out[i * n + j] = s as f32;
                }
            }
        }
        Op::AddChannel { outer, channels, inner } => {
            for o in 0..outer {
                for c in 0..channels {
                    for i in 0..inner {
                        let at = (o * channels + c) * inner + i;
                        out[at] = x[0][at] + x[1][c];
                    }
                }
            }
        }
        Op::ScaleShiftChannel { outer, channels, inner } => {
            for o in 0..outer {
                for c in 0..channels {
                    for i in 0..inner {
                        let at = (o * channels + c) * inner + i;
                        out[at] = x[0][at] * x[1][c] + x[1][channels + c];
                    }
                }
            }
        }
        Op::BatchNormFold { channels, eps } => {
            let (gamma, beta, mean, var) = (x[0], x[1], x[2], x[3]);
            for c in 0..channels {
                let scale = gamma[c] as f64 / (var[c] as f64 + eps as f64).sqrt();
                out[c] = scale as f32;
                out[channels + c] = (beta[c] as f64 - mean[c] as f64 * scale) as f32;
            }
        }
        Op::Unary { len, f } => {
            for i in 0..len {
                out[i] = f.apply(x[0][i]);
            }
        }
        Op::Add { len, .. } => {
            for i in 0..len {
                out[i] = x.iter().map(|t| t[i] as f64).sum::<f64>() as f32;
            }
        }
        Op::Softmax { rows, cols } => {
            for r in 0..rows {
                let row = &x[0][r * cols..(r + 1) * cols];
                let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                let sum: f64 = row.iter().map(|&v| (v as f64 - max).exp()).sum();
                for (o, &v) in out[r * cols..(r + 1) * cols].iter_mut().zip(row) {
                    *o = ((v as f64 - max).exp() / sum) as f32;
                }
            }
        }
        Op::Lrn { n, c, hw, size, alpha, beta, k } => {
            // As PyTorch: the window covers channels [j − ⌊size/2⌋, j + ⌈size/2⌉ − 1].
            let (before, after) = (size / 2, (size - 1) / 2);
            for b in 0..n {
                for j in 0..c {
                    for p in 0..hw {
                        let lo = j.saturating_sub(before);
                        let hi = (j + after).min(c - 1);
                        let sum: f64 = (lo..=hi).map(|q| (x[0][(b * c + q) * hw + p] as f64).powi(2)).sum();
                        let d = (k as f64 + alpha as f64 / size as f64 * sum).powf(beta as f64);
                        let at = (b * c + j) * hw + p;
                        out[at] = (x[0][at] as f64 / d) as f32;
                    }
                }
            }
        }
        Op::Concat { outer, ref inners } => {
            let total: usize = inners.iter().sum();
            for o in 0..outer {
                let mut at = o * total;
                for (part, &inner) in x.iter().zip(inners) {
                    out[at..at + inner].copy_from_slice(&part[o * inner..(o + 1) * inner]);
                    at += inner;
                }
            }
        }
        Op::Embedding { count, vocab, dim } => {
            for i in 0..count {
                let id = x[0][i].to_bits() as i32;
                assert!((0..vocab as i32).contains(&id), "token id {id} outside the vocabulary of {vocab}");
                let row = id as usize * dim;
                out[i * dim..(i + 1) * dim].copy_from_slice(&x[1][row..row + dim]);
            }
        }
        Op::Recurrent(r) => recurrent(&r, x, out),
    }
}

fn conv2d(w: &Window2d, k: usize, groups: usize, x: &[f32], weight: &[f32], out: &mut [f32]) {
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
                                s += xv as f64 * wv as f64;
                            }
                        }
                    }
                    out[((n * k + o) * w.oh + oy) * w.ow + ox] = s as f32;
                }
            }
        }
    }
}

fn pool2d(w: &Window2d, reduce: Reduce, x: &[f32], out: &mut [f32]) {
    for nc in 0..w.n * w.c {
        for oy in 0..w.oh {
            for ox in 0..w.ow {
                let mut max = f32::NEG_INFINITY;
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
                        sum += v as f64;
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
                        (sum / (hs * ws) as f64) as f32
                    }
                };
            }
        }
    }
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn recurrent(r: &Recurrence, x: &[&[f32]], out: &mut [f32]) {
    let (h, g) = (r.h, r.cell.gates() * r.h);
    let zeros = vec![0.0f32; g];
    let (xs, w_ih, w_hh) = (x[0], x[1], x[2]);
    let (b_ih, b_hh) = if r.bias { (x[3], x[4]) } else { (&zeros[..], &zeros[..]) };
    for n in 0..r.n {
        let mut state = vec![0.0f64; h];
        let mut cell = vec![0.0f64; h];
        for t in 0..r.t {
            let input = &xs[(n * r.t + t) * r.f..(n * r.t + t + 1) * r.f];
            // xi = x·W_ih + b_ih and hh = h·W_hh + b_hh, each [g·h].
            let xi: Vec<f64> = (0..g)
                .map(|j| {
                    b_ih[j] as f64 + (0..r.f).map(|p| input[p] as f64 * w_ih[p * g + j] as f64).sum::<f64>()
                })
                .collect();
            let hh: Vec<f64> = (0..g)
                .map(|j| b_hh[j] as f64 + (0..h).map(|p| state[p] * w_hh[p * g + j] as f64).sum::<f64>())
                .collect();
            let next: Vec<f64> = match r.cell {
                Cell::Rnn => (0..h).map(|j| (xi[j] + hh[j]).tanh()).collect(),
                Cell::Lstm => (0..h)
                    .map(|j| {
                        let i = sigmoid(xi[j] + hh[j]);
                        let f = sigmoid(xi[h + j] + hh[h + j]);
                        let gg = (xi[2 * h + j] + hh[2 * h + j]).tanh();
                        let o = sigmoid(xi[3 * h + j] + hh[3 * h + j]);
                        cell[j] = f * cell[j] + i * gg;
                        o * cell[j].tanh()
                    })
                    .collect(),
                Cell::Gru => (0..h)
                    .map(|j| {
                        let rr = sigmoid(xi[j] + hh[j]);
                        let z = sigmoid(xi[h + j] + hh[h + j]);
                        let nn = (xi[2 * h + j] + rr * hh[2 * h + j]).tanh();
                        (1.0 - z) * nn + z * state[j]
                    })
                    .collect(),
            };
            state = next;
            if !r.last {
                for j in 0..h {
                    out[(n * r.t + t) * h + j] = state[j] as f32;
                }
            }
        }
        if r.last {
            for j in 0..h {
                out[n * h + j] = state[j] as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::UnaryFn;

    /// A square window over one `c`-channel image: (height, width), kernel, stride,
    /// padding, output (height, width).
    fn win(
        c: usize,
        (h, w): (usize, usize),
        k: usize,
        s: usize,
        p: usize,
        (oh, ow): (usize, usize),
    ) -> Window2d {
        Window2d { n: 1, c, h, w, kh: k, kw: k, sh: s, sw: s, dh: 1, dw: 1, pad: [p; 4], oh, ow }
    }

    fn eval_new(op: &Op, x: &[&[f32]], len: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; len];
        eval(op, x, &mut out);
        out
    }

    #[test]
    fn conv_sums_the_window_with_zero_padding() {
        let x: Vec<f32> = (1..=9).map(|v| v as f32).collect(); // 3×3: 1..9
        let w = vec![1.0; 4]; // 2×2 of ones
        let op = Op::Conv2d { win: win(1, (3, 3), 2, 1, 0, (2, 2)), k: 1, groups: 1 };
        assert_eq!(eval_new(&op, &[&x, &w], 4), [12.0, 16.0, 24.0, 28.0]);
        // Padding 1, stride 2: windows at the corners see one, two or four values.
        let op = Op::Conv2d { win: win(1, (3, 3), 2, 2, 1, (2, 2)), k: 1, groups: 1 };
        assert_eq!(eval_new(&op, &[&x, &w], 4), [1.0, 5.0, 11.0, 28.0]);
    }

    #[test]
    fn grouped_conv_keeps_groups_apart() {
        // Two groups of one channel each; each output sees only its own channel.
        let x = vec![1.0, 2.0]; // [1, 2, 1, 1]
        let w = vec![10.0, 100.0]; // [2, 1, 1, 1]
        let op = Op::Conv2d { win: win(2, (1, 1), 1, 1, 0, (1, 1)), k: 2, groups: 2 };
        assert_eq!(eval_new(&op, &[&x, &w], 2), [10.0, 200.0]);
    }

    #[test]
    fn pools_ignore_padding_for_max_and_count_it_for_mean() {
        let x = vec![1.0, 2.0, 3.0, 4.0]; // 2×2
        let max = Op::Pool2d { win: win(1, (2, 2), 2, 2, 1, (2, 2)), reduce: Reduce::Max };
        assert_eq!(eval_new(&max, &[&x], 4), [1.0, 2.0, 3.0, 4.0]);
        let mean = Op::Pool2d { win: win(1, (2, 2), 2, 2, 1, (2, 2)), reduce: Reduce::Mean };
        assert_eq!(eval_new(&mean, &[&x], 4), [0.25, 0.5, 0.75, 1.0]);
    }

    #[test]
    fn ceil_mode_mean_divides_by_the_clipped_window() {
        // 3 wide, kernel 2, stride 2, ceil: the last window covers one column.
        let x = vec![2.0, 4.0, 6.0];
        let w = Window2d {
            n: 1,
            c: 1,
            h: 1,
            w: 3,
            kh: 1,
            kw: 2,
            sh: 1,
            sw: 2,
            dh: 1,
            dw: 1,
            pad: [0; 4],
            oh: 1,
            ow: 2,
        };
        assert_eq!(eval_new(&Op::Pool2d { win: w, reduce: Reduce::Mean }, &[&x], 2), [3.0, 6.0]);
    }

    #[test]
    fn matmul_channel_ops_and_batchnorm_fold() {
        let x = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // [2, 3]
        let w = vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0]; // [3, 2]
        assert_eq!(eval_new(&Op::MatMul { m: 2, k: 3, n: 2 }, &[&x, &w], 4), [4.0, 5.0, 10.0, 11.0]);
        let add = Op::AddChannel { outer: 1, channels: 2, inner: 3 };
        assert_eq!(eval_new(&add, &[&x, &[10.0, 20.0]], 6), [11.0, 12.0, 13.0, 24.0, 25.0, 26.0]);
        let fold = Op::BatchNormFold { channels: 1, eps: 0.0 };
        assert_eq!(eval_new(&fold, &[&[2.0], &[1.0], &[3.0], &[4.0]], 2), [1.0, -2.0]);
    }

    #[test]
    fn softmax_is_stable_and_normalised() {
        let x = vec![1000.0, 1000.0, 1000.0 + 2f32.ln()];
        let y = eval_new(&Op::Softmax { rows: 1, cols: 3 }, &[&x], 3);
        assert!((y[0] - 0.25).abs() < 1e-4 && (y[2] - 0.5).abs() < 1e-4, "{y:?}");
    }

    #[test]
    fn lrn_matches_pytorch_window() {
        // size 3 over 3 channels, one pixel: channel 0 sums channels 0..=1.
        let x = vec![1.0, 2.0, 3.0];
        let op = Op::Lrn { n: 1, c: 3, hw: 1, size: 3, alpha: 3.0, beta: 1.0, k: 1.0 };
        let y = eval_new(&op, &[&x], 3);
        assert_eq!(y, [1.0 / 6.0, 2.0 / 15.0, 3.0 / 14.0]);
    }

    #[test]
    fn concat_embedding_and_unary() {
        let op = Op::Concat { outer: 2, inners: vec![1, 2] };
        assert_eq!(eval_new(&op, &[&[1.0, 2.0], &[3.0, 4.0, 5.0, 6.0]], 6), [1.0, 3.0, 4.0, 2.0, 5.0, 6.0]);
        let ids = [f32::from_bits(2), f32::from_bits(0)];
        let table = [0.0, 1.0, 10.0, 11.0, 20.0, 21.0];
        let emb = Op::Embedding { count: 2, vocab: 3, dim: 2 };
        assert_eq!(eval_new(&emb, &[&ids, &table], 4), [20.0, 21.0, 0.0, 1.0]);
        let leaky = Op::Unary { len: 2, f: UnaryFn::LeakyRelu(0.5) };
        assert_eq!(eval_new(&leaky, &[&[-2.0, 3.0]], 2), [-1.0, 3.0]);
    }

    /// One step of each cell from zero state, against the formulas written out.
    #[test]
    fn recurrent_cells_follow_pytorch_gate_order() {
        let s = |x: f64| 1.0 / (1.0 + (-x).exp());
        let base = Recurrence { cell: Cell::Rnn, n: 1, t: 1, f: 1, h: 1, last: true, bias: true };
        let x = [0.5f32];
        for (cell, expected) in [
            // gates: xi = x·w + b_ih, hh = b_hh (h₀ = 0); w = [1, 2, 3, 4][..g], b_ih = 0.1, b_hh = 0.2.
            (Cell::Rnn, (0.5f64 + 0.3).tanh()),
            (Cell::Lstm, {
                let (i, g, o) = (s(0.5 + 0.3), (1.5f64 + 0.3).tanh(), s(2.0 + 0.3));
                o * (i * g).tanh()
            }),
            (Cell::Gru, {
                let (r, z) = (s(0.5 + 0.3), s(1.0 + 0.3));
                let n = (1.5 + 0.1 + r * 0.2f64).tanh();
                (1.0 - z) * n
            }),
        ] {
            let g = cell.gates();
            let w_ih: Vec<f32> = (1..=g).map(|v| v as f32).collect();
            let w_hh = vec![0.0; g];
            let (b_ih, b_hh) = (vec![0.1; g], vec![0.2; g]);
            let r = Recurrence { cell, ..base };
            let y = eval_new(&Op::Recurrent(r), &[&x, &w_ih, &w_hh, &b_ih, &b_hh], 1);
            assert!((y[0] as f64 - expected).abs() < 1e-6, "{cell:?}: {} vs {expected}", y[0]);
        }
    }
}
