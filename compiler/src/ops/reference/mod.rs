//! The reference interpreter: each op as the plainest loops that compute it, summing in
//! f64. Slow and obviously right; every generated kernel is tested against it, and every
//! backward op against finite differences of the forward ops here.

mod backward;
mod forward;
mod train;

#[cfg(test)]
mod grad_tests;
#[cfg(test)]
mod tests;

use super::{Op, Role, TensorGraph, TensorId};

/// The values of tensor `t`: its own, or its slice of the block it is a view of.
pub fn read<'v>(graph: &TensorGraph, values: &'v [Vec<f32>], t: TensorId) -> &'v [f32] {
    let tensor = graph.tensor(t);
    match tensor.view {
        Some((base, offset)) => &values[base.0 as usize][offset..offset + tensor.len()],
        None => &values[t.0 as usize],
    }
}

/// Overwrites tensor `t` (or its slice of its block).
pub fn write(graph: &TensorGraph, values: &mut [Vec<f32>], t: TensorId, data: &[f32]) {
    let tensor = graph.tensor(t);
    match tensor.view {
        Some((base, offset)) => values[base.0 as usize][offset..offset + tensor.len()].copy_from_slice(data),
        None => values[t.0 as usize] = data.to_vec(),
    }
}

/// Runs the graph. `values[i]` holds tensor `i` (a view's values live in its block):
/// inputs, labels, hyper-parameters, parameters, state and persistent blocks must be
/// filled; activations and per-step blocks start at zero and are computed in op order.
pub fn run(graph: &TensorGraph, values: &mut [Vec<f32>]) {
    for (i, t) in graph.tensors.iter().enumerate() {
        if t.view.is_none() && matches!(t.role, Role::Activation | Role::Block { persistent: false }) {
            values[i] = vec![0.0; t.len()];
        }
    }
    for node in &graph.ops {
        // Inputs are copied first: in-place ops (running statistics, updates) read and
        // write the same tensor.
        let inputs: Vec<Vec<f32>> = node.inputs.iter().map(|t| read(graph, values, *t).to_vec()).collect();
        let inputs: Vec<&[f32]> = inputs.iter().map(Vec::as_slice).collect();
        let targets: Vec<TensorId> = std::iter::once(node.output).chain(node.aux.iter().copied()).collect();
        let mut outputs: Vec<Vec<f32>> = targets.iter().map(|t| vec![0.0; graph.tensor(*t).len()]).collect();
        let mut slots: Vec<&mut [f32]> = outputs.iter_mut().map(Vec::as_mut_slice).collect();
        eval(&node.op, &inputs, &mut slots);
        for (t, data) in targets.iter().zip(&outputs) {
            write(graph, values, *t, data);
        }
    }
}

/// Computes one op: `x` its inputs, `out` its output then its auxiliary outputs.
pub fn eval(op: &Op, x: &[&[f32]], out: &mut [&mut [f32]]) {
    let done = forward::eval(op, x, out[0]) || backward::eval(op, x, out[0]) || train::eval(op, x, out);
    assert!(done, "the reference interpreter has no rule for {}", op.name());
}
