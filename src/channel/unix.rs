//! The two halves of a Unix stream socket, registered with the reactor for
//! what each half waits for, and nothing more.
//!
//! Why not `tokio::net::UnixStream`: it registers the socket for readable
//! *and* writable events, edge-triggered. On a Unix socket every message the
//! peer reads frees space in our send buffer, and the kernel reports that as
//! a writable edge, which wakes our reactor although nobody waits to write.
//! In a sequential round trip that doubled the wake-ups of each process
//! (strace: half of all `epoll_wait` returns were `EPOLLOUT` alone).
//!
//! So the reading half registers the socket for readable events only. The
//! writing half writes without the reactor; only when the socket is full
//! does it register a duplicate of the descriptor (made with the halves,
//! kept) for writable events, and it drops that registration once a write
//! is taken whole. A burst that keeps the socket full pays two `epoll_ctl`
//! calls each time the queue drains, not a wake-up per message the peer
//! reads.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::time::Sleep;

/// Splits a connected, non-blocking Unix stream socket into its halves.
/// Must be called inside a Tokio runtime (the reading half registers now,
/// and the writing half keeps the runtime's handle to register later).
pub(super) fn split(socket: OwnedFd) -> io::Result<(UnixReadHalf, UnixWriteHalf)> {
    no_sigpipe(&socket)?;
    let socket = Arc::new(socket);
    // SAFETY (register_with_interest): the Arc keeps the descriptor open and
    // unchanged for as long as the registration lives.
    let reader = UnixReadHalf {
        socket: unsafe { AsyncFd::register_with_interest(socket.clone(), Interest::READABLE)? },
    };
    // The duplicate the writing half registers when the socket fills, made
    // now: made then, at the descriptor limit (a busy server), it would
    // fail the channel for good instead of waiting for a slow peer.
    let duplicate = socket.try_clone()?;
    let writer = UnixWriteHalf {
        socket,
        runtime: tokio::runtime::Handle::current(),
        waiting: Waiting::Idle(Some(duplicate)),
        // Made now, reset each time the socket fills: made then, on a
        // runtime without timers, it panicked with part of a line written
        // (a review); here it panics as the channel is made, as Tokio's own
        // types do, before anything is written.
        retry: Box::pin(tokio::time::sleep(STALLED_WRITE_RETRY)),
        #[cfg(test)]
        registrations: 0,
    };
    Ok((reader, writer))
}

/// Writing to a socket whose peer is gone must be an `EPIPE` error, not a
/// `SIGPIPE` that kills a process which did not ignore it. Linux says so per
/// call (`MSG_NOSIGNAL`); Apple's systems per socket.
fn no_sigpipe(socket: &OwnedFd) -> io::Result<()> {
    #[cfg(target_vendor = "apple")]
    {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt on a descriptor we own, with a c_int option.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NOSIGPIPE,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    let _ = socket;
    Ok(())
}

/// Reads the socket; registered for readable events only.
pub(super) struct UnixReadHalf {
    socket: AsyncFd<Arc<OwnedFd>>,
}

impl UnixReadHalf {
    /// A probe of this socket for the peer's hang-up.
    pub(super) fn hang_up_probe(&self) -> HangUpProbe {
        HangUpProbe(self.socket.get_ref().clone())
    }
}

/// Asks the kernel whether the peer of a Unix socket hung up (closed its
/// end: it exited, or shut the socket down both ways). Asked without
/// reading and without the reactor. The session asks while its
/// reader is held up and reads nothing, so that the end of stream waits
/// unseen behind the lines not read yet (see `session::incoming`).
///
/// `poll(2)` with a zero timeout reports `POLLHUP` from the socket's
/// shutdown state, whatever data is still queued. A peer that shut down
/// only its writing side is not taken for gone (`POLLRDHUP` is not asked
/// for): it may still be reading, and waiting for the answers this side
/// owes it. Asking does not touch the readiness the reactor holds for the
/// reading half, so a reader that resumes misses nothing (clearing that
/// readiness to wait for the next edge instead would strand the data
/// already queued).
///
/// A peer that shut down only its reading side makes no event at all for
/// a writer that waits for room (the socket never becomes writable again,
/// and `poll(2)` reports nothing for it): the writer finds that out itself
/// (see [`STALLED_WRITE_RETRY`]).
#[derive(Clone)]
pub(crate) struct HangUpProbe(Arc<OwnedFd>);

impl HangUpProbe {
    /// Whether the peer is gone both ways. `false` when `poll(2)` fails:
    /// the reader then finds out as it reads.
    pub(crate) fn peer_hung_up(&self) -> bool {
        let mut probe = libc::pollfd {
            fd: self.0.as_raw_fd(),
            // POLLHUP is always reported; nothing else is wanted.
            events: 0,
            revents: 0,
        };
        // SAFETY: one pollfd, valid for the call, on a descriptor the Arc
        // keeps open; a zero timeout never blocks.
        let ready = unsafe { libc::poll(&mut probe, 1, 0) };
        ready > 0 && probe.revents & libc::POLLHUP != 0
    }
}

impl std::fmt::Debug for HangUpProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("HangUpProbe").field(&self.0.as_raw_fd()).finish()
    }
}

