//! Element-wise functions as small programs over a few primitives.
//!
//! Every element-wise op of the tensor-op graph — activations, `add`, `mul`, scaling, and
//! the backward ops derived from them — is one [`Elementwise`] program: a list of
//! instructions in SSA form over the op's inputs, the value of the last one being the
//! result. The reference interpreter evaluates the program ([`Elementwise::eval`]),
//! scheduling inlines it into loop nests and epilogues, and automatic differentiation
//! derives each input's gradient as another program ([`Elementwise::derivative`]). A new
//! activation is therefore its formula (see `front/layers/activation.rs`) and nothing else.
//!
//! `max` and `min` are selects (`a > b ? a : b`), as generated code computes them: a NaN
//! operand yields the other one, and the derivative of `max(a, b)` is `da` where the
//! result exceeds `b`, else `db` — at a tie, the second operand's (relu′(0) = 0, as in
//! PyTorch).

use std::collections::HashMap;
use std::fmt;

/// A primitive function of one value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prim {
    Tanh,
    /// 1 / (1 + e⁻ˣ).
    Sigmoid,
    Exp,
    /// The error function, 2/√π ∫₀ˣ e^(−t²) dt.
    Erf,
    Sqrt,
    /// The natural logarithm.
    Log,
}

impl Prim {
    pub fn name(self) -> &'static str {
        match self {
            Prim::Tanh => "tanh",
            Prim::Sigmoid => "sigmoid",
            Prim::Exp => "exp",
            Prim::Erf => "erf",
            Prim::Sqrt => "sqrt",
            Prim::Log => "log",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    /// `a > b ? a : b`.
    Max,
    /// `a < b ? a : b`.
    Min,
}

/// The comparison of a select.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cmp {
    Gt,
    Lt,
}

impl Cmp {
    pub fn holds<T: PartialOrd>(self, a: T, b: T) -> bool {
        match self {
            Cmp::Gt => a > b,
            Cmp::Lt => a < b,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Cmp::Gt => ">",
            Cmp::Lt => "<",
        }
    }
}

/// One instruction. Operands are indices of earlier instructions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expr {
    /// The op's `i`-th input.
    Input(usize),
    Const(f32),
    Prim(Prim, usize),
    Bin(BinOp, usize, usize),
    /// `if a cmp b { then } else { otherwise }`: `Select(cmp, a, b, then, otherwise)`.
    Select(Cmp, usize, usize, usize, usize),
}

/// An element-wise function of `inputs` tensors of one length.
#[derive(Clone, Debug, PartialEq)]
pub struct Elementwise {
    /// The op's name in listings: `relu`, `add`, `tanh_backward`.
    pub name: String,
    pub inputs: usize,
    /// In SSA form; the last instruction's value is the result.
    pub program: Vec<Expr>,
}

/// A value being built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct V(usize);

/// Builds programs, folding the identities that derivatives produce (`x · 1`, `x + 0`,
/// `x · 0`) and sharing equal instructions, so that a derivative is no larger than the
/// rule one would write by hand.
#[derive(Default)]
pub struct Builder {
    program: Vec<Expr>,
    seen: HashMap<Key, usize>,
}

/// An instruction as a hash key (constants by their bits).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    Input(usize),
    Const(u32),
    Prim(Prim, usize),
    Bin(BinOp, usize, usize),
    Select(Cmp, usize, usize, usize, usize),
}

impl Builder {
    fn push(&mut self, e: Expr) -> V {
        let key = match e {
            Expr::Input(i) => Key::Input(i),
            Expr::Const(c) => Key::Const(c.to_bits()),
            Expr::Prim(p, a) => Key::Prim(p, a),
            Expr::Bin(op, a, b) => Key::Bin(op, a, b),
            Expr::Select(c, a, b, t, f) => Key::Select(c, a, b, t, f),
        };
        if let Some(&i) = self.seen.get(&key) {
            return V(i);
        }
        self.program.push(e);
        self.seen.insert(key, self.program.len() - 1);
        V(self.program.len() - 1)
    }

