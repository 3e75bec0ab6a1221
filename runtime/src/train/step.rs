//! One training step, compiled: the forward pass, the loss, the backward pass and the
//! optimizer update of a network, as generated kernels over one arena.
//!
//! A step runs every kernel but the last, reads the squared gradient norm, stops if the
//! loss or a gradient is not finite, scales the gradients for clipping, then runs the last
//! kernel: the update. Parameters therefore never take a non-finite step.

use crate::exec::{self, Executable, Options};
use nnc_compiler::front::train::Loss;
use nnc_compiler::ir::graph::Graph;
use nnc_compiler::ir::ops::{Hyper, Op, Origin, TensorGraph, TensorId, UpdateRule};
use nnc_compiler::passes::autodiff::Training;
use nnc_compiler::pipeline;

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Pipeline(#[from] pipeline::Error),
    #[error(transparent)]
    Exec(#[from] exec::Error),
    #[error("step {step}: {tensor} became non-finite{}; the parameters were not updated", in_kernel(.kernel, .label))]
    NonFinite { step: u64, tensor: String, kernel: String, label: String },
}

fn in_kernel(kernel: &str, label: &str) -> String {
    if kernel.is_empty() { String::new() } else { format!(" first, in kernel {kernel} ({label})") }
}

/// A tensor as a person would name it, from what the graph records about it: `the output
/// of conv1 (conv2d)`, `the gradient of conv1.weight`.
fn describe(graph: &TensorGraph, t: TensorId) -> String {
    let tensor = graph.tensor(t);
    match &tensor.origin {
        Origin::GradientOf(of) => {
            let of = graph.tensor(*of);
            match &of.origin {
                Origin::Output { layer, .. } => format!("the gradient of `{layer}`"),
                Origin::Named | Origin::GradientOf(_) => format!("the gradient of `{}`", of.name),
            }
        }
        Origin::Output { layer, op } => format!("the output of `{layer}` ({op})"),
        Origin::Named => format!("`{}`", tensor.name),
    }
}

/// What changes from step to step.
#[derive(Clone, Copy, Debug)]
pub struct StepSettings {
    pub lr: f64,
    /// Largest global gradient norm.
    pub clip: Option<f64>,
    /// Seed of this step's dropout masks.
    pub seed: u32,
}

/// What a step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// Mean loss over the batch.
    pub loss: f64,
    /// Rows predicted right (a classification loss only: a squared error has no
    /// predictions to count).
    pub correct: Option<f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// A network compiled for training at one batch size.
pub struct TrainStep {
    pub exe: Executable,
    pub training: Training,
    /// Steps taken so far (Adam's bias corrections count them).
    pub steps: u64,
    /// Whether the loss kernel counts correct predictions (a softmax cross-entropy
    /// does; a squared error has no classes to count).
    counts_correct: bool,
    /// The inputs and labels of the step being run, kept so that [`TrainStep::diagnose`]
    /// can run it again: the arena reuses their memory once the step has read them.
    fed: Vec<(TensorId, Vec<f32>)>,
}

impl TrainStep {
    pub fn new(
        network: &Graph,
        loss: Loss,
        rule: UpdateRule,
        batch: usize,
        options: &Options,
    ) -> Result<TrainStep, StepError> {
        let (stages, training) = pipeline::training(network, loss, rule, batch, options.stages())?;
        let exe = Executable::new(stages, options)?;
        debug_assert!(exe.program().kernels.last().is_some_and(|k| k.writes.contains(&training.params)));
        let counts_correct = exe.graph().ops.iter().any(|o| matches!(o.op, Op::SoftmaxCrossEntropy { .. }));
        let fed = exe.graph().inputs.iter().chain([&training.labels]).map(|&t| (t, Vec::new())).collect();
        Ok(TrainStep { exe, training, steps: 0, counts_correct, fed })
    }

    /// The input batch, as the network's input tensor holds it.
    pub fn input_mut(&mut self) -> &mut [f32] {
        let t = self.exe.graph().inputs[0];
        self.exe.tensor_mut(t)
    }

    /// The batch's labels: class ids as i32 bits, or regression targets.
    pub fn labels_mut(&mut self) -> &mut [f32] {
        self.exe.tensor_mut(self.training.labels)
    }

    /// Runs one step on the batch in the input and label tensors.
    pub fn run(&mut self, s: &StepSettings) -> Result<StepStats, StepError> {
        let t = self.steps + 1;
        let (b1, b2) = match self.training.rule {
            UpdateRule::Adam { beta1, beta2, .. } => (beta1 as f64, beta2 as f64),
            UpdateRule::Sgd { .. } => (0.0, 0.0),
        };
        let hyper = self.training.hyper;
        let h = self.exe.tensor_mut(hyper);
        h[Hyper::LR] = s.lr as f32;
        h[Hyper::GRAD_SCALE] = 1.0;
        h[Hyper::BIAS1] = (1.0 / (1.0 - b1.powi(t.min(i32::MAX as u64) as i32))) as f32;
        h[Hyper::BIAS2] = (1.0 / (1.0 - b2.powi(t.min(i32::MAX as u64) as i32))) as f32;
        h[Hyper::SEED] = f32::from_bits(s.seed);
        for (t, copy) in &mut self.fed {
            copy.clear();
            copy.extend_from_slice(self.exe.tensor(*t));
        }
        let kernels = self.exe.program().kernels.len();
        for k in 0..kernels - 1 {
            self.exe.run_kernel(k)?;
        }
        let stats = self.exe.tensor(self.training.stats);
        let loss = stats[0] as f64;
        let correct = self.counts_correct.then_some(stats[1] as f64);
        let norm2 = self.exe.tensor(self.training.grad_norm)[0] as f64;
        if !loss.is_finite() || !norm2.is_finite() {
            return Err(self.diagnose());
        }
        let grad_norm = norm2.sqrt();
        let scale = match s.clip {
            Some(max) if grad_norm > max => max / (grad_norm + 1e-6),
            _ => 1.0,
        };
        self.exe.tensor_mut(hyper)[Hyper::GRAD_SCALE] = scale as f32;
        self.exe.run_kernel(kernels - 1)?;
        self.steps = t;
        Ok(StepStats { loss, correct, grad_norm })
    }

    /// Runs the step's kernels again one by one and names the first tensor that holds a
    /// non-finite value (the parameters are still those the step started from).
    fn diagnose(&mut self) -> StepError {
        let step = self.steps + 1;
        for (t, copy) in &self.fed {
            self.exe.tensor_mut(*t).copy_from_slice(copy);
        }
        let kernels = self.exe.program().kernels.len();
        for k in 0..kernels - 1 {
            if let Err(e) = self.exe.run_kernel(k) {
                return e.into();
            }
            let kernel = &self.exe.program().kernels[k];
            for &t in &kernel.writes {
                if self.exe.plan().tensors[t.0 as usize].is_some()
                    && self.exe.tensor(t).iter().any(|v| !v.is_finite())
                {
                    return StepError::NonFinite {
                        step,
                        tensor: describe(self.exe.graph(), t),
                        kernel: kernel.name.clone(),
                        label: kernel.label.clone(),
                    };
                }
            }
        }
        // The stored tensors were finite but the loss was not: the loss overflowed.
        StepError::NonFinite { step, tensor: "the loss".into(), kernel: String::new(), label: String::new() }
    }

    /// Whether the network has dropout (whose masks the step seed selects).
    pub fn has_dropout(&self) -> bool {
        self.exe.graph().ops.iter().any(|o| matches!(o.op, Op::Dropout { .. }))
    }
}

#[cfg(test)]
mod tests {
    use super::describe;
    use nnc_compiler::ir::init::Init;
    use nnc_compiler::ir::ops::{Layout, Origin, ParamInfo, Role, Tensor, TensorGraph, TensorId};

    /// Names that say nothing: only the recorded origins can tell what each tensor is.
    fn tensor(role: Role, origin: Origin) -> Tensor {
        Tensor { name: "t".into(), dims: vec![4], role, view: None, origin }
    }

    #[test]
    fn tensors_are_described_from_their_origin_not_their_name() {
        let info = ParamInfo {
            name: "conv1.weight".into(),
            torch_dims: vec![4],
            layout: Layout::Same,
            trainable: true,
            init: Init::Zeros,
        };
        let mut weight = tensor(Role::Param(info), Origin::Named);
        weight.name = "conv1.weight".into();
        let output = Origin::Output { layer: "stage1.conv2".into(), op: "conv2d".into() };
        let graph = TensorGraph {
            tensors: vec![
                weight,
                tensor(Role::Activation, Origin::GradientOf(TensorId(0))),
                tensor(Role::Activation, output),
                tensor(Role::Activation, Origin::GradientOf(TensorId(2))),
            ],
            ..TensorGraph::default()
        };
        assert_eq!(describe(&graph, TensorId(1)), "the gradient of `conv1.weight`");
        assert_eq!(describe(&graph, TensorId(2)), "the output of `stage1.conv2` (conv2d)");
        assert_eq!(describe(&graph, TensorId(3)), "the gradient of `stage1.conv2`");
        assert_eq!(describe(&graph, TensorId(0)), "`conv1.weight`");
    }
}
