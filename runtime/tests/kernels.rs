//! Every kind of generated kernel against the reference implementation, under proptest
//! over random shapes, strides, paddings, groups and batch sizes (including 1 and odd
//! sizes that leave remainder tiles), with guard bytes checked after each kernel.

mod common;

use common::{Builder, assert_agree, run_both_on, window};
use nnc_compiler::backend::Target;
use nnc_compiler::front::layers::activation::{Activation, EXAMPLES};
use nnc_compiler::ir::ops::{Cell, Elementwise, Op, Recurrence, Reduce};
use proptest::prelude::*;

/// Checks on one thread, and split across two and three (scratch copies per thread,
/// uneven shares, shares left empty when there is less work than threads), with the code
/// of every back end this CPU runs.
fn check(what: &str, b: Builder, seed: u64) {
    let threads = 1 + (seed % 3) as usize;
    for target in Target::supported() {
        let (generated, reference) = run_both_on(&b.graph, seed, threads, target);
        assert_agree(&format!("{what} on {threads} threads, {}", target.name()), &generated, &reference);
    }
}

proptest! {
    #[test]
    fn conv_with_fused_epilogue(
        n in 1usize..4, cg in 1usize..5, kg in 1usize..7, groups in 1usize..3,
        h in 1usize..12, w in prop_oneof![4 => 1usize..12, 1 => 33usize..80], k in (1usize..5, 1usize..5),
        s in (1usize..3, 1usize..3),
        d in (1usize..3, 1usize..3), pad in prop::array::uniform4(0usize..3),
        bias in any::<bool>(), bn in any::<bool>(), act in 0..EXAMPLES.len(), residual in any::<bool>(), seed in any::<u64>(),
    ) {
        let (c, kk) = (cg * groups, kg * groups);
        let Some(win) = window(n, c, h, w, k, s, d, pad, false) else { return Ok(()) };
        let mut b = Builder::new(n);
        let x = b.input(vec![n, c, h, w]);
        let weight = b.param("w", vec![kk, cg, k.0, k.1], 0.5);
        let dims = vec![n, kk, win.oh, win.ow];
        let mut y = b.op(Op::Conv2d { win, k: kk, groups }, vec![x, weight], dims.clone());
        let inner = win.oh * win.ow;
        if bias {
            let bv = b.param("b", vec![kk], 0.5);
            y = b.op(Op::AddChannel { outer: n, channels: kk, inner }, vec![y, bv], dims.clone());
        }
        if bn {
            let ss = b.param("ss", vec![2, kk], 1.0);
            y = b.op(Op::ScaleShiftChannel { outer: n, channels: kk, inner }, vec![y, ss], dims.clone());
        }
        if residual {
            let other = b.input(dims.clone());
            y = b.op(Op::Elementwise { len: n * kk * inner, f: Elementwise::add(2) }, vec![y, other], dims.clone());
        }
        b.op(Op::Elementwise { len: n * kk * inner, f: EXAMPLES[act].function() }, vec![y], dims);
        check("conv", b, seed);
    }

    /// Products whose left operand is a one-hot input skip its zeros: a gather with the
    /// epilogue applied per row, and transposed (a weight's gradient) a scatter-add.
    #[test]
    fn one_hot_products(
        m in 1usize..40, k in 1usize..30, n in 1usize..45, ta in any::<bool>(), bias in any::<bool>(),
        act in 0..EXAMPLES.len(), seed in any::<u64>(),
    ) {
        let mut b = Builder::new(m);
        let x = b.input(if ta { vec![k, m] } else { vec![m, k] });
        b.graph.one_hot.push(x);
        let w = b.param("w", vec![k, n], 0.5);
        let mut y = b.op(Op::MatMul { m, k, n, ta }, vec![x, w], vec![m, n]);
        if bias {
            let bv = b.param("b", vec![n], 0.5);
            y = b.op(Op::AddChannel { outer: m, channels: n, inner: 1 }, vec![y, bv], vec![m, n]);
        }
        b.op(Op::Elementwise { len: m * n, f: EXAMPLES[act].function() }, vec![y], vec![m, n]);
        check("one-hot product", b, seed);
    }

    #[test]
    fn matmul_with_bias_and_activation(m in 1usize..19, k in 1usize..40, n in 1usize..40, act in 0..EXAMPLES.len(), seed in any::<u64>()) {
        let mut b = Builder::new(m);
        let x = b.input(vec![m, k]);
        let w = b.param("w", vec![k, n], 0.5);
        let bias = b.param("b", vec![n], 0.5);
        let y = b.op(Op::MatMul { m, k, n, ta: false }, vec![x, w], vec![m, n]);
        let y = b.op(Op::AddChannel { outer: m, channels: n, inner: 1 }, vec![y, bias], vec![m, n]);
        b.op(Op::Elementwise { len: m * n, f: EXAMPLES[act].function() }, vec![y], vec![m, n]);
        check("matmul", b, seed);
    }

    #[test]
    fn pooling(
        n in 1usize..3, c in 1usize..4, h in 1usize..13, w in prop_oneof![1usize..13, 13usize..40], k in (1usize..5, 1usize..5),
        s in (1usize..4, 1usize..4), pad in (0usize..3, 0usize..3), ceil in any::<bool>(), max in any::<bool>(), seed in any::<u64>(),
    ) {
        let pad = [pad.0.min(k.0 / 2), pad.0.min(k.0 / 2), pad.1.min(k.1 / 2), pad.1.min(k.1 / 2)];
        let Some(win) = window(n, c, h, w, k, s, (1, 1), pad, ceil) else { return Ok(()) };
        let mut b = Builder::new(n);
        let x = b.input(vec![n, c, h, w]);
        let reduce = if max { Reduce::Max } else { Reduce::Mean };
        b.op(Op::Pool2d { win, reduce }, vec![x], vec![n, c, win.oh, win.ow]);
        check("pool", b, seed);
    }

    #[test]
    fn element_wise_maps(len in 1usize..70, f in 0..EXAMPLES.len(), scale in 0.1f64..20.0, seed in any::<u64>()) {
        let mut b = Builder::new(1);
        let x = b.input(vec![len]);
        let y = b.input(vec![len]);
        let s = b.op(Op::Elementwise { len, f: Elementwise::add(2) }, vec![x, y], vec![len]);
        let f = EXAMPLES[f].function();
        // Scale the inputs up to reach the polynomials' outer ranges.
        let k = b.param("k", vec![2, 1], scale);
        let t = b.op(Op::ScaleShiftChannel { outer: 1, channels: 1, inner: len }, vec![s, k], vec![len]);
        b.op(Op::Elementwise { len, f }, vec![t], vec![len]);
        check("map", b, seed);
    }

    #[test]
    fn channel_maps_and_batchnorm_fold(outer in 1usize..4, channels in 1usize..9, inner in 1usize..11, seed in any::<u64>()) {
        let mut b = Builder::new(outer);
        let x = b.input(vec![outer, channels, inner]);
        let gamma = b.param("g", vec![channels], 1.0);
        let beta = b.param("b", vec![channels], 1.0);
        let mean = b.param("m", vec![channels], 1.0);
        let var = b.param("running_var", vec![channels], 1.0);
        let fold = b.op(Op::BatchNormFold { channels, eps: 1e-5 }, vec![gamma, beta, mean, var], vec![2, channels]);
        let y = b.op(Op::ScaleShiftChannel { outer, channels, inner }, vec![x, fold], vec![outer, channels, inner]);
        // tanh rather than relu: relu can zero nearly every output, leaving a scale too
        // small for the rounding of the affine's terms, which cancel in the few left.
        b.op(Op::Elementwise { len: outer * channels * inner, f: Activation::Tanh.function() }, vec![y], vec![outer, channels, inner]);
        check("batchnorm", b, seed);
    }

    #[test]
    fn softmax_rows(rows in 1usize..6, cols in 1usize..40, scale in 0.1f64..50.0, seed in any::<u64>()) {
        let mut b = Builder::new(rows);
        let x = b.input(vec![rows, cols]);
        let k = b.param("k", vec![2, 1], scale);
        let t = b.op(Op::ScaleShiftChannel { outer: 1, channels: 1, inner: rows * cols }, vec![x, k], vec![rows, cols]);
        b.op(Op::Softmax { rows, cols }, vec![t], vec![rows, cols]);
        check("softmax", b, seed);
    }

    #[test]
    fn lrn(n in 1usize..3, c in 1usize..9, hw in 1usize..11, size in 1usize..7, seed in any::<u64>()) {
        let mut b = Builder::new(n);
        let x = b.input(vec![n, c, hw]);
        b.op(Op::Lrn { n, c, hw, size, alpha: 0.5, beta: 0.75, k: 1.5 }, vec![x], vec![n, c, hw]);
        check("lrn", b, seed);
    }

    #[test]
    fn global_average_pool_and_concat(n in 1usize..4, c in 1usize..6, hw in 1usize..30, parts in prop::collection::vec(1usize..9, 1..4), seed in any::<u64>()) {
        let mut b = Builder::new(n);
        let x = b.input(vec![n, c, hw]);
        let pooled = b.op(Op::GlobalAvgPool { n, c, hw }, vec![x], vec![n, c]);
        let mut inputs = vec![pooled];
        let mut inners = vec![c];
        for p in parts {
            inputs.push(b.input(vec![n, p]));
            inners.push(p);
        }
        let total = inners.iter().sum();
        b.op(Op::Concat { outer: n, inners }, inputs, vec![n, total]);
        check("concat", b, seed);
    }

    #[test]
    fn embedding(count in 1usize..20, vocab in 1usize..30, dim in 1usize..13, seed in any::<u64>()) {
        let mut b = Builder::new(count);
        let ids = b.input(vec![count]);
        let table = b.param("table", vec![vocab, dim], 1.0);
        b.op(Op::Embedding { count, vocab, dim }, vec![ids, table], vec![count, dim]);
        check("embedding", b, seed);
    }

    #[test]
    fn recurrent_cells(
        cell in 0usize..3, n in 1usize..6, t in 1usize..6, f in 1usize..9, h in 1usize..11,
        last in any::<bool>(), bias in any::<bool>(), seed in any::<u64>(),
    ) {
        let cell = [Cell::Rnn, Cell::Lstm, Cell::Gru][cell];
        let g = cell.gates() * h;
        let mut b = Builder::new(n);
        let x = b.input(vec![n, t, f]);
        let mut inputs = vec![x, b.param("w_ih", vec![f, g], 0.5), b.param("w_hh", vec![h, g], 0.5)];
        if bias {
            inputs.push(b.param("b_ih", vec![g], 0.5));
            inputs.push(b.param("b_hh", vec![g], 0.5));
        }
        let r = Recurrence { cell, n, t, f, h, last, bias, train: false };
        let dims = if last { vec![n, h] } else { vec![n, t, h] };
        b.op(Op::Recurrent(r), inputs, dims);
        check("recurrent", b, seed);
    }
}

