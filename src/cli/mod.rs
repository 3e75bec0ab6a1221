//! Command-line parsing and the commands.

mod bench;
mod compile;
mod dataset;
mod eval;
mod fmt;
mod generate;
mod graph;
mod predict;
mod resume;
mod train;

use clap::{Parser, Subcommand, ValueEnum};
use nnc_compiler::backend::Target;
use nnc_compiler::support::diagnostic::{self, Color};
use nnc_compiler::{Error, Model};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Exit status: the model has errors (or `fmt --check` found unformatted files).
pub const EXIT_MODEL: u8 = 1;
/// Exit status: bad usage or an I/O problem.
pub const EXIT_USAGE: u8 = 2;

#[derive(Parser)]
#[command(name = "nnc", version, about = "A compiler for neural networks", propagate_version = true)]
struct Cli {
    /// When to colour diagnostics.
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto)]
    color: ColorChoice,
    /// The instruction set to generate code for: auto (the fastest this CPU runs),
    /// cranelift (portable 128-bit code), avx2 or avx512. Also `NNC_ISA`.
    #[arg(long, global = true, value_name = "NAME")]
    isa: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum ColorChoice {
    Auto,
    Always,
    Never,
}

#[derive(Subcommand)]
enum Command {
    /// Check a model and print its shape plan.
    Compile(compile::Args),
    /// Check models; print only errors.
    Check {
        /// Model files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Format model files in the canonical layout.
    Fmt(fmt::Args),
    /// Print the layer graph in Graphviz DOT.
    Graph(graph::Args),
    /// Run a trained network on examples from a file.
    Predict(predict::Args),
    /// Time compilation and inference.
    Bench(bench::Args),
    /// Train a network on data, from its train section.
    Train(Box<train::Args>),
    /// Measure trained weights on held-out data: loss, accuracy, confusion matrix.
    Eval(eval::Args),
    /// Sample text from a trained character model.
    Generate(generate::Args),
}

pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let color = match cli.color {
        ColorChoice::Always => Color::Always,
        ColorChoice::Never => Color::Never,
        ColorChoice::Auto if std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none() => {
            Color::Always
        }
        ColorChoice::Auto => Color::Never,
    };
    let isa = cli.isa.or_else(|| std::env::var("NNC_ISA").ok()).unwrap_or_else(|| "auto".into());
    let target = match Target::parse(&isa) {
        Ok(t) => t,
        Err(message) => {
            eprintln!("error: --isa {isa}: {message}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let ui = Ui { color, target };
    let status = match cli.command {
        Command::Compile(args) => compile::run(&ui, &args),
        Command::Fmt(args) => fmt::run(&ui, &args),
        Command::Graph(args) => graph::run(&ui, &args),
        Command::Predict(args) => predict::run(&ui, &args),
        Command::Bench(args) => bench::run(&ui, &args),
        Command::Train(args) => train::run(&ui, &args),
        Command::Eval(args) => eval::run(&ui, &args),
        Command::Generate(args) => generate::run(&ui, &args),
        Command::Check { files } => {
            let mut worst = 0;
            for f in &files {
                if let Err(code) = ui.compile(f) {
                    worst = worst.max(code);
                }
            }
            worst
        }
    };
    ExitCode::from(status)
}

/// A command's failure: its exit status and the message printed for it.
pub type Failure = (u8, String);

/// A failure of the command line or its files (exit status 2), with `e`'s message.
pub fn usage(e: impl std::fmt::Display) -> Failure {
    (EXIT_USAGE, e.to_string())
}

/// The exit status of a command's result, printing the message of a failure.
pub fn finish(result: Result<u8, Failure>) -> u8 {
    result.unwrap_or_else(|(code, message)| {
        eprintln!("error: {message}");
        code
    })
}

/// Writes to standard output. A closed pipe (`nnc compile ... | head`) ends the program
/// quietly, as it does for other command-line tools; any other write error is reported.
pub fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("error: cannot write to standard output: {e}");
            std::process::exit(EXIT_USAGE.into());
        }
        std::process::exit(0);
    }
}

/// Says once per file that weights were not f32 and were converted on load.
pub fn note_converted(path: &Path, loaded: &nnc_runtime::checkpoint::Loaded) {
    if !loaded.converted.is_empty() {
        let types: Vec<String> = loaded.converted.iter().map(|d| format!("{d:?}")).collect();
        eprintln!("note: `{}` holds {} weights; converted to F32", path.display(), types.join(" and "));
    }
}

/// The network `name` of a model, or its first; reports the problem and returns `None`
/// when there is no such network.
pub fn network<'m>(
    model: &'m Model,
    name: Option<&str>,
    file: &Path,
) -> Option<&'m nnc_compiler::ir::graph::Graph> {
    let found = match name {
        Some(n) => model.network(n),
        None => model.networks.first(),
    };
    // A model that compiled has a network (a file of only blocks is a model error), so
    // only a name asked for can be missing.
    if let (None, Some(n)) = (found, name) {
        let names: Vec<&str> = model.networks.iter().map(|g| g.name.as_str()).collect();
        eprintln!("error: `{}` has no network `{n}` (it has: {})", file.display(), names.join(", "))
    }
    found
}

/// The thread count to use: as asked, or every core.
pub fn threads(asked: Option<usize>) -> usize {
    asked.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).clamp(1, 256)
}

/// Output settings and the code generator, shared by the commands.
pub struct Ui {
    color: Color,
    target: Target,
}

impl Ui {
    /// Options for running networks on `threads` threads with the chosen back end.
    pub fn options(&self, threads: usize) -> nnc_runtime::exec::Options {
        nnc_runtime::exec::Options { threads, target: self.target, ..Default::default() }
    }

    /// Compiles a file, printing its diagnostics on failure; `Err` holds the exit status.
    pub fn compile(&self, path: &Path) -> Result<Model, u8> {
        let model = nnc_compiler::compile_file(path).map_err(|e| self.report(e))?;
        eprint!("{}", diagnostic::render(&model.sources, &model.warnings, self.color));
        Ok(model)
    }

    /// Prints a compile error and returns the exit status it calls for.
    pub fn report(&self, e: Error) -> u8 {
        match e {
            Error::Read(e) => {
                eprintln!("error: {e}");
                EXIT_USAGE
            }
            Error::Invalid { sources, diagnostics } => {
                eprint!("{}", diagnostic::render(&sources, &diagnostics, self.color));
                let n = diagnostics.iter().filter(|d| d.is_error()).count();
                eprintln!("error: could not compile: {n} error{}", if n == 1 { "" } else { "s" });
                EXIT_MODEL
            }
        }
    }
}
