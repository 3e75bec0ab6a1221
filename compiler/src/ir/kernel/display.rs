//! Kernels as readable text: `nnc compile --emit kernels`.

use super::*;
use std::fmt;

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "i{}", self.0)
    }
}

impl Ptr {
    /// `t4[i0·784 + 12 + i]`: the address with `extra` added to its index.
    fn indexed(&self, extra: Option<&str>) -> String {
        let name = match self.buf {
            Buffer::Tensor(t) => t.to_string(),
            Buffer::Scratch(i) => format!("s{i}"),
        };
        let mut parts: Vec<String> = self
            .terms
            .iter()
            .map(|(v, c)| if *c == 1 { format!("{v}") } else { format!("{v}·{c}") })
            .collect();
        if self.offset != 0 {
            parts.push(self.offset.to_string());
        }
        parts.extend(extra.map(str::to_string));
        if parts.is_empty() { name } else { format!("{name}[{}]", parts.join(" + ")) }
    }
}

impl fmt::Display for Ptr {
    /// `t4[i0·784 + 12]`, `s0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.indexed(None))
    }
}

/// The infix symbol of an arithmetic operation (`max` and `min` print as calls).
fn symbol(op: BinOp) -> &'static str {
    match op {
        BinOp::Add => "+",
        BinOp::Sub => "-",
        BinOp::Mul => "·",
        BinOp::Div => "/",
        BinOp::Max => "max",
        BinOp::Min => "min",
    }
}

/// How an instruction reads when printed: a leaf's text, or an operation on operands.
enum Node {
    Leaf(String),
    Unary(String, usize),
    Bin(BinOp, usize, usize),
    Select(Cmp, [usize; 4]),
    /// A store or other instruction with no value.
    None,
}

/// Prints an instruction list as expressions. Values used more than once (and not
/// leaves) are bound first as `let vN = ...` so the listing stays readable.
fn program(n: usize, node: &dyn Fn(usize) -> Node, results: &[(String, usize)]) -> Vec<String> {
    let mut uses = vec![0usize; n];
    for i in 0..n {
        match node(i) {
            Node::Unary(_, a) => uses[a] += 1,
            Node::Bin(_, a, b) => {
                uses[a] += 1;
                uses[b] += 1;
            }
            Node::Select(_, operands) => {
                for o in operands {
                    uses[o] += 1;
                }
            }
            _ => {}
        }
    }
    for (_, v) in results {
        uses[*v] += 1;
    }
    let named: Vec<bool> = (0..n).map(|i| uses[i] > 1 && !matches!(node(i), Node::Leaf(_))).collect();
    fn text(i: usize, top: bool, node: &dyn Fn(usize) -> Node, named: &[bool]) -> String {
        if named[i] && !top {
            return format!("v{i}");
        }
        match node(i) {
            Node::Leaf(s) => s,
            Node::Unary(name, a) => format!("{name}({})", text(a, false, node, named)),
            Node::Bin(op @ (BinOp::Max | BinOp::Min), a, b) => {
                let (a, b) = (text(a, false, node, named), text(b, false, node, named));
                format!("{}({a}, {b})", symbol(op))
            }
            Node::Bin(op, a, b) => {
                format!("({} {} {})", text(a, false, node, named), symbol(op), text(b, false, node, named))
            }
            Node::Select(cmp, [a, b, t, e]) => {
                let [a, b, t, e] = [a, b, t, e].map(|x| text(x, false, node, named));
                format!("({a} {} {b} ? {t} : {e})", cmp.symbol())
            }
            Node::None => String::new(),
        }
    }
    let mut lines: Vec<String> =
        (0..n).filter(|&i| named[i]).map(|i| format!("let v{i} = {}", text(i, true, node, &named))).collect();
    lines.extend(results.iter().map(|(target, v)| format!("{target} = {}", text(*v, false, node, &named))));
    lines
}

fn inst_node(inst: &Inst) -> Node {
    match inst {
        Inst::Load(p) => Node::Leaf(p.indexed(Some("i"))),
        Inst::Bcast(p) => Node::Leaf(p.to_string()),
        Inst::Const(c) => Node::Leaf(c.to_string()),
        Inst::Prim(p, a) => Node::Unary(p.name().into(), *a),
        Inst::Bin(op, a, b) => Node::Bin(*op, *a, *b),
        Inst::Select(c, a, b, t, e) => Node::Select(*c, [*a, *b, *t, *e]),
        Inst::Keep { seed, p, index } => {
            Node::Leaf(format!("keep({}, seed {seed}, p {p})", index.indexed(Some("i"))))
        }
        Inst::Store(..) | Inst::Stream(..) => Node::None,
    }
}

