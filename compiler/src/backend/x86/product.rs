//! A whole product as the generated micro-kernels compute it: the GotoBLAS loops in
//! Rust around them. A long `k` is cut into blocks of about [`KC`] steps and the rows
//! into blocks of about [`MC_BYTES`] of `a` (packed into `k × MR` slivers when enough
//! column panels reuse it), so that a block's slivers stay in L2 while every column
//! panel of `b` passes over them; each panel (packed into a contiguous `k × NR` strip
//! when enough row tiles reuse it) is packed just before the block's row tiles read it,
//! and stays in L1 while they do. The tiles of the first block of `k` store their sums,
//! those of later blocks add to them, and only the last block's apply the epilogue,
//! once, to the finished sums.

use super::b_sums::{self, Running};
use super::direct::Direct;
use super::micro::Tile;
use super::narrow::{self, Narrow};
use super::pack::{Pixels, pad_image, padded};
use crate::ir::kernel::{EInst, Gemm, Right, Window};
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
pub enum EpilogueOperand {
    /// `ptr[row]`.
    Row,
    /// `ptr[col]`.
    Col,
    /// `ptr[row · ld + col]`.
    Elem(usize),
}

/// The operands of an epilogue, in the order the tiles read their addresses.
pub fn operands(epilogue: &[EInst]) -> Vec<EpilogueOperand> {
    epilogue
        .iter()
        .filter_map(|e| match e {
            EInst::Row(_) => Some(EpilogueOperand::Row),
            EInst::Col(_) => Some(EpilogueOperand::Col),
            EInst::Elem(_, ld) => Some(EpilogueOperand::Elem(*ld)),
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
    /// `b`'s row stride when it is a matrix.
    pub ldb: usize,
    /// The window `b` is unfolded through, when it is an image.
    pub unfold: Option<Window>,
    pub ldc: usize,
    pub a: ASource,
    /// Whether `b` is packed into panels (else read in place; an image is packed unless
    /// `direct`).
    pub pack_b: bool,
    /// Whether the tiles read an image `b` where it is ([`super::direct`]): each tile's
    /// columns are then whole output rows, `nr` a multiple of the window's `ow`.
    pub direct: Option<Direct>,
    /// Steps of `k` per block (see [`Product::blocks`]).
    pub kc: usize,
    /// Rows per block of rows (a multiple of `mr`): each block's slivers of a block of
    /// `k` stay in L2 while every column panel passes over them.
    pub mc: usize,
    pub mr: usize,
    pub nr: usize,
    pub operands: Vec<EpilogueOperand>,
    /// The last few columns, when [`super::narrow`] computes them rather than tiles.
    pub narrow: Option<Narrow>,
    /// The sums of `b` the call computes too ([`Gemm::b_sums`]), and the index of their
    /// first address among the call's words (after every epilogue operand's).
    pub sums: Vec<b_sums::Shape>,
    pub sums_at: usize,
    /// The tiles, `[start, middle, last block] × [full, last rows] × [full, last
    /// columns]` (see [`Product::tile_index`]), where generated.
    pub tiles: [Option<TileFn>; 12],
}

/// The steps of `k` a block aims at: a 64-column panel of 256 steps is 64 KiB, which
/// stays in L1 and L2 while the row tiles pass over it.
pub const KC: usize = 256;

/// The bytes of `a` a block of rows aims at, about a current x86 core's L2: without
/// blocks of rows, a 4608 × 512 × 512 product streamed its whole `a` (9 MiB) from L3
/// once per column panel and a 2048³ one 16 MiB; they ran 6 % and 11 % faster so
/// blocked (alternating runs, one core). Smaller blocks pack the column panels more
/// often: at 512 KiB a 1024³ product ran 5 % slower than in one block.
const MC_BYTES: usize = 1024 * 1024;

/// The most bytes of a transposed `a` one block of `k` may cover to be read in place:
/// half of a current x86 core's L2, so that the block stays there beside `b`'s panels.
const TRANSPOSED_IN_PLACE_BYTES: usize = 512 * 1024;

/// Which block of `k` a tile computes, which decides how it treats `c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// The first block (of any length up to `kc`): stores its sums, and applies the
    /// epilogue when it is the only block.
    Start,
    /// A block between the first and the last: adds its sums to `c`.
    Middle,
    /// The last block: adds its sums to `c` and applies the epilogue.
    Last,
}

/// Most epilogue operands a product may have (`micro::supports` refuses more).
pub const MAX_OPERANDS: usize = 32;

/// Rows per block for `m` rows and blocks of `kc` steps: blocks of whole slivers of `mr`
/// rows, as equal as they can be, of at most about [`MC_BYTES`] each (each block packs
/// the column panels again, so there are no more of them than that asks).
pub fn mc(m: usize, kc: usize, mr: usize) -> usize {
    let mr = mr.max(1);
    let slivers = m.div_ceil(mr).max(1);
    let blocks = (4 * kc * m).div_ceil(MC_BYTES).clamp(1, slivers);
    slivers.div_ceil(blocks) * mr
}

/// Floats in one 64-byte line, the unit the packing buffers are allocated in so that
/// every panel starts on a line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

thread_local! {
    /// Each thread's packing buffers for `a`, `b` and a padded image, grown as products
    /// need them.
    static PACKED: RefCell<[Vec<Line>; 3]> = const { RefCell::new([Vec::new(), Vec::new(), Vec::new()]) };

    /// Each thread's resident copies of `b`: per product (by address), the `b` it packed
    /// whole ([`Product::prepare`]) and its panels.
    static RESIDENT: RefCell<Vec<Resident>> = const { RefCell::new(Vec::new()) };
}

/// Resident copies a thread keeps: a loop prepares one or two products, and copies of
/// products long gone (a model compiled and dropped) must not pile up.
const MAX_RESIDENT: usize = 8;

/// The largest `b` a thread keeps packed for a loop, in floats (32 MiB): a copy per
/// thread of a much larger weight would cost more memory than packing it per call costs
/// time (a step's product over it is then long beside its packing).
const RESIDENT_FLOATS: usize = 8 << 20;

/// A product's `b` packed whole, every panel `k × NR` (panel `j` at `j · k`, the block of
/// `k` from step `p0` at `p0 · NR` in it), so that calls in a loop over which `b` does not
/// change read it instead of packing it again: a recurrent layer's `W_hh`, packed once
/// per block of sequences rather than at every step. Only calls the kernel makes after
/// preparing it in the same run read it ([`entry_prepared`]), so a copy left from an
/// earlier run is never mistaken for the current `b`.
struct Resident {
    product: usize,
    b: usize,
    panels: Vec<Line>,
}

fn lines(buf: &mut Vec<Line>, floats: usize) -> *mut f32 {
    let need = floats.div_ceil(16);
    if buf.len() < need {
        buf.resize(need, Line([0.0; 16]));
    }
    buf.as_mut_ptr().cast()
}

impl Product {
    /// Whether [`Product::prepare`] can keep this product's `b`: a matrix it packs, of at
    /// most [`RESIDENT_FLOATS`] once packed.
    pub fn can_prepare(&self) -> bool {
        let floats = self.n.div_ceil(self.nr.max(1)).saturating_mul(self.nr).saturating_mul(self.k);
        self.pack_b
            && self.unfold.is_none()
            && self.direct.is_none()
            && self.sums.is_empty()
            && floats <= RESIDENT_FLOATS
    }

    /// Packs all of `b` into this thread's resident copy for this product, which the
    /// calls that follow with the same `b` read instead of packing their panels.
    ///
    /// # Safety
    /// `b` must address the matrix this product was made for, and must not change while
    /// calls read the copy: the kernel prepares it before a loop that does not write it.
    pub unsafe fn prepare(&self, b: *const f32) {
        if !self.can_prepare() {
            return;
        }
        let key = std::ptr::from_ref(self) as usize;
        RESIDENT.with_borrow_mut(|all| {
            // The most recently prepared last; past `MAX_RESIDENT`, the least recent
            // copy's buffer is taken over (its product, if still in its loop, then packs
            // per call again: slower, never wrong).
            let mut r = match all.iter().position(|r| r.product == key) {
                Some(i) => all.remove(i),
                None if all.len() >= MAX_RESIDENT => all.remove(0),
                None => Resident { product: key, b: 0, panels: Vec::new() },
            };
            r.product = key;
            r.b = b as usize;
            let dst = lines(&mut r.panels, self.n.div_ceil(self.nr) * self.nr * self.k);
            // SAFETY: as the caller promised; `dst` holds every panel.
            unsafe { self.pack_b(b, (self.n, self.k), dst, None) };
            all.push(r);
        });
    }

    /// The shape of a product statement with these packing decisions; tiles are filled in
    /// once generated.
    pub fn new(g: &Gemm, mr: usize, nr: usize) -> Product {
        // Packing `a` costs about one pass over it per call; it pays once several
        // column panels reuse each sliver. Packing `b` likewise pays once several row
        // tiles reuse each panel.
        let panels = g.n.div_ceil(nr);
        // A few rows (a recurrent step's block of sequences) are read in place across
        // up to 16 panels for less than packing them costs: an LSTM step's `dq_t`, rows
        // 256 KiB apart, had been packed at every step (LSTM-variant step 20.9 -> 20.0 ms).
        let few = !g.ta && g.m <= 32 && panels <= 16;
        // Blocks of equal length, about `KC` each (a `k` up to 1.5 `KC` is one block).
        let blocks = if g.k <= KC * 3 / 2 { 1 } else { g.k.div_ceil(KC) };
        let kc = g.k.div_ceil(blocks).max(1);
        // A transposed `a` whose rows a block of `k` covers fit in half of L2 is read in
        // place: its tiles take `MR` consecutive floats of each row, the block stays in
        // L2 while the panels pass over it, and packing it (an LSTM's 2 MiB of states for
        // its `W_hh` gradient) read it from memory for nothing (that kernel 5.6-6.2 ->
        // 5.0-5.4 ms, alternating runs on one thread).
        let transposed_fits = g.ta && 4 * kc * g.lda <= TRANSPOSED_IN_PLACE_BYTES;
        let a = if panels >= 4 && !few && !transposed_fits { ASource::Packed } else { ASource::InPlace };
        let (ldb, unfold) = match &g.b {
            Right::Matrix { ld, .. } => (*ld, None),
            Right::Unfolded(u) => (0, Some(u.win)),
        };
        let pack_b = g.m > 2 * mr || unfold.is_some();
        Product {
            mc: mc(g.m, kc, mr),
            m: g.m,
            n: g.n,
            k: g.k,
            lda: g.lda,
            ta: g.ta,
            ldb,
            unfold,
            ldc: g.ldc,
            a,
            pack_b,
            direct: None,
            kc,
            mr,
            nr,
            operands: operands(&g.epilogue),
            narrow: None,
            sums: g.b_sums.iter().map(b_sums::Shape::of).collect(),
            sums_at: 4 + operands(&g.epilogue).len(),
            tiles: [None; 12],
        }
    }

    /// Makes the tiles read an image `b` where it is ([`Product::direct`]), over the whole
    /// of `k` in one block: a block boundary could cut a channel's taps, which the tiles
    /// unroll.
    pub fn read_directly(&mut self, d: Direct) {
        self.direct = Some(d);
        self.pack_b = false;
        self.kc = self.k.max(1);
        self.mc = mc(self.m, self.kc, self.mr);
    }

    /// The blocks of rows, as `(first row, rows)`.
    fn row_blocks(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
        let (m, mc) = (self.m, self.mc.max(self.mr).max(1));
        (0..m).step_by(mc).map(move |i0| (i0, mc.min(m - i0)))
    }

    /// The blocks of `k`, as `(first step, steps, phase)`: the first takes what is left
    /// over after blocks of `kc` (at least one step, unless `k` is 0), the rest `kc` each.
    pub fn blocks(&self) -> impl Iterator<Item = (usize, usize, Phase)> + use<> {
        let kc = self.kc.max(1);
        let count = self.k.div_ceil(kc).max(1);
        let first = self.k - (count - 1) * kc;
        (0..count).map(move |b| {
            let phase = match b {
                0 => Phase::Start,
                _ if b + 1 == count => Phase::Last,
                _ => Phase::Middle,
            };
            let p0 = if b == 0 { 0 } else { first + (b - 1) * kc };
            (p0, if b == 0 { first } else { kc }, phase)
        })
    }

    /// Which tile computes rows `rows` and columns `cols` of a block in `phase`.
    pub fn tile_index(&self, phase: Phase, tile: Tile) -> usize {
        phase as usize * 4 + usize::from(tile.rows < self.mr) * 2 + usize::from(tile.cols < self.nr)
    }

    /// Whether the last block of rows ends in two tiles of `(mr + m % mr) / 2` rows
    /// rather than a full one and one of `m % mr`: a tile of few rows streams the panel
    /// from L2 for little arithmetic (an LSTM step's 32 rows as 6 + 6 + 6 + 6 + 4 + 4
    /// rather than with a last tile of 2: the LSTM variant's backward kernel 11.10-11.28 ->
    /// 10.95-11.05 ms on one thread, medians of alternating runs). Only for `a` read in
    /// place, where a tile may start at any row; packed, `a` is in slivers of `mr` rows.
    fn balanced(&self) -> bool {
        let rest = self.m % self.mr;
        let last = self.row_blocks().last().map_or(0, |(_, rows)| rows);
        self.a == ASource::InPlace
            && rest > 0
            && last >= self.mr + rest
            && 2 * rest < self.mr
            && (self.mr + rest).is_multiple_of(2)
    }

    /// The row tiles of a block of rows from `i0`, as `(first row, rows)`: slivers of
    /// `mr`, the last two balanced where [`Product::balanced`] says.
    fn row_tiles(&self, i0: usize, rows_in_block: usize) -> impl Iterator<Item = (usize, usize)> + use<> {
        let (mr, end) = (self.mr.max(1), i0 + rows_in_block);
        let rest = rows_in_block % mr;
        let split = (self.balanced() && end == self.m && rest > 0).then(|| end - mr - rest);
        let full_end = split.unwrap_or(end);
        let slivers = (i0..full_end).step_by(mr).map(move |i| (i, mr.min(full_end - i)));
        let halves = split.into_iter().flat_map(move |i| {
            let half = (mr + rest) / 2;
            [(i, half), (i + half, half)]
        });
        slivers.chain(halves)
    }

    /// The tiles the product needs: every combination of full and remainder rows and
    /// columns that occurs.
    pub fn tiles_needed(&self) -> Vec<Tile> {
        let mut rows = vec![];
        if self.m >= self.mr {
            rows.push(self.mr);
        }
        if !self.m.is_multiple_of(self.mr) {
            rows.push(if self.balanced() { (self.mr + self.m % self.mr) / 2 } else { self.m % self.mr });
        }
        let mut cols = vec![];
        if self.n >= self.nr {
            cols.push(self.nr);
        }
        if !self.n.is_multiple_of(self.nr) && self.narrow.is_none() {
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

    /// Computes the product: `ptrs` holds `a`, `b`, `c`, the first output row an
    /// unfolded `b` starts at, and then the epilogue operands' addresses (each for row and
    /// column 0). With `prepared`, the tiles read this thread's copy of `b` made by
    /// [`Product::prepare`] (from the same `b`; without one, `b` is packed as usual).
    ///
    /// # Safety
    /// The pointers must address the matrices this product was made for, and every tile
    /// it needs must have been generated.
    pub unsafe fn run(&self, ptrs: *const *mut f32, prepared: bool) {
        // SAFETY: as the caller promised; each tile is called with the operands it was
        // generated for.
        unsafe {
            self.run_with(ptrs, prepared, |tile, a, b, c, ops| {
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
        prepared: bool,
        mut tile: impl FnMut(usize, *const f32, *const f32, *mut f32, *const *const f32),
    ) {
        // SAFETY: as the caller promised; the packing buffers are this thread's, and no
        // tile calls back into Rust, so the borrow is never taken twice.
        unsafe {
            let (a, b, c) = (*ptrs as *const f32, *ptrs.add(1) as *const f32, *ptrs.add(2));
            let first_row = *ptrs.add(3) as usize;
            let ops = std::slice::from_raw_parts(ptrs.add(4) as *const *const f32, self.operands.len());
            PACKED.with_borrow_mut(|[pa, pb, padded_image]| {
                let a_tiles = match self.a {
                    ASource::Packed => {
                        let dst = lines(pa, self.m.div_ceil(self.mr) * self.mr * self.k);
                        self.pack_a(a, dst);
                        dst as *const f32
                    }
                    ASource::InPlace => a,
                };
                let kc = self.kc.min(self.k);
                let resident = if prepared && self.can_prepare() { resident(self, b) } else { None };
                // One panel at a time, packed just before its row tiles read it, so that
                // it is still in L1 (packing a block of panels first left LeNet-5's
                // convolutions reading them back from L2).
                let b_panel = if self.pack_b && resident.is_none() {
                    lines(pb, self.nr * kc)
                } else {
                    std::ptr::null_mut()
                };
                // An image with padding is copied once with its padding written out, so
                // that packing reads every tap in place: clipping each run to the image
                // (four taps in five of LeNet-5's C1) had made packing half of LeNet-5's
                // inference.
                let (b, unfold) = match self.unfold {
                    Some(win) if win.pad != [0; 4] => {
                        let whole = padded(&win);
                        let dst = lines(padded_image, win.c * whole.h * whole.w);
                        pad_image(b, &win, dst);
                        (dst as *const f32, Some(whole))
                    }
                    other => (b, other),
                };
                let mut at = [std::ptr::null::<f32>(); MAX_OPERANDS];
                let single = self.blocks().count() == 1;
                // The sums of `b` are taken from the panels as they are packed (in the
                // first block of rows: later ones pack the same panels again), or from `b`
                // where it is for the columns no panel holds.
                let packs = self.pack_b && resident.is_none() && unfold.is_none() && self.m > 0;
                let mut sums = (!self.sums.is_empty()).then(|| {
                    let words = std::slice::from_raw_parts(ptrs.add(self.sums_at), b_sums::words(&self.sums));
                    Running::start(&self.sums, words, self.n, self.k)
                });
                // The original operands, for the columns [`narrow`] computes.
                let operands = narrow::Operands {
                    a,
                    lda: self.lda,
                    b,
                    ldb: self.ldb,
                    c,
                    ldc: self.ldc,
                    bias: ops.first().copied().unwrap_or(std::ptr::null()),
                };
                // Blocks of `k`, then blocks of rows whose slivers stay in L2, then column
                // panels, each packed just before the row tiles of the block read it.
                for (p0, kb, phase) in self.blocks() {
                    for (i0, rows_in_block) in self.row_blocks() {
                        for j in (0..self.n).step_by(self.nr) {
                            if let Some(narrow) = self.narrow.filter(|w| w.first == j) {
                                let last = phase == Phase::Last || single;
                                narrow.run(&operands, (i0, rows_in_block), (p0, kb), (phase, last));
                                continue;
                            }
                            let cols = self.nr.min(self.n - j);
                            let panel = match (unfold, resident) {
                                // The tile reads the output rows it computes from the image.
                                (Some(win), _) if self.direct.is_some() => {
                                    b.add((first_row + j / win.ow) * win.sh * win.w)
                                }
                                (Some(win), _) => {
                                    let first = first_row * win.ow + j;
                                    let pixels =
                                        Pixels { x: b, win: &win, first, count: cols, taps: (p0, kb) };
                                    self.pack_image(pixels, b_panel);
                                    b_panel as *const f32
                                }
                                (None, Some(all)) => all.add(j * self.k + p0 * self.nr),
                                (None, None) if self.pack_b => {
                                    let sums = sums.as_mut().filter(|_| i0 == 0).map(|s| (s, (p0, j)));
                                    self.pack_b(b.add(p0 * self.ldb + j), (cols, kb), b_panel, sums);
                                    b_panel as *const f32
                                }
                                (None, None) => b.add(p0 * self.ldb + j),
                            };
                            for (i, rows) in self.row_tiles(i0, rows_in_block) {
                                let sliver = match (self.a, self.ta) {
                                    (ASource::Packed, _) => a_tiles.add(i * self.k + p0 * self.mr),
                                    (ASource::InPlace, false) => a_tiles.add(i * self.lda + p0),
                                    (ASource::InPlace, true) => a_tiles.add(i + p0 * self.lda),
                                };
                                for (slot, (op, &p)) in at.iter_mut().zip(self.operands.iter().zip(ops)) {
                                    *slot = match op {
                                        EpilogueOperand::Row => p.add(i),
                                        EpilogueOperand::Col => p.add(j),
                                        EpilogueOperand::Elem(ld) => p.add(i * ld + j),
                                    };
                                }
                                let index = self.tile_index(phase, Tile { rows, cols });
                                tile(index, sliver, panel, c.add(i * self.ldc + j), at.as_ptr());
                            }
                        }
                    }
                }
                if let Some(mut sums) = sums {
                    let first = match self.narrow {
                        _ if !packs => Some(0),
                        Some(narrow) => Some(narrow.first),
                        None => None,
                    };
                    if let Some(j) = first.filter(|&j| j < self.n) {
                        sums.add(b.add(j), self.ldb, (0, self.k), (j, self.n - j));
                    }
                    sums.finish();
                }
            });
        }
    }
}

/// This thread's resident copy of `product`'s `b`, if it was prepared from `b`.
fn resident(product: &Product, b: *const f32) -> Option<*const f32> {
    let key = std::ptr::from_ref(product) as usize;
    RESIDENT.with_borrow(|all| {
        all.iter().find(|r| r.product == key && r.b == b as usize).map(|r| r.panels.as_ptr().cast::<f32>())
    })
}

/// The entry a Cranelift kernel calls before a loop in which a product statement's `b`
/// does not change ([`Product::prepare`]).
///
/// # Safety
/// As [`Product::prepare`].
pub unsafe extern "sysv64" fn prepare(product: *const Product, b: *const f32) {
    // SAFETY: the back end passes the address of a `Product` it keeps alive with the code.
    unsafe { (*product).prepare(b) }
}

/// The entry a Cranelift kernel calls for a product statement: `product` is the
/// [`Product`] the back end made for it, `ptrs` its operand addresses.
///
/// # Safety
/// As [`Product::run`].
pub unsafe extern "sysv64" fn entry(product: *const Product, ptrs: *const *mut f32) {
    // SAFETY: the back end passes the address of a `Product` it keeps alive with the code.
    unsafe { (*product).run(ptrs, false) }
}

/// [`entry`] for a product statement in a loop whose preamble called [`prepare`]: the
/// tiles read the copy of `b` it made.
///
/// # Safety
/// As [`Product::run`].
pub unsafe extern "sysv64" fn entry_prepared(product: *const Product, ptrs: *const *mut f32) {
    // SAFETY: as for `entry`.
    unsafe { (*product).run(ptrs, true) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::kernel::Ptr;
    use crate::ir::ops::TensorId;

    #[test]
    fn resident_copies_are_bounded_and_the_least_recent_given_up() {
        let t = |i: u32| Ptr::tensor(TensorId(i));
        let g = Gemm {
            m: 20,
            n: 20,
            k: 3,
            a: t(0),
            lda: 3,
            ta: false,
            b: Right::Matrix { ptr: t(1), ld: 20 },
            c: t(2),
            ldc: 20,
            epilogue: Vec::new(),
            sparse_a: false,
            b_sums: Vec::new(),
        };
        let products: Vec<Product> = (0..=MAX_RESIDENT).map(|_| Product::new(&g, 6, 16)).collect();
        let b: Vec<f32> = (0..60).map(|i| i as f32).collect();
        for p in &products {
            assert!(p.can_prepare());
            // SAFETY: `b` is the 3 × 20 matrix the product reads.
            unsafe { p.prepare(b.as_ptr()) };
        }
        assert!(resident(&products[0], b.as_ptr()).is_none(), "the least recent copy is given up");
        for p in &products[1..] {
            let copy = resident(p, b.as_ptr()).expect("a recent copy is kept");
            // SAFETY: the copy holds every panel, `k × NR` each; step 1 of the second
            // panel is b[1, 16].
            unsafe { assert_eq!(*copy.add(16 * 3 + 16), b[20 + 16]) };
        }
        assert!(resident(&products[1], b.as_ptr().wrapping_add(1)).is_none(), "another b is not read");
        RESIDENT.with_borrow(|all| assert_eq!(all.len(), MAX_RESIDENT));
        let huge = Gemm { n: 1 << 14, k: 1 << 10, b: Right::Matrix { ptr: t(1), ld: 1 << 14 }, ..g };
        assert!(!Product::new(&huge, 6, 16).can_prepare(), "a 64 MiB b is packed per call");
    }
}
