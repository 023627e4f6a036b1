//! The worker threads of the packed-weight kernels: `threads - 1` workers plus the calling thread split the
//! tasks of one [`parallel_for`] at a time. Between calls the workers spin for a short while before they sleep,
//! so the back-to-back kernels of a decode step do not pay a thread wake-up each (the calls are a few tens of
//! microseconds apart, a futex wake-up costs about as much).
//!
//! Protocol: a call publishes its job (a pointer to a stack frame that outlives the call) and then a ticket
//! `generation | tasks | next task`; workers claim tasks by advancing the ticket with a compare-and-swap, which
//! fails once the generation has moved on, so a stale worker never runs a finished job.

use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long an idle worker spins before it sleeps.
const SPIN: Duration = Duration::from_millis(3);
/// Longest sleep before a worker looks for work again (guards against a missed wake-up).
const NAP: Duration = Duration::from_millis(5);
/// Most tasks one call may have (the task fields of the ticket are 16 bits wide).
const MAX_TASKS: usize = u16::MAX as usize;

struct Job<'a> {
    run: &'a (dyn Fn(usize) + Sync),
}

struct Pool {
    workers: usize,
    /// `generation << 32 | tasks << 16 | next`.
    ticket: AtomicU64,
    job: AtomicPtr<Job<'static>>,
    done: AtomicUsize,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    /// Serialises calls from different threads.
    call: Mutex<()>,
    /// The panic of a task of the running call, re-raised on the caller once every task has finished.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

static POOL: OnceLock<&'static Pool> = OnceLock::new();
static REQUESTED: AtomicUsize = AtomicUsize::new(0);

/// Sets the number of threads (the caller included) for kernels started afterwards; takes effect only before the
/// first kernel runs. 0 = the `RAYON_NUM_THREADS` setting, else every available core.
pub fn set_threads(threads: usize) {
    REQUESTED.store(threads, Ordering::Relaxed);
}

/// Number of threads the kernels use (the caller included).
pub fn threads() -> usize {
    pool().workers + 1
}

fn configured_threads() -> usize {
    let requested = REQUESTED.load(Ordering::Relaxed);
    if requested > 0 {
        return requested;
    }
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            workers: configured_threads().saturating_sub(1),
            ticket: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            done: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
            call: Mutex::new(()),
            panic: Mutex::new(None),
        }));
        for i in 0..pool.workers {
            let spawned = std::thread::Builder::new()
                .name(format!("coreml-kernel-{i}"))
                .spawn(move || pool.work());
            if spawned.is_err() {
                tracing::warn!("could not start kernel worker thread {i}; running with fewer");
            }
        }
        pool
    })
}

fn unpack(ticket: u64) -> (u64, usize, usize) {
    (
        ticket >> 32,
        ((ticket >> 16) & 0xffff) as usize,
        (ticket & 0xffff) as usize,
    )
}

impl Pool {
    /// Claims and runs tasks of the published job until none are left.
    fn run_tasks(&self) -> bool {
        let mut ran = false;
        loop {
            let ticket = self.ticket.load(Ordering::Acquire);
            let (_, tasks, next) = unpack(ticket);
            if next >= tasks {
                return ran;
            }
            let job = self.job.load(Ordering::Acquire);
            if self
                .ticket
                .compare_exchange_weak(ticket, ticket + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                continue;
            }
            // SAFETY: the claim succeeded, so the job of this generation is unfinished and its caller is still
            // waiting in `parallel_for`, keeping `job` alive; it was published before the ticket we read.
            let run = unsafe { (*job).run };
            // A panicking task must still count as done, or the caller would wait forever (or, if the caller's
            // own task panicked, leave while others still use its job).
            if let Err(payload) =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(next)))
            {
                let mut slot = self.panic.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert(payload);
            }
            self.done.fetch_add(1, Ordering::AcqRel);
            ran = true;
        }
    }

    fn work(&self) {
        let mut idle_since = Instant::now();
        loop {
            if self.run_tasks() {
                idle_since = Instant::now();
                continue;
            }
            if idle_since.elapsed() < SPIN {
                for _ in 0..64 {
                    std::hint::spin_loop();
                }
                continue;
            }
            let guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            let (_, tasks, next) = unpack(self.ticket.load(Ordering::SeqCst));
            let guard = if next >= tasks {
                self.wake
                    .wait_timeout(guard, NAP)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0)
            } else {
                guard
            };
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
            drop(guard);
            idle_since = Instant::now();
        }
    }
}

