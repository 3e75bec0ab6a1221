//! Rewrites of an element-wise program's inputs, for a caller that hands it tensors: drop
//! the inputs it does not read, or read two inputs it only adds as one tensor of their sum.
//! Each returns a program that computes the same function of the inputs it is given.

use super::elementwise::{BinOp, Elementwise, Expr, operands, renumber};

impl Elementwise {
    /// The program over only the inputs it reads, renumbered in their order, and their
    /// positions among this program's inputs. A program written over a shared list of
    /// inputs (a cell step's, [`super::cell`]) is thus handed exactly the tensors it reads:
    /// an op never keeps an unread tensor alive, nor gets a backward op for it.
    pub fn compact(&self) -> (Elementwise, Vec<usize>) {
        let kept: Vec<usize> = (0..self.inputs).filter(|&i| self.reads(i)).collect();
        // An input out of range stays out of range, for `check` to report.
        let at = |i: usize| kept.iter().position(|&k| k == i).unwrap_or(i);
        let program = self
            .program
            .iter()
            .map(|e| match *e {
                Expr::Input(i) => Expr::Input(at(i)),
                other => other,
            })
            .collect();
        (Elementwise { name: self.name.clone(), inputs: kept.len(), program }, kept)
    }

    /// The program over `a + b` in place of inputs `a` and `b`, if it reads them only
    /// summed (and is more than their sum): the sum is input `min(a, b)`, the other is
    /// dropped and the inputs after it move down one. A caller that adds the two tensors
    /// once then keeps one tensor for the backward pass instead of two, and gets one
    /// gradient for both (an LSTM's gates read their two projections only summed).
    pub fn summed(&self, a: usize, b: usize) -> Option<Elementwise> {
        let (lo, hi) = (a.min(b), a.max(b));
        let of = |k: usize| match self.program[k] {
            Expr::Input(i) if i == a || i == b => Some(i),
            _ => None,
        };
        let is_sum = |e: &Expr| match *e {
            Expr::Bin(BinOp::Add, x, y) => of(x).zip(of(y)).is_some_and(|(i, j)| i != j),
            _ => false,
        };
        let read_apart =
            self.program.iter().any(|e| !is_sum(e) && operands(e).into_iter().any(|o| of(o).is_some()));
        let last = self.program.last().is_none_or(is_sum);
        if lo == hi || hi >= self.inputs || read_apart || last || !self.program.iter().any(is_sum) {
            return None;
        }
        let mut at = Vec::with_capacity(self.program.len());
        let mut program = Vec::with_capacity(self.program.len());
        for e in &self.program {
            let new = match *e {
                // Read by sums alone, which become the input.
                Expr::Input(i) if i == a || i == b => {
                    at.push(usize::MAX);
                    continue;
                }
                _ if is_sum(e) => Expr::Input(lo),
                Expr::Input(i) if i > hi => Expr::Input(i - 1),
                ref other => renumber(other, &at),
            };
            at.push(program.len());
            program.push(new);
        }
        Some(Elementwise { name: self.name.clone(), inputs: self.inputs - 1, program })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::ops::Prim;
    use crate::ir::ops::elementwise::BinOp;

    #[test]
    fn compact_keeps_only_the_inputs_read_and_renumbers_them() {
        // f(x0, …, x4) = tanh(x3) · x1 − x4: x0 and x2 are not read.
        let f = Elementwise::new("f", 5, |b, x| {
            let t = b.prim(Prim::Tanh, x[3]);
            let m = b.mul(t, x[1]);
            b.sub(m, x[4])
        });
        let (g, kept) = f.compact();
        assert_eq!(kept, vec![1, 3, 4]);
        assert_eq!(g.inputs, 3);
        assert_eq!(g.name, "f");
        assert!(g.check().is_ok());
        assert!((0..3).all(|i| g.reads(i)));
        let args = [0.7, -0.3, 2.5, 0.4, 1.1];
        let picked: Vec<f64> = kept.iter().map(|&i| args[i]).collect();
        assert_eq!(g.eval(&picked), f.eval(&args));
        assert_eq!(g.eval(&picked), 0.4f64.tanh() * -0.3 - 1.1);
    }

    #[test]
    fn compact_leaves_a_program_that_reads_everything_as_it_is() {
        let f = Elementwise::add(3);
        let (g, kept) = f.compact();
        assert_eq!(kept, vec![0, 1, 2]);
        assert_eq!(g, f);
    }

    #[test]
    fn compact_keeps_a_malformed_program_malformed() {
        // Reads input 7 of 3: compacting must not turn it into a valid program.
        let f = Elementwise {
            name: "bad".into(),
            inputs: 3,
            program: vec![Expr::Input(2), Expr::Input(7), Expr::Bin(BinOp::Add, 0, 1)],
        };
        let (g, kept) = f.compact();
        assert_eq!(kept, vec![2]);
        assert!(g.check().is_err());
    }

    #[test]
    fn summed_reads_two_inputs_as_their_sum() {
        // f(x0, x1, x2, x3) = tanh(x2 + x1) · x3 − x0
        let f = Elementwise::new("f", 4, |b, x| {
            let s = b.add(x[2], x[1]);
            let t = b.prim(Prim::Tanh, s);
            let m = b.mul(t, x[3]);
            b.sub(m, x[0])
        });
        let [x0, x1, x2, x3] = [0.7, -0.3, 2.5, 0.4];
        for (a, b) in [(1, 2), (2, 1)] {
            let g = f.summed(a, b).expect("x1 and x2 are read only summed");
            assert_eq!(g.inputs, 3);
            assert!(g.check().is_ok());
            assert_eq!(g.eval(&[x0, x2 + x1, x3]), f.eval(&[x0, x1, x2, x3]));
        }
    }

    #[test]
    fn summed_refuses_inputs_read_otherwise() {
        // (x0 + x1) · x0 reads x0 apart from the sum.
        let f = Elementwise::new("f", 2, |b, x| {
            let s = b.add(x[0], x[1]);
            b.mul(s, x[0])
        });
        assert_eq!(f.summed(0, 1), None);
        // x0 · x1 does not sum them at all; an input with itself is no pair.
        assert_eq!(Elementwise::mul().summed(0, 1), None);
        assert_eq!(Elementwise::add(2).summed(0, 0), None);
        // A program that is the sum alone would end with an input.
        assert_eq!(Elementwise::add(2).summed(0, 1), None);
        // Input 3 is beyond the program's three.
        assert_eq!(Elementwise::add(3).summed(1, 3), None);
    }
}
