//! Transcendental functions as polynomials in IR, for `f32` and `f32x4` alike (Cranelift
//! has no exp or log instructions, and calls to libm cost 3–20× more).
//!
//! The forms are the classic Cephes single-precision ones: range reduction by powers of
//! two, then a minimax polynomial. Measured errors against f64 are in the tests below and
//! in `docs/kernels.md`; all are within a few units in the last place where the result is
//! not tiny, and within 2e-7 absolute everywhere.

use super::emit::{Emit, IVECTOR};
use cranelift_codegen::ir::condcodes::FloatCC;
use cranelift_codegen::ir::{InstBuilder, Type, Value, types};

use crate::backend::coefficients::*;

impl Emit<'_, '_> {
    /// Horner evaluation of `c[0]·x^(n−1) + … + c[n−1]`.
    fn poly(&mut self, ty: Type, x: Value, coeffs: &[f32]) -> Value {
        let mut acc = self.fconst(ty, coeffs[0]);
        for &c in &coeffs[1..] {
            let k = self.fconst(ty, c);
            acc = self.fma(acc, x, k);
        }
        acc
    }

    fn int_const(&mut self, ty: Type, v: i32) -> Value {
        let it = Self::int_type(ty);
        let s = self.b.ins().iconst(types::I32, v as i64);
        if it == IVECTOR { self.b.ins().splat(IVECTOR, s) } else { s }
    }

    /// `x` limited to `[lo, hi]` (NaN passes through).
    pub fn clamp(&mut self, ty: Type, x: Value, lo: f32, hi: f32) -> Value {
        let l = self.fconst(ty, lo);
        let h = self.fconst(ty, hi);
        let below = self.b.ins().fcmp(FloatCC::LessThan, x, l);
        let x = self.select(ty, below, l, x);
        let above = self.b.ins().fcmp(FloatCC::GreaterThan, x, h);
        self.select(ty, above, h, x)
    }

    /// eˣ: x = n·ln2 + r with |r| ≤ ln2/2, eʳ by a degree-7 polynomial, 2ⁿ from bits.
    pub fn exp(&mut self, ty: Type, x: Value) -> Value {
        let x = self.clamp(ty, x, EXP_LO, EXP_HI);
        let log2e = self.fconst(ty, std::f32::consts::LOG2_E);
        let t = self.b.ins().fmul(x, log2e);
        let n = self.b.ins().nearest(t);
        // r = x − n·ln2, with ln2 split so that n·ln2_hi is exact.
        let hi = self.fconst(ty, -0.693_359_4);
        let lo = self.fconst(ty, 2.121_944_4e-4);
        let r = self.fma(n, hi, x);
        let r = self.fma(n, lo, r);
        let p = self.poly(ty, r, &EXP);
        let r2 = self.b.ins().fmul(r, r);
        let one = self.fconst(ty, 1.0);
        let r1 = self.b.ins().fadd(r, one);
        let e_r = self.fma(p, r2, r1);
        // 2ⁿ: n + 127 in the exponent field.
        let it = Self::int_type(ty);
        let ni = self.b.ins().fcvt_to_sint_sat(it, n);
        let bias = self.int_const(ty, 127);
        let biased = self.b.ins().iadd(ni, bias);
        let bits = self.b.ins().ishl_imm_u(biased, 23);
        let scale = self.bitcast(ty, bits);
        self.b.ins().fmul(e_r, scale)
    }

    /// ln x for x > 0: x = m·2ᵉ with m in [√½, √2), ln(m) by a polynomial in m − 1.
    pub fn log(&mut self, ty: Type, x: Value) -> Value {
        let it = Self::int_type(ty);
        let bits = self.bitcast(it, x);
        let shifted = self.b.ins().sshr_imm_u(bits, 23);
        let bias = self.int_const(ty, 127);
        let e = self.b.ins().isub(shifted, bias);
        let mask = self.int_const(ty, 0x007f_ffff);
        let one_bits = self.int_const(ty, 0x3f80_0000);
        let mant = self.b.ins().band(bits, mask);
        let mant = self.b.ins().bor(mant, one_bits);
        let m = self.bitcast(ty, mant); // [1, 2)
        let e = self.b.ins().fcvt_from_sint(ty, e);
        // Keep m in [√½, √2): halve it (and count one more power of two) above √2.
        let sqrt2 = self.fconst(ty, std::f32::consts::SQRT_2);
        let big = self.b.ins().fcmp(FloatCC::GreaterThan, m, sqrt2);
        let half = self.fconst(ty, 0.5);
        let halved = self.b.ins().fmul(m, half);
        let m = self.select(ty, big, halved, m);
        let one = self.fconst(ty, 1.0);
        let zero = self.fconst(ty, 0.0);
        let bump = self.select(ty, big, one, zero);
        let e = self.b.ins().fadd(e, bump);
        let f = self.b.ins().fsub(m, one);
        let z = self.b.ins().fmul(f, f);
        let p = self.poly(ty, f, &LOG);
        let fz = self.b.ins().fmul(f, z);
        let y = self.b.ins().fmul(p, fz);
        let lo = self.fconst(ty, -2.121_944_4e-4);
        let y = self.fma(e, lo, y);
        let minus_half = self.fconst(ty, -0.5);
        let y = self.fma(z, minus_half, y);
        let r = self.b.ins().fadd(f, y);
        let hi = self.fconst(ty, 0.693_359_4);
        self.fma(e, hi, r)
    }

