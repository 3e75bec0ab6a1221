//! One backward rule per op: given the gradient `dy` of an op's output, the gradients of
//! its inputs that need one, as new ops.

use super::{AutodiffError, Grad, Piece};
use crate::ir::ops::elementwise::{Derivative, Source};
use crate::ir::ops::{Op, OpNode, Origin, Recurrence, Role, TensorId};

/// Emits the backward ops of `node` for output gradient `dy`; `needs[t]` says whether
/// tensor `t` wants a gradient.
pub(super) fn backward(
    g: &mut Grad<'_>,
    node: &OpNode,
    dy: TensorId,
    needs: &[bool],
) -> Result<(), AutodiffError> {
    let want = |i: usize| needs[node.inputs[i].0 as usize];
    let x = |i: usize| node.inputs[i];
    let dims = |g: &Grad<'_>, t: TensorId| g.graph.tensor(t).dims.clone();
    // The gradient of input `i` computed by `op` from `inputs`.
    let grad_of = |g: &mut Grad<'_>, i: usize, op: Op, inputs: Vec<TensorId>| {
        let t = x(i);
        let d = dims(g, t);
        let grad = g.gradient(op, inputs, t, d);
        g.accumulate(t, grad);
    };
    match node.op {
        Op::Conv2d { win, k, groups } => {
            if want(0) {
                grad_of(g, 0, Op::Conv2dBackwardData { win, k, groups }, vec![dy, x(1)]);
            }
            if want(1) {
                let parts = g.weight_parts(&win, groups);
                if parts == 1 {
                    grad_of(g, 1, Op::Conv2dBackwardWeight { win, k, groups, parts }, vec![dy, x(0)]);
                } else {
                    let w = x(1);
                    let n = format!("d {} (parts)", g.graph.tensor(w).name);
                    let mut dims = vec![parts];
                    dims.extend(&g.graph.tensor(w).dims);
                    let op = Op::Conv2dBackwardWeight { win, k, groups, parts };
                    let partial = g.op_for(op, vec![dy, x(0)], &n, dims, Origin::GradientOf(w));
                    let len = g.graph.tensor(w).len();
                    grad_of(g, 1, Op::SumParts { parts, len }, vec![partial]);
                }
            }
        }
        Op::Pool2d { win, reduce } => {
            if want(0) {
                grad_of(g, 0, Op::Pool2dBackward { win, reduce }, vec![dy, x(0)]);
            }
        }
        Op::GlobalAvgPool { n, c, hw } => {
            if want(0) {
                let op = Op::BroadcastChannel { outer: n, channels: c, inner: hw, scale: 1.0 / hw as f32 };
                grad_of(g, 0, op, vec![dy]);
            }
        }
        Op::MatMul { m, k, n, ta: false } => {
            // y = x · w: dw = xᵀ · dy (the left operand read transposed), dx = dy · wᵀ
            // (wᵀ materialised: the product reads its right operand by rows). dx comes
            // last so that the activation's backward op that reads it next can join its
            // product's epilogue.
            if want(1) {
                grad_of(g, 1, Op::MatMul { m: k, k: m, n, ta: true }, vec![x(0), dy]);
            }
            if want(0) {
                let wt = g.transposed(x(1), k, n);
                grad_of(g, 0, Op::MatMul { m, k: n, n: k, ta: false }, vec![dy, wt]);
            }
        }
        Op::AddChannel { outer, channels, inner } => {
            if want(0) {
                g.accumulate(x(0), dy);
            }
            if want(1) {
                grad_of(g, 1, Op::ChannelSum { outer, channels, inner }, vec![dy]);
            }
        }
        Op::ScaleShiftChannel { outer, channels, inner } => {
            batchnorm(g, node, dy, needs, (outer, channels, inner))?
        }
        Op::Elementwise { len, ref f } => {
            for i in 0..node.inputs.len() {
                if !want(i) {
                    continue;
                }
                match f.derivative(i) {
                    Derivative::Zero => {}
                    Derivative::Same => g.accumulate(x(i), dy),
                    Derivative::Program(df, sources) => {
                        let mut inputs = vec![dy];
                        inputs.extend(sources.iter().map(|s| match *s {
                            Source::Output => node.output,
                            Source::Input(j) => x(j),
                        }));
                        grad_of(g, i, Op::Elementwise { len, f: df }, inputs);
                    }
                }
            }
        }
        Op::Fill { .. } => {}
        Op::Softmax { rows, cols } => {
            if want(0) {
                grad_of(g, 0, Op::SoftmaxBackward { rows, cols }, vec![dy, node.output]);
            }
        }
        Op::Lrn { n, c, hw, size, alpha, beta, k } => {
            if want(0) {
                grad_of(g, 0, Op::LrnBackward { n, c, hw, size, alpha, beta, k }, vec![dy, x(0)]);
            }
        }
        Op::Concat { outer, ref inners } => {
            let total: usize = inners.iter().sum();
            let mut offset = 0;
            for (i, &len) in inners.iter().enumerate() {
                if want(i) {
                    grad_of(g, i, Op::Slice { outer, total, offset, len }, vec![dy]);
                }
                offset += len;
            }
        }
        Op::Slice { outer, total, offset, len } => {
            if want(0) {
                g.accumulate_piece(x(0), Piece { outer, total, offset, len, grad: dy });
            }
        }
        Op::Embedding { count, vocab, dim } => {
            if want(1) {
                grad_of(g, 1, Op::EmbeddingBackward { count, vocab, dim }, vec![x(0), dy]);
            }
        }
        Op::Dropout { len, p } => {
            if want(0) {
                grad_of(g, 0, Op::DropoutBackward { len, p }, vec![dy, x(1)]);
            }
        }
        Op::Recurrent(r) if r.train => recurrent(g, node, dy, needs, r),
        // No rule, stated op by op so that a new op must say whether it has one: the
        // inference-only forms training lowers otherwise (batch-norm folded from running
        // statistics, a recurrence that saved nothing), the batch statistics whose gradient the
        // batch-norm rule carries, and the ops automatic differentiation itself adds
        // (backward ops, losses, the update).
        Op::BatchNormFold { .. }
        | Op::Recurrent(_)
        | Op::ChannelMoments { .. }
        | Op::BatchNormFoldTrain { .. }
        | Op::UpdateRunning { .. }
        | Op::MatMul { ta: true, .. }
        | Op::Conv2dBackwardData { .. }
        | Op::Conv2dBackwardWeight { .. }
        | Op::SumParts { .. }
        | Op::Pool2dBackward { .. }
        | Op::BroadcastChannel { .. }
        | Op::ChannelSum { .. }
        | Op::Transpose { .. }
        | Op::SoftmaxBackward { .. }
        | Op::LrnBackward { .. }
        | Op::EmbeddingBackward { .. }
        | Op::DropoutBackward { .. }
        | Op::RecurrentBackward(_)
        | Op::BatchNormBackwardReduce { .. }
        | Op::BatchNormBackwardInput { .. }
        | Op::Copy { .. }
        | Op::SoftmaxCrossEntropy { .. }
        | Op::MeanSquaredError { .. }
        | Op::SumSquares { .. }
        | Op::Update { .. } => return Err(AutodiffError::NoRule(node.op.name().to_string())),
    }
    Ok(())
}

