//! A read half that shows every byte read through it to a function, for
//! tests that count what a session reads, or break its stream on a
//! pattern.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// `inner`, with `watch` called on the bytes of each read (before the
/// channel sees them).
pub struct WatchedReader<R, F> {
    pub inner: R,
    pub watch: F,
}

impl<R: AsyncRead + Unpin, F: FnMut(&[u8]) + Unpin> AsyncRead for WatchedReader<R, F> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        (self.watch)(&buf.filled()[before..]);
        polled
    }
}
