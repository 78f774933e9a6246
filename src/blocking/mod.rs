//! A blocking API, for programs that have no async runtime: the async
//! session run by a Tokio runtime of its own (the model of reqwest's
//! `blocking` module). That runtime, one worker thread per session, runs the
//! session's reader, its writer and the handlers; a blocking call runs the
//! async call's own future on the caller's thread and waits there for it.
//! Nothing here speaks the protocol: every call is the async API's, awaited.
//!
//! ```no_run
//! use ipc_request::blocking;
//!
//! # fn main() -> Result<(), ipc_request::Error> {
//! let mut command = std::process::Command::new("node");
//! command.arg("child.js");
//! let (session, child) = blocking::spawn(command, None)?; // after the handshake
//! let answer: String = session.request("(REQUEST FROM parent)")?;
//! drop(session); // the last handle: closes the session, the child sees it
//! child.wait()?;
//! # Ok(())
//! # }
//! ```
//!
//! Handlers are the async API's ([`crate::handler_fn`], [`crate::responder_fn`]),
//! or [`handler_fn`] here for a plain function: it runs on a thread of the
//! runtime's blocking pool, where it may block, and may call the peer back
//! (a request to the peer while answering one of its own) through
//! [`Peer::of`] its request.
//!
//! An async handler must not block (sleep, compute at length, make a
//! blocking call): it runs on the runtime's only worker, which also reads
//! and writes for the session, so nothing is read or written meanwhile,
//! and every request, answer and message waits. Work that blocks goes in
//! a [`handler_fn`] handler. The timeouts here hold anyway: those of
//! [`Session::request_timeout`] and its siblings, the session's default
//! deadline ([`SessionConfig::request_timeout`](crate::SessionConfig::request_timeout))
//! of [`Session::request`] and [`Session::request_raw`], [`Messages::recv_timeout`],
//! [`ChildProcess::wait_timeout`], the grace of
//! [`ChildProcess::wait_or_kill`] (its kill, not the exit status it then
//! waits for), [`Session::shutdown_timeout`] and the
//! drop's bounded waits are kept by the waiting thread's own clock, not by
//! the runtime's timers (which that worker drives): they end on time,
//! with what they return at their deadline (a request fails with
//! [`Error::Timeout`] and is cancelled; what the flush of a drop could not
//! write is lost). A deadline of zero, or of a few microseconds, so fails
//! a request here before its answer can come, where the async call,
//! whose timer counts whole milliseconds, may still take the answer.
//!
//! # Panics
//!
//! Every call that waits panics if made from inside an async context (a
//! task of any Tokio runtime, this one's async handlers included), as
//! Tokio's `block_on` does: waiting there would stall the other tasks of
//! that thread. Use the async API there. The threads [`handler_fn`] runs on
//! are not async contexts. One exception: [`wait_for_cancel`] cannot tell
//! such a thread from those, and does not panic; there it blocks the
//! thread, and with it the reader that would bring the cancel.
//!
//! # How a session ends
//!
//! As in the async API, by either side's close, the peer's exit or a
//! failure; and, here, when the last clone of its [`Session`] is dropped
//! ([`Messages`] and [`ChildProcess`] do not count): the drop closes it,
//! waits up to [`DROP_FLUSH_TIMEOUT`] for what was sent to be written (the
//! peer must read it), and returns (after up to [`HANDLER_STOP_TIMEOUT`]
//! more if it also stops the runtime while handlers still run). A clone
//! kept elsewhere (by a handler, to call the peer back; by a thread that
//! waits for Ctrl-C) keeps the session open past the drop of yours: close
//! such a session with [`Session::close`], which any clone may call. (The
//! session lets go of its handler when it ends, so it then goes with its
//! last handle too.)
//!
//! The runtime itself stops once the session, its messages and its child
//! are all dropped; a handler of [`handler_fn`] still running then has
//! [`HANDLER_STOP_TIMEOUT`] to return (its request is cancelled: see
//! [`Request::is_cancelled`]) before the runtime lets go of its thread. A
//! child that still runs then is waited for, so that it is never left a
//! zombie: the runtime (a thread, and one more that waits) stops once the
//! child exits, as a child does when its channel closes. One that never
//! exits keeps them until it does: [`ChildProcess::kill`] it first, or
//! [`set_kill_on_drop`](ChildProcess::set_kill_on_drop).
//!
//! A drop that cannot wait where it happens (on a thread in a Tokio
//! runtime's context: an async task, a [`handler_fn`] thread, the body of
//! a `block_on`, a thread that entered a runtime) closes the session,
//! leaves the waiting to a thread of its own, and returns at once: what
//! was queued is written while the process lives, and a process that exits
//! normally (main returns, `std::process::exit`) first waits up to
//! [`DROP_FLUSH_TIMEOUT`] for such writes (an `atexit(3)` handler; an exit
//! from an async handler of the session, whose runtime then stops, waits
//! that whole bound). An abort or a fatal signal does not wait:
//! [`Session::shutdown_timeout`] (on a thread that may wait) says whether
//! the queue was written.
//!
//! All of that is for handles that are dropped. `std::process::exit`
//! while a handle is alive (held by `main`, say) runs no destructor: what
//! is still queued (a [`Session::send`] returns once its message is
//! queued) is lost unless [`Session::shutdown_timeout`] ran first.
//!
//! A process forked without exec from one that has sessions (`fork(2)`
//! in a threaded program, where only async-signal-safe calls are sound)
//! must neither use nor drop the handles it inherited: the runtime's
//! threads are not in it, so a call or a drop there waits for ever (and a
//! [`ChildProcess`] set to kill on drop would kill the parent's child).
//! `std::mem::forget` them, or leave with `_exit`.

