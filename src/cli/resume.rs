//! Resuming a run with the settings it started with. A checkpoint stores every effective
//! setting (the train section with the flags applied, and whether examples are shuffled:
//! [`nnc_runtime::checkpoint::CheckpointMeta`]); a resumed run takes them from there, so
//! that it reaches the weights the uninterrupted run would, and refuses a flag that would
//! change one.

use nnc_compiler::front::train::{Optimizer, TrainConfig};
use nnc_compiler::front::value::format_float;
use std::path::Path;

/// Refuses settings for a resumed run that differ from the stored ones, naming the flag
/// and both values.
pub fn check_unchanged(
    stored: (&TrainConfig, bool),
    asked: (&TrainConfig, bool),
    path: &Path,
) -> Result<(), String> {
    for ((flag, before), (_, now)) in flags(stored.0, stored.1).into_iter().zip(flags(asked.0, asked.1)) {
        if before != now {
            return Err(format!(
                "{flag} {now} differs from {before}, which `{}` was trained with; a resumed run \
                 keeps its settings (drop the flag, or start a new run with --init-from)",
                path.display()
            ));
        }
    }
    Ok(())
}

/// Every setting a flag can change, as the flag and the value it would be given as.
fn flags(c: &TrainConfig, shuffle: bool) -> Vec<(&'static str, String)> {
    let g = |x: f64| format_float(x);
    let list = |v: &[f64]| {
        if v.is_empty() { "none".to_string() } else { v.iter().map(|&x| g(x)).collect::<Vec<_>>().join(",") }
    };
    let mut out = vec![
        ("--epochs", c.epochs.to_string()),
        ("--batch", c.batch.to_string()),
        ("--seed", c.seed.to_string()),
        ("--schedule", c.schedule.to_string()),
        ("--warmup", c.warmup.to_string()),
        ("--clip", c.clip.map_or("0".into(), g)),
        ("--mean", list(&c.mean)),
        ("--std", list(&c.std)),
        ("--no-shuffle", (!shuffle).to_string()),
    ];
    let augment: Vec<String> = c.augment.iter().map(ToString::to_string).collect();
    out.push(("--augment", if augment.is_empty() { "none".into() } else { augment.join(", ") }));
    match c.optimizer {
        Optimizer::Sgd { lr, momentum, nesterov, weight_decay } => out.extend([
            ("--lr", g(lr)),
            ("--momentum", g(momentum)),
            ("--nesterov", nesterov.to_string()),
            ("--weight-decay", g(weight_decay)),
        ]),
        Optimizer::Adam { lr, beta1, beta2, eps, weight_decay }
        | Optimizer::Adamw { lr, beta1, beta2, eps, weight_decay } => out.extend([
            ("--lr", g(lr)),
            ("--beta1", g(beta1)),
            ("--beta2", g(beta2)),
            ("--eps", g(eps)),
            ("--weight-decay", g(weight_decay)),
        ]),
    }
    out
}
