//! `nnc fmt`: prints any valid file in one canonical layout.
//!
//! Canonical means: four-space indentation, one space around operators and after commas,
//! one blank line between items, at most one blank line between statements, settings
//! aligned at `=`, calls and lists on one line when they fit in [`WIDTH`] columns and one
//! argument per line (with a trailing comma) when they do not. The one layout choice kept
//! from the input is where a pipeline breaks before `|>`, because that grouping (`conv |>
//! tanh` on one line per stage of LeNet) carries meaning; continuation lines align under
//! the pipeline's first operand. Comments are kept, on their own lines or at line ends.
//! Formatting a formatted file changes nothing.

mod comments;
mod expr;
mod printer;

use crate::support::diagnostic::Diagnostic;
use crate::support::source::SourceMap;

/// Preferred line width.
pub const WIDTH: usize = 100;

/// Formats a file's text. Syntax errors (which make formatting impossible) come back as
/// diagnostics against the returned source map. A byte-order mark, which the compiler
/// skips, is dropped.
pub fn format(name: &str, text: &str) -> Result<String, (SourceMap, Vec<Diagnostic>)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut sources = SourceMap::new();
    let id = sources.add(name, text);
    let (file, diagnostics) = crate::front::syntax::parse(&sources, id);
    if diagnostics.iter().any(Diagnostic::is_error) {
        return Err((sources, diagnostics));
    }
    Ok(printer::print(&file, text))
}