mod child;
mod flush_at_exit;
mod peer;
mod runtime;
mod wait;

pub use child::ChildProcess;
pub use peer::Peer;

use std::future::Future;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::channel::{Channel, ChannelConfig};
use crate::error::{CloseReason, Error, RemoteError};
use crate::frame::Message;
use crate::process::{self, SpawnOptions};
use crate::session::{self, Handler, PeerInfo, Request, SessionBuilder};
use runtime::{Runtime, in_runtime, thread_exiting};

/// How long dropping the last [`Session`] handle waits for what was queued
/// to be written, before it lets go of it: 2 s.
pub const DROP_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// How long stopping the runtime waits for handlers still running on its
/// blocking threads (see the module docs): 1 s.
pub const HANDLER_STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// A handler that is a plain function, run on a thread of the session
/// runtime's blocking pool: it may block, and may call the session back.
/// Its answer and errors travel as with [`crate::handler_fn`]: `Ok(value)`
/// is the response, `Err(error)` travels back as a [`RemoteError`], and a
/// panic is answered with an error named `HandlerPanicked`. At most
/// [`SessionConfig::max_concurrent_handlers`](crate::SessionConfig::max_concurrent_handlers)
/// run at once, as for any handler, each on a thread of its own (made when
/// needed, kept a while for the next): the runtime's blocking pool has one
/// for every handler slot and 64 more, at least 512 and at most 65,536 in
/// all, shared with the `spawn_blocking` and `tokio::fs` calls of handlers.
/// A handler that calls the peer back
/// holds its slot until the answer comes; if the peer's answer needs one of
/// our handlers too, callbacks nested past that many at once wait for ever,
/// as with any handler: raise the limit for such a peer.
///
/// A handler that works in steps looks for the peer's cancel between them
/// with [`Request::is_cancelled`]; one that waits (between steps, or for
/// work of its own) waits with [`wait_for_cancel`], which returns as soon
/// as the cancel comes (`examples/blocking_peer.rs` does). A Tokio timer
/// there (a `block_on` of `tokio::time::timeout` around
/// [`Request::cancelled`]) is no substitute: started while the runtime
/// shuts down, it panics.
///
/// The answer is queued once the function has returned. A program that
/// ends once it has answered (a "quit" request) and is told so from the
/// handler may close the session before that: tell it from a
/// [`crate::responder_fn`] handler, once `respond` has returned.
///
/// ```no_run
/// # use ipc_request::{blocking, Request, RemoteError};
/// let handler = blocking::handler_fn(|req: Request| {
///     let text: String = req.payload()?;
///     Ok::<_, RemoteError>(format!("(RESPONSE TO {text})"))
/// });
/// ```
pub fn handler_fn<F, T, E>(f: F) -> Handler
where
    F: Fn(Request) -> Result<T, E> + Send + Sync + 'static,
    T: Serialize + Send + Sync + 'static,
    E: Into<RemoteError> + Send + 'static,
{
    let f = Arc::new(f);
    crate::handler_fn(move |request: Request| {
        let f = f.clone();
        async move {
            match tokio::task::spawn_blocking(move || f(request)).await {
                Ok(answer) => answer.map_err(Into::into),
                Err(failed) if failed.is_panic() => Err(session::panic_error(failed.into_panic())),
                // Only a runtime that is shutting down drops a blocking
                // task unstarted; the session is closed by then.
                Err(_) => Err(RemoteError::new(
                    "HandlerNotRun",
                    "the session's runtime was stopping",
                )),
            }
        }
    })
}

