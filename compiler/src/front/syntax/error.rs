//! Syntax errors in words a user understands: "expected a layer or block, found `)`"
//! rather than pest's rule identifiers.

use super::Rule;
use crate::support::diagnostic::Diagnostic;
use crate::support::source::{FileId, Span};
use pest::error::{Error, ErrorVariant, InputLocation};
use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::Once;

/// Turns on pest's tracking of expected literal tokens (`)`, `,`, ...) and bounds the
/// parser's total work, once per process.
pub fn enable_detail() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        pest::set_error_detail(true);
        pest::set_call_limit(NonZeroUsize::new(50_000_000));
    });
}

/// What a rule means to a person reading an error message.
fn describe(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "end of file",
        Rule::include | Rule::kw_include => "`include`",
        Rule::block_def | Rule::kw_block => "`block`",
        Rule::network_def | Rule::kw_network => "`network`",
        Rule::train_def | Rule::kw_train => "`train`",
        Rule::kw_let => "`let`",
        Rule::kw_init => "`init`",
        Rule::kw_if => "`if`",
        Rule::kw_else => "`else`",
        Rule::kw_seq => "`seq`",
        Rule::kw_of => "`of`",
        Rule::ident => "a name",
        Rule::params | Rule::param => "a parameter",
        Rule::inputs | Rule::input => "an input (`name: [channels, height, width]`)",
        Rule::tensor_type | Rule::seq_type => "an input type (`[c, h, w]` or `seq[length] of onehot(n)`)",
        Rule::seq_item => "`onehot(n)` or `tokens(n)`",
        Rule::setting => "a setting (`name = value`)",
        Rule::body => "`{`",
        Rule::let_stmt => "`let`",
        Rule::init_stmt => "`init =`",
        Rule::expr | Rule::operand => "an expression",
        Rule::stage | Rule::group => "a layer or block",
        Rule::call => "a call",
        Rule::args | Rule::named_arg => "an argument",
        Rule::list => "a list",
        Rule::if_expr => "`if`",
        Rule::pipe => "`|>`",
        Rule::repeat => "`*`",
        Rule::neg | Rule::not => "an expression",
        Rule::or
        | Rule::and
        | Rule::eq
        | Rule::ne
        | Rule::le
        | Rule::ge
        | Rule::lt
        | Rule::gt
        | Rule::add
        | Rule::sub
        | Rule::mul
        | Rule::div
        | Rule::rem => "an operator",
        Rule::float | Rule::integer => "a number",
        Rule::string => "a string",
        Rule::boolean => "`true` or `false`",
        _ => return None,
    })
}

/// Literal tokens worth naming in "expected ..." (operators are summed up as "an operator").
fn is_punctuation(token: &str) -> bool {
    matches!(token, ")" | "]" | "}" | "(" | "[" | "{" | "," | "=" | ":" | "else" | "of")
}

