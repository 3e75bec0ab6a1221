//! Every kernel of the training ops against the reference interpreter, under proptest
//! over random shapes: ones and sizes that leave vector remainders, and shapes with enough
//! work that the kernel splits across threads. Each case runs on one to three threads
//! (chosen from the seed) with guard bytes checked after each kernel.
//!
//! Training ops have several results — a loss's gradient and its statistics, an
//! optimizer's new parameters and state, running statistics updated in place — so every
//! tensor a graph writes is compared, not only the graph's output. Inputs that must be
//! consistent come from real ops: activations' outputs from the forward activation,
//! batch-norm's moments and reductions from `ChannelMoments` and
//! `BatchNormBackwardReduce` on the same values.

mod common;

use common::{Builder, Written, assert_agree, assert_agree_terms, rms, run_all, term_sizes, window};
use nnc_compiler::backend::Target;
use nnc_compiler::front::layers::activation::{Activation, EXAMPLES};
use nnc_compiler::ir::kernel::{Kernel, Parallel};
use nnc_compiler::ir::ops::elementwise::{Derivative, Source};
use nnc_compiler::ir::ops::{Cell, Elementwise, Op, Recurrence, Reduce, TensorId, UpdateRule, Window2d};
use nnc_compiler::passes::schedule::schedule;
use proptest::prelude::*;

/// The size of the terms summed into each element of a written tensor, where it is more
/// than the element's own (see [`assert_agree_terms`]); `None` for the plain tolerance.
type Terms<'a> = &'a dyn Fn(&Written, &[Written]) -> Option<Vec<f64>>;

/// Checks every tensor the graph writes on `threads` threads, with the code of every
/// back end this CPU runs, and returns the last one's for op-specific checks.
fn check_on(what: &str, b: &Builder, seed: u64, threads: usize) -> Vec<Written> {
    check_terms(what, b, seed, threads, &|_, _| None)
}

/// [`check_on`] with the size of each written tensor's terms.
fn check_terms(what: &str, b: &Builder, seed: u64, threads: usize, terms: Terms) -> Vec<Written> {
    let mut last = Vec::new();
    for target in Target::supported() {
        let written = run_all(&b.graph, seed, threads, target);
        for node in &b.graph.ops {
            for t in std::iter::once(node.output).chain(node.aux.iter().copied()) {
                assert!(
                    written.iter().any(|w| w.tensor == t),
                    "{what}: {t} of {} is not stored",
                    node.op.name()
                );
            }
        }
        for w in &written {
            let what = format!("{what}: {} on {threads} threads, {}", w.what, target.name());
            match terms(w, &written) {
                Some(terms) => assert_agree_terms(&what, &w.generated, &w.reference, &terms),
                None => assert_agree(&what, &w.generated, &w.reference),
            }
        }
        last = written;
    }
    last
}

/// Checks on one thread, or split across two or three.
fn check(what: &str, b: &Builder, seed: u64) -> Vec<Written> {
    check_on(what, b, seed, 1 + (seed % 3) as usize)
}

/// [`check`] for a graph of sums of products, each element against the size of its
/// terms ([`term_sizes`]).
fn check_sums(what: &str, b: &Builder, seed: u64) -> Vec<Written> {
    let threads = 1 + (seed % 3) as usize;
    let sizes = term_sizes(&b.graph, seed, threads, Target::Cranelift);
    let terms =
        |w: &Written, _: &[Written]| sizes.iter().find(|(t, _)| *t == w.tensor).map(|(_, s)| s.clone());
    check_terms(what, b, seed, threads, &terms)
}

/// The written tensor `t`.
fn find(written: &[Written], t: TensorId) -> &Written {
    written.iter().find(|w| w.tensor == t).expect("written")
}

/// `[outer, channels, inner]`: mostly small, one draw in five with over 2¹⁷ elements,
/// one in five a matrix (`inner` 1: columns summed row by row).
fn shape3() -> impl Strategy<Value = (usize, usize, usize)> {
    prop_oneof![
        3 => (1usize..5, 1usize..12, 1usize..40),
        1 => (2usize..5, 40usize..70, 1700usize..2100),
        1 => (1usize..300, 1usize..1100, Just(1usize)),
    ]
}

