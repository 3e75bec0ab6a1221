//! Stage 3: expansion. Evaluates a network's body — blocks, repetition, `if`, arithmetic —
//! and builds its [`Graph`], checking every layer's shape as the layer is created.
//!
//! Shapes are known during evaluation, which is what lets `if channels(x) != c` choose a
//! projection shortcut. Errors poison the value they would have produced
//! ([`Value::Poison`]) so that later uses stay quiet and one mistake gives one message;
//! independent mistakes are all reported.

mod builtins;
mod call;
mod eval;
mod init;

use crate::front::resolve::Items;
use crate::front::syntax::ast::{self, InputType};
use crate::front::value::{Tensor, Value};
use crate::ir::graph::{Graph, InputEncoding, Node, NodeId, NodeKind, Scope, ScopeId};
use crate::ir::init::Init;
use crate::ir::shape::{MAX_ELEMENTS, Shape};
use crate::support::diagnostic::{Diagnostic, Diagnostics};
use crate::support::source::Span;
use std::collections::HashMap;

/// Most layers one network may expand to. ResNet-152 has about 520.
pub const MAX_NODES: usize = 100_000;
/// Deepest nesting of block calls.
pub const MAX_CALL_DEPTH: usize = 64;
/// Most evaluation steps one network may take: an expression evaluated, a repetition of a
/// stage, or a value copied (which costs its [`Value::size`]). Blocks that call others
/// several times multiply the work at every level (`v(n) { w(n) + w(n) }`), so depth
/// alone does not bound it; ResNet-152 needs under 1 % of this.
pub const MAX_EVAL_STEPS: u64 = 1_000_000;
/// Most values one list may hold, counting the items of nested lists.
pub const MAX_LIST_SIZE: u64 = 10_000;

/// Expands one network. Returns `None` if it had errors (all of them in `diagnostics`).
pub fn network(items: &Items<'_>, net: &ast::NetworkDef, diagnostics: &mut Diagnostics) -> Option<Graph> {
    network_within(items, net, diagnostics, MAX_EVAL_STEPS)
}

/// [`network`] with a budget of `steps` evaluation steps instead of [`MAX_EVAL_STEPS`].
pub fn network_within(
    items: &Items<'_>,
    net: &ast::NetworkDef,
    diagnostics: &mut Diagnostics,
    steps: u64,
) -> Option<Graph> {
    let mut x = Expander {
        items,
        diagnostics,
        steps_left: steps,
        budget: steps,
        macs: 0,
        errors: 0,
        nodes: Vec::new(),
        scopes: vec![Scope {
            name: String::new(),
            block: String::new(),
            path: String::new(),
            parent: None,
            call: net.name.name.clone(),
            span: net.name.span,
        }],
        counters: HashMap::new(),
        stack: Vec::new(),
        halted: false,
        auto_init: Vec::new(),
    };
    let mut env = Env::default();
    let mut inputs = Vec::new();
    let ctx = Ctx { scope: ScopeId::ROOT, init: None };
    for (i, decl) in net.inputs.iter().enumerate() {
        if let Some(first) = net.inputs[..i].iter().find(|d| d.name.name == decl.name.name) {
            x.error(
                Diagnostic::error(format!("input `{}` is declared twice", decl.name.name))
                    .at(decl.name.span, "declared again here")
                    .with_secondary(first.name.span, "first declared here"),
            );
            continue;
        }
        let value = match x.input(decl) {
            Some((shape, encoding)) => {
                let node = x.add_node(
                    &ctx,
                    &decl.name.name,
                    NodeKind::Input(encoding),
                    describe_input(decl, &shape),
                    Vec::new(),
                    shape,
                    Vec::new(),
                    0,
                    decl.span,
                );
                inputs.push(node);
                Value::Tensor(Tensor { node, shape })
            }
            None => Value::Poison,
        };
        env.bind(&decl.name.name, value);
    }
    let result = x.body(&env, ctx, &net.body);
    let output = match result {
        Value::Tensor(t) => Some(t.node),
        Value::Poison => None,
        other => {
            x.error(
                Diagnostic::error(format!(
                    "network `{}` must produce a tensor, found {}",
                    net.name.name,
                    other.describe()
                ))
                .at(net.body.result.span, "this is the network's output"),
            );
            None
        }
    };
    if x.errors > 0 {
        return None;
    }
    let mut graph = Graph {
        name: net.name.name.clone(),
        span: net.name.span,
        nodes: std::mem::take(&mut x.nodes),
        scopes: std::mem::take(&mut x.scopes),
        inputs,
        output: output?,
    };
    init::resolve(&mut graph, &x.auto_init);
    Some(graph)
}

