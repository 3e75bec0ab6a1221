//! The barrier of a [`Parallel::Team`](crate::ir::kernel::Parallel::Team) kernel: its
//! members are the pool's threads, each running one iteration of the kernel's loop, and
//! a [`Stmt::Barrier`](crate::ir::kernel::Stmt::Barrier) compiles to a call of [`wait`]
//! on the kernel's own barrier, which the compiled code owns.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Spins before a waiting member starts yielding its core: a step of a recurrent layer
/// takes tens of microseconds, but on a shared machine a member may lose its core.
const SPINS: u32 = 1 << 14;

/// A barrier for `members` threads that is used again at once: arrivals count up, and the
/// last one resets the count and moves the generation on, which the others wait for.
#[derive(Debug)]
pub struct TeamBarrier {
    members: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
}

impl TeamBarrier {
    pub fn new(members: usize) -> TeamBarrier {
        TeamBarrier { members, arrived: AtomicUsize::new(0), generation: AtomicUsize::new(0) }
    }

    /// Returns once every member has called it, each member's writes before it then
    /// visible to all: the streaming stores too, which x86 does not order with the rest.
    pub fn wait(&self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `sfence` has no operands and only orders this thread's stores.
        unsafe {
            std::arch::x86_64::_mm_sfence()
        };
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.members {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// [`TeamBarrier::wait`], for generated code.
///
/// # Safety
/// `barrier` must point to a live [`TeamBarrier`].
pub unsafe extern "sysv64" fn wait(barrier: *const TeamBarrier) {
    // SAFETY: as the caller promised.
    unsafe { (*barrier).wait() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Three members, each adding to its own slot and then reading all three after the
    /// barrier, a thousand times: every read sees every member's write of that round.
    #[test]
    fn members_see_each_others_writes_of_the_round() {
        let barrier = Arc::new(TeamBarrier::new(3));
        let slots: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
        let members: Vec<_> = (0..3)
            .map(|m| {
                let (barrier, slots) = (barrier.clone(), slots.clone());
                std::thread::spawn(move || {
                    for round in 1..=1000 {
                        slots[m].store(round, Ordering::Relaxed);
                        barrier.wait();
                        assert!(slots.iter().all(|s| s.load(Ordering::Relaxed) >= round));
                        barrier.wait();
                    }
                })
            })
            .collect();
        for m in members {
            m.join().expect("a member panicked");
        }
    }
}
