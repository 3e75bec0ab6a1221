//! Every reduction the generated code performs, at a million values, against the exact
//! sum: batch-norm's moments and backward sums, bias gradients (channel and column sums),
//! squared norms, global average pooling, softmax's normaliser and the mean losses.
//!
//! The terms are mostly positive with a large common part, the case where adding them one
//! after another in f32 drifts furthest (a sum of n equal terms loses about n·ε/2 of its
//! value): a single f32x4 accumulator over a million such values is off by ~10⁻³. The
//! bound here is a few f32 roundings of Σ|term|, independent of the length: [`ROUNDINGS`].
//! Each case runs on one thread and on three.

mod common;

use common::Builder;
use nnc_compiler::ir::ops::{Op, TensorId};
use nnc_runtime::exec::{Executable, Options};
use nnc_runtime::init::Rng;

/// The error allowed, in units of f32's ε (2⁻²³) times Σ|term|. A term computed from its
/// inputs costs up to two or three roundings of itself, the f32 blocks up to `BLOCK / 4 − 1`
/// more in the worst case (about one in practice), the f64 total nothing visible, and the
/// final rounding half a unit.
const ROUNDINGS: f64 = 4.0;

const EPS: f64 = f32::EPSILON as f64;

/// A million values or more.
const MILLION: usize = 1 << 20;

/// Values in [1, 1.5), as f32.
fn positive(len: usize, rng: &mut Rng) -> Vec<f32> {
    (0..len).map(|_| (1.0 + 0.5 * rng.uniform()) as f32).collect()
}

/// Compiles the graph for `threads`, writes `inputs` and runs it.
fn run(b: &Builder, threads: usize, inputs: &[(TensorId, &[f32])]) -> Executable {
    let options = Options { threads, guard: true, verify: true, fma: true, ..Default::default() };
    let mut exe = Executable::from_ops(b.graph.clone(), &options).expect("compiles");
    for (t, data) in inputs {
        exe.tensor_mut(*t).copy_from_slice(data);
    }
    exe.run().expect("runs");
    exe
}

/// Asserts that `got` is within [`ROUNDINGS`] of `exact`, for a sum whose terms add up to
/// `magnitude` in absolute value. (Measured: at most 0.46 ε.)
fn close(what: &str, got: f32, exact: f64, magnitude: f64) {
    let units = (got as f64 - exact).abs() / (EPS * magnitude);
    assert!(
        units <= ROUNDINGS,
        "{what}: {got} against exactly {exact}: {units:.1} ε of Σ|term| ({magnitude})"
    );
}

#[test]
fn batchnorm_moments() {
    let (outer, channels, inner) = (64, 2, MILLION / 64);
    let mut rng = Rng::new(1);
    let x = positive(outer * channels * inner, &mut rng);
    let mut b = Builder::new(outer);
    let xt = b.input(vec![outer, channels, inner]);
    let m = b.op(Op::ChannelMoments { outer, channels, inner }, vec![xt], vec![2, channels]);
    for threads in [1, 3] {
        let exe = run(&b, threads, &[(xt, &x)]);
        let got = exe.tensor(m);
        for c in 0..channels {
            let values = || {
                (0..outer).flat_map(|o| x[(o * channels + c) * inner..][..inner].iter().map(|v| *v as f64))
            };
            let n = (outer * inner) as f64;
            let mean = values().sum::<f64>() / n;
            close(&format!("mean of channel {c}"), got[c], mean, values().map(f64::abs).sum::<f64>() / n);
            // The kernel subtracts its own (f32) mean; the exact variance about it.
            let m32 = got[c] as f64;
            let squares = || values().map(|v| (v - m32) * (v - m32));
            let var = squares().sum::<f64>() / n;
            close(&format!("variance of channel {c}"), got[channels + c], var, var);
        }
    }
}

