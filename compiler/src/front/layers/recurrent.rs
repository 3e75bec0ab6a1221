//! Recurrent layers over a sequence: `rnn` (Elman, tanh), `lstm` and `gru`, with PyTorch's
//! parameter names, gate order and two bias vectors, so weights can be exchanged with it.

use super::args::{ArgSpec, ArgType, ArgValue, Args};
use super::{Arity, Gain, Layer, LayerSpec, ParamInit, ParamRole, ParamSpec, ShapeError};
use crate::ir::init::Init;
use crate::ir::ops::{Layout, Op, TensorId};
use crate::ir::shape::Shape;
use crate::passes::lower::{Lower, batched};
use crate::support::diagnostic::Diagnostic;

const ARGS: &[ArgSpec] = &[
    ArgSpec::required("hidden", ArgType::Int, "size of the hidden state"),
    ArgSpec::named(
        "last",
        ArgType::Bool,
        ArgValue::Bool(false),
        "return only the last hidden state instead of the sequence",
    ),
    ArgSpec::named(
        "bias",
        ArgType::Bool,
        ArgValue::Bool(true),
        "learnt biases (PyTorch's bias_ih_l0 and bias_hh_l0)",
    ),
    ArgSpec::optional("init", ArgType::Init, "weight initialiser (default: xavier)"),
];

const RULE: &str = "seq[t, n] → seq[t, hidden], or [hidden] with `last: true`";

pub static RNN: LayerSpec = LayerSpec {
    name: "rnn",
    doc: "Elman recurrent layer: h = tanh(W x + U h + b)",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Other,
    args: ARGS,
    build: build_rnn,
};

pub static LSTM: LayerSpec = LayerSpec {
    name: "lstm",
    doc: "long short-term memory (gates i, f, g, o)",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Other,
    args: ARGS,
    build: build_lstm,
};

