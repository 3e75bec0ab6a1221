//! Evaluation: the network in inference form (running batch-norm statistics, no
//! dropout) over a whole dataset, with the mean loss, the accuracy and the confusion
//! matrix. The last batch is padded; padding rows are not counted.

use super::data::{Dataset, PADDING};
use crate::exec::{self, Executable, Options};
use crate::init::Rng;
use nnc_compiler::front::train::Loss;
use nnc_compiler::ir::graph::Graph;
use nnc_compiler::ir::ops::Op;
use std::collections::HashMap;

/// What an evaluation measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// Label rows counted (examples, or characters for text).
    pub rows: usize,
    /// Mean cross-entropy in nats, or for a network trained with a squared error, the
    /// mean squared error against one-hot targets.
    pub loss: f64,
    pub accuracy: f64,
    /// `confusion[label · classes + predicted]`.
    pub confusion: Vec<u64>,
    pub classes: usize,
}

pub struct Evaluator {
    pub exe: Executable,
    batch: usize,
    /// Whether the output is already probabilities (the network ends in softmax).
    probabilities: bool,
    loss: Loss,
}

impl Evaluator {
    /// The network in inference form, evaluated with the loss it is trained with.
    pub fn new(
        network: &Graph,
        batch: usize,
        loss: Loss,
        options: &Options,
    ) -> Result<Evaluator, exec::Error> {
        let exe = Executable::build(network, batch, options)?;
        let probabilities = exe
            .graph()
            .ops
            .last()
            .is_some_and(|o| matches!(o.op, Op::Softmax { .. }) && o.output == exe.graph().output);
        Ok(Evaluator { exe, batch, probabilities, loss })
    }

    /// Copies every parameter and buffer of `from` (by name) into this network.
    pub fn copy_params(&mut self, from: &Executable) {
        let source: HashMap<&str, nnc_compiler::ir::ops::TensorId> =
            from.graph().params().map(|(t, p)| (p.name.as_str(), t)).collect();
        let targets: Vec<(nnc_compiler::ir::ops::TensorId, String)> =
            self.exe.graph().params().map(|(t, p)| (t, p.name.clone())).collect();
        for (t, name) in targets {
            if let Some(&s) = source.get(name.as_str()) {
                self.exe.tensor_mut(t).copy_from_slice(from.tensor(s));
            }
        }
    }

    pub fn evaluate(&mut self, data: &Dataset) -> Result<Evaluation, exec::Error> {
        let classes = *self.exe.graph().tensor(self.exe.graph().output).dims.last().unwrap_or(&1);
        let rows_per = data.rows_per_example();
        let mut labels = vec![0.0f32; self.batch * rows_per];
        let mut confusion = vec![0u64; classes * classes];
        let (mut loss, mut rows, mut right) = (0.0f64, 0usize, 0usize);
        let input = self.exe.graph().inputs[0];
        let mut rng = Rng::new(0);
        let order: Vec<usize> = (0..data.len()).collect();
        for chunk in order.chunks(self.batch) {
            data.fill(chunk, false, &mut rng, self.exe.tensor_mut(input), &mut labels);
            self.exe.run()?;
            for (scores, label) in self.exe.output().chunks(classes).zip(&labels) {
                let label = label.to_bits();
                if label == PADDING {
                    continue;
                }
                let label = label as usize;
                let predicted = (0..classes).fold(0, |b, c| if scores[c] > scores[b] { c } else { b });
                confusion[label * classes + predicted] += 1;
                right += usize::from(predicted == label);
                rows += 1;
                loss += if self.loss == Loss::MeanSquaredError {
                    let err = |c: usize| scores[c] as f64 - f64::from(u8::from(c == label));
                    (0..classes).map(|c| err(c).powi(2)).sum::<f64>() / classes as f64
                } else if self.probabilities {
                    -(scores[label].max(f32::MIN_POSITIVE) as f64).ln()
                } else {
                    let max = scores.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) as f64;
                    let sum: f64 = scores.iter().map(|&s| (s as f64 - max).exp()).sum();
                    sum.ln() + max - scores[label] as f64
                };
            }
        }
        let n = rows.max(1) as f64;
        Ok(Evaluation { rows, loss: loss / n, accuracy: right as f64 / n, confusion, classes })
    }
}
