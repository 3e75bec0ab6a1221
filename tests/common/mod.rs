//! Helpers shared by the integration tests.

#![allow(dead_code)] // each test crate uses a different subset

use nnc_compiler::support::diagnostic::{Color, render};
use nnc_compiler::{Error, Model};
use std::path::PathBuf;

/// Every example file, with its text.
pub fn examples() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir("examples")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "net"))
        .map(|p| (p.display().to_string(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    out.sort();
    out
}

/// Compiles text as if it were a file in `examples/` (so its includes resolve).
pub fn compile_example_text(text: &str) -> Result<Model, Error> {
    nnc_compiler::compile_str("examples/model.net", text, Some(PathBuf::from("examples")))
}

/// Compiles, panicking with the rendered diagnostics if the model is invalid.
pub fn compile_ok(name: &str, text: &str) -> Model {
    match nnc_compiler::compile_str(name, text, None) {
        Ok(m) => m,
        Err(Error::Invalid { sources, diagnostics }) => {
            panic!("{name} should compile:\n{text}\n{}", render(&sources, &diagnostics, Color::Never))
        }
        Err(e) => panic!("{e}"),
    }
}

/// What a plan says about the network, without source positions (which layout changes).
pub fn plan_summary(model: &Model) -> Vec<String> {
    model
        .networks
        .iter()
        .flat_map(|g| {
            let plan = nnc_compiler::report::plan::Plan::new(
                g,
                &model.sources,
                8,
                1,
                nnc_compiler::backend::Target::Cranelift.geometry(),
                model.train_config(&g.name).cloned(),
            );
            let mut lines: Vec<String> = plan
                .rows
                .iter()
                .map(|r| {
                    format!(
                        "{:?} {} {} {} {} {} {}",
                        r.kind, r.depth, r.path, r.op, r.output, r.params, r.macs
                    )
                })
                .collect();
            lines.push(format!("{:?} {:?}", plan.totals, plan.train));
            lines
        })
        .collect()
}
