//! The primitive functions of epilogues on vectors, written once against [`Simd`] so
//! that every instruction set has them. They are the algorithms of the Cranelift back
//! end (`backend/cranelift/math.rs`) step for step — the same range reductions,
//! polynomial coefficients, order of operations and special values — so the two back
//! ends agree bit for bit (`tests.rs` compares them); the coefficients are shared, in
//! `backend/coefficients.rs`.
//!
//! Each function reads its argument's register without changing it and returns a new
//! register; its temporaries come from and go back to the [`Emitter`]'s free registers.

use super::epilogue::{Emitter, Error};
use super::isa::{Bits, IntOp, Shift, Simd, V};
use crate::backend::coefficients::*;
use crate::ir::kernel::{BinOp, Cmp, Prim};

/// The sign bit of an `f32`.
const SIGN: u32 = 0x8000_0000;

impl<S: Simd> Emitter<'_, S> {
    /// `p(x)` for a primitive `p`, into a new register.
    pub fn prim(&mut self, p: Prim, x: V) -> Result<V, Error> {
        match p {
            Prim::Tanh => self.tanh(x),
            Prim::Sigmoid => self.sigmoid(x),
            Prim::Exp => self.exp(x),
            Prim::Erf => self.erf(x),
            Prim::Sqrt => {
                let d = self.take()?;
                S::sqrt(self.a, d, x)?;
                Ok(d)
            }
            Prim::Log => self.log(x),
        }
    }

    /// `dst = x op y`.
    fn op(&mut self, op: BinOp, dst: V, x: V, y: V) -> Result<(), Error> {
        Ok(S::bin(self.a, op, dst, x, y)?)
    }

    /// `acc += x · y`, one rounding.
    fn fma(&mut self, acc: V, x: V, y: V) -> Result<(), Error> {
        Ok(S::fma(self.a, acc, x, y)?)
    }

    /// Horner evaluation of `c[0]·x^(n−1) + … + c[n−1]`, each step one FMA.
    fn poly(&mut self, x: V, coeffs: &[f32]) -> Result<V, Error> {
        let mut acc = self.constant(coeffs[0])?;
        let mut next = self.take()?;
        for &c in &coeffs[1..] {
            self.set_constant(next, c)?;
            self.fma(next, acc, x)?;
            std::mem::swap(&mut acc, &mut next);
        }
        self.release(next);
        Ok(acc)
    }

    /// `x` limited to `[lo, hi]`. NaN passes through: `Max` and `Min` give their second
    /// operand when the comparison fails.
    fn clamp(&mut self, x: V, lo: f32, hi: f32) -> Result<V, Error> {
        let d = self.constant(lo)?;
        self.op(BinOp::Max, d, d, x)?;
        let h = self.constant(hi)?;
        self.op(BinOp::Min, d, h, d)?;
        self.release(h);
        Ok(d)
    }

    /// eˣ: x = n·ln2 + r with |r| ≤ ln2/2, eʳ by a degree-7 polynomial, 2ⁿ from bits.
    /// Below −87.3 and above 88.3 the result is that of the bound (no 0 or ∞).
    fn exp(&mut self, x: V) -> Result<V, Error> {
        let r = self.clamp(x, EXP_LO, EXP_HI)?;
        let n = self.constant(std::f32::consts::LOG2_E)?;
        self.op(BinOp::Mul, n, r, n)?;
        S::round(self.a, n, n)?;
        // r = x − n·ln2, with ln2 split so that n·ln2_hi is exact.
        let k = self.constant(-0.693_359_4)?;
        self.fma(r, n, k)?;
        self.set_constant(k, 2.121_944_4e-4)?;
        self.fma(r, n, k)?;
        let p = self.poly(r, &EXP)?;
        self.op(BinOp::Mul, k, r, r)?;
        let one = self.constant(1.0)?;
        self.op(BinOp::Add, r, r, one)?;
        self.release(one);
        self.fma(r, p, k)?;
        self.release(p);
        // 2ⁿ: n + 127 in the exponent field.
        S::to_int(self.a, n, n)?;
        self.set_word(k, 127)?;
        S::int(self.a, IntOp::Add, n, n, k)?;
        S::shift(self.a, Shift::Left, n, n, 23)?;
        self.op(BinOp::Mul, r, r, n)?;
        self.release(k);
        self.release(n);
        Ok(r)
    }

    /// 1 / (1 + e⁻ˣ).
    fn sigmoid(&mut self, x: V) -> Result<V, Error> {
        let neg = self.word(SIGN)?;
        S::bits(self.a, Bits::Xor, neg, neg, x)?;
        let e = self.exp(neg)?;
        self.release(neg);
        let one = self.constant(1.0)?;
        self.op(BinOp::Add, e, e, one)?;
        self.op(BinOp::Div, e, one, e)?;
        self.release(one);
        Ok(e)
    }

    /// tanh x = x · P(x²) / Q(x²) on |x| ≤ 9 (beyond, tanh rounds to ±1 in f32); odd by
    /// construction, and clamped to [−1, 1].
    fn tanh(&mut self, x: V) -> Result<V, Error> {
        let c = self.clamp(x, -9.0, 9.0)?;
        let z = self.take()?;
        self.op(BinOp::Mul, z, c, c)?;
        let p = self.poly(z, &TANH_P)?;
        let q = self.poly(z, &TANH_Q)?;
        self.release(z);
        self.op(BinOp::Mul, p, c, p)?;
        self.release(c);
        self.op(BinOp::Div, p, p, q)?;
        self.release(q);
        let y = self.clamp(p, -1.0, 1.0)?;
        self.release(p);
        Ok(y)
    }

    /// ln x over all of f32, as libm: [`Emitter::log_normal`] for positive normal x;
    /// subnormal x scaled up by 2²³ first; −∞ at zero, NaN below it, and +∞ and NaN
    /// themselves, chosen by selects.
    fn log(&mut self, x: V) -> Result<V, Error> {
        let tiny = self.constant(f32::MIN_POSITIVE)?;
        let t = self.constant(8_388_608.0)?; // 2²³
        self.op(BinOp::Mul, t, x, t)?;
        let normal = self.take()?;
        S::select(self.a, Cmp::Lt, normal, x, tiny, t, x)?;
        let y = self.log_normal(normal)?;
        self.release(normal);
        let zero = self.constant(0.0)?;
        self.set_constant(t, 23.0 * std::f32::consts::LN_2)?;
        let back = self.take()?;
        S::select(self.a, Cmp::Lt, back, x, tiny, t, zero)?;
        self.op(BinOp::Sub, y, y, back)?;
        self.release(tiny);
        self.set_constant(t, f32::INFINITY)?;
        S::select(self.a, Cmp::Lt, back, x, t, y, x)?;
        let positive = back;
        // −∞ + 0·x: −∞ at zero, NaN for NaN.
        self.op(BinOp::Mul, y, x, zero)?;
        self.set_constant(t, f32::NEG_INFINITY)?;
        self.op(BinOp::Add, y, t, y)?;
        self.set_constant(t, f32::NAN)?;
        let rest = self.take()?;
        S::select(self.a, Cmp::Lt, rest, x, zero, t, y)?;
        S::select(self.a, Cmp::Gt, y, x, zero, positive, rest)?;
        self.release(rest);
        self.release(positive);
        self.release(zero);
        self.release(t);
        Ok(y)
    }

    /// ln x for positive normal x: x = m·2ᵉ with m in [√½, √2), ln(m) by a polynomial
    /// in m − 1.
    fn log_normal(&mut self, x: V) -> Result<V, Error> {
        let e = self.take()?;
        S::shift(self.a, Shift::RightArithmetic, e, x, 23)?;
        let k = self.word(127)?;
        S::int(self.a, IntOp::Sub, e, e, k)?;
        S::from_int(self.a, e, e)?;
        let m = self.word(0x007f_ffff)?;
        S::bits(self.a, Bits::And, m, m, x)?;
        self.set_word(k, 0x3f80_0000)?;
        S::bits(self.a, Bits::Or, m, m, k)?; // [1, 2)
        // Keep m in [√½, √2): halve it (and count one more power of two) above √2.
        self.set_constant(k, std::f32::consts::SQRT_2)?;
        let one = self.constant(1.0)?;
        let t = self.constant(0.0)?;
        let bump = self.take()?;
        S::select(self.a, Cmp::Gt, bump, m, k, one, t)?;
        self.op(BinOp::Add, e, e, bump)?;
        self.set_constant(t, 0.5)?;
        self.op(BinOp::Mul, t, m, t)?;
        S::select(self.a, Cmp::Gt, bump, m, k, t, m)?;
        self.release(t);
        self.release(m);
        let f = bump;
        self.op(BinOp::Sub, f, f, one)?;
        self.release(one);
        let z = self.take()?;
        self.op(BinOp::Mul, z, f, f)?;
        let y = self.poly(f, &LOG)?;
        self.op(BinOp::Mul, k, f, z)?;
        self.op(BinOp::Mul, y, y, k)?;
        self.set_constant(k, -2.121_944_4e-4)?;
        self.fma(y, e, k)?;
        self.set_constant(k, -0.5)?;
        self.fma(y, z, k)?;
        self.release(z);
        self.op(BinOp::Add, y, f, y)?;
        self.release(f);
        self.set_constant(k, 0.693_359_4)?;
        self.fma(y, e, k)?;
        self.release(k);
        self.release(e);
        Ok(y)
    }

    /// erf x. For |x| < 1 the Maclaurin series to x²¹; above, 1 − erfc |x| with erfc
    /// from the Chebyshev fit of *Numerical Recipes*. Both are computed and the right one
    /// selected per lane.
    fn erf(&mut self, x: V) -> Result<V, Error> {
        let sq = self.take()?;
        self.op(BinOp::Mul, sq, x, x)?;
        let small = self.poly(sq, &ERF_SERIES)?;
        self.op(BinOp::Mul, small, x, small)?;
        // |x|, clamped to 10: beyond, erfc is far below f32's resolution of 1.
        self.set_word(sq, SIGN)?;
        S::bits(self.a, Bits::AndNot, sq, sq, x)?;
        let ax = self.clamp(sq, 0.0, 10.0)?;
        self.release(sq);
        let one = self.constant(1.0)?;
        let t = self.constant(1.0)?;
        let half = self.constant(0.5)?;
        self.fma(t, half, ax)?;
        self.release(half);
        self.op(BinOp::Div, t, one, t)?;
        let q = self.poly(t, &ERFC)?;
        let sq = self.take()?;
        self.op(BinOp::Mul, sq, ax, ax)?;
        self.op(BinOp::Sub, q, q, sq)?;
        self.release(sq);
        let e = self.exp(q)?;
        self.release(q);
        self.op(BinOp::Mul, e, t, e)?;
        self.op(BinOp::Sub, e, one, e)?;
        let large = e;
        // The sign by a select, as the Cranelift back end (it has no vector copysign).
        let negated = t;
        self.set_word(negated, SIGN)?;
        S::bits(self.a, Bits::Xor, negated, negated, large)?;
        let zero = self.constant(0.0)?;
        let signed = self.take()?;
        S::select(self.a, Cmp::Lt, signed, x, zero, negated, large)?;
        self.release(zero);
        self.release(negated);
        self.release(large);
        let y = self.take()?;
        S::select(self.a, Cmp::Lt, y, ax, one, small, signed)?;
        self.release(signed);
        self.release(one);
        self.release(ax);
        self.release(small);
        Ok(y)
    }
}
