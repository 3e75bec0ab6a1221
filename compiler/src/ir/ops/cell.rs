//! The arithmetic of one step of a recurrent cell, written once as a few element-wise
//! programs ("stages"). The fused recurrent kernel inlines the stages into its time loop,
//! the reference interpreter evaluates them, and the training unroll makes one op of each,
//! so that backpropagation through time keeps each gate's activation and differentiates
//! it from that (σ′ = y(1 − y), tanh′ = 1 − y²) rather than recomputing it. Gates are in
//! PyTorch's order.

use super::Cell;
use super::elementwise::{Builder, Elementwise, Prim, V};

/// A value a step reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Term {
    /// Gate `k`'s input projection pₖ = x·W_ih + b_ih (its slice `k·h..(k + 1)·h`).
    P(usize),
    /// Gate `k`'s hidden projection qₖ = h·W_hh + b_hh.
    Q(usize),
    /// pₖ + qₖ, which most gates read only summed.
    Sum(usize),
    /// The previous hidden state.
    H,
    /// An LSTM's previous cell state.
    C,
}

/// An input of a stage: a value the step reads, or an earlier stage's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    Term(Term),
    Stage(usize),
}

/// One element-wise program of a step and what its inputs are.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub f: Elementwise,
    pub inputs: Vec<Arg>,
}

/// One step: its stages in order, and which make the new states.
#[derive(Clone, Debug, PartialEq)]
pub struct CellStep {
    pub stages: Vec<Stage>,
    /// The stage whose value is the new hidden state.
    pub hidden: usize,
    /// The stage whose value is an LSTM's new cell state.
    pub cell: Option<usize>,
}

impl CellStep {
    /// Appends a stage; returns its index.
    fn stage(&mut self, name: &str, inputs: &[Arg], f: impl FnOnce(&mut Builder, &[V]) -> V) -> usize {
        self.stages.push(Stage { f: Elementwise::new(name, inputs.len(), f), inputs: inputs.to_vec() });
        self.stages.len() - 1
    }

    /// A gate's activation `p` of its summed projections.
    fn gate(&mut self, name: &str, k: usize, p: Prim) -> usize {
        self.stage(name, &[Arg::Term(Term::Sum(k))], |b, x| b.prim(p, x[0]))
    }

    /// Evaluates the step for one element, `input(t)` giving the value of each term that
    /// is not a stage; returns every stage's value.
    pub fn eval<T: super::reference::Real>(&self, mut input: impl FnMut(Term) -> T) -> Vec<T> {
        let mut values: Vec<T> = Vec::with_capacity(self.stages.len());
        for s in &self.stages {
            let args: Vec<T> = s
                .inputs
                .iter()
                .map(|&a| match a {
                    Arg::Stage(i) => values[i],
                    Arg::Term(t) => input(t),
                })
                .collect();
            values.push(s.f.eval(&args));
        }
        values
    }
}

