//! `nnc compile`: the shape plan.

use super::{EXIT_MODEL, EXIT_USAGE, Ui};
use clap::ValueEnum;
use nnc_compiler::front::train::MAX_BATCH;
use nnc_compiler::pipeline;
use nnc_compiler::report::plan::Plan;
use nnc_compiler::report::plan::training::TrainingPlan;
use std::path::PathBuf;

#[derive(clap::Args)]
pub struct Args {
    /// The model file.
    file: PathBuf,
    /// Batch size for the memory estimate (default: 1, or the train section's with
    /// `--train`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_BATCH))]
    batch: Option<u64>,
    /// Print the training plan instead: the kernels of one training step (forward, loss,
    /// backward, update) and the arena with and without buffer reuse.
    #[arg(long)]
    train: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Only this network (default: every network in the file).
    #[arg(long)]
    network: Option<String>,
    /// Print a later stage instead of the plan: the tensor-op graph (`ops`) or the fused
    /// kernels with their loop nests (`kernels`), for `--batch` examples.
    #[arg(long, value_enum)]
    emit: Option<Emit>,
    /// Threads to schedule kernels for, which sizes their scratch (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Emit {
    Ops,
    Kernels,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

pub fn run(ui: &Ui, args: &Args) -> u8 {
    let model = match ui.compile(&args.file) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let graphs: Vec<_> = match &args.network {
        Some(name) => match model.network(name) {
            Some(g) => vec![g],
            None => {
                let names: Vec<&str> = model.networks.iter().map(|g| g.name.as_str()).collect();
                eprintln!(
                    "error: `{}` has no network `{name}` (it has: {})",
                    args.file.display(),
                    names.join(", ")
                );
                return EXIT_USAGE;
            }
        },
        None => model.networks.iter().collect(),
    };
    let threads = super::threads(args.threads);
    if args.train {
        return training(&model, &graphs, args, threads, ui);
    }
    let batch = args.batch.unwrap_or(1);
    if let Some(emit) = args.emit {
        for g in &graphs {
            let stages = match pipeline::inference(g, batch as usize, stage_options(threads, ui)) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: cannot compile `{}`: {e}", g.name);
                    return EXIT_MODEL;
                }
            };
            match emit {
                Emit::Ops => super::out(&stages.graph().to_string()),
                Emit::Kernels => super::out(&stages.program().to_string()),
            }
        }
        return 0;
    }
    let plans: Vec<Plan> = graphs
        .iter()
        .map(|g| {
            Plan::new(
                g,
                &model.sources,
                batch,
                threads,
                ui.target.geometry(),
                model.train_config(&g.name).cloned(),
            )
        })
        .collect();
    match args.format {
        Format::Text => {
            let texts: Vec<String> = plans.iter().map(ToString::to_string).collect();
            super::out(&texts.join("\n"));
        }
        Format::Json => {
            let json = if plans.len() == 1 {
                serde_json::to_string_pretty(&plans[0])
            } else {
                serde_json::to_string_pretty(&plans)
            };
            match json {
                Ok(s) => super::out(&format!("{s}\n")),
                Err(e) => {
                    eprintln!("error: cannot encode the plan as JSON: {e}");
                    return EXIT_USAGE;
                }
            }
        }
    }
    0
}

/// The training plans of `graphs` (each needs a train section), or with `--emit` the
/// training step's ops or kernels.
fn training(
    model: &nnc_compiler::Model,
    graphs: &[&nnc_compiler::ir::graph::Graph],
    args: &Args,
    threads: usize,
    ui: &Ui,
) -> u8 {
    let mut plans = Vec::new();
    for g in graphs {
        let Some(config) = model.train_config(&g.name) else {
            eprintln!("error: `{}` has no train section for `{}`", args.file.display(), g.name);
            return EXIT_USAGE;
        };
        let batch = args.batch.unwrap_or(config.batch) as usize;
        let (rule, _) = config.optimizer.update_rule();
        let options = stage_options(threads, ui);
        let (stages, training) = match pipeline::training(g, config.loss, rule, batch, options) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: cannot train `{}`: {e}", g.name);
                return EXIT_MODEL;
            }
        };
        match args.emit {
            Some(Emit::Ops) => super::out(&stages.graph().to_string()),
            Some(Emit::Kernels) => super::out(&stages.program().to_string()),
            None => plans.push(TrainingPlan::new(&g.name, &stages, &training)),
        }
    }
    if plans.is_empty() {
        return 0;
    }
    match args.format {
        Format::Text => {
            let texts: Vec<String> = plans.iter().map(ToString::to_string).collect();
            super::out(&texts.join("\n"));
        }
        Format::Json => match serde_json::to_string_pretty(&plans) {
            Ok(s) => super::out(&format!("{s}\n")),
            Err(e) => {
                eprintln!("error: cannot encode the plan as JSON: {e}");
                return EXIT_USAGE;
            }
        },
    }
    0
}

/// Kernels as the runtime would schedule them: for the chosen back end's geometry.
fn stage_options(threads: usize, ui: &Ui) -> pipeline::Options {
    pipeline::Options { threads, guard: 0, geometry: ui.target.geometry() }
}
