//! A peer that is going: what a caller is told meanwhile (a failed write,
//! a passed deadline), and how the session ends when the peer is gone
//! while this side holds the reader up (the reader's probe for a hang-up
//! while a line's handling waits, and the task that ends a held-up
//! session). What the end is reported as: a write's failure, the exit
//! status of a child we own, or the peer's close.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Phase, Shared};
use crate::channel::{HangUpProbe, PeerExit};
use crate::error::{CloseReason, Error};

/// How often a reader held up asks whether the peer hung up.
const HANG_UP_PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Runs the reader's handling of one line (`dispatch`) to its end. While
/// that waits (refusals wait to be written past their bound, the backlog
/// is full for a 1.0 peer, or the plain messages are full and this side
/// holds them), the reader reads nothing meanwhile, and a peer that hangs
/// up then would go unseen: its end of stream is in the socket, behind
/// the lines not read yet. Another sign of a gone peer (a write of
/// ours that fails, the exit of a child we own) may never come: a peer we
/// do not own, whose requests from us were all written before it went. So
/// over a Unix socket the reader asks the kernel every
/// [`HANG_UP_PROBE_INTERVAL`] while it waits, and tells the task that ends
/// a held-up session (see [`end_when_the_peer_is_gone_and_the_reader_held_up`]).
/// The reader calls this once a line's handling did not finish at once
/// (a poll without waiting): the common case arms no timer. That poll
/// stays at the two call sites: moved in here, it made the common case
/// build and run this function's future for every line (callgrind: +0.5%
/// of `count burst` and `count seq`).
pub(super) async fn finish_watching_for_a_hang_up<F: std::future::Future<Output = ()>>(
    mut dispatch: std::pin::Pin<&mut F>,
    shared: &Shared,
    probe: Option<&HangUpProbe>,
) {
    let Some(probe) = probe else {
        return dispatch.await;
    };
    let hung_up = async {
        loop {
            tokio::time::sleep(HANG_UP_PROBE_INTERVAL).await;
            // Only a hang-up. A peer that shut down just its reading side
            // fails the writes that wait for it (the channel's writer
            // tries the socket again while it waits: see
            // `channel/unix.rs`), and a write's failure ends a held-up
            // session as well.
            if probe.peer_hung_up() {
                return;
            }
        }
    };
    tokio::select! {
        biased;
        () = dispatch.as_mut() => return,
        () = hung_up => {}
    }
    shared.peer_hung_up.notify_one();
    dispatch.await
}

/// How long the reader may read nothing after the peer is gone, past its
/// own bounds, before [`end_when_the_peer_is_gone_and_the_reader_held_up`]
/// ends the session (a plain message it held, waiting for room, is lost).
const HELD_UP_READER_PATIENCE: Duration = Duration::from_secs(5);

/// `Shared::lines_read` once the reader has left its loop.
pub(super) const READER_DONE: u64 = u64::MAX;

