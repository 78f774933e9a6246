//! Storms of requests with cancellations, both ways at once: random
//! deadlines, callers that give up (their futures dropped), handlers of
//! eleven kinds (below), small bounds so that back-pressure and refusals
//! kick in, and in some rounds one side closed mid-storm. After each
//! round: every call ended, every answer is its own request's, no request
//! pending, nothing queued, no handler left running, and a plain request
//! still works both ways. A round's setup comes from its seed, so a
//! failure is rerun with `STORM_ONE=<seed>`.
//!
//! `cargo test` runs a few rounds; more with, for example,
//! `STORM_ROUNDS=5000 STORM_SECS=600 cargo test --release --test storm -- --nocapture`.
//! Settings: `STORM_SEED` (first seed), `STORM_ROUNDS`, `STORM_SECS` (time
//! box), `STORM_CLOSE` (0 never, 1 always, 2 one round in four),
//! `STORM_THREADS` (worker threads), `STORM_UNIX` (0 in-memory pairs, 1
//! socket pairs, 2 either), `STORM_PAD` (0: no large payloads).
//!
//! The bounds on time below only catch what hangs: they are far above
//! what a round needs on a loaded machine.
//!
//! The handler kinds (`m` in a request's payload):
//! 0 answers at once; 1 sleeps, then answers; 2 waits for its cancel, then
//! tries to answer (which must not reach the caller); 3 panics; 4 races a
//! sleep against its cancel; 5 answers later from a task of its own; 6
//! drops its responder; 7 calls the peer back, with a deadline, then
//! answers; 8 answers, then keeps the request in a task until it is
//! cancelled (the close must reach it); 9 hands its token and responder to
//! a task and returns; 10 answers within a few µs or drops its responder.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::rng::Rng;
use ipc_request::{
    Channel, ChannelConfig, Error, Request, Responder, SessionBuilder, SessionConfig, responder_fn,
};
use serde_json::{Value, json};

/// What one side's handlers did.
#[derive(Default)]
struct HandlerCounts {
    /// Handlers (and the tasks they hand their responders to) running.
    running: AtomicUsize,
    /// Requests kept past their answer, waiting for their cancel (kind 8).
    lingering: AtomicUsize,
    cancels_seen: AtomicUsize,
    /// Answers given after a cancel that said Ok: each a violation.
    late_answers_taken: Mutex<Vec<String>>,
    /// Kind 2 handlers still waiting for their cancel, by request id.
    waiting_for_cancel: Mutex<BTreeMap<u64, ()>>,
}

