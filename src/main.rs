//! `nnc`: the command-line interface. Only this binary prints; the libraries return
//! values and typed errors.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