fn map_text(m: &Map) -> Vec<String> {
    let node = |i: usize| inst_node(&m.insts[i]);
    let results: Vec<(String, usize)> = m
        .insts
        .iter()
        .filter_map(|i| match i {
            Inst::Store(p, v) => Some((p.indexed(Some("i")), *v)),
            Inst::Stream(p, v) => Some((format!("stream {}", p.indexed(Some("i"))), *v)),
            _ => None,
        })
        .collect();
    program(m.insts.len(), &node, &results)
}

fn epilogue_text(e: &[EInst]) -> String {
    if e.is_empty() {
        return "acc".into();
    }
    let node = |i: usize| match &e[i] {
        EInst::Acc => Node::Leaf("acc".into()),
        EInst::Row(p) => Node::Leaf(format!("row({p})")),
        EInst::Col(p) => Node::Leaf(format!("col({p})")),
        EInst::Elem(p, ld) => Node::Leaf(format!("elem({p}, ld {ld})")),
        EInst::Const(c) => Node::Leaf(c.to_string()),
        EInst::Prim(p, a) => Node::Unary(p.name().into(), *a),
        EInst::Bin(op, a, b) => Node::Bin(*op, *a, *b),
        EInst::Select(c, a, b, t, e) => Node::Select(*c, [*a, *b, *t, *e]),
    };
    program(e.len(), &node, &[("c".to_string(), e.len() - 1)]).join("; ")
}

fn window_text(w: &Window) -> String {
    let mut s = format!("{}×{}×{} → {}×{}, window {}×{}", w.c, w.h, w.w, w.oh, w.ow, w.kh, w.kw);
    if (w.sh, w.sw) != (1, 1) {
        s += &format!(", stride {}×{}", w.sh, w.sw);
    }
    if (w.dh, w.dw) != (1, 1) {
        s += &format!(", dilation {}×{}", w.dh, w.dw);
    }
    if w.pad != [0; 4] {
        s += &format!(", pad {:?}", w.pad);
    }
    s
}

