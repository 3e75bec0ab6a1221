//! Each language feature, checked through the shapes, parameters and names it produces.

mod common;

use common::compile_ok;
use nnc_compiler::ir::graph::Graph;
use nnc_compiler::ir::init::Init;

fn net(source: &str) -> Graph {
    compile_ok("t.net", source).networks.remove(0)
}

fn output(g: &Graph) -> String {
    g.node(g.output).shape.to_string()
}

#[test]
fn token_models_embed_then_recur() {
    let g = net(
        "network lm(text: seq[32] of tokens(1000)) {\n    text |> embedding(64) |> gru(128, last: true) |> dense(1000) |> softmax\n}",
    );
    assert_eq!(output(&g), "[1000]");
    // Embedding 1000×64; GRU 3·128·(64 + 128) + 2·3·128; dense 128·1000 + 1000.
    assert_eq!(g.trainable_params(), 64_000 + 3 * 128 * 192 + 768 + 129_000);
    let names: Vec<&str> = g.params().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names[..5],
        ["embedding1.weight", "gru1.weight_ih_l0", "gru1.weight_hh_l0", "gru1.bias_ih_l0", "gru1.bias_hh_l0"]
    );
}

#[test]
fn real_valued_sequences_and_stacked_recurrence() {
    let g = net(
        "network s(x: seq[10] of features(3)) {\n    x |> rnn(8) |> lstm(4) * 2 |> dense(2) |> sigmoid\n}",
    );
    assert_eq!(output(&g), "seq[10, 2]");
}

#[test]
fn init_statements_and_arguments_choose_initialisers() {
    let g = net(
        "network n(x: [3, 8, 8]) {\n    init = lecun\n    x |> conv(4, 3) |> relu |> conv(4, 3, init: normal(0.02)) |> flatten |> dense(2, init: zeros)\n}",
    );
    let inits: Vec<(String, Init)> = g.params().map(|p| (p.name.clone(), p.init)).collect();
    assert_eq!(inits[0], ("conv1.weight".into(), Init::Lecun));
    assert_eq!(inits[1], ("conv1.bias".into(), Init::Zeros));
    assert_eq!(inits[2], ("conv2.weight".into(), Init::Normal { std: 0.02 }));
    assert_eq!(inits[4], ("dense1.weight".into(), Init::Zeros));
}

#[test]
fn default_initialisers_follow_the_activation() {
    let g = net(
        "network n(x: [16]) {\n    x |> dense(8) |> batchnorm |> relu |> dense(8) |> tanh |> dense(2)\n}",
    );
    let weights: Vec<Init> =
        g.params().filter(|p| p.name.ends_with(".weight") && p.dims.len() == 2).map(|p| p.init).collect();
    assert_eq!(weights, [Init::He, Init::Xavier, Init::Xavier]);
}

#[test]
fn default_initialisers_look_through_the_kinds_that_leave_the_activation_open() {
    // conv1 reaches a rectifier through dropout and pooling, conv2 through pooling, the
    // residual add and concat; conv3 reaches a sigmoid.
    let g = net("network n(x: [3, 8, 8]) {
        let a = x |> conv(4, 3, pad: 1) |> dropout(0.1) |> maxpool(2) |> leaky_relu
        let b = x |> conv(4, 3, pad: 1) |> avgpool(2)
        let c = x |> conv(4, 3, pad: 1) |> maxpool(2) |> sigmoid
        concat(a + b, c) |> relu |> flatten |> dense(2)
    }");
    let weights: Vec<(String, Init)> =
        g.params().filter(|p| p.name.ends_with(".weight")).map(|p| (p.name.clone(), p.init)).collect();
    let expected =
        [("conv1", Init::He), ("conv2", Init::He), ("conv3", Init::Xavier), ("dense1", Init::Xavier)];
    let expected: Vec<(String, Init)> = expected.iter().map(|(l, i)| (format!("{l}.weight"), *i)).collect();
    assert_eq!(weights, expected);
}

#[test]
fn conditionals_arithmetic_and_builtins() {
    let g = net(
        "block pick(x, n) {\n    if n < 0 { x |> dense(1) } else if n % 2 == 0 and not (n == 4) { x |> dense(n / 2) } else { x |> dense(max(n, channels(x)) - min(3, 1)) }\n}\n\
         network n(x: [3, 8, 6]) {\n    let w = width(x) * height(x)\n    x |> flatten |> pick(w) |> pick(-7 / 2 + 9)\n}",
    );
    // w = 48 → even, not 4 → dense(24); -7 / 2 rounds down to -4, + 9 = 5 → odd → max(5, 24) - 1.
    assert_eq!(output(&g), "[23]");
}

