//! Declarative argument schemas for layers, and binding call arguments to them.
//!
//! Each layer declares its arguments once ([`ArgSpec`]); from that one declaration come
//! argument checking with precise messages, defaults, the canonical description printed
//! in the shape plan, and the argument tables in `docs/language.md` (a test keeps them in
//! step).

use super::LayerSpec;
use crate::front::value::{Value, format_float};
use crate::ir::init::Init;
use crate::support::diagnostic::Diagnostic;
use crate::support::source::Span;
use crate::support::suggest::did_you_mean;

/// Largest integer a size argument (channels, kernel, hidden units) may take.
pub const MAX_DIM: i64 = 1 << 31;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArgType {
    Int,
    Float,
    Bool,
    /// A positive integer or `[height, width]`: kernel, stride, dilation.
    Size,
    /// `n`, `[h, w]`, `[top, bottom, left, right]`, `same` or `valid`.
    Padding,
    Init,
}

impl ArgType {
    fn expected(self) -> &'static str {
        match self {
            ArgType::Int => "an integer",
            ArgType::Float => "a number",
            ArgType::Bool => "`true` or `false`",
            ArgType::Size => "a positive integer or [height, width]",
            ArgType::Padding => "an integer, [h, w], [top, bottom, left, right], `same` or `valid`",
            ArgType::Init => "an initialiser (he, xavier, lecun, zeros, normal(std), uniform(a))",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArgDefault {
    Required,
    /// Optional with no default value; the layer decides (`stride` of a pool is its kernel,
    /// `init` follows the activation).
    Absent,
    Value(ArgValue),
}

#[derive(Clone, Copy, Debug)]
pub struct ArgSpec {
    pub name: &'static str,
    pub ty: ArgType,
    pub default: ArgDefault,
    /// May be given by position (in declaration order) as well as by name.
    pub positional: bool,
    pub doc: &'static str,
}

impl ArgSpec {
    pub const fn required(name: &'static str, ty: ArgType, doc: &'static str) -> ArgSpec {
        ArgSpec { name, ty, default: ArgDefault::Required, positional: true, doc }
    }
    pub const fn named(name: &'static str, ty: ArgType, default: ArgValue, doc: &'static str) -> ArgSpec {
        ArgSpec { name, ty, default: ArgDefault::Value(default), positional: false, doc }
    }
    pub const fn optional(name: &'static str, ty: ArgType, doc: &'static str) -> ArgSpec {
        ArgSpec { name, ty, default: ArgDefault::Absent, positional: false, doc }
    }
    /// Makes a named argument positional too (after the required ones).
    pub const fn positional(mut self) -> ArgSpec {
        self.positional = true;
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Padding {
    Explicit {
        top: u64,
        bottom: u64,
        left: u64,
        right: u64,
    },
    /// Output size is `ceil(input / stride)`; extra padding goes to the bottom/right.
    Same,
    Valid,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArgValue {
    Int(i64),
    Float(f64),
    Bool(bool),
    Size(u64, u64),
    Padding(Padding),
    Init(Init),
}

impl std::fmt::Display for ArgValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ArgValue::Int(i) => write!(f, "{i}"),
            ArgValue::Float(x) => write!(f, "{}", format_float(x)),
            ArgValue::Bool(b) => write!(f, "{b}"),
            ArgValue::Size(h, w) if h == w => write!(f, "{h}"),
            ArgValue::Size(h, w) => write!(f, "[{h}, {w}]"),
            ArgValue::Padding(Padding::Same) => write!(f, "same"),
            ArgValue::Padding(Padding::Valid) => write!(f, "valid"),
            ArgValue::Padding(Padding::Explicit { top, bottom, left, right }) => {
                if top == bottom && left == right && top == left {
                    write!(f, "{top}")
                } else if top == bottom && left == right {
                    write!(f, "[{top}, {left}]")
                } else {
                    write!(f, "[{top}, {bottom}, {left}, {right}]")
                }
            }
            ArgValue::Init(i) => write!(f, "{i}"),
        }
    }
}

/// One argument as written at a call site, already evaluated.
#[derive(Debug, Clone)]
pub struct RawArg {
    pub name: Option<(String, Span)>,
    pub value: Value,
    /// The whole argument (`stride: 2`).
    pub span: Span,
    /// Just the value (`2`).
    pub value_span: Span,
}

/// A layer's arguments after binding: every declared argument has its value or default.
#[derive(Debug, Clone)]
pub struct Args {
    spec: &'static LayerSpec,
    values: Vec<Option<(ArgValue, Option<Span>)>>,
    call: Span,
    /// Arguments found out of range while the layer was built. A layer's build reads every
    /// argument before giving up, so that a call with several bad arguments gets an error
    /// for each; [`Args::take_errors`] hands them over.
    errors: std::cell::RefCell<Vec<Diagnostic>>,
}

impl Args {
    fn get(&self, name: &str) -> Option<ArgValue> {
        let i =
            self.spec.args.iter().position(|a| a.name == name).expect("layer reads an argument it declares");
        self.values[i].map(|(v, _)| v)
    }

    /// Where an argument was written, or the call if it was defaulted.
    pub fn span(&self, name: &str) -> Span {
        let i =
            self.spec.args.iter().position(|a| a.name == name).expect("layer reads an argument it declares");
        self.values[i].and_then(|(_, s)| s).unwrap_or(self.call)
    }

    pub fn int(&self, name: &str) -> i64 {
        match self.get(name) {
            Some(ArgValue::Int(i)) => i,
            other => unreachable!("schema: `{name}` is an integer, got {other:?}"),
        }
    }

    pub fn float(&self, name: &str) -> f64 {
        match self.get(name) {
            Some(ArgValue::Float(x)) => x,
            other => unreachable!("schema: `{name}` is a number, got {other:?}"),
        }
    }

    pub fn bool(&self, name: &str) -> bool {
        match self.get(name) {
            Some(ArgValue::Bool(b)) => b,
            other => unreachable!("schema: `{name}` is a bool, got {other:?}"),
        }
    }

    pub fn size(&self, name: &str) -> Option<(u64, u64)> {
        match self.get(name) {
            Some(ArgValue::Size(h, w)) => Some((h, w)),
            None => None,
            other => unreachable!("schema: `{name}` is a size, got {other:?}"),
        }
    }

    pub fn padding(&self, name: &str) -> Padding {
        match self.get(name) {
            Some(ArgValue::Padding(p)) => p,
            other => unreachable!("schema: `{name}` is a padding, got {other:?}"),
        }
    }

    pub fn init(&self, name: &str) -> Option<Init> {
        match self.get(name) {
            Some(ArgValue::Init(i)) => Some(i),
            None => None,
            other => unreachable!("schema: `{name}` is an initialiser, got {other:?}"),
        }
    }

    /// An integer argument that must lie in `min..=MAX_DIM` (`min` is at least 0). Out of
    /// range, it is recorded as an error and read as `min`, so that the build can go on
    /// to check the other arguments.
    pub fn int_at_least(&self, name: &str, min: i64) -> u64 {
        let v = self.int(name);
        if v < min || v > MAX_DIM {
            let why = if v < min {
                format!("must be at least {min}")
            } else {
                format!("must be at most {MAX_DIM}")
            };
            self.errors.borrow_mut().push(
                Diagnostic::error(format!("`{name}` of `{}` {why}, found {v}", self.spec.name))
                    .at(self.span(name), why),
            );
            return min as u64;
        }
        v as u64
    }

    /// A number argument that must lie in the range `lo..hi` (`hi_inclusive` says whether
    /// `hi` itself is allowed). Out of range, it is recorded as an error and read as `lo`.
    pub fn float_in(&self, name: &str, lo: f64, hi: f64, hi_inclusive: bool) -> f64 {
        let v = self.float(name);
        let ok = v >= lo && (v < hi || (hi_inclusive && v == hi));
        if !ok {
            let range = if hi == f64::INFINITY {
                format!("at least {}", format_float(lo))
            } else {
                format!(
                    "in [{}, {}{}",
                    format_float(lo),
                    format_float(hi),
                    if hi_inclusive { "]" } else { ")" }
                )
            };
            self.errors.borrow_mut().push(
                Diagnostic::error(format!(
                    "`{name}` of `{}` must be {range}, found {}",
                    self.spec.name,
                    format_float(v)
                ))
                .at(self.span(name), format!("must be {range}")),
            );
            return lo;
        }
        v
    }

    /// Whether every argument read so far was in range (checks that combine arguments
    /// are only meaningful then).
    pub fn in_range(&self) -> bool {
        self.errors.borrow().is_empty()
    }

    /// The out-of-range arguments found while building, in the order they were read.
    pub fn take_errors(&self) -> Vec<Diagnostic> {
        std::mem::take(&mut self.errors.borrow_mut())
    }

    /// An error about one argument, pointing at it.
    pub fn error(&self, name: &str, message: impl Into<String>, label: impl Into<String>) -> Diagnostic {
        Diagnostic::error(message).at(self.span(name), label)
    }

    /// The call in canonical source form with evaluated values: required arguments by
    /// position, others by name and only where they differ from the default.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        // A layer whose only positional argument is optional reads best without the name:
        // `dropout(0.25)`, `lrn(3)`.
        let lone = !self.spec.args.iter().any(|a| a.default == ArgDefault::Required);
        for (i, (spec, value)) in self.spec.args.iter().zip(&self.values).enumerate() {
            let Some((v, _)) = value else { continue };
            match spec.default {
                ArgDefault::Required => parts.push(v.to_string()),
                ArgDefault::Value(d) if d == *v => {}
                _ if lone && i == 0 && spec.positional => parts.push(v.to_string()),
                _ => parts.push(format!("{}: {v}", spec.name)),
            }
        }
        if parts.is_empty() {
            self.spec.name.to_string()
        } else {
            format!("{}({})", self.spec.name, parts.join(", "))
        }
    }
}

/// Binds evaluated call arguments to a layer's schema. `Err(empty)` means an argument was
/// already invalid (poisoned) and nothing new needs reporting.
pub fn bind(spec: &'static LayerSpec, raw: &[RawArg], call: Span) -> Result<Args, Vec<Diagnostic>> {
    let mut values: Vec<Option<(ArgValue, Option<Span>)>> = vec![None; spec.args.len()];
    let mut given: Vec<Option<Span>> = vec![None; spec.args.len()];
    let mut errors = Vec::new();
    let mut poisoned = false;
    let positional: Vec<usize> = (0..spec.args.len()).filter(|&i| spec.args[i].positional).collect();
    let mut next_positional = 0;
    for arg in raw {
        let index = match &arg.name {
            None => {
                let Some(&i) = positional.get(next_positional) else {
                    errors.push(too_many_positional(spec, arg.span, positional.len()));
                    continue;
                };
                next_positional += 1;
                i
            }
            Some((name, name_span)) => match spec.args.iter().position(|a| a.name == name) {
                Some(i) => i,
                None => {
                    errors.push(unknown_arg(spec, name, *name_span));
                    continue;
                }
            },
        };
        if let Some(first) = given[index] {
            errors.push(
                Diagnostic::error(format!("`{}` is given twice", spec.args[index].name))
                    .at(arg.span, "given again here")
                    .with_secondary(first, "first given here"),
            );
            continue;
        }
        given[index] = Some(arg.span);
        if arg.value == Value::Poison {
            poisoned = true;
            continue;
        }
        match convert(spec.args[index].ty, &arg.value) {
            Ok(v) => values[index] = Some((v, Some(arg.value_span))),
            Err(detail) => errors.push(
                Diagnostic::error(format!(
                    "`{}` of `{}` expects {}, found {}",
                    spec.args[index].name,
                    spec.name,
                    spec.args[index].ty.expected(),
                    arg.value.describe()
                ))
                .at(
                    arg.value_span,
                    detail.unwrap_or_else(|| format!("expected {}", spec.args[index].ty.expected())),
                ),
            ),
        }
    }
    for (i, a) in spec.args.iter().enumerate() {
        match a.default {
            ArgDefault::Required if given[i].is_none() => errors.push(
                Diagnostic::error(format!("`{}` needs `{}` ({})", spec.name, a.name, a.doc))
                    .at(call, format!("`{}` is missing", a.name))
                    .with_help(format!("write it as `{}`", spec.usage())),
            ),
            ArgDefault::Value(d) if values[i].is_none() && given[i].is_none() => values[i] = Some((d, None)),
            _ => {}
        }
    }
    if !errors.is_empty() || poisoned {
        return Err(errors);
    }
    Ok(Args { spec, values, call, errors: Default::default() })
}

fn too_many_positional(spec: &LayerSpec, span: Span, max: usize) -> Diagnostic {
    let names: Vec<&str> = spec.args.iter().filter(|a| a.positional).map(|a| a.name).collect();
    let message = if max == 0 {
        format!("`{}` takes no positional arguments", spec.name)
    } else {
        format!("`{}` takes at most {max} positional argument{}", spec.name, if max == 1 { "" } else { "s" })
    };
    let mut d = Diagnostic::error(message).at(span, "unexpected argument");
    if !names.is_empty() {
        d = d.with_note(format!("its positional arguments are: {}", names.join(", ")));
    }
    d.with_help(format!("name the argument, as in `{}`", spec.usage()))
}

pub(crate) fn unknown_arg(spec: &LayerSpec, name: &str, span: Span) -> Diagnostic {
    let names: Vec<&str> = spec.args.iter().map(|a| a.name).collect();
    let d =
        Diagnostic::error(format!("`{}` has no argument `{name}`", spec.name)).at(span, "unknown argument");
    match did_you_mean(name, names.iter().copied()) {
        Some(s) => d.with_help(format!("did you mean `{s}`?")),
        None if names.is_empty() => d.with_note(format!("`{}` takes no arguments", spec.name)),
        None => d.with_note(format!("its arguments are: {}", names.join(", "))),
    }
}

/// Converts a value to an argument type, or says (optionally more precisely than "expected
/// ...") what is wrong.
fn convert(ty: ArgType, v: &Value) -> Result<ArgValue, Option<String>> {
    let dim = |v: &Value, min: i64| match v {
        Value::Int(i) if (min..=MAX_DIM).contains(i) => Ok(*i as u64),
        Value::Int(i) if *i < min => Err(Some(format!("must be at least {min}"))),
        Value::Int(_) => Err(Some(format!("must be at most {MAX_DIM}"))),
        _ => Err(None),
    };
    match (ty, v) {
        (ArgType::Int, Value::Int(i)) => Ok(ArgValue::Int(*i)),
        (ArgType::Float, Value::Int(i)) => Ok(ArgValue::Float(*i as f64)),
        (ArgType::Float, Value::Float(x)) => Ok(ArgValue::Float(*x)),
        (ArgType::Bool, Value::Bool(b)) => Ok(ArgValue::Bool(*b)),
        (ArgType::Size, Value::Int(_)) => {
            let n = dim(v, 1)?;
            Ok(ArgValue::Size(n, n))
        }
        (ArgType::Size, Value::List(items)) if items.len() == 2 => {
            Ok(ArgValue::Size(dim(&items[0], 1)?, dim(&items[1], 1)?))
        }
        (ArgType::Padding, Value::Int(_)) => {
            let p = dim(v, 0)?;
            Ok(ArgValue::Padding(Padding::Explicit { top: p, bottom: p, left: p, right: p }))
        }
        (ArgType::Padding, Value::List(items)) if items.len() == 2 => {
            let (h, w) = (dim(&items[0], 0)?, dim(&items[1], 0)?);
            Ok(ArgValue::Padding(Padding::Explicit { top: h, bottom: h, left: w, right: w }))
        }
        (ArgType::Padding, Value::List(items)) if items.len() == 4 => {
            Ok(ArgValue::Padding(Padding::Explicit {
                top: dim(&items[0], 0)?,
                bottom: dim(&items[1], 0)?,
                left: dim(&items[2], 0)?,
                right: dim(&items[3], 0)?,
            }))
        }
        (ArgType::Padding, Value::Symbol(s)) if s == "same" => Ok(ArgValue::Padding(Padding::Same)),
        (ArgType::Padding, Value::Symbol(s)) if s == "valid" => Ok(ArgValue::Padding(Padding::Valid)),
        (ArgType::Init, Value::Symbol(s)) => Init::from_name(s).map(ArgValue::Init).ok_or(None),
        (ArgType::Init, Value::Ctor(c)) => init_ctor(c).map(ArgValue::Init),
        _ => Err(None),
    }
}

/// `normal(std)` / `uniform(a)`.
fn init_ctor(c: &crate::front::value::Ctor) -> Result<Init, Option<String>> {
    let number = |c: &crate::front::value::Ctor| match c.args.as_slice() {
        [a] if a.name.is_none() || a.name.as_ref().is_some_and(|(n, _)| n == "std" || n == "a") => {
            match a.value {
                Value::Float(x) if x > 0.0 && x.is_finite() => Ok(x),
                Value::Int(i) if i > 0 => Ok(i as f64),
                _ => Err(Some(format!("`{}` takes one positive number", c.name))),
            }
        }
        _ => Err(Some(format!("`{}` takes one positive number", c.name))),
    };
    match c.name.as_str() {
        "normal" => Ok(Init::Normal { std: number(c)? }),
        "uniform" => Ok(Init::Uniform { a: number(c)? }),
        _ => Err(None),
    }
}
