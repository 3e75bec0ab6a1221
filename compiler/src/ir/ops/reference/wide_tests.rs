//! Whole graphs in f64 from f32 values: a dropout seed read alike in both types, and
//! training steps in f64 against f32.

use super::{read, run, run_f64};
use crate::front::train::Loss;
use crate::ir::ops::{Hyper, Op, Role, TensorGraph, TensorId, UpdateRule};
use crate::passes::autodiff::{Training, training};
use crate::passes::lower::{Mode, lower_for};

/// SplitMix64, so that failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [−a, a).
    fn uniform(&mut self, a: f32) -> f32 {
        ((self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
    }

    fn below(&mut self, n: usize) -> u32 {
        (self.next() % n as u64) as u32
    }
}

/// A dropout seed whose bits are a signalling NaN as an f32: an f64 run that widened it as a
/// number could read another seed; carried in bits it draws the f32 run's mask.
#[test]
fn dropout_draws_the_same_mask_in_both_types_for_any_seed() {
    let len = 64;
    let x: Vec<f32> = (0..len).map(|i| 1.0 + i as f32).collect();
    for seed in [12345u32, 0x7f80_0001, 0xffff_ffff] {
        let mut hyper = vec![0.0f32; Hyper::LEN];
        hyper[Hyper::SEED] = f32::from_bits(seed);
        let graph = dropout_graph(len);
        let values = vec![x.clone(), hyper, vec![0.0; len]];
        let mut narrow = values.clone();
        run(&graph, &mut narrow);
        let wide = run_f64(&graph, &values);
        let kept = |v: &[f64]| v.iter().map(|&y| y != 0.0).collect::<Vec<_>>();
        let kept32: Vec<bool> = narrow[2].iter().map(|&y| y != 0.0).collect();
        assert_eq!(kept(&wide[2]), kept32, "seed {seed:#x}");
        assert!(kept32.contains(&true) && kept32.contains(&false), "seed {seed:#x}: a trivial mask");
        let scale = 1.0 - f64::from(0.3f32);
        for (i, &y) in wide[2].iter().enumerate() {
            assert!(y == 0.0 || y == f64::from(x[i]) / scale, "seed {seed:#x}: {y} at {i}");
        }
    }
}

/// `x [len]`, `hyper` → `dropout(x, 0.3)`.
fn dropout_graph(len: usize) -> TensorGraph {
    let tensor = |name: &str, dims, role| crate::ir::ops::Tensor {
        name: name.into(),
        dims,
        role,
        view: None,
        origin: crate::ir::ops::Origin::Named,
    };
    TensorGraph {
        batch: 1,
        tensors: vec![
            tensor("x", vec![len], Role::Input),
            tensor("hyper", vec![Hyper::LEN], Role::Hyper),
            tensor("y", vec![len], Role::Activation),
        ],
        ops: vec![crate::ir::ops::OpNode {
            op: Op::Dropout { len, p: 0.3 },
            inputs: vec![TensorId(0), TensorId(1)],
            output: TensorId(2),
            aux: vec![],
            layer: "dropout".into(),
        }],
        inputs: vec![TensorId(0)],
        one_hot: Vec::new(),
        output: TensorId(2),
    }
}

fn build(source: &str, batch: usize, loss: Loss) -> (TensorGraph, Training) {
    let model = crate::compile_str("test.net", source, None).expect("the test network compiles");
    let forward = lower_for(&model.networks[0], batch, Mode::Training);
    let rule = UpdateRule::Sgd { momentum: 0.9, nesterov: false, weight_decay: 5e-4 };
    training(forward, loss, rule).expect("the network differentiates")
}

/// Values for every tensor a step reads: weights drawn with a fan-in scale, batch-norm
/// scales near one, momentum from an earlier step, inputs, labels or tokens, and the
/// hyper-parameters.
fn initial(step: &(TensorGraph, Training), rng: &mut Rng) -> Vec<Vec<f32>> {
    let (g, t) = (&step.0, &step.1);
    let mut values: Vec<Vec<f32>> = g.tensors.iter().map(|t| vec![0.0; t.len()]).collect();
    for &(p, offset) in &t.layout {
        let Role::Param(info) = &g.tensor(p).role else { unreachable!("the layout holds parameters") };
        let fan_in: usize = info.torch_dims[1..].iter().product();
        for v in &mut values[t.params.0 as usize][offset..offset + g.tensor(p).len()] {
            *v = match info.torch_dims.len() {
                1 if info.name.ends_with("weight") => 1.0 + rng.uniform(0.2),
                1 => rng.uniform(0.2),
                _ => rng.uniform(1.0 / (fan_in as f32).sqrt()),
            };
        }
    }
    let input = g.inputs[0];
    let vocab = g.ops.iter().find_map(|o| match o.op {
        Op::Embedding { vocab, .. } if o.inputs[0] == input => Some(vocab),
        _ => None,
    });
    let classes = g.ops.iter().find_map(|o| match o.op {
        Op::SoftmaxCrossEntropy { cols, .. } => Some(cols),
        _ => None,
    });
    for (i, tensor) in g.tensors.iter().enumerate() {
        let v = &mut values[i];
        match &tensor.role {
            Role::Input => match vocab {
                Some(n) => v.iter_mut().for_each(|x| *x = f32::from_bits(rng.below(n))),
                None => v.iter_mut().for_each(|x| *x = rng.uniform(1.0)),
            },
            Role::Label => match classes {
                Some(n) => v.iter_mut().for_each(|x| *x = f32::from_bits(rng.below(n))),
                None => v.iter_mut().for_each(|x| *x = rng.uniform(1.0)),
            },
            Role::Hyper => {
                v[Hyper::LR] = 0.05;
                v[Hyper::GRAD_SCALE] = 1.0;
                v[Hyper::SEED] = f32::from_bits(0x5eed);
            }
            Role::Param(p) if p.name.ends_with("running_var") => v.fill(1.0),
            Role::State(_) => v.iter_mut().for_each(|x| *x = rng.uniform(0.01)),
            Role::Param(_) | Role::Activation | Role::Block { .. } => {}
        }
    }
    values
}

/// Runs one step of `t` in f32 and in f64 from the same values and compares every tensor
/// an op writes. Returns the f64 run's gradient block.
fn compare(what: &str, step: &(TensorGraph, Training), values: &[Vec<f32>]) -> Vec<f64> {
    let (g, t) = (&step.0, &step.1);
    let mut narrow = values.to_vec();
    run(g, &mut narrow);
    let wide = run_f64(g, values);
    for node in &g.ops {
        for &out in std::iter::once(&node.output).chain(&node.aux) {
            let (a, b) = (read(g, &narrow, out), read(g, &wide, out));
            let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (i, (&a, &b)) in a.iter().zip(b).enumerate() {
                assert!(
                    (f64::from(a) - b).abs() <= 1e-5 * scale,
                    "{what}: {}[{i}] is {a:e} in f32 but {b:e} in f64 (largest {scale:e})",
                    g.tensor(out).name
                );
            }
        }
    }
    let stats = (read(g, &narrow, t.stats), read(g, &wide, t.stats));
    assert_eq!(f64::from(stats.0[1]), stats.1[1], "{what}: the correct predictions");
    read(g, &wide, t.grads).to_vec()
}

/// A conv–batch-norm LeNet-5 at 28×28, batch 32, with dropout: one SGD step in f64 agrees
/// with f32 to 1e-5 of each tensor's largest value, and really is computed in f64.
///
/// The f32 run rounds every op's output to f32 (a relative 6e-8) and the errors of some
/// forty ops compose: the largest difference seen is 1.1e-6 of a tensor's largest value
/// (the momentum, a sum of two gradients that partly cancel), most are below 3e-7. The
/// network is smooth (tanh, mean pooling), so that no rounding can move a kink or a tie
/// and change which way a gradient flows.
#[test]
fn a_lenet_training_step_in_f64_agrees_with_f32() {
    let source = "network lenet(x: [1, 28, 28]) {
        x |> conv(6, 5, pad: 2, bias: false) |> batchnorm |> tanh |> avgpool(2)
          |> conv(16, 5, bias: false) |> batchnorm |> tanh |> avgpool(2)
          |> flatten |> dense(120) |> tanh |> dropout(0.25) |> dense(84) |> tanh |> dense(10)
    }";
    let t = build(source, 32, Loss::CrossEntropy);
    let values = initial(&t, &mut Rng(28));
    assert_computed_in_f64("lenet", &compare("lenet", &t, &values));
}

/// Token ids, a recurrence unrolled over time, dropout, and a squared error.
#[test]
fn a_recurrent_training_step_in_f64_agrees_with_f32() {
    let source = "network n(x: seq[6] of tokens(12)) {
        x |> embedding(5) |> gru(7, last: true) |> dropout(0.3) |> dense(3)
    }";
    let t = build(source, 4, Loss::MeanSquaredError);
    let values = initial(&t, &mut Rng(6));
    assert_computed_in_f64("gru", &compare("gru", &t, &values));
}

/// Gradients that come out of f64 arithmetic: almost none of those that are not zero (a
/// token absent from the batch, say) is an f32 value, as a gradient rounded to f32 on its
/// way would be; so almost none equals the f32 run's.
fn assert_computed_in_f64(what: &str, wide: &[f64]) {
    let nonzero = wide.iter().filter(|&&v| v != 0.0).count();
    let is_f32 = wide.iter().filter(|&&v| v != 0.0 && f64::from(v as f32) == v).count();
    assert!(nonzero > 0 && is_f32 * 100 < nonzero, "{what}: {is_f32} of {nonzero} gradients are f32 values");
}