/// A length: mostly small, one draw in four over 2¹⁷.
fn length() -> impl Strategy<Value = usize> {
    prop_oneof![3 => 1usize..300, 1 => 131_072usize..200_000]
}

// ---- graphs ------------------------------------------------------------------------

/// Batch-norm's epsilon.
const EPS: f32 = 1e-5;

/// Batch-norm's training forward pass: the batch's moments, the affine folded from
/// them, and both running statistics updated in place.
fn batch_statistics((outer, channels, inner): (usize, usize, usize), momentum: f32) -> (Builder, Running) {
    let mut b = Builder::new(outer);
    let x = b.input(vec![outer, channels, inner]);
    let moments = b.op(Op::ChannelMoments { outer, channels, inner }, vec![x], vec![2, channels]);
    let gamma = b.param("gamma", vec![channels], 1.0);
    let beta = b.param("beta", vec![channels], 1.0);
    b.op(Op::BatchNormFoldTrain { channels, eps: EPS }, vec![gamma, beta, moments], vec![2, channels]);
    let mut running = Running { moments, momentum, count: outer * inner, updated: Vec::new() };
    for (name, variance) in [("running_mean", false), ("running_var", true)] {
        let stat = b.param(name, vec![channels], 1.0);
        let op = Op::UpdateRunning { channels, momentum, variance, count: outer * inner };
        b.op_aux(op, vec![moments, stat], stat, Vec::new());
        running.updated.push((stat, variance));
    }
    (b, running)
}

/// The running statistics [`batch_statistics`] updates, with what they are made from.
struct Running {
    moments: TensorId,
    momentum: f32,
    count: usize,
    /// Each running statistic and whether it is the variance.
    updated: Vec<(TensorId, bool)>,
}

impl Running {
    /// `(1 − momentum)·running + momentum·stat` cancels where the two have opposite
    /// signs; its terms are at most `|result| + 2·momentum·|stat|`, with the batch's
    /// statistic as exact as the moments it comes from (their scale included).
    fn terms(&self, w: &Written, written: &[Written]) -> Option<Vec<f64>> {
        let &(_, variance) = self.updated.iter().find(|(t, _)| *t == w.tensor)?;
        let moments = &written.iter().find(|m| m.tensor == self.moments)?.reference;
        let channels = w.reference.len();
        let unbiased =
            if variance && self.count > 1 { self.count as f64 / (self.count - 1) as f64 } else { 1.0 };
        let at = if variance { channels } else { 0 };
        let mom = self.momentum as f64;
        let terms = (0..channels).map(|c| {
            let stat = (moments[at + c].abs() as f64 + rms(moments)) * unbiased;
            w.reference[c].abs() as f64 + 2.0 * mom * stat
        });
        Some(terms.collect())
    }
}

/// Dropout and its backward pass under the same step seed.
fn dropout(len: usize, p: f32) -> Builder {
    let mut b = Builder::new(1);
    let hyper = b.hyper();
    let x = b.input(vec![len]);
    b.op(Op::Dropout { len, p }, vec![x, hyper], vec![len]);
    let dy = b.input(vec![len]);
    b.op(Op::DropoutBackward { len, p }, vec![dy, hyper], vec![len]);
    b
}

/// Both gradients of a convolution with `k` outputs, and (without groups, for an even
/// batch) the weight gradient in two parts summed again.
fn conv_backward(win: Window2d, k: usize, groups: usize) -> Builder {
    let mut b = Builder::new(win.n);
    let image = vec![win.n, win.c, win.h, win.w];
    let weight = vec![k, win.c / groups, win.kh, win.kw];
    let dy = b.input(vec![win.n, k, win.oh, win.ow]);
    let w = b.param("w", weight.clone(), 0.5);
    let x = b.input(image.clone());
    b.op(Op::Conv2dBackwardData { win, k, groups }, vec![dy, w], image);
    b.op(Op::Conv2dBackwardWeight { win, k, groups, parts: 1 }, vec![dy, x], weight.clone());
    if groups == 1 && win.n.is_multiple_of(2) {
        let len = weight.iter().product();
        let parts = b.op(Op::Conv2dBackwardWeight { win, k, groups, parts: 2 }, vec![dy, x], vec![2, len]);
        b.op(Op::SumParts { parts: 2, len }, vec![parts], weight);
    }
    b
}

