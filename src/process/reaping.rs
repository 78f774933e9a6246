//! Reaping a child, and killing it: the task that waits for the child,
//! the thread that takes over when the runtime ends first, and who may
//! send it a signal when (see [`Killing`]), so that a kill is never lost
//! and never reaches a reused pid.

use std::os::fd::OwnedFd;
#[cfg(target_os = "linux")]
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, OnceLock};

use tokio::sync::{mpsc, watch};

/// Hands `child` (whose id is `pid`) to a task that reaps it, publishes
/// its exit status and sends the kills asked of it. Returns what kills it,
/// the exit status as it is published, and why it could not be, if so.
pub(super) fn start(
    child: tokio::process::Child,
    pid: u32,
) -> (Killer, watch::Receiver<Option<ExitStatus>>, WaitError) {
    // Before anything can reap the child: its pid is still its own.
    let pidfd = Arc::new(open_pidfd(pid));
    let (exit_tx, exit_rx) = watch::channel(None);
    let wait_error = Arc::new(OnceLock::new());
    // Capacity 1: a kill request is a flag, more than one adds nothing.
    let (kill_tx, mut kill_rx) = mpsc::channel::<()>(1);
    let killing = Arc::new(Mutex::new(Killing::default()));
    let mut reaping = Reaping {
        child: Some(child),
        killing: killing.clone(),
        reaped: false,
        exit: Some(exit_tx),
        wait_error: wait_error.clone(),
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                status = reaping.child().wait() => {
                    reaping.mark_reaped();
                    match status {
                        Ok(status) => reaping.publish(status),
                        Err(e) => reaping.wait_failed(e),
                    }
                    return;
                }
                Some(()) = kill_rx.recv() => {
                    let _ = reaping.child().start_kill();
                }
            }
        }
    });
    let killer = Killer {
        pid,
        pidfd,
        killing,
        task: kill_tx,
    };
    (killer, exit_rx, wait_error)
}

/// Kills a child handed to [`start`], from any clone of its handle and at
/// any time, never reaching a reused pid.
#[derive(Debug, Clone)]
pub(super) struct Killer {
    pid: u32,
    /// The child's pidfd, where the system has them: the signal goes
    /// through it at once (see [`open_pidfd`]).
    pidfd: Arc<Option<OwnedFd>>,
    /// Who sends a kill, and whether one was asked for (see [`Killing`]).
    killing: Arc<Mutex<Killing>>,
    /// Asks the reaping task.
    task: mpsc::Sender<()>,
}

impl Killer {
    /// See [`ChildProcess::kill`](super::ChildProcess::kill).
    pub(super) fn kill(&self) {
        if let Some(pidfd) = self.pidfd.as_ref() {
            kill_through_pidfd(pidfd);
        }
        // Also as without a pidfd: harmless once the signal is sent (the
        // task's kill skips a child it has reaped), and the task learns of it.
        let mut killing = lock_killing(&self.killing);
        killing.requested = true;
        match killing.reaper {
            Reaper::Task => {
                let _ = self.task.try_send(());
            }
            // SAFETY: a plain syscall. The pid is still this child's: the
            // thread that waits for it marks it `Done`, under this lock,
            // before it reaps it. Not so in a process that ignores SIGCHLD,
            // where the kernel reaps it as it exits: a kill between that
            // and the thread's wake-up reaches the pid's next owner, if it
            // has one within those microseconds (as Tokio's own kill would).
            Reaper::Thread => unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            },
            Reaper::Done => {}
        }
    }
}

