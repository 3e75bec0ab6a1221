//! Stage 9, the Cranelift back end: code generation. Each kernel becomes one Cranelift
//! function, all in one JIT module, with every shape, stride and offset a constant, and
//! the signature of [`KernelFn`].

mod backward;
mod barrier;
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

use super::{Backend, Code, CodegenError, Geometry, Kernel, KernelFn, Options};
use crate::ir::kernel::{
    Buffer, ColumnSum, CrossEntropy, Gemm, Inst, Map, Parallel, Program, Ptr, Right, Stmt, Transpose, Var,
};
use crate::passes::memory::MemoryPlan;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::{AbiParam, InstBuilder, Signature, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};
use emit::Emit;
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::time::{Duration, Instant};

/// The geometry kernels are scheduled for: Cranelift lowers 128-bit vectors on x64 and
/// aarch64, so four `f32` lanes; tiles of 4 rows × 8 columns (eight accumulators) leave
/// the sixteen vector registers room for the `b` vectors and the broadcast `a` value.
/// The vector type of the generated code follows `lanes` (see `emit::VECTOR`).
pub const GEOMETRY: Geometry = Geometry { rows: 4, columns: 8, lanes: 4, pad: 8, unfolds: false };

/// Most accumulators a register tile may have: twice the vector registers, beyond which
/// a tile would be mostly spills and its unrolled code needlessly large.
const MAX_ACCUMULATORS: usize = 32;

/// The Cranelift back end, with its options (Cranelift's verifier, FMA).
#[derive(Clone, Copy, Debug, Default)]
pub struct Cranelift {
    pub options: Options,
}

impl Backend for Cranelift {
    fn geometry(&self) -> Geometry {
        GEOMETRY
    }

    fn compile(&self, program: &Program, memory: &MemoryPlan) -> Result<Box<dyn Code>, CodegenError> {
        Ok(Box::new(compile(program, memory, self.options, &mut Own)?))
    }
}

impl Code for Compiled {
    fn kernel(&self, k: usize) -> Option<Kernel<'_>> {
        // SAFETY: the function is this module's, whose memory `self` frees only when
        // dropped, and the `Kernel` borrows `self`.
        self.kernels.get(k).map(|&f| unsafe { Kernel::new(f) })
    }

    fn len(&self) -> usize {
        self.kernels.len()
    }

    fn fma(&self) -> bool {
        self.fma
    }

    fn time(&self) -> Duration {
        self.time
    }

    fn generator(&self, _: usize) -> &'static str {
        "cranelift"
    }
}

impl Compiled {
    /// Whether kernel `k` calls products generated elsewhere.
    pub fn calls(&self, k: usize) -> bool {
        self.calls.get(k).copied().unwrap_or(false)
    }
}

/// Whether the emitter can generate products for `g`: its vectors have exactly the lanes
/// of [`GEOMETRY`], while a tile of any rows and any whole number of vectors is
/// generated as asked (within [`MAX_ACCUMULATORS`]). The padding only shapes buffers,
/// which any tile reads.
fn check(g: Geometry) -> Result<(), CodegenError> {
    let refuse = |reason: String| Err(CodegenError::Geometry { backend: "Cranelift", geometry: g, reason });
    if g.lanes != GEOMETRY.lanes {
        return refuse(format!("its vectors have {} lanes", GEOMETRY.lanes));
    }
    if g.rows == 0 || g.columns == 0 || !g.columns.is_multiple_of(g.lanes) {
        return refuse("a register tile needs rows and a whole number of vectors".into());
    }
    if g.rows * (g.columns / g.lanes) > MAX_ACCUMULATORS {
        return refuse(format!("a register tile has at most {MAX_ACCUMULATORS} vector accumulators"));
    }
    if g.unfolds {
        return refuse("its products read matrices, not images through a window".into());
    }
    Ok(())
}

/// Machine code for a program. The code is freed when this value is dropped, so the
/// functions are handed out only as [`Kernel`]s that borrow it.
pub struct Compiled {
    /// Taken (and their memory freed) only in `drop`.
    modules: ManuallyDrop<[JITModule; 2]>,
    kernels: Vec<KernelFn>,
    /// The barriers of team kernels, which their code calls by address (so each in an
    /// allocation of its own, which the vector's growth does not move).
    _barriers: Vec<std::sync::Arc<barrier::TeamBarrier>>,
    /// Per kernel, whether it calls products generated elsewhere.
    calls: Vec<bool>,
    /// Whether the host has FMA (otherwise multiply-add pairs were generated).
    pub fma: bool,
    /// Time spent building IR and compiling it.
    pub time: Duration,
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

/// Products and maps generated by another code generator, and column sums, losses and
/// transposes computed by its routines, which kernels call instead of generating them
/// here (the x86 back end's).
pub trait Products {
    /// The call that computes `g`, or `None` to generate it here.
    fn product(&mut self, g: &Gemm) -> Result<Option<Call>, CodegenError>;

