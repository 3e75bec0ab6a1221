//! Persistent worker threads for splitting a kernel's parallel dimension.
//!
//! Dispatch is a generation counter: the caller publishes a job and bumps the
//! generation; workers spin on it for a short while (a kernel every few microseconds is
//! common) and only then park on a condition variable. The caller runs the first share
//! itself and spins until the workers report done. Parking barriers were too slow for
//! sub-millisecond kernels.

use nnc_compiler::codegen::KernelFn;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking.
const SPIN: Duration = Duration::from_micros(200);

#[derive(Clone, Copy)]
struct Job {
    f: Option<KernelFn>,
    arena: *mut u8,
    extent: u64,
    threads: u64,
}

struct Shared {
    generation: AtomicU64,
    done: AtomicUsize,
    shutdown: AtomicBool,
    /// Written by the caller only while every worker is idle (between a dispatch's end
    /// and the next generation bump); read by workers only in between.
    job: UnsafeCell<Job>,
    sleepers: Mutex<usize>,
    wake: Condvar,
}

// SAFETY: `job` is accessed under the protocol described on the field; the arena pointer
// it carries is only dereferenced by generated code on disjoint work shares.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

/// The share of `extent` units that thread `t` of `threads` computes.
pub fn share(extent: u64, threads: u64, t: u64) -> (u64, u64) {
    let base = extent / threads;
    let extra = extent % threads;
    let start = t * base + t.min(extra);
    let len = base + u64::from(t < extra);
    (start, start + len)
}

impl Pool {
    /// A pool of `threads − 1` workers (the caller is thread 0).
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            job: UnsafeCell::new(Job { f: None, arena: std::ptr::null_mut(), extent: 0, threads: 1 }),
            sleepers: Mutex::new(0),
            wake: Condvar::new(),
        });
        let mut workers = Vec::new();
        for t in 1..threads {
            let shared = Arc::clone(&shared);
            workers.push(
                std::thread::Builder::new()
                    .name(format!("nnc-worker-{t}"))
                    .spawn(move || worker(&shared, t as u64))?,
            );
        }
        Ok(Pool { shared, workers })
    }

    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Runs `f` over `0..extent`, split across all threads; returns when every share is
    /// done.
    ///
    /// # Safety
    /// `f` must be a kernel generated for an arena at `arena` whose scratch has a copy
    /// per thread of this pool, and the arena must outlive the call.
    pub unsafe fn run(&self, f: KernelFn, arena: *mut u8, extent: u64) {
        let threads = self.threads() as u64;
        // SAFETY: every worker is idle: the previous dispatch waited for all of them.
        unsafe { *self.shared.job.get() = Job { f: Some(f), arena, extent, threads } };
        self.shared.done.store(0, Ordering::Relaxed);
        self.shared.generation.fetch_add(1, Ordering::Release);
        if *self.shared.sleepers.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            self.shared.wake.notify_all();
        }
        let (start, end) = share(extent, threads, 0);
        if start < end {
            // SAFETY: as the caller promised; thread 0's share and scratch.
            unsafe { f(arena, start, end, 0) };
        }
        while self.shared.done.load(Ordering::Acquire) < self.workers.len() {
            std::hint::spin_loop();
        }
    }
}

fn worker(shared: &Shared, t: u64) {
    let mut seen = 0u64;
    loop {
        let spin_until = Instant::now() + SPIN;
        let mut spins = 0u32;
        let generation = loop {
            let g = shared.generation.load(Ordering::Acquire);
            if g != seen {
                break g;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(1024) && Instant::now() > spin_until {
                let mut sleepers = shared.sleepers.lock().unwrap_or_else(|e| e.into_inner());
                *sleepers += 1;
                while shared.generation.load(Ordering::Acquire) == seen {
                    sleepers = shared.wake.wait(sleepers).unwrap_or_else(|e| e.into_inner());
                }
                *sleepers -= 1;
            }
            std::hint::spin_loop();
        };
        seen = generation;
        if shared.shutdown.load(Ordering::Acquire) {
            return;
        }
        // SAFETY: the generation was bumped after the job was written (Release/Acquire),
        // and the caller does not write it again before this worker reports done.
        let job = unsafe { *shared.job.get() };
        let (start, end) = share(job.extent, job.threads, t);
        if let Some(f) = job.f
            && start < end
        {
            // SAFETY: the dispatcher guarantees the kernel, arena and scratch copies.
            unsafe { f(job.arena, start, end, t) };
        }
        shared.done.fetch_add(1, Ordering::Release);
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.generation.fetch_add(1, Ordering::Release);
        drop(self.shared.sleepers.lock());
        self.shared.wake.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::share;

    #[test]
    fn shares_cover_the_range_exactly_once() {
        for extent in 0..20u64 {
            for threads in 1..6u64 {
                let mut next = 0;
                for t in 0..threads {
                    let (s, e) = share(extent, threads, t);
                    assert_eq!(s, next);
                    next = e;
                }
                assert_eq!(next, extent);
            }
        }
    }
}
