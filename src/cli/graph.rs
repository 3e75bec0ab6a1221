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
    // A model that compiled has a network (a file of only blocks is a model error), so
    // only a name asked for can be missing.
    match (graph, &args.network) {
        (Some(g), _) => {
            super::out(&nnc_compiler::report::dot::to_dot(g));
            0
        }
        (None, name) => {
            let names: Vec<&str> = model.networks.iter().map(|g| g.name.as_str()).collect();
            eprintln!(
                "error: `{}` has no network `{}` (it has: {})",
                args.file.display(),
                name.as_deref().unwrap_or_default(),
                names.join(", ")
            );
            EXIT_USAGE
        }
    }
}
