//! Backpropagation through time (`Op::RecurrentBackward`): per block of sequences, a
//! loop over time from the last step whose body is the cell's backward arithmetic and
//! one product (see the parent module's comment).

use super::{Steps, Units, block_rows, own, team};
use crate::ir::kernel::*;
use crate::ir::ops::cell::{Adjoint, Arg, Saved, Term};
use crate::ir::ops::{Elementwise, OpNode, Recurrence};
use crate::passes::schedule::Build;
use crate::passes::schedule::body::inline;

/// The backward kernel's scratch: the gradient reaching the state leaving the current
/// step, an LSTM's cell state's, and, for a cell that reads the previous state other than
/// through `W_hh` (a GRU's interpolation), that part of its gradient.
struct Backward {
    dh: Ptr,
    dc: Option<Ptr>,
    direct: Option<Ptr>,
}

impl Build<'_> {
    /// Backpropagation through time (`Op::RecurrentBackward`), into `out` (`dp`) and, for
    /// a cell that reads projections apart, `node.aux[0]` (`dq`).
    pub(in crate::passes::schedule) fn recurrent_backward(
        &mut self,
        r: &Recurrence,
        node: &OpNode,
        out: Ptr,
    ) -> (Vec<Stmt>, Parallel) {
        let team = team(r, self.threads);
        let rows = block_rows(r, if team { 1 } else { self.threads }, false);
        let h = r.h;
        let step = r.cell.step();
        let reads_h = step.stages.iter().any(|s| s.inputs.contains(&Arg::Term(Term::H)));
        let scratch = Backward {
            dh: self.scratch(rows * h),
            dc: step.cell.map(|_| self.scratch(rows * h)),
            direct: reads_h.then(|| self.scratch(rows * h)),
        };
        if team {
            return self.team_blocks(r, rows, |b, at, rows, units| {
                b.backward_block(r, node, (&out, &scratch), at, rows, Some(units))
            });
        }
        self.sequence_blocks(r, (rows, r.n * r.t * r.cell.gates() * h * h), |b, at, rows| {
            b.backward_block(r, node, (&out, &scratch), at, rows, None)
        })
    }

    /// The backward pass of one block of `rb` sequences, from the last step, for all
    /// hidden units or a team member's (which starts the gradients of all units in its
    /// own scratch, and then reads and writes only its units'). Step 0's has no product:
    /// it would give the gradient of the zero state entering it.
    fn backward_block(
        &mut self,
        r: &Recurrence,
        node: &OpNode,
        (out, s): (&Ptr, &Backward),
        at_block: &dyn Fn(Ptr, usize) -> Ptr,
        rb: usize,
        units: Option<Units>,
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
                let (t, body) = self.backward_step(r, node, (out, s), at_block, (rb, first), units);
                block.push(Stmt::Loop { var: t, extent, body });
            }
        }
        block
    }

    /// The body of a block's loop over steps back from `steps − 1 − first`, and its
    /// variable: the cell's backward arithmetic, then (but for step 0) the product. A team
    /// member computes its units' gradients, and meets the others before the product,
    /// which reads all of them.
    fn backward_step(
        &mut self,
        r: &Recurrence,
        node: &OpNode,
        (out, s): (&Ptr, &Backward),
        at_block: &dyn Fn(Ptr, usize) -> Ptr,
        (rb, first): (usize, usize),
        units: Option<Units>,
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
            states: own(at.at(&states, h), units),
            saved: own(at.at(&saved, list.len() * h), units),
            list: &list,
            h,
        };
        let mut d_hidden = a.push(Inst::Load(own(dh.plus_var(row, h), units)));
        if !r.last {
            let d_out = a.push(Inst::Load(own(at.at(&dy, h), units)));
            d_hidden = a.add(d_hidden, d_out);
        }
        let d_cell = dc.as_ref().map(|dc| a.push(Inst::Load(own(dc.plus_var(row, h), units))));
        let terms = programs.backward(&mut a, d_hidden, d_cell);
        let grad = |a: &mut Step<'_>, wanted: &dyn Fn(Term) -> bool| {
            terms.iter().filter(|(t, _)| wanted(*t)).map(|&(_, v)| v).reduce(|x, y| a.add(x, y))
        };
        let zero = a.push(Inst::Const(0.0));
        let (dp_row, dq_row) = (at.at(&dp, g), dq.as_ref().map(|dq| at.at(dq, g)));
        for k in 0..r.cell.gates() {
            let p = grad(&mut a, &|t| t == Term::Sum(k) || t == Term::P(k)).unwrap_or(zero);
            // Past the caches (see the module's comment).
            a.push(Inst::Stream(own(dp_row.plus(k * h), units), p));
            if let Some(dq_row) = &dq_row {
                let q = grad(&mut a, &|t| t == Term::Sum(k) || t == Term::Q(k)).unwrap_or(zero);
                a.push(Inst::Store(own(dq_row.plus(k * h), units), q));
            }
        }
        // The state entering step 0 has no gradient to pass on.
        if let (Some(dc), false) = (dc, last_step) {
            let d = grad(&mut a, &|t| t == Term::C).unwrap_or(zero);
            a.push(Inst::Store(own(dc.plus_var(row, h), units), d));
        }
        // A cell that reads the previous state other than through `W_hh` (a GRU's
        // interpolation): that part is kept for the product's epilogue to add.
        let direct = s.direct.as_ref().filter(|_| !last_step);
        let epilogue = match direct.and_then(|direct| Some((direct, grad(&mut a, &|t| t == Term::H)?))) {
            Some((direct, d)) => {
                a.push(Inst::Store(own(direct.plus_var(row, h), units), d));
                vec![EInst::Acc, EInst::Elem(own(direct.clone(), units), h), EInst::Bin(BinOp::Add, 0, 1)]
            }
            None => Vec::new(),
        };
        let width = units.map_or(h, |u| u.width);
        let mut step = vec![Stmt::Loop {
            var: row,
            extent: rb,
            body: vec![Stmt::Map(Map { len: width, insts: a.insts })],
        }];
        // dh ← dq_t · W_hhᵀ (+ the direct part): the gradient of the state entering step t.
        if !last_step {
            if units.is_some() {
                step.push(Stmt::Barrier);
            }
            step.push(Stmt::Gemm(Gemm {
                m: rb,
                n: width,
                k: g,
                a: at.rows(dq.as_ref().unwrap_or(&dp), g),
                lda: r.t * g,
                ta: false,
                b: Right::Matrix { ptr: own(tensor(3), units), ld: h },
                c: own(dh.clone(), units),
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
