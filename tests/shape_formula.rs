//! Random chains of conv, pooling and dense layers get exactly the output shapes and
//! parameter counts the textbook formulas give (PyTorch's conventions), and a chain whose
//! window stops fitting is refused with a located "does not fit" error.

mod common;

use nnc_compiler::Error;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Conv { out: u64, k: u64, s: u64, p: u64, d: u64, grouped: bool, bias: bool },
    ConvSame { out: u64, k: u64, s: u64 },
    Pool { max: bool, k: u64, s: Option<u64>, p: u64, ceil: bool },
    Act(&'static str),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u64..24, 1u64..6, 1u64..4, 0u64..3, 1u64..3, any::<bool>(), any::<bool>())
            .prop_map(|(out, k, s, p, d, grouped, bias)| Op::Conv { out, k, s, p, d, grouped, bias }),
        1 => (1u64..16, 1u64..6, 1u64..4).prop_map(|(out, k, s)| Op::ConvSame { out, k, s }),
        3 => (any::<bool>(), 1u64..5, prop::option::of(1u64..4), 0u64..3, any::<bool>())
            .prop_map(|(max, k, s, p, ceil)| Op::Pool { max, k, s, p: p.min(k / 2), ceil }),
        1 => prop::sample::select(vec!["relu", "tanh", "sigmoid", "batchnorm", "dropout(0.1)"]).prop_map(Op::Act),
    ]
}

/// Output length of a sliding window, as PyTorch computes it; `None` if it does not fit.
fn window(input: u64, k: u64, s: u64, p: u64, d: u64, ceil: bool) -> Option<u64> {
    let span = d * (k - 1) + 1;
    if input + 2 * p < span {
        return None;
    }
    let room = input + 2 * p - span;
    if !ceil {
        return Some(room / s + 1);
    }
    let mut out = room.div_ceil(s) + 1;
    if (out - 1) * s >= input + p {
        out -= 1;
    }
    Some(out)
}

proptest! {
    #[test]
    fn chains_follow_the_textbook_formulas(
        c in 1u64..8, h in 1u64..48, w in 1u64..48,
        ops in prop::collection::vec(op(), 1..8),
        dense in prop::option::of(1u64..50),
    ) {
        let input = (c, h, w);
        let (mut c, mut h, mut w) = input;
        let mut stages = Vec::new();
        // (output shape, trainable parameters) expected per layer, or the stage that fails.
        let mut expected: Vec<(String, u64)> = Vec::new();
        let mut fails_at = None;
        for op in &ops {
            let (text, next, params) = match *op {
                Op::Conv { out, k, s, p, d, grouped, bias } => {
                    // Two groups when both channel counts allow it.
                    let g = if grouped && c % 2 == 0 { 2 } else { 1 };
                    let out = out * g;
                    let text = format!("conv({out}, {k}, stride: {s}, pad: {p}, dilation: {d}, groups: {g}, bias: {bias})");
                    let next = window(h, k, s, p, d, false).zip(window(w, k, s, p, d, false));
                    let params = out * (c / g) * k * k + if bias { out } else { 0 };
                    (text, next.map(|(a, b)| (out, a, b)), params)
                }
                Op::ConvSame { out, k, s } => {
                    let text = format!("conv({out}, {k}, stride: {s}, pad: same)");
                    (text, Some((out, h.div_ceil(s), w.div_ceil(s))), out * c * k * k + out)
                }
                Op::Pool { max, k, s, p, ceil } => {
                    let name = if max { "maxpool" } else { "avgpool" };
                    let stride = s.unwrap_or(k);
                    let text = match s {
                        Some(s) => format!("{name}({k}, stride: {s}, pad: {p}, ceil: {ceil})"),
                        None => format!("{name}({k}, pad: {p}, ceil: {ceil})"),
                    };
                    let next = window(h, k, stride, p, 1, ceil).zip(window(w, k, stride, p, 1, ceil));
                    (text, next.map(|(a, b)| (c, a, b)), 0)
                }
                Op::Act(a) => {
                    let params = if a == "batchnorm" { 2 * c } else { 0 };
                    (a.to_string(), Some((c, h, w)), params)
                }
            };
            stages.push(text);
            match next {
                Some((nc, nh, nw)) => {
                    (c, h, w) = (nc, nh, nw);
                    expected.push((format!("[{c}, {h}, {w}]"), params));
                }
                None => {
                    fails_at = Some(stages.len() - 1);
                    break;
                }
            }
        }
        if fails_at.is_none()
            && let Some(n) = dense {
                stages.push("flatten".into());
                expected.push((format!("[{}]", c * h * w), 0));
                stages.push(format!("dense({n})"));
                expected.push((format!("[{n}]"), c * h * w * n + n));
            }
        let source = format!(
            "network chain(x: [{}, {}, {}]) {{\n    x\n    |> {}\n}}\n",
            input.0, input.1, input.2, stages.join("\n    |> ")
        );
        let result = nnc_compiler::compile_str("chain.net", &source, None);
        match fails_at {
            None => {
                let model = result.unwrap_or_else(|e| match e {
                    Error::Invalid { sources, diagnostics } => panic!("{source}\n{}", nnc_compiler::support::diagnostic::render(&sources, &diagnostics, nnc_compiler::support::diagnostic::Color::Never)),
                    e => panic!("{e}"),
                });
                let g = &model.networks[0];
                let got: Vec<(String, u64)> = g.nodes[1..].iter().map(|n| (n.shape.to_string(), n.trainable_params())).collect();
                prop_assert_eq!(got, expected, "{}", source);
            }
            Some(stage) => {
                let Err(Error::Invalid { sources, diagnostics }) = result else {
                    panic!("expected a shape error at stage {stage}:\n{source}");
                };
                prop_assert_eq!(diagnostics.len(), 1);
                prop_assert!(diagnostics[0].message.contains("does not fit"), "{}", diagnostics[0].message);
                // The error points at the failing stage: line 3 is the first stage.
                let span = diagnostics[0].primary.as_ref().unwrap().span;
                prop_assert_eq!(sources.line(span), stage + 3);
            }
        }
    }
}
