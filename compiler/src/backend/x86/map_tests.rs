//! The generated maps against the same program evaluated in Rust: loads, a broadcast,
//! arithmetic, a function, a select, a store (or a stream, at addresses aligned to a
//! vector or not, rows apart by whole vectors or not) and an in-place update, over
//! lengths around the vector width and rows with gaps between them, which must stay
//! untouched; and dropout masks against the hash they stand for.

use super::Isa;
use super::avx2::Avx2;
use super::avx512::Avx512;
use super::isa::Simd;
use super::map::{self, MapFn};
use super::memory::Executable;
use super::tests::values;
use crate::ir::kernel::{BinOp, Cmp, Inst, Map, Prim, Ptr};
use crate::ir::ops::TensorId;
use proptest::prelude::*;

const FUNCTIONS: [Prim; 3] = [Prim::Tanh, Prim::Sigmoid, Prim::Exp];

fn prim64(p: Prim, x: f64) -> f64 {
    match p {
        Prim::Tanh => x.tanh(),
        Prim::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        _ => x.exp(),
    }
}

/// `c = f(a·b + s) > ½ ? a : b; a = f(a·b + s) − a`, for each element of each row, `c`
/// stored or streamed.
fn program(p: Prim, len: usize, stream: bool) -> Map {
    let t = |i: u32| Ptr::tensor(TensorId(i));
    use Inst::*;
    Map {
        len,
        insts: vec![
            Load(t(0)),
            Load(t(1)),
            Bcast(t(2)),
            Bin(BinOp::Mul, 0, 1),
            Bin(BinOp::Add, 3, 2),
            Prim(p, 4),
            Const(0.5),
            Select(Cmp::Gt, 5, 6, 0, 1),
            if stream { Stream(t(3), 7) } else { Store(t(3), 7) },
            Bin(BinOp::Sub, 5, 0),
            Store(t(0), 9),
        ],
    }
}

/// How `c` is written: `stream`ed or stored, `skew` elements past a 64-byte boundary, and
/// with each row's stride a whole number of vectors when `whole`.
#[derive(Clone, Copy, Debug)]
struct Output {
    stream: bool,
    skew: usize,
    whole: bool,
}

