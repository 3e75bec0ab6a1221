//! Persistent worker threads for splitting a kernel's parallel dimension.
//!
//! Dispatch is a generation counter: the caller publishes a job and bumps the
//! generation; workers spin on it for a short while (a kernel every few microseconds is
//! common) and only then park on a condition variable. Parking barriers were too slow
//! for sub-millisecond kernels.
//!
//! The work is dealt out in chunks of about a quarter of an even share, each thread
//! (the caller too) taking the next chunk from a shared counter until none are left, and
//! the caller then spins until the workers report done. Even shares fixed in advance
//! leave the whole kernel waiting on the slowest core, and cores are often not equal:
//! on a shared virtual machine one vCPU can run half as fast as the other for minutes.
//! A kernel's result does not depend on which thread computes which chunk: the units of
//! its parallel loop are independent and each call uses only its own thread's scratch.

use nnc_compiler::backend::KernelFn;
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
    chunk: u64,
}

struct Shared {
    generation: AtomicU64,
    /// The first unit of the current job not yet taken.
    next: AtomicU64,
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

/// Units per chunk when `extent` units are dealt to `threads` threads: about four
/// chunks per thread, at least one unit each.
fn chunk(extent: u64, threads: u64) -> u64 {
    extent.div_ceil(4 * threads).max(1)
}

/// Runs chunks of the job as thread `t` until none are left.
///
/// # Safety
/// As for [`Pool::run`].
unsafe fn take_chunks(shared: &Shared, job: &Job, t: u64) {
    let Some(f) = job.f else { return };
    loop {
        let start = shared.next.fetch_add(job.chunk, Ordering::Relaxed);
        if start >= job.extent {
            return;
        }
        // SAFETY: as the caller promised; every unit is taken by exactly one thread.
        unsafe { f(job.arena, start, (start + job.chunk).min(job.extent), t) };
    }
}

impl Pool {
    /// A pool of `threads − 1` workers (the caller is thread 0).
    pub fn new(threads: usize) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            next: AtomicU64::new(0),
            job: UnsafeCell::new(Job { f: None, arena: std::ptr::null_mut(), extent: 0, chunk: 1 }),
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
    /// done. It takes `&mut self`: one job at a time is what the shared job slot and the
    /// done counter allow, and the borrow checker enforces that.
    ///
    /// # Safety
    /// - `f` must be valid to call, for the whole call (its code not freed);
    /// - `f(arena, start, end, t)` must be safe for every `start..end` inside
    ///   `0..extent` and every thread index `t` below [`Pool::threads`], with calls on
    ///   disjoint ranges and distinct `t` running at the same time: `arena` must hold the
    ///   memory plan `f` was generated for, with a scratch copy per thread of this pool;
    /// - `arena` must stay valid, and not be accessed otherwise, until `run` returns.
    pub unsafe fn run(&mut self, f: KernelFn, arena: *mut u8, extent: u64) {
        let job = Job { f: Some(f), arena, extent, chunk: chunk(extent, self.threads() as u64) };
        // SAFETY: as the caller promised.
        unsafe { self.dispatch(job) }
    }

    /// Runs a team kernel: `f` over `0..threads`, one unit per thread, all at once (a
    /// member waits at the kernel's barriers until every other one arrives, so none can
    /// take a second unit while one is left).
    ///
    /// # Safety
    /// As [`Pool::run`] with an extent of [`Pool::threads`].
    pub unsafe fn run_team(&mut self, f: KernelFn, arena: *mut u8) {
        let job = Job { f: Some(f), arena, extent: self.threads() as u64, chunk: 1 };
        // SAFETY: as the caller promised.
        unsafe { self.dispatch(job) }
    }

    /// Publishes `job`, takes its chunks as thread 0 and waits for the workers.
    ///
    /// # Safety
    /// As [`Pool::run`].
    unsafe fn dispatch(&mut self, job: Job) {
        // SAFETY: every worker is idle: the previous dispatch waited for all of them.
        unsafe { *self.shared.job.get() = job };
        self.shared.next.store(0, Ordering::Relaxed);
        self.shared.done.store(0, Ordering::Relaxed);
        self.shared.generation.fetch_add(1, Ordering::Release);
        if *self.shared.sleepers.lock().unwrap_or_else(|e| e.into_inner()) > 0 {
            self.shared.wake.notify_all();
        }
        // SAFETY: as the caller promised; thread 0's scratch.
        unsafe { take_chunks(&self.shared, &job, 0) };
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
        // SAFETY: the dispatcher guarantees the kernel, arena and scratch copies.
        unsafe { take_chunks(shared, &job, t) };
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
    use super::*;

    /// A kernel recording which units it was called for, as a count per unit.
    unsafe extern "C" fn count_units(arena: *mut u8, start: u64, end: u64, _thread: u64) {
        let counts = arena as *const AtomicU64;
        for u in start..end {
            // SAFETY: the test's arena has a counter per unit.
            unsafe { (*counts.add(u as usize)).fetch_add(1, Ordering::Relaxed) };
        }
    }

    #[test]
    fn every_unit_runs_exactly_once() {
        for threads in 1..5 {
            let mut pool = Pool::new(threads).unwrap();
            for extent in 0..70u64 {
                let counts: Vec<AtomicU64> = (0..extent).map(|_| AtomicU64::new(0)).collect();
                // SAFETY: the kernel only touches the counters, which outlive the call.
                unsafe { pool.run(count_units, counts.as_ptr() as *mut u8, extent) };
                assert!(
                    counts.iter().all(|c| c.load(Ordering::Relaxed) == 1),
                    "{threads} threads, extent {extent}"
                );
            }
        }
    }

    #[test]
    fn chunks_are_a_quarter_share() {
        assert_eq!(chunk(64, 2), 8);
        assert_eq!(chunk(2, 2), 1);
        assert_eq!(chunk(0, 3), 1);
        assert_eq!(chunk(13, 3), 2);
    }
}
