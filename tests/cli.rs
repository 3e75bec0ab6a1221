//! The `nnc` command as a user runs it: output streams and exit statuses
//! (0 ok, 1 the model has errors, 2 usage or I/O problems).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn nnc(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nnc")).args(args).env("NO_COLOR", "1").output().unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited normally, not by a signal")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh scratch directory under the target directory.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn compile_prints_the_plan() {
    let o = nnc(&["compile", "examples/lenet5.net", "--batch", "32"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("conv1     conv(6, 5, pad: 2)"), "{out}");
    assert!(out.contains("61,706"), "{out}");
    assert!(out.contains("at batch 32"), "{out}");
    assert!(o.stderr.is_empty());
}

#[test]
fn compile_json_is_valid_and_complete() {
    let o = nnc(&["compile", "examples/resnet18.net", "--format", "json"]);
    assert_eq!(code(&o), 0);
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["network"], "resnet18");
    assert_eq!(plan["totals"]["params"], 11_689_512);
    let rows = plan["rows"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["kind"] == "block" && r["op"] == "basic_stage(128, 2, stride: 2)"));
    let first_conv = rows.iter().find(|r| r["op"].as_str().unwrap().starts_with("conv(64, 7")).unwrap();
    assert_eq!(first_conv["tensors"][0]["name"], "stem1.conv1.weight");
    assert_eq!(first_conv["tensors"][0]["dims"], serde_json::json!([64, 3, 7, 7]));
    assert_eq!(first_conv["tensors"][0]["init"], "he");
}

#[test]
fn compile_selects_a_network() {
    let o = nnc(&["compile", "examples/lenet5.net", "--network", "nope"]);
    assert_eq!(code(&o), 2);
    assert!(text(&o.stderr).contains("has no network `nope`"));
}

#[test]
fn model_errors_exit_1_with_located_messages() {
    let o = nnc(&["compile", "tests/errors/add_shape_mismatch.net"]);
    assert_eq!(code(&o), 1);
    let err = text(&o.stderr);
    assert!(err.contains("tests/errors/add_shape_mismatch.net:5:10"), "{err}");
    assert!(err.contains("error: could not compile: 1 error"), "{err}");
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{err}");
    assert!(o.stdout.is_empty());
}

#[test]
fn io_and_usage_problems_exit_2() {
    let missing = nnc(&["compile", "no/such/model.net"]);
    assert_eq!(code(&missing), 2);
    assert!(text(&missing.stderr).contains("cannot read `no/such/model.net`"));
    let dir = nnc(&["check", "examples"]);
    assert_eq!(code(&dir), 2);
    assert!(text(&dir.stderr).contains("it is a directory"));
    assert_eq!(code(&nnc(&["compile"])), 2);
    assert_eq!(code(&nnc(&["frobnicate"])), 2);
    assert_eq!(code(&nnc(&["compile", "examples/lenet5.net", "--batch", "0"])), 2);
}