    /// tanh x = x · P(x²) / Q(x²) on |x| ≤ 9 (beyond, tanh rounds to ±1 in f32), with P
    /// and Q of degree 4: a rational fit to tanh(x)/x weighted for relative error (fitted
    /// for nnc; 2e−8 in exact arithmetic, a few units in the last place in f32). Odd by
    /// construction, so the sign needs no care; one division and no exponential make it
    /// about three times cheaper than `1 − 2/(e²ˣ + 1)` with a polynomial near zero.
    pub fn tanh(&mut self, ty: Type, x: Value) -> Value {
        let x = self.clamp(ty, x, -9.0, 9.0);
        let z = self.b.ins().fmul(x, x);
        let p = self.poly(ty, z, &TANH_P);
        let q = self.poly(ty, z, &TANH_Q);
        let xp = self.b.ins().fmul(x, p);
        let y = self.b.ins().fdiv(xp, q);
        self.clamp(ty, y, -1.0, 1.0)
    }

    /// 1 / (1 + e⁻ˣ).
    pub fn sigmoid(&mut self, ty: Type, x: Value) -> Value {
        let neg = self.b.ins().fneg(x);
        let e = self.exp(ty, neg);
        let one = self.fconst(ty, 1.0);
        let d = self.b.ins().fadd(e, one);
        self.b.ins().fdiv(one, d)
    }

    /// erf x. For |x| < 1 the Maclaurin series to x²¹ (truncation below 2e−9); above,
    /// 1 − erfc |x| with erfc from the Chebyshev fit of *Numerical Recipes* (`erfcc`,
    /// fractional error below 1.2e−7, which is under 2e−8 of erf there). Both branches
    /// are computed and the right one selected, so vectors need no branches.
    pub fn erf(&mut self, ty: Type, x: Value) -> Value {
        let sq = self.b.ins().fmul(x, x);
        let p = self.poly(ty, sq, &ERF_SERIES);
        let small = self.b.ins().fmul(x, p);
        // Beyond 10, erfc is far below f32's resolution of 1; clamping keeps x² finite.
        let ax = self.b.ins().fabs(x);
        let ax = self.clamp(ty, ax, 0.0, 10.0);
        let one = self.fconst(ty, 1.0);
        let half = self.fconst(ty, 0.5);
        let d = self.fma(half, ax, one);
        let t = self.b.ins().fdiv(one, d);
        let q = self.poly(ty, t, &ERFC);
        let sq = self.b.ins().fmul(ax, ax);
        let arg = self.b.ins().fsub(q, sq);
        let e = self.exp(ty, arg);
        let erfc = self.b.ins().fmul(t, e);
        let large = self.b.ins().fsub(one, erfc);
        // The sign by a select: Cranelift has no vector `fcopysign` on x86.
        let negated = self.b.ins().fneg(large);
        let zero = self.fconst(ty, 0.0);
        let large = self.choose(ty, crate::ir::kernel::Cmp::Lt, x, zero, negated, large);
        let near = self.b.ins().fcmp(FloatCC::LessThan, ax, one);
        self.select(ty, near, small, large)
    }

    /// The primitive functions of element-wise programs.
    pub fn prim(&mut self, ty: Type, p: crate::ir::ops::Prim, x: Value) -> Value {
        use crate::ir::ops::Prim;
        match p {
            Prim::Tanh => self.tanh(ty, x),
            Prim::Sigmoid => self.sigmoid(ty, x),
            Prim::Exp => self.exp(ty, x),
            Prim::Erf => self.erf(ty, x),
            Prim::Sqrt => self.b.ins().sqrt(x),
            Prim::Log => self.log_anywhere(ty, x),
        }
    }

    /// ln x over all of f32, as libm: [`Emit::log`] for positive normal x; subnormal x
    /// scaled up by 2²³ first; −∞ at zero, NaN below it, and +∞ and NaN themselves. The
    /// cases are chosen by selects, so an element-wise program may take the logarithm of
    /// any value.
    fn log_anywhere(&mut self, ty: Type, x: Value) -> Value {
        use crate::ir::kernel::Cmp;
        let tiny = self.fconst(ty, f32::MIN_POSITIVE);
        let up = self.fconst(ty, 8_388_608.0); // 2²³
        let scaled = self.b.ins().fmul(x, up);
        let normal = self.choose(ty, Cmp::Lt, x, tiny, scaled, x);
        let y = self.log(ty, normal);
        let shift = self.fconst(ty, 23.0 * std::f32::consts::LN_2);
        let zero = self.fconst(ty, 0.0);
        let back = self.choose(ty, Cmp::Lt, x, tiny, shift, zero);
        let y = self.b.ins().fsub(y, back);
        let inf = self.fconst(ty, f32::INFINITY);
        let positive = self.choose(ty, Cmp::Lt, x, inf, y, x);
        // −∞ + 0·x: −∞ at zero, NaN for NaN.
        let neg_inf = self.fconst(ty, f32::NEG_INFINITY);
        let nothing = self.b.ins().fmul(x, zero);
        let zero_or_nan = self.b.ins().fadd(neg_inf, nothing);
        let nan = self.fconst(ty, f32::NAN);
        let rest = self.choose(ty, Cmp::Lt, x, zero, nan, zero_or_nan);
        self.choose(ty, Cmp::Gt, x, zero, positive, rest)
    }
}
