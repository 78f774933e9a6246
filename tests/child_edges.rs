//! A child's edges the other process tests do not reach: a kill that the
//! runtime's end overtakes, a spawn outside a runtime, requests that meet
//! the broken pipe of a child that stopped reading and died, and a kill on
//! the drop of a child's handle.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{example, node, panic_site_of, process_state, process_state_once};
use ipc_request::{
    ChannelConfig, CloseReason, Error, SessionBuilder, SessionConfig, SpawnOptions, setup, spawn,
    spawn_session, spawn_session_with, spawn_with,
};
use serde_json::Value;

/// Kills and reaps `pid`, a child of this process that still runs: a
/// failed test leaves nothing.
fn kill_and_reap(pid: u32) {
    // SAFETY: plain syscalls on a child of this process, not yet reaped
    // (so its pid is not a reused one).
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0);
    }
}

/// The state of the child `pid` if it still runs after up to 10 s, which
/// it is then killed and reaped for (a failed test leaves nothing); `None`
/// once it is dead: a zombie, or gone if a runtime of this process reaped
/// it. Only a live one is ours to clean up: a pid already reaped may be
/// someone else's by now.
fn still_running(pid: u32) -> Option<char> {
    let state = process_state_once(pid, |state| !matches!(state, Some(s) if s != 'Z'));
    let running = matches!(state, Some(s) if s != 'Z');
    if running {
        kill_and_reap(pid);
    }
    state.filter(|_| running)
}

/// A child that holds its channel and never sets up a session, started on
/// a runtime of one thread, which runs no task of it again once this
/// returns (until it is driven).
fn a_child_on_an_idle_runtime() -> (tokio::runtime::Runtime, ipc_request::ChildProcess) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let child = runtime.block_on(async {
        let (_channel, child) = spawn(a_child_that_ignores_its_channel()).unwrap();
        child
    });
    (runtime, child)
}

#[test]
fn a_kill_overtaken_by_the_runtimes_end_still_kills_the_child() {
    let (runtime, child) = a_child_on_an_idle_runtime();
    let pid = child.id();
    // The task that sends the signal never gets to run: the runtime ends.
    child.kill();
    drop(runtime);
    // (Tokio hands a child dropped unreaped to whichever runtime of the
    // process next handles SIGCHLD: dead, it may be gone already.)
    let running = still_running(pid);
    assert!(
        running.is_none(),
        "the child still runs after kill() (state {running:?})"
    );
}

/// A process that exits right after a kill (or after dropping a
/// `spawn_session` call) gives its runtime no chance to run again: the
/// signal must not wait for the task that reaps the child.
#[cfg(target_os = "linux")]
#[test]
fn a_kill_takes_effect_without_the_runtime_running_again() {
    let (runtime, child) = a_child_on_an_idle_runtime();
    let pid = child.id();
    // The runtime runs no task from here until it is dropped below.
    child.kill();
    let running = still_running(pid);
    drop(runtime);
    assert!(
        running.is_none(),
        "the child still runs: the kill waited for the runtime (state {running:?})"
    );
}

#[test]
fn a_spawn_outside_a_runtime_panics_before_it_starts_anything() {
    // A duration no other test uses: the child to look for, if any.
    const MARK: &str = "31.4159";
    let call_line = line!() + 4;
    let panicked = panic_site_of(|| {
        let mut command = Command::new("sleep");
        command.arg(MARK);
        let _ = spawn(command);
    });
    let (site, message) = panicked.expect("spawn outside a runtime did not panic");
    // At the caller's line, with a message that names the call and what
    // it needs: not Tokio's, from inside the crate.
    assert_eq!(site, format!("tests/child_edges.rs:{call_line}"), "{message}");
    assert!(
        message.starts_with("ipc_request::spawn must be called inside a Tokio runtime"),
        "{message}"
    );
    let started = Command::new("pgrep")
        .args(["-f", &format!("^sleep {MARK}$")])
        .output()
        .unwrap();
    let pids = String::from_utf8_lossy(&started.stdout).to_string();
    for pid in pids.split_whitespace() {
        kill_and_reap(pid.parse().unwrap());
    }
    assert!(pids.trim().is_empty(), "a child was left running: {pids}");
}

