//! Reading data: IDX files (the MNIST format, optionally gzip-compressed) and raw f32.

pub mod idx;
pub mod input;
