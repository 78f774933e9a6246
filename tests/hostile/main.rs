//! A hostile or broken peer against a real session: the peer writes
//! plausible but hostile protocol lines drawn at random from a seed (odd
//! UIDs, lone surrogates, handshakes at odd times and to the wrong UID,
//! `NODE_` messages, invalid UTF-8, non-JSON and too-long lines, answers
//! to our requests that are broken, cancels of what runs and of what never
//! was, lines cut at random byte boundaries), over `tokio::io::duplex` or a
//! Unix socket pair, under small random limits; it may stop reading, and
//! goes by a half-close or a hang-up. Meanwhile our side makes requests
//! and its handler answers, fails, panics or drops its responder.
//!
//! The unit tests and `tests/session` each play one such line; this plays
//! them together, at odd times, where their interplay (a refusal queued
//! behind a stalled writer, a cancel racing an answer, a handshake
//! answered after requests) is what breaks. After each round:
//! - no panic but the handler's own;
//! - the session closed once the peer went, and every call of ours ended,
//!   with its own answer or a typed error; nothing pending; the message
//!   stream ended; our end of the stream came after a half-close;
//! - nothing left in our queue once the peer went;
//! - every line we wrote is one a Node peer reads: UTF-8 JSON ended by a
//!   newline, and no `NODE_` message but the NACK of a handle offered;
//! - every request of the peer's that the session could know by its UID,
//!   and that the peer neither cancelled nor sent twice, answered exactly
//!   once (when the peer waited for its answers), and no UID used once
//!   answered twice.
//!
//! The peer's script is the same for a seed every run (see `script`); the
//! timing around it is not, so a failing seed may need a few replays.
//!
//! `cargo test` runs rounds for about 6 s. Settings: `HOSTILE_SEED` (first
//! seed, 1), `HOSTILE_ROUNDS` (200), `HOSTILE_SECS` (time box for starting
//! rounds, 6), `HOSTILE_PARALLEL` (rounds at once, 4), `HOSTILE_ONE=<seed>`
//! (replay one), `HOSTILE_VERBOSE=1` (print each round's log and the lines
//! the peer wrote). A long run:
//! `HOSTILE_ROUNDS=3000 HOSTILE_SECS=300 cargo test --release --test hostile -- --nocapture`.
//!
//! Bounds on time here only catch what hangs: they are far above what a
//! round needs on a loaded machine.

#[path = "../common/mod.rs"]
mod common;

mod lines;
mod our_side;
mod our_writes;
mod round;
mod script;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Panics seen by the hook (but the handler's own), by thread name: a
/// round's threads are named after its seed.
static PANICS: Mutex<BTreeMap<String, Vec<String>>> = Mutex::new(BTreeMap::new());

fn thread_name(seed: u64) -> String {
    format!("hostile-seed-{seed}")
}

fn install_the_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        if message.contains(our_side::HANDLER_PANIC) {
            return;
        }
        let site = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let thread = std::thread::current().name().unwrap_or("unnamed").to_string();
        eprintln!("panic on {thread} at {site}: {message}");
        let mut panics = PANICS.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        panics
            .entry(thread)
            .or_default()
            .push(format!("panic at {site}: {message}"));
    }));
}

/// One round on a thread of its own, in a runtime of its own: current
/// thread for even seeds, two workers for odd ones. Its problems, with the
/// panics of its threads.
fn round_on_its_own_thread(seed: u64) -> round::RoundReport {
    let name = thread_name(seed);
    let thread = std::thread::Builder::new().name(name.clone()).spawn(move || {
        let runtime = if seed % 2 == 0 {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        } else {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder
                .worker_threads(2)
                .thread_name(thread_name(seed))
                .enable_all()
                .build()
        }
        .unwrap();
        let watched = async { tokio::time::timeout(Duration::from_secs(60), round::run_round(seed)).await };
        let report = runtime.block_on(watched);
        // A session left open (held up, unchecked) must not hold us.
        runtime.shutdown_timeout(Duration::from_secs(2));
        report.unwrap_or_else(|_| round::RoundReport {
            problems: vec!["the round did not finish in 60 s".into()],
            log: Vec::new(),
        })
    });
    let mut report = thread.unwrap().join().unwrap_or_else(|_| round::RoundReport {
        problems: vec!["the round panicked".into()],
        log: Vec::new(),
    });
    let panics = PANICS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&name);
    report.problems.extend(panics.unwrap_or_default());
    report
}

#[test]
fn hostile_peers_neither_crash_the_session_nor_get_lines_node_cannot_read() {
    install_the_panic_hook();
    let first = common::env_number("HOSTILE_SEED", 1);
    let seeds = match std::env::var("HOSTILE_ONE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        Some(seed) => seed..seed + 1,
        None => first..first + common::env_number("HOSTILE_ROUNDS", 200),
    };
    let time_box = Duration::from_secs(common::env_number("HOSTILE_SECS", 6));
    let verbose = std::env::var_os("HOSTILE_VERBOSE").is_some();
    let started = Instant::now();
    let next_seed = Arc::new(AtomicU64::new(seeds.start));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let rounds_run = Arc::new(AtomicU64::new(0));
    let slowest = Arc::new(Mutex::new((Duration::ZERO, 0)));
    let workers: Vec<_> = (0..common::env_number("HOSTILE_PARALLEL", 4).max(1))
        .map(|_| {
            let (next_seed, failures, rounds_run) = (next_seed.clone(), failures.clone(), rounds_run.clone());
            let slowest = slowest.clone();
            let end = seeds.end;
            std::thread::spawn(move || {
                while started.elapsed() < time_box {
                    let seed = next_seed.fetch_add(1, Ordering::SeqCst);
                    if seed >= end {
                        break;
                    }
                    let round_started = Instant::now();
                    let report = round_on_its_own_thread(seed);
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max((round_started.elapsed(), seed));
                    drop(slowest);
                    rounds_run.fetch_add(1, Ordering::SeqCst);
                    if verbose || !report.problems.is_empty() {
                        print_report(seed, &report);
                    }
                    if !report.problems.is_empty() {
                        failures.lock().unwrap().push(seed);
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().unwrap();
    }
    let failures = std::mem::take(&mut *failures.lock().unwrap());
    let rounds = rounds_run.load(Ordering::SeqCst);
    let elsewhere = std::mem::take(&mut *PANICS.lock().unwrap());
    let (slowest, slowest_seed) = *slowest.lock().unwrap();
    eprintln!(
        "hostile peer: {rounds} rounds from seed {} in {:.1?} (slowest: seed {slowest_seed}, {slowest:.1?}), failing seeds {failures:?}",
        seeds.start,
        started.elapsed()
    );
    assert!(elsewhere.is_empty(), "panics outside the rounds: {elsewhere:?}");
    assert!(
        failures.is_empty(),
        "failing seeds {failures:?} (replay: HOSTILE_ONE=<seed> cargo test --test hostile -- --nocapture)"
    );
}

fn print_report(seed: u64, report: &round::RoundReport) {
    let mut text =
        format!("=== seed {seed} (replay: HOSTILE_ONE={seed} cargo test --test hostile -- --nocapture)\n");
    for line in &report.log {
        text += &format!("  {line}\n");
    }
    for problem in &report.problems {
        text += &format!("  PROBLEM: {problem}\n");
    }
    // Past the test harness's capture: a failing round shows as it ends.
    let _ = std::io::Write::write_all(&mut std::io::stderr(), text.as_bytes());
}