impl AsyncRead for UnixReadHalf {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.socket.poll_read_ready(cx))?;
            // Read into the uninitialized part: zeroing a 64 KiB buffer
            // before every read cost more than the read (measured).
            // SAFETY: only recvmsg(2) writes there, and only the `n` bytes it
            // reports are marked initialized below.
            let unfilled = unsafe { buf.unfilled_mut() };
            let wanted = unfilled.len();
            let mut iov = libc::iovec {
                iov_base: unfilled.as_mut_ptr().cast(),
                iov_len: wanted,
            };
            // No room for ancillary data: the kernel discards (closes) any
            // descriptor a NODE_HANDLE carries (see the channel docs), and
            // says so with MSG_CTRUNC.
            // SAFETY: an all-zero msghdr is a valid empty one.
            let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
            header.msg_iov = &mut iov;
            header.msg_iovlen = 1;
            // SAFETY: `header` points at one iovec valid for `wanted` bytes.
            let n = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &mut header, 0) };
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
            // A short read usually means the socket is drained, and saying
            // so now saves the read that would return EAGAIN (clear_ready
            // keeps readiness that arrived after it was observed). Not when
            // descriptors came with the bytes: the kernel ends a read at such
            // a message even with more data queued behind it, and no new
            // event would come for that data (a review reproduced the hang).
            // Left as it is: a read also ends at a peer's out-of-band mark
            // (`MSG_OOB`, which Node never sends), and the line after it then
            // waits for that peer's next write or its end (a review
            // reproduced it). That only delays the peer's own messages,
            // which it could as well hold back, and telling it apart would
            // cost every short read a syscall.
            let descriptors_came = header.msg_flags & libc::MSG_CTRUNC != 0;
            if n > 0 && n < wanted && !descriptors_came {
                ready.clear_ready();
            }
            // SAFETY: recvmsg(2) initialized the first `n` bytes of `unfilled`.
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
    waiting: Waiting,
    /// While registered: when the write tries the socket again anyway (see
    /// [`STALLED_WRITE_RETRY`]). Set at each registration.
    retry: Pin<Box<Sleep>>,
    /// How many times the write half registered for writable events.
    #[cfg(test)]
    registrations: usize,
}

/// A duplicate of the socket's descriptor, for writable events (a
/// duplicate, because epoll refuses a second registration of the same
/// descriptor). Made with the halves (see `split`), then kept.
enum Waiting {
    /// Not registered; the duplicate (`None` only while `unregister`
    /// swaps it out).
    Idle(Option<OwnedFd>),
    /// Registered: a write waits for room.
    Registered(AsyncFd<OwnedFd>),
}

