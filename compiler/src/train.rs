//! The `train` section: how to train a network. Every setting is checked here, with the
//! same kind of located messages as the network itself, so that `nnc check` catches a
//! misspelt optimizer before a long run starts.

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::graph::Graph;
use crate::shape::Shape;
use crate::source::Span;
use crate::suggest::did_you_mean;
use crate::syntax::ast::{BinOp, Expr, ExprKind, TrainDef, UnOp};
use crate::value::{Ctor, CtorArg, Value, format_float};
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax and cross-entropy over the classes (per step for sequences).
    CrossEntropy,
    MeanSquaredError,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Optimizer {
    Sgd {
        lr: f64,
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    },
    Adam {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
    /// Adam with decoupled weight decay (Loshchilov & Hutter).
    Adamw {
        lr: f64,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    /// Multiply the rate by `gamma` every `every` epochs.
    Step {
        every: u64,
        gamma: f64,
    },
    /// Cosine decay from the base rate to `min_lr` over the run.
    Cosine {
        min_lr: f64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Augment {
    /// Pad by `pad` pixels of zeros, then crop back to the input size at a random offset.
    RandomCrop { pad: u64 },
    /// Mirror left-right with probability ½.
    Hflip,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TrainConfig {
    pub network: String,
    pub loss: Loss,
    pub optimizer: Optimizer,
    pub schedule: Schedule,
    /// Epochs of linear learning-rate warm-up.
    pub warmup: u64,
    pub batch: u64,
    pub epochs: u64,
    /// Largest global gradient norm; larger gradients are scaled down.
    pub clip: Option<f64>,
    pub seed: u64,
    pub augment: Vec<Augment>,
    /// Per-channel input normalisation `(x − mean) / std`; empty means none.
    pub mean: Vec<f64>,
    pub std: Vec<f64>,
    /// Training data directory or file, relative to the model file.
    pub data: Option<String>,
}

/// Largest batch size accepted.
pub const MAX_BATCH: u64 = 1 << 16;

/// The settings a train section may have, with what each takes (for messages and docs).
pub const SETTINGS: &[(&str, &str)] = &[
    ("loss", "`cross_entropy` (softmax + cross-entropy) or `mse`"),
    (
        "optimizer",
        "`sgd(lr, momentum: 0, nesterov: false, weight_decay: 0)`, `adam(lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0)` or `adamw(..., weight_decay: 0.01)`",
    ),
    ("schedule", "`constant`, `step(every: n, gamma: 0.1)` or `cosine(min_lr: 0)`"),
    ("warmup", "epochs of linear learning-rate warm-up (default 0)"),
    ("batch", "examples per step (default 32)"),
    ("epochs", "passes over the training data (default 10)"),
    ("clip", "largest gradient norm (default: no clipping)"),
    ("seed", "seed for initialisation, shuffling, dropout and augmentation (default 0)"),
    ("augment", "a list of `random_crop(pad: n)` and `hflip`"),
    ("mean", "input mean to subtract, one number or one per channel"),
    ("std", "input standard deviation to divide by, one number or one per channel"),
    ("data", "training data path, relative to this file (the `--data` flag overrides it)"),
];

impl TrainConfig {
    pub fn defaults(network: &str) -> TrainConfig {
        TrainConfig {
            network: network.to_string(),
            loss: Loss::CrossEntropy,
            optimizer: Optimizer::Sgd { lr: 0.01, momentum: 0.0, nesterov: false, weight_decay: 0.0 },
            schedule: Schedule::Constant,
            warmup: 0,
            batch: 32,
            epochs: 10,
            clip: None,
            seed: 0,
            augment: Vec::new(),
            mean: Vec::new(),
            std: Vec::new(),
            data: None,
        }
    }
}

/// Checks a train section against the network it trains.
pub fn check(def: &TrainDef, graph: Option<&Graph>, diagnostics: &mut Diagnostics) -> Option<TrainConfig> {
    let mut cfg = TrainConfig::defaults(&def.network.name);
    let mut ok = true;
    let mut seen: Vec<(&str, Span)> = Vec::new();
    let input = graph.map(|g| g.node(g.inputs[0]).shape);
    for s in &def.settings {
        let key = s.key.name.as_str();
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            diagnostics.push(
                Diagnostic::error(format!("`{key}` is set twice"))
                    .at(s.key.span, "set again here")
                    .with_secondary(*first, "first set here"),
            );
            ok = false;
            continue;
        }
        seen.push((key, s.key.span));
        let value = match constant(&s.value) {
            Ok(v) => v,
            Err(d) => {
                diagnostics.push(d);
                ok = false;
                continue;
            }
        };
        let span = s.value.span;
        let result = match key {
            "loss" => symbol(&value, span, &["cross_entropy", "mse"])
                .map(|l| cfg.loss = if l == "mse" { Loss::MeanSquaredError } else { Loss::CrossEntropy }),
            "optimizer" => optimizer(&value, span).map(|o| cfg.optimizer = o),
            "schedule" => schedule(&value, span).map(|v| cfg.schedule = v),
            "warmup" => int(&value, span, 0, 1_000_000).map(|v| cfg.warmup = v),
            "batch" => int(&value, span, 1, MAX_BATCH).map(|v| cfg.batch = v),
            "epochs" => int(&value, span, 1, 1_000_000).map(|v| cfg.epochs = v),
            "clip" => float(&value, span, Positive).map(|v| cfg.clip = Some(v)),
            "seed" => int(&value, span, 0, i64::MAX as u64).map(|v| cfg.seed = v),
            "augment" => augment(&s.value, input).map(|v| cfg.augment = v),
            "mean" => per_channel(&value, span, input, Any).map(|v| cfg.mean = v),
            "std" => per_channel(&value, span, input, Positive).map(|v| cfg.std = v),
            "data" => match value {
                Value::Str(p) => {
                    let _: () = cfg.data = Some(p);
                    Ok(())
                }
                v => Err(expected(span, "a path in quotes", &v)),
            },
            _ => {
                let keys = SETTINGS.iter().map(|(k, _)| *k);
                let mut d = Diagnostic::error(format!("unknown train setting `{key}`"))
                    .at(s.key.span, "not a setting");
                d = match did_you_mean(key, keys) {
                    Some(k) => d.with_help(format!("did you mean `{k}`?")),
                    None => d.with_note(format!(
                        "the settings are: {}",
                        SETTINGS.iter().map(|(k, _)| *k).collect::<Vec<_>>().join(", ")
                    )),
                };
                Err(d)
            }
        };
        if let Err(d) = result {
            diagnostics.push(d);
            ok = false;
        }
    }
    if !cfg.mean.is_empty() && !cfg.std.is_empty() && cfg.mean.len() != cfg.std.len() {
        let at = |k: &str| seen.iter().find(|(s, _)| *s == k).map(|(_, sp)| *sp).unwrap_or(def.network.span);
        diagnostics.push(
            Diagnostic::error(format!(
                "`mean` has {} values but `std` has {}",
                cfg.mean.len(),
                cfg.std.len()
            ))
            .at(at("std"), "lengths differ")
            .with_secondary(at("mean"), "mean set here"),
        );
        ok = false;
    }
    ok.then_some(cfg)
}

/// Evaluates a setting's value. Train settings are constants: numbers (with arithmetic),
/// booleans, strings, names, lists and calls such as `sgd(lr: 0.1)`.
fn constant(e: &Expr) -> Result<Value, Diagnostic> {
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

fn number(v: &Value, span: Span) -> Result<f64, Diagnostic> {
    match v {
        Value::Int(i) => Ok(*i as f64),
        Value::Float(x) => Ok(*x),
        v => Err(expected(span, "a number", v)),
    }
}

fn expected(span: Span, what: &str, found: &Value) -> Diagnostic {
    Diagnostic::error(format!("expected {what}, found {}", found.describe()))
        .at(span, format!("expected {what}"))
}

fn symbol(v: &Value, span: Span, choices: &[&'static str]) -> Result<&'static str, Diagnostic> {
    let list = choices.iter().map(|c| format!("`{c}`")).collect::<Vec<_>>();
    let want = crate::syntax::join_or(&list);
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

fn int(v: &Value, span: Span, min: u64, max: u64) -> Result<u64, Diagnostic> {
    match v {
        Value::Int(i) if *i >= 0 && (min..=max).contains(&(*i as u64)) => Ok(*i as u64),
        Value::Int(i) => Err(Diagnostic::error(format!("{i} is out of range"))
            .at(span, format!("must be from {min} to {max}"))),
        v => Err(expected(span, "an integer", v)),
    }
}

/// Which numbers a setting accepts.
#[derive(Clone, Copy)]
enum Range {
    Positive,
    NonNegative,
    /// [0, 1)
    Fraction,
    Any,
}
use Range::*;

impl Range {
    fn check(self, x: f64) -> Option<&'static str> {
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

fn float(v: &Value, span: Span, range: Range) -> Result<f64, Diagnostic> {
    let x = number(v, span)?;
    match range.check(x) {
        None => Ok(x),
        Some(why) => Err(Diagnostic::error(format!("{} {why}", format_float(x))).at(span, why)),
    }
}

/// Binds a constructor's arguments (`sgd(0.1, momentum: 0.9)`) to names; the first
/// `positional` names may be given by position.
fn ctor_args<'c>(
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

fn optimizer(v: &Value, span: Span) -> Result<Optimizer, Diagnostic> {
    let (name, args): (&str, Vec<(&str, &Value, Span)>) = match v {
        Value::Symbol(s) => (s.as_str(), Vec::new()),
        Value::Ctor(c) => {
            let names: &[&str] = match c.name.as_str() {
                "sgd" => &["lr", "momentum", "nesterov", "weight_decay"],
                _ => &["lr", "beta1", "beta2", "eps", "weight_decay"],
            };
            (c.name.as_str(), ctor_args(c, names, 1)?)
        }
        v => return Err(expected(span, "`sgd(..)`, `adam(..)` or `adamw(..)`", v)),
    };
    let get = |k: &str, default: f64, range: Range| -> Result<f64, Diagnostic> {
        match args.iter().find(|(n, _, _)| *n == k) {
            Some((_, v, s)) => float(v, *s, range),
            None => Ok(default),
        }
    };
    match name {
        "sgd" => {
            let nesterov = match args.iter().find(|(n, _, _)| *n == "nesterov") {
                Some((_, Value::Bool(b), _)) => *b,
                Some((_, v, s)) => return Err(expected(*s, "`true` or `false`", v)),
                None => false,
            };
            let lr = match args.iter().find(|(n, _, _)| *n == "lr") {
                Some((_, v, s)) => float(v, *s, Positive)?,
                None => {
                    return Err(Diagnostic::error("`sgd` needs a learning rate")
                        .at(span, "`lr` is missing")
                        .with_help("write it as `sgd(lr: 0.01)`"));
                }
            };
            let momentum = get("momentum", 0.0, Fraction)?;
            if nesterov && momentum == 0.0 {
                return Err(Diagnostic::error("Nesterov momentum needs `momentum` above 0")
                    .at(span, "no momentum to look ahead with"));
            }
            Ok(Optimizer::Sgd {
                lr,
                momentum,
                nesterov,
                weight_decay: get("weight_decay", 0.0, NonNegative)?,
            })
        }
        "adam" | "adamw" => {
            let lr = get("lr", 1e-3, Positive)?;
            let beta1 = get("beta1", 0.9, Fraction)?;
            let beta2 = get("beta2", 0.999, Fraction)?;
            let eps = get("eps", 1e-8, Positive)?;
            if name == "adam" {
                Ok(Optimizer::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay: get("weight_decay", 0.0, NonNegative)?,
                })
            } else {
                Ok(Optimizer::Adamw {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay: get("weight_decay", 0.01, NonNegative)?,
                })
            }
        }
        other => {
            let d = Diagnostic::error(format!("unknown optimizer `{other}`"))
                .at(span, "expected `sgd`, `adam` or `adamw`");
            Err(match did_you_mean(other, ["sgd", "adam", "adamw"]) {
                Some(s) => d.with_help(format!("did you mean `{s}`?")),
                None => d,
            })
        }
    }
}

fn schedule(v: &Value, span: Span) -> Result<Schedule, Diagnostic> {
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
                    "every" => every = Some(int(v, s, 1, 1_000_000)?),
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
fn augment(e: &Expr, input: Option<Shape>) -> Result<Vec<Augment>, Diagnostic> {
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
                    Some((_, v, s)) => int(v, *s, 1, 1024)?,
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

fn per_channel(v: &Value, span: Span, input: Option<Shape>, range: Range) -> Result<Vec<f64>, Diagnostic> {
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

impl fmt::Display for Optimizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = |x: f64| format_float(x);
        match *self {
            Optimizer::Sgd { lr, momentum, nesterov, weight_decay } => {
                write!(f, "sgd(lr: {}", g(lr))?;
                if momentum != 0.0 {
                    write!(f, ", momentum: {}", g(momentum))?;
                }
                if nesterov {
                    write!(f, ", nesterov: true")?;
                }
                if weight_decay != 0.0 {
                    write!(f, ", weight_decay: {}", g(weight_decay))?;
                }
                write!(f, ")")
            }
            Optimizer::Adam { lr, beta1, beta2, eps, weight_decay }
            | Optimizer::Adamw { lr, beta1, beta2, eps, weight_decay } => {
                let name = if matches!(self, Optimizer::Adam { .. }) { "adam" } else { "adamw" };
                write!(
                    f,
                    "{name}(lr: {}, beta1: {}, beta2: {}, eps: {}, weight_decay: {})",
                    g(lr),
                    g(beta1),
                    g(beta2),
                    g(eps),
                    g(weight_decay)
                )
            }
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Schedule::Constant => write!(f, "constant"),
            Schedule::Step { every, gamma } => {
                write!(f, "step(every: {every}, gamma: {})", format_float(gamma))
            }
            Schedule::Cosine { min_lr: 0.0 } => write!(f, "cosine"),
            Schedule::Cosine { min_lr } => write!(f, "cosine(min_lr: {})", format_float(min_lr)),
        }
    }
}

impl fmt::Display for Augment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Augment::RandomCrop { pad } => write!(f, "random_crop(pad: {pad})"),
            Augment::Hflip => write!(f, "hflip"),
        }
    }
}