/// For a blocking handler only: blocks this thread until `request` is
/// cancelled or `timeout` has passed: true if it was cancelled, at once if
/// it already was. Cancelled
/// means as [`Request::cancelled`]: the peer cancelled it, or the session
/// closed. For a [`handler_fn`] handler, in place of a sleep: between steps
/// of its work, or while it waits for something of its own, it then stops
/// as soon as the cancel comes rather than at its next look.
///
/// It needs no runtime and starts no Tokio timer (one started while the
/// session's runtime shuts down panics). It blocks the thread it runs on:
/// never call it from an async handler (await [`Request::cancelled`]
/// there), whose thread runs other tasks, the session's reader perhaps
/// (a blocking session's runtime has one worker): the cancel would then
/// not be read until the wait ends, and every other request waits too.
/// Unlike the calls of this module that wait, it does not panic there (it
/// cannot tell that thread from a blocking handler's).
///
/// ```no_run
/// # use std::time::Duration;
/// # use ipc_request::{blocking, Request, RemoteError};
/// let handler = blocking::handler_fn(|req: Request| {
///     for step in 0..10 {
///         // ... one step of the work ...
///         if blocking::wait_for_cancel(&req, Duration::from_millis(100)) {
///             return Err(RemoteError::new("Cancelled", format!("stopped before step {step}")));
///         }
///     }
///     Ok("done")
/// });
/// ```
pub fn wait_for_cancel(request: &Request, timeout: Duration) -> bool {
    wait::poll_for(request.cancelled(), timeout).is_some()
}

/// Starts `command` with a channel and sets up a session with it, with
/// `handler` for its requests; see [`spawn_with`].
pub fn spawn(
    command: Command,
    handler: impl Into<Option<Handler>>,
) -> Result<(Session, ChildProcess), Error> {
    spawn_with(
        command,
        SpawnOptions::default(),
        SessionBuilder::new().handler(handler),
    )
}

/// [`crate::spawn_with`] and [`SessionBuilder::setup`], in a runtime of the
/// session's own: returns once the handshake is done. If it fails, the
/// child is killed (no handle to it is returned).
///
/// Streams of `command` set to [`Stdio::piped()`](std::process::Stdio::piped)
/// are there for the taking, as blocking files: [`ChildProcess::take_stdout`]
/// and its siblings. But only once the handshake is done: a child that
/// writes more than a pipe holds (64 KiB on Linux) to one of them before it
/// opens its channel, or reads its stdin first, then never answers the
/// handshake, which fails after its timeout. For such a child, take the
/// streams in [`spawn_with_pipes`], before the handshake.
pub fn spawn_with(
    command: Command,
    options: SpawnOptions,
    builder: SessionBuilder,
) -> Result<(Session, ChildProcess), Error> {
    spawn_with_pipes(command, options, builder, |_| {})
}

