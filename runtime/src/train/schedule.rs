//! Learning-rate schedules, evaluated per step: linear warm-up over the first epochs,
//! then constant, step decay, or cosine decay to a floor over the rest of the run.

use nnc_compiler::front::train::Schedule;

/// The rate at `progress` epochs into a run of `epochs` (fractional: step `k` of an
/// epoch of `n` is `epoch + k/n`).
pub fn rate(base: f64, schedule: Schedule, warmup: u64, epochs: u64, progress: f64) -> f64 {
    let warmup = warmup as f64;
    if progress < warmup {
        // From base/steps-ish up to base; never exactly zero, so the first step moves.
        return base * (progress + 1e-3).min(warmup) / warmup;
    }
    match schedule {
        Schedule::Constant => base,
        Schedule::Step { every, gamma } => base * gamma.powi((progress / every.max(1) as f64).floor() as i32),
        Schedule::Cosine { min_lr } => {
            let span = (epochs as f64 - warmup).max(1e-9);
            let t = ((progress - warmup) / span).clamp(0.0, 1.0);
            min_lr + (base - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_falls_from_base_to_floor() {
        let s = Schedule::Cosine { min_lr: 0.001 };
        assert!((rate(0.1, s, 0, 10, 0.0) - 0.1).abs() < 1e-12);
        assert!((rate(0.1, s, 0, 10, 5.0) - 0.0505).abs() < 1e-12);
        assert!((rate(0.1, s, 0, 10, 10.0) - 0.001).abs() < 1e-12);
    }

    #[test]
    fn warmup_ramps_linearly_then_hands_over() {
        let s = Schedule::Constant;
        assert!((rate(0.2, s, 2, 10, 1.0) - 0.1001).abs() < 1e-9);
        assert_eq!(rate(0.2, s, 2, 10, 2.5), 0.2);
        let c = Schedule::Cosine { min_lr: 0.0 };
        assert!((rate(0.2, c, 2, 10, 2.0) - 0.2).abs() < 1e-12);
    }

    #[test]
    fn step_decay_multiplies_every_n_epochs() {
        let s = Schedule::Step { every: 3, gamma: 0.1 };
        assert_eq!(rate(1.0, s, 0, 10, 2.9), 1.0);
        assert!((rate(1.0, s, 0, 10, 3.0) - 0.1).abs() < 1e-12);
        assert!((rate(1.0, s, 0, 10, 7.5) - 0.01).abs() < 1e-12);
    }
}