/// Convolutions and products whose contractions are long enough to run in several blocks
/// of `k` on the x86 back end (the first block storing, later ones adding, the last
/// applying the epilogue), including an unfolded image cut between channels and between
/// kernel rows, grouped, strided and dilated. With AVX-512, the convolutions with few
/// output channels at stride 1 (the second, fourth and last) read their image directly,
/// in one block, a channel's taps unrolled; the others pack it.
#[test]
fn long_contractions() {
    for (n, c, h, w, k, kernel, stride, dilation, pad, groups) in [
        (1, 47, 9, 9, 56, 3, 1, 1, 1, 1),
        (1, 47, 9, 9, 20, 3, 1, 1, 1, 1),
        (2, 31, 17, 13, 12, 5, 2, 1, 2, 1),
        (1, 100, 12, 10, 16, 3, 1, 2, 2, 2),
        (2, 400, 6, 5, 24, 1, 1, 1, 0, 1),
        (1, 67, 8, 8, 48, 7, 1, 1, 3, 1),
        (1, 67, 8, 8, 9, 7, 1, 1, 3, 1),
    ] {
        let win =
            window(n, c, h, w, (kernel, kernel), (stride, stride), (dilation, dilation), [pad; 4], false)
                .unwrap();
        let mut b = Builder::new(n);
        let x = b.input(vec![n, c, h, w]);
        let weight = b.param("w", vec![k, c / groups, kernel, kernel], 0.3);
        let dims = vec![n, k, win.oh, win.ow];
        let y = b.op(Op::Conv2d { win, k, groups }, vec![x, weight], dims.clone());
        let bias = b.param("b", vec![k], 0.5);
        let inner = win.oh * win.ow;
        let y = b.op(Op::AddChannel { outer: n, channels: k, inner }, vec![y, bias], dims.clone());
        b.op(Op::Elementwise { len: n * k * inner, f: EXAMPLES[0].function() }, vec![y], dims);
        check(&format!("conv {c}×{h}×{w} → {k}, {kernel}×{kernel}"), b, 4);
    }
    for (m, k, n) in [(7, 1000, 70), (30, 777, 5)] {
        let mut b = Builder::new(m);
        let x = b.input(vec![m, k]);
        let w = b.param("w", vec![k, n], 0.1);
        b.op(Op::MatMul { m, k, n, ta: false }, vec![x, w], vec![m, n]);
        check(&format!("product {m}×{k}×{n}"), b, 5);
    }
}

