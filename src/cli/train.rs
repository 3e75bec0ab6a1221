//! `nnc train`: train a network from its `train` section, with every setting available
//! as a flag, a progress bar, a line per epoch, a metrics file and checkpoints.

use super::dataset::{self, Loaded};
use super::resume;
use super::{EXIT_MODEL, EXIT_USAGE, Failure, Ui, finish, out, usage};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nnc_compiler::front::train::{Augment, Optimizer, Schedule, TrainConfig};
use nnc_compiler::ir::graph::Graph;
use nnc_runtime::checkpoint::{self, CheckpointMeta};
use nnc_runtime::train::eval::Evaluator;
use nnc_runtime::train::run::{EpochReport, Observer, Outcome, Settings, StepReport, Trainer};
use nnc_runtime::train::step::TrainStep;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Exit status when Ctrl-C stopped the run (after saving a checkpoint).
const EXIT_INTERRUPTED: u8 = 130;

#[derive(clap::Args)]
#[command(allow_negative_numbers = true)]
pub struct Args {
    /// The model file.
    file: PathBuf,
    /// The network (default: the first in the file).
    #[arg(long)]
    network: Option<String>,
    /// Training data: a directory with `train-*` (and `test-*`) IDX files, or a text file
    /// for a character model. Default: the train section's `data`, else the embedded digits.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Evaluation data: a directory with `test-*` IDX files, or a text file (default: the
    /// data directory's test split, or the text file's `valid` sibling).
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Checkpoint to write (default: the one given to `--resume`, else
    /// `<network>.safetensors` here).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Metrics file, one JSON object per epoch (default: beside the checkpoint, `<out>.metrics.jsonl`).
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Continue an interrupted run from its checkpoint.
    #[arg(long, conflicts_with = "init_from")]
    resume: Option<PathBuf>,
    /// Start from these parameters instead of the initialisers.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Keep the stored order of the examples.
    #[arg(long)]
    no_shuffle: bool,
    /// Stop after this many steps in all (saving a checkpoint that `--resume` continues).
    #[arg(long)]
    max_steps: Option<u64>,
    #[arg(long)]
    epochs: Option<u64>,
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65536))]
    batch: Option<u64>,
    #[arg(long)]
    seed: Option<u64>,
    /// Base learning rate.
    #[arg(long)]
    lr: Option<f64>,
    /// SGD momentum.
    #[arg(long)]
    momentum: Option<f64>,
    /// SGD with Nesterov momentum.
    #[arg(long)]
    nesterov: Option<bool>,
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Adam's β₁, β₂ and ε.
    #[arg(long)]
    beta1: Option<f64>,
    #[arg(long)]
    beta2: Option<f64>,
    #[arg(long)]
    eps: Option<f64>,
    /// `constant`, `cosine`, `cosine:MIN_LR` or `step:EVERY:GAMMA`.
    #[arg(long, value_parser = parse_schedule)]
    schedule: Option<Schedule>,
    /// Epochs of linear warm-up.
    #[arg(long)]
    warmup: Option<u64>,
    /// Largest gradient norm (0: no clipping).
    #[arg(long)]
    clip: Option<f64>,
    /// `none`, or a comma-separated list of `crop:PAD` and `hflip`.
    #[arg(long, value_parser = parse_augment)]
    augment: Option<Augments>,
    /// Input normalisation, one value or one per channel, comma-separated.
    #[arg(long, value_delimiter = ',')]
    mean: Option<Vec<f64>>,
    #[arg(long, value_delimiter = ',')]
    std: Option<Vec<f64>>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

#[derive(Clone, Debug)]
struct Augments(Vec<Augment>);

fn parse_augment(s: &str) -> Result<Augments, String> {
    if s == "none" {
        return Ok(Augments(Vec::new()));
    }
    s.split(',')
        .map(|part| match part.split_once(':') {
            None if part == "hflip" => Ok(Augment::Hflip),
            Some(("crop", pad)) => {
                pad.parse().map(|pad| Augment::RandomCrop { pad }).map_err(|e| format!("`{part}`: {e}"))
            }
            _ => Err(format!("`{part}` is not `crop:PAD` or `hflip`")),
        })
        .collect::<Result<_, _>>()
        .map(Augments)
}

