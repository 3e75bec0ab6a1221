//! Finite-difference checks of the reference interpreter's backward ops.
//!
//! The backward ops are the oracle generated training kernels are tested against, so they
//! are checked here against the only thing that is right by construction: the forward ops.
//! For a random upstream gradient `dy`, the gradient of L = Σ dy · f(x₀, x₁, …) with respect
//! to every element of an input, taken by central differences of the forward reference,
//! must match what the backward op computes. Losses are checked the same way against the
//! mean loss they report. Optimizer steps, running statistics and the sum of squares are not
//! gradients; they are checked against PyTorch's formulas written out independently.
//!
//! Tolerance: |fd − rule| ≤ 2e-3 · (|rule| + rms(rule)) + 1e-4. The forward ops round their
//! outputs to f32, which perturbs L by about 6e-8 of the outputs the step moves; divided by
//! the step 2h = 2e-2 that is a few 1e-5 at the magnitudes drawn here. The truncation error of
//! central differences, h²/6 · f‴, is of the same order for the smooth ops, because inputs
//! are kept where f‴ is moderate: away from relu's kink, away from ties in max pooling, and
//! batch-norm channels with some spread. Over thousands of cases the largest error seen is
//! a third of the bound for batch-norm and under a tenth for everything else. A wrong rule
//! (a lost term, a flipped sign, a mirrored window, a gradient sent to the wrong element or
//! divided by the wrong count) is off by a sizeable fraction of the gradient itself: each
//! of some thirty such deliberate breakages of the rules fails here.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

use super::eval;
use crate::front::layers::activation::{EXAMPLES, KINKS};
use crate::ir::ops::elementwise::{Derivative, Source};
use crate::ir::ops::{Cell, Elementwise, Hyper, Op, Recurrence, Reduce, UpdateRule, Window2d};

/// The finite-difference step.
const H: f32 = 1e-2;

/// SplitMix64. Tensors are drawn from a seed so that proptest only picks (and shrinks)
/// shapes and op parameters.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform in [−scale, scale).
    fn tensor(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| scale * (2.0 * self.unit() - 1.0)).collect()
    }

    /// Distinct values 0.05 apart in random order: a step of ±H then never changes which
    /// input of a max window is the largest.
    fn distinct(&mut self, len: usize) -> Vec<f32> {
        let mut v: Vec<f32> = (0..len).map(|i| (i as f32 - len as f32 / 2.0) * 0.05).collect();
        for i in (1..len).rev() {
            v.swap(i, self.below(i + 1));
        }
        v
    }
}

/// Runs `op` into zeroed outputs of the given lengths (some backward ops accumulate into
/// theirs).
fn run(op: &Op, inputs: &[&[f32]], lens: &[usize]) -> Vec<Vec<f32>> {
    let mut outs: Vec<Vec<f32>> = lens.iter().map(|&len| vec![0.0; len]).collect();
    let mut slots: Vec<&mut [f32]> = outs.iter_mut().map(Vec::as_mut_slice).collect();
    eval(op, inputs, &mut slots);
    outs
}

fn run1(op: &Op, inputs: &[&[f32]], len: usize) -> Vec<f32> {
    run(op, inputs, &[len]).swap_remove(0)
}

fn slices(xs: &[Vec<f32>]) -> Vec<&[f32]> {
    xs.iter().map(Vec::as_slice).collect()
}

/// The gradient of input `which` of element-wise `f` at `inputs` for output gradient `dy`,
/// by the backward op automatic differentiation derives.
fn derived(f: &Elementwise, which: usize, dy: &[f32], inputs: &[Vec<f32>], len: usize) -> Vec<f32> {
    match f.derivative(which) {
        Derivative::Zero => vec![0.0; len],
        Derivative::Same => dy.to_vec(),
        Derivative::Program(df, sources) => {
            let y = run1(&Op::Elementwise { len, f: f.clone() }, &slices(inputs), len);
            let mut args: Vec<&[f32]> = vec![dy];
            args.extend(sources.iter().map(|s| match *s {
                Source::Output => y.as_slice(),
                Source::Input(j) => inputs[j].as_slice(),
            }));
            run1(&Op::Elementwise { len, f: df }, &args, len)
        }
    }
}

