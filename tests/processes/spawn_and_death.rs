//! Spawning children, and children that die, exit early, never set up a
//! session, or die while another process holds their channel.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::{example, node};
use crate::{node_child, rust_child, start};
use ipc_request::{
    ChildProcess, CloseReason, Error, SessionBuilder, SessionConfig, SpawnOptions, spawn, spawn_with,
};
use serde_json::{Value, json};

#[tokio::test]
async fn a_child_killed_with_a_thousand_requests_pending_fails_them_all_at_once() {
    let (session, child) = start(rust_child(&[])).await;
    let calls: Vec<_> = (0..1000)
        .map(|i| {
            let session = session.clone();
            tokio::spawn(async move {
                session
                    .request::<_, Value>(&json!({"op":"sleep","ms":60_000,"data":i}))
                    .await
            })
        })
        .collect();
    while session.pending_requests() < 1000 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = Instant::now();
    child.kill();
    common::expect_all_failed_by_sigkill(calls, Duration::from_secs(5), "1000 pending").await;
    let elapsed = killed_at.elapsed();
    eprintln!("all 1000 failed {elapsed:?} after the kill");
    // The bound. Not a speed test: failing waits at most for the
    // exit grace (200 ms); measured ~4 ms. Only a hang could break it.
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");
    let err = session
        .request::<_, Value>(&json!({"op":"echo"}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SIGKILL"), "{err}");
}

#[tokio::test]
async fn a_child_that_exits_before_the_handshake_fails_it_at_once_with_its_code() {
    let (channel, _child) = spawn(rust_child(&["--exit-before-handshake", "7"])).unwrap();
    let err = handshake_fails_with_exit_code(channel, 7).await;
    assert!(err.to_string().contains("exited with code 7"), "{err}");
}

/// Sets up a session over `channel` with a handshake timeout of a minute,
/// and checks that it fails well before, because the child exited with
/// `code`.
async fn handshake_fails_with_exit_code(channel: ipc_request::Channel, code: i32) -> Error {
    let config = SessionConfig {
        handshake_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let started = Instant::now();
    let err = SessionBuilder::new()
        .config(config)
        .setup(channel)
        .await
        .unwrap_err();
    match &err {
        Error::Closed(CloseReason::ChildExited(status)) => assert_eq!(status.code(), Some(code)),
        other => panic!("{other:?}"),
    }
    // Not a speed test: only waiting for the timeout takes this long.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited for the timeout"
    );
    err
}

#[tokio::test]
async fn a_child_that_never_sets_up_a_session_times_the_handshake_out() {
    for command in [
        Some(rust_child(&["--no-session"])),
        node().map(|n| node_child(&n, &["--no-session"])),
    ]
    .into_iter()
    .flatten()
    {
        let (channel, child) = spawn(command).unwrap();
        let config = SessionConfig {
            handshake_timeout: Duration::from_millis(500),
            ..Default::default()
        };
        let err = SessionBuilder::new()
            .config(config)
            .setup(channel)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::HandshakeTimeout(_)), "{err}");
        // The failed setup closed our end: the child sees it and exits (the
        // Rust one sleeps, so it is killed).
        child.kill();
        child.wait().await.unwrap();
    }
}

#[tokio::test]
async fn what_a_dying_child_wrote_is_delivered_before_pending_requests_fail() {
    let Some(node) = node() else { return };
    let (session, _child) = start(node_child(&node, &[])).await;
    let mut messages = session.messages().unwrap();
    let waiting = {
        let session = session.clone();
        tokio::spawn(async move {
            session
                .request::<_, Value>(&json!({"op":"sleep","ms":60_000}))
                .await
        })
    };
    let dying = session
        .request::<_, Value>(&json!({"op":"plain_exit","messages":["last", "words"],"code":3}))
        .await
        .unwrap_err();
    match &dying {
        Error::Closed(CloseReason::ChildExited(status)) => assert_eq!(status.code(), Some(3)),
        other => panic!("{other:?}"),
    }
    assert!(dying.to_string().contains("exited with code 3"), "{dying}");
    assert!(matches!(
        waiting.await.unwrap(),
        Err(Error::Closed(CloseReason::ChildExited(_)))
    ));
    // The messages were read before the requests were failed, and are
    // still there to take; then the stream ends.
    assert_eq!(messages.recv().await.unwrap().unwrap(), json!("last"));
    assert_eq!(messages.recv().await.unwrap().unwrap(), json!("words"));
    assert!(messages.recv().await.is_none());
}

