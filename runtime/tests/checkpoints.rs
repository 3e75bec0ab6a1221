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
    let options = Options { threads: 1, guard: false, verify: true, fma: true };
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
    let meta = checkpoint::load(&mut b, &path).unwrap();
    assert_eq!(meta.get("epoch").map(String::as_str), Some("1"));
    assert_eq!(checkpoint::state(&a), checkpoint::state(&b));
}

fn write(path: &PathBuf, tensors: &[(&str, Vec<usize>, safetensors::Dtype)]) {
    let data: Vec<(String, Vec<usize>, Vec<u8>, safetensors::Dtype)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let size = if *d == safetensors::Dtype::F64 { 8 } else { 4 };
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
    dtype[0].2 = safetensors::Dtype::F64;
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
