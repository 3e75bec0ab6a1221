//! Every tile shape and edge (row and column remainders, `k` of 0 to past the unrolling,
//! masks), each way of reading the operands (packed or in place, `a` transposed or not,
//! padded strides) and every epilogue instruction the tiles apply, against a float64
//! product under proptest — for every instruction set: natively where this CPU runs
//! it, else in the emulator, which is itself checked bit for bit against this CPU.

use super::avx2::Avx2;
use super::avx512::Avx512;
use super::direct;
use super::emulate;
use super::isa::Simd;
use super::narrow::Narrow;
use super::product::{ASource, Product};
use super::{Generator, Isa};
use crate::backend::cranelift::probe::{self, MathFn};
use crate::ir::kernel::{BinOp, Cmp, EInst, Gemm, Prim, Ptr, Right, Window};
use crate::ir::ops::TensorId;
use proptest::prelude::*;

/// Epilogues over the accumulator `Acc` and operands `Row` (slot 0 of its kind), `Col`,
/// `Elem`: each instruction kind at least once.
fn epilogues() -> Vec<Vec<EInst>> {
    let p = || Ptr::tensor(TensorId(9));
    use crate::ir::kernel::Prim::{Erf, Exp, Log, Sigmoid, Tanh};
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
        // A convolution's bias and tanh.
        vec![Acc, Row(p()), Bin(BinOp::Add, 0, 1), Prim(Tanh, 2)],
        // A dense layer's bias alone, which narrow columns apply too.
        vec![Acc, Col(p()), Bin(BinOp::Add, 0, 1)],
        // A dense layer's bias and swish, x · sigmoid(x).
        vec![Acc, Col(p()), Bin(BinOp::Add, 0, 1), Prim(Sigmoid, 2), Bin(BinOp::Mul, 2, 3)],
        // GELU, x/2 · (1 + erf(x/√2)).
        vec![
            Acc,
            Const(std::f32::consts::FRAC_1_SQRT_2),
            Bin(BinOp::Mul, 0, 1),
            Prim(Erf, 2),
            Const(1.0),
            Bin(BinOp::Add, 3, 4),
            Bin(BinOp::Mul, 0, 5),
            Const(0.5),
            Bin(BinOp::Mul, 6, 7),
        ],
        // exp(acc − elem) + log(acc² + row), the row operand in [0.5, 2.5].
        vec![
            Acc,
            Elem(p(), 0),
            Bin(BinOp::Sub, 0, 1),
            Prim(Exp, 2),
            Row(p()),
            Bin(BinOp::Mul, 0, 0),
            Bin(BinOp::Add, 5, 4),
            Prim(Log, 6),
            Bin(BinOp::Add, 3, 7),
        ],
    ]
}

/// `p(x)` in float64.
fn prim64(p: Prim, x: f64) -> f64 {
    match p {
        Prim::Tanh => x.tanh(),
        Prim::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Prim::Exp => x.exp(),
        Prim::Erf => libm::erf(x),
        Prim::Sqrt => x.sqrt(),
        Prim::Log => x.ln(),
    }
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
            EInst::Prim(p, a) => prim64(*p, v[*a]),
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

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    n: usize,
    k: usize,
    ta: bool,
    pad: (usize, usize, usize),
    a_source: ASource,
    pack_b: bool,
    /// Whether `b` is packed whole before the call ([`Product::prepare`]), as before a
    /// loop in which it does not change.
    prepare: bool,
    /// Steps per block of `k`, or 0 for the product's own choice.
    kc: usize,
    /// Row tiles per block of rows, or 0 for the product's own choice.
    mc: usize,
    /// Whether a last panel of a few columns goes to [`super::narrow`] (where the
    /// epilogue allows it), as the back end sends it, rather than to tiles.
    narrow: bool,
    epilogue: usize,
    seed: u64,
}