/// [`spawn_with`], calling `take_pipes` with the child as soon as it has
/// started, before the handshake: to take its piped streams
/// ([`ChildProcess::take_stdout`] and its siblings) and read or write them
/// on threads of your own, for a child that uses them before it opens its
/// channel. `take_pipes` runs on this thread, and the handshake waits for
/// it. If the handshake fails, or `take_pipes` panics, the child is killed,
/// as with `spawn_with`; the streams taken stay yours (a reader sees them
/// end).
///
/// It is also how to give up the start from another thread (one that
/// waits for Ctrl-C, say), which `spawn_with` leaves waiting up to the
/// handshake timeout: clone the [`ChildProcess`] here and hand the clone
/// over; its [`kill`](ChildProcess::kill) makes the handshake fail at once.
pub fn spawn_with_pipes(
    command: Command,
    options: SpawnOptions,
    builder: SessionBuilder,
    take_pipes: impl FnOnce(&ChildProcess),
) -> Result<(Session, ChildProcess), Error> {
    let mut runtime = Runtime::new(builder.max_concurrent_handlers())?;
    let (channel, child) = runtime.block_on(async { process::spawn_with(command, options) })?;
    // Before anything can fail: a child killed after a failed handshake,
    // slower to die than `kill_and_wait` waits, is still reaped (see the
    // runtime's drop).
    runtime.child_exit = Some(child.exit_status());
    let runtime = Arc::new(runtime);
    let child = ChildProcess {
        child,
        runtime: runtime.clone(),
    };
    {
        // A panic in `take_pipes` leaves the caller no handle on the child:
        // it is killed as the panic goes by (and reaped by the runtime's
        // drop), as after a failed handshake. Disarmed once `take_pipes`
        // returns: asking `thread::panicking` instead would kill the
        // child of a spawn made in a destructor during an unrelated
        // unwind (a review saw that).
        let mut kill = process::KillUnlessDisarmed::new(&child.child);
        take_pipes(&child);
        kill.disarm();
    }
    let setup = runtime.block_on(async {
        let setup = builder.setup(channel).await;
        if setup.is_err() {
            process::kill_and_wait(&child.child).await;
        }
        setup
    });
    Ok((Session::new(setup?, runtime), child))
}

/// The channel this process's parent gave it ([`crate::open_from_env`]), and
/// a session over it with `handler` for the parent's requests; returns once
/// the handshake is done.
///
/// # Safety
///
/// As [`crate::open_from_env`]: no other thread reads or writes the
/// environment while this runs, other than through `std::env`, and nothing
/// else in the process owns the descriptor `NODE_CHANNEL_FD` names.
pub unsafe fn open_from_env(handler: impl Into<Option<Handler>>) -> Result<Session, Error> {
    // SAFETY: the caller upholds open_from_env_with's contract, the same.
    unsafe { open_from_env_with(ChannelConfig::default(), SessionBuilder::new().handler(handler)) }
}

/// [`open_from_env`] with channel and session settings.
///
/// # Safety
///
/// As [`crate::open_from_env`].
pub unsafe fn open_from_env_with(config: ChannelConfig, builder: SessionBuilder) -> Result<Session, Error> {
    // SAFETY: the caller upholds crate::open_from_env_with's contract, the
    // same; the runtime's own threads do not touch the environment.
    setup_with(builder, || unsafe { process::open_from_env_with(config) })
}

/// A session over any channel: `open` makes it (it runs inside the
/// session's runtime, as making a [`Channel`] must), then the handshake
/// runs; returns once it is done.
pub fn setup_with(
    builder: SessionBuilder,
    open: impl FnOnce() -> Result<Channel, Error>,
) -> Result<Session, Error> {
    let runtime = Arc::new(Runtime::new(builder.max_concurrent_handlers())?);
    let session = runtime.block_on(async { builder.setup(open()?).await })?;
    Ok(Session::new(session, runtime))
}

/// A handle on an established session, for blocking code. Cheap to clone;
/// all clones share it. Dropping the last clone closes the session (see
/// the module docs). `Send` and `Sync`: calls from many threads at once
/// are in flight at once.
#[derive(Debug, Clone)]
pub struct Session {
    inner: Arc<Owner>,
}

