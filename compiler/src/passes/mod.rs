//! The passes, stages 5–8: lowering, differentiation, scheduling and memory planning,
//! and the verifier that checks their output before code is generated from it.

pub mod autodiff;
pub mod lower;
pub mod memory;
pub mod schedule;
pub mod verify;
