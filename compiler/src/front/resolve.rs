//! Stage 2: resolution. Gathers the blocks, networks and train sections of a program and
//! checks what can be checked without evaluating anything: duplicate definitions, names
//! that are not bound, calls of things that do not exist, argument names, and blocks that
//! use themselves. These checks cover every body, including blocks no network uses, so a
//! typo anywhere is reported even when an earlier error stops evaluation.

use crate::front::layers::{self, args::unknown_arg};
use crate::front::load::Program;
use crate::front::names::{BUILTINS, CTORS, SYMBOLS};
use crate::front::syntax::ast::*;
use crate::support::diagnostic::{Diagnostic, Diagnostics};
use crate::support::source::Span;
use crate::support::suggest::did_you_mean;
use std::collections::{BTreeMap, HashMap, HashSet};

/// The program's definitions, by kind.
#[derive(Debug, Default)]
pub struct Items<'a> {
    /// Blocks from every file.
    pub blocks: BTreeMap<&'a str, &'a BlockDef>,
    /// Networks of the main file, in order.
    pub networks: Vec<&'a NetworkDef>,
    /// Train sections of the main file, in order.
    pub trains: Vec<&'a TrainDef>,
}

impl Items<'_> {
    pub fn network(&self, name: &str) -> Option<&NetworkDef> {
        self.networks.iter().copied().find(|n| n.name.name == name)
    }
}

/// What resolution found: the items, and whether evaluation is safe to attempt.
pub struct Resolved<'a> {
    pub items: Items<'a>,
    /// False when a block uses itself: expanding it would never end.
    pub expandable: bool,
}

pub fn resolve<'a>(program: &'a Program, diagnostics: &mut Diagnostics) -> Resolved<'a> {
    let mut items = Items::default();
    for file in &program.files {
        for item in &file.items {
            match item {
                Item::Block(b) => {
                    let name = b.name.name.as_str();
                    if let Some(first) = items.blocks.get(name) {
                        diagnostics.push(duplicate("block", &b.name, first.name.span));
                    } else if layers::lookup(name).is_some() || BUILTINS.contains(&name) {
                        diagnostics.push(
                            Diagnostic::error(format!("block `{name}` has the name of a built-in"))
                                .at(b.name.span, "choose another name"),
                        );
                    } else {
                        items.blocks.insert(name, b);
                    }
                }
                Item::Network(n) if file.id == program.main => {
                    if let Some(first) = items.network(&n.name.name) {
                        diagnostics.push(duplicate("network", &n.name, first.name.span));
                    } else {
                        items.networks.push(n);
                    }
                }
                Item::Train(t) if file.id == program.main => items.trains.push(t),
                Item::Network(_) | Item::Train(_) => diagnostics.push(
                    Diagnostic::error("an included file may define only blocks")
                        .at(item.span(), "this belongs in the main file")
                        .with_note("`include` shares blocks between networks"),
                ),
                Item::Include(_) => {}
            }
        }
    }
    let main = &program.files[program.main.0 as usize];
    if items.networks.is_empty() && !diagnostics.has_errors() {
        let name = &program.sources.get(program.main).name;
        let d = if main.items.iter().any(|i| matches!(i, Item::Block(_))) {
            Diagnostic::error(format!("`{name}` defines only blocks; there is no network"))
                .with_note("a file of blocks is used by a model file that `include`s it")
        } else {
            Diagnostic::error(format!("`{name}` defines no network"))
        };
        diagnostics.push(
            d.at(Span::new(program.main, 0..0), "expected a network")
                .with_help("a model file needs `network name(input: [channels, height, width]) { ... }`"),
        );
    }
    let mut trained: HashMap<&str, Span> = HashMap::new();
    for t in &items.trains {
        let name = t.network.name.as_str();
        if items.network(name).is_none() {
            let names = items.networks.iter().map(|n| n.name.name.as_str());
            let mut d = Diagnostic::error(format!("no network named `{name}` to train"))
                .at(t.network.span, "not defined");
            if let Some(s) = did_you_mean(name, names) {
                d = d.with_help(format!("did you mean `{s}`?"));
            }
            diagnostics.push(d);
        } else if let Some(first) = trained.insert(name, t.network.span) {
            diagnostics.push(
                Diagnostic::error(format!("network `{name}` has two train sections"))
                    .at(t.network.span, "second train section")
                    .with_secondary(first, "first train section"),
            );
        }
    }
    let mut checker =
        Checker { items: &items, diagnostics, calls: BTreeMap::new(), current: None, used: HashSet::new() };
    for b in items.blocks.values() {
        checker.current = Some(b.name.name.as_str());
        let bound: Vec<Binding> = b.params.iter().map(|p| (p.name.name.as_str(), p.name.span)).collect();
        for (i, p) in b.params.iter().enumerate() {
            if let Some(first) = b.params[..i].iter().find(|q| q.name.name == p.name.name) {
                checker.diagnostics.push(duplicate("parameter", &p.name, first.name.span));
            }
            if let Some(d) = &p.default {
                checker.expr(d, &bound[..i]);
            }
        }
        checker.body(&b.body, &bound);
        checker.warn_unused(&bound, |n| format!("parameter `{n}` of `{}`", b.name.name));
    }
    checker.current = None;
    for n in &items.networks {
        let bound: Vec<Binding> = n.inputs.iter().map(|i| (i.name.name.as_str(), i.name.span)).collect();
        checker.body(&n.body, &bound);
        checker.warn_unused(&bound, |n| format!("input `{n}`"));
    }
    let expandable = checker.check_recursion();
    Resolved { items, expandable }
}