    /// The call that runs `rows` rows of `m`, its `j`-th operand (load, broadcast or
    /// store, in order) moving by `strides[j]` elements from one row to the next, or
    /// `None` to generate it here.
    fn map(&mut self, m: &Map, rows: usize, strides: &[i64]) -> Result<Option<MapCall>, CodegenError>;

    /// The call that computes the column sums `c`, or `None` to generate them here.
    fn column_sum(&mut self, c: &ColumnSum) -> Option<RoutineCall>;

    /// The call that computes the cross-entropy `c`, or `None` to generate it here.
    fn cross_entropy(&mut self, c: &CrossEntropy) -> Option<RoutineCall>;

    /// The call that computes the transpose `t`, or `None` to generate it here.
    fn transpose(&mut self, t: &Transpose) -> Option<RoutineCall>;
}

/// A call to a routine of the back end's own for a statement other than a product or a
/// map: `entry(data, operands)`, where `operands` holds the statement's addresses (a
/// column sum's `src`, then `dst`; a cross-entropy's logits, labels, gradient and stats).
#[derive(Clone, Copy, Debug)]
pub struct RoutineCall {
    /// An `extern "sysv64" fn(*const u8, *const *mut f32)`.
    pub entry: usize,
    pub data: usize,
}

/// A call to a map generated elsewhere: `entry(data, operands)`, where `operands` holds
/// the address of each load, broadcast and store of the map, in order, for its first
/// row (the callee may change them).
#[derive(Clone, Copy, Debug)]
pub struct MapCall {
    /// An `extern "sysv64" fn(*const u8, *mut *const f32)`.
    pub entry: usize,
    pub data: usize,
    /// The loop the call runs whole, by its variable (its body is the map alone).
    pub rows: Option<Var>,
}

/// A call to a product generated elsewhere: `entry(data, operands)`, where `operands`
/// holds the addresses of `a`, `b` and `c`, the first output row an unfolded `b` starts
/// at (0 when it is a matrix), the addresses of each `Row`, `Col` and `Elem` operand
/// of the epilogue, in its order, and those of each sum of `b` (a column sum's `dst`, a
/// one-hot sum's `a` and `c`: [`Gemm::b_sums`]), which the callee computes too.
#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// An `extern "sysv64" fn(*const u8, *const *mut f32)`.
    pub entry: usize,
    pub data: usize,
    /// The callee computed the bare product into `c`; the kernel applies the epilogue
    /// after it.
    pub epilogue_after: bool,
    /// `(prepare, entry)`: an `extern "sysv64" fn(*const u8, *const f32)` the kernel may
    /// call with `b`'s address before a loop over which `b` does not change, and the
    /// entry (called as `entry` is) by which the calls in the loop read the copy it made,
    /// packed once, rather than packing `b` each time.
    pub prepare: Option<(usize, usize)>,
}

/// Every product generated here.
pub struct Own;

impl Products for Own {
    fn product(&mut self, _: &Gemm) -> Result<Option<Call>, CodegenError> {
        Ok(None)
    }

    fn map(&mut self, _: &Map, _: usize, _: &[i64]) -> Result<Option<MapCall>, CodegenError> {
        Ok(None)
    }

    fn column_sum(&mut self, _: &ColumnSum) -> Option<RoutineCall> {
        None
    }

    fn cross_entropy(&mut self, _: &CrossEntropy) -> Option<RoutineCall> {
        None
    }

    fn transpose(&mut self, _: &Transpose) -> Option<RoutineCall> {
        None
    }
}

/// Every map statement of `stmts` with the loop it may run whole: one that is the body
/// of a serial loop (not the first statement of a kernel whose first loop is shared
/// among threads, `parallel`) with that loop's variable and extent.
fn maps<'a>(stmts: &'a [Stmt], parallel: bool, out: &mut Vec<(&'a Map, Option<(Var, usize)>)>) {
    for (i, s) in stmts.iter().enumerate() {
        match s {
            Stmt::Map(m) => out.push((m, None)),
            Stmt::Loop { var, extent, body } => match body.as_slice() {
                [Stmt::Map(m)] if !(parallel && i == 0) => out.push((m, Some((*var, *extent)))),
                _ => maps(body, false, out),
            },
            _ => {}
        }
    }
}

