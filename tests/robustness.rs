//! No input makes the compiler panic, hang or run away with memory: arbitrary bytes, token
//! soup and mutated example files all end in a plan or in located diagnostics.

mod common;

use nnc_compiler::backend::Target;
use nnc_compiler::report::plan::Plan;
use nnc_compiler::support::diagnostic::{Color, render};
use nnc_compiler::{Error, Model};
use proptest::prelude::*;

/// The outcome must be a printable plan or printable, located diagnostics.
fn check_outcome(result: Result<Model, Error>) {
    match result {
        Ok(model) => {
            for g in &model.networks {
                let plan = Plan::new(g, &model.sources, 1, 1, Target::Cranelift.geometry(), None);
                assert!(!plan.to_string().is_empty());
            }
        }
        Err(Error::Invalid { sources, diagnostics }) => {
            assert!(!diagnostics.is_empty(), "invalid without a diagnostic");
            for d in &diagnostics {
                let p = d.primary.as_ref().expect("every diagnostic is located");
                assert!(p.span.start <= p.span.end);
                assert!(p.span.end as usize <= sources.get(p.span.file).text.len());
            }
            assert!(!render(&sources, &diagnostics, Color::Never).is_empty());
            assert!(!render(&sources, &diagnostics, Color::Always).is_empty());
        }
        Err(Error::Read(e)) => panic!("text input cannot fail to read: {e}"),
    }
}

const TOKENS: &[&str] = &[
    "network",
    "block",
    "train",
    "include",
    "let",
    "init",
    "if",
    "else",
    "and",
    "or",
    "not",
    "true",
    "false",
    "seq",
    "of",
    "onehot",
    "tokens",
    "x",
    "y",
    "image",
    "conv",
    "dense",
    "relu",
    "add",
    "concat",
    "lstm",
    "basic",
    "channels",
    "sgd",
    "(",
    ")",
    "[",
    "]",
    "{",
    "}",
    ",",
    ":",
    "=",
    "|>",
    "*",
    "+",
    "-",
    "/",
    "%",
    "==",
    "!=",
    "<",
    ">=",
    "0",
    "1",
    "3",
    "64",
    "9999999999999999999999",
    "1e400",
    "0.5",
    "\"a.net\"",
    "#c\n",
    "\n",
    " ",
    "\u{0}",
    "é",
    "\u{202e}",
];

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("robustness");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("bytes-{:x}.net", bytes.iter().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(*b as u64))));
        std::fs::write(&path, &bytes).unwrap();
        check_outcome(nnc_compiler::compile_file(&path));
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn token_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..120)) {
        let text = tokens.join(" ");
        check_outcome(nnc_compiler::compile_str("soup.net", &text, None));
        let _ = nnc_compiler::front::fmt::format("soup.net", &text);
    }

    /// Valid prefixes followed by soup reach deep into the grammar and the checker.
    #[test]
    fn network_with_soup_never_panics(tokens in prop::collection::vec(prop::sample::select(TOKENS), 0..60)) {
        let text = format!("network n(x: [3, 8, 8]) {{\n    x |> {}\n}}\n", tokens.join(" "));
        check_outcome(nnc_compiler::compile_str("soup.net", &text, None));
    }

    #[test]
    fn mutated_examples_never_panic(
        which in 0usize..64,
        edits in prop::collection::vec((0usize..100_000, 0usize..12, prop::sample::select(TOKENS), 0u8..4), 1..6),
    ) {
        let examples = common::examples();
        let (_, original) = &examples[which % examples.len()];
        let mut text: Vec<char> = original.chars().collect();
        for (at, len, token, kind) in edits {
            let at = at % (text.len() + 1);
            let end = (at + len).min(text.len());
            match kind {
                0 => { text.drain(at..end); }
                1 => { text.splice(at..at, token.chars()); }
                2 => { text.splice(at..end, token.chars()); }
                _ => { let copy: Vec<char> = text[at..end].to_vec(); text.splice(at..at, copy); }
            }
        }
        let text: String = text.into_iter().collect();
        check_outcome(common::compile_example_text(&text));
        let _ = nnc_compiler::front::fmt::format("mutated.net", &text);
    }
}

