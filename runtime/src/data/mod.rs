//! Reading data: IDX files (the MNIST format, optionally gzip-compressed) and raw f32,
//! labelled examples for training (and the digits embedded in the binary), character
//! text, and image augmentation.

pub mod augment;
pub mod digits;
pub mod error;
pub mod idx;
pub mod input;
pub mod labelled;
pub mod text;
