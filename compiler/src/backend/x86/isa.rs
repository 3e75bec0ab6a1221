//! The instruction-set interface of the x86 back end: the few vector instructions that a
//! product's micro-kernel and its epilogue are made of. The generators (`micro.rs`) are
//! written once against [`Simd`]; each instruction set implements it in its own file, so
//! adding one (AVX-512F beside AVX2) touches no generator.

use crate::ir::kernel::{BinOp, Cmp};
use iced_x86::code_asm::{AsmMemoryOperand, AsmRegister32, CodeAssembler, CodeLabel, IcedError};

/// A vector register, by number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct V(pub u8);

/// Constants the generated code reads (rip-relative), emitted after its last instruction.
#[derive(Default)]
pub struct Consts {
    entries: Vec<(Vec<u32>, CodeLabel)>,
}

impl Consts {
    /// The label of `words`, emitted once however often it is asked for.
    pub fn get(&mut self, a: &mut CodeAssembler, words: &[u32]) -> CodeLabel {
        if let Some((_, l)) = self.entries.iter().find(|(w, _)| w == words) {
            return *l;
        }
        let label = a.create_label();
        self.entries.push((words.to_vec(), label));
        label
    }

    /// Emits every constant. They are read once per tile, so their alignment (whatever
    /// the code before them leaves) does not matter.
    pub fn emit(mut self, a: &mut CodeAssembler) -> Result<(), IcedError> {
        for (words, label) in &mut self.entries {
            a.set_label(label)?;
            a.dd(words)?;
        }
        Ok(())
    }
}

/// One x86 vector instruction set, as the generators need it.
pub trait Simd {
    /// Its name, as `--isa` spells it.
    const NAME: &'static str;
    /// The set, for the back end's routines compiled in Rust (one-hot products, column
    /// sums), which run on the same set as the generated code.
    const ISA: super::Isa;
    /// `f32` lanes of a vector.
    const LANES: usize;
    /// The register tiles, `(rows, vectors per row)`, widest first (see
    /// [`super::micro::shape`]).
    const SHAPES: &'static [(usize, usize)];
    /// Vector registers an epilogue may use once the tile is spilled (those not holding
    /// the column mask).
    const FREE: u8;

    /// An assembler for the set's code: by default iced-x86's, which prefers VEX
    /// encodings.
    fn assembler() -> Result<CodeAssembler, IcedError> {
        CodeAssembler::new(64)
    }

    /// `r = 0`.
    fn zero(a: &mut CodeAssembler, r: V) -> Result<(), IcedError>;
    /// Loads a vector; `masked`, only the lanes of the current mask ([`Simd::set_mask`]),
    /// the others read as 0 and their memory is not touched.
    fn load(a: &mut CodeAssembler, r: V, m: AsmMemoryOperand, masked: bool) -> Result<(), IcedError>;
    /// Stores a vector; `masked`, only the lanes of the current mask.
    fn store(a: &mut CodeAssembler, m: AsmMemoryOperand, r: V, masked: bool) -> Result<(), IcedError>;
    /// `[m] = r` past the caches.
    fn stream(a: &mut CodeAssembler, m: AsmMemoryOperand, r: V) -> Result<(), IcedError>;
    /// `r = [m]` in every lane.
    fn broadcast(a: &mut CodeAssembler, r: V, m: AsmMemoryOperand) -> Result<(), IcedError>;
    /// `acc += x · y`, one rounding.
    fn fma(a: &mut CodeAssembler, acc: V, x: V, y: V) -> Result<(), IcedError>;
    /// `dst = x op y`, as [`BinOp`] defines it (`Max` is `x > y ? x : y`); `dst` may be
    /// `x` or `y`.
    fn bin(a: &mut CodeAssembler, op: BinOp, dst: V, x: V, y: V) -> Result<(), IcedError>;
    fn sqrt(a: &mut CodeAssembler, dst: V, x: V) -> Result<(), IcedError>;
    /// `dst = x cmp y ? t : f`, false when either is NaN; `dst` differs from all four.
    fn select(a: &mut CodeAssembler, cmp: Cmp, dst: V, x: V, y: V, t: V, f: V) -> Result<(), IcedError>;
    /// Makes the mask of masked loads and stores the first `lanes` lanes.
    fn set_mask(a: &mut CodeAssembler, consts: &mut Consts, lanes: usize) -> Result<(), IcedError>;
    /// Leaves the vector unit as the caller expects it (`vzeroupper` after 256-bit code).
    fn finish(a: &mut CodeAssembler) -> Result<(), IcedError>;

    // The instructions of the transcendental functions (`math.rs`), which take floats
    // apart: lanes read as `i32` or as raw bits. Each is one instruction; `dst` may be
    // any operand.

    /// `dst = x` rounded to an integral value, ties to even, whatever the rounding mode
    /// (`vroundps dst, x, 8`: nearest, precision exception suppressed).
    fn round(a: &mut CodeAssembler, dst: V, x: V) -> Result<(), IcedError>;
    /// `dst = x` as `i32`, truncated toward zero; NaN and lanes out of range give
    /// `i32::MIN` (`vcvttps2dq`).
    fn to_int(a: &mut CodeAssembler, dst: V, x: V) -> Result<(), IcedError>;
    /// `dst = x`'s `i32` lanes as floats, rounded to nearest (`vcvtdq2ps`).
    fn from_int(a: &mut CodeAssembler, dst: V, x: V) -> Result<(), IcedError>;
    /// `dst = x op y` in `i32` lanes, wrapping (`vpaddd`, `vpsubd`, `vpmulld`).
    fn int(a: &mut CodeAssembler, op: IntOp, dst: V, x: V, y: V) -> Result<(), IcedError>;
    /// `dst = x` shifted by `bits` (below 32) in each 32-bit lane (`vpslld`, `vpsrad`,
    /// `vpsrld` with an immediate).
    fn shift(a: &mut CodeAssembler, op: Shift, dst: V, x: V, bits: u32) -> Result<(), IcedError>;

    // A dropout mask's instructions (`map.rs`), which hash each element's index.

    /// `dst = r` in every 32-bit lane.
    fn splat(a: &mut CodeAssembler, dst: V, r: AsmRegister32) -> Result<(), IcedError>;
    /// `dst = x ≥ y ? t : 0` per lane, `x` and `y` unsigned 32-bit integers; `dst` is
    /// neither `x` nor `t`.
    fn at_least(a: &mut CodeAssembler, dst: V, x: V, y: V, t: V) -> Result<(), IcedError>;
    /// `dst = x op y` on the bits of the lanes (`vandps`, `vorps`, `vxorps`, `vandnps`).
    fn bits(a: &mut CodeAssembler, op: Bits, dst: V, x: V, y: V) -> Result<(), IcedError>;
}

/// Integer arithmetic on 32-bit lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntOp {
    Add,
    Sub,
    /// The low 32 bits of the product.
    Mul,
}

/// Shifts of 32-bit lanes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shift {
    /// Left, shifting in zeros.
    Left,
    /// Right, shifting in copies of the sign bit.
    RightArithmetic,
    /// Right, shifting in zeros.
    RightLogical,
}

/// Bitwise operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bits {
    And,
    Or,
    Xor,
    /// `!x & y`.
    AndNot,
}