fn pool_backward(win: Window2d, reduce: Reduce) -> Builder {
    let mut b = Builder::new(win.n);
    let dy = b.input(vec![win.n, win.c, win.oh, win.ow]);
    let x = b.input(vec![win.n, win.c, win.h, win.w]);
    b.op(Op::Pool2dBackward { win, reduce }, vec![dy, x], vec![win.n, win.c, win.h, win.w]);
    b
}

/// Global average pooling's backward pass and a bias's gradient.
fn broadcast_and_channel_sum((outer, channels, inner): (usize, usize, usize), scale: f32) -> Builder {
    let mut b = Builder::new(outer);
    let x = b.input(vec![outer, channels]);
    b.op(Op::BroadcastChannel { outer, channels, inner, scale }, vec![x], vec![outer, channels, inner]);
    let y = b.input(vec![outer, channels, inner]);
    b.op(Op::ChannelSum { outer, channels, inner }, vec![y], vec![channels]);
    b
}

/// Transposing `[rows, cols]`, slicing its columns `offset..offset + len`, copying its
/// values from `offset`, and filling.
fn data_movement(rows: usize, cols: usize, offset: usize, len: usize) -> Builder {
    let mut b = Builder::new(rows);
    let x = b.input(vec![rows, cols]);
    b.op(Op::Transpose { rows, cols }, vec![x], vec![cols, rows]);
    b.op(Op::Slice { outer: rows, total: cols, offset, len }, vec![x], vec![rows, len]);
    b.op(Op::Copy { offset, len: rows * cols - offset }, vec![x], vec![rows * cols - offset]);
    b.op(Op::Fill { len, value: 0.25 }, vec![], vec![len]);
    b
}

fn product_and_scale(len: usize, factor: f32) -> Builder {
    let mut b = Builder::new(1);
    let x = b.input(vec![len]);
    let y = b.input(vec![len]);
    b.op(Op::Elementwise { len, f: Elementwise::mul() }, vec![x, y], vec![len]);
    b.op(Op::Elementwise { len, f: Elementwise::scale(factor) }, vec![x], vec![len]);
    b
}

/// An activation's derived backward op, fed the forward activation's real input and
/// output.
fn unary_backward(len: usize, a: Activation) -> Builder {
    let mut b = Builder::new(1);
    let x = b.input(vec![len]);
    let f = a.function();
    let y = b.op(Op::Elementwise { len, f: f.clone() }, vec![x], vec![len]);
    let dy = b.input(vec![len]);
    let Derivative::Program(df, sources) = f.derivative(0) else {
        panic!("{} has a derivative program", a.name())
    };
    let mut inputs = vec![dy];
    inputs.extend(sources.iter().map(|s| match s {
        Source::Output => y,
        Source::Input(_) => x,
    }));
    b.op(Op::Elementwise { len, f: df }, inputs, vec![len]);
    b
}

fn softmax_backward(rows: usize, cols: usize) -> Builder {
    let mut b = Builder::new(rows);
    let x = b.input(vec![rows, cols]);
    let y = b.op(Op::Softmax { rows, cols }, vec![x], vec![rows, cols]);
    let dy = b.input(vec![rows, cols]);
    b.op(Op::SoftmaxBackward { rows, cols }, vec![dy, y], vec![rows, cols]);
    b
}

fn lrn_backward((n, c, hw): (usize, usize, usize), size: usize) -> Builder {
    let mut b = Builder::new(n);
    let dy = b.input(vec![n, c, hw]);
    let x = b.input(vec![n, c, hw]);
    b.op(Op::LrnBackward { n, c, hw, size, alpha: 0.5, beta: 0.75, k: 1.5 }, vec![dy, x], vec![n, c, hw]);
    b
}

fn embedding_backward(count: usize, vocab: usize, dim: usize) -> Builder {
    let mut b = Builder::new(count);
    let ids = b.input(vec![count]);
    let dy = b.input(vec![count, dim]);
    b.op(Op::EmbeddingBackward { count, vocab, dim }, vec![ids, dy], vec![vocab, dim]);
    b
}

