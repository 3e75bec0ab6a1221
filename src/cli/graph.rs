//! `nnc graph`: the layer graph as Graphviz DOT.

use super::{EXIT_USAGE, Ui};
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    file: PathBuf,
    /// The network to draw (default: the first in the file).
    #[arg(long)]
    network: Option<String>,
}

pub fn run(ui: &Ui, args: &Args) -> u8 {
    let model = match ui.compile(&args.file) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let graph = match &args.network {
        Some(name) => model.network(name),
        None => model.networks.first(),
    };
    match graph {
        Some(g) => {
            super::out(&nnc_compiler::dot::to_dot(g));
            0
        }
        None => {
            let names: Vec<&str> = model.networks.iter().map(|g| g.name.as_str()).collect();
            match &args.network {
                Some(n) => eprintln!(
                    "error: `{}` has no network `{n}` (it has: {})",
                    args.file.display(),
                    names.join(", ")
                ),
                None => eprintln!(
                    "error: `{}` defines only blocks; there is no network to draw",
                    args.file.display()
                ),
            }
            EXIT_USAGE
        }
    }
}
