//! Every tile shape and edge (row and column remainders, `k` of 0 to past the unrolling,
//! masks), each way of reading the operands (packed or in place, `a` transposed or not,
//! padded strides) and every epilogue instruction the tiles apply, against a float64
//! product under proptest — for every instruction set: natively where this CPU runs
//! it, else in the emulator, which is itself checked bit for bit against this CPU.

use super::avx2::Avx2;
use super::avx512::Avx512;
use super::emulate;
use super::isa::Simd;
use super::product::{ASource, Product};
use super::{Generator, Isa};
use crate::ir::kernel::{BinOp, Cmp, EInst, Gemm, Prim, Ptr, Right};
use crate::ir::ops::TensorId;
use proptest::prelude::*;

/// Epilogues over the accumulator `Acc` and operands `Row` (slot 0 of its kind), `Col`,
/// `Elem`: each instruction kind at least once.
fn epilogues() -> Vec<Vec<EInst>> {
    let p = || Ptr::tensor(TensorId(9));
    use EInst::*;
    vec![
        vec![],
        // Batch-norm scale and shift, then relu.
        vec![
            Acc,
            Row(p()),
            Bin(BinOp::Mul, 0, 1),
            Row(p()),
            Bin(BinOp::Add, 2, 3),
            Const(0.0),
            Bin(BinOp::Max, 4, 5),
        ],
        // A dense layer's bias, a residual, and clamp.
        vec![
            Acc,
            Col(p()),
            Bin(BinOp::Add, 0, 1),
            Elem(p(), 0),
            Bin(BinOp::Sub, 2, 3),
            Const(1.5),
            Bin(BinOp::Min, 4, 5),
        ],
        // Leaky relu by a select, a division, a square root of a square.
        vec![
            Acc,
            Const(0.0),
            Const(0.1),
            Bin(BinOp::Mul, 0, 2),
            Select(Cmp::Gt, 0, 1, 0, 3),
            Const(4.0),
            Bin(BinOp::Div, 4, 5),
            Bin(BinOp::Mul, 6, 6),
            Prim(crate::ir::kernel::Prim::Sqrt, 7),
            Select(Cmp::Lt, 0, 1, 8, 4),
        ],
    ]
}

#[allow(clippy::too_many_arguments)]
/// The epilogue in float64: `acc` at row `i`, column `j`, operands read from `row`,
/// `col` and `elem` (with `ld`).
fn apply(
    e: &[EInst],
    acc: f64,
    i: usize,
    j: usize,
    row: &[f32],
    col: &[f32],
    elem: &[f32],
    ld: usize,
) -> f64 {
    let mut v: Vec<f64> = Vec::new();
    for inst in e {
        let x = match inst {
            EInst::Acc => acc,
            EInst::Row(_) => row[i] as f64,
            EInst::Col(_) => col[j] as f64,
            EInst::Elem(..) => elem[i * ld + j] as f64,
            EInst::Const(c) => *c as f64,
            EInst::Prim(Prim::Sqrt, a) => v[*a].sqrt(),
            EInst::Prim(..) => unreachable!("not in these epilogues"),
            EInst::Bin(op, a, b) => {
                let (a, b) = (v[*a], v[*b]);
                match op {
                    BinOp::Add => a + b,
                    BinOp::Sub => a - b,
                    BinOp::Mul => a * b,
                    BinOp::Div => a / b,
                    BinOp::Max => a.max(b),
                    BinOp::Min => a.min(b),
                }
            }
            EInst::Select(c, a, b, t, f) => {
                if c.holds(v[*a], v[*b]) {
                    v[*t]
                } else {
                    v[*f]
                }
            }
        };
        v.push(x);
    }
    v.last().copied().unwrap_or(acc)
}

#[derive(Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    pad: (usize, usize, usize),
    a_source: ASource,
    pack_b: bool,
    epilogue: usize,
    seed: u64,
}

fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut s = seed | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % 2001) as f32 / 1000.0 - 1.0
        })
        .collect()
}

