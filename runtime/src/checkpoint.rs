//! Checkpoints in safetensors: every parameter and buffer under its PyTorch name, in
//! PyTorch's layout and dtype (f32), so that `torch.load_state_dict(safetensors.torch.
//! load_file(path))` reads what nnc writes and nnc reads what PyTorch writes.
//!
//! Loading checks every tensor: a missing, extra, mis-shaped, wrongly typed or corrupt
//! tensor is an error that names it.

use crate::exec::Executable;
use crate::files;
use crate::init::{to_internal, to_torch};
use crate::train::run::Position;
use crate::train::step::TrainStep;
use nnc_compiler::front::train::{Optimizer, TrainConfig};
use nnc_compiler::ir::ops::Role;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("cannot read `{path}`: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("cannot write `{path}`: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("`{path}` is not a valid safetensors file: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("`{path}` has no tensor `{name}`, which the network needs ({shape:?})")]
    Missing { path: String, name: String, shape: Vec<usize> },
    #[error("`{path}` has tensors the network does not use: {}", .names.join(", "))]
    Extra { path: String, names: Vec<String> },
    #[error("tensor `{name}` in `{path}` has shape {found:?}, but the network needs {expected:?}")]
    Shape { path: String, name: String, expected: Vec<usize>, found: Vec<usize> },
    #[error("tensor `{name}` in `{path}` is {dtype:?}; nnc reads F32, F64, F16 and BF16")]
    Dtype { path: String, name: String, dtype: Dtype },
    #[error("`{path}` was not written: {count} of {total} values are NaN or infinite, the first in `{name}`")]
    NonFinite { path: String, name: String, count: usize, total: usize },
}

/// The file beside a checkpoint `lenet5.safetensors` that holds what only resuming needs
/// (optimizer state, position): `lenet5.train.safetensors`. Keeping it out of the weights
/// file leaves that a plain `state_dict` that loads strictly into the PyTorch module.
pub fn train_path(weights: &Path) -> PathBuf {
    let name = weights.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let stem = name.strip_suffix(".safetensors").unwrap_or(&name);
    weights.with_file_name(format!("{stem}.train.safetensors"))
}

/// A hash (FNV-1a) of the values of `state`, stored in the train file so that resuming
/// can tell that it belongs with the weights beside it (a crash between the two writes
/// leaves a pair that does not).
pub fn fingerprint(state: &[Entry]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, _, values) in state {
        let bytes = name.bytes().chain([0]).chain(values.iter().flat_map(|v| v.to_le_bytes()));
        for b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// Tensors whose names start with this are not parameters (optimizer state, in files
/// written before it moved to the train file) and are not required on load.
pub const STATE_PREFIX: &str = "__";

/// Optimizer state is stored per parameter as `__optim.{state}.{parameter}` (for example
/// `__optim.exp_avg.conv1.weight`), in the parameter's PyTorch layout.
pub const OPTIMIZER_PREFIX: &str = "__optim.";

/// A tensor to store: name, PyTorch dimensions, values.
pub type Entry = (String, Vec<usize>, Vec<f32>);

/// Every parameter and buffer of `exec`, in PyTorch's layout, by PyTorch's name.
pub fn state(exec: &Executable) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    exec.graph()
        .params()
        .map(|(t, info)| (info.name.clone(), info.torch_dims.clone(), to_torch(info, exec.tensor(t))))
        .collect()
}

/// Writes the parameters (and `metadata`) to `path`, atomically: a temporary file beside
/// it, then a rename, so an interrupted write never leaves a truncated checkpoint.
pub fn save(
    exec: &Executable,
    path: &Path,
    metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    save_entries(state(exec), batches_tracked(exec, 0), path, metadata)
}

/// The optimizer state of a training step, one entry per state and parameter.
pub fn optimizer_state(step: &TrainStep) -> Vec<Entry> {
    let t = &step.training;
    let mut entries = Vec::new();
    for (&state, name) in t.states.iter().zip(t.rule.state()) {
        let values = step.exe.tensor(state);
        for &(p, offset) in &t.layout {
            if let Role::Param(info) = &step.exe.graph().tensor(p).role {
                let slice = &values[offset..offset + step.exe.graph().tensor(p).len()];
                entries.push((
                    format!("{OPTIMIZER_PREFIX}{name}.{}", info.name),
                    info.torch_dims.clone(),
                    to_torch(info, slice),
                ));
            }
        }
    }
    entries
}

/// Reads the optimizer state of `step` from `path` (written by [`optimizer_state`]).
pub fn load_optimizer(step: &mut TrainStep, path: &Path) -> Result<(), CheckpointError> {
    let name = path.display().to_string();
    let bytes = read(path)?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| CheckpointError::Corrupt { path: name.clone(), reason: e.to_string() })?;
    let t = step.training.clone();
    for (&state, state_name) in t.states.iter().zip(t.rule.state()) {
        for &(p, offset) in &t.layout {
            let Role::Param(info) = step.exe.graph().tensor(p).role.clone() else { continue };
            let key = format!("{OPTIMIZER_PREFIX}{state_name}.{}", info.name);
            let values = read_f32(&file, &key, &info.torch_dims, &name)?;
            let len = values.len();
            step.exe.tensor_mut(state)[offset..offset + len].copy_from_slice(&to_internal(&info, &values));
        }
    }
    Ok(())
}

