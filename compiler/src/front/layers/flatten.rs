//! `flatten`: an image or a whole sequence as one vector (row-major, channels outermost).

use super::args::Args;
use super::{Arity, Gain, Layer, LayerSpec, ShapeError, needs_features};
use crate::ir::ops::TensorId;
use crate::ir::shape::Shape;
use crate::passes::lower::Lower;
use crate::support::diagnostic::Diagnostic;

pub static SPEC: LayerSpec = LayerSpec {
    name: "flatten",
    doc: "reshape to a vector, channels outermost",
    shape_rule: "[c, h, w] → [c·h·w]; seq[t, n] → [t·n]; [n] → [n]",
    arity: Arity::One,
    gain: Gain::Other,
    args: &[],
    build,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Flatten;

fn build(_: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Flatten))
}

impl Layer for Flatten {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        match inputs[0] {
            Shape::Tokens { .. } => Err(needs_features("flatten", &inputs[0])),
            ref s => Ok(Shape::Vector { n: s.elements() }),
        }
    }

    fn lower(&self, _: &mut Lower<'_>, inputs: &[TensorId], _: &[Shape], _: &Shape) -> TensorId {
        inputs[0] // the same values, read as a vector
    }
}
