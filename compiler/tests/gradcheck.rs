//! Whole small networks, differentiated by `autodiff` and run by the reference
//! interpreter, against finite differences of their loss: every layer kind's backward
//! rule composed with the others, in the training-mode lowering (batch statistics,
//! dropout masks, recurrences unrolled over time).
//!
//! The loss is stored in f32 and every intermediate rounds to f32, so central
//! differences with a step of 1e-2 carry errors around 1e-4 of the loss; gradients are
//! compared with a relative tolerance of 2 % over an absolute floor of 2e-4. A wrong rule
//! (a sign, a transposition, a missing term) is off by far more.

use nnc_compiler::front::train::Loss;
use nnc_compiler::ir::ops::{Hyper, Op, Role, TensorGraph, TensorId, UpdateRule, reference};
use nnc_compiler::passes::autodiff::{Training, training};
use nnc_compiler::passes::lower::{Mode, lower_for};

/// A small deterministic generator (SplitMix64), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn uniform(&mut self, a: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }
}

fn build(source: &str, batch: usize, loss: Loss) -> (TensorGraph, Training) {
    let model = nnc_compiler::compile_str("test.net", source, None).expect("the test network compiles");
    let forward = lower_for(&model.networks[0], batch, Mode::Training);
    // No decay and a zero learning rate: the update leaves the parameters as they were.
    // Two threads: weight gradients of convolutions with few input channels are then
    // split over the images (the residual test's batch of 4 has such a split).
    let rule = UpdateRule::Sgd { momentum: 0.0, nesterov: false, weight_decay: 0.0 };
    training(forward, loss, rule).expect("the network differentiates")
}

/// Values for every tensor the step reads: parameters, inputs, labels, hyper-parameters.
fn initial(step: &(TensorGraph, Training), rng: &mut Rng) -> Vec<Vec<f32>> {
    let g = &step.0;
    let classes = match g.ops.iter().find_map(|o| match o.op {
        Op::SoftmaxCrossEntropy { cols, .. } => Some(cols),
        _ => None,
    }) {
        Some(c) => c as u64,
        None => 0,
    };
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); g.tensors.len()];
    for (i, tensor) in g.tensors.iter().enumerate() {
        let len = tensor.len();
        values[i] = match &tensor.role {
            Role::Input => {
                let vocab = g.ops.iter().find_map(|o| match o.op {
                    Op::Embedding { vocab, .. } if o.inputs[0] == TensorId(i as u32) => Some(vocab as u64),
                    _ => None,
                });
                match vocab {
                    Some(v) => (0..len).map(|_| f32::from_bits((rng.next() % v) as u32)).collect(),
                    None => (0..len).map(|_| rng.uniform(1.0)).collect(),
                }
            }
            Role::Label if classes > 0 => {
                (0..len).map(|_| f32::from_bits((rng.next() % classes) as u32)).collect()
            }
            Role::Label => (0..len).map(|_| rng.uniform(1.0)).collect(),
            Role::Hyper => {
                let mut h = vec![0.0; len];
                h[Hyper::GRAD_SCALE] = 1.0;
                h[Hyper::SEED] = f32::from_bits(12345);
                h
            }
            Role::Param(p) if p.name.ends_with("running_var") => vec![1.0; len],
            Role::Param(_) if tensor.view.is_none() => vec![0.0; len],
            Role::Block { persistent: true } => (0..len).map(|_| rng.uniform(0.5)).collect(),
            _ => vec![0.0; len],
        };
    }
    values
}

/// The loss and the gradient block after one reference step from `values`.
fn loss_and_grads(step: &(TensorGraph, Training), values: &[Vec<f32>]) -> (f64, Vec<f32>) {
    let (g, t) = (&step.0, &step.1);
    let mut v = values.to_vec();
    reference::run(g, &mut v);
    (v[t.stats.0 as usize][0] as f64, v[t.grads.0 as usize].clone())
}