/// Closes the session when the last handle goes. The runtime is declared
/// after the session: it stops only once the drop has finished with it.
#[derive(Debug)]
struct Owner {
    session: crate::Session,
    runtime: Arc<Runtime>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        // Closed at once, wherever the wait happens: nothing sent after the
        // drop returns (a handler's answer) is written.
        self.session.close();
        let exiting = thread_exiting();
        if !exiting && !in_runtime() {
            close_and_flush(&self.session, &self.runtime, DROP_FLUSH_TIMEOUT);
            return;
        }
        // A Tokio wait here would panic (a thread in a runtime's context;
        // one whose Tokio context is gone), and waiting at all may stall
        // the tasks of this thread's runtime, the peer's perhaps (a review
        // saw a join here run out the whole bound, the queue lost): a
        // thread of its own writes the queue, and the process waits for it
        // as it exits (see `flush_at_exit`). The clones it holds are no
        // `Owner`: their drops do not come back here.
        let (session, runtime) = (self.session.clone(), self.runtime.clone());
        let flush = move || {
            close_and_flush(&session, &runtime, DROP_FLUSH_TIMEOUT);
            // Dropped once the flush no longer counts: the last handle on
            // the runtime stops it, which waits for handlers still running
            // (one may be the thread that exits).
            (session, runtime)
        };
        let waiting = flush_at_exit::flush_on_a_thread(flush);
        // An exiting thread may wait for that one (joining is no Tokio
        // call): the flush then happens before, say, the process exits.
        if let Some(waiting) = waiting.filter(|_| exiting) {
            let _ = waiting.join();
        }
    }
}

/// Closes `session` and waits up to `timeout` for what was queued to be
/// written; true if it was. The wait also ends at once when a write
/// fails, and then what was queued is lost: false.
fn close_and_flush(session: &crate::Session, runtime: &Runtime, timeout: Duration) -> bool {
    let ended = runtime.block_on_timeout(session.shutdown(), timeout).is_some();
    if !ended {
        tracing::warn!("closing a session: what was queued was not written within {timeout:?}");
        return false;
    }
    match session.write_error() {
        None => true,
        Some(reason) => {
            tracing::warn!("closing a session: what was queued was lost: {reason}");
            false
        }
    }
}

impl Session {
    fn new(session: crate::Session, runtime: Arc<Runtime>) -> Self {
        Session {
            inner: Arc::new(Owner { session, runtime }),
        }
    }

    fn block_on<F: Future>(&self, future: F) -> F::Output {
        self.inner.runtime.block_on(future)
    }

