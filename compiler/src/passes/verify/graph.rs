//! Checks of the tensor graph: ids in range, views inside their blocks, inputs defined
//! before use, and every op's fields agreeing with the sizes of its tensors.

use super::{VerifyError, product};
use crate::ir::ops::{Hyper, Op, OpNode, Role, TensorGraph, TensorId};

/// What an op needs of one of its tensors.
#[derive(Clone, Copy)]
enum Need {
    Exact(usize),
    /// A tensor read from an offset (`copy`): at least this many elements.
    AtLeast(usize),
}

/// The sizes an op's fields give its inputs, output and auxiliary outputs.
struct Signature {
    inputs: Vec<Need>,
    output: usize,
    aux: Vec<usize>,
}

/// Checks `graph`'s structure and every op's shapes.
pub fn graph(graph: &TensorGraph) -> Result<(), VerifyError> {
    let count = graph.tensors.len();
    let in_range = |what: &'static str, t: TensorId| {
        if (t.0 as usize) < count {
            Ok(())
        } else {
            Err(VerifyError::GraphTensorRange { what, tensor: t.0, count })
        }
    };
    for &t in &graph.inputs {
        in_range("an input", t)?;
    }
    in_range("the output", graph.output)?;
    for (i, t) in graph.tensors.iter().enumerate() {
        if let Some((base, offset)) = t.view {
            in_range("a view's block", base)?;
            let block = graph.tensor(base);
            let fits = offset.checked_add(t.len()).is_some_and(|end| end <= block.len());
            if !fits || block.view.is_some() {
                return Err(VerifyError::View {
                    tensor: i as u32,
                    base: base.0,
                    offset,
                    len: t.len(),
                    block: block.len(),
                });
            }
        }
    }
    // Everything not computed by an op is there before the first one runs.
    let mut defined: Vec<bool> = graph.tensors.iter().map(|t| !matches!(t.role, Role::Activation)).collect();
    for &t in &graph.inputs {
        defined[t.0 as usize] = true;
    }
    for (index, node) in graph.ops.iter().enumerate() {
        let name = node.op.name();
        for &t in node.inputs.iter().chain([&node.output]).chain(&node.aux) {
            if t.0 as usize >= count {
                return Err(VerifyError::TensorRange { op: index, name: name.into(), tensor: t.0, count });
            }
        }
        for &t in &node.inputs {
            if !defined[t.0 as usize] {
                return Err(VerifyError::Undefined { op: index, name: name.into(), tensor: t.0 });
            }
        }
        shapes(graph, index, node)?;
        for &t in [&node.output].into_iter().chain(&node.aux) {
            defined[t.0 as usize] = true;
        }
    }
    Ok(())
}

/// Compares the op's fields with its tensors' sizes.
fn shapes(graph: &TensorGraph, index: usize, node: &OpNode) -> Result<(), VerifyError> {
    let name = node.op.name().to_string();
    let fields = |message: String| VerifyError::Fields { op: index, name: name.clone(), message };
    let sig = signature(&node.op).map_err(fields)?;
    if node.inputs.len() != sig.inputs.len() {
        return Err(VerifyError::Arity {
            op: index,
            name: name.clone(),
            expected: sig.inputs.len(),
            actual: node.inputs.len(),
        });
    }
    if node.aux.len() != sig.aux.len() {
        return Err(VerifyError::AuxArity {
            op: index,
            name: name.clone(),
            expected: sig.aux.len(),
            actual: node.aux.len(),
        });
    }
    let wrong = |slot: String, t: TensorId, expected: usize| VerifyError::Shape {
        op: index,
        name: name.clone(),
        slot,
        tensor: t.0,
        expected,
        actual: graph.tensor(t).len(),
    };
    for (i, (&t, need)) in node.inputs.iter().zip(&sig.inputs).enumerate() {
        let len = graph.tensor(t).len();
        match *need {
            Need::Exact(n) if len != n => return Err(wrong(format!("input {i}"), t, n)),
            Need::AtLeast(n) if len < n => return Err(wrong(format!("input {i}"), t, n)),
            Need::Exact(_) | Need::AtLeast(_) => {}
        }
    }
    if graph.tensor(node.output).len() != sig.output {
        return Err(wrong("the output".into(), node.output, sig.output));
    }
    for (i, (&t, &n)) in node.aux.iter().zip(&sig.aux).enumerate() {
        if graph.tensor(t).len() != n {
            return Err(wrong(format!("auxiliary output {i}"), t, n));
        }
    }
    Ok(())
}

