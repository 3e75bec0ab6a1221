//! `concat`: joins tensors along channels (images) or features (vectors, sequences), as
//! inception modules do.

use super::args::Args;
use super::{Arity, Gain, Layer, LayerSpec, ShapeError};
use crate::ir::ops::{Op, TensorId};
use crate::ir::shape::Shape;
use crate::passes::lower::{Lower, batched};
use crate::support::diagnostic::Diagnostic;

pub static SPEC: LayerSpec = LayerSpec {
    name: "concat",
    doc: "join along channels (images) or features (vectors, sequences)",
    shape_rule: "[c₁, h, w], [c₂, h, w], … → [c₁ + c₂ + …, h, w]; likewise for [n] and seq[t, n]",
    arity: Arity::AtLeast(2),
    gain: Gain::Transparent,
    args: &[],
    build,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Concat;

fn build(_: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Concat))
}

impl Layer for Concat {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let mut out = inputs[0];
        for (i, s) in inputs.iter().enumerate().skip(1) {
            out = match (out, *s) {
                (Shape::Image { c, h, w }, Shape::Image { c: c2, h: h2, w: w2 }) if (h, w) == (h2, w2) => {
                    Shape::Image { c: c.saturating_add(c2), h, w }
                }
                (Shape::Vector { n }, Shape::Vector { n: n2 }) => Shape::Vector { n: n.saturating_add(n2) },
                (Shape::Seq { steps, features }, Shape::Seq { steps: s2, features: f2 }) if steps == s2 => {
                    Shape::Seq { steps, features: features.saturating_add(f2) }
                }
                _ => return Err(mismatch(inputs[0], *s, i)),
            };
        }
        if let Shape::Tokens { .. } = out {
            return Err(
                ShapeError::new("`concat` cannot join token ids", "token ids").help("embed them first")
            );
        }
        Ok(out)
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], shapes: &[Shape], output: &Shape) -> TensorId {
        // Joined along the outermost per-example axis of images and vectors, and along
        // features within each step of a sequence.
        let (outer, inners): (usize, Vec<usize>) = match output {
            Shape::Seq { steps, .. } => (
                cx.batch() * *steps as usize,
                shapes.iter().map(|s| s.channels().unwrap_or(0) as usize).collect(),
            ),
            _ => (cx.batch(), shapes.iter().map(|s| s.elements() as usize).collect()),
        };
        cx.op(Op::Concat { outer, inners }, inputs.to_vec(), batched(cx.batch(), output))
    }
}

fn mismatch(first: Shape, other: Shape, i: usize) -> ShapeError {
    let (message, help) = match (first, other) {
        (Shape::Image { h, w, .. }, Shape::Image { h: h2, w: w2, .. }) => (
            format!("cannot concat {first} and {other}: height and width differ ({h}×{w} vs {h2}×{w2})"),
            "concat joins channels; every input needs the same height and width (check strides and padding)",
        ),
        (Shape::Seq { steps, .. }, Shape::Seq { steps: s2, .. }) => (
            format!("cannot concat {first} and {other}: sequence lengths differ ({steps} vs {s2})"),
            "every sequence joined must have the same number of steps",
        ),
        _ => (
            format!("cannot concat {} {first} and {} {other}", first.describe_kind(), other.describe_kind()),
            "every input must be the same kind of tensor",
        ),
    };
    ShapeError::new(message, "shapes do not line up").blame(vec![0, i]).help(help)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_channels() {
        let a = Shape::Image { c: 64, h: 28, w: 28 };
        let b = Shape::Image { c: 128, h: 28, w: 28 };
        assert_eq!(Concat.infer(&[a, b, a]).unwrap(), Shape::Image { c: 256, h: 28, w: 28 });
        let c = Shape::Image { c: 32, h: 14, w: 14 };
        assert_eq!(Concat.infer(&[a, b, c]).unwrap_err().blame, vec![0, 2]);
    }
}
