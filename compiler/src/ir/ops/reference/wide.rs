//! Running a graph in f64 from the f32 values a test fills for an f32 run.

use super::{Real, run};
use crate::ir::ops::{Hyper, Op, TensorGraph};

/// Runs `graph` in f64 from `values`, an f32 value set as [`run`] takes it, converted by
/// [`widen`]; returns every tensor's values after the run.
pub fn run_f64(graph: &TensorGraph, values: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let mut wide = widen(graph, values);
    run(graph, &mut wide);
    wide
}

/// `values` for an f64 run: every number exactly, and every integer carried in bits
/// (those an op reads as ids, labels or a seed) carried by the f64 rule of the module
/// documentation, so that the f64 run reads the same integers an f32 run reads.
pub fn widen(graph: &TensorGraph, values: &[Vec<f32>]) -> Vec<Vec<f64>> {
    let mut wide: Vec<Vec<f64>> = values.iter().map(|v| v.iter().map(|&x| f64::from(x)).collect()).collect();
    for node in &graph.ops {
        let Some((input, element)) = integer_input(&node.op) else { continue };
        let t = node.inputs[input];
        let tensor = graph.tensor(t);
        let (base, offset) = tensor.view.unwrap_or((t, 0));
        let range = match element {
            Some(e) => offset + e..offset + e + 1,
            None => offset..offset + tensor.len(),
        };
        let (narrow, wide) = (&values[base.0 as usize], &mut wide[base.0 as usize]);
        for i in range {
            wide[i] = f64::from_bits32(narrow[i].to_bits());
        }
    }
    wide
}

/// The input of `op` that holds integers in its values' bits, if any: its position, and
/// the one element that does (`None`: all of them).
fn integer_input(op: &Op) -> Option<(usize, Option<usize>)> {
    match op {
        Op::Embedding { .. } | Op::EmbeddingBackward { .. } => Some((0, None)),
        Op::SoftmaxCrossEntropy { .. } => Some((1, None)),
        Op::Dropout { .. } | Op::DropoutBackward { .. } => Some((1, Some(Hyper::SEED))),
        Op::Conv2d { .. }
        | Op::Pool2d { .. }
        | Op::GlobalAvgPool { .. }
        | Op::MatMul { .. }
        | Op::AddChannel { .. }
        | Op::ScaleShiftChannel { .. }
        | Op::BatchNormFold { .. }
        | Op::Elementwise { .. }
        | Op::Fill { .. }
        | Op::Softmax { .. }
        | Op::Lrn { .. }
        | Op::Concat { .. }
        | Op::Recurrent(_)
        | Op::RecurrentBackward(_)
        | Op::ChannelMoments { .. }
        | Op::BatchNormFoldTrain { .. }
        | Op::UpdateRunning { .. }
        | Op::Conv2dBackwardData { .. }
        | Op::Conv2dBackwardWeight { .. }
        | Op::SumParts { .. }
        | Op::Pool2dBackward { .. }
        | Op::BroadcastChannel { .. }
        | Op::ChannelSum { .. }
        | Op::Transpose { .. }
        | Op::SoftmaxBackward { .. }
        | Op::LrnBackward { .. }
        | Op::Slice { .. }
        | Op::BatchNormBackwardReduce { .. }
        | Op::BatchNormBackwardInput { .. }
        | Op::Copy { .. }
        | Op::MeanSquaredError { .. }
        | Op::SumSquares { .. }
        | Op::Update { .. } => None,
    }
}