/// Runs `f(0) .. f(tasks - 1)` on the kernel threads and the caller, returning when all have finished. Calls
/// with one task, or made while another call is running, run on the caller alone.
pub fn parallel_for(tasks: usize, f: impl Fn(usize) + Sync) {
    let pool = pool();
    if tasks <= 1 || pool.workers == 0 || tasks > MAX_TASKS {
        (0..tasks).for_each(f);
        return;
    }
    let Ok(_call) = pool.call.try_lock() else {
        (0..tasks).for_each(f);
        return;
    };
    let job = Job { run: &f };
    let generation = unpack(pool.ticket.load(Ordering::Acquire)).0 + 1;
    pool.done.store(0, Ordering::Release);
    // The pointer is only dereferenced by claims of this generation, all of which finish before we return.
    pool.job.store(
        &job as *const Job<'_> as *mut Job<'static>,
        Ordering::Release,
    );
    pool.ticket.store(
        (generation & 0xffff_ffff) << 32 | (tasks as u64) << 16,
        Ordering::Release,
    );
    if pool.sleepers.load(Ordering::SeqCst) > 0 {
        let _guard = pool.lock.lock().unwrap_or_else(|e| e.into_inner());
        pool.wake.notify_all();
    }
    pool.run_tasks();
    while pool.done.load(Ordering::Acquire) < tasks {
        std::hint::spin_loop();
    }
    let panicked = pool.panic.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(payload) = panicked {
        std::panic::resume_unwind(payload);
    }
}

/// Runs `f(i, chunk_i)` for the consecutive `chunk`-element pieces of `out` (the last may be shorter) on the
/// kernel threads.
pub fn parallel_chunks_mut<T: Send>(
    out: &mut [T],
    chunk: usize,
    f: impl Fn(usize, &mut [T]) + Sync,
) {
    let chunk = chunk.max(1);
    let len = out.len();
    let base = SendPtr(out.as_mut_ptr());
    parallel_for(len.div_ceil(chunk), |i| {
        let start = i * chunk;
        let n = chunk.min(len - start);
        // SAFETY: task i is the only one touching elements [start, start + n) of `out`, which outlives the call.
        let piece = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), n) };
        f(i, piece);
    });
}

/// A pointer that may cross threads (the caller guarantees disjoint use).
struct SendPtr<T>(*mut T);

impl<T> SendPtr<T> {
    fn get(&self) -> *mut T {
        self.0
    }
}

// SAFETY: only used by `parallel_chunks_mut`, whose tasks touch disjoint elements.
unsafe impl<T: Send> Sync for SendPtr<T> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_task_runs_once() {
        for tasks in [0usize, 1, 2, 7, 300] {
            let hits: Vec<AtomicUsize> = (0..tasks).map(|_| AtomicUsize::new(0)).collect();
            for _ in 0..50 {
                parallel_for(tasks, |i| {
                    hits[i].fetch_add(1, Ordering::Relaxed);
                });
            }
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 50));
        }
    }

    #[test]
    fn a_panicking_task_reaches_the_caller_after_the_others_finish() {
        let finished = AtomicUsize::new(0);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            parallel_for(8, |i| {
                if i == 3 {
                    panic!("task 3 fails");
                }
                finished.fetch_add(1, Ordering::Relaxed);
            });
        }));
        assert!(caught.is_err());
        assert_eq!(finished.load(Ordering::Relaxed), 7);
        let hits = AtomicUsize::new(0);
        parallel_for(4, |_| {
            hits.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(hits.load(Ordering::Relaxed), 4, "the pool still works");
    }

    #[test]
    fn chunks_cover_the_slice() {
        let mut v = vec![0usize; 1001];
        parallel_chunks_mut(&mut v, 64, |i, piece| {
            for (j, x) in piece.iter_mut().enumerate() {
                *x = i * 64 + j;
            }
        });
        assert!(v.iter().enumerate().all(|(i, &x)| i == x));
    }
}
