//! A whole product as the generated micro-kernels compute it: the GotoBLAS loops in
//! Rust around them. Column panels of `b` (packed into contiguous `k × NR` strips when
//! the panel is reused by enough row tiles to pay for it) are the outer loop and row
//! tiles the inner, so a panel stays in L1 while every row tile of `a` passes over it;
//! `a` is packed into `k × MR` slivers when enough panels reuse it. Each tile runs over
//! the whole of `k`, so its epilogue is applied once, to the finished sums.

use super::micro::Tile;
use crate::ir::kernel::{EInst, Gemm};
use std::cell::RefCell;

/// A generated tile: `(a, b, c, operands)`, see [`super::micro::micro`].
pub type TileFn = unsafe extern "sysv64" fn(*const f32, *const f32, *mut f32, *const *const f32);

/// How the tiles read `a`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ASource {
    /// Packed per call into slivers of `MR` rows, `a[r, p]` at `p · MR + r`.
    Packed,
    /// Read where it is.
    InPlace,
}

/// An epilogue operand, by the part of the tile's position its address follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// `ptr[row]`.
    Row,
    /// `ptr[col]`.
    Col,
    /// `ptr[row · ld + col]`.
    Elem(usize),
}

/// The operands of an epilogue, in the order the tiles read their addresses.
pub fn operands(epilogue: &[EInst]) -> Vec<Operand> {
    epilogue
        .iter()
        .filter_map(|e| match e {
            EInst::Row(_) => Some(Operand::Row),
            EInst::Col(_) => Some(Operand::Col),
            EInst::Elem(_, ld) => Some(Operand::Elem(*ld)),
            EInst::Acc | EInst::Const(_) | EInst::Prim(..) | EInst::Bin(..) | EInst::Select(..) => None,
        })
        .collect()
}

/// One product statement, ready to run: its shape, how it reads its operands, and the
/// tiles generated for it (indexed by [`Product::tile_index`]).
#[derive(Debug)]
pub struct Product {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub lda: usize,
    pub ta: bool,
    pub ldb: usize,
    pub ldc: usize,
    pub a: ASource,
    /// Whether `b` is packed into panels (else read in place).
    pub pack_b: bool,
    /// Columns of `b` packed at a time, a multiple of `nr`, sized to stay in L2.
    pub nc: usize,
    pub mr: usize,
    pub nr: usize,
    pub operands: Vec<Operand>,
    /// The tiles `[full, last rows] × [full, last columns]`, where generated.
    pub tiles: [Option<TileFn>; 4],
}

/// Most epilogue operands a product may have (`micro::supports` refuses more).
pub const MAX_OPERANDS: usize = 32;

/// Floats in one 64-byte line, the unit the packing buffers are allocated in so that
/// every panel starts on a line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

