//! Long source lines cut down around what a diagnostic points at.
//!
//! A diagnostic shows the source lines its labels are on. A generated file can put a whole
//! network on one line of megabytes; printing it would bury the message. [`Excerpted`]
//! presents each file to the renderer with every line longer than [`MAX_SHOWN`] characters
//! cut to a window around each label end on it, `…` marking what was left out. Line
//! numbers stay those of the file, and locations (`file:line:col`) are computed in the
//! original text.

use crate::support::source::{FileId, SourceMap};
use codespan_reporting::files::{Error, Files, Location};
use std::collections::HashMap;
use std::ops::Range;

/// Lines up to this many characters are shown whole.
pub const MAX_SHOWN: usize = 120;
/// Bytes kept either side of a label's start or end on a long line.
const CONTEXT: usize = 50;
const ELLIPSIS: &str = "…";

/// A file's text with its long lines cut, and how offsets map between the two.
struct Cut {
    text: String,
    line_starts: Vec<usize>,
    /// Copied pieces, in order: (offset in the original, offset in `text`, length).
    pieces: Vec<(usize, usize, usize)>,
}

impl Cut {
    /// Cuts the long lines of `text`, keeping every offset in `points` visible.
    fn new(text: &str, line_starts: &[usize], points: &[usize]) -> Cut {
        let mut out = String::new();
        let mut pieces = Vec::new();
        let mut points = points.iter().copied().peekable();
        for (i, &start) in line_starts.iter().enumerate() {
            let end = line_starts.get(i + 1).map_or(text.len(), |&next| next - 1);
            let mut on_line = Vec::new();
            while let Some(p) = points.next_if(|&p| p <= end) {
                if p >= start {
                    on_line.push(p);
                }
            }
            let line = &text[start..end];
            let windows = if line.len() > MAX_SHOWN && line.chars().count() > MAX_SHOWN {
                windows(text, start..end, &on_line)
            } else {
                std::iter::once(start..end).collect()
            };
            for (k, w) in windows.iter().enumerate() {
                let before = if k == 0 { start } else { windows[k - 1].end };
                if w.start > before {
                    out.push_str(ELLIPSIS);
                }
                pieces.push((w.start, out.len(), w.len()));
                out.push_str(&text[w.clone()]);
            }
            if windows.last().is_some_and(|w| w.end < end) {
                out.push_str(ELLIPSIS);
            }
            if end < text.len() {
                out.push('\n');
            }
        }
        let line_starts = std::iter::once(0).chain(out.match_indices('\n').map(|(i, _)| i + 1)).collect();
        Cut { text: out, line_starts, pieces }
    }

    /// Where an original offset (one of the points the cut kept) is in the cut text.
    fn to_cut(&self, offset: usize) -> usize {
        let i = self.pieces.partition_point(|&(o, _, _)| o <= offset).saturating_sub(1);
        let (o, n, len) = self.pieces[i];
        n + offset.saturating_sub(o).min(len)
    }

    /// Where an offset in the cut text came from.
    fn to_original(&self, offset: usize) -> usize {
        let i = self.pieces.partition_point(|&(_, n, _)| n <= offset).saturating_sub(1);
        let (o, n, len) = self.pieces[i];
        o + offset.saturating_sub(n).min(len)
    }
}

/// The parts of the long line `line` to show: a window around each point, merged where
/// they overlap, or the line's start if no point is on it.
fn windows(text: &str, line: Range<usize>, points: &[usize]) -> Vec<Range<usize>> {
    let clamp = |x: usize| x.clamp(line.start, line.end);
    let mut out: Vec<Range<usize>> = Vec::new();
    let wanted: Vec<Range<usize>> = if points.is_empty() {
        std::iter::once(line.start..line.start + MAX_SHOWN).collect()
    } else {
        points.iter().map(|&p| p.saturating_sub(CONTEXT)..p + CONTEXT).collect()
    };
    for w in wanted {
        let w = text.floor_char_boundary(clamp(w.start))..text.ceil_char_boundary(clamp(w.end));
        match out.last_mut() {
            Some(last) if w.start <= last.end => last.end = last.end.max(w.end),
            _ => out.push(w),
        }
    }
    out
}

