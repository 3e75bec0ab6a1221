//! `nnc`: the command-line interface. Only this binary prints; the libraries return
//! values and typed errors.

/// Standard error that never panics. std's `eprintln!` panics when stderr is a closed pipe
/// (`nnc train model.net 2>&1 | head -n 1` once `head` has exited); a message nobody can
/// read any more is dropped instead, and the command goes on to its own exit status.
macro_rules! eprintln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

/// [`eprintln!`] without the newline.
macro_rules! eprint {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stderr(), $($arg)*);
    }};
}

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::run()
}
