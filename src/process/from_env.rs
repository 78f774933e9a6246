//! Opening, as a child, the channel the parent gave this process
//! (PROTOCOL.md 1.1): what `NODE_CHANNEL_FD` names is checked before it is
//! taken, and the variables are consumed whatever becomes of it.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{CHANNEL_FD_VAR, SERIALIZATION_VAR, io_error};
use crate::channel::{Channel, ChannelConfig};
use crate::error::Error;

/// Opens the channel this process's parent gave it, as PROTOCOL.md 1.1
/// says: reads `NODE_CHANNEL_FD`, checks that the fd is open, inherited
/// (not close-on-exec: one that is was opened by this process itself, so
/// the variable came without its descriptor) and a connected stream
/// socket, checks `NODE_CHANNEL_SERIALIZATION_MODE` (absent, empty or
/// `json`, as Node reads it), and moves the channel to a close-on-exec,
/// non-blocking descriptor of its own (at another number). The number it
/// came at is closed, or, at 0 to 2 (Node puts the channel wherever its
/// parent's `stdio` array says), given `/dev/null`, so that the program's
/// next file does not become its stdin or stderr. Must run inside a Tokio
/// runtime.
///
/// Both variables are removed whether this succeeds or fails, as Node
/// removes them, so that our own children do not inherit a channel they
/// do not own (a Node grandchild would otherwise open that fd at start-up
/// and talk to its grandparent). A channel refused for its mode is left
/// open but close-on-exec (off 0 to 2, which get `/dev/null`, as below).
/// A descriptor that is no channel is not touched.
/// A channel at 0 to 2 for which `/dev/null` cannot be opened (a sandbox
/// without `/dev`, no descriptor left) is left as it is, open and
/// inheritable: made close-on-exec or closed, the number would be the
/// program's children's missing stdio, or the next file's.
///
/// # Panics
///
/// Outside a Tokio runtime, or in one without I/O or timers enabled, as
/// Tokio's own constructors do ([`crate::blocking::open_from_env`] needs none). The
/// variables and the channel are then left as they came, for a second
/// try.
///
/// # Safety
///
/// - Removing the two variables has the contract of
///   [`std::env::remove_var`]: no other thread may read or write the
///   environment while this runs, other than through `std::env` (which std
///   serializes). That includes C code run by tasks already spawned on the
///   runtime, such as a DNS lookup (`getaddrinfo` reads `RES_OPTIONS`,
///   `LOCALDOMAIN`) or local time (`TZ`). A library cannot know that about
///   its process, so the caller vouches for it. It holds when this is
///   called near the top of `main`, before other work starts; Tokio's own
///   threads do not read the environment.
/// - The descriptor `NODE_CHANNEL_FD` names was handed to this process for
///   the channel, and nothing else in the process owns it: this closes it
///   (or puts `/dev/null` there; a channel refused for its mode is left
///   open, as above), and the returned [`Channel`] owns the
///   socket from then on. (Node puts the channel wherever its parent's
///   `stdio` array says, even at 0 to 2, so no number is refused.)
#[track_caller]
pub unsafe fn open_from_env() -> Result<Channel, Error> {
    // SAFETY: the caller upholds open_from_env_with's contract, the same.
    unsafe { open_from_env_with(ChannelConfig::default()) }
}

