//! Recurrent layers as one kernel each way, the time loop in generated code.
//!
//! Forward: per block of sequences, the input projection for all steps as one matrix
//! product, then a loop over time whose body is the recurrent product and the gate
//! arithmetic. A one-hot input's projection is a gather with nothing to batch, so it is
//! the step's own, in the loop: the step's rows stay in L1 rather than all steps' going
//! out to L3 and back (8 MiB for the LSTM variant of B4 at batch 32; its forward kernel
//! 5.4 -> 5.1 ms). For training it also stores the state entering each step and the values
//! the step's backward pass reads ([`crate::ir::ops::cell::CellStep::saved`]), as streams
//! ([`Inst::Stream`]): nothing reads them before the backward pass, by when they would
//! have left the caches anyway (the LSTM variant's forward kernel 5.07-5.25 -> 4.98-5.06
//! ms on 1 thread, alternating runs).
//!
//! Backward: per block of sequences, a loop over time from the last step whose body is
//! the cell's backward arithmetic (derived from its stages) and one product, the
//! gradient reaching the previous state through `W_hh`. It writes only the gradients of
//! every step's projections; the autodiff rule turns those into the weights' and the
//! input's gradients with products over all steps at once. Those of the input
//! projections are streams too: the step's product reads them once, and the weight
//! gradients' kernels only after all steps, 8 MiB later for the LSTM variant of B4,
//! whose backward kernel they spare reading each line in before writing it (on a Zen 4
//! class machine, its step 37.5 -> 37.4 ms on one thread and 20.7 -> 20.3 ms on two,
//! medians of five alternating runs).
//!
//! Sequences are independent, so blocks of them run on different threads; each block's
//! recurrent product has as many rows as the block has sequences, and reads `W_hh` once a
//! step for all of them. A sequence's arithmetic does not depend on its block, so the
//! results do not depend on the thread count.
//!
//! In training, a batch too small to give each thread blocks of its own ([`team`]) is
//! shared by hidden units instead: each thread runs all sequences for its units, each
//! gate's columns of them a product of their own, and the threads meet at a barrier once
//! a step, where the next step's product needs every unit's state (forward) or every
//! unit's gradient (backward). An element's arithmetic is the same whichever thread
//! computes it, so the results still do not depend on the thread count. The LSTM variant
//! of B4 on two threads, medians of five alternating runs: a step of batch 1 2.78 -> 1.57
//! ms, of batch 4 3.89 -> 2.82 ms.

mod backward;

use super::Build;
use super::body::inline;
use crate::ir::kernel::*;
use crate::ir::ops::cell::{Arg, Saved, Term};
use crate::ir::ops::{Cell, OpNode, Recurrence};

/// At most this many sequences in a block.
const MAX_BLOCK_ROWS: usize = 64;

/// A block's input projections for all its steps are scratch of `rows · t · gates · h`
/// floats per thread (as large as the projections any framework computes before the
/// loop): long sequences take fewer sequences per block to stay within this.
const PROJECTION_FLOATS: usize = 1 << 22;

/// Sequences per block: the batch shared evenly by the threads, in blocks of at most
/// [`MAX_BLOCK_ROWS`] and, where the block holds all its steps' input projections
/// (`projections`: a forward kernel over a dense input), [`PROJECTION_FLOATS`] (the last
/// block takes what is left after equal ones), so that each thread's recurrent products
/// have as many rows as they can. A one-hot input's projections are per step, and the
/// backward kernel holds none, so long sequences of those keep their full blocks.
fn block_rows(r: &Recurrence, threads: usize, projections: bool) -> usize {
    let step = (r.t * r.cell.gates() * r.h).max(1);
    let most = if projections { PROJECTION_FLOATS / step } else { MAX_BLOCK_ROWS }.clamp(1, MAX_BLOCK_ROWS);
    let blocks = r.n.div_ceil(most).next_multiple_of(threads.max(1)).clamp(1, r.n.max(1));
    (r.n / blocks).max(1)
}

/// Whether the threads share a training layer's hidden units, each running every
/// sequence's steps for its own units' gate columns and meeting the others at a barrier
/// once a step, rather than sharing its sequences. A batch too small to give each thread
/// a block of its own would otherwise leave threads idle; and each thread then reads its
/// share of `W_hh` only, which stays in its core's cache. Each member's units are whole
/// vectors (16 floats), and the state it reads at a step is the training state record
/// (`aux[0]` of the forward op), which inference does not keep.
fn team(r: &Recurrence, threads: usize) -> bool {
    r.train && threads > 1 && r.h.is_multiple_of(16 * threads) && r.n < TEAM_BELOW * threads
}

