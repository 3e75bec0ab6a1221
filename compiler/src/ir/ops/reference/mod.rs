//! The reference interpreter: each op as the plainest loops that compute it, summing in
//! f64. Slow and obviously right; every generated kernel is tested against it, and every
//! backward op against finite differences of the forward ops here.
//!
//! It runs in f32, as nnc's tensors, or entirely in f64 (see [`Real`]): an f64 run shows
//! how far an f32 result is from the exact one. [`run_f64`] runs a graph in f64 from the
//! f32 values a test fills as for an f32 run.
//!
//! Some values are integers carried in a value's bits rather than numbers: token ids,
//! class labels and the dropout seed in the hyper-parameter tensor, each the bit pattern
//! of a `u32` (or `i32`). In f32 that is the value `f32::from_bits(n)`; in f64 it is
//! `f64::from_bits(n as u64)`, the integer in the low 32 bits. Reading the f32 value as
//! an f64 number would also keep small integers (their denormals widen exactly), but not
//! every seed: a NaN pattern need not survive the conversion. [`widen`] converts an f32
//! value set by that rule, knowing from the ops that read each tensor which of its values
//! are integers.

mod backward;
mod forward;
mod real;
mod train;
mod wide;

#[cfg(test)]
mod f64_tests;
#[cfg(test)]
mod grad_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod wide_tests;

pub use real::Real;
pub use wide::{run_f64, widen};

use super::{Op, Role, TensorGraph, TensorId};

/// The values of tensor `t`: its own, or its slice of the block it is a view of.
pub fn read<'v, T: Real>(graph: &TensorGraph, values: &'v [Vec<T>], t: TensorId) -> &'v [T] {
    let tensor = graph.tensor(t);
    match tensor.view {
        Some((base, offset)) => &values[base.0 as usize][offset..offset + tensor.len()],
        None => &values[t.0 as usize],
    }
}

/// Overwrites tensor `t` (or its slice of its block).
pub fn write<T: Real>(graph: &TensorGraph, values: &mut [Vec<T>], t: TensorId, data: &[T]) {
    let tensor = graph.tensor(t);
    match tensor.view {
        Some((base, offset)) => values[base.0 as usize][offset..offset + tensor.len()].copy_from_slice(data),
        None => values[t.0 as usize] = data.to_vec(),
    }
}

/// Runs the graph. `values[i]` holds tensor `i` (a view's values live in its block):
/// inputs, labels, hyper-parameters, parameters, state and persistent blocks must be
/// filled; activations and per-step blocks start at zero and are computed in op order.
pub fn run<T: Real>(graph: &TensorGraph, values: &mut [Vec<T>]) {
    for (i, t) in graph.tensors.iter().enumerate() {
        if t.view.is_none() && matches!(t.role, Role::Activation | Role::Block { persistent: false }) {
            values[i] = vec![T::ZERO; t.len()];
        }
    }
    for node in &graph.ops {
        // Inputs are copied first: in-place ops (running statistics, updates) read and
        // write the same tensor.
        let inputs: Vec<Vec<T>> = node.inputs.iter().map(|t| read(graph, values, *t).to_vec()).collect();
        let inputs: Vec<&[T]> = inputs.iter().map(Vec::as_slice).collect();
        let targets: Vec<TensorId> = std::iter::once(node.output).chain(node.aux.iter().copied()).collect();
        let mut outputs: Vec<Vec<T>> =
            targets.iter().map(|t| vec![T::ZERO; graph.tensor(*t).len()]).collect();
        let mut slots: Vec<&mut [T]> = outputs.iter_mut().map(Vec::as_mut_slice).collect();
        eval(&node.op, &inputs, &mut slots);
        for (t, data) in targets.iter().zip(&outputs) {
            write(graph, values, *t, data);
        }
    }
}

