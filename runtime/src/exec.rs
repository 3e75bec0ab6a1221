//! Running a compiled network: the pipeline's stages and code generation once, then the
//! kernels in order over one arena as often as needed.

use crate::arena::{AllocError, Arena};
use crate::pool::Pool;
use nnc_compiler::backend::{self, Backend, Code, CodegenError, Target};
use nnc_compiler::ir::graph::Graph;
use nnc_compiler::ir::kernel::{Parallel, Program};
use nnc_compiler::ir::ops::{TensorGraph, TensorId};
use nnc_compiler::passes::memory::MemoryPlan;
use nnc_compiler::pipeline::{self, Stages};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Worker threads (including the caller's).
    pub threads: usize,
    /// Surround every buffer with canary bytes and check them after each kernel.
    pub guard: bool,
    /// Run Cranelift's verifier on the generated IR.
    pub verify: bool,
    /// Use FMA where the CPU has it (in Cranelift's code; an x86 instruction set's
    /// products always do).
    pub fma: bool,
    /// The back end that generates the code.
    pub target: Target,
}

impl Options {
    /// The back end that generates the code, with these options.
    pub fn backend(&self) -> Box<dyn Backend> {
        self.target.backend(backend::Options { verify: self.verify, fma: self.fma })
    }

    /// What the pipeline's scheduling and memory planning need of these options,
    /// `geometry` being the back end's.
    pub fn stages(&self) -> pipeline::Options {
        pipeline::Options {
            threads: self.threads.max(1),
            guard: if self.guard { GUARD_BYTES } else { 0 },
            geometry: self.backend().geometry(),
        }
    }
}

impl Default for Options {
    fn default() -> Options {
        Options {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            guard: false,
            verify: cfg!(debug_assertions),
            fma: true,
            target: Target::default(),
        }
    }
}

