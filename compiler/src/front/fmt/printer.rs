//! The formatter's output buffer, comment placement, and the layout of items and bodies.

use super::comments::{Comment, extract};
use crate::front::syntax::ast::*;

pub fn print(file: &File, src: &str) -> String {
    let mut p = Printer { src, comments: extract(src), next: 0, out: String::new() };
    for (i, item) in file.items.iter().enumerate() {
        if i > 0 {
            p.blank();
        }
        p.comments_before(item.span().start as usize, 0);
        p.newline_at(0);
        p.item(item);
        p.trailing(item.span().end as usize);
    }
    p.comments_before(usize::MAX, 0);
    let mut out = align_trailing_comments(p.out.trim_end());
    if !out.is_empty() {
        out.push('\n');
    }
    out
}

/// Marks where a trailing comment starts in the output, until alignment replaces it.
const MARK: char = '\u{1}';

/// In each paragraph (run of non-empty lines), starts every trailing comment two columns
/// after the longest line of code that carries one, as gofmt does.
fn align_trailing_comments(text: &str) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let mut j = i;
        while j < lines.len() && !lines[j].trim().is_empty() {
            j += 1;
        }
        let para = &lines[i..j.max(i + 1).min(lines.len())];
        let code_width = |l: &str| l.split(MARK).next().unwrap_or("").trim_end().chars().count();
        let col = para.iter().filter(|l| l.contains(MARK)).map(|l| code_width(l)).max().unwrap_or(0) + 2;
        for l in para {
            match l.split_once(MARK) {
                Some((code, comment)) => {
                    let code = code.trim_end();
                    out.push(format!("{code}{}{comment}", " ".repeat(col - code.chars().count())));
                }
                None => out.push(l.to_string()),
            }
        }
        i = j.max(i + 1);
    }
    out.join("\n")
}

pub(super) struct Printer<'s> {
    pub src: &'s str,
    pub comments: Vec<Comment>,
    /// The first comment not yet printed.
    pub next: usize,
    pub out: String,
}