/// Counts a handler (or a task it started) as running until dropped.
struct Running(Arc<HandlerCounts>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

fn running(counts: &Arc<HandlerCounts>) -> Running {
    counts.running.fetch_add(1, Ordering::SeqCst);
    Running(counts.clone())
}

/// Handler kinds (see the module docs).
const MODES: u64 = 11;

/// Side `side`'s handler: each request says which kind to be (`m`), how
/// long to sleep (`ms`), and carries its caller's id, side and padding,
/// which the answer echoes.
fn handler(side: &'static str, stats: Arc<HandlerCounts>) -> ipc_request::Handler {
    responder_fn(move |req: Request, responder: Responder| {
        let stats = stats.clone();
        async move {
            let _running = running(&stats);
            let p: Value = req.payload().unwrap();
            let id = p["id"].as_u64().unwrap();
            let mode = p["m"].as_u64().unwrap();
            let ms = p["ms"].as_u64().unwrap();
            let answer = json!({"id": id, "by": side, "from": p["from"], "pad": p["pad"]});
            match mode {
                0 => {
                    let _ = responder.respond(&answer).await;
                }
                1 => {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    let _ = responder.respond(&answer).await;
                }
                2 => {
                    stats.waiting_for_cancel.lock().unwrap().insert(id, ());
                    let ok = tokio::time::timeout(Duration::from_secs(60), req.cancelled())
                        .await
                        .is_ok();
                    stats.waiting_for_cancel.lock().unwrap().remove(&id);
                    if ok {
                        stats.cancels_seen.fetch_add(1, Ordering::SeqCst);
                    }
                    let r = responder.respond(&answer).await;
                    if r.is_ok() {
                        stats.late_answers_taken.lock().unwrap().push(format!(
                            "{side} id {id} mode 2 answered Ok after cancel (cancel seen: {ok})"
                        ));
                    }
                }
                3 => {
                    if ms < 1000 {
                        panic!("storm panic {id}");
                    }
                }
                4 => {
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(ms)) => {}
                        _ = req.cancelled() => { stats.cancels_seen.fetch_add(1, Ordering::SeqCst); }
                    }
                    let _ = responder.respond(&answer).await;
                }
                5 => {
                    let running_on = running(&stats);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        let _ = responder.respond(&answer).await;
                        drop(running_on);
                    });
                }
                6 => drop(responder),
                7 => {
                    let s = req.session();
                    let sub = json!({"id": id + 1_000_000_000, "m": 0, "ms": 0, "from": side});
                    let got: Result<Value, Error> =
                        s.request_timeout(&sub, Duration::from_millis(ms + 5)).await;
                    if let Ok(v) = &got {
                        assert_eq!(v["id"], sub["id"], "callback got wrong answer");
                    }
                    let _ = responder.respond(&answer).await;
                }
                8 => {
                    // answer, then keep running until cancelled (close must reach it)
                    let _ = responder.respond(&answer).await;
                    stats.lingering.fetch_add(1, Ordering::SeqCst);
                    let stats2 = stats.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(Duration::from_secs(60), req.cancelled()).await;
                        stats2.lingering.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                9 => {
                    // hand the token and responder to another task; handler returns at once
                    let token = req.cancellation_token();
                    let running_on = running(&stats);
                    let stats2 = stats.clone();
                    tokio::spawn(async move {
                        tokio::select! {
                            _ = tokio::time::sleep(Duration::from_millis(ms * 3)) => {
                                let _ = responder.respond(&answer).await;
                            }
                            _ = token.cancelled() => {
                                stats2.cancels_seen.fetch_add(1, Ordering::SeqCst);
                                let r = responder.respond(&answer).await;
                                if r.is_ok() && responder.is_cancelled() {
                                    stats2.late_answers_taken.lock().unwrap().push(format!("{side} id {id} mode 9 Ok after cancel"));
                                }
                            }
                        }
                        drop(running_on);
                    });
                }
                10 => {
                    // answer with a very short timeout; drop the responder if it did not go
                    let r = tokio::time::timeout(Duration::from_micros(ms * 20), responder.respond(&answer))
                        .await;
                    drop(r);
                    drop(responder);
                }
                _ => unreachable!(),
            }
        }
    })
}

/// A round's bounds and shape, from its seed.
#[derive(Debug, Clone)]
struct RoundSetup {
    max_in_flight: usize,
    max_handlers: usize,
    max_queued: usize,
    write_queue_bytes: usize,
    per_side: usize,
    close: Option<(u64, bool)>, // (after ms, close side a?)
    pad_on: bool,
    unix: bool,
    max_queued_bytes: usize,
}

/// How the calls of the rounds ended.
#[derive(Debug, Default)]
struct Outcome {
    ok: usize,
    remote: BTreeMap<String, usize>,
    timeout: usize,
    dropped: usize,
    closed: usize,
    other: usize,
}