/// The map's operands, in order: each load, broadcast and store's address, and each
/// dropout mask's seed and the element index it starts from (a pointer's offset and
/// terms, not an address: a call passes four times its value, which moves from row to
/// row as an address into the masked tensor would).
pub fn map_operands(m: &Map) -> impl Iterator<Item = &Ptr> {
    m.insts.iter().flat_map(|i| match i {
        Inst::Load(p) | Inst::Bcast(p) | Inst::Store(p, _) | Inst::Stream(p, _) => vec![p],
        Inst::Keep { seed, index, .. } => vec![seed, index],
        Inst::Const(_) | Inst::Prim(..) | Inst::Bin(..) | Inst::Select(..) => vec![],
    })
}

/// The statements of a kernel that another back end's routines may compute.
#[derive(Default)]
struct Routines<'a> {
    sums: Vec<&'a ColumnSum>,
    losses: Vec<&'a CrossEntropy>,
    transposes: Vec<&'a Transpose>,
}

/// Every column-sum, cross-entropy and transpose statement of `stmts`, in order.
fn routines<'a>(stmts: &'a [Stmt], found: &mut Routines<'a>) {
    for s in stmts {
        match s {
            Stmt::ColumnSum(c) => found.sums.push(c),
            Stmt::CrossEntropy(c) => found.losses.push(c),
            Stmt::Transpose(t) => found.transposes.push(t),
            Stmt::Loop { body, .. } => routines(body, found),
            _ => {}
        }
    }
}

/// Every product statement of `stmts`, in order.
fn gemms<'a>(stmts: &'a [Stmt], out: &mut Vec<&'a Gemm>) {
    for s in stmts {
        match s {
            Stmt::Gemm(g) => out.push(g),
            Stmt::Loop { body, .. } => gemms(body, out),
            _ => {}
        }
    }
}

