//! `nnc predict`: run a trained network on examples from a file.
//!
//! With `--ensemble`, several checkpoints of the same network (trained from different
//! seeds, say) vote: each is run on every example and their class probabilities are
//! averaged (the softmax of each one's scores, or its outputs when the network already
//! ends in softmax), which is usually more accurate than any one of them (AlexNet
//! averaged five networks this way).

use super::{EXIT_USAGE, Ui, out};
use nnc_compiler::ir::graph::{Graph, NodeKind};
use nnc_compiler::ir::ops::Op;
use nnc_runtime::data::input::{self, InputSpec, Reading};
use nnc_runtime::exec::Executable;
use std::fmt::Write;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    file: PathBuf,
    /// Trained parameters (safetensors, PyTorch names and layouts).
    #[arg(long)]
    weights: PathBuf,
    /// More checkpoints of the same network to average with `--weights`: the output is
    /// then the mean of their class probabilities.
    #[arg(long, num_args = 1.., value_name = "WEIGHTS")]
    ensemble: Vec<PathBuf>,
    /// Examples: an IDX file (optionally .gz; bytes are pixels scaled to [0, 1]) or raw
    /// little-endian f32. The train section's mean and std are applied.
    #[arg(long)]
    input: PathBuf,
    /// How a raw file holds a one-hot sequence input, when its values fit both: a class
    /// id per step (`ids`) or the one-hot vectors (`onehot`).
    #[arg(long, value_enum)]
    input_format: Option<InputFormat>,
    /// Examples per run.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    batch: u64,
    /// Classes to list per example.
    #[arg(long, default_value_t = 1)]
    top: usize,
    /// Write the outputs instead: `.csv` (one row per example) or `.npy` (with
    /// `--ensemble`, the averaged probabilities).
    #[arg(long)]
    output: Option<PathBuf>,
    /// The network (default: the first in the file).
    #[arg(long)]
    network: Option<String>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum InputFormat {
    Ids,
    Onehot,
}

pub fn run(ui: &Ui, args: &Args) -> u8 {
    let model = match ui.compile(&args.file) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let Some(graph) = super::network(&model, args.network.as_deref(), &args.file) else { return EXIT_USAGE };
    let Some(spec) = input_spec(graph, model.train_config(&graph.name)) else {
        eprintln!(
            "error: `nnc predict` needs a network with exactly one input; `{}` has {}",
            graph.name,
            graph.inputs.len()
        );
        return EXIT_USAGE;
    };
    let reading = args.input_format.map(|f| match f {
        InputFormat::Ids => Reading::Ids,
        InputFormat::Onehot => Reading::OneHot,
    });
    let examples = match input::read(&args.input, &spec, reading) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let batch = (args.batch as usize).min(examples.count);
    let options = ui.options(super::threads(args.threads));
    let mut exec = match Executable::build(graph, batch, &options) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let per_out = graph.node(graph.output).shape.elements() as usize;
    let dims: Vec<usize> = graph.node(graph.output).shape.dims().iter().map(|&d| d as usize).collect();
    let probabilities = ends_in_softmax(&exec);
    let ensemble = !args.ensemble.is_empty();
    let mut outputs = vec![0.0f32; examples.count * per_out];
    for weights in std::iter::once(&args.weights).chain(&args.ensemble) {
        if let Err((code, message)) = super::eval::load_weights(&mut exec, weights, &graph.name) {
            eprintln!("error: {message}");
            return code;
        }
        let mut these = match run_all(&mut exec, &examples.values, spec.elements(), batch) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        };
        if ensemble && !probabilities {
            // Per class over the last dimension: per step for a sequence of scores.
            these.chunks_mut(*dims.last().unwrap_or(&1)).for_each(softmax);
        }
        for (sum, v) in outputs.iter_mut().zip(&these) {
            *sum += v;
        }
    }
    let models = 1 + args.ensemble.len();
    outputs.iter_mut().for_each(|v| *v /= models as f32);
    match &args.output {
        Some(path) => match write_outputs(path, &outputs, examples.count, &dims) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("error: cannot write `{}`: {e}", path.display());
                EXIT_USAGE
            }
        },
        None if dims.len() == 1 => {
            out(&top_classes(&outputs, per_out, args.top, probabilities || ensemble));
            0
        }
        None => {
            eprintln!(
                "error: the output {} is not a vector of class scores; write it with `--output file.csv`",
                graph.node(graph.output).shape
            );
            EXIT_USAGE
        }
    }
}

