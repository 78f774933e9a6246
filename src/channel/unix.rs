//! The two halves of a Unix stream socket, registered with the reactor for
//! what each half waits for, and nothing more.
//!
//! Why not `tokio::net::UnixStream`: it registers the socket for readable
//! *and* writable events, edge-triggered. On a Unix socket every message the
//! peer reads frees space in our send buffer, and the kernel reports that as
//! a writable edge, which wakes our reactor although nobody waits to write.
//! In a sequential round trip that doubled the wake-ups of each process
//! (strace: half of all `epoll_wait` returns were `EPOLLOUT` alone), and
//! wake-ups are most of what a round trip costs.
//!
//! So the reading half registers the socket for readable events only. The
//! writing half writes without the reactor; only when the socket is full
//! does it register a duplicate of the descriptor for writable events, and
//! it drops that registration once a write goes through again. A burst that
//! keeps the socket full pays two `epoll_ctl` calls per time it fills up,
//! not a wake-up per message read.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Splits a connected, non-blocking Unix stream socket into its halves.
/// Must be called inside a Tokio runtime (the reading half registers now,
/// and the writing half keeps the runtime's handle to register later).
pub(super) fn split(socket: OwnedFd) -> io::Result<(UnixReadHalf, UnixWriteHalf)> {
    let socket = Arc::new(socket);
    // SAFETY (register_with_interest): the Arc keeps the descriptor open and
    // unchanged for as long as the registration lives.
    let reader = UnixReadHalf {
        socket: unsafe { AsyncFd::register_with_interest(socket.clone(), Interest::READABLE)? },
    };
    let writer = UnixWriteHalf {
        socket,
        runtime: tokio::runtime::Handle::current(),
        waiting: None,
    };
    Ok((reader, writer))
}

/// Reads the socket; registered for readable events only.
pub(super) struct UnixReadHalf {
    socket: AsyncFd<Arc<OwnedFd>>,
}

impl AsyncRead for UnixReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.socket.poll_read_ready(cx))?;
            // Read into the uninitialized part: zeroing a 64 KiB buffer
            // before every read cost more than the read (measured).
            // SAFETY: only read(2) writes there, and only the `n` bytes it
            // reports are marked initialized below.
            let unfilled = unsafe { buf.unfilled_mut() };
            let wanted = unfilled.len();
            // Plain read(2): no ancillary data, so the kernel discards any
            // descriptor a NODE_HANDLE carries (see the channel docs).
            // SAFETY: `unfilled` is valid for writes of `wanted` bytes.
            let n = unsafe { libc::read(self.socket.as_raw_fd(), unfilled.as_mut_ptr().cast(), wanted) };
            if n < 0 {
                let error = io::Error::last_os_error();
                match error.kind() {
                    io::ErrorKind::WouldBlock => {
                        ready.clear_ready();
                        continue;
                    }
                    io::ErrorKind::Interrupted => continue,
                    _ => return Poll::Ready(Err(error)),
                }
            }
            let n = n as usize;
            // A short read of a stream socket means it is drained; saying so
            // now saves the read that would return EAGAIN. No event is lost:
            // clear_ready keeps readiness that arrived after it was observed.
            if n > 0 && n < wanted {
                ready.clear_ready();
            }
            // SAFETY: read(2) initialized the first `n` bytes of `unfilled`.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            return Poll::Ready(Ok(()));
        }
    }
}

/// Writes the socket; registered with the reactor only while it is full.
pub(super) struct UnixWriteHalf {
    socket: Arc<OwnedFd>,
    runtime: tokio::runtime::Handle,
    /// A duplicate of the socket's descriptor, registered for writable
    /// events, while a write waits for room. A duplicate, because epoll
    /// refuses a second registration of the same descriptor.
    waiting: Option<AsyncFd<OwnedFd>>,
}

impl UnixWriteHalf {
    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        // MSG_NOSIGNAL: a closed peer is an EPIPE error, not a SIGPIPE that
        // kills a process which did not ignore it.
        #[cfg(any(target_os = "linux", target_os = "android"))]
        const FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        const FLAGS: libc::c_int = libc::MSG_DONTWAIT;
        // SAFETY: `bytes` is valid for reads of its length.
        let n = unsafe { libc::send(self.socket.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), FLAGS) };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

impl AsyncWrite for UnixWriteHalf {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.send(bytes) {
                Ok(n) => {
                    // Room again: stop listening for writable events, which
                    // would otherwise wake us for every message the peer reads.
                    if let Some(waiting) = self.waiting.take() {
                        drop(waiting.into_inner());
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if self.waiting.is_none() {
                // Registering a socket that has room already reports it
                // writable, so room made between the failed send and this
                // registration is not missed.
                let duplicate = self.socket.try_clone()?;
                let _runtime = self.runtime.enter();
                // SAFETY: the registration owns the duplicate, which stays
                // open and unchanged until the registration is dropped.
                self.waiting =
                    Some(unsafe { AsyncFd::register_with_interest(duplicate, Interest::WRITABLE)? });
            }
            let waiting = self.waiting.as_ref().expect("registered above");
            let mut ready = ready!(waiting.poll_write_ready(cx))?;
            ready.clear_ready();
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: shutdown(2) on a descriptor we own.
        let result = unsafe { libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_WR) };
        if result < 0 {
            let error = io::Error::last_os_error();
            // The peer already gone is what shutting down wanted anyway.
            if error.kind() != io::ErrorKind::NotConnected {
                return Poll::Ready(Err(error));
            }
        }
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_full_socket_waits_for_room_and_then_stops_listening() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let (_, mut writer) = split(ours.into()).unwrap();
        let (mut reader, _their_writer) = split(theirs.into()).unwrap();

        // Far more than a socket buffer: the writer must hit a full socket.
        let sent: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let expected = sent.clone();
        let read = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut chunk = vec![0; 64 * 1024];
            while got.len() < expected.len() {
                // Read slowly, so the writer waits more than once.
                tokio::time::sleep(std::time::Duration::from_micros(50)).await;
                let n = reader.read(&mut chunk).await.unwrap();
                assert!(n > 0, "end of stream after {} bytes", got.len());
                got.extend_from_slice(&chunk[..n]);
            }
            assert!(got == expected, "bytes arrived changed or out of order");
        });
        writer.write_all(&sent).await.unwrap();
        assert!(
            writer.waiting.is_none(),
            "still registered for writable events after the write went through"
        );
        read.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_is_end_of_stream_for_the_peer() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let (_, mut writer) = split(ours.into()).unwrap();
        let (mut reader, _) = split(theirs.into()).unwrap();
        writer.write_all(b"last\n").await.unwrap();
        writer.shutdown().await.unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last\n");
    }
}
