//! Default weight initialisers: He (Kaiming) where the layer feeds a ReLU or one of its
//! relatives (leaky ReLU, ReLU6, hard-swish, GELU), Xavier (Glorot) otherwise — the
//! pairing both papers derive.
//!
//! "Feeds" looks through layers that keep the activation's distribution question open;
//! each layer kind says which it is in its own file ([`Gain`]).

use crate::front::layers::Gain;
use crate::ir::graph::{Graph, NodeId, NodeKind};
use crate::ir::init::Init;

pub fn resolve(graph: &mut Graph, auto: &[(NodeId, usize)]) {
    let mut consumers: Vec<Vec<NodeId>> = vec![Vec::new(); graph.nodes.len()];
    for (i, n) in graph.nodes.iter().enumerate() {
        for input in &n.inputs {
            consumers[input.0 as usize].push(NodeId(i as u32));
        }
    }
    for &(node, param) in auto {
        let init = if feeds_relu(graph, &consumers, node) { Init::He } else { Init::Xavier };
        graph.nodes[node.0 as usize].params[param].init = init;
    }
}

fn feeds_relu(graph: &Graph, consumers: &[Vec<NodeId>], start: NodeId) -> bool {
    let mut cur = start;
    loop {
        // Follow the path only while it is unambiguous.
        let [next] = consumers[cur.0 as usize].as_slice() else { return false };
        let NodeKind::Layer { spec, .. } = &graph.node(*next).kind else { return false };
        match spec.gain {
            Gain::Rectifier => return true,
            Gain::Transparent => cur = *next,
            Gain::Other => return false,
        }
    }
}