pub fn to_diagnostic(e: &Error<Rule>, text: &str, file: FileId, base: usize) -> Diagnostic {
    let mut pos = base
        + match e.location {
            InputLocation::Pos(p) => p,
            InputLocation::Span((s, _)) => s,
        };
    let ErrorVariant::ParsingError { positives, .. } = &e.variant else {
        // pest reports its own resource limits this way ("call limit reached").
        let message = e.variant.message();
        return Diagnostic::error(format!("the parser gave up: {message}"))
            .at(
                Span::new(file, pos..pos + describe_found(text, pos).1.max(1).min(text.len() - pos)),
                "while parsing here",
            )
            .with_note("the file is too large or too deeply nested to parse");
    };
    let mut positives = positives.clone();
    let mut tokens: BTreeSet<String> = BTreeSet::new();
    if let Some(attempts) = e.parse_attempts() {
        tokens = attempts
            .expected_tokens()
            .into_iter()
            .map(|t| t.to_string())
            .filter(|t| is_punctuation(t))
            .collect();
        // pest places the error where the failing rule began (`batch 64` at `batch`);
        // the literal it wanted (`=`) was expected further on, which is where the fix goes.
        if base + attempts.max_position > pos && !tokens.is_empty() {
            pos = base + attempts.max_position;
            positives.clear();
        }
    }
    let found = describe_found(text, pos);
    let found_len = found.1.max(1).min(text.len().saturating_sub(pos));
    let span = Span::new(file, pos..pos + found_len);
    let starts_expression = positives.iter().filter(|r| is_expression_start(**r)).count() >= 2;
    let starts_stage = positives.contains(&Rule::stage) || positives.contains(&Rule::group);
    let mut expected: Vec<String> = Vec::new();
    let mut push = |s: &str| {
        if !expected.iter().any(|e| e == s) {
            expected.push(s.to_string());
        }
    };
    // Literal punctuation first: "expected `)` or `,`" is the most precise hint.
    for t in &tokens {
        let opens = t == "(" || t == "[";
        if !(opens && (starts_expression || starts_stage)) {
            push(&format!("`{t}`"));
        }
    }
    for r in &positives {
        if starts_expression && is_expression_start(*r) {
            push("an expression");
        } else if let Some(d) = describe(*r) {
            push(d);
        }
    }
    let list = join_or(&expected);
    let (message, label) = if list.is_empty() {
        (format!("unexpected {}", found.0), "unexpected here".to_string())
    } else {
        (format!("expected {list}, found {}", found.0), format!("expected {list}"))
    };
    let mut d = Diagnostic::error(message).at(span, label);
    if (tokens.contains(")") || tokens.contains("]") || tokens.contains("}"))
        && let Some(open) = unclosed_before(text, base, pos)
    {
        d = d.with_secondary(Span::new(file, open..open + 1), "this delimiter is never closed");
    }
    d
}

/// Rules any of which can begin an expression; when several are expected the message
/// says "an expression" once instead of listing them.
fn is_expression_start(r: Rule) -> bool {
    matches!(
        r,
        Rule::expr
            | Rule::operand
            | Rule::integer
            | Rule::float
            | Rule::string
            | Rule::boolean
            | Rule::ident
            | Rule::list
            | Rule::call
            | Rule::if_expr
            | Rule::neg
            | Rule::not
            | Rule::kw_if
            | Rule::kw_not
    )
}

/// The innermost bracket opened before `pos` that no bracket in `text[base..]` (the item
/// being parsed, or the whole file) closes, if it is on an earlier line than `pos` (on the
/// same line the caret already shows it). Scanning only the item keeps reporting an error
/// in each of many items linear in the file's size.
fn unclosed_before(text: &str, base: usize, pos: usize) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut stack: Vec<usize> = Vec::new();
    let mut unclosed: Vec<usize> = Vec::new();
    let mut i = base;
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' | b'[' | b'{' => stack.push(i),
            c @ (b')' | b']' | b'}') => {
                let opener = match c {
                    b')' => b'(',
                    b']' => b'[',
                    _ => b'{',
                };
                // A closer matches the nearest opener of its kind; openers skipped over
                // on the way are never closed.
                if let Some(k) = stack.iter().rposition(|&o| bytes[o] == opener) {
                    unclosed.extend(stack.drain(k..).skip(1));
                }
            }
            _ => {}
        }
        i += 1;
    }
    unclosed.extend(stack);
    let open = unclosed.into_iter().filter(|&o| o < pos).max()?;
    text[open..pos.min(text.len())].contains('\n').then_some(open)
}

/// A short description of the token at `pos` and its length in bytes.
fn describe_found(text: &str, pos: usize) -> (String, usize) {
    let rest = text.get(pos..).unwrap_or("");
    let Some(c) = rest.chars().next() else {
        return ("end of file".to_string(), 0);
    };
    if c.is_ascii_alphanumeric() || c == '_' {
        let word: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .take(40)
            .collect();
        let len = word.len();
        return (format!("`{word}`"), len);
    }
    if c == '\n' || c == '\r' {
        return ("end of line".to_string(), c.len_utf8());
    }
    if c.is_control() {
        return (format!("control character U+{:04X}", c as u32), c.len_utf8());
    }
    (format!("`{c}`"), c.len_utf8())
}

/// "a", "a or b", "a, b or c".
pub fn join_or(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}