/// A pidfd for the child `pid` (Linux 5.3 and later; `None` elsewhere, or
/// if the kernel refuses): a handle on that very process, which a pid
/// reused after the child is reaped never aliases, so a signal can go
/// through it at once from anywhere. Without it, `kill` asks the reaping
/// task, which owns the right to signal the pid (see [`Killing`]); a caller
/// that exits right after a kill (or a dropped `spawn_session`) then left
/// the child running in 8 of 10 runs of a review's test. One descriptor per
/// child, close-on-exec, closed with the last handle on it.
///
/// Opened just after the spawn, so the pid must still be the child's: it
/// is, unless something reaped the child in between. The kernel does so
/// at once for a process that ignores `SIGCHLD` (or sets `SA_NOCLDWAIT`),
/// a disposition inherited across exec: then no pidfd (a review opened one
/// on an unrelated process that had taken the pid, and `kill` killed it).
/// A pidfd that turns out not to be an unreaped child of ours (`waitid`
/// says `ECHILD`: a `waitpid(-1)` elsewhere was quicker) is dropped too.
/// Left: such a `waitpid(-1)` and the pid's reuse by another child of ours
/// in the microseconds between, which would fool Tokio's own pidfd alike.
fn open_pidfd(pid: u32) -> Option<OwnedFd> {
    #[cfg(target_os = "linux")]
    {
        if the_kernel_reaps_our_children() {
            return None;
        }
        // SAFETY: the syscall takes a pid and flags and returns a new
        // descriptor (close-on-exec) or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return None;
        }
        // SAFETY: a descriptor the kernel just opened for us alone.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
        // Off the stdio numbers a process that closed its stdio leaves
        // free (see `above_stdio`); if even that fails, no pidfd.
        let pidfd = super::above_stdio(pidfd).ok()?;
        // SAFETY: waitid into a siginfo_t of our own; WNOWAIT|WNOHANG
        // neither reaps nor blocks. Kernels before 5.4 know no P_PIDFD
        // (EINVAL): the pidfd is kept, as opened.
        let ours = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            ) == 0
                || std::io::Error::last_os_error().raw_os_error() != Some(libc::ECHILD)
        };
        ours.then_some(pidfd)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = pid;
        None
    }
}

/// True if this process ignores `SIGCHLD` or sets `SA_NOCLDWAIT`: the
/// kernel then reaps its children as they exit, and a child's pid may be
/// another process's a moment later. Tokio may put a `SIGCHLD` handler of
/// its own in place later (without pidfds): this says how things are now.
#[cfg(target_os = "linux")]
fn the_kernel_reaps_our_children() -> bool {
    // SAFETY: reads the disposition into a struct of our own; changes none.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut action) == 0
            && (action.sa_sigaction == libc::SIG_IGN || action.sa_flags & libc::SA_NOCLDWAIT != 0)
    }
}

/// Sends SIGKILL through a pidfd from [`open_pidfd`]. An exited child
/// (reaped or not) gets nothing: `ESRCH`, ignored.
fn kill_through_pidfd(pidfd: &OwnedFd) {
    #[cfg(target_os = "linux")]
    // SAFETY: a plain syscall on a descriptor we own, without siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        );
    }
    #[cfg(not(target_os = "linux"))]
    let _ = pidfd;
}