/// The input the network reads and how to prepare it.
fn input_spec(graph: &Graph, train: Option<&nnc_compiler::front::train::TrainConfig>) -> Option<InputSpec> {
    let [input] = graph.inputs[..] else { return None };
    let node = graph.node(input);
    let NodeKind::Input(encoding) = node.kind else { return None };
    let (mean, std) = train.map(|t| (t.mean.clone(), t.std.clone())).unwrap_or_default();
    Some(InputSpec { shape: node.shape, encoding, mean, std })
}

/// The outputs of `exec` for every example of `values` (`per_in` values each), run
/// `batch` at a time.
fn run_all(
    exec: &mut Executable,
    values: &[f32],
    per_in: usize,
    batch: usize,
) -> Result<Vec<f32>, nnc_runtime::exec::Error> {
    let per_out = exec.graph().tensor(exec.graph().output).len() / batch;
    let input = exec.graph().inputs[0];
    let mut outputs = Vec::with_capacity(values.len() / per_in * per_out);
    for chunk in values.chunks(batch * per_in) {
        let slot = exec.tensor_mut(input);
        slot.fill(0.0);
        slot[..chunk.len()].copy_from_slice(chunk);
        exec.run()?;
        let rows = chunk.len() / per_in;
        outputs.extend_from_slice(&exec.output()[..rows * per_out]);
    }
    Ok(outputs)
}

/// Whether the network's outputs are already probabilities.
pub(super) fn ends_in_softmax(exec: &Executable) -> bool {
    exec.graph()
        .ops
        .last()
        .is_some_and(|o| matches!(o.op, Op::Softmax { .. }) && o.output == exec.graph().output)
}

/// `example  class (probability) ...` for each example.
fn top_classes(outputs: &[f32], classes: usize, top: usize, probabilities: bool) -> String {
    let mut s = String::new();
    for (i, row) in outputs.chunks(classes).enumerate() {
        let mut p = row.to_vec();
        if !probabilities {
            softmax(&mut p);
        }
        let mut order: Vec<usize> = (0..classes).collect();
        order.sort_by(|a, b| p[*b].total_cmp(&p[*a]).then(a.cmp(b)));
        let _ = write!(s, "{i}");
        for &c in order.iter().take(top.max(1)) {
            let _ = write!(s, "\t{c} ({:.3})", p[c]);
        }
        s.push('\n');
    }
    s
}

/// Scores to probabilities, in place.
fn softmax(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    row.iter_mut().for_each(|v| *v = (*v - max).exp());
    let sum: f32 = row.iter().sum();
    row.iter_mut().for_each(|v| *v /= sum);
}

/// CSV (one row per example) or NPY (little-endian f32, shape `[examples, ...dims]`).
fn write_outputs(
    path: &std::path::Path,
    values: &[f32],
    count: usize,
    dims: &[usize],
) -> std::io::Result<()> {
    let per: usize = dims.iter().product();
    let bytes = match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => {
            let shape: Vec<String> =
                std::iter::once(count).chain(dims.iter().copied()).map(|d| d.to_string()).collect();
            let shape =
                if shape.len() == 1 { format!("({},)", shape[0]) } else { format!("({})", shape.join(", ")) };
            let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
            // Magic (6) + version (2) + length (2) + header + newline, padded to 64.
            while (10 + header.len() + 1) % 64 != 0 {
                header.push(' ');
            }
            header.push('\n');
            let mut b = b"\x93NUMPY\x01\x00".to_vec();
            b.extend((header.len() as u16).to_le_bytes());
            b.extend(header.as_bytes());
            b.extend(values.iter().flat_map(|v| v.to_le_bytes()));
            b
        }
        _ => {
            let mut s = String::new();
            for row in values.chunks(per) {
                let cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
                s.push_str(&cells.join(","));
                s.push('\n');
            }
            s.into_bytes()
        }
    };
    std::fs::write(path, bytes)
}
