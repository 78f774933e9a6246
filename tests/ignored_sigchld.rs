//! A parent that ignores `SIGCHLD` (a disposition inherited across exec,
//! from a daemon or wrapper that started it): the kernel reaps its children
//! itself, and their exit status is lost. A process-wide setting, so this
//! test has its own binary.

use std::time::Duration;

/// How many pidfds of this process refer to `pid` (Linux shows a pidfd's
/// process in its fdinfo).
fn pidfds_on(pid: u32) -> usize {
    let wanted = format!("Pid:\t{pid}\n");
    std::fs::read_dir("/proc/self/fdinfo")
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
        .filter(|info| info.contains(&wanted))
        .count()
}

/// The pidfds opened for a `sleep` child started now.
async fn pidfds_for_a_child() -> usize {
    let mut command = std::process::Command::new("sleep");
    command.arg("30");
    let (channel, child) = ipc_request::spawn(command).unwrap();
    let count = pidfds_on(child.id());
    child.kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    drop(channel);
    count
}

// One test: the setting is process-wide, and its parts run in turn.
#[tokio::test]
async fn a_lost_exit_status_is_reported_as_lost_and_why() {
    let with_a_reaper = pidfds_for_a_child().await;
    // SAFETY: sets a signal disposition; nothing else in this process
    // relies on SIGCHLD's (its one test runs alone).
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    // The kernel reaps the children from now on, so a pid may be another
    // process's by the time a pidfd is opened for it: ours is not (Tokio
    // may still open its own).
    #[cfg(target_os = "linux")]
    assert_eq!(
        pidfds_for_a_child().await,
        with_a_reaper.saturating_sub(1),
        "this crate opened a pidfd for a child the kernel may have reaped"
    );
    let _ = with_a_reaper;
    let mut command = std::process::Command::new("sh");
    command.args(["-c", "exit 3"]);
    let (channel, child) = ipc_request::spawn(command).unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the wait for a child reaped by the kernel never ended");
    match waited {
        // Where Tokio waits with a SIGCHLD handler of its own (no pidfd),
        // that handler replaces the ignoring, and the status comes through.
        Ok(status) => assert_eq!(status.code(), Some(3)),
        Err(ipc_request::Error::Io(e)) => {
            let text = e.to_string();
            assert!(text.contains("SIGCHLD"), "the error does not say why: {text}");
        }
        Err(other) => panic!("{other:?}"),
    }
    drop(channel);
    programs_that_cannot_start_are_errors_not_panics().await;
}

/// The error of a spawn that must fail.
fn spawn_error(command: std::process::Command) -> std::io::Error {
    match ipc_request::spawn(command) {
        Err(ipc_request::Error::Spawn { error, .. }) => std::io::Error::new(error.kind(), error.to_string()),
        Err(other) => panic!("not a spawn error: {other:?}"),
        Ok((_, child)) => {
            child.kill();
            panic!("a program that cannot start was started");
        }
    }
}

/// std panics when an exec fails in a process that ignores `SIGCHLD` (its
/// wait for the failed child finds it reaped: rust-lang/rust#110317); the
/// spawn reports an error instead.
async fn programs_that_cannot_start_are_errors_not_panics() {
    use std::os::unix::fs::PermissionsExt;
    use std::process::Command;
    // Tokio may have put a SIGCHLD handler of its own in place meanwhile.
    // SAFETY: as above.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let missing = spawn_error(Command::new("ipc-request-test-no-such-program"));
    assert_eq!(missing.kind(), std::io::ErrorKind::NotFound, "{missing}");
    assert!(
        missing.to_string().contains("look-up"),
        "a guess not shown as one: {missing}"
    );

    let dir = std::env::temp_dir().join(format!("ipc-request-ignored-sigchld-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let not_executable = dir.join("not-executable");
    std::fs::write(&not_executable, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&not_executable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let denied = spawn_error(Command::new(&not_executable));
    assert_eq!(denied.kind(), std::io::ErrorKind::PermissionDenied, "{denied}");
    // Found on a PATH given to the command, not executable: as execvp says.
    let mut on_path = Command::new("not-executable");
    on_path.env("PATH", &dir);
    let denied = spawn_error(on_path);
    assert_eq!(denied.kind(), std::io::ErrorKind::PermissionDenied, "{denied}");
    // An executable file whose interpreter is missing: it looks startable
    // and fails only at the exec.
    let bad_interpreter = dir.join("bad-interpreter");
    std::fs::write(&bad_interpreter, "#!/ipc-request-test-no-such-interpreter\n").unwrap();
    std::fs::set_permissions(&bad_interpreter, std::fs::Permissions::from_mode(0o755)).unwrap();
    let lost = spawn_error(Command::new(&bad_interpreter));
    assert!(
        lost.to_string().contains("SIGCHLD"),
        "the error does not say why: {lost}"
    );
    // A directory to start in that is not there.
    let mut nowhere = Command::new("true");
    nowhere.current_dir(dir.join("no-such-dir"));
    let missing_dir = spawn_error(nowhere);
    assert_eq!(missing_dir.kind(), std::io::ErrorKind::NotFound, "{missing_dir}");
    let mut in_a_file = Command::new("true");
    in_a_file.current_dir(&not_executable);
    let not_a_dir = spawn_error(in_a_file);
    assert_eq!(not_a_dir.kind(), std::io::ErrorKind::NotADirectory, "{not_a_dir}");

    // A program no look-up from here finds, which starts all the same: the
    // look-up only explains a failure, it never decides (here the caller's
    // own pre_exec moves to the program's directory first).
    let starts = dir.join("starts");
    std::fs::write(&starts, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&starts, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir_c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    let mut moved = Command::new("./starts");
    // SAFETY: chdir is async-signal-safe, and the path was made before.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut moved, move || {
            if libc::chdir(dir_c.as_ptr()) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let (channel, child) = ipc_request::spawn(moved).expect("a program its pre_exec finds did not start");
    let ended = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    assert!(ended.is_ok(), "the child never ended");
    drop(channel);
    std::fs::remove_dir_all(&dir).unwrap();

    // A program that can start still does.
    let mut command = Command::new("true");
    command.env("PATH", "/usr/bin:/bin");
    let (channel, child) = ipc_request::spawn(command).expect("true did not start");
    let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
    drop(channel);
}
