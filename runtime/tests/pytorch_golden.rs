//! nnc's training against PyTorch's. `tools/pytorch_golden.py` built three networks in
//! PyTorch and wrote, for each, a safetensors file in `tests/golden/`: the initial values,
//! one batch, PyTorch's logits and loss, the gradient of every parameter, and every
//! parameter and buffer after three SGD and three Adam steps on that batch. These tests
//! compile the same networks, start from the same values, run nnc's generated training
//! step and compare every quantity, printing the worst deviation of each (`--nocapture`).

use nnc_compiler::front::train::Loss;
use nnc_compiler::ir::ops::{ParamInfo, TensorId, UpdateRule};
use nnc_compiler::passes::lower::{Mode, lower_for};
use nnc_runtime::exec::{Executable, Options};
use nnc_runtime::init::{to_internal, to_torch};
use nnc_runtime::train::step::{StepSettings, TrainStep};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How far nnc may be from PyTorch, per tensor: max |nnc − PyTorch| over the tensor's
/// largest |PyTorch| value (for parameters after the optimizer steps: over the largest
/// change PyTorch made to the tensor) at most `max(FLOOR, FACTOR · rounding)`, where
/// `rounding` is the same measure between PyTorch's float32 result and a float64 run of
/// the same computation, stored in the golden file (`rounding.<tensor>`).
///
/// Both sides compute in f32 but sum in different orders, and nnc's `tanh`, `exp` and
/// `sigmoid` are its own approximations, so they agree to rounding, not bit for bit. How
/// much rounding a tensor carries depends on the network: sums of a few hundred terms
/// (LeNet-5's gradients) stay within 1e-5 of their scale, but batch-norm's backward pass
/// subtracts from the incoming gradient its mean and its correlation with the normalised
/// input, cancelling most of it, and Adam divides each gradient by its own magnitude, so
/// an element whose gradient is near zero takes a step of any size. The float64 run
/// measures this per tensor: PyTorch's own float32 results are up to 1.9e-4 off for
/// the residual network's `conv1.weight` gradient and 1.1e-2 off for its weights after
/// three SGD steps, but 2e-7 for the LSTM's gradients.
///
/// Each side lands within its rounding of the exact result, so they differ by about the
/// sum of the two; nnc sums longer runs one after another where PyTorch sums in blocks, so
/// its rounding may be several times PyTorch's. `FACTOR` allows that; an error of another
/// kind (a wrong formula, a lost term, a statistic from the wrong data) is orders of
/// magnitude larger. `FLOOR` (about 100 units in the last place) keeps a tensor whose
/// float32 and float64 results happen to agree from demanding bit-exact agreement.
const FACTOR: f64 = 10.0;
const FLOOR: f64 = 1e-5;

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One golden file: f32 and bf16 tensors as f32 with their shapes, the labels, and the
/// metadata (hyper-parameters, steps, PyTorch's own rounding per tensor).
struct Golden {
    floats: HashMap<String, (Vec<usize>, Vec<f32>)>,
    labels: Vec<i64>,
    metadata: HashMap<String, String>,
}

