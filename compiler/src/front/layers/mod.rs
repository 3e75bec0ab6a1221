//! Layer kinds. Each kind lives in one file that holds its argument schema, its shape
//! rule, its parameters and its cost; this module only defines the interface and the
//! registry that maps names in source to kinds.

pub mod args;
mod window;

pub mod activation;
mod batchnorm;
mod concat;
mod conv;
mod dense;
mod dropout;
mod embedding;
mod flatten;
mod global_avgpool;
mod lrn;
mod merge;
mod pool;
mod recurrent;
mod softmax;

use crate::ir::init::Init;
use crate::ir::ops::TensorId;
use crate::ir::shape::Shape;
use crate::passes::lower::Lower;
use args::{ArgSpec, Args};
use std::fmt;

/// How many tensor inputs a layer takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    One,
    /// Merges: `add`, `concat`.
    AtLeast(usize),
}

/// What a layer is to the weights that feed it, for their default initialiser
/// (`expand::init`): He's scale suits weights that feed a rectifier, Xavier's the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gain {
    /// A rectifier (`relu`, `leaky_relu`).
    Rectifier,
    /// Leaves the question to the layer after it: normalisation, dropout, pooling and
    /// merges keep the activation's distribution open (a ResNet block's last conv
    /// reaches its ReLU through a batch-norm and the residual add).
    Transparent,
    /// Anything else.
    Other,
}

/// Everything the compiler knows about a layer kind before it is used.
pub struct LayerSpec {
    /// The name written in source.
    pub name: &'static str,
    /// One line for docs and `did you mean`.
    pub doc: &'static str,
    /// The shape rule in words, for the language reference.
    pub shape_rule: &'static str,
    pub arity: Arity,
    /// What the layer means for the default initialisation of the weights that feed it.
    pub gain: Gain,
    pub args: &'static [ArgSpec],
    /// Checks argument values that the schema's types cannot (ranges, combinations) and
    /// builds the layer.
    pub build: fn(&Args) -> Result<Box<dyn Layer>, crate::support::diagnostic::Diagnostic>,
}

impl LayerSpec {
    /// `conv(out, kernel, stride: .., ...)` — how to call it, for help lines.
    pub fn usage(&self) -> String {
        let parts: Vec<String> = self
            .args
            .iter()
            .map(|a| match a.default {
                args::ArgDefault::Required => a.name.to_string(),
                _ => format!("{}: ..", a.name),
            })
            .collect();
        format!("{}({})", self.name, parts.join(", "))
    }
}

impl fmt::Debug for LayerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LayerSpec({})", self.name)
    }
}

/// A shape rule's complaint. The expansion stage turns it into a diagnostic with the call
/// underlined and each blamed input labelled with its shape and origin.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapeError {
    pub message: String,
    /// Label under the layer call.
    pub label: String,
    /// Inputs (by position) whose shapes are part of the problem.
    pub blame: Vec<usize>,
    pub help: Option<String>,
}

impl ShapeError {
    pub fn new(message: impl Into<String>, label: impl Into<String>) -> ShapeError {
        ShapeError { message: message.into(), label: label.into(), blame: vec![0], help: None }
    }

    pub fn blame(mut self, inputs: Vec<usize>) -> ShapeError {
        self.blame = inputs;
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> ShapeError {
        self.help = Some(help.into());
        self
    }
}

/// Whether a parameter tensor is learnt or only tracked (batch-norm running statistics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamRole {
    Trainable,
    Buffer,
}

/// How a parameter starts.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamInit {
    /// A weight: the layer's `init:` argument, or else chosen from the activation that
    /// follows (see `expand::init`).
    Weight(Option<Init>),
    Fixed(Init),
}

/// One parameter tensor of a layer, named as PyTorch names it (`weight`, `bias`,
/// `running_mean`, `weight_ih`, ...) and laid out as PyTorch lays it out.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub dims: Vec<u64>,
    pub role: ParamRole,
    pub init: ParamInit,
}

impl ParamSpec {
    pub fn weight(name: &'static str, dims: Vec<u64>, init: Option<Init>) -> ParamSpec {
        ParamSpec { name, dims, role: ParamRole::Trainable, init: ParamInit::Weight(init) }
    }
    pub fn fixed(name: &'static str, dims: Vec<u64>, role: ParamRole, init: Init) -> ParamSpec {
        ParamSpec { name, dims, role, init: ParamInit::Fixed(init) }
    }
    pub fn elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }
}

/// A layer with its arguments bound. Shape rules see only input shapes; they never see
/// the source, so they can be tested directly.
pub trait Layer: fmt::Debug + Send + Sync {
    /// The output shape, or why these inputs do not fit.
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError>;
    /// Parameter tensors for these inputs.
    fn params(&self, _inputs: &[Shape]) -> Vec<ParamSpec> {
        Vec::new()
    }
    /// Multiply-accumulates per example; `None` when the count does not fit in 64 bits.
    fn macs(&self, _inputs: &[Shape], _output: &Shape) -> Option<u64> {
        Some(0)
    }
    /// Adds the tensor ops that compute this layer (inference form) and returns the
    /// output tensor. Called only on checked shapes.
    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], shapes: &[Shape], output: &Shape) -> TensorId;
}

/// Every layer kind the language has.
/// Every layer kind but the activations, which [`activation::ALL`] lists.
static KINDS: &[&LayerSpec] = &[
    &conv::SPEC,
    &pool::MAXPOOL,
    &pool::AVGPOOL,
    &global_avgpool::SPEC,
    &dense::SPEC,
    &flatten::SPEC,
    &dropout::SPEC,
    &lrn::SPEC,
    &batchnorm::SPEC,
    &softmax::SPEC,
    &merge::ADD,
    &merge::SUB,
    &merge::MUL,
    &concat::SPEC,
    &embedding::SPEC,
    &recurrent::RNN,
    &recurrent::LSTM,
    &recurrent::GRU,
];

/// The `add` layer, which `a + b` builds.
pub static ADD: &LayerSpec = &merge::ADD;

/// The `sub` layer, which `a - b` builds.
pub static SUB: &LayerSpec = &merge::SUB;

/// The `mul` layer, which `a * b` builds.
pub static MUL: &LayerSpec = &merge::MUL;

/// Every layer kind.
pub fn kinds() -> impl Iterator<Item = &'static LayerSpec> {
    KINDS.iter().chain(activation::ALL).copied()
}

pub fn lookup(name: &str) -> Option<&'static LayerSpec> {
    kinds().find(|k| k.name == name)
}

/// "expected an image, found a vector [120]" with a hint for the usual fix.
pub(crate) fn needs_image(kind: &str, found: &Shape) -> ShapeError {
    let e = ShapeError::new(
        format!("`{kind}` needs an image [channels, height, width], found {} {found}", found.describe_kind()),
        format!("input is {found}"),
    );
    match found {
        Shape::Vector { .. } => e.help("this input is already flat; use `dense` on vectors"),
        _ => e,
    }
}

/// "expected a vector or sequence of features, found ..." for layers that work on
/// features (everything except token ids).
pub(crate) fn needs_features(kind: &str, found: &Shape) -> ShapeError {
    ShapeError::new(
        format!("`{kind}` needs feature values, found {} {found}", found.describe_kind()),
        format!("input is {found}"),
    )
    .help("token ids must go through `embedding` first")
}
