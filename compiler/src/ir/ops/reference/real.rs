//! The element types the interpreter runs in.

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Sub};

use crate::ir::ops::Prim;

/// The type of every value the interpreter stores: `f32`, the type of nnc's tensors, or
/// `f64`, to see how far an f32 result is from the exact one.
///
/// Sums and the formulas the ops write out in `f64` are computed in f64 whatever the type,
/// and stored through [`Real::from_f64`]; only what an op computes in its element type (a
/// product of two values, a scaling, a maximum, an activation) follows `Self`. So an f32
/// run rounds exactly where it always has, and an f64 run never rounds to f32.
pub trait Real:
    Copy
    + PartialOrd
    + Debug
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + AddAssign
{
    const ZERO: Self;
    const ONE: Self;
    const NEG_INFINITY: Self;

    /// Rounded to the nearest value in f32; exact in f64.
    fn from_f64(v: f64) -> Self;

    /// Exact in both.
    fn to_f64(self) -> f64;

    /// An op's constant (a drop probability, a scale factor), exact in both.
    fn from_f32(v: f32) -> Self;

    /// The larger of the two, the other one when either is NaN (as `f32::max`).
    fn max(self, other: Self) -> Self;

    /// The activation `f` at `self`.
    /// A primitive function, as accurately as the type allows.
    fn prim(self, p: Prim) -> Self;

    /// The value that carries the integer `bits` (a token id, a class id, a seed): see
    /// the module documentation of the interpreter for the rule.
    fn from_bits32(bits: u32) -> Self;

    /// The integer this value carries.
    fn to_bits32(self) -> u32;
}

impl Real for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;

    fn from_f64(v: f64) -> Self {
        v as f32
    }

    fn to_f64(self) -> f64 {
        f64::from(self)
    }

    fn from_f32(v: f32) -> Self {
        v
    }

    fn max(self, other: Self) -> Self {
        f32::max(self, other)
    }

    /// The op's own definition, which generated kernels are tested against.
    fn prim(self, p: Prim) -> Self {
        match p {
            Prim::Tanh => self.tanh(),
            Prim::Sigmoid => 1.0 / (1.0 + (-self).exp()),
            Prim::Exp => self.exp(),
            Prim::Erf => libm::erff(self),
            Prim::Sqrt => self.sqrt(),
            Prim::Log => self.ln(),
        }
    }

    fn from_bits32(bits: u32) -> Self {
        f32::from_bits(bits)
    }

    fn to_bits32(self) -> u32 {
        self.to_bits()
    }
}

impl Real for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;

    fn from_f64(v: f64) -> Self {
        v
    }

    fn to_f64(self) -> f64 {
        self
    }

    fn from_f32(v: f32) -> Self {
        f64::from(v)
    }

    fn max(self, other: Self) -> Self {
        f64::max(self, other)
    }

    fn prim(self, p: Prim) -> Self {
        match p {
            Prim::Tanh => self.tanh(),
            Prim::Sigmoid => 1.0 / (1.0 + (-self).exp()),
            Prim::Exp => self.exp(),
            Prim::Erf => libm::erf(self),
            Prim::Sqrt => self.sqrt(),
            Prim::Log => self.ln(),
        }
    }

    fn from_bits32(bits: u32) -> Self {
        f64::from_bits(u64::from(bits))
    }

    /// Panics on a value whose upper 32 bits are set: an ordinary number where an integer
    /// was expected (a label filled as `3.0` rather than through [`Real::from_bits32`]).
    fn to_bits32(self) -> u32 {
        match u32::try_from(self.to_bits()) {
            Ok(bits) => bits,
            Err(_) => panic!("{self:e} does not carry an integer in its low 32 bits"),
        }
    }
}