#[tokio::test]
async fn a_program_that_cannot_start_fails_the_spawn_whatever_the_channel_fd() {
    // std reports a failed exec through a pipe at the lowest free
    // descriptors; a channel placed on one of them must not hide the error.
    for fd in 3..=24 {
        let options = SpawnOptions {
            fd,
            ..Default::default()
        };
        let result = spawn_with(Command::new("/nonexistent/ipc-request-test-program"), options);
        let text = result.as_ref().err().map(ToString::to_string).unwrap_or_default();
        match result {
            Err(Error::Spawn { program, error }) => {
                assert_eq!(program, "/nonexistent/ipc-request-test-program", "fd {fd}");
                assert!(
                    text.contains("\"/nonexistent/ipc-request-test-program\""),
                    "fd {fd}: {text}"
                );
                assert_eq!(error.kind(), std::io::ErrorKind::NotFound, "fd {fd}");
                let spawn_error = Error::Spawn { program, error };
                assert!(
                    std::error::Error::source(&spawn_error).is_none(),
                    "the reason is in the message: a chain would repeat it"
                );
            }
            other => panic!("fd {fd}: {:?}", other.map(|_| ())),
        }
    }
}

/// std reports a failed chdir in the child with its errno alone, which
/// after the program's name blamed a program that is there: the error
/// names the directory. A missing program in a directory that is there
/// is still the program's error.
#[tokio::test]
async fn a_missing_current_dir_is_named_in_the_spawn_error() {
    let program = example("rust_peer");
    let missing = std::env::temp_dir().join(format!("ipc-request-no-such-dir-{}", std::process::id()));
    let mut command = Command::new(&program);
    command.current_dir(&missing);
    match spawn_with(command, SpawnOptions::default()) {
        Err(Error::Spawn { error, .. }) => {
            assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
            let text = error.to_string();
            assert!(
                text.contains(&format!("current_dir {}", missing.display())),
                "{text}"
            );
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
    let mut command = Command::new("ipc-request-no-such-program");
    command.current_dir(std::env::temp_dir());
    match spawn_with(command, SpawnOptions::default()) {
        Err(Error::Spawn { error, .. }) => {
            assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
            assert!(!error.to_string().contains("current_dir"), "{error}");
        }
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn piped_stdio_is_handed_over_and_a_full_stdout_does_not_block_the_child() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // More than a pipe holds (64 KiB), so the child blocks until it is read.
    let mut command = Command::new("sh");
    command
        .args(["-c", "head -c 200000 /dev/zero; cat; echo oops >&2"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let (_channel, child) = spawn(command).unwrap();
    let mut stdin = child.take_stdin().expect("stdin was piped");
    assert!(child.clone().take_stdin().is_none(), "each pipe is taken once");
    let mut stdout = child.take_stdout().expect("stdout was piped");
    let mut stderr = child.take_stderr().expect("stderr was piped");
    stdin.write_all(b"hello\n").await.unwrap();
    drop(stdin);
    let mut out = Vec::new();
    let mut err = String::new();
    let within = Duration::from_secs(10);
    tokio::time::timeout(within, async {
        stdout.read_to_end(&mut out).await.unwrap();
        stderr.read_to_string(&mut err).await.unwrap();
    })
    .await
    .expect("the child's output never ended");
    assert_eq!(out.len(), 200_006);
    assert!(out.ends_with(b"\0hello\n"), "stdin reached the child");
    assert_eq!(err, "oops\n");
    let status = tokio::time::timeout(within, child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
}

/// `command`, run by a shell that first starts a background job holding
/// the channel's fd for a minute (as a wrapper script may): the child's end
/// of the channel then outlives the child. Its stdout is piped; the job's
/// pid is its first line (see [`JobHoldingTheChannel`]).
fn with_a_job_holding_the_channel(command: Option<&Command>) -> Command {
    let mut wrapped = Command::new("sh");
    wrapped.stdout(std::process::Stdio::piped()).arg("-c");
    match command {
        Some(command) => wrapped
            .arg("sleep 60 & echo $!; exec \"$0\" \"$@\"")
            .arg(command.get_program())
            .args(command.get_args()),
        None => wrapped.arg("sleep 60 & echo $!; exit 3"),
    };
    wrapped
}

/// The background job of [`with_a_job_holding_the_channel`], killed on drop;
/// holds the child's stdout, so that what it prints has somewhere to go.
struct JobHoldingTheChannel {
    pid: i32,
    _stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
}

impl JobHoldingTheChannel {
    async fn of(child: &ChildProcess) -> JobHoldingTheChannel {
        use tokio::io::AsyncBufReadExt;
        let mut stdout = tokio::io::BufReader::new(child.take_stdout().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).await.unwrap();
        let pid = line.trim().parse().expect("the job's pid");
        JobHoldingTheChannel { pid, _stdout: stdout }
    }
}

impl Drop for JobHoldingTheChannel {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of our own grandchild, still running
        // (it sleeps for a minute) and never reaped by anyone else.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }
}

#[tokio::test]
async fn a_child_that_dies_while_another_process_holds_its_channel_ends_the_session() {
    // Before the handshake: it fails with the child's code, not a timeout.
    let (channel, child) = spawn(with_a_job_holding_the_channel(None)).unwrap();
    let _job = JobHoldingTheChannel::of(&child).await;
    handshake_fails_with_exit_code(channel, 3).await;

    // After it: pending requests fail with how the child ended.
    let (channel, child) = spawn(with_a_job_holding_the_channel(Some(&rust_child(&[])))).unwrap();
    let _job = JobHoldingTheChannel::of(&child).await;
    let session = SessionBuilder::new().setup(channel).await.unwrap();
    let pending = tokio::spawn({
        let session = session.clone();
        async move {
            session
                .request::<_, Value>(&json!({"op":"sleep","ms":60_000}))
                .await
        }
    });
    while session.pending_requests() < 1 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill();
    let result = tokio::time::timeout(Duration::from_secs(30), pending)
        .await
        .expect("the request hung after the child died")
        .unwrap();
    match result {
        Err(Error::Closed(CloseReason::ChildExited(status))) => {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(9));
        }
        other => panic!("{other:?}"),
    }
}

/// A parent whose stdio is closed (a daemon's) gets the socket pair at
/// descriptors 0 and 1. std sets up the child's stdio before the channel
/// is moved to fd 3, so the child's end at 1 was replaced first: the child
/// got `/dev/null`, or its own stdout pipe, as its channel, and the
/// handshake failed as if the child had. In a process of its own, as
/// closing this one's stdio would take the test harness's.
#[test]
fn a_parent_with_its_stdio_closed_still_gives_the_child_its_channel() {
    let name = "spawn_and_death::a_parent_with_its_stdio_closed_still_gives_the_child_its_channel";
    if !common::in_a_child_process() {
        common::run_in_a_child_process(name, |_| {});
        return;
    }
    use std::process::Stdio;
    // Before stdio closes: the runtime's own descriptors, and the build of
    // the example if it needs one, must not take 0 to 2.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let program = example("rust_peer");
    // What each spawn left at 0 to 2, while its child runs.
    let stdio_now = || (0..3).map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok());
    let mut pidfds_at_stdio = Vec::new();
    let run = || {
        runtime.block_on(async {
            let mut outcomes = Vec::new();
            for stdio in ["null", "piped", "inherit"] {
                let mut command = Command::new(&program);
                let pick = || match stdio {
                    "null" => Stdio::null(),
                    "piped" => Stdio::piped(),
                    _ => Stdio::inherit(),
                };
                command.stdin(pick()).stdout(pick()).stderr(pick());
                let outcome = async {
                    let (session, child) = ipc_request::spawn_session(command, None)
                        .await
                        .map_err(|e| format!("setup: {e}"))?;
                    let pidfd = std::path::Path::new("anon_inode:[pidfd]");
                    pidfds_at_stdio.push(stdio_now().filter(|link| link.as_deref() == Some(pidfd)).count());
                    let answer = session.request(&json!({"op": "echo", "data": stdio})).await;
                    session.close();
                    let _ = child.wait_or_kill(Duration::from_secs(10)).await;
                    answer.map_err(|e| format!("request: {e}"))
                };
                outcomes.push((stdio, outcome.await));
            }
            outcomes
        })
    };
    let outcomes: Vec<(&str, Result<Value, String>)> = common::with_descriptors_closed(&[0, 1, 2], run);
    for (stdio, outcome) in outcomes {
        assert_eq!(outcome, Ok(json!(stdio)), "the child's stdio {stdio}");
    }
    // Our pidfd for the child is kept off them too (at 1, a `println!`
    // panics, where with 1 closed std drops the text); Tokio's own, which
    // it opens for the same child, is not ours to move.
    assert!(
        pidfds_at_stdio.iter().all(|&n| n <= 1),
        "pidfds at 0 to 2: {pidfds_at_stdio:?}"
    );
}
