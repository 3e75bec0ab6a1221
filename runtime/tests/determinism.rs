//! The same seed gives the same weights on any number of threads: a few training steps of
//! each network on 1, 2 and 3 threads must leave every parameter, optimizer state and
//! running statistic identical bit for bit. Every reduction's order therefore has to be a
//! function of the shapes alone, never of how the work is split across threads.

use nnc_compiler::front::train::Loss;
use nnc_compiler::ir::ops::{Role, TensorId, UpdateRule};
use nnc_runtime::exec::Options;
use nnc_runtime::init::Rng;
use nnc_runtime::train::step::{StepSettings, TrainStep};
use std::path::Path;

fn example(name: &str) -> nnc_compiler::Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    nnc_compiler::compile_file(&path).expect("the example compiles")
}

fn source(text: &str) -> nnc_compiler::Model {
    nnc_compiler::compile_str("test.net", text, None).expect("the test network compiles")
}

/// Everything a step keeps after `steps` steps on `threads` threads, as bit patterns,
/// with each tensor's name.
fn train(
    model: &nnc_compiler::Model,
    rule: UpdateRule,
    batch: usize,
    threads: usize,
    steps: usize,
) -> Vec<(String, Vec<u32>)> {
    let network = &model.networks[0];
    let options = Options { threads, guard: false, verify: true, fma: true, ..Default::default() };
    let mut step =
        TrainStep::new(network, Loss::CrossEntropy, rule, batch, &options).expect("compiles for training");
    step.exe.init_params(5);
    let g = step.exe.graph().clone();
    let classes = *g.tensor(g.output).dims.last().expect("class scores");
    let vocab = g.ops.iter().find_map(|o| match o.op {
        nnc_compiler::ir::ops::Op::Embedding { vocab, .. } if o.inputs[0] == g.inputs[0] => {
            Some(vocab as u64)
        }
        _ => None,
    });
    let mut rng = Rng::new(21);
    for s in 0..steps {
        let input: Vec<f32> = (0..step.input_mut().len())
            .map(|_| match vocab {
                Some(v) => f32::from_bits(rng.below(v) as u32),
                None => rng.normal() as f32,
            })
            .collect();
        let labels: Vec<f32> =
            (0..step.labels_mut().len()).map(|_| f32::from_bits(rng.below(classes as u64) as u32)).collect();
        step.input_mut().copy_from_slice(&input);
        step.labels_mut().copy_from_slice(&labels);
        step.run(&StepSettings { lr: 0.05, clip: Some(5.0), seed: 3 + s as u32 }).expect("the step runs");
    }
    g.tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            t.view.is_none()
                && matches!(t.role, Role::Param(_) | Role::State(_) | Role::Block { persistent: true })
        })
        .map(|(i, t)| {
            (t.name.clone(), step.exe.tensor(TensorId(i as u32)).iter().map(|v| v.to_bits()).collect())
        })
        .collect()
}

fn same_on_any_thread_count(model: &nnc_compiler::Model, rule: UpdateRule, batch: usize, steps: usize) {
    let one = train(model, rule, batch, 1, steps);
    for threads in [2, 3] {
        let other = train(model, rule, batch, threads, steps);
        assert_eq!(one.len(), other.len());
        for ((name, a), (_, b)) in one.iter().zip(&other) {
            let differ = a.iter().zip(b).filter(|(x, y)| x != y).count();
            assert_eq!(
                differ,
                0,
                "{name}: {differ} of {} values differ between 1 and {threads} threads",
                a.len()
            );
        }
    }
}

const SGD: UpdateRule = UpdateRule::Sgd { momentum: 0.9, nesterov: false, weight_decay: 5e-4 };
const ADAM: UpdateRule =
    UpdateRule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: false };

#[test]
fn lenet5_weights_do_not_depend_on_the_thread_count() {
    same_on_any_thread_count(&example("lenet5.net"), SGD, 32, 3);
}

#[test]
fn residual_batchnorm_weights_do_not_depend_on_the_thread_count() {
    let m = source(
        "network n(x: [1, 28, 28]) {
            let s = x |> conv(8, 3, pad: 1, bias: false) |> batchnorm |> relu
            let y = s |> conv(8, 3, pad: 1, bias: false) |> batchnorm |> relu
                      |> conv(8, 3, pad: 1, bias: false) |> batchnorm
            relu(y + s) |> conv(16, 3, stride: 2, pad: 1) |> relu |> global_avgpool |> flatten |> dense(10)
        }",
    );
    same_on_any_thread_count(&m, ADAM, 32, 2);
}

#[test]
fn lstm_weights_do_not_depend_on_the_thread_count() {
    let m = source("network n(x: seq[12] of onehot(20)) { x |> lstm(32) |> dropout(0.2) |> dense(20) }");
    same_on_any_thread_count(&m, ADAM, 16, 2);
}

/// Batches too small to share out by sequence: on two and three threads the recurrent
/// layers' threads share their hidden units (96 of them: 48 each or 32 each), a team
/// meeting at a barrier once a step.
#[test]
fn recurrent_teams_do_not_depend_on_the_thread_count() {
    use nnc_compiler::ir::kernel::Parallel;
    let lstm = source("network n(x: seq[9] of onehot(20)) { x |> lstm(96) |> dropout(0.2) |> dense(20) }");
    let gru =
        source("network n(x: seq[6] of tokens(9)) { x |> embedding(5) |> gru(96, last: true) |> dense(4) }");
    for (m, rule, batch) in [(&lstm, ADAM, 3), (&gru, SGD, 2)] {
        for threads in [2, 3] {
            let options = Options { threads, guard: false, verify: true, fma: true, ..Default::default() };
            let step =
                TrainStep::new(&m.networks[0], Loss::CrossEntropy, rule, batch, &options).expect("compiles");
            let teams =
                step.exe.program().kernels.iter().filter(|k| matches!(k.parallel, Parallel::Team { .. }));
            assert_eq!(teams.count(), 2, "the recurrent layer's two kernels are teams on {threads} threads");
        }
        same_on_any_thread_count(m, rule, batch, 2);
    }
}

#[test]
fn split_transposes_and_dropout_do_not_depend_on_the_thread_count() {
    use nnc_compiler::ir::kernel::{KernelKind, Parallel};
    // Weights whose transposed copies, and a dropout map, large enough to be split across
    // threads, with rows and elements left over after the equal blocks.
    let m = source("network n(x: [300]) { x |> dense(257) |> tanh |> dropout(0.3) |> dense(131) }");
    let options = Options { threads: 3, guard: false, verify: true, fma: true, ..Default::default() };
    let step = TrainStep::new(&m.networks[0], Loss::CrossEntropy, ADAM, 67, &options).expect("compiles");
    let kernels = &step.exe.program().kernels;
    let split = |k: &&nnc_compiler::ir::kernel::Kernel| matches!(k.parallel, Parallel::Loop { .. });
    assert!(kernels.iter().filter(|k| k.kind == KernelKind::Prologue).all(|k| split(&k)));
    assert_eq!(kernels.iter().filter(|k| k.label.starts_with("dropout") && split(k)).count(), 2);
    same_on_any_thread_count(&m, ADAM, 67, 2);
}
