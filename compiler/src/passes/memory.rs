//! Stage 8: the memory plan. Every buffer of a compiled network lives in one arena at an
//! offset fixed at compile time.
//!
//! Parameters (and what the prologue computes from them) form one contiguous block at
//! the start, followed by optimizer state, so an optimizer update is one loop and a
//! checkpoint a few slices. Every other buffer — inputs, activations, gradients,
//! per-thread scratch — is placed by liveness: buffers whose lifetimes do not overlap may
//! share memory. A view (a parameter inside the training graph's parameter block, a
//! gradient inside the gradient block) lives at its offset inside its block, and its
//! uses keep the whole block alive. In guard mode every buffer is surrounded by canary
//! bytes that the runtime checks after each kernel.

use crate::ir::kernel::{Buffer, KernelKind, Program};
use crate::ir::ops::{Role, TensorGraph, TensorId};
use std::fmt;

/// Alignment of every buffer, in bytes (a cache line).
pub const ALIGN: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionKind {
    Param,
    /// Optimizer state (momentum, Adam's moments), kept across steps.
    State,
    /// Computed from parameters by the prologue kernel.
    Derived,
    Input,
    Activation,
    /// A kernel's scratch; `threads` copies `stride` bytes apart.
    Scratch,
}

/// One buffer in the arena.
#[derive(Clone, Debug, PartialEq)]
pub struct Region {
    pub name: String,
    pub kind: RegionKind,
    /// Byte offset of the buffer itself (guard bytes, if any, lie just before and after).
    pub offset: usize,
    pub bytes: usize,
    /// Kernels during which it holds live data: `first..=last` (`None` = always).
    pub live: Option<(usize, usize)>,
    /// For scratch: copies and the distance between them.
    pub copies: usize,
    pub stride: usize,
}

#[derive(Clone, Debug)]
pub struct MemoryPlan {
    /// Byte offset of each stored tensor, by tensor id (`None`: fused away or an alias).
    pub tensors: Vec<Option<usize>>,
    /// Per kernel, per scratch buffer: (offset of thread 0's copy, stride between copies).
    pub scratch: Vec<Vec<(usize, usize)>>,
    pub regions: Vec<Region>,
    /// The parameter block: `params.0..params.1`, in bytes.
    pub params: (usize, usize),
    pub size: usize,
    /// What the arena would need if no two buffers shared memory.
    pub without_reuse: usize,
    /// Canary bytes on each side of every buffer (0 unless in guard mode).
    pub guard: usize,
}

fn round_up(n: usize) -> usize {
    n.div_ceil(ALIGN) * ALIGN
}

/// An upper bound on what memory planning adds up, if it fits in 64 bits: every tensor
/// and every thread's scratch, each rounded up to the alignment and with its guard bytes.
/// When it fits, so does every offset and total of the plan.
pub fn bound(ops: &TensorGraph, program: &Program, guard: usize) -> Option<u64> {
    let guards = (guard as u64).checked_next_multiple_of(ALIGN as u64)?.checked_mul(2)?;
    let aligned =
        |len: usize| (len as u64).checked_mul(4)?.checked_next_multiple_of(ALIGN as u64)?.checked_add(guards);
    let mut total = 0u64;
    for t in &ops.tensors {
        total = total.checked_add(aligned(t.len())?)?;
    }
    for k in &program.kernels {
        for &len in &k.scratch {
            total = total.checked_add(aligned(len)?.checked_mul(program.threads.max(1) as u64)?)?;
        }
    }
    usize::try_from(total).ok().map(|_| total)
}

