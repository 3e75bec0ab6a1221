//! Checkpoints: PyTorch names and layouts on disk, exact round trips, and a clear error
//! for every way a file can disagree with the network.

use nnc_runtime::checkpoint::{self, CheckpointError};
use nnc_runtime::exec::{Executable, Options};
use std::collections::HashMap;
use std::path::PathBuf;

const MODEL: &str =
    "network n(x: [2, 5, 5]) {\n    x |> conv(3, 3, pad: 1) |> batchnorm |> relu |> flatten |> dense(4)\n}\n";

fn build() -> Executable {
    let model = nnc_compiler::compile_str("n.net", MODEL, None).unwrap();
    let options = Options { threads: 1, guard: false, verify: true, fma: true, ..Default::default() };
    Executable::build(&model.networks[0], 2, &options).unwrap()
}

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn round_trip_in_pytorch_layout() {
    let mut a = build();
    a.init_params(3);
    let path = dir("roundtrip").join("w.safetensors");
    checkpoint::save(&a, &path, HashMap::from([("epoch".into(), "1".into())])).unwrap();
    // The dense weight is [out, in] on disk, as PyTorch has it, although nnc stores it
    // transposed.
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(file.tensor("dense1.weight").unwrap().shape(), [4, 75]);
    assert_eq!(file.tensor("conv1.weight").unwrap().shape(), [3, 2, 3, 3]);
    assert_eq!(file.tensor("batchnorm1.running_var").unwrap().shape(), [3]);
    let mut b = build();
    let meta = checkpoint::load(&mut b, &path).unwrap().metadata;
    assert_eq!(meta.get("epoch").map(String::as_str), Some("1"));
    assert_eq!(checkpoint::state(&a), checkpoint::state(&b));
}

