//! The layer graph: a network after blocks, repetition and conditionals are expanded, with
//! every node's output shape, parameters and cost known. Shape checking happens while it
//! is built (see `expand`), so a `Graph` that exists is a checked one.

use crate::front::layers::{Layer, LayerSpec, ParamRole};
use crate::ir::init::Init;
use crate::ir::shape::Shape;
use crate::support::source::Span;
use std::fmt;

pub use super::ids::{NodeId, ScopeId};

/// How a network input is fed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputEncoding {
    /// Real values in the given shape (images, vectors).
    Dense,
    /// `seq[n] of onehot(k)`: each step is a class index fed as a one-hot vector.
    OneHot,
    /// `seq[n] of tokens(k)`: integer ids for an `embedding`.
    Tokens,
}

#[derive(Debug)]
pub enum NodeKind {
    Input(InputEncoding),
    Layer { spec: &'static LayerSpec, layer: Box<dyn Layer> },
}

/// A parameter tensor with its full name (`stage2.bottleneck1.conv1.weight`).
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    pub name: String,
    pub dims: Vec<u64>,
    pub role: ParamRole,
    pub init: Init,
}

impl Param {
    pub fn elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

#[derive(Debug)]
pub struct Node {
    /// Name within its scope: `conv2`, or the input's declared name.
    pub name: String,
    /// Dotted path from the network: `stage2.bottleneck1.conv2`.
    pub path: String,
    pub kind: NodeKind,
    /// The call with evaluated arguments: `conv(64, 3, pad: 1, bias: false)`.
    pub description: String,
    pub inputs: Vec<NodeId>,
    pub shape: Shape,
    pub params: Vec<Param>,
    /// Multiply-accumulates per example.
    pub macs: u64,
    pub scope: ScopeId,
    /// The call (or input declaration) in the source.
    pub span: Span,
}

impl Node {
    /// The layer kind's source name (`conv`), or `input`.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Input(_) => "input",
            NodeKind::Layer { spec, .. } => spec.name,
        }
    }

    pub fn trainable_params(&self) -> u64 {
        self.params.iter().filter(|p| p.role == ParamRole::Trainable).map(Param::elements).sum()
    }

    pub fn buffer_params(&self) -> u64 {
        self.params.iter().filter(|p| p.role == ParamRole::Buffer).map(Param::elements).sum()
    }
}

/// A block instance: where its nodes came from.
#[derive(Debug, Clone)]
pub struct Scope {
    /// `basic3` — the block's name and its occurrence in the parent scope.
    pub name: String,
    /// The block's name: `basic`.
    pub block: String,
    pub path: String,
    pub parent: Option<ScopeId>,
    /// The call with evaluated arguments: `basic(128, stride: 2)`.
    pub call: String,
    pub span: Span,
}

#[derive(Debug)]
pub struct Graph {
    pub name: String,
    pub span: Span,
    /// In creation order, which is a topological order.
    pub nodes: Vec<Node>,
    /// `scopes[0]` is the network itself.
    pub scopes: Vec<Scope>,
    pub inputs: Vec<NodeId>,
    pub output: NodeId,
}

impl Graph {
    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.0 as usize]
    }

    pub fn scope(&self, id: ScopeId) -> &Scope {
        &self.scopes[id.0 as usize]
    }

    /// Scopes from the outermost block down to `id` (the root excluded).
    pub fn scope_chain(&self, id: ScopeId) -> Vec<ScopeId> {
        let mut chain = Vec::new();
        let mut cur = Some(id);
        while let Some(s) = cur {
            if s != ScopeId::ROOT {
                chain.push(s);
            }
            cur = self.scope(s).parent;
        }
        chain.reverse();
        chain
    }

    pub fn params(&self) -> impl Iterator<Item = &Param> {
        self.nodes.iter().flat_map(|n| n.params.iter())
    }

    pub fn trainable_params(&self) -> u64 {
        self.nodes.iter().map(Node::trainable_params).sum()
    }

    pub fn buffer_params(&self) -> u64 {
        self.nodes.iter().map(Node::buffer_params).sum()
    }

    /// Multiply-accumulates per example (expansion refuses a network whose count does
    /// not fit in 64 bits).
    pub fn macs(&self) -> u64 {
        self.nodes.iter().map(|n| n.macs).sum()
    }
}

impl fmt::Display for Graph {
    /// One line per node: `%3 = conv(6, 5, pad: 2)(%0) : [6, 28, 28]  # conv1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "network {}", self.name)?;
        for (i, n) in self.nodes.iter().enumerate() {
            let inputs: Vec<String> = n.inputs.iter().map(|i| format!("%{}", i.0)).collect();
            writeln!(f, "  %{i} = {}({}) : {}  # {}", n.description, inputs.join(", "), n.shape, n.path)?;
        }
        writeln!(f, "  return %{}", self.output.0)
    }
}
