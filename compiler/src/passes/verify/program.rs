//! Checks of the kernels against their graph and memory plan: every pointer's reachable
//! range inside its buffer, loop variables in scope, the parallel split matching its
//! loop, reads and writes declared, buffers placed inside the arena.

use super::VerifyError;
use super::access::{self, Access, Use};
use crate::ir::kernel::{Buffer, Kernel, Parallel, Program, Stmt, Var};
use crate::ir::ops::{TensorGraph, TensorId};
use crate::passes::memory::MemoryPlan;

/// Checks that every tensor a kernel declares exists: memory planning indexes by them, so
/// this runs before it.
pub fn references(graph: &TensorGraph, program: &Program) -> Result<(), VerifyError> {
    let count = graph.tensors.len();
    for kernel in &program.kernels {
        for (&t, list) in
            kernel.reads.iter().map(|t| (t, "reads")).chain(kernel.writes.iter().map(|t| (t, "writes")))
        {
            if t.0 as usize >= count {
                return Err(VerifyError::Statement {
                    kernel: kernel.name.clone(),
                    message: format!("`{list}` names t{}, but the graph has {count} tensors", t.0),
                });
            }
        }
    }
    Ok(())
}

/// Checks `program` against `graph` and the arena `plan`: after this, no kernel can touch
/// memory outside the buffers the plan gives it.
pub fn program(graph: &TensorGraph, program: &Program, plan: &MemoryPlan) -> Result<(), VerifyError> {
    references(graph, program)?;
    let plan_error = |message: String| VerifyError::Plan { message };
    if program.threads == 0 {
        return Err(plan_error("the program is scheduled for no threads".into()));
    }
    if plan.tensors.len() != graph.tensors.len() || plan.scratch.len() != program.kernels.len() {
        return Err(plan_error(format!(
            "it places {} tensors and the scratch of {} kernels, for {} tensors and {} kernels",
            plan.tensors.len(),
            plan.scratch.len(),
            graph.tensors.len(),
            program.kernels.len()
        )));
    }
    for (i, offset) in plan.tensors.iter().enumerate() {
        if let Some(offset) = *offset {
            let end = graph.tensors[i].len().checked_mul(4).and_then(|b| b.checked_add(offset));
            if end.is_none_or(|end| end > plan.size) {
                return Err(plan_error(format!(
                    "t{i} at byte {offset} runs past the arena of {}",
                    plan.size
                )));
            }
        }
    }
    // What the runtime reads and writes outside the kernels.
    let fed = graph.inputs.iter().copied().chain([graph.output]).chain(graph.params().map(|(t, _)| t));
    for t in fed {
        if plan.tensors[t.0 as usize].is_none() {
            return Err(plan_error(format!("t{} ({}) has no place", t.0, graph.tensor(t).name)));
        }
    }
    for (k, kernel) in program.kernels.iter().enumerate() {
        scratch(kernel, &plan.scratch[k], program.threads, plan.size)?;
        Walk { graph, plan, kernel, threads: program.threads, scope: Vec::new() }.kernel()?;
    }
    Ok(())
}

/// Every thread's copy of every scratch buffer inside the arena, the copies apart.
fn scratch(
    kernel: &Kernel,
    placed: &[(usize, usize)],
    threads: usize,
    arena: usize,
) -> Result<(), VerifyError> {
    let fail = |message: String| VerifyError::Plan { message: format!("kernel {}: {message}", kernel.name) };
    if placed.len() != kernel.scratch.len() {
        return Err(fail(format!("{} scratch buffers placed for {}", placed.len(), kernel.scratch.len())));
    }
    for (i, (&floats, &(offset, stride))) in kernel.scratch.iter().zip(placed).enumerate() {
        let bytes = floats.checked_mul(4);
        let end = bytes.and_then(|b| stride.checked_mul(threads - 1)?.checked_add(offset)?.checked_add(b));
        if end.is_none_or(|end| end > arena) || (threads > 1 && bytes.is_none_or(|b| stride < b)) {
            return Err(fail(format!(
                "scratch {i} ({floats} floats, {threads} copies {stride} bytes apart from byte {offset}) does not fit the arena of {arena} bytes"
            )));
        }
    }
    Ok(())
}

/// One kernel's statements, with the loop variables in scope and their extents.
struct Walk<'a> {
    graph: &'a TensorGraph,
    plan: &'a MemoryPlan,
    kernel: &'a Kernel,
    threads: usize,
    scope: Vec<(Var, usize)>,
}

