//! `nnc bench`: compile a network and time inference (or, with `--train`, training
//! steps) — compile time per phase, then latency, throughput and achieved GFLOP/s over
//! timed runs after a warm-up.

use super::{EXIT_USAGE, Ui, out};
use nnc_compiler::ir::graph::{InputEncoding, Node, NodeKind};
use nnc_compiler::ir::shape::Shape;
use nnc_compiler::support::numbers::bytes;
use nnc_runtime::exec::{Executable, Options, Timings};
use nnc_runtime::init::Rng;
use nnc_runtime::train::step::{StepSettings, TrainStep};
use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    file: PathBuf,
    /// Examples per run (default: 1, or the train section's batch with `--train`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=65536))]
    batch: Option<u64>,
    /// Time training steps (forward, backward and update, as the train section sets
    /// them up) instead of inference.
    #[arg(long)]
    train: bool,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed runs (default: as many as fit in about two seconds, at least 10).
    #[arg(long)]
    iters: Option<usize>,
    /// Untimed runs first.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Also time each kernel, as it runs in sequence with the others.
    #[arg(long)]
    kernels: bool,
    /// The network (default: the first in the file).
    #[arg(long)]
    network: Option<String>,
}

/// Fills a network input with random values of its kind, as the data would: a one-hot
/// sequence one 1 per step (the products reading it skip its zeros), token ids below
/// the vocabulary, anything else `dense` values.
fn fill_input(node: &Node, slot: &mut [f32], rng: &mut Rng, dense: impl Fn(&mut Rng) -> f32) {
    match (&node.kind, node.shape) {
        (NodeKind::Input(InputEncoding::OneHot), Shape::Seq { features, .. }) if features > 0 => {
            for step in slot.chunks_mut(features as usize) {
                step.fill(0.0);
                step[rng.below(features) as usize] = 1.0;
            }
        }
        (NodeKind::Input(InputEncoding::Tokens), Shape::Tokens { vocab, .. }) => {
            slot.iter_mut().for_each(|v| *v = f32::from_bits(rng.below(vocab) as u32));
        }
        _ => slot.iter_mut().for_each(|v| *v = dense(rng)),
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub fn run(ui: &Ui, args: &Args) -> u8 {
    let t = Instant::now();
    let model = match ui.compile(&args.file) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let front = t.elapsed();
    let Some(graph) = super::network(&model, args.network.as_deref(), &args.file) else { return EXIT_USAGE };
    let threads = super::threads(args.threads);
    let options = ui.options(threads);
    if args.train {
        return train(&model, graph, args, &options, front);
    }
    let batch = args.batch.unwrap_or(1);
    let mut exec = match Executable::build(graph, batch as usize, &options) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    exec.init_params(0);
    let mut rng = Rng::new(1);
    for (&node, &input) in graph.inputs.iter().zip(&exec.graph().inputs.clone()) {
        fill_input(graph.node(node), exec.tensor_mut(input), &mut rng, |r| r.uniform() as f32);
    }
    let t = exec.timings();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "{} at batch {} on {} thread{}",
        graph.name,
        batch,
        threads,
        if threads == 1 { "" } else { "s" }
    );
    let total = front + t.stages.lower + t.stages.schedule + t.stages.memory + t.stages.verify + t.codegen;
    let _ = writeln!(report, "{}", compile_line(total, front, &t, false, exec.program().kernels.len()));
    let _ = writeln!(
        report,
        "memory    arena {} ({} without reuse)",
        bytes(exec.plan().size as u64),
        bytes(exec.plan().without_reuse as u64)
    );
    for _ in 0..args.warmup {
        if let Err(e) = exec.run() {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    }
    let mut samples = Vec::new();
    let budget = Instant::now();
    while args
        .iters
        .map_or(samples.len() < 10 || budget.elapsed() < Duration::from_secs(2), |n| samples.len() < n.max(1))
    {
        let t = Instant::now();
        let _ = exec.run();
        samples.push(t.elapsed());
    }
    let min = *samples.iter().min().expect("at least one run");
    let n = samples.len();
    let med = median(samples);
    let flops = 2.0 * exec.graph().macs() as f64;
    let _ = writeln!(
        report,
        "run       median {} per batch (min {}, {n} runs): {:.1} µs per example, {:.0} examples/s, {:.1} GFLOP/s",
        ms(med),
        ms(min),
        med.as_secs_f64() * 1e6 / batch as f64,
        batch as f64 / med.as_secs_f64(),
        flops / med.as_secs_f64() / 1e9
    );
    if args.kernels {
        kernel_times(&mut exec, n, &mut report);
    }
    out(&report);
    0
}

/// Each kernel timed where it runs, in the sequence of all of them, slowest first, with
/// its share of the cores' FMA peak and what generated its heaviest code. Timed alone,
/// a kernel finds its operands where its previous run left them: char_lstm.net's
/// transposes read 0.07 ms that way and 0.4 ms after the step's other kernels.
fn kernel_times(exec: &mut Executable, runs: usize, report: &mut String) {
    let threads = exec.program().threads;
    let peak = nnc_compiler::backend::fma_peak();
    if let Some((p, isa)) = peak {
        let _ = writeln!(
            report,
            "\npeak      {p:.1} GFLOP/s a core ({isa} FMA loop, measured now); shares are of {threads} core{}",
            if threads == 1 { "" } else { "s" }
        );
    }
    let _ = writeln!(report, "\nkernel  median      GFLOP/s  peak  code       ops");
    let kernels = exec.program().kernels.len();
    let mut times = vec![Vec::new(); kernels];
    for _ in 0..runs.clamp(5, 200) {
        for (k, ts) in times.iter_mut().enumerate() {
            let t = Instant::now();
            let _ = exec.run_kernel(k);
            ts.push(t.elapsed());
        }
    }
    let mut rows = Vec::new();
    for (k, ts) in times.into_iter().enumerate() {
        let kernel = &exec.program().kernels[k];
        let generator = exec.generator(k);
        rows.push((
            median(ts),
            kernel.name.clone(),
            2.0 * kernel.macs as f64,
            kernel.label.clone(),
            generator,
        ));
    }
    rows.sort_by_key(|r| std::cmp::Reverse(r.0));
    for (t, name, flops, label, generator) in rows {
        let gflops = flops / t.as_secs_f64() / 1e9;
        let rate = if flops > 0.0 { format!("{gflops:.1}") } else { "-".into() };
        let share = match peak {
            Some((p, _)) if flops > 0.0 => format!("{:.0}%", 100.0 * gflops / (p * threads as f64)),
            _ => "-".into(),
        };
        let _ = writeln!(report, "{name:<7} {:<11} {rate:>7} {share:>5}  {generator:<10} {label}", ms(t));
    }
}

/// Times training steps on random inputs and labels.
fn train(
    model: &nnc_compiler::Model,
    graph: &nnc_compiler::ir::graph::Graph,
    args: &Args,
    options: &Options,
    front: Duration,
) -> u8 {
    let Some(config) = model.train_config(&graph.name) else {
        eprintln!("error: `{}` has no train section for `{}`", args.file.display(), graph.name);
        return EXIT_USAGE;
    };
    let batch = args.batch.unwrap_or(config.batch) as usize;
    let (rule, lr) = config.optimizer.update_rule();
    let t = Instant::now();
    let mut step = match TrainStep::new(graph, config.loss, rule, batch, options) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let compile = t.elapsed();
    step.exe.init_params(0);
    let mut rng = Rng::new(1);
    let classes = *graph.node(graph.output).shape.dims().last().unwrap_or(&1);
    if let Some(&input) = graph.inputs.first() {
        fill_input(graph.node(input), step.input_mut(), &mut rng, |r| r.normal() as f32);
    }
    step.labels_mut().iter_mut().for_each(|v| *v = f32::from_bits(rng.below(classes) as u32));
    let threads = options.threads;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "{} training at batch {batch} on {threads} thread{}",
        graph.name,
        if threads == 1 { "" } else { "s" }
    );
    let t = step.exe.timings();
    let _ = writeln!(
        report,
        "{}",
        compile_line(front + compile, front, &t, true, step.exe.program().kernels.len())
    );
    let _ = writeln!(
        report,
        "memory    arena {} ({} without reuse)",
        bytes(step.exe.plan().size as u64),
        bytes(step.exe.plan().without_reuse as u64)
    );
    let settings = StepSettings { lr: lr * 1e-3, clip: config.clip, seed: 1 };
    let run = |step: &mut TrainStep| {
        let t = Instant::now();
        step.run(&settings).map(|_| t.elapsed())
    };
    let mut samples = Vec::new();
    let budget = Instant::now();
    for i in 0.. {
        let done =
            args.iters.map_or(samples.len() >= 10 && budget.elapsed() >= Duration::from_secs(2), |n| {
                samples.len() >= n.max(1)
            });
        if done {
            break;
        }
        match run(&mut step) {
            Ok(d) if i >= args.warmup => samples.push(d),
            Ok(_) => {}
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        }
    }
    let n = samples.len();
    let med = median(samples);
    let flops = 6.0 * graph.macs() as f64 * batch as f64;
    let _ = writeln!(
        report,
        "step      median {} per batch ({n} steps): {:.0} examples/s, {:.1} GFLOP/s (counting 3× the forward pass)",
        ms(med),
        batch as f64 / med.as_secs_f64(),
        flops / med.as_secs_f64() / 1e9
    );
    if args.kernels {
        kernel_times(&mut step.exe, n, &mut report);
    }
    out(&report);
    0
}

/// `compile 11.3 ms in all: front end 1.6 ms, lower 0.02 ms, ...`: the time of each stage,
/// in the pipeline's order.
fn compile_line(total: Duration, front: Duration, t: &Timings, training: bool, kernels: usize) -> String {
    let s = &t.stages;
    let autodiff = if training { format!(", autodiff {}", ms(s.autodiff)) } else { String::new() };
    format!(
        "compile   {} in all: front end {}, lower {}{autodiff}, schedule {}, memory {}, verify {}, codegen {} ({kernels} kernels)",
        ms(total),
        ms(front),
        ms(s.lower),
        ms(s.schedule),
        ms(s.memory),
        ms(s.verify),
        ms(t.codegen),
    )
}
