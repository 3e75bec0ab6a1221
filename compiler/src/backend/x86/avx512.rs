//! AVX-512F: thirty-two 512-bit registers. The tile is 6 rows × 4 vectors (6 × 64
//! floats, twenty-four accumulators), with four registers for a step's `b` vectors and
//! one for the broadcast `a` value: per step, 4 loads and 6 broadcasts feed 24 FMAs. The
//! column mask lives in opmask register `k1`, not in a vector register, so an epilogue
//! has all 32 vector registers once the tile is spilled.
//!
//! Code is assembled with EVEX preferred: iced-x86's default (VEX where it exists)
//! silently drops opmasks on xmm and ymm operands and refuses registers 16–31 there.
//! The tiles use only zmm registers, which only EVEX encodes, so this guards any xmm or
//! ymm instruction added later. Memory operands are sized (`zmmword_ptr`, `dword_ptr`):
//! a dword operand on an arithmetic zmm instruction would become a broadcast.

use super::isa::{Bits, Consts, IntOp, Shift, Simd, V};
use crate::ir::kernel::{BinOp, Cmp};
use iced_x86::code_asm::*;

/// The AVX-512 Foundation instruction set.
pub struct Avx512;

const ZMM: [AsmRegisterZmm; 32] = [
    zmm0, zmm1, zmm2, zmm3, zmm4, zmm5, zmm6, zmm7, zmm8, zmm9, zmm10, zmm11, zmm12, zmm13, zmm14, zmm15,
    zmm16, zmm17, zmm18, zmm19, zmm20, zmm21, zmm22, zmm23, zmm24, zmm25, zmm26, zmm27, zmm28, zmm29, zmm30,
    zmm31,
];

fn z(r: V) -> AsmRegisterZmm {
    ZMM[r.0 as usize]
}

impl Simd for Avx512 {
    const NAME: &'static str = "avx512";
    const ISA: super::Isa = super::Isa::Avx512;
    const LANES: usize = 16;
    // 24 accumulators, the `b` vectors and the broadcast value in 32 registers.
    const SHAPES: &'static [(usize, usize)] = &[(6, 4), (12, 2), (24, 1)];
    const FREE: u8 = 32;

    fn assembler() -> Result<CodeAssembler, IcedError> {
        let mut a = CodeAssembler::new(64)?;
        a.set_prefer_vex(false);
        Ok(a)
    }

    fn zero(a: &mut CodeAssembler, r: V) -> Result<(), IcedError> {
        // `vxorps` on zmm registers is AVX512DQ; the integer form is in the foundation.
        a.vpxord(z(r), z(r), z(r))
    }

    fn load(a: &mut CodeAssembler, r: V, m: AsmMemoryOperand, masked: bool) -> Result<(), IcedError> {
        // A masked load leaves the lanes outside `k1` zero and does not read (or fault on)
        // their memory.
        if masked { a.vmovups(z(r).k1().z(), zmmword_ptr(m)) } else { a.vmovups(z(r), zmmword_ptr(m)) }
    }

    fn store(a: &mut CodeAssembler, m: AsmMemoryOperand, r: V, masked: bool) -> Result<(), IcedError> {
        if masked { a.vmovups(zmmword_ptr(m).k1(), z(r)) } else { a.vmovups(zmmword_ptr(m), z(r)) }
    }

    fn stream(a: &mut CodeAssembler, m: AsmMemoryOperand, r: V) -> Result<(), IcedError> {
        a.vmovntps(zmmword_ptr(m), z(r))
    }

    fn broadcast(a: &mut CodeAssembler, r: V, m: AsmMemoryOperand) -> Result<(), IcedError> {
        a.vbroadcastss(z(r), dword_ptr(m))
    }

    fn fma(a: &mut CodeAssembler, acc: V, x: V, y: V) -> Result<(), IcedError> {
        a.vfmadd231ps(z(acc), z(x), z(y))
    }

    fn bin(a: &mut CodeAssembler, op: BinOp, dst: V, x: V, y: V) -> Result<(), IcedError> {
        let (d, x, y) = (z(dst), z(x), z(y));
        match op {
            BinOp::Add => a.vaddps(d, x, y),
            BinOp::Sub => a.vsubps(d, x, y),
            BinOp::Mul => a.vmulps(d, x, y),
            BinOp::Div => a.vdivps(d, x, y),
            // `vmaxps d, x, y` is `x > y ? x : y` (y when either is NaN), as `BinOp::Max`.
            BinOp::Max => a.vmaxps(d, x, y),
            BinOp::Min => a.vminps(d, x, y),
        }
    }