    /// Sends a request and waits for its answer: [`crate::Session::request`]
    /// (its default deadline, if the session has one, kept by this
    /// thread's clock too: see the module docs).
    pub fn request<Req, Res>(&self, payload: &Req) -> Result<Res, Error>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        let session = &self.inner.session;
        wait::request(session, session.request(payload))
    }

    /// [`crate::Session::request_timeout`]: past `timeout` (by this thread's
    /// clock too: see the module docs) the request fails with
    /// [`Error::Timeout`] (with [`Error::Closed`] if the peer is known to be
    /// gone by then) and is cancelled at the peer.
    pub fn request_timeout<Req, Res>(&self, payload: &Req, timeout: Duration) -> Result<Res, Error>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        let session = &self.inner.session;
        wait::request_within(session, session.request_timeout(payload, timeout), timeout)
    }

    /// [`crate::Session::request_raw`]: the answer as raw JSON text (a
    /// default deadline kept as [`request`](Self::request) keeps it).
    pub fn request_raw<Req: Serialize + ?Sized>(&self, payload: &Req) -> Result<Message, Error> {
        let session = &self.inner.session;
        wait::request(session, session.request_raw(payload))
    }

    /// [`crate::Session::request_raw_timeout`]: the answer as raw JSON
    /// text, within `timeout`.
    pub fn request_raw_timeout<Req: Serialize + ?Sized>(
        &self,
        payload: &Req,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let session = &self.inner.session;
        wait::request_within(session, session.request_raw_timeout(payload, timeout), timeout)
    }

    /// Sends a plain message: [`crate::Session::send`]. Returns once it is
    /// queued, not written: before `std::process::exit`, see
    /// [`shutdown_timeout`](Self::shutdown_timeout).
    pub fn send<T: Serialize + ?Sized>(&self, message: &T) -> Result<(), Error> {
        self.block_on(self.inner.session.send(message))
    }

    /// The stream of plain messages from the peer, once:
    /// [`crate::Session::messages`] (read it steadily, from a thread of its
    /// own: while its buffer is full, the session reads nothing else).
    pub fn messages(&self) -> Option<Messages> {
        Some(Messages {
            messages: self.inner.session.messages()?,
            runtime: self.inner.runtime.clone(),
        })
    }

    /// What the peer advertised in its handshake.
    pub fn peer(&self) -> &PeerInfo {
        self.inner.session.peer()
    }

    /// Requests of ours waiting for an answer.
    pub fn pending_requests(&self) -> usize {
        self.inner.session.pending_requests()
    }

    /// Plain messages dropped, before [`messages`](Self::messages) was
    /// taken or after it was dropped: [`crate::Session::dropped_messages`].
    pub fn dropped_messages(&self) -> u64 {
        self.inner.session.dropped_messages()
    }

    /// Bytes waiting in the outgoing queue.
    pub fn queued_bytes(&self) -> usize {
        self.inner.session.queued_bytes()
    }

    /// The byte budget of the outgoing queue.
    pub fn queue_capacity(&self) -> usize {
        self.inner.session.queue_capacity()
    }

    /// Closes the session without waiting: [`crate::Session::close`].
    pub fn close(&self) {
        self.inner.session.close()
    }

    /// Closes the session and waits until what was queued is written, or a
    /// write fails (the rest is then lost): [`crate::Session::shutdown`].
    /// Waits as long as the peer leaves what we wrote unread.
    ///
    /// Call it, or [`shutdown_timeout`](Self::shutdown_timeout), before
    /// `std::process::exit` while a handle is still alive: an exit runs no
    /// destructors, so no drop writes what is still queued (a handle
    /// dropped before the exit does; see the module docs).
    pub fn shutdown(&self) {
        self.block_on(self.inner.session.shutdown())
    }

    /// [`shutdown`](Self::shutdown), waiting at most `timeout`: true if
    /// everything queued was written by then; false if not, or if a write
    /// failed and lost it (a peer gone without reading). The session is
    /// closed either way.
    pub fn shutdown_timeout(&self, timeout: Duration) -> bool {
        close_and_flush(&self.inner.session, &self.inner.runtime, timeout)
    }

    /// Why the session ended, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.inner.session.close_reason()
    }

    /// Waits until the session ends, and says why: a child that only serves
    /// its parent calls this to serve until the parent disconnects.
    pub fn closed(&self) -> CloseReason {
        self.block_on(self.inner.session.closed())
    }
}

/// Plain messages from the peer; see [`Session::messages`]. Also an
/// iterator, which ends with the session.
#[derive(Debug)]
pub struct Messages {
    messages: session::Messages,
    runtime: Arc<Runtime>,
}

impl Messages {
    /// Waits for the next plain message: [`crate::Messages::recv`]. `None`
    /// once the session has ended.
    pub fn recv(&mut self) -> Option<Result<serde_json::Value, Error>> {
        self.runtime.block_on(self.messages.recv())
    }

    /// [`recv`](Self::recv), waiting at most `timeout`: then
    /// `Some(Err(Error::Timeout(timeout)))`, and the stream goes on.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Option<Result<serde_json::Value, Error>> {
        let next = self.runtime.block_on_timeout(self.messages.recv(), timeout);
        next.unwrap_or(Some(Err(Error::Timeout(timeout))))
    }

    /// Waits for the next plain message as the JSON text that came:
    /// [`crate::Messages::recv_raw`].
    pub fn recv_raw(&mut self) -> Option<Result<Message, Error>> {
        self.runtime.block_on(self.messages.recv_raw())
    }

    /// [`recv_raw`](Self::recv_raw), waiting at most `timeout`, as
    /// [`recv_timeout`](Self::recv_timeout) does.
    pub fn recv_raw_timeout(&mut self, timeout: Duration) -> Option<Result<Message, Error>> {
        let next = self.runtime.block_on_timeout(self.messages.recv_raw(), timeout);
        next.unwrap_or(Some(Err(Error::Timeout(timeout))))
    }
}

impl Iterator for Messages {
    type Item = Result<serde_json::Value, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.recv()
    }
}