impl Printer<'_> {
    pub fn write(&mut self, s: &str) {
        self.out.push_str(s);
    }

    /// Column of the end of the output (0-based, in characters).
    pub fn col(&self) -> usize {
        let start = self.out.rfind('\n').map_or(0, |i| i + 1);
        self.out[start..].chars().count()
    }

    /// Indentation of the current output line.
    pub fn line_indent(&self) -> usize {
        let start = self.out.rfind('\n').map_or(0, |i| i + 1);
        self.out[start..].chars().take_while(|c| *c == ' ').count()
    }

    fn at_line_start(&self) -> bool {
        let start = self.out.rfind('\n').map_or(0, |i| i + 1);
        self.out[start..].trim().is_empty()
    }

    /// Ends the current line (if it has content) and indents the next to `col`.
    pub fn newline_at(&mut self, col: usize) {
        if self.at_line_start() {
            let start = self.out.rfind('\n').map_or(0, |i| i + 1);
            self.out.truncate(start);
        } else {
            let trimmed = self.out.trim_end_matches(' ').len();
            self.out.truncate(trimmed);
            self.out.push('\n');
        }
        self.out.push_str(&" ".repeat(col));
    }

    /// Ensures one empty line before whatever comes next (none at the start of the file
    /// or right after an opening brace).
    pub fn blank(&mut self) {
        let trimmed = self.out.trim_end();
        // The code of the last line, without a comment trailing it.
        let last = trimmed.rsplit('\n').next().unwrap_or("");
        let code = last.split(MARK).next().unwrap_or("").trim_end();
        if trimmed.is_empty() || code.ends_with('{') || code.ends_with('(') || code.ends_with('[') {
            return;
        }
        self.out.truncate(trimmed.len());
        self.out.push_str("\n\n");
    }

    /// Whether the source has an empty line between `pos` and the code before it.
    pub fn blank_line_before(&self, pos: usize) -> bool {
        let before = &self.src[..pos.min(self.src.len())];
        let gap = &before[before.trim_end().len()..];
        gap.matches('\n').count() >= 2
    }

    /// Prints the comments that start before `pos` on lines of their own at `col`; a
    /// comment that trailed code in the source trails the current line.
    pub fn comments_before(&mut self, pos: usize, col: usize) {
        while let Some(c) = self.comments.get(self.next).filter(|c| c.start < pos) {
            let (text, own_line, start) = (c.text.clone(), c.own_line, c.start);
            self.next += 1;
            if own_line || self.at_line_start() {
                if self.blank_line_before(start) {
                    self.blank();
                }
                self.newline_at(col);
                self.write(&text);
            } else {
                self.write(&format!("{MARK}"));
                self.write(&text);
            }
            self.newline_at(col);
        }
    }

    /// After code that ended at source position `end`: a comment on the same source line
    /// goes at the end of the current output line.
    pub fn trailing(&mut self, end: usize) {
        let Some(c) = self.comments.get(self.next) else { return };
        let between = self.src.get(end..c.start).unwrap_or("\n");
        if !c.own_line && between.trim().is_empty() && !between.contains('\n') {
            let text = c.text.clone();
            self.next += 1;
            self.write(&format!("{MARK}"));
            self.write(&text);
        }
    }

    /// The position just after the first `{` at or after `pos` (only whitespace and
    /// comments can come between).
    fn after_brace(&self, pos: usize) -> usize {
        let mut in_comment = false;
        for (i, c) in self.src[pos..].char_indices() {
            match c {
                '\n' => in_comment = false,
                '#' => in_comment = true,
                '{' if !in_comment => return pos + i + 1,
                _ => {}
            }
        }
        pos
    }

    /// Whether any comment lies inside `span` (such code cannot go on one line).
    pub fn has_comment_in(&self, start: usize, end: usize) -> bool {
        let i = self.comments.partition_point(|c| c.start < start);
        self.comments.get(i).is_some_and(|c| c.start < end)
    }

    fn item(&mut self, item: &Item) {
        match item {
            Item::Include(i) => self.write(&format!("include \"{}\"", i.path)),
            Item::Block(b) => {
                self.write(&format!("block {}(", b.name.name));
                for (i, p) in b.params.iter().enumerate() {
                    if i > 0 {
                        self.write(", ");
                    }
                    self.write(&p.name.name);
                    if let Some(d) = &p.default {
                        self.write(" = ");
                        self.expr(d, 0);
                    }
                }
                self.write(") ");
                self.body(&b.body);
            }
            Item::Network(n) => {
                self.write(&format!("network {}(", n.name.name));
                for (i, input) in n.inputs.iter().enumerate() {
                    if i > 0 {
                        self.write(", ");
                    }
                    self.write(&format!("{}: ", input.name.name));
                    match &input.ty {
                        InputType::Tensor { dims, .. } => {
                            self.write("[");
                            for (j, d) in dims.iter().enumerate() {
                                if j > 0 {
                                    self.write(", ");
                                }
                                self.expr(d, 0);
                            }
                            self.write("]");
                        }
                        InputType::Seq { len, item, size, .. } => {
                            self.write("seq[");
                            self.expr(len, 0);
                            self.write(&format!("] of {}(", item.name));
                            self.expr(size, 0);
                            self.write(")");
                        }
                    }
                }
                self.write(") ");
                self.body(&n.body);
            }
            Item::Train(t) => {
                self.write(&format!("train {} {{", t.network.name));
                self.trailing(self.after_brace(t.network.span.end as usize));
                let key_width = t.settings.iter().map(|s| s.key.name.len()).max().unwrap_or(0);
                for s in &t.settings {
                    let start = s.key.span.start as usize;
                    if self.blank_line_before(start) {
                        self.blank();
                    }
                    self.comments_before(start, 4);
                    self.newline_at(4);
                    self.write(&format!("{:<key_width$} = ", s.key.name));
                    self.expr(&s.value, 0);
                    self.trailing(s.value.span.end as usize);
                }
                self.comments_before(t.span.end as usize, 4);
                self.newline_at(0);
                self.write("}");
            }
        }
    }

    /// `{ statements; result }`, indented one level deeper than the current line.
    pub fn body(&mut self, body: &Body) {
        let base = self.line_indent();
        let inner = base + 4;
        self.write("{");
        self.trailing(body.span.start as usize + 1);
        for stmt in &body.stmts {
            self.line_element(stmt.span().start as usize, inner);
            match stmt {
                Stmt::Let { name, value, .. } => {
                    self.write(&format!("let {} = ", name.name));
                    self.expr(value, 0);
                }
                Stmt::Init { value, .. } => {
                    self.write("init = ");
                    self.expr(value, 0);
                }
            }
            self.trailing(stmt.span().end as usize);
        }
        self.line_element(body.result.span.start as usize, inner);
        self.expr(&body.result, 0);
        self.trailing(body.result.span.end as usize);
        self.comments_before(body.span.end as usize, inner);
        self.newline_at(base);
        self.write("}");
    }

    /// Starts a line-level element at source position `start`: keeps one blank line if
    /// the source had one, places the comments before it, and indents.
    fn line_element(&mut self, start: usize, col: usize) {
        if self.blank_line_before(start) {
            self.blank();
        }
        self.comments_before(start, col);
        self.newline_at(col);
    }
}
