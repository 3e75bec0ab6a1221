//! Guard mode catches a kernel that writes past its buffer, and names both.

mod common;

use nnc_compiler::backend::Target;
use nnc_compiler::front::layers::activation::Activation;
use nnc_compiler::ir::kernel::Stmt;
use nnc_compiler::ir::ops::Op;
use nnc_compiler::passes::schedule::schedule;
use nnc_compiler::pipeline;
use nnc_runtime::exec::{Error, Executable};

#[test]
fn a_write_past_the_end_is_reported() {
    let mut b = common::Builder::new(1);
    let x = b.input(vec![8]);
    b.op(Op::Elementwise { len: 8, f: Activation::Relu.function() }, vec![x], vec![8]);
    let mut program = schedule(&b.graph, 1, Target::Cranelift.geometry());
    // Sabotage the map: one element more than the buffer holds.
    let Stmt::Map(map) = &mut program.kernels[0].body[0] else { panic!("expected a map") };
    map.len = 9;
    let options = common::options(1);
    let stages = pipeline::from_program(b.graph.clone(), program, options.stages()).unwrap();
    let mut exec = Executable::new(stages, &options).unwrap();
    match exec.run() {
        Err(Error::Guard { kernel, buffer, side }) => {
            assert_eq!((kernel.as_str(), buffer.as_str(), side), ("k0", "y", "after"));
        }
        other => panic!("the overflow went unnoticed: {other:?}"),
    }
    // Without the sabotage the same kernel passes.
    let mut good = Executable::from_ops(b.graph, &common::options(1)).unwrap();
    good.run().unwrap();
}
