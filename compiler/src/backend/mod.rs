//! Stage 9: code generation, behind one interface. Scheduling asks a back end for its
//! [`Geometry`] and shapes the kernels for it; the back end then turns the scheduled
//! [`Program`] and its [`MemoryPlan`] into machine code that the runtime calls through
//! [`Code`], whatever generated it.

mod coefficients;
pub mod cranelift;
mod geometry;
#[cfg(target_arch = "x86_64")]
pub mod x86;

pub use geometry::Geometry;

use crate::ir::kernel::Program;
use crate::passes::memory::MemoryPlan;
use std::marker::PhantomData;
use std::time::Duration;

/// A generated kernel: `arena` holds every buffer at the offset the memory plan gave it;
/// `start..end` is the part of the kernel's parallel dimension this call computes;
/// `thread` selects the scratch copies.
pub type KernelFn = unsafe extern "C" fn(arena: *mut u8, start: u64, end: u64, thread: u64);

/// A generated kernel, borrowed from the [`Code`] it lives in.
#[derive(Clone, Copy)]
pub struct Kernel<'a> {
    f: KernelFn,
    _code: PhantomData<&'a ()>,
}

impl Kernel<'_> {
    /// # Safety
    /// `f` must stay valid for the lifetime the `Kernel` is given: a back end makes one
    /// only from code it frees after that borrow ends.
    pub unsafe fn new<'a>(f: KernelFn) -> Kernel<'a> {
        Kernel { f, _code: PhantomData }
    }

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
    /// It is valid only while the code it came from lives.
    pub fn as_fn(&self) -> KernelFn {
        self.f
    }
}

/// A code generator.
pub trait Backend {
    /// The shapes its code is fast for, which scheduling sizes kernels by.
    fn geometry(&self) -> Geometry;

    /// Machine code for every kernel of `program`, addressing buffers as `memory` places
    /// them. A program scheduled for a geometry the back end cannot generate is refused
    /// with [`CodegenError::Geometry`].
    fn compile(&self, program: &Program, memory: &MemoryPlan) -> Result<Box<dyn Code>, CodegenError>;
}

/// Generated kernels, callable while this value lives. Their code is freed when it is
/// dropped, so kernels are handed out only as [`Kernel`]s that borrow it.
pub trait Code: std::fmt::Debug + Send {
    /// Kernel `k`, in the program's order.
    fn kernel(&self, k: usize) -> Option<Kernel<'_>>;
    /// How many kernels there are.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether products use fused multiply-adds (otherwise multiply-add pairs).
    fn fma(&self) -> bool;
    /// Time spent generating the code.
    fn time(&self) -> Duration;
    /// What generated kernel `k`'s heaviest code (its products where they are another
    /// code generator's), for reports.
    fn generator(&self, k: usize) -> &'static str;
}

/// What a caller may ask of any back end.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Run the code generator's own checks on every function (tests; costs ~20 % compile
    /// time).
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

/// The back ends there are; each caller picks one here, so that scheduling and code
/// generation agree on the geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// Portable code through Cranelift ([`cranelift`]).
    Cranelift,
    /// Products as machine code for an x86 vector instruction set, the rest through
    /// Cranelift ([`x86`]).
    #[cfg(target_arch = "x86_64")]
    X86(x86::Isa),
}

impl Default for Target {
    /// The fastest this CPU runs.
    fn default() -> Target {
        Target::supported().pop().unwrap_or(Target::Cranelift)
    }
}

impl Target {
    /// The back end with `options`.
    pub fn backend(self, options: Options) -> Box<dyn Backend> {
        match self {
            Target::Cranelift => Box::new(cranelift::Cranelift { options }),
            #[cfg(target_arch = "x86_64")]
            Target::X86(isa) => Box::new(x86::X86 { isa, options }),
        }
    }

    /// The back end's geometry, for callers that schedule kernels without generating
    /// code (listings, the shape plan's memory figures).
    pub fn geometry(self) -> Geometry {
        match self {
            Target::Cranelift => cranelift::GEOMETRY,
            #[cfg(target_arch = "x86_64")]
            Target::X86(_) => x86::GEOMETRY,
        }
    }

    /// Every target, slowest first.
    pub fn all() -> Vec<Target> {
        let mut all = vec![Target::Cranelift];
        #[cfg(target_arch = "x86_64")]
        all.extend(x86::Isa::ALL.map(Target::X86));
        all
    }

    /// The targets this CPU runs, slowest first (tests run each).
    pub fn supported() -> Vec<Target> {
        Target::all().into_iter().filter(|t| t.available()).collect()
    }

    /// Whether this CPU runs the target's code.
    pub fn available(self) -> bool {
        match self {
            Target::Cranelift => true,
            #[cfg(target_arch = "x86_64")]
            Target::X86(isa) => isa.available(),
        }
    }

    /// Its name, as `--isa` and `NNC_ISA` spell it.
    pub fn name(self) -> &'static str {
        match self {
            Target::Cranelift => "cranelift",
            #[cfg(target_arch = "x86_64")]
            Target::X86(isa) => isa.name(),
        }
    }

    /// The target called `name`, or `auto` for the default; an error names the choices
    /// and says which this CPU cannot run.
    pub fn parse(name: &str) -> Result<Target, String> {
        if name == "auto" {
            return Ok(Target::default());
        }
        let names = || {
            let mut n: Vec<&str> = vec!["auto"];
            n.extend(Target::all().into_iter().map(Target::name));
            n.join(", ")
        };
        match Target::all().into_iter().find(|t| t.name() == name) {
            Some(t) if t.available() => Ok(t),
            Some(t) => Err(format!("this CPU cannot run `{}` code; it runs: {}", t.name(), {
                let s: Vec<&str> = Target::supported().into_iter().map(Target::name).collect();
                s.join(", ")
            })),
            None => Err(format!("there is no instruction set `{name}`; choose one of {}", names())),
        }
    }
}

/// The FMA peak of one core in GFLOP/s, measured now with a generated loop in the widest
/// instruction set this CPU runs, and that set's name; `None` where there is none.
pub fn fma_peak() -> Option<(f64, &'static str)> {
    #[cfg(target_arch = "x86_64")]
    if let Some(isa) = x86::Isa::ALL.into_iter().rev().find(|i| i.available()) {
        return x86::fma_peak(isa).ok().map(|p| (p, isa.name()));
    }
    None
}

#[derive(Debug, thiserror::Error)]
pub enum CodegenError {
    #[error("this CPU is not supported by the code generator: {0}")]
    Host(String),
    #[error("code generation failed in kernel {kernel}: {message}")]
    Kernel { kernel: String, message: String },
    #[error("the {backend} back end cannot generate kernels scheduled for {geometry}: {reason}")]
    Geometry { backend: &'static str, geometry: Geometry, reason: String },
}