/// Computes one op: `x` its inputs, `out` its output then its auxiliary outputs. The match
/// names every op, so an op without a reference does not build.
pub fn eval<T: Real>(op: &Op, x: &[&[T]], out: &mut [&mut [T]]) {
    match *op {
        Op::Conv2d { win, k, groups } => forward::conv2d(&win, k, groups, x[0], x[1], out[0]),
        Op::Pool2d { win, reduce } => forward::pool2d(&win, reduce, x[0], out[0]),
        Op::GlobalAvgPool { n, c, hw } => forward::global_avg_pool(n, c, hw, x, out[0]),
        Op::MatMul { m, k, n, ta } => forward::mat_mul(m, k, n, ta, x, out[0]),
        Op::AddChannel { outer, channels, inner } => forward::add_channel(outer, channels, inner, x, out[0]),
        Op::ScaleShiftChannel { outer, channels, inner } => {
            forward::scale_shift_channel(outer, channels, inner, x, out[0])
        }
        Op::BatchNormFold { channels, eps } => forward::batch_norm_fold(channels, eps, x, out[0]),
        Op::Elementwise { len, ref f } => forward::elementwise(len, f, x, out[0]),
        Op::Fill { len, value } => forward::fill(len, value, out[0]),
        Op::Softmax { rows, cols } => forward::softmax(rows, cols, x, out[0]),
        Op::Lrn { n, c, hw, size, alpha, beta, k } => {
            forward::lrn((n, c, hw, size), (alpha, beta, k), x, out[0])
        }
        Op::Concat { outer, ref inners } => forward::concat(outer, inners, x, out[0]),
        Op::Embedding { count, vocab, dim } => forward::embedding(count, vocab, dim, x, out[0]),
        Op::Recurrent(r) => forward::recurrent(&r, x, out),
        Op::RecurrentBackward(r) => backward::recurrent_backward(&r, x, out),
        Op::Conv2dBackwardData { win, k, groups } => {
            backward::conv2d_backward_data(win, k, groups, x, out[0])
        }
        Op::Conv2dBackwardWeight { win, k, groups, parts } => {
            backward::conv2d_backward_weight(win, k, groups, parts, x, out[0])
        }
        Op::SumParts { parts, len } => backward::sum_parts(parts, len, x, out[0]),
        Op::Pool2dBackward { win, reduce } => backward::pool_backward(&win, reduce, x[0], x[1], out[0]),
        Op::BroadcastChannel { outer, channels, inner, scale } => {
            backward::broadcast_channel(outer, channels, inner, scale, x, out[0])
        }
        Op::ChannelSum { outer, channels, inner } => backward::channel_sum(outer, channels, inner, x, out[0]),
        Op::Transpose { rows, cols } => backward::transpose(rows, cols, x, out[0]),
        Op::SoftmaxBackward { rows, cols } => backward::softmax_backward(rows, cols, x, out[0]),
        Op::LrnBackward { n, c, hw, size, alpha, beta, k } => {
            backward::lrn_backward(x[0], x[1], out[0], (n, c, hw, size), (alpha, beta, k))
        }
        Op::Slice { outer, total, offset, len } => backward::slice(outer, total, offset, len, x, out[0]),
        Op::EmbeddingBackward { count, vocab, dim } => {
            backward::embedding_backward(count, vocab, dim, x, out[0])
        }
        Op::DropoutBackward { len, p } => backward::dropout_backward(len, p, x, out[0]),
        Op::BatchNormBackwardReduce { outer, channels, inner, eps } => {
            backward::batch_norm_backward_reduce(outer, channels, inner, eps, x, out[0])
        }
        Op::BatchNormBackwardInput { outer, channels, inner, eps } => {
            backward::batch_norm_backward_input(outer, channels, inner, eps, x, out[0])
        }
        Op::Copy { offset, len } => backward::copy(offset, len, x, out[0]),
        Op::ChannelMoments { outer, channels, inner } => {
            train::channel_moments(outer, channels, inner, x, out)
        }
        Op::BatchNormFoldTrain { channels, eps } => train::batch_norm_fold_train(channels, eps, x, out),
        Op::UpdateRunning { channels, momentum, variance, count } => {
            train::update_running(channels, momentum, variance, count, x, out)
        }
        Op::Dropout { len, p } => train::dropout(len, p, x, out),
        Op::SoftmaxCrossEntropy { rows, cols } => train::softmax_cross_entropy(rows, cols, x, out),
        Op::MeanSquaredError { rows, cols } => train::mean_squared_error(rows, cols, x, out),
        Op::SumSquares { len } => train::sum_squares(len, x, out),
        Op::Update { len, rule } => train::update(len, rule, x, out),
    }
}
