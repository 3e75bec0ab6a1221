//! `global_avgpool`: the mean of each channel over the whole image, flattened.

use super::args::Args;
use super::{Arity, Gain, Layer, LayerSpec, ShapeError, needs_image};
use crate::ir::ops::{Op, TensorId};
use crate::ir::shape::Shape;
use crate::passes::lower::{Lower, batched};
use crate::support::diagnostic::Diagnostic;

pub static SPEC: LayerSpec = LayerSpec {
    name: "global_avgpool",
    doc: "mean of each channel over all positions",
    shape_rule: "[c, h, w] → [c]",
    arity: Arity::One,
    gain: Gain::Other,
    args: &[],
    build,
};

#[derive(Debug, Clone, PartialEq)]
pub struct GlobalAvgPool;

fn build(_: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(GlobalAvgPool))
}

impl Layer for GlobalAvgPool {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        match inputs[0] {
            Shape::Image { c, .. } => Ok(Shape::Vector { n: c }),
            ref other => Err(needs_image("global_avgpool", other)),
        }
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], shapes: &[Shape], output: &Shape) -> TensorId {
        let Shape::Image { c, h, w } = shapes[0] else {
            unreachable!("checked: global_avgpool reads images")
        };
        let op = Op::GlobalAvgPool { n: cx.batch(), c: c as usize, hw: (h * w) as usize };
        cx.op(op, vec![inputs[0]], batched(cx.batch(), output))
    }
}
