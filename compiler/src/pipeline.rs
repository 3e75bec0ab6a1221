//! The driver of the stages after the front end. Every caller that turns a checked
//! network into kernels — the runtime's executables and training steps, `nnc compile
//! --emit` and `--train`, the shape plan's memory figures, tests — goes through these
//! functions, so the stages always run in the same order and each one's artefact is kept
//! for whoever wants to print or check it:
//!
//! ```text
//! layer graph ─5 lower─▶ tensor graph ─6 autodiff─▶ training graph
//!                             └────────────┬───────────────┘
//!                          7 schedule ─▶ kernels ─8 memory─▶ arena plan ─9 backend─▶ code
//! ```
//!
//! Stage 9 (code generation) is [`crate::backend`]; the runtime calls it on the
//! [`Stages`] returned here.
//!
//! The verifier ([`crate::passes::verify`]) checks the tensor graph before scheduling and
//! the kernels against their memory plan after planning. [`Stages`] can only be made
//! here, after both checks, so holding one is proof that its program is safe to compile.

use crate::backend::Geometry;
use crate::front::train::Loss;
use crate::ir::graph::Graph;
use crate::ir::kernel::Program;
use crate::ir::ops::{TensorGraph, UpdateRule};
use crate::passes::autodiff::{self, AutodiffError, Training};
use crate::passes::lower::{Mode, lower_for};
use crate::passes::memory::{self, MemoryPlan};
use crate::passes::schedule::schedule;
use crate::passes::verify::{self, VerifyError};
use std::time::{Duration, Instant};

/// What shapes the kernels and the arena (not the code): the thread count scratch is
/// sized for, the canary bytes around every buffer (0 unless guarding), and the geometry
/// of the back end that will generate the code ([`crate::backend::Backend::geometry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    pub threads: usize,
    pub guard: usize,
    pub geometry: Geometry,
}

/// Time each stage took.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub lower: Duration,
    pub autodiff: Duration,
    pub schedule: Duration,
    pub memory: Duration,
    /// Both checks of the verifier.
    pub verify: Duration,
}

/// The artefacts of stages 5–8: the tensor graph (with the backward pass when training),
/// its kernels and their arena, verified. The fields are private so that what was
/// verified cannot be changed afterwards.
#[derive(Clone, Debug)]
pub struct Stages {
    graph: TensorGraph,
    program: Program,
    memory: MemoryPlan,
    timings: Timings,
}

impl Stages {
    pub fn graph(&self) -> &TensorGraph {
        &self.graph
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    pub fn memory(&self) -> &MemoryPlan {
        &self.memory
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// The verified parts, for code generation.
    pub fn into_parts(self) -> (TensorGraph, Program, MemoryPlan, Timings) {
        (self.graph, self.program, self.memory, self.timings)
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum Error {
    #[error(transparent)]
    Autodiff(#[from] AutodiffError),
    #[error("the network's buffers at this batch size would not fit in this machine's address space")]
    TooLarge,
    /// A bug in a pass, or a hand-built graph or program: never compiled. Boxed: it is
    /// rare, and large next to the other errors every caller's `Result` carries.
    #[error("internal error: the verifier rejected the compiled network: {0}")]
    Verify(Box<VerifyError>),
}

impl From<VerifyError> for Error {
    fn from(e: VerifyError) -> Error {
        Error::Verify(Box::new(e))
    }
}

/// Stages 5, 7 and 8 for running `network` on `batch` examples.
pub fn inference(network: &Graph, batch: usize, options: Options) -> Result<Stages, Error> {
    let t = Instant::now();
    let graph = crate::passes::lower::lower(network, batch);
    let lower = t.elapsed();
    let mut stages = from_ops(graph, options)?;
    stages.timings.lower = lower;
    Ok(stages)
}

/// Stages 5–8 for one training step of `network` on `batch` examples: the forward pass in
/// training mode, `loss`, the backward pass and the update `rule`.
pub fn training(
    network: &Graph,
    loss: Loss,
    rule: UpdateRule,
    batch: usize,
    options: Options,
) -> Result<(Stages, Training), Error> {
    let t = Instant::now();
    let forward = lower_for(network, batch, Mode::Training);
    let lower = t.elapsed();
    let t = Instant::now();
    let (graph, training) = autodiff::training(forward, loss, rule)?;
    let autodiff = t.elapsed();
    let mut stages = from_ops(graph, options)?;
    stages.timings.lower = lower;
    stages.timings.autodiff = autodiff;
    Ok((stages, training))
}

/// Stages 7 and 8 for a tensor graph built some other way (tests build single ops).
pub fn from_ops(graph: TensorGraph, options: Options) -> Result<Stages, Error> {
    let t = Instant::now();
    verify::graph(&graph)?;
    let checked = t.elapsed();
    let t = Instant::now();
    let program = schedule(&graph, options.threads.max(1), options.geometry);
    let scheduled = t.elapsed();
    let mut stages = plan(graph, program, options)?;
    stages.timings.schedule = scheduled;
    stages.timings.verify += checked;
    Ok(stages)
}

/// Stage 8 for kernels that are already scheduled (tests build programs by hand); the
/// graph and the program are verified like the pipeline's own.
pub fn from_program(graph: TensorGraph, program: Program, options: Options) -> Result<Stages, Error> {
    let t = Instant::now();
    verify::graph(&graph)?;
    let checked = t.elapsed();
    let mut stages = plan(graph, program, options)?;
    stages.timings.verify += checked;
    Ok(stages)
}

/// Stage 8, then the program checked against its plan.
fn plan(graph: TensorGraph, program: Program, options: Options) -> Result<Stages, Error> {
    let t = Instant::now();
    // Planning indexes by the tensors kernels name.
    verify::references(&graph, &program)?;
    // Every offset and total the plan adds up then fits too.
    memory::bound(&graph, &program, options.guard).ok_or(Error::TooLarge)?;
    let memory = memory::plan(&graph, &program, options.guard);
    let planned = t.elapsed();
    let t = Instant::now();
    verify::program(&graph, &program, &memory)?;
    let timings = Timings { memory: planned, verify: t.elapsed(), ..Timings::default() };
    Ok(Stages { graph, program, memory, timings })
}
