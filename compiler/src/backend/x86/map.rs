//! Element-wise programs (map statements) as machine code for the CPU's vector width.
//!
//! Cranelift's maps run four lanes at a time; a recurrent cell's gate arithmetic (three
//! sigmoids and two tanh per element of an LSTM) spent as long in them as the step's
//! product did. Here the program runs `LANES` elements per step with the functions of
//! [`super::math`] (bit for bit Cranelift's), its last vector masked, so every element
//! takes the same path. A loop whose body is one map runs as one call: each address
//! moves by its own stride per row.
//!
//! The generated function is `extern "sysv64" fn(table)`: `table` holds the address of
//! each load, broadcast and store of the program, and for a dropout mask its seed's
//! address and four times the index of its first element, in order, for the first row
//! (the function moves them on row by row, so the table is the caller's scratch).
//! Dropout masks hash each element's index as Cranelift's maps do (on two threads,
//! `char_lstm.net`'s dropout kernels took 0.13 ms each at Cranelift's four lanes).

use super::epilogue::{Emitter, Error};
use super::isa::{Bits, Consts, IntOp, Shift, Simd, V};
use crate::ir::kernel::{Inst, Map, Ptr};
use crate::ir::ops::dropout_threshold;
use iced_x86::code_asm::*;

/// A generated map, at an address that stays put while kernels call it: its code is
/// filled in once the program's code is executable.
#[derive(Debug, Default)]
pub struct MapCode {
    pub code: Option<MapFn>,
}

/// A generated map's code: `(table)`.
pub type MapFn = unsafe extern "sysv64" fn(*mut *const f32);

/// The entry a Cranelift kernel calls for a map statement: `map` is the [`MapCode`] the
/// back end made for it, `table` its operand addresses.
///
/// # Safety
/// `table` must hold the addresses of the map's operands, each valid for every element
/// and row the map touches.
pub unsafe extern "sysv64" fn entry(map: *const MapCode, table: *mut *const f32) {
    // SAFETY: the back end passes the address of a `MapCode` it keeps alive with the
    // code, filled in before any kernel runs.
    unsafe {
        if let Some(f) = (*map).code {
            f(table)
        }
    }
}

/// Whether `m` can run here: no buffer stored at one address and read or stored at
/// another within reach. Sixteen lanes at a time would see a store `i` elements ahead of a load that
/// four lanes (or one) would not; the same address, as an in-place update has, or
/// ranges at least a row apart (an LSTM's saved gates) are safe.
pub fn supports(m: &Map) -> bool {
    let stores: Vec<&Ptr> = m
        .insts
        .iter()
        .filter_map(|i| if let Inst::Store(p, _) | Inst::Stream(p, _) = i { Some(p) } else { None })
        .collect();
    // The same address, or ranges of a row that cannot meet (rows run in order here as
    // in Cranelift's loop).
    let apart = |p: &Ptr, q: &Ptr| {
        p == q || p.buf != q.buf || (p.terms == q.terms && p.offset.abs_diff(q.offset) >= m.len as u64)
    };
    m.insts.iter().all(|inst| match inst {
        Inst::Load(p) | Inst::Store(p, _) | Inst::Stream(p, _) => stores.iter().all(|s| apart(s, p)),
        Inst::Bcast(p) => stores.iter().all(|s| s.buf != p.buf),
        Inst::Const(_) | Inst::Prim(..) | Inst::Bin(..) | Inst::Select(..) | Inst::Keep { .. } => true,
    })
}

/// The values an instruction reads.
fn reads(inst: &Inst) -> Vec<usize> {
    match *inst {
        Inst::Load(_) | Inst::Bcast(_) | Inst::Const(_) | Inst::Keep { .. } => vec![],
        Inst::Prim(_, x) | Inst::Store(_, x) | Inst::Stream(_, x) => vec![x],
        Inst::Bin(_, x, y) => vec![x, y],
        Inst::Select(_, x, y, t, f) => vec![x, y, t, f],
    }
}

/// Per instruction, the instruction after which its value's register is free again: its
/// last reader, or itself if nothing reads it.
fn last_uses(insts: &[Inst]) -> Vec<usize> {
    let mut last: Vec<usize> = (0..insts.len()).collect();
    for (i, inst) in insts.iter().enumerate() {
        for x in reads(inst) {
            last[x] = i;
        }
    }
    last
}

/// The register of value `x`.
fn reg(regs: &[Option<V>], x: usize) -> V {
    regs[x].expect("a map reads only values")
}

