//! The verifier against random mutations of real programs: one number changed (an
//! extent, offset, coefficient, length, leading dimension, parallel extent) or one
//! declared read or write dropped. It must never panic, and every mutated program it
//! accepts must run in guard mode without touching a canary.

mod common;

use nnc_compiler::front::train::Loss;
use nnc_compiler::ir::kernel::{Parallel, Program, Ptr, Stmt};
use nnc_compiler::ir::ops::{TensorGraph, UpdateRule};
use nnc_compiler::pipeline;
use nnc_runtime::exec::{Error, Executable};
use proptest::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// Real programs: LeNet-5 for inference and for a training step, and a character RNN's
/// training step (gathers, scatters, reductions), each for two threads.
fn programs() -> &'static [(TensorGraph, Program)] {
    static PROGRAMS: OnceLock<Vec<(TensorGraph, Program)>> = OnceLock::new();
    PROGRAMS.get_or_init(|| {
        let compile = |file: &str| {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(file);
            nnc_compiler::compile_file(&path).expect("the example compiles")
        };
        let options = pipeline::Options {
            threads: 2,
            guard: 0,
            geometry: nnc_compiler::backend::Target::default().geometry(),
        };
        let sgd = UpdateRule::Sgd { momentum: 0.9, nesterov: false, weight_decay: 0.0 };
        let lenet = compile("lenet5.net");
        let rnn = compile("char_rnn.net");
        let stages = [
            pipeline::inference(&lenet.networks[0], 2, options).expect("inference"),
            pipeline::training(&lenet.networks[0], Loss::CrossEntropy, sgd, 2, options).expect("training").0,
            pipeline::training(&rnn.networks[0], Loss::CrossEntropy, sgd, 2, options).expect("training").0,
        ];
        stages.into_iter().map(|s| (s.graph().clone(), s.program().clone())).collect()
    })
}

/// A number of a program that a mutation may change.
enum Site<'a> {
    Count(&'a mut usize),
    Offset(&'a mut i64),
}

fn ptr<'a>(p: &'a mut Ptr, sites: &mut Vec<Site<'a>>) {
    sites.push(Site::Offset(&mut p.offset));
    for (_, coef) in &mut p.terms {
        sites.push(Site::Offset(coef));
    }
}

