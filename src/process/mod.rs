//! Starting a child with a channel, and opening the channel as a child
//! (PROTOCOL.md 1.1).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::process::{ChildStderr, ChildStdin, ChildStdout};
use tokio::sync::watch;

use crate::channel::{Channel, ChannelConfig};
use crate::error::Error;
use crate::session::{Handler, Session, SessionBuilder};
use reaping::{Killer, WaitError};

mod exec_check;
mod from_env;
mod reaping;

pub use from_env::{open_from_env, open_from_env_with};

/// The variable that tells a child which fd is its channel.
pub const CHANNEL_FD_VAR: &str = "NODE_CHANNEL_FD";
/// The variable that tells a child how messages are serialized.
pub const SERIALIZATION_VAR: &str = "NODE_CHANNEL_SERIALIZATION_MODE";

/// How to start a child.
#[derive(Debug, Clone)]
pub struct SpawnOptions {
    /// The fd number the child finds its channel at (default 3, as Node's
    /// `fork` does). Must be 3 or more: 0 to 2 are the child's stdio.
    pub fd: RawFd,
    /// Settings of the parent's end of the channel.
    pub channel: ChannelConfig,
}

impl Default for SpawnOptions {
    fn default() -> Self {
        SpawnOptions {
            fd: 3,
            channel: ChannelConfig::default(),
        }
    }
}

/// Starts `command` with a channel at fd 3; see [`spawn_with`].
#[track_caller]
pub fn spawn(command: Command) -> Result<(Channel, ChildProcess), Error> {
    crate::channel::require_runtime("spawn");
    spawn_with(command, SpawnOptions::default())
}

/// Starts `command` with a channel and sets up a session with it, with
/// `handler` for its requests; see [`spawn_session_with`].
///
/// # Panics
///
/// As [`spawn_with`]: outside a Tokio runtime with IO and timers enabled.
pub async fn spawn_session(
    command: Command,
    handler: impl Into<Option<Handler>>,
) -> Result<(Session, ChildProcess), Error> {
    spawn_session_with(
        command,
        SpawnOptions::default(),
        SessionBuilder::new().handler(handler),
    )
    .await
}

/// [`spawn_with`] and [`SessionBuilder::setup`]: returns once the child
/// listens. If the handshake fails (the child exited, or never set up a
/// session within the builder's `handshake_timeout`), the child is killed,
/// and dead, when the error is returned; if this future is dropped before
/// the handshake is done, the child is sent SIGKILL as it drops (at once on
/// Linux; elsewhere, by the task that reaps it, see [`ChildProcess::kill`]). Either
/// way no handle to it is returned, and a child that never answers would
/// otherwise be left running, past this process's own exit. Only the child
/// itself is killed, not processes it started: a wrapper (`sh -c` without
/// `exec`, `npm run`, `cargo run`) dies, and the program it started runs
/// on, holding the channel. With [`spawn`] and
/// [`setup`](crate::setup) apart, that is the caller's to do
/// ([`ChildProcess::kill`]); that way also lets a child's piped streams be
/// taken before the handshake, for a child that uses them before it opens
/// its channel.
///
/// # Panics
///
/// As [`spawn_with`]: outside a Tokio runtime with IO and timers enabled.
pub async fn spawn_session_with(
    command: Command,
    options: SpawnOptions,
    builder: SessionBuilder,
) -> Result<(Session, ChildProcess), Error> {
    crate::channel::require_runtime("spawn_session");
    let (channel, child) = spawn_with(command, options)?;
    // For a future dropped during the handshake: the kill is only asked
    // for then (a drop cannot wait).
    let mut kill = KillUnlessDisarmed::new(&child);
    let setup = builder.setup(channel).await;
    kill.disarm();
    drop(kill);
    match setup {
        Ok(session) => Ok((session, child)),
        Err(e) => {
            // Dead before the error is returned: a caller that exits at
            // once on it would otherwise leave the child running (a review
            // saw 4 of 5 such children outlive their parent).
            kill_and_wait(&child).await;
            Err(e)
        }
    }
}

