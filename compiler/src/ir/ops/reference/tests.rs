use super::eval;
use crate::front::layers::activation::Activation;
use crate::ir::ops::{Cell, Op, Recurrence, Reduce, Window2d};

/// A square window over one `c`-channel image: (height, width), kernel, stride,
/// padding, output (height, width).
fn win(c: usize, (h, w): (usize, usize), k: usize, s: usize, p: usize, (oh, ow): (usize, usize)) -> Window2d {
    Window2d { n: 1, c, h, w, kh: k, kw: k, sh: s, sw: s, dh: 1, dw: 1, pad: [p; 4], oh, ow }
}

fn eval_new(op: &Op, x: &[&[f32]], len: usize) -> Vec<f32> {
    let mut out = vec![f32::NAN; len];
    eval(op, x, &mut [&mut out]);
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
    assert_eq!(eval_new(&Op::MatMul { m: 2, k: 3, n: 2, ta: false }, &[&x, &w], 4), [4.0, 5.0, 10.0, 11.0]);
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
    let leaky = Op::Elementwise { len: 2, f: Activation::LeakyRelu { slope: 0.5 }.function() };
    assert_eq!(eval_new(&leaky, &[&[-2.0, 3.0]], 2), [-1.0, 3.0]);
}

/// One step of each cell from zero state, against the formulas written out.
#[test]
fn recurrent_cells_follow_pytorch_gate_order() {
    let s = |x: f64| 1.0 / (1.0 + (-x).exp());
    let base = Recurrence { cell: Cell::Rnn, n: 1, t: 1, f: 1, h: 1, last: true, bias: true, train: false };
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
