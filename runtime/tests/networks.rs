//! Every example network: the generated forward pass agrees with the reference
//! interpreter on random weights and inputs, with guard bytes checked after each kernel.

mod common;

use std::path::Path;

fn check(example: &str, batch: usize, threads: usize) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(example);
    let model = nnc_compiler::compile_file(&path).expect("the example compiles");
    let graph = nnc_compiler::passes::lower::lower(&model.networks[0], batch);
    let (generated, reference) = common::run_both(&graph, 42, threads);
    assert!(reference.iter().all(|v| v.is_finite()), "{example}: reference is not finite");
    common::assert_agree(example, &generated, &reference);
}

#[test]
fn lenet5() {
    check("lenet5.net", 3, 1);
}

#[test]
fn agreement_is_not_vacuous() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/lenet5.net");
    let model = nnc_compiler::compile_file(&path).unwrap();
    let graph = nnc_compiler::passes::lower::lower(&model.networks[0], 2);
    let (generated, reference) = common::run_both(&graph, 7, 1);
    assert!(common::rms(&reference) > 1e-3, "outputs are nearly zero: {reference:?}");
    // A different input gives a different output.
    let (_, other) = common::run_both(&graph, 8, 1);
    assert_ne!(reference, other);
    assert_eq!(generated.len(), 20);
}

#[test]
fn alexnet() {
    check("alexnet.net", 1, 1);
}

#[test]
fn alexnet_lrn() {
    check("alexnet_lrn.net", 1, 1);
}

#[test]
fn vgg16() {
    check("vgg16.net", 1, 1);
}

#[test]
fn googlenet() {
    check("googlenet.net", 1, 1);
}

#[test]
fn resnet18() {
    check("resnet18.net", 1, 1);
}

#[test]
fn resnet18_cifar() {
    check("resnet18_cifar.net", 2, 1);
}

#[test]
fn resnet50() {
    check("resnet50.net", 1, 1);
}

#[test]
fn resnet152() {
    check("resnet152.net", 1, 1);
}

#[test]
fn char_rnn() {
    check("char_rnn.net", 2, 1);
}

#[test]
fn char_lstm() {
    check("char_lstm.net", 4, 1);
}

/// The same networks split across worker threads (uneven and empty shares included).
#[test]
fn threaded() {
    check("lenet5.net", 5, 2);
    check("lenet5.net", 2, 3);
    check("resnet18_cifar.net", 3, 2);
    check("char_lstm.net", 8, 3);
    check("googlenet.net", 2, 2);
}
