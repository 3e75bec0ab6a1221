//! nnc's compiler: from a `.net` file to checked layer graphs, then to kernels.
//!
//! The stages, one module each, each producing a printable structure:
//!
//! | stage | module | output |
//! |---|---|---|
//! | 1 | [`front::load`], [`front::syntax`] | the files' ASTs |
//! | 2 | [`front::resolve`] | definitions gathered, names and arguments checked |
//! | 3 | [`front::expand`] | the layer graph ([`ir::graph`]), every shape checked by its rule in [`front::layers`] |
//! | 4 | [`front::train`] | the train section, checked against its network |
//! | 5 | [`passes::lower`] | the tensor-op graph ([`ir::ops`]) |
//! | 6 | [`passes::autodiff`] | the training graph: loss, backward pass and update added |
//! | 7 | [`passes::schedule`] | kernels as loop nests ([`ir::kernel`]) |
//! | 8 | [`passes::memory`] | the arena plan |
//! | 9 | [`backend`] | machine code |
//!
//! Stages 1–4 run in [`compile_file`]; stages 5–8 in [`pipeline`], which every caller uses;
//! stage 9 in the runtime, through [`backend`]. [`report`] prints the shape plan and the
//! DOT graph; [`support`] holds sources, diagnostics and number formats.
//!
//! Nothing here prints: problems come back as [`support::diagnostic::Diagnostic`]s, which
//! the caller renders with [`support::diagnostic::render`].

// Diagnostics travel only on error paths, and rarely; boxing each one to shrink
// `Result<_, Diagnostic>` would cost clarity everywhere for no measurable gain.
#![allow(clippy::result_large_err)]

pub mod backend;
pub mod front;
pub mod ir;
pub mod passes;
pub mod pipeline;
pub mod report;
pub mod support;

use front::train::TrainConfig;
use front::{expand, load, resolve, train};
use ir::graph::Graph;
use std::path::{Path, PathBuf};
use support::diagnostic::{Diagnostic, Diagnostics};
use support::source::SourceMap;

/// A model that passed every check.
#[derive(Debug)]
pub struct Model {
    pub sources: SourceMap,
    /// The main file's networks, in source order.
    pub networks: Vec<Graph>,
    /// The main file's train sections, checked.
    pub trains: Vec<TrainConfig>,
    /// Problems that do not stop compilation (unused bindings).
    pub warnings: Vec<Diagnostic>,
}

impl Model {
    pub fn network(&self, name: &str) -> Option<&Graph> {
        self.networks.iter().find(|g| g.name == name)
    }

    pub fn train_config(&self, network: &str) -> Option<&TrainConfig> {
        self.trains.iter().find(|t| t.network == network)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The main file could not be read (a usage or I/O problem, not a model error).
    #[error(transparent)]
    Read(#[from] load::ReadError),
    /// The model has errors, each a located diagnostic.
    #[error("the model has {} error{}", .diagnostics.len(), if .diagnostics.len() == 1 { "" } else { "s" })]
    Invalid { sources: SourceMap, diagnostics: Vec<Diagnostic> },
}

/// Stack for the compiler's thread: evaluation recurses through nested expressions and
/// block calls, whose depth the limits in [`syntax`] and [`expand`] bound; this leaves a
/// wide margin under those bounds even in unoptimised builds.
const STACK_BYTES: usize = 256 << 20;

/// Compiles a model file and everything it includes.
pub fn compile_file(path: &Path) -> Result<Model, Error> {
    let path = path.to_path_buf();
    on_big_stack(move || {
        let (program, diagnostics) = load::load(&path)?;
        compile_program(&program, diagnostics)
    })
}

/// Compiles source text that is not in a file; `include`s resolve against `dir`.
pub fn compile_str(name: &str, text: &str, dir: Option<PathBuf>) -> Result<Model, Error> {
    let (name, text) = (name.to_string(), text.to_string());
    on_big_stack(move || {
        let (program, diagnostics) = load::load_str(&name, &text, dir);
        compile_program(&program, diagnostics)
    })
}

fn on_big_stack<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::Builder::new()
        .name("nnc-compile".into())
        .stack_size(STACK_BYTES)
        .spawn(f)
        .and_then(|h| h.join().map_err(|_| std::io::Error::other("compiler thread failed")))
        .unwrap_or_else(|e| panic!("cannot run the compiler thread: {e}"))
}

fn compile_program(program: &load::Program, mut diagnostics: Diagnostics) -> Result<Model, Error> {
    // A failed compilation reports only its errors: the warnings that accompany them are
    // mostly their consequences (a misspelt name leaves the intended one unused).
    let invalid = |diagnostics: Diagnostics| Error::Invalid {
        sources: program.sources.clone(),
        diagnostics: diagnostics.into_vec().into_iter().filter(Diagnostic::is_error).collect(),
    };
    // Syntax errors leave items missing; checking the rest would report phantom
    // "unknown name" errors for them.
    if diagnostics.has_errors() {
        return Err(invalid(diagnostics));
    }
    let resolved = resolve::resolve(program, &mut diagnostics);
    let mut networks = Vec::new();
    if resolved.expandable {
        for net in &resolved.items.networks {
            if let Some(g) = expand::network(&resolved.items, net, &mut diagnostics) {
                networks.push(g);
            }
        }
    }
    let mut trains = Vec::new();
    for t in &resolved.items.trains {
        let graph = networks.iter().find(|g: &&Graph| g.name == t.network.name);
        if let Some(cfg) = train::check(t, graph, &mut diagnostics) {
            trains.push(cfg);
        }
    }
    if diagnostics.has_errors() {
        return Err(invalid(diagnostics));
    }
    Ok(Model { sources: program.sources.clone(), networks, trains, warnings: diagnostics.into_vec() })
}
