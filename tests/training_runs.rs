//! Whole training runs through the `nnc` command: stopped part-way and resumed, a run
//! reaches bit for bit the weights and optimizer state of an uninterrupted one with the
//! same seed (shuffling, augmentation and dropout all in play); checkpoints it cannot
//! continue are refused; a run that diverges stops, names the tensor and keeps the last
//! good checkpoint. Threads take chunks of each kernel's work in whatever order they
//! come, yet a run on several threads gives the same weights every time.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nnc(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nnc")).args(args).current_dir(dir).env("NO_COLOR", "1").output().unwrap()
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A small network that uses every source of randomness a step has.
const MODEL: &str = "network small(image: [1, 28, 28]) {
    image |> conv(4, 5, stride: 2) |> relu |> maxpool(2) |> flatten |> dropout(0.3) |> dense(10)
}

train small {
    loss      = cross_entropy
    optimizer = adam(lr: 3e-3)
    schedule  = cosine
    batch     = 50
    epochs    = 2
    augment   = [random_crop(pad: 2)]
    mean      = 0.13
    std       = 0.31
    seed      = 5
}
";

/// Every tensor of a checkpoint, by name.
fn tensors(path: &Path) -> Vec<(String, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut all: Vec<(String, Vec<u8>)> =
        file.tensors().into_iter().map(|(n, v)| (n, v.data().to_vec())).collect();
    all.sort();
    all
}

