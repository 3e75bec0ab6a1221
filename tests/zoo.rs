//! The example networks: each compiles, reproduces its published parameter count, keeps
//! its reviewed shape plan, and is already in canonical format.

use nnc_compiler::backend::Target;
use nnc_compiler::report::plan::Plan;
use std::path::Path;

fn compile(name: &str) -> nnc_compiler::Model {
    let path = Path::new("examples").join(name);
    match nnc_compiler::compile_file(&path) {
        Ok(m) => m,
        Err(nnc_compiler::Error::Invalid { sources, diagnostics }) => {
            panic!(
                "{name} has errors:\n{}",
                nnc_compiler::support::diagnostic::render(
                    &sources,
                    &diagnostics,
                    nnc_compiler::support::diagnostic::Color::Never
                )
            )
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

/// Trainable parameters (batch-norm running statistics excluded), as published for the
/// same architectures (torchvision's counts for the ImageNet models).
#[test]
fn parameter_counts_match_published_figures() {
    let expected = [
        ("lenet5.net", 61_706),
        ("alexnet.net", 61_100_840),
        ("vgg16.net", 138_357_544),
        ("resnet18.net", 11_689_512),
        ("resnet50.net", 25_557_032),
        ("resnet152.net", 60_192_808),
        ("resnet18_cifar.net", 11_173_962),
    ];
    for (file, params) in expected {
        let model = compile(file);
        assert_eq!(model.networks.len(), 1, "{file}");
        assert_eq!(model.networks[0].trainable_params(), params, "{file}");
    }
}

/// Multiply-accumulates of the ImageNet models agree with the figures usually quoted for
/// them (convolutions and dense layers).
#[test]
fn compute_matches_published_figures() {
    let expected = [
        ("alexnet.net", 714_188_480),
        ("vgg16.net", 15_470_264_320),
        ("resnet18.net", 1_814_073_344),
        ("resnet50.net", 4_089_184_256),
    ];
    for (file, macs) in expected {
        assert_eq!(compile(file).networks[0].macs(), macs, "{file}");
    }
}

#[test]
fn every_example_has_a_reviewed_plan() {
    insta::glob!("../examples", "*.net", |path| {
        let name = path.file_name().unwrap().to_str().unwrap();
        let model = compile(name);
        let plans: Vec<String> = model
            .networks
            .iter()
            .map(|g| {
                Plan::new(
                    g,
                    &model.sources,
                    64,
                    1,
                    Target::Cranelift.geometry(),
                    model.train_config(&g.name).cloned(),
                )
                .to_string()
            })
            .collect();
        insta::assert_snapshot!(plans.join("\n"));
    });
}

#[test]
fn plan_as_json() {
    let model = compile("lenet5.net");
    let plan = Plan::new(
        &model.networks[0],
        &model.sources,
        64,
        1,
        Target::Cranelift.geometry(),
        model.trains.first().cloned(),
    );
    insta::assert_json_snapshot!(plan);
}

/// The files people copy from are in the layout `nnc fmt` produces.
#[test]
fn examples_are_formatted() {
    let mut files: Vec<_> = std::fs::read_dir("examples").unwrap().map(|e| e.unwrap().path()).collect();
    files.extend(std::fs::read_dir("examples/blocks").unwrap().map(|e| e.unwrap().path()));
    for path in files.iter().filter(|p| p.extension().is_some_and(|e| e == "net")) {
        let text = std::fs::read_to_string(path).unwrap();
        let formatted = nnc_compiler::front::fmt::format(&path.display().to_string(), &text).unwrap();
        assert_eq!(formatted, text, "{} is not formatted", path.display());
    }
}

#[test]
fn resnet152_and_googlenet_stay_short() {
    let lines = |f: &str| std::fs::read_to_string(Path::new("examples").join(f)).unwrap().lines().count();
    let shared = lines("blocks/resnet.net");
    assert!(lines("resnet152.net") + shared <= 60, "resnet152 with its blocks");
    assert!(lines("resnet152.net") <= 40);
    assert!(lines("googlenet.net") <= 60);
}

#[test]
fn recurrent_examples_read_sequences() {
    let lstm = compile("char_lstm.net");
    let g = &lstm.networks[0];
    assert_eq!(g.node(g.output).shape.to_string(), "seq[64, 128]");
    // torch.nn.LSTM(128, 256) + Linear(256, 128)
    assert_eq!(g.trainable_params(), 4 * 256 * (128 + 256) + 8 * 256 + 256 * 128 + 128);
    let rnn = compile("char_rnn.net");
    assert_eq!(rnn.networks[0].trainable_params(), 256 * (128 + 256) + 2 * 256 + 256 * 128 + 128);
}

/// The fused kernels and their loop nests, as `nnc compile --emit kernels` prints them,
/// for networks that exercise each kind of fusion.
#[test]
fn kernel_listings() {
    for (file, batch) in
        [("lenet5.net", 4), ("resnet18_cifar.net", 2), ("char_lstm.net", 8), ("googlenet.net", 1)]
    {
        let model = compile(file);
        let geometry = nnc_compiler::backend::Target::Cranelift.geometry();
        let options = nnc_compiler::pipeline::Options { threads: 2, guard: 0, geometry };
        let stages = nnc_compiler::pipeline::inference(&model.networks[0], batch, options).unwrap();
        insta::assert_snapshot!(format!("kernels@{file}"), stages.program().to_string());
    }
}
