//! The ranges of the train settings, in one place: the train section's checker reads its
//! limits from here, and [`TrainConfig::validate`] checks a configuration built any other
//! way (the command line's overrides, a checkpoint's stored settings) against the same
//! ones, so that a value the section refuses is refused from a flag too.

use super::constant::Range::{self, Any, Fraction, NonNegative, Positive};
use super::{Augment, Optimizer, Schedule, TrainConfig};
use crate::front::value::format_float;
use crate::ir::shape::Shape;

/// Inclusive bounds of the integer settings.
pub(super) const EPOCHS: (u64, u64) = (1, 1_000_000);
pub(super) const WARMUP: (u64, u64) = (0, 1_000_000);
pub(super) const STEP_EVERY: (u64, u64) = (1, 1_000_000);
pub(super) const CROP_PAD: (u64, u64) = (1, 1024);
pub(super) const SEED: (u64, u64) = (0, i64::MAX as u64);

/// A setting outside its range: which setting (as its flag is named, `weight_decay` for
/// `--weight-decay`), which of its values, and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}{value} {why}", if .what.is_empty() { String::new() } else { format!("{} ", .what) })]
pub struct Invalid {
    pub setting: &'static str,
    /// The argument of a setting with several (`min_lr` of a cosine schedule); empty for
    /// a setting with one value.
    pub what: &'static str,
    pub value: String,
    pub why: String,
}

fn float(setting: &'static str, what: &'static str, x: f64, range: Range) -> Result<(), Invalid> {
    match range.check(x) {
        None => Ok(()),
        Some(why) => Err(Invalid { setting, what, value: format_float(x), why: why.into() }),
    }
}

fn int(setting: &'static str, what: &'static str, x: u64, (min, max): (u64, u64)) -> Result<(), Invalid> {
    if (min..=max).contains(&x) {
        return Ok(());
    }
    Err(Invalid { setting, what, value: x.to_string(), why: format!("must be from {min} to {max}") })
}

impl TrainConfig {
    /// Checks every setting against the ranges the train section accepts, and the
    /// normalisation against the channels of `input`.
    pub fn validate(&self, input: Option<Shape>) -> Result<(), Invalid> {
        int("epochs", "", self.epochs, EPOCHS)?;
        int("batch", "", self.batch, (1, super::MAX_BATCH))?;
        int("warmup", "", self.warmup, WARMUP)?;
        int("seed", "", self.seed, SEED)?;
        let (lr, weight_decay) = match self.optimizer {
            Optimizer::Sgd { lr, momentum, nesterov, weight_decay } => {
                float("momentum", "", momentum, Fraction)?;
                if nesterov && momentum == 0.0 {
                    let why = "needs `momentum` above 0".to_string();
                    return Err(Invalid { setting: "nesterov", what: "", value: "true".into(), why });
                }
                (lr, weight_decay)
            }
            Optimizer::Adam { lr, beta1, beta2, eps, weight_decay }
            | Optimizer::Adamw { lr, beta1, beta2, eps, weight_decay } => {
                float("beta1", "", beta1, Fraction)?;
                float("beta2", "", beta2, Fraction)?;
                float("eps", "", eps, Positive)?;
                (lr, weight_decay)
            }
        };
        float("lr", "", lr, Positive)?;
        float("weight_decay", "", weight_decay, NonNegative)?;
        match self.schedule {
            Schedule::Constant => {}
            Schedule::Step { every, gamma } => {
                int("schedule", "every", every, STEP_EVERY)?;
                float("schedule", "gamma", gamma, Positive)?;
            }
            Schedule::Cosine { min_lr } => float("schedule", "min_lr", min_lr, NonNegative)?,
        }
        if let Some(clip) = self.clip {
            float("clip", "", clip, Positive)?;
        }
        for a in &self.augment {
            match *a {
                Augment::RandomCrop { pad } => int("augment", "crop", pad, CROP_PAD)?,
                Augment::Hflip => {}
            }
        }
        self.mean.iter().try_for_each(|&m| float("mean", "", m, Any))?;
        self.std.iter().try_for_each(|&s| float("std", "", s, Positive))?;
        let channels = match input {
            Some(Shape::Image { c, .. }) => c as usize,
            _ => 1,
        };
        for (setting, values) in [("mean", &self.mean), ("std", &self.std)] {
            if values.len() > 1 && values.len() != channels {
                let why = format!("do not fit {channels} channel(s): give one, or one per channel");
                return Err(Invalid { setting, what: "", value: format!("{} values", values.len()), why });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(change: impl Fn(&mut TrainConfig)) -> String {
        let mut c = TrainConfig::defaults("n");
        change(&mut c);
        let e = c.validate(Some(Shape::Image { c: 1, h: 28, w: 28 })).unwrap_err();
        format!("{}: {e}", e.setting)
    }

    #[test]
    fn every_setting_out_of_range_is_refused_by_name() {
        assert!(TrainConfig::defaults("n").validate(None).is_ok());
        let sgd = |lr, momentum, weight_decay| Optimizer::Sgd { lr, momentum, nesterov: false, weight_decay };
        assert_eq!(refused(|c| c.optimizer = sgd(-1.0, 0.0, 0.0)), "lr: -1.0 must be a positive number");
        assert_eq!(refused(|c| c.optimizer = sgd(f64::NAN, 0.0, 0.0)), "lr: NaN must be a positive number");
        assert_eq!(refused(|c| c.optimizer = sgd(0.1, 2.0, 0.0)), "momentum: 2.0 must be in [0, 1)");
        assert_eq!(refused(|c| c.optimizer = sgd(0.1, 0.0, -1.0)), "weight_decay: -1.0 must not be negative");
        assert_eq!(
            refused(|c| c.schedule = Schedule::Step { every: 0, gamma: 0.0 }),
            "schedule: every 0 must be from 1 to 1000000"
        );
        assert_eq!(
            refused(|c| c.schedule = Schedule::Cosine { min_lr: -1.0 }),
            "schedule: min_lr -1.0 must not be negative"
        );
        assert_eq!(refused(|c| c.warmup = 99_999_999_999), "warmup: 99999999999 must be from 0 to 1000000");
        assert_eq!(refused(|c| c.clip = Some(-1.0)), "clip: -1.0 must be a positive number");
        assert_eq!(
            refused(|c| c.augment = vec![Augment::RandomCrop { pad: 99_999 }]),
            "augment: crop 99999 must be from 1 to 1024"
        );
        assert_eq!(refused(|c| c.epochs = 0), "epochs: 0 must be from 1 to 1000000");
        assert_eq!(refused(|c| c.mean = vec![f64::NAN]), "mean: NaN must be a finite number");
        assert_eq!(refused(|c| c.std = vec![0.0]), "std: 0.0 must be a positive number");
        assert_eq!(
            refused(|c| c.std = vec![0.5, 0.5]),
            "std: 2 values do not fit 1 channel(s): give one, or one per channel"
        );
    }
}
