//! The writer task: takes the queued lines off the queue and writes them,
//! as many as are queued in one write, until the channel closes, every
//! handle is gone, or a write fails (or panics); then shuts the stream
//! down, so that the peer sees its end.

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{BudgetShare, COALESCE_LIMIT, Command, Outgoing, SenderShared, Stream};
use crate::error::CloseReason;

/// Held by the writer task: when the task ends, or is dropped unfinished
/// (its runtime shut down), the channel is closed and
/// [`ChannelSender::finished`](super::ChannelSender::finished) resolves. Nobody may wait for a writer that
/// is gone; and no send may take the direct path past it, where a line the
/// stream takes only in part would be left half-written, with nobody to
/// write the rest (a review found both).
///
/// Dropped before it was done writing, the task leaves queued lines
/// unwritten: that is a write failure (see [`fail`]), not a clean end. The
/// channel's receiver ends only on a failure it is told of, and the
/// session's watch for a gone peer takes a finished writer without an
/// error for a clean close: told nothing, the session stayed open, its
/// requests waiting for answers to lines never sent (a review found it).
///
/// It holds the task's queue, so that the queue goes first, whatever order
/// the task's state is dropped in: a direct write that hands the rest of
/// its line over after that finds the task gone, and takes the line back
/// itself; one that handed it over before has let go of the lock, and the
/// rest is dropped here. (Left: one that handed it over and still holds
/// the lock in the instant this runs keeps that budget.)
pub(super) struct WriterGone {
    pub(super) shared: Arc<SenderShared>,
    pub(super) rx: Option<mpsc::UnboundedReceiver<Command>>,
    /// The task is past writing: what was queued is written, or lost to a
    /// failure already recorded. Dropped before this, it was cut short.
    pub(super) done_writing: bool,
}

impl Drop for WriterGone {
    fn drop(&mut self) {
        drop(self.rx.take());
        if self.done_writing {
            // Only the shutdown was left: everything queued is written (or
            // a failure recorded), so this is no failure. The first reason
            // stays: `Local` after a close, the write's error after one.
            self.shared.set_closed(CloseReason::RuntimeShutDown);
        } else {
            // Cut short with lines maybe queued: a failure, recorded and
            // the receiver woken, so that the session ends (its pending
            // requests fail) rather than wait for lines nobody writes. A
            // failure recorded before stays (`fail` keeps the first). Said
            // as the session will say it: a send in the moment before the
            // session hears of it is told the same reason.
            fail_for(&self.shared, CloseReason::RuntimeShutDown);
        }
        // The rest of a line a direct write left for the task is never
        // written now: its budget comes back.
        if let Ok(mut stream) = self.shared.writer.try_lock() {
            stream.partial = None;
            if !self.done_writing {
                // Dropped with its runtime: nothing will write to the
                // stream or shut it down now. Let go of it, so that the
                // socket closes once the reader's half is gone too and the
                // peer sees the end, rather than wait for as long as a
                // handle of ours lives (a review found a child left
                // waiting so). The channel is closed already (`fail`
                // above): no write reaches what takes its place.
                stream.writer = Box::new(tokio::io::sink());
            }
        }
        self.shared.finished.cancel();
    }
}

/// The writer task.
pub(super) async fn write_loop(mut gone: WriterGone) {
    let shared = gone.shared.clone();
    // Borrowed, not taken: dropped with the task, it must go with `gone`.
    let rx = gone.rx.as_mut().expect("the queue, until the task ends");
    // A panic in the stream's write (a bug in it; the session's reader
    // guards its own side the same way) must fail the channel as a failed
    // write would: the receiver is woken and ends the session, whose
    // pending requests fail. Left to unwind, it dropped `gone` as if the
    // runtime had shut down, and the session hung (a review found it).
    // Unwind safety: what the loop leaves half-done is the stream, which
    // is written no more but for its shutdown, and its batch, dropped
    // here; the lines it held give their budget back as they drop.
    let written =
        futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(write_until_closed(rx, &shared)))
            .await;
    match written {
        Ok(Ok(())) => {}
        Ok(Err(e)) => fail(&shared, e),
        Err(_) => fail(&shared, io::Error::other("the channel's writer task panicked")),
    }
    gone.done_writing = true;
    if shared.write_error.get().is_some() {
        // Finished "at once after a failed write" (here or on the direct
        // path): not after the shutdown below, which a stream may never
        // complete.
        shared.finished.cancel();
    }
    // Nothing more is written. After a failure, lines may still be queued:
    // dropped now, they give their budget back and fail whoever waits for
    // them to be written, even if the shutdown below never completes.
    rx.close();
    while rx.try_recv().is_ok() {}
    // A send that got past the close an instant before it may still push
    // its line: dropping the queue drops that one too.
    gone.rx = None;
    let mut stream = shared.writer.lock().await;
    stream.partial = None;
    // However it ended (`close`, every handle gone, a failed write), the
    // peer must see the end of the stream: one still there would otherwise
    // wait on a channel nobody writes to for as long as our handles live.
    let _ = stream.writer.shutdown().await;
    shared.set_closed(CloseReason::Local);
}