/// Like [`values`], with one value in four something awkward: NaNs with payloads,
/// infinities, zeros of either sign, subnormals, values whose products overflow.
fn awkward(len: usize, seed: u64) -> Vec<f32> {
    const ODD: [u32; 10] = [
        0x7fc0_1234, // quiet NaN with a payload
        0xffa0_0001, // signalling NaN
        0x7f80_0000, // +inf
        0xff80_0000, // -inf
        0x0000_0000,
        0x8000_0000,
        0x0000_0007, // subnormal
        0x8040_0000, // subnormal
        0x7f00_0000, // 1.7e38
        0xff00_0000,
    ];
    let pick = values(len, seed ^ 0x5eed);
    values(len, seed)
        .into_iter()
        .zip(pick)
        .map(|(x, p)| {
            let u = ((p + 1.0) * 1000.0) as usize;
            if u.is_multiple_of(4) { f32::from_bits(ODD[u / 4 % ODD.len()]) } else { x }
        })
        .collect()
}

/// How a test runs the generated tiles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    /// On this CPU.
    Native,
    /// In [`super::emulate`].
    Emulated,
}

impl Run {
    /// Natively where this CPU has the instruction set, else in the emulator.
    fn for_isa(isa: Isa) -> Run {
        if isa.available() { Run::Native } else { Run::Emulated }
    }
}

/// A case's operands: the matrices with their strides, the epilogue and its operands.
struct Inputs {
    lda: usize,
    ldb: usize,
    ldc: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    row: Vec<f32>,
    col: Vec<f32>,
    elem: Vec<f32>,
    epilogue: Vec<EInst>,
}

impl Inputs {
    /// The case's operands, from `values` (or `awkward`), with `epilogue`.
    fn new(c: &Case, values: fn(usize, u64) -> Vec<f32>, epilogue: &[EInst]) -> Inputs {
        let (m, n, k) = (c.m, c.n, c.k);
        let lda = if c.ta { m } else { k } + c.pad.0;
        let (ldb, ldc) = (n + c.pad.1, n + c.pad.2);
        let mut epilogue = epilogue.to_vec();
        for e in &mut epilogue {
            if let EInst::Elem(_, ld) = e {
                *ld = ldc;
            }
        }
        Inputs {
            lda,
            ldb,
            ldc,
            a: values(lda * if c.ta { k } else { m }, c.seed),
            b: values(ldb * k, c.seed + 1),
            row: values(m, c.seed + 2).iter().map(|x| x + 1.5).collect(),
            col: values(n, c.seed + 3),
            elem: values(m * ldc, c.seed + 4),
            epilogue,
        }
    }
}

/// Floats of NaN after `c`, where a store past its last column would land.
const GUARD: usize = 64;

/// Computes the case's product with `S`'s tiles, run as `how` says, into a `c` that
/// holds NaN wherever the product does not write, followed by [`GUARD`].
fn product<S: Simd>(c: &Case, x: &Inputs, how: Run) -> Vec<f32> {
    let g = Gemm {
        m: c.m,
        n: c.n,
        k: c.k,
        a: Ptr::tensor(TensorId(0)),
        lda: x.lda,
        ta: c.ta,
        b: Right::Matrix { ptr: Ptr::tensor(TensorId(1)), ld: x.ldb },
        c: Ptr::tensor(TensorId(2)),
        ldc: x.ldc,
        epilogue: x.epilogue.clone(),
    };
    let mut p = Product::new(&g, S::MR, S::LANES * S::NV);
    p.a = c.a_source;
    p.pack_b = c.pack_b;
    if !c.pack_b {
        p.nc = c.n.div_ceil(p.nr).max(1) * p.nr;
    }
    let mut generator = Generator::<S>::default();
    let offsets = generator.tiles_for(&p, &x.epilogue).expect("assembles");
    let mut out = vec![f32::NAN; c.m * x.ldc + GUARD];
    let operands: Vec<*mut f32> = x
        .epilogue
        .iter()
        .filter_map(|e| match e {
            EInst::Row(_) => Some(x.row.as_ptr() as *mut f32),
            EInst::Col(_) => Some(x.col.as_ptr() as *mut f32),
            EInst::Elem(..) => Some(x.elem.as_ptr() as *mut f32),
            _ => None,
        })
        .collect();
    let mut ptrs =
        vec![x.a.as_ptr() as *mut f32, x.b.as_ptr() as *mut f32, out.as_mut_ptr(), std::ptr::null_mut()];
    ptrs.extend(operands);
    match how {
        Run::Native => {
            generator.products.push(Box::pin(p));
            generator.tiles.push(offsets);
            let (products, _code) = generator.finish().expect("maps");
            // SAFETY: the pointers address matrices of the product's shape and strides.
            unsafe { products[0].run(ptrs.as_ptr()) };
        }
        Run::Emulated => {
            let code = &generator.code;
            let tile = |t: usize, a: *const f32, b: *const f32, out: *mut f32, ops: *const *const f32| {
                let entry = offsets[t].expect("the product's tiles are generated");
                let args = [a as u64, b as u64, out as u64, ops as u64];
                // SAFETY: the tile is called with the operands it was generated for.
                if let Err(e) = unsafe { emulate::call(code, entry, args) } {
                    panic!("{} tile {t} of {c:?}: {e}", S::NAME);
                }
            };
            // SAFETY: as for `run`; the closure computes each tile by its code.
            unsafe { p.run_with(ptrs.as_ptr(), tile) };
        }
    }
    out
}