fn check<S: Simd>(p: Prim, len: usize, rows: usize, gap: usize, seed: u64, out: Output) {
    let stride = if out.whole { (len + gap).next_multiple_of(S::LANES) } else { len + gap };
    let m = program(p, len, out.stream);
    assert!(map::supports(&m));
    let strides = [stride as i32, stride as i32, 0, stride as i32, stride as i32];
    let code = map::generate::<S>(&m, rows, &strides).expect("the program fits the registers");
    let exec = Executable::new(&code).expect("maps");
    // SAFETY: the code is a map function of this signature.
    let f = unsafe { std::mem::transmute::<*const u8, MapFn>(exec.at(0)) };
    let size = rows * stride + 64;
    let a0 = values(size, seed);
    let b = values(size, seed + 1);
    let s = [0.25f32];
    let mut a = a0.clone();
    let mut c_buffer = vec![f32::NAN; size + 32];
    let first = c_buffer.as_ptr().align_offset(64) + out.skew;
    let c = &mut c_buffer[first..first + size];
    let (pa, pc) = (a.as_mut_ptr() as *const f32, c.as_mut_ptr() as *const f32);
    let mut table = [pa, b.as_ptr(), s.as_ptr(), pc, pa];
    // SAFETY: each operand holds `rows` rows of `stride` with `len` elements each.
    unsafe { f(table.as_mut_ptr()) };
    for at in 0..size {
        let (r, i) = (at / stride, at % stride);
        let inside = r < rows && i < len;
        if !inside {
            assert!(c[at].is_nan(), "{} {p:?} len {len} rows {rows}: c[{at}] written", S::NAME);
            assert_eq!(a[at].to_bits(), a0[at].to_bits(), "{} a[{at}] written", S::NAME);
            continue;
        }
        let x = a0[at] * b[at] + s[0];
        let v = prim64(p, x as f64);
        let tol = 1e-6 * (1.0 + v.abs());
        let want_c = if v > 0.5 { a0[at] } else { b[at] };
        let near = (v - 0.5).abs() <= tol;
        assert!(
            c[at] == want_c || (near && (c[at] == a0[at] || c[at] == b[at])),
            "{} {p:?} len {len} rows {rows}: c[{at}] = {}, want {want_c}",
            S::NAME,
            c[at]
        );
        let want_a = v - a0[at] as f64;
        assert!(
            (a[at] as f64 - want_a).abs() <= tol + 1e-6 * want_a.abs(),
            "{} {p:?} len {len} rows {rows}: a[{at}] = {}, want {want_a}",
            S::NAME,
            a[at]
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn maps_agree_with_rust(
        f in 0..FUNCTIONS.len(),
        len in prop_oneof![1usize..20, 20usize..70],
        rows in 1usize..5,
        gap in 0usize..4,
        seed in any::<u64>(),
        stream in any::<bool>(),
        skew in prop_oneof![Just(0usize), 1usize..16],
        whole in any::<bool>(),
    ) {
        let out = Output { stream, skew, whole };
        for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
            match isa {
                Isa::Avx2 => check::<Avx2>(FUNCTIONS[f], len, rows, gap, seed, out),
                Isa::Avx512 => check::<Avx512>(FUNCTIONS[f], len, rows, gap, seed, out),
            }
        }
    }
}

#[test]
fn maps_refuse_stores_within_reach_of_other_addresses() {
    let t = |i: u32, off: usize| Ptr::tensor(TensorId(i)).plus(off);
    use Inst::*;
    let shifted = Map { len: 32, insts: vec![Load(t(0, 1)), Store(t(0, 0), 0)] };
    assert!(!map::supports(&shifted));
    let apart = Map { len: 32, insts: vec![Load(t(0, 32)), Store(t(0, 0), 0), Store(t(0, 64), 0)] };
    assert!(map::supports(&apart));
    let bcast = Map { len: 8, insts: vec![Bcast(t(0, 100)), Store(t(0, 0), 0)] };
    assert!(!map::supports(&bcast));
}

/// `y = x · keep(seed, p)` for each element of each row (`x` and `y` rows `stride` apart,
/// the mask's index from `first`, `index_stride` per row) against the hash in Rust, bit
/// for bit: Cranelift's maps compute the same.
fn check_dropout<S: Simd>(
    len: usize,
    rows: usize,
    (stride, index_stride): (usize, usize),
    seed: u32,
    p: f32,
) {
    let t = |i: u32| Ptr::tensor(TensorId(i));
    use Inst::*;
    let first = 1_000_003usize;
    let m = Map {
        len,
        insts: vec![
            Load(t(0)),
            Keep { seed: t(1), p, index: t(2).plus(first) },
            Bin(BinOp::Mul, 0, 1),
            Store(t(3), 2),
        ],
    };
    assert!(map::supports(&m));
    let strides = [stride as i32, 0, index_stride as i32, stride as i32];
    let code = map::generate::<S>(&m, rows, &strides).expect("the program fits the registers");
    let exec = Executable::new(&code).expect("maps");
    // SAFETY: the code is a map function of this signature.
    let f = unsafe { std::mem::transmute::<*const u8, MapFn>(exec.at(0)) };
    let size = rows * stride;
    let x = values(size, u64::from(seed));
    let mut y = vec![f32::NAN; size];
    let seeds = [seed];
    let mut table =
        [x.as_ptr(), seeds.as_ptr().cast::<f32>(), (4 * first) as *const f32, y.as_mut_ptr() as *const f32];
    // SAFETY: `x` and `y` hold `rows` rows of `stride` with `len` elements each; the
    // index slot is never read as an address.
    unsafe { f(table.as_mut_ptr()) };
    let threshold = crate::ir::ops::dropout_threshold(p);
    for at in 0..size {
        let (r, i) = (at / stride, at % stride);
        if i >= len {
            assert!(y[at].is_nan(), "{} y[{at}] written", S::NAME);
            continue;
        }
        let index = (first + r * index_stride + i) as u32;
        let kept = crate::ir::ops::dropout_hash(seed, index) >= threshold;
        let want = x[at] * if kept { 1.0 / (1.0 - p) } else { 0.0 };
        assert_eq!(
            y[at].to_bits(),
            want.to_bits(),
            "{} len {len} row {r}: y[{i}] = {}, want {want}",
            S::NAME,
            y[at]
        );
    }
}

proptest! {
    #[test]
    fn dropout_masks_are_the_hash_bit_for_bit(
        len in prop_oneof![1usize..20, 20usize..70],
        rows in 1usize..5,
        gap in 0usize..4,
        index_gap in 0usize..40,
        seed in any::<u32>(),
        p in 0.0f32..0.95,
    ) {
        let strides = (len + gap, len + index_gap);
        for isa in Isa::ALL.into_iter().filter(|i| i.available()) {
            match isa {
                Isa::Avx2 => check_dropout::<Avx2>(len, rows, strides, seed, p),
                Isa::Avx512 => check_dropout::<Avx512>(len, rows, strides, seed, p),
            }
        }
    }
}