/// Batch-norm's backward pass, with moments and reductions computed from the same
/// values.
fn batchnorm_backward((outer, channels, inner): (usize, usize, usize)) -> Builder {
    let dims = vec![outer, channels, inner];
    let mut b = Builder::new(outer);
    let x = b.input(dims.clone());
    let moments = b.op(Op::ChannelMoments { outer, channels, inner }, vec![x], vec![2, channels]);
    let dy = b.input(dims.clone());
    let reduce = Op::BatchNormBackwardReduce { outer, channels, inner, eps: EPS };
    let reduced = b.op(reduce, vec![dy, x, moments], vec![2, channels]);
    let gamma = b.param("gamma", vec![channels], 1.0);
    let input = Op::BatchNormBackwardInput { outer, channels, inner, eps: EPS };
    b.op(input, vec![dy, x, moments, gamma, reduced], dims);
    b
}

/// Softmax cross-entropy, and its statistics tensor.
fn cross_entropy(rows: usize, cols: usize) -> (Builder, TensorId) {
    let mut b = Builder::new(rows);
    let logits = b.input(vec![rows, cols]);
    let labels = b.label(vec![rows]);
    let (grad, stats) = (b.activation(vec![rows, cols]), b.activation(vec![2]));
    b.op_aux(Op::SoftmaxCrossEntropy { rows, cols }, vec![logits, labels], grad, vec![stats]);
    (b, stats)
}

fn mean_squared_error(rows: usize, cols: usize) -> Builder {
    let mut b = Builder::new(rows);
    let y = b.input(vec![rows, cols]);
    let target = b.label(vec![rows, cols]);
    let (grad, stats) = (b.activation(vec![rows, cols]), b.activation(vec![2]));
    b.op_aux(Op::MeanSquaredError { rows, cols }, vec![y, target], grad, vec![stats]);
    b
}

/// Elements per parallel block of an update kernel, which leaves a tail of the rest.
const UPDATE_BLOCK: usize = 1 << 14;

/// An optimizer step laid out as in a training graph: the parameters one persistent
/// block; their gradients a per-step block written through two views (the second from
/// element `split`) and its squared norm taken; the state updated in place.
fn update(len: usize, rule: UpdateRule, split: usize) -> Builder {
    let mut b = Builder::new(1);
    let params = b.block("params", len, true);
    let grads = b.block("grads", len, false);
    for (offset, part) in [(0, split), (split, len - split)] {
        let dy = b.input(vec![part]);
        let g = b.activation(vec![part]);
        b.place(g, grads, offset);
        b.op_aux(Op::Elementwise { len: part, f: Elementwise::scale(0.5) }, vec![dy], g, Vec::new());
    }
    b.op(Op::SumSquares { len }, vec![grads], vec![1]);
    let hyper = b.hyper();
    let states: Vec<TensorId> = rule.state().iter().map(|name| b.state(name, vec![len])).collect();
    let mut inputs = vec![params, grads, hyper];
    inputs.extend(&states);
    b.op_aux(Op::Update { len, rule }, inputs, params, states);
    b
}

/// `x` stored transposed (`[k, m]`) times `w [k, n]`.
fn matmul_transposed(m: usize, k: usize, n: usize) -> Builder {
    let mut b = Builder::new(m);
    let x = b.input(vec![k, m]);
    let w = b.param("w", vec![k, n], 0.5);
    b.op(Op::MatMul { m, k, n, ta: true }, vec![x, w], vec![m, n]);
    b
}

/// The weight gradient of a one-hot input's projection, `xᵀ · w` with `x` one-hot: a
/// scatter-add of `w`'s rows into the rows of the product that `x` selects.
fn one_hot_transposed(m: usize, k: usize, n: usize) -> Builder {
    let mut b = matmul_transposed(m, k, n);
    let x = b.graph.ops[0].inputs[0];
    b.graph.one_hot.push(x);
    b
}

