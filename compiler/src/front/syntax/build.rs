//! pest's parse tree to the [`ast`](super::ast). The grammar guarantees the tree's shape,
//! so the only errors here are about values: integers that do not fit, operator chains
//! too long to evaluate safely.

use super::ast::*;
use super::{Rule, span};
use crate::support::diagnostic::Diagnostic;
use crate::support::source::{FileId, Span};
use pest::iterators::{Pair, Pairs};
use pest::pratt_parser::{Assoc, Op, PrattParser};

/// Longest chain of binary operators in one expression (`1 + 1 + ... + 1`).
const MAX_OPERATORS: usize = 256;

pub fn file(pairs: Pairs<'_, Rule>, text: &str, file: FileId, base: usize) -> (File, Vec<Diagnostic>) {
    let mut b = Builder {
        text,
        comments: comment_ranges(text, base),
        file,
        base,
        diagnostics: Vec::new(),
        pratt: PrattParser::new()
            .op(Op::infix(Rule::or, Assoc::Left))
            .op(Op::infix(Rule::and, Assoc::Left))
            .op(Op::prefix(Rule::not))
            .op(Op::infix(Rule::eq, Assoc::Left)
                | Op::infix(Rule::ne, Assoc::Left)
                | Op::infix(Rule::lt, Assoc::Left)
                | Op::infix(Rule::le, Assoc::Left)
                | Op::infix(Rule::gt, Assoc::Left)
                | Op::infix(Rule::ge, Assoc::Left))
            .op(Op::infix(Rule::add, Assoc::Left) | Op::infix(Rule::sub, Assoc::Left))
            .op(Op::infix(Rule::mul, Assoc::Left)
                | Op::infix(Rule::div, Assoc::Left)
                | Op::infix(Rule::rem, Assoc::Left))
            .op(Op::prefix(Rule::neg)),
    };
    let mut items = Vec::new();
    for pair in pairs.flat_map(|file| file.into_inner()) {
        if pair.as_rule() != Rule::EOI {
            items.push(b.item(pair));
        }
    }
    (File { id: file, items }, b.diagnostics)
}

struct Builder<'t> {
    text: &'t str,
    /// Where the comments are, so that spans can leave them out.
    comments: Vec<(usize, usize)>,
    file: FileId,
    base: usize,
    diagnostics: Vec<Diagnostic>,
    pratt: PrattParser<Rule>,
}