pub(super) fn values(len: usize, seed: u64) -> Vec<f32> {
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
        sparse_a: false,
        b_sums: Vec::new(),
    };
    // The narrow shapes too with every source of `a` (the generator reads `a` in place
    // only with the widest).
    let (mr, nv) = super::micro::shape::<S>(g.n);
    let mut p = Product::new(&g, mr, S::LANES * nv);
    p.a = c.a_source;
    p.pack_b = c.pack_b;
    if c.kc > 0 {
        p.kc = c.kc;
    }
    if c.mc > 0 {
        p.mc = c.mc * mr;
    }
    if c.narrow {
        p.narrow = Narrow::new(g.n, p.nr, g.ta, &x.epilogue);
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
            let (products, _maps, _code) = generator.finish().expect("maps");
            // SAFETY: the pointers address matrices of the product's shape and strides.
            unsafe {
                if c.prepare {
                    products[0].prepare(x.b.as_ptr());
                }
                products[0].run(ptrs.as_ptr(), c.prepare)
            };
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
            unsafe {
                if c.prepare {
                    p.prepare(x.b.as_ptr());
                }
                p.run_with(ptrs.as_ptr(), c.prepare, tile)
            };
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
        prop_oneof![3 => 1usize..20, 1 => 20usize..52],
        prop_oneof![3 => 1usize..40, 1 => 40usize..90],
        prop_oneof![1 => Just(0usize), 1 => 1usize..6, 3 => 6usize..70],
        any::<bool>(),
        (0usize..3, 0usize..3, 0usize..3),
        any::<bool>(),
        (any::<bool>(), any::<bool>()),
        prop_oneof![2 => Just(0usize), 1 => 1usize..12],
        prop_oneof![2 => Just(0usize), 1 => 1usize..4],
        (0..epilogues().len(), any::<bool>()),
        any::<u64>(),
    )
        .prop_map(|(m, n, k, ta, pad, packed, (pack_b, prepare), kc, mc, (epilogue, narrow), seed)| {
            Case {
                m,
                n,
                k,
                ta,
                pad,
                a_source: if packed { ASource::Packed } else { ASource::InPlace },
                pack_b,
                prepare,
                kc,
                mc,
                narrow,
                epilogue,
                seed,
            }
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
    // Past 24 rows: every shape's row tile and its remainders.
    for m in (1..=13).chain([23, 24, 25, 30, 49]) {
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
                    prepare: n % 2 == 1,
                    kc: [0, 2, 4][m % 3],
                    mc: [0, 1, 2][n % 3],
                    narrow: k % 2 == 1,
                    epilogue: (m + n + k) % epilogues().len(),
                    seed: (m * 100 + n * 10 + k) as u64,
                };
                check_every_isa(&c);
            }
        }
    }
}

/// A window of `c` channels of `h × w` at stride `s`, padded by `pad` all round.
fn conv_window(c: usize, h: usize, w: usize, kernel: usize, s: usize, pad: usize) -> Window {
    let out = |x: usize| (x + 2 * pad - kernel) / s + 1;
    Window {
        c,
        h,
        w,
        kh: kernel,
        kw: kernel,
        sh: s,
        sw: s,
        dh: 1,
        dw: 1,
        pad: [pad; 4],
        oh: out(h),
        ow: out(w),
    }
}

