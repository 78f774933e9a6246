//! Storms across real processes: a parent starts a real child (the
//! `rust_peer` example, or `tests/js/peer.js` under Node, with the
//! extensions or as an ipc-request 1.0 peer), fires concurrent requests of
//! random kinds, sizes and deadlines at it (some the child answers by
//! calling the parent back, some it never answers), gives up on some, and
//! in most rounds the round ends mid-storm: the child is killed, exits
//! with a code of its own, or the parent closes. After each round: every
//! call ended, each with its own answer or with an error that fits what
//! happened; the session's close reason and the child's exit status say
//! how the child ended; no descriptor is left open. A round's setup comes
//! from its seed, so a failure is rerun with `PSTORM_ONE=<seed>`.
//!
//! `cargo test` runs a few rounds; more with, for example,
//! `PSTORM_ROUNDS=500 PSTORM_SECS=600 cargo test --release --test process_storm -- --nocapture`.
//! Settings: `PSTORM_SEED` (first seed), `PSTORM_ROUNDS`, `PSTORM_SECS`
//! (time box), `PSTORM_ONE` (one seed).
//!
//! The bounds on time only catch what hangs: they are far above what a
//! round needs on a loaded machine.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::rng::Rng;
use common::{example, js_peer, node};
use ipc_request::{CloseReason, Error, Request, Session, handler_fn, spawn_session};
use serde_json::{Value, json};