fn parse_schedule(s: &str) -> Result<Schedule, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |v: &str| v.parse::<f64>().map_err(|e| format!("`{v}`: {e}"));
    match parts[..] {
        ["constant"] => Ok(Schedule::Constant),
        ["cosine"] => Ok(Schedule::Cosine { min_lr: 0.0 }),
        ["cosine", min] => Ok(Schedule::Cosine { min_lr: num(min)? }),
        ["step", every, gamma] => Ok(Schedule::Step {
            every: every.parse().map_err(|e| format!("`{every}`: {e}"))?,
            gamma: num(gamma)?,
        }),
        _ => Err("expected `constant`, `cosine`, `cosine:MIN_LR` or `step:EVERY:GAMMA`".into()),
    }
}

/// The train section with the flags applied.
fn configure(base: Option<&TrainConfig>, graph: &Graph, a: &Args) -> Result<TrainConfig, String> {
    let mut c = match base {
        Some(c) => c.clone(),
        None => {
            return Err(format!(
                "`{}` has no train section for `{}`; add one (see docs/language.md)",
                a.file.display(),
                graph.name
            ));
        }
    };
    c.epochs = a.epochs.unwrap_or(c.epochs);
    c.batch = a.batch.unwrap_or(c.batch);
    c.seed = a.seed.unwrap_or(c.seed);
    c.schedule = a.schedule.unwrap_or(c.schedule);
    c.warmup = a.warmup.unwrap_or(c.warmup);
    if let Some(clip) = a.clip {
        c.clip = (clip != 0.0).then_some(clip);
    }
    if let Some(Augments(list)) = &a.augment {
        c.augment = list.clone();
    }
    c.mean = a.mean.clone().unwrap_or(c.mean);
    c.std = a.std.clone().unwrap_or(c.std);
    let sgd_only = a.momentum.is_some() || a.nesterov.is_some();
    let adam_only = a.beta1.is_some() || a.beta2.is_some() || a.eps.is_some();
    c.optimizer = match c.optimizer {
        Optimizer::Sgd { lr, momentum, nesterov, weight_decay } if !adam_only => Optimizer::Sgd {
            lr: a.lr.unwrap_or(lr),
            momentum: a.momentum.unwrap_or(momentum),
            nesterov: a.nesterov.unwrap_or(nesterov),
            weight_decay: a.weight_decay.unwrap_or(weight_decay),
        },
        Optimizer::Adam { lr, beta1, beta2, eps, weight_decay } if !sgd_only => Optimizer::Adam {
            lr: a.lr.unwrap_or(lr),
            beta1: a.beta1.unwrap_or(beta1),
            beta2: a.beta2.unwrap_or(beta2),
            eps: a.eps.unwrap_or(eps),
            weight_decay: a.weight_decay.unwrap_or(weight_decay),
        },
        Optimizer::Adamw { lr, beta1, beta2, eps, weight_decay } if !sgd_only => Optimizer::Adamw {
            lr: a.lr.unwrap_or(lr),
            beta1: a.beta1.unwrap_or(beta1),
            beta2: a.beta2.unwrap_or(beta2),
            eps: a.eps.unwrap_or(eps),
            weight_decay: a.weight_decay.unwrap_or(weight_decay),
        },
        _ => return Err("--momentum and --nesterov are SGD's; --beta1, --beta2 and --eps are Adam's".into()),
    };
    // The train section's own ranges, so that a flag cannot give what the section refuses.
    let input = graph.inputs.first().map(|&i| graph.node(i).shape);
    c.validate(input).map_err(|e| format!("invalid --{}: {e}", e.setting.replace('_', "-")))?;
    Ok(c)
}

