//! Element-wise activations: `relu`, `leaky_relu`, `tanh`, `sigmoid`, `relu6`, `clamp`,
//! `hardswish`, `gelu`, `softplus`.
//!
//! An activation is its formula ([`Activation::function`]) written as an element-wise
//! program; everything else follows from it — the reference interpreter evaluates it,
//! scheduling fuses it into the producer's epilogue or a map, code generation emits its
//! primitives, and automatic differentiation derives its backward op. Adding one is a
//! `LayerSpec`, a variant with its formula and its line in [`ALL`], all in this file
//! (plus its tests, which `runtime/tests/kernels.rs` and the gradient checks run over
//! every entry of [`ALL`]).

use super::args::{ArgSpec, ArgType, ArgValue, Args};
use super::{Arity, Gain, Layer, LayerSpec, ShapeError, needs_features};
use crate::ir::ops::elementwise::{Builder, Cmp, V};
use crate::ir::ops::{Elementwise, Op, Prim, TensorId};
use crate::ir::shape::Shape;
use crate::passes::lower::{Lower, batched};
use crate::support::diagnostic::Diagnostic;

const RULE: &str = "any feature shape → the same shape";

/// Every activation, for the layer registry and for tests that check each one.
pub static ALL: &[&LayerSpec] =
    &[&RELU, &LEAKY_RELU, &TANH, &SIGMOID, &RELU6, &CLAMP, &HARDSWISH, &GELU, &SOFTPLUS];

pub static RELU: LayerSpec = LayerSpec {
    name: "relu",
    doc: "max(x, 0)",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Rectifier,
    args: &[],
    build: |_| Ok(Box::new(Activation::Relu)),
};

pub static LEAKY_RELU: LayerSpec = LayerSpec {
    name: "leaky_relu",
    doc: "x if x > 0, else slope·x",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Rectifier,
    args: &[ArgSpec::named("slope", ArgType::Float, ArgValue::Float(0.01), "slope for negative inputs")
        .positional()],
    build: |args| Ok(Box::new(Activation::LeakyRelu { slope: args.float_in("slope", 0.0, 1.0, false) })),
};

pub static TANH: LayerSpec = LayerSpec {
    name: "tanh",
    doc: "hyperbolic tangent",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Other,
    args: &[],
    build: |_| Ok(Box::new(Activation::Tanh)),
};

pub static SIGMOID: LayerSpec = LayerSpec {
    name: "sigmoid",
    doc: "1 / (1 + e^−x)",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Other,
    args: &[],
    build: |_| Ok(Box::new(Activation::Sigmoid)),
};

pub static RELU6: LayerSpec = LayerSpec {
    name: "relu6",
    doc: "min(max(x, 0), 6)",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Rectifier,
    args: &[],
    build: |_| Ok(Box::new(Activation::Relu6)),
};

pub static CLAMP: LayerSpec = LayerSpec {
    name: "clamp",
    doc: "min(max(x, min), max)",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Other,
    args: &[
        ArgSpec::required("min", ArgType::Float, "lower bound"),
        ArgSpec::required("max", ArgType::Float, "upper bound, above `min`"),
    ],
    build: build_clamp,
};

pub static HARDSWISH: LayerSpec = LayerSpec {
    name: "hardswish",
    doc: "x · relu6(x + 3) / 6",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Rectifier,
    args: &[],
    build: |_| Ok(Box::new(Activation::HardSwish)),
};

pub static GELU: LayerSpec = LayerSpec {
    name: "gelu",
    doc: "x · Φ(x) = x/2 · (1 + erf(x/√2)), PyTorch's exact form",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Rectifier,
    args: &[],
    build: |_| Ok(Box::new(Activation::Gelu)),
};

pub static SOFTPLUS: LayerSpec = LayerSpec {
    name: "softplus",
    doc: "ln(1 + e^(beta·x)) / beta, and x where beta·x > threshold (PyTorch's form)",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Other,
    args: &[
        ArgSpec::named("beta", ArgType::Float, ArgValue::Float(1.0), "sharpness, above 0"),
        ArgSpec::named(
            "threshold",
            ArgType::Float,
            ArgValue::Float(20.0),
            "beta·x above which softplus is x",
        ),
    ],
    build: build_softplus,
};

/// One instance of each activation (with arguments where it takes them), for tests that
/// check every activation: the reference against its formula, the derived backward op
/// against finite differences, generated code against the reference.
pub static EXAMPLES: &[Activation] = &[
    Activation::Relu,
    Activation::LeakyRelu { slope: 0.1 },
    Activation::Tanh,
    Activation::Sigmoid,
    Activation::Relu6,
    Activation::Clamp { min: -0.5, max: 1.5 },
    Activation::HardSwish,
    Activation::Gelu,
    Activation::Softplus { beta: 2.0, threshold: 5.0 },
];