fn write_stmts(f: &mut fmt::Formatter<'_>, stmts: &[Stmt], depth: usize) -> fmt::Result {
    let pad = "  ".repeat(depth);
    for s in stmts {
        match s {
            Stmt::Loop { var, extent, body } => {
                writeln!(f, "{pad}for {var} in 0..{extent}:")?;
                write_stmts(f, body, depth + 1)?;
            }
            Stmt::Gemm(g) => {
                let b = match &g.b {
                    Right::Matrix { ptr, ld } => format!("{ptr} (ld {ld})"),
                    Right::Unfolded(u) => {
                        let rows = match u.first_row {
                            Some((v, r)) => format!(", output rows from {v}·{r}"),
                            None => String::new(),
                        };
                        format!("unfold {}: {}{rows}", u.src, window_text(&u.win))
                    }
                };
                writeln!(
                    f,
                    "{pad}gemm {}×{}×{}: {} (ld {}) = {}{} (ld {}{}) · {b}",
                    g.m,
                    g.n,
                    g.k,
                    g.c,
                    g.ldc,
                    g.a,
                    if g.ta { "ᵀ" } else { "" },
                    g.lda,
                    if g.sparse_a { ", one-hot" } else { "" },
                )?;
                writeln!(f, "{pad}  epilogue: {}", epilogue_text(&g.epilogue))?;
                for sum in &g.b_sums {
                    match sum {
                        BSum::Columns { dst } => writeln!(f, "{pad}  and colsum of b → {dst}")?,
                        BSum::OneHot { m, a, lda, c, ldc } => {
                            writeln!(f, "{pad}  and {c} (ld {ldc}) = {a}ᵀ (ld {lda}, one-hot, {m} rows) · b")?
                        }
                    }
                }
            }
            Stmt::Map(m) => {
                writeln!(f, "{pad}map i in 0..{} (×4):", m.len)?;
                for line in map_text(m) {
                    writeln!(f, "{pad}  {line}")?;
                }
            }
            Stmt::Im2col(c) => {
                let rows = match c.first_row {
                    Some((v, r)) => format!(", output rows from {v}·{r}"),
                    None => String::new(),
                };
                writeln!(f, "{pad}im2col {} → {} (ld {}): {}{rows}", c.src, c.dst, c.ld, window_text(&c.win))?
            }
            Stmt::Pool(p) => {
                let r = match p.reduce {
                    crate::ir::ops::Reduce::Max => "maxpool",
                    crate::ir::ops::Reduce::Mean => "avgpool",
                };
                writeln!(f, "{pad}{r} {} → {}: {}", p.src, p.dst, window_text(&p.win))?
            }
            Stmt::RowSum(r) => {
                writeln!(f, "{pad}rowsum {} → {}: {} rows of {}, × {}", r.src, r.dst, r.rows, r.len, r.scale)?
            }
            Stmt::ColumnSum(c) => writeln!(
                f,
                "{pad}colsum {} → {}: {} rows of {} (stride {})",
                c.src, c.dst, c.rows, c.cols, c.ld
            )?,
            Stmt::Softmax(s) => {
                writeln!(f, "{pad}softmax {} → {}: {} rows of {}", s.src, s.dst, s.rows, s.cols)?
            }
            Stmt::Lrn(l) => {
                writeln!(f, "{pad}lrn {} → {}: {} channels of {}, size {}", l.src, l.dst, l.c, l.hw, l.size)?
            }
            Stmt::Gather(g) => {
                writeln!(f, "{pad}gather {}[{}] → {}: {} rows of {}", g.table, g.ids, g.dst, g.count, g.dim)?
            }
            Stmt::Reduce(r) => {
                let node = |i: usize| inst_node(&r.insts[i]);
                let value = program(r.insts.len(), &node, &[("v".to_string(), r.insts.len() - 1)]);
                writeln!(
                    f,
                    "{pad}{} = {} · Σ {} in 0..{}, i in 0..{}: {}",
                    r.dst,
                    r.scale,
                    r.var,
                    r.outer,
                    r.len,
                    value.join("; ")
                )?
            }
            Stmt::Transpose(t) => writeln!(
                f,
                "{pad}transpose {} (ld {}) → {} (ld {}): {}×{}",
                t.src, t.lds, t.dst, t.ldd, t.rows, t.cols
            )?,
            Stmt::Col2im(c) => {
                writeln!(f, "{pad}col2im {} (ld {}) +→ {}: {}", c.cols, c.ld, c.image, window_text(&c.win))?
            }
            Stmt::PoolBackward(p) => {
                let r = match p.reduce {
                    crate::ir::ops::Reduce::Max => "maxpool",
                    crate::ir::ops::Reduce::Mean => "avgpool",
                };
                writeln!(f, "{pad}{r}_backward {} (x {}) +→ {}: {}", p.dy, p.x, p.dx, window_text(&p.win))?
            }
            Stmt::Scatter(s) => writeln!(
                f,
                "{pad}scatter {} +→ {}[{}] (f64 in {}): {} rows of {}",
                s.src, s.table, s.ids, s.acc, s.count, s.dim
            )?,
            Stmt::LrnBackward(l) => writeln!(
                f,
                "{pad}lrn_backward {} (x {}) → {}: {} channels of {}, size {}",
                l.dy, l.x, l.dx, l.c, l.hw, l.size
            )?,
            Stmt::CrossEntropy(c) => writeln!(
                f,
                "{pad}cross_entropy {} (labels {}) → {}, stats {}: {} rows of {}",
                c.logits, c.labels, c.grad, c.stats, c.rows, c.cols
            )?,
            Stmt::Barrier => writeln!(f, "{pad}barrier")?,
        }
    }
    Ok(())
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}: {}", self.name, self.label)?;
        writeln!(f, "  from {}", self.layers.join(", "))?;
        match self.parallel {
            Parallel::Serial => {}
            Parallel::Loop { extent } => writeln!(f, "  threads split the outer loop's {extent} iterations")?,
            Parallel::Team { members } => {
                writeln!(f, "  {members} threads run the outer loop's iterations together")?
            }
        }
        for (i, s) in self.scratch.iter().enumerate() {
            writeln!(f, "  scratch s{i}: {s} floats per thread")?;
        }
        write_stmts(f, &self.body, 1)
    }
}

impl fmt::Display for Program {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, k) in self.kernels.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{k}")?;
        }
        Ok(())
    }
}
