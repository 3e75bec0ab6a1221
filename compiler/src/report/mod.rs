//! What `nnc compile` and `nnc graph` print: the shape plan and the DOT graph.

pub mod dot;
pub mod plan;