/// Where the examples' derivatives jump (tests keep finite differences away from them).
pub static KINKS: &[f32] = &[-3.0, -0.5, 0.0, 1.5, 2.5, 3.0, 6.0];

/// The largest bound `clamp` takes: beyond it, f32 cannot hold the value.
const F32_MAX: f64 = f32::MAX as f64;

fn build_clamp(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    let min = args.float_in("min", -F32_MAX, F32_MAX, true);
    let max = args.float_in("max", -F32_MAX, F32_MAX, true);
    if args.in_range() && min >= max {
        let (lo, hi) = (crate::front::value::format_float(min), crate::front::value::format_float(max));
        return Err(args.error(
            "max",
            format!("`max` of `clamp` must be above `min` ({lo}), found {hi}"),
            format!("must be above {lo}"),
        ));
    }
    Ok(Box::new(Activation::Clamp { min: min as f32, max: max as f32 }))
}

fn build_softplus(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    let beta = args.float_in("beta", 0.0, F32_MAX, true);
    let threshold = args.float_in("threshold", -F32_MAX, F32_MAX, true);
    if args.in_range() && beta == 0.0 {
        return Err(args.error("beta", "`beta` of `softplus` must be above 0, found 0.0", "must be above 0"));
    }
    Ok(Box::new(Activation::Softplus { beta: beta as f32, threshold: threshold as f32 }))
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Activation {
    Relu,
    LeakyRelu { slope: f64 },
    Tanh,
    Sigmoid,
    Relu6,
    Clamp { min: f32, max: f32 },
    HardSwish,
    Gelu,
    Softplus { beta: f32, threshold: f32 },
}

impl Activation {
    pub fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Tanh => "tanh",
            Activation::Sigmoid => "sigmoid",
            Activation::Relu6 => "relu6",
            Activation::Clamp { .. } => "clamp",
            Activation::HardSwish => "hardswish",
            Activation::Gelu => "gelu",
            Activation::Softplus { .. } => "softplus",
        }
    }

    /// The formula, as PyTorch defines it.
    pub fn function(self) -> Elementwise {
        Elementwise::new(self.name(), 1, |b, x| {
            let x = x[0];
            match self {
                Activation::Relu => {
                    let zero = b.constant_value(0.0);
                    b.max(x, zero)
                }
                Activation::LeakyRelu { slope } => {
                    // A select rather than max(x, slope·x): the same for slopes below 1,
                    // and the derivative is then 1 or `slope` exactly.
                    let zero = b.constant_value(0.0);
                    let s = b.constant_value(slope as f32);
                    let scaled = b.mul(x, s);
                    b.select(Cmp::Gt, x, zero, x, scaled)
                }
                Activation::Tanh => b.prim(Prim::Tanh, x),
                Activation::Sigmoid => b.prim(Prim::Sigmoid, x),
                Activation::Relu6 => clamp(b, x, 0.0, 6.0),
                Activation::Clamp { min, max } => clamp(b, x, min, max),
                Activation::HardSwish => {
                    let three = b.constant_value(3.0);
                    let shifted = b.add(x, three);
                    let gate = clamp(b, shifted, 0.0, 6.0);
                    let product = b.mul(x, gate);
                    let six = b.constant_value(6.0);
                    b.div(product, six)
                }
                Activation::Gelu => {
                    let scale = b.constant_value(std::f32::consts::FRAC_1_SQRT_2);
                    let z = b.mul(x, scale);
                    let erf = b.prim(Prim::Erf, z);
                    let one = b.constant_value(1.0);
                    let cdf = b.add(one, erf);
                    let half = b.constant_value(0.5);
                    let halved = b.mul(x, half);
                    b.mul(halved, cdf)
                }
                Activation::Softplus { beta, threshold } => {
                    // With z = beta·x: (max(z, 0) + ln(1 + e^−|z|)) / beta, which cannot
                    // overflow; ln(1 + e) by Goldberg's log1p, u = 1 + e and
                    // ln(u) · e / (u − 1), which keeps e's precision where u rounds.
                    let beta_v = b.constant_value(beta);
                    let z = b.mul(x, beta_v);
                    let zero = b.constant_value(0.0);
                    let minus_z = b.sub(zero, z);
                    let minus_abs = b.min(z, minus_z);
                    let e = b.prim(Prim::Exp, minus_abs);
                    let one = b.constant_value(1.0);
                    let u = b.add(one, e);
                    let ln = b.prim(Prim::Log, u);
                    let scaled = b.mul(ln, e);
                    let rounded = b.sub(u, one);
                    let ratio = b.div(scaled, rounded);
                    let log1p = b.select(Cmp::Gt, u, one, ratio, e);
                    let positive = b.max(z, zero);
                    let sum = b.add(positive, log1p);
                    let soft = b.div(sum, beta_v);
                    let limit = b.constant_value(threshold);
                    b.select(Cmp::Gt, z, limit, x, soft)
                }
            }
        })
    }
}