/// The sequences per thread below which a training layer's threads share its units
/// rather than its sequences ([`team`]).
const TEAM_BELOW: usize = 8;

/// A team member's share of the hidden units: `width` from `member · width`.
#[derive(Clone, Copy)]
struct Units {
    member: Var,
    width: usize,
}

/// Moves `p` from a hidden unit's or gate column's place to the first of the member's
/// (nothing outside a team).
fn own(p: Ptr, units: Option<Units>) -> Ptr {
    match units {
        Some(u) => p.plus_var(u.member, u.width),
        None => p,
    }
}

/// The statements computing a product's gate columns: all of them at once, or, for a
/// team member, each gate's columns of its units (`cols` moves a pointer at a gate
/// column 0 to the gate's first; `n` is how many).
fn gate_columns(
    r: &Recurrence,
    units: Option<Units>,
    mut product: impl FnMut(&dyn Fn(Ptr) -> Ptr, usize) -> Stmt,
) -> Vec<Stmt> {
    match units {
        None => vec![product(&|p| p, r.cell.gates() * r.h)],
        Some(u) => (0..r.cell.gates()).map(|k| product(&|p| own(p.plus(k * r.h), units), u.width)).collect(),
    }
}

/// An epilogue adding a per-column bias, if there is one.
fn with_bias(b: Option<Ptr>) -> Vec<EInst> {
    match b {
        Some(b) => vec![EInst::Acc, EInst::Col(b), EInst::Bin(BinOp::Add, 0, 1)],
        None => Vec::new(),
    }
}

/// The addresses of a block's values at one step, for a tensor of `[rows, steps, width]`
/// already moved to the block: step `first + t`, or with `back` step `steps − 1 − first − t`.
#[derive(Clone, Copy)]
struct Steps {
    row: Var,
    t: Var,
    first: usize,
    steps: usize,
    back: bool,
}

impl Steps {
    /// The step's values for the whole block, sequences `steps · width` apart.
    fn rows(&self, base: &Ptr, width: usize) -> Ptr {
        if self.back {
            base.plus((self.steps - 1 - self.first) * width).minus_var(self.t, width)
        } else {
            base.plus(self.first * width).plus_var(self.t, width)
        }
    }

    /// Sequence `row`'s values at the step.
    fn at(&self, base: &Ptr, width: usize) -> Ptr {
        self.rows(base, width).plus_var(self.row, self.steps * width)
    }
}

/// The forward kernel's scratch, sized for its largest block: the input projections of
/// every step, the hidden projections of one, the hidden state and an LSTM's cell state.
struct Forward {
    proj: Ptr,
    hidden_proj: Ptr,
    state: Ptr,
    cell: Option<Ptr>,
}

