//! Sums that ride on a product: a column sum (a bias gradient) or a transposed one-hot
//! product (a one-hot input's weight gradient) over the same matrix as a product's `b`
//! joins that product's kernel as one of its [`BSum`]s, which a back end may take from
//! `b` while the product reads it. An LSTM's weight gradients all read its `dq`, 8 MiB for
//! the LSTM variant of B4 at batch 32: its bias and `W_ih` gradients had each read it
//! from memory again after the `W_hh` gradient had.
//!
//! A rider moves to its product's place in the order of kernels: later only if nothing
//! between reads what it writes, earlier only if what it reads is there by then. A
//! product split across threads by rows reads all of `b` in every block, so only one
//! split by columns, or not at all, takes riders: each block of columns then sums its own.

use super::Build;
use super::body::Split;
use crate::ir::kernel::{BSum, Ptr};
use crate::ir::ops::{Op, OpNode, TensorGraph};

/// A kernel's ops: a chain (an anchor and the element-wise steps it absorbed), and ops
/// riding on the anchor product.
pub(super) struct Group {
    pub ops: Vec<usize>,
    pub riders: Vec<usize>,
}

/// A rider's sum before the product's blocks place it: its output and, for a one-hot
/// product, its classes and its one-hot input.
#[derive(Clone)]
pub(super) enum Rider {
    Columns { out: Ptr },
    OneHot { m: usize, a: Ptr, out: Ptr },
}

impl Rider {
    pub(super) fn of(node: &OpNode) -> Rider {
        match node.op {
            Op::MatMul { m, .. } => {
                Rider::OneHot { m, a: Ptr::tensor(node.inputs[0]), out: Ptr::tensor(node.output) }
            }
            _ => Rider::Columns { out: Ptr::tensor(node.output) },
        }
    }

    /// The sum for a block of the product's columns, `at` moving a pointer to it and `n`
    /// the whole product's columns.
    pub(super) fn sum(&self, at: &dyn Fn(Ptr, usize) -> Ptr, n: usize) -> BSum {
        match self {
            Rider::Columns { out } => BSum::Columns { dst: at(out.clone(), 1) },
            Rider::OneHot { m, a, out } => {
                BSum::OneHot { m: *m, a: a.clone(), lda: *m, c: at(out.clone(), 1), ldc: n }
            }
        }
    }
}

/// Whether `node` (a kernel of its own) can ride on a product over `b` with `k` rows of
/// `n` columns.
fn rides(graph: &TensorGraph, node: &OpNode, b: crate::ir::ops::TensorId, (k, n): (usize, usize)) -> bool {
    match node.op {
        Op::ChannelSum { outer, channels, inner: 1 } => node.inputs[0] == b && (outer, channels) == (k, n),
        Op::MatMul { k: kr, n: nr, ta: true, .. } => {
            graph.one_hot.contains(&node.inputs[0]) && node.inputs[1] == b && (kr, nr) == (k, n)
        }
        _ => false,
    }
}

/// Groups `chains` (each a kernel's ops, in order), moving each op that can ride on a
/// product into that product's group.
pub(super) fn attach(graph: &TensorGraph, build: &Build<'_>, chains: Vec<Vec<usize>>) -> Vec<Group> {
    let mut groups: Vec<Group> = chains.into_iter().map(|ops| Group { ops, riders: Vec::new() }).collect();
    // The group that computes each tensor, where one does.
    let producer = |groups: &[Group], t| {
        groups.iter().position(|g| g.ops.iter().chain(&g.riders).any(|&i| graph.ops[i].output == t))
    };
    for p in 0..groups.len() {
        let Some(&first) = groups[p].ops.first() else { continue };
        let node = &graph.ops[first];
        let Op::MatMul { m, k, n, .. } = node.op else { continue };
        if graph.one_hot.contains(&node.inputs[0])
            || matches!(build.product_split(m, k, n), Split::Rows { .. })
        {
            continue;
        }
        let b = node.inputs[1];
        for r in 0..groups.len() {
            let [op] = groups[r].ops[..] else { continue };
            let rider = &graph.ops[op];
            if r == p || !groups[r].riders.is_empty() || !rides(graph, rider, b, (k, n)) {
                continue;
            }
            let free = if r < p {
                // Nothing between, nor the product, reads what it writes.
                !groups[r + 1..=p]
                    .iter()
                    .flat_map(|g| g.ops.iter().chain(&g.riders))
                    .any(|&i| graph.ops[i].inputs.contains(&rider.output))
            } else {
                // What it reads is computed before the product.
                rider.inputs.iter().all(|&t| producer(&groups, t).is_none_or(|g| g < p))
            };
            if free {
                groups[r].ops.clear();
                groups[p].riders.push(op);
            }
        }
    }
    groups.retain(|g| !g.ops.is_empty());
    groups
}