/// A layer's weight gradients from one output gradient `dq [k, n]`: `hᵀ · dq`, the
/// bias's column sums and a one-hot input's `xᵀ · dq`, the last two riding on the first
/// product where it is not split by rows (as an LSTM's, over its `dq`).
fn weight_gradients(m: usize, classes: usize, k: usize, n: usize) -> Builder {
    let mut b = Builder::new(k);
    let dq = b.input(vec![k, n]);
    let h = b.input(vec![k, m]);
    let x = b.input(vec![k, classes]);
    b.graph.one_hot.push(x);
    b.op(Op::MatMul { m: classes, k, n, ta: true }, vec![x, dq], vec![classes, n]);
    b.op(Op::MatMul { m, k, n, ta: true }, vec![h, dq], vec![m, n]);
    b.op(Op::ChannelSum { outer: k, channels: n, inner: 1 }, vec![dq], vec![n]);
    b
}

/// A recurrent layer's training forward pass (its output, the state entering each step
/// and the values each step saves) and backpropagation through time from a given output
/// gradient, through the transposed recurrent weight as the autodiff rule feeds it.
fn recurrent_training(r: Recurrence, one_hot: bool) -> Builder {
    let (n, t, f, h) = (r.n, r.t, r.f, r.h);
    let g = r.cell.gates() * h;
    let mut b = Builder::new(n);
    let x = b.input(vec![n, t, f]);
    if one_hot {
        b.graph.one_hot.push(x);
    }
    // Recurrent weights of about PyTorch's initial scale keep the recurrence contractive:
    // a chaotic one would amplify f32's rounding over 64 steps past any tolerance.
    let w_hh = b.param("w_hh", vec![h, g], 1.0 / (h as f64).sqrt());
    let mut inputs = vec![x, b.param("w_ih", vec![f, g], 0.5), w_hh];
    if r.bias {
        inputs.push(b.param("b_ih", vec![g], 0.5));
        inputs.push(b.param("b_hh", vec![g], 0.5));
    }
    let y = b.activation(if r.last { vec![n, h] } else { vec![n, t, h] });
    let states = b.activation(vec![n, t, h]);
    let saved = b.activation(vec![n, t, r.saved(), h]);
    b.op_aux(Op::Recurrent(r), inputs, y, vec![states, saved]);
    let dy = b.input(b.graph.tensor(y).dims.clone());
    let w_hh_t = b.op(Op::Transpose { rows: h, cols: g }, vec![w_hh], vec![g, h]);
    let dp = b.activation(vec![n, t, g]);
    let dq: Vec<TensorId> = r.cell.step().splits().then(|| b.activation(vec![n, t, g])).into_iter().collect();
    b.op_aux(Op::RecurrentBackward(r), vec![dy, states, saved, w_hh_t], dp, dq);
    b
}

/// Every optimizer rule: SGD with and without (Nesterov) momentum and weight decay, Adam
/// and AdamW with and without weight decay.
fn rule() -> impl Strategy<Value = UpdateRule> {
    prop_oneof![
        (prop::sample::select(vec![0.0, 0.9]), any::<bool>(), prop::sample::select(vec![0.0, 5e-4]))
            .prop_map(|(momentum, nesterov, weight_decay)| UpdateRule::Sgd {
                momentum,
                nesterov,
                weight_decay
            }),
        (any::<bool>(), prop::sample::select(vec![0.0, 1e-2])).prop_map(|(decoupled, weight_decay)| {
            UpdateRule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay, decoupled }
        }),
    ]
}

// ---- tests -------------------------------------------------------------------------

/// Both gradients of convolutions whose contractions are long enough to run in several
/// blocks of `k` on the x86 back end: backward-data over `k × kh × kw` taps, backward-
/// weight over an image's pixels (one image per product at over 512 of them).
#[test]
fn long_conv_backward_contractions() {
    for (n, c, h, w, k, kernel, stride, pad, groups) in
        [(2, 16, 24, 24, 48, 3, 1, 1, 1), (1, 12, 27, 25, 40, 5, 2, 2, 2), (3, 20, 26, 22, 64, 3, 1, 0, 1)]
    {
        let win = window(n, c, h, w, (kernel, kernel), (stride, stride), (1, 1), [pad; 4], false).unwrap();
        for threads in [1, 2] {
            check_on(&format!("conv backward {c}×{h}×{w} → {k}"), &conv_backward(win, k, groups), 7, threads);
        }
    }
}