/// `min(max(x, lo), hi)`.
fn clamp(b: &mut Builder, x: V, lo: f32, hi: f32) -> V {
    let lo = b.constant_value(lo);
    let hi = b.constant_value(hi);
    let low = b.max(x, lo);
    b.min(low, hi)
}

impl Layer for Activation {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        match inputs[0] {
            Shape::Tokens { .. } => Err(needs_features(self.name(), &inputs[0])),
            s => Ok(s),
        }
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], _: &[Shape], output: &Shape) -> TensorId {
        let len = cx.batch() * output.elements() as usize;
        cx.op(Op::Elementwise { len, f: self.function() }, vec![inputs[0]], batched(cx.batch(), output))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_activation_has_an_example() {
        let examples: Vec<&str> = EXAMPLES.iter().map(|a| a.name()).collect();
        let specs: Vec<&str> = ALL.iter().map(|s| s.name).collect();
        assert_eq!(examples, specs);
    }

    /// Each formula at a few points, against PyTorch's definitions in f64.
    #[test]
    fn formulas_match_their_definitions() {
        let erf = libm::erf;
        for &x in &[-7.0f64, -3.5, -3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 2.9, 3.0, 6.5] {
            let relu6 = x.clamp(0.0, 6.0);
            for (a, want) in [
                (Activation::Relu, x.max(0.0)),
                (Activation::LeakyRelu { slope: 0.1 }, if x > 0.0 { x } else { f64::from(0.1f32) * x }),
                (Activation::Tanh, x.tanh()),
                (Activation::Sigmoid, 1.0 / (1.0 + (-x).exp())),
                (Activation::Relu6, relu6),
                (Activation::Clamp { min: -0.5, max: 1.5 }, x.clamp(-0.5, 1.5)),
                (Activation::HardSwish, x * (x + 3.0).clamp(0.0, 6.0) / 6.0),
                (Activation::Gelu, 0.5 * x * (1.0 + erf(x * f64::from(std::f32::consts::FRAC_1_SQRT_2)))),
                (Activation::Softplus { beta: 2.0, threshold: 5.0 }, softplus(2.0, 5.0, x)),
                (Activation::Softplus { beta: 1.0, threshold: 20.0 }, softplus(1.0, 20.0, x)),
            ] {
                let got = a.function().eval(&[x]);
                assert!(
                    (got - want).abs() <= 1e-15 * want.abs().max(1.0),
                    "{}({x}) = {got}, not {want}",
                    a.name()
                );
            }
        }
    }

    /// PyTorch's definition, in f64.
    fn softplus(beta: f64, threshold: f64, x: f64) -> f64 {
        if beta * x > threshold { x } else { (beta * x).exp().ln_1p() / beta }
    }

    /// Far from zero, where ln(1 + e^z) loses everything to rounding when written plainly.
    #[test]
    fn softplus_keeps_its_precision_in_the_tails() {
        let f = Activation::Softplus { beta: 1.0, threshold: 20.0 }.function();
        for x in [-80.0f64, -30.0, -17.0, 15.0, 19.9, 25.0, 1e4] {
            let (got, want) = (f.eval(&[x]), softplus(1.0, 20.0, x));
            assert!((got - want).abs() <= 1e-15 * want.abs(), "softplus({x}) = {got:e}, not {want:e}");
            let got = f.eval(&[x as f32]);
            assert!(
                (f64::from(got) - want).abs() <= 4.0 * f64::from(f32::EPSILON) * want.abs(),
                "f32 softplus({x}) = {got:e}"
            );
        }
    }

    #[test]
    fn softplus_needs_a_positive_beta() {
        let model = crate::compile_str("t.net", "network n(x: [4]) {\n    x |> softplus(beta: 0)\n}\n", None);
        let Err(crate::Error::Invalid { diagnostics, .. }) = model else {
            panic!("softplus(beta: 0) compiled")
        };
        assert!(
            diagnostics[0].message.contains("`beta` of `softplus` must be above 0"),
            "{:?}",
            diagnostics[0]
        );
        // Pointing at `beta: 0`.
        let span = diagnostics[0].primary.as_ref().unwrap().span;
        assert!(span.start >= 38 && span.end <= 45, "{span:?}");
    }

    #[test]
    fn clamp_needs_bounds_in_order() {
        let model = crate::compile_str("t.net", "network n(x: [4]) {\n    x |> clamp(2, 1)\n}\n", None);
        let Err(crate::Error::Invalid { diagnostics, .. }) = model else { panic!("clamp(2, 1) compiled") };
        assert!(
            diagnostics[0].message.contains("`max` of `clamp` must be above `min` (2.0), found 1.0"),
            "{:?}",
            diagnostics[0]
        );
    }
}
