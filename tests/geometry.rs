//! Scheduling shapes kernels by the back end's geometry, not by literals: the zoo
//! scheduled for a back end with other tiles, vectors and padding has its product row
//! blocks in multiples of the new tile rows (column blocks in multiples of its columns)
//! and its unfolded images padded to the new columns, while the Cranelift geometry keeps the reviewed listings (`zoo.rs`).

use nnc_compiler::backend::{Geometry, Target};
use nnc_compiler::ir::kernel::{Parallel, Program, Stmt};
use nnc_compiler::pipeline::{self, Options};
use std::path::Path;

/// A back end with AVX-512-like registers: 6 × 64 tiles of 16-lane vectors.
const WIDE: Geometry = Geometry { rows: 6, columns: 64, lanes: 16, pad: 16, unfolds: false };

/// The kernels of `file`'s network for inference at `batch` and, where it has a train
/// section, for a training step, on two threads.
fn programs(file: &str, batch: usize, geometry: Geometry) -> Vec<Program> {
    let model = nnc_compiler::compile_file(&Path::new("examples").join(file)).expect("the example compiles");
    let network = &model.networks[0];
    let options = Options { threads: 2, guard: 0, geometry };
    let mut programs = vec![pipeline::inference(network, batch, options).expect("schedules").into_parts().1];
    if let Some(config) = model.train_config(&network.name) {
        let (rule, _) = config.optimizer.update_rule();
        let (stages, _) =
            pipeline::training(network, config.loss, rule, batch, options).expect("schedules training");
        programs.push(stages.into_parts().1);
    }
    programs
}

/// What `check` saw, so that a geometry the zoo never exercises cannot pass vacuously.
#[derive(Default, Debug)]
struct Seen {
    row_blocks: usize,
    column_blocks: usize,
    unfolded: usize,
}

/// Checks every kernel of `program` against `g`: a matrix product split across threads
/// gives each thread whole tiles of rows or (a block narrower than `c`) of columns, and every unfolded image's row stride is a
/// multiple of the padding that holds the row.
fn check(program: &Program, g: Geometry, seen: &mut Seen) {
    assert_eq!(program.geometry, g, "the program records the geometry it was scheduled for");
    for kernel in &program.kernels {
        if kernel.label.starts_with("matmul")
            && let (Parallel::Loop { .. }, [Stmt::Loop { body, .. }, ..]) =
                (kernel.parallel, kernel.body.as_slice())
            && let [Stmt::Gemm(gemm)] = body.as_slice()
        {
            if gemm.n < gemm.ldc {
                let n = gemm.n;
                assert!(n.is_multiple_of(g.columns), "{}: a block of {n} columns for {g}", kernel.name);
                seen.column_blocks += 1;
            } else {
                assert!(gemm.m.is_multiple_of(g.rows), "{}: a block of {} rows for {g}", kernel.name, gemm.m);
                seen.row_blocks += 1;
            }
        }
        visit(&kernel.body, &mut |s| {
            if let Stmt::Im2col(c) = s {
                let row = c.win.oh * c.win.ow;
                assert!(
                    c.ld.is_multiple_of(g.pad) && c.ld >= row,
                    "{}: stride {} for {g}",
                    kernel.name,
                    c.ld
                );
                seen.unfolded += 1;
            }
        });
    }
}

fn visit(stmts: &[Stmt], f: &mut dyn FnMut(&Stmt)) {
    for s in stmts {
        f(s);
        if let Stmt::Loop { body, .. } = s {
            visit(body, f);
        }
    }
}

#[test]
fn kernels_follow_the_back_ends_geometry() {
    let cranelift = Target::Cranelift.geometry();
    for (file, batch) in [("lenet5.net", 64), ("resnet18_cifar.net", 2), ("char_lstm.net", 12)] {
        for g in [cranelift, WIDE] {
            let mut seen = Seen::default();
            for program in programs(file, batch, g) {
                check(&program, g, &mut seen);
            }
            if file == "lenet5.net" {
                assert!(seen.row_blocks > 0, "{file}: no product split across threads: {seen:?}");
            }
            if file == "resnet18_cifar.net" {
                assert!(seen.unfolded > 0, "{file}: no unfolded image: {seen:?}");
            }
            if file == "char_lstm.net" {
                assert!(seen.column_blocks > 0, "{file}: no product split by columns: {seen:?}");
            }
        }
        let listings = |g| programs(file, batch, g).iter().map(Program::to_string).collect::<Vec<_>>();
        assert_ne!(listings(cranelift), listings(WIDE), "{file}: the geometry changed nothing");
    }
}