/// Batch-norm with the batch's statistics: `y = x · scale + shift` where
/// `[scale, shift] = fold(γ, β, moments(x))`. The gradient flows through the statistics
/// too, so the rule is the layer's, not the affine op's.
fn batchnorm(
    g: &mut Grad<'_>,
    node: &OpNode,
    dy: TensorId,
    needs: &[bool],
    (outer, channels, inner): (usize, usize, usize),
) -> Result<(), AutodiffError> {
    let (x, folded) = (node.inputs[0], node.inputs[1]);
    let fold = g.producer(folded).cloned();
    let (gamma, beta, moments, eps) = match fold {
        Some(OpNode { op: Op::BatchNormFoldTrain { eps, .. }, inputs, .. }) => {
            (inputs[0], inputs[1], inputs[2], eps)
        }
        _ => return Err(AutodiffError::NoRule("scale_shift_channel".into())),
    };
    let want = |t: TensorId| needs[t.0 as usize];
    let reduced = g.gradient(
        Op::BatchNormBackwardReduce { outer, channels, inner, eps },
        vec![dy, x, moments],
        folded,
        vec![2, channels],
    );
    for (param, offset) in [(beta, 0), (gamma, channels)] {
        if want(param) {
            let grad = g.gradient(
                Op::Slice { outer: 1, total: 2 * channels, offset, len: channels },
                vec![reduced],
                param,
                vec![channels],
            );
            g.accumulate(param, grad);
        }
    }
    if want(x) {
        let dims = g.graph.tensor(x).dims.clone();
        let op = Op::BatchNormBackwardInput { outer, channels, inner, eps };
        let dx = g.gradient(op, vec![dy, x, moments, gamma, reduced], x, dims);
        g.accumulate(x, dx);
    }
    Ok(())
}