impl Golden {
    fn open(name: &str) -> Golden {
        let path = repository().join("tests/golden").join(format!("{name}.safetensors"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let file = SafeTensors::deserialize(&bytes).expect("a safetensors file");
        let (_, header) = SafeTensors::read_metadata(&bytes).expect("a safetensors header");
        let mut golden = Golden {
            floats: HashMap::new(),
            labels: Vec::new(),
            metadata: header.metadata().clone().unwrap_or_default(),
        };
        for (name, view) in file.tensors() {
            let data = view.data();
            match view.dtype() {
                Dtype::F32 => {
                    let values =
                        data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
                    golden.floats.insert(name, (view.shape().to_vec(), values));
                }
                // bfloat16 is the top half of an f32.
                Dtype::BF16 => {
                    let values = data
                        .chunks_exact(2)
                        .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
                        .collect();
                    golden.floats.insert(name, (view.shape().to_vec(), values));
                }
                Dtype::I64 if name == "labels" => {
                    golden.labels =
                        data.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect();
                }
                other => panic!("{}: tensor `{name}` is {other:?}", path.display()),
            }
        }
        golden
    }

    fn get(&self, name: &str) -> &[f32] {
        &self.floats.get(name).unwrap_or_else(|| panic!("the golden file has no `{name}`")).1
    }

    /// The tolerance for the golden tensor `key` (see [`FACTOR`]).
    fn tolerance(&self, key: &str) -> f64 {
        FLOOR.max(FACTOR * self.number(&format!("rounding.{key}")))
    }

    fn number(&self, key: &str) -> f64 {
        self.metadata[key].parse().unwrap_or_else(|e| panic!("metadata `{key}`: {e}"))
    }

    /// PyTorch's names of the parameters and buffers: those of the initial values.
    fn torch_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.floats.keys().filter_map(|k| k.strip_prefix("init.")).collect();
        names.sort();
        names
    }
}

/// nnc's name, among `nnc`, for the PyTorch parameter or buffer `torch`.
///
/// The golden script names modules as PyTorch code usually does, `bn1` and `fc1`, where
/// nnc numbers layers by kind: `batchnorm1`, `dense1`; convolutions and recurrent layers
/// are `conv1` and `lstm1` on both sides. `nn.LSTM` calls the tensors of its first layer
/// `weight_ih_l0`, nnc `weight_ih`: either spelling is accepted on nnc's side.
fn nnc_name(torch: &str, nnc: &[&str]) -> Option<String> {
    let (module, tensor) = torch.rsplit_once('.')?;
    let module = if let Some(n) = module.strip_prefix("bn") {
        format!("batchnorm{n}")
    } else if let Some(n) = module.strip_prefix("fc") {
        format!("dense{n}")
    } else {
        module.to_string()
    };
    let exact = format!("{module}.{tensor}");
    let without_layer = exact.strip_suffix("_l0").map(str::to_string);
    std::iter::once(exact).chain(without_layer).find(|n| nnc.contains(&n.as_str()))
}

/// Every parameter and buffer in `params` with its PyTorch name in `golden`; panics
/// unless the two sets correspond one to one.
fn pair_names(params: Vec<(TensorId, ParamInfo)>, golden: &Golden) -> Vec<(TensorId, ParamInfo, String)> {
    let nnc: Vec<&str> = params.iter().map(|(_, p)| p.name.as_str()).collect();
    let mut paired = Vec::new();
    for torch in golden.torch_names() {
        let name = nnc_name(torch, &nnc)
            .unwrap_or_else(|| panic!("no nnc tensor for PyTorch's `{torch}` in {nnc:?}"));
        let (t, info) = params.iter().find(|(_, p)| p.name == name).unwrap();
        assert!(
            !paired.iter().any(|(_, p, _): &(TensorId, ParamInfo, String)| p.name == name),
            "`{name}` twice"
        );
        paired.push((*t, info.clone(), torch.to_string()));
    }
    assert_eq!(paired.len(), params.len(), "nnc has tensors PyTorch does not: {nnc:?}");
    paired
}

/// Writes the golden initial values into `exe`'s parameters and buffers.
fn set_initial(exe: &mut Executable, golden: &Golden) -> Vec<(TensorId, ParamInfo, String)> {
    let params = exe.graph().params().map(|(t, p)| (t, p.clone())).collect();
    let paired = pair_names(params, golden);
    for (t, info, torch) in &paired {
        let (dims, values) = &golden.floats[&format!("init.{torch}")];
        assert_eq!(dims, &info.torch_dims, "shape of `{torch}`");
        exe.tensor_mut(*t).copy_from_slice(&to_internal(info, values));
    }
    paired
}

/// Writes the golden batch into the input tensor and the labels as class ids.
fn set_batch(input: &mut [f32], labels: &mut [f32], golden: &Golden) {
    input.copy_from_slice(golden.get("input"));
    assert_eq!(labels.len(), golden.labels.len(), "labels per batch");
    for (l, &id) in labels.iter_mut().zip(&golden.labels) {
        *l = f32::from_bits(id as u32);
    }
}

/// Measured deviations of one network, by quantity, and the comparisons that failed.
struct Report {
    network: String,
    /// Per quantity: the worst deviation, the tensor it came from and that tensor's
    /// tolerance.
    worst: Vec<(String, f64, String, f64)>,
    failures: Vec<String>,
}

impl Report {
    /// Records max |got − want| / `scale` for `tensor` under `quantity`, failing past `tol`.
    fn record(&mut self, quantity: &str, tensor: &str, got: &[f32], want: &[f32], scale: f64, tol: f64) {
        assert_eq!(got.len(), want.len(), "{quantity} {tensor}: lengths");
        // A NaN anywhere makes the deviation NaN (`f64::max` would skip it).
        let diff = got
            .iter()
            .zip(want)
            .map(|(&a, &b)| (a as f64 - b as f64).abs())
            .fold(0.0, |worst, d| if d.is_nan() || d > worst { d } else { worst });
        let deviation = if scale > 0.0 { diff / scale } else { diff };
        if deviation.is_nan() || deviation > tol {
            self.failures.push(format!(
                "{} {quantity} `{tensor}`: max |nnc − torch| = {diff:.3e}, {deviation:.3e} of the scale {scale:.3e} (tolerance {tol:.1e})",
                self.network
            ));
        }
        match self.worst.iter_mut().find(|(q, ..)| q == quantity) {
            Some(row) if row.1 >= deviation => {}
            Some(row) => *row = (quantity.to_string(), deviation, tensor.to_string(), tol),
            None => self.worst.push((quantity.to_string(), deviation, tensor.to_string(), tol)),
        }
    }

