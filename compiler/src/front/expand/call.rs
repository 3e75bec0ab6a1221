//! Calls: layers (which create graph nodes), blocks (which open a scope and evaluate their
//! body), built-in functions and initialiser constructors.

use super::{Ctx, Env, Expander, MAX_CALL_DEPTH, builtins};
use crate::front::layers::args::{self, RawArg};
use crate::front::layers::{Arity, LayerSpec, ParamInit};
use crate::front::names::CTORS;
use crate::front::syntax::ast::{BlockDef, Call};
use crate::front::value::{Ctor, CtorArg, Tensor, Value};
use crate::ir::graph::{NodeKind, Param};
use crate::support::diagnostic::Diagnostic;
use crate::support::source::Span;

impl Expander<'_> {
    /// Evaluates `call`, with `piped` as its first input when it is a pipeline stage.
    pub(crate) fn call(&mut self, env: &Env<'_>, ctx: Ctx, call: &Call, piped: Option<Value>) -> Value {
        let name = call.name.name.as_str();
        let items = self.items;
        if let Some(block) = items.blocks.get(name) {
            return self.call_block(env, ctx, block, call, piped);
        }
        let raw = self.eval_args(env, ctx, call);
        if let Some(spec) = crate::front::layers::lookup(name) {
            let mut inputs = Vec::new();
            let mut poisoned = false;
            if let Some(v) = piped {
                match v {
                    Value::Tensor(t) => inputs.push(t),
                    _ => poisoned = true,
                }
            }
            // Leading positional tensors are inputs: `relu(y + s)`, `concat(a, b, c)`.
            let mut rest = raw.into_iter().peekable();
            while let Some(a) =
                rest.next_if(|a| a.name.is_none() && matches!(a.value, Value::Tensor(_) | Value::Poison))
            {
                match a.value {
                    Value::Tensor(t) => inputs.push(t),
                    _ => poisoned = true,
                }
            }
            if poisoned {
                return Value::Poison;
            }
            return self.apply_layer(ctx, spec, inputs, rest.collect(), call.span);
        }
        if let Some(f) = builtins::lookup(name) {
            if piped.is_some() {
                self.error(
                    Diagnostic::error(format!("`{name}` is a function, not a layer"))
                        .at(call.name.span, "cannot be a pipeline stage")
                        .with_help(format!("call it on a tensor: `{name}(x)`")),
                );
                return Value::Poison;
            }
            return f(self, &raw, call.span);
        }
        if CTORS.contains(&name) && piped.is_none() {
            return Value::Ctor(Ctor {
                name: name.to_string(),
                name_span: call.name.span,
                args: raw
                    .into_iter()
                    .map(|a| CtorArg { name: a.name, value: a.value, span: a.span })
                    .collect(),
            });
        }
        match env.lookup(name) {
            Some(Value::Poison) => return Value::Poison,
            Some(_) => {
                self.error(crate::front::resolve::not_callable(name, call.name.span));
                return Value::Poison;
            }
            None => {}
        }
        let mut candidates: Vec<&str> = crate::front::layers::kinds().map(|k| k.name).collect();
        candidates.extend(items.blocks.keys().copied());
        candidates.extend(crate::front::names::BUILTINS);
        self.error(crate::front::resolve::unknown_callable(name, call.name.span, candidates));
        Value::Poison
    }

    fn eval_args(&mut self, env: &Env<'_>, ctx: Ctx, call: &Call) -> Vec<RawArg> {
        call.args
            .iter()
            .map(|a| RawArg {
                name: a.name.as_ref().map(|n| (n.name.clone(), n.span)),
                value: self.eval(env, ctx, &a.value),
                span: a.span(),
                value_span: a.value.span,
            })
            .collect()
    }

    /// Creates a layer node: binds arguments, checks the shape and the sizes, counts
    /// parameters and cost.
    pub(crate) fn apply_layer(
        &mut self,
        ctx: Ctx,
        spec: &'static LayerSpec,
        inputs: Vec<Tensor>,
        raw: Vec<RawArg>,
        span: Span,
    ) -> Value {
        if !self.arity_ok(spec, &inputs, span) || !self.room_for_node(span) {
            return Value::Poison;
        }
        let bound = match args::bind(spec, &raw, span) {
            Ok(a) => a,
            Err(errors) => {
                for e in errors {
                    self.error(e);
                }
                return Value::Poison;
            }
        };
        let built = (spec.build)(&bound);
        let out_of_range = bound.take_errors();
        let layer = match built {
            Ok(l) if out_of_range.is_empty() => l,
            built => {
                for e in out_of_range.into_iter().chain(built.err()) {
                    self.error(e);
                }
                return Value::Poison;
            }
        };
        let shapes: Vec<_> = inputs.iter().map(|t| t.shape).collect();
        let shape = match layer.infer(&shapes) {
            Ok(s) => s,
            Err(e) => {
                let mut d = Diagnostic::error(e.message).at(span, e.label);
                for i in e.blame {
                    let t = inputs[i];
                    let from = self.nodes[t.node.0 as usize].span;
                    if from != span {
                        d = d.with_secondary(from, format!("{} comes from here", t.shape));
                    }
                }
                if let Some(h) = e.help {
                    d = d.with_help(h);
                }
                self.error(d);
                return Value::Poison;
            }
        };
        self.check_size(&shape, span, &format!("the output of `{}`", spec.name)).map_or(Value::Poison, |()| {
            let specs = layer.params(&shapes);
            let mut params = Vec::new();
            let mut auto = Vec::new();
            for (i, p) in specs.into_iter().enumerate() {
                if p.elements() > crate::ir::shape::MAX_ELEMENTS {
                    self.error(
                        Diagnostic::error(format!(
                            "parameter `{}` of `{}` would have {} values, more than the limit of 2^40",
                            p.name,
                            spec.name,
                            crate::support::numbers::thousands(p.elements())
                        ))
                        .at(span, "this layer is too large"),
                    );
                    return Value::Poison;
                }
                let init = match p.init {
                    ParamInit::Fixed(i) | ParamInit::Weight(Some(i)) => i,
                    ParamInit::Weight(None) => match ctx.init {
                        Some(i) => i,
                        None => {
                            auto.push(i);
                            crate::ir::init::Init::Xavier
                        }
                    },
                };
                params.push(Param { name: p.name.to_string(), dims: p.dims, role: p.role, init });
            }
            let Some((macs, total)) =
                layer.macs(&shapes, &shape).and_then(|m| Some((m, self.macs.checked_add(m)?)))
            else {
                self.error(
                    Diagnostic::error(
                        "the network needs more multiply-accumulates per example than fit in 64 bits",
                    )
                    .at(span, format!("the count overflows at this `{}`", spec.name)),
                );
                return Value::Poison;
            };
            self.macs = total;
            let description = bound.describe();
            let node = self.add_node(
                &ctx,
                spec.name,
                NodeKind::Layer { spec, layer },
                description,
                inputs.iter().map(|t| t.node).collect(),
                shape,
                params,
                macs,
                span,
            );
            self.auto_init.extend(auto.into_iter().map(|i| (node, i)));
            Value::Tensor(Tensor { node, shape })
        })
    }

    fn arity_ok(&mut self, spec: &LayerSpec, inputs: &[Tensor], span: Span) -> bool {
        let n = inputs.len();
        let message = match spec.arity {
            Arity::One if n == 0 => format!("`{}` needs an input", spec.name),
            Arity::One if n > 1 => format!("`{}` takes one input, found {n}", spec.name),
            Arity::AtLeast(k) if n < k => format!("`{}` needs at least {k} inputs, found {n}", spec.name),
            _ => return true,
        };
        let help = match spec.arity {
            Arity::One => format!(
                "feed it with a pipeline (`x |> {}`) or pass the tensor first (`{}(x, ..)`)",
                spec.name, spec.name
            ),
            Arity::AtLeast(_) => format!("pass the tensors to merge: `{}(a, b)`", spec.name),
        };
        self.error(Diagnostic::error(message).at(span, "wrong number of inputs").with_help(help));
        false
    }

    fn call_block(
        &mut self,
        env: &Env<'_>,
        ctx: Ctx,
        block: &BlockDef,
        call: &Call,
        piped: Option<Value>,
    ) -> Value {
        let name = &block.name.name;
        if self.stack.len() >= MAX_CALL_DEPTH {
            self.error(
                Diagnostic::error(format!("blocks are nested more than {MAX_CALL_DEPTH} deep"))
                    .at(call.span, "too deep here"),
            );
            self.halted = true;
            return Value::Poison;
        }
        let raw = self.eval_args(env, ctx, call);
        let mut values: Vec<Option<Value>> = vec![None; block.params.len()];
        let mut given: Vec<Option<Span>> = vec![None; block.params.len()];
        let mut ok = true;
        let positional = piped
            .map(|v| (v, call.name.span))
            .into_iter()
            .chain(raw.iter().filter(|a| a.name.is_none()).map(|a| (a.value.clone(), a.span)));
        for (next, (v, span)) in positional.enumerate() {
            if next >= block.params.len() {
                self.error(
                    Diagnostic::error(format!(
                        "block `{name}` takes {} parameter{}, but more were given",
                        block.params.len(),
                        if block.params.len() == 1 { "" } else { "s" }
                    ))
                    .at(span, "unexpected argument")
                    .with_secondary(block.name.span, format!("`{name}` is defined here")),
                );
                ok = false;
                break;
            }
            values[next] = Some(v);
            given[next] = Some(span);
        }
        for a in raw.iter().filter(|a| a.name.is_some()) {
            let (arg, arg_span) = a.name.as_ref().expect("filtered to named");
            match block.params.iter().position(|p| &p.name.name == arg) {
                None => {
                    let names = block.params.iter().map(|p| p.name.name.as_str());
                    self.error(crate::front::resolve::unknown_block_arg(name, arg, *arg_span, names));
                    ok = false;
                }
                Some(i) if given[i].is_some() => {
                    self.error(
                        Diagnostic::error(format!("`{arg}` is given twice"))
                            .at(a.span, "given again here")
                            .with_secondary(given[i].expect("checked"), "first given here"),
                    );
                    ok = false;
                }
                Some(i) => {
                    values[i] = Some(a.value.clone());
                    given[i] = Some(a.span);
                }
            }
        }
        if !ok {
            return Value::Poison;
        }
        // Defaults see the parameters before them: `block f(x, c, mid = c / 4)`.
        let mut inner = Env::default();
        for (i, p) in block.params.iter().enumerate() {
            let v = match values[i].take() {
                Some(v) => v,
                None => match &p.default {
                    Some(d) => self.eval(&inner, ctx, d),
                    None => {
                        let usage: Vec<&str> = block.params.iter().map(|p| p.name.name.as_str()).collect();
                        self.error(
                            Diagnostic::error(format!("block `{name}` needs `{}`", p.name.name))
                                .at(call.span, format!("`{}` is missing", p.name.name))
                                .with_secondary(p.name.span, "declared here without a default")
                                .with_help(format!("its parameters are ({})", usage.join(", "))),
                        );
                        ok = false;
                        Value::Poison
                    }
                },
            };
            if v == Value::Poison {
                ok = false;
            }
            inner.bind(&p.name.name, v);
        }
        if !ok {
            return Value::Poison;
        }
        let description = describe_block_call(name, &raw);
        let scope = self.open_scope(ctx.scope, name, description, call.span);
        self.stack.push((name.clone(), call.span));
        let result = self.body(&inner, Ctx { scope, init: ctx.init }, &block.body);
        self.stack.pop();
        result
    }
}

/// `basic(128, stride: 2)`: the call's non-tensor arguments as written, evaluated.
fn describe_block_call(name: &str, raw: &[RawArg]) -> String {
    let parts: Vec<String> = raw
        .iter()
        .filter(|a| !matches!(a.value, Value::Tensor(_)))
        .map(|a| match &a.name {
            Some((n, _)) => format!("{n}: {}", a.value),
            None => a.value.to_string(),
        })
        .collect();
    if parts.is_empty() { name.to_string() } else { format!("{name}({})", parts.join(", ")) }
}