/// One round: its outcome and how many requests it made, or what went
/// wrong.
async fn round(seed: u64, cfg: &RoundSetup) -> Result<(Outcome, usize), String> {
    let mut rng = Rng::new(seed);
    let channel_config = ChannelConfig {
        write_queue_bytes: cfg.write_queue_bytes,
        ..Default::default()
    };
    let session_config = SessionConfig {
        max_in_flight: cfg.max_in_flight,
        max_concurrent_handlers: cfg.max_handlers,
        max_queued_requests: cfg.max_queued,
        max_queued_request_bytes: cfg.max_queued_bytes,
        ..Default::default()
    };
    let (ca, cb) = if cfg.unix {
        let (x, y) = tokio::net::UnixStream::pair().unwrap();
        (
            Channel::from_unix(x, channel_config.clone()).unwrap(),
            Channel::from_unix(y, channel_config).unwrap(),
        )
    } else {
        Channel::pair(channel_config)
    };
    let a_counts = Arc::new(HandlerCounts::default());
    let b_counts = Arc::new(HandlerCounts::default());
    let (a, b) = tokio::join!(
        SessionBuilder::new()
            .config(session_config.clone())
            .handler(handler("a", a_counts.clone()))
            .setup(ca),
        SessionBuilder::new()
            .config(session_config.clone())
            .handler(handler("b", b_counts.clone()))
            .setup(cb),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let closed_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let violations: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let mut tasks = Vec::new();
    let mut total = 0;
    for (side, s) in [("a", a.clone()), ("b", b.clone())] {
        for i in 0..cfg.per_side {
            total += 1;
            let id = (i as u64) * 2 + if side == "a" { 0 } else { 1 };
            let mode = rng.below(MODES);
            let ms = rng.below(25);
            let start = rng.below(15);
            let pad = match rng.below(20) {
                0 => rng.below(300_000) as usize,
                1..=3 => rng.below(5_000) as usize,
                _ => 0,
            } * cfg.pad_on as usize;
            let deadline = match rng.below(3) {
                0 => None,
                _ => Some(Duration::from_millis(1 + rng.below(40))),
            };
            let mut drop_after = match rng.below(3) {
                0 => Some(Duration::from_millis(rng.below(30))),
                _ => None,
            };
            if mode == 2 && deadline.is_none() && drop_after.is_none() {
                drop_after = Some(Duration::from_millis(rng.below(30)));
            }
            let s = s.clone();
            let (violations, outcome, closed_at) = (violations.clone(), outcome.clone(), closed_at.clone());
            let close_mode = cfg.close.is_some();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(start)).await;
                let payload = json!({"id": id, "m": mode, "ms": ms, "from": side, "pad": "p".repeat(pad)});
                let fut = async {
                    match deadline {
                        Some(d) => s.request_timeout::<_, Value>(&payload, d).await,
                        None => s.request::<_, Value>(&payload).await,
                    }
                };
                let fut = async {
                    match drop_after {
                        Some(d) => tokio::select! { r = fut => Some(r), _ = tokio::time::sleep(d) => None },
                        None => Some(fut.await),
                    }
                };
                let r = tokio::time::timeout(Duration::from_secs(15), fut).await;
                let done = Instant::now();
                let desc =
                    format!("{side} id {id} mode {mode} ms {ms} deadline {deadline:?} drop {drop_after:?}");
                let mut o = outcome.lock().unwrap();
                let Ok(r) = r else {
                    violations.lock().unwrap().push(format!("HANG: {desc}"));
                    return;
                };
                if close_mode {
                    if let Some(t) = *closed_at.lock().unwrap() {
                        if done > t + Duration::from_secs(5) {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("SLOW after close ({:?}): {desc} -> {r:?}", done - t));
                        }
                    }
                }
                match r {
                    None => o.dropped += 1,
                    Some(Ok(v)) => {
                        o.ok += 1;
                        if v["pad"].as_str().map(str::len) != Some(pad) {
                            violations.lock().unwrap().push(format!("WRONG PAD: {desc}"));
                        }
                        if v["id"] != json!(id) || v["from"] != json!(side) || v["by"] == json!(side) {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("WRONG ANSWER: {desc} -> {v}"));
                        }
                        if matches!(mode, 3 | 6) {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("OK for failing mode: {desc} -> {v}"));
                        }
                    }
                    Some(Err(Error::Remote(e))) => {
                        *o.remote.entry(e.name.clone()).or_default() += 1;
                        let fine = e.name == "Overloaded"
                            || (mode == 3 && e.name == "HandlerPanicked")
                            || (mode == 6 && e.name == "ResponderDropped")
                            || (mode == 10 && e.name == "ResponderDropped");
                        if !fine {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("BAD REMOTE: {desc} -> {e:?}"));
                        }
                    }
                    Some(Err(Error::Timeout(_))) => {
                        o.timeout += 1;
                        if deadline.is_none() {
                            violations
                                .lock()
                                .unwrap()
                                .push(format!("TIMEOUT w/o deadline: {desc}"));
                        }
                    }
                    Some(Err(Error::Closed(c))) => {
                        o.closed += 1;
                        if !close_mode {
                            violations.lock().unwrap().push(format!("CLOSED: {desc} {c}"));
                        }
                    }
                    Some(Err(e)) => {
                        o.other += 1;
                        violations
                            .lock()
                            .unwrap()
                            .push(format!("OTHER ERROR: {desc} -> {e:?}"));
                    }
                }
            }));
        }
    }
    if let Some((after, side_a)) = cfg.close {
        let (a, b, closed_at) = (a.clone(), b.clone(), closed_at.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after)).await;
            *closed_at.lock().unwrap() = Some(Instant::now());
            if side_a { a.close() } else { b.close() }
        }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            violations.lock().unwrap().push(format!("task panicked: {e}"));
        }
    }
    // settle
    let settle_start = Instant::now();
    let state = || {
        (
            a.pending_requests(),
            b.pending_requests(),
            a.queued_bytes(),
            b.queued_bytes(),
            a_counts.running.load(Ordering::SeqCst),
            b_counts.running.load(Ordering::SeqCst),
        )
    };
    let mut st = state();
    let close_mode = cfg.close.is_some();
    while settle_start.elapsed() < Duration::from_secs(10) {
        st = state();
        let queued_ok = close_mode || (st.2 == 0 && st.3 == 0);
        if st.0 == 0 && st.1 == 0 && queued_ok && st.4 == 0 && st.5 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let queued_ok = close_mode || (st.2 == 0 && st.3 == 0);
    if !(st.0 == 0 && st.1 == 0 && queued_ok && st.4 == 0 && st.5 == 0) {
        violations.lock().unwrap().push(format!(
            "NOT SETTLED after 10 s: pending a={} b={} queued a={} b={} live handlers a={} b={}; mode2 still waiting a={:?} b={:?}",
            st.0,
            st.1,
            st.2,
            st.3,
            st.4,
            st.5,
            a_counts.waiting_for_cancel.lock().unwrap().keys().collect::<Vec<_>>(),
            b_counts.waiting_for_cancel.lock().unwrap().keys().collect::<Vec<_>>()
        ));
    }
    for s in [&a_counts, &b_counts] {
        for v in s.late_answers_taken.lock().unwrap().iter() {
            violations.lock().unwrap().push(format!("LATE ANSWER OK: {v}"));
        }
    }
    if !close_mode {
        for (name, s) in [("a", &a), ("b", &b)] {
            let id = 999_999_000 + if name == "a" { 0 } else { 1 };
            let r = tokio::time::timeout(
                Duration::from_secs(10),
                s.request::<_, Value>(&json!({"id": id, "m": 0, "ms": 0, "from": name})),
            )
            .await;
            match r {
                Ok(Ok(v)) if v["id"] == json!(id) => {}
                other => violations
                    .lock()
                    .unwrap()
                    .push(format!("AFTER-STORM request from {name} failed: {other:?}")),
            }
        }
    }
    a.close();
    b.close();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10)
        && (a_counts.running.load(Ordering::SeqCst)
            + b_counts.running.load(Ordering::SeqCst)
            + a_counts.lingering.load(Ordering::SeqCst)
            + b_counts.lingering.load(Ordering::SeqCst))
            > 0
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let l = (
        a_counts.running.load(Ordering::SeqCst),
        b_counts.running.load(Ordering::SeqCst),
        a_counts.lingering.load(Ordering::SeqCst),
        b_counts.lingering.load(Ordering::SeqCst),
    );
    if l != (0, 0, 0, 0) {
        violations.lock().unwrap().push(format!(
            "handlers still running 10 s after close (live a,b, lingering a,b): {l:?}"
        ));
    }
    let v = std::mem::take(&mut *violations.lock().unwrap());
    let o = std::mem::take(&mut *outcome.lock().unwrap());
    if v.is_empty() {
        Ok((o, total))
    } else {
        Err(v.join("\n"))
    }
}