    fn constant(&self, v: V) -> Option<f32> {
        match self.program[v.0] {
            Expr::Const(c) => Some(c),
            _ => None,
        }
    }

    pub fn input(&mut self, i: usize) -> V {
        self.push(Expr::Input(i))
    }

    pub fn constant_value(&mut self, c: f32) -> V {
        self.push(Expr::Const(c))
    }

    pub fn prim(&mut self, p: Prim, a: V) -> V {
        self.push(Expr::Prim(p, a.0))
    }

    pub fn bin(&mut self, op: BinOp, a: V, b: V) -> V {
        let (ca, cb) = (self.constant(a), self.constant(b));
        match (op, ca, cb) {
            (BinOp::Add, Some(0.0), _) | (BinOp::Mul, Some(1.0), _) => return b,
            (BinOp::Add | BinOp::Sub, _, Some(0.0)) | (BinOp::Mul | BinOp::Div, _, Some(1.0)) => return a,
            // Structural zeros: a derivative that does not depend on an input.
            (BinOp::Mul, Some(0.0), _) | (BinOp::Mul, _, Some(0.0)) => return self.constant_value(0.0),
            _ => {}
        }
        self.push(Expr::Bin(op, a.0, b.0))
    }

    pub fn select(&mut self, cmp: Cmp, a: V, b: V, then: V, otherwise: V) -> V {
        if then == otherwise {
            return then;
        }
        self.push(Expr::Select(cmp, a.0, b.0, then.0, otherwise.0))
    }

    pub fn add(&mut self, a: V, b: V) -> V {
        self.bin(BinOp::Add, a, b)
    }

    pub fn sub(&mut self, a: V, b: V) -> V {
        self.bin(BinOp::Sub, a, b)
    }

    pub fn mul(&mut self, a: V, b: V) -> V {
        self.bin(BinOp::Mul, a, b)
    }

    pub fn div(&mut self, a: V, b: V) -> V {
        self.bin(BinOp::Div, a, b)
    }

    pub fn max(&mut self, a: V, b: V) -> V {
        self.bin(BinOp::Max, a, b)
    }

    pub fn min(&mut self, a: V, b: V) -> V {
        self.bin(BinOp::Min, a, b)
    }

    /// The program with `result` as its value: instructions `result` does not need are
    /// dropped and the rest renumbered.
    fn finish(mut self, name: String, inputs: usize, result: V) -> Elementwise {
        // The result is a computed value, so that a program inlined elsewhere ends with
        // it: an input is copied (`max(x, x)` is `x` exactly, NaN included).
        let result = match self.program[result.0] {
            Expr::Input(_) => {
                self.program.push(Expr::Bin(BinOp::Max, result.0, result.0));
                V(self.program.len() - 1)
            }
            _ => result,
        };
        let mut live = vec![false; self.program.len()];
        live[result.0] = true;
        for i in (0..self.program.len()).rev() {
            if live[i] {
                for o in operands(&self.program[i]) {
                    live[o] = true;
                }
            }
        }
        let mut at = vec![usize::MAX; self.program.len()];
        let mut program = Vec::new();
        for (i, e) in self.program.iter().enumerate() {
            if live[i] {
                at[i] = program.len();
                program.push(renumber(e, &at));
            }
        }
        // Instructions after the result are dead, so the result is last.
        Elementwise { name, inputs, program }
    }
}

/// The operands of an instruction.
pub fn operands(e: &Expr) -> Vec<usize> {
    match *e {
        Expr::Input(_) | Expr::Const(_) => Vec::new(),
        Expr::Prim(_, a) => vec![a],
        Expr::Bin(_, a, b) => vec![a, b],
        Expr::Select(_, a, b, t, f) => vec![a, b, t, f],
    }
}

pub(super) fn renumber(e: &Expr, at: &[usize]) -> Expr {
    match *e {
        Expr::Input(i) => Expr::Input(i),
        Expr::Const(c) => Expr::Const(c),
        Expr::Prim(p, a) => Expr::Prim(p, at[a]),
        Expr::Bin(op, a, b) => Expr::Bin(op, at[a], at[b]),
        Expr::Select(c, a, b, t, f) => Expr::Select(c, at[a], at[b], at[t], at[f]),
    }
}

