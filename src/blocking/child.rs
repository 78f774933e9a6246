//! The blocking handle on a child started by [`spawn`](super::spawn).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use super::runtime::Runtime;
use crate::error::Error;

/// A child started by [`spawn`](super::spawn): [`crate::ChildProcess`], waited for here.
/// It keeps the session's runtime (which reaps the child) but not the
/// session open. Dropped without waiting, the child is still reaped once
/// it exits (see the [module docs](super)).
#[derive(Debug, Clone)]
pub struct ChildProcess {
    pub(super) child: crate::ChildProcess,
    pub(super) runtime: Arc<Runtime>,
}

impl ChildProcess {
    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL, unless the child has already been reaped: at once on
    /// Linux, elsewhere from the session's runtime (see
    /// [`crate::ChildProcess::kill`]).
    pub fn kill(&self) {
        self.child.kill()
    }

    /// Kills the child as the last clone of this handle is dropped, or not
    /// (the default): [`crate::ChildProcess::set_kill_on_drop`].
    pub fn set_kill_on_drop(&self, kill: bool) {
        self.child.set_kill_on_drop(kill)
    }

    /// The exit status, if the child has exited.
    pub fn try_status(&self) -> Option<ExitStatus> {
        self.child.try_status()
    }

    /// The child's stdin, if its command set it to
    /// [`Stdio::piped()`](std::process::Stdio::piped) and no clone of this
    /// took it yet, as a blocking file. Drop it to close the child's stdin.
    pub fn take_stdin(&self) -> Result<Option<File>, Error> {
        blocking_file(self.child.take_stdin().map(|pipe| pipe.into_owned_fd()))
    }

    /// The child's stdout, as [`take_stdin`](Self::take_stdin). Read it: a
    /// child whose pipe is full blocks until it is read.
    pub fn take_stdout(&self) -> Result<Option<File>, Error> {
        blocking_file(self.child.take_stdout().map(|pipe| pipe.into_owned_fd()))
    }

    /// The child's stderr, as [`take_stdout`](Self::take_stdout).
    pub fn take_stderr(&self) -> Result<Option<File>, Error> {
        blocking_file(self.child.take_stderr().map(|pipe| pipe.into_owned_fd()))
    }

    /// Waits for the child to exit; fails as
    /// [`crate::ChildProcess::wait`] does.
    pub fn wait(&self) -> Result<ExitStatus, Error> {
        self.runtime.block_on(self.child.wait())
    }

    /// Waits at most `timeout` for the child to exit: `Ok(None)` if it is
    /// still running then.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<Option<ExitStatus>, Error> {
        match self.runtime.block_on_timeout(self.child.wait(), timeout) {
            Some(status) => status.map(Some),
            None => Ok(None),
        }
    }

    /// Waits up to `grace` for the child to exit, then kills it and waits
    /// for that: [`crate::ChildProcess::wait_or_kill`]. Close the session
    /// first with [`Session::close`](super::Session::close) (not an
    /// unbounded `shutdown`: a stuck child that reads nothing would keep it
    /// waiting before the grace has begun).
    ///
    /// The grace is kept by this thread's clock, as the timeouts of the
    /// [module docs](super) are: the kill goes on time even while an async
    /// handler holds the runtime's worker (on Linux, through a pidfd;
    /// elsewhere, or with no pidfd, the signal too is sent from the
    /// runtime: see [`crate::ChildProcess::kill`]). The exit
    /// status then comes through that worker, so the call returns once it
    /// is free.
    pub fn wait_or_kill(&self, grace: Duration) -> Result<ExitStatus, Error> {
        if let Some(exited) = self.runtime.block_on_timeout(self.child.wait(), grace) {
            return exited;
        }
        self.child.kill();
        self.wait()
    }
}

/// A pipe taken out of the runtime (which makes it blocking again), as a
/// file.
fn blocking_file(pipe: Option<std::io::Result<OwnedFd>>) -> Result<Option<File>, Error> {
    pipe.transpose()
        .map(|fd| fd.map(File::from))
        .map_err(|e| Error::Io(Arc::new(e)))
}
