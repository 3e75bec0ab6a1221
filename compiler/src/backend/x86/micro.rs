//! The micro-kernel generator: one register tile of a product — `rows × cols` of `c`
//! over the whole of `k` — with its epilogue, as machine code for one instruction set.
//!
//! Per step of `k` the tile loads its `b` vectors once, then broadcasts one `a` value per
//! row into an FMA with each; the `k` loop is unrolled by four with the offsets in the
//! instructions' displacements. A tile narrower than the register tile computes only the
//! vectors it needs, the last one masked, so no edge falls back to scalar code. The tile
//! of a convolution that reads its image directly (`direct.rs`) loops over channels
//! instead, each channel's taps unrolled at constant offsets. The epilogue runs on the
//! accumulators before the only store: they are spilled to the stack, and each vector's
//! epilogue then has every register but the mask's to itself (`epilogue.rs` hands them
//! out).

use super::direct::Direct;
use super::epilogue::{self, Emitter, Error};
use super::isa::{Consts, Simd, V};
use crate::ir::kernel::{BinOp, EInst};
use iced_x86::code_asm::*;

/// The part of `c` one call computes: `rows ≤ MR`, `cols ≤ LANES · NV`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tile {
    pub rows: usize,
    pub cols: usize,
}

/// Where a tile's operands are, in bytes from the pointers it is called with:
/// `a[r, p]` at `a + r·a_row + p·a_k`, `b` as [`BRead`] says, `c[r, j]` at
/// `c + r·c_row + 4j`. With `accumulate`, the tile adds its sums to what `c` holds (a
/// later block of `k`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Layout {
    pub k: usize,
    pub a_row: i32,
    pub a_k: i32,
    pub b: BRead,
    pub c_row: i32,
    pub accumulate: bool,
}

/// How a tile reads `b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BRead {
    /// `b[p, j]` at `b + p·step + 4j`. With `in_place`, `b` is the caller's matrix
    /// rather than a zero-padded panel, so loads past a narrow tile's columns are masked
    /// too.
    Rows { step: i32, in_place: bool },
    /// A convolution's image, read where it is (see [`Direct`]).
    Image(Direct),
}

/// Whether the micro-kernel can apply `epilogue` itself: whether its values and the
/// temporaries of its functions fit the free registers, and its operands the table and
/// displacements of a tile call ([`epilogue::fits`]).
pub fn supports<S: Simd>(epilogue: &[EInst]) -> bool {
    epilogue::fits::<S>(epilogue)
}

/// The register tile `(rows, vectors per row)` for a product `n` columns wide: the
/// narrowest of the set's shapes whose columns cover `n`, else the widest. A product
/// narrower than its tile would leave accumulators idle and broadcast each value of `a`
/// for fewer FMAs than the loads can feed (ResNet-18-CIFAR's last stage is 16 pixels an
/// image: a quarter of a 64-column tile).
pub fn shape<S: Simd>(n: usize) -> (usize, usize) {
    S::SHAPES.iter().rev().find(|&&(_, nv)| nv * S::LANES >= n).copied().unwrap_or(S::SHAPES[0])
}

/// `bytes` as an instruction displacement, if it fits one.
pub fn displacement(bytes: usize) -> Option<i32> {
    i32::try_from(bytes).ok()
}