impl Build<'_> {
    /// The blocks of `width` sequences (see [`block_rows`]) of a recurrent kernel over
    /// `r.n`, each written by `block` given how to move a tensor's pointer to it and its
    /// number of sequences.
    fn sequence_blocks(
        &mut self,
        r: &Recurrence,
        (width, work): (usize, usize),
        mut block: impl FnMut(&mut Self, &dyn Fn(Ptr, usize) -> Ptr, usize) -> Vec<Stmt>,
    ) -> (Vec<Stmt>, Parallel) {
        let blocks = r.n / width;
        let body = self.blocks(r.n, blocks, width, |b, at, rows| block(b, at, rows));
        (body, self.parallel(blocks, work))
    }

    /// A team kernel over `r.n` sequences in blocks of `width` (see [`team`]): each
    /// member runs every block, written by `block` given how to move a tensor's pointer
    /// to it, its number of sequences and the member's units.
    fn team_blocks(
        &mut self,
        r: &Recurrence,
        width: usize,
        mut block: impl FnMut(&mut Self, &dyn Fn(Ptr, usize) -> Ptr, usize, Units) -> Vec<Stmt>,
    ) -> (Vec<Stmt>, Parallel) {
        let (units, members) = (Units { member: self.var(), width: r.h / self.threads }, self.threads);
        let body = self.blocks(r.n, r.n / width, width, |b, at, rows| block(b, at, rows, units));
        (vec![Stmt::Loop { var: units.member, extent: members, body }], Parallel::Team { members })
    }

    pub(super) fn recurrent(&mut self, r: &Recurrence, node: &OpNode, out: Ptr) -> (Vec<Stmt>, Parallel) {
        let one_hot = self.graph.one_hot.contains(&node.inputs[0]);
        let team = team(r, self.threads);
        let rows = block_rows(r, if team { 1 } else { self.threads }, !one_hot);
        let (h, g) = (r.h, r.cell.gates() * r.h);
        let scratch = Forward {
            proj: self.scratch(rows * if one_hot { 1 } else { r.t } * g),
            hidden_proj: self.scratch(rows * g),
            state: self.scratch(rows * h),
            cell: (r.cell == Cell::Lstm).then(|| self.scratch(rows * h)),
        };
        if team {
            return self.team_blocks(r, rows, |b, at, rows, units| {
                b.forward_block(r, node, (&out, &scratch), at, rows, Some(units))
            });
        }
        self.sequence_blocks(r, (rows, r.n * r.t * g * (r.f + h)), |b, at, rows| {
            b.forward_block(r, node, (&out, &scratch), at, rows, None)
        })
    }

    /// The forward pass of one block of `rb` sequences, for all hidden units or a team
    /// member's. The state entering step 0 is zero, so that step reads the hidden
    /// projection's bias instead of a product with `W_hh` (one step's product in `r.t`:
    /// 1/64 of the LSTM variant's).
    fn forward_block(
        &mut self,
        r: &Recurrence,
        node: &OpNode,
        (out, s): (&Ptr, &Forward),
        at_block: &dyn Fn(Ptr, usize) -> Ptr,
        rb: usize,
        units: Option<Units>,
    ) -> Vec<Stmt> {
        let (h, g) = (r.h, r.cell.gates() * r.h);
        let x = at_block(Ptr::tensor(node.inputs[0]), r.t * r.f);
        let out = at_block(out.clone(), if r.last { h } else { r.t * h });
        let one_hot = self.graph.one_hot.contains(&node.inputs[0]);
        let mut block = Vec::new();
        // The input projections of all steps before the loop; a one-hot input's (a
        // gather, no arithmetic to batch) are each step's own, within it.
        if !one_hot {
            let bias = r.bias.then(|| Ptr::tensor(node.inputs[3]));
            block.extend(gate_columns(r, units, |cols, n| {
                Stmt::Gemm(Gemm {
                    m: rb * r.t,
                    n,
                    k: r.f,
                    a: x.clone(),
                    lda: r.f,
                    ta: false,
                    b: Right::Matrix { ptr: cols(Ptr::tensor(node.inputs[1])), ld: g },
                    c: cols(s.proj.clone()),
                    ldc: g,
                    epilogue: with_bias(bias.clone().map(cols)),
                    sparse_a: false,
                    b_sums: Vec::new(),
                })
            }));
        }
        match units {
            // A team's state is the record of the states entering each step, which its
            // members read whole: each zeroes its units of step 0's.
            Some(u) => {
                let row = self.var();
                let states = at_block(Ptr::tensor(node.aux[0]), r.t * h).plus_var(row, r.t * h);
                let mut zero = vec![Inst::Const(0.0), Inst::Store(own(states, units), 0)];
                if let Some(c) = &s.cell {
                    zero.push(Inst::Store(own(c.plus_var(row, h), units), 0));
                }
                let body = vec![Stmt::Map(Map { len: u.width, insts: zero })];
                block.push(Stmt::Loop { var: row, extent: rb, body });
            }
            None => {
                let mut zero = vec![Inst::Const(0.0), Inst::Store(s.state.clone(), 0)];
                if let Some(c) = &s.cell {
                    zero.push(Inst::Store(c.clone(), 0));
                }
                block.push(Stmt::Map(Map { len: rb * h, insts: zero }));
            }
        }
        // Step 0 alone (its entering state is zero); in a team, the last step alone too
        // (it writes no entering state for a next one).
        let last_alone = units.is_some() && r.t > 1;
        let middle = r.t.saturating_sub(1 + usize::from(last_alone));
        for (first, extent) in
            [(0, r.t.min(1)), (1, middle), (r.t.saturating_sub(1), usize::from(last_alone))]
        {
            if extent > 0 {
                let (t, body) = self.forward_step(r, node, (s, &x, &out), at_block, (rb, first), units);
                block.push(Stmt::Loop { var: t, extent, body });
            }
        }
        if r.last && units.is_none() {
            let insts = vec![Inst::Load(s.state.clone()), Inst::Store(out, 0)];
            block.push(Stmt::Map(Map { len: rb * h, insts }));
        }
        block
    }

    /// The body of a block's loop over steps from `first` (0: step 0 alone, whose
    /// entering state is zero), and its variable. A team member computes its units'
    /// gates, and meets the others at the end of the step, after which the next step's
    /// product reads the state they all wrote.
    fn forward_step(
        &mut self,
        r: &Recurrence,
        node: &OpNode,
        (s, x, out): (&Forward, &Ptr, &Ptr),
        at_block: &dyn Fn(Ptr, usize) -> Ptr,
        (rb, first): (usize, usize),
        units: Option<Units>,
    ) -> (Var, Vec<Stmt>) {
        let (h, g) = (r.h, r.cell.gates() * r.h);
        let w_hh = Ptr::tensor(node.inputs[2]);
        let bias = |i: usize| r.bias.then(|| Ptr::tensor(node.inputs[i]));
        let b_hh = bias(4);
        let (t, row) = (self.var(), self.var());
        let at = Steps { row, t, first, steps: r.t, back: false };
        let (proj, hidden_proj, state) = (&s.proj, &s.hidden_proj, &s.state);
        let one_hot = self.graph.one_hot.contains(&node.inputs[0]);
        // The record of the states entering each step, which training keeps.
        let states = || at_block(Ptr::tensor(node.aux[0]), r.t * h);
        let mut step = Vec::new();
        if one_hot {
            step.extend(gate_columns(r, units, |cols, n| {
                Stmt::Gemm(Gemm {
                    m: rb,
                    n,
                    k: r.f,
                    a: at.rows(x, r.f),
                    lda: r.t * r.f,
                    ta: false,
                    b: Right::Matrix { ptr: cols(Ptr::tensor(node.inputs[1])), ld: g },
                    c: cols(proj.clone()),
                    ldc: g,
                    epilogue: with_bias(bias(3).map(cols)),
                    sparse_a: true,
                    b_sums: Vec::new(),
                })
            }));
        }

        // The gates of sequence `row` at step `t`: input part from `proj`, hidden part
        // from `hidden_proj` (at step 0 the bias, or nothing), one vector of `h` per gate.
        let p = |gate: usize| match one_hot {
            true => Inst::Load(own(proj.plus(gate * h).plus_var(row, g), units)),
            false => Inst::Load(own(at.at(&proj.plus(gate * h), g), units)),
        };
        let q = |gate: usize| match (first, &b_hh) {
            (0, Some(b)) => Inst::Load(own(b.plus(gate * h), units)),
            (0, None) => Inst::Const(0.0),
            _ => Inst::Load(own(hidden_proj.plus(gate * h).plus_var(row, g), units)),
        };
        let st = match units {
            Some(_) => own(at.at(&states(), h), units),
            None => state.plus_var(row, h),
        };
        // The cell's arithmetic (`Cell::step`): each value it reads loaded when a stage
        // first needs it, each stage's program inlined.
        let programs = r.cell.step();
        let c = s.cell.as_ref().map(|c| own(c.plus_var(row, h), units));
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
        // Outside a team the state lives in scratch, and its record is written here;
        // a team's state is that record.
        if r.train && units.is_none() {
            let old = load(&mut insts, Term::H);
            insts.push(Inst::Stream(at.at(&states(), h), old));
        }
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
        if r.train {
            let saved = programs.saved();
            let width = saved.len() * h;
            let record = at.at(&at_block(Ptr::tensor(node.aux[1]), r.t * width), width);
            for (i, s) in saved.iter().enumerate() {
                let v = match *s {
                    Saved::Stage(k) => values[k],
                    Saved::Term(t) => load(&mut insts, t),
                };
                insts.push(Inst::Stream(own(record.plus(i * h), units), v));
            }
        }
        if let (Some(i), Some(c)) = (programs.cell, c) {
            insts.push(Inst::Store(c, values[i]));
        }
        let new_h = values[programs.hidden];
        let last_step = first + 1 == r.t;
        match units {
            None => insts.push(Inst::Store(st, new_h)),
            Some(_) if last_step => {
                if r.last {
                    insts.push(Inst::Store(own(out.plus_var(row, h), units), new_h));
                }
            }
            // The state entering the next step.
            Some(_) => insts.push(Inst::Store(own(at.at(&states().plus(h), h), units), new_h)),
        }
        if !r.last {
            insts.push(Inst::Store(own(at.at(out, h), units), new_h));
        }
        if first > 0 {
            let a = match units {
                Some(_) => (at.rows(&states(), h), r.t * h),
                None => (state.clone(), h),
            };
            step.extend(gate_columns(r, units, |cols, n| {
                Stmt::Gemm(Gemm {
                    m: rb,
                    n,
                    k: h,
                    a: a.0.clone(),
                    lda: a.1,
                    ta: false,
                    b: Right::Matrix { ptr: cols(w_hh.clone()), ld: g },
                    c: cols(hidden_proj.clone()),
                    ldc: g,
                    epilogue: with_bias(b_hh.clone().map(cols)),
                    sparse_a: false,
                    b_sums: Vec::new(),
                })
            }));
        }
        let width = units.map_or(h, |u| u.width);
        step.push(Stmt::Loop { var: row, extent: rb, body: vec![Stmt::Map(Map { len: width, insts })] });
        if units.is_some() {
            step.push(Stmt::Barrier);
        }
        (t, step)
    }
}
