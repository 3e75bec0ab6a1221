//! The training plan: what `nnc compile --train` prints. The kernels of one training
//! step in order, grouped by phase (forward, loss, backward, update), the parameter and
//! optimizer-state blocks, and the arena with and without buffer reuse.

use crate::ir::kernel::KernelKind;
use crate::ir::ops::Op;
use crate::passes::autodiff::Training;
use crate::pipeline::Stages;
use crate::support::numbers::bytes;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Computed from parameters alone before each step (transposed weights, zero states).
    Prologue,
    Forward,
    Loss,
    Backward,
    Update,
}

#[derive(Debug, Clone, Serialize)]
pub struct KernelRow {
    pub name: String,
    pub phase: Phase,
    pub label: String,
    pub layers: Vec<String>,
    pub macs: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct TrainingPlan {
    pub network: String,
    pub batch: usize,
    pub threads: usize,
    pub optimizer: String,
    pub kernels: Vec<KernelRow>,
    /// Trainable parameters (in one block) and their bytes.
    pub params: usize,
    pub optimizer_state_bytes: usize,
    pub arena_bytes: usize,
    pub arena_bytes_without_reuse: usize,
}

impl TrainingPlan {
    pub fn new(network: &str, stages: &Stages, training: &Training) -> TrainingPlan {
        let (g, program, memory) = (stages.graph(), stages.program(), stages.memory());
        let mut phase = Phase::Forward;
        let kernels = program
            .kernels
            .iter()
            .map(|k| {
                let ops: Vec<&Op> =
                    g.ops.iter().filter(|o| k.writes.contains(&o.output)).map(|o| &o.op).collect();
                let this = if k.kind == KernelKind::Prologue {
                    Phase::Prologue
                } else if ops
                    .iter()
                    .any(|o| matches!(o, Op::SoftmaxCrossEntropy { .. } | Op::MeanSquaredError { .. }))
                {
                    phase = Phase::Backward;
                    Phase::Loss
                } else if ops.iter().any(|o| matches!(o, Op::SumSquares { .. } | Op::Update { .. })) {
                    Phase::Update
                } else {
                    phase
                };
                KernelRow {
                    name: k.name.clone(),
                    phase: this,
                    label: k.label.clone(),
                    layers: k.layers.clone(),
                    macs: k.macs,
                }
            })
            .collect();
        let params = g.tensor(training.params).len();
        TrainingPlan {
            network: network.to_string(),
            batch: g.batch,
            threads: program.threads,
            optimizer: training.rule.describe(),
            kernels,
            params,
            optimizer_state_bytes: training.states.len() * params * 4,
            arena_bytes: memory.size,
            arena_bytes_without_reuse: memory.without_reuse,
        }
    }
}

impl fmt::Display for TrainingPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "training plan for {} at batch {} on {} thread{}: {}",
            self.network,
            self.batch,
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.optimizer
        )?;
        for phase in [Phase::Prologue, Phase::Forward, Phase::Loss, Phase::Backward, Phase::Update] {
            let rows: Vec<&KernelRow> = self.kernels.iter().filter(|k| k.phase == phase).collect();
            if rows.is_empty() {
                continue;
            }
            let macs: u64 = rows.iter().map(|k| k.macs).sum();
            let name = format!("{phase:?}").to_lowercase();
            write!(f, "\n{name}: {} kernel{}", rows.len(), if rows.len() == 1 { "" } else { "s" })?;
            if macs > 0 {
                write!(f, ", {:.1} M multiply-adds", macs as f64 / 1e6)?;
            }
            writeln!(f)?;
            for k in rows {
                let layers = if k.layers.len() > 3 {
                    format!("{}, … ({} layers)", k.layers[..2].join(", "), k.layers.len())
                } else {
                    k.layers.join(", ")
                };
                writeln!(f, "  {:<6} {:<48} {layers}", k.name, k.label)?;
            }
        }
        writeln!(
            f,
            "\nparameters {} trainable in one block ({}); optimizer state {}",
            self.params,
            bytes(self.params as u64 * 4),
            bytes(self.optimizer_state_bytes as u64)
        )?;
        writeln!(
            f,
            "arena {} with buffer reuse ({} without)",
            bytes(self.arena_bytes as u64),
            bytes(self.arena_bytes_without_reuse as u64)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Phase, TrainingPlan};
    use crate::front::train::Loss;
    use crate::ir::kernel::KernelKind;
    use crate::ir::ops::UpdateRule;
    use crate::pipeline::{self, Options};

    /// The prologue (an LSTM's zero initial state) is told apart by the kernel's kind:
    /// the plan's phases and the arena's persistent block stay the same whatever the
    /// labels say.
    #[test]
    fn prologue_kernels_are_known_by_their_kind_not_their_label() {
        let text = "network n(x: seq[5] of onehot(7)) { x |> lstm(6) |> dense(7) }";
        let model = crate::compile_str("n.net", text, None).expect("compiles");
        let rule = UpdateRule::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 };
        let options =
            Options { threads: 1, guard: 0, geometry: crate::backend::Target::default().geometry() };
        let (stages, training) =
            pipeline::training(&model.networks[0], Loss::CrossEntropy, rule, 2, options).expect("schedules");
        let kinds: Vec<KernelKind> = stages.program().kernels.iter().map(|k| k.kind).collect();
        assert_eq!(kinds[0], KernelKind::Prologue);
        assert!(kinds[1..].iter().all(|k| *k == KernelKind::Body), "{kinds:?}");
        let phases = |stages: &pipeline::Stages| -> Vec<Phase> {
            TrainingPlan::new("n", stages, &training).kernels.iter().map(|k| k.phase).collect()
        };
        let before = (phases(&stages), stages.memory().clone());
        assert_eq!(before.0[0], Phase::Prologue);
        let (graph, mut program, _, _) = stages.into_parts();
        for (i, k) in program.kernels.iter_mut().enumerate() {
            k.label = format!("relabelled {i}");
        }
        let stages = pipeline::from_program(graph, program, options).expect("plans");
        assert_eq!(phases(&stages), before.0);
        assert_eq!(stages.memory().tensors, before.1.tensors);
        assert_eq!(stages.memory().size, before.1.size);
    }
}
