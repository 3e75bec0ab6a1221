//! Element-wise programs: four elements per step as `f32x4`, then the remainder one at a
//! time. Broadcast operands are loaded once, before the loop.

use super::emit::{Emit, F32, F32X4};
use crate::kernel::{BinOp, Inst, Map};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

impl Emit<'_, '_> {
    pub fn map(&mut self, m: &Map) {
        // Addresses and broadcasts do not depend on the element index: compute them once.
        let mut bases = Vec::with_capacity(m.insts.len());
        let mut scalars = Vec::with_capacity(m.insts.len());
        for inst in &m.insts {
            match inst {
                Inst::Load(p) | Inst::Store(p, _) => {
                    bases.push(Some(self.addr(p, 0)));
                    scalars.push(None);
                }
                Inst::Bcast(p) => {
                    let a = self.addr(p, 0);
                    scalars.push(Some(self.load(F32, a, 0, Some(p))));
                    bases.push(None);
                }
                _ => {
                    bases.push(None);
                    scalars.push(None);
                }
            }
        }
        let vec_len = m.len / 4 * 4;
        if vec_len > 0 {
            let splats: Vec<Option<Value>> =
                scalars.iter().map(|s| s.map(|s| self.splat(F32X4, s))).collect();
            self.for_count(None, vec_len, 4, |e, i| e.map_step(m, F32X4, i, &bases, &splats));
        }
        if vec_len < m.len {
            let from = self.iconst(vec_len as i64);
            let to = self.iconst(m.len as i64);
            self.for_range(None, from, to, 1, true, |e, i| e.map_step(m, F32, i, &bases, &scalars));
        }
    }

    /// One step of the program at element `i`, with values of type `ty`.
    fn map_step(
        &mut self,
        m: &Map,
        ty: Type,
        i: Value,
        bases: &[Option<super::emit::Addr>],
        bcast: &[Option<Value>],
    ) {
        let mut vals: Vec<Option<Value>> = Vec::with_capacity(m.insts.len());
        for (k, inst) in m.insts.iter().enumerate() {
            let v = match inst {
                Inst::Load(p) => {
                    let a = self.at(bases[k].expect("loads have an address"), i);
                    Some(self.load(ty, a, 0, Some(p)))
                }
                Inst::Bcast(_) => bcast[k],
                Inst::Const(c) => Some(self.fconst(ty, *c)),
                Inst::Unary(f, a) => Some(self.unary(ty, *f, vals[*a].expect("operand"))),
                Inst::Sqrt(a) => Some(self.b.ins().sqrt(vals[*a].expect("operand"))),
                Inst::Bin(op, a, b) => {
                    Some(self.bin(ty, *op, vals[*a].expect("operand"), vals[*b].expect("operand")))
                }
                Inst::Store(_, v) => {
                    let a = self.at(bases[k].expect("stores have an address"), i);
                    let v = vals[*v].expect("operand");
                    self.store(v, a, 0);
                    None
                }
            };
            vals.push(v);
        }
    }

    pub fn bin(&mut self, ty: Type, op: BinOp, a: Value, b: Value) -> Value {
        match op {
            BinOp::Add => self.b.ins().fadd(a, b),
            BinOp::Sub => self.b.ins().fsub(a, b),
            BinOp::Mul => self.b.ins().fmul(a, b),
            BinOp::Div => self.b.ins().fdiv(a, b),
            BinOp::Max => self.max(ty, a, b),
        }
    }
}
