//! Every tile shape and edge (row and column remainders, `k` of 0 to past the unrolling,
//! masks), each way of reading the operands (packed or in place, `a` transposed or not,
//! padded strides) and every epilogue instruction the tiles apply, against a float64
//! product under proptest — for each instruction set this CPU runs.

use super::avx2::Avx2;
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

fn check<S: Simd>(c: &Case) {
    let (m, n, k) = (c.m, c.n, c.k);
    let lda = if c.ta { m } else { k } + c.pad.0;
    let (ldb, ldc) = (n + c.pad.1, n + c.pad.2);
    let a = values(lda * if c.ta { k } else { m }, c.seed);
    let b = values(ldb * k, c.seed + 1);
    let row = values(m, c.seed + 2).iter().map(|x| x + 1.5).collect::<Vec<_>>();
    let col = values(n, c.seed + 3);
    let elem = values(m * ldc, c.seed + 4);
    let mut epilogue = epilogues()[c.epilogue].clone();
    for e in &mut epilogue {
        if let EInst::Elem(_, ld) = e {
            *ld = ldc;
        }
    }
    let g = Gemm {
        m,
        n,
        k,
        a: Ptr::tensor(TensorId(0)),
        lda,
        ta: c.ta,
        b: Right::Matrix { ptr: Ptr::tensor(TensorId(1)), ld: ldb },
        c: Ptr::tensor(TensorId(2)),
        ldc,
        epilogue: epilogue.clone(),
    };
    let mut p = Product::new(&g, S::MR, S::LANES * S::NV);
    p.a = c.a_source;
    p.pack_b = c.pack_b;
    if !c.pack_b {
        p.nc = n.div_ceil(p.nr).max(1) * p.nr;
    }
    let mut generator = Generator::<S>::default();
    let offsets = generator.tiles_for(&p, &epilogue).expect("assembles");
    generator.products.push(Box::pin(p));
    generator.tiles.push(offsets);
    let (products, _code) = generator.finish().expect("maps");
    let mut out = vec![f32::NAN; m * ldc];
    let operands: Vec<*mut f32> = epilogue
        .iter()
        .filter_map(|e| match e {
            EInst::Row(_) => Some(row.as_ptr() as *mut f32),
            EInst::Col(_) => Some(col.as_ptr() as *mut f32),
            EInst::Elem(..) => Some(elem.as_ptr() as *mut f32),
            _ => None,
        })
        .collect();
    let mut ptrs =
        vec![a.as_ptr() as *mut f32, b.as_ptr() as *mut f32, out.as_mut_ptr(), std::ptr::null_mut()];
    ptrs.extend(operands);
    // SAFETY: the pointers address matrices of the product's shape and strides.
    unsafe { products[0].run(ptrs.as_ptr()) };
    for i in 0..m {
        for j in 0..ldc {
            let got = out[i * ldc + j];
            if j >= n {
                assert!(got.is_nan(), "({i}, {j}) past the last column was written");
                continue;
            }
            let at = |i: usize, p: usize| if c.ta { a[p * lda + i] } else { a[i * lda + p] } as f64;
            let sum: f64 = (0..k).map(|p| at(i, p) * b[p * ldb + j] as f64).sum();
            let scale: f64 = (0..k).map(|p| (at(i, p) * b[p * ldb + j] as f64).abs()).sum::<f64>() + 1.0;
            let want = apply(&epilogue, sum, i, j, &row, &col, &elem, ldc);
            // An f32 sum of k terms is within k roundings of Σ|terms|; the epilogue
            // (a square, a division) scales that by a few.
            let tol = 8.0 * (k as f64 + 4.0) * f32::EPSILON as f64 * scale * (1.0 + want.abs());
            assert!(
                (got as f64 - want).abs() <= tol,
                "{m}×{n}×{k} ta={} {:?} pack_b={} epilogue {}: ({i}, {j}) = {got}, want {want}",
                c.ta,
                c.a_source,
                c.pack_b,
                c.epilogue
            );
        }
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
        for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
            match isa {
                Isa::Avx2 => check::<Avx2>(&c),
            }
        }
    }
}

#[test]
fn every_tile_of_the_register_tile_and_its_edges() {
    for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
        for m in 1..=13 {
            for n in [1, 7, 8, 9, 15, 16, 17, 33] {
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
                    match isa {
                        Isa::Avx2 => check::<Avx2>(&c),
                    }
                }
            }
        }
    }
}

#[test]
fn transcendental_epilogues_are_left_to_the_kernel() {
    let tanh = [EInst::Acc, EInst::Prim(Prim::Tanh, 0)];
    assert!(!super::micro::supports::<Avx2>(&tanh));
    let long = vec![EInst::Acc; Avx2::FREE as usize + 1];
    assert!(!super::micro::supports::<Avx2>(&long));
    assert!(epilogues().iter().all(|e| super::micro::supports::<Avx2>(e)));
}
