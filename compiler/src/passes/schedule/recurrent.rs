//! Recurrent layers as one kernel: per block of sequences, the input projection for all
//! steps as one matrix product, then a loop over time whose body is the recurrent
//! product and the gate arithmetic — all in generated code.

use super::Build;
use super::body::inline;
use crate::ir::kernel::*;
use crate::ir::ops::cell::{Arg, Term};
use crate::ir::ops::{Cell, OpNode, Recurrence};

/// Sequences processed together: the first of a register tile's rows, then halves of it
/// (4, 2, 1 for tiles of four rows), that divides the batch, so that each block's
/// recurrent product fills a tile's rows and blocks run independently.
fn block_rows(n: usize, tile_rows: usize) -> usize {
    std::iter::successors(Some(tile_rows), |b| (*b > 1).then_some(b / 2))
        .find(|b| n.is_multiple_of(*b))
        .unwrap_or(1)
}

impl Build<'_> {
    pub(super) fn recurrent(&mut self, r: &Recurrence, node: &OpNode, out: Ptr) -> (Vec<Stmt>, Parallel) {
        let rb = block_rows(r.n, self.geometry.rows);
        let blocks = r.n / rb;
        let (h, g) = (r.h, r.cell.gates() * r.h);
        let x = Ptr::tensor(node.inputs[0]);
        let (w_ih, w_hh) = (Ptr::tensor(node.inputs[1]), Ptr::tensor(node.inputs[2]));
        let bias = |i: usize| r.bias.then(|| Ptr::tensor(node.inputs[i]));
        let (b_ih, b_hh) = (bias(3), bias(4));
        let proj = self.scratch(rb * r.t * g);
        let hidden_proj = self.scratch(rb * g);
        let state = self.scratch(rb * h);
        let cell = (r.cell == Cell::Lstm).then(|| self.scratch(rb * h));
        let (blk, t, row) = (self.var(), self.var(), self.var());

        let with_bias = |b: Option<Ptr>| match b {
            Some(b) => vec![EInst::Acc, EInst::Col(b), EInst::Bin(BinOp::Add, 0, 1)],
            None => Vec::new(),
        };
        let mut block = vec![Stmt::Gemm(Gemm {
            m: rb * r.t,
            n: g,
            k: r.f,
            a: x.plus_var(blk, rb * r.t * r.f),
            lda: r.f,
            ta: false,
            b: Right::Matrix { ptr: w_ih, ld: g },
            c: proj.clone(),
            ldc: g,
            epilogue: with_bias(b_ih),
            sparse_a: self.graph.one_hot.contains(&node.inputs[0]),
        })];
        let mut zero = vec![Inst::Const(0.0), Inst::Store(state.clone(), 0)];
        if let Some(c) = &cell {
            zero.push(Inst::Store(c.clone(), 0));
        }
        block.push(Stmt::Map(Map { len: rb * h, insts: zero }));

        // The gates of sequence `row` at step `t`: input part from `proj`, hidden part
        // from `hidden_proj`, one vector of `h` per gate.
        let p = |gate: usize| Inst::Load(proj.plus(gate * h).plus_var(row, r.t * g).plus_var(t, g));
        let q = |gate: usize| Inst::Load(hidden_proj.plus(gate * h).plus_var(row, g));
        let st = state.plus_var(row, h);
        // The cell's arithmetic (`Cell::step`): each value it reads loaded when a stage
        // first needs it, each stage's program inlined.
        let programs = r.cell.step();
        let c = cell.as_ref().map(|c| c.plus_var(row, h));
        let mut insts: Vec<Inst> = Vec::new();
        let mut loaded: Vec<(Term, usize)> = Vec::new();
        let mut values: Vec<usize> = Vec::with_capacity(programs.stages.len());
        let mut load = |insts: &mut Vec<Inst>, t: Term| {
            if let Some(&(_, v)) = loaded.iter().find(|(l, _)| *l == t) {
                return v;
            }
            let inst = match t {
                Term::P(k) => p(k),
                Term::Q(k) => q(k),
                Term::Sum(k) => {
                    insts.push(p(k));
                    insts.push(q(k));
                    Inst::Bin(BinOp::Add, insts.len() - 2, insts.len() - 1)
                }
                Term::H => Inst::Load(st.clone()),
                Term::C => Inst::Load(c.clone().expect("only an LSTM reads a cell state")),
            };
            insts.push(inst);
            loaded.push((t, insts.len() - 1));
            insts.len() - 1
        };
        for stage in &programs.stages {
            let args: Vec<usize> = stage
                .inputs
                .iter()
                .map(|&a| match a {
                    Arg::Stage(i) => values[i],
                    Arg::Term(t) => load(&mut insts, t),
                })
                .collect();
            values.push(inline(&mut insts, &stage.f, &args));
        }
        if let (Some(i), Some(c)) = (programs.cell, c) {
            insts.push(Inst::Store(c, values[i]));
        }
        let new_h = values[programs.hidden];
        use Inst::*;
        insts.push(Store(st, new_h));
        if !r.last {
            insts.push(Store(out.plus_var(blk, rb * r.t * h).plus_var(row, r.t * h).plus_var(t, h), new_h));
        }
        let step = vec![
            Stmt::Gemm(Gemm {
                m: rb,
                n: g,
                k: h,
                a: state.clone(),
                lda: h,
                ta: false,
                b: Right::Matrix { ptr: w_hh, ld: g },
                c: hidden_proj,
                ldc: g,
                epilogue: with_bias(b_hh),
                sparse_a: false,
            }),
            Stmt::Loop { var: row, extent: rb, body: vec![Stmt::Map(Map { len: h, insts })] },
        ];
        block.push(Stmt::Loop { var: t, extent: r.t, body: step });
        if r.last {
            let copy = vec![Load(state), Store(out.plus_var(blk, rb * h), 0)];
            block.push(Stmt::Map(Map { len: rb * h, insts: copy }));
        }
        (
            vec![Stmt::Loop { var: blk, extent: blocks, body: block }],
            self.parallel(blocks, r.n * r.t * g * (r.f + h)),
        )
    }
}