fn duplicate(what: &str, name: &Ident, first: Span) -> Diagnostic {
    Diagnostic::error(format!("{what} `{}` is defined twice", name.name))
        .at(name.span, "defined again here")
        .with_secondary(first, "first defined here")
}

/// "unknown name `x`" with a suggestion from the names in scope.
pub fn unknown_name<'a>(name: &str, span: Span, candidates: impl IntoIterator<Item = &'a str>) -> Diagnostic {
    let d = Diagnostic::error(format!("unknown name `{name}`")).at(span, "not defined here");
    match did_you_mean(name, candidates) {
        Some(s) => d.with_help(format!("did you mean `{s}`?")),
        None => d.with_help("bind it with `let`, or declare it as a parameter or input"),
    }
}

/// The diagnostic for a name in value position that is not bound to a value.
pub fn bad_name(items: &Items<'_>, name: &str, span: Span, mut in_scope: Vec<&str>) -> Diagnostic {
    if layers::lookup(name).is_some() || items.blocks.contains_key(name) {
        let what = if items.blocks.contains_key(name) { "block" } else { "layer" };
        return Diagnostic::error(format!("`{name}` is a {what}, not a value"))
            .at(span, format!("this {what} has no input"))
            .with_help(format!("apply it to a tensor: `x |> {name}` or `{name}(x)`"));
    }
    in_scope.extend(SYMBOLS);
    unknown_name(name, span, in_scope)
}

/// "unknown layer or block `convv`" with a suggestion.
pub fn unknown_callable<'a>(
    name: &str,
    span: Span,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Diagnostic {
    let d = Diagnostic::error(format!("unknown layer or block `{name}`"))
        .at(span, "not a layer, block or function");
    match did_you_mean(name, candidates) {
        Some(s) => d.with_help(format!("did you mean `{s}`?")),
        None => d.with_note("`nnc` layers are listed in docs/language.md; define your own with `block`"),
    }
}

/// A `let`-bound or parameter name used where a layer or block is called.
pub fn not_callable(name: &str, span: Span) -> Diagnostic {
    Diagnostic::error(format!("`{name}` is a value, not a layer or block"))
        .at(span, "cannot be called or used as a stage")
        .with_note("names bound with `let` or declared as parameters hold tensors and numbers; layers are applied by name (`x |> relu`)")
}

pub fn unknown_block_arg<'a>(
    block: &str,
    arg: &str,
    span: Span,
    params: impl IntoIterator<Item = &'a str>,
) -> Diagnostic {
    let params: Vec<&str> = params.into_iter().collect();
    let d =
        Diagnostic::error(format!("block `{block}` has no parameter `{arg}`")).at(span, "unknown parameter");
    match did_you_mean(arg, params.iter().copied()) {
        Some(s) => d.with_help(format!("did you mean `{s}`?")),
        None => d.with_note(format!("its parameters are: {}", params.join(", "))),
    }
}

/// A name in scope and where it was bound.
type Binding<'a> = (&'a str, Span);

struct Checker<'i, 'a, 'd> {
    items: &'i Items<'a>,
    diagnostics: &'d mut Diagnostics,
    /// Block → blocks it calls, with the call site (for recursion).
    calls: BTreeMap<&'a str, Vec<(&'a str, Span)>>,
    current: Option<&'a str>,
    /// Bindings (by where they were bound) that some expression refers to.
    used: HashSet<Span>,
}

