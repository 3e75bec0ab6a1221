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

use super::Build;
use super::body::inline;
use crate::ir::kernel::*;
use crate::ir::ops::cell::{Adjoint, Arg, Saved, Term};
use crate::ir::ops::{Cell, Elementwise, OpNode, Recurrence};

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

/// The backward kernel's scratch: the gradient reaching the state leaving the current
/// step, an LSTM's cell state's, and, for a cell that reads the previous state other than
/// through `W_hh` (a GRU's interpolation), that part of its gradient.
struct Backward {
    dh: Ptr,
    dc: Option<Ptr>,
    direct: Option<Ptr>,
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

    pub(super) fn recurrent(&mut self, r: &Recurrence, node: &OpNode, out: Ptr) -> (Vec<Stmt>, Parallel) {
        let one_hot = self.graph.one_hot.contains(&node.inputs[0]);
        let rows = block_rows(r, self.threads, !one_hot);
        let (h, g) = (r.h, r.cell.gates() * r.h);
        let scratch = Forward {
            proj: self.scratch(rows * if one_hot { 1 } else { r.t } * g),
            hidden_proj: self.scratch(rows * g),
            state: self.scratch(rows * h),
            cell: (r.cell == Cell::Lstm).then(|| self.scratch(rows * h)),
        };
        self.sequence_blocks(r, (rows, r.n * r.t * g * (r.f + h)), |b, at, rows| {
            b.forward_block(r, node, &out, &scratch, at, rows)
        })
    }

    /// The forward pass of one block of `rb` sequences. The state entering step 0 is
    /// zero, so that step reads the hidden projection's bias instead of a product with
    /// `W_hh` (one step's product in `r.t`: 1/64 of the LSTM variant's).
    fn forward_block(
        &mut self,
        r: &Recurrence,
        node: &OpNode,
        out: &Ptr,
        s: &Forward,
        at_block: &dyn Fn(Ptr, usize) -> Ptr,
        rb: usize,
    ) -> Vec<Stmt> {
        let (h, g) = (r.h, r.cell.gates() * r.h);
        let x = at_block(Ptr::tensor(node.inputs[0]), r.t * r.f);
        let out = at_block(out.clone(), if r.last { h } else { r.t * h });
        let one_hot = self.graph.one_hot.contains(&node.inputs[0]);
        let mut block = Vec::new();
        // The input projections of all steps before the loop; a one-hot input's (a
        // gather, no arithmetic to batch) are each step's own, within it.
        if !one_hot {
            block.push(Stmt::Gemm(Gemm {
                m: rb * r.t,
                n: g,
                k: r.f,
                a: x.clone(),
                lda: r.f,
                ta: false,
                b: Right::Matrix { ptr: Ptr::tensor(node.inputs[1]), ld: g },
                c: s.proj.clone(),
                ldc: g,
                epilogue: with_bias(r.bias.then(|| Ptr::tensor(node.inputs[3]))),
                sparse_a: false,
                b_sums: Vec::new(),
            }));
        }
        let mut zero = vec![Inst::Const(0.0), Inst::Store(s.state.clone(), 0)];
        if let Some(c) = &s.cell {
            zero.push(Inst::Store(c.clone(), 0));
        }
        block.push(Stmt::Map(Map { len: rb * h, insts: zero }));
        for (first, extent) in [(0, r.t.min(1)), (1, r.t.saturating_sub(1))] {
            if extent > 0 {
                let (t, body) = self.forward_step(r, node, (s, &x, &out), at_block, rb, first);
                block.push(Stmt::Loop { var: t, extent, body });
            }
        }
        if r.last {
            let insts = vec![Inst::Load(s.state.clone()), Inst::Store(out, 0)];
            block.push(Stmt::Map(Map { len: rb * h, insts }));
        }
        block
    }

