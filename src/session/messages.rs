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
        self.poll_recv_raw(cx).map(|next| {
            Some(next?.and_then(|message| serde_json::from_str(message.get()).map_err(Error::decode_message)))
        })
    }

    /// The next plain message as the JSON text that came (a [`Message`]),
    /// to deserialize into a type of the caller's own
    /// (`serde_json::from_str(message.get())`) without a
    /// `serde_json::Value` first, which takes many times the size of its
    /// text (32 bytes for each `0,` of an array). Otherwise as
    /// [`recv`](Self::recv), with which it shares the stream; it never
    /// gives `Error::Decode`.
    pub async fn recv_raw(&mut self) -> Option<Result<Message, Error>> {
        std::future::poll_fn(|cx| self.poll_recv_raw(cx)).await
    }

    /// [`recv_raw`](Self::recv_raw) as a poll.
    pub fn poll_recv_raw(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Message, Error>>> {
        // The message's share of the byte budget is given back here, as
        // it leaves the buffer.
        self.rx.poll_recv(cx).map(|next| next.map(|(item, _budget)| item))
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