/// The sizes an op's fields imply, or why its fields contradict each other. Every op is
/// listed: a new op is a build error here until its shapes are stated.
fn signature(op: &Op) -> Result<Signature, String> {
    let p = |factors: &[usize]| product(factors).ok_or_else(|| format!("the sizes {factors:?} overflow"));
    let exact = |sizes: &[usize]| sizes.iter().map(|&n| Need::Exact(n)).collect::<Vec<_>>();
    let sig = |inputs: Vec<Need>, output: usize| Signature { inputs, output, aux: Vec::new() };
    let groups_divide = |c: usize, k: usize, groups: usize| {
        if groups == 0 || !c.is_multiple_of(groups) || !k.is_multiple_of(groups) {
            Err(format!("{groups} groups do not divide {c} input and {k} output channels"))
        } else {
            Ok(c / groups)
        }
    };
    Ok(match op {
        Op::Conv2d { win, k, groups } => {
            let per = groups_divide(win.c, *k, *groups)?;
            sig(
                exact(&[p(&[win.n, win.c, win.h, win.w])?, p(&[*k, per, win.kh, win.kw])?]),
                p(&[win.n, *k, win.oh, win.ow])?,
            )
        }
        Op::Pool2d { win, .. } => {
            sig(exact(&[p(&[win.n, win.c, win.h, win.w])?]), p(&[win.n, win.c, win.oh, win.ow])?)
        }
        Op::GlobalAvgPool { n, c, hw } => sig(exact(&[p(&[*n, *c, *hw])?]), p(&[*n, *c])?),
        Op::MatMul { m, k, n, .. } => sig(exact(&[p(&[*m, *k])?, p(&[*k, *n])?]), p(&[*m, *n])?),
        Op::AddChannel { outer, channels, inner } => {
            let len = p(&[*outer, *channels, *inner])?;
            sig(exact(&[len, *channels]), len)
        }
        Op::ScaleShiftChannel { outer, channels, inner } => {
            let len = p(&[*outer, *channels, *inner])?;
            sig(exact(&[len, p(&[2, *channels])?]), len)
        }
        Op::BatchNormFold { channels, .. } => sig(exact(&[*channels; 4]), p(&[2, *channels])?),
        Op::Elementwise { len, f } => {
            f.check()?;
            sig(exact(&vec![*len; f.inputs]), *len)
        }
        Op::Fill { len, .. } => sig(Vec::new(), *len),
        Op::Softmax { rows, cols } => {
            let len = p(&[*rows, *cols])?;
            sig(exact(&[len]), len)
        }
        Op::Lrn { n, c, hw, .. } => {
            let len = p(&[*n, *c, *hw])?;
            sig(exact(&[len]), len)
        }
        Op::Concat { outer, inners } => {
            let parts = inners.iter().map(|&i| p(&[*outer, i])).collect::<Result<Vec<_>, _>>()?;
            let total =
                inners.iter().try_fold(0usize, |a, &i| a.checked_add(i)).ok_or("the widths overflow")?;
            sig(exact(&parts), p(&[*outer, total])?)
        }
        Op::Embedding { count, vocab, dim } => {
            sig(exact(&[*count, p(&[*vocab, *dim])?]), p(&[*count, *dim])?)
        }
        Op::Recurrent(r) => {
            let gh = p(&[r.cell.gates(), r.h])?;
            let mut inputs = vec![p(&[r.n, r.t, r.f])?, p(&[r.f, gh])?, p(&[r.h, gh])?];
            if r.bias {
                inputs.extend([gh, gh]);
            }
            let output = if r.last { p(&[r.n, r.h])? } else { p(&[r.n, r.t, r.h])? };
            let aux = if r.train {
                vec![p(&[r.n, r.t, r.h])?, p(&[r.n, r.t, r.saved(), r.h])?]
            } else {
                Vec::new()
            };
            Signature { inputs: exact(&inputs), output, aux }
        }
        Op::RecurrentBackward(r) => {
            if !r.train {
                return Err("the forward op saved nothing to differentiate".into());
            }
            let gh = p(&[r.cell.gates(), r.h])?;
            let dy = if r.last { p(&[r.n, r.h])? } else { p(&[r.n, r.t, r.h])? };
            let states = p(&[r.n, r.t, r.h])?;
            let inputs = exact(&[dy, states, p(&[states, r.saved()])?, p(&[gh, r.h])?]);
            let output = p(&[r.n, r.t, gh])?;
            let aux = if r.cell.step().splits() { vec![output] } else { Vec::new() };
            Signature { inputs, output, aux }
        }
        Op::ChannelMoments { outer, channels, inner } => {
            sig(exact(&[p(&[*outer, *channels, *inner])?]), p(&[2, *channels])?)
        }
        Op::BatchNormFoldTrain { channels, .. } => {
            let two = p(&[2, *channels])?;
            sig(exact(&[*channels, *channels, two]), two)
        }
        Op::UpdateRunning { channels, .. } => sig(exact(&[p(&[2, *channels])?, *channels]), *channels),
        Op::Dropout { len, .. } | Op::DropoutBackward { len, .. } => sig(exact(&[*len, Hyper::LEN]), *len),
        Op::Conv2dBackwardData { win, k, groups } => {
            let per = groups_divide(win.c, *k, *groups)?;
            sig(
                exact(&[p(&[win.n, *k, win.oh, win.ow])?, p(&[*k, per, win.kh, win.kw])?]),
                p(&[win.n, win.c, win.h, win.w])?,
            )
        }
        Op::Conv2dBackwardWeight { win, k, groups, parts } => {
            let per = groups_divide(win.c, *k, *groups)?;
            if *parts == 0 || !win.n.is_multiple_of(*parts) {
                return Err(format!("{parts} parts do not divide a batch of {}", win.n));
            }
            sig(
                exact(&[p(&[win.n, *k, win.oh, win.ow])?, p(&[win.n, win.c, win.h, win.w])?]),
                p(&[*parts, *k, per, win.kh, win.kw])?,
            )
        }
        Op::SumParts { parts, len } => sig(exact(&[p(&[*parts, *len])?]), *len),
        Op::Pool2dBackward { win, .. } => {
            let x = p(&[win.n, win.c, win.h, win.w])?;
            sig(exact(&[p(&[win.n, win.c, win.oh, win.ow])?, x]), x)
        }
        Op::BroadcastChannel { outer, channels, inner, .. } => {
            sig(exact(&[p(&[*outer, *channels])?]), p(&[*outer, *channels, *inner])?)
        }
        Op::ChannelSum { outer, channels, inner } => {
            sig(exact(&[p(&[*outer, *channels, *inner])?]), *channels)
        }
        Op::Transpose { rows, cols } => {
            let len = p(&[*rows, *cols])?;
            sig(exact(&[len]), len)
        }
        Op::SoftmaxBackward { rows, cols } => {
            let len = p(&[*rows, *cols])?;
            sig(exact(&[len, len]), len)
        }
        Op::LrnBackward { n, c, hw, .. } => {
            let len = p(&[*n, *c, *hw])?;
            sig(exact(&[len, len]), len)
        }
        Op::Slice { outer, total, offset, len } => {
            if offset.checked_add(*len).is_none_or(|end| end > *total) {
                return Err(format!("columns {offset}..{offset}+{len} are not inside {total}"));
            }
            sig(exact(&[p(&[*outer, *total])?]), p(&[*outer, *len])?)
        }
        Op::EmbeddingBackward { count, vocab, dim } => {
            sig(exact(&[*count, p(&[*count, *dim])?]), p(&[*vocab, *dim])?)
        }
        Op::BatchNormBackwardReduce { outer, channels, inner, .. } => {
            let len = p(&[*outer, *channels, *inner])?;
            let two = p(&[2, *channels])?;
            sig(exact(&[len, len, two]), two)
        }
        Op::BatchNormBackwardInput { outer, channels, inner, .. } => {
            let len = p(&[*outer, *channels, *inner])?;
            let two = p(&[2, *channels])?;
            sig(exact(&[len, len, two, *channels, two]), len)
        }
        Op::Copy { offset, len } => {
            let end = offset.checked_add(*len).ok_or("the copied range overflows")?;
            sig(vec![Need::AtLeast(end)], *len)
        }
        Op::SoftmaxCrossEntropy { rows, cols } => {
            let len = p(&[*rows, *cols])?;
            Signature { inputs: exact(&[len, *rows]), output: len, aux: vec![2] }
        }
        Op::MeanSquaredError { rows, cols } => {
            let len = p(&[*rows, *cols])?;
            Signature { inputs: exact(&[len, len]), output: len, aux: vec![2] }
        }
        Op::SumSquares { len } => sig(exact(&[*len]), 1),
        Op::Update { len, rule } => {
            let states = rule.state().len();
            let mut inputs = exact(&[*len, *len, Hyper::LEN]);
            inputs.extend(exact(&vec![*len; states]));
            Signature { inputs, output: *len, aux: vec![*len; states] }
        }
    })
}
