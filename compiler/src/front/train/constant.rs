//! Train settings are constants: numbers (with arithmetic), names, lists and calls such as
//! `sgd(lr: 0.1)`. This evaluates them and reads typed values out with located errors.

use crate::front::syntax::ast::{BinOp, Expr, ExprKind, UnOp};
use crate::front::value::{Ctor, CtorArg, Value, format_float};
use crate::support::diagnostic::Diagnostic;
use crate::support::source::Span;
use crate::support::suggest::did_you_mean;

/// Evaluates a setting's value. Train settings are constants: numbers (with arithmetic),
/// booleans, strings, names, lists and calls such as `sgd(lr: 0.1)`.
pub(super) fn constant(e: &Expr) -> Result<Value, Diagnostic> {
    Ok(match &e.kind {
        ExprKind::Int { value, .. } => Value::Int(*value),
        ExprKind::Float { value, .. } => Value::Float(*value),
        ExprKind::Bool(b) => Value::Bool(*b),
        ExprKind::Str(s) => Value::Str(s.clone()),
        ExprKind::Name(id) => Value::Symbol(id.name.clone()),
        ExprKind::List(items) => Value::List(items.iter().map(constant).collect::<Result<_, _>>()?),
        ExprKind::Call(c) => Value::Ctor(Ctor {
            name: c.name.name.clone(),
            name_span: c.name.span,
            args: c
                .args
                .iter()
                .map(|a| {
                    Ok(CtorArg {
                        name: a.name.as_ref().map(|n| (n.name.clone(), n.span)),
                        value: constant(&a.value)?,
                        span: a.value.span,
                    })
                })
                .collect::<Result<_, Diagnostic>>()?,
        }),
        ExprKind::Unary(UnOp::Neg, inner) => match constant(inner)? {
            Value::Int(i) => Value::Int(
                i.checked_neg()
                    .ok_or_else(|| Diagnostic::error("integer overflow").at(e.span, "too large"))?,
            ),
            Value::Float(x) => Value::Float(-x),
            v => return Err(expected(inner.span, "a number", &v)),
        },
        ExprKind::Binary(op @ (BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div), l, r) => {
            let (a, b) = (number(&constant(l)?, l.span)?, number(&constant(r)?, r.span)?);
            let v = match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                _ if b == 0.0 => return Err(Diagnostic::error("division by zero").at(r.span, "this is zero")),
                _ => a / b,
            };
            Value::Float(v)
        }
        _ => {
            return Err(Diagnostic::error("a train setting must be a constant")
                .at(e.span, "not a constant")
                .with_note("settings take numbers, names, lists and calls such as `sgd(lr: 0.1)`"));
        }
    })
}

pub(super) fn number(v: &Value, span: Span) -> Result<f64, Diagnostic> {
    match v {
        Value::Int(i) => Ok(*i as f64),
        Value::Float(x) => Ok(*x),
        v => Err(expected(span, "a number", v)),
    }
}

pub(super) fn expected(span: Span, what: &str, found: &Value) -> Diagnostic {
    Diagnostic::error(format!("expected {what}, found {}", found.describe()))
        .at(span, format!("expected {what}"))
}

pub(super) fn symbol(v: &Value, span: Span, choices: &[&'static str]) -> Result<&'static str, Diagnostic> {
    let list = choices.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>();
    let want = crate::front::syntax::join_or(&list);
    match v {
        Value::Symbol(s) => match choices.iter().find(|c| *c == s) {
            Some(c) => Ok(c),
            None => {
                let d =
                    Diagnostic::error(format!("unknown choice `{s}`")).at(span, format!("expected {want}"));
                Err(match did_you_mean(s, choices.iter().copied()) {
                    Some(c) => d.with_help(format!("did you mean `{c}`?")),
                    None => d,
                })
            }
        },
        v => Err(expected(span, &want, v)),
    }
}

pub(super) fn int(v: &Value, span: Span, (min, max): (u64, u64)) -> Result<u64, Diagnostic> {
    match v {
        Value::Int(i) if *i >= 0 && (min..=max).contains(&(*i as u64)) => Ok(*i as u64),
        Value::Int(i) => Err(Diagnostic::error(format!("{i} is out of range"))
            .at(span, format!("must be from {min} to {max}"))),
        v => Err(expected(span, "an integer", v)),
    }
}

/// Which numbers a setting accepts.
#[derive(Clone, Copy)]
pub(super) enum Range {
    Positive,
    NonNegative,
    /// [0, 1)
    Fraction,
    Any,
}
use Range::*;

impl Range {
    pub(super) fn check(self, x: f64) -> Option<&'static str> {
        let ok = x.is_finite()
            && match self {
                Positive => x > 0.0,
                NonNegative => x >= 0.0,
                Fraction => (0.0..1.0).contains(&x),
                Any => true,
            };
        if ok {
            None
        } else {
            Some(match self {
                Positive => "must be a positive number",
                NonNegative => "must not be negative",
                Fraction => "must be in [0, 1)",
                Any => "must be a finite number",
            })
        }
    }
}

pub(super) fn float(v: &Value, span: Span, range: Range) -> Result<f64, Diagnostic> {
    let x = number(v, span)?;
    match range.check(x) {
        None => Ok(x),
        Some(why) => Err(Diagnostic::error(format!("{} {why}", format_float(x))).at(span, why)),
    }
}

/// Binds a constructor's arguments (`sgd(0.1, momentum: 0.9)`) to names; the first
/// `positional` names may be given by position.
pub(super) fn ctor_args<'c>(
    c: &'c Ctor,
    names: &[&'static str],
    positional: usize,
) -> Result<Vec<(&'static str, &'c Value, Span)>, Diagnostic> {
    let mut out: Vec<(&'static str, &Value, Span)> = Vec::new();
    let mut next = 0;
    for a in &c.args {
        let name = match &a.name {
            None if next < positional => {
                next += 1;
                names[next - 1]
            }
            None => {
                return Err(Diagnostic::error(format!(
                    "`{}` takes at most {positional} positional argument(s)",
                    c.name
                ))
                .at(a.span, "name this argument")
                .with_note(format!("its arguments are: {}", names.join(", "))));
            }
            Some((n, nspan)) => match names.iter().find(|k| *k == n) {
                Some(k) => k,
                None => {
                    let d = Diagnostic::error(format!("`{}` has no argument `{n}`", c.name))
                        .at(*nspan, "unknown argument");
                    return Err(match did_you_mean(n, names.iter().copied()) {
                        Some(s) => d.with_help(format!("did you mean `{s}`?")),
                        None => d.with_note(format!("its arguments are: {}", names.join(", "))),
                    });
                }
            },
        };
        if out.iter().any(|(k, _, _)| *k == name) {
            return Err(Diagnostic::error(format!("`{name}` is given twice")).at(a.span, "given again"));
        }
        out.push((name, &a.value, a.span));
    }
    Ok(out)
}
