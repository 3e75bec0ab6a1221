//! `nnc fmt`: rewrite files in the canonical layout, or check that they are in it.

use super::{EXIT_MODEL, EXIT_USAGE, Ui};
use nnc_compiler::support::diagnostic;
use std::io::Read;
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
pub struct Args {
    /// Files to format; `-` reads standard input and writes standard output.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Change nothing; list the files that are not formatted and exit with status 1.
    #[arg(long)]
    check: bool,
}

pub fn run(ui: &Ui, args: &Args) -> u8 {
    let mut status = 0;
    for path in &args.files {
        status = status.max(one(ui, path, args.check));
    }
    status
}

fn one(ui: &Ui, path: &Path, check: bool) -> u8 {
    let stdin = path == Path::new("-");
    let text = if stdin {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut s) {
            eprintln!("error: cannot read standard input: {e}");
            return EXIT_USAGE;
        }
        s
    } else {
        let name = path.display().to_string();
        match nnc_compiler::front::load::read_limited(path, &name) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(t) => t,
                Err(_) => {
                    eprintln!("error: cannot read `{name}`: it is not UTF-8 text");
                    return EXIT_USAGE;
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        }
    };
    let name = if stdin { "<stdin>".to_string() } else { path.display().to_string() };
    let formatted = match nnc_compiler::front::fmt::format(&name, &text) {
        Ok(f) => f,
        Err((sources, diagnostics)) => {
            eprint!("{}", diagnostic::render(&sources, &diagnostics, ui.color));
            eprintln!("error: cannot format `{name}`: it has syntax errors");
            return EXIT_MODEL;
        }
    };
    if check {
        if formatted != text {
            super::out(&format!("{name}: not formatted\n"));
            return EXIT_MODEL;
        }
        return 0;
    }
    if stdin {
        super::out(&formatted);
        return 0;
    }
    if formatted != text {
        if let Err(e) = write_atomically(path, &formatted) {
            eprintln!("error: cannot write `{name}`: {e}");
            return EXIT_USAGE;
        }
        super::out(&format!("formatted {name}\n"));
    }
    0
}

/// Writes a temporary file beside `path`, then renames it over `path`, so an interrupted
/// run never leaves a half-written model.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".nnc-fmt.tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
