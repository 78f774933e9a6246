//! Request-response between a parent process and the child it starts, over
//! the IPC channel Node.js uses for `child_process.fork`.
//!
//! The wire is Node's own (JSON lines on a Unix socket pair, the child's end
//! at the fd named by `NODE_CHANNEL_FD`) and the messages are those of the
//! JS package ipc-request 1.0, so a Rust process and a Node process can be
//! parent and child in either role. See `docs/PROTOCOL.md` in the repository.
//!
//! Layers, each talking only to the one below:
//! [`frame`] (bytes to JSON messages), [`channel`] (a duplex of messages over
//! a byte stream), [`protocol`] (message kinds), [`session`] (handshake,
//! requests, handlers), [`process`] (starting a child, opening the channel
//! as a child); above the session, [`blocking`], the same API for programs
//! without an async runtime.

#![deny(missing_docs, missing_debug_implementations)]
// The README's examples are compiled as doc tests, so they cannot rot.
#![doc = include_str!("../README.md")]

#[cfg(not(unix))]
compile_error!(
    "ipc-request supports Unix (Linux, macOS) only: Node's channel on Windows is a named pipe with its own framing, which is not implemented yet"
);

pub mod blocking;
pub mod channel;
mod error;
pub mod frame;
pub mod process;
pub mod protocol;
pub mod session;

pub use channel::{Channel, ChannelConfig};
pub use error::{CloseReason, Error, RemoteError};
pub use frame::FrameError;
pub use process::{ChildProcess, SpawnOptions, open_from_env, spawn, spawn_with};
pub use session::{
    Handler, Messages, PeerInfo, Request, Responder, Session, SessionBuilder, SessionConfig, handler_fn,
    responder_fn, setup,
};
