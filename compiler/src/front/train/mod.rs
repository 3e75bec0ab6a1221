//! Stage 4: the `train` section, how to train a network. Every setting is checked here, with the
//! same kind of located messages as the network itself, so that `nnc check` catches a
//! misspelt optimizer before a long run starts.

mod choices;
mod constant;
mod display;
mod validate;

use crate::front::syntax::ast::TrainDef;
use crate::front::value::Value;
use crate::ir::graph::Graph;
use crate::ir::shape::Shape;
use crate::support::diagnostic::{Diagnostic, Diagnostics};
use crate::support::source::Span;
use crate::support::suggest::did_you_mean;
use choices::{augment, optimizer, per_channel, schedule};
use constant::Range::{Any, Positive};
use constant::{constant, expected, float, int, symbol};
use serde::{Deserialize, Serialize};
pub use validate::Invalid;
use validate::{EPOCHS, SEED, WARMUP};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    /// Softmax and cross-entropy over the classes (per step for sequences).
    CrossEntropy,
    MeanSquaredError,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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

impl Optimizer {
    /// The update rule and base learning rate of an optimizer setting.
    pub fn update_rule(&self) -> (crate::ir::ops::UpdateRule, f64) {
        use crate::ir::ops::UpdateRule;
        match *self {
            Optimizer::Sgd { lr, momentum, nesterov, weight_decay } => (
                UpdateRule::Sgd { momentum: momentum as f32, nesterov, weight_decay: weight_decay as f32 },
                lr,
            ),
            Optimizer::Adam { lr, beta1, beta2, eps, weight_decay }
            | Optimizer::Adamw { lr, beta1, beta2, eps, weight_decay } => {
                let decoupled = matches!(self, Optimizer::Adamw { .. });
                let rule = UpdateRule::Adam {
                    beta1: beta1 as f32,
                    beta2: beta2 as f32,
                    eps: eps as f32,
                    weight_decay: weight_decay as f32,
                    decoupled,
                };
                (rule, lr)
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Augment {
    /// Pad by `pad` pixels of zeros, then crop back to the input size at a random offset.
    RandomCrop { pad: u64 },
    /// Mirror left-right with probability ½.
    Hflip,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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
            "optimizer" => match optimizer(&value, span) {
                Ok(o) => {
                    cfg.optimizer = o;
                    Ok(())
                }
                Err(ds) => {
                    diagnostics.extend(ds);
                    ok = false;
                    continue;
                }
            },
            "schedule" => schedule(&value, span).map(|v| cfg.schedule = v),
            "warmup" => int(&value, span, WARMUP).map(|v| cfg.warmup = v),
            "batch" => int(&value, span, (1, MAX_BATCH)).map(|v| cfg.batch = v),
            "epochs" => int(&value, span, EPOCHS).map(|v| cfg.epochs = v),
            "clip" => float(&value, span, Positive).map(|v| cfg.clip = Some(v)),
            "seed" => int(&value, span, SEED).map(|v| cfg.seed = v),
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
    if let Some(g) = graph {
        let at = |k: &str| seen.iter().find(|(s, _)| *s == k).map(|(_, sp)| *sp).unwrap_or(def.network.span);
        for d in trains(g, cfg.loss, at("loss"), def.network.span) {
            diagnostics.push(d);
            ok = false;
        }
    }
    ok.then_some(cfg)
}

/// What training `g` needs of the network itself: class scores for a cross-entropy (a
/// vector, or a vector per step), and something to train. `loss` is where the loss is set
/// (or the section's name, for the default); `section` the section's name.
fn trains(g: &Graph, loss: Loss, loss_at: Span, section: Span) -> Vec<Diagnostic> {
    let mut found = Vec::new();
    let out = g.node(g.output);
    let scores = matches!(out.shape, Shape::Vector { .. } | Shape::Seq { .. });
    if loss == Loss::CrossEntropy && !scores {
        found.push(
            Diagnostic::error(format!(
                "`cross_entropy` needs class scores, but `{}` outputs {}",
                g.name, out.shape
            ))
            .at(loss_at, "this loss compares a score per class with a label")
            .with_secondary(out.span, format!("{} comes from here", out.shape))
            .with_help(
                "end the network with class scores (`flatten |> dense(classes)`), or use `loss = mse`",
            ),
        );
    }
    if g.nodes.iter().all(|n| n.trainable_params() == 0) {
        found.push(
            Diagnostic::error(format!("`{}` has nothing to train", g.name))
                .at(section, "none of its layers has trainable parameters")
                .with_secondary(g.span, "this network"),
        );
    }
    found
}
