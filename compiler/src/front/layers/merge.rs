//! Element-wise merges of tensors of one shape: `add` (residual connections; `a + b` in
//! an expression), `sub` (differences; `a - b`) and `mul` (gating; `a * b`).

use super::args::Args;
use super::{Arity, Gain, Layer, LayerSpec, ShapeError, needs_features};
use crate::ir::ops::{Elementwise, Op, TensorId};
use crate::ir::shape::Shape;
use crate::passes::lower::{Lower, batched};
use crate::support::diagnostic::Diagnostic;

pub static ADD: LayerSpec = LayerSpec {
    name: "add",
    doc: "element-wise sum (residual connections); `a + b` means `add(a, b)`",
    shape_rule: "s, s, … → s (all inputs the same shape)",
    arity: Arity::AtLeast(2),
    gain: Gain::Transparent,
    args: &[],
    build: build_add,
};

pub static SUB: LayerSpec = LayerSpec {
    name: "sub",
    doc: "element-wise difference, the first input minus the others; `a - b` means `sub(a, b)`",
    shape_rule: "s, s, … → s (all inputs the same shape)",
    arity: Arity::AtLeast(2),
    gain: Gain::Other,
    args: &[],
    build: build_sub,
};

pub static MUL: LayerSpec = LayerSpec {
    name: "mul",
    doc: "element-wise product (gating); `a * b` means `mul(a, b)`",
    shape_rule: "s, s, … → s (all inputs the same shape)",
    arity: Arity::AtLeast(2),
    gain: Gain::Other,
    args: &[],
    build: build_mul,
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Merge {
    Add,
    Sub,
    Mul,
}

fn build_add(_: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Merge::Add))
}

fn build_sub(_: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Merge::Sub))
}

fn build_mul(_: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Merge::Mul))
}

impl Merge {
    fn name(self) -> &'static str {
        match self {
            Merge::Add => "add",
            Merge::Sub => "sub",
            Merge::Mul => "mul",
        }
    }

    /// The merge of `n` tensors, left to right.
    fn function(self, n: usize) -> Elementwise {
        match self {
            Merge::Add => Elementwise::add(n),
            Merge::Sub => {
                Elementwise::new("sub", n, |b, x| x[1..].iter().fold(x[0], |acc, &v| b.sub(acc, v)))
            }
            Merge::Mul => {
                Elementwise::new("mul", n, |b, x| x[1..].iter().fold(x[0], |acc, &v| b.mul(acc, v)))
            }
        }
    }
}

impl Layer for Merge {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        let first = inputs[0];
        if let Shape::Tokens { .. } = first {
            return Err(needs_features(self.name(), &first));
        }
        for (i, s) in inputs.iter().enumerate().skip(1) {
            if *s != first {
                let verb = match self {
                    Merge::Add => "add",
                    Merge::Sub => "subtract",
                    Merge::Mul => "multiply",
                };
                return Err(ShapeError::new(
                    format!("cannot {verb} {first} and {s}"),
                    "shapes differ".to_string(),
                )
                .blame(vec![0, i])
                .help(projection_hint(first, *s)));
            }
        }
        Ok(first)
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], _: &[Shape], output: &Shape) -> TensorId {
        let op =
            Op::Elementwise { len: cx.batch() * output.elements() as usize, f: self.function(inputs.len()) };
        cx.op(op, inputs.to_vec(), batched(cx.batch(), output))
    }
}

/// For two images, suggests the 1×1 convolution that maps the larger-resolution operand to
/// the other's shape (a ResNet projection shortcut).
fn projection_hint(a: Shape, b: Shape) -> String {
    match (a, b) {
        (Shape::Image { c: ca, h: ha, w: wa }, Shape::Image { c: cb, h: hb, w: wb }) => {
            let (from, to, (c, h, w)) =
                if ha >= hb { ("left", "right", (cb, hb, wb)) } else { ("right", "left", (ca, ha, wa)) };
            let (big_h, big_w) = if ha >= hb { (ha, wa) } else { (hb, wb) };
            if big_h % h == 0 && big_w % w == 0 && big_h / h == big_w / w {
                let s = big_h / h;
                let stride = if s > 1 { format!(", stride: {s}") } else { String::new() };
                format!(
                    "project the {from} operand with `conv({c}, 1{stride}, bias: false)` so that it matches the {to} one ([{c}, {h}, {w}])"
                )
            } else {
                "both operands must have the same channels, height and width".to_string()
            }
        }
        _ => "both operands must have the same shape".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_a_strided_projection() {
        let a = Shape::Image { c: 64, h: 16, w: 16 };
        let b = Shape::Image { c: 128, h: 8, w: 8 };
        let e = Merge::Add.infer(&[a, b]).unwrap_err();
        assert_eq!(e.message, "cannot add [64, 16, 16] and [128, 8, 8]");
        assert_eq!(e.blame, vec![0, 1]);
        assert!(e.help.unwrap().contains("conv(128, 1, stride: 2, bias: false)"));
    }

    /// `a − b − c` and its gradients: dy for the first input, −dy for the others.
    #[test]
    fn sub_subtracts_left_to_right() {
        use crate::ir::ops::elementwise::{Derivative, Source};
        let f = Merge::Sub.function(3);
        let x = [5.0f64, 1.5, 0.25];
        assert_eq!(f.eval(&x), 3.25);
        let dy = 0.7f64;
        for (wrt, want) in [(0, dy), (1, -dy), (2, -dy)] {
            let got = match f.derivative(wrt) {
                Derivative::Zero => 0.0,
                Derivative::Same => dy,
                Derivative::Program(df, sources) => {
                    let mut args = vec![dy];
                    args.extend(sources.iter().map(|s| match *s {
                        Source::Output => f.eval(&x),
                        Source::Input(j) => x[j],
                    }));
                    df.eval(&args)
                }
            };
            assert_eq!(got, want, "d/dx{wrt}");
        }
        let e = Merge::Sub.infer(&[Shape::Vector { n: 3 }, Shape::Vector { n: 4 }]).unwrap_err();
        assert_eq!(e.message, "cannot subtract [3] and [4]");
    }
}
