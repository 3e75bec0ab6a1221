//! The emitter: Cranelift IR helpers shared by every primitive — counted loops with
//! block parameters, addresses from the memory plan, loads and stores with the right
//! flags, constants and FMA for both `f32` and vectors of [`LANES`] floats.

use crate::ir::kernel::{Buffer, Ptr, Var};
use crate::passes::memory::MemoryPlan;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{
    AbiParam, InstBuilder, MemFlagsData, Signature, StackSlotData, StackSlotKind, Type, Value, types,
};
use cranelift_frontend::FunctionBuilder;
use std::collections::HashMap;

pub const F32: Type = types::F32;
/// `f32` lanes of the vectors the back end works on: its geometry's.
pub const LANES: usize = super::GEOMETRY.lanes;
/// A vector of [`LANES`] floats.
pub const VECTOR: Type = match LANES {
    4 => types::F32X4,
    _ => panic!("Cranelift lowers 128-bit vectors: four f32 lanes"),
};
/// A vector of [`LANES`] 32-bit integers (comparison masks, dropout's hash).
pub const IVECTOR: Type = match LANES {
    4 => types::I32X4,
    _ => panic!("Cranelift lowers 128-bit vectors: four i32 lanes"),
};
pub const I64: Type = types::I64;

pub struct Emit<'a, 'b> {
    pub b: &'a mut FunctionBuilder<'b>,
    pub plan: &'a MemoryPlan,
    pub kernel: usize,
    /// Function arguments: the arena, the thread's range of the parallel dimension, and
    /// the thread's index (which selects its scratch copies).
    pub arena: Value,
    pub start: Value,
    pub end: Value,
    pub thread: Value,
    /// Current values (i64) of enclosing loop variables.
    pub vars: HashMap<Var, Value>,
    /// Tensors the kernel only reads: their loads may be moved and merged freely.
    pub read_only: Vec<crate::ir::ops::TensorId>,
    pub has_fma: bool,
    /// Rows and columns of a product's register tile.
    pub tile: (usize, usize),
    /// Products generated elsewhere, by the address of their statement, and the calling
    /// convention to call them with.
    pub calls: HashMap<*const crate::ir::kernel::Gemm, super::Call>,
    /// Maps generated elsewhere, by the address of their statement.
    pub maps: HashMap<*const crate::ir::kernel::Map, super::MapCall>,
    /// Column sums computed elsewhere, by the address of their statement.
    pub sums: HashMap<*const crate::ir::kernel::ColumnSum, super::RoutineCall>,
    /// Cross-entropies computed elsewhere, by the address of their statement.
    pub losses: HashMap<*const crate::ir::kernel::CrossEntropy, super::RoutineCall>,
    /// Transposes computed elsewhere, by the address of their statement.
    pub transposes: HashMap<*const crate::ir::kernel::Transpose, super::RoutineCall>,
    /// Called products whose `b` an enclosing loop's preamble already prepared.
    pub prepared: Vec<*const crate::ir::kernel::Gemm>,
    pub call_conv: cranelift_codegen::isa::CallConv,
    /// A team kernel's barrier.
    pub barrier: Option<*const super::barrier::TeamBarrier>,
}

/// A computed address: a base value plus a constant byte offset for the load immediate.
#[derive(Clone, Copy)]
pub struct Addr {
    pub base: Value,
    pub offset: i32,
}

impl Emit<'_, '_> {
    pub fn iconst(&mut self, v: i64) -> Value {
        self.b.ins().iconst(I64, v)
    }

    /// Byte address of `p` (plus `extra` elements), with the constant part folded into the
    /// immediate when it fits.
    pub fn addr(&mut self, p: &Ptr, extra: i64) -> Addr {
        let mut base = self.arena;
        if let Buffer::Scratch(i) = p.buf {
            let stride = self.plan.scratch[self.kernel][i as usize].1 as i64;
            let off = self.b.ins().imul_imm_s(self.thread, stride);
            base = self.b.ins().iadd(base, off);
        }
        for (v, coef) in &p.terms {
            let value = self.vars[v];
            let scaled = self.b.ins().imul_imm_s(value, coef * 4);
            base = self.b.ins().iadd(base, scaled);
        }
        let constant = self.plan.offset(self.kernel, p.buf) as i64 + (p.offset + extra) * 4;
        match i32::try_from(constant) {
            Ok(offset) => Addr { base, offset },
            Err(_) => {
                let base = self.b.ins().iadd_imm_s(base, constant);
                Addr { base, offset: 0 }
            }
        }
    }

