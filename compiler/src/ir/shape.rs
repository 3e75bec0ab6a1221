//! Tensor shapes, per example (the batch dimension is implicit).

use serde::Serialize;
use std::fmt;

/// The largest number of elements any one tensor (activation or parameter) may have:
/// 2^40 f32 values is 4 TiB, far beyond any machine this runs on, yet small enough that
/// sizes and byte counts never overflow a `u64`.
pub const MAX_ELEMENTS: u64 = 1 << 40;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Shape {
    /// `[channels, height, width]`
    Image { c: u64, h: u64, w: u64 },
    /// `[n]`
    Vector { n: u64 },
    /// A sequence of feature vectors: `seq[steps, features]`.
    Seq { steps: u64, features: u64 },
    /// A sequence of token ids below `vocab`: `seq[steps] of tokens(vocab)`.
    Tokens { steps: u64, vocab: u64 },
}

impl Shape {
    /// Number of values per example (saturating; checked against [`MAX_ELEMENTS`]).
    pub fn elements(&self) -> u64 {
        match *self {
            Shape::Image { c, h, w } => c.saturating_mul(h).saturating_mul(w),
            Shape::Vector { n } => n,
            Shape::Seq { steps, features } => steps.saturating_mul(features),
            Shape::Tokens { steps, .. } => steps,
        }
    }

    /// The dimensions, outermost first (as a row-major buffer is laid out).
    pub fn dims(&self) -> Vec<u64> {
        match *self {
            Shape::Image { c, h, w } => vec![c, h, w],
            Shape::Vector { n } => vec![n],
            Shape::Seq { steps, features } => vec![steps, features],
            Shape::Tokens { steps, .. } => vec![steps],
        }
    }

    /// What kind of tensor this is, in words: "an image", "a sequence".
    pub fn describe_kind(&self) -> &'static str {
        match self {
            Shape::Image { .. } => "an image",
            Shape::Vector { .. } => "a vector",
            Shape::Seq { .. } => "a sequence",
            Shape::Tokens { .. } => "a token sequence",
        }
    }

    /// The size of the axis that `concat`, `batchnorm` and `dense` work on: channels of an
    /// image, features of a vector or sequence.
    pub fn channels(&self) -> Option<u64> {
        match *self {
            Shape::Image { c, .. } => Some(c),
            Shape::Vector { n } => Some(n),
            Shape::Seq { features, .. } => Some(features),
            Shape::Tokens { .. } => None,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Image { c, h, w } => write!(f, "[{c}, {h}, {w}]"),
            Shape::Vector { n } => write!(f, "[{n}]"),
            Shape::Seq { steps, features } => write!(f, "seq[{steps}, {features}]"),
            Shape::Tokens { steps, vocab } => write!(f, "seq[{steps}] of tokens({vocab})"),
        }
    }
}
