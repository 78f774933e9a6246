//! The floor: a raw line echo over the same kind of channel, with no JSON
//! and no async runtime.
//!
//! The parent makes an `AF_UNIX` `SOCK_STREAM` socket pair (what both Node
//! and `ipc_request::spawn` use), places the child's end at fd 3 without
//! close-on-exec (pre_exec + dup2, as `src/process/mod.rs` does) and sets
//! `NODE_CHANNEL_FD=3`. We do not reuse `ipc_request::spawn` here because it
//! hands back a `Channel` and never the raw descriptor; the kernel objects
//! are the same.
//!
//! The child ([`child`]) is blocking std code: it reads into a big buffer
//! and writes back every complete line it has in one `write_all`, keeping
//! the unfinished tail. The parent writes and reads the very bytes our
//! crate would write for the same requests (see `ours::request_line`).

use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The child's side: echo complete lines until end of stream.
pub fn child() -> ExitCode {
    report_child("floor-child", echo_lines())
}

/// `tokio-echo-child`: the same echo written the usual Tokio way, with
/// `tokio::net::UnixStream`, on the runtime our own child uses. With
/// [`TokioEchoPeer`] it shows what a plain Tokio round trip costs, before
/// any JSON or session code. Not a floor: `UnixStream` registers for
/// writable events too, which wakes each side once more per message (our
/// channel avoids that, see `src/channel/unix.rs`).
pub fn tokio_child() -> ExitCode {
    let result = crate::ours::runtime().block_on(async {
        let mut stream = tokio::net::UnixStream::from_std(channel_from_env()?)?;
        let mut lines = LineEcho::new();
        loop {
            let n = match stream.read(lines.space()).await {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
                Err(e) => return Err(e),
            };
            if let Some(complete) = lines.filled(n) {
                match stream.write_all(complete).await {
                    Ok(()) => lines.written(),
                    Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
    });
    report_child("tokio-echo-child", result)
}

/// A child's exit: success, or the error on stderr and failure (the
/// parent's `finish` reports the status).
pub fn report_child(name: &str, result: io::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[{name}] {e}");
            ExitCode::FAILURE
        }
    }
}

/// What one read of [`write_while_reading`] found.
pub struct ReadStep {
    /// Some bytes came.
    pub progressed: bool,
    /// Everything the caller waits for has come.
    pub done: bool,
}

/// Writes all of `out` to `stream` while calling `read` for what comes
/// back, from one thread with poll(2), until `out` is written and `read`
/// says it is done. The stream must be non-blocking (set by the caller,
/// outside the timed part); `read` makes one read.
pub fn write_while_reading(
    stream: &UnixStream,
    out: &[u8],
    mut read: impl FnMut(&UnixStream) -> io::Result<ReadStep>,
) -> io::Result<()> {
    let mut written = 0;
    loop {
        let mut progressed = false;
        if written < out.len() {
            match (&*stream).write(&out[written..]) {
                Ok(n) => {
                    written += n;
                    progressed = true;
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {}
                Err(e) => return Err(e),
            }
        }
        let step = read(stream)?;
        if step.done && written == out.len() {
            return Ok(());
        }
        progressed |= step.progressed;
        if !progressed {
            let mut events = libc::POLLIN;
            if written < out.len() {
                events |= libc::POLLOUT;
            }
            let mut pfd = libc::pollfd {
                fd: stream.as_raw_fd(),
                events,
                revents: 0,
            };
            // SAFETY: one valid pollfd on the stack.
            let rc = unsafe { libc::poll(&mut pfd, 1, 60_000) };
            if rc == 0 {
                return Err(io::Error::other("no progress for 60 s"));
            }
            if rc < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// The channel the parent gave us, set non-blocking for Tokio.
pub fn channel_from_env() -> io::Result<UnixStream> {
    let fd: i32 = std::env::var("NODE_CHANNEL_FD")
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| io::Error::other("NODE_CHANNEL_FD is not set to a descriptor"))?;
    // SAFETY: the parent handed us this descriptor to own (fd 3, open);
    // nothing else in this process uses it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    stream.set_nonblocking(true)?;
    Ok(stream)
}

fn echo_lines() -> io::Result<()> {
    let mut stream = channel_from_env()?;
    stream.set_nonblocking(false)?;
    let mut lines = LineEcho::new();
    loop {
        let n = match stream.read(lines.space()) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some(complete) = lines.filled(n) {
            match stream.write_all(complete) {
                Ok(()) => lines.written(),
                Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }
}

/// The echo children's buffer: bytes read, of which every complete line is
/// written back at once and the unfinished tail kept.
struct LineEcho {
    buf: Vec<u8>,
    len: usize,
    /// End of the complete lines handed out by `filled`.
    complete: usize,
}

impl LineEcho {
    fn new() -> Self {
        LineEcho {
            buf: vec![0u8; 1 << 20],
            len: 0,
            complete: 0,
        }
    }

    /// Where to read next; grows for a line longer than the buffer (the
    /// 16 MiB payload).
    fn space(&mut self) -> &mut [u8] {
        if self.len == self.buf.len() {
            self.buf.resize(self.buf.len() * 2, 0);
        }
        &mut self.buf[self.len..]
    }

    /// `n` bytes were read into `space`: the complete lines to write back,
    /// if any. Earlier bytes hold no newline (they are the unfinished tail).
    fn filled(&mut self, n: usize) -> Option<&[u8]> {
        let fresh = self.len;
        self.len += n;
        let last = memchr::memrchr(b'\n', &self.buf[fresh..self.len])?;
        self.complete = fresh + last + 1;
        Some(&self.buf[..self.complete])
    }

    /// The lines from `filled` were written: keep only the tail.
    fn written(&mut self) {
        self.buf.copy_within(self.complete..self.len, 0);
        self.len -= self.complete;
        self.complete = 0;
    }
}

/// A bench child started on a socket pair: our end and the process.
pub struct ChildChannel {
    /// Our end of the pair, blocking.
    pub stream: UnixStream,
    child: Child,
    /// The child's mode, for errors.
    mode: &'static str,
}

impl ChildChannel {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts this bench binary in `mode` with the other end of a fresh
    /// socket pair at fd 3 and `NODE_CHANNEL_FD=3`.
    pub fn spawn(exe: &Path, mode: &'static str) -> io::Result<ChildChannel> {
        // std creates both ends close-on-exec.
        let (ours, theirs) = UnixStream::pair()?;
        let theirs_fd = theirs.as_raw_fd();
        let mut command = Command::new(exe);
        command
            .arg(mode)
            .env("NODE_CHANNEL_FD", "3")
            .env("NODE_CHANNEL_SERIALIZATION_MODE", "json");
        // SAFETY: runs between fork and exec, only async-signal-safe calls
        // (fcntl, dup2) on descriptors this process owns; no allocation.
        unsafe {
            command.pre_exec(move || {
                if theirs_fd == 3 {
                    let flags = libc::fcntl(3, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(3, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(io::Error::last_os_error());
                    }
                } else if libc::dup2(theirs_fd, 3) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(theirs);
        Ok(ChildChannel {
            stream: ours,
            child,
            mode,
        })
    }

    /// Splits off the process, for a peer that drives the stream its own
    /// way (through Tokio); [`finish_child`] ends it.
    pub fn into_parts(self) -> (UnixStream, Child, &'static str) {
        (self.stream, self.child, self.mode)
    }

    /// Closes the channel and waits for the child, which exits at end of
    /// stream.
    pub fn finish(self) -> io::Result<()> {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        drop(self.stream);
        finish_child(self.child, self.mode)
    }
}

/// Waits for a child whose channel we closed; fails if it did not succeed.
pub fn finish_child(mut child: Child, mode: &str) -> io::Result<()> {
    let status = child.wait()?;
    if !status.success() {
        return Err(io::Error::other(format!("{mode} ended with {status}")));
    }
    Ok(())
}

/// The parent's side of the floor: a `floor-child` and a reply buffer.
pub struct FloorPeer {
    channel: ChildChannel,
    reply: Vec<u8>,
}

impl FloorPeer {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.channel.pid()
    }

    /// Starts a `floor-child`.
    pub fn spawn(exe: &Path) -> io::Result<FloorPeer> {
        Ok(FloorPeer {
            channel: ChildChannel::spawn(exe, "floor-child")?,
            reply: vec![0u8; 64 * 1024],
        })
    }

    /// Sequential: write one line, read until its newline, `iters` times.
    /// Blocking I/O. Returns the mean round-trip time.
    pub fn sequential(&mut self, line: &[u8], iters: usize) -> io::Result<Duration> {
        self.channel.stream.set_nonblocking(false)?;
        if self.reply.len() < line.len() {
            self.reply.resize(line.len(), 0);
        }
        let start = Instant::now();
        for _ in 0..iters {
            self.channel.stream.write_all(line)?;
            let mut got = 0;
            // The answer is exactly the line: read until its newline.
            while got == 0 || self.reply[got - 1] != b'\n' {
                if got == line.len() {
                    return Err(io::Error::other("floor: answer longer than the request"));
                }
                match self.channel.stream.read(&mut self.reply[got..line.len()]) {
                    Ok(0) => return Err(io::Error::other("floor child closed the channel")),
                    Ok(n) => got += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            if self.reply[..got] != *line {
                return Err(io::Error::other(
                    "floor: the echoed line differs from the request",
                ));
            }
        }
        Ok(start.elapsed() / iters as u32)
    }

    /// Writes all of `out` (many lines, or one big one) while reading the
    /// echo back, from one thread with non-blocking I/O and poll(2): no
    /// thread hand-offs, as fast as the kernel allows. Checks that the echo
    /// equals what was sent and returns the elapsed time.
    pub fn exchange(&mut self, out: &[u8], echo: &mut Vec<u8>) -> io::Result<Duration> {
        echo.clear();
        echo.resize(out.len(), 0);
        self.channel.stream.set_nonblocking(true)?;
        let start = Instant::now();
        let mut read = 0;
        write_while_reading(&self.channel.stream, out, |mut stream| {
            let progressed = match stream.read(&mut echo[read..]) {
                Ok(0) => return Err(io::Error::other("floor child closed the channel")),
                Ok(n) => {
                    read += n;
                    true
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => false,
                Err(e) => return Err(e),
            };
            Ok(ReadStep {
                progressed,
                done: read == out.len(),
            })
        })?;
        let elapsed = start.elapsed();
        self.channel.stream.set_nonblocking(false)?;
        if echo[..] != *out {
            return Err(io::Error::other(
                "floor: the echoed bytes differ from the requests",
            ));
        }
        Ok(elapsed)
    }

    /// Closes the channel and waits for the child.
    pub fn finish(self) -> io::Result<()> {
        self.channel.finish()
    }
}

/// The raw echo through Tokio on both sides: a `tokio-echo-child` and a
/// parent that writes and reads with `tokio::net::UnixStream`, no JSON.
pub struct TokioEchoPeer {
    stream: tokio::net::UnixStream,
    child: Child,
    mode: &'static str,
    reply: Vec<u8>,
}

impl TokioEchoPeer {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Must be called inside the runtime that will drive it.
    pub fn spawn(exe: &Path) -> io::Result<TokioEchoPeer> {
        let (stream, child, mode) = ChildChannel::spawn(exe, "tokio-echo-child")?.into_parts();
        stream.set_nonblocking(true)?;
        Ok(TokioEchoPeer {
            stream: tokio::net::UnixStream::from_std(stream)?,
            child,
            mode,
            reply: vec![0u8; 64 * 1024],
        })
    }

    /// As [`FloorPeer::sequential`], through the reactor. Takes and gives
    /// back the peer, so that it can run as a task of its own.
    pub async fn sequential(mut self, line: Vec<u8>, iters: usize) -> (Self, io::Result<Duration>) {
        let result = self.sequential_inner(&line, iters).await;
        (self, result)
    }

    async fn sequential_inner(&mut self, line: &[u8], iters: usize) -> io::Result<Duration> {
        if self.reply.len() < line.len() {
            self.reply.resize(line.len(), 0);
        }
        let start = Instant::now();
        for _ in 0..iters {
            self.stream.write_all(line).await?;
            let mut got = 0;
            while got == 0 || self.reply[got - 1] != b'\n' {
                if got == line.len() {
                    return Err(io::Error::other("tokio echo: answer longer than the request"));
                }
                match self.stream.read(&mut self.reply[got..line.len()]).await? {
                    0 => return Err(io::Error::other("tokio echo child closed the channel")),
                    n => got += n,
                }
            }
            if self.reply[..got] != *line {
                return Err(io::Error::other(
                    "tokio echo: the echoed line differs from the request",
                ));
            }
        }
        Ok(start.elapsed() / iters as u32)
    }

    /// Closes the channel and waits for the child.
    pub fn finish(self) -> io::Result<()> {
        drop(self.stream);
        finish_child(self.child, self.mode)
    }
}
