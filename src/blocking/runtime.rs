//! The Tokio runtime each blocking session runs on, and how its drop waits
//! for what still needs it without blocking where waiting is not allowed.

use std::future::Future;
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::HANDLER_STOP_TIMEOUT;
use crate::error::Error;

/// Threads of a session runtime's blocking pool beyond one per handler
/// slot, for the application's own blocking work (see `Runtime::new`).
const BLOCKING_THREADS_BESIDES_HANDLERS: usize = 64;

/// The most threads a session runtime's blocking pool may have.
const MAX_BLOCKING_THREADS: usize = 1 << 16;

/// The Tokio runtime of one session, stopped when the last handle that
/// needs it goes.
#[derive(Debug)]
pub(super) struct Runtime {
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    /// The exit status of the child a task of this runtime reaps
    /// ([`spawn`](super::spawn)): one still running when the runtime is
    /// dropped is waited for first. Not the child's handle, which would
    /// hold its untaken pipes open, and a child may wait for those to close.
    pub(super) child_exit: Option<watch::Receiver<Option<ExitStatus>>>,
}

impl Runtime {
    /// A runtime for a session whose handlers run at most
    /// `max_concurrent_handlers` at once.
    pub(super) fn new(max_concurrent_handlers: usize) -> Result<Self, Error> {
        // One worker: it runs the reader, the writer and async handlers; the
        // callers' threads run their own calls' futures. The blocking pool
        // (made when needed) has a thread for every handler slot, and room
        // for the application's own `spawn_blocking` and `tokio::fs` calls
        // besides: handlers of `handler_fn` waiting on callbacks, whose own
        // handlers queue for a thread, would otherwise wait for ever. Never
        // fewer than Tokio's default (512), and not without bound (Tokio
        // adds the worker to it, and panics on an overflow).
        let blocking_threads = max_concurrent_handlers
            .saturating_add(BLOCKING_THREADS_BESIDES_HANDLERS)
            .clamp(512, MAX_BLOCKING_THREADS);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .max_blocking_threads(blocking_threads)
            .thread_name("ipc-request")
            .enable_all()
            .build()
            .map_err(|e| Error::Io(Arc::new(e)))?;
        Ok(Runtime {
            runtime: Some(runtime),
            child_exit: None,
        })
    }

    /// Runs `future` on this thread until it is done. Panics in an async
    /// context (see the module docs of `blocking`).
    pub(super) fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.runtime
            .as_ref()
            .expect("the runtime is there until dropped")
            .block_on(future)
    }

    /// [`block_on`](Self::block_on), given up once `timeout` has passed by
    /// this thread's clock: `None` then (see `wait::block_on_timeout`).
    pub(super) fn block_on_timeout<F: Future>(&self, future: F, timeout: Duration) -> Option<F::Output> {
        let runtime = self.runtime.as_ref().expect("the runtime is there until dropped");
        super::wait::block_on_timeout(runtime.handle(), future, timeout)
    }
}

/// True on a thread where waiting would panic or stall tasks: one running a
/// Tokio runtime's tasks; or one of its blocking threads, where waiting is
/// allowed but this cannot tell them apart. A drop there has the waiting
/// done on another thread.
pub(super) fn in_runtime() -> bool {
    tokio::runtime::Handle::try_current().is_ok()
}

/// True on a thread that is exiting, whose Tokio context is already gone
/// (a handle held in a thread-local, dropped after Tokio's own): there
/// `block_on` panics, and a panic in a thread-local's destructor aborts the
/// process. Such a drop waits on another thread.
pub(super) fn thread_exiting() -> bool {
    tokio::runtime::Handle::try_current().is_err_and(|e| e.is_thread_local_destroyed())
}

/// Runs `work` on a thread of its own, for a drop that cannot wait where
/// it is; `None` if no thread could be started (`work` is then dropped
/// unrun, here). Not itself waited for at exit (a runtime's stop may wait
/// for a child to exit): a session's flush is, counted by
/// `flush_at_exit::flush_on_a_thread`.
pub(super) fn wait_elsewhere(work: impl FnOnce() + Send + 'static) -> Option<std::thread::JoinHandle<()>> {
    let started = std::thread::Builder::new()
        .name("ipc-request-drop".into())
        .spawn(work);
    if let Err(e) = &started {
        tracing::warn!("no thread to finish a dropped session on: {e}");
    }
    started.ok()
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        // Nothing reaps a child once its runtime has stopped: a child still
        // running (it exits once it sees its channel close) would be left a
        // zombie for as long as this process lives.
        let child_exit = self.child_exit.take().filter(|exit| exit.borrow().is_none());
        if child_exit.is_none() && !in_runtime() {
            runtime.shutdown_timeout(HANDLER_STOP_TIMEOUT);
            return;
        }
        // In a slot, not moved into the closure: if no thread starts, the
        // closure is dropped here, and a runtime dropped where it cannot
        // wait panics. It is then stopped without waiting.
        let slot = Arc::new(Mutex::new(Some(runtime)));
        let theirs = slot.clone();
        let waited = wait_elsewhere(move || {
            let Some(runtime) = theirs.lock().unwrap().take() else {
                return;
            };
            if let Some(mut exit) = child_exit {
                let _ = runtime.block_on(exit.wait_for(|status| status.is_some()));
            }
            runtime.shutdown_timeout(HANDLER_STOP_TIMEOUT);
        });
        if waited.is_none() {
            if let Some(runtime) = slot.lock().unwrap().take() {
                runtime.shutdown_background();
            }
        }
    }
}
