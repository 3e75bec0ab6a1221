//! Running generated code and the reference interpreter side by side.

#![allow(dead_code)] // each test crate uses part of this

use nnc_compiler::backend::{Geometry, Target};
use nnc_compiler::ir::ops::{
    Hyper, Layout, Op, OpNode, Origin, ParamInfo, Reduce, Role, Tensor, TensorGraph, TensorId, UpdateRule,
    Window2d, reference,
};
use nnc_compiler::pipeline;
use nnc_runtime::exec::{Executable, Options};
use nnc_runtime::init::Rng;

/// Agreement tolerance for f32 results, in one place: |generated − reference| may be at
/// most `TOL · (|reference| + rms(reference))`.
///
/// The reference sums in f64; generated code sums in f32 in another order. Rounding
/// error scales with the magnitude of the terms summed, not of the result, so an element
/// that cancels to near zero is judged against the tensor's scale (its RMS) as well as
/// its own. Measured worst cases over the zoo are 5e-6 of the RMS (ResNet-50); 1e-4
/// leaves a margin of twenty.
pub const TOL: f64 = 1e-4;

/// Options for tests: guard bytes on, verifier on, FMA where the CPU has it.
pub fn options(threads: usize) -> Options {
    Options { threads, guard: true, verify: true, fma: true, ..Default::default() }
}

/// Compiles `graph`, fills what the caller feeds from `seed`, runs generated code and the
/// reference, and returns (generated, reference) values of the graph's output.
///
/// Odd seeds compile without FMA, which checks the multiply-and-add path CPUs without FMA
/// get.
pub fn run_both(graph: &TensorGraph, seed: u64, threads: usize) -> (Vec<f32>, Vec<f32>) {
    run_both_on(graph, seed, threads, Target::default())
}

/// [`run_both`] with the code generated for `target`.
pub fn run_both_on(graph: &TensorGraph, seed: u64, threads: usize, target: Target) -> (Vec<f32>, Vec<f32>) {
    let (mut exec, mut values) = prepare(graph, seed, threads, None, target);
    reference::run(graph, &mut values);
    exec.run().expect("runs without touching guard bytes");
    (exec.output().to_vec(), reference::read(graph, &values, graph.output).to_vec())
}

/// One tensor the graph writes: an op's output, one of its auxiliary outputs, or a tensor
/// it updates in place.
pub struct Written {
    pub tensor: TensorId,
    /// The op that writes it and which result it is: `sgd_update aux 0 (t7)`.
    pub what: String,
    pub generated: Vec<f32>,
    pub reference: Vec<f32>,
}

/// Like [`run_both`], but returns every tensor the kernels write, each read just after
/// the kernel that writes it (a later kernel may reuse an intermediate's memory). Each
/// tensor must be written once: the reference's values are those at the end of the run.
pub fn run_all(graph: &TensorGraph, seed: u64, threads: usize, target: Target) -> Vec<Written> {
    run_all_for(graph, seed, threads, None, target)
}

/// [`run_all`] with the kernels scheduled for `geometry` instead of the back end's own.
pub fn run_all_for(
    graph: &TensorGraph,
    seed: u64,
    threads: usize,
    geometry: Option<Geometry>,
    target: Target,
) -> Vec<Written> {
    let (mut exec, mut values) = prepare(graph, seed, threads, geometry, target);
    reference::run(graph, &mut values);
    let mut written = Vec::new();
    for k in 0..exec.program().kernels.len() {
        exec.run_kernel(k).expect("runs without touching guard bytes");
        for &t in &exec.program().kernels[k].writes {
            written.push(Written {
                tensor: t,
                what: describe(graph, t),
                generated: exec.tensor(t).to_vec(),
                reference: reference::read(graph, &values, t).to_vec(),
            });
        }
    }
    written
}

/// For a graph of sums of products (a matrix product, an embedding's or a convolution's
/// gradient, a channel sum), each written tensor's sums of the absolute values of their
/// terms: the reference run on the absolute values of everything fed with `seed`. An
/// f32 sum of `k` terms is exact to about `k` roundings of that, not of its result,
/// which may cancel to nothing.
pub fn term_sizes(
    graph: &TensorGraph,
    seed: u64,
    threads: usize,
    target: Target,
) -> Vec<(TensorId, Vec<f64>)> {
    let (exec, mut values) = prepare(graph, seed, threads, None, target);
    for v in values.iter_mut().flatten() {
        *v = v.abs();
    }
    reference::run(graph, &mut values);
    let written = exec.program().kernels.iter().flat_map(|k| k.writes.iter().copied());
    written.map(|t| (t, reference::read(graph, &values, t).iter().map(|&x| x as f64).collect())).collect()
}

