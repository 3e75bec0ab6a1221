//! The training loop: epochs of shuffled batches through the compiled step, evaluation
//! after each epoch, checkpoints at the end of every epoch and when stopped.
//!
//! Everything random is a function of the seed and the position in the run (the epoch
//! for shuffling, the global step for augmentation and dropout), so a run resumed from a
//! checkpoint takes exactly the steps an uninterrupted one would.

use super::data::{Dataset, epoch_order};
use super::eval::{Evaluation, Evaluator};
use super::schedule;
use super::step::{StepError, StepSettings, TrainStep};
use crate::checkpoint::{self, CheckpointError, CheckpointMeta};
use crate::exec;
use crate::init::Rng;
use nnc_compiler::front::train::Schedule;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Step(#[from] StepError),
    #[error(transparent)]
    Exec(#[from] exec::Error),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(transparent)]
    Data(#[from] super::data::DatasetError),
    /// The parameters or optimizer state went non-finite without the step seeing it (an
    /// update that overflowed); the checkpoint was not written.
    #[error(
        "the stored position (epoch {}, batch {}, step {}) is not one a run of {epochs} epochs of \
         {batches} batches reaches; the checkpoint or the data is not the run's",
        .position.epoch, .position.batch, .position.step
    )]
    Position { position: Position, epochs: u64, batches: u64 },
    #[error("training diverged by step {step}: {source}")]
    Diverged { step: u64, source: CheckpointError },
}

/// How to train.
#[derive(Clone, Debug)]
pub struct Settings {
    pub epochs: u64,
    pub seed: u64,
    pub shuffle: bool,
    /// Stop (with a checkpoint) after this many steps in all.
    pub max_steps: Option<u64>,
    pub lr: f64,
    pub schedule: Schedule,
    pub warmup: u64,
    pub clip: Option<f64>,
    /// Written at the end of every epoch and when stopped early.
    pub checkpoint: PathBuf,
    /// Written whenever the test loss is the lowest so far.
    pub best: Option<PathBuf>,
    /// Stored in every checkpoint (network, source hash, settings, vocabulary, ...), with
    /// the position, best loss and weights' fingerprint filled in as each is written.
    pub meta: CheckpointMeta,
}

/// Where a run is: epochs finished, batches of the current epoch done, steps in all.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Position {
    pub epoch: u64,
    pub batch: u64,
    pub step: u64,
}

/// Progress within an epoch, after each step.
#[derive(Clone, Copy, Debug)]
pub struct StepReport {
    pub epoch: u64,
    pub batch: u64,
    pub batches: u64,
    /// Means over the epoch so far (accuracy for classification losses only).
    pub loss: f64,
    pub accuracy: Option<f64>,
    pub examples_per_second: f64,
    pub lr: f64,
}

/// The end of an epoch.
#[derive(Clone, Debug)]
pub struct EpochReport {
    /// Counted from 1.
    pub epoch: u64,
    pub step: u64,
    pub train_loss: f64,
    pub train_accuracy: Option<f64>,
    pub test: Option<Evaluation>,
    /// Whether this epoch's test loss is the best so far (and was saved as such).
    pub best: bool,
    pub lr: f64,
    pub seconds: f64,
    pub examples_per_second: f64,
}

pub trait Observer {
    fn step(&mut self, _report: &StepReport) {}
    fn epoch(&mut self, _report: &EpochReport) {}
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Finished,
    /// Stopped by the caller's flag (Ctrl-C); the checkpoint holds this position.
    Interrupted(Position),
    /// Stopped after `max_steps`; the checkpoint holds this position.
    StepLimit(Position),
}

pub struct Trainer<'d> {
    pub step: TrainStep,
    pub eval: Option<Evaluator>,
    pub train: &'d Dataset,
    pub test: Option<&'d Dataset>,
    pub settings: Settings,
    pub position: Position,
    /// The lowest test loss so far.
    pub best_loss: f64,
    /// Whether this run has written `settings.checkpoint` (every write holds finite values).
    pub saved: bool,
}

