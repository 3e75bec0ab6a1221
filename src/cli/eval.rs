//! `nnc eval`: measure trained weights on held-out data — the mean loss, the accuracy and,
//! for a few classes, the confusion matrix — with the network in inference form
//! (running batch-norm statistics, no dropout), as `nnc train` evaluates after each epoch.

use super::dataset::{self, Loaded};
use super::{EXIT_USAGE, Failure, Ui, finish, out, usage};
use nnc_compiler::support::numbers::thousands;
use nnc_runtime::checkpoint::{self, CheckpointMeta};
use nnc_runtime::data::text::Vocabulary;
use nnc_runtime::exec::Executable;
use nnc_runtime::train::eval::{Evaluation, Evaluator};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Most classes a confusion matrix is printed for: beyond this it no longer fits a
/// terminal line (and a character model's 128 classes say little one by one).
const MAX_CONFUSION_CLASSES: usize = 20;

#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    file: PathBuf,
    /// Trained parameters (a checkpoint written by `nnc train`, or any safetensors file
    /// with the network's PyTorch names and layouts).
    #[arg(long)]
    weights: PathBuf,
    /// Evaluation data: a directory whose `test-*` IDX files are read (default: the train
    /// section's `data`, else the embedded digits), or a text file for a character model
    /// (default: the `valid` sibling of the train section's text).
    #[arg(long)]
    data: Option<PathBuf>,
    /// The network (default: the first in the file).
    #[arg(long)]
    network: Option<String>,
    /// Examples per run.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=65536))]
    batch: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

pub fn run(ui: &Ui, a: &Args) -> u8 {
    finish(eval(ui, a).map(|()| 0))
}

fn eval(ui: &Ui, a: &Args) -> Result<(), Failure> {
    let model = ui.compile(&a.file).map_err(|code| (code, "the model has errors".to_string()))?;
    let graph = super::network(&model, a.network.as_deref(), &a.file)
        .ok_or((EXIT_USAGE, "no network to evaluate".to_string()))?;
    let config = model.train_config(&graph.name);
    let prep = dataset::preparation(graph, config, None).map_err(usage)?;
    let classes = *graph.node(graph.output).shape.dims().last().unwrap_or(&1) as usize;
    let options = ui.options(super::threads(a.threads));
    let loss = config.map_or(nnc_compiler::front::train::Loss::CrossEntropy, |c| c.loss);
    let mut evaluator = Evaluator::new(graph, a.batch as usize, loss, &options).map_err(usage)?;
    // Loading the weights first rejects a checkpoint of another network before any data
    // is read, and gives a character model the vocabulary its ids were trained with.
    let meta = load_weights(&mut evaluator.exe, &a.weights, &graph.name)?;
    let text = dataset::is_text(&prep);
    let vocabulary = if text {
        let stored = meta.and_then(|m| m.vocabulary).ok_or_else(|| {
            usage(format!(
                "`{}` has no `nnc.vocabulary` metadata, so the characters' ids are unknown; \
                 evaluate a checkpoint written by `nnc train`",
                a.weights.display()
            ))
        })?;
        Some(Vocabulary::from_string(&stored).map_err(usage)?)
    } else {
        None
    };
    if text && a.data.is_none() && config.and_then(|c| c.data.as_ref()).is_none() {
        return Err(usage("a character model is evaluated on a text file: give it with --data FILE"));
    }
    // A text file given on the command line is the evaluation text itself (not the
    // training text whose `valid` sibling `nnc train` would evaluate on).
    let valid = if text { a.data.as_deref() } else { None };
    let Loaded { test, notes, .. } = dataset::load(dataset::Request {
        model_file: &a.file,
        config,
        data: a.data.as_deref(),
        valid,
        prep: &prep,
        classes,
        vocabulary,
        need_train: false,
    })
    .map_err(usage)?;
    for n in &notes {
        eprintln!("{n}");
    }
    let test = test.ok_or_else(|| usage("no evaluation text: give one with --data FILE"))?;
    if test.is_empty() {
        let steps = test.rows_per_example();
        return Err(usage(if text {
            format!(
                "`{}` is too short: one window of {steps} steps needs {} characters",
                test.name,
                steps + 1
            )
        } else {
            format!("{} has no examples", test.name)
        }));
    }
    let e = evaluator.evaluate(&test).map_err(usage)?;
    out(&report(&graph.name, &test.name, &e, text));
    Ok(())
}