fn check<S: Simd>(c: &Case, how: Run) {
    check_with::<S>(c, how, &epilogues()[c.epilogue]);
}

/// Checks the case with `epilogue` rather than the one it names.
fn check_with<S: Simd>(c: &Case, how: Run, epilogue: &[EInst]) {
    let (m, n, k) = (c.m, c.n, c.k);
    let x = Inputs::new(c, values, epilogue);
    let out = product::<S>(c, &x, how);
    let (a, b, lda, ldb, ldc) = (&x.a, &x.b, x.lda, x.ldb, x.ldc);
    assert!(out[m * ldc..].iter().all(|x| x.is_nan()), "{} {how:?} {c:?}: stored past `c`", S::NAME);
    for i in 0..m {
        for j in 0..ldc {
            let got = out[i * ldc + j];
            if j >= n {
                assert!(
                    got.is_nan(),
                    "{} {how:?} {c:?}: ({i}, {j}) past the last column was written",
                    S::NAME
                );
                continue;
            }
            let at = |i: usize, p: usize| if c.ta { a[p * lda + i] } else { a[i * lda + p] } as f64;
            let sum: f64 = (0..k).map(|p| at(i, p) * b[p * ldb + j] as f64).sum();
            let scale: f64 = (0..k).map(|p| (at(i, p) * b[p * ldb + j] as f64).abs()).sum::<f64>() + 1.0;
            let want = apply(&x.epilogue, sum, i, j, &x.row, &x.col, &x.elem, ldc);
            // An f32 sum of k terms is within k roundings of Σ|terms|; the epilogue
            // (a square, a division) scales that by a few.
            let tol = 8.0 * (k as f64 + 4.0) * f32::EPSILON as f64 * scale * (1.0 + want.abs());
            assert!(
                (got as f64 - want).abs() <= tol,
                "{} {how:?}: {m}×{n}×{k} ta={} {:?} pack_b={} epilogue {epilogue:?}: ({i}, {j}) = {got}, want {want}",
                S::NAME,
                c.ta,
                c.a_source,
                c.pack_b,
            );
        }
    }
}

/// Checks the case on each instruction set: natively where this CPU runs it, else in
/// the emulator.
fn check_every_isa(c: &Case) {
    for isa in Isa::ALL {
        let how = Run::for_isa(isa);
        match isa {
            Isa::Avx2 => check::<Avx2>(c, how),
            Isa::Avx512 => check::<Avx512>(c, how),
        }
    }
}

/// The emulator's own check: on awkward values, the emulated tiles give bit for bit
/// what the CPU gives.
fn same_bits<S: Simd>(c: &Case) {
    let x = Inputs::new(c, awkward, &epilogues()[c.epilogue]);
    let native = product::<S>(c, &x, Run::Native);
    let emulated = product::<S>(c, &x, Run::Emulated);
    for (at, (n, e)) in native.iter().zip(&emulated).enumerate() {
        let (n, e) = (n.to_bits(), e.to_bits());
        assert_eq!(n, e, "{} {c:?}: c[{at}] = {n:#010x} natively, {e:#010x} emulated", S::NAME);
    }
}

