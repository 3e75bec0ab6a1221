//! Writing a [`Map`](super::Map) or [`Reduce`](super::Reduce) program by name rather than
//! by instruction index: each method appends one instruction and returns its value, so
//! a program reads as the formula it computes and inserting a step renumbers nothing.

use super::{BinOp, Inst, Prim, Ptr};

/// A value of the program being written: the index of the instruction that computes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Val(pub usize);

/// An element-wise program under construction.
#[derive(Default)]
pub struct Insts {
    insts: Vec<Inst>,
}

impl Insts {
    fn push(&mut self, inst: Inst) -> Val {
        self.insts.push(inst);
        Val(self.insts.len() - 1)
    }

    /// The element at `p + i`.
    pub fn load(&mut self, p: Ptr) -> Val {
        self.push(Inst::Load(p))
    }

    /// The element at `p`, the same for every `i`.
    pub fn bcast(&mut self, p: Ptr) -> Val {
        self.push(Inst::Bcast(p))
    }

    pub fn constant(&mut self, c: f32) -> Val {
        self.push(Inst::Const(c))
    }

    pub fn prim(&mut self, p: Prim, a: Val) -> Val {
        self.push(Inst::Prim(p, a.0))
    }

    pub fn bin(&mut self, op: BinOp, a: Val, b: Val) -> Val {
        self.push(Inst::Bin(op, a.0, b.0))
    }

    pub fn add(&mut self, a: Val, b: Val) -> Val {
        self.bin(BinOp::Add, a, b)
    }

    pub fn sub(&mut self, a: Val, b: Val) -> Val {
        self.bin(BinOp::Sub, a, b)
    }

    pub fn mul(&mut self, a: Val, b: Val) -> Val {
        self.bin(BinOp::Mul, a, b)
    }

    pub fn div(&mut self, a: Val, b: Val) -> Val {
        self.bin(BinOp::Div, a, b)
    }

    /// `a · c` for a constant `c`.
    pub fn scale(&mut self, a: Val, c: f32) -> Val {
        let c = self.constant(c);
        self.mul(a, c)
    }

    /// Dropout's multiplier for the element `index + i` addresses under the seed at
    /// `seed` (see [`Inst::Keep`]).
    pub fn keep(&mut self, seed: Ptr, p: f32, index: Ptr) -> Val {
        self.push(Inst::Keep { seed, p, index })
    }

    /// Stores `v` to `p + i`.
    pub fn store(&mut self, p: Ptr, v: Val) {
        self.push(Inst::Store(p, v.0));
    }

    /// The program; for a reduction, the last value is the one summed.
    pub fn finish(self) -> Vec<Inst> {
        self.insts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::TensorId;

    /// Values name the instructions that compute them, in order.
    #[test]
    fn values_are_instruction_indices() {
        let (x, y) = (Ptr::tensor(TensorId(0)), Ptr::tensor(TensorId(1)));
        let mut p = Insts::default();
        let a = p.load(x.clone());
        let two = p.scale(a, 2.0);
        let root = p.prim(Prim::Sqrt, two);
        p.store(y.clone(), root);
        assert_eq!(
            p.finish(),
            vec![
                Inst::Load(x),
                Inst::Const(2.0),
                Inst::Bin(BinOp::Mul, 0, 1),
                Inst::Prim(Prim::Sqrt, 2),
                Inst::Store(y, 3)
            ]
        );
    }
}
