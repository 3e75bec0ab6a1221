//! nnc's runtime: the arena that holds a compiled network's buffers, the executor that
//! runs its generated kernels (on a pool of worker threads), parameter initialisation,
//! and checkpoints.

pub mod arena;
pub mod checkpoint;
pub mod data;
pub mod exec;
pub mod files;
pub mod init;
pub mod pool;
pub mod train;
