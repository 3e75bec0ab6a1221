//! Element-wise programs: four elements per step as `f32x4`, then the remainder one at a
//! time. Broadcast operands are loaded once, before the loop. Reductions run the same
//! programs and sum their last value.

use super::emit::{Addr, Emit, F32, IVECTOR, LANES, VECTOR};
use crate::ir::kernel::{BinOp, Cmp, Inst, Map, Ptr, Reduce};
use crate::ir::ops::dropout_threshold;
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::{InstBuilder, MemFlagsData, Type, Value, types};

/// What a program needs before its loop: per instruction, an address (loads and stores)
/// or a loaded scalar (broadcasts, dropout seeds).
struct Prepared {
    bases: Vec<Option<Addr>>,
    scalars: Vec<Option<Value>>,
    /// Per dropout mask, the element index its `index` pointer adds to `i`.
    firsts: Vec<Option<Value>>,
}

/// Per instruction of a program, what a step reads besides `i`: addresses of loads and
/// stores, broadcast scalars (or vectors), and the first element index of dropout masks.
#[derive(Clone, Copy)]
struct Operands<'a> {
    bases: &'a [Option<Addr>],
    bcast: &'a [Option<Value>],
    firsts: &'a [Option<Value>],
}

impl Emit<'_, '_> {
    pub fn map(&mut self, m: &Map) {
        let prep = self.prepare(&m.insts, true);
        let vec_len = m.len / LANES * LANES;
        if vec_len > 0 {
            let splats = self.splats(&m.insts, &prep.scalars);
            let iota = self.iota();
            self.for_count(None, vec_len, LANES, |e, i| {
                let at = Operands { bases: &prep.bases, bcast: &splats, firsts: &prep.firsts };
                e.eval(&m.insts, VECTOR, i, at, Some(iota));
            });
        }
        if vec_len < m.len {
            let from = self.iconst(vec_len as i64);
            let to = self.iconst(m.len as i64);
            self.for_range(None, from, to, 1, true, |e, i| {
                let at = Operands { bases: &prep.bases, bcast: &prep.scalars, firsts: &prep.firsts };
                e.eval(&m.insts, F32, i, at, None);
            });
        }
    }

    /// Calls a map generated elsewhere with its operands' addresses for its first row
    /// (the loop it runs whole, if any, at 0).
    pub fn call_map(&mut self, m: &Map, call: super::MapCall) {
        let indices: Vec<&Ptr> = m
            .insts
            .iter()
            .filter_map(|i| if let Inst::Keep { index, .. } = i { Some(index) } else { None })
            .collect();
        let words: Vec<Value> = super::map_operands(m)
            .map(|p| {
                let mut q = p.clone();
                q.terms.retain(|(v, _)| Some(*v) != call.rows);
                if indices.iter().any(|i| std::ptr::eq(*i, p)) {
                    let index = self.element_index(&q);
                    return self.b.ins().imul_imm_s(index, 4);
                }
                let at = self.addr(&q, 0);
                self.b.ins().iadd_imm_s(at.base, at.offset as i64)
            })
            .collect();
        self.call_out(call.entry, call.data, words);
    }

    /// `scale · Σ` of the program's last value over the outer loop and the elements, in
    /// blocks summed in f64 (see `codegen::sum`).
    pub fn reduce(&mut self, r: &Reduce) {
        let prep = self.prepare(&r.insts, false);
        let splats = self.splats(&r.insts, &prep.scalars);
        let acc = self.sum64();
        let last = r.insts.len() - 1;
        self.for_count(Some(r.var), r.outer, 1, |e, _| {
            // Addresses may depend on the outer variable: computed per outer step.
            let bases: Vec<Option<Addr>> = r
                .insts
                .iter()
                .map(|inst| match inst {
                    Inst::Load(p) | Inst::Store(p, _) | Inst::Stream(p, _) => Some(e.addr(p, 0)),
                    _ => None,
                })
                .collect();
            e.sum_terms(acc, r.len, &mut |e, ty, i| {
                let bcast = if ty == VECTOR { &splats } else { &prep.scalars };
                let at = Operands { bases: &bases, bcast, firsts: &prep.firsts };
                let vals = e.eval(&r.insts, ty, i, at, None);
                vals[last].expect("a reduction's value")
            });
        });
        let result = self.total32(acc, r.scale as f64);
        let dst = self.addr(&r.dst, 0);
        self.store(result, dst, 0);
    }

    /// Addresses (when `addresses`) and broadcast scalars of a program.
    fn prepare(&mut self, insts: &[Inst], addresses: bool) -> Prepared {
        let mut bases = Vec::with_capacity(insts.len());
        let mut scalars = Vec::with_capacity(insts.len());
        let mut firsts = Vec::with_capacity(insts.len());
        for inst in insts {
            firsts.push(match inst {
                Inst::Keep { index, .. } => Some(self.element_index(index)),
                _ => None,
            });
            let (base, scalar) = match inst {
                Inst::Load(p) | Inst::Store(p, _) | Inst::Stream(p, _) if addresses => {
                    (Some(self.addr(p, 0)), None)
                }
                Inst::Bcast(p) => {
                    let a = self.addr(p, 0);
                    (None, Some(self.load(F32, a, 0, Some(p))))
                }
                Inst::Keep { seed, .. } => {
                    let a = self.addr(seed, 0);
                    let flags = MemFlagsData::new().with_notrap();
                    (None, Some(self.b.ins().load(types::I32, flags, a.base, a.offset)))
                }
                _ => (None, None),
            };
            bases.push(base);
            scalars.push(scalar);
        }
        Prepared { bases, scalars, firsts }
    }