/// `op`, whose output has `len` values, as a function of its inputs.
fn forward_of(op: Op, len: usize) -> impl Fn(&[Vec<f32>]) -> Vec<f32> {
    move |xs| run1(&op, &slices(xs), len)
}

/// Checks `analytic`, the gradient of L = Σ dy · forward(inputs) with respect to
/// `inputs[which]`, element by element against central differences of L.
fn fd_check(
    forward: impl Fn(&[Vec<f32>]) -> Vec<f32>,
    inputs: &[Vec<f32>],
    which: usize,
    dy: &[f32],
    analytic: &[f32],
) -> Result<(), TestCaseError> {
    let loss = |xs: &[Vec<f32>]| -> f64 {
        let y = forward(xs);
        assert_eq!(y.len(), dy.len(), "the forward output and dy differ in length");
        y.iter().zip(dy).map(|(&y, &d)| y as f64 * d as f64).sum()
    };
    prop_assert_eq!(analytic.len(), inputs[which].len());
    let rms = (analytic.iter().map(|&a| (a as f64).powi(2)).sum::<f64>() / analytic.len() as f64).sqrt();
    let mut xs = inputs.to_vec();
    for (e, &a) in analytic.iter().enumerate() {
        let x = inputs[which][e];
        let (up, down) = (x + H, x - H);
        xs[which][e] = up;
        let l_up = loss(&xs);
        xs[which][e] = down;
        let l_down = loss(&xs);
        xs[which][e] = x;
        // Divided by the step actually taken, x ± H rounded to f32.
        let fd = (l_up - l_down) / (up as f64 - down as f64);
        let a = a as f64;
        prop_assert!(
            (fd - a).abs() <= 2e-3 * (a.abs() + rms) + 1e-4,
            "d/d input {}[{}]: finite difference {}, backward rule {}",
            which,
            e,
            fd,
            a
        );
    }
    Ok(())
}

/// Checks `got` against values computed independently in f64. The bound is a few f32
/// roundings: the op computes in f64 too, but from f32 hyper-parameters.
fn assert_close(got: &[f32], expected: &[f64]) -> Result<(), TestCaseError> {
    prop_assert_eq!(got.len(), expected.len());
    for (i, (&g, &e)) in got.iter().zip(expected).enumerate() {
        prop_assert!((g as f64 - e).abs() <= 1e-6 * (1.0 + e.abs()), "[{}]: got {}, expected {}", i, g, e);
    }
    Ok(())
}

/// Floor-mode output length of a window, or `None` when the dilated kernel does not fit
/// the padded input.
fn out_len(size: usize, pad: usize, kernel: usize, stride: usize, dilation: usize) -> Option<usize> {
    let span = dilation * (kernel - 1) + 1;
    (size + pad).checked_sub(span).map(|room| room / stride + 1)
}

/// A convolution `(window, k, groups)` with `c` and `k` multiples of `groups`.
fn conv_case() -> impl Strategy<Value = (Window2d, usize, usize)> {
    (
        (1..=3usize, 1..=2usize, 1..=4usize, 1..=4usize),
        (1..=7usize, 1..=7usize, 1..=3usize, 1..=3usize),
        (1..=2usize, 1..=2usize, 1..=2usize, 1..=2usize),
        prop::array::uniform4(0..=2usize),
    )
        .prop_filter_map(
            "groups must divide c and k, and the kernel fit",
            |((n, groups, c, k), (h, w, kh, kw), (sh, sw, dh, dw), pad)| {
                if !c.is_multiple_of(groups) || !k.is_multiple_of(groups) {
                    return None;
                }
                let oh = out_len(h, pad[0] + pad[1], kh, sh, dh)?;
                let ow = out_len(w, pad[2] + pad[3], kw, sw, dw)?;
                Some((Window2d { n, c, h, w, kh, kw, sh, sw, dh, dw, pad, oh, ow }, k, groups))
            },
        )
}