/// Writes what is queued until `close`, until every handle is gone, or
/// until a write fails.
async fn write_until_closed(
    rx: &mut mpsc::UnboundedReceiver<Command>,
    shared: &SenderShared,
) -> io::Result<()> {
    let mut batch: Vec<u8> = Vec::with_capacity(COALESCE_LIMIT);
    let mut done: Vec<Outgoing> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut stream = shared.writer.lock().await;
        if shared.write_error.get().is_some() {
            // A direct write failed (see `ChannelSender::write_or_queue`): nothing more
            // is written, whatever was queued.
            return Ok(());
        }
        let Stream { writer, partial } = &mut *stream;
        let writer = &mut **writer;
        // The rest of a line started by a direct write goes first.
        if let Some(rest) = partial.take() {
            let (rest, written) = rest;
            writer.write_all(&rest.line[written..]).await?;
            done.push(rest);
        }
        let mut next = Some(first);
        let mut close = false;
        // Take everything queued right now: one syscall for the lot.
        while let Some(cmd) = next.take() {
            match cmd {
                Command::Close => {
                    close = true;
                    break;
                }
                Command::WritePartial | Command::Uncounted => {}
                Command::Failed => return Ok(()),
                // Taken (no longer withdrawable) only once the batch
                // before it is out: the write of that batch may wait long.
                Command::Write(out) if out.line.len() > COALESCE_LIMIT => {
                    flush_batch(writer, &mut batch, &mut done, shared).await?;
                    write_alone(writer, out, &mut done, shared).await?;
                }
                // Withdrawn: counted out unwritten; its budget comes back
                // as it drops.
                Command::Write(out) if !out.still_wanted(shared) => finish(out, shared),
                Command::Write(out) => {
                    batch.extend_from_slice(&out.line);
                    done.push(out);
                    if batch.len() >= COALESCE_LIMIT {
                        flush_batch(writer, &mut batch, &mut done, shared).await?;
                    }
                }
            }
            next = rx.try_recv().ok();
        }
        flush_batch(writer, &mut batch, &mut done, shared).await?;
        if close {
            // Lines of sends that raced the close (see `ChannelSender::queue`)
            // are counted and still on their way: write them first. Every
            // line queued before the Close command is written by now. A send
            // that counts its line from now on sees the flag and takes the
            // count back, sending Uncounted, which wakes this loop to look
            // again; so the count reaches 0 once the racing lines are in.
            while shared.queued_lines.load(Ordering::SeqCst) > 0 {
                match rx.recv().await {
                    Some(Command::Write(out)) => write_alone(writer, out, &mut done, shared).await?,
                    Some(_) => {}
                    None => break,
                }
            }
            return Ok(());
        }
    }
    // Every handle is gone (the channel was dropped without `close`), and
    // everything it queued is written.
    Ok(())
}

/// Writes one line from its own buffer, with the batch already written
/// (so `done` holds what was written before it), and releases them; or,
/// withdrawn, counts it out unwritten.
async fn write_alone(
    writer: &mut (dyn AsyncWrite + Unpin + Send),
    out: Outgoing,
    done: &mut Vec<Outgoing>,
    shared: &SenderShared,
) -> io::Result<()> {
    if !out.still_wanted(shared) {
        finish(out, shared);
        return Ok(());
    }
    writer.write_all(&out.line).await?;
    done.push(out);
    flush_batch(writer, &mut Vec::new(), done, shared).await
}

/// Writes the batch, flushes, then releases the lines written (the batch's,
/// and those in `done` written from their own buffer before it).
///
/// Flushed before anyone is told their line is written: on a socket the
/// flush does nothing, but a buffering stream (a `BufWriter`, TLS) holds
/// the bytes until it, and the handshake's answer counts as given only
/// once the peer can read it (PROTOCOL.md 2.1 step 4).
async fn flush_batch(
    writer: &mut (dyn AsyncWrite + Unpin + Send),
    batch: &mut Vec<u8>,
    done: &mut Vec<Outgoing>,
    shared: &SenderShared,
) -> io::Result<()> {
    if !batch.is_empty() {
        writer.write_all(batch).await?;
        batch.clear();
    }
    if done.is_empty() {
        return Ok(());
    }
    writer.flush().await?;
    let mut freed = 0;
    for out in done.drain(..) {
        freed += count_out(out, shared);
    }
    shared.budget.add_permits(freed);
    Ok(())
}

/// A queued line has been written (or withdrawn): count it out, free its
/// budget (as it drops), tell whoever waits for it.
fn finish(mut out: Outgoing, shared: &SenderShared) {
    shared.queued_lines.fetch_sub(1, Ordering::AcqRel);
    if let Some(tx) = out.written.take() {
        let _ = tx.send(());
    }
}

/// [`finish`] but for the budget, which the caller frees (for a whole
/// batch at once). Returns the line's share of it.
fn count_out(mut out: Outgoing, shared: &SenderShared) -> usize {
    let bytes = out.budget.take().map_or(0, BudgetShare::into_bytes);
    finish(out, shared);
    bytes
}

pub(super) fn fail(shared: &SenderShared, e: io::Error) {
    fail_for(shared, CloseReason::Io(Arc::new(e)));
}

/// [`fail`], for a reason of any kind: the writer task dropped with its
/// runtime (from the task's drop, or a direct write that could not hand
/// the rest of its line over) is `RuntimeShutDown`.
pub(super) fn fail_for(shared: &SenderShared, reason: CloseReason) {
    tracing::debug!("channel write failed: {reason}");
    let _ = shared.write_error.set(reason.clone());
    shared.set_closed(reason);
    shared.write_failure_waker.wake();
}