fn setup_for(seed: u64, close: u8) -> RoundSetup {
    let mut r = Rng::new(seed ^ 0xABCDEF);
    let close = match close {
        0 => None,
        1 => Some((r.below(40), r.below(2) == 0)),
        _ => (r.below(4) == 0).then(|| (r.below(40), r.below(2) == 0)),
    };
    RoundSetup {
        max_in_flight: r.pick(&[1, 2, 4, 16, 64, 1024]),
        max_handlers: r.pick(&[1, 2, 4, 16, 1024]),
        max_queued: r.pick(&[1, 2, 8, 64, 65536]),
        write_queue_bytes: r.pick(&[1, 64, 256, 1024, 65536]),
        per_side: r.pick(&[20, 60, 150, 300]) as usize,
        close,
        pad_on: common::env_number("STORM_PAD", 1) == 1 && r.below(2) == 0,
        unix: match common::env_number("STORM_UNIX", 2) {
            0 => false,
            1 => true,
            _ => r.below(2) == 0,
        },
        max_queued_bytes: r.pick(&[1, 10_000, 64 << 20]),
    }
}

#[test]
fn storms_of_requests_and_cancellations_leave_nothing_behind() {
    let base = common::env_number("STORM_SEED", 1);
    let rounds = common::env_number("STORM_ROUNDS", 40);
    let secs = common::env_number("STORM_SECS", 20);
    let close = common::env_number("STORM_CLOSE", 2) as u8;
    let threads = common::env_number("STORM_THREADS", 4) as usize;
    let one = std::env::var("STORM_ONE")
        .ok()
        .and_then(|v| v.parse::<u64>().ok());
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        if msg.starts_with("storm panic") {
            return;
        }
        prev(info)
    }));
    let start = Instant::now();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .unwrap();
    let failed = Arc::new(AtomicBool::new(false));
    let mut n = 0;
    let mut reqs = 0;
    let mut agg = Outcome::default();
    let mut failures = Vec::new();
    let seeds: Vec<u64> = match one {
        Some(s) => vec![s],
        None => (base..base + rounds).collect(),
    };
    for seed in seeds {
        if start.elapsed() > Duration::from_secs(secs) {
            break;
        }
        let cfg = setup_for(seed, close);
        let r = rt.block_on(async {
            match tokio::time::timeout(Duration::from_secs(120), round(seed, &cfg)).await {
                Ok(r) => r,
                Err(_) => Err("ROUND WATCHDOG: the round did not finish in 120 s".into()),
            }
        });
        n += 1;
        match r {
            Ok((o, t)) => {
                reqs += t;
                agg.ok += o.ok;
                agg.timeout += o.timeout;
                agg.dropped += o.dropped;
                agg.closed += o.closed;
                for (k, v) in o.remote {
                    *agg.remote.entry(k).or_default() += v;
                }
            }
            Err(v) => {
                failed.store(true, Ordering::SeqCst);
                eprintln!("=== seed {seed} cfg {cfg:?}\n{v}");
                failures.push(seed);
            }
        }
    }
    eprintln!(
        "storm: {n} rounds, {reqs} requests in passing rounds, {:?}; outcomes {agg:?}; failed seeds {failures:?}",
        start.elapsed()
    );
    assert!(!failed.load(Ordering::SeqCst), "failed seeds {failures:?}");
}
