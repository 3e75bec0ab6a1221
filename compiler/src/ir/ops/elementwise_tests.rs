//! Tests of [`Elementwise::compact`]: the compacted program computes the same function of
//! the inputs it keeps.

use super::elementwise::{BinOp, Expr};
use super::{Elementwise, Prim};

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