impl Walk<'_> {
    fn name(&self) -> String {
        self.kernel.name.clone()
    }

    fn kernel(&mut self) -> Result<(), VerifyError> {
        // The generated function runs the first loop over the share `start..end` of
        // `0..extent` it is handed, so that loop's extent is what the split covers.
        if let Parallel::Loop { extent } | Parallel::Team { members: extent } = self.kernel.parallel {
            let found = match self.kernel.body.first() {
                Some(Stmt::Loop { extent: e, .. }) if *e == extent => None,
                Some(Stmt::Loop { extent: e, .. }) => Some(format!("its first loop runs to {e}")),
                Some(_) | None => Some("its first statement is not a loop".to_string()),
            };
            if let Some(found) = found {
                return Err(VerifyError::Parallel { kernel: self.name(), parallel: extent, found });
            }
        }
        // A barrier waits for every member of a team: in any other kernel, or after a
        // team's loop (run by one member only), it would wait forever.
        let barriers = match self.kernel.parallel {
            Parallel::Team { .. } => &self.kernel.body[1..],
            Parallel::Serial | Parallel::Loop { .. } => &self.kernel.body[..],
        };
        if let Parallel::Team { members } = self.kernel.parallel
            && members != self.threads
        {
            let found = format!("the program runs on {} threads", self.threads);
            return Err(VerifyError::Parallel { kernel: self.name(), parallel: members, found });
        }
        if has_barrier(barriers) {
            return Err(VerifyError::Statement {
                kernel: self.name(),
                message: "a barrier outside a team's loop".into(),
            });
        }
        let body = &self.kernel.body;
        self.stmts(body)
    }

    fn stmts(&mut self, stmts: &[Stmt]) -> Result<(), VerifyError> {
        for s in stmts {
            self.stmt(s)?;
        }
        Ok(())
    }

    fn bind(&mut self, var: Var, extent: usize) -> Result<(), VerifyError> {
        if self.scope.iter().any(|(v, _)| *v == var) {
            return Err(VerifyError::Rebound { kernel: self.name(), var: var.0 });
        }
        self.scope.push((var, extent));
        Ok(())
    }

    fn stmt(&mut self, stmt: &Stmt) -> Result<(), VerifyError> {
        if let Stmt::Loop { var, extent, body } = stmt {
            self.bind(*var, *extent)?;
            self.stmts(body)?;
            self.scope.pop();
            return Ok(());
        }
        let accesses =
            access::of(stmt).map_err(|message| VerifyError::Statement { kernel: self.name(), message })?;
        if let Some(var) = accesses.binds
            && self.scope.iter().any(|(v, _)| *v == var)
        {
            return Err(VerifyError::Rebound { kernel: self.name(), var: var.0 });
        }
        for var in accesses.vars {
            if !self.scope.iter().any(|(v, _)| *v == var) {
                let pointer = "a block of unfolded rows".to_string();
                return Err(VerifyError::Scope { kernel: self.name(), pointer, var: var.0 });
            }
        }
        for a in &accesses.list {
            self.access(a)?;
        }
        Ok(())
    }

    fn describe(&self, a: &Access) -> String {
        format!("{} `{}`", a.what, a.ptr)
    }

    fn tensor_name(&self, t: TensorId) -> String {
        format!("{t} ({})", self.graph.tensor(t).name)
    }

    /// The buffer's extent in elements, after checking that the kernel may touch it.
    fn extent(&self, a: &Access) -> Result<(String, usize), VerifyError> {
        match a.ptr.buf {
            Buffer::Tensor(t) => {
                let count = self.graph.tensors.len();
                if t.0 as usize >= count {
                    return Err(VerifyError::Statement {
                        kernel: self.name(),
                        message: format!(
                            "{} names t{}, but the graph has {count} tensors",
                            self.describe(a),
                            t.0
                        ),
                    });
                }
                let (listed, list) = match a.used {
                    // A tensor computed earlier in the same kernel is read back from
                    // where it was written: `writes` keeps it live.
                    Use::Read => (self.kernel.reads.contains(&t) || self.kernel.writes.contains(&t), "reads"),
                    Use::Write | Use::Update => (self.kernel.writes.contains(&t), "writes"),
                };
                if !listed {
                    let access = if a.used == Use::Read { "reads" } else { "writes" };
                    return Err(VerifyError::Undeclared {
                        kernel: self.name(),
                        access,
                        tensor: self.tensor_name(t),
                        list,
                    });
                }
                if self.plan.tensors[t.0 as usize].is_none() {
                    return Err(VerifyError::Unplanned { kernel: self.name(), tensor: self.tensor_name(t) });
                }
                Ok((self.tensor_name(t), self.graph.tensor(t).len()))
            }
            Buffer::Scratch(i) => match self.kernel.scratch.get(i as usize) {
                Some(&floats) => Ok((format!("scratch {i}"), floats)),
                None => Err(VerifyError::Scratch {
                    kernel: self.name(),
                    index: i,
                    count: self.kernel.scratch.len(),
                }),
            },
        }
    }

    /// The pointer's reachable elements lie inside its buffer.
    fn access(&self, a: &Access) -> Result<(), VerifyError> {
        let (buffer, extent) = self.extent(a)?;
        let mut low = a.ptr.offset as i128;
        let mut high = low;
        let mut reached = a.span.iter().all(|&(_, count)| count > 0);
        for &(var, coef) in &a.ptr.terms {
            let bound = self.scope.iter().chain(&a.inner).find(|(v, _)| *v == var);
            let Some(&(_, trips)) = bound else {
                return Err(VerifyError::Scope {
                    kernel: self.name(),
                    pointer: self.describe(a),
                    var: var.0,
                });
            };
            // A loop that never runs reaches nothing.
            reached &= trips > 0;
            let swing = coef as i128 * (trips as i128 - 1).max(0);
            low = low.saturating_add(swing.min(0));
            high = high.saturating_add(swing.max(0));
        }
        if !reached {
            return Ok(());
        }
        for &(stride, count) in &a.span {
            high = high.saturating_add(stride as i128 * (count as i128 - 1));
        }
        if low < 0 || high >= extent as i128 {
            return Err(VerifyError::OutOfBounds {
                kernel: self.name(),
                pointer: self.describe(a),
                buffer,
                low,
                high,
                extent,
            });
        }
        Ok(())
    }
}

/// Whether `stmts` hold a barrier, at any depth.
fn has_barrier(stmts: &[Stmt]) -> bool {
    stmts.iter().any(|s| match s {
        Stmt::Barrier => true,
        Stmt::Loop { body, .. } => has_barrier(body),
        _ => false,
    })
}