    fn sqrt(a: &mut CodeAssembler, dst: V, x: V) -> Result<(), IcedError> {
        a.vsqrtps(z(dst), z(x))
    }

    fn select(a: &mut CodeAssembler, cmp: Cmp, dst: V, x: V, y: V, t: V, f: V) -> Result<(), IcedError> {
        // Ordered, quiet predicates: false on NaN, as `Cmp::holds`. The comparison goes
        // to `k2`, leaving the column mask in `k1` alone.
        const GT_OQ: u32 = 0x1e;
        const LT_OQ: u32 = 0x11;
        let pred = match cmp {
            Cmp::Gt => GT_OQ,
            Cmp::Lt => LT_OQ,
        };
        a.vcmpps(k2, z(x), z(y), pred)?;
        // Where `k2` is set the second source, elsewhere the first.
        a.vblendmps(z(dst).k2(), z(f), z(t))
    }

    fn set_mask(a: &mut CodeAssembler, _: &mut Consts, lanes: usize) -> Result<(), IcedError> {
        a.mov(eax, (1u32 << lanes) - 1)?;
        a.kmovw(k1, eax)
    }

    fn finish(a: &mut CodeAssembler) -> Result<(), IcedError> {
        // The caller's SSE code would otherwise pay for the dirty upper halves.
        a.vzeroupper()
    }

    fn round(a: &mut CodeAssembler, dst: V, x: V) -> Result<(), IcedError> {
        // `vrndscaleps`: bits 1:0 = 0, nearest even; bit 2 = 0, not MXCSR's mode; bit 3,
        // no precision exception; bits 7:4 = 0, to integers.
        const NEAREST_QUIET: u32 = 0x08;
        a.vrndscaleps(z(dst), z(x), NEAREST_QUIET)
    }

    fn to_int(a: &mut CodeAssembler, dst: V, x: V) -> Result<(), IcedError> {
        a.vcvttps2dq(z(dst), z(x))
    }

    fn from_int(a: &mut CodeAssembler, dst: V, x: V) -> Result<(), IcedError> {
        a.vcvtdq2ps(z(dst), z(x))
    }

    fn int(a: &mut CodeAssembler, op: IntOp, dst: V, x: V, y: V) -> Result<(), IcedError> {
        match op {
            IntOp::Add => a.vpaddd(z(dst), z(x), z(y)),
            IntOp::Sub => a.vpsubd(z(dst), z(x), z(y)),
            IntOp::Mul => a.vpmulld(z(dst), z(x), z(y)),
        }
    }

    fn shift(a: &mut CodeAssembler, op: Shift, dst: V, x: V, bits: u32) -> Result<(), IcedError> {
        match op {
            Shift::Left => a.vpslld(z(dst), z(x), bits),
            Shift::RightArithmetic => a.vpsrad(z(dst), z(x), bits),
            Shift::RightLogical => a.vpsrld(z(dst), z(x), bits),
        }
    }

    fn splat(a: &mut CodeAssembler, dst: V, r: AsmRegister32) -> Result<(), IcedError> {
        a.vpbroadcastd(z(dst), r)
    }

    fn at_least(a: &mut CodeAssembler, dst: V, x: V, y: V, t: V) -> Result<(), IcedError> {
        // `vpcmpud` predicate 5, not less than, into `k2` (the column mask is in `k1`);
        // then `t` where it is set and zero elsewhere.
        const NLT: u32 = 5;
        a.vpcmpud(k2, z(x), z(y), NLT)?;
        a.vmovaps(z(dst).k2().z(), z(t))
    }

    fn bits(a: &mut CodeAssembler, op: Bits, dst: V, x: V, y: V) -> Result<(), IcedError> {
        // The integer forms: `vandps` and its kin on zmm registers need AVX512DQ.
        let (d, x, y) = (z(dst), z(x), z(y));
        match op {
            Bits::And => a.vpandd(d, x, y),
            Bits::Or => a.vpord(d, x, y),
            Bits::Xor => a.vpxord(d, x, y),
            Bits::AndNot => a.vpandnd(d, x, y),
        }
    }
}
