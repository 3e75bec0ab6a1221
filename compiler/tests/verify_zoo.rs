//! The verifier accepts every program the scheduler makes for the example networks:
//! inference and training, on one to three threads. (The pipeline runs it; an `Err`
//! here is a rejection, or a bug in a pass.)

use nnc_compiler::front::train::Loss;
use nnc_compiler::ir::ops::UpdateRule;
use nnc_compiler::pipeline::{self, Options};
use std::path::Path;

fn examples() -> Vec<(String, nnc_compiler::Model)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the examples")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "net"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "the zoo is there");
    files
        .into_iter()
        .map(|p| {
            let model = nnc_compiler::compile_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.file_name().unwrap().to_string_lossy().into_owned(), model)
        })
        .collect()
}

/// Small batches keep the big networks quick; 3 splits unevenly across threads.
fn batches(file: &str) -> &'static [usize] {
    match file {
        "lenet5.net" | "char_lstm.net" | "char_rnn.net" | "resnet18_cifar.net" => &[1, 3, 8],
        _ => &[1, 3],
    }
}

#[test]
fn every_example_passes_for_inference() {
    for (file, model) in examples() {
        for net in &model.networks {
            for &batch in batches(&file) {
                for threads in 1..=3 {
                    let options = Options {
                        threads,
                        guard: 0,
                        geometry: nnc_compiler::backend::Target::default().geometry(),
                    };
                    if let Err(e) = pipeline::inference(net, batch, options) {
                        panic!("{file} `{}` at batch {batch} on {threads} threads: {e}", net.name);
                    }
                }
            }
        }
    }
}

#[test]
fn every_example_passes_for_training() {
    let sgd = UpdateRule::Sgd { momentum: 0.9, nesterov: false, weight_decay: 5e-4 };
    let adam = UpdateRule::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0, decoupled: true };
    for (file, model) in examples() {
        for net in &model.networks {
            // Networks without a train section are trained as classifiers.
            let (loss, rule) = match model.train_config(&net.name) {
                Some(config) => (config.loss, config.optimizer.update_rule().0),
                None => (Loss::CrossEntropy, sgd),
            };
            for &batch in batches(&file) {
                for threads in 1..=3 {
                    let options = Options {
                        threads,
                        guard: 64,
                        geometry: nnc_compiler::backend::Target::default().geometry(),
                    };
                    for rule in [rule, adam] {
                        if let Err(e) = pipeline::training(net, loss, rule, batch, options) {
                            panic!(
                                "{file} `{}` training at batch {batch} on {threads} threads: {e}",
                                net.name
                            );
                        }
                    }
                }
            }
        }
    }
}
