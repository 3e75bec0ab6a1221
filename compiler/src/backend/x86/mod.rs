//! Stage 9, the x86 back end: matrix products and element-wise maps as machine code for
//! the CPU's own vector width, every other statement through Cranelift.
//!
//! Cranelift lowers only 128-bit vectors, a half (AVX2) or a quarter (AVX-512) of what
//! these CPUs compute per instruction. This back end generates each product statement's
//! register tiles with an assembler (`iced-x86`), shaped for the instruction set
//! ([`isa::Simd`]: one file per set), and runs them from the GotoBLAS loops of
//! [`product`]; the kernel Cranelift generates around the statement calls them. The
//! tiles apply the epilogue, transcendental functions included ([`math`]); one whose
//! values do not fit the vector registers runs after the call, in Cranelift code over
//! the product. Map statements (and loops whose body is one map) are generated the same
//! way ([`map`]), with the same functions. Products with a one-hot `a` ([`onehot`]),
//! column sums ([`column_sum`]) and transposes ([`transpose`]), which move memory rather
//! than compute, are Rust compiled for the set, as the packing is.

mod avx2;
mod avx512;
mod b_sums;
mod column_sum;
mod cross_entropy;
mod direct;
#[cfg(test)]
mod emulate;
mod epilogue;
mod isa;
mod map;
#[cfg(test)]
mod map_tests;
mod math;
mod memory;
mod micro;
mod narrow;
mod onehot;
mod pack;
mod product;
#[cfg(test)]
mod tests;
mod transpose;

use super::cranelift::{self, Call, MapCall, Products, RoutineCall};
use super::{Backend, Code, CodegenError, Geometry, Kernel, Options};
use crate::ir::kernel::{ColumnSum, CrossEntropy, EInst, Gemm, Map, Program, Right, Transpose};
use crate::passes::memory::MemoryPlan;
use isa::Simd;
use memory::Executable;
use micro::{BRead, Layout, Tile, displacement};
use product::{ASource, Phase, Product};
use std::collections::HashMap;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// Cranelift's geometry (its code runs everything but the products), with products that
/// read a convolution's input through its window.
pub const GEOMETRY: Geometry = Geometry { unfolds: true, ..cranelift::GEOMETRY };

/// The instruction sets the back end generates code for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX2 with FMA (256-bit vectors, sixteen registers).
    Avx2,
    /// AVX-512 Foundation (512-bit vectors, thirty-two registers, opmasks).
    Avx512,
}

impl Isa {
    /// Every set, slowest first.
    pub const ALL: [Isa; 2] = [Isa::Avx2, Isa::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx2 => avx2::Avx2::NAME,
            Isa::Avx512 => avx512::Avx512::NAME,
        }
    }

    /// Whether this CPU runs it.
    pub fn available(self) -> bool {
        match self {
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
            }
            Isa::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
        }
    }
}

/// The x86 back end for one instruction set.
#[derive(Clone, Copy, Debug)]
pub struct X86 {
    pub isa: Isa,
    /// Options of the Cranelift code around the products.
    pub options: Options,
}

impl Backend for X86 {
    fn geometry(&self) -> Geometry {
        GEOMETRY
    }

    fn compile(&self, program: &Program, memory: &MemoryPlan) -> Result<Box<dyn Code>, CodegenError> {
        if !self.isa.available() {
            return Err(CodegenError::Host(format!("this CPU does not have {}", self.isa.name())));
        }
        match self.isa {
            Isa::Avx2 => compile::<avx2::Avx2>(program, memory, self.options, self.isa),
            Isa::Avx512 => compile::<avx512::Avx512>(program, memory, self.options, self.isa),
        }
    }
}

fn compile<S: Simd>(
    program: &Program,
    memory: &MemoryPlan,
    options: Options,
    isa: Isa,
) -> Result<Box<dyn Code>, CodegenError> {
    const { assert!(S::LANES * S::SHAPES[0].1 <= pack::MAX_NR, "a panel's pixels fit the runs of `pack_image`") };
    let started = Instant::now();
    let mut generator = Generator::<S>::default();
    let compiled = cranelift::compile(program, memory, options, &mut generator)?;
    let (onehots, sums) = (std::mem::take(&mut generator.onehots), std::mem::take(&mut generator.sums));
    let (losses, transposes) =
        (std::mem::take(&mut generator.losses), std::mem::take(&mut generator.transposes));
    let (products, maps, code) = generator.finish()?;
    Ok(Box::new(X86Code {
        compiled,
        products,
        _maps: maps,
        _onehots: onehots,
        _sums: sums,
        _losses: losses,
        _transposes: transposes,
        _code: code,
        time: started.elapsed(),
        isa,
    }))
}