/// [`open_from_env`] with channel settings.
///
/// # Panics
///
/// As [`open_from_env`]: outside a Tokio runtime.
///
/// # Safety
///
/// As [`open_from_env`]: no other thread reads or writes the environment
/// while this runs, other than through `std::env`, and nothing else in the
/// process owns the descriptor `NODE_CHANNEL_FD` names.
#[track_caller]
pub unsafe fn open_from_env_with(config: ChannelConfig) -> Result<Channel, Error> {
    crate::channel::require_runtime("open_from_env");
    // SAFETY: the caller upholds channel_fd_from_env's contract, the same.
    let channel_fd = unsafe { channel_fd_from_env()? };
    // A stdio number must not be left free once the channel moves off it:
    // the next descriptor the program opens would take it, and its stdin
    // or stderr would read or write that (a review saw eprintln! land in a
    // user's file). /dev/null goes there instead, as for a daemon's stdio;
    // opened first, so that a failure (a sandbox without /dev) leaves
    // nothing half done.
    let null_for_stdio = match channel_fd {
        0..=2 => match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            Ok(null) => Some(null),
            Err(e) => {
                // SAFETY: the caller's contract: the environment is ours.
                unsafe { consume_channel_variables() };
                let context =
                    format!("cannot open /dev/null to put in place of the channel at fd {channel_fd}: {e}");
                return Err(io_error(std::io::Error::new(e.kind(), context)));
            }
        },
        _ => None,
    };
    // Registered through a close-on-exec copy: a runtime without I/O (a
    // review saw one pass the check above) panics there, and the panic
    // must leave the channel and the variables as they were, not taken,
    // and closed as it unwinds. Only the copy is closed then, and the
    // flags the copy shares with the channel (non-blocking) are put back.
    let flags_as_they_came = RestoreFlagsOnPanic::of(channel_fd);
    // SAFETY: fcntl on the open channel descriptor; a copy it makes is
    // new and ours alone. From 3 up: at a stdio number this program has
    // closed, its prints would go into the channel.
    let copy = unsafe { libc::fcntl(channel_fd, libc::F_DUPFD_CLOEXEC, 3) };
    let opened = if copy < 0 {
        Err(io_error(std::io::Error::last_os_error()))
    } else {
        // SAFETY: as above.
        let copy = StdUnixStream::from(unsafe { OwnedFd::from_raw_fd(copy) });
        copy.set_nonblocking(true)
            .map_err(io_error)
            .and_then(|()| Channel::from_unix_socket(copy.into(), config))
    };
    flags_as_they_came.disarm();
    // The channel is the copy's from here on, opened or not.
    // SAFETY: the caller's contract: the environment is ours to change,
    // and the descriptor was handed to this process for the channel.
    unsafe {
        consume_channel_variables();
        match null_for_stdio {
            // dup2 closes the channel's descriptor as it puts /dev/null
            // there: the number is never free.
            Some(null) if libc::dup2(null.as_raw_fd(), channel_fd) >= 0 => {}
            _ => drop(OwnedFd::from_raw_fd(channel_fd)),
        }
    }
    opened
}

/// Puts a descriptor's status flags back if dropped, which only a panic's
/// unwind does (every other path disarms it first), nested in another
/// unwind or not.
struct RestoreFlagsOnPanic {
    fd: RawFd,
    flags: libc::c_int,
}

impl RestoreFlagsOnPanic {
    fn of(fd: RawFd) -> RestoreFlagsOnPanic {
        // SAFETY: F_GETFL only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        RestoreFlagsOnPanic { fd, flags }
    }

    /// Past the code that may panic: the descriptor may be closed next.
    fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for RestoreFlagsOnPanic {
    fn drop(&mut self) {
        // Only an unwind gets here: every other path disarms.
        if self.flags >= 0 {
            // SAFETY: F_SETFL on a descriptor still open (only its copy
            // closes as the panic unwinds), with flags it had.
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, self.flags) };
        }
    }
}

/// The checks of [`open_from_env`], without a runtime: the channel's
/// descriptor, as it came, with the variables still set; they are
/// consumed here only on an error.
///
/// # Safety
///
/// As [`open_from_env`].
unsafe fn channel_fd_from_env() -> Result<RawFd, Error> {
    let fd_text = std::env::var(CHANNEL_FD_VAR);
    if let Err(std::env::VarError::NotPresent) = fd_text {
        let problem = if CONSUMED.load(Ordering::Acquire) {
            "no channel: an earlier open_from_env in this process removed the variable (having opened or refused the channel; a channel is opened once)"
        } else {
            "no channel: this process was not started with an IPC channel (by Node's fork/spawn with 'ipc', or ipc_request::spawn)"
        };
        return Err(Error::ChannelEnv {
            variable: CHANNEL_FD_VAR,
            value: None,
            problem: problem.into(),
        });
    }
    let fd_text = fd_text.unwrap_or_else(|e| match e {
        std::env::VarError::NotUnicode(v) => v.to_string_lossy().into_owned(),
        std::env::VarError::NotPresent => unreachable!("returned above"),
    });
    // A value that is not UTF-8 is no mode we know: unknown, not absent.
    let mode = std::env::var_os(SERIALIZATION_VAR).map(|v| v.to_string_lossy().into_owned());
    let checked = checked_channel_fd(&fd_text, mode);
    if checked.is_err() {
        // SAFETY: the caller vouches that no other thread uses the
        // environment now (see the function's contract).
        unsafe { consume_channel_variables() };
    }
    checked
}

/// Set once [`consume_channel_variables`] has run: a later call finds no
/// variable because we took it, not because there never was a channel.
static CONSUMED: AtomicBool = AtomicBool::new(false);

/// Removes the channel's variables. Whatever became of the channel, as
/// Node does (it deletes both before it looks at them): a program that
/// goes on without the channel after an error must not hand them to its
/// own children, which would then try the descriptor (a Node grandchild
/// opens it at start-up).
///
/// # Safety
///
/// [`std::env::remove_var`]'s: no other thread uses the environment now.
unsafe fn consume_channel_variables() {
    CONSUMED.store(true, Ordering::Release);
    // SAFETY: as the function's contract.
    unsafe {
        std::env::remove_var(CHANNEL_FD_VAR);
        std::env::remove_var(SERIALIZATION_VAR);
    }
}