/// Time spent in each compilation stage.
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    pub stages: pipeline::Timings,
    pub codegen: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Pipeline(#[from] pipeline::Error),
    #[error(transparent)]
    Codegen(#[from] CodegenError),
    #[error(transparent)]
    Alloc(#[from] AllocError),
    #[error("kernel {kernel} wrote outside its buffers: the guard bytes {side} `{buffer}` were overwritten")]
    Guard { kernel: String, buffer: String, side: &'static str },
    #[error("cannot start worker threads: {0}")]
    Threads(std::io::Error),
    #[error("there is no kernel {kernel}: the network has {count}")]
    NoKernel { kernel: usize, count: usize },
}

/// Bytes written around every buffer in guard mode.
const GUARD_BYTES: usize = 64;
/// The canary: a signalling-NaN bit pattern that computed floats never produce.
const CANARY: [u8; 4] = 0x7fa5_a5a5u32.to_le_bytes();

/// A network compiled for one batch size, with its buffers.
///
/// Its parts are private: the program was verified against its memory plan when the
/// [`Stages`] were made, and the machine code, the arena and the extents `run_kernel`
/// hands that code all come from the same verified program, which nothing can change
/// afterwards.
pub struct Executable {
    // Dropped first: the workers are joined before the code they ran is freed.
    pool: Option<Pool>,
    graph: TensorGraph,
    program: Program,
    plan: MemoryPlan,
    timings: Timings,
    compiled: Box<dyn Code>,
    arena: Arena,
}

impl Executable {
    /// Compiles a checked network for `batch` examples per run.
    pub fn build(network: &Graph, batch: usize, options: &Options) -> Result<Executable, Error> {
        Executable::new(pipeline::inference(network, batch, options.stages())?, options)
    }

    /// Compiles an already lowered graph (tests build single ops this way).
    pub fn from_ops(graph: TensorGraph, options: &Options) -> Result<Executable, Error> {
        Executable::new(pipeline::from_ops(graph, options.stages())?, options)
    }

    /// Generates code for the pipeline's artefacts and allocates their arena. `Stages`
    /// exist only verified (see [`pipeline`]), so their program is safe to run.
    pub fn new(stages: Stages, options: &Options) -> Result<Executable, Error> {
        let (graph, program, plan, stages) = stages.into_parts();
        let compiled = options.backend().compile(&program, &plan)?;
        let timings = Timings { stages, codegen: compiled.time() };
        let arena = Arena::new(plan.size)?;
        let threads = program.threads;
        let pool = if threads > 1 { Some(Pool::new(threads).map_err(Error::Threads)?) } else { None };
        let mut e = Executable { pool, graph, program, plan, timings, compiled, arena };
        if e.plan.guard > 0 {
            for i in 0..e.plan.regions.len() {
                if e.plan.regions[i].live.is_none() {
                    e.arm(i);
                }
            }
        }
        Ok(e)
    }

    /// The tensor graph the kernels compute.
    pub fn graph(&self) -> &TensorGraph {
        &self.graph
    }

    /// The verified kernels.
    pub fn program(&self) -> &Program {
        &self.program
    }

    /// Where every buffer lives in the arena.
    pub fn plan(&self) -> &MemoryPlan {
        &self.plan
    }

    pub fn timings(&self) -> Timings {
        self.timings
    }

    /// What generated kernel `k`'s heaviest code (see [`Code::generator`]).
    pub fn generator(&self, k: usize) -> &'static str {
        self.compiled.generator(k)
    }

    /// The values of a stored tensor (parameters in their internal layout).
    pub fn tensor(&self, t: TensorId) -> &[f32] {
        let offset = self.plan.tensors[t.0 as usize].expect("the tensor is stored");
        self.arena.floats(offset, self.graph.tensor(t).len())
    }

    pub fn tensor_mut(&mut self, t: TensorId) -> &mut [f32] {
        let offset = self.plan.tensors[t.0 as usize].expect("the tensor is stored");
        let len = self.graph.tensor(t).len();
        self.arena.floats_mut(offset, len)
    }

    /// Fills every parameter from its initialiser, reproducibly from `seed`.
    pub fn init_params(&mut self, seed: u64) {
        let params: Vec<(TensorId, nnc_compiler::ir::ops::ParamInfo)> =
            self.graph.params().map(|(t, p)| (t, p.clone())).collect();
        for (t, info) in params {
            let mut rng = crate::init::Rng::stream(seed, &info.name);
            let torch = crate::init::values(info.init, &info.torch_dims, &mut rng);
            let internal = crate::init::to_internal(&info, &torch);
            self.tensor_mut(t).copy_from_slice(&internal);
        }
    }

    pub fn output(&self) -> &[f32] {
        self.tensor(self.graph.output)
    }

    /// Threads kernels are split across.
    pub fn threads(&self) -> usize {
        self.program.threads
    }

    /// Runs every kernel once, splitting parallel kernels across the worker threads.
    pub fn run(&mut self) -> Result<(), Error> {
        for k in 0..self.program.kernels.len() {
            self.run_kernel(k)?;
        }
        Ok(())
    }

    /// Runs kernel `k` alone (for profiling; its inputs are whatever the arena holds).
    pub fn run_kernel(&mut self, k: usize) -> Result<(), Error> {
        let count = self.program.kernels.len();
        let Some(parallel) = self.program.kernels.get(k).map(|kernel| kernel.parallel) else {
            return Err(Error::NoKernel { kernel: k, count });
        };
        if self.plan.guard > 0 {
            self.arm_kernel(k);
        }
        let Some(code) = self.compiled.kernel(k) else { return Err(Error::NoKernel { kernel: k, count }) };
        let arena = self.arena.as_mut_ptr();
        // SAFETY (all three): the verifier proved that every address kernel `k` reaches,
        // for every share of `0..extent` with this very `extent` (its program is private
        // and unchanged since), lies inside a buffer of this memory plan, all of which lie
        // inside the arena of `plan.size` bytes, with a scratch copy for each of the
        // program's threads — which is the pool's thread count. `code` borrows the
        // compiled module, so the code lives through the call.
        match (parallel, &mut self.pool) {
            (Parallel::Loop { extent }, Some(pool)) => unsafe {
                pool.run(code.as_fn(), arena, extent as u64)
            },
            (Parallel::Loop { extent }, None) => unsafe { code.call(arena, 0, extent as u64, 0) },
            // The verifier made the team as large as the pool, or 1 without one.
            (Parallel::Team { .. }, Some(pool)) => unsafe { pool.run_team(code.as_fn(), arena) },
            (Parallel::Team { .. }, None) => unsafe { code.call(arena, 0, 1, 0) },
            (Parallel::Serial, _) => unsafe { code.call(arena, 0, 1, 0) },
        }
        if self.plan.guard > 0 {
            self.check(k)?;
        }
        Ok(())
    }

    /// Writes the canaries of the buffers that come alive at kernel `k`.
    fn arm_kernel(&mut self, k: usize) {
        for i in 0..self.plan.regions.len() {
            if self.plan.regions[i].live.is_some_and(|(first, _)| first == k) {
                self.arm(i);
            }
        }
    }

    fn arm(&mut self, region: usize) {
        let r = self.plan.regions[region].clone();
        let g = self.plan.guard;
        let bytes = self.arena.bytes_mut();
        for copy in 0..r.copies {
            let at = r.offset + copy * r.stride;
            for range in [at - g..at, at + r.bytes..at + r.bytes + g] {
                for (i, b) in bytes[range].iter_mut().enumerate() {
                    *b = CANARY[i % 4];
                }
            }
        }
    }

    /// Checks the canaries of every buffer live during kernel `k`.
    fn check(&self, k: usize) -> Result<(), Error> {
        let g = self.plan.guard;
        let bytes = self.arena.bytes();
        for r in &self.plan.regions {
            if r.live.is_some_and(|(first, last)| k < first || k > last) {
                continue;
            }
            for copy in 0..r.copies {
                let at = r.offset + copy * r.stride;
                for (side, range) in [("before", at - g..at), ("after", at + r.bytes..at + r.bytes + g)] {
                    if bytes[range].iter().enumerate().any(|(i, b)| *b != CANARY[i % 4]) {
                        return Err(Error::Guard {
                            kernel: self.program.kernels[k].name.clone(),
                            buffer: r.name.clone(),
                            side,
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nnc_compiler::front::layers::activation::Activation;
    use nnc_compiler::ir::ops::{Op, OpNode, Origin, Role, Tensor};

    /// `y = relu(x)` over 8 elements, compiled in guard mode.
    fn guarded() -> Executable {
        let tensor = |name: &str, role| Tensor {
            name: name.into(),
            dims: vec![8],
            role,
            view: None,
            origin: Origin::Named,
        };
        let graph = TensorGraph {
            batch: 1,
            tensors: vec![tensor("x", Role::Input), tensor("y", Role::Activation)],
            ops: vec![OpNode {
                op: Op::Elementwise { len: 8, f: Activation::Relu.function() },
                inputs: vec![TensorId(0)],
                output: TensorId(1),
                aux: Vec::new(),
                layer: "relu".into(),
            }],
            inputs: vec![TensorId(0)],
            one_hot: Vec::new(),
            output: TensorId(1),
        };
        let options = Options { threads: 1, guard: true, verify: true, fma: true, target: Target::default() };
        Executable::from_ops(graph, &options).expect("compiles")
    }

    /// The canaries catch a byte changed on either side of a live buffer, and name the
    /// kernel, the buffer and the side. (The verifier keeps generated code from doing
    /// this, so the write is made here by hand.)
    #[test]
    fn a_changed_canary_is_reported() {
        for (side, before) in [("after", false), ("before", true)] {
            let mut e = guarded();
            e.run().expect("an untouched run passes");
            let region = e.plan.regions.iter().find(|r| r.name == "y").expect("y has a region").clone();
            let at = if before { region.offset - 1 } else { region.offset + region.bytes };
            e.arena.bytes_mut()[at] ^= 1;
            match e.check(0) {
                Err(Error::Guard { kernel, buffer, side: s }) => {
                    assert_eq!((kernel.as_str(), buffer.as_str(), s), ("k0", "y", side));
                }
                other => panic!("the changed canary went unnoticed: {other:?}"),
            }
        }
    }

    #[test]
    fn a_kernel_that_does_not_exist_is_an_error() {
        let mut e = guarded();
        assert!(matches!(e.run_kernel(1), Err(Error::NoKernel { kernel: 1, count: 1 })));
    }
}
