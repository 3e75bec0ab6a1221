//! Unit tests of each verifier rule, on minimal graphs and programs: each starts from
//! one that passes and breaks one thing.

use super::{VerifyError, graph, program};
use crate::front::layers::activation::Activation;
use crate::ir::kernel::Prim;
use crate::ir::kernel::{Gemm, Inst, Kernel, Map, Parallel, Program, Ptr, Right, Stmt, Var};
use crate::ir::ops::{Op, OpNode, Role, Tensor, TensorGraph, TensorId};
use crate::passes::memory;

const X: TensorId = TensorId(0);
const Y: TensorId = TensorId(1);

fn tensor(name: &str, dims: Vec<usize>, role: Role) -> Tensor {
    Tensor { name: name.into(), dims, role, view: None, origin: crate::ir::ops::Origin::Named }
}

/// `y = relu(x)` over 8 elements.
fn relu_graph() -> TensorGraph {
    TensorGraph {
        batch: 1,
        tensors: vec![tensor("x", vec![8], Role::Input), tensor("y", vec![8], Role::Activation)],
        ops: vec![OpNode {
            op: Op::Elementwise { len: 8, f: Activation::Relu.function() },
            inputs: vec![X],
            output: Y,
            aux: Vec::new(),
            layer: "relu".into(),
        }],
        inputs: vec![X],
        one_hot: Vec::new(),
        output: Y,
    }
}

fn relu(len: usize, x: Ptr, y: Ptr) -> Stmt {
    Stmt::Map(Map { len, insts: vec![Inst::Load(x), Inst::Prim(Prim::Tanh, 0), Inst::Store(y, 1)] })
}

fn one_kernel(body: Vec<Stmt>, parallel: Parallel, scratch: Vec<usize>) -> Program {
    let kernel = Kernel {
        kind: crate::ir::kernel::KernelKind::Body,
        name: "k0".into(),
        label: "relu".into(),
        layers: vec!["relu".into()],
        parallel,
        body,
        scratch,
        reads: vec![X],
        writes: vec![Y],
        macs: 0,
    };
    Program { kernels: vec![kernel], threads: 2, geometry: crate::backend::Target::default().geometry() }
}

/// The relu split in two halves of 4 across threads.
fn split_relu() -> Program {
    let v = Var(0);
    let body = vec![Stmt::Loop {
        var: v,
        extent: 2,
        body: vec![relu(4, Ptr::tensor(X).plus_var(v, 4), Ptr::tensor(Y).plus_var(v, 4))],
    }];
    one_kernel(body, Parallel::Loop { extent: 2 }, Vec::new())
}

fn check(g: &TensorGraph, p: &Program) -> Result<(), VerifyError> {
    let plan = memory::plan(g, p, 0);
    program(g, p, &plan)
}

fn map_of(p: &mut Program) -> &mut Map {
    match &mut p.kernels[0].body[0] {
        Stmt::Loop { body, .. } => match &mut body[0] {
            Stmt::Map(m) => m,
            other => panic!("not a map: {other:?}"),
        },
        other => panic!("not a loop: {other:?}"),
    }
}

#[test]
fn a_correct_split_passes() {
    assert_eq!(check(&relu_graph(), &split_relu()), Ok(()));
    assert_eq!(graph(&relu_graph()), Ok(()));
}

#[test]
fn a_map_one_too_long_is_out_of_bounds() {
    let mut p = split_relu();
    map_of(&mut p).len = 5;
    let e = check(&relu_graph(), &p).unwrap_err();
    assert!(matches!(e, VerifyError::OutOfBounds { low: 0, high: 8, extent: 8, .. }), "{e}");
    // The message names the kernel, the pointer, the range and the extent.
    let text = e.to_string();
    assert!(text.starts_with("kernel k0: load `"), "{text}");
    assert!(text.contains("0..=8") && text.contains("0..8") && text.contains("t0 (x)"), "{text}");
}

#[test]
fn a_loop_one_too_long_is_out_of_bounds() {
    let mut p = split_relu();
    p.kernels[0].parallel = Parallel::Loop { extent: 3 };
    let Stmt::Loop { extent, .. } = &mut p.kernels[0].body[0] else { unreachable!() };
    *extent = 3;
    assert!(matches!(check(&relu_graph(), &p), Err(VerifyError::OutOfBounds { high: 11, .. })));
}

/// A barrier stands only inside a team's loop, and a team has one member per thread:
/// anywhere else its members could wait for one another forever.
#[test]
fn barriers_stand_only_in_teams_of_every_thread() {
    let team = |members: usize, extent: usize, barrier_after: bool| {
        let mut p = split_relu();
        if let Stmt::Loop { extent: e, body, .. } = &mut p.kernels[0].body[0] {
            *e = extent;
            body.push(Stmt::Barrier);
        }
        if barrier_after {
            p.kernels[0].body.push(Stmt::Barrier);
        }
        p.kernels[0].parallel = Parallel::Team { members };
        p
    };
    assert!(check(&relu_graph(), &team(2, 2, false)).is_ok());
    assert!(matches!(check(&relu_graph(), &team(2, 2, true)), Err(VerifyError::Statement { .. })));
    assert!(matches!(
        check(&relu_graph(), &team(3, 3, false)),
        Err(VerifyError::Parallel { parallel: 3, .. })
    ));
    let mut split = team(2, 2, false);
    split.kernels[0].parallel = Parallel::Loop { extent: 2 };
    assert!(matches!(check(&relu_graph(), &split), Err(VerifyError::Statement { .. })));
}