#[test]
fn batchnorm_backward_sums() {
    let (outer, channels, inner) = (16, 2, MILLION / 16);
    let mut rng = Rng::new(2);
    let len = outer * channels * inner;
    let dy = positive(len, &mut rng);
    let x: Vec<f32> = (0..len).map(|_| rng.normal() as f32).collect();
    let moments = [0.1f32, -0.2, 0.9, 1.1];
    let eps = 1e-5f32;
    let mut b = Builder::new(outer);
    let (dyt, xt) = (b.input(vec![outer, channels, inner]), b.input(vec![outer, channels, inner]));
    let mt = b.input(vec![2, channels]);
    let op = Op::BatchNormBackwardReduce { outer, channels, inner, eps };
    let r = b.op(op, vec![dyt, xt, mt], vec![2, channels]);
    for threads in [1, 3] {
        let exe = run(&b, threads, &[(dyt, &dy), (xt, &x), (mt, &moments)]);
        let got = exe.tensor(r);
        for c in 0..channels {
            let at = |o: usize, i: usize| (o * channels + c) * inner + i;
            let idx = || (0..outer).flat_map(move |o| (0..inner).map(move |i| at(o, i)));
            let sum_dy: f64 = idx().map(|k| dy[k] as f64).sum();
            close(&format!("Σ dy of channel {c}"), got[c], sum_dy, sum_dy);
            // x̂ as the kernel computes it, in f32; the products summed exactly.
            let invstd = 1.0 / (moments[channels + c] + eps).sqrt();
            let term = |k: usize| dy[k] as f64 * ((x[k] - moments[c]) * invstd) as f64;
            let exact: f64 = idx().map(term).sum();
            let magnitude: f64 = idx().map(|k| term(k).abs()).sum();
            close(&format!("Σ dy·x̂ of channel {c}"), got[channels + c], exact, magnitude);
        }
    }
}

#[test]
fn channel_sums_of_images() {
    let (outer, channels, inner) = (32, 3, MILLION / 32);
    let mut rng = Rng::new(3);
    let x = positive(outer * channels * inner, &mut rng);
    let mut b = Builder::new(outer);
    let xt = b.input(vec![outer, channels, inner]);
    let s = b.op(Op::ChannelSum { outer, channels, inner }, vec![xt], vec![channels]);
    for threads in [1, 3] {
        let exe = run(&b, threads, &[(xt, &x)]);
        for c in 0..channels {
            let exact: f64 =
                (0..outer).flat_map(|o| &x[(o * channels + c) * inner..][..inner]).map(|v| *v as f64).sum();
            close(&format!("sum of channel {c}"), exe.tensor(s)[c], exact, exact);
        }
    }
}

/// Column sums (a dense layer's bias gradient): one column of a million rows, and 37
/// columns — two strips of sixteen, two pairs and a last column — split across threads.
#[test]
fn column_sums() {
    for (rows, cols) in [(MILLION, 1), (MILLION / 37 + 1, 37)] {
        let mut rng = Rng::new(4);
        let x = positive(rows * cols, &mut rng);
        let mut b = Builder::new(rows);
        let xt = b.input(vec![rows, cols]);
        let s = b.op(Op::ChannelSum { outer: rows, channels: cols, inner: 1 }, vec![xt], vec![cols]);
        for threads in [1, 3] {
            let exe = run(&b, threads, &[(xt, &x)]);
            for c in 0..cols {
                let exact: f64 = (0..rows).map(|r| x[r * cols + c] as f64).sum();
                close(&format!("column {c} of {cols}, {threads} threads"), exe.tensor(s)[c], exact, exact);
            }
        }
    }
}

#[test]
fn squared_norm() {
    let len = MILLION + 3;
    let mut rng = Rng::new(5);
    let x = positive(len, &mut rng);
    let mut b = Builder::new(1);
    let xt = b.input(vec![len]);
    let s = b.op(Op::SumSquares { len }, vec![xt], vec![1]);
    let exe = run(&b, 1, &[(xt, &x)]);
    let exact: f64 = x.iter().map(|v| (v * v) as f64).sum();
    close("Σ x²", exe.tensor(s)[0], exact, exact);
}

#[test]
fn global_average_pooling() {
    let (n, c, hw) = (1, 2, MILLION + 1);
    let mut rng = Rng::new(6);
    let x = positive(n * c * hw, &mut rng);
    let mut b = Builder::new(n);
    let xt = b.input(vec![n, c, hw]);
    let y = b.op(Op::GlobalAvgPool { n, c, hw }, vec![xt], vec![n, c]);
    let exe = run(&b, 1, &[(xt, &x)]);
    for ch in 0..c {
        let mean = x[ch * hw..][..hw].iter().map(|v| *v as f64).sum::<f64>() / hw as f64;
        close(&format!("mean of plane {ch}"), exe.tensor(y)[ch], mean, mean);
    }
}

