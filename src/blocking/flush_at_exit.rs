//! The flushes of dropped sessions that run on threads of their own, and
//! the wait for them as the process exits.
//!
//! A drop on a thread in a Tokio runtime's context cannot wait there (a
//! Tokio wait would panic), and often must not (its runtime's tasks, the
//! peer among them perhaps, would stall): a thread of its own writes what
//! was queued, and the drop returns. But the process may exit first (main
//! returns right after the drop), and the queue would go with it. So
//! those threads are counted here, and an `atexit(3)` handler waits for
//! them as the process exits normally (main returns, `std::process::exit`),
//! up to [`DROP_FLUSH_TIMEOUT`] in all: each flush is bounded by that
//! already, and they run at once. An abort or a fatal signal does not wait.
//!
//! The wait is bounded even if a flush cannot end: a process that exits
//! from the thread that runs the session's runtime (an async handler
//! calling `exit`) stops the timers the flush relies on, and then waits
//! the whole bound. It takes no lock, and waits only for the flushes of
//! its own process: a child made by `fork` (without `exec`) inherits the
//! count but not the threads, and perhaps a lock held at that moment by
//! another thread (a review saw such a child hang at exit). Its own first
//! flush takes the count over (a review saw a child's flushes not waited
//! for while the count still named its parent).

use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::DROP_FLUSH_TIMEOUT;

/// The process that counts (high 32 bits) and its flushes started and not
/// finished (low 32 bits): one word, so that a forked child's first flush
/// takes the count over from the parent it copied.
static RUNNING: AtomicU64 = AtomicU64::new(0);
static WAIT_AT_EXIT: Once = Once::new();

/// How often the exit handler looks at the count.
const POLL: Duration = Duration::from_millis(1);

/// Counts one flush as running until it is dropped (run or not, panicked
/// or not).
struct Running;

impl Running {
    fn start() -> Running {
        let me = u64::from(std::process::id()) << 32;
        let _ = RUNNING.fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
            Some(if s & !0xffff_ffff == me { s + 1 } else { me | 1 })
        });
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Runs `flush` on a thread of its own, which the process waits for as it
/// exits, until `flush` returns (what it returns is dropped after that:
/// the session's runtime, whose stop waits for handlers still running, is
/// no part of the wait); `None` if no thread could be started (`flush` is
/// then dropped unrun, here).
pub(super) fn flush_on_a_thread<T>(flush: impl FnOnce() -> T + Send + 'static) -> Option<JoinHandle<()>> {
    WAIT_AT_EXIT.call_once(|| {
        // SAFETY: registers a function that takes nothing, cannot unwind
        // (it only reads atomics and sleeps), and stays valid for the
        // process's life.
        if unsafe { libc::atexit(wait_for_running_flushes) } != 0 {
            tracing::warn!("cannot wait at exit for the queues of dropped sessions: atexit failed");
        }
    });
    let running = Running::start();
    super::runtime::wait_elsewhere(move || {
        let leftovers = {
            let _running = running;
            flush()
        };
        drop(leftovers);
    })
}

/// The `atexit` handler: waits, up to [`DROP_FLUSH_TIMEOUT`], for the
/// flushes still running in this process.
extern "C" fn wait_for_running_flushes() {
    let me = u64::from(std::process::id()) << 32;
    let mine = || {
        let s = RUNNING.load(Ordering::Acquire);
        s & !0xffff_ffff == me && s & 0xffff_ffff > 0
    };
    let deadline = Instant::now() + DROP_FLUSH_TIMEOUT;
    while mine() && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
}
