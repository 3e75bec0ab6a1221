//! Limits checked before parsing, so that no input can exhaust the stack or memory.
//!
//! The grammar recurses only through brackets (`(`, `[`, `{`), so bounding bracket depth
//! bounds the parser's and every later stage's recursion. Operator chains are flat in the
//! grammar, and [`super::build`] bounds their length.

use crate::support::diagnostic::Diagnostic;
use crate::support::source::{FileId, Span};

/// Deepest bracket nesting accepted. Real networks use fewer than ten levels.
pub const MAX_NESTING: usize = 64;
/// Largest source file accepted, in bytes. GoogLeNet is 60 lines.
pub const MAX_FILE_BYTES: usize = 4 << 20;

pub fn check(text: &str, file: FileId) -> Result<(), Diagnostic> {
    if text.len() > MAX_FILE_BYTES {
        return Err(Diagnostic::error(format!(
            "file is too large ({} bytes; the limit is {} bytes)",
            text.len(),
            MAX_FILE_BYTES
        ))
        .at(Span::new(file, 0..0), "file starts here"));
    }
    let bytes = text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => {
                depth += 1;
                if depth > MAX_NESTING {
                    return Err(Diagnostic::error(format!(
                        "brackets are nested more than {MAX_NESTING} levels deep"
                    ))
                    .at(Span::new(file, i..i + 1), "too deep here"));
                }
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    Ok(())
}
