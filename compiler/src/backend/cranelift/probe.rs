//! Applies one of the generated math functions to an array, so tests can measure its
//! accuracy against f64 — the source of the error bounds stated in `docs/kernels.md`.

use super::CodegenError;
use super::emit::{Addr, Emit, F32, LANES, VECTOR};
use crate::passes::memory::MemoryPlan;
use cranelift_codegen::ir::{AbiParam, InstBuilder, types};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MathFn {
    Exp,
    Log,
    Tanh,
    Sigmoid,
    Erf,
}

/// `f(x)` for each `x`, through the generated code (vector lanes, then the scalar tail).
pub fn evaluate(f: MathFn, xs: &[f32]) -> Result<Vec<f32>, CodegenError> {
    let host = |e: &dyn std::fmt::Display| CodegenError::Host(e.to_string());
    let mut flags = settings::builder();
    flags.set("opt_level", "speed").map_err(|e| host(&e))?;
    flags.set("enable_verifier", "true").map_err(|e| host(&e))?;
    let isa = cranelift_native::builder()
        .map_err(|e| host(&e))?
        .finish(settings::Flags::new(flags))
        .map_err(|e| host(&e))?;
    let fma = isa.isa_flags().iter().any(|f| f.name == "has_fma" && f.as_bool() == Some(true));
    let mut module = JITModule::new(JITBuilder::with_isa(isa, cranelift_module::default_libcall_names()));
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(types::I64));
    let id = module.declare_function("probe", Linkage::Local, &sig).map_err(|e| host(&e))?;
    let mut ctx = module.make_context();
    ctx.func.signature = sig;
    let mut fbc = FunctionBuilderContext::new();
    let plan = MemoryPlan {
        tensors: Vec::new(),
        scratch: Vec::new(),
        regions: Vec::new(),
        params: (0, 0),
        size: 0,
        without_reuse: 0,
        guard: 0,
    };
    {
        let mut b = FunctionBuilder::new(&mut ctx.func, &mut fbc);
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let data = b.block_params(entry)[0];
        let zero = b.ins().iconst(types::I64, 0);
        let mut e = Emit {
            b: &mut b,
            plan: &plan,
            kernel: 0,
            arena: data,
            start: zero,
            end: zero,
            thread: zero,
            vars: Default::default(),
            read_only: Vec::new(),
            has_fma: fma,
            tile: (super::GEOMETRY.rows, super::GEOMETRY.columns),
            calls: Default::default(),
            maps: Default::default(),
            sums: Default::default(),
            losses: Default::default(),
            transposes: Default::default(),
            prepared: Vec::new(),
            call_conv: module.target_config().default_call_conv,
            barrier: None,
        };
        let base = Addr { base: data, offset: 0 };
        let vec_len = xs.len() / LANES * LANES;
        let apply = |e: &mut Emit<'_, '_>, ty, i| {
            let at = e.at(base, i);
            let x = e.load(ty, at, 0, None);
            let y = match f {
                MathFn::Exp => e.exp(ty, x),
                // Through the primitive, which covers every f32 (cross-entropy's
                // `Emit::log` is its positive normal part).
                MathFn::Log => e.prim(ty, crate::ir::ops::Prim::Log, x),
                MathFn::Tanh => e.tanh(ty, x),
                MathFn::Sigmoid => e.sigmoid(ty, x),
                MathFn::Erf => e.erf(ty, x),
            };
            e.store(y, at, 0);
        };
        e.for_count(None, vec_len, LANES, |e, i| apply(e, VECTOR, i));
        e.for_count(None, xs.len() - vec_len, 1, |e, i| {
            let i = e.b.ins().iadd_imm_s(i, vec_len as i64);
            apply(e, F32, i)
        });
        b.ins().return_(&[]);
        b.seal_all_blocks();
        b.finalize(module.target_config());
    }
    module.define_function(id, &mut ctx).map_err(|e| host(&format!("{e:?}")))?;
    module.finalize_definitions().map_err(|e| host(&e))?;
    let mut out = xs.to_vec();
    // SAFETY: the function was just defined with this signature; it reads and writes
    // `xs.len()` floats from its argument, which `out` provides.
    let func: unsafe extern "C" fn(*mut f32) =
        unsafe { std::mem::transmute(module.get_finalized_function(id)) };
    unsafe { func(out.as_mut_ptr()) };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worst (absolute, relative) error of `f` over `xs` against `exact`.
    fn worst(f: MathFn, xs: &[f32], exact: impl Fn(f64) -> f64) -> (f64, f64) {
        let ys = evaluate(f, xs).unwrap();
        let mut abs = 0f64;
        let mut rel = 0f64;
        for (&x, &y) in xs.iter().zip(&ys) {
            let e = exact(x as f64);
            let d = (y as f64 - e).abs();
            abs = abs.max(d);
            if e.abs() > 1e-30 {
                rel = rel.max(d / e.abs());
            }
        }
        (abs, rel)
    }

    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..n).map(|i| lo + (hi - lo) * i as f32 / (n - 1) as f32).collect()
    }

    #[test]
    fn exp_is_within_2e7_relative() {
        let (_, rel) = worst(MathFn::Exp, &grid(-87.0, 88.0, 200_003), f64::exp);
        assert!(rel < 2e-7, "exp relative error {rel:e}");
    }

    #[test]
    fn log_is_within_2e7_absolute_or_relative() {
        let xs: Vec<f32> = (0..200_000).map(|i| 10f32.powf(-30.0 + 60.0 * i as f32 / 199_999.0)).collect();
        let (abs, _) = worst(MathFn::Log, &xs, f64::ln);
        assert!(abs < 1e-5, "log absolute error {abs:e} (over values up to 69)");
        let near_one = grid(0.5, 2.0, 100_001);
        let (abs, _) = worst(MathFn::Log, &near_one, f64::ln);
        assert!(abs < 2e-7, "log absolute error near 1: {abs:e}");
    }

    #[test]
    fn tanh_is_within_3e7_relative() {
        let (abs, rel) = worst(MathFn::Tanh, &grid(-20.0, 20.0, 400_001), f64::tanh);
        assert!(rel < 3e-7 && abs < 3e-7, "tanh error: {abs:e} absolute, {rel:e} relative");
    }

    #[test]
    fn sigmoid_is_within_2e7_absolute() {
        let (abs, _) = worst(MathFn::Sigmoid, &grid(-80.0, 80.0, 400_001), |x| 1.0 / (1.0 + (-x).exp()));
        assert!(abs < 2e-7, "sigmoid absolute error {abs:e}");
        let (_, rel) = worst(MathFn::Sigmoid, &grid(-15.0, 80.0, 400_001), |x| 1.0 / (1.0 + (-x).exp()));
        assert!(rel < 4e-7, "sigmoid relative error {rel:e}");
    }

    #[test]
    fn erf_is_within_2e7_absolute() {
        let (abs, _) = worst(MathFn::Erf, &grid(-12.0, 12.0, 400_001), libm::erf);
        assert!(abs < 2e-7, "erf absolute error {abs:e}");
        // Near zero, where erf is small, the series keeps the error relative.
        let (_, rel) = worst(MathFn::Erf, &grid(-0.99, 0.99, 200_001), libm::erf);
        assert!(rel < 3e-7, "erf relative error below 1: {rel:e}");
    }

    #[test]
    fn special_values() {
        let ys = evaluate(MathFn::Exp, &[f32::NAN, 1000.0, -1000.0, 0.0]).unwrap();
        assert!(ys[0].is_nan());
        assert!(ys[1] > 1e38 && ys[1].is_finite());
        assert!(ys[2] >= 0.0 && ys[2] < 1e-37);
        assert_eq!(ys[3], 1.0);
        let t = evaluate(MathFn::Tanh, &[0.0, -0.0, 50.0, -50.0]).unwrap();
        assert_eq!(t, [0.0, -0.0, 1.0, -1.0]);
        let e = evaluate(MathFn::Erf, &[0.0, 1e-30, 100.0, -100.0, f32::NAN]).unwrap();
        assert_eq!(e[..4], [0.0, 1e-30 * std::f32::consts::FRAC_2_SQRT_PI, 1.0, -1.0]);
        assert!(e[4].is_nan());
        let l = evaluate(MathFn::Log, &[0.0, -0.0, f32::INFINITY, 1.0, -1.0, f32::NEG_INFINITY, f32::NAN])
            .unwrap();
        assert_eq!(l[..4], [f32::NEG_INFINITY, f32::NEG_INFINITY, f32::INFINITY, 0.0]);
        assert!(l[4..].iter().all(|v| v.is_nan()), "{l:?}");
        // Subnormals, which the exponent field alone would misread.
        let tiny = [1e-40f32, 1.5e-45, f32::MIN_POSITIVE / 3.0, 1e-39, 1e-42, 5e-44, 1e-38];
        for (x, y) in tiny.iter().zip(evaluate(MathFn::Log, &tiny).unwrap()) {
            let want = f64::from(*x).ln();
            assert!((f64::from(y) - want).abs() < 1e-5, "log({x:e}) = {y}, not {want}");
        }
    }
}