/// Which convolutions read their image directly: those with few output channels, or
/// rows that fill their vectors, at stride 1 along rows and over whole output rows.
#[test]
fn convolutions_read_directly_where_packing_costs_more() {
    let lenet_c1 = conv_window(1, 28, 28, 5, 1, 2);
    let lenet_c3 = conv_window(6, 14, 14, 5, 1, 0);
    let cifar_64 = conv_window(64, 32, 32, 3, 1, 1);
    let cifar_256 = conv_window(256, 8, 8, 3, 1, 1);
    // AVX-512: C1's 28-pixel rows are two vectors, two output rows a tile of six
    // channels; C3's 10-pixel rows one vector.
    assert_eq!(direct::shape::<Avx512>(6, 784, &lenet_c1), Some((6, 2)));
    assert!(direct::shape::<Avx512>(16, 100, &lenet_c3).is_some());
    assert!(direct::shape::<Avx512>(64, 1024, &cifar_64).is_some());
    // Half of each 8-pixel row's lanes idle, for 256 channels.
    assert_eq!(direct::shape::<Avx512>(256, 64, &cifar_256), None);
    // Strided along rows; a block of pixels that is not whole rows.
    assert_eq!(direct::shape::<Avx512>(6, 196, &conv_window(1, 28, 28, 2, 2, 0)), None);
    assert_eq!(direct::shape::<Avx512>(6, 50, &lenet_c1), None);
    // AVX2: C1's rows are four vectors, more than a tile holds; C3's two.
    assert_eq!(direct::shape::<Avx2>(6, 784, &lenet_c1), None);
    assert!(direct::shape::<Avx2>(16, 100, &lenet_c3).is_some());
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
fn long_epilogues_compute_right() {
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
                prepare: m == 7,
                kc: 2,
                mc: 1,
                narrow: false,
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
fn epilogues_fit_while_their_live_values_fit_the_registers() {
    fn check<S: Simd>() {
        let ptr = || Ptr::tensor(TensorId(9));
        // `n` values live at once, then summed: registers are freed after a value's last
        // use, so the length of an epilogue does not matter, only what is live.
        let all_live = |n: usize| {
            let mut e: Vec<EInst> = (0..n).map(|j| EInst::Const(j as f32)).collect();
            e.push(EInst::Bin(BinOp::Add, 0, 1));
            // The sum of values 0..=j is value n + j − 1.
            e.extend((2..n).map(|j| EInst::Bin(BinOp::Add, n + j - 2, j)));
            e
        };
        let free = S::FREE as usize;
        assert!(super::micro::supports::<S>(&all_live(free)));
        assert!(!super::micro::supports::<S>(&all_live(free + 1)));
        let chain: Vec<EInst> =
            std::iter::once(EInst::Acc).chain((0..100).map(|j| EInst::Bin(BinOp::Mul, j, j))).collect();
        assert!(super::micro::supports::<S>(&chain));
        // Operands beyond the table a tile is called with.
        let mut many = vec![EInst::Acc];
        for j in 0..=super::product::MAX_OPERANDS {
            many.push(EInst::Col(ptr()));
            many.push(EInst::Bin(BinOp::Add, 2 * j, 2 * j + 1));
        }
        assert!(!super::micro::supports::<S>(&many));
        many.truncate(many.len() - 2);
        assert!(super::micro::supports::<S>(&many));
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

/// `live` values (the accumulator, operands and constants) all live while `p` is applied
/// to one of them, then summed with its result: the registers an epilogue holds across
/// a function.
fn crowded(p: Prim, live: usize) -> Vec<EInst> {
    let ptr = || Ptr::tensor(TensorId(9));
    let mut e = vec![EInst::Acc, EInst::Row(ptr()), EInst::Col(ptr())];
    e.extend((3..live).map(|j| EInst::Const(j as f32 / 8.0)));
    e.truncate(live);
    // The logarithm and square root of the row operand, which is positive; the others
    // of the accumulator.
    e.push(EInst::Prim(p, if matches!(p, Prim::Log | Prim::Sqrt) { 1 } else { 0 }));
    for j in 0..live {
        e.push(EInst::Bin(BinOp::Add, e.len() - 1, j));
    }
    e
}

const FUNCTIONS: [Prim; 6] = [Prim::Tanh, Prim::Sigmoid, Prim::Exp, Prim::Erf, Prim::Sqrt, Prim::Log];

/// For each function, the most values that can be live across it, by `supports`; each
/// such epilogue computed right in every tile shape, and one more value refused.
#[test]
fn the_most_crowded_epilogue_of_each_function() {
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        for p in FUNCTIONS {
            let most = match isa {
                Isa::Avx2 => (3..40).take_while(|&l| super::micro::supports::<Avx2>(&crowded(p, l))).last(),
                Isa::Avx512 => {
                    (3..40).take_while(|&l| super::micro::supports::<Avx512>(&crowded(p, l))).last()
                }
            };
            let most = most.unwrap_or_else(|| panic!("{p:?} does not fit beside three values"));
            let refused = match isa {
                Isa::Avx2 => !super::micro::supports::<Avx2>(&crowded(p, most + 1)),
                Isa::Avx512 => !super::micro::supports::<Avx512>(&crowded(p, most + 1)),
            };
            assert!(refused, "{p:?} beside {} values", most + 1);
            for (m, n, k) in [(6, 16, 5), (13, 33, 9), (1, 7, 0), (5, 9, 4)] {
                let c = Case {
                    m,
                    n,
                    k,
                    ta: false,
                    pad: (1, 0, 2),
                    a_source: ASource::Packed,
                    pack_b: m > 6,
                    prepare: false,
                    kc: k / 2,
                    mc: 1,
                    narrow: false,
                    epilogue: 0,
                    seed: (m * n + k) as u64,
                };
                match isa {
                    Isa::Avx2 => check_with::<Avx2>(&c, Run::Native, &crowded(p, most)),
                    Isa::Avx512 => check_with::<Avx512>(&c, Run::Native, &crowded(p, most)),
                }
            }
            println!("{}: {p:?} fits beside {most} live values", isa.name());
        }
    }
}

/// `p(x)` for each `x` as the tiles compute it: `x` is the `Elem` operand of the epilogue
/// `p(elem)` of a product with `k = 0`, 37 columns wide so that every tile shape and
/// masked edge runs.
fn evaluate<S: Simd>(p: Prim, xs: &[f32]) -> Vec<f32> {
    let n = 37;
    let m = xs.len().div_ceil(n);
    let mut elem = xs.to_vec();
    elem.resize(m * n, 0.0);
    let epilogue = vec![EInst::Elem(Ptr::tensor(TensorId(3)), n), EInst::Prim(p, 0)];
    assert!(super::micro::supports::<S>(&epilogue));
    let g = Gemm {
        m,
        n,
        k: 0,
        a: Ptr::tensor(TensorId(0)),
        lda: 1,
        ta: false,
        b: Right::Matrix { ptr: Ptr::tensor(TensorId(1)), ld: n },
        c: Ptr::tensor(TensorId(2)),
        ldc: n,
        epilogue: epilogue.clone(),
        sparse_a: false,
        b_sums: Vec::new(),
    };
    let (mr, nv) = super::micro::shape::<S>(g.n);
    let p = Product::new(&g, mr, S::LANES * nv);
    let mut generator = Generator::<S>::default();
    let offsets = generator.tiles_for(&p, &epilogue).expect("assembles");
    generator.products.push(Box::pin(p));
    generator.tiles.push(offsets);
    let (products, _maps, _code) = generator.finish().expect("maps");
    let (a, b) = (vec![0f32; m], vec![0f32; n]);
    let mut out = vec![f32::NAN; m * n];
    let ptrs = [
        a.as_ptr() as *mut f32,
        b.as_ptr() as *mut f32,
        out.as_mut_ptr(),
        std::ptr::null_mut(),
        elem.as_mut_ptr(),
    ];
    // SAFETY: the pointers address matrices of the product's shape and strides.
    unsafe { products[0].run(ptrs.as_ptr(), false) };
    out.truncate(xs.len());
    out
}

fn math_fn(p: Prim) -> Option<MathFn> {
    match p {
        Prim::Tanh => Some(MathFn::Tanh),
        Prim::Sigmoid => Some(MathFn::Sigmoid),
        Prim::Exp => Some(MathFn::Exp),
        Prim::Erf => Some(MathFn::Erf),
        Prim::Log => Some(MathFn::Log),
        Prim::Sqrt => None,
    }
}

fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
    (0..n).map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32).collect()
}

/// The special values of the Cranelift functions' tests (`cranelift/probe.rs`), then
/// grids over each function's whole range and the positives from 1e-45 to 1e38.
fn probe_values() -> Vec<f32> {
    let mut xs = vec![
        f32::NAN,
        1000.0,
        -1000.0,
        0.0,
        -0.0,
        50.0,
        -50.0,
        1e-30,
        100.0,
        -100.0,
        f32::INFINITY,
        f32::NEG_INFINITY,
        1.0,
        -1.0,
        1e-40,
        1.5e-45,
        f32::MIN_POSITIVE / 3.0,
        1e-39,
        1e-42,
        5e-44,
        1e-38,
        f32::MIN_POSITIVE,
        f32::MAX,
        88.3,
        -87.3,
        89.0,
        -88.0,
        9.0,
        -9.0,
        std::f32::consts::SQRT_2,
    ];
    xs.extend(grid(-100.0, 100.0, 40_001));
    xs.extend(grid(-2.0, 2.0, 40_001));
    xs.extend((0..20_000).map(|i| 10f32.powf(-45.0 + 83.0 * i as f32 / 19_999.0)));
    xs
}

/// Each function in the tiles against the same function generated by Cranelift, on the
/// Cranelift tests' special values and on grids. Both evaluate the same operations in
/// the same order, each rounded as IEEE 754 says (FMA where Cranelift's has one, and
/// the x86 back end needs FMA), so they agree bit for bit; NaN where it is NaN.
#[test]
fn tile_functions_agree_with_cranelifts() {
    let xs = probe_values();
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        for p in FUNCTIONS {
            let Some(f) = math_fn(p) else { continue };
            let want = probe::evaluate(f, &xs).expect("Cranelift compiles the probe");
            let got = match isa {
                Isa::Avx2 => evaluate::<Avx2>(p, &xs),
                Isa::Avx512 => evaluate::<Avx512>(p, &xs),
            };
            for ((x, g), w) in xs.iter().zip(&got).zip(&want) {
                let same = if w.is_nan() { g.is_nan() } else { g.to_bits() == w.to_bits() };
                assert!(same, "{} {p:?}({x:e}) = {g:e}, Cranelift's {w:e}", isa.name());
            }
        }
    }
}