/// Tensor `key` of `file`, checked to be f32 of `dims`.
fn read_f32(
    file: &SafeTensors<'_>,
    key: &str,
    dims: &[usize],
    path: &str,
) -> Result<Vec<f32>, CheckpointError> {
    let view = file.tensor(key).map_err(|_| CheckpointError::Missing {
        path: path.into(),
        name: key.into(),
        shape: dims.to_vec(),
    })?;
    if view.shape() != dims {
        return Err(CheckpointError::Shape {
            path: path.into(),
            name: key.into(),
            expected: dims.to_vec(),
            found: view.shape().to_vec(),
        });
    }
    let data = view.data();
    Ok(match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
        Dtype::F64 => {
            data.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32).collect()
        }
        Dtype::F16 => data.chunks_exact(2).map(|b| f16_to_f32(u16::from_le_bytes([b[0], b[1]]))).collect(),
        // bfloat16 is the upper half of an f32.
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16))
            .collect(),
        dtype => return Err(CheckpointError::Dtype { path: path.into(), name: key.into(), dtype }),
    })
}

/// An IEEE half-precision value as f32 (exactly: every f16 is an f32).
fn f16_to_f32(h: u16) -> f32 {
    let sign = if h >> 15 == 1 { -1.0 } else { 1.0 };
    let exponent = ((h >> 10) & 0x1f) as i32;
    let fraction = (h & 0x3ff) as f32;
    match exponent {
        0 => sign * fraction * (-24f32).exp2(),
        0x1f if fraction == 0.0 => sign * f32::INFINITY,
        0x1f => f32::NAN,
        e => sign * (1.0 + fraction / 1024.0) * ((e - 15) as f32).exp2(),
    }
}

/// The bytes of the checkpoint at `path`: a regular file no larger than the memory free
/// for it.
pub fn read(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    files::read_regular(path, files::memory_budget())
        .map_err(|source| CheckpointError::Read { path: path.display().to_string(), source })
}

/// Whether `path` is a readable checkpoint whose every f32 value is finite.
pub fn is_finite(path: &Path) -> bool {
    let Ok(bytes) = read(path) else { return false };
    let Ok(file) = SafeTensors::deserialize(&bytes) else { return false };
    file.tensors().iter().filter(|(_, v)| v.dtype() == Dtype::F32).all(|(_, v)| {
        v.data().chunks_exact(4).all(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]).is_finite())
    })
}

/// Refuses `state`, to be written to `path`, when a value is NaN or infinite.
pub fn check_finite(state: &[Entry], path: &Path) -> Result<(), CheckpointError> {
    let bad = |(_, _, v): &Entry| v.iter().filter(|x| !x.is_finite()).count();
    match state.iter().find(|e| bad(e) > 0) {
        None => Ok(()),
        Some(first) => Err(CheckpointError::NonFinite {
            path: path.display().to_string(),
            name: first.0.clone(),
            count: state.iter().map(bad).sum(),
            total: state.iter().map(|e| e.2.len()).sum(),
        }),
    }
}