/// An instruction other than an input, as [`Elementwise::inline`] hands it over.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Arith {
    Const(f32),
    Prim(Prim, usize),
    Bin(BinOp, usize, usize),
    Select(Cmp, usize, usize, usize, usize),
}

/// What the backward op of an element-wise op reads besides the output's gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The forward op's result (tanh′ = 1 − y²: the input need not be kept).
    Output,
    /// The forward op's `i`-th input.
    Input(usize),
}

/// The gradient of one input of an element-wise op.
#[derive(Clone, Debug, PartialEq)]
pub enum Derivative {
    /// The result does not depend on the input.
    Zero,
    /// The input's gradient is the output's (`add`).
    Same,
    /// `program(dy, sources…)`: the program's input 0 is the output's gradient, input
    /// `1 + j` the `j`-th source.
    Program(Elementwise, Vec<Source>),
}

impl Elementwise {
    /// `name(x₀, x₁, …) = f(builder, [x₀, x₁, …])`.
    pub fn new(
        name: impl Into<String>,
        inputs: usize,
        f: impl FnOnce(&mut Builder, &[V]) -> V,
    ) -> Elementwise {
        let mut b = Builder::default();
        let xs: Vec<V> = (0..inputs).map(|i| b.input(i)).collect();
        let result = f(&mut b, &xs);
        b.finish(name.into(), inputs, result)
    }

    /// The sum of `n` tensors, added left to right.
    pub fn add(n: usize) -> Elementwise {
        Elementwise::new("add", n, |b, x| x[1..].iter().fold(x[0], |acc, &v| b.add(acc, v)))
    }

    /// The product of two tensors.
    pub fn mul() -> Elementwise {
        Elementwise::new("mul", 2, |b, x| b.mul(x[0], x[1]))
    }

    /// `x · factor`.
    pub fn scale(factor: f32) -> Elementwise {
        Elementwise::new("scale", 1, |b, x| {
            let c = b.constant_value(factor);
            b.mul(x[0], c)
        })
    }

    /// A primitive function of one tensor (`tanh`, `sigmoid`).
    pub fn prim(p: Prim) -> Elementwise {
        Elementwise::new(p.name(), 1, |b, x| b.prim(p, x[0]))
    }

    /// Why the program is malformed, if it is: an operand that is not an earlier
    /// instruction, an input beyond `inputs`, or no instructions at all.
    pub fn check(&self) -> Result<(), String> {
        if self.program.is_empty() {
            return Err(format!("the element-wise program `{}` is empty", self.name));
        }
        for (k, e) in self.program.iter().enumerate() {
            if let Expr::Input(i) = *e
                && i >= self.inputs
            {
                return Err(format!("`{}` reads input {i} of {}", self.name, self.inputs));
            }
            if let Some(a) = operands(e).into_iter().find(|&a| a >= k) {
                return Err(format!(
                    "instruction {k} of `{}` uses {a}, which is not an earlier value",
                    self.name
                ));
            }
        }
        Ok(())
    }

    /// Whether the program reads input `i`.
    pub fn reads(&self, i: usize) -> bool {
        self.program.contains(&Expr::Input(i))
    }

    /// Appends the program to another instruction list: `args[i]` is the index there of
    /// input `i`'s value, and `push` appends an instruction (operands already renumbered)
    /// and returns its index. Returns the index of the result.
    pub fn inline(&self, args: &[usize], mut push: impl FnMut(Arith) -> usize) -> usize {
        let mut at: Vec<usize> = Vec::with_capacity(self.program.len());
        for e in &self.program {
            let i = match *e {
                Expr::Input(i) => args[i],
                Expr::Const(c) => push(Arith::Const(c)),
                Expr::Prim(p, a) => push(Arith::Prim(p, at[a])),
                Expr::Bin(op, a, b) => push(Arith::Bin(op, at[a], at[b])),
                Expr::Select(c, a, b, t, f) => push(Arith::Select(c, at[a], at[b], at[t], at[f])),
            };
            at.push(i);
        }
        *at.last().expect("programs are not empty")
    }

