//! Whole training steps: the generated forward, backward and update kernels of a network
//! against the reference interpreter running the same training graph — the updated
//! parameters, the optimizer state, the loss and the number of right predictions.

mod common;

use nnc_compiler::front::train::Loss;
use nnc_compiler::ir::ops::{Hyper, Role, TensorId, UpdateRule, reference};
use nnc_runtime::exec::Options;
use nnc_runtime::init::Rng;
use nnc_runtime::train::step::{StepSettings, TrainStep};
use std::path::Path;

fn example(name: &str) -> nnc_compiler::Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    nnc_compiler::compile_file(&path).expect("the example compiles")
}

/// Takes `steps` steps with generated code and with the reference from the same start,
/// comparing everything the step writes that outlives it.
fn check(model: &nnc_compiler::Model, batch: usize, rule: UpdateRule, threads: usize, steps: usize) {
    check_loss(model, Loss::CrossEntropy, batch, rule, threads, steps);
}

/// [`check`] with a given loss: class labels for a cross-entropy, which also counts the
/// correct predictions; targets of the output's shape for a squared error, which counts
/// none.
fn check_loss(
    model: &nnc_compiler::Model,
    loss: Loss,
    batch: usize,
    rule: UpdateRule,
    threads: usize,
    steps: usize,
) {
    let network = &model.networks[0];
    let options = Options { threads, guard: true, verify: true, fma: true, ..Default::default() };
    let mut step = TrainStep::new(network, loss, rule, batch, &options).expect("compiles for training");
    step.exe.init_params(3);
    let t = step.training.clone();
    let g = &step.exe.graph().clone();
    let mut rng = Rng::new(11);
    let classes = g
        .tensor(g.ops.iter().find(|o| o.aux.contains(&t.stats)).unwrap().inputs[0])
        .dims
        .last()
        .copied()
        .unwrap();
    // The reference's starting values: everything the generated step keeps across steps.
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); g.tensors.len()];
    for (i, tensor) in g.tensors.iter().enumerate() {
        let id = TensorId(i as u32);
        let keeps = tensor.view.is_none()
            && matches!(tensor.role, Role::Param(_) | Role::State(_) | Role::Block { persistent: true });
        values[i] = if keeps { step.exe.tensor(id).to_vec() } else { vec![0.0; tensor.len()] };
    }
    for s in 0..steps {
        let vocab = g.ops.iter().find_map(|o| match o.op {
            nnc_compiler::ir::ops::Op::Embedding { vocab, .. } if o.inputs[0] == g.inputs[0] => {
                Some(vocab as u64)
            }
            _ => None,
        });
        let input: Vec<f32> = (0..step.input_mut().len())
            .map(|_| match vocab {
                Some(v) => f32::from_bits(rng.below(v) as u32),
                None => rng.normal() as f32,
            })
            .collect();
        let labels: Vec<f32> = (0..step.labels_mut().len())
            .map(|_| match loss {
                Loss::CrossEntropy => f32::from_bits(rng.below(classes as u64) as u32),
                Loss::MeanSquaredError => rng.normal() as f32,
            })
            .collect();
        step.input_mut().copy_from_slice(&input);
        step.labels_mut().copy_from_slice(&labels);
        values[g.inputs[0].0 as usize] = input;
        values[t.labels.0 as usize] = labels;
        let settings = StepSettings { lr: 0.05, clip: None, seed: 77 + s as u32 };
        let stats = step.run(&settings).expect("the step runs");
        let mut hyper = step.exe.tensor(t.hyper).to_vec();
        hyper[Hyper::GRAD_SCALE] = 1.0;
        values[t.hyper.0 as usize] = hyper;
        reference::run(g, &mut values);
        let what = |name: &str| format!("{} step {s} on {threads} threads: {name}", network.name);
        let want = &values[t.stats.0 as usize];
        assert!(
            (stats.loss - want[0] as f64).abs() <= 1e-4 * (1.0 + want[0].abs() as f64),
            "{}: loss {} vs {}",
            what("loss"),
            stats.loss,
            want[0]
        );
        let correct = (loss == Loss::CrossEntropy).then_some(want[1] as f64);
        assert_eq!(stats.correct, correct, "{}", what("correct"));
        for &(p, offset) in &t.layout {
            let len = g.tensor(p).len();
            let range = offset..offset + len;
            common::assert_agree(
                &what(&g.tensor(p).name),
                &step.exe.tensor(t.params)[range.clone()],
                &values[t.params.0 as usize][range],
            );
        }
        for &state in &t.states {
            common::assert_agree(&what("optimizer state"), step.exe.tensor(state), &values[state.0 as usize]);
        }
        for (id, p) in g.params() {
            if !p.trainable {
                common::assert_agree(&what(&p.name), step.exe.tensor(id), &values[id.0 as usize]);
            }
        }
    }
}