/// The sources as one diagnostic shows them: long lines cut around `points`.
pub struct Excerpted<'a> {
    sources: &'a SourceMap,
    cuts: HashMap<FileId, Cut>,
}

impl<'a> Excerpted<'a> {
    /// Cuts the files that have long lines, keeping the given offsets (label starts and
    /// ends) visible.
    pub fn new(sources: &'a SourceMap, points: &[(FileId, usize)]) -> Excerpted<'a> {
        let mut by_file: HashMap<FileId, Vec<usize>> = HashMap::new();
        for &(file, p) in points {
            by_file.entry(file).or_default().push(p);
        }
        let cuts = by_file
            .into_iter()
            .filter(|(file, _)| sources.get(*file).longest_line() > MAX_SHOWN)
            .map(|(file, mut ps)| {
                ps.sort_unstable();
                let f = sources.get(file);
                (file, Cut::new(&f.text, f.line_starts(), &ps))
            })
            .collect();
        Excerpted { sources, cuts }
    }

    /// Where an offset of the original file is in the text shown.
    pub fn map(&self, file: FileId, offset: usize) -> usize {
        self.cuts.get(&file).map_or(offset, |c| c.to_cut(offset))
    }

    fn file(&self, id: FileId) -> Result<&crate::support::source::SourceFile, Error> {
        self.sources.files().get(id.0 as usize).ok_or(Error::FileMissing)
    }
}

impl<'a> Files<'a> for Excerpted<'a> {
    type FileId = FileId;
    type Name = &'a str;
    type Source = &'a str;

    fn name(&'a self, id: FileId) -> Result<&'a str, Error> {
        Ok(self.file(id)?.name.as_str())
    }

    fn source(&'a self, id: FileId) -> Result<&'a str, Error> {
        match self.cuts.get(&id) {
            Some(c) => Ok(&c.text),
            None => Ok(self.file(id)?.text.as_str()),
        }
    }

    fn line_index(&'a self, id: FileId, byte: usize) -> Result<usize, Error> {
        let starts = match self.cuts.get(&id) {
            Some(c) => &c.line_starts,
            None => self.file(id)?.line_starts(),
        };
        Ok(starts.partition_point(|&s| s <= byte) - 1)
    }

    fn line_range(&'a self, id: FileId, line: usize) -> Result<Range<usize>, Error> {
        let (starts, len) = match self.cuts.get(&id) {
            Some(c) => (c.line_starts.as_slice(), c.text.len()),
            None => {
                let f = self.file(id)?;
                (f.line_starts(), f.text.len())
            }
        };
        let start = *starts.get(line).ok_or(Error::LineTooLarge { given: line, max: starts.len() - 1 })?;
        Ok(start..starts.get(line + 1).copied().unwrap_or(len))
    }

    /// The location in the original text, so that columns are the file's own.
    fn location(&'a self, id: FileId, byte: usize) -> Result<Location, Error> {
        let original = self.cuts.get(&id).map_or(byte, |c| c.to_original(byte));
        let (line_number, column_number) = self.file(id)?.line_col(original);
        Ok(Location { line_number, column_number })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_keep_a_window_around_each_point() {
        let line = format!("{}ERROR{}", "a".repeat(1000), "b".repeat(1000));
        let text = format!("short\n{line}\n{}\nend", "c".repeat(500));
        let starts: Vec<usize> =
            std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        let at = 6 + 1000;
        let cut = Cut::new(&text, &starts, &[at, at + 5]);
        let lines: Vec<&str> = cut.text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], "short");
        assert!(lines[1].starts_with('…') && lines[1].ends_with('…') && lines[1].contains("ERROR"));
        assert!(lines[1].chars().count() <= 2 * CONTEXT + 5 + 2, "{}", lines[1]);
        assert_eq!(lines[2].chars().count(), MAX_SHOWN + 1);
        assert_eq!(lines[3], "end");
        let start = cut.to_cut(at);
        assert_eq!(&cut.text[start..start + 5], "ERROR");
        assert_eq!(cut.to_original(start), at);
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let text = "é".repeat(300);
        let cut = Cut::new(&text, &[0], &[300]);
        assert!(cut.text.starts_with('…') && cut.text.ends_with('…'));
        assert_eq!(cut.to_original(cut.to_cut(300)), 300);
    }
}
