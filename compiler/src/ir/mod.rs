//! The structures the stages hand each other, each printable: the layer graph, the
//! tensor-op graph and the kernels.

pub mod graph;
pub mod ids;
pub mod init;
pub mod kernel;
pub mod ops;
pub mod shape;