/// A stable hash of the text of every source file of the model (FNV-1a), stored in
/// checkpoints so that `--resume` refuses a checkpoint of a different network. Only the
/// contents count, not the paths: the same model reached through `./m.net`, an absolute
/// path or another working directory is the same model.
pub fn source_hash(model: &nnc_compiler::Model) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for f in model.sources.files() {
        for b in f.text.bytes().chain([0]) {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

pub fn run(ui: &Ui, a: &Args) -> u8 {
    finish(train(ui, a))
}

fn train(ui: &Ui, a: &Args) -> Result<u8, Failure> {
    let model = ui.compile(&a.file).map_err(|code| (code, "the model has errors".to_string()))?;
    let graph = super::network(&model, a.network.as_deref(), &a.file)
        .ok_or((EXIT_USAGE, "no network to train".to_string()))?;
    // A resumed run takes its settings from the checkpoint, with any flag checked
    // against them; a new one from the train section with the flags applied.
    let resumed_meta = match &a.resume {
        Some(path) => Some(resumed(path)?),
        None => None,
    };
    let (config, shuffle) = match (&a.resume, &resumed_meta) {
        (Some(path), Some(meta)) => {
            if meta.source != source_hash(&model) {
                return Err(usage(format!(
                    "`{}` was written for a different model source; start from its weights with --init-from instead",
                    path.display()
                )));
            }
            let config = configure(Some(&meta.config), graph, a).map_err(usage)?;
            let shuffle = meta.shuffle && !a.no_shuffle;
            resume::check_unchanged((&meta.config, meta.shuffle), (&config, shuffle), path).map_err(usage)?;
            (config, shuffle)
        }
        _ => (configure(model.train_config(&graph.name), graph, a).map_err(usage)?, !a.no_shuffle),
    };
    let prep = dataset::preparation(graph, Some(&config), None).map_err(usage)?;
    let classes = *graph.node(graph.output).shape.dims().last().unwrap_or(&1) as usize;
    // A resumed character model keeps the vocabulary its ids were trained with.
    let vocabulary = match resumed_meta.as_ref().and_then(|m| m.vocabulary.as_ref()) {
        Some(v) => Some(nnc_runtime::data::text::Vocabulary::from_string(v).map_err(usage)?),
        None => None,
    };
    let Loaded { train, test, vocabulary, notes } = dataset::load(dataset::Request {
        model_file: &a.file,
        config: Some(&config),
        data: a.data.as_deref(),
        valid: a.valid.as_deref(),
        prep: &prep,
        classes,
        vocabulary,
        need_train: true,
    })
    .map_err(usage)?;
    let train = train.expect("loaded for training");
    for n in &notes {
        eprintln!("{n}");
    }
    let options = ui.options(super::threads(a.threads));
    let (rule, lr) = config.optimizer.update_rule();
    let batch = config.batch as usize;
    let started = std::time::Instant::now();
    let mut step = TrainStep::new(graph, config.loss, rule, batch, &options).map_err(usage)?;
    let eval = match &test {
        Some(_) => Some(Evaluator::new(graph, batch, config.loss, &options).map_err(usage)?),
        None => None,
    };
    eprintln!(
        "compiled {} for training in {:.0} ms: {} kernels, arena {}",
        graph.name,
        started.elapsed().as_secs_f64() * 1e3,
        step.exe.program().kernels.len(),
        nnc_compiler::support::numbers::bytes(step.exe.plan().size as u64)
    );
    // A resumed run goes on writing the checkpoint it continues.
    let out_path = a
        .out
        .clone()
        .or_else(|| a.resume.clone())
        .unwrap_or_else(|| PathBuf::from(format!("{}.safetensors", graph.name)));
    let best = test.as_ref().map(|_| out_path.with_extension("best.safetensors"));
    // Beside the checkpoint, so that a run's files stay together.
    let metrics_path = a.metrics.clone().unwrap_or_else(|| out_path.with_extension("metrics.jsonl"));
    // Refused before anything runs: a device or directory here would be replaced (or the
    // run fail) only after the training is done.
    let train_path = checkpoint::train_path(&out_path);
    let outputs = [
        ("--out", Some(&out_path)),
        ("--out", Some(&train_path)),
        ("--out", best.as_ref()),
        ("--metrics", Some(&metrics_path)),
    ];
    for (flag, path) in outputs {
        if let Some(path) = path
            && let Err(e) = nnc_runtime::files::check_output(path)
        {
            return Err(usage(format!("cannot write `{}` (from {flag}): {e}", path.display())));
        }
    }
    let meta = CheckpointMeta {
        network: graph.name.clone(),
        source: source_hash(&model),
        seed: config.seed,
        optimizer: config.optimizer,
        config: config.clone(),
        shuffle,
        vocabulary: vocabulary.as_ref().map(ToString::to_string),
        position: None,
        best_loss: None,
        weights: None,
    };
    // Parameters: from a checkpoint being resumed, from --init-from, or initialised.
    let mut position = None;
    if let (Some(path), Some(meta)) = (&a.resume, &resumed_meta) {
        checkpoint::load(&mut step.exe, path).map_err(usage)?;
        let train_path = checkpoint::train_path(path);
        if meta.weights.as_ref() != Some(&checkpoint::fingerprint(&checkpoint::state(&step.exe))) {
            return Err(usage(format!(
                "`{}` does not belong with `{}` (they were not written together); start from the \
                 weights with --init-from instead",
                train_path.display(),
                path.display()
            )));
        }
        checkpoint::load_optimizer(&mut step, &train_path).map_err(usage)?;
        position = Some(meta.position.ok_or_else(|| {
            usage(format!("`{}` has no training position; use --init-from", path.display()))
        })?);
    } else if let Some(path) = &a.init_from {
        super::note_converted(path, &checkpoint::load(&mut step.exe, path).map_err(usage)?);
    } else {
        step.exe.init_params(config.seed);
    }
    let settings = Settings {
        epochs: config.epochs,
        seed: config.seed,
        shuffle,
        max_steps: a.max_steps,
        lr,
        schedule: config.schedule,
        warmup: config.warmup,
        clip: config.clip,
        checkpoint: out_path.clone(),
        best: best.clone(),
        meta,
    };
    let mut trainer = Trainer::new(step, eval, &train, test.as_ref(), settings).map_err(usage)?;
    if let Some(p) = position {
        let best_loss = resumed_meta.as_ref().and_then(|m| m.best_loss);
        trainer.resume(p, best_loss).map_err(usage)?;
        eprintln!("resuming at epoch {} batch {} (step {})", p.epoch + 1, p.batch, p.step);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    // A second Ctrl-C ends the process at once.
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(EXIT_INTERRUPTED.into());
        }
    });
    let metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(a.resume.is_some())
        .write(true)
        .truncate(a.resume.is_none())
        .open(&metrics_path)
        .map_err(|e| usage(format!("cannot write `{}`: {e}", metrics_path.display())))?;
    let text = vocabulary.is_some();
    let mut progress = Progress::new(config.epochs, a.quiet, metrics, text);
    let outcome = trainer.run(&stop, &mut progress);
    progress.bar.finish_and_clear();
    match outcome {
        Ok(Outcome::Finished) => {
            eprintln!("saved {} (metrics in {})", out_path.display(), metrics_path.display());
            if let Some(b) = best.filter(|b| b.exists()) {
                eprintln!("lowest test loss: {:.4} at {}", trainer.best_loss, b.display());
            }
            Ok(0)
        }
        Ok(Outcome::StepLimit(p)) | Ok(Outcome::Interrupted(p)) => {
            let interrupted = matches!(outcome, Ok(Outcome::Interrupted(_)));
            eprintln!(
                "{} at epoch {} batch {} (step {}); saved {} — continue with --resume {}",
                if interrupted { "interrupted" } else { "stopped" },
                p.epoch + 1,
                p.batch,
                p.step,
                out_path.display(),
                out_path.display()
            );
            Ok(if interrupted { EXIT_INTERRUPTED } else { 0 })
        }
        Err(e) => {
            // Every checkpoint this run wrote is finite; one from before is named only if
            // it is too.
            let kept = if trainer.saved {
                format!("; the last good checkpoint is {}", out_path.display())
            } else if out_path.exists() && checkpoint::is_finite(&out_path) {
                format!("; the last good checkpoint is {}, from before this run", out_path.display())
            } else {
                "; no checkpoint was written".to_string()
            };
            Err((EXIT_MODEL, format!("{e}{kept}")))
        }
    }
}