/// Compiles `graph` (scheduled for `geometry`, or the back end's) and fills everything
/// the caller feeds from `seed`: returns the executable and the same values laid out for
/// the reference (views read their blocks).
fn prepare(
    graph: &TensorGraph,
    seed: u64,
    threads: usize,
    geometry: Option<Geometry>,
    target: Target,
) -> (Executable, Vec<Vec<f32>>) {
    let opts = Options { fma: seed.is_multiple_of(2), target, ..options(threads) };
    let mut stage_options = opts.stages();
    stage_options.geometry = geometry.unwrap_or(stage_options.geometry);
    let stages = pipeline::from_ops(graph.clone(), stage_options).expect("schedules");
    let mut exec = Executable::new(stages, &opts).expect("compiles");
    let mut rng = Rng::new(seed);
    let ids = (0..graph.tensors.len() as u32).map(TensorId);
    // Blocks first: parameters and state inside them then overwrite their parts.
    let (blocks, rest): (Vec<TensorId>, Vec<TensorId>) =
        ids.clone().partition(|t| matches!(graph.tensor(*t).role, Role::Block { .. }));
    for t in blocks {
        feed(graph, &mut exec, t, &mut rng);
    }
    exec.init_params(seed);
    for t in rest {
        feed(graph, &mut exec, t, &mut rng);
    }
    let values = ids
        .map(|t| match exec.plan().tensors[t.0 as usize] {
            Some(_) if graph.tensor(t).view.is_none() => exec.tensor(t).to_vec(),
            _ => Vec::new(),
        })
        .collect();
    (exec, values)
}

/// Writes random values into tensor `t` if the caller feeds it, drawn to suit the op
/// that reads it. Computed tensors are left alone, and parameters as initialised except
/// running statistics, which are made unlike the identity so that folding is tested.
fn feed(graph: &TensorGraph, exec: &mut Executable, t: TensorId, rng: &mut Rng) {
    let tensor = graph.tensor(t);
    let len = tensor.len();
    let reader = graph.ops.iter().find_map(|o| Some((&o.op, o.inputs.iter().position(|i| *i == t)?)));
    let data: Vec<f32> = match (&tensor.role, reader) {
        (Role::Input, Some((Op::Embedding { vocab, .. } | Op::EmbeddingBackward { vocab, .. }, 0))) => {
            (0..len).map(|_| f32::from_bits(rng.below(*vocab as u64) as u32)).collect()
        }
        // A one-hot input's products skip its zeros, which they must do for any values:
        // mostly zeros, with rows of none, one and several other values.
        (Role::Input, _) if graph.one_hot.contains(&t) => (0..len)
            .map(|_| if rng.below(4) == 0 { (2.0 * rng.uniform() - 1.0) as f32 } else { 0.0 })
            .collect(),
        // Every max-pooling window then has one largest input.
        (Role::Input, Some((Op::Pool2dBackward { reduce: Reduce::Max, .. }, 1))) => distinct(len, rng),
        // Scores tie for the largest in most rows (half of them from four values), so
        // that the prediction must be the first class holding it.
        (Role::Input, Some((Op::SoftmaxCrossEntropy { .. }, 0))) => (0..len)
            .map(|_| match rng.below(8) {
                v @ 0..4 => [-1.0, -0.25, 0.5, 1.0][v as usize],
                _ => (2.0 * rng.uniform() - 1.0) as f32,
            })
            .collect(),
        (Role::Label, Some((Op::SoftmaxCrossEntropy { cols, .. }, 1))) => {
            (0..len).map(|_| class_id(*cols, rng)).collect()
        }
        (Role::Hyper, _) => hyper(rng),
        // Adam's second moment is a running mean of squares.
        (
            Role::State(_) | Role::Block { persistent: true },
            Some((Op::Update { rule: UpdateRule::Adam { .. }, .. }, 4)),
        ) => (0..len).map(|_| rng.uniform() as f32).collect(),
        (Role::Input | Role::Label | Role::State(_) | Role::Block { persistent: true }, _) => {
            (0..len).map(|_| (2.0 * rng.uniform() - 1.0) as f32).collect()
        }
        (Role::Param(p), _) if p.name.ends_with("running_mean") => {
            (0..len).map(|_| (0.2 * rng.normal()) as f32).collect()
        }
        (Role::Param(p), _) if p.name.ends_with("running_var") => {
            (0..len).map(|_| (0.5 + rng.uniform()) as f32).collect()
        }
        _ => return,
    };
    exec.tensor_mut(t).copy_from_slice(&data);
}