#[test]
fn a_resumed_run_equals_an_uninterrupted_one() {
    let dir = scratch("resume");
    std::fs::write(dir.join("small.net"), MODEL).unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["train", "small.net", "--threads", "1", "--quiet"];
        all.extend(args);
        let o = nnc(&dir, &all);
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    run(&["--out", "whole.safetensors"]);
    // Stopped in the middle of the first epoch, resumed, stopped in the second, resumed.
    let stopped = run(&["--out", "parts.safetensors", "--max-steps", "17"]);
    assert!(stopped.contains("--resume parts.safetensors"), "{stopped}");
    run(&["--resume", "parts.safetensors", "--max-steps", "55"]);
    let resumed = run(&["--resume", "parts.safetensors", "--out", "parts.safetensors"]);
    assert!(resumed.contains("resuming at epoch 2 batch 15 (step 55)"), "{resumed}");
    for (w, p) in [("whole", "parts"), ("whole.train", "parts.train")] {
        let (whole, parts) =
            (tensors(&dir.join(format!("{w}.safetensors"))), tensors(&dir.join(format!("{p}.safetensors"))));
        assert_eq!(whole.len(), parts.len());
        for ((name, a), (_, b)) in whole.iter().zip(&parts) {
            assert!(a == b, "{name} differs between the whole run and the resumed one");
        }
    }
    // The weights file is a plain state_dict: the model's tensors only. The optimizer
    // state is beside it.
    let names = |f: &str| tensors(&dir.join(f)).into_iter().map(|(n, _)| n).collect::<Vec<_>>();
    assert_eq!(names("whole.safetensors"), ["conv1.bias", "conv1.weight", "dense1.bias", "dense1.weight"]);
    assert!(names("whole.train.safetensors").iter().any(|n| n.starts_with("__optim.exp_avg_sq.")));
    // A train file that was not written with the weights beside it is refused.
    run(&["--out", "early.safetensors", "--max-steps", "3"]);
    std::fs::copy(dir.join("whole.safetensors"), dir.join("mixed.safetensors")).unwrap();
    std::fs::copy(dir.join("early.train.safetensors"), dir.join("mixed.train.safetensors")).unwrap();
    let o = nnc(&dir, &["train", "small.net", "--resume", "mixed.safetensors"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("`mixed.train.safetensors` does not belong with `mixed.safetensors`"), "{err}");
    // Each run's metrics are beside its checkpoint; the resumed run's epochs are appended.
    let epochs = |file: &str| -> Vec<String> {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        text.lines().map(|l| l.split(',').find(|f| f.contains("\"epoch\"")).unwrap().to_string()).collect()
    };
    assert_eq!(epochs("whole.metrics.jsonl"), epochs("parts.metrics.jsonl"));
    assert_eq!(epochs("whole.metrics.jsonl").len(), 2);
    // A different seed, or a checkpoint of another model, cannot be resumed.
    let o = nnc(&dir, &["train", "small.net", "--resume", "parts.safetensors", "--seed", "6"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--seed 6 differs from 5, which `parts.safetensors` was trained with"), "{err}");
    std::fs::write(dir.join("other.net"), MODEL.replace("dense(10)", "relu |> dense(10)")).unwrap();
    let o = nnc(&dir, &["train", "other.net", "--resume", "parts.safetensors"]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("different model source") && !err.contains("panicked"), "{err}");
}

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let dir = scratch("diverge");
    std::fs::write(dir.join("small.net"), MODEL).unwrap();
    let o = nnc(&dir, &["train", "small.net", "--threads", "1", "--quiet", "--epochs", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let good = std::fs::read(dir.join("small.safetensors")).unwrap();
    // From those weights, a learning rate this large overflows within a few steps.
    let args = [
        "train",
        "small.net",
        "--threads",
        "1",
        "--quiet",
        "--init-from",
        "small.safetensors",
        "--lr",
        "1e30",
    ];
    let o = nnc(&dir, &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("became non-finite") && err.contains("step "), "{err}");
    assert!(err.contains("the parameters were not updated") && !err.contains("panicked"), "{err}");
    assert!(err.contains("the last good checkpoint is small.safetensors, from before this run"), "{err}");
    assert_eq!(std::fs::read(dir.join("small.safetensors")).unwrap(), good, "the checkpoint was overwritten");
}

#[test]
fn ctrl_c_saves_a_checkpoint_that_resumes() {
    let dir = scratch("interrupt");
    std::fs::write(dir.join("small.net"), MODEL.replace("epochs    = 2", "epochs    = 1000")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["train", "small.net", "--threads", "1", "--quiet"])
        .current_dir(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once an epoch has finished (its metrics line is written).
    let metrics = dir.join("small.metrics.jsonl");
    while std::fs::read_to_string(&metrics).map_or(true, |m| m.is_empty()) {
        assert!(child.try_wait().unwrap().is_none(), "training ended before its first epoch did");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted at epoch") && err.contains("--resume small.safetensors"), "{err}");
    // The checkpoint it wrote continues, here for two more steps.
    let step = || {
        let bytes = std::fs::read(dir.join("small.safetensors")).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        header.metadata().as_ref().unwrap()["nnc.step"].parse::<u64>().unwrap()
    };
    let at = step();
    assert!(at >= 40, "stopped after the first epoch's 40 steps, not at {at}");
    let limit = (at + 2).to_string();
    let args = [
        "train",
        "small.net",
        "--threads",
        "1",
        "--quiet",
        "--resume",
        "small.safetensors",
        "--max-steps",
        &limit,
    ];
    let o = nnc(&dir, &args);
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(step(), at + 2);
}

#[test]
fn runs_on_several_threads_repeat_exactly() {
    let dir = scratch("threads");
    let lenet = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lenet5.net");
    let run = |out: &str| {
        let args = ["train", lenet.to_str().unwrap(), "--threads", "3", "--batch", "64", "--max-steps", "12"];
        let o = nnc(&dir, &[&args[..], &["--quiet", "--out", out]].concat());
        assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
        tensors(&dir.join(out))
    };
    let (first, second) = (run("first.safetensors"), run("second.safetensors"));
    assert_eq!(first.len(), second.len());
    for ((name, a), (_, b)) in first.iter().zip(&second) {
        assert!(a == b, "{name} differs between two runs on three threads");
    }
}

#[test]
fn a_run_whose_parameters_overflow_stops_and_keeps_only_finite_checkpoints() {
    let dir = scratch("overflow");
    let lenet = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lenet5.net");
    // The updates overflow the parameters to infinity while tanh keeps the loss and the
    // gradients finite, so only the parameters show it.
    let args = ["--batch", "1000", "--lr", "1e10", "--epochs", "3", "--threads", "1", "--quiet"];
    let o = nnc(&dir, &[&["train", lenet.to_str().unwrap()][..], &args].concat());
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("diverged") && err.contains("NaN or infinite"), "{err}");
    // The checkpoint it names as the last good one is an earlier epoch's, all finite.
    assert!(err.contains("the last good checkpoint is lenet5.safetensors"), "{err}");
    let bytes = std::fs::read(dir.join("lenet5.safetensors")).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    for (name, view) in file.tensors() {
        let finite =
            view.data().chunks_exact(4).all(|b| f32::from_le_bytes(b.try_into().unwrap()).is_finite());
        assert!(finite, "{name} holds non-finite values");
    }
}

#[test]
fn a_run_that_diverges_before_its_first_checkpoint_names_none() {
    let dir = scratch("overflow-first");
    let lenet = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/lenet5.net");
    // What is there from before is not a checkpoint, let alone a good one.
    std::fs::write(dir.join("lenet5.safetensors"), b"not a checkpoint").unwrap();
    let args =
        ["train", lenet.to_str().unwrap(), "--lr", "1e30", "--batch", "1000", "--threads", "1", "--quiet"];
    let o = nnc(&dir, &args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no checkpoint was written") && !err.contains("last good"), "{err}");
    assert_eq!(std::fs::read(dir.join("lenet5.safetensors")).unwrap(), b"not a checkpoint");
}

/// The metadata of a checkpoint.
fn metadata(path: &Path) -> std::collections::HashMap<String, String> {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    header.metadata().clone().unwrap()
}

#[test]
fn a_resumed_run_keeps_its_settings_and_checks_its_position() {
    let dir = scratch("resume-settings");
    std::fs::create_dir_all(dir.join("elsewhere")).unwrap();
    std::fs::write(dir.join("small.net"), MODEL).unwrap();
    let run = |cwd: &Path, args: &[&str]| {
        let o = nnc(cwd, &[&["train", "--threads", "1", "--quiet"][..], args].concat());
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    // Started with overrides, stopped, then resumed with none: the overrides hold (one
    // epoch, not the section's two; no shuffling).
    let args = ["small.net", "--epochs", "1", "--lr", "0.01", "--no-shuffle", "--max-steps", "5"];
    let (code, err) = run(&dir, &args);
    assert_eq!(code, Some(0), "{err}");
    let checkpoint = dir.join("small.safetensors");
    // Through another path to the same model, from another directory.
    let model = dir.join("small.net");
    let (code, err) =
        run(&dir.join("elsewhere"), &[model.to_str().unwrap(), "--resume", checkpoint.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(metadata(&checkpoint)["nnc.epoch"], "1", "{err}");
    assert_eq!(metadata(&checkpoint)["nnc.step"], "40");
    // The same run straight through gives the same weights.
    let (code, err) = run(
        &dir,
        &["./small.net", "--epochs", "1", "--lr", "0.01", "--no-shuffle", "--out", "whole.safetensors"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(tensors(&checkpoint), tensors(&dir.join("whole.safetensors")));
    // A flag that changes a stored setting is refused, naming both values.
    let (code, err) =
        run(&dir, &["small.net", "--resume", "whole.safetensors", "--lr", "0.5", "--max-steps", "41"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--lr 0.5 differs from 0.01, which `whole.safetensors` was trained with"), "{err}");
    for (flag, value) in [("--batch", "25"), ("--augment", "none"), ("--epochs", "3")] {
        let (code, err) = run(&dir, &["small.net", "--resume", "whole.safetensors", flag, value]);
        assert_eq!(code, Some(2), "{err}");
        assert!(err.contains(&format!("{flag} {value} differs from")), "{err}");
    }
    // A position the run cannot reach is refused.
    let train_file = dir.join("small.train.safetensors");
    let bytes = std::fs::read(&train_file).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut meta = metadata(&train_file);
    meta.insert("nnc.step".into(), "7".into());
    meta.insert("nnc.epoch".into(), "0".into());
    meta.insert("nnc.batch".into(), "3".into());
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = file.tensors();
    std::fs::copy(&checkpoint, dir.join("tampered.safetensors")).unwrap();
    let tampered = dir.join("tampered.train.safetensors");
    std::fs::write(&tampered, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
    let (code, err) = run(&dir, &["small.net", "--resume", "tampered.safetensors"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("stored position (epoch 0, batch 3, step 7)"), "{err}");
}

#[test]
fn a_checkpoint_written_in_the_first_metadata_format_resumes_and_loads() {
    let dir = scratch("format-1");
    std::fs::write(dir.join("small.net"), MODEL).unwrap();
    let run = |args: &[&str]| {
        let o = nnc(&dir, &[&["train", "small.net", "--threads", "1", "--quiet"][..], args].concat());
        (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (code, err) = run(&["--max-steps", "3"]);
    assert_eq!(code, Some(0), "{err}");
    // Both files as the first format wrote them: the optimizer only as `Debug` text.
    for file in ["small.safetensors", "small.train.safetensors"] {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut meta = metadata(&path);
        assert_eq!(meta["nnc.optimizer"], "adam", "{meta:?}");
        meta.retain(|k, _| !k.starts_with("nnc.optimizer."));
        meta.insert("nnc.format".into(), "1".into());
        meta.insert(
            "nnc.optimizer".into(),
            "Adam { lr: 0.003, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }".into(),
        );
        let old = safetensors::serialize(st.tensors(), Some(meta)).unwrap();
        std::fs::write(&path, old).unwrap();
    }
    let (code, err) = run(&["--resume", "small.safetensors", "--max-steps", "5"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("resuming at epoch 1 batch 3 (step 3)"), "{err}");
    let meta = metadata(&dir.join("small.safetensors"));
    assert_eq!(meta["nnc.step"], "5");
    assert_eq!((meta["nnc.format"].as_str(), meta["nnc.optimizer"].as_str()), ("2", "adam"));
    assert_eq!(meta["nnc.optimizer.lr"], "0.003");
    // The weights load as the initial weights of a new run.
    let (code, err) =
        run(&["--init-from", "small.safetensors", "--max-steps", "1", "--out", "again.safetensors"]);
    assert_eq!(code, Some(0), "{err}");
}