/// Loads the checkpoint at `path` into `exe` and returns what `nnc train` stored with it
/// (`None` for a file from elsewhere). When it was written for another network (by
/// name), a checkpoint that does not fit says so, and one that fits is used with a
/// warning: the names of the tensors may match by chance.
pub(super) fn load_weights(
    exe: &mut Executable,
    path: &Path,
    network: &str,
) -> Result<Option<CheckpointMeta>, Failure> {
    let trained_for =
        |meta: &Option<CheckpointMeta>| meta.as_ref().map(|m| &m.network).filter(|n| *n != network).cloned();
    match checkpoint::load(exe, path) {
        Ok(loaded) => {
            super::note_converted(path, &loaded);
            let meta = CheckpointMeta::from_metadata(&loaded.metadata, path).map_err(usage)?;
            if let Some(other) = trained_for(&meta) {
                eprintln!("warning: `{}` was trained for network `{other}`, not `{network}`", path.display());
            }
            Ok(meta)
        }
        Err(e) => {
            let meta = checkpoint::read(path).ok().and_then(|bytes| {
                let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).ok()?;
                CheckpointMeta::from_metadata(header.metadata().as_ref()?, path).ok()?
            });
            let hint = match trained_for(&meta) {
                Some(other) => format!(" (it was trained for network `{other}`, not `{network}`)"),
                None => String::new(),
            };
            Err(usage(format!("{e}{hint}")))
        }
    }
}

/// The counts, loss and accuracy, then the confusion matrix when the classes are few.
fn report(network: &str, data: &str, e: &Evaluation, text: bool) -> String {
    let mut s = String::new();
    let right: u64 = (0..e.classes).map(|c| e.confusion[c * e.classes + c]).sum();
    let unit = if text { "characters" } else { "examples" };
    let _ = writeln!(s, "{network} on {data}");
    let _ = writeln!(s, "{unit:<10}  {}", thousands(e.rows as u64));
    let bits =
        if text { format!(" ({:.3} bits/char)", e.loss / std::f64::consts::LN_2) } else { String::new() };
    let _ = writeln!(s, "{:<10}  {:.4}{bits}", "mean loss", e.loss);
    let _ = writeln!(
        s,
        "{:<10}  {:.2}% ({} of {})",
        "accuracy",
        100.0 * e.accuracy,
        thousands(right),
        thousands(e.rows as u64)
    );
    if e.classes <= MAX_CONFUSION_CLASSES {
        s.push('\n');
        s += &confusion(e);
    } else {
        let _ = writeln!(
            s,
            "(no confusion matrix for {} classes; it is shown for at most {MAX_CONFUSION_CLASSES})",
            e.classes
        );
    }
    s
}

/// Rows are true classes, columns predicted ones, each row with its total and recall
/// (the share of the class predicted right; `-` for a class absent from the data).
fn confusion(e: &Evaluation) -> String {
    let n = e.classes;
    let row = |c: usize| &e.confusion[c * n..(c + 1) * n];
    let widest = e.confusion.iter().max().copied().unwrap_or(0).max(n.saturating_sub(1) as u64);
    let width = widest.to_string().len().max(2);
    let totals: Vec<u64> = (0..n).map(|c| row(c).iter().sum()).collect();
    let total_width = totals.iter().max().copied().unwrap_or(0).to_string().len().max(5);
    let mut s = String::from("confusion matrix (rows: true class, columns: predicted)\n");
    let _ = write!(s, "{:>4}", "");
    for c in 0..n {
        let _ = write!(s, " {c:>width$}");
    }
    let _ = writeln!(s, "  {:>total_width$}  recall", "total");
    for (c, &total) in totals.iter().enumerate() {
        let _ = write!(s, "{c:>4}");
        for v in row(c) {
            let _ = write!(s, " {v:>width$}");
        }
        let recall = if total == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * row(c)[c] as f64 / total as f64)
        };
        let _ = writeln!(s, "  {total:>total_width$}  {recall:>6}");
    }
    s
}