impl<'d> Trainer<'d> {
    pub fn new(
        step: TrainStep,
        eval: Option<Evaluator>,
        train: &'d Dataset,
        test: Option<&'d Dataset>,
        settings: Settings,
    ) -> Result<Trainer<'d>, TrainError> {
        train.check_batch(step.exe.graph().batch)?;
        Ok(Trainer {
            step,
            eval,
            train,
            test,
            settings,
            position: Position::default(),
            best_loss: f64::INFINITY,
            saved: false,
        })
    }

    /// Steps per epoch (the last partial batch is dropped).
    pub fn batches(&self) -> u64 {
        (self.train.len() / self.step.exe.graph().batch) as u64
    }

    /// Continues from `position` (read from a checkpoint whose parameters and optimizer
    /// state are already loaded), which must be one this run's data and epochs reach.
    pub fn resume(&mut self, position: Position, best_loss: Option<f64>) -> Result<(), TrainError> {
        let batches = self.batches();
        let Position { epoch, batch, step } = position;
        let reached = epoch.checked_mul(batches).and_then(|s| s.checked_add(batch)) == Some(step);
        if epoch > self.settings.epochs || batch >= batches.max(1) || !reached {
            return Err(TrainError::Position { position, epochs: self.settings.epochs, batches });
        }
        self.position = position;
        self.step.steps = position.step;
        self.best_loss = best_loss.unwrap_or(f64::INFINITY);
        Ok(())
    }

    pub fn run(&mut self, stop: &AtomicBool, observer: &mut dyn Observer) -> Result<Outcome, TrainError> {
        let s = self.settings.clone();
        let batch = self.step.exe.graph().batch;
        let batches = self.batches();
        let input_len = self.step.input_mut().len();
        let (mut input, mut labels) = (vec![0.0; input_len], vec![0.0; self.step.labels_mut().len()]);
        while self.position.epoch < s.epochs {
            let epoch = self.position.epoch;
            let order = epoch_order(self.train.len(), s.seed, epoch, s.shuffle);
            let started = Instant::now();
            let (mut loss, mut correct, mut rows, mut done) = (0.0, Some(0.0), 0usize, 0u64);
            let mut lr = s.lr;
            while self.position.batch < batches {
                let limit = s.max_steps.is_some_and(|m| self.position.step >= m);
                if stop.load(Ordering::Relaxed) || limit {
                    self.save_checkpoint()?;
                    let p = self.position;
                    return Ok(if limit { Outcome::StepLimit(p) } else { Outcome::Interrupted(p) });
                }
                let b = self.position.batch as usize;
                let mut rng =
                    Rng::stream(s.seed ^ self.position.step.wrapping_mul(0x9e37_79b9_7f4a_7c15), "augment");
                self.train.fill(&order[b * batch..(b + 1) * batch], true, &mut rng, &mut input, &mut labels);
                self.step.input_mut().copy_from_slice(&input);
                self.step.labels_mut().copy_from_slice(&labels);
                let progress = epoch as f64 + b as f64 / batches as f64;
                lr = schedule::rate(s.lr, s.schedule, s.warmup, s.epochs, progress);
                let seed = Rng::stream(s.seed ^ self.position.step, "dropout").next_u64() as u32;
                let stats = self.step.run(&StepSettings { lr, clip: s.clip, seed })?;
                self.position.batch += 1;
                self.position.step += 1;
                done += 1;
                loss += stats.loss;
                correct = correct.zip(stats.correct).map(|(a, b)| a + b);
                rows += labels.len();
                let seconds = started.elapsed().as_secs_f64();
                observer.step(&StepReport {
                    epoch,
                    batch: self.position.batch,
                    batches,
                    loss: loss / done as f64,
                    accuracy: correct.map(|c| c / rows as f64),
                    examples_per_second: (done as usize * batch) as f64 / seconds.max(1e-9),
                    lr,
                });
            }
            let seconds = started.elapsed().as_secs_f64();
            self.position.epoch += 1;
            self.position.batch = 0;
            let test = match (&mut self.eval, self.test) {
                (Some(eval), Some(test)) => {
                    eval.copy_params(&self.step.exe);
                    Some(eval.evaluate(test)?)
                }
                _ => None,
            };
            let best = test.as_ref().is_some_and(|t| t.loss < self.best_loss);
            if let (true, Some(t)) = (best, &test) {
                self.best_loss = t.loss;
                if let Some(path) = &s.best {
                    self.save(path, false)?;
                }
            }
            self.save_checkpoint()?;
            observer.epoch(&EpochReport {
                epoch: epoch + 1,
                step: self.position.step,
                train_loss: loss / done.max(1) as f64,
                train_accuracy: correct.map(|c| c / rows.max(1) as f64),
                test,
                best,
                lr,
                seconds,
                examples_per_second: (done as usize * batch) as f64 / seconds.max(1e-9),
            });
        }
        Ok(Outcome::Finished)
    }

    /// Writes the run's checkpoint and records that it exists.
    fn save_checkpoint(&mut self) -> Result<(), TrainError> {
        self.save(&self.settings.checkpoint.clone(), true)?;
        self.saved = true;
        Ok(())
    }

    /// Writes the parameters to `path` and, with `resumable`, the optimizer state and
    /// position to its train file ([`checkpoint::train_path`]): the train file first,
    /// holding the fingerprint of the weights, so that a crash between the two writes
    /// leaves a pair that resuming refuses. Refuses (as a divergence) a value that is
    /// not finite.
    pub fn save(&self, path: &std::path::Path, resumable: bool) -> Result<(), TrainError> {
        let mut meta = self.settings.meta.clone();
        meta.position = Some(self.position);
        meta.best_loss = Some(self.best_loss).filter(|l| l.is_finite());
        let weights = checkpoint::state(&self.step.exe);
        let diverged = |e| match e {
            CheckpointError::NonFinite { .. } => TrainError::Diverged { step: self.position.step, source: e },
            e => TrainError::Checkpoint(e),
        };
        // Both are checked before either is written, so that a divergence leaves the
        // previous pair as it was.
        checkpoint::check_finite(&weights, path).map_err(diverged)?;
        if resumable {
            let (train_path, state) = (checkpoint::train_path(path), checkpoint::optimizer_state(&self.step));
            checkpoint::check_finite(&state, &train_path).map_err(diverged)?;
            let train = CheckpointMeta { weights: Some(checkpoint::fingerprint(&weights)), ..meta.clone() };
            checkpoint::save_entries(state, Vec::new(), &train_path, train.to_metadata())
                .map_err(diverged)?;
        }
        // Every step of the run updated the running statistics.
        let counters = checkpoint::batches_tracked(&self.step.exe, self.position.step);
        checkpoint::save_entries(weights, counters, path, meta.to_metadata()).map_err(diverged)
    }
}
