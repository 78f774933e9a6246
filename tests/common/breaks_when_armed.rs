//! A write half that breaks once armed, for tests of what a broken stream
//! does to a channel and its session.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

/// How a [`BreaksWhenArmed`] breaks.
#[derive(Clone, Copy, Debug)]
pub enum Break {
    /// Every write fails with "the write side broke".
    Fails,
    /// The write panics with "the stream under the channel broke" (a bug
    /// in the stream).
    Panics,
}

/// Writes through to `inner` until armed; then the first write takes
/// nothing and asks to be polled again (so the line waits in the channel's
/// queue, and the break comes on the channel's writer task, which polls
/// again, not in a caller's own direct write), and every write after that
/// breaks as `how` says.
pub struct BreaksWhenArmed<W> {
    inner: W,
    armed: Arc<AtomicBool>,
    how: Break,
    waited: bool,
}

impl<W> BreaksWhenArmed<W> {
    /// The writer, and the switch that arms it.
    pub fn new(inner: W, how: Break) -> (Self, Arc<AtomicBool>) {
        let armed = Arc::new(AtomicBool::new(false));
        let writer = BreaksWhenArmed {
            inner,
            armed: armed.clone(),
            how,
            waited: false,
        };
        (writer, armed)
    }
}

impl<W: AsyncWrite + Unpin> AsyncWrite for BreaksWhenArmed<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if !self.armed.load(Ordering::SeqCst) {
            return Pin::new(&mut self.inner).poll_write(cx, bytes);
        }
        if !std::mem::replace(&mut self.waited, true) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        match self.how {
            Break::Fails => Poll::Ready(Err(std::io::Error::other("the write side broke"))),
            Break::Panics => panic!("the stream under the channel broke"),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