/// Longer than any call of a round may take, dead child or not.
const HANG: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Child {
    Rust,
    Node,
    /// `peer.js` advertising no extensions: failures come back as answers,
    /// and no cancel is sent.
    NodeOneDotZero,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Ending {
    /// The parent closes once every call has ended.
    Quiet,
    /// `ChildProcess::kill` mid-storm.
    Killed,
    /// The child exits with this code mid-storm, asked to by a request.
    Exits(i32),
    /// The parent closes mid-storm.
    ParentCloses,
}

#[derive(Debug)]
struct RoundSetup {
    child: Child,
    ending: Ending,
    /// When the ending comes, after the first call starts.
    ending_after: Duration,
    calls: usize,
}

fn setup_for(seed: u64, with_node: bool) -> RoundSetup {
    let mut rng = Rng::new(seed);
    let child = match rng.below(if with_node { 4 } else { 2 }) {
        0 | 1 => Child::Rust,
        2 => Child::Node,
        _ => Child::NodeOneDotZero,
    };
    let ending = match rng.below(4) {
        0 => Ending::Quiet,
        1 => Ending::Killed,
        2 => Ending::Exits(rng.pick(&[0, 3, 77])),
        _ => Ending::ParentCloses,
    };
    RoundSetup {
        child,
        ending,
        ending_after: Duration::from_millis(rng.pick(&[0, 2, 10, 40, 150])),
        calls: 5 + rng.below(150) as usize,
    }
}

/// One call of a storm: what it asks, how long its caller waits, and what
/// it must be answered with if it is answered.
#[derive(Debug, Clone)]
struct Call {
    payload: Value,
    deadline: Option<Duration>,
    /// The caller drops the call after this long.
    gives_up_after: Option<Duration>,
    outcome: Expected,
}

#[derive(Debug, Clone)]
enum Expected {
    Answer(Value),
    /// Fails with a remote error of this name (a peer with `error`).
    Fails(&'static str),
    /// Answered with an error object of this name: how a peer without
    /// `error` (1.0) answers a failure.
    AnsweredWithError(&'static str),
    /// Never answered: only a deadline, the caller's giving up or the
    /// round's end ends it.
    Never,
}

fn make_call(rng: &mut Rng, id: u64, child: Child) -> Call {
    let data = "d".repeat(match rng.below(20) {
        0 => rng.below(300_000),
        1..=3 => rng.below(20_000),
        _ => rng.below(200),
    } as usize);
    let deadline = (rng.below(4) == 0).then(|| Duration::from_millis(rng.pick(&[1, 10, 100, 1000])));
    let gives_up_after = (rng.below(8) == 0).then(|| Duration::from_millis(rng.pick(&[0, 1, 20, 100])));
    let mut call = Call {
        payload: Value::Null,
        deadline,
        gives_up_after,
        outcome: Expected::Never,
    };
    match rng.below(10) {
        0..=3 => {
            call.payload = json!({"op": "echo", "data": [id, data]});
            call.outcome = Expected::Answer(json!([id, data]));
        }
        4 | 5 => {
            let ms = rng.pick(&[0, 5, 50, 200]);
            call.payload = json!({"op": "sleep", "ms": ms, "data": id});
            call.outcome = Expected::Answer(json!(id));
        }
        6 => {
            let message = format!("failure {id}");
            call.payload = json!({"op": "fail", "name": "StormError", "message": message});
            call.outcome = if child == Child::NodeOneDotZero {
                Expected::AnsweredWithError("StormError")
            } else {
                Expected::Fails("StormError")
            };
        }
        7 | 8 => {
            call.payload = json!({"op": "call", "data": {"back": id}});
            call.outcome = Expected::Answer(json!({"got": {"back": id}}));
        }
        _ => {
            call.payload = json!({"op": "wait_cancel", "key": id.to_string()});
            // Something must end it when the round ends quietly.
            if call.deadline.is_none() && call.gives_up_after.is_none() {
                call.deadline = Some(Duration::from_millis(rng.pick(&[5, 50, 300])));
            }
        }
    }
    call
}

/// How one call ended.
#[derive(Debug)]
enum Ended {
    Answered(Result<Value, Error>),
    GaveUp,
    Hung,
}

async fn run_call(session: Session, call: Call, start_after: Duration) -> Ended {
    tokio::time::sleep(start_after).await;
    let request = async {
        match call.deadline {
            Some(deadline) => session.request_timeout::<_, Value>(&call.payload, deadline).await,
            None => session.request::<_, Value>(&call.payload).await,
        }
    };
    let gives_up = async {
        match call.gives_up_after {
            Some(after) => tokio::time::sleep(after).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        answered = request => Ended::Answered(answered),
        () = gives_up => Ended::GaveUp,
        () = tokio::time::sleep(HANG) => Ended::Hung,
    }
}

/// The close reason a round's ending gives, if the session has ended by it:
/// the child's exit status when it died on its own, else our close.
fn reason_fits(ending: Ending, reason: &CloseReason) -> bool {
    match (ending, reason) {
        (Ending::Killed | Ending::Exits(_), CloseReason::ChildExited(status)) => status_fits(ending, *status),
        (Ending::ParentCloses | Ending::Quiet, CloseReason::Local) => true,
        _ => false,
    }
}

/// The exit status a round's ending gives the child.
fn status_fits(ending: Ending, status: ExitStatus) -> bool {
    match ending {
        Ending::Killed => status.signal() == Some(libc::SIGKILL),
        Ending::Exits(code) => status.code() == Some(code),
        Ending::ParentCloses | Ending::Quiet => status.success(),
    }
}

/// Why a call's end does not fit its round, if it does not.
fn misfit(call: &Call, ended: &Ended, setup: &RoundSetup) -> Option<String> {
    let answered = match ended {
        Ended::Hung => return Some("did not end".into()),
        Ended::GaveUp if call.gives_up_after.is_some() => return None,
        Ended::GaveUp => return Some("gave up without being asked to".into()),
        Ended::Answered(answered) => answered,
    };
    let fits = match (answered, &call.outcome) {
        (Ok(value), Expected::Answer(expected)) => value == expected,
        (Ok(value), Expected::AnsweredWithError(name)) => value["name"] == *name,
        (Err(Error::Remote(e)), Expected::Fails(name)) => e.name == *name,
        (Err(Error::Timeout(_)), _) => call.deadline.is_some(),
        // The round's end. A deadline that passes between the child's end
        // of stream and its exit status says the peer closed (see
        // `Shared::deadline_error`); without a deadline, the call waits
        // for the status.
        (Err(Error::Closed(reason)), _) => {
            reason_fits(setup.ending, reason)
                || (call.deadline.is_some()
                    && matches!(reason, CloseReason::PeerClosed)
                    && matches!(setup.ending, Ending::Killed | Ending::Exits(_)))
        }
        _ => false,
    };
    (!fits).then(|| format!("ended with {answered:?}"))
}

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count())
}

fn command_for(child: Child) -> Command {
    let mut command = match child {
        Child::Rust => Command::new(example("rust_peer")),
        Child::Node | Child::NodeOneDotZero => {
            let mut command = Command::new("node");
            command.arg(js_peer()).arg("child");
            if child == Child::NodeOneDotZero {
                command.arg("--v1");
            }
            command
        }
    };
    command.stdout(Stdio::null());
    command
}

/// One round; what did not fit, if anything, and how many calls it made.
async fn round(seed: u64, setup: &RoundSetup) -> Result<usize, String> {
    let mut rng = Rng::new(seed ^ 0x5eed);
    // The parent answers the child's calls back.
    let echo_back = handler_fn(|request: Request| async move { request.payload::<Value>() });
    let (session, child) = spawn_session(command_for(setup.child), echo_back)
        .await
        .map_err(|e| format!("spawn_session: {e}"))?;
    let calls: Vec<Call> = (0..setup.calls as u64)
        .map(|id| make_call(&mut rng, id, setup.child))
        .collect();
    let started = Instant::now();
    let tasks: Vec<_> = calls
        .iter()
        .map(|call| {
            let start_after = Duration::from_millis(rng.pick(&[0, 0, 0, 1, 30]));
            tokio::spawn(run_call(session.clone(), call.clone(), start_after))
        })
        .collect();
    let ending_at = started + setup.ending_after;
    tokio::time::sleep_until(ending_at.into()).await;
    match setup.ending {
        Ending::Quiet => {}
        Ending::Killed => child.kill(),
        Ending::ParentCloses => session.close(),
        Ending::Exits(code) => {
            let exit = json!({"op": "exit", "code": code});
            let asked = session.request::<_, Value>(&exit);
            match tokio::time::timeout(HANG, asked).await {
                Ok(Err(Error::Closed(_))) => {}
                other => return Err(format!("the exit request ended with {other:?}")),
            }
        }
    }
    let mut misfits = Vec::new();
    for (i, (task, call)) in tasks.into_iter().zip(&calls).enumerate() {
        let ended = task.await.map_err(|e| format!("call {i} panicked: {e}"))?;
        if let Some(why) = misfit(call, &ended, setup) {
            misfits.push(format!("call {i} {:?}: {why}", call.payload.get("op")));
        }
    }
    if setup.ending == Ending::Quiet {
        session.close();
    }
    let status = tokio::time::timeout(HANG, child.wait())
        .await
        .map_err(|_| "the child did not exit".to_string())?
        .map_err(|e| format!("wait: {e}"))?;
    if !status_fits(setup.ending, status) {
        misfits.push(format!("the child ended with {status}"));
    }
    let reason = tokio::time::timeout(HANG, session.closed())
        .await
        .map_err(|_| "the session did not end".to_string())?;
    if !reason_fits(setup.ending, &reason) {
        misfits.push(format!("the session ended with {reason}"));
    }
    // After the end, a call fails at once.
    let late = tokio::time::timeout(Duration::from_secs(1), session.request::<_, Value>(&json!(1))).await;
    if !matches!(late, Ok(Err(Error::Closed(_)))) {
        misfits.push(format!("a call after the end: {late:?}"));
    }
    if misfits.is_empty() {
        Ok(calls.len())
    } else {
        Err(misfits.join("\n"))
    }
}

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn storms_across_real_processes_end_every_call_as_the_child_ended() {
    let with_node = node().is_some();
    let first = env("PSTORM_SEED").unwrap_or(1);
    let seeds: Vec<u64> = match env("PSTORM_ONE") {
        Some(seed) => vec![seed],
        None => (first..first + env("PSTORM_ROUNDS").unwrap_or(12)).collect(),
    };
    let time_box = Duration::from_secs(env("PSTORM_SECS").unwrap_or(60));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let started = Instant::now();
    let mut descriptors = None;
    let (mut rounds, mut calls) = (0, 0);
    let mut endings = BTreeMap::<String, usize>::new();
    let mut failures = Vec::new();
    for seed in seeds {
        if started.elapsed() > time_box {
            break;
        }
        let setup = setup_for(seed, with_node);
        let result = runtime.block_on(round(seed, &setup));
        rounds += 1;
        *endings.entry(format!("{:?}", setup.ending)).or_default() += 1;
        match result {
            Ok(n) => calls += n,
            Err(why) => {
                eprintln!("=== seed {seed} {setup:?}\n{why}");
                failures.push(seed);
            }
        }
        // The first round's count is the baseline: the runtime opens some
        // of its own descriptors once, at its first child.
        let now = runtime.block_on(settled_descriptors(descriptors));
        if let Some(before) = descriptors.filter(|&before| now > before) {
            eprintln!("=== seed {seed}: {} descriptors left open", now - before);
            failures.push(seed);
        }
        descriptors.get_or_insert(now);
    }
    eprintln!(
        "process storm: {rounds} rounds, {calls} calls in passing rounds, {:?}; endings {endings:?}; failed seeds {failures:?}",
        started.elapsed()
    );
    assert!(failures.is_empty(), "failed seeds {failures:?}");
}

/// The open descriptors once those of the last round have closed (its
/// reader and writer may take a moment after the child's exit), up to 5 s.
async fn settled_descriptors(baseline: Option<usize>) -> usize {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let now = open_descriptors();
        if baseline.is_none_or(|before| now <= before) || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
