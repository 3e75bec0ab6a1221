//! The abstract syntax tree: what the user wrote, with spans, before any evaluation.
//!
//! Literals keep their source text so that `nnc fmt` prints `5e-4` as `5e-4`.

use crate::support::source::{FileId, Span};

#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub id: FileId,
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Include(Include),
    Block(BlockDef),
    Network(NetworkDef),
    Train(TrainDef),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Include(i) => i.span,
            Item::Block(b) => b.span,
            Item::Network(n) => n.span,
            Item::Train(t) => t.span,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    /// The path between the quotes, relative to the including file's directory.
    pub path: String,
    pub path_span: Span,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BlockDef {
    pub name: Ident,
    pub params: Vec<Param>,
    pub body: Body,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: Ident,
    pub default: Option<Expr>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkDef {
    pub name: Ident,
    pub inputs: Vec<InputDecl>,
    pub body: Body,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct InputDecl {
    pub name: Ident,
    pub ty: InputType,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum InputType {
    /// `[c, h, w]` or `[n]`.
    Tensor { dims: Vec<Expr>, span: Span },
    /// `seq[len] of onehot(n)` / `seq[len] of tokens(n)`.
    Seq { len: Box<Expr>, item: Ident, size: Box<Expr>, span: Span },
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrainDef {
    pub network: Ident,
    pub settings: Vec<Setting>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    pub key: Ident,
    pub value: Expr,
}

/// Statements, then the expression the body evaluates to.
#[derive(Debug, Clone, PartialEq)]
pub struct Body {
    pub stmts: Vec<Stmt>,
    pub result: Box<Expr>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    /// `let name = value`
    Let { name: Ident, value: Expr, span: Span },
    /// `init = he`: the default initialiser for layers made in the rest of this body.
    Init { value: Expr, span: Span },
}

impl Stmt {
    pub fn span(&self) -> Span {
        match self {
            Stmt::Let { span, .. } | Stmt::Init { span, .. } => *span,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Int {
        value: i64,
        text: String,
    },
    Float {
        value: f64,
        text: String,
    },
    Bool(bool),
    Str(String),
    Name(Ident),
    List(Vec<Expr>),
    Call(Call),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// `if c1 { .. } else if c2 { .. } else { .. }`: the arms in order, then the else body.
    If {
        arms: Vec<(Expr, Body)>,
        otherwise: Body,
    },
    /// `head |> stage |> stage`
    Pipe {
        head: Box<Expr>,
        stages: Vec<Stage>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }

    /// Binding strength; higher binds tighter. Used by the parser and the formatter.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Or => 1,
            BinOp::And => 2,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 4,
            BinOp::Add | BinOp::Sub => 5,
            BinOp::Mul | BinOp::Div | BinOp::Rem => 6,
        }
    }
}

impl UnOp {
    pub fn precedence(self) -> u8 {
        match self {
            UnOp::Not => 3,
            UnOp::Neg => 7,
        }
    }
}

/// `name(args)`, or a bare `name` in a pipeline stage (`parens` is false then).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: Ident,
    pub args: Vec<Arg>,
    pub parens: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Arg {
    pub name: Option<Ident>,
    pub value: Expr,
}

impl Arg {
    pub fn span(&self) -> Span {
        match &self.name {
            Some(n) => n.span.to(self.value.span),
            None => self.value.span,
        }
    }
}

/// One `|>` stage: a layer or block call, or a parenthesised sub-pipeline, optionally
/// repeated (`basic(64) * 2`).
#[derive(Debug, Clone, PartialEq)]
pub struct Stage {
    pub kind: StageKind,
    pub repeat: Option<Expr>,
    /// Whether the user started this stage on a new line (the formatter keeps that choice).
    pub newline_before: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StageKind {
    Call(Call),
    Group(Vec<Stage>),
}
