//! The train settings in source syntax, for the shape plan.

use super::{Augment, Optimizer, Schedule};
use crate::front::value::format_float;
use std::fmt;

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