/// Deep nesting, long operator chains and huge repetition are refused with a message.
#[test]
fn pathological_inputs_are_refused_quickly() {
    let deep = format!("network n(x: [1]) {{ x |> dense({}1{}) }}", "(".repeat(100_000), ")".repeat(100_000));
    let long = format!("network n(x: [1]) {{ x |> dense(1{}) }}", " + 1".repeat(100_000));
    let neg = format!("network n(x: [1]) {{ x |> dense({}1) }}", "-".repeat(10_000));
    let ifs = format!("network n(x: [1]) {{ x |> dense({} 1 }}) }}", "if true { 1 } else ".repeat(20_000));
    let reps = "block b(x) { x |> relu * 1000 }\nnetwork n(x: [1]) { x |> b * 1000 }";
    for text in [deep.as_str(), long.as_str(), neg.as_str(), ifs.as_str(), reps] {
        match nnc_compiler::compile_str("p.net", text, None) {
            Err(Error::Invalid { diagnostics, .. }) => assert!(!diagnostics.is_empty()),
            other => panic!("expected a refusal, got {:?}", other.map(|m| m.networks.len())),
        }
    }
}

/// Very large but representable models are planned exactly; the limit is per tensor.
#[test]
fn large_models_are_counted_without_overflow() {
    let big = common::compile_ok("big.net", "network n(x: [100000]) { x |> dense(100000) |> dense(100000) }");
    assert_eq!(big.networks[0].trainable_params(), 20_000_200_000);
}

#[test]
fn empty_and_whitespace_files_are_model_errors() {
    for text in ["", "   \n\n", "# only a comment\n"] {
        let Err(Error::Invalid { diagnostics, .. }) = nnc_compiler::compile_str("e.net", text, None) else {
            panic!("{text:?} should be refused");
        };
        assert!(diagnostics[0].message.contains("defines no network"));
    }
}

/// `v0(n) { v1(n) + v1(n) }`, ... doubles the work at every level: 2^40 calls. The
/// evaluation budget stops it with an error at a block call, naming the budget.
#[test]
fn blocks_that_double_their_work_run_out_of_budget() {
    let levels = 40;
    let mut text: String =
        (0..levels).map(|i| format!("block v{i}(n) {{ v{}(n) + v{}(n) }}\n", i + 1, i + 1)).collect();
    text += &format!("block v{levels}(n) {{ n }}\n\nnetwork net(x: [4]) {{\n    x |> dense(v0(1))\n}}\n");
    let Err(Error::Invalid { sources, diagnostics }) = nnc_compiler::compile_str("double.net", &text, None)
    else {
        panic!("doubling blocks should be refused");
    };
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
    let d = &diagnostics[0];
    assert!(d.message.contains("budget"), "{}", d.message);
    let at = d.primary.as_ref().expect("located").span;
    let called = &sources.get(at.file).text[at.range()];
    assert!(called.starts_with('v') && called.ends_with("(n)"), "{called}");
    // Lists that double per level are refused by their size long before the budget.
    let mut lists: String =
        (0..levels).map(|i| format!("block l{i}(a) {{ l{}([a, a]) }}\n", i + 1)).collect();
    lists += &format!("block l{levels}(a) {{ 1 }}\n\nnetwork net(x: [4]) {{\n    x |> dense(l0(1))\n}}\n");
    let Err(Error::Invalid { diagnostics, .. }) = nnc_compiler::compile_str("lists.net", &lists, None) else {
        panic!("doubling lists should be refused");
    };
    assert!(diagnostics[0].message.contains("a list may hold at most 10,000 values"), "{diagnostics:?}");
}

/// The largest network in the zoo expands within a hundredth of the evaluation budget.
#[test]
fn resnet152_is_far_inside_the_evaluation_budget() {
    let (program, mut diagnostics) =
        nnc_compiler::front::load::load(std::path::Path::new("examples/resnet152.net")).unwrap();
    let resolved = nnc_compiler::front::resolve::resolve(&program, &mut diagnostics);
    let net = resolved.items.networks[0];
    let budget = nnc_compiler::front::expand::MAX_EVAL_STEPS / 100;
    let graph = nnc_compiler::front::expand::network_within(&resolved.items, net, &mut diagnostics, budget);
    assert!(graph.is_some_and(|g| g.nodes.len() > 500), "{:?}", diagnostics.into_vec());
}