/// Writes `entries` (and `metadata`) to `path` atomically and durably (see
/// [`files::write_atomic`]). Nothing is written when a value is NaN or infinite: such a
/// checkpoint could only spread the failure to whatever loads it.
pub fn save_entries(
    state: Vec<Entry>,
    counters: Vec<(String, i64)>,
    path: &Path,
    metadata: HashMap<String, String>,
) -> Result<(), CheckpointError> {
    check_finite(&state, path)?;
    let name = path.display().to_string();
    let floats = state.into_iter().map(|(n, dims, values)| {
        (n, Dtype::F32, dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    });
    let ints = counters.into_iter().map(|(n, v)| (n, Dtype::I64, Vec::new(), v.to_le_bytes().to_vec()));
    let bytes: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = floats.chain(ints).collect();
    let views = bytes
        .iter()
        .map(|(n, dtype, dims, data)| {
            TensorView::new(*dtype, dims.clone(), data)
                .map(|v| (n.clone(), v))
                .map_err(|e| CheckpointError::Corrupt { path: name.clone(), reason: e.to_string() })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let data = safetensors::serialize(views, Some(metadata))
        .map_err(|e| CheckpointError::Corrupt { path: name.clone(), reason: e.to_string() })?;
    files::write_atomic(path, &data).map_err(|source| CheckpointError::Write { path: name, source })
}

/// What [`load`] found besides the parameters.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub metadata: HashMap<String, String>,
    /// The types of the tensors that were not f32 and were converted to it.
    pub converted: Vec<Dtype>,
}

/// PyTorch's count of the batches a batch-norm layer's running statistics have seen: an
/// int64 scalar beside `running_mean`, which nnc writes and accepts but does not use.
pub const BATCHES_TRACKED: &str = "num_batches_tracked";

/// The `num_batches_tracked` tensor of every batch-norm layer of `exec`, each `steps`.
pub fn batches_tracked(exec: &Executable, steps: u64) -> Vec<(String, i64)> {
    exec.graph()
        .params()
        .filter_map(|(_, info)| info.name.strip_suffix(".running_mean"))
        .map(|layer| (format!("{layer}.{BATCHES_TRACKED}"), steps as i64))
        .collect()
}

/// Reads `path` into `exec`'s parameters (converting f64, f16 and bf16 to f32) and
/// returns the file's metadata.
pub fn load(exec: &mut Executable, path: &Path) -> Result<Loaded, CheckpointError> {
    let name = path.display().to_string();
    let bytes = read(path)?;
    let file = SafeTensors::deserialize(&bytes)
        .map_err(|e| CheckpointError::Corrupt { path: name.clone(), reason: e.to_string() })?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| CheckpointError::Corrupt { path: name.clone(), reason: e.to_string() })?;
    let params: Vec<_> = exec.graph().params().map(|(t, info)| (t, info.clone())).collect();
    let counters = batches_tracked(exec, 0);
    let mut extra: Vec<String> = file
        .names()
        .into_iter()
        .filter(|n| !n.starts_with(STATE_PREFIX) && !params.iter().any(|(_, p)| p.name == *n))
        .filter(|n| {
            // A count of another type or shape is not PyTorch's and stays an error.
            let counter = counters.iter().any(|(c, _)| c == *n);
            !(counter && file.tensor(n).is_ok_and(|v| v.dtype() == Dtype::I64 && v.shape().is_empty()))
        })
        .map(str::to_string)
        .collect();
    if !extra.is_empty() {
        extra.sort();
        return Err(CheckpointError::Extra { path: name, names: extra });
    }
    let mut converted = Vec::new();
    for (t, info) in params {
        let values = read_f32(&file, &info.name, &info.torch_dims, &name)?;
        let dtype = file.tensor(&info.name).map_or(Dtype::F32, |v| v.dtype());
        if dtype != Dtype::F32 && !converted.contains(&dtype) {
            converted.push(dtype);
        }
        let internal = to_internal(&info, &values);
        exec.tensor_mut(t).copy_from_slice(&internal);
    }
    Ok(Loaded { metadata: header.metadata().clone().unwrap_or_default(), converted })
}

/// The metadata format this version writes. Format 1 stored the optimizer only as Rust's
/// `Debug` text; format 2 stores it as fields ([`CheckpointMeta::to_metadata`]).
pub const META_FORMAT: u32 = 2;

/// What nnc stores beside the tensors of the checkpoints `nnc train` writes. In the file
/// it is safetensors metadata, string → string under `nnc.*` keys, which PyTorch's loaders
/// ignore; here it is typed, and reading it checks every value.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckpointMeta {
    /// The network trained (`nnc.network`).
    pub network: String,
    /// A hash of the model's source text (`nnc.source`), so that resuming refuses a
    /// checkpoint of another model.
    pub source: String,
    pub seed: u64,
    /// The update rule and its hyper-parameters (`nnc.optimizer`, `nnc.optimizer.lr`, ...).
    pub optimizer: Optimizer,
    /// Every effective setting of the run (the train section with the flags applied) and
    /// whether examples are shuffled (`nnc.settings`, JSON): a resumed run takes them.
    pub config: TrainConfig,
    pub shuffle: bool,
    /// A character model's vocabulary (`nnc.vocabulary`).
    pub vocabulary: Option<String>,
    /// Where the run was when it wrote the file (`nnc.epoch`, `nnc.batch`, `nnc.step`).
    pub position: Option<Position>,
    /// The lowest test loss so far (`nnc.best_loss`).
    pub best_loss: Option<f64>,
    /// In a train file: the fingerprint of the weights it goes with (`nnc.weights`).
    pub weights: Option<String>,
}

