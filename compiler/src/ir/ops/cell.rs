//! The arithmetic of one step of a recurrent cell, written once as a few element-wise
//! programs ("stages"). The fused recurrent kernels inline the stages into their time
//! loops and the reference interpreter evaluates them. Gates are in PyTorch's order.
//!
//! The backward pass of a step ([`CellStep::backward`]) is derived from the same stages,
//! by the derivative programs of their element-wise functions, so that each gate is
//! differentiated from its stored activation (σ′ = y(1 − y), tanh′ = 1 − y²) rather than
//! recomputed: the values those programs read are what the forward pass saves per step
//! ([`CellStep::saved`]).

use super::Cell;
use super::elementwise::{Builder, Derivative, Elementwise, Prim, Source, V};

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

/// A value a step's backward pass reads: a stage's, or a value the step read. The
/// previous hidden state is not among them: the forward pass stores it for every step
/// anyway (the recurrent weight's gradient reads it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Saved {
    Stage(usize),
    Term(Term),
}

/// How the backward pass of a step computes: the values it reads, and the arithmetic on
/// them (numbers in the reference, instructions in a kernel).
pub trait Adjoint {
    type V: Copy;
    /// The forward value `s` of this step (`Term::H` included).
    fn value(&mut self, s: Saved) -> Self::V;
    /// The element-wise program `f` applied to `args`.
    fn apply(&mut self, f: &Elementwise, args: &[Self::V]) -> Self::V;
    fn add(&mut self, a: Self::V, b: Self::V) -> Self::V;
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

    /// The forward value a stage's input is.
    fn saved_of(arg: Arg) -> Saved {
        match arg {
            Arg::Stage(i) => Saved::Stage(i),
            Arg::Term(t) => Saved::Term(t),
        }
    }

    /// The values the backward pass reads besides the previous hidden state, in a fixed
    /// order: those the stages' derivative programs read (σ's and tanh's outputs, the
    /// factors of products).
    pub fn saved(&self) -> Vec<Saved> {
        let mut saved = Vec::new();
        for (i, stage) in self.stages.iter().enumerate() {
            for wrt in 0..stage.inputs.len() {
                let Derivative::Program(_, sources) = stage.f.derivative(wrt) else { continue };
                for s in sources {
                    let v = match s {
                        Source::Output => Saved::Stage(i),
                        Source::Input(j) => Self::saved_of(stage.inputs[j]),
                    };
                    if v != Saved::Term(Term::H) && !saved.contains(&v) {
                        saved.push(v);
                    }
                }
            }
        }
        saved
    }

    /// Whether some stage reads a gate's input or hidden projection apart from their sum
    /// (a GRU's candidate), so that the two have different gradients.
    pub fn splits(&self) -> bool {
        self.stages.iter().any(|s| s.inputs.iter().any(|a| matches!(a, Arg::Term(Term::P(_) | Term::Q(_)))))
    }

    /// The backward pass of one step for one element: given the gradients of the new
    /// hidden state and (an LSTM's) new cell state, the gradient of each value the step
    /// read, summed over the stages that read it, in reverse stage order.
    pub fn backward<A: Adjoint>(&self, a: &mut A, d_hidden: A::V, d_cell: Option<A::V>) -> Vec<(Term, A::V)> {
        let mut grads: Vec<Option<A::V>> = vec![None; self.stages.len()];
        grads[self.hidden] = Some(d_hidden);
        if let (Some(c), Some(d)) = (self.cell, d_cell) {
            grads[c] = Some(match grads[c] {
                Some(g) => a.add(g, d),
                None => d,
            });
        }
        let mut terms: Vec<(Term, A::V)> = Vec::new();
        for (i, stage) in self.stages.iter().enumerate().rev() {
            let Some(dy) = grads[i] else { continue };
            for (wrt, &arg) in stage.inputs.iter().enumerate() {
                let d = match stage.f.derivative(wrt) {
                    Derivative::Zero => continue,
                    Derivative::Same => dy,
                    Derivative::Program(df, sources) => {
                        let mut args = vec![dy];
                        args.extend(sources.iter().map(|s| {
                            a.value(match *s {
                                Source::Output => Saved::Stage(i),
                                Source::Input(j) => Self::saved_of(stage.inputs[j]),
                            })
                        }));
                        a.apply(&df, &args)
                    }
                };
                match arg {
                    Arg::Stage(k) => {
                        grads[k] = Some(match grads[k] {
                            Some(g) => a.add(g, d),
                            None => d,
                        })
                    }
                    Arg::Term(t) => match terms.iter_mut().find(|(u, _)| *u == t) {
                        Some((_, g)) => *g = a.add(*g, d),
                        None => terms.push((t, d)),
                    },
                }
            }
        }
        terms
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

    /// The step's saved values for one element (the test's terms and stage values).
    struct Numbers(Vec<f64>);

    impl Adjoint for Numbers {
        type V = f64;

        fn value(&mut self, s: Saved) -> f64 {
            match s {
                Saved::Stage(i) => self.0[i],
                Saved::Term(t) => term(t),
            }
        }

        fn apply(&mut self, f: &Elementwise, args: &[f64]) -> f64 {
            f.eval(args)
        }

        fn add(&mut self, a: f64, b: f64) -> f64 {
            a + b
        }
    }

    /// The backward pass of a step against central differences of the whole step, with
    /// respect to each projection and the previous states; and it reads only saved values.
    #[test]
    fn step_backward_agrees_with_differences() {
        let (dh, dc, eps) = (0.7, -0.4, 1e-6);
        for cell in [Cell::Rnn, Cell::Lstm, Cell::Gru] {
            let s = cell.step();
            let saved = s.saved();
            // L = dh·h' + dc·c' as a function of the projections and states.
            let loss = |pq: &[f64; 8], h: f64, c: f64| {
                let v = s.eval(|t| match t {
                    Term::P(k) => pq[2 * k],
                    Term::Q(k) => pq[2 * k + 1],
                    Term::Sum(k) => pq[2 * k] + pq[2 * k + 1],
                    Term::H => h,
                    Term::C => c,
                });
                dh * v[s.hidden] + s.cell.map_or(0.0, |i| dc * v[i])
            };
            let mut numbers = Numbers(s.eval(term));
            let terms = s.backward(&mut numbers, dh, s.cell.map(|_| dc));
            let got = |want: &dyn Fn(Term) -> bool| {
                terms.iter().filter(|(t, _)| want(*t)).map(|(_, d)| d).sum::<f64>()
            };
            for k in 0..cell.gates() {
                for (slot, part) in [(2 * k, Term::P(k)), (2 * k + 1, Term::Q(k))] {
                    let (mut up, mut down) = (PQ, PQ);
                    up[slot] += eps;
                    down[slot] -= eps;
                    let want = (loss(&up, H, C) - loss(&down, H, C)) / (2.0 * eps);
                    let d = got(&|t| t == part || t == Term::Sum(k));
                    assert!((d - want).abs() < 1e-7, "{cell:?} {part:?}: {d} against {want}");
                }
            }
            let want_h = (loss(&PQ, H + eps, C) - loss(&PQ, H - eps, C)) / (2.0 * eps);
            assert!((got(&|t| t == Term::H) - want_h).abs() < 1e-7, "{cell:?} H");
            if s.cell.is_some() {
                let want_c = (loss(&PQ, H, C + eps) - loss(&PQ, H, C - eps)) / (2.0 * eps);
                assert!((got(&|t| t == Term::C) - want_c).abs() < 1e-7, "{cell:?} C");
            }
            assert!(!saved.contains(&Saved::Term(Term::H)), "the states tensor holds H");
        }
    }
}
