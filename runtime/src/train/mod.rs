//! Training: compiled steps, learning-rate schedules, data batches, evaluation and the
//! loop that ties them together.

pub mod step;
