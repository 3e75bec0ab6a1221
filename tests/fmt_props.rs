//! `nnc fmt` is idempotent and never changes what a model means: for any layout of a
//! valid file (whitespace, line breaks and comments anywhere whitespace may go), the
//! formatted file has the same plan, and formatting it again changes nothing.

mod common;

use proptest::prelude::*;

/// Replacement for each whitespace run: spaces, line breaks, or a comment.
fn layout() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..6, 1..400)
}

/// Rewrites every whitespace run outside strings and comments with a choice from
/// `choices` (cycled); the run after a comment keeps its line break.
fn relayout(text: &str, choices: &[u8]) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    let mut k = 0;
    let mut after_comment = false;
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push(c);
                for d in chars.by_ref() {
                    out.push(d);
                    if d == '"' {
                        break;
                    }
                }
                after_comment = false;
            }
            '#' => {
                out.push(c);
                while let Some(&d) = chars.peek() {
                    if d == '\n' {
                        break;
                    }
                    out.push(d);
                    chars.next();
                }
                after_comment = true;
            }
            c if c.is_whitespace() => {
                while chars.peek().is_some_and(|d| d.is_whitespace()) {
                    chars.next();
                }
                let choice = choices[k % choices.len()];
                k += 1;
                let ws = match choice {
                    0 => " ",
                    1 => "\n",
                    2 => "   ",
                    3 => "\n\n        ",
                    4 => "  # a remark\n",
                    _ => "\t \n ",
                };
                if after_comment && !ws.contains('\n') {
                    out.push('\n');
                }
                out.push_str(ws);
                after_comment = false;
            }
            c => {
                out.push(c);
                after_comment = false;
            }
        }
    }
    out
}

fn format(text: &str) -> String {
    nnc_compiler::front::fmt::format("m.net", text).unwrap_or_else(|(_, d)| panic!("{text}\n{d:?}"))
}

proptest! {
    #[test]
    fn fmt_preserves_the_plan_of_relaid_examples(which in 0usize..64, choices in layout()) {
        let examples = common::examples();
        let (name, original) = &examples[which % examples.len()];
        let text = relayout(original, &choices);
        let before = common::compile_example_text(&text).unwrap_or_else(|_| panic!("{name} relaid:\n{text}"));
        let formatted = format(&text);
        let after = common::compile_example_text(&formatted).unwrap_or_else(|_| panic!("formatted {name}:\n{formatted}"));
        prop_assert_eq!(common::plan_summary(&before), common::plan_summary(&after));
        prop_assert_eq!(format(&formatted), formatted.clone(), "not idempotent");
        // Comments survive: every remark inserted is still there.
        prop_assert_eq!(text.matches('#').count(), formatted.matches('#').count());
    }

    #[test]
    fn fmt_preserves_generated_programs(
        width in 1u64..64, depth in 1usize..5, reps in 0u64..4, choices in layout(), use_if in any::<bool>(),
    ) {
        let shortcut = if use_if {
            "if channels(x) != c or stride > 1 { x |> conv(c, 1, stride: stride) } else { x }"
        } else {
            "x |> conv(c, 1, stride: stride)"
        };
        let text = format!(
            "block unit(x, c, stride = 1) {{\n    let y = x |> conv(c, 3, stride: stride, pad: 1) |> relu\n    let s = {shortcut}\n    relu(y + s)\n}}\n\n\
             network gen(image: [3, 32, 32]) {{\n    init = he\n    image |> conv({width}, 3, pad: 1) |> (unit({width}) |> batchnorm) * {reps}\n          |> unit({width} * 2, stride: 2) * {depth} |> global_avgpool |> dense(10, init: normal(0.01))\n}}\n\n\
             train gen {{\n    optimizer = sgd(lr: 0.1 / 2, momentum: 0.9)\n    augment = [random_crop(pad: 4), hflip]\n}}\n"
        );
        let text = relayout(&text, &choices);
        let before = common::compile_ok("gen.net", &text);
        let formatted = format(&text);
        let after = common::compile_ok("gen.net", &formatted);
        prop_assert_eq!(common::plan_summary(&before), common::plan_summary(&after));
        prop_assert_eq!(format(&formatted), formatted.clone(), "not idempotent; input:\n{}", text);
    }
}

#[test]
fn long_calls_break_one_argument_per_line() {
    let text = "network n(x: [3, 8, 8]) {\n    concat(x |> conv(8, 1) |> relu, x |> conv(8, 3, pad: 1) |> relu, x |> maxpool(3, stride: 1, pad: 1) |> conv(8, 1))\n}\n";
    let formatted = format(text);
    assert_eq!(
        formatted,
        "network n(x: [3, 8, 8]) {\n    concat(\n        x |> conv(8, 1) |> relu,\n        x |> conv(8, 3, pad: 1) |> relu,\n        x |> maxpool(3, stride: 1, pad: 1) |> conv(8, 1),\n    )\n}\n"
    );
    assert_eq!(format(&formatted), formatted);
}

#[test]
fn operators_keep_their_meaning() {
    let text = "network n(x: [10]) {\n    let a = (1 + 2) * 3 - (4 - 5)\n    let b = -(a - 1)\n    let c = not (a > 2 and b < 0) or false\n    x |> dense(a + b + 20) |> dense(if c { 1 } else { 2 })\n}\n";
    let formatted = format(text);
    assert!(formatted.contains("let a = (1 + 2) * 3 - (4 - 5)"), "{formatted}");
    assert!(formatted.contains("let b = -(a - 1)"), "{formatted}");
    assert!(formatted.contains("let c = not (a > 2 and b < 0) or false"), "{formatted}");
    let before = common::compile_ok("o.net", text);
    let after = common::compile_ok("o.net", &formatted);
    assert_eq!(common::plan_summary(&before), common::plan_summary(&after));
}

/// A file that starts with a byte-order mark formats as the same file without it.
#[test]
fn byte_order_marks_are_dropped() {
    let text = "network n(x: [4]) {\n    x |> dense(2)\n}\n";
    assert_eq!(format(&format!("\u{feff}{text}")), format(text));
}
