//! `batchnorm`: batch normalisation per channel (images) or per feature (vectors,
//! sequences), with a learnt scale and shift and running statistics for inference.

use super::args::{ArgSpec, ArgType, ArgValue, Args};
use super::{Arity, Gain, Layer, LayerSpec, ParamRole, ParamSpec, ShapeError, needs_features};
use crate::ir::init::Init;
use crate::ir::ops::{Layout, Op, TensorId};
use crate::ir::shape::Shape;
use crate::passes::lower::{Lower, batched};
use crate::support::diagnostic::Diagnostic;

pub static SPEC: LayerSpec = LayerSpec {
    name: "batchnorm",
    doc: "normalise each channel over the batch, then scale and shift",
    shape_rule: "any feature shape → the same shape (statistics per channel or feature)",
    arity: Arity::One,
    gain: Gain::Transparent,
    args: &[
        ArgSpec::named("eps", ArgType::Float, ArgValue::Float(1e-5), "added to the variance"),
        ArgSpec::named(
            "momentum",
            ArgType::Float,
            ArgValue::Float(0.1),
            "weight of the newest batch in the running statistics",
        ),
    ],
    build,
};

#[derive(Debug, Clone, PartialEq)]
pub struct BatchNorm {
    pub eps: f64,
    pub momentum: f64,
}

fn build(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(BatchNorm {
        eps: args.float_in("eps", 0.0, f64::INFINITY, false),
        momentum: args.float_in("momentum", 0.0, 1.0, true),
    }))
}

impl Layer for BatchNorm {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        match inputs[0] {
            Shape::Tokens { .. } => Err(needs_features("batchnorm", &inputs[0])),
            s => Ok(s),
        }
    }

    fn params(&self, inputs: &[Shape]) -> Vec<ParamSpec> {
        let c = inputs[0].channels().unwrap_or(0);
        vec![
            ParamSpec::fixed("weight", vec![c], ParamRole::Trainable, Init::Ones),
            ParamSpec::fixed("bias", vec![c], ParamRole::Trainable, Init::Zeros),
            ParamSpec::fixed("running_mean", vec![c], ParamRole::Buffer, Init::Zeros),
            ParamSpec::fixed("running_var", vec![c], ParamRole::Buffer, Init::Ones),
        ]
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], shapes: &[Shape], output: &Shape) -> TensorId {
        let channels = shapes[0].channels().unwrap_or(0) as usize;
        let params: Vec<TensorId> = (0..4).map(|i| cx.param(i, Layout::Same)).collect();
        // Images normalise per channel over positions; vectors and sequences per feature.
        let (outer, inner) = match shapes[0] {
            Shape::Image { h, w, .. } => (cx.batch(), (h * w) as usize),
            other => (cx.batch() * other.elements() as usize / channels, 1),
        };
        let eps = self.eps as f32;
        let fold = if cx.training() {
            // The batch's own statistics normalise it; the running ones move towards them.
            let moments =
                cx.op(Op::ChannelMoments { outer, channels, inner }, vec![inputs[0]], vec![2, channels]);
            let momentum = self.momentum as f32;
            let count = outer * inner;
            for (variance, running) in [(false, params[2]), (true, params[3])] {
                let op = Op::UpdateRunning { channels, momentum, variance, count };
                cx.op_in_place(op, vec![moments, running], running);
            }
            cx.op(
                Op::BatchNormFoldTrain { channels, eps },
                vec![params[0], params[1], moments],
                vec![2, channels],
            )
        } else {
            cx.op(Op::BatchNormFold { channels, eps }, params, vec![2, channels])
        };
        let op = Op::ScaleShiftChannel { outer, channels, inner };
        cx.op(op, vec![inputs[0], fold], batched(cx.batch(), output))
    }
}
