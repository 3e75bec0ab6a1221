//! Front-end compile time per example: reading and parsing alone (the baseline) against
//! the whole front end (parse, resolve, expand with shape checking, train section), in
//! the same process. Prints medians and their ratio. Then the same for generated one-line
//! pipelines of 5,000 and 50,000 stages, which shows that the front end's time grows
//! in proportion to its input (the larger input should take about ten times as long).
//!
//! Run: `cargo bench --bench frontend`

use std::path::Path;
use std::time::{Duration, Instant};

const RUNS: usize = 200;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time(f: impl FnMut()) -> Duration {
    time_runs(RUNS, f)
}

fn time_runs(runs: usize, mut f: impl FnMut()) -> Duration {
    for _ in 0..runs.div_ceil(10) {
        f(); // warm the file cache, the allocator and the clock
    }
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let examples =
        ["lenet5", "alexnet", "vgg16", "googlenet", "resnet18", "resnet50", "resnet152", "char_lstm"];
    println!("{:<11} {:>7} {:>12} {:>12} {:>7}", "example", "layers", "parse (ms)", "full (ms)", "ratio");
    for name in examples {
        let path = format!("examples/{name}.net");
        let path = Path::new(&path);
        let layers = nnc_compiler::compile_file(path).expect("examples compile").networks[0].nodes.len();
        let parse = time(|| {
            let _ = std::hint::black_box(nnc_compiler::front::load::load(path));
        });
        let full = time(|| {
            let _ = std::hint::black_box(nnc_compiler::compile_file(path));
        });
        println!(
            "{name:<11} {layers:>7} {:>12.3} {:>12.3} {:>6.1}x",
            parse.as_secs_f64() * 1e3,
            full.as_secs_f64() * 1e3,
            full.as_secs_f64() / parse.as_secs_f64()
        );
    }
    scaling();
}

/// Parse and full check of `x |> relu |> relu ...` on one line, at two sizes ten times
/// apart. The full check stops at the layer limit, so it is timed on networks under it.
fn scaling() {
    println!();
    println!("{:<16} {:>9} {:>12} {:>12}", "one-line pipe", "stages", "parse (ms)", "full (ms)");
    let mut previous: Option<(Duration, Duration)> = None;
    for stages in [5_000, 50_000] {
        let text = format!("network n(x: [4]) {{\n    x{}\n}}\n", " |> relu".repeat(stages));
        let parse = time_runs(10, || {
            let _ = std::hint::black_box(nnc_compiler::front::load::load_str("pipe.net", &text, None));
        });
        let full = time_runs(10, || {
            let _ = std::hint::black_box(nnc_compiler::compile_str("pipe.net", &text, None));
        });
        println!(
            "{:<16} {stages:>9} {:>12.3} {:>12.3}",
            "",
            parse.as_secs_f64() * 1e3,
            full.as_secs_f64() * 1e3
        );
        if let Some((p, f)) = previous {
            println!(
                "{:<16} {:>9} {:>11.1}x {:>11.1}x",
                "10x the input",
                "",
                parse.as_secs_f64() / p.as_secs_f64(),
                full.as_secs_f64() / f.as_secs_f64()
            );
        }
        previous = Some((parse, full));
    }
}