/// How long a write that waits for room waits for an event before it tries
/// the socket again. A peer that shut down only its reading side (it will
/// never read again) makes no event at all for a writer waiting for room:
/// the socket never becomes writable again, though every send fails with
/// `EPIPE` from then on. Without the retry, that write, and every request
/// behind it, waited for as long as the peer lived (a review reproduced
/// it: 200 requests, none failed in 20 s). A retry that finds no room
/// costs one `send`; the timer is set only as the socket fills (it may
/// wake the writer once more after the socket has room again).
const STALLED_WRITE_RETRY: Duration = Duration::from_secs(1);

/// Flags of every `send(2)`: never block, never raise SIGPIPE (Apple's
/// systems have that per socket, see `no_sigpipe`).
#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

impl UnixWriteHalf {
    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        // SAFETY: `bytes` is valid for reads of its length.
        let n = unsafe {
            libc::send(
                self.socket.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                SEND_FLAGS,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Stops listening for writable events, which would otherwise wake us
    /// for every message the peer reads.
    fn unregister(&mut self) {
        self.waiting = match std::mem::replace(&mut self.waiting, Waiting::Idle(None)) {
            Waiting::Registered(registered) => Waiting::Idle(Some(registered.into_inner())),
            idle => idle,
        };
    }

    /// The registration for writable events, made if needed (and then the
    /// retry's timer set).
    fn registered(&mut self) -> io::Result<&AsyncFd<OwnedFd>> {
        if let Waiting::Idle(duplicate) = &mut self.waiting {
            let duplicate = match duplicate.take() {
                Some(duplicate) => duplicate,
                // Not reached (`split` makes it); kept rather than a panic.
                None => self.socket.try_clone()?,
            };
            let _runtime = self.runtime.enter();
            // Registering a socket that has room reports it writable at once,
            // so room made between the failed send and now is not missed.
            // SAFETY: the registration owns the duplicate, which stays open
            // and unchanged until it is handed back by into_inner.
            let registered = unsafe { AsyncFd::register_with_interest(duplicate, Interest::WRITABLE) }
                .map_err(|e| {
                    let (duplicate, error) = e.into_parts();
                    self.waiting = Waiting::Idle(Some(duplicate));
                    error
                })?;
            self.retry
                .as_mut()
                .reset(tokio::time::Instant::now() + STALLED_WRITE_RETRY);
            self.waiting = Waiting::Registered(registered);
            #[cfg(test)]
            {
                self.registrations += 1;
            }
        }
        match &self.waiting {
            Waiting::Registered(registered) => Ok(registered),
            Waiting::Idle(_) => unreachable!("registered above"),
        }
    }
}

impl AsyncWrite for UnixWriteHalf {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bytes: &[u8]) -> Poll<io::Result<usize>> {
        loop {
            match self.send(bytes) {
                Ok(n) => {
                    // Taken whole: the socket has room again. Taken in part:
                    // the next write will very likely wait, so stay
                    // registered rather than pay two epoll_ctl calls for it.
                    if n == bytes.len() {
                        self.unregister();
                    }
                    return Poll::Ready(Ok(n));
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            self.registered()?;
            let this = &mut *self;
            let Waiting::Registered(registered) = &this.waiting else {
                unreachable!("registered above");
            };
            match registered.poll_write_ready(cx) {
                Poll::Ready(ready) => ready?.clear_ready(),
                Poll::Pending => {
                    ready!(this.retry.as_mut().poll(cx));
                    // No event for a while: send again, whatever the
                    // reactor says (see STALLED_WRITE_RETRY).
                    this.retry
                        .as_mut()
                        .reset(tokio::time::Instant::now() + STALLED_WRITE_RETRY);
                }
            }
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
    use std::os::fd::AsRawFd;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Our write half and the peer's read half of a socket pair, with the
    /// other two halves (kept, so that nothing closes early).
    fn one_way() -> (UnixWriteHalf, UnixReadHalf, (UnixReadHalf, UnixWriteHalf)) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        theirs.set_nonblocking(true).unwrap();
        let (our_reader, writer) = split(ours.into()).unwrap();
        let (reader, their_writer) = split(theirs.into()).unwrap();
        (writer, reader, (our_reader, their_writer))
    }

    #[tokio::test]
    async fn a_full_socket_waits_for_room_and_then_stops_listening() {
        let (mut writer, mut reader, _rest) = one_way();

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
            writer.registrations > 0,
            "the socket never filled up: the test proves nothing"
        );
        assert!(
            matches!(writer.waiting, Waiting::Idle(Some(_))),
            "still registered for writable events after the write went through"
        );
        read.await.unwrap();
    }

    /// Sends `data` in one sendmsg(2) with `fd` attached (SCM_RIGHTS), as
    /// Node sends a handle.
    fn send_with_descriptor(socket: &std::os::unix::net::UnixStream, data: &[u8], fd: i32) {
        let fd_len = std::mem::size_of::<i32>() as u32;
        // SAFETY: a msghdr with one iovec over `data` and a control buffer
        // sized by CMSG_SPACE for one descriptor, filled via the CMSG macros.
        unsafe {
            let mut iov = libc::iovec {
                iov_base: data.as_ptr() as *mut _,
                iov_len: data.len(),
            };
            let mut control = vec![0u8; libc::CMSG_SPACE(fd_len) as usize];
            let mut header: libc::msghdr = std::mem::zeroed();
            header.msg_iov = &mut iov;
            header.msg_iovlen = 1;
            header.msg_control = control.as_mut_ptr().cast();
            header.msg_controllen = control.len() as _;
            let cmsg = libc::CMSG_FIRSTHDR(&header);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as _;
            std::ptr::copy_nonoverlapping(&fd, libc::CMSG_DATA(cmsg).cast(), 1);
            let sent = libc::sendmsg(socket.as_raw_fd(), &header, 0);
            assert_eq!(sent, data.len() as isize, "{}", io::Error::last_os_error());
        }
    }

    /// Reads until `want` bytes came, failing if the reader stalls.
    async fn read_exactly(reader: &mut UnixReadHalf, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut chunk = vec![0; 1 << 20];
        while got.len() < want {
            let read = tokio::time::timeout(std::time::Duration::from_secs(5), reader.read(&mut chunk));
            let n = read
                .await
                .unwrap_or_else(|_| panic!("reader stalled after {} of {want} bytes", got.len()))
                .unwrap();
            assert!(n > 0, "end of stream after {} of {want} bytes", got.len());
            got.extend_from_slice(&chunk[..n]);
        }
        got
    }

    #[tokio::test]
    async fn bytes_after_a_passed_descriptor_are_read() {
        use std::io::Write;
        let (ours, mut theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (mut reader, _writer) = split(ours.into()).unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        // The kernel ends a read at a message that carried descriptors:
        // the line after it must still be read, without a new event.
        let handle = b"{\"cmd\":\"NODE_HANDLE\"}\n";
        send_with_descriptor(&theirs, handle, file.as_raw_fd());
        theirs.write_all(b"{\"after\":1}\n").unwrap();
        let got = read_exactly(&mut reader, handle.len() + 12).await;
        assert!(got.ends_with(b"{\"after\":1}\n"));

        // One big write with a descriptor, read over many calls.
        let mut line = vec![b'x'; 150 * 1024];
        line.push(b'\n');
        send_with_descriptor(&theirs, &line, file.as_raw_fd());
        assert_eq!(read_exactly(&mut reader, line.len()).await, line);
    }

    /// Our end of a socket pair, split, with its hang-up probe, and the
    /// peer's end as a plain blocking socket (shut down a side at will).
    fn probed_pair() -> (
        UnixReadHalf,
        UnixWriteHalf,
        HangUpProbe,
        std::os::unix::net::UnixStream,
    ) {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let (reader, writer) = split(ours.into()).unwrap();
        let probe = reader.hang_up_probe();
        (reader, writer, probe, theirs)
    }

    /// The probe sees a hang-up through data still queued, and only a
    /// hang-up: not data alone, not our own shutdown.
    #[tokio::test]
    async fn the_probe_sees_the_peer_hang_up_behind_unread_data() {
        use std::io::Write;
        let (_reader, mut writer, probe, mut theirs) = probed_pair();
        assert!(!probe.peer_hung_up(), "hung up before anything happened");
        theirs.write_all(b"queued, never read\n").unwrap();
        assert!(!probe.peer_hung_up(), "data alone taken for a hang-up");
        writer.shutdown().await.unwrap();
        assert!(!probe.peer_hung_up(), "our own shutdown taken for the peer's");
        drop(theirs);
        assert!(probe.peer_hung_up(), "the peer closed, with data unread, unseen");
    }

    /// A peer that shut down only its writing side may still read what we
    /// owe it: not gone. Shut down both ways, it is.
    #[tokio::test]
    async fn the_probe_takes_a_half_closed_peer_for_alive() {
        let (_reader, _writer, probe, theirs) = probed_pair();
        theirs.shutdown(std::net::Shutdown::Write).unwrap();
        assert!(!probe.peer_hung_up(), "a half-closed peer taken for gone");
        theirs.shutdown(std::net::Shutdown::Read).unwrap();
        assert!(probe.peer_hung_up(), "a peer shut down both ways taken for alive");
    }

    /// A peer that shut down only its reading side may still write: not
    /// hung up (our writes find out that it reads no more, see
    /// `a_write_waiting_for_room_fails_once_the_peer_reads_no_more`).
    #[tokio::test]
    async fn the_probe_takes_a_peer_that_only_reads_no_more_for_alive() {
        let (_reader, _writer, probe, theirs) = probed_pair();
        theirs.shutdown(std::net::Shutdown::Read).unwrap();
        assert!(
            !probe.peer_hung_up(),
            "a peer that still may write taken for hung up"
        );
    }

    /// The retry's timer needs the runtime's timers: a runtime without them
    /// is refused as the channel is made, not when the socket first fills,
    /// with part of a line written (a review saw a Node peer's next line
    /// spoiled that way).
    #[test]
    fn a_runtime_without_timers_is_refused_as_the_channel_is_made() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .unwrap();
        let (ours, _theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        let made = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(async { split(ours.into()).map(drop) })
        }));
        assert!(made.is_err(), "made on a runtime without timers");
    }

    /// A write waiting for room fails once the peer shuts down its reading
    /// side, though no event says so (see `STALLED_WRITE_RETRY`).
    #[tokio::test]
    async fn a_write_waiting_for_room_fails_once_the_peer_reads_no_more() {
        let (_reader, mut writer, _probe, theirs) = probed_pair();
        let big = vec![b'x'; 8 * 1024 * 1024];
        let write = tokio::spawn(async move {
            let result = writer.write_all(&big).await;
            (result, writer)
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(
            !write.is_finished(),
            "8 MiB fitted in the socket: the test proves nothing"
        );
        theirs.shutdown(std::net::Shutdown::Read).unwrap();
        let (result, writer) = tokio::time::timeout(std::time::Duration::from_secs(10), write)
            .await
            .expect("the write still waits for room that will never come")
            .unwrap();
        let error = result.expect_err("the write went through");
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe, "{error}");
        assert!(writer.registrations > 0, "never waited for room");
    }

    #[tokio::test]
    async fn shutdown_is_end_of_stream_for_the_peer() {
        let (mut writer, mut reader, _rest) = one_way();
        writer.write_all(b"last\n").await.unwrap();
        writer.shutdown().await.unwrap();
        let mut got = Vec::new();
        reader.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"last\n");
    }
}