/// `NODE_CHANNEL_FD`'s descriptor if it is the channel and we speak its
/// mode, untouched (a panic that follows must leave it as it came: a
/// close-on-exec flag would have a second try refuse it). Refused for its
/// mode, the channel is kept from our children (see
/// [`keep_from_our_children`]).
fn checked_channel_fd(fd_text: &str, mode: Option<String>) -> Result<RawFd, Error> {
    let env_error = |problem: &str| Error::ChannelEnv {
        variable: CHANNEL_FD_VAR,
        value: Some(fd_text.to_owned()),
        problem: problem.into(),
    };
    let fd: RawFd = fd_text
        .trim()
        .parse()
        .ok()
        .filter(|fd| *fd >= 0)
        .ok_or_else(|| env_error("not a file descriptor number"))?;
    channel_fd_problem(fd).map_or(Ok(()), |problem| Err(env_error(problem)))?;
    // Node reads an empty mode as absent (`|| 'json'`), so must we.
    let problem = match mode.as_deref() {
        None | Some("" | "json") => return Ok(fd),
        Some("advanced") => {
            "advanced serialization is not supported yet; start the child with serialization: 'json'"
        }
        Some(_) => "unknown serialization mode (expected json)",
    };
    keep_from_our_children(fd)?;
    Err(Error::ChannelEnv {
        variable: SERIALIZATION_VAR,
        value: mode,
        problem: problem.into(),
    })
}

/// Keeps the channel at `fd`, refused, from passing to the children of this
/// program, leaving it open (the parent sees no disconnect). Made
/// close-on-exec where it is; at 0 to 2, a stdio number, that would leave
/// the children without that stdio, so the channel moves off it (to a
/// close-on-exec number of its own, kept open) and `/dev/null` takes its
/// place, as when it is opened. If `/dev/null` cannot be opened, it stays
/// as it is, inheritable (see [`open_from_env`]).
fn keep_from_our_children(fd: RawFd) -> Result<(), Error> {
    let last_error = || io_error(std::io::Error::last_os_error());
    if fd > 2 {
        // SAFETY: fcntl on the channel's descriptor, open (checked).
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) < 0 {
                return Err(last_error());
            }
        }
        return Ok(());
    }
    let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    else {
        return Ok(());
    };
    // SAFETY: fcntl and dup2 on descriptors open here; the copy, above the
    // stdio numbers, is new, and left open on purpose (owned by nobody,
    // as a refused channel at another number is).
    unsafe {
        if libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) < 0 || libc::dup2(null.as_raw_fd(), fd) < 0 {
            return Err(last_error());
        }
    }
    Ok(())
}

/// What makes `fd` no channel a parent handed us, if anything: it must be
/// open, inherited, and a connected stream socket. Only reads the
/// descriptor table and the socket's state; takes nothing.
fn channel_fd_problem(fd: RawFd) -> Option<&'static str> {
    // SAFETY: fcntl on any number only reads the descriptor table.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Some("that file descriptor is not open");
    }
    // A descriptor that came through exec cannot be close-on-exec (1.1:
    // the child's end arrives without it). One that is was opened by this
    // process itself: its runtime's own epoll or signal socket sit at the
    // low numbers, so a variable that came without its descriptor (a
    // program in between closed it, as Python's subprocess does by
    // default) names one of them. Taken, it would be written to and
    // closed twice (a review saw the process abort).
    if flags & libc::FD_CLOEXEC != 0 {
        return Some(
            "that file descriptor was not inherited (it is close-on-exec: this process opened it itself); a program between the parent and this one may have closed the channel",
        );
    }
    // SAFETY: fstat and getsockopt write only into the locals given, sized
    // for them.
    let is_stream_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::fstat(fd, &mut st) < 0 || (st.st_mode & libc::S_IFMT) != libc::S_IFSOCK {
            false
        } else {
            let mut ty: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut ty as *mut libc::c_int).cast(),
                &mut len,
            ) == 0
                && ty == libc::SOCK_STREAM
        }
    };
    if !is_stream_socket {
        return Some("that file descriptor is not a stream socket");
    }
    // A listening or unconnected socket has no peer. On Linux one whose
    // peer has gone still has it: that is the session's end of stream,
    // not this (other systems may say it is not connected).
    // SAFETY: getpeername writes at most `len` bytes into the storage.
    let connected = unsafe {
        let mut address: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        libc::getpeername(fd, (&mut address as *mut libc::sockaddr_storage).cast(), &mut len) == 0
    };
    if !connected {
        return Some("that socket is not connected (a listening or unconnected socket is no channel)");
    }
    None
}
