//! Typed calls: a request type that names the type of its answer, so that
//! a call needs no annotations. A facade over [`Session::request`]: no
//! protocol of its own, the same bytes on the wire.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, Session, blocking};

/// A request type that names the type of its answer, for
/// [`Session::call`]: the answer comes typed, with no turbofish.
///
/// ```no_run
/// use ipc_request::{Call, Session};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct GetConfig {
///     key: String,
/// }
///
/// #[derive(Serialize, Deserialize)]
/// struct Config {
///     value: String,
/// }
///
/// impl Call for GetConfig {
///     type Answer = Config;
/// }
///
/// async fn value_of(session: &Session, key: &str) -> Result<String, ipc_request::Error> {
///     let config = session.call(&GetConfig { key: key.into() }).await?;
///     Ok(config.value)
/// }
/// ```
///
/// The handler on the other side reads the request with
/// [`Request::payload`](crate::Request::payload) (`req.payload::<GetConfig>()`)
/// and answers a `Config`; nothing checks that it does, as nothing can
/// check a Node peer.
pub trait Call: Serialize {
    /// What the peer answers to this request.
    type Answer: DeserializeOwned;
}

/// A reference to a request is that request: `session.call(&&req)`, or a
/// `&C` passed on.
impl<C: Call + ?Sized> Call for &C {
    type Answer = C::Answer;
}

impl Session {
    /// [`request`](Self::request) with the answer's type taken from the
    /// request's: [`Call::Answer`]. Errors and cancel safety as `request`.
    pub async fn call<C: Call + ?Sized>(&self, request: &C) -> Result<C::Answer, Error> {
        self.request(request).await
    }

    /// [`request_timeout`](Self::request_timeout), typed as
    /// [`call`](Self::call).
    pub async fn call_timeout<C: Call + ?Sized>(
        &self,
        request: &C,
        timeout: Duration,
    ) -> Result<C::Answer, Error> {
        self.request_timeout(request, timeout).await
    }
}

impl blocking::Peer {
    /// [`request`](Self::request), typed as [`Session::call`]: a blocking
    /// handler's call back to the peer.
    pub fn call<C: Call + ?Sized>(&self, request: &C) -> Result<C::Answer, Error> {
        self.request(request)
    }

    /// [`request_timeout`](Self::request_timeout), typed as
    /// [`Session::call`].
    pub fn call_timeout<C: Call + ?Sized>(&self, request: &C, timeout: Duration) -> Result<C::Answer, Error> {
        self.request_timeout(request, timeout)
    }
}

impl blocking::Session {
    /// [`request`](Self::request), typed as [`Session::call`].
    pub fn call<C: Call + ?Sized>(&self, request: &C) -> Result<C::Answer, Error> {
        self.request(request)
    }

    /// [`request_timeout`](Self::request_timeout), typed as
    /// [`Session::call`].
    pub fn call_timeout<C: Call + ?Sized>(&self, request: &C, timeout: Duration) -> Result<C::Answer, Error> {
        self.request_timeout(request, timeout)
    }
}
