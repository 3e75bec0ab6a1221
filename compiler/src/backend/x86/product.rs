//! A whole product as the generated micro-kernels compute it: the GotoBLAS loops in
//! Rust around them. A long `k` is cut into blocks of about [`KC`] steps and the rows
//! into blocks of about [`MC_BYTES`] of `a` (packed into `k × MR` slivers when enough
//! column panels reuse it), so that a block's slivers stay in L2 while every column
//! panel of `b` passes over them; each panel (packed into a contiguous `k × NR` strip
//! when enough row tiles reuse it) is packed just before the block's row tiles read it,
//! and stays in L1 while they do. The tiles of the first block of `k` store their sums,
//! those of later blocks add to them, and only the last block's apply the epilogue,
//! once, to the finished sums.

use super::micro::Tile;
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
    /// Whether `b` is packed into panels (else read in place; an image is always packed).
    pub pack_b: bool,
    /// Steps of `k` per block (see [`Product::blocks`]).
    pub kc: usize,
    /// Rows per block of rows (a multiple of `mr`): each block's slivers of a block of
    /// `k` stay in L2 while every column panel passes over them.
    pub mc: usize,
    pub mr: usize,
    pub nr: usize,
    pub operands: Vec<EpilogueOperand>,
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
        let (ldb, unfold) = match &g.b {
            Right::Matrix { ld, .. } => (*ld, None),
            Right::Unfolded(u) => (0, Some(u.win)),
        };
        let pack_b = g.m > 2 * mr || unfold.is_some();
        // Blocks of equal length, about `KC` each (a `k` up to 1.5 `KC` is one block).
        let blocks = if g.k <= KC * 3 / 2 { 1 } else { g.k.div_ceil(KC) };
        let kc = g.k.div_ceil(blocks).max(1);
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
            kc,
            mr,
            nr,
            operands: operands(&g.epilogue),
            tiles: [None; 12],
        }
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

    /// Computes the product: `ptrs` holds `a`, `b`, `c`, the first output row an
    /// unfolded `b` starts at, and then the epilogue operands' addresses (each for row and
    /// column 0).
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
            let first_row = *ptrs.add(3) as usize;
            let ops = std::slice::from_raw_parts(ptrs.add(4) as *const *const f32, self.operands.len());
            PACKED.with_borrow_mut(|[pa, pb, padded]| {
                let a_tiles = match self.a {
                    ASource::Packed => {
                        let dst = lines(pa, self.m.div_ceil(self.mr) * self.mr * self.k);
                        self.pack_a(a, dst);
                        dst as *const f32
                    }
                    ASource::InPlace => a,
                };
                let kc = self.kc.min(self.k);
                // One panel at a time, packed just before its row tiles read it, so that
                // it is still in L1 (packing a block of panels first left LeNet-5's
                // convolutions reading them back from L2).
                let b_panel = if self.pack_b { lines(pb, self.nr * kc) } else { std::ptr::null_mut() };
                // An image with padding is copied once with its padding written out, so
                // that packing reads every tap in place: clipping each run to the image
                // (four taps in five of LeNet-5's C1) had made packing half of LeNet-5's
                // inference.
                let (b, unfold) = match self.unfold {
                    Some(win) if win.pad != [0; 4] => {
                        let (h, w) = (win.h + win.pad[0] + win.pad[1], win.w + win.pad[2] + win.pad[3]);
                        let dst = lines(padded, win.c * h * w);
                        pad_image(b, &win, dst);
                        (dst as *const f32, Some(Window { h, w, pad: [0; 4], ..win }))
                    }
                    other => (b, other),
                };
                let mut at = [std::ptr::null::<f32>(); MAX_OPERANDS];
                // Blocks of `k`, then blocks of rows whose slivers stay in L2, then column
                // panels, each packed just before the row tiles of the block read it.
                for (p0, kb, phase) in self.blocks() {
                    for (i0, rows_in_block) in self.row_blocks() {
                        for j in (0..self.n).step_by(self.nr) {
                            let cols = self.nr.min(self.n - j);
                            let panel = match unfold {
                                Some(win) => {
                                    let first = first_row * win.ow + j;
                                    let pixels =
                                        Pixels { x: b, win: &win, first, count: cols, taps: (p0, kb) };
                                    self.pack_image(pixels, b_panel);
                                    b_panel as *const f32
                                }
                                None if self.pack_b => {
                                    self.pack_b(b.add(p0 * self.ldb + j), cols, kb, b_panel);
                                    b_panel as *const f32
                                }
                                None => b.add(p0 * self.ldb + j),
                            };
                            for i in (i0..i0 + rows_in_block).step_by(self.mr) {
                                let rows = self.mr.min(self.m - i);
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

    /// Packs columns `0..nb` of `k` rows of `b` (already offset to the block) into
    /// panels of `NR` columns, `k × NR` each, zero past the last column.
    unsafe fn pack_b(&self, b: *const f32, nb: usize, k: usize, dst: *mut f32) {
        // SAFETY: as the caller promised; the AVX2 copy runs only where the CPU has AVX2.
        unsafe {
            if std::arch::is_x86_feature_detected!("avx2") {
                self.pack_b_avx2(b, nb, k, dst)
            } else {
                self.pack_b_any(b, nb, k, dst)
            }
        }
    }

    /// [`Product::pack_b`] compiled for AVX2: its fixed-size copies are then 256-bit moves
    /// rather than SSE's 128-bit ones.
    #[target_feature(enable = "avx2")]
    unsafe fn pack_b_avx2(&self, b: *const f32, nb: usize, k: usize, dst: *mut f32) {
        // SAFETY: as the caller promised.
        unsafe { self.pack_b_any(b, nb, k, dst) }
    }

    #[inline(always)]
    unsafe fn pack_b_any(&self, b: *const f32, nb: usize, k: usize, dst: *mut f32) {
        let nr = self.nr;
        for jr in (0..nb).step_by(nr) {
            let cols = nr.min(nb - jr);
            // SAFETY: `b` holds `k` rows of `ldb`, `nb` columns from this block; `dst`
            // holds the block's panels.
            unsafe {
                let panel = dst.add(jr * k);
                for p in 0..k {
                    let from = b.add(p * self.ldb + jr);
                    let to = panel.add(p * nr);
                    copy(from, to, cols);
                    if cols < nr {
                        zero(to.add(cols), nr - cols);
                    }
                }
            }
        }
    }
}

/// Copies `n` floats in fixed-size pieces of 16, 8, 4 and single floats. The runs packing
/// copies are short (an output row of a small image: 10 floats in LeNet-5's C3), and a
/// call per run cost more than the copy: `memmove` and `memset` called from the packing
/// took a quarter of LeNet-5's inference time at batch 256.
///
/// # Safety
/// As [`std::ptr::copy_nonoverlapping`].
#[inline(always)]
unsafe fn copy(from: *const f32, to: *mut f32, n: usize) {
    // SAFETY: as the caller promised; the arrays are read and written unaligned, each
    // within the first `n` floats.
    unsafe {
        let mut at = 0;
        while at + 16 <= n {
            to.add(at).cast::<[f32; 16]>().write_unaligned(from.add(at).cast::<[f32; 16]>().read_unaligned());
            at += 16;
        }
        if at + 8 <= n {
            to.add(at).cast::<[f32; 8]>().write_unaligned(from.add(at).cast::<[f32; 8]>().read_unaligned());
            at += 8;
        }
        if at + 4 <= n {
            to.add(at).cast::<[f32; 4]>().write_unaligned(from.add(at).cast::<[f32; 4]>().read_unaligned());
            at += 4;
        }
        while at < n {
            *to.add(at) = *from.add(at);
            at += 1;
        }
    }
}

/// Writes `n` zeros, in pieces as [`copy`] copies.
///
/// # Safety
/// As [`std::ptr::write_bytes`].
#[inline(always)]
unsafe fn zero(to: *mut f32, n: usize) {
    // SAFETY: as the caller promised; each write is within the first `n` floats.
    unsafe {
        let mut at = 0;
        while at + 16 <= n {
            to.add(at).cast::<[f32; 16]>().write_unaligned([0.0; 16]);
            at += 16;
        }
        if at + 8 <= n {
            to.add(at).cast::<[f32; 8]>().write_unaligned([0.0; 8]);
            at += 8;
        }
        if at + 4 <= n {
            to.add(at).cast::<[f32; 4]>().write_unaligned([0.0; 4]);
            at += 4;
        }
        while at < n {
            *to.add(at) = 0.0;
            at += 1;
        }
    }
}

/// Most pixels of a panel, and so most runs along output rows one can span.
pub const MAX_NR: usize = 64;

/// What [`Product::pack_image`] packs: output pixels `first..first + count` of the image
/// at `x` unfolded through `win`, taps `taps.0..taps.0 + taps.1`.
#[derive(Clone, Copy)]
struct Pixels<'w> {
    x: *const f32,
    win: &'w Window,
    first: usize,
    count: usize,
    taps: (usize, usize),
}

impl Product {
    /// Packs `pixels` into panels of `NR` columns, as [`Product::pack_b`] packs a matrix:
    /// row `p` of a panel is kernel tap `taps.0 + p` (taps ordered by channel, then kernel
    /// row, then column) of each pixel, for `p < taps.1`, 0 in the padding and past the
    /// last pixel. Each panel's
    /// pixels are split once into runs along output rows; a run whose taps lie inside the
    /// image at stride 1 is one copy.
    unsafe fn pack_image(&self, pixels: Pixels, dst: *mut f32) {
        // SAFETY: as the caller promised; the AVX2 copy runs only where the CPU has AVX2.
        unsafe {
            if std::arch::is_x86_feature_detected!("avx2") {
                self.pack_image_avx2(pixels, dst)
            } else {
                self.pack_image_any(pixels, dst)
            }
        }
    }

    /// [`Product::pack_image`] compiled for AVX2 (see [`Product::pack_b_avx2`]).
    #[target_feature(enable = "avx2")]
    unsafe fn pack_image_avx2(&self, pixels: Pixels, dst: *mut f32) {
        // SAFETY: as the caller promised.
        unsafe { self.pack_image_any(pixels, dst) }
    }

    #[inline(always)]
    unsafe fn pack_image_any(&self, pixels: Pixels, dst: *mut f32) {
        let Pixels { x, win, first, count: nb, taps: (p0, k) } = pixels;
        let nr = self.nr;
        let (h, w) = (win.h as isize, win.w as isize);
        let (top, left) = (win.pad[0] as isize, win.pad[2] as isize);
        for jr in (0..nb).step_by(nr) {
            let cols = nr.min(nb - jr);
            // (column in the panel, output row, output column, length)
            let mut runs = [(0usize, 0usize, 0usize, 0usize); MAX_NR];
            let mut count = 0;
            let mut j = 0;
            while j < cols {
                let pixel = first + jr + j;
                let (oy, ox) = (pixel / win.ow, pixel % win.ow);
                let len = (win.ow - ox).min(cols - j);
                runs[count] = (j, oy, ox, len);
                count += 1;
                j += len;
            }
            // SAFETY: `x` holds the `c × h × w` image; `dst` holds the block's panels, and
            // every read below is checked to lie inside the image.
            unsafe {
                let panel = dst.add(jr * k);
                for &(at, oy, ox, len) in &runs[..count] {
                    let x0 = (ox * win.sw) as isize - left;
                    let mut row = panel.add(at);
                    // The first tap's channel, kernel row and column; then whole rows.
                    let (mut ch, mut ky0, mut kx0) =
                        (p0 / (win.kh * win.kw), p0 / win.kw % win.kh, p0 % win.kw);
                    let mut taps = k;
                    while taps > 0 {
                        let plane = x.add(ch * win.h * win.w);
                        for ky in ky0..win.kh {
                            let here = (win.kw - kx0).min(taps);
                            let iy = (oy * win.sh + ky * win.dh) as isize - top;
                            if iy < 0 || iy >= h {
                                for _ in 0..here {
                                    zero(row, len);
                                    row = row.add(nr);
                                }
                            } else {
                                let line = plane.offset(iy * w);
                                for kx in kx0..kx0 + here {
                                    let ix0 = x0 + (kx * win.dw) as isize;
                                    if win.sw == 1 && ix0 >= 0 && ix0 + len as isize <= w {
                                        copy(line.offset(ix0), row, len);
                                    } else {
                                        clipped(line, w, ix0, win.sw, row, len);
                                    }
                                    row = row.add(nr);
                                }
                            }
                            taps -= here;
                            kx0 = 0;
                            if taps == 0 {
                                break;
                            }
                        }
                        ky0 = 0;
                        ch += 1;
                    }
                }
                if cols < nr {
                    for p in 0..k {
                        zero(panel.add(p * nr + cols), nr - cols);
                    }
                }
            }
        }
    }
}

/// Copies the `c × h × w` image at `x` into `dst` as the `c × (h + top + bottom) × (w +
/// left + right)` image with `win`'s padding as zeros.
///
/// # Safety
/// `x` must hold the image and `dst` the padded one.
unsafe fn pad_image(x: *const f32, win: &Window, dst: *mut f32) {
    let [top, bottom, left, right] = win.pad;
    let w = left + win.w + right;
    // SAFETY: as the caller promised; every write is inside the padded image and every
    // read inside the image.
    unsafe {
        let mut to = dst;
        for ch in 0..win.c {
            zero(to, top * w);
            to = to.add(top * w);
            for y in 0..win.h {
                zero(to, left);
                copy(x.add((ch * win.h + y) * win.w), to.add(left), win.w);
                zero(to.add(left + win.w), right);
                to = to.add(w);
            }
            zero(to, bottom * w);
            to = to.add(bottom * w);
        }
    }
}

/// `out[t] = line[ix0 + t · stride]` for `t < len`, 0 where that lies outside `0..w`.
///
/// # Safety
/// `line` must hold `w` floats and `out` `len`.
unsafe fn clipped(line: *const f32, w: isize, ix0: isize, stride: usize, out: *mut f32, len: usize) {
    let sw = stride as isize;
    // The pixels whose tap lies inside the row: `lo..hi` (without a division at stride 1,
    // the padded border of most convolutions).
    let (lo, hi) = if sw == 1 {
        let lo = (-ix0).clamp(0, len as isize);
        (lo, (w - ix0).clamp(lo, len as isize))
    } else {
        let lo = if ix0 >= 0 { 0 } else { ((-ix0 + sw - 1) / sw).min(len as isize) };
        (lo, if ix0 >= w { lo } else { ((w - ix0 + sw - 1) / sw).clamp(lo, len as isize) })
    };
    let (lo, hi) = (lo as usize, hi as usize);
    // SAFETY: as the caller promised; `ix0 + t · stride` is inside the row for `lo ≤ t < hi`.
    unsafe {
        zero(out, lo);
        zero(out.add(hi), len - hi);
        let from = line.offset(ix0 + lo as isize * sw);
        if stride == 1 {
            copy(from, out.add(lo), hi - lo);
        } else {
            for t in 0..hi - lo {
                *out.add(lo + t) = *from.add(t * stride);
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