/// A recurrent layer: one op runs backpropagation through time, step by step, to the
/// gradients of every step's projections; the weights', biases' and input's gradients
/// are then products and sums over all steps at once, as large as the forward pass's
/// input projection.
fn recurrent(g: &mut Grad<'_>, node: &OpNode, dy: TensorId, needs: &[bool], r: Recurrence) {
    let want = |i: usize| node.inputs.get(i).is_some_and(|t| needs[t.0 as usize]);
    let x = |i: usize| node.inputs[i];
    let (rows, gh) = (r.n * r.t, r.cell.gates() * r.h);
    let (states, saved) = (node.aux[0], node.aux[1]);
    let w_hh_t = g.transposed(x(2), r.h, gh);
    let name = format!("d {}", g.graph.tensor(node.output).name);
    let inputs = vec![dy, states, saved, w_hh_t];
    let dp = g.op_for(
        Op::RecurrentBackward(r),
        inputs,
        &format!("{name} (input projections)"),
        vec![r.n, r.t, gh],
        Origin::Named,
    );
    let dq = if r.cell.step().splits() {
        let dq = g.tensor(&format!("{name} (hidden projections)"), vec![r.n, r.t, gh], Role::Activation);
        g.graph.ops.last_mut().expect("just added").aux.push(dq);
        dq
    } else {
        dp
    };
    let grad_of = |g: &mut Grad<'_>, i: usize, op: Op, inputs: Vec<TensorId>| {
        let t = x(i);
        let dims = g.graph.tensor(t).dims.clone();
        let grad = g.gradient(op, inputs, t, dims);
        g.accumulate(t, grad);
    };
    if want(1) {
        grad_of(g, 1, Op::MatMul { m: r.f, k: rows, n: gh, ta: true }, vec![x(0), dp]);
    }
    if want(2) {
        grad_of(g, 2, Op::MatMul { m: r.h, k: rows, n: gh, ta: true }, vec![states, dq]);
    }
    // The biases' gradients: column sums, one for both when the projections' gradients
    // are the same.
    let mut sums: Vec<(TensorId, TensorId)> = Vec::new();
    for (i, d) in [(3, dp), (4, dq)] {
        if want(i) {
            let sum = match sums.iter().find(|(of, _)| *of == d) {
                Some(&(_, sum)) => sum,
                None => {
                    let op = Op::ChannelSum { outer: rows, channels: gh, inner: 1 };
                    let sum = g.gradient(op, vec![d], x(i), vec![gh]);
                    sums.push((d, sum));
                    sum
                }
            };
            g.accumulate(x(i), sum);
        }
    }
    if want(0) {
        let w_ih_t = g.transposed(x(1), r.f, gh);
        grad_of(g, 0, Op::MatMul { m: rows, k: gh, n: r.f, ta: false }, vec![dp, w_ih_t]);
    }
}