/// A product at an address that stays put: generated kernels hold it as a constant.
type Placed = Pin<Box<Product>>;

/// Kernels compiled by Cranelift and the products they call.
struct X86Code {
    // Dropped in this order: the kernels, then the products they call, then their code.
    compiled: cranelift::Compiled,
    products: Vec<Placed>,
    _maps: Vec<Pin<Box<map::MapCode>>>,
    // The Rust-compiled routines the kernels call, each at an address that stays put.
    _onehots: Vec<Pin<Box<onehot::OneHot>>>,
    _sums: Vec<Pin<Box<column_sum::ColumnSums>>>,
    _losses: Vec<Pin<Box<cross_entropy::CrossEntropyRows>>>,
    _transposes: Vec<Pin<Box<transpose::Transposes>>>,
    _code: Option<Executable>,
    time: Duration,
    isa: Isa,
}

impl std::fmt::Debug for X86Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "X86Code({:?}, {} products)", self.compiled, self.products.len())
    }
}

impl Code for X86Code {
    fn kernel(&self, k: usize) -> Option<Kernel<'_>> {
        self.compiled.kernel(k)
    }

    fn len(&self) -> usize {
        self.compiled.len()
    }

    fn fma(&self) -> bool {
        true
    }

    fn time(&self) -> Duration {
        self.time
    }

    fn generator(&self, k: usize) -> &'static str {
        if self.compiled.calls(k) { self.isa.name() } else { "cranelift" }
    }
}

/// What tile code depends on: the tile, the operand layout and the epilogue with its
/// addresses left out (so products of the same shape share their tiles).
#[derive(Clone, PartialEq, Eq, Hash)]
struct TileKey {
    tile: Tile,
    layout: Layout,
    epilogue: String,
}

/// Generates the products of one program: each distinct tile once, appended to one
/// block of code that is made executable at the end.
struct Generator<S> {
    code: Vec<u8>,
    offsets: HashMap<TileKey, usize>,
    products: Vec<Placed>,
    /// Per product, per tile index, the offset of its code.
    tiles: Vec<[Option<usize>; 12]>,
    /// The maps, each with the offset of its code, and the code of each map shape.
    maps: Vec<(Pin<Box<map::MapCode>>, usize)>,
    map_offsets: HashMap<String, usize>,
    /// Each piece of code's offset, length and name, for `perf` (see [`Generator::finish`]).
    names: Vec<(usize, usize, String)>,
    onehots: Vec<Pin<Box<onehot::OneHot>>>,
    sums: Vec<Pin<Box<column_sum::ColumnSums>>>,
    losses: Vec<Pin<Box<cross_entropy::CrossEntropyRows>>>,
    transposes: Vec<Pin<Box<transpose::Transposes>>>,
    _isa: std::marker::PhantomData<S>,
}

impl<S> Default for Generator<S> {
    fn default() -> Self {
        Generator {
            code: Vec::new(),
            offsets: HashMap::new(),
            products: Vec::new(),
            tiles: Vec::new(),
            maps: Vec::new(),
            map_offsets: HashMap::new(),
            names: Vec::new(),
            onehots: Vec::new(),
            sums: Vec::new(),
            losses: Vec::new(),
            transposes: Vec::new(),
            _isa: std::marker::PhantomData,
        }
    }
}

/// Whether an epilogue reads the buffer the product writes: applied after the product,
/// it would then read the product rather than what was there.
fn reads_output(g: &Gemm) -> bool {
    g.epilogue.iter().any(|e| match e {
        EInst::Row(p) | EInst::Col(p) | EInst::Elem(p, _) => p.buf == g.c.buf,
        EInst::Acc | EInst::Const(_) | EInst::Prim(..) | EInst::Bin(..) | EInst::Select(..) => false,
    })
}