fn describe_input(decl: &ast::InputDecl, shape: &Shape) -> String {
    match &decl.ty {
        InputType::Tensor { .. } => format!("input {shape}"),
        InputType::Seq { item, .. } => match shape {
            Shape::Seq { steps, features } => format!("input seq[{steps}] of {}({features})", item.name),
            _ => format!("input {shape}"),
        },
    }
}

/// Evaluation state that follows the dynamic extent of a body.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ctx {
    /// The block instance new nodes belong to.
    pub scope: ScopeId,
    /// Set by `init = ...`; applies to layers made in this body and the blocks it calls.
    pub init: Option<Init>,
}

/// Lexical variables: a body's `let`s and parameters, then its enclosing body's (for `if`
/// arms). Blocks start from an empty environment; they see only their parameters.
#[derive(Default)]
pub(crate) struct Env<'p> {
    vars: Vec<(String, Value)>,
    parent: Option<&'p Env<'p>>,
}

impl<'p> Env<'p> {
    pub fn child(parent: &'p Env<'p>) -> Env<'p> {
        Env { vars: Vec::new(), parent: Some(parent) }
    }

    pub fn bind(&mut self, name: &str, value: Value) {
        self.vars.push((name.to_string(), value));
    }

    pub fn lookup(&self, name: &str) -> Option<&Value> {
        self.vars.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v).or_else(|| self.parent?.lookup(name))
    }

    /// Every visible name, for suggestions.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.vars.iter().map(|(n, _)| n.as_str()).collect();
        if let Some(p) = self.parent {
            names.extend(p.names());
        }
        names
    }
}

pub(crate) struct Expander<'a> {
    items: &'a Items<'a>,
    diagnostics: &'a mut Diagnostics,
    /// Evaluation steps still allowed, out of `budget`.
    steps_left: u64,
    budget: u64,
    /// Multiply-accumulates per example of the layers made so far, which must fit in 64
    /// bits so that every total in the plan does.
    macs: u64,
    errors: usize,
    nodes: Vec<Node>,
    scopes: Vec<Scope>,
    /// Per scope and base name, how many have been named so far (`conv1`, `conv2`, ...).
    counters: HashMap<(ScopeId, String), u32>,
    /// Block calls being evaluated: block name and call site.
    stack: Vec<(String, Span)>,
    /// A resource limit was hit: evaluation stops producing anything.
    halted: bool,
    /// Weights (node, parameter index) with no initialiser given: chosen from the
    /// activation that follows once the graph is complete.
    auto_init: Vec<(NodeId, usize)>,
}