/// Counts that do not fit in 64 bits are errors at the layer where they overflow, not
/// saturated totals printed as 18,446,744,073,709,551,615.
#[test]
fn overflowing_counts_are_errors() {
    // One layer: 2^40 outputs, each a 63×63 window over 16,384 channels (2^66).
    let one = "network n(x: [16384, 8192, 8192]) {\n    x |> conv(16384, 63, pad: 31)\n}\n";
    // Two layers of about 0.94 · 2^64 each: the total overflows at the second.
    let two = "network n(x: [16384, 8192, 8192]) {\n    x |> conv(16384, 31, pad: 15) |> conv(16384, 31, pad: 15)\n}\n";
    for (text, at) in [(one, "2:10"), (two, "2:38")] {
        let Err(Error::Invalid { sources, diagnostics }) = nnc_compiler::compile_str("big.net", text, None)
        else {
            panic!("{text} should be refused");
        };
        assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
        assert!(diagnostics[0].message.contains("than fit in 64 bits"), "{}", diagnostics[0].message);
        let span = diagnostics[0].primary.as_ref().unwrap().span;
        assert!(sources.location(span).ends_with(at), "{}", sources.location(span));
    }
}

/// An arena that could exceed 64 bits (70 activations of 2^58 bytes at batch 65,536, with
/// more multiply-accumulates than 64 bits count) is printed as overflowing, not as a
/// wrapped-around size.
#[test]
fn overflowing_memory_is_printed_as_such() {
    let model =
        common::compile_ok("big.net", "network n(x: [16384, 8192, 8192]) { x |> conv(16384, 1) * 70 }");
    let plan = Plan::new(&model.networks[0], &model.sources, 1 << 16, 1, Target::Cranelift.geometry(), None);
    assert_eq!(plan.memory.arena_bytes, None);
    let text = plan.to_string();
    assert!(text.contains("arena overflows 64 bits (too large to plan)"), "{text}");
    // At batch 1 the same network is planned exactly.
    let small = Plan::new(&model.networks[0], &model.sources, 1, 1, Target::Cranelift.geometry(), None);
    assert!(small.memory.arena_bytes.is_some_and(|b| b >= 2 << 42), "{:?}", small.memory);
}

// ---- fuzzing -------------------------------------------------------------------------
//
// The properties below are a fuzzing harness for the front end. A normal test run tries a
// few cases of each; `NNC_FUZZ_CASES=500000 cargo test --test robustness fuzz_` runs each
// that many times (about an hour on two cores; 3,000 take about 20 s). An input that fails
// goes into `tests/fuzz-corpus/` (proptest prints it), which
// `fuzz_corpus_still_compiles_cleanly` replays on every run.

/// Cases per fuzzing property: `NNC_FUZZ_CASES`, or a few for the normal test suite.
fn fuzz_config() -> ProptestConfig {
    let cases = std::env::var("NNC_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Compile-time integer expressions over the names a block has in scope.
fn int_expr() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        (0i64..300).prop_map(|i| i.to_string()),
        prop::sample::select(vec!["c", "stride", "channels(x)", "-1", "0", "4_294_967_296"])
            .prop_map(String::from),
    ];
    leaf.prop_recursive(3, 12, 2, |inner| {
        prop_oneof![
            (inner.clone(), prop::sample::select(vec!["+", "-", "*", "/", "%"]), inner.clone())
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("if {c} > 1 {{ {a} }} else {{ {b} }}")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("min({a}, {b})")),
        ]
    })
}

/// One pipeline stage: a layer with generated arguments, a block call or a group, maybe
/// repeated.
fn stage() -> impl Strategy<Value = String> {
    let layer = prop_oneof![
        (int_expr(), int_expr(), any::<bool>())
            .prop_map(|(o, k, same)| format!("conv({o}, {k}{})", if same { ", pad: same" } else { "" })),
        (int_expr(), int_expr()).prop_map(|(o, g)| format!("conv({o}, 1, groups: {g})")),
        int_expr().prop_map(|o| format!("dense({o})")),
        int_expr().prop_map(|k| format!("maxpool({k})")),
        int_expr().prop_map(|k| format!("avgpool({k}, stride: 1)")),
        int_expr().prop_map(|h| format!("lstm({h})")),
        int_expr().prop_map(|c| format!("unit({c})")),
        (int_expr(), int_expr()).prop_map(|(c, s)| format!("unit({c}, stride: {s})")),
        prop::sample::select(vec![
            "relu",
            "tanh",
            "sigmoid",
            "flatten",
            "softmax",
            "global_avgpool",
            "batchnorm",
            "batchnorm(eps: -1, momentum: 2)",
            "dropout(0.5)",
            "dropout(2)",
            "lrn(5, alpha: 0)",
            "embedding(8)",
        ])
        .prop_map(String::from),
    ];
    let repeated = (layer, prop::option::of(0u32..4)).prop_map(|(l, r)| match r {
        Some(n) => format!("{l} * {n}"),
        None => l,
    });
    repeated.prop_recursive(2, 8, 3, |inner| {
        prop::collection::vec(inner, 1..4).prop_map(|stages| format!("({})", stages.join(" |> ")))
    })
}

