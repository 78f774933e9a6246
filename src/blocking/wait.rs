//! How a blocking call waits with a deadline: on its own thread, by that
//! thread's clock. A Tokio timer is no deadline here: the session's
//! runtime has one worker, and only a worker drives the timers, so an
//! async handler that blocks that worker would hold every such deadline
//! until it returns (a review measured a 200 ms `request_timeout` ending
//! after 5.5 s, and a drop after 11.5 s).

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::runtime::Handle;

use crate::error::Error;

/// Wakes the waiting thread; a wake-up for nothing (an unpark from
/// elsewhere, or one left over) only makes the loop poll again.
struct Unpark(std::thread::Thread);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.unpark();
    }
}

/// Polls `future` on this thread until it is done (`Some`), or until
/// `timeout` has passed by this thread's clock (`None`: the future is
/// dropped here, which is how its call gives up). It needs no runtime and
/// makes no Tokio check: whatever `future` needs of a runtime is the
/// caller's to provide.
pub(super) fn poll_for<F: Future>(future: F, timeout: Duration) -> Option<F::Output> {
    // No deadline past what an `Instant` can hold: wait until done.
    let deadline = Instant::now().checked_add(timeout);
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        // Polled before every park: a wake-up that came between a poll and
        // the park has unparked this thread already, so the park returns.
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return Some(output);
        }
        match deadline {
            None => std::thread::park(),
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return None;
                }
                std::thread::park_timeout(left);
            }
        }
    }
}

/// [`Handle::block_on`] with a deadline: `future`, run on this thread in
/// `runtime`'s context, or `None` once `timeout` has passed (see
/// [`poll_for`]). Panics where `block_on` does.
pub(super) fn block_on_timeout<F: Future>(
    runtime: &Handle,
    future: F,
    timeout: Duration,
) -> Option<F::Output> {
    // Tokio's own check, which `enter` does not make: a thread that runs a
    // runtime's tasks (an async task, an async handler) must not wait, for
    // it would stall them; a thread of a blocking pool may. This `block_on`
    // panics exactly where a `block_on` of the call would have, with
    // Tokio's message, and returns at once everywhere else.
    runtime.block_on(std::future::ready(()));
    // The call's timers, sockets and tasks are the runtime's: they need its
    // context, not its `block_on` (the worker drives them meanwhile).
    let _entered = runtime.enter();
    poll_for(future, timeout)
}

/// A request of `session`'s without a deadline of its own: `call` is the
/// async `request`, under the session's default deadline
/// (`SessionConfig::request_timeout`) if it has one, which this thread's
/// clock then keeps too, as [`request_within`] keeps an explicit one (a
/// review saw a default of 200 ms end after 3 s, while an async handler
/// held the worker). Without one, it waits for the answer.
pub(super) fn request<T>(
    session: &crate::Session,
    call: impl Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    match session.default_request_timeout() {
        Some(timeout) => request_within(session, call, timeout),
        // A multi-thread runtime's: as the runtime's own block_on.
        None => session.runtime().block_on(call),
    }
}

/// A request of `session`'s: `call` is the async `request_timeout` itself,
/// whose deadline is a Tokio timer; this thread's clock is the backstop
/// for when the worker that drives that timer is held up. Given up then,
/// the request fails as the async call does at its deadline, and dropping
/// `call` cancels it, as that deadline does.
pub(super) fn request_within<T>(
    session: &crate::Session,
    call: impl Future<Output = Result<T, Error>>,
    timeout: Duration,
) -> Result<T, Error> {
    block_on_timeout(session.runtime(), call, timeout).unwrap_or_else(|| Err(session.deadline_error(timeout)))
}