/// `len` distinct values in [−1, 1), shuffled.
fn distinct(len: usize, rng: &mut Rng) -> Vec<f32> {
    let mut v: Vec<f32> = (0..len).map(|i| (2.0 * i as f64 / len as f64 - 1.0) as f32).collect();
    for i in (1..len).rev() {
        v.swap(i, rng.below(i as u64 + 1) as usize);
    }
    v
}

/// A class id in `0..cols` as i32 bits, or one row in eight a padding row's id outside it.
fn class_id(cols: usize, rng: &mut Rng) -> f32 {
    let id = match rng.below(16) {
        0 => cols as u32,
        1 => u32::MAX,
        _ => rng.below(cols as u64) as u32,
    };
    f32::from_bits(id)
}

/// A training step's hyper-parameters: plausible positive values, and a random seed.
fn hyper(rng: &mut Rng) -> Vec<f32> {
    let mut h = vec![0.0; Hyper::LEN];
    h[Hyper::LR] = (0.001 + 0.1 * rng.uniform()) as f32;
    h[Hyper::GRAD_SCALE] = (0.5 + rng.uniform()) as f32;
    h[Hyper::BIAS1] = (1.0 + 9.0 * rng.uniform()) as f32;
    h[Hyper::BIAS2] = (1.0 + 999.0 * rng.uniform()) as f32;
    h[Hyper::SEED] = f32::from_bits(rng.next_u64() as u32);
    h
}

/// `softmax_cross_entropy aux 0 (t7)`: the (last) op writing `t` and which result it is.
fn describe(graph: &TensorGraph, t: TensorId) -> String {
    let node = graph.ops.iter().rev().find(|o| o.output == t || o.aux.contains(&t)).expect("an op writes it");
    match node.aux.iter().position(|a| *a == t) {
        Some(i) if node.output != t => format!("{} aux {i} ({t})", node.op.name()),
        _ => format!("{} ({t})", node.op.name()),
    }
}

/// Root mean square of a tensor.
pub fn rms(x: &[f32]) -> f64 {
    (x.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / x.len().max(1) as f64).sqrt()
}

/// Asserts agreement within [`TOL`], reporting the worst element.
pub fn assert_agree(what: &str, generated: &[f32], reference: &[f32]) {
    assert_agree_terms(what, generated, reference, &vec![0.0; reference.len()]);
}

/// Asserts agreement within [`TOL`] of each element's magnitude plus `terms[i]`, the size
/// of what was summed to make it: a result that cancels (a running mean pulled to zero
/// by a batch mean of the other sign) is as exact as its terms, not as itself.
pub fn assert_agree_terms(what: &str, generated: &[f32], reference: &[f32], terms: &[f64]) {
    assert_eq!(generated.len(), reference.len(), "{what}: output lengths");
    let scale = rms(reference);
    let mut worst: Option<(usize, f64)> = None;
    for (i, (&g, &r)) in generated.iter().zip(reference).enumerate() {
        let size = r.abs() as f64 + scale + terms[i];
        let err = (g as f64 - r as f64).abs() / size.max(f64::MIN_POSITIVE);
        if (err.is_nan() || err > TOL) && worst.is_none_or(|(_, e)| err > e || err.is_nan()) {
            worst = Some((i, err));
        }
    }
    if let Some((i, err)) = worst {
        panic!(
            "{what}: element {i} is {} but the reference gives {} (error {err:.2e} of the scale, tolerance {TOL:e})",
            generated[i], reference[i]
        );
    }
}

