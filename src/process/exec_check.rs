//! Starting the child's program, with a failed exec reported as an error
//! in a process that ignores `SIGCHLD` too.
//!
//! std starts a child with a `pre_exec` closure (ours puts the channel at
//! its fd) by fork and exec, and learns of a failed exec through a pipe;
//! it then reaps the failed child with `waitpid`. In a process that
//! ignores `SIGCHLD` (or sets `SA_NOCLDWAIT`) the kernel has reaped it
//! already, the wait fails with `ECHILD`, and std panics ("wait() should
//! either return Ok or panic", rust-lang/rust#110317) where it would have
//! returned the exec's error. A daemon or wrapper that ignores `SIGCHLD`
//! passes that on across exec, so a program of ours can be in such a
//! process without knowing (and another thread may switch to it at any
//! time).
//!
//! So that panic, and only it (told by its message), is caught and made
//! an error; any other panic goes on as it came. The program is then
//! looked up as `execvp` looks for it, to say why it did not start (not
//! found, not executable) where std cannot. The look-up only explains a
//! failure that happened; it never decides whether to try: a look-up
//! before the spawn, tried first, refused programs that would have
//! started, as it cannot see a command's `env_clear`, a caller's own
//! `pre_exec` (a chdir, a chroot), or every rule of the C library. The
//! cost: std's panic goes through the panic hook before the error is
//! returned (its message on stderr, a backtrace if `RUST_BACKTRACE` is
//! set, a crash reporter's hook sees it), and with `panic = "abort"` (or a
//! hook that aborts) such a failure aborts the process.
//!
//! Should std's message change, its panic goes on as it came: as before
//! this module, not a wrong error.

use std::any::Any;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;

/// std's panic when the wait for a child whose exec failed finds no child.
const LOST_EXEC_PANIC: &str = "wait() should either return Ok or panic";

/// `execvp`'s search path when `PATH` is unset.
#[cfg(not(target_env = "musl"))]
const DEFAULT_PATH: &str = "/bin:/usr/bin";
#[cfg(target_env = "musl")]
const DEFAULT_PATH: &str = "/usr/local/bin:/bin:/usr/bin";

/// Starts `command` as Tokio does, but with a failed exec reported as an
/// error in a process that ignores `SIGCHLD` too (see the module docs).
pub(super) fn spawn(command: Command) -> io::Result<tokio::process::Child> {
    let mut command = tokio::process::Command::from(command);
    // Only the spawn is inside the catch: the command (with the caller's
    // pre_exec closures) is dropped outside it. Nothing is left half-done
    // by std's panic: the child is gone (reaped by the kernel), std has let
    // go of its locks, and the pipes it made for the child close as it
    // unwinds. It cannot come from the child's side of the fork, where std
    // aborts on a panic.
    match catch_unwind(AssertUnwindSafe(|| command.spawn())) {
        Ok(Err(e)) => Err(LookUp::of(command.as_std()).name_a_missing_dir(e)),
        Ok(spawned) => spawned,
        Err(panic) if is_lost_exec_panic(&*panic) => Err(LookUp::of(command.as_std()).why_not_started()),
        Err(panic) => resume_unwind(panic),
    }
}

fn is_lost_exec_panic(panic: &(dyn Any + Send)) -> bool {
    let text = panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str));
    text.is_some_and(|text| text.contains(LOST_EXEC_PANIC))
}

/// What `execvp` in the child will search, as far as the command shows it.
struct LookUp {
    program: OsString,
    current_dir: Option<PathBuf>,
    /// The command's own `PATH`: set, or removed (`Some(None)`).
    path: Option<Option<OsString>>,
}

impl LookUp {
    fn of(command: &Command) -> LookUp {
        LookUp {
            program: command.get_program().to_owned(),
            current_dir: command.get_current_dir().map(Path::to_path_buf),
            path: command
                .get_envs()
                .find(|(key, _)| *key == OsStr::new("PATH"))
                .map(|(_, value)| value.map(OsStr::to_owned)),
        }
    }

    /// The error for a program that did not start: of the kind the exec's
    /// (or the chdir's) would be, as far as a look-up can tell it, saying
    /// it is the look-up's finding (a guess: the failure may have been a
    /// pre_exec step's); else one saying the cause is lost.
    fn why_not_started(&self) -> io::Error {
        let lost = "std cannot report why in a process that ignores SIGCHLD \
                    (rust-lang/rust#110317)";
        // The chdir comes first in the child.
        if let Some((dir, e)) = self.dir_error() {
            return io::Error::new(
                e.kind(),
                format!("current_dir {}: {e}, as a look-up finds: {lost}", dir.display()),
            );
        }
        match self.executable_found() {
            Err(e) => io::Error::new(e.kind(), format!("{e}, as a look-up finds the program: {lost}")),
            Ok(()) => io::Error::other(format!(
                "the child could not be started (its exec, or a pre_exec step, failed): {lost}"
            )),
        }
    }