#[test]
fn the_parallel_extent_must_be_the_first_loops() {
    let mut p = split_relu();
    p.kernels[0].parallel = Parallel::Loop { extent: 3 };
    assert!(matches!(check(&relu_graph(), &p), Err(VerifyError::Parallel { parallel: 3, .. })));
    // A parallel kernel must start with a loop.
    let q =
        one_kernel(vec![relu(8, Ptr::tensor(X), Ptr::tensor(Y))], Parallel::Loop { extent: 1 }, Vec::new());
    assert!(matches!(check(&relu_graph(), &q), Err(VerifyError::Parallel { .. })));
}

#[test]
fn negative_offsets_and_coefficients_are_bounded_both_ways() {
    // Reversed halves: y[4 − 4·v ..] — reaches 0..=7 for v in 0..2.
    let v = Var(0);
    let reversed = |offset: i64| {
        let y = Ptr { buf: crate::ir::kernel::Buffer::Tensor(Y), offset, terms: vec![(v, -4)] };
        let body =
            vec![Stmt::Loop { var: v, extent: 2, body: vec![relu(4, Ptr::tensor(X).plus_var(v, 4), y)] }];
        one_kernel(body, Parallel::Loop { extent: 2 }, Vec::new())
    };
    assert_eq!(check(&relu_graph(), &reversed(4)), Ok(()));
    let e = check(&relu_graph(), &reversed(3)).unwrap_err();
    assert!(matches!(e, VerifyError::OutOfBounds { low: -1, high: 6, .. }), "{e}");
    let mut p = split_relu();
    if let Inst::Load(x) = &mut map_of(&mut p).insts[0] {
        x.offset = -1;
    }
    assert!(matches!(check(&relu_graph(), &p), Err(VerifyError::OutOfBounds { low: -1, .. })));
}

#[test]
fn loop_variables_are_used_only_inside_their_loop() {
    let v = Var(0);
    let body = vec![
        Stmt::Loop { var: v, extent: 2, body: Vec::new() },
        relu(4, Ptr::tensor(X).plus_var(v, 4), Ptr::tensor(Y)),
    ];
    let p = one_kernel(body, Parallel::Serial, Vec::new());
    assert!(matches!(check(&relu_graph(), &p), Err(VerifyError::Scope { var: 0, .. })));
    // Nor bound twice.
    let inner = Stmt::Loop { var: v, extent: 1, body: Vec::new() };
    let p =
        one_kernel(vec![Stmt::Loop { var: v, extent: 2, body: vec![inner] }], Parallel::Serial, Vec::new());
    assert!(matches!(check(&relu_graph(), &p), Err(VerifyError::Rebound { var: 0, .. })));
}

#[test]
fn reads_and_writes_are_declared() {
    let mut p = split_relu();
    p.kernels[0].writes.clear();
    p.kernels[0].reads.push(Y);
    let e = check(&relu_graph(), &p).unwrap_err();
    assert!(matches!(&e, VerifyError::Undeclared { list: "writes", .. }), "{e}");
    let mut p = split_relu();
    p.kernels[0].reads.clear();
    assert!(matches!(check(&relu_graph(), &p), Err(VerifyError::Undeclared { list: "reads", .. })));
}

#[test]
fn scratch_indices_and_sizes_are_checked() {
    let v = Var(0);
    let with_scratch = |index: u16, floats: usize| {
        let body = vec![Stmt::Loop {
            var: v,
            extent: 2,
            body: vec![relu(4, Ptr::tensor(X).plus_var(v, 4), Ptr::scratch(index))],
        }];
        let mut p = one_kernel(body, Parallel::Loop { extent: 2 }, vec![floats]);
        p.kernels[0].writes.clear();
        p
    };
    assert_eq!(check(&relu_graph(), &with_scratch(0, 4)), Ok(()));
    assert!(matches!(
        check(&relu_graph(), &with_scratch(1, 4)),
        Err(VerifyError::Scratch { index: 1, count: 1, .. })
    ));
    assert!(matches!(
        check(&relu_graph(), &with_scratch(0, 3)),
        Err(VerifyError::OutOfBounds { extent: 3, .. })
    ));
}

