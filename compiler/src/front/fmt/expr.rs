//! Expressions: flat (one-line) rendering where possible, broken layouts where not.

use super::WIDTH;
use super::printer::Printer;
use crate::front::syntax::ast::*;

/// Binding strength of an expression's outermost operator (higher binds tighter).
fn prec(e: &Expr) -> u8 {
    match &e.kind {
        ExprKind::Pipe { .. } => 0,
        ExprKind::Binary(op, ..) => op.precedence(),
        ExprKind::Unary(op, _) => op.precedence(),
        _ => 10,
    }
}

impl Printer<'_> {
    /// Prints `e`, parenthesised if it binds looser than `min`.
    pub fn expr(&mut self, e: &Expr, min: u8) {
        if let Some(s) = self.flat(e, min)
            && (self.col() + s.chars().count() <= WIDTH || !self.breakable(e))
        {
            self.write(&s);
            return;
        }
        let parens = prec(e) < min;
        if parens {
            self.write("(");
        }
        match &e.kind {
            ExprKind::Pipe { head, stages } => {
                let col = self.col();
                self.expr(head, 1);
                self.stages(stages, col);
            }
            ExprKind::Call(c) => self.call(c, false),
            ExprKind::List(items) => {
                let args: Vec<(Option<&Ident>, &Expr)> = items.iter().map(|i| (None, i)).collect();
                self.broken_list("[", &args, "]", e.span.end as usize);
            }
            ExprKind::If { arms, otherwise } => {
                for (i, (cond, body)) in arms.iter().enumerate() {
                    self.write(if i == 0 { "if " } else { " else if " });
                    self.expr(cond, 0);
                    self.write(" ");
                    self.body(body);
                }
                self.write(" else ");
                self.body(otherwise);
            }
            ExprKind::Binary(op, l, r) => {
                self.expr(l, op.precedence());
                self.write(&format!(" {} ", op.symbol()));
                self.expr(r, op.precedence() + 1);
            }
            ExprKind::Unary(op, x) => {
                self.write(if *op == UnOp::Neg { "-" } else { "not " });
                self.expr(x, op.precedence() + 1);
            }
            _ => {
                let s = self.flat(e, 0).unwrap_or_default();
                self.write(&s);
            }
        }
        if parens {
            self.write(")");
        }
    }

    /// Whether breaking `e` across lines can make it shorter (a long pipeline keeps the
    /// user's breaks; a long name cannot break at all).
    fn breakable(&self, e: &Expr) -> bool {
        match &e.kind {
            ExprKind::Call(c) => !c.args.is_empty(),
            ExprKind::List(items) => !items.is_empty(),
            ExprKind::If { .. } => true,
            ExprKind::Binary(_, l, r) => self.breakable(l) || self.breakable(r),
            ExprKind::Unary(_, x) => self.breakable(x),
            _ => false,
        }
    }

    /// Pipeline stages after the head; a stage the user began on a new line starts a new
    /// line aligned at `col`, the pipeline's first column.
    fn stages(&mut self, stages: &[Stage], col: usize) {
        let mut prev_end: Option<usize> = None;
        for s in stages {
            if s.newline_before {
                if let Some(end) = prev_end {
                    self.trailing(end);
                }
                self.comments_before(s.span.start as usize, col);
                self.newline_at(col);
                self.write("|> ");
            } else {
                self.write(" |> ");
            }
            self.stage(s);
            prev_end = Some(s.span.end as usize);
        }
    }

    fn stage(&mut self, s: &Stage) {
        match &s.kind {
            StageKind::Call(c) => self.call(c, true),
            StageKind::Group(inner) => {
                self.write("(");
                let col = self.col();
                for (i, g) in inner.iter().enumerate() {
                    if i == 0 {
                        self.stage(g);
                    } else {
                        self.stages(std::slice::from_ref(g), col);
                    }
                }
                self.write(")");
            }
        }
        if let Some(r) = &s.repeat {
            self.write(" * ");
            match &r.kind {
                ExprKind::Int { .. } | ExprKind::Name(_) => self.expr(r, 0),
                _ => {
                    self.write("(");
                    self.expr(r, 0);
                    self.write(")");
                }
            }
        }
    }

    /// A call. As a pipeline stage it stays on one line unless a comment forces a break;
    /// elsewhere it breaks into one argument per line when too wide.
    fn call(&mut self, c: &Call, stage: bool) {
        if c.args.is_empty() && (stage || !c.parens) {
            self.write(&c.name.name);
            return;
        }
        if let Some(s) = self.flat_call(c)
            && (stage || self.col() + s.chars().count() <= WIDTH)
        {
            self.write(&s);
            return;
        }
        let args: Vec<(Option<&Ident>, &Expr)> = c.args.iter().map(|a| (a.name.as_ref(), &a.value)).collect();
        self.broken_list(&format!("{}(", c.name.name), &args, ")", c.span.end as usize);
    }

    /// `open` + one element per line (each followed by a comma) + `close`.
    fn broken_list(&mut self, open: &str, items: &[(Option<&Ident>, &Expr)], close: &str, end: usize) {
        let base = self.line_indent();
        self.write(open);
        for (name, value) in items {
            let start = name.map_or(value.span.start, |n| n.span.start) as usize;
            if self.blank_line_before(start) {
                self.blank();
            }
            self.comments_before(start, base + 4);
            self.newline_at(base + 4);
            if let Some(n) = name {
                self.write(&format!("{}: ", n.name));
            }
            self.expr(value, 0);
            self.write(",");
            self.trailing(value.span.end as usize);
        }
        self.comments_before(end.saturating_sub(1), base + 4);
        self.newline_at(base);
        self.write(close);
    }

    /// One-line rendering, or `None` when `e` must span lines (it holds a comment, a
    /// pipeline the user broke, or an `if` with statements).
    pub fn flat(&self, e: &Expr, min: u8) -> Option<String> {
        if self.has_comment_in(e.span.start as usize, e.span.end as usize) {
            return None;
        }
        let s = match &e.kind {
            ExprKind::Int { text, .. } | ExprKind::Float { text, .. } => text.clone(),
            ExprKind::Bool(b) => b.to_string(),
            ExprKind::Str(s) => format!("\"{s}\""),
            ExprKind::Name(id) => id.name.clone(),
            ExprKind::List(items) => {
                let parts: Option<Vec<String>> = items.iter().map(|i| self.flat(i, 0)).collect();
                format!("[{}]", parts?.join(", "))
            }
            ExprKind::Call(c) => {
                if c.args.is_empty() && !c.parens {
                    c.name.name.clone()
                } else {
                    self.flat_call(c)?
                }
            }
            ExprKind::Unary(op, x) => {
                let inner = self.flat(x, op.precedence() + 1)?;
                if *op == UnOp::Neg { format!("-{inner}") } else { format!("not {inner}") }
            }
            ExprKind::Binary(op, l, r) => {
                format!(
                    "{} {} {}",
                    self.flat(l, op.precedence())?,
                    op.symbol(),
                    self.flat(r, op.precedence() + 1)?
                )
            }
            ExprKind::If { arms, otherwise } => {
                let flat_body = |b: &Body| -> Option<String> {
                    if b.stmts.is_empty() {
                        Some(format!("{{ {} }}", self.flat(&b.result, 0)?))
                    } else {
                        None
                    }
                };
                let mut s = String::new();
                for (i, (cond, body)) in arms.iter().enumerate() {
                    s.push_str(if i == 0 { "if " } else { " else if " });
                    s.push_str(&self.flat(cond, 0)?);
                    s.push(' ');
                    s.push_str(&flat_body(body)?);
                }
                s.push_str(" else ");
                s.push_str(&flat_body(otherwise)?);
                s
            }
            ExprKind::Pipe { head, stages } => {
                let mut s = self.flat(head, 1)?;
                for st in stages {
                    if st.newline_before {
                        return None;
                    }
                    s.push_str(" |> ");
                    s.push_str(&self.flat_stage(st)?);
                }
                s
            }
        };
        Some(if prec(e) < min { format!("({s})") } else { s })
    }

    fn flat_stage(&self, s: &Stage) -> Option<String> {
        let mut out = match &s.kind {
            StageKind::Call(c) if c.args.is_empty() => c.name.name.clone(),
            StageKind::Call(c) => self.flat_call(c)?,
            StageKind::Group(inner) => {
                let mut parts = Vec::new();
                for (i, g) in inner.iter().enumerate() {
                    if i > 0 && g.newline_before {
                        return None;
                    }
                    parts.push(self.flat_stage(g)?);
                }
                format!("({})", parts.join(" |> "))
            }
        };
        if let Some(r) = &s.repeat {
            let count = match &r.kind {
                ExprKind::Int { .. } | ExprKind::Name(_) => self.flat(r, 0)?,
                _ => format!("({})", self.flat(r, 0)?),
            };
            out = format!("{out} * {count}");
        }
        Some(out)
    }

    fn flat_call(&self, c: &Call) -> Option<String> {
        if self.has_comment_in(c.span.start as usize, c.span.end as usize) {
            return None;
        }
        let mut parts = Vec::new();
        for a in &c.args {
            let v = self.flat(&a.value, 0)?;
            parts.push(match &a.name {
                Some(n) => format!("{}: {v}", n.name),
                None => v,
            });
        }
        Some(format!("{}({})", c.name.name, parts.join(", ")))
    }
}
