//! `lrn`: local response normalisation across channels (AlexNet, GoogLeNet), as PyTorch's
//! `LocalResponseNorm`: b = a / (k + alpha/size · Σ a²)^beta over `size` neighbouring
//! channels.

use super::args::{ArgSpec, ArgType, ArgValue, Args};
use super::{Arity, Gain, Layer, LayerSpec, ShapeError, needs_image};
use crate::ir::ops::{Op, TensorId};
use crate::ir::shape::Shape;
use crate::passes::lower::{Lower, batched};
use crate::support::diagnostic::Diagnostic;

pub static SPEC: LayerSpec = LayerSpec {
    name: "lrn",
    doc: "local response normalisation across neighbouring channels",
    shape_rule: "[c, h, w] → [c, h, w]",
    arity: Arity::One,
    gain: Gain::Other,
    args: &[
        ArgSpec::named("size", ArgType::Int, ArgValue::Int(5), "number of neighbouring channels summed")
            .positional(),
        ArgSpec::named("alpha", ArgType::Float, ArgValue::Float(1e-4), "scale of the sum of squares"),
        ArgSpec::named("beta", ArgType::Float, ArgValue::Float(0.75), "exponent"),
        ArgSpec::named("k", ArgType::Float, ArgValue::Float(2.0), "additive constant (AlexNet uses 2)"),
    ],
    build,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Lrn {
    pub size: u64,
    pub alpha: f64,
    pub beta: f64,
    pub k: f64,
}

fn build(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Lrn {
        size: args.int_at_least("size", 1),
        alpha: args.float_in("alpha", 0.0, f64::INFINITY, false),
        beta: args.float_in("beta", 0.0, f64::INFINITY, false),
        k: args.float_in("k", 0.0, f64::INFINITY, false),
    }))
}

impl Layer for Lrn {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        match inputs[0] {
            s @ Shape::Image { .. } => Ok(s),
            ref other => Err(needs_image("lrn", other)),
        }
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], shapes: &[Shape], output: &Shape) -> TensorId {
        let Shape::Image { c, h, w } = shapes[0] else { unreachable!("checked: lrn reads images") };
        let op = Op::Lrn {
            n: cx.batch(),
            c: c as usize,
            hw: (h * w) as usize,
            size: self.size as usize,
            alpha: self.alpha as f32,
            beta: self.beta as f32,
            k: self.k as f32,
        };
        cx.op(op, vec![inputs[0]], batched(cx.batch(), output))
    }
}