fn write(path: &PathBuf, tensors: &[(&str, Vec<usize>, safetensors::Dtype)]) {
    let data: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let size = d.bitsize() / 8;
            (n.to_string(), s.clone(), vec![0u8; s.iter().product::<usize>() * size], *d)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, s, b, d)| (n.clone(), safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn all_tensors() -> Vec<(&'static str, Vec<usize>, safetensors::Dtype)> {
    let f = safetensors::Dtype::F32;
    vec![
        ("conv1.weight", vec![3, 2, 3, 3], f),
        ("conv1.bias", vec![3], f),
        ("batchnorm1.weight", vec![3], f),
        ("batchnorm1.bias", vec![3], f),
        ("batchnorm1.running_mean", vec![3], f),
        ("batchnorm1.running_var", vec![3], f),
        ("dense1.weight", vec![4, 75], f),
        ("dense1.bias", vec![4], f),
    ]
}

#[test]
fn every_disagreement_names_the_tensor() {
    let d = dir("errors");
    let mut exec = build();
    let p = d.join("ok.safetensors");
    write(&p, &all_tensors());
    checkpoint::load(&mut exec, &p).unwrap();

    let mut missing = all_tensors();
    missing.retain(|t| t.0 != "batchnorm1.running_var");
    write(&p, &missing);
    let e = checkpoint::load(&mut exec, &p).unwrap_err();
    assert!(matches!(&e, CheckpointError::Missing { name, .. } if name == "batchnorm1.running_var"), "{e}");

    let mut extra = all_tensors();
    extra.push(("fc.weight", vec![2], safetensors::Dtype::F32));
    write(&p, &extra);
    assert!(checkpoint::load(&mut exec, &p).unwrap_err().to_string().contains("fc.weight"));

    let mut shape = all_tensors();
    shape[6].1 = vec![75, 4];
    write(&p, &shape);
    let e = checkpoint::load(&mut exec, &p).unwrap_err().to_string();
    assert!(e.contains("dense1.weight") && e.contains("[75, 4]") && e.contains("[4, 75]"), "{e}");

    let mut dtype = all_tensors();
    dtype[0].2 = safetensors::Dtype::I32;
    write(&p, &dtype);
    assert!(checkpoint::load(&mut exec, &p).unwrap_err().to_string().contains("conv1.weight"));

    std::fs::write(&p, b"not a safetensors file at all").unwrap();
    assert!(matches!(checkpoint::load(&mut exec, &p).unwrap_err(), CheckpointError::Corrupt { .. }));
    write(&p, &all_tensors());
    let bytes = std::fs::read(&p).unwrap();
    std::fs::write(&p, &bytes[..bytes.len() - 10]).unwrap();
    assert!(matches!(checkpoint::load(&mut exec, &p).unwrap_err(), CheckpointError::Corrupt { .. }));
    assert!(matches!(checkpoint::load(&mut exec, &d).unwrap_err(), CheckpointError::Read { .. }));
    assert!(matches!(
        checkpoint::load(&mut exec, &d.join("absent")).unwrap_err(),
        CheckpointError::Read { .. }
    ));
}

/// `values` as a tensor of `dtype`.
fn encode(values: &[f32], dtype: safetensors::Dtype) -> Vec<u8> {
    use safetensors::Dtype::*;
    match dtype {
        F64 => values.iter().flat_map(|&v| (v as f64).to_le_bytes()).collect(),
        BF16 => values.iter().flat_map(|&v| ((v.to_bits() >> 16) as u16).to_le_bytes()).collect(),
        // Exact for the values used here: small integers and halves.
        F16 => values
            .iter()
            .flat_map(|&v| {
                let (sign, a) = (if v < 0.0 { 0x8000u16 } else { 0 }, v.abs());
                let bits = if a == 0.0 {
                    0
                } else {
                    let e = a.log2().floor() as i32;
                    let fraction = ((a / (e as f32).exp2() - 1.0) * 1024.0) as u16;
                    (((e + 15) as u16) << 10) | fraction
                };
                (sign | bits).to_le_bytes()
            })
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

#[test]
fn other_float_types_are_converted_and_batch_counts_accepted() {
    let d = dir("dtypes");
    let mut a = build();
    a.init_params(3);
    // Values every type holds exactly.
    let state: Vec<_> = checkpoint::state(&a)
        .into_iter()
        .map(|(n, dims, v)| {
            let exact: Vec<f32> = v.iter().enumerate().map(|(i, _)| (i % 7) as f32 * 0.5 - 1.5).collect();
            (n, dims, exact)
        })
        .collect();
    for dtype in [safetensors::Dtype::F64, safetensors::Dtype::F16, safetensors::Dtype::BF16] {
        let mut data: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> =
            state.iter().map(|(n, dims, v)| (n.clone(), dims.clone(), encode(v, dtype), dtype)).collect();
        // As PyTorch's state_dict has it for a batch-norm layer.
        data.push((
            "batchnorm1.num_batches_tracked".into(),
            vec![],
            7i64.to_le_bytes().to_vec(),
            safetensors::Dtype::I64,
        ));
        let views: Vec<_> = data
            .iter()
            .map(|(n, s, b, t)| (n.clone(), safetensors::tensor::TensorView::new(*t, s.clone(), b).unwrap()))
            .collect();
        let p = d.join(format!("{dtype:?}.safetensors"));
        std::fs::write(&p, safetensors::serialize(views, None).unwrap()).unwrap();
        let mut b = build();
        let loaded = checkpoint::load(&mut b, &p).unwrap();
        assert_eq!(loaded.converted, [dtype]);
        assert_eq!(checkpoint::state(&b), state, "{dtype:?}");
    }
    // nnc writes the count too, as an int64 scalar.
    let p = d.join("written.safetensors");
    checkpoint::save(&a, &p, HashMap::new()).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let count = file.tensor("batchnorm1.num_batches_tracked").unwrap();
    assert_eq!((count.dtype(), count.shape()), (safetensors::Dtype::I64, &[][..]));
    assert!(checkpoint::load(&mut build(), &p).unwrap().converted.is_empty());
}

/// A run's metadata as `nnc train` stores it, for the model's train section with
/// `optimizer`.
fn meta(optimizer: &str) -> checkpoint::CheckpointMeta {
    let text = format!("{MODEL}train n {{\n    optimizer = {optimizer}\n    batch = 2\n}}\n");
    let model = nnc_compiler::compile_str("n.net", &text, None).unwrap();
    let config = model.trains[0].clone();
    checkpoint::CheckpointMeta {
        network: "n".into(),
        source: "0123456789abcdef".into(),
        seed: 7,
        optimizer: config.optimizer,
        config,
        shuffle: true,
        vocabulary: None,
        position: Some(nnc_runtime::train::run::Position { epoch: 1, batch: 3, step: 13 }),
        best_loss: Some(0.125),
        weights: None,
    }
}

#[test]
fn checkpoint_metadata_stores_the_optimizer_as_fields_and_reads_back_the_same() {
    let path = std::path::Path::new("run.train.safetensors");
    for optimizer in [
        "sgd(lr: 0.05, momentum: 0.9, nesterov: true, weight_decay: 5e-4)",
        "adam(lr: 3e-3, beta1: 0.8, eps: 1e-7)",
        "adamw(lr: 0.001, weight_decay: 0.01)",
    ] {
        let m = meta(optimizer);
        let stored = m.to_metadata();
        assert!(stored.keys().all(|k| k.starts_with("nnc.")), "{stored:?}");
        assert_eq!(stored["nnc.format"], checkpoint::META_FORMAT.to_string());
        assert_eq!(stored["nnc.optimizer.lr"], format!("{}", m.config.optimizer.update_rule().1));
        let kind = &optimizer[..optimizer.find('(').unwrap()];
        assert_eq!(stored["nnc.optimizer"], kind);
        let back = checkpoint::CheckpointMeta::from_metadata(&stored, path).unwrap();
        assert_eq!(back, Some(m), "{optimizer}");
    }
    let sgd = meta("sgd(lr: 0.05, momentum: 0.9, nesterov: true)").to_metadata();
    assert_eq!(
        (sgd["nnc.optimizer.momentum"].as_str(), sgd["nnc.optimizer.nesterov"].as_str()),
        ("0.9", "true")
    );
    let adamw = meta("adamw(lr: 0.001, beta2: 0.99)").to_metadata();
    assert_eq!(adamw["nnc.optimizer.beta2"], "0.99");
    assert!(!adamw.contains_key("nnc.optimizer.momentum"));
}

#[test]
fn checkpoint_metadata_of_the_first_format_reads_its_optimizer_from_the_settings() {
    // As the first format had it: the optimizer as `Debug` text beside the settings.
    let m = meta("sgd(lr: 0.05, momentum: 0.9)");
    let mut old = m.to_metadata();
    old.retain(|k, _| !k.starts_with("nnc.optimizer."));
    old.insert("nnc.format".into(), "1".into());
    old.insert(
        "nnc.optimizer".into(),
        "Sgd { lr: 0.05, momentum: 0.9, nesterov: false, weight_decay: 0.0 }".into(),
    );
    let path = std::path::Path::new("old.train.safetensors");
    assert_eq!(checkpoint::CheckpointMeta::from_metadata(&old, path).unwrap(), Some(m));
}

#[test]
fn checkpoint_metadata_that_is_missing_or_bad_is_named() {
    use checkpoint::MetaError;
    let path = std::path::Path::new("run.train.safetensors");
    let read = |edit: &dyn Fn(&mut HashMap<String, String>)| {
        let mut m = meta("adam(lr: 0.001)").to_metadata();
        edit(&mut m);
        checkpoint::CheckpointMeta::from_metadata(&m, path)
    };
    // Not written by `nnc train`: nothing to read, and no complaint (PyTorch's files).
    assert_eq!(checkpoint::CheckpointMeta::from_metadata(&HashMap::new(), path), Ok(None));
    let missing = read(&|m| {
        m.remove("nnc.optimizer.beta1");
    });
    assert_eq!(
        missing,
        Err(MetaError::Missing { path: "run.train.safetensors".into(), key: "nnc.optimizer.beta1" })
    );
    let e = read(&|m| {
        m.insert("nnc.step".into(), "-3".into());
    })
    .unwrap_err();
    assert!(matches!(&e, MetaError::Bad { key: "nnc.step", value, .. } if value == "-3"), "{e:?}");
    assert!(
        e.to_string().starts_with("`run.train.safetensors` has a bad `nnc.step` metadata value `-3`"),
        "{e}"
    );
    for (key, value) in [
        ("nnc.optimizer", "rmsprop"),
        ("nnc.optimizer.lr", "fast"),
        ("nnc.format", "3"),
        ("nnc.settings", "{"),
        ("nnc.best_loss", "low"),
    ] {
        let e = read(&|m| {
            m.insert(key.into(), value.into());
        })
        .unwrap_err();
        assert!(matches!(&e, MetaError::Bad { key: k, .. } if *k == key), "{key}: {e:?}");
    }
    let e = read(&|m| {
        m.remove("nnc.batch");
    })
    .unwrap_err();
    assert_eq!(e, MetaError::Missing { path: "run.train.safetensors".into(), key: "nnc.batch" });
}