    /// The vector forms of a program's scalars.
    fn splats(&mut self, insts: &[Inst], scalars: &[Option<Value>]) -> Vec<Option<Value>> {
        insts
            .iter()
            .zip(scalars)
            .map(|(inst, s)| {
                s.map(|s| match inst {
                    Inst::Keep { .. } => self.b.ins().splat(IVECTOR, s),
                    _ => self.splat(VECTOR, s),
                })
            })
            .collect()
    }

    /// The lane numbers `[0, 1, …, LANES - 1]` as an integer vector.
    fn iota(&mut self) -> Value {
        let zero = self.b.ins().iconst(types::I32, 0);
        let mut v = self.b.ins().splat(IVECTOR, zero);
        for lane in 1..LANES as u8 {
            let k = self.b.ins().iconst(types::I32, lane as i64);
            v = self.b.ins().insertlane(v, k, lane);
        }
        v
    }

    /// One step of a program at element `i`, with values of type `ty`; returns every
    /// instruction's value. `iota` (the lane numbers) is given for vector steps.
    fn eval(
        &mut self,
        insts: &[Inst],
        ty: Type,
        i: Value,
        at: Operands,
        iota: Option<Value>,
    ) -> Vec<Option<Value>> {
        let Operands { bases, bcast, firsts } = at;
        let mut vals: Vec<Option<Value>> = Vec::with_capacity(insts.len());
        for (k, inst) in insts.iter().enumerate() {
            let operand = |a: usize| vals[a].expect("operand");
            let v = match inst {
                Inst::Load(p) => {
                    let a = self.at(bases[k].expect("loads have an address"), i);
                    Some(self.load(ty, a, 0, Some(p)))
                }
                Inst::Bcast(_) => bcast[k],
                Inst::Const(c) => Some(self.fconst(ty, *c)),
                Inst::Prim(p, a) => Some(self.prim(ty, *p, operand(*a))),
                Inst::Bin(op, a, b) => Some(self.bin(ty, *op, operand(*a), operand(*b))),
                Inst::Select(c, a, b, t, f) => {
                    Some(self.choose(ty, *c, operand(*a), operand(*b), operand(*t), operand(*f)))
                }
                Inst::Keep { p, .. } => {
                    let seed = bcast[k].expect("the seed is loaded before the loop");
                    let first = firsts[k].expect("the index is computed before the loop");
                    let index = self.b.ins().iadd(i, first);
                    Some(self.keep(ty, seed, index, iota, *p))
                }
                Inst::Store(_, v) | Inst::Stream(_, v) => {
                    let a = self.at(bases[k].expect("stores have an address"), i);
                    let v = operand(*v);
                    self.store(v, a, 0);
                    None
                }
            };
            vals.push(v);
        }
        vals
    }

    /// `if a cmp b { t } else { f }`.
    pub fn choose(&mut self, ty: Type, cmp: Cmp, a: Value, b: Value, t: Value, f: Value) -> Value {
        let cc = match cmp {
            Cmp::Gt => FloatCC::GreaterThan,
            Cmp::Lt => FloatCC::LessThan,
        };
        let cond = self.b.ins().fcmp(cc, a, b);
        self.select(ty, cond, t, f)
    }

    /// The element `p` addresses in its buffer, as an integer: its offset plus its loop
    /// terms.
    fn element_index(&mut self, p: &Ptr) -> Value {
        let mut index = self.iconst(p.offset);
        for (v, coef) in &p.terms {
            let scaled = self.b.ins().imul_imm_s(self.vars[v], *coef);
            index = self.b.ins().iadd(index, scaled);
        }
        index
    }

    /// Dropout's multiplier for element `i` (lanes `i..i + LANES` for vectors): the hash of
    /// [`crate::ir::ops::dropout_hash`] in 32-bit integer arithmetic.
    fn keep(&mut self, ty: Type, seed: Value, i: Value, iota: Option<Value>, p: f32) -> Value {
        let it = Self::int_type(ty);
        let index = self.b.ins().ireduce(types::I32, i);
        let index = match iota {
            Some(iota) => {
                let s = self.b.ins().splat(IVECTOR, index);
                self.b.ins().iadd(s, iota)
            }
            None => index,
        };
        let konst = |e: &mut Self, v: u32| {
            let s = e.b.ins().iconst(types::I32, v as i32 as i64);
            if it == IVECTOR { e.b.ins().splat(IVECTOR, s) } else { s }
        };
        let k1 = konst(self, 0x9e37_79b1);
        let mut h = self.b.ins().imul(index, k1);
        h = self.b.ins().bxor(h, seed);
        for (shift, mul) in [(16, Some(0x85eb_ca6b)), (13, Some(0xc2b2_ae35)), (16, None)] {
            let s = self.b.ins().ushr_imm_u(h, shift);
            h = self.b.ins().bxor(h, s);
            if let Some(m) = mul {
                let k = konst(self, m);
                h = self.b.ins().imul(h, k);
            }
        }
        let threshold = konst(self, dropout_threshold(p));
        let kept = self.b.ins().icmp(IntCC::UnsignedGreaterThanOrEqual, h, threshold);
        let scale = self.fconst(ty, 1.0 / (1.0 - p));
        let zero = self.fconst(ty, 0.0);
        self.select(ty, kept, scale, zero)
    }

    pub fn bin(&mut self, ty: Type, op: BinOp, a: Value, b: Value) -> Value {
        match op {
            BinOp::Add => self.b.ins().fadd(a, b),
            BinOp::Sub => self.b.ins().fsub(a, b),
            BinOp::Mul => self.b.ins().fmul(a, b),
            BinOp::Div => self.b.ins().fdiv(a, b),
            BinOp::Max => self.choose(ty, Cmp::Gt, a, b, a, b),
            BinOp::Min => self.choose(ty, Cmp::Lt, a, b, a, b),
        }
    }
}
