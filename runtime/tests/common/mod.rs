//! Running generated code and the reference interpreter side by side.

#![allow(dead_code)] // each test crate uses part of this

use nnc_compiler::ops::{Role, TensorGraph, reference};
use nnc_runtime::exec::{Executable, Options};
use nnc_runtime::init::Rng;

/// Agreement tolerance for f32 results, in one place: |generated − reference| may be at
/// most `TOL · (|reference| + rms(reference))`.
///
/// The reference sums in f64; generated code sums in f32 in another order. Rounding
/// error scales with the magnitude of the terms summed, not of the result, so an element
/// that cancels to near zero is judged against the tensor's scale (its RMS) as well as
/// its own. Measured worst cases over the zoo are 5e-6 of the RMS (ResNet-50); 1e-4
/// leaves a margin of twenty.
pub const TOL: f64 = 1e-4;

/// Options for tests: guard bytes on, verifier on, FMA where the CPU has it.
pub fn options(threads: usize) -> Options {
    Options { threads, guard: true, verify: true, fma: true }
}

/// Compiles `graph`, fills parameters and inputs from `seed`, runs generated code and the
/// reference, and returns (generated, reference) outputs.
///
/// Odd seeds compile without FMA, which checks the multiply-and-add path CPUs without FMA
/// get.
pub fn run_both(graph: &TensorGraph, seed: u64, threads: usize) -> (Vec<f32>, Vec<f32>) {
    let opts = Options { fma: seed.is_multiple_of(2), ..options(threads) };
    let mut exec = Executable::from_ops(graph.clone(), &opts).expect("compiles");
    exec.init_params(seed);
    let mut rng = Rng::new(seed);
    let mut values: Vec<Vec<f32>> = vec![Vec::new(); graph.tensors.len()];
    for (i, t) in graph.tensors.iter().enumerate() {
        let id = nnc_compiler::ops::TensorId(i as u32);
        match &t.role {
            Role::Input => {
                let data: Vec<f32> = match token_vocab(graph, id) {
                    Some(vocab) => {
                        (0..t.len()).map(|_| f32::from_bits(rng.below(vocab as u64) as u32)).collect()
                    }
                    None => (0..t.len()).map(|_| (2.0 * rng.uniform() - 1.0) as f32).collect(),
                };
                exec.tensor_mut(id).copy_from_slice(&data);
                values[i] = data;
            }
            Role::Param(p) => {
                // Running statistics that are not the identity, so that folding is tested.
                if p.name.ends_with("running_mean") {
                    let d: Vec<f32> = (0..t.len()).map(|_| (0.2 * rng.normal()) as f32).collect();
                    exec.tensor_mut(id).copy_from_slice(&d);
                } else if p.name.ends_with("running_var") {
                    let d: Vec<f32> = (0..t.len()).map(|_| (0.5 + rng.uniform()) as f32).collect();
                    exec.tensor_mut(id).copy_from_slice(&d);
                }
                values[i] = exec.tensor(id).to_vec();
            }
            Role::Activation => {}
        }
    }
    reference::run(graph, &mut values);
    exec.run().expect("runs without touching guard bytes");
    (exec.output().to_vec(), values[graph.output.0 as usize].clone())
}

/// The vocabulary if `input` feeds an embedding (its values are token ids).
fn token_vocab(graph: &TensorGraph, input: nnc_compiler::ops::TensorId) -> Option<usize> {
    graph.ops.iter().find_map(|o| match o.op {
        nnc_compiler::ops::Op::Embedding { vocab, .. } if o.inputs[0] == input => Some(vocab),
        _ => None,
    })
}

/// Root mean square of a tensor.
pub fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// Asserts agreement within [`TOL`], reporting the worst element.
pub fn assert_agree(what: &str, generated: &[f32], reference: &[f32]) {
    assert_eq!(generated.len(), reference.len(), "{what}: output lengths");
    let scale = rms(reference);
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &r)) in generated.iter().zip(reference).enumerate() {
        let err = (g as f64 - r as f64).abs() / (r.abs() as f64 + scale).max(f64::MIN_POSITIVE);
        if (err.is_nan() || err > TOL) && worst.is_none_or(|(_, e)| err > e || err.is_nan()) {
            worst = Some((i, err));
        }
    }
    if let Some((i, err)) = worst {
        panic!(
            "{what}: element {i} is {} but the reference gives {} (error {err:.2e} of the scale, tolerance {TOL:e})",
            generated[i], reference[i]
        );
    }
}

/// Builds small tensor graphs by hand for kernel tests.
#[derive(Default)]
pub struct Builder {
    pub graph: TensorGraph,
}

impl Builder {
    pub fn new(batch: usize) -> Builder {
        Builder { graph: TensorGraph { batch, ..TensorGraph::default() } }
    }

    fn tensor(&mut self, name: &str, dims: Vec<usize>, role: Role) -> nnc_compiler::ops::TensorId {
        self.graph.tensors.push(nnc_compiler::ops::Tensor { name: name.into(), dims, role });
        nnc_compiler::ops::TensorId(self.graph.tensors.len() as u32 - 1)
    }

    pub fn input(&mut self, dims: Vec<usize>) -> nnc_compiler::ops::TensorId {
        let t = self.tensor("x", dims, Role::Input);
        self.graph.inputs.push(t);
        t
    }

    /// A parameter drawn uniformly from ±`a` (internal layout = PyTorch's).
    pub fn param(&mut self, name: &str, dims: Vec<usize>, a: f64) -> nnc_compiler::ops::TensorId {
        let info = nnc_compiler::ops::ParamInfo {
            name: name.into(),
            torch_dims: dims.clone(),
            layout: nnc_compiler::ops::Layout::Same,
            trainable: true,
            init: nnc_compiler::init::Init::Uniform { a },
        };
        self.tensor(name, dims, Role::Param(info))
    }

    pub fn op(
        &mut self,
        op: nnc_compiler::ops::Op,
        inputs: Vec<nnc_compiler::ops::TensorId>,
        dims: Vec<usize>,
    ) -> nnc_compiler::ops::TensorId {
        let out = self.tensor("y", dims, Role::Activation);
        self.graph.ops.push(nnc_compiler::ops::OpNode { op, inputs, output: out, layer: "test".into() });
        self.graph.output = out;
        out
    }
}
