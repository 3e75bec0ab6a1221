//! Stage 9, the Cranelift back end: code generation. Each kernel becomes one Cranelift
//! function, all in one JIT module, with every shape, stride and offset a constant.
//!
//! A kernel's function has the signature
//! `extern "C" fn(arena: *mut u8, start: u64, end: u64, thread: u64)`: the arena holds
//! every buffer at the offset the memory plan gave it; `start..end` is the part of the
//! kernel's parallel dimension this call computes; `thread` selects the scratch copies.

mod backward;
mod emit;
mod gemm;
mod loss;
mod map;
mod math;
pub mod probe;
mod rows;
mod sum;
mod unfold;
mod window;

use crate::ir::kernel::{Parallel, Program, Stmt};
use crate::passes::memory::MemoryPlan;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};
use emit::Emit;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::time::{Duration, Instant};

/// A generated kernel.
pub type KernelFn = unsafe extern "C" fn(arena: *mut u8, start: u64, end: u64, thread: u64);

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Run Cranelift's IR verifier on every function (tests; costs ~20 % compile time).
    pub verify: bool,
    /// Use FMA instructions where the CPU has them; off, products use a multiply and an
    /// add (what CPUs without FMA get; tests turn it off to check that path).
    pub fma: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options { verify: cfg!(debug_assertions), fma: true }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("this CPU is not supported by the code generator: {0}")]
    Host(String),
    #[error("code generation failed in kernel {kernel}: {message}")]
    Kernel { kernel: String, message: String },
}

/// Machine code for a program. The code is freed when this value is dropped, so the
/// functions are handed out only as [`Kernel`]s that borrow it.
pub struct Compiled {
    /// Taken (and their memory freed) only in `drop`.
    modules: ManuallyDrop<[JITModule; 2]>,
    kernels: Vec<KernelFn>,
    /// Whether the host has FMA (otherwise multiply-add pairs were generated).
    pub fma: bool,
    /// Time spent building IR and compiling it.
    pub time: Duration,
}

impl Compiled {
    /// The code of kernel `k`, valid while `self` is borrowed.
    pub fn kernel(&self, k: usize) -> Option<Kernel<'_>> {
        self.kernels.get(k).map(|&f| Kernel { f, _code: PhantomData })
    }

    pub fn len(&self) -> usize {
        self.kernels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kernels.is_empty()
    }
}

impl Drop for Compiled {
    fn drop(&mut self) {
        // SAFETY: `modules` is not used again; no `Kernel` outlives `self` (each borrows
        // it), so none of the functions runs now or is called afterwards.
        let modules = unsafe { ManuallyDrop::take(&mut self.modules) };
        for m in modules {
            // SAFETY: as above.
            unsafe { m.free_memory() };
        }
    }
}

/// A generated kernel, borrowed from the [`Compiled`] code it lives in.
#[derive(Clone, Copy)]
pub struct Kernel<'a> {
    f: KernelFn,
    _code: PhantomData<&'a Compiled>,
}

impl Kernel<'_> {
    /// Runs the kernel on the units `start..end` of its parallel dimension.
    ///
    /// # Safety
    /// `arena` must hold the memory plan the program was compiled for (`plan.size`
    /// bytes, writable, not otherwise in use), `end` must not exceed the kernel's
    /// parallel extent (1 when serial), and `thread` must be below the thread count its
    /// scratch was planned for; calls that run at the same time must have disjoint ranges
    /// and different threads.
    pub unsafe fn call(&self, arena: *mut u8, start: u64, end: u64, thread: u64) {
        // SAFETY: as the caller promised.
        unsafe { (self.f)(arena, start, end, thread) }
    }

    /// The function pointer, for a thread pool to call under [`Kernel::call`]'s contract.
    /// It is valid only while the `Compiled` it came from lives.
    pub fn as_fn(&self) -> KernelFn {
        self.f
    }
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compiled({} kernels)", self.kernels.len())
    }
}

/// A JIT module for the host CPU at an optimisation level, and whether the CPU has FMA.
fn module(opt_level: &str, verify: bool) -> Result<(JITModule, bool), CodegenError> {
    let host = |e: &dyn std::fmt::Display| CodegenError::Host(e.to_string());
    let mut flags = settings::builder();
    flags.set("opt_level", opt_level).map_err(|e| host(&e))?;
    flags.set("enable_verifier", if verify { "true" } else { "false" }).map_err(|e| host(&e))?;
    let isa_builder = cranelift_native::builder().map_err(|e| host(&e))?;
    let isa = isa_builder.finish(settings::Flags::new(flags)).map_err(|e| host(&e))?;
    let fma = isa.isa_flags().iter().any(|f| f.name == "has_fma" && f.as_bool() == Some(true));
    Ok((JITModule::new(JITBuilder::with_isa(isa, cranelift_module::default_libcall_names())), fma))
}

fn has_gemm(stmts: &[Stmt]) -> bool {
    stmts.iter().any(|s| match s {
        Stmt::Gemm(_) => true,
        Stmt::Loop { body, .. } => has_gemm(body),
        _ => false,
    })
}

