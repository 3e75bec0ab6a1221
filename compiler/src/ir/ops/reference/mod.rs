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

/// Computes one op: `x` its inputs, `out` its output then its auxiliary outputs.
pub fn eval<T: Real>(op: &Op, x: &[&[T]], out: &mut [&mut [T]]) {
    let done = forward::eval(op, x, out[0]) || backward::eval(op, x, out[0]) || train::eval(op, x, out);
    assert!(done, "the reference interpreter has no rule for {}", op.name());
}
