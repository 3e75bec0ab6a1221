//! Every file in `tests/errors/` is a bad model. Each must fail with located diagnostics
//! (file:line:col, the source line, a label), and the rendered text is held as a reviewed
//! snapshot.

use nnc_compiler::support::diagnostic::{Color, render};
use nnc_compiler::{Error, compile_file};
use std::path::Path;

fn diagnose(path: &Path) -> String {
    match compile_file(path) {
        Ok(_) => panic!("{} compiled, but it is in tests/errors", path.display()),
        Err(Error::Read(e)) => panic!("{}: {e}", path.display()),
        Err(Error::Invalid { sources, diagnostics }) => {
            assert!(!diagnostics.is_empty());
            for d in &diagnostics {
                let primary = d
                    .primary
                    .as_ref()
                    .unwrap_or_else(|| panic!("{}: unlocated: {}", path.display(), d.message));
                assert!(!primary.message.is_empty(), "{}: primary label without text", path.display());
                let file = sources.get(primary.span.file);
                assert!(
                    primary.span.end as usize <= file.text.len(),
                    "{}: span past end of file",
                    path.display()
                );
            }
            render(&sources, &diagnostics, Color::Never)
        }
    }
}

#[test]
fn bad_models_have_reviewed_diagnostics() {
    insta::glob!("errors", "*.net", |path| {
        let relative = path.strip_prefix(std::env::current_dir().unwrap()).unwrap();
        insta::assert_snapshot!(diagnose(relative));
    });
}

#[test]
fn the_corpus_covers_many_distinct_mistakes() {
    let n = std::fs::read_dir("tests/errors")
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension().is_some_and(|x| x == "net"))
        .count();
    assert!(n >= 25, "only {n} bad inputs");
}

/// Shape errors name both shapes and label where the other operand came from.
#[test]
fn shape_mismatch_shows_both_shapes_and_their_origins() {
    let text = diagnose(Path::new("tests/errors/add_shape_mismatch.net"));
    assert!(text.contains("cannot add [128, 8, 8] and [64, 16, 16]"), "{text}");
    assert!(text.contains("tests/errors/add_shape_mismatch.net:5:10"), "{text}");
    assert!(text.contains("[64, 16, 16] comes from here"), "{text}");
    assert!(text.contains("[128, 8, 8] comes from here"), "{text}");
    assert!(
        text.contains("help: project the right operand with `conv(128, 1, stride: 2, bias: false)`"),
        "{text}"
    );
}

#[test]
fn independent_mistakes_are_all_reported() {
    let text = diagnose(Path::new("tests/errors/several_independent.net"));
    assert_eq!(text.matches("error:").count(), 3, "{text}");
    let syntax = diagnose(Path::new("tests/errors/syntax_several_items.net"));
    assert_eq!(syntax.matches("error:").count(), 2, "{syntax}");
    let train = diagnose(Path::new("tests/errors/train_errors.net"));
    assert_eq!(train.matches("error:").count(), 4, "{train}");
    let arguments = diagnose(Path::new("tests/errors/several_bad_arguments.net"));
    assert_eq!(arguments.matches("error:").count(), 7, "{arguments}");
}

/// An error inside a block that is used many times is reported once, at the block.
#[test]
fn errors_in_repeated_blocks_are_reported_once() {
    let source = "block unit(x) {\n    x |> conv(8, 3, bais: false)\n}\n\nnetwork net(image: [3, 8, 8]) {\n    image |> unit * 5\n}\n";
    let Err(Error::Invalid { diagnostics, .. }) = nnc_compiler::compile_str("repeat.net", source, None)
    else {
        panic!("expected errors");
    };
    assert_eq!(diagnostics.len(), 1, "{diagnostics:?}");
}

/// An error on a line of megabytes shows a short excerpt around the label, `…` marking
/// the cuts, with the line and column of the original file.
#[test]
fn long_lines_are_cut_around_the_error() {
    let stages = " |> relu".repeat(20_000);
    let source = format!("network n(x: [4]) {{\n    x{stages} |> frobnicate(3){stages}\n}}\n");
    let Err(Error::Invalid { sources, diagnostics }) = nnc_compiler::compile_str("long.net", &source, None)
    else {
        panic!("expected errors");
    };
    let text = render(&sources, &diagnostics, Color::Never);
    assert!(text.lines().all(|l| l.chars().count() < 200), "{text}");
    insta::assert_snapshot!(text);
}