impl Builder<'_> {
    /// The pair's span without the whitespace and comments that pest's implicit skipping
    /// leaves at the end of rules ending in an optional part (`stage`, `expr`, ...).
    fn span(&self, p: &Pair<'_, Rule>) -> Span {
        let s = span(self.file, self.base, p.as_span());
        Span { end: trim_end(self.text, &self.comments, s.start as usize, s.end as usize) as u32, ..s }
    }

    fn item(&mut self, pair: Pair<'_, Rule>) -> Item {
        let sp = self.span(&pair);
        let rule = pair.as_rule();
        let mut inner = children(pair);
        match rule {
            Rule::include => {
                let s = inner.next().expect("grammar: include has a string");
                let text = s.as_str();
                Item::Include(Include {
                    path: text[1..text.len() - 1].to_string(),
                    path_span: self.span(&s),
                    span: sp,
                })
            }
            Rule::block_def => {
                let name = self.ident(inner.next().expect("grammar: block name"));
                let params = inner
                    .next()
                    .expect("grammar: block params")
                    .into_inner()
                    .map(|p| {
                        let mut it = p.into_inner();
                        let name = self.ident(it.next().expect("grammar: param name"));
                        let default = it.next().map(|e| self.expr(e));
                        Param { name, default }
                    })
                    .collect();
                let body = self.body(inner.next().expect("grammar: block body"));
                Item::Block(BlockDef { name, params, body, span: sp })
            }
            Rule::network_def => {
                let name = self.ident(inner.next().expect("grammar: network name"));
                let inputs = inner
                    .next()
                    .expect("grammar: network inputs")
                    .into_inner()
                    .map(|p| self.input(p))
                    .collect();
                let body = self.body(inner.next().expect("grammar: network body"));
                Item::Network(NetworkDef { name, inputs, body, span: sp })
            }
            Rule::train_def => {
                let network = self.ident(inner.next().expect("grammar: train network"));
                let settings = inner
                    .map(|s| {
                        let mut it = s.into_inner();
                        let key = self.ident(it.next().expect("grammar: setting key"));
                        let value = self.expr(it.next().expect("grammar: setting value"));
                        Setting { key, value }
                    })
                    .collect();
                Item::Train(TrainDef { network, settings, span: sp })
            }
            _ => unreachable!("grammar: items are include, block, network or train"),
        }
    }

    fn input(&mut self, pair: Pair<'_, Rule>) -> InputDecl {
        let sp = self.span(&pair);
        let mut it = children(pair);
        let name = self.ident(it.next().expect("grammar: input name"));
        let ty = it.next().expect("grammar: input type");
        let ty_span = self.span(&ty);
        let ty = match ty.as_rule() {
            Rule::tensor_type => {
                InputType::Tensor { dims: ty.into_inner().map(|e| self.expr(e)).collect(), span: ty_span }
            }
            Rule::seq_type => {
                let mut it = children(ty);
                let len = self.expr(it.next().expect("grammar: seq length"));
                let mut item = it.next().expect("grammar: seq item").into_inner();
                let item_name = self.ident(item.next().expect("grammar: seq item name"));
                let size = self.expr(item.next().expect("grammar: seq item size"));
                InputType::Seq { len: Box::new(len), item: item_name, size: Box::new(size), span: ty_span }
            }
            _ => unreachable!("grammar: input types are tensor or seq"),
        };
        InputDecl { name, ty, span: sp }
    }

    fn ident(&self, pair: Pair<'_, Rule>) -> Ident {
        Ident { name: pair.as_str().to_string(), span: self.span(&pair) }
    }

    fn body(&mut self, pair: Pair<'_, Rule>) -> Body {
        let sp = self.span(&pair);
        let mut stmts = Vec::new();
        let mut result = None;
        for p in pair.into_inner() {
            let psp = self.span(&p);
            match p.as_rule() {
                Rule::let_stmt => {
                    let mut it = children(p);
                    let name = self.ident(it.next().expect("grammar: let name"));
                    let value = self.expr(it.next().expect("grammar: let value"));
                    stmts.push(Stmt::Let { name, value, span: psp });
                }
                Rule::init_stmt => {
                    let value = self.expr(children(p).next().expect("grammar: init value"));
                    stmts.push(Stmt::Init { value, span: psp });
                }
                Rule::expr => result = Some(self.expr(p)),
                _ => unreachable!("grammar: a body holds statements and an expression"),
            }
        }
        Body { stmts, result: Box::new(result.expect("grammar: a body ends with an expression")), span: sp }
    }

    fn expr(&mut self, pair: Pair<'_, Rule>) -> Expr {
        debug_assert_eq!(pair.as_rule(), Rule::expr);
        let sp = self.span(&pair);
        let mut it = pair.into_inner();
        let head = self.operand(it.next().expect("grammar: expression operand"));
        let mut stages = Vec::new();
        let mut prev_end = head.span.end as usize;
        while let Some(pipe) = it.next() {
            let newline = self.newline_between(prev_end, self.span(&pipe).start as usize);
            let stage = self.stage(it.next().expect("grammar: a stage follows |>"), newline);
            prev_end = stage.span.end as usize;
            stages.push(stage);
        }
        if stages.is_empty() {
            head
        } else {
            Expr { kind: ExprKind::Pipe { head: Box::new(head), stages }, span: sp }
        }
    }

    fn newline_between(&self, start: usize, end: usize) -> bool {
        self.text.get(start..end).is_some_and(|s| s.contains('\n'))
    }

    fn stage(&mut self, pair: Pair<'_, Rule>, newline_before: bool) -> Stage {
        let sp = self.span(&pair);
        let mut it = pair.into_inner();
        let op = it.next().expect("grammar: stage operation");
        let kind = match op.as_rule() {
            Rule::call => StageKind::Call(self.call(op)),
            Rule::ident => {
                let name = self.ident(op);
                StageKind::Call(Call { span: name.span, name, args: Vec::new(), parens: false })
            }
            Rule::group => {
                let mut stages = Vec::new();
                let mut prev_end = self.span(&op).start as usize + 1;
                for p in op.into_inner() {
                    if p.as_rule() == Rule::pipe {
                        continue;
                    }
                    let newline = self.newline_between(prev_end, self.span(&p).start as usize);
                    let s = self.stage(p, newline && !stages.is_empty());
                    prev_end = s.span.end as usize;
                    stages.push(s);
                }
                StageKind::Group(stages)
            }
            _ => unreachable!("grammar: a stage is a call, a name or a group"),
        };
        let repeat = it.nth(1).map(|count| self.count(count));
        Stage { kind, repeat, newline_before, span: sp }
    }

    fn count(&mut self, pair: Pair<'_, Rule>) -> Expr {
        match pair.as_rule() {
            Rule::expr => self.expr(pair),
            _ => self.primary(pair),
        }
    }

    fn call(&mut self, pair: Pair<'_, Rule>) -> Call {
        let sp = self.span(&pair);
        let mut it = pair.into_inner();
        let name = self.ident(it.next().expect("grammar: call name"));
        let args = it
            .next()
            .expect("grammar: call args")
            .into_inner()
            .map(|a| match a.as_rule() {
                Rule::named_arg => {
                    let mut it = a.into_inner();
                    let name = self.ident(it.next().expect("grammar: arg name"));
                    let value = self.expr(it.next().expect("grammar: arg value"));
                    Arg { name: Some(name), value }
                }
                _ => Arg { name: None, value: self.expr(a) },
            })
            .collect();
        Call { name, args, parens: true, span: sp }
    }

    fn operand(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let sp = self.span(&pair);
        let pairs = pair.into_inner();
        let operators = pairs.clone().filter(|p| is_infix(p.as_rule())).count();
        if operators > MAX_OPERATORS {
            self.diagnostics.push(
                Diagnostic::error(format!(
                    "expression has {operators} operators; the limit is {MAX_OPERATORS}"
                ))
                .at(sp, "this expression is too long")
                .with_help("split it with `let` bindings"),
            );
            return Expr { kind: ExprKind::Int { value: 0, text: "0".into() }, span: sp };
        }
        // The Pratt parser's closures cannot borrow `self` mutably all at once, so the
        // primaries are built first and handed over in order.
        let mut primaries: Vec<Expr> = pairs
            .clone()
            .filter(|p| !is_infix(p.as_rule()) && !matches!(p.as_rule(), Rule::neg | Rule::not))
            .map(|p| self.primary(p))
            .collect::<Vec<_>>();
        primaries.reverse();
        let file = self.file;
        let base = self.base;
        self.pratt
            .map_primary(|_| primaries.pop().expect("one primary per operand"))
            .map_prefix(|op, rhs| {
                let op_span = span(file, base, op.as_span());
                let unop = if op.as_rule() == Rule::neg { UnOp::Neg } else { UnOp::Not };
                Expr { span: op_span.to(rhs.span), kind: ExprKind::Unary(unop, Box::new(rhs)) }
            })
            .map_infix(|lhs, op, rhs| {
                let binop = match op.as_rule() {
                    Rule::or => BinOp::Or,
                    Rule::and => BinOp::And,
                    Rule::eq => BinOp::Eq,
                    Rule::ne => BinOp::Ne,
                    Rule::lt => BinOp::Lt,
                    Rule::le => BinOp::Le,
                    Rule::gt => BinOp::Gt,
                    Rule::ge => BinOp::Ge,
                    Rule::add => BinOp::Add,
                    Rule::sub => BinOp::Sub,
                    Rule::mul => BinOp::Mul,
                    Rule::div => BinOp::Div,
                    _ => BinOp::Rem,
                };
                Expr {
                    span: lhs.span.to(rhs.span),
                    kind: ExprKind::Binary(binop, Box::new(lhs), Box::new(rhs)),
                }
            })
            .parse(pairs)
    }

    fn primary(&mut self, pair: Pair<'_, Rule>) -> Expr {
        let sp = self.span(&pair);
        let kind = match pair.as_rule() {
            Rule::expr => return self.expr(pair),
            Rule::integer => {
                let text = pair.as_str().to_string();
                let value = match text.replace('_', "").parse::<i64>() {
                    Ok(v) => v,
                    Err(_) => {
                        self.diagnostics.push(
                            Diagnostic::error("integer is too large")
                                .at(sp, format!("the largest integer is {}", i64::MAX)),
                        );
                        0
                    }
                };
                ExprKind::Int { value, text }
            }
            Rule::float => {
                let text = pair.as_str().to_string();
                let value = text.replace('_', "").parse::<f64>().unwrap_or(f64::INFINITY);
                if !value.is_finite() {
                    self.diagnostics.push(
                        Diagnostic::error("number is too large").at(sp, "does not fit in a 64-bit float"),
                    );
                }
                ExprKind::Float { value, text }
            }
            Rule::boolean => ExprKind::Bool(pair.as_str() == "true"),
            Rule::string => {
                let s = pair.as_str();
                ExprKind::Str(s[1..s.len() - 1].to_string())
            }
            Rule::ident => ExprKind::Name(self.ident(pair)),
            Rule::call => ExprKind::Call(self.call(pair)),
            Rule::list => ExprKind::List(pair.into_inner().map(|e| self.expr(e)).collect()),
            Rule::if_expr => {
                let mut parts: Vec<Pair<'_, Rule>> = children(pair).collect();
                let otherwise = self.body(parts.pop().expect("grammar: if has an else body"));
                let mut arms = Vec::new();
                let mut it = parts.into_iter();
                while let (Some(c), Some(b)) = (it.next(), it.next()) {
                    arms.push((self.expr(c), self.body(b)));
                }
                ExprKind::If { arms, otherwise }
            }
            r => unreachable!("grammar: unexpected primary {r:?}"),
        };
        Expr { kind, span: sp }
    }
}