impl Cell {
    /// The stages of one step.
    pub fn step(self) -> CellStep {
        let mut s = CellStep { stages: Vec::new(), hidden: 0, cell: None };
        match self {
            // h' = tanh(p₀ + q₀)
            Cell::Rnn => {
                s.hidden = s.gate("rnn", 0, Prim::Tanh);
            }
            // i, f, g, o = σ, σ, tanh, σ; c' = f·c + i·g; h' = o·tanh(c')
            Cell::Lstm => {
                let i = s.gate("lstm_input_gate", 0, Prim::Sigmoid);
                let f = s.gate("lstm_forget_gate", 1, Prim::Sigmoid);
                let g = s.gate("lstm_cell_gate", 2, Prim::Tanh);
                let o = s.gate("lstm_output_gate", 3, Prim::Sigmoid);
                let (i, f, g, o) = (Arg::Stage(i), Arg::Stage(f), Arg::Stage(g), Arg::Stage(o));
                let c = s.stage("lstm_cell", &[f, Arg::Term(Term::C), i, g], |b, x| {
                    let kept = b.mul(x[0], x[1]);
                    let added = b.mul(x[2], x[3]);
                    b.add(kept, added)
                });
                let squashed = s.stage("lstm_tanh", &[Arg::Stage(c)], |b, x| b.prim(Prim::Tanh, x[0]));
                s.hidden = s.stage("lstm", &[o, Arg::Stage(squashed)], |b, x| b.mul(x[0], x[1]));
                s.cell = Some(c);
            }
            // r, z = σ; n = tanh(p₂ + r·q₂); h' = (1 − z)·n + z·h = n + z·(h − n)
            Cell::Gru => {
                let r = s.gate("gru_reset_gate", 0, Prim::Sigmoid);
                let z = s.gate("gru_update_gate", 1, Prim::Sigmoid);
                let (r, z) = (Arg::Stage(r), Arg::Stage(z));
                let n =
                    s.stage("gru_candidate", &[Arg::Term(Term::P(2)), r, Arg::Term(Term::Q(2))], |b, x| {
                        let gated = b.mul(x[1], x[2]);
                        let pre = b.add(x[0], gated);
                        b.prim(Prim::Tanh, pre)
                    });
                s.hidden = s.stage("gru", &[Arg::Stage(n), z, Arg::Term(Term::H)], |b, x| {
                    let diff = b.sub(x[2], x[0]);
                    let moved = b.mul(x[1], diff);
                    b.add(x[0], moved)
                });
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::elementwise::{Derivative, Source};

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    const PQ: [f64; 8] = [0.3, -0.2, 0.7, 0.1, -0.5, 0.4, 0.2, 0.9];
    const H: f64 = 0.25;
    const C: f64 = -0.6;

    fn term(t: Term) -> f64 {
        match t {
            Term::P(k) => PQ[2 * k],
            Term::Q(k) => PQ[2 * k + 1],
            Term::Sum(k) => PQ[2 * k] + PQ[2 * k + 1],
            Term::H => H,
            Term::C => C,
        }
    }

    /// Each cell against PyTorch's formulas written out.
    #[test]
    fn cells_follow_pytorch() {
        let pre = |k: usize| PQ[2 * k] + PQ[2 * k + 1];
        let rnn = Cell::Rnn.step();
        assert!((rnn.eval(term)[rnn.hidden] - pre(0).tanh()).abs() < 1e-15);

        let lstm = Cell::Lstm.step();
        let v = lstm.eval(term);
        let want_c = sigmoid(pre(1)) * C + sigmoid(pre(0)) * pre(2).tanh();
        assert!((v[lstm.cell.unwrap()] - want_c).abs() < 1e-15);
        assert!((v[lstm.hidden] - sigmoid(pre(3)) * want_c.tanh()).abs() < 1e-15);

        let gru = Cell::Gru.step();
        let (r, z) = (sigmoid(pre(0)), sigmoid(pre(1)));
        let n = (PQ[4] + r * PQ[5]).tanh();
        assert!((gru.eval(term)[gru.hidden] - ((1.0 - z) * n + z * H)).abs() < 1e-15);
    }

    /// Every stage reads each of its inputs and only earlier stages, and its derived
    /// gradients (the backward ops training runs) agree with central differences.
    #[test]
    fn stages_are_well_formed_and_differentiate() {
        let (dy, step) = (0.8, 1e-6);
        for cell in [Cell::Rnn, Cell::Lstm, Cell::Gru] {
            let s = cell.step();
            let values = s.eval(term);
            for (i, stage) in s.stages.iter().enumerate() {
                let g = &stage.f;
                assert!(g.check().is_ok() && (0..g.inputs).all(|j| g.reads(j)), "{}", g.name);
                let args: Vec<f64> = stage
                    .inputs
                    .iter()
                    .map(|&a| match a {
                        Arg::Stage(j) => {
                            assert!(j < i, "{} reads a later stage", g.name);
                            values[j]
                        }
                        Arg::Term(t) => term(t),
                    })
                    .collect();
                for wrt in 0..g.inputs {
                    let at = |d: f64| {
                        let mut a = args.clone();
                        a[wrt] += d;
                        g.eval(&a)
                    };
                    let want = dy * (at(step) - at(-step)) / (2.0 * step);
                    let got = match g.derivative(wrt) {
                        Derivative::Zero => 0.0,
                        Derivative::Same => dy,
                        Derivative::Program(d, sources) => {
                            let mut a = vec![dy];
                            a.extend(sources.iter().map(|s| match *s {
                                Source::Output => g.eval(&args),
                                Source::Input(j) => args[j],
                            }));
                            d.eval(&a)
                        }
                    };
                    assert!((got - want).abs() < 1e-8, "{}: input {wrt}: {got} against {want}", g.name);
                }
            }
        }
    }
}
