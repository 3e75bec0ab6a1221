//! The verifier: checks the tensor graph and the scheduled kernels before any machine code
//! is generated from them, in the spirit of tinygrad's uop verifier (`type_verify`).
//!
//! Generated code trusts every number in a [`Program`]: loop extents, offsets,
//! coefficients, lengths and leading dimensions become constants in address arithmetic,
//! with no bounds checks at run time. A program that is wrong — by a bug in scheduling,
//! or built by hand — would read and write outside its buffers. The verifier proves the
//! opposite before compilation: every address a statement can reach, over every value
//! of the loop variables in scope (and every share of the parallel split), lies inside
//! its tensor or scratch buffer, and the buffers lie inside the arena. It is at least
//! as strict as what the Cranelift emitter touches (each statement's access pattern in
//! [`access`] follows its emitter in `backend/cranelift/`).
//!
//! It always runs: [`crate::pipeline`] calls [`graph`] before scheduling and [`program`]
//! after memory planning, so every executable the runtime builds has passed it.
//!
//! Cost, measured with `nnc bench` (release build, two threads, the `verify` figure):
//! ResNet-18 inference at batch 64 (27 kernels) 0.10 ms of 22.0 ms of compilation
//! (0.5 %); char_lstm training at batch 32 (2,185 kernels) 3.0 ms of 343 ms (0.9 %).
//! Its work is linear in the number of statements, not in their trip counts.

mod access;
mod graph;
mod program;

#[cfg(test)]
mod tests;

pub use graph::graph;
pub use program::{program, references};

/// Why a graph or program was rejected. Each message names the op or kernel, and for
/// an access the pointer, the range it reaches and the buffer's extent.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum VerifyError {
    #[error("op {op} ({name}) refers to tensor t{tensor}, but the graph has {count} tensors")]
    TensorRange { op: usize, name: String, tensor: u32, count: usize },
    #[error("the graph refers to tensor t{tensor} ({what}), but it has {count} tensors")]
    GraphTensorRange { what: &'static str, tensor: u32, count: usize },
    #[error(
        "tensor t{tensor} is a view of t{base} at {offset} with {len} elements, outside its block of {block}"
    )]
    View { tensor: u32, base: u32, offset: usize, len: usize, block: usize },
    #[error("op {op} ({name}) reads t{tensor} before any op defines it")]
    Undefined { op: usize, name: String, tensor: u32 },
    #[error("op {op} ({name}) takes {expected} inputs, but has {actual}")]
    Arity { op: usize, name: String, expected: usize, actual: usize },
    #[error("op {op} ({name}) has {actual} auxiliary outputs, but needs {expected}")]
    AuxArity { op: usize, name: String, expected: usize, actual: usize },
    #[error("op {op} ({name}): {slot} t{tensor} has {actual} elements, but the op's fields need {expected}")]
    Shape { op: usize, name: String, slot: String, tensor: u32, expected: usize, actual: usize },
    #[error("op {op} ({name}) has inconsistent fields: {message}")]
    Fields { op: usize, name: String, message: String },
    #[error(
        "kernel {kernel}: {pointer} reaches elements {low}..={high} of {buffer}, whose extent is 0..{extent}"
    )]
    OutOfBounds { kernel: String, pointer: String, buffer: String, low: i128, high: i128, extent: usize },
    #[error("kernel {kernel}: {pointer} uses loop variable i{var} outside its loop")]
    Scope { kernel: String, pointer: String, var: u16 },
    #[error("kernel {kernel}: loop variable i{var} is bound twice")]
    Rebound { kernel: String, var: u16 },
    #[error("kernel {kernel}: parallel extent {parallel} but {found}")]
    Parallel { kernel: String, parallel: usize, found: String },
    #[error("kernel {kernel} {access} {tensor} but does not list it in `{list}`")]
    Undeclared { kernel: String, access: &'static str, tensor: String, list: &'static str },
    #[error("kernel {kernel} touches {tensor}, which has no place in the memory plan")]
    Unplanned { kernel: String, tensor: String },
    #[error("kernel {kernel} uses scratch buffer {index}, but has {count}")]
    Scratch { kernel: String, index: u16, count: usize },
    #[error("kernel {kernel}: {message}")]
    Statement { kernel: String, message: String },
    #[error("the memory plan does not fit the program: {message}")]
    Plan { message: String },
}

/// A size that overflowed while being checked is as good as out of range.
pub(crate) fn product(factors: &[usize]) -> Option<usize> {
    factors.iter().try_fold(1usize, |acc, &f| acc.checked_mul(f))
}
