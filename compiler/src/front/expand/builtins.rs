//! Built-in functions on shapes and numbers: `channels(x)`, `height(x)`, `width(x)`,
//! `steps(x)`, `min(..)`, `max(..)`.

use super::Expander;
use crate::front::layers::args::RawArg;
use crate::front::value::Value;
use crate::ir::shape::Shape;
use crate::support::diagnostic::Diagnostic;
use crate::support::source::Span;

pub type Builtin = fn(&mut Expander<'_>, &[RawArg], Span) -> Value;

pub fn lookup(name: &str) -> Option<Builtin> {
    Some(match name {
        "channels" => |x, a, s| dimension(x, a, s, "channels"),
        "height" => |x, a, s| dimension(x, a, s, "height"),
        "width" => |x, a, s| dimension(x, a, s, "width"),
        "steps" => |x, a, s| dimension(x, a, s, "steps"),
        "min" => |x, a, s| extremum(x, a, s, "min"),
        "max" => |x, a, s| extremum(x, a, s, "max"),
        _ => return None,
    })
}

/// A tensor's size along one named axis.
fn dimension(x: &mut Expander<'_>, args: &[RawArg], span: Span, which: &str) -> Value {
    let [arg] = args else {
        x.error(
            Diagnostic::error(format!("`{which}` takes one tensor, found {} arguments", args.len()))
                .at(span, format!("expected `{which}(x)`")),
        );
        return Value::Poison;
    };
    let t = match &arg.value {
        Value::Tensor(t) => t,
        Value::Poison => return Value::Poison,
        other => {
            x.error(
                Diagnostic::error(format!("`{which}` needs a tensor, found {}", other.describe()))
                    .at(arg.value_span, "not a tensor"),
            );
            return Value::Poison;
        }
    };
    let n = match (which, t.shape) {
        ("channels", s) => s.channels(),
        ("height", Shape::Image { h, .. }) => Some(h),
        ("width", Shape::Image { w, .. }) => Some(w),
        ("steps", Shape::Seq { steps, .. } | Shape::Tokens { steps, .. }) => Some(steps),
        _ => None,
    };
    match n {
        Some(n) => Value::Int(n as i64),
        None => {
            x.error(
                Diagnostic::error(format!("{} {} has no {which}", t.shape.describe_kind(), t.shape))
                    .at(arg.value_span, format!("this is {}", t.shape)),
            );
            Value::Poison
        }
    }
}

fn extremum(x: &mut Expander<'_>, args: &[RawArg], span: Span, which: &str) -> Value {
    if args.is_empty() {
        x.error(Diagnostic::error(format!("`{which}` needs at least one number")).at(span, "no arguments"));
        return Value::Poison;
    }
    let mut best: Option<Value> = None;
    for a in args {
        let better = match (&best, &a.value) {
            (_, Value::Poison) => return Value::Poison,
            (None, Value::Int(_) | Value::Float(_)) => true,
            (Some(b), v @ (Value::Int(_) | Value::Float(_))) => {
                let (bv, vv) = (num(b), num(v));
                if which == "min" { vv < bv } else { vv > bv }
            }
            (_, other) => {
                x.error(
                    Diagnostic::error(format!("`{which}` needs numbers, found {}", other.describe()))
                        .at(a.value_span, "not a number"),
                );
                return Value::Poison;
            }
        };
        if better {
            best = Some(a.value.clone());
        }
    }
    best.unwrap_or(Value::Poison)
}

fn num(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(x) => *x,
        _ => f64::NAN,
    }
}
