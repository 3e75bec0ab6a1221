//! `embedding(dim)`: looks up a learnt vector for each token id. The vocabulary size comes
//! from the input type (`seq[n] of tokens(vocab)`).

use super::args::{ArgSpec, ArgType, Args};
use super::{Arity, Gain, Layer, LayerSpec, ParamSpec, ShapeError};
use crate::ir::init::Init;
use crate::ir::ops::{Layout, Op, TensorId};
use crate::ir::shape::Shape;
use crate::passes::lower::{Lower, batched};
use crate::support::diagnostic::Diagnostic;

pub static SPEC: LayerSpec = LayerSpec {
    name: "embedding",
    doc: "a learnt vector per token id",
    shape_rule: "seq[t] of tokens(v) → seq[t, dim]",
    arity: Arity::One,
    gain: Gain::Other,
    args: &[
        ArgSpec::required("dim", ArgType::Int, "size of each token's vector"),
        ArgSpec::optional("init", ArgType::Init, "initialiser (default: normal(1.0), as PyTorch)"),
    ],
    build,
};

#[derive(Debug, Clone, PartialEq)]
pub struct Embedding {
    pub dim: u64,
    pub init: Option<Init>,
}

fn build(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Embedding { dim: args.int_at_least("dim", 1), init: args.init("init") }))
}

impl Layer for Embedding {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        match inputs[0] {
            Shape::Tokens { steps, .. } => Ok(Shape::Seq { steps, features: self.dim }),
            ref other => Err(ShapeError::new(
                format!(
                    "`embedding` needs token ids (`seq[n] of tokens(vocab)`), found {} {other}",
                    other.describe_kind()
                ),
                format!("input is {other}"),
            )
            .help("declare the input as `seq[length] of tokens(vocabulary size)`")),
        }
    }

    fn params(&self, inputs: &[Shape]) -> Vec<ParamSpec> {
        let vocab = match inputs[0] {
            Shape::Tokens { vocab, .. } => vocab,
            _ => 0,
        };
        vec![ParamSpec::weight(
            "weight",
            vec![vocab, self.dim],
            Some(self.init.unwrap_or(Init::Normal { std: 1.0 })),
        )]
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], shapes: &[Shape], output: &Shape) -> TensorId {
        let Shape::Tokens { steps, vocab } = shapes[0] else {
            unreachable!("checked: embedding reads tokens")
        };
        let table = cx.param(0, Layout::Same);
        let op = Op::Embedding {
            count: cx.batch() * steps as usize,
            vocab: vocab as usize,
            dim: self.dim as usize,
        };
        cx.op(op, vec![inputs[0], table], batched(cx.batch(), output))
    }
}