#[test]
fn repetition_of_blocks_groups_and_zero_times() {
    let g = net("block unit(x, c) {\n    x |> conv(c, 3, pad: 1) |> relu\n}\n\
         network n(x: [3, 16, 16]) {\n    x |> unit(8) * 3 |> (conv(8, 1) |> relu) * 2 |> unit(4) * 0 |> maxpool(2)\n}");
    assert_eq!(output(&g), "[8, 8, 8]");
    let paths: Vec<&str> = g.nodes.iter().map(|n| n.path.as_str()).collect();
    assert!(paths.contains(&"unit3.conv1"), "{paths:?}");
    assert!(paths.contains(&"conv2"), "{paths:?}");
    assert!(!paths.iter().any(|p| p.starts_with("unit4")), "`* 0` adds nothing");
}

#[test]
fn block_defaults_see_earlier_parameters_and_blocks_return_values() {
    let g = net("block mid(c, ratio = 4) {\n    c / ratio\n}\n\
         block squeeze(x, c, hidden = mid(c)) {\n    x |> dense(hidden) |> relu |> dense(c)\n}\n\
         network n(x: [32]) {\n    x |> squeeze(32)\n}");
    assert_eq!(g.nodes[1].shape.to_string(), "[8]");
}

#[test]
fn padding_forms_dilation_and_groups() {
    let g = net(
        "network n(x: [4, 10, 12]) {\n    x |> conv(8, [3, 5], pad: [1, 2]) |> conv(8, 3, pad: [0, 1, 2, 3], dilation: 2) |> conv(8, 3, stride: [1, 2], pad: same, groups: 4) |> conv(2, 1, pad: valid, bias: false)\n}",
    );
    let shapes: Vec<String> = g.nodes.iter().map(|n| n.shape.to_string()).collect();
    assert_eq!(shapes, ["[4, 10, 12]", "[8, 10, 12]", "[8, 7, 13]", "[8, 7, 7]", "[2, 7, 7]"]);
    assert_eq!(g.nodes[3].trainable_params(), 8 * 2 * 9 + 8);
}

#[test]
fn merges_take_several_inputs() {
    let g = net(
        "network n(a: [4, 8, 8], b: [4, 8, 8], v: [3]) {\n    let s = add(a, b, a) |> leaky_relu(0.2)\n    let c = concat(s, a) |> lrn(3) |> global_avgpool\n    concat(c, v, v) |> dropout\n}",
    );
    assert_eq!(output(&g), "[14]");
    assert_eq!(g.inputs.len(), 3);
}

#[test]
fn train_section_settings_are_all_read() {
    let model = compile_ok(
        "t.net",
        "network n(x: [3, 32, 32]) {\n    x |> flatten |> dense(10)\n}\n\
         train n {\n    loss = mse\n    optimizer = adamw(lr: 3e-4, weight_decay: 0.05)\n    schedule = step(every: 10, gamma: 0.5)\n    warmup = 2\n    batch = 128\n    epochs = 40\n    clip = 1.0\n    seed = 7\n    augment = [random_crop(pad: 4), hflip]\n    mean = [0.49, 0.48, 0.45]\n    std = [0.25, 0.24, 0.26]\n    data = \"data/cifar\"\n}",
    );
    let t = &model.trains[0];
    assert_eq!(t.loss, nnc_compiler::front::train::Loss::MeanSquaredError);
    assert_eq!(
        t.optimizer.to_string(),
        "adamw(lr: 3e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.05)"
    );
    assert_eq!(t.schedule.to_string(), "step(every: 10, gamma: 0.5)");
    assert_eq!((t.warmup, t.batch, t.epochs, t.clip, t.seed), (2, 128, 40, Some(1.0), 7));
    assert_eq!(t.augment.len(), 2);
    assert_eq!(t.mean.len(), 3);
    assert_eq!(t.data.as_deref(), Some("data/cifar"));
}

#[test]
fn includes_share_blocks_and_are_read_once() {
    let model = nnc_compiler::compile_str(
        "examples/x.net",
        "include \"blocks/resnet.net\"\ninclude \"blocks/resnet.net\"\n\nnetwork n(x: [64, 8, 8]) {\n    x |> basic(64) |> bottleneck(16)\n}",
        Some("examples".into()),
    )
    .unwrap();
    let files: Vec<&str> = model.sources.files().iter().map(|f| f.name.as_str()).collect();
    assert_eq!(files, ["examples/x.net", "examples/blocks/resnet.net"]);
    assert_eq!(model.networks[0].node(model.networks[0].output).shape.to_string(), "[64, 8, 8]");
}

