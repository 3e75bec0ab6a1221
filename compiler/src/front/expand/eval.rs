//! Expression evaluation: literals, names, arithmetic, `if`, pipelines and repetition.

use super::{Ctx, Env, Expander, MAX_LIST_SIZE, MAX_NODES};
use crate::front::names::SYMBOLS;
use crate::front::syntax::ast::{BinOp, Expr, ExprKind, Stage, StageKind, UnOp};
use crate::front::value::Value;
use crate::support::diagnostic::Diagnostic;

impl Expander<'_> {
    pub(crate) fn eval(&mut self, env: &Env<'_>, ctx: Ctx, e: &Expr) -> Value {
        if !self.spend(1, e.span) {
            return Value::Poison;
        }
        match &e.kind {
            ExprKind::Int { value, .. } => Value::Int(*value),
            ExprKind::Float { value, .. } => Value::Float(*value),
            ExprKind::Bool(b) => Value::Bool(*b),
            ExprKind::Str(s) => Value::Str(s.clone()),
            ExprKind::Name(id) => self.name(env, &id.name, e),
            ExprKind::List(items) => {
                let list = Value::List(items.iter().map(|i| self.eval(env, ctx, i)).collect());
                let held = list.size() - 1;
                if held > MAX_LIST_SIZE {
                    self.error(
                        Diagnostic::error(format!(
                            "a list may hold at most {} values, counting those of the lists in it",
                            crate::support::numbers::thousands(MAX_LIST_SIZE)
                        ))
                        .at(e.span, format!("this list holds {}", crate::support::numbers::thousands(held))),
                    );
                    return Value::Poison;
                }
                list
            }
            ExprKind::Call(call) => self.call(env, ctx, call, None),
            ExprKind::Unary(op, inner) => {
                let v = self.eval(env, ctx, inner);
                self.unary(*op, v, e)
            }
            ExprKind::Binary(op, l, r) => self.binary(env, ctx, *op, l, r, e),
            ExprKind::If { arms, otherwise } => {
                for (cond, body) in arms {
                    match self.eval(env, ctx, cond) {
                        Value::Bool(true) => return self.body(env, ctx, body),
                        Value::Bool(false) => {}
                        Value::Poison => return Value::Poison,
                        other => {
                            self.error(
                                Diagnostic::error(format!(
                                    "an `if` condition must be `true` or `false`, found {}",
                                    other.describe()
                                ))
                                .at(cond.span, "not a condition")
                                .with_help("compare it, as in `stride != 1`"),
                            );
                            return Value::Poison;
                        }
                    }
                }
                self.body(env, ctx, otherwise)
            }
            ExprKind::Pipe { head, stages } => {
                let mut v = self.eval(env, ctx, head);
                if let Value::Poison = v {
                    return v;
                }
                if !matches!(v, Value::Tensor(_)) {
                    self.error(
                        Diagnostic::error(format!("`|>` needs a tensor on its left, found {}", v.describe()))
                            .at(head.span, "not a tensor"),
                    );
                    return Value::Poison;
                }
                for stage in stages {
                    v = self.stage(env, ctx, stage, v);
                }
                v
            }
        }
    }

    fn name(&mut self, env: &Env<'_>, name: &str, e: &Expr) -> Value {
        if let Some(v) = env.lookup(name) {
            return if self.spend(v.size(), e.span) { v.clone() } else { Value::Poison };
        }
        if SYMBOLS.contains(&name) {
            return Value::Symbol(name.to_string());
        }
        let names = env.names();
        self.error(crate::front::resolve::bad_name(self.items, name, e.span, names));
        Value::Poison
    }

    fn unary(&mut self, op: UnOp, v: Value, e: &Expr) -> Value {
        match (op, v) {
            (_, Value::Poison) => Value::Poison,
            (UnOp::Neg, Value::Int(i)) => match i.checked_neg() {
                Some(n) => Value::Int(n),
                None => self.overflow(e),
            },
            (UnOp::Neg, Value::Float(x)) => Value::Float(-x),
            (UnOp::Not, Value::Bool(b)) => Value::Bool(!b),
            (op, v) => {
                let (sym, wants) = match op {
                    UnOp::Neg => ("-", "a number"),
                    UnOp::Not => ("not", "`true` or `false`"),
                };
                self.error(
                    Diagnostic::error(format!("`{sym}` needs {wants}, found {}", v.describe()))
                        .at(e.span, "cannot apply here"),
                );
                Value::Poison
            }
        }
    }

    fn overflow(&mut self, e: &Expr) -> Value {
        self.error(Diagnostic::error("integer overflow").at(e.span, "the result does not fit in 64 bits"));
        Value::Poison
    }

    fn binary(&mut self, env: &Env<'_>, ctx: Ctx, op: BinOp, l: &Expr, r: &Expr, e: &Expr) -> Value {
        let lv = self.eval(env, ctx, l);
        // `and` / `or` short-circuit, so `stride != 1 or channels(x) != c` needs no shape
        // when the left side decides.
        match (op, &lv) {
            (BinOp::And, Value::Bool(false)) => return Value::Bool(false),
            (BinOp::Or, Value::Bool(true)) => return Value::Bool(true),
            _ => {}
        }
        let rv = self.eval(env, ctx, r);
        use Value::*;
        match (op, lv, rv) {
            (_, Poison, _) | (_, _, Poison) => Poison,
            (BinOp::And | BinOp::Or, Bool(_), Bool(b)) => Bool(b),
            (BinOp::Add, Tensor(a), Tensor(b)) => {
                self.apply_layer(ctx, crate::front::layers::ADD, vec![a, b], Vec::new(), e.span)
            }
            (BinOp::Sub, Tensor(a), Tensor(b)) => {
                self.apply_layer(ctx, crate::front::layers::SUB, vec![a, b], Vec::new(), e.span)
            }
            (BinOp::Mul, Tensor(a), Tensor(b)) => {
                self.apply_layer(ctx, crate::front::layers::MUL, vec![a, b], Vec::new(), e.span)
            }
            (op, Int(a), Int(b)) => self.int_op(op, a, b, e, r),
            (op, a @ (Int(_) | Float(_)), b @ (Int(_) | Float(_))) => {
                let (x, y) = (as_f64(&a), as_f64(&b));
                match op {
                    BinOp::Add => Float(x + y),
                    BinOp::Sub => Float(x - y),
                    BinOp::Mul => Float(x * y),
                    BinOp::Div if y == 0.0 => self.div_zero(r),
                    BinOp::Div => Float(x / y),
                    BinOp::Rem if y == 0.0 => self.div_zero(r),
                    BinOp::Rem => Float(x % y),
                    BinOp::Eq => Bool(x == y),
                    BinOp::Ne => Bool(x != y),
                    BinOp::Lt => Bool(x < y),
                    BinOp::Le => Bool(x <= y),
                    BinOp::Gt => Bool(x > y),
                    BinOp::Ge => Bool(x >= y),
                    BinOp::And | BinOp::Or => self.type_error(op, &a, &b, e),
                }
            }
            (BinOp::Eq, a, b) if comparable(&a, &b) => Bool(a == b),
            (BinOp::Ne, a, b) if comparable(&a, &b) => Bool(a != b),
            (op, a, b) => self.type_error(op, &a, &b, e),
        }
    }

    fn int_op(&mut self, op: BinOp, a: i64, b: i64, e: &Expr, r: &Expr) -> Value {
        let checked = match op {
            BinOp::Add => a.checked_add(b),
            BinOp::Sub => a.checked_sub(b),
            BinOp::Mul => a.checked_mul(b),
            BinOp::Div | BinOp::Rem if b == 0 => return self.div_zero(r),
            // Integer division rounds down, as Python's `//`: sizes are integers.
            BinOp::Div => floor_div(a, b),
            BinOp::Rem => floor_div(a, b).map(|q| a - q * b),
            BinOp::Eq => return Value::Bool(a == b),
            BinOp::Ne => return Value::Bool(a != b),
            BinOp::Lt => return Value::Bool(a < b),
            BinOp::Le => return Value::Bool(a <= b),
            BinOp::Gt => return Value::Bool(a > b),
            BinOp::Ge => return Value::Bool(a >= b),
            BinOp::And | BinOp::Or => return self.type_error(op, &Value::Int(a), &Value::Int(b), e),
        };
        match checked {
            Some(v) => Value::Int(v),
            None => self.overflow(e),
        }
    }

    fn div_zero(&mut self, r: &Expr) -> Value {
        self.error(Diagnostic::error("division by zero").at(r.span, "this is zero"));
        Value::Poison
    }

    fn type_error(&mut self, op: BinOp, a: &Value, b: &Value, e: &Expr) -> Value {
        let mut d = Diagnostic::error(format!(
            "cannot apply `{}` to {} and {}",
            op.symbol(),
            a.describe(),
            b.describe()
        ))
        .at(e.span, "unsupported operands");
        if let (Value::Tensor(_), Value::Int(_)) | (Value::Int(_), Value::Tensor(_)) = (a, b) {
            if op == BinOp::Mul {
                d = d.with_help(
                    "to repeat a layer or block, use it as a pipeline stage: `x |> basic(64) * 2`",
                );
            }
        } else if let (Value::Tensor(_), Value::Tensor(_)) = (a, b) {
            d = d.with_help(
                "tensors can be added (`a + b`), multiplied (`a * b`) or joined with `concat(a, b)`",
            );
        }
        self.error(d);
        Value::Poison
    }

    /// Applies one pipeline stage (`|> conv(..) * n`) to `input`.
    fn stage(&mut self, env: &Env<'_>, ctx: Ctx, stage: &Stage, input: Value) -> Value {
        if let Value::Poison = input {
            return input;
        }
        let times = match &stage.repeat {
            None => 1,
            Some(count) => match self.eval(env, ctx, count) {
                Value::Int(n) if (0..=MAX_NODES as i64).contains(&n) => n as usize,
                Value::Poison => return Value::Poison,
                Value::Int(n) if n < 0 => {
                    self.error(
                        Diagnostic::error(format!("cannot repeat a stage {n} times"))
                            .at(count.span, "negative count"),
                    );
                    return Value::Poison;
                }
                Value::Int(n) => {
                    self.error(Diagnostic::error(format!("cannot repeat a stage {n} times")).at(
                        count.span,
                        format!("more than {MAX_NODES}, the most layers a network may have"),
                    ));
                    return Value::Poison;
                }
                other => {
                    self.error(
                        Diagnostic::error(format!(
                            "a repeat count must be an integer, found {}",
                            other.describe()
                        ))
                        .at(count.span, "not an integer"),
                    );
                    return Value::Poison;
                }
            },
        };
        let mut v = input;
        for _ in 0..times {
            if !self.spend(1, stage.span) {
                return Value::Poison;
            }
            v = match &stage.kind {
                StageKind::Call(call) => self.call(env, ctx, call, Some(v)),
                StageKind::Group(stages) => {
                    let mut g = v;
                    for s in stages {
                        g = self.stage(env, ctx, s, g);
                    }
                    g
                }
            };
            if let Value::Poison = v {
                break;
            }
        }
        v
    }
}

/// Division rounding towards negative infinity (`-7 / 2 == -4`), as Python's `//`.
fn floor_div(a: i64, b: i64) -> Option<i64> {
    let q = a.checked_div(b)?;
    Some(if a % b != 0 && ((a < 0) != (b < 0)) { q - 1 } else { q })
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(x) => *x,
        _ => f64::NAN,
    }
}

/// Values `==` may compare: same kind, not tensors.
fn comparable(a: &Value, b: &Value) -> bool {
    matches!(
        (a, b),
        (Value::Bool(_), Value::Bool(_))
            | (Value::Str(_), Value::Str(_))
            | (Value::Symbol(_), Value::Symbol(_))
    )
}
