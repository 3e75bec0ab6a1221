//! AVX2 with FMA: sixteen 256-bit registers. The tile is 6 rows × 2 vectors (twelve
//! accumulators), which leaves two registers for a step's `b` vectors, one for the
//! broadcast `a` value and one for the column mask of `vmaskmovps` — measured at 98 % of
//! the FMA peak on a packed panel in L1.

use super::isa::{Bits, Consts, IntOp, Shift, Simd, V};
use crate::ir::kernel::{BinOp, Cmp};
use iced_x86::code_asm::*;

/// The AVX2 + FMA instruction set.
pub struct Avx2;

const YMM: [AsmRegisterYmm; 16] =
    [ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14, ymm15];
/// The register holding the column mask.
const MASK: AsmRegisterYmm = ymm15;

fn y(r: V) -> AsmRegisterYmm {
    YMM[r.0 as usize]
}

/// The low half of `V(r)`.
fn x(r: V) -> AsmRegisterXmm {
    [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14, xmm15]
        [r.0 as usize]
}

impl Simd for Avx2 {
    const NAME: &'static str = "avx2";
    const ISA: super::Isa = super::Isa::Avx2;
    const LANES: usize = 8;
    // Accumulators, the `b` vectors and the broadcast value in 15 registers (the 16th
    // holds the column mask).
    const SHAPES: &'static [(usize, usize)] = &[(6, 2), (12, 1)];
    const FREE: u8 = 15;

    fn zero(a: &mut CodeAssembler, r: V) -> Result<(), IcedError> {
        a.vxorps(y(r), y(r), y(r))
    }

    fn load(a: &mut CodeAssembler, r: V, m: AsmMemoryOperand, masked: bool) -> Result<(), IcedError> {
        if masked { a.vmaskmovps(y(r), MASK, ymmword_ptr(m)) } else { a.vmovups(y(r), ymmword_ptr(m)) }
    }

    fn store(a: &mut CodeAssembler, m: AsmMemoryOperand, r: V, masked: bool) -> Result<(), IcedError> {
        if masked { a.vmaskmovps(ymmword_ptr(m), MASK, y(r)) } else { a.vmovups(ymmword_ptr(m), y(r)) }
    }

    fn stream(a: &mut CodeAssembler, m: AsmMemoryOperand, r: V) -> Result<(), IcedError> {
        a.vmovntps(ymmword_ptr(m), y(r))
    }

    fn broadcast(a: &mut CodeAssembler, r: V, m: AsmMemoryOperand) -> Result<(), IcedError> {
        a.vbroadcastss(y(r), dword_ptr(m))
    }

    fn fma(a: &mut CodeAssembler, acc: V, x: V, y_: V) -> Result<(), IcedError> {
        a.vfmadd231ps(y(acc), y(x), y(y_))
    }

    fn bin(a: &mut CodeAssembler, op: BinOp, dst: V, x: V, y_: V) -> Result<(), IcedError> {
        let (d, x, y_) = (y(dst), y(x), y(y_));
        match op {
            BinOp::Add => a.vaddps(d, x, y_),
            BinOp::Sub => a.vsubps(d, x, y_),
            BinOp::Mul => a.vmulps(d, x, y_),
            BinOp::Div => a.vdivps(d, x, y_),
            // `vmaxps d, x, y` is `x > y ? x : y` (y when either is NaN), as `BinOp::Max`.
            BinOp::Max => a.vmaxps(d, x, y_),
            BinOp::Min => a.vminps(d, x, y_),
        }
    }

    fn sqrt(a: &mut CodeAssembler, dst: V, x: V) -> Result<(), IcedError> {
        a.vsqrtps(y(dst), y(x))
    }

    fn select(a: &mut CodeAssembler, cmp: Cmp, dst: V, x: V, y_: V, t: V, f: V) -> Result<(), IcedError> {
        // Ordered, quiet predicates: false on NaN, as `Cmp::holds`.
        const GT_OQ: u32 = 0x1e;
        const LT_OQ: u32 = 0x11;
        let pred = match cmp {
            Cmp::Gt => GT_OQ,
            Cmp::Lt => LT_OQ,
        };
        a.vcmpps(y(dst), y(x), y(y_), pred)?;
        a.vblendvps(y(dst), y(f), y(t), y(dst))
    }

    fn set_mask(a: &mut CodeAssembler, consts: &mut Consts, lanes: usize) -> Result<(), IcedError> {
        let words: Vec<u32> = (0..Self::LANES).map(|l| if l < lanes { u32::MAX } else { 0 }).collect();
        let label = consts.get(a, &words);
        a.vmovups(MASK, ymmword_ptr(label))
    }

    fn finish(a: &mut CodeAssembler) -> Result<(), IcedError> {
        a.vzeroupper()
    }

    fn round(a: &mut CodeAssembler, dst: V, x: V) -> Result<(), IcedError> {
        // Bits 1:0 = 0, nearest even; bit 2 = 0, not MXCSR's mode; bit 3, no precision
        // exception.
        const NEAREST_QUIET: u32 = 0x08;
        a.vroundps(y(dst), y(x), NEAREST_QUIET)
    }

    fn to_int(a: &mut CodeAssembler, dst: V, x: V) -> Result<(), IcedError> {
        a.vcvttps2dq(y(dst), y(x))
    }

    fn from_int(a: &mut CodeAssembler, dst: V, x: V) -> Result<(), IcedError> {
        a.vcvtdq2ps(y(dst), y(x))
    }

    fn int(a: &mut CodeAssembler, op: IntOp, dst: V, x: V, y_: V) -> Result<(), IcedError> {
        match op {
            IntOp::Add => a.vpaddd(y(dst), y(x), y(y_)),
            IntOp::Sub => a.vpsubd(y(dst), y(x), y(y_)),
            IntOp::Mul => a.vpmulld(y(dst), y(x), y(y_)),
        }
    }

    fn shift(a: &mut CodeAssembler, op: Shift, dst: V, x: V, bits: u32) -> Result<(), IcedError> {
        match op {
            Shift::Left => a.vpslld(y(dst), y(x), bits),
            Shift::RightArithmetic => a.vpsrad(y(dst), y(x), bits),
            Shift::RightLogical => a.vpsrld(y(dst), y(x), bits),
        }
    }

    fn splat(a: &mut CodeAssembler, dst: V, r: AsmRegister32) -> Result<(), IcedError> {
        a.vmovd(x(dst), r)?;
        a.vpbroadcastd(y(dst), x(dst))
    }

    fn at_least(a: &mut CodeAssembler, dst: V, x: V, y_: V, t: V) -> Result<(), IcedError> {
        // No unsigned compare: `x ≥ y` where `max(x, y) = x`, all ones there, masking `t`.
        a.vpmaxud(y(dst), y(x), y(y_))?;
        a.vpcmpeqd(y(dst), y(dst), y(x))?;
        a.vandps(y(dst), y(dst), y(t))
    }

    fn bits(a: &mut CodeAssembler, op: Bits, dst: V, x: V, y_: V) -> Result<(), IcedError> {
        let (d, x, y_) = (y(dst), y(x), y(y_));
        match op {
            Bits::And => a.vandps(d, x, y_),
            Bits::Or => a.vorps(d, x, y_),
            Bits::Xor => a.vxorps(d, x, y_),
            Bits::AndNot => a.vandnps(d, x, y_),
        }
    }
}