/// Metadata that nnc wrote but that is missing a value or holds one it cannot read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MetaError {
    #[error("`{path}` has no `{key}` metadata (it was not written by this version of `nnc train`)")]
    Missing { path: String, key: &'static str },
    #[error("`{path}` has a bad `{key}` metadata value `{value}`: {reason}")]
    Bad { path: String, key: &'static str, value: String, reason: String },
}

mod key {
    pub const FORMAT: &str = "nnc.format";
    pub const NETWORK: &str = "nnc.network";
    pub const SOURCE: &str = "nnc.source";
    pub const SEED: &str = "nnc.seed";
    pub const OPTIMIZER: &str = "nnc.optimizer";
    pub const LR: &str = "nnc.optimizer.lr";
    pub const MOMENTUM: &str = "nnc.optimizer.momentum";
    pub const NESTEROV: &str = "nnc.optimizer.nesterov";
    pub const BETA1: &str = "nnc.optimizer.beta1";
    pub const BETA2: &str = "nnc.optimizer.beta2";
    pub const EPS: &str = "nnc.optimizer.eps";
    pub const WEIGHT_DECAY: &str = "nnc.optimizer.weight_decay";
    pub const SETTINGS: &str = "nnc.settings";
    pub const VOCABULARY: &str = "nnc.vocabulary";
    pub const EPOCH: &str = "nnc.epoch";
    pub const BATCH: &str = "nnc.batch";
    pub const STEP: &str = "nnc.step";
    pub const BEST_LOSS: &str = "nnc.best_loss";
    pub const WEIGHTS: &str = "nnc.weights";
}

/// The stored form of `nnc.settings`.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredSettings {
    config: TrainConfig,
    shuffle: bool,
}