/// A tile's code, called as `extern "sysv64" fn(a, b, c, operands)`: `operands` holds,
/// for each `Row`, `Col` and `Elem` instruction of `epilogue` in order, the address of
/// its value for the tile's first row and column.
pub fn micro<S: Simd>(tile: Tile, l: &Layout, epilogue: &[EInst]) -> Result<Vec<u8>, Error> {
    let mut a = S::assembler()?;
    let mut consts = Consts::default();
    let vectors = vectors::<S>(tile, &l.b);
    let nv = vectors.len();
    // Registers by the tile's own extent, which is within one of the set's shapes.
    let acc = |r: usize, v: usize| V((r * nv + v) as u8);
    let bv = |v: usize| V((tile.rows * nv + v) as u8);
    let bc = V((tile.rows * nv + nv) as u8);
    let tail = match l.b {
        BRead::Rows { .. } => tile.cols % S::LANES,
        BRead::Image(d) => d.ow % S::LANES,
    };
    if tail != 0 {
        S::set_mask(&mut a, &mut consts, tail)?;
    }
    for r in 0..tile.rows {
        a.prefetchw(byte_ptr(rdx + r as i32 * l.c_row))?;
    }
    for r in 0..tile.rows {
        for v in 0..nv {
            S::zero(&mut a, acc(r, v))?;
        }
    }
    // One step of `k`: `a` at `a_at` from `rdi`, `b` at `b_at` from `rsi`.
    let step = |a: &mut CodeAssembler, a_at: i32, b_at: i32| -> Result<(), IcedError> {
        for (v, vector) in vectors.iter().enumerate() {
            S::load(a, bv(v), rsi + (b_at + vector.b), vector.load_masked)?;
        }
        for r in 0..tile.rows {
            S::broadcast(a, bc, rdi + (r as i32 * l.a_row + a_at))?;
            for v in 0..nv {
                S::fma(a, acc(r, v), bc, bv(v))?;
            }
        }
        Ok(())
    };
    match l.b {
        BRead::Rows { step: b_k, .. } => {
            const UNROLL: usize = 4;
            let (iters, rest) = (l.k / UNROLL, l.k % UNROLL);
            if iters > 0 {
                a.mov(rax, iters as u64)?;
                let mut top = a.create_label();
                a.set_label(&mut top)?;
                for s in 0..UNROLL as i32 {
                    step(&mut a, s * l.a_k, s * b_k)?;
                }
                a.add(rdi, UNROLL as i32 * l.a_k)?;
                a.add(rsi, UNROLL as i32 * b_k)?;
                a.dec(rax)?;
                a.jnz(top)?;
            }
            for s in 0..rest as i32 {
                step(&mut a, s * l.a_k, s * b_k)?;
            }
        }
        // A channel per iteration, its taps unrolled at constant offsets.
        BRead::Image(d) => {
            if d.channels > 0 {
                a.mov(rax, d.channels as u64)?;
                let mut top = a.create_label();
                a.set_label(&mut top)?;
                for (t, b_at) in d.taps().enumerate() {
                    step(&mut a, t as i32 * l.a_k, b_at)?;
                }
                a.add(rdi, (d.kh * d.kw) as i32 * l.a_k)?;
                a.add(rsi, d.plane)?;
                a.dec(rax)?;
                a.jnz(top)?;
            }
        }
    }
    let vec_bytes = (S::LANES * 4) as i32;
    let c_at = |r: usize, v: usize| rdx + (r as i32 * l.c_row + 4 * vectors[v].col as i32);
    if l.accumulate {
        for r in 0..tile.rows {
            for (v, vector) in vectors.iter().enumerate() {
                S::load(&mut a, bv(v), c_at(r, v), vector.masked)?;
                S::bin(&mut a, BinOp::Add, acc(r, v), acc(r, v), bv(v))?;
            }
        }
    }
    if epilogue.is_empty() {
        for r in 0..tile.rows {
            for (v, vector) in vectors.iter().enumerate() {
                S::store(&mut a, c_at(r, v), acc(r, v), vector.masked)?;
            }
        }
    } else {
        let spill = (tile.rows * nv) as i32 * vec_bytes;
        let slot = |r: usize, v: usize| rsp + (r * nv + v) as i32 * vec_bytes;
        a.sub(rsp, spill)?;
        for r in 0..tile.rows {
            for v in 0..nv {
                S::store(&mut a, slot(r, v), acc(r, v), false)?;
            }
        }
        for r in 0..tile.rows {
            for (v, vector) in vectors.iter().enumerate() {
                let mut e = Emitter::<S>::new(&mut a, &mut consts);
                if let Some(out) =
                    epilogue::apply(&mut e, epilogue, slot(r, v), (r, vector.col), vector.masked)?
                {
                    S::store(&mut a, c_at(r, v), out, vector.masked)?;
                }
            }
        }
        a.add(rsp, spill)?;
    }
    S::finish(&mut a)?;
    a.ret()?;
    consts.emit(&mut a)?;
    Ok(a.assemble(0)?)
}

/// One vector of a tile's row: where it is in `c` and `b`, and whether it is masked.
struct Vector {
    /// Its first column of `c`.
    col: usize,
    /// Its offset in `b`, in bytes, at the first step of `k`.
    b: i32,
    /// Whether its `b` loads are masked.
    load_masked: bool,
    /// Whether its lanes of `c` are masked (loaded, stored, and epilogue operands).
    masked: bool,
}

/// The vectors of a row of `tile`: a row of `b`'s columns cut into vectors, the last one
/// masked when the columns do not fill it; from an image, each output row so cut.
fn vectors<S: Simd>(tile: Tile, b: &BRead) -> Vec<Vector> {
    let vec_bytes = S::LANES * 4;
    match *b {
        BRead::Rows { in_place, .. } => {
            let nv = tile.cols.div_ceil(S::LANES);
            let tail = !tile.cols.is_multiple_of(S::LANES);
            (0..nv)
                .map(|v| {
                    let masked = tail && v + 1 == nv;
                    Vector {
                        col: v * S::LANES,
                        b: (v * vec_bytes) as i32,
                        load_masked: in_place && masked,
                        masked,
                    }
                })
                .collect()
        }
        BRead::Image(d) => {
            let per_row = d.ow.div_ceil(S::LANES);
            let tail = !d.ow.is_multiple_of(S::LANES);
            let rows = tile.cols / d.ow.max(1);
            (0..rows)
                .flat_map(|r| {
                    (0..per_row).map(move |v| {
                        let masked = tail && v + 1 == per_row;
                        Vector {
                            col: r * d.ow + v * S::LANES,
                            b: r as i32 * d.out_row + (v * vec_bytes) as i32,
                            load_masked: masked,
                            masked,
                        }
                    })
                })
                .collect()
        }
    }
}

/// A loop of independent FMA chains, as many as leave two registers for the operands:
/// `extern "sysv64" fn(iterations)`. Timed, it gives the core's FMA peak, against which
/// `nnc bench` reports each kernel's share.
pub fn fma_loop<S: Simd>() -> Result<(Vec<u8>, usize), IcedError> {
    let mut a = CodeAssembler::new(64)?;
    let (rows, nv) = S::SHAPES[0];
    let chains = (rows * nv) as u8;
    let (x, y) = (V(chains), V(chains + 1));
    for r in 0..chains + 2 {
        S::zero(&mut a, V(r))?;
    }
    let mut top = a.create_label();
    a.set_label(&mut top)?;
    for r in 0..chains {
        S::fma(&mut a, V(r), x, y)?;
    }
    a.dec(rdi)?;
    a.jnz(top)?;
    S::finish(&mut a)?;
    a.ret()?;
    Ok((a.assemble(0)?, chains as usize * S::LANES * 2))
}