/// Whether [`ChildProcess::kill`](super::ChildProcess::kill) was called, and who sends the signal:
/// the reaping task, as long as it lives; once the runtime has dropped it
/// with the child unreaped, `kill` itself, to the pid, until the thread
/// that then waits for the child reaps it. One lock orders the three, so
/// that a kill is never lost (a review saw a failed `spawn_session`'s kill
/// come after the runtime had dropped the task, which had read no request
/// yet: 10 to 20 children of 40 ran on) and never reaches a reused pid.
#[derive(Debug, Default)]
struct Killing {
    requested: bool,
    reaper: Reaper,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum Reaper {
    /// The reaping task: `kill` asks it (or its drop reads `requested`).
    #[default]
    Task,
    /// A thread waits for the child, not reaped yet: its pid is still its
    /// own, and `kill` signals it.
    Thread,
    /// Reaped, or handed to Tokio's queue of orphans: no signal any more.
    Done,
}

fn lock_killing(killing: &Mutex<Killing>) -> std::sync::MutexGuard<'_, Killing> {
    // Poisoned only by a panic elsewhere; the state is a flag and a tag.
    killing.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The child as its reaping task holds it. Dropped unreaped, the runtime
/// shut down before the child exited:
/// - after a [`ChildProcess::kill`](super::ChildProcess::kill), it sends the signal the task did not
///   get to send (the child is not reaped yet, so its pid cannot be a
///   reused one);
/// - it hands the child to a thread that waits for it. Tokio would hand it
///   to whichever runtime of the process next handles `SIGCHLD`, and there
///   may be none: the child would stay a zombie (a review saw one);
/// - whoever collects the exit status publishes it, so that
///   [`ChildProcess::wait`](super::ChildProcess::wait) and the sessions over its channel still learn
///   it (a review found `wait` failing for a child that exited cleanly
///   once its runtime had ended).
struct Reaping {
    /// `None` only once the drop has handed it on.
    child: Option<tokio::process::Child>,
    killing: Arc<Mutex<Killing>>,
    reaped: bool,
    /// Where the exit status goes; `None` once handed on with the child.
    exit: Option<watch::Sender<Option<ExitStatus>>>,
    /// Where the error goes if the status cannot be collected.
    wait_error: WaitError,
}

/// Why a child's exit status could not be collected, for
/// [`ChildProcess::wait`](super::ChildProcess::wait); set before the exit watch's sender goes.
pub(super) type WaitError = Arc<OnceLock<Arc<std::io::Error>>>;

/// Records that `pid`'s status could not be collected. `ECHILD` says the
/// child was reaped by someone else: most often the kernel, in a process
/// that ignores `SIGCHLD` (a disposition inherited across exec, from a
/// daemon or wrapper that started this program).
fn record_wait_failure(wait_error: &WaitError, pid: Option<u32>, e: std::io::Error) {
    let pid = pid.map_or_else(|| "?".to_string(), |pid| pid.to_string());
    tracing::warn!("could not wait for child {pid}: {e}");
    let e = if e.raw_os_error() == Some(libc::ECHILD) {
        std::io::Error::new(
            e.kind(),
            format!(
                "the exit status of child {pid} is lost ({e}): something else reaped it; \
                 does this process ignore SIGCHLD (inherited across exec), \
                 or reap children with waitpid(-1)?"
            ),
        )
    } else {
        e
    };
    let _ = wait_error.set(Arc::new(e));
}

impl Reaping {
    fn child(&mut self) -> &mut tokio::process::Child {
        self.child
            .as_mut()
            .expect("the child is handed on only by the drop")
    }

    /// The child's status was collected: its pid may be reused from now on.
    fn mark_reaped(&mut self) {
        self.reaped = true;
    }

    fn publish(&self, status: ExitStatus) {
        if let Some(exit) = &self.exit {
            exit.send_replace(Some(status));
        }
    }

    fn wait_failed(&self, e: std::io::Error) {
        let pid = self.child.as_ref().and_then(tokio::process::Child::id);
        record_wait_failure(&self.wait_error, pid, e);
    }
}

impl Drop for Reaping {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        let Some(mut child) = self.child.take() else {
            return;
        };
        // Held until the child is handed on: a `kill` meanwhile waits, and
        // then finds who signals the child now.
        let mut killing = lock_killing(&self.killing);
        if killing.requested {
            let _ = child.start_kill();
        }
        match child.try_wait() {
            // Exited already: reaped here, and Tokio forgets it.
            Ok(Some(status)) => {
                killing.reaper = Reaper::Done;
                self.publish(status)
            }
            Ok(None) => {
                let waiting =
                    wait_on_a_thread(child, self.exit.take(), self.wait_error.clone(), &self.killing);
                killing.reaper = if waiting { Reaper::Thread } else { Reaper::Done };
            }
            Err(e) => {
                killing.reaper = Reaper::Done;
                record_wait_failure(&self.wait_error, child.id(), e)
            }
        }
    }
}

