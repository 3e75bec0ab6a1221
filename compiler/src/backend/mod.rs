//! Stage 9: code generation.

pub mod cranelift;