/// The metadata of the train file beside the checkpoint `path`, which a resumed run
/// takes its settings and position from.
fn resumed(path: &Path) -> Result<CheckpointMeta, Failure> {
    let train_path = checkpoint::train_path(path);
    let cannot = |e: String| usage(format!("cannot resume from `{}`: {e}", path.display()));
    let bytes = checkpoint::read(&train_path).map_err(|e| cannot(e.to_string()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| cannot(format!("`{}` is not a valid safetensors file: {e}", train_path.display())))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let hint = "; start from its weights with --init-from instead";
    CheckpointMeta::from_metadata(&metadata, &train_path)
        .map_err(|e| cannot(format!("{e}{hint}")))?
        .ok_or_else(|| cannot(format!("`{}` was not written by `nnc train`{hint}", train_path.display())))
}

/// `97.5%`, or `-` where a loss has no accuracy.
fn percent(accuracy: Option<f64>) -> String {
    accuracy.map_or("-".into(), |a| format!("{:.1}%", 100.0 * a))
}

/// The progress bar, the epoch lines and the metrics file.
struct Progress {
    bar: ProgressBar,
    epochs: u64,
    metrics: std::fs::File,
    text: bool,
}

impl Progress {
    fn new(epochs: u64, quiet: bool, metrics: std::fs::File, text: bool) -> Progress {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        } else {
            ProgressBar::new(0)
        };
        bar.set_style(
            ProgressStyle::with_template("epoch {prefix} [{bar:30}] {pos}/{len} {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        Progress { bar, epochs, metrics, text }
    }
}

impl Observer for Progress {
    fn step(&mut self, r: &StepReport) {
        if self.bar.length() != Some(r.batches) {
            self.bar.set_length(r.batches);
        }
        self.bar.set_prefix(format!("{}/{}", r.epoch + 1, self.epochs));
        self.bar.set_position(r.batch);
        self.bar.set_message(format!(
            "loss {:.4}  acc {}  {:.0} ex/s",
            r.loss,
            percent(r.accuracy),
            r.examples_per_second
        ));
    }

    fn epoch(&mut self, r: &EpochReport) {
        self.bar.set_position(0);
        let bits = |loss: f64| {
            if self.text {
                format!(" ({:.3} bits/char)", loss / std::f64::consts::LN_2)
            } else {
                String::new()
            }
        };
        let mut line = format!(
            "epoch {:>3}/{}  train loss {:.4}{} acc {:>6}",
            r.epoch,
            self.epochs,
            r.train_loss,
            bits(r.train_loss),
            percent(r.train_accuracy)
        );
        if let Some(t) = &r.test {
            line += &format!(
                "  test loss {:.4}{} acc {:5.2}%{}",
                t.loss,
                bits(t.loss),
                100.0 * t.accuracy,
                if r.best { " *" } else { "" }
            );
        }
        line += &format!("  lr {:.3e}  {:.1} s  {:.0} ex/s\n", r.lr, r.seconds, r.examples_per_second);
        self.bar.suspend(|| out(&line));
        let mut json = serde_json::json!({
            "epoch": r.epoch,
            "step": r.step,
            "train_loss": r.train_loss,
            "train_accuracy": r.train_accuracy,
            "lr": r.lr,
            "seconds": r.seconds,
            "examples_per_second": r.examples_per_second,
        });
        if let Some(t) = &r.test {
            json["test_loss"] = t.loss.into();
            json["test_accuracy"] = t.accuracy.into();
        }
        if self.text {
            json["train_bits_per_char"] = (r.train_loss / std::f64::consts::LN_2).into();
            if let Some(t) = &r.test {
                json["test_bits_per_char"] = (t.loss / std::f64::consts::LN_2).into();
            }
        }
        if let Err(e) = writeln!(self.metrics, "{json}") {
            eprintln!("warning: cannot write the metrics file: {e}");
        }
    }
}
