//! The front end, stages 1–4: from `.net` files to checked layer graphs and train
//! sections.

pub mod expand;
pub mod fmt;
pub mod layers;
pub mod load;
pub mod names;
pub mod resolve;
pub mod syntax;
pub mod train;
pub mod value;
