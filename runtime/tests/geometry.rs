//! The Cranelift back end generates register tiles of whatever rows and whole vectors a
//! program was scheduled for, and refuses — with an error — a geometry it cannot
//! generate (vectors of other widths, tiles too large for its registers).

mod common;

use nnc_compiler::backend::{CodegenError, Geometry, Target};
use nnc_compiler::ir::ops::TensorGraph;
use nnc_compiler::passes::autodiff;
use nnc_compiler::passes::lower::{Mode, lower, lower_for};
use nnc_compiler::pipeline;
use nnc_runtime::exec::{Error, Executable};
use std::path::Path;

/// Taller and wider tiles than Cranelift's own 4 × 8 (24 accumulators), and padding to
/// match.
const TALL: Geometry = Geometry { rows: 6, columns: 16, lanes: 4, pad: 16, unfolds: false };
/// Tiles of an odd number of rows and a single vector.
const NARROW: Geometry = Geometry { rows: 3, columns: 4, lanes: 4, pad: 4, unfolds: false };

fn example(name: &str) -> nnc_compiler::Model {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples").join(name);
    nnc_compiler::compile_file(&path).expect("the example compiles")
}

/// `name`'s training step at `batch`, as one tensor graph.
fn training(name: &str, batch: usize) -> TensorGraph {
    let model = example(name);
    let network = &model.networks[0];
    let config = model.train_config(&network.name).expect("a train section");
    let (rule, _) = config.optimizer.update_rule();
    autodiff::training(lower_for(network, batch, Mode::Training), config.loss, rule)
        .expect("differentiates")
        .0
}

/// Everything the kernels write agrees with the reference interpreter.
fn check(what: &str, graph: &TensorGraph, geometry: Geometry) {
    for seed in [4, 5] {
        for w in common::run_all_for(graph, seed, 2, Some(geometry), Target::Cranelift) {
            common::assert_agree(&format!("{what} ({geometry}), {}", w.what), &w.generated, &w.reference);
        }
    }
}

#[test]
fn other_tiles_compute_what_the_reference_computes() {
    for geometry in [TALL, NARROW] {
        // Products split across threads in blocks of whole tiles, and convolution
        // gradients with padded columns.
        check("lenet5 training", &training("lenet5.net", 24), geometry);
        // Blocks of sequences as tall as the tile, or halves of it.
        check("char_lstm", &lower(&example("char_lstm.net").networks[0], 6), geometry);
    }
}

#[test]
fn a_geometry_the_back_end_cannot_generate_is_refused() {
    let network = &example("lenet5.net").networks[0];
    let options = common::options(2);
    let wide_vectors = Geometry { rows: 6, columns: 64, lanes: 16, pad: 16, unfolds: false };
    let huge_tile = Geometry { rows: 14, columns: 32, lanes: 4, pad: 8, unfolds: false };
    for (geometry, reason) in [(wide_vectors, "its vectors have 4 lanes"), (huge_tile, "at most 32")] {
        let stages = pipeline::inference(network, 8, pipeline::Options { geometry, ..options.stages() })
            .expect("schedules for any geometry");
        match Executable::new(stages, &options) {
            Err(e @ Error::Codegen(CodegenError::Geometry { .. })) => {
                let message = e.to_string();
                assert!(message.contains(reason) && message.contains("Cranelift"), "{message}");
            }
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("compiled kernels scheduled for {geometry}"),
        }
    }
}

#[test]
fn cranelift_refuses_products_that_read_images_through_a_window() {
    let network = &example("lenet5.net").networks[0];
    let options = nnc_runtime::exec::Options { target: Target::Cranelift, ..common::options(1) };
    let geometry = Geometry { unfolds: true, ..Target::Cranelift.geometry() };
    let stages = pipeline::inference(network, 2, pipeline::Options { geometry, ..options.stages() })
        .expect("schedules for any geometry");
    match Executable::new(stages, &options) {
        Err(e @ Error::Codegen(CodegenError::Geometry { .. })) => {
            assert!(e.to_string().contains("not images through a window"), "{e}")
        }
        Err(e) => panic!("refused for another reason: {e}"),
        Ok(_) => panic!("Cranelift compiled products over unfolded images"),
    }
}