/// The accuracy `docs/kernels.md` states for the functions, measured on the tiles as
/// `cranelift/probe.rs` measures Cranelift's: worst (absolute, relative) error.
#[test]
fn tile_functions_are_as_accurate_as_cranelifts() {
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        let worst = |p: Prim, xs: &[f32]| -> (f64, f64) {
            let ys = match isa {
                Isa::Avx2 => evaluate::<Avx2>(p, xs),
                Isa::Avx512 => evaluate::<Avx512>(p, xs),
            };
            let mut abs = 0f64;
            let mut rel = 0f64;
            for (&x, &y) in xs.iter().zip(&ys) {
                let e = prim64(p, x as f64);
                let d = (y as f64 - e).abs();
                abs = abs.max(d);
                if e.abs() > 1e-30 {
                    rel = rel.max(d / e.abs());
                }
            }
            (abs, rel)
        };
        let (_, rel) = worst(Prim::Exp, &grid(-87.0, 88.0, 200_003));
        assert!(rel < 2e-7, "exp relative error {rel:e}");
        let xs: Vec<f32> = (0..200_000).map(|i| 10f32.powf(-30.0 + 60.0 * i as f32 / 199_999.0)).collect();
        let (abs, _) = worst(Prim::Log, &xs);
        assert!(abs < 1e-5, "log absolute error {abs:e} (over values up to 69)");
        let (abs, _) = worst(Prim::Log, &grid(0.5, 2.0, 100_001));
        assert!(abs < 2e-7, "log absolute error near 1: {abs:e}");
        let (abs, rel) = worst(Prim::Tanh, &grid(-20.0, 20.0, 400_001));
        assert!(rel < 3e-7 && abs < 3e-7, "tanh error: {abs:e} absolute, {rel:e} relative");
        let (abs, _) = worst(Prim::Sigmoid, &grid(-80.0, 80.0, 400_001));
        assert!(abs < 2e-7, "sigmoid absolute error {abs:e}");
        let (_, rel) = worst(Prim::Sigmoid, &grid(-15.0, 80.0, 400_001));
        assert!(rel < 4e-7, "sigmoid relative error {rel:e}");
        let (abs, _) = worst(Prim::Erf, &grid(-12.0, 12.0, 400_001));
        assert!(abs < 2e-7, "erf absolute error {abs:e}");
        let (_, rel) = worst(Prim::Erf, &grid(-0.99, 0.99, 200_001));
        assert!(rel < 3e-7, "erf relative error below 1: {rel:e}");
    }
}