    /// `base + index · 4` as an address (for loops over elements).
    pub fn at(&mut self, a: Addr, index: Value) -> Addr {
        let scaled = self.b.ins().ishl_imm_u(index, 2);
        Addr { base: self.b.ins().iadd(a.base, scaled), offset: a.offset }
    }

    /// `a` plus a constant number of bytes.
    pub fn shift(&mut self, a: Addr, bytes: i64) -> Addr {
        match i32::try_from(a.offset as i64 + bytes) {
            Ok(offset) => Addr { base: a.base, offset },
            Err(_) => Addr { base: self.b.ins().iadd_imm_s(a.base, a.offset as i64 + bytes), offset: 0 },
        }
    }

    fn flags(&self, p: Option<&Ptr>) -> MemFlagsData {
        let f = MemFlagsData::new().with_notrap();
        match p.map(|p| p.buf) {
            Some(Buffer::Tensor(t)) if self.read_only.contains(&t) => f.with_readonly().with_can_move(),
            _ => f,
        }
    }

    /// `a` plus `bytes` as a base and an immediate that fits the instruction.
    fn displace(&mut self, a: Addr, bytes: i32) -> (Value, i32) {
        match a.offset.checked_add(bytes) {
            Some(off) => (a.base, off),
            None => (self.b.ins().iadd_imm_s(a.base, a.offset as i64 + bytes as i64), 0),
        }
    }

    /// Loads an operand of a matrix product's inner loop, in program order (product
    /// kernels are compiled without reordering; see `codegen::compile`).
    pub fn load_operand(&mut self, ty: Type, a: Addr, bytes: i32) -> Value {
        let flags = MemFlagsData::new().with_notrap();
        let (base, off) = self.displace(a, bytes);
        self.b.ins().load(ty, flags, base, off)
    }

    /// Loads a value of type `ty` (`F32` or `VECTOR`) at `a` plus `bytes`.
    pub fn load(&mut self, ty: Type, a: Addr, bytes: i32, from: Option<&Ptr>) -> Value {
        let flags = self.flags(from);
        let (base, off) = self.displace(a, bytes);
        self.b.ins().load(ty, flags, base, off)
    }

    pub fn store(&mut self, v: Value, a: Addr, bytes: i32) {
        let flags = self.flags(None);
        let (base, off) = self.displace(a, bytes);
        self.b.ins().store(flags, v, base, off);
    }

    /// A constant of type `ty` (splat for vectors).
    pub fn fconst(&mut self, ty: Type, x: f32) -> Value {
        let s = self.b.ins().f32const(x);
        if ty == VECTOR { self.b.ins().splat(VECTOR, s) } else { s }
    }

    pub fn splat(&mut self, ty: Type, s: Value) -> Value {
        if ty == VECTOR { self.b.ins().splat(VECTOR, s) } else { s }
    }

    /// `a · b + c`, fused where the CPU has FMA.
    pub fn fma(&mut self, a: Value, b: Value, c: Value) -> Value {
        if self.has_fma {
            self.b.ins().fma(a, b, c)
        } else {
            let p = self.b.ins().fmul(a, b);
            self.b.ins().fadd(p, c)
        }
    }

    /// The integer type with `ty`'s lanes (`I32` or `IVECTOR`).
    pub fn int_type(ty: Type) -> Type {
        if ty == VECTOR { IVECTOR } else { types::I32 }
    }

    pub fn bitcast(&mut self, to: Type, v: Value) -> Value {
        self.b.ins().bitcast(to, MemFlagsData::new(), v)
    }

    /// `if cond { x } else { y }` lane by lane, where `cond` is a comparison result.
    pub fn select(&mut self, ty: Type, cond: Value, x: Value, y: Value) -> Value {
        if ty == VECTOR {
            // Comparison masks are integer vectors; bit-select avoids the vector `select`.
            let mask = self.bitcast(VECTOR, cond);
            self.b.ins().bitselect(mask, x, y)
        } else {
            self.b.ins().select(cond, x, y)
        }
    }

