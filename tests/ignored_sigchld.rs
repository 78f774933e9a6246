//! A parent that ignores `SIGCHLD` (a disposition inherited across exec,
//! from a daemon or wrapper that started it): the kernel reaps its children
//! itself, and their exit status is lost. A process-wide setting, so this
//! test has its own binary.

use std::time::Duration;

#[tokio::test]
async fn a_lost_exit_status_is_reported_as_lost_and_why() {
    // SAFETY: sets a signal disposition; nothing else in this process
    // relies on SIGCHLD's (its one test runs alone).
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
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