/// Ends the session once the peer is known to be gone (one of our writes
/// failed, the child we own exited, or the reader, held up, found that the
/// peer hung up: see [`finish_watching_for_a_hang_up`]) and the reader reads no
/// more. The reader ends a session from its read loop (see [`read_loop`](super::incoming::read_loop)),
/// but this side can hold it up before it gets back there: refusals that
/// wait to be written to a peer that reads nothing, a backlog full of a
/// 1.0 peer's requests, plain messages that nobody reads (and handlers
/// that wait for answers that will not come meanwhile). A peer that is
/// gone must still fail every pending request, whatever this side does; a reader that still reads a
/// line at least every [`HELD_UP_READER_PATIENCE`] is left to finish (what
/// the peer wrote is delivered).
pub(super) async fn end_when_the_peer_is_gone_and_the_reader_held_up(shared: Arc<Shared>) {
    let peer_exit = shared.peer_exit.clone();
    // Quiet for a session's whole life, unless the peer goes.
    let gone = async {
        tokio::select! {
            // The writer also finishes after a clean close: no failure.
            () = shared.sender.finished() => shared.sender.write_error(),
            status = child_gone(peer_exit.clone(), Duration::ZERO) => Some(CloseReason::ChildExited(status)),
            () = shared.peer_hung_up.notified() => Some(CloseReason::PeerClosed),
        }
    };
    let gone = tokio::select! {
        _ = shared.closing.cancelled() => return,
        gone = gone => gone,
    };
    let Some(gone) = gone else {
        return;
    };
    // The reader's own bounds first, then windows in which it must read
    // something.
    let mut window = shared.gone_peer_limit().saturating_add(HELD_UP_READER_PATIENCE);
    loop {
        let before = shared.lines_read.load(Ordering::Relaxed);
        tokio::select! {
            _ = shared.closing.cancelled() => return,
            () = tokio::time::sleep(window) => {}
        }
        match shared.lines_read.load(Ordering::Relaxed) {
            // The reader left its loop: it ends the session itself, within
            // the exit grace (waiting for the child's status).
            READER_DONE => return,
            now if now == before => break,
            _ => window = HELD_UP_READER_PATIENCE,
        }
    }
    // As the reader would say it: a write that failed for another reason
    // than a gone peer; else the child's exit status if it is known; else
    // the peer closed.
    let reason = match (our_write_failure(&shared), gone) {
        (Some(failure), _) => failure,
        (None, CloseReason::Io(e)) if crate::channel::failed_as_peer_gone(&e) => shared.gone_peer_reason(),
        (None, gone) => with_exit_status(gone, peer_exit, Duration::ZERO).await,
    };
    tracing::warn!(
        "the peer is gone and this side holds the session's reader up: ending the session ({reason})"
    );
    shared.shut(reason);
}

/// The error of a write of ours that failed, unless it failed as writes
/// to a peer that is gone do (a broken pipe, a reset): then the peer's
/// going is the story, told by its end of stream or its exit status.
pub(super) fn our_write_failure(shared: &Shared) -> Option<CloseReason> {
    match shared.sender.write_error()? {
        CloseReason::Io(e) if !crate::channel::failed_as_peer_gone(&e) => Some(CloseReason::Io(e)),
        _ => None,
    }
}

/// When we own the peer process: its exit status, `grace` after it exited;
/// never, for a peer we do not own. The child's end of the channel usually
/// closes as it dies, but not when another process holds a copy (a
/// background job of a shell wrapper, a helper the child started before it
/// opened its channel): the session must not wait on that process.
pub(super) async fn child_gone(peer_exit: Option<PeerExit>, grace: Duration) -> std::process::ExitStatus {
    if let Some(mut exit) = peer_exit {
        // The borrow of the watch must end before the sleep.
        let status = exit
            .wait_for(|s| s.is_some())
            .await
            .map(|s| s.expect("waited for Some"));
        if let Ok(status) = status {
            tokio::time::sleep(grace).await;
            return status;
        }
    }
    std::future::pending().await
}

/// When we own the peer process, a channel that ended is better explained
/// by how the process ended, if it does within the grace period.
pub(super) async fn with_exit_status(
    reason: CloseReason,
    peer_exit: Option<PeerExit>,
    grace: Duration,
) -> CloseReason {
    let Some(mut exit) = peer_exit else {
        return reason;
    };
    match tokio::time::timeout(grace, exit.wait_for(|s| s.is_some())).await {
        Ok(Ok(status)) => CloseReason::ChildExited(status.expect("waited for Some")),
        _ => reason,
    }
}