impl<'a> Checker<'_, 'a, '_> {
    fn body(&mut self, body: &'a Body, outer: &[Binding<'a>]) {
        let mut bound = outer.to_vec();
        for s in &body.stmts {
            match s {
                Stmt::Let { name, value, .. } => {
                    self.expr(value, &bound);
                    bound.push((&name.name, name.span));
                }
                Stmt::Init { value, .. } => self.expr(value, &bound),
            }
        }
        self.expr(&body.result, &bound);
        self.warn_unused(&bound[outer.len()..], |n| format!("`{n}`"));
    }

    /// Warns about bindings nothing refers to: often a typo for the name meant, as in
    /// `relu(y + x)` where the projected shortcut `s` was intended.
    fn warn_unused(&mut self, bindings: &[Binding<'a>], what: impl Fn(&str) -> String) {
        for &(name, span) in bindings {
            if !self.used.contains(&span) && !name.starts_with('_') {
                self.diagnostics.push(
                    Diagnostic::warning(format!("{} is never used", what(name)))
                        .at(span, "bound here")
                        .with_help(format!("use it, or rename it to `_{name}` if it is meant to be unused")),
                );
            }
        }
    }

    fn expr(&mut self, e: &'a Expr, bound: &[Binding<'a>]) {
        match &e.kind {
            ExprKind::Int { .. } | ExprKind::Float { .. } | ExprKind::Bool(_) | ExprKind::Str(_) => {}
            ExprKind::Name(id) => match bound.iter().rev().find(|(n, _)| *n == id.name) {
                Some((_, at)) => {
                    self.used.insert(*at);
                }
                None if SYMBOLS.contains(&id.name.as_str()) => {}
                None => {
                    let scope: Vec<&str> = bound.iter().rev().map(|(n, _)| *n).collect();
                    self.diagnostics.push(bad_name(self.items, &id.name, e.span, scope));
                }
            },
            ExprKind::List(items) => items.iter().for_each(|i| self.expr(i, bound)),
            ExprKind::Call(c) => self.call(c, bound),
            ExprKind::Unary(_, inner) => self.expr(inner, bound),
            ExprKind::Binary(_, l, r) => {
                self.expr(l, bound);
                self.expr(r, bound);
            }
            ExprKind::If { arms, otherwise } => {
                for (c, b) in arms {
                    self.expr(c, bound);
                    self.body(b, bound);
                }
                self.body(otherwise, bound);
            }
            ExprKind::Pipe { head, stages } => {
                self.expr(head, bound);
                self.stages(stages, bound);
            }
        }
    }

    fn stages(&mut self, stages: &'a [Stage], bound: &[Binding<'a>]) {
        for s in stages {
            match &s.kind {
                StageKind::Call(c) => self.call(c, bound),
                StageKind::Group(inner) => self.stages(inner, bound),
            }
            if let Some(r) = &s.repeat {
                self.expr(r, bound);
            }
        }
    }

    fn call(&mut self, c: &'a Call, bound: &[Binding<'a>]) {
        for a in &c.args {
            self.expr(&a.value, bound);
        }
        let name = c.name.name.as_str();
        if let Some(b) = self.items.blocks.get(name) {
            if let Some(cur) = self.current {
                self.calls.entry(cur).or_default().push((b.name.name.as_str(), c.name.span));
            }
            for a in &c.args {
                if let Some(n) = &a.name
                    && !b.params.iter().any(|p| p.name.name == n.name)
                {
                    let params = b.params.iter().map(|p| p.name.name.as_str());
                    self.diagnostics.push(unknown_block_arg(name, &n.name, n.span, params));
                }
            }
        } else if let Some(spec) = layers::lookup(name) {
            for a in &c.args {
                if let Some(n) = &a.name
                    && !spec.args.iter().any(|s| s.name == n.name)
                {
                    self.diagnostics.push(unknown_arg(spec, &n.name, n.span));
                }
            }
        } else if let Some((_, at)) = bound.iter().rev().find(|(n, _)| *n == name) {
            // Misused, but used: the error says so; an "unused" warning would not help.
            self.used.insert(*at);
            self.diagnostics.push(not_callable(name, c.name.span));
        } else if !BUILTINS.contains(&name) && !CTORS.contains(&name) {
            let mut candidates: Vec<&str> = layers::kinds().map(|k| k.name).collect();
            candidates.extend(self.items.blocks.keys().copied());
            candidates.extend(BUILTINS);
            self.diagnostics.push(unknown_callable(name, c.name.span, candidates));
        }
    }

    /// Reports each cycle of block uses once; returns whether there were none.
    fn check_recursion(&mut self) -> bool {
        let mut state: HashMap<&str, u8> = HashMap::new(); // 1: on the path, 2: done
        let mut ok = true;
        let blocks: Vec<&str> = self.items.blocks.keys().copied().collect();
        for b in blocks {
            let mut path = Vec::new();
            ok &= self.visit(b, &mut state, &mut path);
        }
        ok
    }

    fn visit(&mut self, b: &'a str, state: &mut HashMap<&'a str, u8>, path: &mut Vec<&'a str>) -> bool {
        match state.get(b) {
            Some(2) => return true,
            Some(_) => return true, // reported by the caller that closed the cycle
            None => {}
        }
        state.insert(b, 1);
        path.push(b);
        let mut ok = true;
        for (callee, span) in self.calls.get(b).cloned().unwrap_or_default() {
            if state.get(callee) == Some(&1) {
                let start = path.iter().position(|p| *p == callee).unwrap_or(0);
                let mut cycle: Vec<&str> = path[start..].to_vec();
                cycle.push(callee);
                self.diagnostics.push(
                    Diagnostic::error(format!("block `{callee}` uses itself ({})", cycle.join(" → ")))
                        .at(span, "this use closes the cycle")
                        .with_help("blocks cannot be recursive; repeat a stage with `* n` instead"),
                );
                ok = false;
            } else {
                ok &= self.visit(callee, state, path);
            }
        }
        path.pop();
        state.insert(b, 2);
        ok
    }
}