/// How long [`kill_and_wait`] waits for the child to die (it dies at once
/// unless the system is stalled).
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Kills `child` and waits up to [`KILL_WAIT`] for its exit: for a child
/// whose setup failed, whose handle its caller never gets.
pub(crate) async fn kill_and_wait(child: &ChildProcess) {
    child.kill();
    if tokio::time::timeout(KILL_WAIT, child.wait()).await.is_err() {
        tracing::warn!("child {} not dead {KILL_WAIT:?} after its kill", child.id());
    }
}

/// Kills a child of ours when dropped, unless disarmed first: for the
/// steps between a child's start and the moment its handle is handed to
/// the caller (a handshake that fails, a future dropped, a callback that
/// panics), after which nobody could kill it.
pub(crate) struct KillUnlessDisarmed<'a> {
    child: &'a ChildProcess,
    armed: bool,
}

impl<'a> KillUnlessDisarmed<'a> {
    pub(crate) fn new(child: &'a ChildProcess) -> Self {
        KillUnlessDisarmed { child, armed: true }
    }

    pub(crate) fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for KillUnlessDisarmed<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.child.kill();
        }
    }
}

/// Starts `command` (any program: a Rust binary, `node child.js`, ...) with
/// one end of a Unix socket pair at fd `options.fd`, `NODE_CHANNEL_FD` and
/// `NODE_CHANNEL_SERIALIZATION_MODE=json` in its environment. Returns our
/// end as a [`Channel`] (close-on-exec, so no other child inherits it) and
/// the child. The channel knows the child's exit status, so a session over
/// it reports how the child ended.
///
/// # Panics
///
/// Outside a Tokio runtime (with a message saying so, at the caller's
/// line), or in one without IO and timers enabled (`enable_all`), as
/// Tokio's own functions do; before anything is started, so no child is
/// left behind. A program
/// without a runtime has [`blocking::spawn`](crate::blocking::spawn).
///
/// Streams of `command` set to [`Stdio::piped()`](std::process::Stdio::piped)
/// are there for the taking: [`ChildProcess::take_stdout`] and its siblings.
///
/// A program that cannot start is [`Error::Spawn`], which names it (and
/// the command's `current_dir`, if that is missing or not a directory:
/// std gives the failed chdir's errno alone). So too
/// in a process that ignores `SIGCHLD` (inherited across exec from a
/// daemon or wrapper), where std itself panics on a failed exec
/// (rust-lang/rust#110317): there the panic is caught (after the panic
/// hook has seen it: its message reaches stderr; with `panic = "abort"` it
/// aborts), and a look-up of the program as the exec searches for it says
/// why it did not start (not found, not executable) where it can, saying
/// it is the look-up's finding; where not (a script whose interpreter is
/// missing), the error says the cause is lost.
///
/// If the session's setup then fails, the child keeps running (dropping a
/// [`ChildProcess`] does not kill it): kill it, or start it with
/// [`spawn_session_with`], which does.
#[track_caller]
pub fn spawn_with(mut command: Command, options: SpawnOptions) -> Result<(Channel, ChildProcess), Error> {
    let target = options.fd;
    if target < 3 {
        return Err(Error::InvalidArgument(format!(
            "channel fd {target} would replace the child's stdio; use 3 or more"
        )));
    }
    // Past the descriptor limit (which the child inherits) its dup2 would
    // fail, and the error would seem to be the program's.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit fills the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0
        && target as libc::rlim_t >= limit.rlim_cur
    {
        return Err(Error::InvalidArgument(format!(
            "channel fd {target} is past this process's descriptor limit ({})",
            limit.rlim_cur
        )));
    }
    // After the checks of the arguments, which need no runtime; before
    // anything is started.
    crate::channel::require_runtime("spawn_with");
    // std reports a failed exec through a close-on-exec pipe it opens while
    // spawning, at the lowest free descriptors. Were one of them `target`,
    // the dup2 below would replace it in the child and a program that
    // failed to start would look started. Holding `target` here (if it is
    // free) keeps the pipe off it; if it is taken, the pipe cannot have it
    // while its holder keeps it. The lock makes that so for the holders
    // that come and go meanwhile most: other spawns of ours, whose socket
    // ends and held numbers are all opened and closed under it (a review
    // saw 11 of 6,000 concurrent spawns of a missing program "succeed"
    // without the lock; with it taken only around the spawn, and a failed
    // spawn's sockets closed after it, CI still saw 1 of 2,000). A
    // descriptor at `target` that another thread closes at that very
    // instant (any other code's) is not covered.
    static SPAWNING: Mutex<()> = Mutex::new(());
    let spawning = SPAWNING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Declared after the guard: on any early return they close before it
    // is released. std creates both ends close-on-exec (atomically where
    // the OS can).
    let (ours, theirs) = StdUnixStream::pair().map_err(io_error)?;
    let (ours, theirs) = (
        StdUnixStream::from(above_stdio(ours.into()).map_err(io_error)?),
        StdUnixStream::from(above_stdio(theirs.into()).map_err(io_error)?),
    );
    let theirs_fd = theirs.as_raw_fd();
    let hold_target = hold_fd_number(&theirs, target);
    command
        .env(CHANNEL_FD_VAR, target.to_string())
        .env(SERIALIZATION_VAR, "json");
    // SAFETY: the closure runs in the child between fork and exec and only
    // calls async-signal-safe functions (dup2, fcntl) on descriptors it
    // owns; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if theirs_fd == target {
                // dup2 onto itself would keep close-on-exec: clear it.
                let flags = libc::fcntl(target, libc::F_GETFD);
                if flags < 0 || libc::fcntl(target, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(theirs_fd, target) < 0 {
                // dup2 leaves the new fd without close-on-exec, as the
                // child needs; the original copy closes at exec.
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // Our end, registered with the runtime's reactor before the child
    // exists: outside a Tokio runtime (or in one without IO or timers) that panics
    // here, as Tokio does, and not after the fork, which would leave a
    // child running that nothing waits for. Its writer's duplicate
    // descriptor is opened under the lock, close-on-exec, off `target`
    // (held).
    ours.set_nonblocking(true).map_err(io_error)?;
    let mut channel = Channel::from_unix_socket(ours.into(), options.channel)?;
    // Blocking, as Node hands it over; the child decides.
    let program = command.get_program().to_string_lossy().into_owned();
    let spawned = exec_check::spawn(command);
    // Our copy of the child's end must go, or we would never see the
    // child's end of stream; and before the lock does (see above).
    drop((hold_target, theirs));
    let mut child = spawned.map_err(|e| Error::Spawn {
        program,
        error: Arc::new(e),
    })?;
    drop(spawning);
    let pid = child.id().unwrap_or(0);
    // Out of the child before the task that waits for it takes it: there
    // they would be out of reach, a piped stdout that nobody can read
    // would fill and block the child, and the wait would close stdin.
    let pipes = Arc::new(Mutex::new(Pipes {
        stdin: child.stdin.take(),
        stdout: child.stdout.take(),
        stderr: child.stderr.take(),
    }));
    let (killer, exit_rx, wait_error) = reaping::start(child, pid);
    channel.set_peer_exit(exit_rx.clone());
    Ok((
        channel,
        ChildProcess {
            pid,
            exit: exit_rx,
            wait_error,
            killer: Arc::new(SharedKiller {
                killer,
                on_drop: AtomicBool::new(false),
            }),
            pipes,
        },
    ))
}

/// A child started by [`spawn`]. A task waits for it (and, if the runtime
/// ends first, a small thread, until the child exits), so it never lingers
/// as a zombie, and its exit status reaches [`wait`](Self::wait) either
/// way, on any runtime (unless no thread can be started to wait for it); dropping this does not kill it (it sees its channel close
/// when the session ends, and a Node child then exits), unless
/// [`set_kill_on_drop`](Self::set_kill_on_drop) says so. Dropping the last
/// clone does close the piped stdio nobody took: a child that writes to
/// such a pipe afterwards gets `EPIPE` (Node throws, Rust's `println!`
/// panics), so take the pipes you asked for.
#[derive(Debug, Clone)]
pub struct ChildProcess {
    pid: u32,
    exit: watch::Receiver<Option<ExitStatus>>,
    /// Why the exit status could not be collected, if it could not.
    wait_error: WaitError,
    /// Sends the kill, from any clone, whoever reaps the child by then.
    killer: Arc<SharedKiller>,
    /// Shared by the clones: each pipe goes to whoever takes it first.
    pipes: Arc<Mutex<Pipes>>,
}

/// The clones' [`Killer`], which kills the child as the last clone goes if
/// [`ChildProcess::set_kill_on_drop`] asked for that.
#[derive(Debug)]
struct SharedKiller {
    killer: Killer,
    on_drop: AtomicBool,
}

impl Drop for SharedKiller {
    fn drop(&mut self) {
        if *self.on_drop.get_mut() {
            self.killer.kill();
        }
    }
}

/// The piped stdio of a child, until taken.
#[derive(Debug)]
struct Pipes {
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
}

impl ChildProcess {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.pid
    }

    /// Sends SIGKILL, unless the child has already been reaped (never to
    /// a pid that may be another process's by now, as long as only this
    /// crate reaps the child: not a `waitpid(-1)` elsewhere in the
    /// process). On Linux the signal goes at once, through a pidfd.
    /// Elsewhere (or with no pidfd: an old kernel, or a process that
    /// ignores `SIGCHLD`) the task that reaps the child sends it when it next runs, so
    /// a process that exits right after this may leave the child running:
    /// [`wait`](Self::wait) for it first. Once the runtime has dropped that
    /// task, the signal is sent here, or by the task's drop if this came
    /// first.
    pub fn kill(&self) {
        self.killer.killer.kill();
    }

    /// Whether the child is sent SIGKILL (as by [`kill`](Self::kill)) when
    /// the last clone of this handle is dropped; not by default, as with
    /// std's and Tokio's children. For a child that must not outlive the
    /// handle: one that ignores its channel's close, say, which would
    /// otherwise run on after the session, even after this process. Only a
    /// drop kills: a process that ends without dropping the handle
    /// (`std::process::exit`, a signal) leaves the child to see its channel
    /// close, and only the child itself is killed, not processes it started.
    pub fn set_kill_on_drop(&self, kill: bool) {
        // Relaxed: the drop of the last clone reads it after every other
        // clone's drop, which the Arc's count orders.
        self.killer.on_drop.store(kill, Ordering::Relaxed);
    }

    /// The child's stdin, if its command set it to
    /// [`Stdio::piped()`](std::process::Stdio::piped) and no clone of this
    /// took it yet. Drop it to close the child's stdin.
    pub fn take_stdin(&self) -> Option<ChildStdin> {
        self.pipes.lock().unwrap().stdin.take()
    }

    /// The child's stdout, as [`take_stdin`](Self::take_stdin). Read it:
    /// a child whose pipe is full blocks until it is read. A pipe nobody
    /// takes closes when the last clone of this is dropped.
    pub fn take_stdout(&self) -> Option<ChildStdout> {
        self.pipes.lock().unwrap().stdout.take()
    }

    /// The child's stderr, as [`take_stdout`](Self::take_stdout).
    pub fn take_stderr(&self) -> Option<ChildStderr> {
        self.pipes.lock().unwrap().stderr.take()
    }

    /// The exit status, if the child has exited.
    pub fn try_status(&self) -> Option<ExitStatus> {
        *self.exit.borrow()
    }

    /// The child's exit status as its reaping task publishes it, without
    /// the rest of this handle (its pipes): for a waiter that must not keep
    /// them open.
    pub(crate) fn exit_status(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.clone()
    }

    /// Waits for the child to exit. A child usually exits when its channel
    /// closes, and dropping every handle of a session does not close it
    /// (see [`Session`]): call [`Session::close`] first, or this waits for
    /// as long as such a child lives. Fails with [`Error::Io`] if its exit
    /// status cannot be collected: `ECHILD` (the error says so) when this
    /// process ignores `SIGCHLD`, a disposition inherited across exec, so
    /// that the kernel reaps children itself and their status is lost. The
    /// child has exited then, and no zombie is left; sessions over its
    /// channel end with [`CloseReason::PeerClosed`](crate::CloseReason::PeerClosed),
    /// not its exit status.
    pub async fn wait(&self) -> Result<ExitStatus, Error> {
        let mut exit = self.exit.clone();
        let status = exit.wait_for(|s| s.is_some()).await.map_err(|_| {
            Error::Io(
                self.wait_error
                    .get()
                    .cloned()
                    .unwrap_or_else(|| Arc::new(std::io::Error::other("the child could not be waited for"))),
            )
        })?;
        Ok(status.expect("waited for Some"))
    }

    /// Waits up to `grace` for the child to exit, then kills it
    /// ([`kill`](Self::kill)) and waits for that: the end of a stop that
    /// gives the child its chance. Close the session first (a child exits
    /// when its channel closes) with [`Session::close`], which returns at
    /// once: what was queued is still written meanwhile, to a child that
    /// reads it. Not an unbounded [`Session::shutdown`], which waits for as
    /// long as a stuck child leaves what we wrote unread, before the grace
    /// has even begun.
    ///
    /// ```no_run
    /// # async fn stop(session: ipc_request::Session, child: ipc_request::ChildProcess)
    /// #     -> Result<(), ipc_request::Error> {
    /// # use std::time::Duration;
    /// session.close();
    /// let status = child.wait_or_kill(Duration::from_secs(2)).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// Fails as [`wait`](Self::wait) does.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime with timers (the grace is a Tokio timer),
    /// where `wait` works on any executor.
    pub async fn wait_or_kill(&self, grace: std::time::Duration) -> Result<ExitStatus, Error> {
        if let Ok(exited) = tokio::time::timeout(grace, self.wait()).await {
            return exited;
        }
        self.kill();
        self.wait().await
    }
}

/// `fd` itself if it is 3 or more, else a close-on-exec copy at the
/// lowest free number from 3 up (the original closed). A process that
/// closed its stdio (a daemon) gets a socket pair at 0 to 2.
/// In the child, std puts the child's stdio at 0 to 2 before our `dup2`
/// runs: the child's end there would be replaced first, and the child
/// given `/dev/null` or its own stdout pipe as its channel (a review saw
/// both). Our end there would take what this process writes to its
/// stdout, bytes that are not JSON and that a Node child would choke on.
/// (Under Node, libuv handles the same case in its child.) Our pidfd
/// moves too: at 1, it would make the process's `println!` panic, where
/// with 1 closed std drops the text.
fn above_stdio(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: fcntl on a descriptor we own; the result, if any, is a new
    // descriptor nobody else has, and `fd` closes when it drops here.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if copy < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `copy` was just created and is owned here alone.
    Ok(unsafe { OwnedFd::from_raw_fd(copy) })
}

/// A close-on-exec copy of `fd` at descriptor number `target`, if that
/// number is free in this process; `None` if it is in use (or the copy
/// fails, which leaves things as they were without it). `F_DUPFD_CLOEXEC`
/// takes the lowest free number from `target` up, so nothing open is ever
/// replaced, even if another thread opens descriptors meanwhile.
fn hold_fd_number(fd: &impl AsRawFd, target: RawFd) -> Option<OwnedFd> {
    // SAFETY: fcntl on a descriptor we own; the result, if any, is a new
    // descriptor nobody else has.
    let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, target) };
    if copy < 0 {
        return None;
    }
    // SAFETY: `copy` was just created and is owned here alone.
    let copy = unsafe { OwnedFd::from_raw_fd(copy) };
    (copy.as_raw_fd() == target).then_some(copy)
}

fn io_error(e: std::io::Error) -> Error {
    Error::Io(Arc::new(e))
}