#[test]
fn unused_bindings_parameters_and_inputs_are_warned_about() {
    let model = compile_ok(
        "w.net",
        "block down(x, c, stride = 2, _spare = 0) {\n    let y = x |> conv(c, 3, stride: stride, pad: 1)\n    let s = x |> conv(c, 1, stride: stride)\n    relu(y + x)\n}\n\n\
         network net(image: [64, 16, 16], label: [10]) {\n    image |> down(64, stride: 1)\n}\n",
    );
    let warnings: Vec<&str> = model.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(warnings, ["`s` is never used", "input `label` is never used"]);
}

/// A stage's span ends at its last token: the whitespace and comments after it (even a
/// comment with a quote in it, or after a string holding `#`) are not part of it.
#[test]
fn spans_end_before_trailing_comments() {
    use nnc_compiler::front::syntax::ast::{ExprKind, Item};
    let text = "network n(x: [4]) {\n    let s = \"a # b\"   # the \"name\n    x |> dense(4) * 2   # \"one\n    |> relu  # two\n}\n";
    let (program, diagnostics) = nnc_compiler::front::load::load_str("t.net", text, None);
    assert!(!diagnostics.has_errors());
    let Item::Network(net) = &program.files[0].items[0] else { panic!("a network") };
    let ExprKind::Pipe { stages, .. } = &net.body.result.kind else { panic!("a pipeline") };
    let spans: Vec<&str> = stages.iter().map(|s| &text[s.span.range()]).collect();
    assert_eq!(spans, ["dense(4) * 2", "relu"]);
    assert_eq!(&text[net.body.result.span.range()], "x |> dense(4) * 2   # \"one\n    |> relu");
    let nnc_compiler::front::syntax::ast::Stmt::Let { value, .. } = &net.body.stmts[0] else {
        panic!("a let")
    };
    assert_eq!(&text[value.span.range()], "\"a # b\"");
}

/// A UTF-8 byte-order mark at the start of the main file and of an included file is
/// skipped, and positions after it are unchanged.
#[test]
fn byte_order_marks_are_skipped() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("bom");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("blocks.net"), "\u{feff}block unit(x) {\n    x |> relu\n}\n").unwrap();
    let main = dir.join("main.net");
    std::fs::write(
        &main,
        "\u{feff}include \"blocks.net\"\n\nnetwork n(x: [4]) {\n    x |> unit |> dense(2)\n}\n",
    )
    .unwrap();
    let model = nnc_compiler::compile_file(&main).unwrap();
    let g = &model.networks[0];
    assert_eq!(output(g), "[2]");
    assert_eq!(model.sources.location(g.span), format!("{}:3:9", main.display()));
}

#[test]
fn tensor_minus_tensor_is_sub() {
    let g = net(
        "network m(x: [4]) {\n    let a = x |> dense(3)\n    let b = x |> dense(3)\n    sub(a - b, b, a)\n}",
    );
    let kinds: Vec<&str> = g.nodes.iter().map(|n| n.kind_name()).collect();
    assert_eq!(kinds, ["input", "dense", "dense", "sub", "sub"]);
    assert_eq!(output(&g), "[3]");
}

#[test]
fn element_wise_layers_and_products() {
    let g = net(
        "network m(x: [8, 6, 6]) {\n    let y = x |> conv(8, 3, pad: 1) |> hardswish\n    let g = x |> conv(8, 1) |> sigmoid\n    mul(y * g, x) |> relu6 |> clamp(-1, 2.5) |> gelu |> global_avgpool |> flatten |> dense(3)\n}",
    );
    let kinds: Vec<&str> = g.nodes.iter().map(|n| n.kind_name()).collect();
    assert_eq!(
        kinds,
        [
            "input",
            "conv",
            "hardswish",
            "conv",
            "sigmoid",
            "mul",
            "mul",
            "relu6",
            "clamp",
            "gelu",
            "global_avgpool",
            "flatten",
            "dense"
        ]
    );
    // Weights feeding hard-swish default to He initialisation, as for ReLU.
    let conv = g.params().find(|p| p.name == "conv1.weight").unwrap();
    assert_eq!(conv.init, Init::He);
}
