//! `global_avgpool`: the mean of each channel over the whole image, flattened.

use super::args::Args;
use super::{Arity, Layer, LayerSpec, ShapeError, needs_image};
use crate::diagnostic::Diagnostic;
use crate::shape::Shape;

pub static SPEC: LayerSpec = LayerSpec {
    name: "global_avgpool",
    doc: "mean of each channel over all positions",
    shape_rule: "[c, h, w] → [c]",
    arity: Arity::One,
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
}