/// The end of the last token in `text[start..end]`, skipping trailing whitespace and
/// the `comments` (sorted byte ranges) among it. Looks only at what it skips, so the
/// spans of a long line cost no more than their tokens.
fn trim_end(text: &str, comments: &[(usize, usize)], start: usize, mut end: usize) -> usize {
    loop {
        end = start + text[start..end].trim_end().len();
        let before = comments.partition_point(|&(c, _)| c < end);
        match before.checked_sub(1).map(|i| comments[i]) {
            Some((c, c_end)) if c >= start && end <= c_end => end = c,
            _ => return end,
        }
    }
}

/// Byte ranges of the `#` comments in `text[base..]` (outside strings), in order.
fn comment_ranges(text: &str, base: usize) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = base;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'#' => {
                let start = i;
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                out.push((start, i));
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// A pair's children without keyword tokens (`let`, `network`, ...), which the grammar
/// makes atomic so that `letter` is not `let` followed by `ter`.
fn children<'i>(pair: Pair<'i, Rule>) -> impl Iterator<Item = Pair<'i, Rule>> {
    pair.into_inner().filter(|p| !is_keyword(p.as_rule()))
}

fn is_keyword(r: Rule) -> bool {
    matches!(
        r,
        Rule::kw_include
            | Rule::kw_block
            | Rule::kw_network
            | Rule::kw_train
            | Rule::kw_let
            | Rule::kw_init
            | Rule::kw_if
            | Rule::kw_else
            | Rule::kw_seq
            | Rule::kw_of
            | Rule::kw_not
            | Rule::kw_or
            | Rule::kw_and
    )
}

fn is_infix(r: Rule) -> bool {
    matches!(
        r,
        Rule::or
            | Rule::and
            | Rule::eq
            | Rule::ne
            | Rule::lt
            | Rule::le
            | Rule::gt
            | Rule::ge
            | Rule::add
            | Rule::sub
            | Rule::mul
            | Rule::div
            | Rule::rem
    )
}