    /// A counted loop `for i in from..to` (step `step`) with `i` bound to `var` if given.
    /// The body runs at least once when `known_nonempty`; otherwise the range is checked.
    pub fn for_range(
        &mut self,
        var: Option<Var>,
        from: Value,
        to: Value,
        step: i64,
        known_nonempty: bool,
        mut body: impl FnMut(&mut Self, Value),
    ) {
        let header = self.b.create_block();
        let exit = self.b.create_block();
        let i = self.b.append_block_param(header, I64);
        if known_nonempty {
            self.b.ins().jump(header, &[from.into()]);
        } else {
            let enter = self.b.ins().icmp(IntCC::SignedLessThan, from, to);
            self.b.ins().brif(enter, header, &[from.into()], exit, &[]);
        }
        self.b.switch_to_block(header);
        let saved = var.map(|v| self.vars.insert(v, i));
        body(self, i);
        if let (Some(v), Some(prev)) = (var, saved) {
            match prev {
                Some(p) => self.vars.insert(v, p),
                None => self.vars.remove(&v),
            };
        }
        let next = self.b.ins().iadd_imm_s(i, step);
        let again = self.b.ins().icmp(IntCC::SignedLessThan, next, to);
        self.b.ins().brif(again, header, &[next.into()], exit, &[]);
        self.b.switch_to_block(exit);
    }

    /// `for i in 0..extent` with a constant extent.
    pub fn for_count(
        &mut self,
        var: Option<Var>,
        extent: usize,
        step: usize,
        body: impl FnMut(&mut Self, Value),
    ) {
        if extent == 0 {
            return;
        }
        let from = self.iconst(0);
        let to = self.iconst(extent as i64);
        self.for_range(var, from, to, step as i64, true, body);
    }

    /// Largest of a vector's lanes.
    pub fn hmax(&mut self, v: Value) -> Value {
        let lanes: Vec<Value> = (0..LANES).map(|l| self.b.ins().extractlane(v, l as u8)).collect();
        self.pairwise(lanes, &mut |e, a, b| e.max(F32, a, b))
    }

    /// `xs` combined by `f` as a balanced tree, neighbours first (`(x0 ∘ x1) ∘ (x2 ∘ x3)`
    /// for four), so that no step waits on more than the depth of the tree.
    pub fn pairwise(
        &mut self,
        mut xs: Vec<Value>,
        f: &mut dyn FnMut(&mut Self, Value, Value) -> Value,
    ) -> Value {
        while xs.len() > 1 {
            xs = xs.chunks(2).map(|p| if let [a, b] = *p { f(self, a, b) } else { p[0] }).collect();
        }
        xs[0]
    }

    /// `max(a, b)` by compare and select (cheaper than `fmax` and its NaN rules).
    pub fn max(&mut self, ty: Type, a: Value, b: Value) -> Value {
        let gt = self.b.ins().fcmp(cranelift_codegen::ir::condcodes::FloatCC::GreaterThan, a, b);
        self.select(ty, gt, a, b)
    }
}

impl Emit<'_, '_> {
    /// Calls code generated elsewhere as `entry(data, words)`, `words` an array of
    /// 64-bit values (operand addresses) on the stack.
    pub fn call_out(&mut self, entry: usize, data: usize, words: Vec<Value>) {
        let slot = self.b.create_sized_stack_slot(StackSlotData::new(
            StackSlotKind::ExplicitSlot,
            8 * words.len().max(1) as u32,
            3,
        ));
        for (i, w) in words.into_iter().enumerate() {
            self.b.ins().stack_store(I64, w, slot, 8 * i as i32);
        }
        let table = self.b.ins().stack_addr(I64, slot, 0);
        let data = self.iconst(data as i64);
        let entry = self.iconst(entry as i64);
        let mut sig = Signature::new(self.call_conv);
        sig.params.extend([AbiParam::new(I64), AbiParam::new(I64)]);
        let sig = self.b.import_signature(sig);
        self.b.ins().call_indirect(sig, entry, &[data, table]);
    }
}
