//! The settings whose values are choices with arguments: optimizer, schedule,
//! augmentation, per-channel normalisation.

use super::constant::Range::{Fraction, NonNegative, Positive};
use super::constant::{Range, constant, ctor_args, expected, float, int};
use super::validate::{CROP_PAD, STEP_EVERY};
use super::{Augment, Optimizer, Schedule};
use crate::front::syntax::ast::{Expr, ExprKind};
use crate::front::value::{Ctor, Value};
use crate::ir::shape::Shape;
use crate::support::diagnostic::Diagnostic;
use crate::support::source::Span;
use crate::support::suggest::did_you_mean;

/// An optimizer and its arguments; every bad argument gets its own error.
pub(super) fn optimizer(v: &Value, span: Span) -> Result<Optimizer, Vec<Diagnostic>> {
    let (name, args): (&str, Vec<(&str, &Value, Span)>) = match v {
        Value::Symbol(s) => (s.as_str(), Vec::new()),
        Value::Ctor(c) => {
            let names: &[&str] = match c.name.as_str() {
                "sgd" => &["lr", "momentum", "nesterov", "weight_decay"],
                _ => &["lr", "beta1", "beta2", "eps", "weight_decay"],
            };
            (c.name.as_str(), ctor_args(c, names, 1).map_err(|d| vec![d])?)
        }
        v => return Err(vec![expected(span, "`sgd(..)`, `adam(..)` or `adamw(..)`", v)]),
    };
    let mut errors = Vec::new();
    // A bad argument is recorded and read as its default, so the others are checked too.
    let mut get = |k: &str, default: f64, range: Range| -> f64 {
        match args.iter().find(|(n, _, _)| *n == k) {
            Some((_, v, s)) => float(v, *s, range).unwrap_or_else(|d| {
                errors.push(d);
                default
            }),
            None => default,
        }
    };
    let optimizer = match name {
        "sgd" => {
            let lr = get("lr", 0.0, Positive);
            let momentum = get("momentum", 0.0, Fraction);
            let weight_decay = get("weight_decay", 0.0, NonNegative);
            let nesterov = match args.iter().find(|(n, _, _)| *n == "nesterov") {
                Some((_, Value::Bool(b), _)) => *b,
                Some((_, v, s)) => {
                    errors.push(expected(*s, "`true` or `false`", v));
                    false
                }
                None => false,
            };
            if !args.iter().any(|(n, _, _)| *n == "lr") {
                errors.push(
                    Diagnostic::error("`sgd` needs a learning rate")
                        .at(span, "`lr` is missing")
                        .with_help("write it as `sgd(lr: 0.01)`"),
                );
            }
            if nesterov && momentum == 0.0 && errors.is_empty() {
                errors.push(
                    Diagnostic::error("Nesterov momentum needs `momentum` above 0")
                        .at(span, "no momentum to look ahead with"),
                );
            }
            Optimizer::Sgd { lr, momentum, nesterov, weight_decay }
        }
        "adam" | "adamw" => {
            let lr = get("lr", 1e-3, Positive);
            let beta1 = get("beta1", 0.9, Fraction);
            let beta2 = get("beta2", 0.999, Fraction);
            let eps = get("eps", 1e-8, Positive);
            if name == "adam" {
                Optimizer::Adam { lr, beta1, beta2, eps, weight_decay: get("weight_decay", 0.0, NonNegative) }
            } else {
                Optimizer::Adamw {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay: get("weight_decay", 0.01, NonNegative),
                }
            }
        }
        other => {
            let d = Diagnostic::error(format!("unknown optimizer `{other}`"))
                .at(span, "expected `sgd`, `adam` or `adamw`");
            return Err(vec![match did_you_mean(other, ["sgd", "adam", "adamw"]) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None => d,
            }]);
        }
    };
    if errors.is_empty() { Ok(optimizer) } else { Err(errors) }
}

