//! The arithmetic of one step of a recurrent cell, written once as element-wise programs.
//! The fused recurrent kernel inlines them into its time loop and the reference
//! interpreter evaluates them; both read the gates as PyTorch orders them.
//!
//! Every program takes the same inputs, of which it reads what it needs: for each gate
//! `k` its input projection `pₖ` (x·W_ih + b_ih) and hidden projection `qₖ` (h·W_hh +
//! b_hh), interleaved as `p₀, q₀, p₁, q₁, …`; then the previous hidden state `h`; then the
//! cell state `c` (an LSTM's, before the step for [`CellStep::cell`], after it for
//! [`CellStep::hidden`]).

use super::Cell;
use super::elementwise::{Builder, Elementwise, Prim, V};

/// One step's programs.
#[derive(Clone, Debug, PartialEq)]
pub struct CellStep {
    /// The new hidden state.
    pub hidden: Elementwise,
    /// An LSTM's new cell state, which `hidden` then reads as its last input.
    pub cell: Option<Elementwise>,
}

impl CellStep {
    /// Position of the previous hidden state among the programs' inputs.
    pub fn h(cell: Cell) -> usize {
        2 * cell.gates()
    }

    /// Position of the cell state among the programs' inputs.
    pub fn c(cell: Cell) -> usize {
        2 * cell.gates() + 1
    }

    /// Number of inputs every program of `cell` takes.
    pub fn inputs(cell: Cell) -> usize {
        2 * cell.gates() + 2
    }
}

impl Cell {
    /// The element-wise part of one step.
    pub fn step(self) -> CellStep {
        let n = CellStep::inputs(self);
        // σ or tanh of gate k's pre-activation pₖ + qₖ.
        let gate = |b: &mut Builder, x: &[V], k: usize, p: Prim| {
            let pre = b.add(x[2 * k], x[2 * k + 1]);
            b.prim(p, pre)
        };
        match self {
            // h' = tanh(p₀ + q₀)
            Cell::Rnn => {
                CellStep { hidden: Elementwise::new("rnn", n, |b, x| gate(b, x, 0, Prim::Tanh)), cell: None }
            }
            // i, f, g, o = σ, σ, tanh, σ; c' = f·c + i·g; h' = o·tanh(c')
            Cell::Lstm => {
                let c = CellStep::c(self);
                let cell = Elementwise::new("lstm_cell", n, |b, x| {
                    let i = gate(b, x, 0, Prim::Sigmoid);
                    let f = gate(b, x, 1, Prim::Sigmoid);
                    let g = gate(b, x, 2, Prim::Tanh);
                    let kept = b.mul(f, x[c]);
                    let added = b.mul(i, g);
                    b.add(kept, added)
                });
                let hidden = Elementwise::new("lstm", n, |b, x| {
                    let o = gate(b, x, 3, Prim::Sigmoid);
                    let squashed = b.prim(Prim::Tanh, x[c]);
                    b.mul(o, squashed)
                });
                CellStep { hidden, cell: Some(cell) }
            }
            // r, z = σ; n = tanh(p₂ + r·q₂); h' = (1 − z)·n + z·h = n + z·(h − n)
            Cell::Gru => {
                let h = CellStep::h(self);
                let hidden = Elementwise::new("gru", n, |b, x| {
                    let r = gate(b, x, 0, Prim::Sigmoid);
                    let z = gate(b, x, 1, Prim::Sigmoid);
                    let gated = b.mul(r, x[5]);
                    let pre = b.add(x[4], gated);
                    let new = b.prim(Prim::Tanh, pre);
                    let diff = b.sub(x[h], new);
                    let moved = b.mul(z, diff);
                    b.add(new, moved)
                });
                CellStep { hidden, cell: None }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::elementwise::{Derivative, Source};

    fn sigmoid(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    /// Each cell against PyTorch's formulas written out.
    #[test]
    fn cells_follow_pytorch() {
        let pq = [0.3, -0.2, 0.7, 0.1, -0.5, 0.4, 0.2, 0.9];
        let (h, c) = (0.25, -0.6);
        let args = |cell: Cell, c: f64| {
            let mut a: Vec<f64> = pq[..2 * cell.gates()].to_vec();
            a.extend([h, c]);
            a
        };
        let pre = |k: usize| pq[2 * k] + pq[2 * k + 1];
        let rnn = Cell::Rnn.step();
        assert!((rnn.hidden.eval(&args(Cell::Rnn, c)) - pre(0).tanh()).abs() < 1e-15);

        let lstm = Cell::Lstm.step();
        let want_c = sigmoid(pre(1)) * c + sigmoid(pre(0)) * pre(2).tanh();
        let got_c = lstm.cell.as_ref().unwrap().eval(&args(Cell::Lstm, c));
        assert!((got_c - want_c).abs() < 1e-15);
        let got_h = lstm.hidden.eval(&args(Cell::Lstm, got_c));
        assert!((got_h - sigmoid(pre(3)) * want_c.tanh()).abs() < 1e-15);

        let gru = Cell::Gru.step();
        let (r, z) = (sigmoid(pre(0)), sigmoid(pre(1)));
        let n = (pq[4] + r * pq[5]).tanh();
        assert!((gru.hidden.eval(&args(Cell::Gru, c)) - ((1.0 - z) * n + z * h)).abs() < 1e-15);
    }

    /// What training differentiates: each program over the inputs it reads. The gradient
    /// automatic differentiation derives for every one of them (the backward op's program,
    /// fed the sources it asks for) against central differences.
    #[test]
    fn derivatives_of_the_compacted_steps_match_finite_differences() {
        let values = [0.3, -0.2, 0.7, 0.1, -0.5, 0.4, 0.2, 0.9];
        let (h, c, dy, step) = (0.25, -0.6, 0.8, 1e-6);
        for cell in [Cell::Rnn, Cell::Lstm, Cell::Gru] {
            let arg = |i: usize| match i {
                _ if i == CellStep::h(cell) => h,
                _ if i == CellStep::c(cell) => c,
                _ => values[i],
            };
            let programs = cell.step();
            for f in std::iter::once(&programs.hidden).chain(programs.cell.as_ref()) {
                let (g, kept) = f.compact();
                assert!(kept.len() < f.inputs, "{}: every program leaves some input unread", g.name);
                let args: Vec<f64> = kept.iter().map(|&i| arg(i)).collect();
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