    /// Prints the worst deviation per quantity, then fails with every failed comparison.
    fn finish(self) {
        println!("{}: worst |nnc − torch| relative to scale", self.network);
        for (quantity, deviation, tensor, tol) in &self.worst {
            println!("  {quantity:<28} {deviation:.2e}  ({tensor}; tolerance {tol:.1e})");
        }
        assert!(self.failures.is_empty(), "nnc disagrees with PyTorch:\n{}", self.failures.join("\n"));
    }
}

fn max_abs(values: impl IntoIterator<Item = f64>) -> f64 {
    values.into_iter().map(f64::abs).fold(0.0, f64::max)
}

fn options() -> Options {
    Options { threads: 1, guard: true, verify: true, fma: true, ..Default::default() }
}

/// The logits of the first forward pass: nnc's forward kernels in training mode (batch
/// statistics), from the initial values.
fn check_logits(network: &nnc_compiler::ir::graph::Graph, golden: &Golden, report: &mut Report) {
    let batch = golden.floats["input"].0[0];
    let mut exe =
        Executable::from_ops(lower_for(network, batch, Mode::Training), &options()).expect("compiles");
    set_initial(&mut exe, golden);
    let input = exe.graph().inputs[0];
    exe.tensor_mut(input).copy_from_slice(golden.get("input"));
    exe.run().expect("runs");
    let want = golden.get("logits");
    let scale = max_abs(want.iter().map(|&v| v as f64));
    report.record("logits", "logits", exe.output(), want, scale, golden.tolerance("logits"));
}

/// Three steps of `rule` from the initial values on the golden batch: the loss and the
/// gradients of the first, and every parameter and buffer after the last against
/// PyTorch's under `prefix` (`sgd.`, `adam.`).
fn check_steps(
    network: &nnc_compiler::ir::graph::Graph,
    golden: &Golden,
    rule: UpdateRule,
    report: &mut Report,
) {
    let (prefix, lr) = match rule {
        UpdateRule::Sgd { .. } => ("sgd", golden.number("sgd_lr")),
        UpdateRule::Adam { .. } => ("adam", golden.number("adam_lr")),
    };
    let steps = golden.number("steps") as usize;
    let batch = golden.floats["input"].0[0];
    let mut step =
        TrainStep::new(network, Loss::CrossEntropy, rule, batch, &options()).expect("compiles for training");
    let paired = set_initial(&mut step.exe, golden);
    let input = step.exe.graph().inputs[0];
    // The step may reuse its input and label buffers: they are written before every step.
    let mut x = vec![0.0; step.input_mut().len()];
    let mut labels = vec![0.0; step.labels_mut().len()];
    set_batch(&mut x, &mut labels, golden);
    for s in 0..steps {
        step.exe.tensor_mut(input).copy_from_slice(&x);
        step.labels_mut().copy_from_slice(&labels);
        let stats = step.run(&StepSettings { lr, clip: None, seed: 1 }).expect("the step runs");
        if s > 0 {
            continue;
        }
        let loss = golden.get("loss")[0];
        let tol = golden.tolerance("loss");
        report.record(
            &format!("loss ({prefix})"),
            "loss",
            &[stats.loss as f32],
            &[loss],
            loss.abs() as f64,
            tol,
        );
        // The gradients of the first step, at the initial values, in the gradient block.
        let g = &step.exe.graph();
        for (_, info, torch) in paired.iter().filter(|(_, p, _)| p.trainable) {
            let name = format!("d {}", info.name);
            let grad = (0..g.tensors.len())
                .map(|i| TensorId(i as u32))
                .find(|&t| {
                    g.tensor(t).name == name
                        && g.tensor(t).view.is_some_and(|(b, _)| b == step.training.grads)
                })
                .unwrap_or_else(|| panic!("no tensor `{name}` in the gradient block"));
            let got = to_torch(info, step.exe.tensor(grad));
            let key = format!("grad.{torch}");
            let want = golden.get(&key);
            let scale = max_abs(want.iter().map(|&v| v as f64));
            report.record(&format!("gradients ({prefix})"), torch, &got, want, scale, golden.tolerance(&key));
        }
    }
    for (t, info, torch) in &paired {
        let got = to_torch(info, step.exe.tensor(*t));
        let key = format!("{prefix}.{torch}");
        let want = golden.get(&key);
        let tol = golden.tolerance(&key);
        if info.trainable {
            let init = golden.get(&format!("init.{torch}"));
            let change = max_abs(want.iter().zip(init).map(|(&a, &b)| a as f64 - b as f64));
            report.record(&format!("weights after {steps} {prefix} steps"), torch, &got, want, change, tol);
        } else {
            let scale = max_abs(want.iter().map(|&v| v as f64));
            report.record(&format!("running statistics ({prefix})"), torch, &got, want, scale, tol);
        }
    }
}

fn check(name: &str, source: &Path) {
    let model = nnc_compiler::compile_file(source).expect("the network compiles");
    let network = &model.networks[0];
    let golden = Golden::open(name);
    let mut report = Report { network: name.to_string(), worst: Vec::new(), failures: Vec::new() };
    check_logits(network, &golden, &mut report);
    let number = |key: &str| golden.number(key) as f32;
    let sgd = UpdateRule::Sgd {
        momentum: number("sgd_momentum"),
        nesterov: false,
        weight_decay: number("sgd_weight_decay"),
    };
    check_steps(network, &golden, sgd, &mut report);
    let adam = UpdateRule::Adam {
        beta1: number("adam_beta1"),
        beta2: number("adam_beta2"),
        eps: number("adam_eps"),
        weight_decay: 0.0,
        decoupled: false,
    };
    check_steps(network, &golden, adam, &mut report);
    report.finish();
}

#[test]
fn lenet5_trains_as_in_pytorch() {
    check("lenet5", &repository().join("examples/lenet5.net"));
}

#[test]
fn residual_network_with_batchnorm_trains_as_in_pytorch() {
    check("resnet_bn", &repository().join("tests/golden/resnet_bn.net"));
}

#[test]
fn char_lstm_trains_as_in_pytorch() {
    check("char_lstm_small", &repository().join("tests/golden/char_lstm_small.net"));
}

#[test]
fn pytorch_names_map_to_either_recurrent_spelling() {
    assert_eq!(
        nnc_name("bn2.running_var", &["batchnorm2.running_var"]).as_deref(),
        Some("batchnorm2.running_var")
    );
    assert_eq!(nnc_name("fc1.weight", &["dense1.weight"]).as_deref(), Some("dense1.weight"));
    assert_eq!(nnc_name("lstm1.weight_ih_l0", &["lstm1.weight_ih"]).as_deref(), Some("lstm1.weight_ih"));
    assert_eq!(
        nnc_name("lstm1.weight_ih_l0", &["lstm1.weight_ih_l0"]).as_deref(),
        Some("lstm1.weight_ih_l0")
    );
    assert_eq!(nnc_name("conv1.weight", &["conv2.weight"]), None);
}
