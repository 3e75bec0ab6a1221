//! Diagnostics: what went wrong, where, and what to do about it.
//!
//! Every stage reports problems as [`Diagnostic`]s and keeps going where it can, so one run
//! shows every independent error in a file. Rendering (rustc-style, with the source line,
//! underlines, secondary labels and `help` lines) happens in [`render`]; the library never
//! prints.

use crate::support::excerpt::Excerpted;
use crate::support::source::{SourceMap, Span};
use codespan_reporting::diagnostic as cs;
use codespan_reporting::term;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A message attached to a span of source.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Label {
    pub span: Span,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Diagnostic {
    pub severity: Severity,
    pub message: String,
    /// Where the problem is; `None` only for problems with no source (an unreadable file).
    pub primary: Option<Label>,
    /// Where the other party to the problem came from (the other operand of an `add`, the
    /// first definition of a duplicate name, the block call that led here).
    pub secondary: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            message: message.into(),
            primary: None,
            secondary: Vec::new(),
            notes: Vec::new(),
            help: None,
        }
    }

    pub fn warning(message: impl Into<String>) -> Diagnostic {
        Diagnostic { severity: Severity::Warning, ..Diagnostic::error(message) }
    }

    pub fn at(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.primary = Some(Label { span, message: label.into() });
        self
    }

    pub fn with_secondary(mut self, span: Span, label: impl Into<String>) -> Diagnostic {
        self.secondary.push(Label { span, message: label.into() });
        self
    }

    pub fn with_note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn with_help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help = Some(help.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Label starts and ends, which an excerpt of a long line must keep in view.
    fn points(&self) -> Vec<(crate::support::source::FileId, usize)> {
        let labels = self.primary.iter().chain(&self.secondary);
        labels
            .flat_map(|l| [(l.span.file, l.span.start as usize), (l.span.file, l.span.end as usize)])
            .collect()
    }

    /// In codespan's terms, with spans as `shown` presents the text.
    fn to_codespan(&self, shown: &Excerpted<'_>) -> cs::Diagnostic<crate::support::source::FileId> {
        let range = |s: Span| shown.map(s.file, s.start as usize)..shown.map(s.file, s.end as usize);
        let severity = match self.severity {
            Severity::Error => cs::Severity::Error,
            Severity::Warning => cs::Severity::Warning,
        };
        let mut labels = Vec::new();
        if let Some(p) = &self.primary {
            labels.push(cs::Label::primary(p.span.file, range(p.span)).with_message(&p.message));
        }
        for s in &self.secondary {
            labels.push(cs::Label::secondary(s.span.file, range(s.span)).with_message(&s.message));
        }
        let mut notes: Vec<String> = self.notes.iter().map(|n| format!("note: {n}")).collect();
        if let Some(h) = &self.help {
            notes.push(format!("help: {h}"));
        }
        cs::Diagnostic::new(severity).with_message(&self.message).with_labels(labels).with_notes(notes)
    }
}

/// Whether rendered diagnostics carry terminal colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Color {
    Never,
    Always,
}

fn config() -> term::Config {
    term::Config { start_context_lines: 1, end_context_lines: 1, ..term::Config::default() }
}

/// Renders diagnostics the way the `nnc` command prints them. Source lines longer than
/// [`MAX_SHOWN`](crate::support::excerpt::MAX_SHOWN) characters are cut around the labels.
pub fn render(sources: &SourceMap, diagnostics: &[Diagnostic], color: Color) -> String {
    let config = config();
    match color {
        Color::Never => {
            let mut out = String::new();
            for d in diagnostics {
                let shown = Excerpted::new(sources, &d.points());
                // Writing to a String cannot fail, and every span was made from these sources.
                let _ = term::emit_to_string(&mut out, &config, &shown, &d.to_codespan(&shown));
                out.push('\n');
            }
            out
        }
        Color::Always => {
            let mut buffer = term::termcolor::Buffer::ansi();
            for d in diagnostics {
                let shown = Excerpted::new(sources, &d.points());
                let _ = term::emit_to_write_style(&mut buffer, &config, &shown, &d.to_codespan(&shown));
                let _ = std::io::Write::write_all(&mut buffer, b"\n");
            }
            String::from_utf8_lossy(buffer.as_slice()).into_owned()
        }
    }
}

/// Collects diagnostics, dropping exact repeats (a block instantiated 36 times reports an
/// error in its body once).
#[derive(Debug, Default)]
pub struct Diagnostics {
    list: Vec<Diagnostic>,
    seen: std::collections::HashSet<(Option<Span>, String)>,
}

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        if self.seen.insert((d.primary.as_ref().map(|l| l.span), d.message.clone())) {
            self.list.push(d);
        }
    }

    pub fn extend(&mut self, ds: impl IntoIterator<Item = Diagnostic>) {
        for d in ds {
            self.push(d);
        }
    }

    pub fn has_errors(&self) -> bool {
        self.list.iter().any(Diagnostic::is_error)
    }

    pub fn into_vec(self) -> Vec<Diagnostic> {
        self.list
    }
}
