//! `dense`: a fully connected layer, as PyTorch's `Linear`. On a sequence it applies to
//! every time step with shared weights.

use super::args::{ArgSpec, ArgType, ArgValue, Args};
use super::{Arity, Gain, Layer, LayerSpec, ParamInit, ParamRole, ParamSpec, ShapeError, needs_features};
use crate::ir::init::Init;
use crate::ir::ops::{Layout, Op, TensorId};
use crate::ir::shape::Shape;
use crate::passes::lower::{Lower, batched};
use crate::support::diagnostic::Diagnostic;

pub static SPEC: LayerSpec = LayerSpec {
    name: "dense",
    doc: "fully connected layer (every step of a sequence shares the weights)",
    shape_rule: "[n] → [out]; seq[t, n] → seq[t, out]",
    arity: Arity::One,
    gain: Gain::Other,
    args: &[
        ArgSpec::required("out", ArgType::Int, "number of output features"),
        ArgSpec::named("bias", ArgType::Bool, ArgValue::Bool(true), "add a learnt bias per output"),
        ArgSpec::optional(
            "init",
            ArgType::Init,
            "weight initialiser (default: from the activation that follows)",
        ),
    ],
    build,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    pub out: u64,
    pub bias: bool,
    pub init: Option<Init>,
}

fn build(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Dense { out: args.int_at_least("out", 1), bias: args.bool("bias"), init: args.init("init") }))
}

impl Dense {
    fn in_features(input: &Shape) -> u64 {
        input.channels().unwrap_or(0)
    }
}

impl Layer for Dense {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        match inputs[0] {
            Shape::Vector { .. } => Ok(Shape::Vector { n: self.out }),
            Shape::Seq { steps, .. } => Ok(Shape::Seq { steps, features: self.out }),
            Shape::Image { c, h, w } => Err(ShapeError::new(
                format!("`dense` needs a vector, found an image [{c}, {h}, {w}]"),
                format!("input is [{c}, {h}, {w}]"),
            )
            .help(format!(
                "insert `flatten` before `dense` (giving [{}]) or use `global_avgpool` (giving [{c}])",
                c * h * w
            ))),
            ref other => Err(needs_features("dense", other)),
        }
    }

    fn params(&self, inputs: &[Shape]) -> Vec<ParamSpec> {
        let n = Dense::in_features(&inputs[0]);
        let mut ps = vec![ParamSpec::weight("weight", vec![self.out, n], self.init)];
        if self.bias {
            ps.push(ParamSpec {
                name: "bias",
                dims: vec![self.out],
                role: ParamRole::Trainable,
                init: ParamInit::Fixed(Init::Zeros),
            });
        }
        ps
    }

    fn macs(&self, inputs: &[Shape], output: &Shape) -> Option<u64> {
        output.elements().checked_mul(Dense::in_features(&inputs[0]))
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], shapes: &[Shape], output: &Shape) -> TensorId {
        // Rows are examples, or every step of every sequence.
        let rows = cx.batch() * (output.elements() / self.out) as usize;
        let (k, n) = (Dense::in_features(&shapes[0]) as usize, self.out as usize);
        let weight = cx.param(0, Layout::Transposed);
        let dims = batched(cx.batch(), output);
        let y = cx.op(Op::MatMul { m: rows, k, n, ta: false }, vec![inputs[0], weight], dims.clone());
        if !self.bias {
            return y;
        }
        let bias = cx.param(1, Layout::Same);
        cx.op(Op::AddChannel { outer: rows, channels: n, inner: 1 }, vec![y, bias], dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_per_time_step() {
        let l = Dense { out: 65, bias: true, init: None };
        let x = Shape::Seq { steps: 64, features: 256 };
        let y = l.infer(&[x]).unwrap();
        assert_eq!(y, Shape::Seq { steps: 64, features: 65 });
        assert_eq!(l.params(&[x])[0].dims, vec![65, 256]);
        assert_eq!(l.macs(&[x], &y), Some(64 * 65 * 256));
    }

    #[test]
    fn suggests_flatten_for_images() {
        let e = Dense { out: 10, bias: true, init: None }
            .infer(&[Shape::Image { c: 16, h: 5, w: 5 }])
            .unwrap_err();
        assert!(e.help.unwrap().contains("[400]"));
    }
}