#[test]
fn tensors_need_a_place_in_the_plan() {
    let g = relu_graph();
    let p = split_relu();
    let mut plan = memory::plan(&g, &p, 0);
    plan.tensors[1] = None;
    assert!(matches!(
        program(&g, &p, &plan),
        Err(VerifyError::Unplanned { .. }) | Err(VerifyError::Plan { .. })
    ));
    let mut plan = memory::plan(&g, &p, 0);
    plan.size = plan.tensors[1].unwrap() + 8 * 4 - 1;
    assert!(matches!(program(&g, &p, &plan), Err(VerifyError::Plan { .. })));
}

/// `c [2, 3] = a [2, 4] · b [4, 3]`.
fn matmul() -> (TensorGraph, Program) {
    let (a, b, c) = (TensorId(0), TensorId(1), TensorId(2));
    let g = TensorGraph {
        batch: 2,
        tensors: vec![
            tensor("a", vec![2, 4], Role::Input),
            tensor("b", vec![4, 3], Role::Input),
            tensor("c", vec![2, 3], Role::Activation),
        ],
        ops: vec![OpNode {
            op: Op::MatMul { m: 2, k: 4, n: 3, ta: false },
            inputs: vec![a, b],
            output: c,
            aux: Vec::new(),
            layer: "dense".into(),
        }],
        inputs: vec![a, b],
        one_hot: Vec::new(),
        output: c,
    };
    let gemm = Gemm {
        m: 2,
        n: 3,
        k: 4,
        a: Ptr::tensor(a),
        lda: 4,
        ta: false,
        b: Right::Matrix { ptr: Ptr::tensor(b), ld: 3 },
        c: Ptr::tensor(c),
        ldc: 3,
        epilogue: Vec::new(),
        sparse_a: false,
        b_sums: Vec::new(),
    };
    let mut p = one_kernel(vec![Stmt::Gemm(gemm)], Parallel::Serial, Vec::new());
    p.kernels[0].reads = vec![a, b];
    p.kernels[0].writes = vec![c];
    (g, p)
}

#[test]
fn leading_dimensions_count() {
    let (g, p) = matmul();
    assert_eq!(check(&g, &p), Ok(()));
    for field in 0..3 {
        let mut q = p.clone();
        let Stmt::Gemm(gemm) = &mut q.kernels[0].body[0] else { unreachable!() };
        match field {
            0 => gemm.lda = 5,
            1 => gemm.b = Right::Matrix { ptr: Ptr::tensor(TensorId(1)), ld: 4 },
            _ => gemm.ldc = 4,
        }
        assert!(matches!(check(&g, &q), Err(VerifyError::OutOfBounds { .. })), "field {field}");
    }
    // A transposed `a` reads k rows of lda.
    let mut q = p.clone();
    let Stmt::Gemm(gemm) = &mut q.kernels[0].body[0] else { unreachable!() };
    (gemm.ta, gemm.lda) = (true, 2);
    assert_eq!(check(&g, &q), Ok(()));
    let Stmt::Gemm(gemm) = &mut q.kernels[0].body[0] else { unreachable!() };
    gemm.lda = 3;
    assert!(matches!(check(&g, &q), Err(VerifyError::OutOfBounds { high: 10, .. })));
}

#[test]
fn programs_with_dangling_operands_are_rejected() {
    let mut p = split_relu();
    map_of(&mut p).insts[1] = Inst::Prim(Prim::Tanh, 2);
    assert!(matches!(check(&relu_graph(), &p), Err(VerifyError::Statement { .. })));
}

#[test]
fn graph_rules() {
    // Shapes: the op's length disagrees with its output.
    let mut g = relu_graph();
    g.tensors[1].dims = vec![9];
    assert!(matches!(graph(&g), Err(VerifyError::Shape { expected: 8, actual: 9, .. })));
    // Inputs defined before use.
    let mut g = relu_graph();
    g.inputs.clear();
    g.tensors[0].role = Role::Activation;
    assert!(matches!(graph(&g), Err(VerifyError::Undefined { tensor: 0, .. })));
    // Ids in range.
    let mut g = relu_graph();
    g.ops[0].inputs[0] = TensorId(7);
    assert!(matches!(graph(&g), Err(VerifyError::TensorRange { tensor: 7, .. })));
    // Views inside their block.
    let mut g = relu_graph();
    g.tensors.push(tensor("block", vec![10], Role::Block { persistent: true }));
    g.tensors[0].view = Some((TensorId(2), 2));
    assert_eq!(graph(&g), Ok(()));
    g.tensors[0].view = Some((TensorId(2), 3));
    assert!(matches!(graph(&g), Err(VerifyError::View { offset: 3, block: 10, .. })));
    // Arity.
    let mut g = relu_graph();
    g.ops[0].inputs.push(X);
    assert!(matches!(graph(&g), Err(VerifyError::Arity { expected: 1, actual: 2, .. })));
    // Fields that contradict each other, without overflowing.
    let mut g = relu_graph();
    g.ops[0].op = Op::MatMul { m: usize::MAX, k: 3, n: 1, ta: false };
    assert!(matches!(graph(&g), Err(VerifyError::Fields { .. })));
}