    /// The body of a block's loop over steps from `first` (0: step 0 alone, whose
    /// entering state is zero), and its variable.
    fn forward_step(
        &mut self,
        r: &Recurrence,
        node: &OpNode,
        (s, x, out): (&Forward, &Ptr, &Ptr),
        at_block: &dyn Fn(Ptr, usize) -> Ptr,
        rb: usize,
        first: usize,
    ) -> (Var, Vec<Stmt>) {
        let (h, g) = (r.h, r.cell.gates() * r.h);
        let w_hh = Ptr::tensor(node.inputs[2]);
        let bias = |i: usize| r.bias.then(|| Ptr::tensor(node.inputs[i]));
        let b_hh = bias(4);
        let (t, row) = (self.var(), self.var());
        let at = Steps { row, t, first, steps: r.t, back: false };
        let (proj, hidden_proj, state) = (&s.proj, &s.hidden_proj, &s.state);
        let one_hot = self.graph.one_hot.contains(&node.inputs[0]);
        let mut step = Vec::new();
        if one_hot {
            step.push(Stmt::Gemm(Gemm {
                m: rb,
                n: g,
                k: r.f,
                a: at.rows(x, r.f),
                lda: r.t * r.f,
                ta: false,
                b: Right::Matrix { ptr: Ptr::tensor(node.inputs[1]), ld: g },
                c: proj.clone(),
                ldc: g,
                epilogue: with_bias(bias(3)),
                sparse_a: true,
                b_sums: Vec::new(),
            }));
        }

        // The gates of sequence `row` at step `t`: input part from `proj`, hidden part
        // from `hidden_proj` (at step 0 the bias, or nothing), one vector of `h` per gate.
        let p = |gate: usize| match one_hot {
            true => Inst::Load(proj.plus(gate * h).plus_var(row, g)),
            false => Inst::Load(at.at(&proj.plus(gate * h), g)),
        };
        let q = |gate: usize| match (first, &b_hh) {
            (0, Some(b)) => Inst::Load(b.plus(gate * h)),
            (0, None) => Inst::Const(0.0),
            _ => Inst::Load(hidden_proj.plus(gate * h).plus_var(row, g)),
        };
        let st = state.plus_var(row, h);
        // The cell's arithmetic (`Cell::step`): each value it reads loaded when a stage
        // first needs it, each stage's program inlined.
        let programs = r.cell.step();
        let c = s.cell.as_ref().map(|c| c.plus_var(row, h));
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
        if r.train {
            let old = load(&mut insts, Term::H);
            let states = at_block(Ptr::tensor(node.aux[0]), r.t * h);
            insts.push(Inst::Stream(at.at(&states, h), old));
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
                insts.push(Inst::Stream(record.plus(i * h), v));
            }
        }
        if let (Some(i), Some(c)) = (programs.cell, c) {
            insts.push(Inst::Store(c, values[i]));
        }
        let new_h = values[programs.hidden];
        insts.push(Inst::Store(st, new_h));
        if !r.last {
            insts.push(Inst::Store(at.at(out, h), new_h));
        }
        if first > 0 {
            step.push(Stmt::Gemm(Gemm {
                m: rb,
                n: g,
                k: h,
                a: state.clone(),
                lda: h,
                ta: false,
                b: Right::Matrix { ptr: w_hh, ld: g },
                c: hidden_proj.clone(),
                ldc: g,
                epilogue: with_bias(b_hh),
                sparse_a: false,
                b_sums: Vec::new(),
            }));
        }
        step.push(Stmt::Loop { var: row, extent: rb, body: vec![Stmt::Map(Map { len: h, insts })] });
        (t, step)
    }

    /// Backpropagation through time (`Op::RecurrentBackward`), into `out` (`dp`) and, for
    /// a cell that reads projections apart, `node.aux[0]` (`dq`).
    pub(super) fn recurrent_backward(
        &mut self,
        r: &Recurrence,
        node: &OpNode,
        out: Ptr,
    ) -> (Vec<Stmt>, Parallel) {
        let rows = block_rows(r, self.threads, false);
        let h = r.h;
        let step = r.cell.step();
        let reads_h = step.stages.iter().any(|s| s.inputs.contains(&Arg::Term(Term::H)));
        let scratch = Backward {
            dh: self.scratch(rows * h),
            dc: step.cell.map(|_| self.scratch(rows * h)),
            direct: reads_h.then(|| self.scratch(rows * h)),
        };
        self.sequence_blocks(r, (rows, r.n * r.t * r.cell.gates() * h * h), |b, at, rows| {
            b.backward_block(r, node, &out, &scratch, at, rows)
        })
    }

    /// The backward pass of one block of `rb` sequences, from the last step. Step 0's
    /// has no product: it would give the gradient of the zero state entering it.
    fn backward_block(
        &mut self,
        r: &Recurrence,
        node: &OpNode,
        out: &Ptr,
        s: &Backward,
        at_block: &dyn Fn(Ptr, usize) -> Ptr,
        rb: usize,
    ) -> Vec<Stmt> {
        let h = r.h;
        let dy = at_block(Ptr::tensor(node.inputs[0]), if r.last { h } else { r.t * h });
        let start = if r.last { Inst::Load(dy) } else { Inst::Const(0.0) };
        let mut first = vec![start, Inst::Store(s.dh.clone(), 0)];
        if let Some(dc) = &s.dc {
            first.extend([Inst::Const(0.0), Inst::Store(dc.clone(), 2)]);
        }
        let mut block = vec![Stmt::Map(Map { len: rb * h, insts: first })];
        for (first, extent) in [(0, r.t.saturating_sub(1)), (r.t.saturating_sub(1), r.t.min(1))] {
            if extent > 0 {
                let (t, body) = self.backward_step(r, node, (out, s), at_block, rb, first);
                block.push(Stmt::Loop { var: t, extent, body });
            }
        }
        block
    }

    /// The body of a block's loop over steps back from `steps − 1 − first`, and its
    /// variable: the cell's backward arithmetic, then (but for step 0) the product.
    fn backward_step(
        &mut self,
        r: &Recurrence,
        node: &OpNode,
        (out, s): (&Ptr, &Backward),
        at_block: &dyn Fn(Ptr, usize) -> Ptr,
        rb: usize,
        first: usize,
    ) -> (Var, Vec<Stmt>) {
        let (h, g) = (r.h, r.cell.gates() * r.h);
        let tensor = |i: usize| Ptr::tensor(node.inputs[i]);
        let dy = at_block(tensor(0), if r.last { h } else { r.t * h });
        let states = at_block(tensor(1), r.t * h);
        let programs = r.cell.step();
        let list = programs.saved();
        let saved = at_block(tensor(2), r.t * list.len() * h);
        let dp = at_block(out.clone(), r.t * g);
        let dq = node.aux.first().map(|t| at_block(Ptr::tensor(*t), r.t * g));
        let (dh, dc) = (&s.dh, &s.dc);
        let (t, row) = (self.var(), self.var());
        let at = Steps { row, t, first, steps: r.t, back: true };
        let last_step = first + 1 == r.t;

        let mut a = Step {
            insts: Vec::new(),
            loaded: Vec::new(),
            states: at.at(&states, h),
            saved: at.at(&saved, list.len() * h),
            list: &list,
            h,
        };
        let mut d_hidden = a.push(Inst::Load(dh.plus_var(row, h)));
        if !r.last {
            let d_out = a.push(Inst::Load(at.at(&dy, h)));
            d_hidden = a.add(d_hidden, d_out);
        }
        let d_cell = dc.as_ref().map(|dc| a.push(Inst::Load(dc.plus_var(row, h))));
        let terms = programs.backward(&mut a, d_hidden, d_cell);
        let grad = |a: &mut Step<'_>, wanted: &dyn Fn(Term) -> bool| {
            terms.iter().filter(|(t, _)| wanted(*t)).map(|&(_, v)| v).reduce(|x, y| a.add(x, y))
        };
        let zero = a.push(Inst::Const(0.0));
        let (dp_row, dq_row) = (at.at(&dp, g), dq.as_ref().map(|dq| at.at(dq, g)));
        for k in 0..r.cell.gates() {
            let p = grad(&mut a, &|t| t == Term::Sum(k) || t == Term::P(k)).unwrap_or(zero);
            // Past the caches (see the module's comment).
            a.push(Inst::Stream(dp_row.plus(k * h), p));
            if let Some(dq_row) = &dq_row {
                let q = grad(&mut a, &|t| t == Term::Sum(k) || t == Term::Q(k)).unwrap_or(zero);
                a.push(Inst::Store(dq_row.plus(k * h), q));
            }
        }
        // The state entering step 0 has no gradient to pass on.
        if let (Some(dc), false) = (dc, last_step) {
            let d = grad(&mut a, &|t| t == Term::C).unwrap_or(zero);
            a.push(Inst::Store(dc.plus_var(row, h), d));
        }
        // A cell that reads the previous state other than through `W_hh` (a GRU's
        // interpolation): that part is kept for the product's epilogue to add.
        let direct = s.direct.as_ref().filter(|_| !last_step);
        let epilogue = match direct.and_then(|direct| Some((direct, grad(&mut a, &|t| t == Term::H)?))) {
            Some((direct, d)) => {
                a.push(Inst::Store(direct.plus_var(row, h), d));
                vec![EInst::Acc, EInst::Elem(direct.clone(), h), EInst::Bin(BinOp::Add, 0, 1)]
            }
            None => Vec::new(),
        };
        let mut step =
            vec![Stmt::Loop { var: row, extent: rb, body: vec![Stmt::Map(Map { len: h, insts: a.insts })] }];
        // dh ← dq_t · W_hhᵀ (+ the direct part): the gradient of the state entering step t.
        if !last_step {
            step.push(Stmt::Gemm(Gemm {
                m: rb,
                n: h,
                k: g,
                a: at.rows(dq.as_ref().unwrap_or(&dp), g),
                lda: r.t * g,
                ta: false,
                b: Right::Matrix { ptr: tensor(3), ld: h },
                c: dh.clone(),
                ldc: h,
                epilogue,
                sparse_a: false,
                b_sums: Vec::new(),
            }));
        }
        (t, step)
    }
}