/// A pooling window as PyTorch allows it: no dilation, padding at most half the kernel (so
/// every window holds an input), and in ceil mode one more output when the last window still
/// starts inside the input or its leading padding.
fn pool_case() -> impl Strategy<Value = Window2d> {
    (
        (1..=2usize, 1..=3usize, 1..=7usize, 1..=7usize),
        (1..=3usize, 1..=3usize, 1..=2usize, 1..=2usize),
        prop::array::uniform4(0..=1usize),
        any::<bool>(),
    )
        .prop_filter_map(
            "the kernel must fit the padded input",
            |((n, c, h, w), (kh, kw, sh, sw), pad, ceil)| {
                let pad = [pad[0].min(kh / 2), pad[1].min(kh / 2), pad[2].min(kw / 2), pad[3].min(kw / 2)];
                let len = |size: usize, before: usize, after: usize, kernel: usize, stride: usize| {
                    let floor = out_len(size, before + after, kernel, stride, 1)?;
                    let partial = !(size + before + after - kernel).is_multiple_of(stride);
                    Some(if ceil && partial && floor * stride < size + before { floor + 1 } else { floor })
                };
                let oh = len(h, pad[0], pad[1], kh, sh)?;
                let ow = len(w, pad[2], pad[3], kw, sw)?;
                Some(Window2d { n, c, h, w, kh, kw, sh, sw, dh: 1, dw: 1, pad, oh, ow })
            },
        )
}