#[test]
fn check_is_quiet_on_success() {
    let o = nnc(&["check", "examples/lenet5.net", "examples/googlenet.net"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(o.stdout.is_empty() && o.stderr.is_empty());
}

/// A file of blocks has nothing to plan: `compile` and `check` say so rather than print
/// nothing.
#[test]
fn a_file_of_only_blocks_is_a_model_error() {
    for command in ["compile", "check"] {
        let o = nnc(&[command, "examples/blocks/resnet.net"]);
        assert_eq!(code(&o), 1, "{command}");
        assert!(o.stdout.is_empty(), "{command}");
        let stderr = text(&o.stderr);
        assert!(
            stderr.contains("error: `examples/blocks/resnet.net` defines only blocks; there is no network"),
            "{stderr}"
        );
    }
}

#[test]
fn check_reports_the_worst_status() {
    let o = nnc(&["check", "examples/lenet5.net", "tests/errors/unknown_layer.net"]);
    assert_eq!(code(&o), 1);
}

#[test]
fn colour_is_off_unless_asked() {
    let plain = nnc(&["check", "tests/errors/unknown_layer.net"]);
    assert!(!text(&plain.stderr).contains('\u{1b}'));
    let coloured = nnc(&["--color", "always", "check", "tests/errors/unknown_layer.net"]);
    assert!(text(&coloured.stderr).contains('\u{1b}'));
}

/// `--isa avx512` on a CPU without AVX-512 is a usage error that says so, not a crash
/// (an AVX-512 instruction there dies with SIGILL); where the CPU has it, it runs.
#[cfg(target_arch = "x86_64")]
#[test]
fn an_instruction_set_the_cpu_lacks_is_refused_plainly() {
    let o = nnc(&["--isa", "avx512", "check", "examples/lenet5.net"]);
    if std::arch::is_x86_feature_detected!("avx512f") {
        assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    } else {
        assert_eq!(code(&o), 2);
        let err = text(&o.stderr);
        assert!(err.contains("--isa avx512: this CPU cannot run `avx512` code; it runs: cranelift"), "{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    let unknown = nnc(&["--isa", "avx1024", "check", "examples/lenet5.net"]);
    assert_eq!(code(&unknown), 2);
    assert!(
        text(&unknown.stderr).contains("choose one of auto, cranelift, avx2, avx512"),
        "{}",
        text(&unknown.stderr)
    );
}

#[test]
fn fmt_check_rewrite_and_stdin() {
    let dir = scratch("fmt");
    let messy = dir.join("messy.net");
    std::fs::write(&messy, "network  net( x:[10] ){x|>dense( 10 )   # out\n}\n").unwrap();
    let path = messy.to_str().unwrap();

    let check = nnc(&["fmt", "--check", path]);
    assert_eq!(code(&check), 1);
    assert!(text(&check.stdout).contains("not formatted"));

    assert_eq!(code(&nnc(&["fmt", path])), 0);
    let formatted = std::fs::read_to_string(&messy).unwrap();
    assert_eq!(formatted, "network net(x: [10]) {\n    x |> dense(10)  # out\n}\n");
    assert_eq!(code(&nnc(&["fmt", "--check", path])), 0);

    let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["fmt", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"network net(x:[10]){x}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "network net(x: [10]) {\n    x\n}\n");
}

#[test]
fn fmt_refuses_files_with_syntax_errors() {
    let o = nnc(&["fmt", "--check", "tests/errors/syntax_unclosed_paren.net"]);
    assert_eq!(code(&o), 1);
    assert!(text(&o.stderr).contains("syntax_unclosed_paren.net:5:1"));
}

#[test]
fn graph_prints_dot_with_block_clusters() {
    let o = nnc(&["graph", "examples/resnet18.net"]);
    assert_eq!(code(&o), 0);
    let dot = text(&o.stdout);
    assert!(dot.starts_with("digraph \"resnet18\" {"));
    assert!(dot.contains("subgraph cluster_"));
    assert!(dot.contains("label=\"basic_stage2: basic_stage(128, 2, stride: 2)\""));
    // 68 edges along the chain of 69 nodes, plus the second input of each of the 8 adds.
    assert_eq!(dot.matches(" -> ").count(), 76);
    assert!(dot.trim_end().ends_with('}'));
}

#[test]
fn warnings_are_printed_but_do_not_fail() {
    let dir = scratch("warn");
    let file = dir.join("w.net");
    std::fs::write(&file, "network n(x: [10]) {\n    let unused = x |> relu\n    x |> dense(2)\n}\n")
        .unwrap();
    let o = nnc(&["check", file.to_str().unwrap()]);
    assert_eq!(code(&o), 0);
    let err = text(&o.stderr);
    assert!(err.contains("warning: `unused` is never used"), "{err}");
    assert!(err.contains("w.net:2:9"), "{err}");
}

/// An IDX file of `count` 28×28 images with a deterministic pattern.
fn idx_digits(path: &Path, count: usize) {
    let mut b = vec![0u8, 0, 8, 3];
    for d in [count as u32, 28, 28] {
        b.extend(d.to_be_bytes());
    }
    b.extend((0..count * 784).map(|i| ((i * 37) % 256) as u8));
    std::fs::write(path, b).unwrap();
}

/// LeNet-5 weights from the runtime's initialiser, saved as a checkpoint.
fn lenet_weights(path: &Path) {
    let model = nnc_compiler::compile_file(Path::new("examples/lenet5.net")).unwrap();
    let options = nnc_runtime::exec::Options { threads: 1, verify: false, ..Default::default() };
    let mut exec = nnc_runtime::exec::Executable::build(&model.networks[0], 1, &options).unwrap();
    exec.init_params(5);
    nnc_runtime::checkpoint::save(&exec, path, Default::default()).unwrap();
}

#[test]
fn predict_prints_top_classes_and_writes_outputs() {
    let dir = scratch("predict");
    let (weights, digits) = (dir.join("w.safetensors"), dir.join("digits.idx"));
    lenet_weights(&weights);
    idx_digits(&digits, 5);
    let (w, d) = (weights.to_str().unwrap(), digits.to_str().unwrap());
    let o =
        nnc(&["predict", "examples/lenet5.net", "--weights", w, "--input", d, "--top", "2", "--batch", "2"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let lines: Vec<String> = text(&o.stdout).lines().map(String::from).collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines[0].starts_with("0\t") && lines[0].matches('(').count() == 2, "{}", lines[0]);

    let csv = dir.join("logits.csv");
    assert_eq!(
        code(&nnc(&[
            "predict",
            "examples/lenet5.net",
            "--weights",
            w,
            "--input",
            d,
            "--output",
            csv.to_str().unwrap()
        ])),
        0
    );
    let rows: Vec<Vec<f32>> = std::fs::read_to_string(&csv)
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 5);
    assert!(rows.iter().all(|r| r.len() == 10));
    // The printed top class is the largest logit, whatever the batch size.
    for (line, row) in lines.iter().zip(&rows) {
        let best = (0..10).max_by(|a, b| row[*a].total_cmp(&row[*b])).unwrap();
        assert_eq!(line.split('\t').nth(1).unwrap().split(' ').next().unwrap(), best.to_string());
    }
    let npy = dir.join("logits.npy");
    assert_eq!(
        code(&nnc(&[
            "predict",
            "examples/lenet5.net",
            "--weights",
            w,
            "--input",
            d,
            "--output",
            npy.to_str().unwrap()
        ])),
        0
    );
    let bytes = std::fs::read(&npy).unwrap();
    assert!(bytes.starts_with(b"\x93NUMPY\x01\x00"));
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    assert_eq!((10 + header_len) % 64, 0);
    assert!(String::from_utf8_lossy(&bytes[10..10 + header_len]).contains("'shape': (5, 10)"));
    assert_eq!(bytes.len(), 10 + header_len + 5 * 10 * 4);
}

#[test]
fn predict_explains_bad_inputs_and_weights() {
    let dir = scratch("predict-errors");
    let weights = dir.join("w.safetensors");
    lenet_weights(&weights);
    let w = weights.to_str().unwrap();
    let small = dir.join("small.f32");
    std::fs::write(&small, [0u8; 100 * 4]).unwrap();
    let o = nnc(&["predict", "examples/lenet5.net", "--weights", w, "--input", small.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    assert!(text(&o.stderr).contains("not a whole number of examples of 784"), "{}", text(&o.stderr));
    let digits = dir.join("d.idx");
    idx_digits(&digits, 1);
    let o = nnc(&["predict", "examples/alexnet.net", "--weights", w, "--input", digits.to_str().unwrap()]);
    assert_eq!(code(&o), 2);
    assert!(text(&o.stderr).contains("the network's input [3, 224, 224] has 150528"), "{}", text(&o.stderr));
    let o =
        nnc(&["predict", "examples/resnet18_cifar.net", "--weights", w, "--input", digits.to_str().unwrap()]);
    assert_ne!(code(&o), 0);
    let o = nnc(&[
        "predict",
        "examples/lenet5.net",
        "--weights",
        "nope.safetensors",
        "--input",
        digits.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), 2, "a missing weights file is an I/O error");
    assert!(text(&o.stderr).contains("cannot read `nope.safetensors`"));
}

#[test]
fn bench_reports_compile_phases_and_throughput() {
    let o = nnc(&[
        "bench",
        "examples/lenet5.net",
        "--batch",
        "4",
        "--iters",
        "3",
        "--warmup",
        "1",
        "--kernels",
        "--threads",
        "2",
    ]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let out = text(&o.stdout);
    for needle in
        ["lenet5 at batch 4 on 2 threads", "codegen", "examples/s", "GFLOP/s", "conv2d + add_channel + tanh"]
    {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
}

#[test]
fn files_that_are_not_regular_files_are_refused_by_name() {
    let dir = scratch("not-regular");
    let (weights, digits) = (dir.join("w.safetensors"), dir.join("digits.idx"));
    lenet_weights(&weights);
    idx_digits(&digits, 2);
    let (w, d, folder) = (weights.to_str().unwrap(), digits.to_str().unwrap(), dir.to_str().unwrap());
    // A device never ends: reading it whole would fill memory; opening a FIFO waits for
    // a writer.
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let f = fifo.to_str().unwrap();
    let cases = [
        ("/dev/zero", d, "/dev/zero"),
        (w, "/dev/zero", "/dev/zero"),
        (folder, d, folder),
        (w, f, f),
        (f, d, f),
    ];
    for (weights, input, bad) in cases {
        let o = nnc(&["predict", "examples/lenet5.net", "--weights", weights, "--input", input]);
        let err = text(&o.stderr);
        assert_ne!(code(&o), 0, "{err}");
        assert!(err.contains(&format!("`{bad}`")) && err.contains("not a regular file"), "{err}");
    }
}

#[test]
fn a_missing_or_corrupt_weights_file_is_an_io_error_for_every_command() {
    let dir = scratch("weights-exit");
    let corrupt = dir.join("corrupt.safetensors");
    std::fs::write(&corrupt, b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}").unwrap();
    let missing = dir.join("missing.safetensors");
    let digits = dir.join("digits.idx");
    idx_digits(&digits, 2);
    let d = digits.to_str().unwrap();
    for weights in [&corrupt, &missing] {
        let w = weights.to_str().unwrap();
        let runs: [&[&str]; 5] = [
            &["predict", "examples/lenet5.net", "--weights", w, "--input", d],
            &["eval", "examples/lenet5.net", "--weights", w],
            &["generate", "examples/char_rnn.net", "--weights", w, "--prime", "a"],
            &["train", "examples/lenet5.net", "--init-from", w, "--max-steps", "1"],
            &["train", "examples/lenet5.net", "--resume", w, "--max-steps", "1"],
        ];
        for args in runs {
            let o = nnc(args);
            let err = text(&o.stderr);
            assert_eq!(code(&o), 2, "{args:?}: {err}");
            assert!(err.contains(w) && !err.contains("panicked"), "{args:?}: {err}");
        }
    }
}

#[test]
fn predict_converts_float64_weights_and_says_so_once() {
    let dir = scratch("f64-weights");
    let (weights, digits) = (dir.join("w.safetensors"), dir.join("digits.idx"));
    lenet_weights(&weights);
    idx_digits(&digits, 2);
    let bytes = std::fs::read(&weights).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let doubled: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let data = v
                .data()
                .chunks_exact(4)
                .flat_map(|b| (f32::from_le_bytes(b.try_into().unwrap()) as f64).to_le_bytes());
            (n, v.shape().to_vec(), data.collect())
        })
        .collect();
    let views: Vec<_> = doubled
        .iter()
        .map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F64, s.clone(), b).unwrap())
        })
        .collect();
    let f64_weights = dir.join("w64.safetensors");
    std::fs::write(&f64_weights, safetensors::serialize(views, None).unwrap()).unwrap();
    let (d, w) = (digits.to_str().unwrap(), weights.to_str().unwrap());
    let a = nnc(&["predict", "examples/lenet5.net", "--weights", w, "--input", d, "--top", "3"]);
    let b = nnc(&[
        "predict",
        "examples/lenet5.net",
        "--weights",
        f64_weights.to_str().unwrap(),
        "--input",
        d,
        "--top",
        "3",
    ]);
    assert_eq!((code(&a), code(&b)), (0, 0), "{}", text(&b.stderr));
    assert_eq!(a.stdout, b.stdout, "the same values, converted");
    assert!(a.stderr.is_empty());
    let note = text(&b.stderr);
    assert_eq!(note.lines().count(), 1, "{note}");
    assert!(note.starts_with("note: ") && note.contains("F64 weights; converted to F32"), "{note}");
}

#[test]
fn predict_asks_how_to_read_a_sequence_file_that_fits_two_readings() {
    let dir = scratch("input-format");
    let model = dir.join("c.net");
    std::fs::write(&model, "network c(text: seq[8] of onehot(16)) { text |> rnn(4) |> dense(16) }\n")
        .unwrap();
    let compiled = nnc_compiler::compile_file(&model).unwrap();
    let options = nnc_runtime::exec::Options { threads: 1, verify: false, ..Default::default() };
    let mut exec = nnc_runtime::exec::Executable::build(&compiled.networks[0], 1, &options).unwrap();
    exec.init_params(1);
    let weights = dir.join("c.safetensors");
    nnc_runtime::checkpoint::save(&exec, &weights, Default::default()).unwrap();
    let raw = |name: &str, values: &[f32]| {
        let path = dir.join(name);
        std::fs::write(&path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
        path
    };
    let (m, w) = (model.to_str().unwrap(), weights.to_str().unwrap());
    let rows = |input: &Path, extra: &[&str]| {
        let csv = dir.join("out.csv");
        let mut args = vec!["predict", m, "--weights", w, "--input", input.to_str().unwrap()];
        args.extend(["--output", csv.to_str().unwrap()]);
        args.extend(extra);
        let o = nnc(&args);
        (code(&o), text(&o.stderr), std::fs::read_to_string(&csv).map_or(0, |t| t.lines().count()))
    };
    // 16 sequences of 8 ids are 128 values, as many as one sequence of one-hot vectors.
    let ids: Vec<f32> = (0..128).map(|i| ((i * 5) % 16) as f32).collect();
    let (status, err, n) = rows(&raw("ids.f32", &ids), &[]);
    assert_eq!((status, n), (0, 16), "{err}");
    // Ids of 0 and 1 that happen to form one-hot vectors fit both readings.
    let both: Vec<f32> = (0..128).map(|i| if i % 16 == 3 { 1.0 } else { 0.0 }).collect();
    let both = raw("both.f32", &both);
    let (status, err, _) = rows(&both, &[]);
    assert_eq!(status, 2, "{err}");
    assert!(err.contains("--input-format onehot or --input-format ids"), "{err}");
    let _ = std::fs::remove_file(dir.join("out.csv"));
    assert_eq!(rows(&both, &["--input-format", "ids"]).2, 16);
    assert_eq!(rows(&both, &["--input-format", "onehot"]).2, 1);
}

/// A model file or an include that is a FIFO or a device is refused by name: reading a
/// FIFO waits for a writer forever, and a device may never end.
#[test]
fn model_files_that_are_not_regular_files_are_refused() {
    let dir = scratch("model-not-regular");
    let fifo = dir.join("fifo.net");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let f = fifo.to_str().unwrap();
    let o = nnc(&["check", f]);
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(&format!("cannot read `{f}`: it is a FIFO, not a regular file")),
        "{}",
        text(&o.stderr)
    );
    let fmt = nnc(&["fmt", f]);
    assert_eq!(code(&fmt), 2);
    assert!(text(&fmt.stderr).contains("it is a FIFO, not a regular file"), "{}", text(&fmt.stderr));
    let device = nnc(&["fmt", "--check", "/dev/zero"]);
    assert_eq!(code(&device), 2);
    assert!(
        text(&device.stderr).contains("it is a character device, not a regular file"),
        "{}",
        text(&device.stderr)
    );
    let device = nnc(&["check", "/dev/zero"]);
    assert_eq!(code(&device), 2);
    assert!(
        text(&device.stderr).contains("it is a character device, not a regular file"),
        "{}",
        text(&device.stderr)
    );
    let main = dir.join("main.net");
    std::fs::write(&main, "include \"fifo.net\"\nnetwork n(x: [4]) { x |> dense(2) }\n").unwrap();
    let o = nnc(&["check", main.to_str().unwrap()]);
    let err = text(&o.stderr);
    assert_eq!(code(&o), 1, "{err}");
    assert!(err.contains("cannot include `fifo.net`: it is a FIFO, not a regular file"), "{err}");
    assert!(err.contains("main.net:1:9"), "{err}");
}

/// A closed standard error (`nnc ... 2>&1 | head -n 1` after `head` exits) drops the
/// messages, never panics: the exit status stays the command's own.
#[test]
fn a_closed_standard_error_is_not_a_crash() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["compile", "tests/errors/several_independent.net"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    assert_eq!(child.wait().unwrap().code(), Some(1));
}

#[test]
fn isa_picks_the_code_generator_and_refuses_unknown_ones() {
    let o = nnc(&["--isa", "sse9", "check", "examples/lenet5.net"]);
    assert_eq!(code(&o), 2);
    let err = text(&o.stderr);
    assert!(err.contains("no instruction set `sse9`") && err.contains("auto, cranelift"), "{err}");
    let o = Command::new(env!("CARGO_BIN_EXE_nnc"))
        .args(["bench", "examples/lenet5.net", "--batch", "2", "--threads", "1", "--iters", "1", "--kernels"])
        .env("NNC_ISA", "cranelift")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.contains("cranelift  conv2d") && !out.contains("avx2  "), "{out}");
    for target in nnc_compiler::backend::Target::supported() {
        let o = nnc(&[
            "bench",
            "examples/lenet5.net",
            "--batch",
            "2",
            "--threads",
            "1",
            "--iters",
            "1",
            "--kernels",
            "--isa",
            target.name(),
        ]);
        assert_eq!(code(&o), 0, "{}", text(&o.stderr));
        let out = text(&o.stdout);
        assert!(out.contains(&format!("{:<10} conv2d", target.name())), "{}: {out}", target.name());
    }
}