const SGD: UpdateRule = UpdateRule::Sgd { momentum: 0.9, nesterov: false, weight_decay: 5e-4 };
const ADAM: UpdateRule =
    UpdateRule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };

#[test]
fn lenet5_sgd_step_matches_the_reference() {
    check(&example("lenet5.net"), 4, SGD, 1, 2);
}

#[test]
fn lenet5_on_two_threads() {
    check(
        &example("lenet5.net"),
        8,
        UpdateRule::Sgd { momentum: 0.9, nesterov: true, weight_decay: 0.0 },
        2,
        2,
    );
}

fn source(text: &str) -> nnc_compiler::Model {
    nnc_compiler::compile_str("test.net", text, None).expect("the test network compiles")
}

#[test]
fn residual_network_with_batchnorm_and_adamw() {
    let m = source(
        "network n(x: [3, 8, 8]) {
            let y = x |> conv(8, 3, pad: 1, bias: false) |> batchnorm |> relu
                      |> conv(8, 3, pad: 1, bias: false) |> batchnorm
            let s = x |> conv(8, 1, stride: 1, bias: false) |> batchnorm
            relu(y + s) |> maxpool(2) |> global_avgpool |> flatten |> dropout(0.5) |> dense(5)
        }",
    );
    let rule = UpdateRule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01, decoupled: true };
    check(&m, 3, rule, 2, 3);
}

#[test]
fn inception_with_lrn_and_grouped_strided_convs() {
    let m = source(
        "network n(x: [4, 9, 9]) {
            let y = x |> conv(8, 3, stride: 2, groups: 2) |> relu |> lrn(3, alpha: 1e-2, beta: 0.75, k: 1)
            concat(y |> conv(4, 1) |> relu, y |> avgpool(3, stride: 1, pad: 1) |> conv(2, 3, pad: 1) |> tanh)
              |> flatten |> dense(7)
        }",
    );
    check(&m, 2, ADAM, 1, 2);
}

#[test]
fn squared_error_regression() {
    let m = source("network n(x: [2, 6, 6]) { x |> conv(3, 3) |> tanh |> flatten |> dense(4) }");
    check_loss(&m, Loss::MeanSquaredError, 3, SGD, 2, 2);
}

#[test]
fn lstm_and_gru_sequences() {
    let lstm = source("network n(x: seq[5] of onehot(7)) { x |> lstm(6) |> dropout(0.2) |> dense(7) }");
    check(&lstm, 3, ADAM, 1, 2);
    let gru =
        source("network n(x: seq[4] of tokens(9)) { x |> embedding(5) |> gru(6, last: true) |> dense(4) }");
    check(&gru, 2, SGD, 2, 2);
}

/// A step that goes non-finite names the first tensor that did by what the graph records
/// about it. Huge inputs through tiny convolution weights give finite outputs and a
/// finite loss, but the weight gradient (inputs times output gradients) overflows. Finding
/// it runs the step again, on the batch as it was fed: the arena has reused the labels'
/// memory by then.
#[test]
fn a_non_finite_gradient_is_named_for_the_parameter_it_is_the_gradient_of() {
    let text = "network n(x: [1, 2, 2]) {\n    x |> conv(2, 1) |> flatten |> dense(2)\n}\n";
    let model = nnc_compiler::compile_str("n.net", text, None).expect("compiles");
    let options = Options { threads: 1, guard: true, verify: true, fma: true, ..Default::default() };
    let rule = UpdateRule::Sgd { momentum: 0.0, nesterov: false, weight_decay: 0.0 };
    let mut step = TrainStep::new(&model.networks[0], Loss::CrossEntropy, rule, 1, &options).unwrap();
    let params: Vec<(TensorId, String)> =
        step.exe.graph().params().map(|(t, info)| (t, info.name.clone())).collect();
    for (t, name) in params {
        let values = step.exe.tensor_mut(t);
        match name.as_str() {
            "conv1.weight" => values.fill(1e-37),
            // Stored as [in, out]: class 0 gets +100 from every feature, class 1 −100.
            "dense1.weight" => {
                for (i, v) in values.iter_mut().enumerate() {
                    *v = if i % 2 == 0 { 100.0 } else { -100.0 };
                }
            }
            _ => values.fill(0.0),
        }
    }
    step.input_mut().fill(3e38);
    step.labels_mut()[0] = f32::from_bits(1);
    let settings = StepSettings { lr: 0.1, clip: None, seed: 1 };
    let err = step.run(&settings).expect_err("the weight gradient overflows").to_string();
    assert!(err.contains("the gradient of `conv1.weight` became non-finite"), "{err}");
    assert!(err.contains("conv2d_backward_weight"), "{err}");
}
