//! A product's epilogue on one vector of a spilled tile. Its values and the temporaries
//! of its transcendental functions (`math.rs`) share the vector registers that do not
//! hold the column mask: each value takes a register when it is computed and gives it
//! back after its last use, so an epilogue fits when what is live at once fits, however
//! long it is. [`fits`] generates the epilogue once to find out, so the tiles refuse
//! exactly the epilogues this allocation cannot place.

use super::isa::{Consts, Simd, V};
use super::product::MAX_OPERANDS;
use crate::ir::kernel::EInst;
use iced_x86::code_asm::*;
use std::marker::PhantomData;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Asm(#[from] IcedError),
    #[error("the epilogue needs more than the {0} vector registers a tile has free")]
    Registers(u8),
}

/// The assembler with the tile's constants and the registers not in use.
pub struct Emitter<'a, S> {
    pub a: &'a mut CodeAssembler,
    pub consts: &'a mut Consts,
    /// Bit `r` set: `V(r)` is free.
    free: u64,
    _isa: PhantomData<S>,
}

impl<'a, S: Simd> Emitter<'a, S> {
    /// All of `S::FREE` registers free.
    pub fn new(a: &'a mut CodeAssembler, consts: &'a mut Consts) -> Self {
        Emitter { a, consts, free: (1u64 << S::FREE) - 1, _isa: PhantomData }
    }

    /// A free register, now in use.
    pub fn take(&mut self) -> Result<V, Error> {
        if self.free == 0 {
            return Err(Error::Registers(S::FREE));
        }
        let r = self.free.trailing_zeros();
        self.free &= !(1 << r);
        Ok(V(r as u8))
    }

    /// Gives back a register taken before.
    pub fn release(&mut self, r: V) {
        debug_assert!(self.free & (1 << r.0) == 0, "{r:?} released twice");
        self.free |= 1 << r.0;
    }

    /// `r = bits` in every lane (read from the tile's constants).
    pub fn set_word(&mut self, r: V, bits: u32) -> Result<(), Error> {
        let label = self.consts.get(self.a, &[bits]);
        Ok(S::broadcast(self.a, r, label.into())?)
    }

    pub fn set_constant(&mut self, r: V, x: f32) -> Result<(), Error> {
        self.set_word(r, x.to_bits())
    }

    /// A new register holding `bits` in every lane.
    pub fn word(&mut self, bits: u32) -> Result<V, Error> {
        let r = self.take()?;
        self.set_word(r, bits)?;
        Ok(r)
    }

    /// `r8 =` the address of the next epilogue operand.
    fn operand(&mut self, slot: &mut i32) -> Result<(), Error> {
        self.a.mov(r8, qword_ptr(rcx + 8 * *slot))?;
        *slot += 1;
        Ok(())
    }

    /// A new register holding `x` in every lane.
    pub fn constant(&mut self, x: f32) -> Result<V, Error> {
        self.word(x.to_bits())
    }
}

/// The values an instruction reads.
fn reads(inst: &EInst) -> Vec<usize> {
    match *inst {
        EInst::Acc | EInst::Row(_) | EInst::Col(_) | EInst::Elem(..) | EInst::Const(_) => vec![],
        EInst::Prim(_, x) => vec![x],
        EInst::Bin(_, x, y) => vec![x, y],
        EInst::Select(_, x, y, t, f) => vec![x, y, t, f],
    }
}

/// Per value, the instruction after which its register is free again: its last reader,
/// or itself if nothing reads it. The result is never freed.
fn last_uses(epilogue: &[EInst]) -> Vec<usize> {
    let mut last: Vec<usize> = (0..epilogue.len()).collect();
    for (i, inst) in epilogue.iter().enumerate() {
        for x in reads(inst) {
            last[x] = i;
        }
    }
    if let Some(result) = last.last_mut() {
        *result = usize::MAX;
    }
    last
}

/// Evaluates `epilogue` for the vector at row `r`, column `col` of the tile, the
/// accumulator read from `acc`; returns the register of the result (`None` for an empty
/// epilogue). Operand `j` (the `j`-th `Row`, `Col` or `Elem`) has its address for the
/// tile's first row and column at `[rcx + 8j]`.
pub fn apply<S: Simd>(
    e: &mut Emitter<'_, S>,
    epilogue: &[EInst],
    acc: AsmMemoryOperand,
    (r, col): (usize, usize),
    masked: bool,
) -> Result<Option<V>, Error> {
    let last = last_uses(epilogue);
    let mut regs: Vec<V> = Vec::with_capacity(epilogue.len());
    let mut slot = 0;
    for (i, inst) in epilogue.iter().enumerate() {
        let mut dying = reads(inst);
        dying.sort_unstable();
        dying.dedup();
        dying.retain(|&x| last[x] == i);
        // An operation of one instruction may write a register it reads; a select (two
        // instructions) and a function may not, so their operands are freed after.
        let early = matches!(inst, EInst::Bin(..));
        if early {
            dying.iter().for_each(|&x| e.release(regs[x]));
        }
        let d = match *inst {
            EInst::Acc => {
                let d = e.take()?;
                S::load(e.a, d, acc, false)?;
                d
            }
            EInst::Row(_) => {
                let d = e.take()?;
                e.operand(&mut slot)?;
                S::broadcast(e.a, d, r8 + 4 * r as i32)?;
                d
            }
            EInst::Col(_) => {
                let d = e.take()?;
                e.operand(&mut slot)?;
                S::load(e.a, d, r8 + 4 * col as i32, masked)?;
                d
            }
            EInst::Elem(_, ld) => {
                let d = e.take()?;
                e.operand(&mut slot)?;
                S::load(e.a, d, r8 + ((r * ld * 4) as i32 + 4 * col as i32), masked)?;
                d
            }
            EInst::Const(x) => e.constant(x)?,
            EInst::Prim(p, x) => e.prim(p, regs[x])?,
            EInst::Bin(op, x, y) => {
                let d = e.take()?;
                S::bin(e.a, op, d, regs[x], regs[y])?;
                d
            }
            EInst::Select(cmp, x, y, t, f) => {
                let d = e.take()?;
                S::select(e.a, cmp, d, regs[x], regs[y], regs[t], regs[f])?;
                d
            }
        };
        regs.push(d);
        if !early {
            dying.iter().for_each(|&x| e.release(regs[x]));
        }
        if last[i] == i {
            e.release(d);
        }
    }
    Ok(regs.last().copied())
}

/// Whether the tiles can apply `epilogue`: its operand addresses fit the table the
/// product passes and an instruction's displacement, and its values fit the registers.
pub fn fits<S: Simd>(epilogue: &[EInst]) -> bool {
    let mut operands = 0;
    for inst in epilogue {
        match inst {
            EInst::Elem(_, ld) => {
                operands += 1;
                let rows = S::SHAPES.iter().map(|s| s.0).max().unwrap_or(1);
                if super::micro::displacement(*ld * 4 * rows).is_none() {
                    return false;
                }
            }
            EInst::Row(_) | EInst::Col(_) => operands += 1,
            EInst::Acc | EInst::Const(_) | EInst::Prim(..) | EInst::Bin(..) | EInst::Select(..) => {}
        }
    }
    if operands > MAX_OPERANDS {
        return false;
    }
    let Ok(mut a) = CodeAssembler::new(64) else { return false };
    let mut consts = Consts::default();
    let mut e = Emitter::<S>::new(&mut a, &mut consts);
    apply(&mut e, epilogue, rsp + 0, (0, 0), false).is_ok()
}