    /// The program's value at `args` (one value per input).
    pub fn eval<T: super::reference::Real>(&self, args: &[T]) -> T {
        let mut v: Vec<T> = Vec::with_capacity(self.program.len());
        for e in &self.program {
            let x = match *e {
                Expr::Input(i) => args[i],
                Expr::Const(c) => T::from_f32(c),
                Expr::Prim(p, a) => v[a].prim(p),
                Expr::Bin(op, a, b) => {
                    let (a, b) = (v[a], v[b]);
                    match op {
                        BinOp::Add => a + b,
                        BinOp::Sub => a - b,
                        BinOp::Mul => a * b,
                        BinOp::Div => a / b,
                        BinOp::Max => {
                            if a > b {
                                a
                            } else {
                                b
                            }
                        }
                        BinOp::Min => {
                            if a < b {
                                a
                            } else {
                                b
                            }
                        }
                    }
                }
                Expr::Select(c, a, b, t, f) => {
                    if c.holds(v[a], v[b]) {
                        v[t]
                    } else {
                        v[f]
                    }
                }
            };
            v.push(x);
        }
        *v.last().expect("programs are not empty")
    }

    /// The gradient of input `wrt`, derived by the chain rule through the program. The
    /// derivative reads the forward op's output wherever the rules can use it (tanh′,
    /// sigmoid′, relu′ from `y`) and its inputs otherwise; intermediate values it needs are
    /// recomputed from those.
    pub fn derivative(&self, wrt: usize) -> Derivative {
        let mut d = Derive { f: self, b: Builder::default(), sources: Vec::new(), forward: HashMap::new() };
        let dy = d.b.input(0);
        let last = self.program.len() - 1;
        let mut tangent: Vec<V> = Vec::with_capacity(self.program.len());
        for (k, e) in self.program.iter().enumerate() {
            let zero = d.b.constant_value(0.0);
            let t = match *e {
                Expr::Input(i) => d.b.constant_value(if i == wrt { 1.0 } else { 0.0 }),
                Expr::Const(_) => zero,
                Expr::Prim(p, a) => {
                    let da = tangent[a];
                    if da == zero {
                        zero
                    } else {
                        let r = d.value(k);
                        let local = match p {
                            Prim::Tanh => {
                                let one = d.b.constant_value(1.0);
                                let sq = d.b.mul(r, r);
                                d.b.sub(one, sq)
                            }
                            Prim::Sigmoid => {
                                let one = d.b.constant_value(1.0);
                                let rest = d.b.sub(one, r);
                                d.b.mul(r, rest)
                            }
                            Prim::Exp => r,
                            Prim::Erf => {
                                // 2/√π · e^(−a²)
                                let x = d.value(a);
                                let sq = d.b.mul(x, x);
                                let zero = d.b.constant_value(0.0);
                                let neg = d.b.sub(zero, sq);
                                let e = d.b.prim(Prim::Exp, neg);
                                let c = d.b.constant_value(std::f32::consts::FRAC_2_SQRT_PI);
                                d.b.mul(c, e)
                            }
                            Prim::Sqrt => {
                                let half = d.b.constant_value(0.5);
                                d.b.div(half, r)
                            }
                            Prim::Log => {
                                let x = d.value(a);
                                let one = d.b.constant_value(1.0);
                                d.b.div(one, x)
                            }
                        };
                        d.b.mul(local, da)
                    }
                }
                Expr::Bin(op, a, b) => {
                    let (da, db) = (tangent[a], tangent[b]);
                    if da == zero && db == zero {
                        zero
                    } else {
                        match op {
                            BinOp::Add => d.b.add(da, db),
                            BinOp::Sub => d.b.sub(da, db),
                            BinOp::Mul => {
                                let (x, y) = (d.value(a), d.value(b));
                                let l = d.b.mul(da, y);
                                let r = d.b.mul(x, db);
                                d.b.add(l, r)
                            }
                            BinOp::Div => {
                                // (da − r · db) / b
                                let r = d.value(k);
                                let y = d.value(b);
                                let rdb = d.b.mul(r, db);
                                let num = d.b.sub(da, rdb);
                                d.b.div(num, y)
                            }
                            BinOp::Max | BinOp::Min => {
                                let r = d.value(k);
                                let y = d.value(b);
                                let cmp = if op == BinOp::Max { Cmp::Gt } else { Cmp::Lt };
                                d.b.select(cmp, r, y, da, db)
                            }
                        }
                    }
                }
                Expr::Select(c, a, b, t, f) => {
                    let (dt, df) = (tangent[t], tangent[f]);
                    if dt == zero && df == zero {
                        zero
                    } else {
                        let (x, y) = (d.value(a), d.value(b));
                        d.b.select(c, x, y, dt, df)
                    }
                }
            };
            tangent.push(t);
        }
        let t = tangent[last];
        match d.b.constant(t) {
            Some(0.0) => return Derivative::Zero,
            Some(1.0) => return Derivative::Same,
            _ => {}
        }
        let result = d.b.mul(dy, t);
        let sources = d.sources;
        let program = d.b.finish(format!("{}_backward", self.name), 1 + sources.len(), result);
        Derivative::Program(program, sources)
    }
}