pub(super) fn schedule(v: &Value, span: Span) -> Result<Schedule, Diagnostic> {
    match v {
        Value::Symbol(s) if s == "constant" => Ok(Schedule::Constant),
        Value::Symbol(s) if s == "cosine" => Ok(Schedule::Cosine { min_lr: 0.0 }),
        Value::Ctor(c) if c.name == "cosine" => {
            let args = ctor_args(c, &["min_lr"], 1)?;
            let min_lr = match args.first() {
                Some((_, v, s)) => float(v, *s, NonNegative)?,
                None => 0.0,
            };
            Ok(Schedule::Cosine { min_lr })
        }
        Value::Ctor(c) if c.name == "step" => {
            let args = ctor_args(c, &["every", "gamma"], 2)?;
            let mut every = None;
            let mut gamma = 0.1;
            for (k, v, s) in args {
                match k {
                    "every" => every = Some(int(v, s, STEP_EVERY)?),
                    _ => gamma = float(v, s, Positive)?,
                }
            }
            let every = every.ok_or_else(|| {
                Diagnostic::error("`step` needs `every` (epochs between rate drops)")
                    .at(span, "`every` is missing")
                    .with_help("write it as `step(every: 10, gamma: 0.1)`")
            })?;
            Ok(Schedule::Step { every, gamma })
        }
        Value::Symbol(s) | Value::Ctor(Ctor { name: s, .. }) => {
            let d = Diagnostic::error(format!("unknown schedule `{s}`"))
                .at(span, "expected `constant`, `step(..)` or `cosine`");
            Err(match did_you_mean(s, ["constant", "step", "cosine"]) {
                Some(x) => d.with_help(format!("did you mean `{x}`?")),
                None => d,
            })
        }
        v => Err(expected(span, "a schedule", v)),
    }
}

/// Augmentations, from the expression so that an error can point at the item.
pub(super) fn augment(e: &Expr, input: Option<Shape>) -> Result<Vec<Augment>, Diagnostic> {
    let span = e.span;
    let exprs: Vec<&Expr> = match &e.kind {
        ExprKind::List(items) => items.iter().collect(),
        _ => vec![e],
    };
    let mut items = Vec::new();
    for x in exprs {
        items.push((constant(x)?, x.span));
    }
    if let Some(s) = input
        && !matches!(s, Shape::Image { .. })
        && !items.is_empty()
    {
        return Err(Diagnostic::error(format!(
            "augmentation needs an image input, but the network reads {} {s}",
            s.describe_kind()
        ))
        .at(span, "only images can be cropped or flipped"));
    }
    let mut out = Vec::new();
    for (item, span) in &items {
        let span = *span;
        out.push(match item {
            Value::Symbol(s) if s == "hflip" => Augment::Hflip,
            Value::Ctor(c) if c.name == "random_crop" => {
                let args = ctor_args(c, &["pad"], 1)?;
                let pad = match args.first() {
                    Some((_, v, s)) => int(v, *s, CROP_PAD)?,
                    None => {
                        return Err(Diagnostic::error("`random_crop` needs `pad`")
                            .at(c.name_span, "`pad` is missing")
                            .with_help("write it as `random_crop(pad: 4)`"));
                    }
                };
                Augment::RandomCrop { pad }
            }
            other => {
                let mut d = Diagnostic::error(format!("unknown augmentation {}", other.describe()))
                    .at(span, "expected `random_crop(pad: n)` or `hflip`");
                if let Value::Symbol(s) | Value::Ctor(Ctor { name: s, .. }) = other
                    && let Some(x) = did_you_mean(s, ["random_crop", "hflip"])
                {
                    d = d.with_help(format!("did you mean `{x}`?"));
                }
                return Err(d);
            }
        });
    }
    Ok(out)
}

pub(super) fn per_channel(
    v: &Value,
    span: Span,
    input: Option<Shape>,
    range: Range,
) -> Result<Vec<f64>, Diagnostic> {
    let values = match v {
        Value::List(items) => items.iter().map(|i| float(i, span, range)).collect::<Result<Vec<_>, _>>()?,
        single => vec![float(single, span, range)?],
    };
    if let Some(Shape::Image { c, .. }) = input
        && values.len() != 1
        && values.len() as u64 != c
    {
        return Err(Diagnostic::error(format!(
            "{} values given for an input with {c} channels",
            values.len()
        ))
        .at(span, format!("give one value, or {c}")));
    }
    Ok(values)
}