fn cases() -> impl Strategy<Value = Case> {
    (
        1usize..20,
        prop_oneof![3 => 1usize..40, 1 => 40usize..90],
        prop_oneof![1 => Just(0usize), 1 => 1usize..6, 3 => 6usize..70],
        any::<bool>(),
        (0usize..3, 0usize..3, 0usize..3),
        any::<bool>(),
        any::<bool>(),
        0..epilogues().len(),
        any::<u64>(),
    )
        .prop_map(|(m, n, k, ta, pad, packed, pack_b, epilogue, seed)| Case {
            m,
            n,
            k,
            ta,
            pad,
            a_source: if packed { ASource::Packed } else { ASource::InPlace },
            pack_b,
            epilogue,
            seed,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]
    #[test]
    fn products_agree_with_float64(c in cases()) {
        check_every_isa(&c);
    }

    #[test]
    fn emulated_tiles_compute_what_the_cpu_does_bit_for_bit(c in cases()) {
        for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
            match isa {
                Isa::Avx2 => same_bits::<Avx2>(&c),
                Isa::Avx512 => same_bits::<Avx512>(&c),
            }
        }
    }
}

#[test]
fn every_tile_of_the_register_tile_and_its_edges() {
    for m in 1..=13 {
        for n in [1, 7, 8, 9, 15, 16, 17, 33, 63, 64, 65, 129] {
            for k in [0, 1, 3, 4, 5, 9] {
                let c = Case {
                    m,
                    n,
                    k,
                    ta: m % 2 == 0,
                    pad: (0, 1, 2),
                    a_source: if n > 8 { ASource::Packed } else { ASource::InPlace },
                    pack_b: m % 3 == 0,
                    epilogue: (m + n + k) % epilogues().len(),
                    seed: (m * 100 + n * 10 + k) as u64,
                };
                check_every_isa(&c);
            }
        }
    }
}

/// An epilogue as long as `S` applies, each value read again later, so that it uses
/// every register an epilogue may.
fn longest<S: Simd>() -> Vec<EInst> {
    let mut e = vec![EInst::Acc, EInst::Const(0.5), EInst::Bin(BinOp::Mul, 0, 1)];
    while e.len() < S::FREE as usize {
        let n = e.len();
        e.push(if n % 2 == 0 {
            EInst::Bin(BinOp::Mul, n - 1, 1)
        } else {
            EInst::Bin(BinOp::Add, n - 1, n - 2)
        });
    }
    e
}

#[test]
fn the_longest_epilogues_use_every_free_register() {
    for isa in Isa::ALL {
        let how = Run::for_isa(isa);
        for (m, n) in [(6, 64), (7, 70), (5, 9)] {
            let c = Case {
                m,
                n,
                k: 6,
                ta: false,
                pad: (1, 0, 3),
                a_source: ASource::Packed,
                pack_b: true,
                epilogue: 0,
                seed: (m * n) as u64,
            };
            match isa {
                Isa::Avx2 => check_with::<Avx2>(&c, how, &longest::<Avx2>()),
                Isa::Avx512 => check_with::<Avx512>(&c, how, &longest::<Avx512>()),
            }
        }
    }
}

#[test]
fn transcendental_epilogues_are_left_to_the_kernel() {
    fn check<S: Simd>() {
        let tanh = [EInst::Acc, EInst::Prim(Prim::Tanh, 0)];
        assert!(!super::micro::supports::<S>(&tanh));
        let long = vec![EInst::Acc; S::FREE as usize + 1];
        assert!(!super::micro::supports::<S>(&long));
        assert!(super::micro::supports::<S>(&longest::<S>()));
        assert!(epilogues().iter().all(|e| super::micro::supports::<S>(e)));
    }
    check::<Avx2>();
    check::<Avx512>();
}

#[test]
fn the_default_target_is_the_fastest_this_cpu_runs() {
    use crate::backend::Target;
    let names: Vec<&str> = Target::all().into_iter().map(Target::name).collect();
    assert_eq!(names, ["cranelift", "avx2", "avx512"]);
    let fastest = [Isa::Avx512, Isa::Avx2].into_iter().find(|i| i.available());
    assert_eq!(Target::default(), fastest.map_or(Target::Cranelift, Target::X86));
    match Target::parse("avx512") {
        Ok(t) => assert!(Isa::Avx512.available() && t == Target::X86(Isa::Avx512)),
        Err(e) => assert!(!Isa::Avx512.available() && e.contains("this CPU cannot run `avx512` code"), "{e}"),
    }
}