/// Plans the arena for `program`, with `guard` canary bytes around each buffer.
pub fn plan(graph: &TensorGraph, program: &Program, guard: usize) -> MemoryPlan {
    let guard = if guard > 0 { round_up(guard) } else { 0 };
    let k = program.kernels.len();
    let n = graph.tensors.len();
    let mut first: Vec<Option<usize>> = vec![None; n];
    let mut last: Vec<Option<usize>> = vec![None; n];
    let base_of = |t: TensorId| graph.tensor(t).view.map_or(t, |(base, _)| base);
    let mut touch = |t: TensorId, at: usize| {
        let i = base_of(t).0 as usize;
        first[i] = Some(first[i].map_or(at, |f: usize| f.min(at)));
        last[i] = Some(last[i].map_or(at, |l: usize| l.max(at)));
    };
    for (i, kernel) in program.kernels.iter().enumerate() {
        for t in kernel.reads.iter().chain(&kernel.writes) {
            touch(*t, i);
        }
    }
    for &t in &graph.inputs {
        touch(t, 0);
    }
    for (i, t) in graph.tensors.iter().enumerate() {
        if matches!(t.role, Role::Label | Role::Hyper) {
            touch(TensorId(i as u32), 0);
        }
    }
    touch(graph.output, k.saturating_sub(1));
    let derived: Vec<TensorId> = program
        .kernels
        .iter()
        .filter(|kn| kn.kind == KernelKind::Prologue)
        .flat_map(|kn| kn.writes.iter().copied())
        .filter(|t| graph.tensor(*t).view.is_none())
        .collect();

    let mut regions = Vec::new();
    let mut tensors: Vec<Option<usize>> = vec![None; n];
    // The persistent block: parameters, then derived tensors.
    let mut at = 0;
    let persistent = |role: &Role| match role {
        Role::Block { persistent } => *persistent,
        Role::Param(_) => true,
        _ => false,
    };
    let fixed: Vec<(usize, RegionKind)> = graph
        .tensors
        .iter()
        .enumerate()
        .filter(|(_, t)| t.view.is_none() && persistent(&t.role))
        .map(|(i, _)| (i, RegionKind::Param))
        .chain(
            graph
                .tensors
                .iter()
                .enumerate()
                .filter(|(_, t)| matches!(t.role, Role::State(_)))
                .map(|(i, _)| (i, RegionKind::State)),
        )
        .chain(derived.iter().map(|t| (t.0 as usize, RegionKind::Derived)))
        .collect();
    let mut params = (0, 0);
    for (t, kind) in fixed {
        if kind != RegionKind::Param && params.1 == 0 {
            params.1 = at;
        }
        let bytes = graph.tensors[t].len() * 4;
        let offset = at + guard;
        regions.push(Region {
            name: graph.tensors[t].name.clone(),
            kind,
            offset,
            bytes,
            live: None,
            copies: 1,
            stride: 0,
        });
        tensors[t] = Some(offset);
        at = round_up(offset + bytes + guard);
    }
    if params.1 == 0 {
        params.1 = at;
    }
    let base = at;

    // Everything else by liveness: largest first, at the lowest offset that overlaps no
    // placed buffer live at the same time.
    struct Item {
        tensor: Option<usize>,
        scratch: Option<(usize, usize)>,
        name: String,
        kind: RegionKind,
        bytes: usize,
        copies: usize,
        live: (usize, usize),
    }
    let mut items = Vec::new();
    for (t, tensor) in graph.tensors.iter().enumerate() {
        if tensors[t].is_some() || first[t].is_none() || tensor.view.is_some() {
            continue;
        }
        let kind = match tensor.role {
            Role::Input | Role::Label | Role::Hyper => RegionKind::Input,
            _ => RegionKind::Activation,
        };
        let live = (first[t].unwrap_or(0), last[t].unwrap_or(0));
        // Inputs are written before the first kernel runs.
        let live = if kind == RegionKind::Input { (0, live.1) } else { live };
        items.push(Item {
            tensor: Some(t),
            scratch: None,
            name: tensor.name.clone(),
            kind,
            bytes: tensor.len() * 4,
            copies: 1,
            live,
        });
    }
    for (i, kernel) in program.kernels.iter().enumerate() {
        for (j, &len) in kernel.scratch.iter().enumerate() {
            items.push(Item {
                tensor: None,
                scratch: Some((i, j)),
                name: format!("{}.s{j}", kernel.name),
                kind: RegionKind::Scratch,
                bytes: len * 4,
                copies: program.threads.max(1),
                live: (i, i),
            });
        }
    }
    items.sort_by(|a, b| (b.bytes * b.copies).cmp(&(a.bytes * a.copies)).then(a.live.cmp(&b.live)));
    let mut placed: Vec<(usize, usize, (usize, usize))> = Vec::new(); // (start, end, live)
    let mut scratch: Vec<Vec<(usize, usize)>> =
        program.kernels.iter().map(|kn| vec![(0, 0); kn.scratch.len()]).collect();
    let mut without_reuse = base;
    let mut size = base;
    for item in items {
        let stride = round_up(item.bytes + 2 * guard);
        let total = stride * item.copies;
        without_reuse += total;
        let mut conflicts: Vec<(usize, usize)> = placed
            .iter()
            .filter(|(_, _, l)| l.0 <= item.live.1 && item.live.0 <= l.1)
            .map(|(s, e, _)| (*s, *e))
            .collect();
        conflicts.sort();
        let mut start = base;
        for (s, e) in conflicts {
            if start + total <= s {
                break;
            }
            start = start.max(e);
        }
        placed.push((start, start + total, item.live));
        size = size.max(start + total);
        let offset = start + guard;
        if let Some(t) = item.tensor {
            tensors[t] = Some(offset);
        }
        if let Some((kn, j)) = item.scratch {
            scratch[kn][j] = (offset, stride);
        }
        regions.push(Region {
            name: item.name,
            kind: item.kind,
            offset,
            bytes: item.bytes,
            live: Some(item.live),
            copies: item.copies,
            stride,
        });
    }
    for (t, tensor) in graph.tensors.iter().enumerate() {
        if let Some((base, offset)) = tensor.view {
            tensors[t] = tensors[base.0 as usize].map(|b| b + offset * 4);
        }
    }
    regions.sort_by_key(|r| r.offset);
    MemoryPlan {
        tensors,
        scratch,
        regions,
        params,
        size: round_up(size),
        without_reuse: round_up(without_reuse),
        guard,
    }
}

impl MemoryPlan {
    /// Byte offset of a kernel's buffer for thread 0.
    pub fn offset(&self, kernel: usize, buf: Buffer) -> usize {
        match buf {
            Buffer::Tensor(t) => {
                self.tensors[t.0 as usize].expect("every buffer a kernel touches is planned")
            }
            Buffer::Scratch(i) => self.scratch[kernel][i as usize].0,
        }
    }
}

impl fmt::Display for MemoryPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::support::numbers::bytes;
        writeln!(
            f,
            "arena {} ({} without reuse); parameters {}",
            bytes(self.size as u64),
            bytes(self.without_reuse as u64),
            bytes((self.params.1 - self.params.0) as u64)
        )
    }
}
