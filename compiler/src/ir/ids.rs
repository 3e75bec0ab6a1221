//! Handles to a layer graph's nodes and block scopes. They live apart from the graph so
//! that expansion's values can name nodes without depending on the graph's layer kinds.

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ScopeId(pub u32);

impl ScopeId {
    /// The network's own body.
    pub const ROOT: ScopeId = ScopeId(0);
}