/// The epilogue with its addresses left out.
fn epilogue_key(epilogue: &[EInst]) -> String {
    let shapes: Vec<String> = epilogue
        .iter()
        .map(|e| match e {
            EInst::Row(_) => "row".into(),
            EInst::Col(_) => "col".into(),
            EInst::Elem(_, ld) => format!("elem{ld}"),
            other => format!("{other:?}"),
        })
        .collect();
    shapes.join(";")
}

impl<S: Simd> Products for Generator<S> {
    fn cross_entropy(&mut self, c: &CrossEntropy) -> Option<RoutineCall> {
        let routine = Box::pin(cross_entropy::CrossEntropyRows::new(c, S::ISA));
        let data = std::ptr::from_ref::<cross_entropy::CrossEntropyRows>(&routine) as usize;
        self.losses.push(routine);
        Some(RoutineCall { entry: cross_entropy::entry as *const () as usize, data })
    }

    fn transpose(&mut self, t: &Transpose) -> Option<RoutineCall> {
        let routine = Box::pin(transpose::Transposes::new(t));
        let data = std::ptr::from_ref::<transpose::Transposes>(&routine) as usize;
        self.transposes.push(routine);
        Some(RoutineCall { entry: transpose::entry as *const () as usize, data })
    }

    fn column_sum(&mut self, c: &ColumnSum) -> Option<RoutineCall> {
        let routine = Box::pin(column_sum::ColumnSums::new(c, S::ISA));
        let data = std::ptr::from_ref::<column_sum::ColumnSums>(&routine) as usize;
        self.sums.push(routine);
        Some(RoutineCall { entry: column_sum::entry as *const () as usize, data })
    }

    fn map(&mut self, m: &Map, rows: usize, strides: &[i64]) -> Result<Option<MapCall>, CodegenError> {
        let strides: Option<Vec<i32>> =
            strides.iter().map(|&s| i32::try_from(s.checked_mul(4)?).ok().map(|_| s as i32)).collect();
        let Some(strides) = strides else { return Ok(None) };
        if rows == 0 || m.len == 0 || !map::supports(m) {
            return Ok(None);
        }
        let key = map::key(m, rows, &strides);
        let offset = match self.map_offsets.get(&key) {
            Some(&o) => o,
            // Values that do not fit the registers: Cranelift's code, which spills.
            None => match map::generate::<S>(m, rows, &strides) {
                Ok(bytes) => {
                    self.code.resize(self.code.len().next_multiple_of(64), 0xcc);
                    let o = self.code.len();
                    self.code.extend_from_slice(&bytes);
                    self.names.push((o, bytes.len(), format!("nnc map of {} over {rows} rows", m.len)));
                    self.map_offsets.insert(key, o);
                    o
                }
                Err(epilogue::Error::Registers(_)) => return Ok(None),
                Err(e) => {
                    return Err(CodegenError::Kernel {
                        kernel: format!("a map of {} elements", m.len),
                        message: e.to_string(),
                    });
                }
            },
        };
        let code = Box::pin(map::MapCode::default());
        let data = std::ptr::from_ref::<map::MapCode>(&code) as usize;
        self.maps.push((code, offset));
        Ok(Some(MapCall { entry: map::entry as *const () as usize, data, rows: None }))
    }