/// The special values of `cranelift/probe.rs`'s tests, with the same results: exp
/// saturates rather than overflowing, tanh keeps its sign at zero and reaches ±1, erf is
/// exact at zero and NaN for NaN, the logarithm covers zero, negatives, infinities,
/// NaN and subnormals.
#[test]
fn tile_functions_on_special_values() {
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        let eval = |p: Prim, xs: &[f32]| match isa {
            Isa::Avx2 => evaluate::<Avx2>(p, xs),
            Isa::Avx512 => evaluate::<Avx512>(p, xs),
        };
        let ys = eval(Prim::Exp, &[f32::NAN, 1000.0, -1000.0, 0.0]);
        assert!(ys[0].is_nan());
        assert!(ys[1] > 1e38 && ys[1].is_finite());
        assert!(ys[2] >= 0.0 && ys[2] < 1e-37);
        assert_eq!(ys[3], 1.0);
        let t = eval(Prim::Tanh, &[0.0, -0.0, 50.0, -50.0, f32::INFINITY, f32::NEG_INFINITY]);
        assert_eq!(t, [0.0, -0.0, 1.0, -1.0, 1.0, -1.0]);
        assert!(t[1].is_sign_negative());
        let s = eval(Prim::Sigmoid, &[1000.0, -1000.0, f32::INFINITY, f32::NEG_INFINITY, 0.0]);
        assert_eq!(s[0], 1.0);
        assert!(s[1] >= 0.0 && s[1] < 1e-37);
        assert_eq!(s[2], 1.0);
        assert!(s[3] >= 0.0 && s[3] < 1e-37);
        assert_eq!(s[4], 0.5);
        let e = eval(Prim::Erf, &[0.0, 1e-30, 100.0, -100.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY]);
        assert_eq!(e[..4], [0.0, 1e-30 * std::f32::consts::FRAC_2_SQRT_PI, 1.0, -1.0]);
        assert!(e[4].is_nan());
        assert_eq!(e[5..], [1.0, -1.0]);
        let l = eval(Prim::Log, &[0.0, -0.0, f32::INFINITY, 1.0, -1.0, f32::NEG_INFINITY, f32::NAN]);
        assert_eq!(l[..4], [f32::NEG_INFINITY, f32::NEG_INFINITY, f32::INFINITY, 0.0]);
        assert!(l[4..].iter().all(|v| v.is_nan()), "{l:?}");
        // Subnormals, which the exponent field alone would misread.
        let tiny = [1e-40f32, 1.5e-45, f32::MIN_POSITIVE / 3.0, 1e-39, 1e-42, 5e-44, 1e-38];
        for (x, y) in tiny.iter().zip(eval(Prim::Log, &tiny)) {
            let want = f64::from(*x).ln();
            assert!((f64::from(y) - want).abs() < 1e-5, "log({x:e}) = {y}, not {want}");
        }
        for p in [Prim::Tanh, Prim::Sigmoid, Prim::Log] {
            assert!(eval(p, &[f32::NAN])[0].is_nan(), "{p:?}(NaN)");
        }
    }
}

