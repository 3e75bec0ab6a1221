//! `nnc bench`: compile a network and time inference — compile time per phase, then
//! latency, throughput and achieved GFLOP/s over timed runs after a warm-up.

use super::{EXIT_USAGE, Ui, out};
use nnc_compiler::plan::bytes;
use nnc_runtime::exec::{Executable, Options};
use nnc_runtime::init::Rng;
use std::fmt::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    file: PathBuf,
    /// Examples per run.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=65536))]
    batch: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Timed runs (default: as many as fit in about two seconds, at least 10).
    #[arg(long)]
    iters: Option<usize>,
    /// Untimed runs first.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Also time each kernel on its own.
    #[arg(long)]
    kernels: bool,
    /// The network (default: the first in the file).
    #[arg(long)]
    network: Option<String>,
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
    let options = Options { threads, ..Options::default() };
    let mut exec = match Executable::build(graph, args.batch as usize, &options) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    exec.init_params(0);
    let mut rng = Rng::new(1);
    for &input in &exec.graph.inputs.clone() {
        let slot = exec.tensor_mut(input);
        for v in slot.iter_mut() {
            *v = rng.uniform() as f32;
        }
    }
    let t = exec.timings;
    let mut report = String::new();
    let _ = writeln!(
        report,
        "{} at batch {} on {} thread{}",
        graph.name,
        args.batch,
        threads,
        if threads == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        report,
        "compile   {} in all: front end {}, lower {}, fuse {}, plan {}, codegen {} ({} kernels)",
        ms(front + t.lower + t.fuse + t.plan + t.codegen),
        ms(front),
        ms(t.lower),
        ms(t.fuse),
        ms(t.plan),
        ms(t.codegen),
        exec.program.kernels.len()
    );
    let _ = writeln!(
        report,
        "memory    arena {} ({} without reuse)",
        bytes(exec.plan.size as u64),
        bytes(exec.plan.without_reuse as u64)
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
    let flops = 2.0 * exec.graph.macs() as f64;
    let _ = writeln!(
        report,
        "run       median {} per batch (min {}, {n} runs): {:.1} µs per example, {:.0} examples/s, {:.1} GFLOP/s",
        ms(med),
        ms(min),
        med.as_secs_f64() * 1e6 / args.batch as f64,
        args.batch as f64 / med.as_secs_f64(),
        flops / med.as_secs_f64() / 1e9
    );
    if args.kernels {
        let _ = writeln!(report, "\nkernel  median      GFLOP/s  ops");
        let mut rows = Vec::new();
        for k in 0..exec.program.kernels.len() {
            let mut ts = Vec::new();
            for _ in 0..n.clamp(5, 200) {
                let t = Instant::now();
                let _ = exec.run_kernel(k);
                ts.push(t.elapsed());
            }
            let kernel = &exec.program.kernels[k];
            rows.push((median(ts), kernel.name.clone(), 2.0 * kernel.macs as f64, kernel.label.clone()));
        }
        rows.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (t, name, flops, label) in rows {
            let rate = if flops > 0.0 { format!("{:.1}", flops / t.as_secs_f64() / 1e9) } else { "-".into() };
            let _ = writeln!(report, "{name:<7} {:<11} {rate:>7}  {label}", ms(t));
        }
    }
    out(&report);
    0
}