/// Compiles every kernel of `program` for the host CPU.
///
/// Kernels with a matrix product go into a module compiled without optimisation: the
/// optimiser's re-placement of loads pushes a register tile into spills, while the IR
/// the emitter writes is already in the order the tile needs (53 against 37 GFLOP/s for
/// a 64×64×64 product on one core). Every other kernel is optimised, which hoists the
/// polynomial constants of `exp` and `tanh` out of their loops.
pub fn compile(program: &Program, plan: &MemoryPlan, options: Options) -> Result<Compiled, CodegenError> {
    let started = Instant::now();
    let (fast, fma) = module("speed", options.verify)?;
    let (ordered, _) = module("none", options.verify)?;
    let mut modules = [fast, ordered];
    let mut ids = Vec::with_capacity(program.kernels.len());
    let mut fbc = FunctionBuilderContext::new();
    for (index, kernel) in program.kernels.iter().enumerate() {
        let which = usize::from(has_gemm(&kernel.body));
        let module = &mut modules[which];
        let fail = |message: String| CodegenError::Kernel { kernel: kernel.name.clone(), message };
        let ptr = module.target_config().pointer_type();
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(ptr));
        for _ in 0..3 {
            sig.params.push(AbiParam::new(types::I64));
        }
        let id =
            module.declare_function(&kernel.name, Linkage::Local, &sig).map_err(|e| fail(e.to_string()))?;
        let mut ctx = module.make_context();
        ctx.func.signature = sig;
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
            let entry = b.create_block();
            b.append_block_params_for_function_params(entry);
            b.switch_to_block(entry);
            let params = b.block_params(entry).to_vec();
            let mut e = Emit {
                b: &mut b,
                plan,
                kernel: index,
                arena: params[0],
                start: params[1],
                end: params[2],
                thread: params[3],
                vars: Default::default(),
                // In-place ops (optimizer updates) read what they write.
                read_only: kernel.reads.iter().filter(|t| !kernel.writes.contains(t)).copied().collect(),
                has_fma: fma && options.fma,
            };
            e.stmts(&kernel.body, kernel.parallel);
            b.ins().return_(&[]);
            b.seal_all_blocks();
            b.finalize(module.target_config());
        }
        module.define_function(id, &mut ctx).map_err(|e| fail(format!("{e:?}")))?;
        ids.push((which, id));
    }
    for m in &mut modules {
        m.finalize_definitions().map_err(|e| CodegenError::Host(e.to_string()))?;
    }
    let kernels = ids
        .into_iter()
        .map(|(which, id)| {
            // SAFETY: each function was defined above with exactly this signature, and the
            // modules that own the code live in the returned value.
            unsafe { std::mem::transmute::<*const u8, KernelFn>(modules[which].get_finalized_function(id)) }
        })
        .collect();
    Ok(Compiled { modules: ManuallyDrop::new(modules), kernels, fma, time: started.elapsed() })
}

impl Emit<'_, '_> {
    /// Emits statements; with `Parallel::Loop`, the first (a loop) runs over
    /// `start..end` instead of its full extent, and the statements after it (an
    /// optimizer update's tail) run once, in the call whose share ends the loop.
    fn stmts(&mut self, stmts: &[Stmt], parallel: Parallel) {
        for (i, s) in stmts.iter().enumerate() {
            match s {
                Stmt::Loop { var, extent, body } => {
                    if i == 0 && matches!(parallel, Parallel::Loop { .. }) {
                        let (from, to) = (self.start, self.end);
                        self.for_range(Some(*var), from, to, 1, false, |e, _| {
                            e.stmts(body, Parallel::Serial)
                        });
                        if stmts.len() > 1 {
                            let last = self.b.ins().icmp_imm_s(IntCC::Equal, to, *extent as i64);
                            let (rest, done) = (self.b.create_block(), self.b.create_block());
                            self.b.ins().brif(last, rest, &[], done, &[]);
                            self.b.switch_to_block(rest);
                            self.stmts(&stmts[1..], Parallel::Serial);
                            self.b.ins().jump(done, &[]);
                            self.b.switch_to_block(done);
                            return;
                        }
                    } else {
                        self.for_count(Some(*var), *extent, 1, |e, _| e.stmts(body, Parallel::Serial));
                    }
                }
                Stmt::Gemm(g) => self.gemm(g),
                Stmt::Map(m) => self.map(m),
                Stmt::Im2col(c) => self.im2col(c),
                Stmt::Pool(p) => self.pool(p),
                Stmt::RowSum(r) => self.row_sum(r),
                Stmt::ColumnSum(c) => self.column_sum(c),
                Stmt::Softmax(s) => self.softmax(s),
                Stmt::Lrn(l) => self.lrn(l),
                Stmt::Gather(g) => self.gather(g),
                Stmt::Reduce(r) => self.reduce(r),
                Stmt::Transpose(t) => self.transpose(t),
                Stmt::Col2im(c) => self.col2im(c),
                Stmt::PoolBackward(p) => self.pool_backward(p),
                Stmt::Scatter(s) => self.scatter(s),
                Stmt::LrnBackward(l) => self.lrn_backward(l),
                Stmt::CrossEntropy(c) => self.cross_entropy(c),
            }
        }
    }
}
