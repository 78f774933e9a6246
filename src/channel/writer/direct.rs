//! The direct path (see the module docs of `writer`): a line written by
//! its sender, under the writer lock, when nothing is queued; what the
//! stream does not take at once goes on through the queue or the partial
//! slot.

use std::io;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, Waker};

use tokio::io::AsyncWrite;

use super::write_task::{fail, fail_for};
use super::{ChannelSender, Command, LineTicket, Outgoing};
use crate::error::Error;

impl ChannelSender {
    /// The direct path when possible, else the queue (then with a ticket
    /// if `ticket`, returned).
    pub(super) fn write_or_queue(
        &self,
        mut out: Outgoing,
        ticket: bool,
    ) -> Result<Option<LineTicket>, Error> {
        let shared = &self.shared;
        let Ok(mut stream) = shared.writer.try_lock() else {
            return self.queue_with(out, ticket);
        };
        if shared.queued_lines.load(Ordering::Acquire) > 0 {
            return self.queue_with(out, ticket);
        }
        if shared.is_closed.load(Ordering::Acquire) {
            return Err(self.closed_error());
        }
        match write_now(&mut *stream.writer, &out.line) {
            Ok(DirectWrite::All) => {
                // Dropping `out` gives its budget back.
                if let Some(tx) = out.written.take() {
                    let _ = tx.send(());
                }
                Ok(None)
            }
            // Nothing of it was written (the stream is full): queued as if
            // the direct path had not been tried, with its ticket, so that
            // it can be withdrawn while it waits. In the partial slot it
            // counted as written: a request there was sent after its
            // session's close had told its caller it failed, with no
            // cancel after it (a review found it). Its budget goes with it
            // into the queue, or back as it drops if the queue refuses it.
            Ok(DirectWrite::Part(0)) => self.queue_with(out, ticket),
            Ok(DirectWrite::Part(n)) => {
                // The rest waits in the partial slot, which the writer task
                // writes first thing once it holds the lock; counted as
                // queued so that no direct write can pass it.
                // An offset, not a drain: moving the rest of a 16 MiB line
                // down showed in the large-payload profile.
                stream.partial = Some((out, n));
                shared.queued_lines.fetch_add(1, Ordering::AcqRel);
                if self.tx.send(Command::WritePartial).is_err() {
                    // The writer task is gone (dropped with its runtime as
                    // this line was written): nobody will write the rest.
                    // The line stays torn, and the peer drops a line the
                    // stream's end cuts short (PROTOCOL.md 1.2); its budget
                    // at least comes back. Failed before the lock is let
                    // go: the task's drop marks the channel failed only
                    // after its queue is gone, and a direct write in that
                    // moment would put a whole line behind the torn one,
                    // which a Node peer cannot parse (a review saw the
                    // window; no test reaches it).
                    stream.partial = None;
                    shared.queued_lines.fetch_sub(1, Ordering::AcqRel);
                    fail_for(shared, crate::error::CloseReason::RuntimeShutDown);
                    return Err(self.closed_error());
                }
                // Half written: it can no longer be taken back.
                Ok(None)
            }
            Err(e) => {
                // Failed before the lock is let go: the writer task, which
                // may hold a line queued meanwhile and takes the lock next,
                // then finds the failure and writes nothing more (a review
                // saw such a line written after this torn one, and its
                // sender told it was written, by a stream whose error did
                // not repeat).
                fail(shared, e);
                drop(stream);
                // The writer task shuts the write side down, so that a peer
                // still there sees the channel end (see `write_loop`).
                let _ = self.tx.send(Command::Failed);
                Err(self.closed_error())
            }
        }
    }
}

enum DirectWrite {
    /// The whole line was written.
    All,
    /// Only this many bytes were taken; the stream is full for now.
    Part(usize),
}

/// Writes as much of `line` as the stream takes without waiting. Polling
/// with a no-op waker is sound: if the stream is not ready, the writer task
/// polls it again later with its own waker, which replaces this one.
fn write_now(writer: &mut (dyn AsyncWrite + Unpin + Send), line: &[u8]) -> io::Result<DirectWrite> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut done = 0;
    while done < line.len() {
        match Pin::new(&mut *writer).poll_write(&mut cx, &line[done..]) {
            Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
            Poll::Ready(Ok(n)) => done += n,
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => return Ok(DirectWrite::Part(done)),
        }
    }
    // Sockets do not buffer, so this is immediate; a buffering stream that
    // cannot flush now gets flushed by the writer task (an empty line).
    match Pin::new(&mut *writer).poll_flush(&mut cx) {
        Poll::Ready(Ok(())) => Ok(DirectWrite::All),
        Poll::Ready(Err(e)) => Err(e),
        Poll::Pending => Ok(DirectWrite::Part(line.len())),
    }
}