/// A window geometry that fits, or `None`.
#[allow(clippy::too_many_arguments)]
pub fn window(
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: (usize, usize),
    s: (usize, usize),
    d: (usize, usize),
    pad: [usize; 4],
    ceil: bool,
) -> Option<Window2d> {
    let axis = |size: usize, k: usize, s: usize, d: usize, p0: usize, p1: usize| -> Option<usize> {
        let span = d * (k - 1) + 1;
        let padded = size + p0 + p1;
        if padded < span {
            return None;
        }
        if !ceil {
            return Some((padded - span) / s + 1);
        }
        let mut out = (padded - span).div_ceil(s) + 1;
        if (out - 1) * s >= size + p0 {
            out -= 1;
        }
        Some(out)
    };
    let oh = axis(h, k.0, s.0, d.0, pad[0], pad[1])?;
    let ow = axis(w, k.1, s.1, d.1, pad[2], pad[3])?;
    Some(Window2d { n, c, h, w, kh: k.0, kw: k.1, sh: s.0, sw: s.1, dh: d.0, dw: d.1, pad, oh, ow })
}

/// Builds small tensor graphs by hand for kernel tests.
#[derive(Default)]
pub struct Builder {
    pub graph: TensorGraph,
}

impl Builder {
    pub fn new(batch: usize) -> Builder {
        Builder { graph: TensorGraph { batch, ..TensorGraph::default() } }
    }

    fn tensor(&mut self, name: &str, dims: Vec<usize>, role: Role) -> TensorId {
        self.graph.tensors.push(Tensor { name: name.into(), dims, role, view: None, origin: Origin::Named });
        TensorId(self.graph.tensors.len() as u32 - 1)
    }

    pub fn input(&mut self, dims: Vec<usize>) -> TensorId {
        let t = self.tensor("x", dims, Role::Input);
        self.graph.inputs.push(t);
        t
    }

    /// A parameter drawn uniformly from ±`a` (internal layout = PyTorch's).
    pub fn param(&mut self, name: &str, dims: Vec<usize>, a: f64) -> TensorId {
        let info = ParamInfo {
            name: name.into(),
            torch_dims: dims.clone(),
            layout: Layout::Same,
            trainable: true,
            init: nnc_compiler::ir::init::Init::Uniform { a },
        };
        self.tensor(name, dims, Role::Param(info))
    }

    /// Class ids or regression targets, fed with each batch.
    pub fn label(&mut self, dims: Vec<usize>) -> TensorId {
        self.tensor("labels", dims, Role::Label)
    }

    /// The hyper-parameters of a training step.
    pub fn hyper(&mut self) -> TensorId {
        self.tensor("hyper", vec![Hyper::LEN], Role::Hyper)
    }

    /// Optimizer state, kept across steps.
    pub fn state(&mut self, name: &str, dims: Vec<usize>) -> TensorId {
        self.tensor(name, dims, Role::State(name.into()))
    }

    /// A block of `len` values for views to share.
    pub fn block(&mut self, name: &str, len: usize, persistent: bool) -> TensorId {
        self.tensor(name, vec![len], Role::Block { persistent })
    }

    /// Places tensor `t` inside `block`, starting at element `offset`.
    pub fn place(&mut self, t: TensorId, block: TensorId, offset: usize) {
        self.graph.tensors[t.0 as usize].view = Some((block, offset));
    }

    /// A tensor for an op to compute.
    pub fn activation(&mut self, dims: Vec<usize>) -> TensorId {
        self.tensor("y", dims, Role::Activation)
    }

    /// Appends `op` on `inputs` writing `output`, which may be one of its inputs (an
    /// update in place), and the auxiliary outputs `aux`; the graph's output becomes
    /// `output`.
    pub fn op_aux(&mut self, op: Op, inputs: Vec<TensorId>, output: TensorId, aux: Vec<TensorId>) {
        self.graph.ops.push(OpNode { op, inputs, output, aux, layer: "test".into() });
        self.graph.output = output;
    }

    /// Appends `op` on `inputs`, computing a new tensor of shape `dims`.
    pub fn op(&mut self, op: Op, inputs: Vec<TensorId>, dims: Vec<usize>) -> TensorId {
        let out = self.activation(dims);
        self.op_aux(op, inputs, out, Vec::new());
        out
    }
}