impl Shared {
    /// The error a caller is told for a failed send (any other error
    /// passes through as it is).
    ///
    /// A write that failed as writes to a peer that is gone do (a broken
    /// pipe) is not the story, and the session has not ended yet: its
    /// reader goes on reading what the peer wrote, then waits for the
    /// child's exit status, and ends the session with that, which every
    /// other pending request is told. So this waits for the session's end
    /// too, as long as the reader may take (its bounds, and a margin), and
    /// tells the same; past that, what is known of it then
    /// ([`gone_peer_reason`](Self::gone_peer_reason)). For plain messages; a
    /// request simply stays pending (see `call_inner`), and the reader must
    /// never wait for itself.
    pub(super) async fn send_error(&self, error: Error) -> Error {
        let error = match error {
            Error::Closed(_) => self.send_error_now(error),
            other => return other,
        };
        if !is_write_to_a_gone_peer(&error) {
            return error;
        }
        let limit = self.gone_peer_limit();
        let mut phase = self.phase.subscribe();
        let ended = tokio::time::timeout(limit, phase.wait_for(|p| matches!(p, Phase::Closed(_)))).await;
        match ended.as_ref().map(|p| p.as_deref()) {
            Ok(Ok(Phase::Closed(reason))) => Error::Closed(reason.clone()),
            _ => Error::Closed(self.gone_peer_reason()),
        }
    }

    /// Why a session whose writes met a gone peer ends, as far as it is
    /// known now (for a caller who cannot wait for the session's end any
    /// longer): the reason if it has ended, else the child's exit status if
    /// we own it and it has exited, else that the peer closed. The last is
    /// a guess, right for a peer that is gone (the reader then reads the
    /// end of stream); a peer that only shut its reading side also fails
    /// our writes with a broken pipe, and its session ends with that error.
    pub(super) fn gone_peer_reason(&self) -> CloseReason {
        if let Some(reason) = self.closed_reason() {
            return reason;
        }
        self.child_exit_status()
            .map_or(CloseReason::PeerClosed, CloseReason::ChildExited)
    }

    /// The exit status of the child we own, once it has exited.
    pub(super) fn child_exit_status(&self) -> Option<std::process::ExitStatus> {
        self.peer_exit.as_ref().and_then(|exit| *exit.borrow())
    }

    /// What a request whose deadline `d` passed fails with: `Timeout`,
    /// unless the peer is known to be gone by then: the child we own has
    /// exited, or the reader has met the channel's end. The session then
    /// fails every pending request, but only once the reader's grace is
    /// over (for the child's exit status after the channel's end, or for
    /// what the child wrote after its exit): a deadline shorter than that
    /// would report a dead peer as a slow one, and a caller might wait for
    /// it to recover. The reason is what is known at the deadline: the
    /// child's exit status, else why the channel ended (`PeerClosed`,
    /// where the session may end a moment later naming the child's exit).
    pub(super) fn deadline_error(&self, d: Duration) -> Error {
        match (self.child_exit_status(), self.reader_ended.get()) {
            (Some(status), _) => Error::Closed(CloseReason::ChildExited(status)),
            (None, Some(reason)) => Error::Closed(reason.clone()),
            (None, None) => Error::Timeout(d),
        }
    }

    /// How long the reader may take to end the session after one of our
    /// writes met a gone peer: its grace for what the peer wrote, the exit
    /// grace if we own the child, and a margin.
    pub(super) fn gone_peer_limit(&self) -> Duration {
        let limit = crate::channel::WRITE_FAILURE_GRACE + Duration::from_millis(300);
        if self.peer_exit.is_some() {
            // Saturating: "wait for the exit status however long" may be
            // written as Duration::MAX.
            limit.saturating_add(self.config.exit_grace)
        } else {
            limit
        }
    }
}

/// A write that failed as writes to a peer that is gone do (a broken pipe),
/// as the channel reports it: the session ends soon after, with a better
/// reason (see [`Shared::send_error`]).
pub(super) fn is_write_to_a_gone_peer(error: &Error) -> bool {
    matches!(error, Error::Closed(CloseReason::Io(e)) if crate::channel::failed_as_peer_gone(e))
}