/// The channel's constructors outside a runtime: this crate's message,
/// naming the call, at the caller's line (not Tokio's, from inside).
#[test]
fn a_channel_made_outside_a_runtime_panics_at_the_callers_line() {
    let call_line = line!() + 2;
    let panicked = panic_site_of(|| {
        let _ = ipc_request::Channel::pair(ChannelConfig::default());
    });
    let (site, message) = panicked.expect("Channel::pair outside a runtime did not panic");
    assert_eq!(site, format!("tests/child_edges.rs:{call_line}"), "{message}");
    assert!(
        message.starts_with("ipc_request::Channel::pair must be called inside a Tokio runtime"),
        "{message}"
    );
    let call_line = line!() + 3;
    let panicked = panic_site_of(|| {
        let (a, _b) = tokio::io::duplex(64);
        let _ = ipc_request::Channel::from_stream(a, ChannelConfig::default());
    });
    let (site, message) = panicked.expect("Channel::from_stream outside a runtime did not panic");
    assert_eq!(site, format!("tests/child_edges.rs:{call_line}"), "{message}");
    assert!(
        message.starts_with("ipc_request::Channel::from_stream must"),
        "{message}"
    );
}

/// A Node child that answers the handshake, then reads nothing for a while
/// (busy, as a stuck event loop is) and dies of SIGKILL.
const STALL_THEN_DIE: &str = r#"
const P = '_IPC_REQUEST/';
process.on('message', (m) => {
  if (m && m[P + 'HANDSHAKE_MSG_TYPE'] === P + 'HANDSHAKE_MSG_TYPE:REQUEST') {
    process.send({
      [P + 'HANDSHAKE_UID']: m[P + 'HANDSHAKE_UID'],
      [P + 'HANDSHAKE_MSG_TYPE']: P + 'HANDSHAKE_MSG_TYPE:RESPONSE',
    }, () => {
      const until = Date.now() + 600;
      while (Date.now() < until) {}
      process.kill(process.pid, 'SIGKILL');
    });
  }
});
"#;