pub static GRU: LayerSpec = LayerSpec {
    name: "gru",
    doc: "gated recurrent unit (gates r, z, n)",
    shape_rule: RULE,
    arity: Arity::One,
    gain: Gain::Other,
    args: ARGS,
    build: build_gru,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cell {
    Rnn,
    Lstm,
    Gru,
}

impl Cell {
    /// Number of stacked gate blocks in each weight matrix.
    fn gates(self) -> u64 {
        match self {
            Cell::Rnn => 1,
            Cell::Lstm => 4,
            Cell::Gru => 3,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Cell::Rnn => "rnn",
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Recurrent {
    pub cell: Cell,
    pub hidden: u64,
    pub last: bool,
    pub bias: bool,
    pub init: Option<Init>,
}

fn build_rnn(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    build(args, Cell::Rnn)
}

fn build_lstm(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    build(args, Cell::Lstm)
}

fn build_gru(args: &Args) -> Result<Box<dyn Layer>, Diagnostic> {
    build(args, Cell::Gru)
}

fn build(args: &Args, cell: Cell) -> Result<Box<dyn Layer>, Diagnostic> {
    Ok(Box::new(Recurrent {
        cell,
        hidden: args.int_at_least("hidden", 1),
        last: args.bool("last"),
        bias: args.bool("bias"),
        init: args.init("init"),
    }))
}

impl Layer for Recurrent {
    fn infer(&self, inputs: &[Shape]) -> Result<Shape, ShapeError> {
        match inputs[0] {
            Shape::Seq { .. } if self.last => Ok(Shape::Vector { n: self.hidden }),
            Shape::Seq { steps, .. } => Ok(Shape::Seq { steps, features: self.hidden }),
            Shape::Tokens { .. } => Err(ShapeError::new(
                format!("`{}` needs a sequence of feature vectors, found token ids", self.cell.name()),
                "token ids",
            )
            .help("embed the tokens first (`|> embedding(dim)`), or declare the input as `onehot`")),
            ref other => Err(ShapeError::new(
                format!(
                    "`{}` needs a sequence (`seq[t, n]`), found {} {other}",
                    self.cell.name(),
                    other.describe_kind()
                ),
                format!("input is {other}"),
            )),
        }
    }

    fn params(&self, inputs: &[Shape]) -> Vec<ParamSpec> {
        let n = inputs[0].channels().unwrap_or(0);
        let g = self.cell.gates() * self.hidden;
        let init = Some(self.init.unwrap_or(Init::Xavier));
        // Named as `torch.nn.RNN`, `LSTM` and `GRU` name the tensors of their one layer
        // (gate order and formulas match too), so that weights load into them as they are.
        let mut ps = vec![
            ParamSpec::weight("weight_ih_l0", vec![g, n], init),
            ParamSpec::weight("weight_hh_l0", vec![g, self.hidden], init),
        ];
        if self.bias {
            for name in ["bias_ih_l0", "bias_hh_l0"] {
                ps.push(ParamSpec {
                    name,
                    dims: vec![g],
                    role: ParamRole::Trainable,
                    init: ParamInit::Fixed(Init::Zeros),
                });
            }
        }
        ps
    }

    fn macs(&self, inputs: &[Shape], _output: &Shape) -> Option<u64> {
        let (steps, n) = match inputs[0] {
            Shape::Seq { steps, features } => (steps, features),
            _ => (0, 0),
        };
        let g = self.cell.gates().checked_mul(self.hidden)?;
        steps.checked_mul(g.checked_mul(n.checked_add(self.hidden)?)?)
    }

    fn lower(&self, cx: &mut Lower<'_>, inputs: &[TensorId], shapes: &[Shape], output: &Shape) -> TensorId {
        let Shape::Seq { steps, features } = shapes[0] else {
            unreachable!("checked: recurrent layers read sequences")
        };
        let cell = match self.cell {
            Cell::Rnn => crate::ir::ops::Cell::Rnn,
            Cell::Lstm => crate::ir::ops::Cell::Lstm,
            Cell::Gru => crate::ir::ops::Cell::Gru,
        };
        let mut args = vec![inputs[0], cx.param(0, Layout::Transposed), cx.param(1, Layout::Transposed)];
        if self.bias {
            args.extend([cx.param(2, Layout::Same), cx.param(3, Layout::Same)]);
        }
        let r = crate::ir::ops::Recurrence {
            cell,
            n: cx.batch(),
            t: steps as usize,
            f: features as usize,
            h: self.hidden as usize,
            last: self.last,
            bias: self.bias,
            train: cx.training(),
        };
        let dims = batched(cx.batch(), output);
        if !r.train {
            return cx.op(Op::Recurrent(r), args, dims);
        }
        // What backpropagation through time reads: the state entering each step and the
        // values each step saves (see `Op::Recurrent`).
        let (n, t, h) = (r.n, r.t, r.h);
        let aux = vec![("states", vec![n, t, h]), ("saved", vec![n, t, r.saved(), h])];
        cx.op_with_aux(Op::Recurrent(r), args, dims, aux)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lstm_parameters_match_pytorch() {
        // torch.nn.LSTM(65, 256): 4·256·(65 + 256) + 2·4·256 = 330,752
        let l = Recurrent { cell: Cell::Lstm, hidden: 256, last: false, bias: true, init: None };
        let x = Shape::Seq { steps: 64, features: 65 };
        let total: u64 = l.params(&[x]).iter().map(ParamSpec::elements).sum();
        assert_eq!(total, 330_752);
        assert_eq!(l.infer(&[x]).unwrap(), Shape::Seq { steps: 64, features: 256 });
    }

    #[test]
    fn gru_last_returns_a_vector() {
        let l = Recurrent { cell: Cell::Gru, hidden: 32, last: true, bias: true, init: None };
        assert_eq!(l.infer(&[Shape::Seq { steps: 5, features: 8 }]).unwrap(), Shape::Vector { n: 32 });
    }
}
