//! Tests of the training graph's structure (its values are checked by finite differences
//! in `tests/gradcheck.rs`).

use crate::front::train::Loss;
use crate::ir::ops::{Op, UpdateRule};
use crate::passes::lower::{Mode, lower_for};

/// An unrolled recurrence hands a gate's stage the sum of its two projections: handed both,
/// the stage would get two backward ops computing the same values.
#[test]
fn no_element_wise_op_is_computed_twice() {
    for layer in ["rnn(5)", "lstm(5)", "gru(5)"] {
        let source = format!("network n(x: seq[3] of onehot(4)) {{ x |> {layer} |> dense(3) }}");
        let model = crate::compile_str("test.net", &source, None).expect("the test network compiles");
        let forward = lower_for(&model.networks[0], 2, Mode::Training);
        let rule = UpdateRule::Sgd { momentum: 0.0, nesterov: false, weight_decay: 0.0 };
        let (graph, _) =
            super::training(forward, Loss::CrossEntropy, rule).expect("the network differentiates");
        let maps: Vec<_> = graph
            .ops
            .iter()
            .filter_map(|o| match &o.op {
                Op::Elementwise { f, .. } => Some((f, &o.inputs)),
                _ => None,
            })
            .collect();
        for (i, map) in maps.iter().enumerate() {
            assert!(
                !maps[..i].contains(map),
                "{layer}: `{}` is computed twice from the same tensors",
                map.0.name
            );
        }
    }
}
