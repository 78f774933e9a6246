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
//! calling `exit`) stops the timers the flush relies on.

use std::sync::{Condvar, Mutex, Once, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use super::DROP_FLUSH_TIMEOUT;

/// Flushes started and not finished.
static RUNNING: Mutex<usize> = Mutex::new(0);
/// Told each time one finishes.
static FINISHED: Condvar = Condvar::new();
static WAIT_AT_EXIT: Once = Once::new();

/// Counts one flush as running until it is dropped (run or not, panicked
/// or not).
struct Running;

impl Running {
    fn start() -> Running {
        *RUNNING.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        *RUNNING.lock().unwrap_or_else(PoisonError::into_inner) -= 1;
        FINISHED.notify_all();
    }
}

/// Runs `flush` on a thread of its own, which the process waits for as it
/// exits; `None` if no thread could be started (`flush` is then dropped
/// unrun, here).
pub(super) fn flush_on_a_thread(flush: impl FnOnce() + Send + 'static) -> Option<JoinHandle<()>> {
    WAIT_AT_EXIT.call_once(|| {
        // SAFETY: registers a function that takes nothing, cannot unwind
        // (it only locks and waits), and stays valid for the process's life.
        if unsafe { libc::atexit(wait_for_running_flushes) } != 0 {
            tracing::warn!("cannot wait at exit for the queues of dropped sessions: atexit failed");
        }
    });
    let running = Running::start();
    let started = std::thread::Builder::new()
        .name("ipc-request-flush".into())
        .spawn(move || {
            let _running = running;
            flush();
        });
    if let Err(e) = &started {
        tracing::warn!("no thread to write a dropped session's queue on: {e}");
    }
    started.ok()
}

/// The `atexit` handler: waits, up to [`DROP_FLUSH_TIMEOUT`], for the
/// flushes still running.
extern "C" fn wait_for_running_flushes() {
    let deadline = Instant::now() + DROP_FLUSH_TIMEOUT;
    let mut running = RUNNING.lock().unwrap_or_else(PoisonError::into_inner);
    while *running > 0 {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return;
        };
        running = FINISHED
            .wait_timeout(running, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}