    fn product(&mut self, g: &Gemm) -> Result<Option<Call>, CodegenError> {
        // A one-hot `a` selects rows of `b`: a gather or scatter-add, with a bias at most
        // (Cranelift's loop over its non-zeros applies any other epilogue).
        // The one-hot routine takes no sums of `b`, nor do products over an image.
        if !g.b_sums.is_empty() && (g.sparse_a || !matches!(g.b, Right::Matrix { .. })) {
            return Ok(None);
        }
        if g.sparse_a {
            let Some(routine) = onehot::OneHot::new(g, S::ISA) else { return Ok(None) };
            let routine = Box::pin(routine);
            let data = std::ptr::from_ref::<onehot::OneHot>(&routine) as usize;
            self.onehots.push(routine);
            let entry = onehot::entry as *const () as usize;
            return Ok(Some(Call { entry, data, epilogue_after: false, prepare: None }));
        }
        // A convolution with few output channels reads its image directly, in tiles of
        // whole output rows; anything else is packed, in the set's register tiles.
        let direct = match &g.b {
            Right::Unfolded(u) => direct::shape::<S>(g.m, g.n, &u.win)
                .and_then(|(mr, rows)| Some((mr, rows, direct::Direct::new(&pack::padded(&u.win), rows)?))),
            Right::Matrix { .. } => None,
        };
        let (mut mr, mut nv) = micro::shape::<S>(g.n);
        // Rows of `a` read in place, untransposed, are as many streams a row of `lda`
        // apart as the tile has rows: past the widest shape's six, at a long row, they
        // collide in L1's sets (ResNet-18-CIFAR's last stage ran 1.2× slower so).
        if !g.ta && Product::new(g, mr, S::LANES * nv).a == ASource::InPlace {
            (mr, nv) = S::SHAPES[0];
        }
        let mut nr = S::LANES * nv;
        if let Some((rows, out_rows, d)) = direct {
            (mr, nr) = (rows, out_rows * d.ow);
        }
        let fused = micro::supports::<S>(&g.epilogue);
        if displacement(4 * g.ldc * mr).is_none() || (!fused && reads_output(g)) {
            return Ok(None);
        }
        let mut p = Product::new(g, mr, nr);
        let epilogue: &[EInst] = if fused { &g.epilogue } else { &[] };
        if !fused {
            p.operands.clear();
        }
        // In-place operands need their strides as instruction displacements.
        if p.a == ASource::InPlace && displacement(4 * g.lda * mr.max(4)).is_none() {
            p.a = ASource::Packed;
        }
        // Blocks of `k` after the first add to what `c` holds: an epilogue reading the
        // output would read partial sums, so such a product is one block.
        if reads_output(g) {
            p.kc = g.k.max(1);
            p.mc = product::mc(g.m, p.kc, mr);
        }
        if let Some((.., d)) = direct {
            p.read_directly(d);
        } else if !p.pack_b && displacement(4 * p.ldb * 4).is_none() {
            p.pack_b = true;
        }
        // A last panel of a few columns: rows in the lanes (`narrow.rs`).
        if p.unfold.is_none() && p.direct.is_none() {
            p.narrow = narrow::Narrow::new(p.n, p.nr, p.ta, epilogue);
        }
        let offsets = self.tiles_for(&p, epilogue).map_err(|e| CodegenError::Kernel {
            kernel: format!("a {}×{}×{} product", g.m, g.n, g.k),
            message: e.to_string(),
        })?;
        let product = Box::pin(p);
        let prepare = product.can_prepare().then_some((
            product::prepare as *const () as usize,
            product::entry_prepared as *const () as usize,
        ));
        let data = std::ptr::from_ref::<Product>(&product) as usize;
        self.products.push(product);
        self.tiles.push(offsets);
        Ok(Some(Call { entry: product::entry as *const () as usize, data, epilogue_after: !fused, prepare }))
    }
}

/// Appends `names` (offsets into `exec`) to `/tmp/perf-<pid>.map`, one
/// `start length name` line each, in hexadecimal as `perf` reads them.
fn perf_map(exec: &Executable, names: &[(usize, usize, String)]) -> Result<(), CodegenError> {
    use std::io::Write;
    let path = format!("/tmp/perf-{}.map", std::process::id());
    let lines: String =
        names.iter().map(|(o, len, name)| format!("{:x} {len:x} {name}\n", exec.at(*o) as usize)).collect();
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(lines.as_bytes()))
        .map_err(|e| CodegenError::Host(format!("cannot write {path}: {e}")))
}

/// The FMA peak of one core in GFLOP/s, measured by running a generated loop of
/// independent FMA chains (the best of seven runs of about 20 ms).
pub fn fma_peak(isa: Isa) -> Result<f64, CodegenError> {
    if !isa.available() {
        return Err(CodegenError::Host(format!("this CPU does not have {}", isa.name())));
    }
    let (code, flops) = match isa {
        Isa::Avx2 => micro::fma_loop::<avx2::Avx2>(),
        Isa::Avx512 => micro::fma_loop::<avx512::Avx512>(),
    }
    .map_err(|e| CodegenError::Kernel { kernel: "the FMA peak loop".into(), message: e.to_string() })?;
    let exec =
        Executable::new(&code).map_err(|e| CodegenError::Host(format!("cannot map code executable: {e}")))?;
    // SAFETY: the code is a function of this signature that only counts `rdi` down.
    let run = unsafe { std::mem::transmute::<*const u8, unsafe extern "sysv64" fn(u64)>(exec.at(0)) };
    const ITERATIONS: u64 = 10_000_000;
    let best = (0..7)
        .map(|_| {
            let t = Instant::now();
            // SAFETY: as above; `exec` outlives the call.
            unsafe { run(ITERATIONS) };
            t.elapsed()
        })
        .min()
        .unwrap_or_default();
    Ok(ITERATIONS as f64 * flops as f64 / best.as_secs_f64().max(1e-9) / 1e9)
}

