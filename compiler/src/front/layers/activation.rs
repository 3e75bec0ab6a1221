//! Element-wise activations: `relu`, `leaky_relu`, `tanh`, `sigmoid`.

use super::args::{ArgSpec, ArgType, ArgValue, Args};
use super::{Arity, Gain, Layer, LayerSpec, ShapeError, needs_features};
use crate::ir::ops::{Op, TensorId, UnaryFn};
use crate::ir::shape::Shape;
use crate::passes::lower::{Lower, batched};
use crate::support::diagnostic::Diagnostic;

const RULE: &str = "any feature shape → the same shape";

pub static RELU: LayerSpec = LayerSpec {
    name: "relu",
    doc: "max(x, 0)",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Rectifier,
    args: &[],
    build: build_relu,
};

pub static LEAKY_RELU: LayerSpec = LayerSpec {
    name: "leaky_relu",
    doc: "x if x > 0, else slope·x",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Rectifier,
    args: &[ArgSpec::named("slope", ArgType::Float, ArgValue::Float(0.01), "slope for negative inputs")
        .positional()],
    build: build_leaky,
};

pub static TANH: LayerSpec = LayerSpec {
    name: "tanh",
    doc: "hyperbolic tangent",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Other,
    args: &[],
    build: build_tanh,
};

pub static SIGMOID: LayerSpec = LayerSpec {
    name: "sigmoid",
    doc: "1 / (1 + e^−x)",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Other,
    args: &[],
    build: build_sigmoid,
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu { slope: f64 },
    Tanh,
    Sigmoid,
}

fn build_relu(_: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Activation::Relu))
}

fn build_leaky(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Activation::LeakyRelu { slope: args.float_in("slope", 0.0, 1.0, false) }))
}

fn build_tanh(_: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Activation::Tanh))
}

fn build_sigmoid(_: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Activation::Sigmoid))
}

impl Activation {
    fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
        }
    }
}

impl Layer for Activation {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        match inputs[0] {
            Shape::Tokens { .. } => Err(needs_features(self.name(), &inputs[0])),
            s => Ok(s),
        }
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], _: &[Shape], output: &Shape) -> TensorId {
        let f = match *self {
            Activation::Relu => UnaryFn::Relu,
            Activation::LeakyRelu { slope } => UnaryFn::LeakyRelu(slope as f32),
            Activation::Tanh => UnaryFn::Tanh,
            Activation::Sigmoid => UnaryFn::Sigmoid,
        };
        let len = cx.batch() * output.elements() as usize;
        cx.op(Op::Unary { len, f }, vec![inputs[0]], batched(cx.batch(), output))
    }
}
