//! Sabotaged programs — each one number wrong, the kind of slip that made generated code
//! write outside its buffers — are rejected by the verifier before any code is generated
//! or run. (That guard mode still catches a write past a buffer is tested on the canary
//! code itself, in `exec.rs`: no program the verifier accepts writes outside its tensors.)

mod common;

use nnc_compiler::backend::Target;
use nnc_compiler::front::layers::activation::Activation;
use nnc_compiler::ir::kernel::{Buffer, Gemm, Inst, Parallel, Program, Right, Stmt};
use nnc_compiler::ir::ops::{Op, TensorGraph};
use nnc_compiler::passes::schedule::schedule;
use nnc_compiler::passes::verify::VerifyError;
use nnc_compiler::pipeline;
use nnc_runtime::exec::{Error, Executable};

/// `y = relu(x)` over `len` elements, and its kernels for `threads` threads.
fn relu(len: usize, threads: usize) -> (TensorGraph, Program) {
    let mut b = common::Builder::new(1);
    let x = b.input(vec![len]);
    b.op(Op::Elementwise { len, f: Activation::Relu.function() }, vec![x], vec![len]);
    let program = schedule(&b.graph, threads, Target::Cranelift.geometry());
    (b.graph, program)
}

/// `[m, k] · [k, n]`.
fn matmul(m: usize, k: usize, n: usize) -> (TensorGraph, Program) {
    let mut b = common::Builder::new(1);
    let x = b.input(vec![m, k]);
    let w = b.param("w", vec![k, n], 0.5);
    b.op(Op::MatMul { m, k, n, ta: false }, vec![x, w], vec![m, n]);
    let program = schedule(&b.graph, 1, Target::Cranelift.geometry());
    (b.graph, program)
}

/// What the verifier says of `program`; the sabotage must not get as far as code.
fn rejection(graph: TensorGraph, program: Program, threads: usize) -> VerifyError {
    let options = common::options(threads);
    match pipeline::from_program(graph, program, options.stages()) {
        Err(pipeline::Error::Verify(e)) => *e,
        Ok(_) => panic!("the sabotaged program was accepted"),
        Err(e) => panic!("rejected for another reason: {e}"),
    }
}

fn first_map(stmts: &mut [Stmt]) -> Option<&mut nnc_compiler::ir::kernel::Map> {
    stmts.iter_mut().find_map(|s| match s {
        Stmt::Map(m) => Some(m),
        Stmt::Loop { body, .. } => first_map(body),
        _ => None,
    })
}

fn first_gemm(stmts: &mut [Stmt]) -> Option<&mut Gemm> {
    stmts.iter_mut().find_map(|s| match s {
        Stmt::Gemm(g) => Some(g),
        Stmt::Loop { body, .. } => first_gemm(body),
        _ => None,
    })
}

#[test]
fn a_map_one_element_too_long_is_rejected() {
    let (graph, mut program) = relu(8, 1);
    first_map(&mut program.kernels[0].body).expect("a map").len = 9;
    let e = rejection(graph.clone(), program, 1);
    assert!(
        matches!(&e, VerifyError::OutOfBounds { kernel, high: 8, extent: 8, .. } if kernel == "k0"),
        "{e}"
    );
    // Without the sabotage the same kernel is accepted and runs.
    let mut good = Executable::from_ops(graph, &common::options(1)).unwrap();
    good.run().unwrap();
}

#[test]
fn a_leading_dimension_too_large_is_rejected() {
    let (graph, program) = matmul(5, 7, 6);
    for which in ["a", "b", "c"] {
        let mut p = program.clone();
        let gemm = p.kernels.iter_mut().find_map(|k| first_gemm(&mut k.body)).expect("a product");
        match which {
            "a" => gemm.lda += 1,
            "b" => match &mut gemm.b {
                Right::Matrix { ld, .. } => *ld += 1,
                Right::Unfolded(_) => panic!("a matmul's b is a matrix"),
            },
            _ => gemm.ldc += 1,
        }
        let e = rejection(graph.clone(), p, 1);
        assert!(matches!(e, VerifyError::OutOfBounds { .. }), "{which}: {e}");
    }
}

/// The relu over 32,768 elements on two threads is a parallel loop (a block per thread).
fn parallel_relu() -> (TensorGraph, Program, usize) {
    let (graph, program) = relu(32_768, 2);
    let k = program
        .kernels
        .iter()
        .position(|k| matches!(k.parallel, Parallel::Loop { .. }))
        .expect("a parallel kernel");
    (graph, program, k)
}

#[test]
fn a_loop_one_iteration_too_long_is_rejected() {
    let (graph, mut program, k) = parallel_relu();
    let Parallel::Loop { extent } = program.kernels[k].parallel else { unreachable!() };
    program.kernels[k].parallel = Parallel::Loop { extent: extent + 1 };
    let Some(Stmt::Loop { extent: e, .. }) = program.kernels[k].body.first_mut() else { panic!("a loop") };
    *e += 1;
    let e = rejection(graph, program, 2);
    assert!(matches!(e, VerifyError::OutOfBounds { extent: 32_768, .. }), "{e}");
}

#[test]
fn a_parallel_extent_that_disagrees_with_its_loop_is_rejected() {
    let (graph, mut program, k) = parallel_relu();
    let Parallel::Loop { extent } = program.kernels[k].parallel else { unreachable!() };
    program.kernels[k].parallel = Parallel::Loop { extent: extent + 1 };
    let e = rejection(graph, program, 2);
    assert!(matches!(e, VerifyError::Parallel { .. }), "{e}");
}

#[test]
fn a_write_to_a_tensor_not_declared_is_rejected() {
    let (graph, mut program) = relu(8, 1);
    program.kernels[0].writes.clear();
    let e = rejection(graph, program, 1);
    assert!(matches!(e, VerifyError::Undeclared { list: "writes", .. }), "{e}");
}

#[test]
fn a_scratch_index_out_of_range_is_rejected() {
    let (graph, mut program) = relu(8, 1);
    let map = first_map(&mut program.kernels[0].body).expect("a map");
    let Some(Inst::Store(ptr, _)) = map.insts.iter_mut().find(|i| matches!(i, Inst::Store(..))) else {
        panic!("a store")
    };
    ptr.buf = Buffer::Scratch(3);
    let e = rejection(graph, program, 1);
    assert!(matches!(e, VerifyError::Scratch { index: 3, count: 0, .. }), "{e}");
}

#[test]
fn a_rejected_program_is_reported_as_an_error_of_the_executable() {
    let (graph, mut program) = relu(8, 1);
    first_map(&mut program.kernels[0].body).expect("a map").len = 9;
    let options = common::options(1);
    let e = pipeline::from_program(graph, program, options.stages()).map(|s| Executable::new(s, &options));
    let Err(e) = e else { panic!("accepted") };
    let text = Error::Pipeline(e).to_string();
    assert!(text.contains("verifier") && text.contains("k0"), "{text}");
}