proptest! {
    #[test]
    fn batch_statistics_and_running_updates(shape in shape3(), momentum in 0.01f32..1.0, seed in any::<u64>()) {
        let (b, running) = batch_statistics(shape, momentum);
        check_terms("batch statistics", &b, seed, 1 + (seed % 3) as usize, &|w, all| running.terms(w, all));
    }

    #[test]
    fn dropout_masks_match(len in length(), p in 0.0f32..0.9, seed in any::<u64>()) {
        for w in check("dropout", &dropout(len, p), seed) {
            let dropped = |v: &[f32]| v.iter().map(|x| *x == 0.0).collect::<Vec<_>>();
            prop_assert_eq!(dropped(&w.generated), dropped(&w.reference), "{}: masks differ", w.what);
        }
    }

    #[test]
    fn conv_backward_data_and_weight(
        n in 1usize..5, cg in 1usize..9, kg in 1usize..9, groups in 1usize..4,
        h in 1usize..14, w in prop_oneof![4 => 1usize..14, 1 => 33usize..80], k in (1usize..5, 1usize..5),
        s in (1usize..3, 1usize..3), d in (1usize..3, 1usize..3), pad in prop::array::uniform4(0usize..3),
        direct in prop::bool::weighted(0.2), seed in any::<u64>(),
    ) {
        // A 1×1, stride-1 unpadded convolution multiplies without unfolding.
        let (k, s, d, pad) = if direct { ((1, 1), (1, 1), (1, 1), [0; 4]) } else { (k, s, d, pad) };
        let Some(win) = window(n, cg * groups, h, w, k, s, d, pad, false) else { return Ok(()) };
        check_sums("conv backward", &conv_backward(win, kg * groups, groups), seed);
    }

    #[test]
    fn pool_backward_routes_gradients(
        n in 1usize..4, c in prop_oneof![1usize..6, 24usize..40], h in 1usize..24, w in 1usize..24,
        k in (1usize..5, 1usize..5), s in (1usize..4, 1usize..4), pad in (0usize..3, 0usize..3),
        ceil in any::<bool>(), max in any::<bool>(), seed in any::<u64>(),
    ) {
        let pad = [pad.0.min(k.0 / 2), pad.0.min(k.0 / 2), pad.1.min(k.1 / 2), pad.1.min(k.1 / 2)];
        let Some(win) = window(n, c, h, w, k, s, (1, 1), pad, ceil) else { return Ok(()) };
        let reduce = if max { Reduce::Max } else { Reduce::Mean };
        check("pool backward", &pool_backward(win, reduce), seed);
    }

    #[test]
    fn channel_broadcast_and_sum(shape in shape3(), scale in 0.01f32..2.0, seed in any::<u64>()) {
        check_sums("channel broadcast and sum", &broadcast_and_channel_sum(shape, scale), seed);
    }

    #[test]
    fn transpose_slice_copy_and_fill(
        rows in 1usize..40, cols in 1usize..40, offset in any::<prop::sample::Index>(),
        len in any::<prop::sample::Index>(), seed in any::<u64>(),
    ) {
        let offset = offset.index(cols);
        let len = 1 + len.index(cols - offset);
        check("data movement", &data_movement(rows, cols, offset, len), seed);
    }

    #[test]
    fn product_and_scaling(len in length(), factor in -3.0f32..3.0, seed in any::<u64>()) {
        check("mul and scale", &product_and_scale(len, factor), seed);
    }

    #[test]
    fn activation_backward(len in prop_oneof![4 => 1usize..300, 1 => 16_384usize..20_000], f in 0..EXAMPLES.len(), seed in any::<u64>()) {
        check("activation backward", &unary_backward(len, EXAMPLES[f]), seed);
    }

    #[test]
    fn softmax_backward_rows(rows in 1usize..20, cols in 1usize..40, seed in any::<u64>()) {
        check("softmax backward", &softmax_backward(rows, cols), seed);
    }

    #[test]
    fn lrn_backward_across_channels(
        shape in prop_oneof![3 => (1usize..4, 1usize..10, 1usize..12), 1 => (2usize..4, 16usize..24, 1024usize..1500)],
        size in 1usize..7, seed in any::<u64>(),
    ) {
        check("lrn backward", &lrn_backward(shape, size), seed);
    }

    #[test]
    fn embedding_backward_sums_repeated_ids(count in 1usize..40, vocab in 1usize..12, dim in 1usize..20, seed in any::<u64>()) {
        check_sums("embedding backward", &embedding_backward(count, vocab, dim), seed);
    }

    #[test]
    fn batchnorm_backward_reduce_and_input(shape in shape3(), seed in any::<u64>()) {
        // With two values per channel x̂ = ±1 up to eps, and dx cancels to eps / var of its
        // terms: below what f32 resolves.
        prop_assume!(shape.0 * shape.2 != 2);
        check("batch-norm backward", &batchnorm_backward(shape), seed);
    }

    #[test]
    fn softmax_cross_entropy_with_padding_rows(rows in 1usize..40, cols in 1usize..40, seed in any::<u64>()) {
        let (b, stats) = cross_entropy(rows, cols);
        let written = check("cross-entropy", &b, seed);
        let stats = find(&written, stats);
        // The mean loss on its own scale, the count of right predictions exactly.
        assert_agree("cross-entropy loss", &stats.generated[..1], &stats.reference[..1]);
        prop_assert_eq!(stats.generated[1], stats.reference[1], "correct predictions");
    }

    #[test]
    fn mean_squared_error_and_gradient(rows in 1usize..40, cols in 1usize..40, seed in any::<u64>()) {
        check("mean squared error", &mean_squared_error(rows, cols), seed);
    }

    #[test]
    fn optimizer_updates(
        len in prop_oneof![
            1usize..100, Just(UPDATE_BLOCK), Just(2 * UPDATE_BLOCK), 16_000usize..40_000,
            (8usize..13).prop_map(|blocks| blocks * UPDATE_BLOCK),
        ],
        split in any::<prop::sample::Index>(), rule in rule(), seed in any::<u64>(),
    ) {
        check("update", &update(len, rule, split.index(len)), seed);
    }

    #[test]
    fn optimizer_updates_split_with_a_tail(
        len in 131_073usize..200_000, split in any::<prop::sample::Index>(), rule in rule(), seed in any::<u64>(),
    ) {
        check("update", &update(len, rule, split.index(len)), seed);
    }

    /// Every cell, with and without biases, the whole sequence or its last state, over
    /// sequence lengths of 1, 2, odd and 64, batches of 1 and odd ones, hidden sizes that
    /// leave vector remainders, dense and one-hot inputs, on one to three threads; hidden
    /// sizes of whole vectors per thread make the threads of a small batch share units.
    #[test]
    fn recurrent_forward_and_backward_through_time(
        cell in 0usize..3, n in prop_oneof![1usize..8, 9usize..14],
        t in prop_oneof![Just(1usize), Just(2), (1usize..6).prop_map(|k| 2 * k + 1), Just(64)],
        f in 1usize..9, h in prop_oneof![3 => 1usize..11, 1 => 17usize..40, 1 => prop_oneof![Just(32), Just(48), Just(96)]],
        last in any::<bool>(), bias in any::<bool>(), one_hot in any::<bool>(), seed in any::<u64>(),
    ) {
        let cell = [Cell::Rnn, Cell::Lstm, Cell::Gru][cell];
        let r = Recurrence { cell, n, t, f, h, last, bias, train: true };
        check("recurrent training", &recurrent_training(r, one_hot), seed);
    }

    #[test]
    fn matmul_with_transposed_left(m in 1usize..40, k in 1usize..40, n in 1usize..40, seed in any::<u64>()) {
        check_sums("matmul ta", &matmul_transposed(m, k, n), seed);
    }

    #[test]
    fn weight_gradients_sharing_an_output_gradient(
        m in 1usize..40, classes in 1usize..20, k in 1usize..300, n in 1usize..200, seed in any::<u64>(),
    ) {
        check_sums("weight gradients", &weight_gradients(m, classes, k, n), seed);
    }
}