/// A whole model file: an input, a residual block, a pipeline and maybe a train section.
fn model() -> impl Strategy<Value = String> {
    let input = prop_oneof![
        (1u32..8, 1u32..40, 1u32..40).prop_map(|(c, h, w)| format!("[{c}, {h}, {w}]")),
        (1u32..100).prop_map(|n| format!("[{n}]")),
        (1u32..20, 1u32..50).prop_map(|(t, n)| format!("seq[{t}] of onehot({n})")),
        (1u32..20, 1u32..50).prop_map(|(t, n)| format!("seq[{t}] of tokens({n})")),
    ];
    let train = prop::option::of(prop::collection::vec(
        prop::sample::select(vec![
            "optimizer = adam(beta1: 2, beta2: -1, eps: 0)",
            "optimizer = sgd(lr: 0.1, momentum: 0.9, nesterov: true)",
            "optimizer = sgd(momentum: 0)",
            "schedule = step(every: 0)",
            "schedule = cosine",
            "batch = 0",
            "batch = 32",
            "augment = [random_crop(pad: 2), hflip]",
            "mean = [0.5, 0.5]",
            "std = 0",
            "loss = mse",
        ]),
        0..5,
    ));
    (input, prop::collection::vec(stage(), 1..6), int_expr(), train).prop_map(|(input, stages, c, train)| {
        let mut text = format!(
            "block unit(x, c, stride = 1) {{\n    let y = x |> conv(c, 3, stride: stride, pad: 1) |> relu\n    \
             if channels(x) == c and stride == 1 {{ y + x }} else {{ y }}\n}}\n\n\
             network net(x: {input}) {{\n    let c = {c}\n    x |> {}\n}}\n",
            stages.join(" |> ")
        );
        if let Some(settings) = train {
            text += &format!("\ntrain net {{\n    {}\n}}\n", settings.join("\n    "));
        }
        text
    })
}

proptest! {
    #![proptest_config(fuzz_config())]

    /// Generated models reach every stage of the front end: parser, resolver, expander
    /// with shape checking, the train section and the plan.
    #[test]
    fn fuzz_generated_models(text in model()) {
        check_outcome(nnc_compiler::compile_str("fuzz.net", &text, None));
        let _ = nnc_compiler::front::fmt::format("fuzz.net", &text);
    }

    /// Byte-level mutations of the examples: flipped, inserted, deleted and duplicated
    /// bytes, so the loader's UTF-8 and byte-order-mark handling is fuzzed too.
    #[test]
    fn fuzz_mutated_example_bytes(
        which in 0usize..64,
        edits in prop::collection::vec((0usize..100_000, 0usize..16, any::<u8>(), 0u8..4), 1..8),
    ) {
        let examples = common::examples();
        let (_, original) = &examples[which % examples.len()];
        let mut bytes = original.clone().into_bytes();
        for (at, len, byte, kind) in edits {
            let at = at % (bytes.len() + 1);
            let end = (at + len).min(bytes.len());
            match kind {
                0 => { bytes.drain(at..end); }
                1 => bytes.insert(at, byte),
                2 => if at < bytes.len() { bytes[at] ^= byte | 1 },
                _ => { let copy = bytes[at..end].to_vec(); bytes.splice(at..at, copy); }
            }
        }
        match String::from_utf8(bytes) {
            Ok(text) => check_outcome(common::compile_example_text(&text)),
            Err(e) => {
                let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("fuzz");
                std::fs::create_dir_all(&dir).unwrap();
                let bytes = e.into_bytes();
                let hash = bytes.iter().fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(*b as u64));
                let path = dir.join(format!("mutated-{hash:x}.net"));
                std::fs::write(&path, &bytes).unwrap();
                check_outcome(nnc_compiler::compile_file(&path));
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Every input in the regression corpus ends in a plan or in located diagnostics.
#[test]
fn fuzz_corpus_still_compiles_cleanly() {
    let mut n = 0;
    for entry in std::fs::read_dir("tests/fuzz-corpus").unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "net") {
            check_outcome(nnc_compiler::compile_file(&path));
            n += 1;
        }
    }
    assert!(n > 0, "the corpus is empty");
}