/// A session with a child that stalls then dies, and `n` calls of
/// `call(session, 20 kB)` on their way when it does.
async fn calls_to_a_child_that_stalls_then_dies<T, F>(
    node: &std::path::Path,
    n: usize,
    call: impl Fn(ipc_request::Session, String) -> F,
) -> (
    ipc_request::Session,
    Vec<tokio::task::JoinHandle<Result<T, ipc_request::Error>>>,
)
where
    F: std::future::Future<Output = Result<T, ipc_request::Error>> + Send + 'static,
    T: Send + 'static,
{
    let mut command = Command::new(node);
    command.args(["-e", STALL_THEN_DIE]);
    let options = SpawnOptions {
        // Small, so that writes wait for a child that reads nothing.
        channel: ChannelConfig {
            write_queue_bytes: 64 * 1024,
            ..ChannelConfig::default()
        },
        ..SpawnOptions::default()
    };
    let (channel, _child) = spawn_with(command, options).unwrap();
    let session = setup(channel, None).await.unwrap();
    let payload = "x".repeat(20_000);
    let calls = (0..n)
        .map(|_| tokio::spawn(call(session.clone(), payload.clone())))
        .collect();
    (session, calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_sends_that_meet_the_broken_pipe_of_a_killed_child_say_it_was_killed() {
    let Some(node) = node() else { return };
    for round in 0..3 {
        let (_session, sends) =
            calls_to_a_child_that_stalls_then_dies(&node, 100, |session, payload| async move {
                session.send(&payload).await
            })
            .await;
        // Those written before the child died are sent (Ok); every other
        // one fails, and all for the same reason.
        let mut failed = 0;
        for send in sends {
            match tokio::time::timeout(Duration::from_secs(10), send)
                .await
                .unwrap()
                .unwrap()
            {
                Ok(()) => {}
                Err(ipc_request::Error::Closed(CloseReason::ChildExited(status))) => {
                    use std::os::unix::process::ExitStatusExt;
                    assert_eq!(status.signal(), Some(9), "round {round}");
                    failed += 1;
                }
                Err(other) => panic!("round {round}: {other:?}"),
            }
        }
        assert!(failed > 0, "round {round}: every send was written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_that_meet_the_broken_pipe_of_a_killed_child_say_it_was_killed() {
    let Some(node) = node() else { return };
    // Three rounds: before the fix, the request whose write met the broken
    // pipe said so in 4 of 5 rounds, while the others said SIGKILL.
    for round in 0..3 {
        let (session, calls) =
            calls_to_a_child_that_stalls_then_dies(&node, 100, |session, payload| async move {
                session.request::<_, Value>(&payload).await
            })
            .await;
        common::expect_all_failed_by_sigkill(calls, Duration::from_secs(10), &format!("round {round}")).await;
        assert!(
            matches!(session.close_reason(), Some(CloseReason::ChildExited(_))),
            "round {round}: {:?}",
            session.close_reason()
        );
    }
}

/// A child that outlives the runtime that started it must still be reaped
/// once it exits: nothing of Tokio's may run again to do it (it once
/// stayed a zombie). In a process of its own: another test's runtime
/// would reap it too (Tokio keeps such a child for whichever runtime next
/// handles `SIGCHLD`), and the test would pass without the fix.
#[test]
fn a_child_that_outlives_its_runtime_is_still_reaped() {
    if !common::in_a_child_process() {
        common::run_in_a_child_process("a_child_that_outlives_its_runtime_is_still_reaped", |_| {});
        return;
    }
    outlive_the_runtime("sleep", "0.3", Duration::ZERO);
}

#[test]
fn a_child_that_exited_unseen_when_its_runtime_ended_still_reports_its_status() {
    if !common::in_a_child_process() {
        common::run_in_a_child_process(
            "a_child_that_exited_unseen_when_its_runtime_ended_still_reports_its_status",
            |_| {},
        );
        return;
    }
    // Exited before the runtime ends, which never ran the task that waits
    // for it: the runtime's end collects the status.
    outlive_the_runtime("sleep", "0", Duration::from_millis(300));
}

/// Starts `program arg` on a runtime that ends `pause` later (its reaping
/// task never runs meanwhile); the child must then be reaped, and its
/// handle, on another runtime, learn that it exited with success.
fn outlive_the_runtime(program: &str, arg: &str, pause: Duration) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let child = runtime.block_on(async {
        let mut command = Command::new(program);
        command.arg(arg);
        let (_channel, child) = spawn(command).unwrap();
        child
    });
    std::thread::sleep(pause);
    let pid = child.id();
    drop(runtime);
    let state = process_state_once(pid, |state| state.is_none());
    if matches!(state, Some(s) if s != 'Z') {
        kill_and_reap(pid);
    }
    assert_eq!(state, None, "the child is still there after it exited");
    // And its handle still learns how it exited, on another runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = runtime
        .block_on(async { tokio::time::timeout(Duration::from_secs(10), child.wait()).await })
        .expect("wait() never returned");
    assert!(status.as_ref().is_ok_and(|s| s.success()), "{status:?}");
    assert!(child.try_status().is_some_and(|s| s.success()));
}

/// A child that starts and never listens (it holds its channel and sleeps),
/// started through `sh`, which writes its pid to `pid_file` and then execs
/// it: a test learns the pid even when no handle to the child comes back.
fn never_listening_child(pid_file: &std::path::Path) -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"echo $$ > "$0.tmp" && mv "$0.tmp" "$0" && exec "$1" --no-session"#)
        .arg(pid_file)
        .arg(example("rust_peer"));
    command
}

/// The pid `never_listening_child` wrote, once it is there.
async fn pid_written_to(pid_file: &std::path::Path) -> u32 {
    for _ in 0..1000 {
        if let Ok(text) = std::fs::read_to_string(pid_file) {
            return text.trim().parse().expect("a pid");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the child wrote no pid to {}", pid_file.display());
}

/// Asserts that the child `pid` is dead (gone or a zombie) within 10 s;
/// cleans up one that is not. On a thread: the tasks that kill and reap
/// the child run meanwhile.
async fn assert_killed(pid: u32, what: &str) {
    let running = tokio::task::spawn_blocking(move || still_running(pid))
        .await
        .unwrap();
    assert!(
        running.is_none(),
        "{what}: the child still runs (state {running:?})"
    );
}

fn pid_file(name: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("ipc-request-{}-{name}.pid", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_session_kills_a_child_whose_handshake_times_out() {
    let pid_file = pid_file("handshake-timeout");
    let config = SessionConfig {
        handshake_timeout: Duration::from_millis(300),
        ..SessionConfig::default()
    };
    let result = spawn_session_with(
        never_listening_child(&pid_file),
        SpawnOptions::default(),
        SessionBuilder::new().config(config),
    )
    .await;
    assert!(
        matches!(result, Err(Error::HandshakeTimeout(_))),
        "{:?}",
        result.map(|_| ())
    );
    let pid = pid_written_to(&pid_file).await;
    let _ = std::fs::remove_file(&pid_file);
    // Dead already: a caller that exits at once on the error leaves
    // nothing running.
    let state = process_state(pid);
    let alive = matches!(state, Some(s) if s != 'Z');
    if alive {
        kill_and_reap(pid);
    }
    assert!(
        !alive,
        "the child still runs as the error is returned (state {state:?})"
    );
}

/// Children whose `spawn_session` waits for their handshake while the
/// runtime shuts down: the runtime drops the calls (each asks for its
/// child's kill) and the tasks that reap the children, in any order.
fn children_of_calls_dropped_by_the_runtimes_end(runtime: tokio::runtime::Runtime, tag: &str) {
    let pid_files: Vec<_> = (0..16).map(|i| pid_file(&format!("{tag}-{i}"))).collect();
    for pid_file in &pid_files {
        let command = never_listening_child(pid_file);
        runtime.spawn(async move { spawn_session(command, None).await.map(|_| ()) });
    }
    let pids: Vec<u32> = runtime.block_on(async {
        let mut pids = Vec::new();
        for pid_file in &pid_files {
            pids.push(pid_written_to(pid_file).await);
            let _ = std::fs::remove_file(pid_file);
        }
        pids
    });
    drop(runtime);
    let running: Vec<(u32, char)> = pids
        .into_iter()
        .filter_map(|pid| Some((pid, still_running(pid)?)))
        .collect();
    assert!(running.is_empty(), "{tag}: children still running: {running:?}");
}

#[test]
fn spawn_session_cut_short_by_the_runtimes_end_kills_the_child() {
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    children_of_calls_dropped_by_the_runtimes_end(current, "current-thread");
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    children_of_calls_dropped_by_the_runtimes_end(multi, "multi-thread");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_session_dropped_before_the_handshake_ends_kills_the_child() {
    let pid_file = pid_file("dropped");
    let spawning = spawn_session(never_listening_child(&pid_file), None);
    // Its handshake would wait 10 s (the default); the caller gives up first.
    let result = tokio::time::timeout(Duration::from_millis(500), spawning).await;
    assert!(result.is_err(), "the handshake cannot succeed");
    let pid = pid_written_to(&pid_file).await;
    let _ = std::fs::remove_file(&pid_file);
    assert_killed(pid, "after the call was dropped").await;
}

#[tokio::test]
async fn spawn_session_hands_over_a_child_that_listens_and_leaves_it_running() {
    let (session, child) = spawn_session(Command::new(example("rust_peer")), None)
        .await
        .unwrap();
    let answer: Value = session
        .request(&serde_json::json!({"op": "echo", "data": "hello"}))
        .await
        .unwrap();
    assert_eq!(answer, "hello");
    assert_eq!(child.try_status(), None, "not killed");
    session.close();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("the child exits once its channel closes")
        .unwrap();
    assert!(status.success(), "the child ended with {status}, not on its own");
}

/// A child that holds its channel and never sets up a session: one that
/// would run on after its handles and the session are gone.
fn a_child_that_ignores_its_channel() -> Command {
    let mut command = Command::new(example("rust_peer"));
    command
        .arg("--no-session")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

#[tokio::test]
async fn kill_on_drop_kills_the_child_with_the_last_clone_of_its_handle() {
    let (channel, child) = spawn(a_child_that_ignores_its_channel()).unwrap();
    let pid = child.id();
    child.set_kill_on_drop(true);
    let clone = child.clone();
    drop(child);
    // A kill would have gone at once (through the pidfd on Linux) or at
    // the reaping task's next run, which this wait lets happen.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        clone.try_status(),
        None,
        "killed while a clone of its handle was held"
    );
    drop(clone);
    assert_eq!(
        still_running(pid),
        None,
        "the last clone's drop did not kill the child"
    );
    drop(channel);

    // Asked for, then taken back: the drop leaves it running.
    let (channel, child) = spawn(a_child_that_ignores_its_channel()).unwrap();
    let pid = child.id();
    child.set_kill_on_drop(true);
    child.set_kill_on_drop(false);
    drop(child);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        matches!(process_state(pid), Some(state) if state != 'Z'),
        "killed by a drop that was told not to"
    );
    kill_and_reap(pid);
    drop(channel);
}

#[test]
fn a_blocking_child_set_to_kill_on_drop_dies_with_its_handle_and_the_session_says_so() {
    let (session, child) =
        ipc_request::blocking::spawn(Command::new(example("blocking_peer")), None).unwrap();
    child.set_kill_on_drop(true);
    drop(child);
    let (closed, reason) = std::sync::mpsc::channel();
    std::thread::spawn(move || closed.send(session.closed()));
    let reason = reason
        .recv_timeout(Duration::from_secs(10))
        .expect("the session still runs: the child was not killed");
    match reason {
        CloseReason::ChildExited(status) => {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
        }
        other => panic!("the session ended with {other:?}, not the child's kill"),
    }
}

/// `wait_or_kill`: a child that exits as its channel closes is waited
/// for, not killed; one that ignores its channel is killed once the grace
/// has passed. Async and blocking.
#[tokio::test]
async fn wait_or_kill_waits_for_a_child_that_exits_and_kills_one_that_does_not() {
    use std::os::unix::process::ExitStatusExt;
    // Long: a child that exits as it should is never killed, however slow
    // the machine.
    const GENEROUS: Duration = Duration::from_secs(60);
    let (session, child) = spawn_session(Command::new(example("rust_peer")), None)
        .await
        .unwrap();
    session.shutdown().await;
    let status = child.wait_or_kill(GENEROUS).await.unwrap();
    assert!(status.success(), "{status}");

    let (channel, child) = spawn(a_child_that_ignores_its_channel()).unwrap();
    child.set_kill_on_drop(true); // should the test fail
    drop(channel);
    let status = tokio::time::timeout(GENEROUS, child.wait_or_kill(Duration::from_millis(100)))
        .await
        .expect("the child was not killed")
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");

    let blocking = tokio::task::spawn_blocking(|| {
        let (session, child) =
            ipc_request::blocking::spawn(Command::new(example("blocking_peer")), None).unwrap();
        session.shutdown();
        child.wait_or_kill(GENEROUS).unwrap()
    });
    let status = blocking.await.unwrap();
    assert!(status.success(), "{status}");
}
