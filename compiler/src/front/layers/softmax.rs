//! `softmax`: normalised exponentials over the features of a vector, or of each step of a
//! sequence.

use super::args::Args;
use super::{Arity, Gain, Layer, LayerSpec, ShapeError, needs_features};
use crate::ir::ops::{Op, TensorId};
use crate::ir::shape::Shape;
use crate::passes::lower::{Lower, batched};
use crate::support::diagnostic::Diagnostic;

pub static SPEC: LayerSpec = LayerSpec {
    name: "softmax",
    doc: "exponentials normalised to sum to 1 over the features",
    shape_rule: "[n] → [n]; seq[t, n] → seq[t, n] (per step)",
    arity: Arity::One,
    gain: Gain::Other,
    args: &[],
    build,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Softmax;

fn build(_: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Softmax))
}

impl Layer for Softmax {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        match inputs[0] {
            s @ (Shape::Vector { .. } | Shape::Seq { .. }) => Ok(s),
            Shape::Image { c, h, w } => Err(ShapeError::new(
                format!("`softmax` needs a vector, found an image [{c}, {h}, {w}]"),
                format!("input is [{c}, {h}, {w}]"),
            )
            .help("flatten it or pool it to a vector first")),
            ref other => Err(needs_features("softmax", other)),
        }
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], _: &[Shape], output: &Shape) -> TensorId {
        let cols = output.channels().unwrap_or(1) as usize;
        let rows = cx.batch() * output.elements() as usize / cols;
        cx.op(Op::Softmax { rows, cols }, vec![inputs[0]], batched(cx.batch(), output))
    }
}
