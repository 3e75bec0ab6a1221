//! Training: compiled steps, learning-rate schedules, data batches, evaluation and the
//! loop that ties them together.

pub mod data;
pub mod eval;
pub mod run;
pub mod schedule;
pub mod step;