/// One image large enough to share: the convolution splits into blocks of output rows
/// (with its im2col, or reading a 1×1 convolution's input directly), or, where its few
/// output rows do not split evenly, into blocks of output channels (the last five: with
/// channels left over after the equal blocks, and a 1×1 convolution), and agrees with
/// the reference on two and three threads.
#[test]
fn single_image_convolutions_split() {
    for (c, h, w, k, kernel, stride, pad, threads) in [
        (16, 32, 30, 24, 3, 1, 1, 2),
        (8, 36, 28, 16, 5, 2, 2, 3),
        (64, 24, 24, 32, 1, 1, 0, 2),
        (3, 40, 40, 16, 7, 2, 3, 2),
        (64, 7, 7, 64, 3, 1, 1, 2),
        (32, 13, 11, 44, 3, 2, 1, 3),
        (160, 5, 9, 40, 1, 1, 0, 2),
        (24, 7, 7, 30, 3, 1, 1, 3),
        (40, 14, 14, 64, 3, 2, 1, 2),
    ] {
        let win = window(1, c, h, w, (kernel, kernel), (stride, stride), (1, 1), [pad; 4], false).unwrap();
        let mut b = Builder::new(1);
        let x = b.input(vec![1, c, h, w]);
        let weight = b.param("w", vec![k, c, kernel, kernel], 0.3);
        let dims = vec![1, k, win.oh, win.ow];
        let y = b.op(Op::Conv2d { win, k, groups: 1 }, vec![x, weight], dims.clone());
        let bias = b.param("b", vec![k], 0.5);
        let inner = win.oh * win.ow;
        let y = b.op(Op::AddChannel { outer: 1, channels: k, inner }, vec![y, bias], dims.clone());
        let residual = b.input(dims.clone());
        let y = b.op(
            Op::Elementwise { len: k * win.oh * win.ow, f: Elementwise::add(2) },
            vec![y, residual],
            dims.clone(),
        );
        b.op(Op::Elementwise { len: k * win.oh * win.ow, f: EXAMPLES[0].function() }, vec![y], dims);
        let listing = nnc_compiler::passes::schedule::schedule(
            &b.graph,
            threads,
            nnc_compiler::backend::Target::Cranelift.geometry(),
        )
        .to_string();
        assert!(listing.contains("threads split"), "not split:\n{listing}");
        for seed in [2, 3] {
            for target in Target::supported() {
                let (generated, reference) = run_both_on(&b.graph, seed, threads, target);
                let what = format!("conv {c}×{h}×{w} → {k} on {threads} threads, {}", target.name());
                assert_agree(&what, &generated, &reference);
            }
        }
    }
}
