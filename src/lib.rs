//! Request-response between a parent process and the child it starts, over
//! the IPC channel Node.js uses for `child_process.fork`.
//!
//! The wire is Node's own (JSON lines on a Unix socket pair, the child's end
//! at the fd named by `NODE_CHANNEL_FD`) and the messages are those of the
//! JS package ipc-request 1.0, so a Rust process and a Node process can be
//! parent and child in either role, and each side both asks and answers.
//! `docs/PROTOCOL.md` in the repository is the reference for every byte;
//! its README, for the behaviour, the defaults and the performance.
//!
//! ```no_run
//! use ipc_request::{handler_fn, open_from_env, setup, spawn_session, RemoteError, Request};
//!
//! // The parent: start a child with a channel and shake hands (a child
//! // whose handshake fails is killed), ask, then close and wait.
//! async fn parent() -> Result<String, ipc_request::Error> {
//!     let (session, child) = spawn_session(std::process::Command::new("path/to/child"), None).await?;
//!     let answer: String = session.request("ping").await?;
//!     session.shutdown().await;
//!     child.wait().await?;
//!     Ok(answer)
//! }
//!
//! // The child (any program the parent starts: this one, or `node child.js`).
//! async fn child() -> Result<(), ipc_request::Error> {
//!     // SAFETY: no other thread reads the environment, which this changes.
//!     let channel = unsafe { open_from_env() }?;
//!     let handler = handler_fn(|req: Request| async move {
//!         let text: String = req.payload()?;
//!         Ok::<_, RemoteError>(format!("{text} pong"))
//!     });
//!     setup(channel, handler).await?.closed().await;
//!     Ok(())
//! }
//! ```
//!
//! Layers, each built on those below it (the session reads and writes
//! through [`channel`], and parses and writes with [`protocol`] and
//! [`frame`]; nothing reaches up):
//! [`frame`] (bytes to JSON messages), [`channel`] (a duplex of messages over
//! a byte stream), [`protocol`] (message kinds), [`session`] (handshake,
//! requests, handlers), [`process`] (starting a child, opening the channel
//! as a child); above the session, [`blocking`], the same API for programs
//! without an async runtime.

#![deny(missing_docs, missing_debug_implementations)]

// The README's examples are compiled as doc tests, so they cannot rot. Not
// the crate's front page: its links are relative to the repository.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExamples;

#[cfg(not(unix))]
compile_error!(
    "ipc-request supports Unix (Linux, macOS) only: Node's channel on Windows is a named pipe with its own framing, which is not implemented yet"
);

pub mod blocking;
mod call;
pub mod channel;
mod error;
pub mod frame;
pub mod process;
pub mod protocol;
pub mod session;

pub use call::Call;
pub use channel::{Channel, ChannelConfig};
pub use error::{CloseReason, Error, RemoteError};
pub use frame::FrameError;
pub use process::{
    ChildProcess, SpawnOptions, open_from_env, spawn, spawn_session, spawn_session_with, spawn_with,
};
pub use session::{
    Handler, Messages, PeerInfo, Request, Responder, Session, SessionBuilder, SessionConfig, handler_fn,
    responder_fn, setup,
};
