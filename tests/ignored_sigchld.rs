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
}
