//! Stage 1 (with [`crate::front::load`]): source text to [`ast::File`].
//!
//! The pest grammar lives in `grammar/nnc.pest`. Parsing never panics and never recurses
//! without bound: [`limits`] rejects absurd nesting before pest sees the text, and when the
//! file has a syntax error the parser re-parses each top-level item on its own, so every
//! broken item is reported, not only the first.

pub mod ast;
pub use error::join_or;
mod build;
mod error;
mod limits;

pub use limits::{MAX_FILE_BYTES, MAX_NESTING};

use crate::support::diagnostic::Diagnostic;
use crate::support::source::{FileId, SourceMap, Span};
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/nnc.pest"]
pub(crate) struct NncParser;

/// Parses one file. Returns the items that parsed and a diagnostic for each that did not.
pub fn parse(sources: &SourceMap, file: FileId) -> (ast::File, Vec<Diagnostic>) {
    let text = &sources.get(file).text;
    if let Err(d) = limits::check(text, file) {
        return (ast::File { id: file, items: Vec::new() }, vec![d]);
    }
    error::enable_detail();
    match parse_chunk(text, file, 0) {
        Ok(file) => file,
        Err(_) => {
            // Re-parse item by item so that one typo does not hide the rest of the file.
            let mut items = Vec::new();
            let mut diagnostics = Vec::new();
            let bounds = item_starts(text);
            for (i, &start) in bounds.iter().enumerate() {
                let end = bounds.get(i + 1).copied().unwrap_or(text.len());
                match parse_chunk(&text[..end], file, start) {
                    Ok((f, ds)) => {
                        items.extend(f.items);
                        diagnostics.extend(ds);
                    }
                    Err(d) => diagnostics.push(d),
                }
            }
            (ast::File { id: file, items }, diagnostics)
        }
    }
}

/// Parses `text[base..]` as a whole file.
fn parse_chunk(text: &str, file: FileId, base: usize) -> Result<(ast::File, Vec<Diagnostic>), Diagnostic> {
    let pairs = NncParser::parse(Rule::file, &text[base..])
        .map_err(|e| error::to_diagnostic(&e, text, file, base))?;
    Ok(build::file(pairs, text, file, base))
}

/// Byte offsets where a top-level item may start: the file start and every line that
/// begins with an item keyword in column 0.
fn item_starts(text: &str) -> Vec<usize> {
    let mut starts = vec![0];
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let is_item = ["block", "network", "train", "include"]
            .iter()
            .any(|kw| line.strip_prefix(kw).is_some_and(|rest| rest.starts_with([' ', '\t', '"'])));
        if is_item && offset > 0 {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts
}

/// A span in `file` from a pest span in a chunk that starts at `base`.
fn span(file: FileId, base: usize, s: pest::Span<'_>) -> Span {
    Span::new(file, base + s.start()..base + s.end())
}
