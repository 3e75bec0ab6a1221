//! The passes, stages 5–8: lowering, differentiation, scheduling and memory planning.

pub mod autodiff;
pub mod lower;
pub mod memory;
pub mod schedule;
