//! `nnc eval`, `nnc predict --ensemble` and `nnc generate` on checkpoints that `nnc train`
//! writes, with networks small enough to train in a moment: a linear classifier of the
//! embedded digits and an 8-step character RNN.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn nnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nnc")).args(args).env("NO_COLOR", "1").output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `nnc` and returns its standard output, failing with its errors unless it succeeds.
fn ok(args: &[&str]) -> String {
    let o = nnc(args);
    assert!(o.status.success(), "nnc {args:?}:\n{}", text(&o.stderr));
    text(&o.stdout)
}

/// Runs `nnc`, which must fail with a one-line message (and no panic), and returns it.
fn fails(args: &[&str]) -> String {
    let o = nnc(args);
    let err = text(&o.stderr);
    assert!(!o.status.success() && o.status.code().is_some(), "nnc {args:?} did not fail:\n{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line:\n{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

/// A fresh scratch directory under the target directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

const TINY: &str = "network tiny(x: [1, 28, 28]) { x |> flatten |> dense(10) }

train tiny {
    loss      = cross_entropy
    optimizer = sgd(lr: 0.1)
    batch     = 50
    epochs    = 1
}
";

const CHARS: &str = "network c(text: seq[8] of onehot(128)) { text |> rnn(16) |> dense(128) }

train c {
    loss      = cross_entropy
    optimizer = adam(lr: 0.01)
    batch     = 8
    epochs    = 1
}
";

/// Trains the tiny digit classifier for one epoch on the embedded digits.
fn train_tiny(dir: &Path, model: &Path, seed: &str) -> PathBuf {
    let out = dir.join(format!("tiny{seed}.safetensors"));
    let metrics = dir.join(format!("tiny{seed}.jsonl"));
    ok(&[
        "train",
        s(model),
        "--seed",
        seed,
        "--out",
        s(&out),
        "--metrics",
        s(&metrics),
        "--threads",
        "1",
        "--quiet",
    ]);
    out
}

fn read_csv(path: &Path) -> Vec<Vec<f64>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect()
}

fn softmax(row: &[f64]) -> Vec<f64> {
    let max = row.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
    let e: Vec<f64> = row.iter().map(|v| (v - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

#[test]
fn eval_and_ensemble_of_trained_digit_classifiers() {
    let dir = scratch("train-cli-digits");
    let model = dir.join("tiny.net");
    std::fs::write(&model, TINY).unwrap();
    let a = train_tiny(&dir, &model, "1");
    let b = train_tiny(&dir, &model, "2");

    let report = ok(&["eval", s(&model), "--weights", s(&a), "--threads", "1"]);
    assert!(report.contains("examples    500"), "{report}");
    assert!(report.contains("accuracy"), "{report}");
    let header = report.lines().position(|l| l.starts_with("confusion matrix")).expect(&report);
    let rows: Vec<&str> = report.lines().skip(header + 2).collect();
    assert_eq!(rows.len(), 10, "{report}");
    let mut total = 0;
    for (class, row) in rows.iter().enumerate() {
        let cells: Vec<&str> = row.split_whitespace().collect();
        // class, 10 counts, total, recall
        assert_eq!(cells.len(), 13, "{row}");
        assert_eq!(cells[0], class.to_string());
        let counts: Vec<u64> = cells[1..11].iter().map(|c| c.parse().unwrap()).collect();
        assert_eq!(counts.iter().sum::<u64>(), cells[11].parse::<u64>().unwrap(), "{row}");
        total += counts.iter().sum::<u64>();
    }
    assert_eq!(total, 500);

    // An ensemble's output is the mean of its members' probabilities.
    let input = "data/digits/test-images-idx3-ubyte.gz";
    let predict = |weights: &[&Path], name: &str| {
        let csv = dir.join(name);
        let mut args = vec!["predict", s(&model), "--weights", s(weights[0])];
        if weights.len() > 1 {
            args.push("--ensemble");
            args.extend(weights[1..].iter().map(|w| s(w)));
        }
        args.extend(["--input", input, "--output", s(&csv), "--threads", "1", "--batch", "64"]);
        ok(&args);
        read_csv(&csv)
    };
    let (pa, pb) = (predict(&[&a], "a.csv"), predict(&[&b], "b.csv"));
    let both = predict(&[&a, &b], "ensemble.csv");
    assert_eq!(both.len(), 500);
    let (mut differs_a, mut differs_b) = (false, false);
    for ((row, la), lb) in both.iter().zip(&pa).zip(&pb) {
        assert!((row.iter().sum::<f64>() - 1.0).abs() < 1e-4, "{row:?}");
        let (qa, qb) = (softmax(la), softmax(lb));
        for c in 0..10 {
            assert!((row[c] - (qa[c] + qb[c]) / 2.0).abs() < 1e-5, "{row:?} {qa:?} {qb:?}");
            differs_a |= (row[c] - qa[c]).abs() > 1e-3;
            differs_b |= (row[c] - qb[c]).abs() > 1e-3;
        }
    }
    assert!(differs_a && differs_b);
    // Printed, the ensemble's classes come with the averaged probabilities.
    let top = ok(&["predict", s(&model), "--weights", s(&a), "--ensemble", s(&b), "--input", input]);
    let first = top.lines().next().unwrap();
    let best = (0..10).max_by(|x, y| both[0][*x].total_cmp(&both[0][*y])).unwrap();
    assert_eq!(first, format!("0\t{best} ({:.3})", both[0][best]));

    let missing = dir.join("missing.safetensors");
    let err = fails(&["eval", s(&model), "--weights", s(&missing)]);
    assert!(err.contains("cannot read") && err.contains("missing.safetensors"), "{err}");
    let err = fails(&["predict", s(&model), "--weights", s(&a), "--ensemble", s(&missing), "--input", input]);
    assert!(err.contains("missing.safetensors"), "{err}");
    let err = fails(&["generate", s(&model), "--weights", s(&a), "--prime", "a"]);
    assert!(err.contains("not characters"), "{err}");
}

#[test]
fn generate_and_eval_with_a_trained_character_model() {
    let dir = scratch("train-cli-chars");
    let model = dir.join("c.net");
    std::fs::write(&model, CHARS).unwrap();
    let corpus = dir.join("corpus.txt");
    let line = "the cat sat on the mat, and the dog sat on the log.\n";
    std::fs::write(&corpus, line.repeat(40)).unwrap();
    let weights = dir.join("c.safetensors");
    ok(&[
        "train",
        s(&model),
        "--data",
        s(&corpus),
        "--max-steps",
        "20",
        "--out",
        s(&weights),
        "--metrics",
        s(&dir.join("c.jsonl")),
        "--threads",
        "1",
        "--quiet",
    ]);
    let w = s(&weights);

    let generate = |prime: &str, seed: &str, temperature: &str| {
        let out = ok(&[
            "generate",
            s(&model),
            "--weights",
            w,
            "--prime",
            prime,
            "--length",
            "40",
            "--seed",
            seed,
            "--temperature",
            temperature,
            "--threads",
            "1",
        ]);
        out.strip_suffix('\n').expect("ends with a newline").to_string()
    };
    // A prime shorter and one longer than the network's 8 steps.
    for prime in ["the ", "and the dog sat on th"] {
        let sample = generate(prime, "3", "0.8");
        assert!(sample.starts_with(prime), "{sample:?}");
        assert_eq!(sample.chars().count(), prime.chars().count() + 40, "{sample:?}");
        assert!(sample.chars().all(|c| line.contains(c)), "{sample:?}");
        assert_eq!(generate(prime, "3", "0.8"), sample, "the same seed gives the same text");
    }
    // At temperature 0 the seed does not matter.
    assert_eq!(generate("the ", "1", "0"), generate("the ", "2", "0"));

    let report = ok(&["eval", s(&model), "--weights", w, "--data", s(&corpus), "--threads", "1"]);
    assert!(report.contains("characters") && report.contains("bits/char"), "{report}");
    assert!(report.contains("accuracy") && !report.contains("confusion matrix (rows"), "{report}");

    let err = fails(&["generate", s(&model), "--weights", w, "--prime", "the €"]);
    assert!(err.contains("'€'") && err.contains("not in the vocabulary"), "{err}");
    let err = fails(&["generate", s(&model), "--weights", s(&dir.join("none.safetensors")), "--prime", "a"]);
    assert!(err.contains("none.safetensors"), "{err}");

    // A checkpoint of another network.
    let image = dir.join("tiny.net");
    std::fs::write(&image, TINY).unwrap();
    let err = fails(&["eval", s(&image), "--weights", w]);
    assert!(err.contains("trained for network `c`, not `tiny`"), "{err}");
}

#[test]
fn train_refuses_outputs_that_are_not_regular_files() {
    let dir = scratch("train-cli-outputs");
    let model = dir.join("tiny.net");
    std::fs::write(&model, TINY).unwrap();
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let folder = dir.join("folder");
    std::fs::create_dir(&folder).unwrap();
    let train = |extra: &[&str]| {
        let mut args = vec!["train", s(&model), "--threads", "1", "--quiet", "--max-steps", "1"];
        args.extend(extra);
        nnc(&args)
    };
    for (flag, target) in [("--out", &fifo), ("--out", &folder), ("--metrics", &fifo), ("--metrics", &folder)]
    {
        let mut args = vec![flag, s(target)];
        let other = dir.join("w.safetensors");
        if flag == "--metrics" {
            args.extend(["--out", s(&other)]);
        }
        let o = train(&args);
        let err = text(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{flag} {target:?}: {err}");
        assert!(err.contains(s(target)) && err.contains("not a regular file"), "{err}");
        assert!(!err.contains("epoch") && !other.exists(), "refused before training: {err}");
    }
    assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO is left alone");
    assert!(folder.is_dir());
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 3, "nothing written beside them: {names:?}");
}

#[test]
fn train_flags_are_checked_like_the_train_section_before_anything_runs() {
    let dir = scratch("train-cli-flags");
    let model = dir.join("tiny.net");
    std::fs::write(&model, TINY).unwrap();
    let out = dir.join("w.safetensors");
    let cases: &[(&[&str], &str)] = &[
        (&["--lr", "-1"], "invalid --lr: -1.0 must be a positive number"),
        (&["--lr", "0"], "invalid --lr: 0.0 must be a positive number"),
        (&["--lr", "nan"], "invalid --lr: NaN must be a positive number"),
        (&["--momentum", "2"], "invalid --momentum: 2.0 must be in [0, 1)"),
        (&["--weight-decay", "-1"], "invalid --weight-decay: -1.0 must not be negative"),
        (&["--schedule", "step:0:0"], "invalid --schedule: every 0 must be from 1 to 1000000"),
        (&["--schedule", "step:2:0"], "invalid --schedule: gamma 0.0 must be a positive number"),
        (&["--schedule", "cosine:-1"], "invalid --schedule: min_lr -1.0 must not be negative"),
        (&["--warmup", "99999999999"], "invalid --warmup: 99999999999 must be from 0 to 1000000"),
        (&["--clip", "nan"], "invalid --clip: NaN must be a positive number"),
        (&["--clip", "-1"], "invalid --clip: -1.0 must be a positive number"),
        (&["--augment", "crop:99999"], "invalid --augment: crop 99999 must be from 1 to 1024"),
        (&["--epochs", "1000000000000"], "invalid --epochs: 1000000000000 must be from 1 to 1000000"),
        (&["--epochs", "0"], "invalid --epochs: 0 must be from 1 to 1000000"),
        (&["--mean", "nan"], "invalid --mean: NaN must be a finite number"),
        (&["--std", "0"], "invalid --std: 0.0 must be a positive number"),
    ];
    for (flags, message) in cases {
        let mut args = vec!["train", s(&model), "--out", s(&out), "--threads", "1", "--quiet"];
        args.extend(*flags);
        let err = fails(&args);
        assert_eq!(err.trim_end(), format!("error: {message}"), "{flags:?}");
        assert_eq!(nnc(&args).status.code(), Some(2));
        assert!(!out.exists(), "{flags:?} trained");
    }
    // A number clap cannot read as a count is refused by clap, naming the flag too.
    let o = nnc(&["train", s(&model), "--epochs", "1e12"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--epochs"), "{}", text(&o.stderr));
}