impl Expander<'_> {
    /// Reports an error, adding "in this call of `block`" labels for the block calls that
    /// led here, so that a mistake inside a block shows which use of it failed.
    pub(crate) fn error(&mut self, mut d: Diagnostic) {
        for (block, span) in self.stack.iter().rev() {
            if d.primary.as_ref().is_none_or(|p| p.span != *span) {
                d.secondary.push(crate::support::diagnostic::Label {
                    span: *span,
                    message: format!("in this use of `{block}`"),
                });
            }
        }
        self.errors += 1;
        self.diagnostics.push(d);
    }

    /// The next free name for `base` in a scope: `conv1`, `conv2`, ...
    fn fresh_name(&mut self, scope: ScopeId, base: &str) -> String {
        let n = self.counters.entry((scope, base.to_string())).or_insert(0);
        *n += 1;
        format!("{base}{n}")
    }

    fn path(&self, scope: ScopeId, name: &str) -> String {
        let p = &self.scopes[scope.0 as usize].path;
        if p.is_empty() { name.to_string() } else { format!("{p}.{name}") }
    }

    /// Opens a block instance's scope inside `parent`.
    pub(crate) fn open_scope(&mut self, parent: ScopeId, block: &str, call: String, span: Span) -> ScopeId {
        let name = self.fresh_name(parent, block);
        let path = self.path(parent, &name);
        self.scopes.push(Scope { name, block: block.to_string(), path, parent: Some(parent), call, span });
        ScopeId(self.scopes.len() as u32 - 1)
    }

    /// Takes `cost` steps from the evaluation budget; when it runs out, reports it at the
    /// innermost block call (where the work multiplied) or at `span`, and halts.
    pub(crate) fn spend(&mut self, cost: u64, span: Span) -> bool {
        if self.halted {
            return false;
        }
        if let Some(left) = self.steps_left.checked_sub(cost) {
            self.steps_left = left;
            return true;
        }
        let at = self.stack.last().map_or(span, |&(_, call)| call);
        self.error(
            Diagnostic::error(format!(
                "compile-time evaluation needs more than {} steps, the budget for one network",
                crate::support::numbers::thousands(self.budget)
            ))
            .at(at, "the budget ran out in this call")
            .with_note("a block that calls others several times multiplies their work at every level")
            .with_help(
                "bind a block's result with `let` and use the name instead of calling the block again",
            ),
        );
        self.halted = true;
        false
    }

    /// Whether another node may be created; reports the limit once.
    pub(crate) fn room_for_node(&mut self, span: Span) -> bool {
        if self.halted {
            return false;
        }
        if self.nodes.len() >= MAX_NODES {
            self.error(
                Diagnostic::error(format!("the network expands to more than {MAX_NODES} layers"))
                    .at(span, "the limit was reached here")
                    .with_help("check repetition counts (`* n`)"),
            );
            self.halted = true;
            return false;
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_node(
        &mut self,
        ctx: &Ctx,
        base_name: &str,
        kind: NodeKind,
        description: String,
        inputs: Vec<NodeId>,
        shape: Shape,
        params: Vec<crate::ir::graph::Param>,
        macs: u64,
        span: Span,
    ) -> NodeId {
        let name = match kind {
            NodeKind::Input(_) => base_name.to_string(),
            NodeKind::Layer { .. } => self.fresh_name(ctx.scope, base_name),
        };
        let path = self.path(ctx.scope, &name);
        let params = params.into_iter().map(|mut p| {
            p.name = format!("{path}.{}", p.name);
            p
        });
        let params = params.collect();
        self.nodes.push(Node {
            name,
            path,
            kind,
            description,
            inputs,
            shape,
            params,
            macs,
            scope: ctx.scope,
            span,
        });
        NodeId(self.nodes.len() as u32 - 1)
    }

    /// Evaluates an input declaration to its shape.
    fn input(&mut self, decl: &ast::InputDecl) -> Option<(Shape, InputEncoding)> {
        let env = Env::default();
        let ctx = Ctx { scope: ScopeId::ROOT, init: None };
        match &decl.ty {
            InputType::Tensor { dims, span } => {
                let mut ds = Vec::new();
                for d in dims {
                    ds.push(self.dim(&env, ctx, d)?);
                }
                let shape = match ds.as_slice() {
                    [c, h, w] => Shape::Image { c: *c, h: *h, w: *w },
                    [n] => Shape::Vector { n: *n },
                    _ => {
                        self.error(
                            Diagnostic::error(format!("an input has 1 or 3 dimensions, found {}", ds.len()))
                                .at(*span, "unsupported shape")
                                .with_help("write `[channels, height, width]` for images or `[n]` for vectors; the batch dimension is implicit"),
                        );
                        return None;
                    }
                };
                self.check_size(&shape, decl.span, "input")?;
                Some((shape, InputEncoding::Dense))
            }
            InputType::Seq { len, item, size, span } => {
                let steps = self.dim(&env, ctx, len)?;
                let n = self.dim(&env, ctx, size)?;
                let (shape, enc) = match item.name.as_str() {
                    "onehot" => (Shape::Seq { steps, features: n }, InputEncoding::OneHot),
                    "features" => (Shape::Seq { steps, features: n }, InputEncoding::Dense),
                    "tokens" => (Shape::Tokens { steps, vocab: n }, InputEncoding::Tokens),
                    other => {
                        let mut d = Diagnostic::error(format!("unknown sequence item `{other}`"))
                            .at(item.span, "expected `onehot`, `tokens` or `features`");
                        if let Some(s) =
                            crate::support::suggest::did_you_mean(other, ["onehot", "tokens", "features"])
                        {
                            d = d.with_help(format!("did you mean `{s}`?"));
                        }
                        self.error(d);
                        return None;
                    }
                };
                self.check_size(&shape, *span, "input")?;
                Some((shape, enc))
            }
        }
    }

    /// A positive dimension from an expression.
    fn dim(&mut self, env: &Env<'_>, ctx: Ctx, e: &ast::Expr) -> Option<u64> {
        match self.eval(env, ctx, e) {
            Value::Int(i) if (1..=crate::front::layers::args::MAX_DIM).contains(&i) => Some(i as u64),
            Value::Poison => None,
            v => {
                self.error(
                    Diagnostic::error(format!(
                        "a dimension must be a positive integer, found {}",
                        v.describe()
                    ))
                    .at(
                        e.span,
                        format!("expected an integer from 1 to {}", crate::front::layers::args::MAX_DIM),
                    ),
                );
                None
            }
        }
    }

    /// Rejects tensors too large to ever allocate.
    pub(crate) fn check_size(&mut self, shape: &Shape, span: Span, what: &str) -> Option<()> {
        let n = shape.elements();
        if n > MAX_ELEMENTS {
            self.error(
                Diagnostic::error(format!(
                    "{what} {shape} has {} values per example, more than the limit of 2^40",
                    crate::support::numbers::thousands(n)
                ))
                .at(span, "this tensor is too large"),
            );
            return None;
        }
        Some(())
    }

    /// Evaluates a body: its statements in order, then its result.
    pub(crate) fn body(&mut self, env: &Env<'_>, mut ctx: Ctx, body: &ast::Body) -> Value {
        let mut local = Env::child(env);
        for stmt in &body.stmts {
            match stmt {
                ast::Stmt::Let { name, value, .. } => {
                    let v = self.eval(&local, ctx, value);
                    local.bind(&name.name, v);
                }
                ast::Stmt::Init { value, .. } => {
                    let v = self.eval(&local, ctx, value);
                    if let Some(init) = self.init_value(&v, value.span) {
                        ctx.init = Some(init);
                    }
                }
            }
        }
        self.eval(&local, ctx, &body.result)
    }

    fn init_value(&mut self, v: &Value, span: Span) -> Option<Init> {
        let converted = match v {
            Value::Symbol(s) => Init::from_name(s),
            Value::Ctor(c) if c.name == "normal" || c.name == "uniform" => {
                let x = match c.args.as_slice() {
                    [a] => match a.value {
                        Value::Float(x) if x > 0.0 => Some(x),
                        Value::Int(i) if i > 0 => Some(i as f64),
                        _ => None,
                    },
                    _ => None,
                };
                x.map(|x| if c.name == "normal" { Init::Normal { std: x } } else { Init::Uniform { a: x } })
            }
            Value::Poison => return None,
            _ => None,
        };
        if converted.is_none() {
            self.error(
                Diagnostic::error(format!("`init` expects an initialiser, found {}", v.describe()))
                    .at(span, format!("expected one of {}", crate::ir::init::NAMES.join(", "))),
            );
        }
        converted
    }
}