/// Pool2dBackward against finite differences of Pool2d, on inputs `x`.
fn check_pool(win: Window2d, reduce: Reduce, x: Vec<f32>, rng: &mut Rng) -> Result<(), TestCaseError> {
    let ylen = win.n * win.c * win.oh * win.ow;
    let dy = rng.tensor(ylen, 1.0);
    let dx = run1(&Op::Pool2dBackward { win, reduce }, &[&dy, &x], x.len());
    fd_check(forward_of(Op::Pool2d { win, reduce }, ylen), &[x], 0, &dy, &dx)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn conv2d_backward_data_and_weight((win, k, groups) in conv_case(), seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let x = rng.tensor(win.n * win.c * win.h * win.w, 1.0);
        let weight = rng.tensor(k * win.c / groups * win.kh * win.kw, 1.0);
        let ylen = win.n * k * win.oh * win.ow;
        let dy = rng.tensor(ylen, 1.0);
        let dx = run1(&Op::Conv2dBackwardData { win, k, groups }, &[&dy, &weight], x.len());
        let dweight = run1(&Op::Conv2dBackwardWeight { win, k, groups, parts: 1 }, &[&dy, &x], weight.len());
        let conv = forward_of(Op::Conv2d { win, k, groups }, ylen);
        let inputs = [x, weight];
        fd_check(&conv, &inputs, 0, &dy, &dx)?;
        fd_check(&conv, &inputs, 1, &dy, &dweight)?;
    }

    #[test]
    fn max_pool_backward(win in pool_case(), seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let x = rng.distinct(win.n * win.c * win.h * win.w);
        check_pool(win, Reduce::Max, x, &mut rng)?;
    }

    #[test]
    fn mean_pool_backward(win in pool_case(), seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let x = rng.tensor(win.n * win.c * win.h * win.w, 1.0);
        check_pool(win, Reduce::Mean, x, &mut rng)?;
    }

    #[test]
    fn global_avg_pool_backward_is_a_scaled_broadcast(
        n in 1..=3usize, c in 1..=4usize, hw in 1..=9usize, seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let x = rng.tensor(n * c * hw, 1.0);
        let dy = rng.tensor(n * c, 1.0);
        let broadcast = Op::BroadcastChannel { outer: n, channels: c, inner: hw, scale: 1.0 / hw as f32 };
        let dx = run1(&broadcast, &[&dy], x.len());
        fd_check(forward_of(Op::GlobalAvgPool { n, c, hw }, n * c), &[x], 0, &dy, &dx)?;
    }

    #[test]
    fn matmul_backward_is_two_matmuls(
        m in 1..=6usize, k in 1..=6usize, n in 1..=6usize, seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let (x, w, dy) = (rng.tensor(m * k, 1.0), rng.tensor(k * n, 1.0), rng.tensor(m * n, 1.0));
        let wt = run1(&Op::Transpose { rows: k, cols: n }, &[&w], k * n);
        let dx = run1(&Op::MatMul { m, k: n, n: k, ta: false }, &[&dy, &wt], m * k);
        let dw = run1(&Op::MatMul { m: k, k: m, n, ta: true }, &[&x, &dy], k * n);
        let matmul = forward_of(Op::MatMul { m, k, n, ta: false }, m * n);
        let inputs = [x, w];
        fd_check(&matmul, &inputs, 0, &dy, &dx)?;
        fd_check(&matmul, &inputs, 1, &dy, &dw)?;
    }

    /// Backpropagation through time, and the products and sums the autodiff rule makes of
    /// its projections' gradients, against differences of the recurrence itself.
    #[test]
    fn recurrent_backward_through_time(
        cell in 0..3usize, n in 1..=2usize, t in 1..=4usize, f in 1..=3usize, h in 1..=3usize,
        last in any::<bool>(), bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let cell = [Cell::Rnn, Cell::Lstm, Cell::Gru][cell];
        let r = Recurrence { cell, n, t, f, h, last, bias, train: true };
        let (g, rows) = (cell.gates() * h, n * t);
        let mut rng = Rng(seed);
        let mut inputs = vec![rng.tensor(rows * f, 1.0), rng.tensor(f * g, 0.7), rng.tensor(h * g, 0.7)];
        if bias {
            inputs.extend([rng.tensor(g, 0.5), rng.tensor(g, 0.5)]);
        }
        let out = if last { n * h } else { rows * h };
        let saved = run(&Op::Recurrent(r), &slices(&inputs), &[out, rows * h, rows * r.saved() * h]);
        let dy = rng.tensor(out, 1.0);
        let w_hh_t = run1(&Op::Transpose { rows: h, cols: g }, &[&inputs[2]], h * g);
        let splits = cell.step().splits();
        let lens: &[usize] = if splits { &[rows * g, rows * g] } else { &[rows * g] };
        let d = run(&Op::RecurrentBackward(r), &[&dy, &saved[1], &saved[2], &w_hh_t], lens);
        let (dp, dq) = (&d[0], d.last().expect("dp"));
        let w_ih_t = run1(&Op::Transpose { rows: f, cols: g }, &[&inputs[1]], f * g);
        let mut grads = vec![
            run1(&Op::MatMul { m: rows, k: g, n: f, ta: false }, &[dp, &w_ih_t], rows * f),
            run1(&Op::MatMul { m: f, k: rows, n: g, ta: true }, &[&inputs[0], dp], f * g),
            run1(&Op::MatMul { m: h, k: rows, n: g, ta: true }, &[&saved[1], dq], h * g),
        ];
        if bias {
            for d in [dp, dq] {
                grads.push(run1(&Op::ChannelSum { outer: rows, channels: g, inner: 1 }, &[d], g));
            }
        }
        let forward = forward_of(Op::Recurrent(Recurrence { train: false, ..r }), out);
        for (which, grad) in grads.iter().enumerate() {
            fd_check(&forward, &inputs, which, &dy, grad)?;
        }
    }

    #[test]
    fn matmul_with_transposed_a_reads_a_as_stored_k_by_m(
        m in 1..=6usize, k in 1..=6usize, n in 1..=6usize, seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let (at, w) = (rng.tensor(k * m, 1.0), rng.tensor(k * n, 1.0));
        let expected: Vec<f64> = (0..m * n)
            .map(|ij| (0..k).map(|p| at[p * m + ij / n] as f64 * w[p * n + ij % n] as f64).sum())
            .collect();
        assert_close(&run1(&Op::MatMul { m, k, n, ta: true }, &[&at, &w], m * n), &expected)?;
    }

    #[test]
    fn add_channel_backward(
        outer in 1..=3usize, channels in 1..=4usize, inner in 1..=5usize, seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let len = outer * channels * inner;
        let (x, shift, dy) = (rng.tensor(len, 1.0), rng.tensor(channels, 1.0), rng.tensor(len, 1.0));
        let dshift = run1(&Op::ChannelSum { outer, channels, inner }, &[&dy], channels);
        let add = forward_of(Op::AddChannel { outer, channels, inner }, len);
        let inputs = [x, shift];
        fd_check(&add, &inputs, 0, &dy, &dy)?;
        fd_check(&add, &inputs, 1, &dy, &dshift)?;
    }

    /// Every activation's derived backward op, away from its kinks.
    #[test]
    fn activation_backward(which in 0..EXAMPLES.len(), len in 1..=64usize, seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let x: Vec<f32> = rng
            .tensor(len, 1.0)
            .iter()
            .map(|&u| {
                let v = 7.0 * u;
                if KINKS.iter().any(|k| (v - k).abs() < 0.05) { v + 0.1 } else { v }
            })
            .collect();
        let dy = rng.tensor(len, 1.0);
        let f = EXAMPLES[which].function();
        let forward = forward_of(Op::Elementwise { len, f: f.clone() }, len);
        let dx = derived(&f, 0, &dy, std::slice::from_ref(&x), len);
        fd_check(forward, &[x], 0, &dy, &dx)?;
    }

    #[test]
    fn softmax_backward(rows in 1..=4usize, cols in 1..=8usize, seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let (x, dy) = (rng.tensor(rows * cols, 3.0), rng.tensor(rows * cols, 1.0));
        let softmax = forward_of(Op::Softmax { rows, cols }, rows * cols);
        let y = softmax(std::slice::from_ref(&x));
        let dx = run1(&Op::SoftmaxBackward { rows, cols }, &[&dy, &y], rows * cols);
        fd_check(softmax, &[x], 0, &dy, &dx)?;
    }

    #[test]
    fn lrn_backward(
        (n, c, hw, size) in (1..=2usize, 1..=6usize, 1..=4usize, 1..=5usize),
        (alpha, beta, k) in (0.01f32..1.0, 0.5f32..0.9, 1.0f32..2.0),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let len = n * c * hw;
        let (x, dy) = (rng.tensor(len, 2.0), rng.tensor(len, 1.0));
        let dx = run1(&Op::LrnBackward { n, c, hw, size, alpha, beta, k }, &[&dy, &x], len);
        fd_check(forward_of(Op::Lrn { n, c, hw, size, alpha, beta, k }, len), &[x], 0, &dy, &dx)?;
    }

    #[test]
    fn concat_backward_is_slices(
        outer in 1..=3usize, inners in prop::collection::vec(1..=4usize, 1..=4), seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let total: usize = inners.iter().sum();
        let xs: Vec<Vec<f32>> = inners.iter().map(|&inner| rng.tensor(outer * inner, 1.0)).collect();
        let dy = rng.tensor(outer * total, 1.0);
        let concat = forward_of(Op::Concat { outer, inners: inners.clone() }, outer * total);
        let mut offset = 0;
        for (which, &len) in inners.iter().enumerate() {
            let dx = run1(&Op::Slice { outer, total, offset, len }, &[&dy], outer * len);
            fd_check(&concat, &xs, which, &dy, &dx)?;
            offset += len;
        }
    }

    #[test]
    fn embedding_backward(count in 1..=6usize, vocab in 1..=5usize, dim in 1..=4usize, seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let ids: Vec<f32> = (0..count).map(|_| f32::from_bits(rng.below(vocab) as u32)).collect();
        let (table, dy) = (rng.tensor(vocab * dim, 1.0), rng.tensor(count * dim, 1.0));
        let dtable = run1(&Op::EmbeddingBackward { count, vocab, dim }, &[&ids, &dy], table.len());
        let embedding = forward_of(Op::Embedding { count, vocab, dim }, count * dim);
        fd_check(embedding, &[ids, table], 1, &dy, &dtable)?;
    }

    #[test]
    fn mul_add_and_scale_backward(len in 1..=32usize, factor in -2.0f32..2.0, seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let (a, b, dy) = (rng.tensor(len, 1.0), rng.tensor(len, 1.0), rng.tensor(len, 1.0));
        let inputs = [a, b];
        for f in [Elementwise::mul(), Elementwise::add(2)] {
            let forward = Op::Elementwise { len, f: f.clone() };
            for which in 0..2 {
                let d = derived(&f, which, &dy, &inputs, len);
                fd_check(forward_of(forward.clone(), len), &inputs, which, &dy, &d)?;
            }
        }
        let scale = Elementwise::scale(factor);
        let d = derived(&scale, 0, &dy, &inputs[..1], len);
        fd_check(forward_of(Op::Elementwise { len, f: scale }, len), &inputs[..1], 0, &dy, &d)?;
    }

    /// The whole training-mode batch-norm (statistics, fold, affine) against its two
    /// backward ops.
    #[test]
    fn batch_norm_train_backward(
        outer in 1..=3usize, channels in 1..=3usize, inner in 1..=4usize, seed in any::<u64>(),
    ) {
        prop_assume!(outer * inner >= 2);
        let eps = 1e-5;
        let mut rng = Rng(seed);
        let len = outer * channels * inner;
        let x = rng.tensor(len, 2.0);
        let (gamma, beta, dy) = (rng.tensor(channels, 1.5), rng.tensor(channels, 1.0), rng.tensor(len, 1.0));
        let moments_op = Op::ChannelMoments { outer, channels, inner };
        let moments = run1(&moments_op, &[&x], 2 * channels);
        // A nearly constant channel is ill-conditioned: a step of H would move its x̂ far.
        prop_assume!(moments[channels..].iter().all(|&var| var >= 0.1));
        let batch_norm = |xs: &[Vec<f32>]| {
            let moments = run1(&moments_op, &[&xs[0]], 2 * channels);
            let fold = Op::BatchNormFoldTrain { channels, eps };
            let scale_shift = run1(&fold, &[&xs[1], &xs[2], &moments], 2 * channels);
            run1(&Op::ScaleShiftChannel { outer, channels, inner }, &[&xs[0], &scale_shift], len)
        };
        let reduce = Op::BatchNormBackwardReduce { outer, channels, inner, eps };
        let reduced = run1(&reduce, &[&dy, &x, &moments], 2 * channels);
        let input = Op::BatchNormBackwardInput { outer, channels, inner, eps };
        let dx = run1(&input, &[&dy, &x, &moments, &gamma, &reduced], len);
        let inputs = [x, gamma, beta];
        fd_check(batch_norm, &inputs, 0, &dy, &dx)?;
        fd_check(batch_norm, &inputs, 1, &dy, &reduced[channels..])?;
        fd_check(batch_norm, &inputs, 2, &dy, &reduced[..channels])?;
    }

    #[test]
    fn dropout_backward(len in 1..=64usize, p in 0.0f32..0.9, seed in any::<u32>(), data in any::<u64>()) {
        let mut rng = Rng(data);
        let mut hyper = vec![0.0; Hyper::LEN];
        hyper[Hyper::SEED] = f32::from_bits(seed);
        let (x, dy) = (rng.tensor(len, 1.0), rng.tensor(len, 1.0));
        let dx = run1(&Op::DropoutBackward { len, p }, &[&dy, &hyper], len);
        fd_check(forward_of(Op::Dropout { len, p }, len), &[x, hyper], 0, &dy, &dx)?;
    }

    /// The mask drops about `p` of the values and scales the rest by 1 / (1 − p); the bound
    /// is over four standard deviations of the binomial count.
    #[test]
    fn dropout_drops_about_p(len in 2000..=4000usize, p in 0.05f32..0.95, seed in any::<u32>()) {
        let mut hyper = vec![0.0; Hyper::LEN];
        hyper[Hyper::SEED] = f32::from_bits(seed);
        let y = run1(&Op::Dropout { len, p }, &[&vec![1.0; len], &hyper], len);
        let dropped = y.iter().filter(|&&v| v == 0.0).count();
        let fraction = dropped as f64 / len as f64;
        prop_assert!((fraction - p as f64).abs() < 0.05, "dropped {} of {} at p = {}", dropped, len, p);
        prop_assert!(y.iter().all(|&v| v == 0.0 || v == 1.0 / (1.0 - p)));
    }

    #[test]
    fn softmax_cross_entropy(rows in 1..=5usize, cols in 1..=6usize, seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let logits = rng.tensor(rows * cols, 3.0);
        // One row in five is padding, marked by a label past the classes or a negative one.
        let labels: Vec<i32> = (0..rows)
            .map(|_| match rng.below(10) {
                0 => cols as i32,
                1 => -1,
                _ => rng.below(cols) as i32,
            })
            .collect();
        let label_bits: Vec<f32> = labels.iter().map(|&l| f32::from_bits(l as u32)).collect();
        let op = Op::SoftmaxCrossEntropy { rows, cols };
        let out = run(&op, &[&logits, &label_bits], &[rows * cols, 2]);
        let mean_loss = |xs: &[Vec<f32>]| vec![run(&op, &slices(xs), &[rows * cols, 2])[1][0]];
        fd_check(mean_loss, &[logits.clone(), label_bits], 0, &[1.0], &out[0])?;
        let mut correct = 0;
        for (r, &label) in labels.iter().enumerate() {
            let row = &logits[r * cols..(r + 1) * cols];
            if !(0..cols as i32).contains(&label) {
                let gradient = &out[0][r * cols..(r + 1) * cols];
                prop_assert!(gradient.iter().all(|&g| g == 0.0), "padding row {} has a gradient", r);
                continue;
            }
            let first_largest = (0..cols).fold(0, |best, c| if row[c] > row[best] { c } else { best });
            correct += usize::from(first_largest == label as usize);
        }
        prop_assert_eq!(out[1][1], correct as f32);
    }

    #[test]
    fn mean_squared_error(rows in 1..=4usize, cols in 1..=5usize, seed in any::<u64>()) {
        let mut rng = Rng(seed);
        let (y, target) = (rng.tensor(rows * cols, 2.0), rng.tensor(rows * cols, 2.0));
        let op = Op::MeanSquaredError { rows, cols };
        let dy = run(&op, &[&y, &target], &[rows * cols, 2]).swap_remove(0);
        let mean = |xs: &[Vec<f32>]| vec![run(&op, &slices(xs), &[rows * cols, 2])[1][0]];
        fd_check(mean, &[y, target], 0, &[1.0], &dy)?;
    }

    #[test]
    fn sum_squares(len in 1..=64usize, seed in any::<u64>()) {
        let x = Rng(seed).tensor(len, 3.0);
        let expected: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
        assert_close(&run1(&Op::SumSquares { len }, &[&x], 1), &[expected])?;
    }

    /// One step of torch.optim.SGD after the first (the momentum buffer already holds a
    /// value; dampening 0).
    #[test]
    fn sgd_update_matches_pytorch(
        len in 1..=16usize,
        momentum in prop_oneof![Just(0.0f32), 0.0f32..0.99],
        nesterov in any::<bool>(),
        weight_decay in prop_oneof![Just(0.0f32), 0.0f32..0.1],
        (lr, grad_scale) in (0.001f32..0.1, 0.5f32..1.0),
        seed in any::<u64>(),
    ) {
        let nesterov = nesterov && momentum > 0.0; // PyTorch refuses Nesterov without momentum
        let mut rng = Rng(seed);
        let (w, g, buf) = (rng.tensor(len, 1.0), rng.tensor(len, 1.0), rng.tensor(len, 1.0));
        let mut hyper = vec![0.0; Hyper::LEN];
        hyper[Hyper::LR] = lr;
        hyper[Hyper::GRAD_SCALE] = grad_scale;
        let rule = UpdateRule::Sgd { momentum, nesterov, weight_decay };
        let states = rule.state().len();
        let inputs: [&[f32]; 4] = [&w, &g, &hyper, &buf];
        let out = run(&Op::Update { len, rule }, &inputs[..3 + states], &[len, len][..1 + states]);
        let (mu, wd, lr) = (momentum as f64, weight_decay as f64, lr as f64);
        let (mut new_w, mut new_buf) = (Vec::new(), Vec::new());
        for i in 0..len {
            let mut d_p = g[i] as f64 * grad_scale as f64 + wd * w[i] as f64;
            if momentum != 0.0 {
                let b = mu * buf[i] as f64 + d_p;
                new_buf.push(b);
                d_p = if nesterov { d_p + mu * b } else { b };
            }
            new_w.push(w[i] as f64 - lr * d_p);
        }
        assert_close(&out[0], &new_w)?;
        if states == 1 {
            assert_close(&out[1], &new_buf)?;
        }
    }

    /// One step of torch.optim.Adam (L2 decay in the gradient) or AdamW (decay applied to
    /// the weights), at step `t`.
    #[test]
    fn adam_update_matches_pytorch(
        len in 1..=16usize,
        (beta1, beta2, eps) in (0.5f32..0.99, 0.9f32..0.9999, 1e-8f32..1e-6),
        (weight_decay, decoupled) in (prop_oneof![Just(0.0f32), 0.0f32..0.1], any::<bool>()),
        (lr, grad_scale, t) in (0.001f32..0.1, 0.5f32..1.0, 1..=50i32),
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let (w, g, exp_avg) = (rng.tensor(len, 1.0), rng.tensor(len, 1.0), rng.tensor(len, 0.1));
        let exp_avg_sq: Vec<f32> = rng.tensor(len, 0.1).iter().map(|v| v * v).collect();
        let (b1, b2) = (beta1 as f64, beta2 as f64);
        let (bias_correction1, bias_correction2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let mut hyper = vec![0.0; Hyper::LEN];
        hyper[Hyper::LR] = lr;
        hyper[Hyper::GRAD_SCALE] = grad_scale;
        hyper[Hyper::BIAS1] = (1.0 / bias_correction1) as f32;
        hyper[Hyper::BIAS2] = (1.0 / bias_correction2) as f32;
        let rule = UpdateRule::Adam { beta1, beta2, eps, weight_decay, decoupled };
        let out = run(&Op::Update { len, rule }, &[&w, &g, &hyper, &exp_avg, &exp_avg_sq], &[len; 3]);
        let (lr, wd) = (lr as f64, weight_decay as f64);
        let (mut new_w, mut new_m, mut new_v) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..len {
            let (mut param, mut grad) = (w[i] as f64, g[i] as f64 * grad_scale as f64);
            if decoupled {
                param *= 1.0 - lr * wd;
            } else {
                grad += wd * param;
            }
            let m = b1 * exp_avg[i] as f64 + (1.0 - b1) * grad;
            let v = b2 * exp_avg_sq[i] as f64 + (1.0 - b2) * grad * grad;
            let step_size = lr / bias_correction1;
            let denom = v.sqrt() / bias_correction2.sqrt() + eps as f64;
            new_w.push(param - step_size * m / denom);
            new_m.push(m);
            new_v.push(v);
        }
        assert_close(&out[0], &new_w)?;
        assert_close(&out[1], &new_m)?;
        assert_close(&out[2], &new_v)?;
    }

    #[test]
    fn update_running_matches_pytorch(
        channels in 1..=4usize,
        momentum in 0.0f32..1.0,
        variance in any::<bool>(),
        count in 2..=64usize,
        seed in any::<u64>(),
    ) {
        let mut rng = Rng(seed);
        let mean = rng.tensor(channels, 1.0);
        let var: Vec<f32> = rng.tensor(channels, 1.5).iter().map(|v| v * v).collect();
        let running = rng.tensor(channels, 1.0);
        let moments = [mean.clone(), var.clone()].concat();
        let op = Op::UpdateRunning { channels, momentum, variance, count };
        let got = run1(&op, &[&moments, &running], channels);
        let mu = momentum as f64;
        let expected: Vec<f64> = (0..channels)
            .map(|c| {
                let statistic =
                    if variance { var[c] as f64 * count as f64 / (count - 1) as f64 } else { mean[c] as f64 };
                (1.0 - mu) * running[c] as f64 + mu * statistic
            })
            .collect();
        assert_close(&got, &expected)?;
    }
}
