//! Spawning with the blocking API: children that never shake hands or fill a
//! pipe first, panics around a spawn, reaping, and piped stdio.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::assert_exits;
use crate::common;
use crate::common::example;
use ipc_request::{Error, SessionBuilder, SessionConfig, blocking};
use serde_json::{Value, json};

/// A child that holds its channel open (it inherits it) and never uses
/// it, for a minute.
fn a_child_that_never_shakes_hands() -> Command {
    let mut command = Command::new("sleep");
    command.arg("60");
    command
}

#[test]
fn a_child_that_never_shakes_hands_is_killed_when_spawn_fails() {
    let config = SessionConfig {
        handshake_timeout: Duration::from_millis(300),
        ..SessionConfig::default()
    };
    // Its pid from the handle spawn_with_pipes shows before the handshake
    // (a pid file the child wrote raced the kill: under load, one was
    // found created but still empty).
    let mut pid = 0;
    let spawned = blocking::spawn_with_pipes(
        a_child_that_never_shakes_hands(),
        Default::default(),
        SessionBuilder::new().config(config),
        |child| pid = child.id(),
    );
    assert!(matches!(spawned, Err(Error::HandshakeTimeout(_))), "{spawned:?}");
    assert_ne!(pid, 0);
    // SAFETY: signal 0 only asks whether the process exists.
    let gone = unsafe { libc::kill(pid as i32, 0) } != 0;
    assert!(gone, "the child {pid} still runs (or was not reaped)");
}

/// A child that writes 70 kB to its piped stderr before it opens its
/// channel: more than a pipe holds, so it waits for a reader first.
fn a_child_that_logs_before_it_listens() -> Command {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"head -c 70000 /dev/zero >&2; exec "$0""#)
        .arg(example("blocking_peer"))
        .stderr(Stdio::piped());
    command
}

#[test]
fn pipes_taken_before_the_handshake_let_a_child_that_fills_one_first_shake_hands() {
    let drained = std::sync::Mutex::new(None);
    let (session, child) = blocking::spawn_with_pipes(
        a_child_that_logs_before_it_listens(),
        Default::default(),
        SessionBuilder::new(),
        |child| {
            let mut stderr = child.take_stderr().unwrap().expect("stderr is piped");
            *drained.lock().unwrap() = Some(std::thread::spawn(move || {
                std::io::copy(&mut stderr, &mut std::io::sink()).unwrap()
            }));
        },
    )
    .expect("the handshake, with stderr read meanwhile");
    session.close();
    assert_exits(&child);
    let drained = drained.into_inner().unwrap().unwrap().join().unwrap();
    assert!(drained >= 70_000, "{drained} bytes of stderr");
}

#[test]
fn pipes_left_for_after_the_handshake_leave_such_a_child_waiting() {
    // What `spawn_with`'s docs warn of: the pipes can only be taken once
    // the handshake is done, which this child never gets to.
    let config = SessionConfig {
        handshake_timeout: Duration::from_millis(500),
        ..SessionConfig::default()
    };
    let spawned = blocking::spawn_with(
        a_child_that_logs_before_it_listens(),
        Default::default(),
        SessionBuilder::new().config(config),
    );
    assert!(matches!(spawned, Err(Error::HandshakeTimeout(_))), "{spawned:?}");
}

#[test]
fn a_child_whose_take_pipes_panics_is_killed() {
    let mut pid = 0;
    let spawned = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        blocking::spawn_with_pipes(
            a_child_that_never_shakes_hands(),
            Default::default(),
            SessionBuilder::new(),
            |child| {
                pid = child.id();
                panic!("take_pipes gave up");
            },
        )
    }));
    assert!(spawned.is_err(), "the panic went by");
    assert_ne!(pid, 0);
    let state = common::process_state_once(pid, |state| state.is_none());
    assert_eq!(state, None, "the child {pid} was left running (or unreaped)");
}

#[test]
fn a_spawn_in_a_destructor_during_an_unrelated_panic_keeps_its_child() {
    // The kill that guards take_pipes must not take any unwinding for its
    // own panic (a review saw such a spawn's child killed).
    struct SpawnOnDrop(mpsc::Sender<Result<Value, String>>);
    impl Drop for SpawnOnDrop {
        fn drop(&mut self) {
            let outcome = blocking::spawn(Command::new(example("blocking_peer")), None)
                .and_then(|(session, _child)| session.request::<_, Value>(&json!({"op": "echo", "data": 1})))
                .map_err(|e| e.to_string());
            let _ = self.0.send(outcome);
        }
    }
    let (tx, rx) = mpsc::channel();
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _spawns_as_it_drops = SpawnOnDrop(tx);
        panic!("an unrelated failure");
    }));
    assert_eq!(rx.recv().unwrap(), Ok(json!(1)));
}

#[test]
fn a_child_dropped_without_waiting_is_still_reaped() {
    let peer = example("blocking_peer");
    // One that exits once its channel closes; one that then waits for its
    // stdin to close, which nobody took: dropping the handles closes it.
    let mut then_reads_stdin = Command::new("sh");
    then_reads_stdin
        .arg("-c")
        .arg(format!("'{}'; exec cat", peer.display()))
        .stdin(Stdio::piped());
    for command in [Command::new(&peer), then_reads_stdin] {
        let (session, child) = blocking::spawn(command, None).unwrap();
        let pid = child.id();
        // Nothing of ours waits for it any more: it must still be reaped,
        // not left a zombie.
        drop((session, child));
        let state = common::process_state_once(pid, |state| state.is_none());
        assert_eq!(state, None, "child {pid} is still there");
    }
}

#[test]
fn piped_stdio_is_there_for_the_taking_as_files() {
    let mut command = Command::new("sh");
    // A background job copies one line of stdin to stderr (through fd 5:
    // a background job's own stdin is /dev/null); the shell then becomes
    // the child that speaks the protocol.
    let script = format!(
        "exec 5<&0; head -n 1 <&5 >&2 & exec 5<&-; echo from-the-child; exec '{}'",
        example("blocking_peer").display()
    );
    command.arg("-c").arg(script);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let (session, child) = blocking::spawn(command, None).unwrap();
    let mut stdin = child.take_stdin().unwrap().expect("stdin is piped");
    assert!(child.take_stdin().unwrap().is_none(), "taken once");
    stdin.write_all(b"ping\n").unwrap();
    drop(stdin);
    let mut out = String::new();
    BufReader::new(child.take_stdout().unwrap().expect("stdout is piped"))
        .read_line(&mut out)
        .unwrap();
    assert_eq!(out, "from-the-child\n");
    let mut err = String::new();
    BufReader::new(child.take_stderr().unwrap().expect("stderr is piped"))
        .read_line(&mut err)
        .unwrap();
    assert_eq!(err, "ping\n");
    let got: Value = session.request(&json!({"op": "echo", "data": 1})).unwrap();
    assert_eq!(got, json!(1));
    drop(session);
    assert_exits(&child);
}