/// A batch of few sequences, whose hidden units split into whole vectors per thread:
/// the threads share each step's units (a team meeting at a barrier once a step), and
/// agree with the reference, for every cell, either output and either input.
#[test]
fn few_sequences_share_their_units_across_threads() {
    for (threads, n, h) in [(2, 3, 32), (3, 5, 48), (2, 1, 64)] {
        for (i, cell) in [Cell::Rnn, Cell::Lstm, Cell::Gru].into_iter().enumerate() {
            let (last, one_hot) = (i == 1, i != 2);
            let r = Recurrence { cell, n, t: 7, f: 5, h, last, bias: i != 0, train: true };
            let b = recurrent_training(r, one_hot);
            let program = schedule(&b.graph, threads, Target::Cranelift.geometry());
            let teams =
                program.kernels.iter().filter(|k| matches!(k.parallel, Parallel::Team { .. })).count();
            assert_eq!(teams, 2, "{cell:?}: the forward and backward kernels are teams on {threads} threads");
            check_on("recurrent team", &b, 7, threads);
        }
    }
}

/// Large shapes like the proptests' large draws do split across threads — so those
/// draws test the parallel paths — and agree with the reference when they do.
#[test]
fn large_shapes_split_across_threads() {
    let big = (3, 48, 1800);
    let conv = window(4, 24, 20, 20, (3, 3), (1, 1), (1, 1), [1; 4], false).unwrap();
    // Two groups of 13 channels (no even split into channel blocks), padded unevenly.
    let grouped = window(2, 26, 24, 24, (3, 3), (1, 1), (1, 1), [0, 1, 1, 0], false).unwrap();
    let pool = window(3, 32, 40, 40, (3, 3), (2, 2), (1, 1), [1; 4], true).unwrap();
    let sgd = UpdateRule::Sgd { momentum: 0.9, nesterov: true, weight_decay: 5e-4 };
    let lstm =
        Recurrence { cell: Cell::Lstm, n: 7, t: 9, f: 10, h: 40, last: false, bias: true, train: true };
    let cases: [(Builder, &[&str]); 14] = [
        (recurrent_training(lstm, false), &["lstm", "lstm_backward"]),
        // 65 classes and 1,024 columns, as an LSTM's input weight gradient: its columns
        // split (the characters of a text are far from evenly spread over its classes).
        (one_hot_transposed(65, 300, 1024), &["matmul"]),
        // An LSTM's weight gradients over its `dq`: the bias's sums and the one-hot input's
        // gradient ride on the `W_hh` gradient's product, each block of columns its own.
        (weight_gradients(256, 65, 300, 1024), &["matmul + matmul + channel_sum"]),
        (batch_statistics(big, 0.1).0, &["channel_moments"]),
        (conv_backward(conv, 32, 1), &["conv2d_backward_data", "conv2d_backward_weight"]),
        (conv_backward(grouped, 30, 2), &["conv2d_backward_data", "conv2d_backward_weight"]),
        (pool_backward(pool, Reduce::Max), &["maxpool2d_backward"]),
        (broadcast_and_channel_sum(big, 0.5), &["broadcast_channel", "channel_sum"]),
        (lrn_backward((3, 16, 1200), 5), &["lrn_backward"]),
        (data_movement(400, 400, 7, 350), &["slice"]),
        (unary_backward(50_003, Activation::Tanh), &["tanh_backward"]),
        (broadcast_and_channel_sum((400, 1030, 1), 1.0), &["channel_sum"]),
        (
            batchnorm_backward(big),
            &["channel_moments", "batchnorm_backward_reduce", "batchnorm_backward_input"],
        ),
        (update(12 * UPDATE_BLOCK, sgd, 77_777), &["sgd_update"]),
    ];
    for (b, split) in &cases {
        for threads in [2, 3] {
            let program = schedule(&b.graph, threads, Target::Cranelift.geometry());
            for label in *split {
                let is_split = |k: &Kernel| k.label == *label && matches!(k.parallel, Parallel::Loop { .. });
                assert!(
                    program.kernels.iter().any(is_split),
                    "{label} does not split across {threads} threads"
                );
            }
            check_on(split[0], b, threads as u64, threads);
        }
    }
}