/// One vector of the program at byte offset `rax` from each operand's address (`[rdi +
/// 8j]` for operand `j`), the lanes past the mask left alone when `masked`. Each load or
/// store `j` with `ahead[j]` also prefetches that many bytes further on (the next row).
/// With `stream`, a full vector of a [`Inst::Stream`] is written past the caches (its
/// address then aligned to a vector).
fn body<S: Simd>(
    e: &mut Emitter<'_, S>,
    insts: &[Inst],
    (masked, stream): (bool, bool),
    ahead: &[Option<i32>],
) -> Result<(), Error> {
    let last = last_uses(insts);
    let mut regs: Vec<Option<V>> = Vec::with_capacity(insts.len());
    let mut slot = 0;
    // Loads the operand's address into `r8`; returns how far ahead to prefetch it.
    let mut operand = |e: &mut Emitter<'_, S>| -> Result<Option<i32>, Error> {
        e.a.mov(r8, qword_ptr(rdi + 8 * slot as i32))?;
        slot += 1;
        Ok(ahead.get(slot - 1).copied().flatten())
    };
    for (i, inst) in insts.iter().enumerate() {
        let mut dying = reads(inst);
        dying.sort_unstable();
        dying.dedup();
        dying.retain(|&x| last[x] == i);
        // As in an epilogue: one instruction may write a register it reads; a select and
        // a function may not.
        let early = matches!(inst, Inst::Bin(..) | Inst::Store(..) | Inst::Stream(..));
        if early {
            dying.iter().for_each(|&x| e.release(reg(&regs, x)));
        }
        let d = match *inst {
            Inst::Load(_) => {
                let d = e.take()?;
                let ahead = operand(e)?;
                S::load(e.a, d, r8 + rax, masked)?;
                if let Some(bytes) = ahead {
                    e.a.prefetcht0(byte_ptr(r8 + rax + bytes))?;
                }
                Some(d)
            }
            Inst::Bcast(_) => {
                let d = e.take()?;
                operand(e)?;
                S::broadcast(e.a, d, r8 + 0)?;
                Some(d)
            }
            Inst::Stream(_, x) if stream && !masked => {
                operand(e)?;
                S::stream(e.a, r8 + rax, reg(&regs, x))?;
                None
            }
            Inst::Store(_, x) | Inst::Stream(_, x) => {
                let ahead = operand(e)?;
                S::store(e.a, r8 + rax, reg(&regs, x), masked)?;
                if let Some(bytes) = ahead {
                    e.a.prefetchw(byte_ptr(r8 + rax + bytes))?;
                }
                None
            }
            Inst::Const(x) => Some(e.constant(x)?),
            Inst::Prim(p, x) => Some(e.prim(p, reg(&regs, x))?),
            Inst::Bin(op, x, y) => {
                let d = e.take()?;
                S::bin(e.a, op, d, reg(&regs, x), reg(&regs, y))?;
                Some(d)
            }
            Inst::Select(cmp, x, y, t, f) => {
                let d = e.take()?;
                S::select(e.a, cmp, d, reg(&regs, x), reg(&regs, y), reg(&regs, t), reg(&regs, f))?;
                Some(d)
            }
            Inst::Keep { p, .. } => {
                operand(e)?;
                let seed = e.take()?;
                S::broadcast(e.a, seed, r8 + 0)?;
                operand(e)?;
                Some(keep(e, seed, p)?)
            }
        };
        regs.push(d);
        if !early {
            dying.iter().for_each(|&x| e.release(reg(&regs, x)));
        }
        if let (Some(d), true) = (d, last[i] == i) {
            e.release(d);
        }
    }
    Ok(())
}

/// A dropout mask's multiplier for the vector at byte offset `rax`, as Cranelift's maps
/// compute it ([`crate::ir::ops::dropout_hash`] of each element's index under the seed in
/// `seed`, which it releases): `r8` holds four times the index of the row's first element
/// (a table slot, moved on by four times its stride each row as an address is).
fn keep<S: Simd>(e: &mut Emitter<'_, S>, seed: V, p: f32) -> Result<V, Error> {
    e.a.lea(r8, qword_ptr(r8 + rax))?;
    e.a.shr(r8, 2)?;
    let h = e.take()?;
    S::splat(e.a, h, r8d)?;
    let lanes: Vec<u32> = (0..S::LANES as u32).collect();
    let iota = e.take()?;
    let label = e.consts.get(e.a, &lanes);
    S::load(e.a, iota, label.into(), false)?;
    S::int(e.a, IntOp::Add, h, h, iota)?;
    let k = e.word(0x9e37_79b1)?;
    S::int(e.a, IntOp::Mul, h, h, k)?;
    e.release(k);
    S::bits(e.a, Bits::Xor, h, h, seed)?;
    e.release(seed);
    // `iota` is a temporary from here on.
    for (shift, mul) in [(16, Some(0x85eb_ca6b)), (13, Some(0xc2b2_ae35)), (16, None)] {
        S::shift(e.a, Shift::RightLogical, iota, h, shift)?;
        S::bits(e.a, Bits::Xor, h, h, iota)?;
        if let Some(m) = mul {
            let k = e.word(m)?;
            S::int(e.a, IntOp::Mul, h, h, k)?;
            e.release(k);
        }
    }
    let threshold = e.word(dropout_threshold(p))?;
    let scale = e.constant(1.0 / (1.0 - p))?;
    let d = e.take()?;
    S::at_least(e.a, d, h, threshold, scale)?;
    for r in [h, iota, threshold, scale] {
        e.release(r);
    }
    Ok(d)
}