fn check(what: &str, source: &str, batch: usize, loss: Loss, samples: usize) {
    let step = build(source, batch, loss);
    let t = &step.1;
    let mut rng = Rng(0x5eed ^ what.len() as u64);
    let values = initial(&step, &mut rng);
    let (_, grads) = loss_and_grads(&step, &values);
    let scale = (grads.iter().map(|g| (*g as f64).powi(2)).sum::<f64>() / grads.len() as f64).sqrt();
    assert!(scale > 1e-6, "{what}: the gradients are all zero");
    let block = t.params.0 as usize;
    let h = 1e-2f32;
    // Every parameter tensor is sampled: its first element and random others.
    let mut indices: Vec<usize> = t.layout.iter().map(|(_, offset)| *offset).collect();
    while indices.len() < samples {
        indices.push((rng.next() % grads.len() as u64) as usize);
    }
    for i in indices {
        let at = |delta: f32| {
            let mut v = values.clone();
            v[block][i] += delta;
            loss_and_grads(&step, &v).0
        };
        let fd = (at(h) - at(-h)) / (2.0 * h as f64);
        let analytic = grads[i] as f64;
        let tol = 0.02 * analytic.abs().max(fd.abs()) + 2e-4 + 1e-3 * scale;
        let param = t
            .layout
            .iter()
            .rev()
            .find(|(_, off)| *off <= i)
            .map(|(p, off)| (step.0.tensor(*p).name.clone(), i - off));
        assert!(
            (fd - analytic).abs() <= tol,
            "{what}: d loss / d {param:?} is {analytic:.6} by the backward pass but {fd:.6} by finite differences"
        );
    }
}

#[test]
fn conv_pool_dense_chain() {
    let src = "network n(x: [2, 7, 7]) {
        x |> conv(3, 3, pad: 1) |> tanh |> maxpool(2) |> conv(4, 2, stride: 1) |> sigmoid
          |> avgpool(2, pad: 1) |> flatten |> dense(6) |> tanh |> dense(5)
    }";
    check("chain", src, 3, Loss::CrossEntropy, 60);
}

#[test]
fn residual_block_with_batchnorm() {
    let src = "network n(x: [3, 6, 6]) {
        let y = x |> conv(4, 3, pad: 1, bias: false) |> batchnorm |> sigmoid
                  |> conv(4, 3, pad: 1, bias: false) |> batchnorm
        let s = x |> conv(4, 1, bias: false) |> batchnorm
        tanh(y + s) |> global_avgpool |> flatten |> dense(3)
    }";
    check("residual", src, 4, Loss::CrossEntropy, 60);
}

#[test]
fn inception_block_with_lrn() {
    let src = "network n(x: [3, 5, 5]) {
        let y = concat(
            x |> conv(2, 1) |> tanh,
            x |> conv(2, 1) |> tanh |> conv(3, 3, pad: 1) |> tanh,
            x |> maxpool(3, stride: 1, pad: 1) |> conv(2, 1) |> tanh,
        )
        y |> lrn(3, alpha: 0.5, beta: 0.75, k: 1) |> avgpool(2, stride: 2, ceil: true) |> flatten |> dense(4)
    }";
    check("inception", src, 2, Loss::CrossEntropy, 60);
}

#[test]
fn rnn_over_steps() {
    let src = "network n(x: seq[4] of onehot(5)) { x |> rnn(6) |> dense(5) }";
    check("rnn", src, 2, Loss::CrossEntropy, 50);
}

#[test]
fn lstm_over_steps() {
    let src = "network n(x: seq[4] of onehot(5)) { x |> lstm(6) |> dense(5) }";
    check("lstm", src, 2, Loss::CrossEntropy, 60);
}

#[test]
fn gru_last_state_with_dropout() {
    let src = "network n(x: seq[5] of onehot(4)) { x |> gru(5, last: true) |> dropout(0.3) |> dense(3) }";
    check("gru", src, 3, Loss::CrossEntropy, 50);
}

#[test]
fn embedding_and_mean_squared_error() {
    let src = "network n(x: seq[6] of tokens(10)) { x |> embedding(4) |> lstm(3, last: true) |> dense(2) }";
    check("embedding", src, 2, Loss::MeanSquaredError, 40);
}

/// Element-wise products and a GELU: backward ops derived from their formulas, through a
/// whole network (the kinked activations are checked op by op, away from their kinks).
#[test]
fn gated_block_with_gelu_and_mul() {
    let src = "network n(x: [2, 5, 5]) {
        let y = x |> conv(3, 3, pad: 1) |> gelu
        let g = x |> conv(3, 1) |> sigmoid
        mul(y * g, y) |> global_avgpool |> flatten |> dense(4)
    }";
    check("gated", src, 3, Loss::CrossEntropy, 60);
}