/// Waits for `child`, still running, on a thread of its own (a small one:
/// it only waits), so that it leaves no zombie once it exits.
///
/// The thread holds Tokio's handle on the child, so that the child has
/// one owner: dropped unreaped, the handle would queue the pid for Tokio
/// to reap later, and a pid reaped here meanwhile could by then be
/// another child's (a review made that happen, and Tokio took the other
/// child's exit status). So the thread waits for the exit without
/// collecting it (`WNOWAIT`), then has Tokio's handle collect it, after
/// which dropping the handle queues nothing. If no thread can start, the
/// handle is dropped here, as before: Tokio's queue, and a zombie until a
/// runtime handles `SIGCHLD`. Until the child exits, its thread, and
/// through Tokio's handle (a pidfd registration on Linux) the stopped
/// runtime's I/O driver (its epoll and eventfd descriptors), are kept: a
/// child that never exits keeps them for as long as the process lives.
fn wait_on_a_thread(
    mut child: tokio::process::Child,
    exit: Option<watch::Sender<Option<ExitStatus>>>,
    wait_error: WaitError,
    killing: &Arc<Mutex<Killing>>,
) -> bool {
    let Some(pid) = child.id() else {
        return false;
    };
    let killing = killing.clone();
    let waiting = std::thread::Builder::new()
        .name(format!("ipc-request-reap-{pid}"))
        .stack_size(64 * 1024)
        .spawn(move || {
            loop {
                // SAFETY: waitid on a child of this process, unreaped (its
                // handle is here), into a siginfo_t of our own.
                let waited = unsafe {
                    let mut info: libc::siginfo_t = std::mem::zeroed();
                    libc::waitid(
                        libc::P_PID,
                        pid as libc::id_t,
                        &mut info,
                        libc::WEXITED | libc::WNOWAIT,
                    )
                };
                if waited == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                    break;
                }
            }
            // No kill may reach the pid from now on: it is reaped next.
            // (Until now a kill signalled this child, exited or not.)
            lock_killing(&killing).reaper = Reaper::Done;
            // Collects the status: the handle is done, and its drop
            // queues nothing.
            match (child.try_wait(), exit) {
                (Ok(Some(status)), Some(exit)) => {
                    exit.send_replace(Some(status));
                }
                (Err(e), _) => record_wait_failure(&wait_error, Some(pid), e),
                _ => {}
            }
        });
    if let Err(e) = &waiting {
        tracing::warn!("child {pid} may be left a zombie when it exits: no thread to wait for it ({e})");
    }
    waiting.is_ok()
}

/// The kill without a pidfd (not Linux, an old kernel, `SIGCHLD`
/// ignored), which the integration tests on Linux no longer reach: there
/// the pidfd signals first.
#[cfg(test)]
mod tests {
    use std::process::Command;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::process::{ChildProcess, spawn};

    /// A `sleep` child without a pidfd, whose runtime has run no task since
    /// it started (one thread, not driven).
    fn child_without_a_pidfd() -> (tokio::runtime::Runtime, ChildProcess) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut child = runtime.block_on(async {
            let mut command = Command::new("sleep");
            command.arg("30");
            spawn(command).unwrap().1
        });
        Arc::get_mut(&mut child.killer)
            .expect("the one handle")
            .killer
            .pidfd = Arc::new(None);
        (runtime, child)
    }

    /// Asserts that `pid` (a child of ours) dies within 10 s: gone, or a
    /// zombie. Kills one still running, so a failure leaves nothing.
    fn assert_dies(pid: u32, what: &str) {
        let state = || {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            stat.rsplit_once(") ")?.1.chars().next()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(state(), Some(s) if s != 'Z') && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let last = state();
        if matches!(last, Some(s) if s != 'Z') {
            // SAFETY: a plain syscall on a child of ours that still runs.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("{what}: the child still runs (state {last:?})");
        }
    }

    #[test]
    fn a_kill_after_the_runtime_dropped_the_reaping_task_reaches_the_child() {
        let (runtime, child) = child_without_a_pidfd();
        // The task is dropped with the child unreaped: a thread waits for
        // it, and the pid is the kill's to signal.
        drop(runtime);
        child.kill();
        assert_dies(child.id(), "killed after the runtime's end");
    }

    #[test]
    fn a_kill_the_reaping_task_never_read_is_sent_as_the_task_drops() {
        let (runtime, child) = child_without_a_pidfd();
        // Asked of the task, which does not run again.
        child.kill();
        drop(runtime);
        assert_dies(child.id(), "killed before the runtime's end");
    }
}