/// The code of `rows` rows of map `m` (`rows ≥ 1`, `m.len ≥ 1`), operand `j` moving by
/// `strides[j]` elements from one row to the next (`4 · strides[j]` an `i32`, an
/// instruction's immediate). Fails when its values do not fit the registers.
///
/// A map with streams whose rows keep a vector's alignment has two bodies: one writing
/// them past the caches, taken when every stream's first address is aligned to a vector
/// (a non-temporal store must be), and one storing them as usual.
pub fn generate<S: Simd>(m: &Map, rows: usize, strides: &[i32]) -> Result<Vec<u8>, Error> {
    let mut a = S::assembler()?;
    let mut consts = Consts::default();
    let tail = m.len % S::LANES;
    if tail != 0 {
        S::set_mask(&mut a, &mut consts, tail)?;
    }
    // Rows that are not one run (a recurrent step's sequences, hundreds of KiB apart)
    // start a new stream each, which the hardware prefetchers only pick up once it is
    // under way: each vector of a row prefetches the same place in the next row.
    let ahead: Vec<Option<i32>> =
        strides.iter().map(|&s| (rows > 1 && s.unsigned_abs() as usize > m.len).then_some(4 * s)).collect();
    // Operand slots, in the table's order.
    let streams: Vec<usize> =
        slots(m).enumerate().filter(|(_, i)| matches!(i, Inst::Stream(..))).map(|(j, _)| j).collect();
    let vector = (S::LANES * 4) as i32;
    let aligned_rows = streams.iter().all(|&j| strides.get(j).is_none_or(|s| (4 * s) % vector == 0));
    if !streams.is_empty() && aligned_rows && m.len >= S::LANES {
        let mut plain = a.create_label();
        a.xor(r11d, r11d)?;
        for &j in &streams {
            a.or(r11, qword_ptr(rdi + 8 * j as i32))?;
        }
        a.test(r11d, vector - 1)?;
        a.jnz(plain)?;
        rows_of::<S>(&mut a, &mut consts, m, (rows, strides), &ahead, true)?;
        // Non-temporal stores are weakly ordered: they reach memory before the kernel
        // goes on (another thread may read them next).
        a.sfence()?;
        S::finish(&mut a)?;
        a.ret()?;
        a.set_label(&mut plain)?;
    }
    rows_of::<S>(&mut a, &mut consts, m, (rows, strides), &ahead, false)?;
    S::finish(&mut a)?;
    a.ret()?;
    consts.emit(&mut a)?;
    Ok(a.assemble(0)?)
}

/// The loop over rows of a map, each the loop over its full vectors and then its
/// masked tail, with `stream` as [`body`] takes it.
fn rows_of<S: Simd>(
    a: &mut CodeAssembler,
    consts: &mut Consts,
    m: &Map,
    (rows, strides): (usize, &[i32]),
    ahead: &[Option<i32>],
    stream: bool,
) -> Result<(), Error> {
    let (full, tail) = (m.len / S::LANES, m.len % S::LANES);
    // Always, so that a label before this code and the rows' own are on different
    // instructions.
    a.mov(r9, rows as u64)?;
    let mut row_top = a.create_label();
    a.set_label(&mut row_top)?;
    a.xor(eax, eax)?;
    if full > 0 {
        a.mov(r10, full as u64)?;
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        body(&mut Emitter::<S>::new(a, consts), &m.insts, (false, stream), ahead)?;
        a.add(rax, (S::LANES * 4) as i32)?;
        a.dec(r10)?;
        a.jnz(top)?;
    }
    if tail != 0 {
        body(&mut Emitter::<S>::new(a, consts), &m.insts, (true, stream), &[])?;
    }
    if rows > 1 {
        for (j, &s) in strides.iter().enumerate().filter(|&(_, &s)| s != 0) {
            a.add(qword_ptr(rdi + 8 * j as i32), 4 * s)?;
        }
        a.dec(r9)?;
        a.jnz(row_top)?;
    }
    Ok(())
}

/// The instruction of each slot of the table, in order: a load, broadcast or store
/// one each, a dropout mask two (its seed's address, four times its first index).
fn slots(m: &Map) -> impl Iterator<Item = &Inst> {
    m.insts.iter().flat_map(|i| match i {
        Inst::Load(_) | Inst::Bcast(_) | Inst::Store(..) | Inst::Stream(..) => vec![i],
        Inst::Keep { .. } => vec![i, i],
        Inst::Const(_) | Inst::Prim(..) | Inst::Bin(..) | Inst::Select(..) => vec![],
    })
}

/// What a map's code depends on: its program with the addresses left out, its length,
/// rows and strides (so maps of the same shape share their code).
pub fn key(m: &Map, rows: usize, strides: &[i32]) -> String {
    let insts: Vec<String> = m
        .insts
        .iter()
        .map(|i| match i {
            Inst::Load(_) => "load".into(),
            Inst::Bcast(_) => "bcast".into(),
            Inst::Store(_, x) => format!("store {x}"),
            Inst::Stream(_, x) => format!("stream {x}"),
            Inst::Keep { p, .. } => format!("keep {p}"),
            other => format!("{other:?}"),
        })
        .collect();
    format!("{} × {rows} {strides:?}: {}", m.len, insts.join(";"))
}