    /// The command's `current_dir`, and why the child cannot change to it
    /// (it is missing, or not a directory); `None` if it has none, or it
    /// is there.
    fn dir_error(&self) -> Option<(&Path, io::Error)> {
        let dir = self.current_dir.as_deref()?;
        match std::fs::metadata(dir) {
            Err(e) => Some((dir, e)),
            Ok(meta) if !meta.is_dir() => Some((dir, io::Error::from_raw_os_error(libc::ENOTDIR))),
            Ok(_) => None,
        }
    }

    /// `error`, std's for a child that did not start, naming the
    /// command's `current_dir` if that is missing or not a directory: std
    /// reports the child's failed chdir with its errno alone, and
    /// "No such file or directory" after the program's name blames a
    /// program that is there. The chdir comes before the exec, so a
    /// directory that is not there is what failed (unless it was made or
    /// removed meanwhile) if the errno is the one a look-up at the
    /// directory gets. The kind is kept; the errno is in the text.
    fn name_a_missing_dir(&self, error: io::Error) -> io::Error {
        match self.dir_error() {
            Some((dir, found)) if found.raw_os_error() == error.raw_os_error() => {
                io::Error::new(error.kind(), format!("current_dir {}: {error}", dir.display()))
            }
            _ => error,
        }
    }

    /// `Ok` if the program is there and executable, as `execvp` would find
    /// it; the error it would give otherwise.
    fn executable_found(&self) -> io::Result<()> {
        let program = Path::new(&self.program);
        if self.program.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        // In the child, the exec comes after the change of directory:
        // relative names resolve against the command's directory.
        let in_child_dir = |path: &Path| match &self.current_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path.to_path_buf(),
        };
        if self.program.as_bytes().contains(&b'/') {
            return executable(&in_child_dir(program));
        }
        // `execvp` searches the child's PATH: the command's own if it sets
        // or removes one, else ours.
        let search: OsString = match &self.path {
            Some(value) => value.clone().unwrap_or_else(|| DEFAULT_PATH.into()),
            None => std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        };
        // As glibc's `execvp`: a candidate that is not there is passed over,
        // as is one there but not executable, whose EACCES is the error if
        // none is found; any other error (a symlink loop, a name too long)
        // ends the search.
        let mut denied = None;
        let mut last = io::Error::from_raw_os_error(libc::ENOENT);
        for dir in std::env::split_paths(&search) {
            // An empty entry is the current directory.
            let dir = if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            };
            match executable(&in_child_dir(&dir.join(program))) {
                Ok(()) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EACCES) => denied = Some(e),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ENOENT | libc::ENOTDIR | libc::ESTALE | libc::ENODEV | libc::ETIMEDOUT)
                    ) =>
                {
                    last = e
                }
                Err(e) => return Err(e),
            }
        }
        // Else the last one's error, as glibc's errno is then.
        Err(denied.unwrap_or(last))
    }
}

/// `Ok` if `path` is a file this process may execute; the error of an exec
/// of it otherwise (a directory, as exec says, is EACCES).
fn executable(path: &Path) -> io::Result<()> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(io::Error::from_raw_os_error(libc::EACCES));
    }
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::from)?;
    // With the effective ids, as the exec checks (plain `access` uses the
    // real ones, which differ in a setuid program). Android's libc has no
    // such flag: the real ones there.
    #[cfg(not(target_os = "android"))]
    let effective_ids = libc::AT_EACCESS;
    #[cfg(target_os = "android")]
    let effective_ids = 0;
    // SAFETY: faccessat reads a NUL-terminated path we own.
    if unsafe { libc::faccessat(libc::AT_FDCWD, c_path.as_ptr(), libc::X_OK, effective_ids) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_stds_lost_exec_panic_is_taken_for_one() {
        let payload = |f: fn()| catch_unwind(f).unwrap_err();
        assert!(is_lost_exec_panic(&*payload(|| panic!(
            "wait() should either return Ok or panic"
        ))));
        let formatted = || panic!("{}: {}", "at unix.rs", LOST_EXEC_PANIC);
        assert!(is_lost_exec_panic(&*payload(formatted)));
        assert!(!is_lost_exec_panic(&*payload(|| panic!(
            "a pre_exec capture's drop"
        ))));
        assert!(!is_lost_exec_panic(&*payload(|| std::panic::panic_any(7))));
    }
}
