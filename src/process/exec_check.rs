//! Starting the child's program in a process that ignores `SIGCHLD`.
//!
//! std starts a child with a `pre_exec` closure (ours puts the channel at
//! its fd) by fork and exec, and learns of a failed exec through a pipe;
//! it then reaps the failed child with `waitpid`. In a process that
//! ignores `SIGCHLD` (or sets `SA_NOCLDWAIT`) the kernel has reaped it
//! already, the wait fails with `ECHILD`, and std panics ("wait() should
//! either return Ok or panic", rust-lang/rust#110317) where it would have
//! returned the exec's error. A daemon or wrapper that ignores `SIGCHLD`
//! passes that on across exec, so a program of ours can be in such a
//! process without knowing.
//!
//! There, this module looks for the program first, as `execvp` will, and
//! returns the error the exec would give (not found, not executable); a
//! program found that still fails to start (a script whose interpreter is
//! missing, say) is caught as std's panic and reported as an error that
//! says why its cause is lost. std's panic message is printed all the
//! same, by the panic hook, and with `panic = "abort"` the process aborts:
//! the look-up first is what makes the common mistakes plain errors.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Command;

use super::reaping::the_kernel_reaps_our_children;

/// `execvp`'s search path when `PATH` is unset (glibc's and musl's).
const DEFAULT_PATH: &str = "/bin:/usr/bin";

/// Starts `command` as Tokio does, but with a failed exec reported as an
/// error in a process that ignores `SIGCHLD` too (see the module docs).
pub(super) fn spawn(command: Command) -> io::Result<tokio::process::Child> {
    if !the_kernel_reaps_our_children() {
        return tokio::process::Command::from(command).spawn();
    }
    look_up(&command)?;
    // Nothing is left half-done by the panic: the child is gone (reaped by
    // the kernel), and the pipes std made for it close as it unwinds.
    catch_unwind(AssertUnwindSafe(|| {
        tokio::process::Command::from(command).spawn()
    }))
    .unwrap_or_else(|_| {
        Err(io::Error::other(
            "the program could not be executed, and why is lost: std cannot \
             report a failed exec in a process that ignores SIGCHLD \
             (rust-lang/rust#110317)",
        ))
    })
}

/// The error `execvp` would give for `command`'s program, if it can tell:
/// not found, or found but not an executable file. `Ok` where the exec may
/// succeed.
fn look_up(command: &Command) -> io::Result<()> {
    let program = command.get_program();
    // In the child, the exec comes after the change of directory: relative
    // names resolve against the command's directory.
    let in_child_dir = |path: &Path| match command.get_current_dir() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    };
    if program.as_bytes().contains(&b'/') {
        return executable(&in_child_dir(Path::new(program)));
    }
    // `execvp` searches the child's PATH: the command's own if it sets or
    // removes one (a command that clears its whole environment is not
    // seen here; it is the rare case the catch covers).
    let search: OsString = match command.get_envs().find(|(key, _)| *key == OsStr::new("PATH")) {
        Some((_, value)) => value.map_or_else(|| DEFAULT_PATH.into(), OsStr::to_owned),
        None => std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
    };
    // As `execvp`: a candidate that is there but not executable is passed
    // over, and its EACCES is the error if none is found.
    let mut denied = None;
    for dir in std::env::split_paths(&search) {
        // An empty entry is the current directory.
        let dir = if dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            dir
        };
        match executable(&in_child_dir(&dir.join(program))) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => denied = Some(e),
            Err(_) => {}
        }
    }
    Err(denied.unwrap_or_else(|| io::Error::from_raw_os_error(libc::ENOENT)))
}

/// `Ok` if `path` is a file this process may execute; the error of an exec
/// of it otherwise (a directory, as exec says, is EACCES).
fn executable(path: &Path) -> io::Result<()> {
    if !std::fs::metadata(path)?.is_file() {
        return Err(io::Error::from_raw_os_error(libc::EACCES));
    }
    // A path with a NUL byte: std refuses it itself, with an error of its own.
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else {
        return Ok(());
    };
    // SAFETY: access reads a NUL-terminated path we own.
    if unsafe { libc::access(c_path.as_ptr(), libc::X_OK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
