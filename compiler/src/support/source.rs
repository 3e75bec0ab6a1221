//! Source files and spans.
//!
//! Every node the compiler builds keeps the [`Span`] it came from, so that any later stage
//! can point at the exact characters a diagnostic is about, in whichever file (the main
//! file or an `include`d one) they were written.

use std::ops::Range;

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, range: Range<usize>) -> Span {
        Span { file, start: range.start as u32, end: range.end as u32 }
    }

    /// The smallest span covering both `self` and `other` (which must be in the same file).
    pub fn to(self, other: Span) -> Span {
        Span { file: self.file, start: self.start.min(other.start), end: self.end.max(other.end) }
    }

    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// One loaded source file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The path as the user (or the `include` that named it) wrote it.
    pub name: String,
    pub text: String,
    line_starts: Vec<usize>,
    longest_line: usize,
}

impl SourceFile {
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= offset) - 1;
        let start = self.line_starts[line];
        let col = self.text.get(start..offset).map_or(offset - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    /// Byte offsets where the lines start.
    pub(crate) fn line_starts(&self) -> &[usize] {
        &self.line_starts
    }

    /// Length in bytes of the longest line.
    pub(crate) fn longest_line(&self) -> usize {
        self.longest_line
    }
}

/// All files read while compiling one model, in the order they were loaded.
#[derive(Debug, Default, Clone)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    pub fn new() -> SourceMap {
        SourceMap::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        let text = text.into();
        let line_starts: Vec<usize> =
            std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        let ends = line_starts.iter().skip(1).copied().chain([text.len() + 1]);
        let longest_line = line_starts.iter().zip(ends).map(|(s, e)| e - s - 1).max().unwrap_or(0);
        self.files.push(SourceFile { name: name.into(), text, line_starts, longest_line });
        FileId(self.files.len() as u32 - 1)
    }

    /// Every file, in load order (the main file first).
    pub fn files(&self) -> &[SourceFile] {
        &self.files
    }

    pub fn get(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// `file:line:col` of the start of a span.
    pub fn location(&self, span: Span) -> String {
        let file = self.get(span.file);
        let (line, col) = file.line_col(span.start as usize);
        format!("{}:{line}:{col}", file.name)
    }

    /// 1-based line of the start of a span.
    pub fn line(&self, span: Span) -> usize {
        self.get(span.file).line_col(span.start as usize).0
    }
}