thread_local! {
    /// Each thread's packing buffers for `a` and `b`, grown as products need them.
    static PACKED: RefCell<(Vec<Line>, Vec<Line>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

fn lines(buf: &mut Vec<Line>, floats: usize) -> *mut f32 {
    let need = floats.div_ceil(16);
    if buf.len() < need {
        buf.resize(need, Line([0.0; 16]));
    }
    buf.as_mut_ptr().cast()
}

impl Product {
    /// The shape of a product statement with these packing decisions; tiles are filled in
    /// once generated.
    pub fn new(g: &Gemm, mr: usize, nr: usize) -> Product {
        // Packing `a` costs about one pass over it per call; it pays once several
        // column panels reuse each sliver. Packing `b` likewise pays once several row
        // tiles reuse each panel.
        let panels = g.n.div_ceil(nr);
        let a = if panels >= 4 { ASource::Packed } else { ASource::InPlace };
        let pack_b = g.m > 2 * mr;
        // A packed block of `b` of about 128 KiB: it stays in L2 beside `a`'s slivers.
        let nc = ((32 * 1024 / g.k.max(1)) / nr).max(1) * nr;
        Product {
            m: g.m,
            n: g.n,
            k: g.k,
            lda: g.lda,
            ta: g.ta,
            ldb: g.ldb,
            ldc: g.ldc,
            a,
            pack_b,
            nc: if pack_b { nc } else { g.n.div_ceil(nr) * nr },
            mr,
            nr,
            operands: operands(&g.epilogue),
            tiles: [None; 4],
        }
    }

    /// Which tile computes rows `rows` and columns `cols`.
    pub fn tile_index(&self, tile: Tile) -> usize {
        usize::from(tile.rows < self.mr) * 2 + usize::from(tile.cols < self.nr)
    }

    /// The tiles the product needs: every combination of full and remainder rows and
    /// columns that occurs.
    pub fn tiles_needed(&self) -> Vec<Tile> {
        let mut rows = vec![];
        if self.m >= self.mr {
            rows.push(self.mr);
        }
        if !self.m.is_multiple_of(self.mr) {
            rows.push(self.m % self.mr);
        }
        let mut cols = vec![];
        if self.n >= self.nr {
            cols.push(self.nr);
        }
        if !self.n.is_multiple_of(self.nr) {
            cols.push(self.n % self.nr);
        }
        rows.iter().flat_map(|&r| cols.iter().map(move |&c| Tile { rows: r, cols: c })).collect()
    }

    /// Byte strides of `a` as the tiles read it: (between rows, between steps of `k`).
    pub fn a_strides(&self) -> (usize, usize) {
        match (self.a, self.ta) {
            (ASource::Packed, _) => (4, 4 * self.mr),
            (ASource::InPlace, false) => (4 * self.lda, 4),
            (ASource::InPlace, true) => (4, 4 * self.lda),
        }
    }

    /// Byte stride between steps of `k` in `b` as the tiles read it.
    pub fn b_stride(&self) -> usize {
        if self.pack_b { 4 * self.nr } else { 4 * self.ldb }
    }

    /// Computes the product: `ptrs` holds `a`, `b`, `c` and then the epilogue operands'
    /// addresses (each for row and column 0).
    ///
    /// # Safety
    /// The pointers must address the matrices this product was made for, and every tile
    /// it needs must have been generated.
    pub unsafe fn run(&self, ptrs: *const *mut f32) {
        // SAFETY: as the caller promised; each tile is called with the operands it was
        // generated for.
        unsafe {
            self.run_with(ptrs, |tile, a, b, c, ops| {
                if let Some(f) = self.tiles[tile] {
                    f(a, b, c, ops)
                }
            })
        }
    }

    /// [`Product::run`], calling `tile(index, a, b, c, operands)` for each tile instead
    /// of its generated code (tests run the tiles of instruction sets this CPU lacks in
    /// an emulator).
    ///
    /// # Safety
    /// As [`Product::run`]; `tile` must compute the tile it is asked for.
    pub unsafe fn run_with(
        &self,
        ptrs: *const *mut f32,
        mut tile: impl FnMut(usize, *const f32, *const f32, *mut f32, *const *const f32),
    ) {
        // SAFETY: as the caller promised; the packing buffers are this thread's, and no
        // tile calls back into Rust, so the borrow is never taken twice.
        unsafe {
            let (a, b, c) = (*ptrs as *const f32, *ptrs.add(1) as *const f32, *ptrs.add(2));
            let ops = std::slice::from_raw_parts(ptrs.add(3) as *const *const f32, self.operands.len());
            PACKED.with_borrow_mut(|(pa, pb)| {
                let a_tiles = match self.a {
                    ASource::Packed => {
                        let dst = lines(pa, self.m.div_ceil(self.mr) * self.mr * self.k);
                        self.pack_a(a, dst);
                        dst as *const f32
                    }
                    ASource::InPlace => a,
                };
                let b_block = if self.pack_b { lines(pb, self.nc * self.k) } else { std::ptr::null_mut() };
                let mut at = [std::ptr::null::<f32>(); MAX_OPERANDS];
                for jc in (0..self.n).step_by(self.nc) {
                    let nb = self.nc.min(self.n - jc);
                    if self.pack_b {
                        self.pack_b(b.add(jc), nb, b_block);
                    }
                    for jr in (0..nb).step_by(self.nr) {
                        let cols = self.nr.min(nb - jr);
                        let panel =
                            if self.pack_b { b_block.add(jr * self.k) as *const f32 } else { b.add(jc + jr) };
                        let j = jc + jr;
                        for i in (0..self.m).step_by(self.mr) {
                            let rows = self.mr.min(self.m - i);
                            let sliver = match (self.a, self.ta) {
                                (ASource::Packed, _) => a_tiles.add(i * self.k),
                                (ASource::InPlace, false) => a_tiles.add(i * self.lda),
                                (ASource::InPlace, true) => a_tiles.add(i),
                            };
                            for (slot, (op, &p)) in at.iter_mut().zip(self.operands.iter().zip(ops)) {
                                *slot = match op {
                                    Operand::Row => p.add(i),
                                    Operand::Col => p.add(j),
                                    Operand::Elem(ld) => p.add(i * ld + j),
                                };
                            }
                            let index = self.tile_index(Tile { rows, cols });
                            tile(index, sliver, panel, c.add(i * self.ldc + j), at.as_ptr());
                        }
                    }
                }
            });
        }
    }

    /// Packs all of `a` into slivers of `MR` rows (`k`-major within a sliver); the rows
    /// past `m` in the last sliver are left as they are, since its tile does not read them.
    unsafe fn pack_a(&self, a: *const f32, dst: *mut f32) {
        let (mr, k) = (self.mr, self.k);
        for i in (0..self.m).step_by(mr) {
            let rows = mr.min(self.m - i);
            // SAFETY: `a` holds the product's `m × k` operand; `dst` holds every sliver.
            unsafe {
                let s = dst.add(i * k);
                if self.ta {
                    for p in 0..k {
                        std::ptr::copy_nonoverlapping(a.add(p * self.lda + i), s.add(p * mr), rows);
                    }
                } else {
                    for r in 0..rows {
                        let row = a.add((i + r) * self.lda);
                        for p in 0..k {
                            *s.add(p * mr + r) = *row.add(p);
                        }
                    }
                }
            }
        }
    }

    /// Packs columns `0..nb` of `b` (already offset to the block) into panels of `NR`
    /// columns, `k × NR` each, zero past the last column.
    unsafe fn pack_b(&self, b: *const f32, nb: usize, dst: *mut f32) {
        let (nr, k) = (self.nr, self.k);
        for jr in (0..nb).step_by(nr) {
            let cols = nr.min(nb - jr);
            // SAFETY: `b` holds `k` rows of `ldb`, `nb` columns from this block; `dst`
            // holds the block's panels.
            unsafe {
                let panel = dst.add(jr * k);
                for p in 0..k {
                    let from = b.add(p * self.ldb + jr);
                    let to = panel.add(p * nr);
                    std::ptr::copy_nonoverlapping(from, to, cols);
                    if cols < nr {
                        std::ptr::write_bytes(to.add(cols), 0, nr - cols);
                    }
                }
            }
        }
    }
}

/// The entry a Cranelift kernel calls for a product statement: `product` is the
/// [`Product`] the back end made for it, `ptrs` its operand addresses.
///
/// # Safety
/// As [`Product::run`].
pub unsafe extern "sysv64" fn entry(product: *const Product, ptrs: *const *mut f32) {
    // SAFETY: the back end passes the address of a `Product` it keeps alive with the code.
    unsafe { (*product).run(ptrs) }
}