impl CheckpointMeta {
    /// The metadata to store: string → string, as safetensors (and PyTorch) keep it.
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::new();
        let mut put = |k: &str, v: String| {
            m.insert(k.to_string(), v);
        };
        put(key::FORMAT, META_FORMAT.to_string());
        put(key::NETWORK, self.network.clone());
        put(key::SOURCE, self.source.clone());
        put(key::SEED, self.seed.to_string());
        // Floats as Rust prints them: the shortest text that reads back as the same value.
        let (kind, lr, weight_decay) = match self.optimizer {
            Optimizer::Sgd { lr, momentum, nesterov, weight_decay } => {
                put(key::MOMENTUM, momentum.to_string());
                put(key::NESTEROV, nesterov.to_string());
                ("sgd", lr, weight_decay)
            }
            Optimizer::Adam { lr, beta1, beta2, eps, weight_decay }
            | Optimizer::Adamw { lr, beta1, beta2, eps, weight_decay } => {
                put(key::BETA1, beta1.to_string());
                put(key::BETA2, beta2.to_string());
                put(key::EPS, eps.to_string());
                let kind = if matches!(self.optimizer, Optimizer::Adam { .. }) { "adam" } else { "adamw" };
                (kind, lr, weight_decay)
            }
        };
        put(key::OPTIMIZER, kind.to_string());
        put(key::LR, lr.to_string());
        put(key::WEIGHT_DECAY, weight_decay.to_string());
        let settings = StoredSettings { config: self.config.clone(), shuffle: self.shuffle };
        put(key::SETTINGS, serde_json::to_string(&settings).expect("settings serialise"));
        if let Some(v) = &self.vocabulary {
            put(key::VOCABULARY, v.clone());
        }
        if let Some(p) = self.position {
            put(key::EPOCH, p.epoch.to_string());
            put(key::BATCH, p.batch.to_string());
            put(key::STEP, p.step.to_string());
        }
        if let Some(loss) = self.best_loss {
            put(key::BEST_LOSS, loss.to_string());
        }
        if let Some(w) = &self.weights {
            put(key::WEIGHTS, w.clone());
        }
        m
    }

    /// Reads the metadata of the checkpoint at `path`: `None` for a file that `nnc train`
    /// did not write (no `nnc.format`, as from PyTorch), an error naming the file and the
    /// key for a value that is missing or unreadable. Files of format 1 (the optimizer as
    /// `Debug` text) read too: their optimizer is the one in their stored settings.
    pub fn from_metadata(
        m: &HashMap<String, String>,
        path: &Path,
    ) -> Result<Option<CheckpointMeta>, MetaError> {
        let path = path.display().to_string();
        if !m.contains_key(key::FORMAT) {
            return Ok(None);
        }
        let at = Reader { m, path: &path };
        let format: u32 = at.parse(key::FORMAT)?;
        if format != 1 && format != META_FORMAT {
            let reason = format!("this version of nnc reads formats 1 and {META_FORMAT}");
            return Err(MetaError::Bad { path, key: key::FORMAT, value: format.to_string(), reason });
        }
        let settings: StoredSettings = at
            .get(key::SETTINGS)
            .and_then(|text| serde_json::from_str(text).map_err(|e| at.bad(key::SETTINGS, e.to_string())))?;
        let optimizer = if format == 1 { settings.config.optimizer } else { at.optimizer()? };
        let position = match (m.get(key::EPOCH), m.get(key::BATCH), m.get(key::STEP)) {
            (None, None, None) => None,
            _ => Some(Position {
                epoch: at.parse(key::EPOCH)?,
                batch: at.parse(key::BATCH)?,
                step: at.parse(key::STEP)?,
            }),
        };
        Ok(Some(CheckpointMeta {
            network: at.get(key::NETWORK)?.clone(),
            source: at.get(key::SOURCE)?.clone(),
            seed: at.parse(key::SEED)?,
            optimizer,
            config: settings.config,
            shuffle: settings.shuffle,
            vocabulary: m.get(key::VOCABULARY).cloned(),
            position,
            best_loss: m.get(key::BEST_LOSS).map(|_| at.parse(key::BEST_LOSS)).transpose()?,
            weights: m.get(key::WEIGHTS).cloned(),
        }))
    }
}

/// Values of one file's metadata, each read with an error that names the file and key.
struct Reader<'m> {
    m: &'m HashMap<String, String>,
    path: &'m str,
}

impl Reader<'_> {
    fn get(&self, key: &'static str) -> Result<&String, MetaError> {
        self.m.get(key).ok_or_else(|| MetaError::Missing { path: self.path.into(), key })
    }

    fn bad(&self, key: &'static str, reason: String) -> MetaError {
        let value = self.m.get(key).cloned().unwrap_or_default();
        MetaError::Bad { path: self.path.into(), key, value, reason }
    }

    fn parse<T: std::str::FromStr>(&self, key: &'static str) -> Result<T, MetaError>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)?.parse().map_err(|e: T::Err| self.bad(key, e.to_string()))
    }

    fn optimizer(&self) -> Result<Optimizer, MetaError> {
        let (lr, weight_decay) = (self.parse(key::LR)?, self.parse(key::WEIGHT_DECAY)?);
        let adam = |decoupled: bool| -> Result<Optimizer, MetaError> {
            let (beta1, beta2, eps) =
                (self.parse(key::BETA1)?, self.parse(key::BETA2)?, self.parse(key::EPS)?);
            Ok(if decoupled {
                Optimizer::Adamw { lr, beta1, beta2, eps, weight_decay }
            } else {
                Optimizer::Adam { lr, beta1, beta2, eps, weight_decay }
            })
        };
        match self.get(key::OPTIMIZER)?.as_str() {
            "sgd" => Ok(Optimizer::Sgd {
                lr,
                momentum: self.parse(key::MOMENTUM)?,
                nesterov: self.parse(key::NESTEROV)?,
                weight_decay,
            }),
            "adam" => adam(false),
            "adamw" => adam(true),
            _ => Err(self.bad(key::OPTIMIZER, "expected sgd, adam or adamw".into())),
        }
    }
}