impl<S: Simd> Generator<S> {
    /// Generates (or finds) the tiles `p` needs with `epilogue`, for each phase of its
    /// blocks of `k`: their offsets in the code, by [`Product::tile_index`].
    fn tiles_for(&mut self, p: &Product, epilogue: &[EInst]) -> Result<[Option<usize>; 12], epilogue::Error> {
        let (a_row, a_k) = p.a_strides();
        let mut offsets = [None; 12];
        let blocks: Vec<(usize, usize, Phase)> = p.blocks().collect();
        // The phases in use, each with its block length (the first block has its own).
        let mut phases: Vec<(usize, Phase)> = blocks.iter().map(|&(_, kb, phase)| (kb, phase)).collect();
        phases.dedup_by_key(|(_, phase)| *phase);
        for (k, phase) in phases {
            let layout = Layout {
                k,
                a_row: a_row as i32,
                a_k: a_k as i32,
                b: match p.direct {
                    Some(d) => BRead::Image(d),
                    None => BRead::Rows { step: p.b_stride() as i32, in_place: !p.pack_b },
                },
                c_row: (4 * p.ldc) as i32,
                accumulate: phase != Phase::Start,
            };
            let last = phase == Phase::Last || blocks.len() == 1;
            let epilogue = if last { epilogue } else { &[] };
            for tile in p.tiles_needed() {
                let key = TileKey { tile, layout, epilogue: epilogue_key(epilogue) };
                let offset = match self.offsets.get(&key) {
                    Some(&o) => o,
                    None => {
                        let bytes = micro::micro::<S>(tile, &layout, epilogue)?;
                        // Each tile starts on a cache line.
                        self.code.resize(self.code.len().next_multiple_of(64), 0xcc);
                        let o = self.code.len();
                        self.code.extend_from_slice(&bytes);
                        let name = format!(
                            "nnc tile {}x{} k{} {:?}{}",
                            tile.rows,
                            tile.cols,
                            k,
                            phase,
                            if epilogue.is_empty() { "" } else { " with epilogue" }
                        );
                        self.names.push((o, bytes.len(), name));
                        self.offsets.insert(key, o);
                        o
                    }
                };
                offsets[p.tile_index(phase, tile)] = Some(offset);
            }
        }
        Ok(offsets)
    }

    /// Maps the code executable and hands each product its tiles' addresses and each map
    /// its code's. With `NNC_PERF_MAP` set in the environment, it also names each piece
    /// of code in `/tmp/perf-<pid>.map`, where `perf report` looks for the names of
    /// code generated at run time.
    #[allow(clippy::type_complexity)]
    fn finish(self) -> Result<(Vec<Placed>, Vec<Pin<Box<map::MapCode>>>, Option<Executable>), CodegenError> {
        let Generator { code, mut products, tiles, maps, names, .. } = self;
        if code.is_empty() {
            return Ok((products, Vec::new(), None));
        }
        let exec = Executable::new(&code)
            .map_err(|e| CodegenError::Host(format!("cannot map code executable: {e}")))?;
        if std::env::var_os("NNC_PERF_MAP").is_some() {
            perf_map(&exec, &names)?;
        }
        for (p, offsets) in products.iter_mut().zip(tiles) {
            for (slot, offset) in p.tiles.iter_mut().zip(offsets) {
                // SAFETY: the offset is the start of a tile's code, generated with the
                // signature of `TileFn`, and `exec` lives as long as the products.
                *slot =
                    offset.map(|o| unsafe { std::mem::transmute::<*const u8, product::TileFn>(exec.at(o)) });
            }
        }
        let maps = maps
            .into_iter()
            .map(|(mut m, o)| {
                // SAFETY: as for the tiles, with the signature of `MapFn`.
                m.code = Some(unsafe { std::mem::transmute::<*const u8, map::MapFn>(exec.at(o)) });
                m
            })
            .collect();
        Ok((products, maps, Some(exec)))
    }
}
