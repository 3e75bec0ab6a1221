//! Front-end compile time per example: reading and parsing alone (the baseline) against
//! the whole front end (parse, resolve, expand with shape checking, train section), in
//! the same process. Prints medians and their ratio.
//!
//! Run: `cargo bench --bench frontend`

use std::path::Path;
use std::time::{Duration, Instant};

const RUNS: usize = 200;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn time(mut f: impl FnMut()) -> Duration {
    for _ in 0..20 {
        f(); // warm the file cache, the allocator and the clock
    }
    median(
        (0..RUNS)
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
            let _ = std::hint::black_box(nnc_compiler::load::load(path));
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
}
