//! The stream of plain messages a session hands out ([`Session::messages`]).

use tokio::sync::{OwnedSemaphorePermit, mpsc};

use crate::error::Error;
use crate::frame::Message;

#[cfg(doc)]
use super::Session;

/// Plain messages from the peer; see [`Session::messages`].
#[derive(Debug)]
pub struct Messages {
    pub(super) rx: mpsc::Receiver<BufferedMessage>,
}

/// A plain message (or a line that could not be read) waiting in the
/// stream, as the text that came, with its share of the byte budget.
pub(super) type BufferedMessage = (Result<Message, Error>, Option<OwnedSemaphorePermit>);

impl Messages {
    /// The next plain message, or `None` once the session has ended. It is
    /// parsed here: a message serde_json cannot hold as a `Value` (nested
    /// more than 128 deep) is an `Err(Error::Decode { .. })` item.
    ///
    /// Cancel safe: dropped before it returns (a branch of `select!` that
    /// lost), it takes no message, and the next call gets it.
    pub async fn recv(&mut self) -> Option<Result<serde_json::Value, Error>> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`recv`](Self::recv) as a poll, for a hand-written future or
    /// stream. Also a [`futures_util::Stream`], for its combinators.
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<serde_json::Value, Error>>> {
        self.rx.poll_recv(cx).map(|next| {
            let (item, _budget) = next?;
            Some(item.and_then(|message| serde_json::from_str(message.get()).map_err(Error::decode_message)))
        })
    }
}

impl futures_util::Stream for Messages {
    type Item = Result<serde_json::Value, Error>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.get_mut().poll_recv(cx)
    }
}