fn stmts<'a>(body: &'a mut [Stmt], sites: &mut Vec<Site<'a>>) {
    use nnc_compiler::ir::kernel::{EInst, Inst};
    for s in body {
        match s {
            Stmt::Loop { extent, body, .. } => {
                sites.push(Site::Count(extent));
                stmts(body, sites);
            }
            Stmt::Gemm(g) => {
                for n in [&mut g.m, &mut g.n, &mut g.k, &mut g.lda, &mut g.ldc] {
                    sites.push(Site::Count(n));
                }
                for p in [&mut g.a, &mut g.c] {
                    ptr(p, sites);
                }
                match &mut g.b {
                    nnc_compiler::ir::kernel::Right::Matrix { ptr: p, ld } => {
                        sites.push(Site::Count(ld));
                        ptr(p, sites);
                    }
                    nnc_compiler::ir::kernel::Right::Unfolded(u) => {
                        ptr(&mut u.src, sites);
                        for n in [&mut u.win.c, &mut u.win.h, &mut u.win.w, &mut u.win.oh, &mut u.win.ow] {
                            sites.push(Site::Count(n));
                        }
                    }
                }
                for e in &mut g.epilogue {
                    match e {
                        EInst::Row(p) | EInst::Col(p) => ptr(p, sites),
                        EInst::Elem(p, ld) => {
                            sites.push(Site::Count(ld));
                            ptr(p, sites);
                        }
                        EInst::Acc
                        | EInst::Const(_)
                        | EInst::Prim(..)
                        | EInst::Bin(..)
                        | EInst::Select(..) => {}
                    }
                }
            }
            Stmt::Map(m) => {
                sites.push(Site::Count(&mut m.len));
                for i in &mut m.insts {
                    match i {
                        Inst::Load(p)
                        | Inst::Bcast(p)
                        | Inst::Store(p, _)
                        | Inst::Stream(p, _)
                        | Inst::Keep { seed: p, .. } => ptr(p, sites),
                        Inst::Const(_) | Inst::Prim(..) | Inst::Bin(..) | Inst::Select(..) => {}
                    }
                }
            }
            Stmt::Reduce(r) => {
                sites.push(Site::Count(&mut r.outer));
                sites.push(Site::Count(&mut r.len));
                ptr(&mut r.dst, sites);
                for i in &mut r.insts {
                    match i {
                        Inst::Load(p)
                        | Inst::Bcast(p)
                        | Inst::Store(p, _)
                        | Inst::Stream(p, _)
                        | Inst::Keep { seed: p, .. } => ptr(p, sites),
                        Inst::Const(_) | Inst::Prim(..) | Inst::Bin(..) | Inst::Select(..) => {}
                    }
                }
            }
            Stmt::Im2col(c) => {
                sites.extend([Site::Count(&mut c.ld), Site::Count(&mut c.win.oh), Site::Count(&mut c.win.w)]);
                ptr(&mut c.src, sites);
                ptr(&mut c.dst, sites);
            }
            Stmt::Col2im(c) => {
                sites.extend([Site::Count(&mut c.ld), Site::Count(&mut c.win.h)]);
                ptr(&mut c.cols, sites);
                ptr(&mut c.image, sites);
            }
            Stmt::Pool(p) => {
                sites.extend([Site::Count(&mut p.win.oh), Site::Count(&mut p.win.c)]);
                ptr(&mut p.src, sites);
                ptr(&mut p.dst, sites);
            }
            Stmt::PoolBackward(p) => {
                sites.extend([Site::Count(&mut p.win.ow), Site::Count(&mut p.win.pad[0])]);
                for q in [&mut p.dy, &mut p.x, &mut p.dx] {
                    ptr(q, sites);
                }
            }
            Stmt::RowSum(r) => {
                sites.extend([Site::Count(&mut r.rows), Site::Count(&mut r.len)]);
                ptr(&mut r.src, sites);
                ptr(&mut r.dst, sites);
            }
            Stmt::ColumnSum(c) => {
                sites.extend([Site::Count(&mut c.ld), Site::Count(&mut c.rows), Site::Count(&mut c.cols)]);
                ptr(&mut c.src, sites);
                ptr(&mut c.dst, sites);
            }
            Stmt::Softmax(s) => {
                sites.extend([Site::Count(&mut s.rows), Site::Count(&mut s.cols)]);
                ptr(&mut s.src, sites);
                ptr(&mut s.dst, sites);
            }
            Stmt::Lrn(l) => {
                sites.extend([Site::Count(&mut l.c), Site::Count(&mut l.hw)]);
                ptr(&mut l.src, sites);
                ptr(&mut l.dst, sites);
            }
            Stmt::LrnBackward(l) => {
                sites.extend([Site::Count(&mut l.c), Site::Count(&mut l.hw)]);
                for q in [&mut l.dy, &mut l.x, &mut l.dx, &mut l.scratch] {
                    ptr(q, sites);
                }
            }
            Stmt::Gather(g) => {
                sites.extend([Site::Count(&mut g.count), Site::Count(&mut g.vocab), Site::Count(&mut g.dim)]);
                for q in [&mut g.ids, &mut g.table, &mut g.dst] {
                    ptr(q, sites);
                }
            }
            Stmt::Scatter(s) => {
                sites.extend([Site::Count(&mut s.count), Site::Count(&mut s.vocab), Site::Count(&mut s.dim)]);
                for q in [&mut s.ids, &mut s.src, &mut s.table, &mut s.acc] {
                    ptr(q, sites);
                }
            }
            Stmt::Transpose(t) => {
                for n in [&mut t.lds, &mut t.ldd, &mut t.rows, &mut t.cols] {
                    sites.push(Site::Count(n));
                }
                ptr(&mut t.src, sites);
                ptr(&mut t.dst, sites);
            }
            Stmt::CrossEntropy(c) => {
                sites.extend([Site::Count(&mut c.rows), Site::Count(&mut c.cols)]);
                for q in [&mut c.logits, &mut c.labels, &mut c.grad, &mut c.stats] {
                    ptr(q, sites);
                }
            }
            // No numbers to change.
            Stmt::Barrier => {}
        }
    }
}

/// Applies mutation `kind` at position `at` (both taken modulo what there is), changing
/// a number by `delta`.
fn mutate(program: &mut Program, kind: usize, at: usize, delta: i64) {
    let kernels = program.kernels.len();
    let kernel = &mut program.kernels[at % kernels];
    match kind % 4 {
        0 | 1 => {
            let mut sites = Vec::new();
            stmts(&mut kernel.body, &mut sites);
            if sites.is_empty() {
                return;
            }
            let n = sites.len();
            match sites.swap_remove((at / kernels) % n) {
                Site::Count(c) => *c = (*c as i64 + delta).max(0) as usize,
                Site::Offset(o) => *o += delta,
            }
        }
        2 => {
            if let Parallel::Loop { extent } = kernel.parallel {
                kernel.parallel = Parallel::Loop { extent: (extent as i64 + delta).max(0) as usize };
            }
        }
        _ => {
            let lists = [&mut kernel.reads, &mut kernel.writes];
            let list = lists.into_iter().nth(at % 2).expect("two lists");
            if !list.is_empty() {
                let i = (at / 2) % list.len();
                list.remove(i);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn accepted_mutations_never_touch_a_canary(
        which in 0usize..3,
        kind in 0usize..4,
        at in any::<usize>(),
        delta in prop::sample::select(vec![-7i64, -2, -1, 1, 2, 7, 64]),
    ) {
        let (graph, program) = &programs()[which];
        let mut mutated = program.clone();
        mutate(&mut mutated, kind, at, delta);
        let options = common::options(2);
        // Rejected (an error, not a panic) is always fine.
        let Ok(stages) = pipeline::from_program(graph.clone(), mutated, options.stages()) else {
            return Ok(());
        };
        let Ok(mut exe) = Executable::new(stages, &options) else { return Ok(()) };
        match exe.run() {
            Err(Error::Guard { kernel, buffer, side }) => {
                prop_assert!(false, "an accepted program wrote {side} {buffer} in {kernel}");
            }
            Err(e) => prop_assert!(false, "{e}"),
            Ok(()) => {}
        }
    }
}