/// Compiles every kernel of `program` for the host CPU, with register tiles of the
/// geometry it was scheduled for.
///
/// Kernels with a matrix product go into a module compiled without optimisation: the
/// optimiser's re-placement of loads pushes a register tile into spills, while the IR
/// the emitter writes is already in the order the tile needs (53 against 37 GFLOP/s for
/// a 64×64×64 product on one core). Every other kernel is optimised, which hoists the
/// polynomial constants of `exp` and `tanh` out of their loops.
///
/// `products` may take over any product statement; a kernel whose products are all
/// called is optimised like the others.
pub fn compile(
    program: &Program,
    plan: &MemoryPlan,
    options: Options,
    products: &mut dyn Products,
) -> Result<Compiled, CodegenError> {
    check(Geometry { unfolds: false, ..program.geometry })?;
    let started = Instant::now();
    let (fast, fma) = module("speed", options.verify)?;
    let (ordered, _) = module("none", options.verify)?;
    let mut modules = [fast, ordered];
    let mut ids = Vec::with_capacity(program.kernels.len());
    let mut called = Vec::with_capacity(program.kernels.len());
    let mut fbc = FunctionBuilderContext::new();
    let mut barriers = Vec::new();
    for (index, kernel) in program.kernels.iter().enumerate() {
        let mut own = Vec::new();
        gemms(&kernel.body, &mut own);
        let mut calls = HashMap::new();
        for g in std::mem::take(&mut own) {
            match products.product(g)? {
                Some(call) => {
                    calls.insert(std::ptr::from_ref(g), call);
                }
                None => own.push(g),
            }
        }
        if own.iter().any(|g| matches!(g.b, Right::Unfolded(_))) {
            return Err(CodegenError::Geometry {
                backend: "Cranelift",
                geometry: program.geometry,
                reason: "its products read matrices, not images through a window".into(),
            });
        }
        let mut own_maps = Vec::new();
        maps(&kernel.body, kernel.parallel != Parallel::Serial, &mut own_maps);
        let mut map_calls = HashMap::new();
        for (m, rows) in own_maps {
            let strides: Vec<i64> = match rows {
                Some((var, _)) => map_operands(m)
                    .map(|p| p.terms.iter().filter(|(v, _)| *v == var).map(|(_, c)| *c).sum())
                    .collect(),
                None => vec![0; map_operands(m).count()],
            };
            let call = match rows {
                Some((var, extent)) => {
                    products.map(m, extent, &strides)?.map(|c| MapCall { rows: Some(var), ..c })
                }
                None => products.map(m, 1, &strides)?,
            };
            if let Some(call) = call {
                map_calls.insert(std::ptr::from_ref(m), call);
            }
        }
        let mut found = Routines::default();
        routines(&kernel.body, &mut found);
        let sum_calls: HashMap<_, _> = found
            .sums
            .into_iter()
            .filter_map(|c| Some((std::ptr::from_ref(c), products.column_sum(c)?)))
            .collect();
        let loss_calls: HashMap<_, _> = found
            .losses
            .into_iter()
            .filter_map(|c| Some((std::ptr::from_ref(c), products.cross_entropy(c)?)))
            .collect();
        let transpose_calls: HashMap<_, _> = found
            .transposes
            .into_iter()
            .filter_map(|t| Some((std::ptr::from_ref(t), products.transpose(t)?)))
            .collect();
        called.push(
            !calls.is_empty()
                || !map_calls.is_empty()
                || !sum_calls.is_empty()
                || !loss_calls.is_empty()
                || !transpose_calls.is_empty(),
        );
        let which = usize::from(!own.is_empty());
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
                tile: (program.geometry.rows, program.geometry.columns),
                calls,
                maps: map_calls,
                sums: sum_calls,
                losses: loss_calls,
                transposes: transpose_calls,
                prepared: Vec::new(),
                call_conv: module.target_config().default_call_conv,
                barrier: match kernel.parallel {
                    Parallel::Team { members } => {
                        let b = std::sync::Arc::new(barrier::TeamBarrier::new(members));
                        let at = std::sync::Arc::as_ptr(&b);
                        barriers.push(b);
                        Some(at)
                    }
                    Parallel::Serial | Parallel::Loop { .. } => None,
                },
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
    Ok(Compiled {
        modules: ManuallyDrop::new(modules),
        kernels,
        _barriers: barriers,
        calls: called,
        fma,
        time: started.elapsed(),
    })
}

impl Emit<'_, '_> {
    /// Emits statements; with `Parallel::Loop` or `Team`, the first (a loop) runs over
    /// `start..end` instead of its full extent, and the statements after it (an
    /// optimizer update's tail) run once, in the call whose share ends the loop.
    fn stmts(&mut self, stmts: &[Stmt], parallel: Parallel) {
        for (i, s) in stmts.iter().enumerate() {
            match s {
                Stmt::Loop { var, extent, body } => {
                    if i == 0 && parallel != Parallel::Serial {
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
                    } else if let [Stmt::Map(m)] = body.as_slice()
                        && let Some(call) = self.maps.get(&std::ptr::from_ref(m)).copied()
                        && call.rows == Some(*var)
                    {
                        self.call_map(m, call);
                    } else {
                        if *extent > 1 {
                            self.prepare_products(body);
                        }
                        self.for_count(Some(*var), *extent, 1, |e, _| e.stmts(body, Parallel::Serial));
                    }
                }
                Stmt::Gemm(g) => self.gemm(g),
                Stmt::Map(m) => match self.maps.get(&std::ptr::from_ref(m)).copied() {
                    Some(call) if call.rows.is_none() => self.call_map(m, call),
                    _ => self.map(m),
                },
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
                Stmt::Barrier => self.barrier(),
            }
        }
    }

    /// A call of the kernel's barrier's [`barrier::wait`] (the verifier allows barriers
    /// only in team kernels, which have one).
    fn barrier(&mut self) {
        let at = self.barrier.expect("a barrier stands only in a team kernel") as i64;
        let (data, entry) = (self.iconst(at), self.iconst(barrier::wait as *const () as i64));
        let mut sig = Signature::new(self.call_conv);
        sig.params.push(AbiParam::new(types::I64));
        let sig = self.b.import_signature(sig);
        self.b.ins().call_indirect(sig, entry, &[data]);
    }

    /// Before a loop: prepares each called product of `body` whose `b` the loop cannot
    /// change — a tensor the kernel only reads, at an address no variable of the loop's
    /// moves —
    /// and which no enclosing loop prepared, so that its calls in the loop read `b` as
    /// packed once here (a recurrent layer's `W_hh` had been packed again at every step:
    /// 12 % of an LSTM's training step).
    fn prepare_products(&mut self, body: &[Stmt]) {
        let mut inner = Vec::new();
        gemms(body, &mut inner);
        for g in inner {
            let key = std::ptr::from_ref(g);
            let Some(call) = self.calls.get(&key).copied() else { continue };
            let (Some((prepare, _)), Right::Matrix { ptr, .. }) = (call.prepare, &g.b) else { continue };
            // Moved only by variables bound outside the loop (a team member's columns).
            let fixed = ptr.terms.iter().all(|(v, _)| self.vars.contains_key(v))
                && matches!(ptr.buf, Buffer::Tensor(t) if self.read_only.contains(&t));
            if !fixed || self.prepared.contains(&key) {
                continue;
            }
            self.prepared.push(key);
            let at = self.addr(ptr, 0);
            let b = self.b.ins().iadd_imm_s(at.base, at.offset as i64);
            let data = self.iconst(call.data as i64);
            let entry = self.iconst(prepare as i64);
            let mut sig = Signature::new(self.call_conv);
            sig.params.extend([AbiParam::new(types::I64), AbiParam::new(types::I64)]);
            let sig = self.b.import_signature(sig);
            self.b.ins().call_indirect(sig, entry, &[data, b]);
        }
    }
}