/// The columns [`super::narrow`] computes are the tiles' bit for bit (the same FMAs in the
/// same order, blocks of `k` added alike), bias or none, `a` transposed or not (where
/// the CPU has AVX-512; elsewhere the tiles keep an untransposed `a`'s columns).
#[test]
fn narrow_columns_are_the_tiles_bit_for_bit() {
    fn compare<S: Simd>(c: &Case) {
        let x = Inputs::new(c, values, &epilogues()[c.epilogue]);
        let tiles = product::<S>(&Case { narrow: false, ..*c }, &x, Run::Native);
        let narrow = product::<S>(c, &x, Run::Native);
        for (at, (t, w)) in tiles.iter().zip(&narrow).enumerate() {
            assert_eq!(t.to_bits(), w.to_bits(), "{} {c:?}: c[{at}]", S::NAME);
        }
    }
    let bias = epilogues()
        .iter()
        .position(|e| matches!(e.as_slice(), [EInst::Acc, EInst::Col(_), EInst::Bin(BinOp::Add, 0, 1)]))
        .expect("a bias among the epilogues");
    let shapes = [(70, 65, 300, 0), (13, 2, 9, 4), (64, 131, 40, 16), (5, 1, 1, 0), (33, 67, 37, 17)];
    for ((m, n, k, kc), epilogue, ta, a_source) in shapes
        .into_iter()
        .flat_map(|s| [0, bias].map(|e| (s, e)))
        .flat_map(|(s, e)| [true, false].map(|ta| (s, e, ta)))
        .flat_map(|(s, e, ta)| [ASource::InPlace, ASource::Packed].map(|a| (s, e, ta, a)))
    {
        {
            let c = Case {
                m,
                n,
                k,
                ta,
                pad: (1, 2, 0),
                a_source,
                pack_b: true,
                prepare: false,
                kc,
                mc: 0,
                narrow: true,
                epilogue,
                seed: (m + n + k) as u64,
            };
            for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
                match isa {
                    Isa::Avx2 => compare::<Avx2>(&c),
                    Isa::Avx512 => compare::<Avx512>(&c),
                }
            }
        }
    }
}