/// State of one derivation: the program being built and the forward values it reads.
struct Derive<'f> {
    f: &'f Elementwise,
    b: Builder,
    sources: Vec<Source>,
    /// Forward instruction → its value in the derivative's program.
    forward: HashMap<usize, V>,
}

impl Derive<'_> {
    /// The value of forward instruction `k` in the derivative's program: read from the
    /// output or an input when it is one, else recomputed from its operands.
    fn value(&mut self, k: usize) -> V {
        if let Some(&v) = self.forward.get(&k) {
            return v;
        }
        let last = self.f.program.len() - 1;
        let v = match self.f.program[k] {
            Expr::Input(i) => self.source(Source::Input(i)),
            _ if k == last => self.source(Source::Output),
            Expr::Const(c) => self.b.constant_value(c),
            Expr::Prim(p, a) => {
                let a = self.value(a);
                self.b.prim(p, a)
            }
            Expr::Bin(op, a, b) => {
                let (a, b) = (self.value(a), self.value(b));
                self.b.bin(op, a, b)
            }
            Expr::Select(c, a, b, t, f) => {
                let (a, b, t, f) = (self.value(a), self.value(b), self.value(t), self.value(f));
                self.b.select(c, a, b, t, f)
            }
        };
        self.forward.insert(k, v);
        v
    }

    fn source(&mut self, s: Source) -> V {
        let j = match self.sources.iter().position(|x| *x == s) {
            Some(j) => j,
            None => {
                self.sources.push(s);
                self.sources.len() - 1
            }
        };
        self.b.input(1 + j)
    }
}

impl fmt::Display for Elementwise {
    /// `relu(x0) = max(x0, 0)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let args: Vec<String> = (0..self.inputs).map(|i| format!("x{i}")).collect();
        write!(f, "{}({}) = {}", self.name, args.join(", "), self.text(self.program.len() - 1))
    }
}

impl Elementwise {
    /// Instruction `i` as an expression.
    fn text(&self, i: usize) -> String {
        match self.program[i] {
            Expr::Input(j) => format!("x{j}"),
            Expr::Const(c) => format!("{c}"),
            Expr::Prim(p, a) => format!("{}({})", p.name(), self.text(a)),
            Expr::Bin(BinOp::Max, a, b) => format!("max({}, {})", self.text(a), self.text(b)),
            Expr::Bin(BinOp::Min, a, b) => format!("min({}, {})", self.text(a), self.text(b)),
            Expr::Bin(op, a, b) => {
                let s = match op {
                    BinOp::Add => "+",
                    BinOp::Sub => "-",
                    BinOp::Mul => "·",
                    _ => "/",
                };
                format!("({} {s} {})", self.text(a), self.text(b))
            }
            Expr::Select(c, a, b, t, e) => format!(
                "({} {} {} ? {} : {})",
                self.text(a),
                c.symbol(),
                self.text(b),
                self.text(t),
                self.text(e)
            ),
        }
    }
}
