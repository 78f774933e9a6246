//! Unit tests of the channel: writes and failed writes, reading, closing,
//! and Node's internal messages.

mod failed_writes;
mod node_internal;
mod reading;
mod withdrawals;
mod writer_task;

// The channel's own items, which the tests in the submodules name as
// `super::...`.
use super::{
    Channel, ChannelConfig, ChannelReceiver, KEEP_AFTER_TOO_LONG, LineTicket, Parsed, READ_LIMIT,
    node_internal_cmd, node_internal_cmd_at_head,
};

/// A flag a test opens once, and the waker of the last poll that found it
/// shut, woken as it opens: what the scripted writers below wait on.
#[derive(Clone, Default)]
struct Gate {
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    waker: std::sync::Arc<std::sync::Mutex<Option<std::task::Waker>>>,
}

impl Gate {
    /// Whether it is open; if not, `cx` is woken once it opens.
    fn poll_open(&self, cx: &mut std::task::Context<'_>) -> bool {
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether anything has waited on it yet.
    fn waited_on(&self) -> bool {
        self.waker.lock().unwrap().is_some()
    }

    fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(waker) = self.waker.lock().unwrap().take() {
            waker.wake();
        }
    }
}
