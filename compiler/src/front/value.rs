//! Values that compile-time evaluation produces: numbers, booleans, names, tensors.
//!
//! Evaluation is dynamically typed; each consumer (an arithmetic operator, a layer's
//! argument schema, the train section) checks the types it needs and says which it found.

use crate::ir::ids::NodeId;
use crate::ir::shape::Shape;
use crate::support::source::Span;
use std::fmt;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
    Str(String),
    List(Vec<Value>),
    /// A bare name that is not bound to anything: `same`, `he`, `cross_entropy`. Whoever
    /// consumes it decides whether it is a valid choice.
    Symbol(String),
    /// A call of something that is not a layer or block: `normal(0.01)`, `sgd(lr: 0.1)`.
    Ctor(Ctor),
    /// The output of a layer.
    Tensor(Tensor),
    /// The result of an expression whose error was already reported. Consumers pass it on
    /// silently so that one mistake produces one message.
    Poison,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Ctor {
    pub name: String,
    pub name_span: Span,
    pub args: Vec<CtorArg>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CtorArg {
    pub name: Option<(String, Span)>,
    pub value: Value,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tensor {
    pub node: NodeId,
    pub shape: Shape,
}

impl Value {
    /// How much copying the value costs, in evaluation steps: one per value it holds
    /// (counting nested lists' items), and one per 64 bytes of a string.
    pub fn size(&self) -> u64 {
        match self {
            Value::Int(_) | Value::Float(_) | Value::Bool(_) | Value::Symbol(_) | Value::Tensor(_) => 1,
            Value::Poison => 1,
            Value::Str(s) => 1 + s.len() as u64 / 64,
            Value::List(items) => 1 + items.iter().map(Value::size).sum::<u64>(),
            Value::Ctor(c) => 1 + c.args.iter().map(|a| a.value.size()).sum::<u64>(),
        }
    }

    /// The value's type in words, for "expected an integer, found {}".
    pub fn describe(&self) -> String {
        match self {
            Value::Int(i) => format!("the integer {i}"),
            Value::Float(x) => format!("the number {}", format_float(*x)),
            Value::Bool(b) => format!("`{b}`"),
            Value::Str(_) => "a string".to_string(),
            Value::List(_) => "a list".to_string(),
            Value::Symbol(s) => format!("`{s}`"),
            Value::Ctor(c) => format!("`{}(..)`", c.name),
            Value::Tensor(t) => format!("a tensor {}", t.shape),
            Value::Poison => "an invalid value".to_string(),
        }
    }
}

impl fmt::Display for Value {
    /// Prints the value in source syntax (used in the shape plan's layer descriptions).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{}", format_float(*x)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Str(s) => write!(f, "\"{s}\""),
            Value::List(items) => {
                write!(f, "[")?;
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{v}")?;
                }
                write!(f, "]")
            }
            Value::Symbol(s) => write!(f, "{s}"),
            Value::Ctor(c) => {
                write!(f, "{}(", c.name)?;
                for (i, a) in c.args.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    if let Some((n, _)) = &a.name {
                        write!(f, "{n}: ")?;
                    }
                    write!(f, "{}", a.value)?;
                }
                write!(f, ")")
            }
            Value::Tensor(t) => write!(f, "{}", t.shape),
            Value::Poison => write!(f, "?"),
        }
    }
}

/// Shortest text that reads back as the same `f64`, with a decimal point or exponent so it
/// reads as a float (`0.5`, `1e-4`, `2.0`).
pub fn format_float(x: f64) -> String {
    let plain = format!("{x}");
    let exp = format!("{x:e}");
    let s = if exp.len() < plain.len() { exp } else { plain };
    if s.contains(['.', 'e', 'i', 'N']) { s } else { format!("{s}.0") }
}
