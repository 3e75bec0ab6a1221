//! A training step of a conv–batch-norm residual net at 28×28, batch 32, generated in f32,
//! against the same step run by the reference interpreter entirely in f64 — the exact
//! answer up to f64 rounding. The generated step must be about as close to it as the f32
//! reference (f32 values, f64 sums): every gradient, every updated weight and running
//! statistic within a few times the reference's own distance from exact, so that no kernel
//! loses precision a careful f32 computation keeps.

use nnc_compiler::front::train::Loss;
use nnc_compiler::ir::ops::{Hyper, Role, TensorId, UpdateRule, reference};
use nnc_runtime::exec::Options;
use nnc_runtime::init::Rng;
use nnc_runtime::train::step::{StepSettings, TrainStep};

const EPS: f64 = f32::EPSILON as f64;

/// The worst distance from exact, as a fraction of the tensor's largest exact value.
fn distance(got: &[f32], exact: &[f64]) -> f64 {
    let scale = exact.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let worst = got.iter().zip(exact).fold(0.0f64, |m, (g, e)| m.max((*g as f64 - e).abs()));
    if scale == 0.0 { worst } else { worst / scale }
}

fn step_against_f64(rule: UpdateRule) {
    let model = nnc_compiler::compile_str(
        "test.net",
        "network n(x: [1, 28, 28]) {
            let s = x |> conv(8, 3, pad: 1, bias: false) |> batchnorm |> relu
            let y = s |> conv(8, 3, pad: 1, bias: false) |> batchnorm |> relu
                      |> conv(8, 3, pad: 1, bias: false) |> batchnorm
            relu(y + s) |> conv(16, 3, stride: 2, pad: 1, bias: false) |> batchnorm |> relu
              |> global_avgpool |> flatten |> dense(10)
        }",
        None,
    )
    .expect("compiles");
    let network = &model.networks[0];
    let options = Options { threads: 2, guard: false, verify: true, fma: true, ..Default::default() };
    let mut step =
        TrainStep::new(network, Loss::CrossEntropy, rule, 32, &options).expect("compiles for training");
    step.exe.init_params(7);
    let t = step.training.clone();
    let g = &step.exe.graph().clone();
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); g.tensors.len()];
    for (i, tensor) in g.tensors.iter().enumerate() {
        let keeps = tensor.view.is_none()
            && matches!(tensor.role, Role::Param(_) | Role::State(_) | Role::Block { persistent: true });
        values[i] =
            if keeps { step.exe.tensor(TensorId(i as u32)).to_vec() } else { vec![0.0; tensor.len()] };
    }
    // Pixels in [0, 1) with a positive mean, as images have.
    let mut rng = Rng::new(3);
    let input: Vec<f32> = (0..step.input_mut().len()).map(|_| rng.uniform() as f32).collect();
    let labels: Vec<f32> = (0..32).map(|_| f32::from_bits(rng.below(10) as u32)).collect();
    step.input_mut().copy_from_slice(&input);
    step.labels_mut().copy_from_slice(&labels);
    values[g.inputs[0].0 as usize] = input;
    values[t.labels.0 as usize] = labels;
    step.run(&StepSettings { lr: 0.05, clip: None, seed: 1 }).expect("the step runs");
    let mut hyper = step.exe.tensor(t.hyper).to_vec();
    hyper[Hyper::GRAD_SCALE] = 1.0;
    values[t.hyper.0 as usize] = hyper;

    let exact = reference::run_f64(g, &values);
    let mut narrow = values.clone();
    reference::run(g, &mut narrow);

    let mut checked = 0;
    let mut compare = |what: String, got: &[f32], careful: &[f32], exact: &[f64]| {
        let (ours, theirs) = (distance(got, exact), distance(careful, exact));
        // A few times the careful f32 computation's distance, and never held to less
        // than a handful of roundings of the tensor's scale.
        let allowed = 4.0 * theirs + 16.0 * EPS;
        assert!(
            ours <= allowed,
            "{what}: {ours:.2e} of its scale from exact, the f32 reference {theirs:.2e} (allowed {allowed:.2e})"
        );
        checked += 1;
    };
    for &(p, offset) in &t.layout {
        let range = offset..offset + g.tensor(p).len();
        let name = &g.tensor(p).name;
        let (grads, params) = (t.grads.0 as usize, t.params.0 as usize);
        compare(
            format!("gradient of {name}"),
            &step.exe.tensor(t.grads)[range.clone()],
            &narrow[grads][range.clone()],
            &exact[grads][range.clone()],
        );
        compare(
            format!("{name} after the step"),
            &step.exe.tensor(t.params)[range.clone()],
            &narrow[params][range.clone()],
            &exact[params][range],
        );
    }
    for (id, p) in g.params() {
        if !p.trainable {
            let i = id.0 as usize;
            compare(p.name.clone(), step.exe.tensor(id), &narrow[i], &exact[i]);
        }
    }
    for &s in &t.states {
        let i = s.0 as usize;
        compare(g.tensor(s).name.clone(), step.exe.tensor(s), &narrow[i], &exact[i]);
    }
    let stats = t.stats.0 as usize;
    compare("loss".into(), &step.exe.tensor(t.stats)[..1], &narrow[stats][..1], &exact[stats][..1]);
    assert!(checked > 20, "only {checked} tensors compared");
}

#[test]
fn sgd_step_is_as_exact_as_a_careful_f32_step() {
    step_against_f64(UpdateRule::Sgd { momentum: 0.9, nesterov: false, weight_decay: 5e-4 });
}

#[test]
fn adam_step_is_as_exact_as_a_careful_f32_step() {
    step_against_f64(UpdateRule::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: false,
    });
}
