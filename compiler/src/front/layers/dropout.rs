//! `dropout(p)`: zeroes each value with probability `p` while training and scales the rest
//! by 1/(1−p) (inverted dropout), so inference is the identity.

use super::args::{ArgSpec, ArgType, ArgValue, Args};
use super::{Arity, Gain, Layer, LayerSpec, ShapeError, needs_features};
use crate::ir::ops::{Op, TensorId};
use crate::ir::shape::Shape;
use crate::passes::lower::Lower;
use crate::support::diagnostic::Diagnostic;

pub static SPEC: LayerSpec = LayerSpec {
    name: "dropout",
    doc: "randomly zero values while training (identity at inference)",
    shape_rule: "any shape → the same shape",
    arity: Arity::One,
    gain: Gain::Transparent,
    args: &[ArgSpec::named(
        "p",
        ArgType::Float,
        ArgValue::Float(0.5),
        "probability of dropping a value, in [0, 1)",
    )
    .positional()],
    build,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Dropout {
    pub p: f64,
}

fn build(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Dropout { p: args.float_in("p", 0.0, 1.0, false) }))
}

impl Layer for Dropout {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        match inputs[0] {
            Shape::Tokens { .. } => Err(needs_features("dropout", &inputs[0])),
            s => Ok(s),
        }
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], _: &[Shape], output: &Shape) -> TensorId {
        if !cx.training() || self.p == 0.0 {
            return inputs[0]; // inference: the identity
        }
        let dims = crate::passes::lower::batched(cx.batch(), output);
        let len = dims.iter().product();
        let hyper = cx.hyper();
        cx.op(Op::Dropout { len, p: self.p as f32 }, vec![inputs[0], hyper], dims)
    }
}
