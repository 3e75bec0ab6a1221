//! Ops computed in f64 against their formulas written out in f64, and integers carried in
//! bits read alike in both types.

use super::{Real, eval};
use crate::front::layers::activation::EXAMPLES;
use crate::ir::ops::{Elementwise, Op, Reduce, Window2d};

fn eval_f64(op: &Op, x: &[&[f64]], len: usize) -> Vec<f64> {
    let mut out = vec![f64::NAN; len];
    eval(op, x, &mut [&mut out[..]]);
    out
}

/// Within a few f64 roundings of `want`: far tighter than an f32 result could be.
fn assert_exact(what: &str, got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= 1e-14 * w.abs().max(1.0), "{what}[{i}]: {g:e} vs {w:e}");
    }
}

/// Thirds and tenths, which no f32 holds exactly.
fn thirds(len: usize) -> Vec<f64> {
    (0..len).map(|i| (i as f64 + 1.0) / 3.0 - 0.1 * (i % 4) as f64).collect()
}

#[test]
fn products_and_sums_are_computed_in_f64() {
    let (a, b) = (thirds(6), thirds(6).iter().map(|v| 1.0 - v).collect::<Vec<_>>());
    // [2, 3] · [3, 2].
    let want: Vec<f64> =
        (0..4).map(|ij| (0..3).map(|p| a[ij / 2 * 3 + p] * b[p * 2 + ij % 2]).sum()).collect();
    assert_exact("matmul", &eval_f64(&Op::MatMul { m: 2, k: 3, n: 2, ta: false }, &[&a, &b], 4), &want);
    let want: Vec<f64> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    let mul = Op::Elementwise { len: 6, f: Elementwise::mul() };
    assert_exact("mul", &eval_f64(&mul, &[&a, &b], 6), &want);
    let want: Vec<f64> = a.iter().map(|x| x * f64::from(0.1f32)).collect();
    let scale = Op::Elementwise { len: 6, f: Elementwise::scale(0.1) };
    assert_exact("scale", &eval_f64(&scale, &[&a], 6), &want);
    // A 1×3 mean window over 1×3: one third of the sum.
    let win = Window2d {
        n: 1,
        c: 1,
        h: 1,
        w: 3,
        kh: 1,
        kw: 3,
        sh: 1,
        sw: 1,
        dh: 1,
        dw: 1,
        pad: [0; 4],
        oh: 1,
        ow: 1,
    };
    let mean = eval_f64(&Op::Pool2d { win, reduce: Reduce::Mean }, &[&a[..3]], 1);
    assert_exact("avgpool", &mean, &[(a[0] + a[1] + a[2]) / 3.0]);
    let g = [1.0 / 7.0];
    let back = {
        let mut out = vec![0.0; 3];
        eval(&Op::Pool2dBackward { win, reduce: Reduce::Mean }, &[&g, &a[..3]], &mut [&mut out[..]]);
        out
    };
    assert_exact("avgpool backward", &back, &[1.0 / 21.0; 3]);
}

#[test]
fn activations_softmax_and_batch_norm_follow_their_f64_formulas() {
    let x = thirds(5);
    // Every activation's program evaluated in f64 agrees with evaluating it one value at
    // a time (its formula against PyTorch's is checked where activations are defined).
    for a in EXAMPLES {
        let f = a.function();
        let want: Vec<f64> = x.iter().map(|&v| f.eval(&[v])).collect();
        assert_exact(a.name(), &eval_f64(&Op::Elementwise { len: 5, f: f.clone() }, &[&x], 5), &want);
    }
    let total: f64 = x.iter().map(|v| v.exp()).sum();
    let want: Vec<f64> = x.iter().map(|v| v.exp() / total).collect();
    assert_exact("softmax", &eval_f64(&Op::Softmax { rows: 1, cols: 5 }, &[&x], 5), &want);

    // Moments of one channel of five values, then the fold they feed.
    let mean = x.iter().sum::<f64>() / 5.0;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 5.0;
    let moments = eval_f64(&Op::ChannelMoments { outer: 1, channels: 1, inner: 5 }, &[&x], 2);
    assert_exact("moments", &moments, &[mean, var]);
    let (gamma, beta) = ([0.7], [-0.2]);
    let scale = 0.7 / (var + f64::from(1e-5f32)).sqrt();
    let fold = eval_f64(&Op::BatchNormFoldTrain { channels: 1, eps: 1e-5 }, &[&gamma, &beta, &moments], 2);
    assert_exact("fold", &fold, &[scale, -0.2 - mean * scale]);
}

/// Class ids and token ids are read from the same bits in both types; the f64 loss is the
/// formula in f64.
#[test]
fn ids_and_labels_carried_in_bits_are_read_alike() {
    let (ids32, ids64) = ([2u32, 0, 1].map(f32::from_bits), [2u32, 0, 1].map(f64::from_bits32));
    let table: Vec<f64> = thirds(6);
    let emb = Op::Embedding { count: 3, vocab: 3, dim: 2 };
    let want = [table[4], table[5], table[0], table[1], table[2], table[3]];
    assert_exact("embedding", &eval_f64(&emb, &[&ids64, &table], 6), &want);
    let table32: Vec<f32> = table.iter().map(|&v| v as f32).collect();
    let mut out32 = vec![0.0f32; 6];
    eval(&emb, &[&ids32, &table32], &mut [&mut out32[..]]);
    assert_eq!(out32, want.map(|v| v as f32));

    let logits = thirds(6); // two rows of three
    let labels = [2u32, 0].map(f64::from_bits32);
    let (mut dlogits, mut stats) = (vec![0.0; 6], vec![0.0; 2]);
    eval(
        &Op::SoftmaxCrossEntropy { rows: 2, cols: 3 },
        &[&logits, &labels],
        &mut [&mut dlogits[..], &mut stats[..]],
    );
    let nll = |row: &[f64], label: usize| row.iter().map(|v| v.exp()).sum::<f64>().ln() - row[label];
    let loss = (nll(&logits[..3], 2) + nll(&logits[3..], 0)) / 2.0;
    // Row 0's largest logit is its last, its label; row 1's is not its first.
    assert_exact("loss", &stats, &[loss, 1.0]);
}
