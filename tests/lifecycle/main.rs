//! Deadlines, cancellation and backpressure, in process.

#[path = "../common/mod.rs"]
mod common;

mod backpressure;
mod close;
mod deadlines;
mod floods;
mod setup_and_panics;
mod uids_and_cancels;

use ipc_request::{Error, Request, Responder, responder_fn};
use tokio::sync::mpsc;

/// A server whose handler waits for cancellation and reports what it saw:
/// that it was cancelled, and that its late answer was refused.
pub(crate) fn cancel_observer() -> (ipc_request::Handler, mpsc::UnboundedReceiver<(String, bool)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handler = responder_fn(move |req: Request, responder: Responder| {
        let tx = tx.clone();
        async move {
            let key: String = req.payload().unwrap();
            req.cancelled().await;
            let refused = matches!(responder.respond(&"late").await, Err(Error::Cancelled))
                // Told so again: no answer was given.
                && matches!(responder.respond(&"later").await, Err(Error::Cancelled));
            let _ = tx.send((key, refused));
        }
    });
    (handler, rx)
}