/// Softmax over a million classes: each probability is exp(x − max) / Σ, so an error in
/// the sum shows in every output. The exponential itself is accurate to ~1.2e-7; the
/// bound is on the sum, read back as 1 / (y / exp(x − max)) would be too noisy, so the
/// outputs are checked to add up to one.
#[test]
fn softmax_normaliser() {
    let cols = MILLION;
    let mut rng = Rng::new(7);
    let x: Vec<f32> = (0..cols).map(|_| (0.1 * rng.uniform()) as f32).collect();
    let mut b = Builder::new(1);
    let xt = b.input(vec![1, cols]);
    let y = b.op(Op::Softmax { rows: 1, cols }, vec![xt], vec![1, cols]);
    let exe = run(&b, 1, &[(xt, &x)]);
    let total: f64 = exe.tensor(y).iter().map(|v| *v as f64).sum();
    // Each output carries its own exp error (~1.2e-7) and two roundings; the sum's error
    // would add ~n·ε/2 ≈ 0.06 if it drifted as a plain f32 sum does.
    assert!((total - 1.0).abs() <= 1e-6, "softmax outputs add up to {total}");
}

/// Mean cross-entropy over 100,000 rows of ten classes, and over one row of a million.
#[test]
fn cross_entropy_mean() {
    for (rows, cols) in [(100_000, 10), (1, MILLION)] {
        let mut rng = Rng::new(8);
        let logits: Vec<f32> = (0..rows * cols).map(|_| rng.normal() as f32).collect();
        let labels: Vec<f32> = (0..rows).map(|_| f32::from_bits(rng.below(cols as u64) as u32)).collect();
        let mut b = Builder::new(rows);
        let lt = b.input(vec![rows, cols]);
        let yt = b.label(vec![rows]);
        let stats = b.activation(vec![2]);
        let grad = b.activation(vec![rows, cols]);
        b.op_aux(Op::SoftmaxCrossEntropy { rows, cols }, vec![lt, yt], grad, vec![stats]);
        let exe = run(&b, 1, &[(lt, &logits), (yt, &labels)]);
        let mut exact = 0.0;
        for r in 0..rows {
            let row = &logits[r * cols..][..cols];
            let max = row.iter().fold(f64::NEG_INFINITY, |m, v| m.max(*v as f64));
            let sum: f64 = row.iter().map(|v| (*v as f64 - max).exp()).sum();
            exact += sum.ln() + max - row[labels[r].to_bits() as usize] as f64;
        }
        exact /= rows as f64;
        // Every row's loss carries the exp and log polynomials' errors (~1.5e-7 of it).
        let got = exe.tensor(stats)[0] as f64;
        assert!(
            (got - exact).abs() <= 1e-6 * exact,
            "mean loss over {rows} rows of {cols}: {got} against exactly {exact}"
        );
    }
}

/// An embedding's gradient: a million rows of five, each added to the row of its id (one
/// of three, and one id in a hundred outside the vocabulary, which is skipped).
#[test]
fn embedding_gradient() {
    let (count, vocab, dim) = (MILLION, 3, 5);
    let mut rng = Rng::new(9);
    let ids: Vec<f32> = (0..count)
        .map(|_| {
            f32::from_bits(if rng.below(100) == 0 { vocab as u32 } else { rng.below(vocab as u64) as u32 })
        })
        .collect();
    let dy = positive(count * dim, &mut rng);
    let mut b = Builder::new(count);
    let it = b.input(vec![count]);
    let dt = b.input(vec![count, dim]);
    let g = b.op(Op::EmbeddingBackward { count, vocab, dim }, vec![it, dt], vec![vocab, dim]);
    let exe = run(&b, 1, &[(it, &ids), (dt, &dy)]);
    let mut exact = vec![0.0f64; vocab * dim];
    for (i, id) in ids.iter().enumerate() {
        let id = id.to_bits() as usize;
        if id < vocab {
            for k in 0..dim {
                exact[id * dim + k] += dy[i * dim + k] as f64;
            }
        }
    }
    for (k, &e) in exact.iter().enumerate() {
        close(&format!("gradient of row {} column {}", k / dim, k % dim), exe.tensor(g)[k], e, e);
    }
}