/// The backward arithmetic of a step as map instructions: each saved value loaded once,
/// when first read.
struct Step<'a> {
    insts: Vec<Inst>,
    loaded: Vec<(Saved, usize)>,
    /// The state entering the step, and the step's saved values (`h` apart).
    states: Ptr,
    saved: Ptr,
    list: &'a [Saved],
    h: usize,
}

impl Step<'_> {
    fn push(&mut self, inst: Inst) -> usize {
        self.insts.push(inst);
        self.insts.len() - 1
    }
}

impl Adjoint for Step<'_> {
    type V = usize;

    fn value(&mut self, s: Saved) -> usize {
        if let Some(&(_, v)) = self.loaded.iter().find(|(l, _)| *l == s) {
            return v;
        }
        let ptr = match s {
            Saved::Term(Term::H) => self.states.clone(),
            s => {
                let i =
                    self.list.iter().position(|l| *l == s).expect("the step saved what its backward reads");
                self.saved.plus(i * self.h)
            }
        };
        let v = self.push(Inst::Load(ptr));
        self.loaded.push((s, v));
        v
    }

    fn apply(&mut self, f: &Elementwise, args: &[usize]) -> usize {
        inline(&mut self.insts, f, args)
    }

    fn add(&mut self, a: usize, b: usize) -> usize {
        self.push(Inst::Bin(BinOp::Add, a, b))
    }
}
