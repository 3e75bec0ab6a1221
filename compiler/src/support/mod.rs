//! What every stage uses: source files and spans, diagnostics and their excerpts, and
//! name suggestions.

pub mod diagnostic;
pub mod excerpt;
pub mod numbers;
pub mod source;
pub mod suggest;
