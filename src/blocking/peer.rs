//! What a blocking handler calls the peer back with.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::Error;
use crate::frame::Message;
use crate::session::Request;

/// The session a request came on, for a [`handler_fn`](super::handler_fn)
/// handler to call the peer back while it answers: the calls of
/// [`Session`](super::Session) that wait, made on the handler's thread.
///
/// It does not own the session, as a [`Session`](super::Session) handle
/// does: dropping it closes nothing, so a handler may make and keep one
/// freely (a handler holding a `Session` clone keeps the session from
/// closing when the program drops its own). What it does hold, while it
/// is kept, is the session's memory, and with it descriptors: the
/// channel's (shut, once the session is closed) and the runtime's I/O
/// driver's. Keep it for a call, not for the life of the program. Like
/// every blocking call, its calls panic in an async context; a
/// `handler_fn` thread is not one.
///
/// Its calls are driven by the runtime the session was set up on. On a
/// multi-thread runtime (the blocking facade's own, or `#[tokio::main]`'s)
/// that is always so; on a current-thread runtime, only while some thread
/// is inside that runtime's `block_on`: a program that leaves it while a
/// handler calls back leaves the call waiting until it comes back (a
/// deadline of [`request_timeout`](Self::request_timeout) still ends it:
/// this thread keeps it, by its own clock).
///
/// ```no_run
/// # use ipc_request::{blocking, Request, RemoteError};
/// let handler = blocking::handler_fn(|req: Request| {
///     let question: String = req.payload()?;
///     let answer: String = blocking::Peer::of(&req).request(&format!("what is {question}?"))?;
///     Ok::<_, RemoteError>(answer)
/// });
/// ```
#[derive(Debug, Clone)]
pub struct Peer {
    session: crate::Session,
}

impl Peer {
    /// The peer of the session `request` came on.
    pub fn of(request: &Request) -> Peer {
        Peer {
            session: request.session(),
        }
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.session.runtime().block_on(future)
    }

    /// Sends a request and waits for its answer: [`crate::Session::request`]
    /// (a default deadline kept as [`Session::request`](super::Session::request)
    /// keeps it).
    pub fn request<Req, Res>(&self, payload: &Req) -> Result<Res, Error>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        super::wait::request(&self.session, self.session.request(payload))
    }

    /// [`crate::Session::request_timeout`].
    pub fn request_timeout<Req, Res>(&self, payload: &Req, timeout: Duration) -> Result<Res, Error>
    where
        Req: Serialize + ?Sized,
        Res: DeserializeOwned,
    {
        let session = &self.session;
        super::wait::request_within(session, session.request_timeout(payload, timeout), timeout)
    }

    /// [`crate::Session::request_raw`].
    pub fn request_raw<Req: Serialize + ?Sized>(&self, payload: &Req) -> Result<Message, Error> {
        super::wait::request(&self.session, self.session.request_raw(payload))
    }

    /// [`crate::Session::request_raw_timeout`].
    pub fn request_raw_timeout<Req: Serialize + ?Sized>(
        &self,
        payload: &Req,
        timeout: Duration,
    ) -> Result<Message, Error> {
        let session = &self.session;
        super::wait::request_within(session, session.request_raw_timeout(payload, timeout), timeout)
    }

    /// Sends a plain message: [`crate::Session::send`].
    pub fn send<T: Serialize + ?Sized>(&self, message: &T) -> Result<(), Error> {
        self.block_on(self.session.send(message))
    }
}
