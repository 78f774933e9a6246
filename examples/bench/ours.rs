//! This crate over real processes: the parent side of each workload, and
//! the child modes the bench binary runs as (`rust-child`, `hold-child`,
//! `mem-parent`).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use ipc_request::frame::Message;
use ipc_request::{
    ChildProcess, Request, Responder, Session, SessionBuilder, SessionConfig, open_from_env, responder_fn,
    setup, spawn,
};
use tokio::sync::Notify;

/// The text part of every small payload: a request payload is
/// `[i, "hello, bench"]`, 131 to 140 bytes on the wire with the envelope
/// (see `request_line`).
pub const TEXT: &str = "hello, bench";

/// No single variant may take longer than this; past it the bench fails.
const VARIANT_LIMIT: Duration = Duration::from_secs(120);

pub type BenchResult<T> = Result<T, String>;

/// The line our crate writes for request number `id` with payload
/// `[i, TEXT]` (field order of `protocol::MessageOut`); the floor sends
/// exactly these bytes.
pub fn request_line(id: u64, i: u64) -> String {
    format!(
        "{{\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:REQUEST\",\"_IPC_REQUEST/REQUEST_UID\":\"{id}\",\"_IPC_REQUEST/PAYLOAD\":[{i},\"{TEXT}\"]}}\n"
    )
}

/// The same for a string payload.
pub fn big_request_line(id: u64, text: &str) -> String {
    format!(
        "{{\"_IPC_REQUEST/MSG_TYPE\":\"_IPC_REQUEST/MSG_TYPE:REQUEST\",\"_IPC_REQUEST/REQUEST_UID\":\"{id}\",\"_IPC_REQUEST/PAYLOAD\":\"{text}\"}}\n"
    )
}

/// Checks that `answer` echoes the small request `i`, `[i, TEXT]`;
/// `scratch` saves an allocation per answer.
pub fn check_small(answer: &Message, i: u64, scratch: &mut String) -> BenchResult<()> {
    scratch.clear();
    let _ = write!(scratch, "[{i},\"{TEXT}\"]");
    if answer.get() != scratch.as_str() {
        return Err(format!(
            "answer {:?} does not echo request {scratch}",
            answer.get()
        ));
    }
    Ok(())
}

/// Checks that `answer` is `text` as a JSON string (which, for the bench's
/// text, needs no escapes): the echo of the big request.
pub fn check_big(answer: &Message, text: &str) -> BenchResult<()> {
    let got = answer.get().as_bytes();
    let ok = got.len() == text.len() + 2
        && got[0] == b'"'
        && got[got.len() - 1] == b'"'
        && &got[1..got.len() - 1] == text.as_bytes();
    if !ok {
        return Err(format!(
            "big answer of {} bytes does not echo the {}-byte request",
            got.len(),
            text.len()
        ));
    }
    Ok(())
}

fn config() -> SessionConfig {
    SessionConfig {
        // Room for the largest burst: every request goes out at once.
        max_in_flight: 1 << 20,
        ..SessionConfig::default()
    }
}

/// The children's config: room to queue the largest burst, as the
/// parent has room to send it. In a burst the child's handlers wait for
/// room to write their answers while the parent, busy starting requests,
/// reads them late, and the requests read meanwhile wait in the child's
/// backlog: tens of thousands of them (with a backlog of 1,000, the first
/// 100,000 burst had refusals; with 20,000, one of two runs of eight
/// bursts had; with 40,000, two runs had none; how many wait depends on
/// how the two processes are scheduled).
/// The default backlog (65,536, with 1,024 handler slots) is sized for a
/// peer with the default `max_in_flight` (65,536), which it never
/// refuses; past it a child refuses the rest as `Overloaded`, which is
/// what the bound is for but not what the bench measures: the floor and
/// the Node child take every request. CI's bench failed so once.
fn child_config() -> SessionConfig {
    SessionConfig {
        max_queued_requests: 1 << 20,
        ..config()
    }
}

/// A child's session over its inherited `channel`, with `child_config`.
async fn child_session(channel: ipc_request::Channel, handler: ipc_request::Handler) -> BenchResult<Session> {
    SessionBuilder::new()
        .config(child_config())
        .handler(handler)
        .setup(channel)
        .await
        .map_err(|e| e.to_string())
}

/// A runtime like the one the bench parent uses: 2 workers, built
/// explicitly.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn limited<T>(what: &str, work: impl Future<Output = BenchResult<T>>) -> BenchResult<T> {
    tokio::time::timeout(VARIANT_LIMIT, work)
        .await
        .unwrap_or_else(|_| Err(format!("{what}: no answer within {VARIANT_LIMIT:?}")))
}

/// Our session with a `rust-child` echo peer.
pub struct OursPeer {
    session: Session,
    child: ChildProcess,
}

impl OursPeer {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub async fn spawn(exe: &Path, mode: &str, args: &[String]) -> BenchResult<OursPeer> {
        let mut command = Command::new(exe);
        command.arg(mode).args(args);
        let (channel, child) = spawn(command).map_err(|e| format!("spawning {mode}: {e}"))?;
        let session = SessionBuilder::new()
            .config(config())
            .setup(channel)
            .await
            .map_err(|e| format!("handshake with {mode}: {e}"))?;
        Ok(OursPeer { session, child })
    }

    /// Sequential round trips, one in flight. Returns the mean round trip.
    /// Runs as a task on the runtime's workers, like application code.
    pub async fn sequential(&self, iters: usize) -> BenchResult<Duration> {
        let session = self.session.clone();
        let work = tokio::spawn(async move {
            let mut scratch = String::new();
            let start = Instant::now();
            for i in 0..iters as u64 {
                let answer = session
                    .request_raw(&(i, TEXT))
                    .await
                    .map_err(|e| format!("sequential request {i}: {e}"))?;
                check_small(&answer, i, &mut scratch)?;
            }
            Ok(start.elapsed() / iters as u32)
        });
        limited("sequential", async { work.await.map_err(|e| e.to_string())? }).await
    }

    /// `n` requests started at once; returns the time until the last
    /// answer. Answers are checked after the clock stops.
    ///
    /// [`Fanout::JoinAll`] puts every request future in one task. That used
    /// to go quadratic past ~10,000 futures: once the task's coop budget was
    /// spent, every budgeted tokio primitive in the request path returned
    /// Pending and deferred its wake-up, so `FuturesUnordered` polled every
    /// other ready future, each of which did the same. The request path now
    /// takes its semaphores with `try_acquire` first and awaits its answer
    /// unconstrained, and this row checks that it stays linear.
    pub async fn burst(&self, n: usize, fanout: Fanout) -> BenchResult<Duration> {
        let session = self.session.clone();
        let work = tokio::spawn(async move { burst(&session, n, fanout).await });
        limited("burst", async { work.await.map_err(|e| e.to_string())? }).await
    }

    /// One big string payload echoed; returns the round-trip time.
    pub async fn big(&self, text: Arc<String>) -> BenchResult<Duration> {
        let session = self.session.clone();
        let work = tokio::spawn(async move {
            let start = Instant::now();
            let answer = session
                .request_raw(text.as_str())
                .await
                .map_err(|e| format!("big request: {e}"))?;
            let elapsed = start.elapsed();
            check_big(&answer, &text)?;
            Ok(elapsed)
        });
        limited("big payload", async { work.await.map_err(|e| e.to_string())? }).await
    }

    pub async fn finish(self) -> BenchResult<()> {
        self.session.close();
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .map_err(|_| "rust child did not exit after close".to_string())?
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("rust child ended with {status}"));
        }
        Ok(())
    }
}

/// Our blocking API's session with a `rust-child` echo peer, called from
/// the bench's main thread (no async code around it).
pub struct BlockingPeer {
    session: ipc_request::blocking::Session,
    child: ipc_request::blocking::ChildProcess,
}

impl BlockingPeer {
    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn spawn(exe: &Path) -> BenchResult<BlockingPeer> {
        let mut command = Command::new(exe);
        command.arg("rust-child");
        let builder = SessionBuilder::new().config(config());
        let (session, child) = ipc_request::blocking::spawn_with(command, Default::default(), builder)
            .map_err(|e| format!("blocking API, spawning rust-child: {e}"))?;
        Ok(BlockingPeer { session, child })
    }

    /// Sequential round trips, one in flight, as `OursPeer::sequential`
    /// (the bench's own time limit covers a hang). Returns the mean.
    pub fn sequential(&self, iters: usize) -> BenchResult<Duration> {
        let mut scratch = String::new();
        let start = Instant::now();
        for i in 0..iters as u64 {
            let answer = self
                .session
                .request_raw(&(i, TEXT))
                .map_err(|e| format!("blocking sequential request {i}: {e}"))?;
            check_small(&answer, i, &mut scratch)?;
        }
        Ok(start.elapsed() / iters as u32)
    }

    pub fn finish(self) -> BenchResult<()> {
        drop(self.session);
        match self.child.wait_timeout(Duration::from_secs(10)) {
            Ok(Some(status)) if status.success() => Ok(()),
            Ok(Some(status)) => Err(format!("blocking API's rust child ended with {status}")),
            Ok(None) => Err("blocking API's rust child did not exit after close".into()),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// How a burst starts its requests.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Fanout {
    /// One task per request (`tokio::spawn`), awaited in order: the
    /// idiomatic way to run independent requests at once, and the one the
    /// headline numbers use.
    Tasks,
    /// All requests as futures of one task (`futures_util::future::join_all`).
    JoinAll,
}

async fn burst(session: &Session, n: usize, fanout: Fanout) -> BenchResult<Duration> {
    let start = Instant::now();
    let answers = match fanout {
        Fanout::Tasks => {
            let handles: Vec<_> = (0..n as u64)
                .map(|i| {
                    let session = session.clone();
                    tokio::spawn(async move { session.request_raw(&(i, TEXT)).await })
                })
                .collect();
            let mut answers = Vec::with_capacity(n);
            for handle in handles {
                answers.push(handle.await.map_err(|e| format!("burst task: {e}"))?);
            }
            answers
        }
        Fanout::JoinAll => {
            join_all((0..n as u64).map(|i| async move { session.request_raw(&(i, TEXT)).await })).await
        }
    };
    let elapsed = start.elapsed();
    let mut scratch = String::new();
    for (i, answer) in answers.into_iter().enumerate() {
        let answer = answer.map_err(|e| format!("burst request {i}: {e}"))?;
        check_small(&answer, i as u64, &mut scratch)?;
    }
    Ok(elapsed)
}

/// `rust-child`: answers every request with its own payload, as raw JSON
/// (no value tree is built). `hold-child W N`: answers the first W at
/// once, holds the next N until the parent sends the plain message
/// `"release"`, and tells the parent `"held"` once it holds all N.
pub fn child(args: &[String]) -> ExitCode {
    let rt = runtime();
    let result = rt.block_on(async {
        // SAFETY: nothing in the bench reads the environment from another
        // thread (open_from_env removes the channel's variables from it), and
        // nothing else here uses the channel's fd.
        let channel = unsafe { open_from_env() }.map_err(|e| e.to_string())?;
        match args.first().map(String::as_str) {
            Some("rust-child") => {
                let handler = responder_fn(|req: Request, responder: Responder| async move {
                    let _ = responder.respond(req.raw_payload()).await;
                });
                child_session(channel, handler).await?.closed().await;
                Ok(())
            }
            Some("hold-child") => {
                let num = |k: usize| -> BenchResult<usize> {
                    args.get(k)
                        .and_then(|a| a.parse().ok())
                        .ok_or_else(|| "usage: hold-child WARMUP N".to_string())
                };
                hold_child(channel, num(1)?, num(2)?).await
            }
            other => Err(format!("unknown child mode {other:?}")),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[bench child] {e}");
            ExitCode::FAILURE
        }
    }
}

async fn hold_child(channel: ipc_request::Channel, warmup: usize, n: usize) -> BenchResult<()> {
    type Held = Arc<Mutex<Vec<(Request, Responder)>>>;
    let held: Held = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let all_held = Arc::new(Notify::new());
    let handler = {
        let (held, all_held) = (held.clone(), all_held.clone());
        responder_fn(move |req: Request, responder: Responder| {
            let (held, count, all_held) = (held.clone(), count.clone(), all_held.clone());
            async move {
                if count.fetch_add(1, Ordering::Relaxed) < warmup {
                    let _ = responder.respond(req.raw_payload()).await;
                    return;
                }
                let mut held = held.lock().unwrap();
                held.push((req, responder));
                if held.len() == n {
                    all_held.notify_one();
                }
            }
        })
    };
    let session = child_session(channel, handler).await?;
    let mut messages = session.messages().ok_or("no message stream")?;
    all_held.notified().await;
    session.send("held").await.map_err(|e| e.to_string())?;
    loop {
        match messages.recv().await {
            Some(Ok(m)) if m == "release" => break,
            Some(_) => {}
            None => return Ok(()),
        }
    }
    let held = std::mem::take(&mut *held.lock().unwrap());
    for (req, responder) in held {
        let _ = responder.respond(req.raw_payload()).await;
    }
    session.closed().await;
    Ok(())
}

/// `mem-parent N`: a fresh process (so the allocator holds nothing from
/// earlier runs) that starts a `hold-child`, sends 1,000 warm-up requests,
/// reads VmRSS, puts N requests in flight, waits until the child holds all
/// N (so all are pending here and written), reads VmRSS again, releases
/// and checks every answer. Prints one JSON line.
pub fn mem_parent(args: &[String]) -> ExitCode {
    let n: usize = match args.get(1).and_then(|a| a.parse().ok()) {
        Some(n) => n,
        None => {
            eprintln!("usage: mem-parent N");
            return ExitCode::FAILURE;
        }
    };
    let rt = runtime();
    match rt.block_on(measure_memory(n)) {
        Ok((before, during, future_size)) => {
            println!(
                "{{\"n\":{n},\"rss_before\":{before},\"rss_during\":{during},\"future_size\":{future_size}}}"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("[mem-parent] {e}");
            ExitCode::FAILURE
        }
    }
}

async fn measure_memory(n: usize) -> BenchResult<(u64, u64, usize)> {
    const WARMUP: usize = 1_000;
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let peer = OursPeer::spawn(&exe, "hold-child", &[WARMUP.to_string(), n.to_string()]).await?;
    let mut messages = peer.session.messages().ok_or("no message stream")?;
    peer.burst(WARMUP, Fanout::Tasks).await?;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = crate::sys::rss_bytes()?;
    // What each request's task holds besides the crate's own state (never
    // polled, just measured).
    let future_size = {
        let session = peer.session.clone();
        std::mem::size_of_val(&async move { session.request_raw(&(0u64, TEXT)).await })
    };
    let session = peer.session.clone();
    let work = tokio::spawn(async move { burst(&session, n, Fanout::Tasks).await });
    let held = tokio::time::timeout(VARIANT_LIMIT, async {
        loop {
            match messages.recv().await {
                Some(Ok(m)) if m == "held" => return Ok(()),
                Some(_) => {}
                None => return Err("hold child closed the channel".to_string()),
            }
        }
    })
    .await
    .map_err(|_| "hold child did not report within the limit".to_string())?;
    held?;
    let pending = peer.session.pending_requests();
    let during = crate::sys::rss_bytes()?;
    if pending != n {
        return Err(format!("{pending} requests pending while the child holds {n}"));
    }
    peer.session.send("release").await.map_err(|e| e.to_string())?;
    limited("memory burst", async { work.await.map_err(|e| e.to_string())? }).await?;
    peer.finish().await?;
    Ok((before, during, future_size))
}

/// `profile-burst N [REPS] [join|seq|big|floor-seq]`: only our burst of
/// N, REPS times (default 3), printing requests/s for each; a target for
/// `perf record`. With `join`, the requests are futures of one task
/// (join_all); with `seq`, N sequential round trips instead (µs each);
/// with `big`, one string payload of N bytes is echoed (MB/s); with
/// `floor-seq`, the floor's N sequential round trips (no runtime at all), to
/// compare where the kernel places the two processes (docs/performance.md).
pub fn profile_burst(args: &[String]) -> ExitCode {
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let reps: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(3);
    if args.get(3).is_some_and(|a| a == "floor-seq") {
        return profile_floor_seq(n, reps);
    }
    let rt = runtime();
    let result = rt.block_on(async {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let peer = OursPeer::spawn(&exe, "rust-child", &[]).await?;
        for _ in 0..reps {
            let fanout = if args.get(3).is_some_and(|a| a == "join") {
                Fanout::JoinAll
            } else {
                Fanout::Tasks
            };
            if args.get(3).is_some_and(|a| a == "seq") {
                let d = peer.sequential(n).await?;
                println!("sequential: {:.2} µs per round trip", d.as_secs_f64() * 1e6);
                continue;
            }
            if args.get(3).is_some_and(|a| a == "big") {
                let d = peer.big(Arc::new("x".repeat(n))).await?;
                println!("{n} bytes echoed: {:.0} MB/s", n as f64 / 1e6 / d.as_secs_f64());
                continue;
            }
            let d = peer.burst(n, fanout).await?;
            println!("burst of {n}: {:.0} requests/s", n as f64 / d.as_secs_f64());
        }
        peer.finish().await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[profile-burst] {e}");
            ExitCode::FAILURE
        }
    }
}

fn profile_floor_seq(n: usize, reps: usize) -> ExitCode {
    let result = (|| -> std::io::Result<()> {
        let exe = std::env::current_exe()?;
        let mut floor = crate::floor::FloorPeer::spawn(&exe)?;
        let line = request_line(1_000, 1_000).into_bytes();
        for _ in 0..reps {
            let d = floor.sequential(&line, n)?;
            println!("floor sequential: {:.2} µs per round trip", d.as_secs_f64() * 1e6);
        }
        floor.finish()
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[profile-burst floor-seq] {e}");
            ExitCode::FAILURE
        }
    }
}

/// `count [burst|seq|big]`: a fixed workload between two sessions in this
/// process, over `Channel::pair`, on a current-thread runtime; a target for
/// `valgrind --tool=callgrind`, whose instruction counts stay put on a
/// noisy machine where timings do not. `burst`: 20 bursts of 1,000 small
/// requests (join_all); `seq`: 20,000 requests one at a time; `big`: 10
/// echoes of a 4 MiB string.
pub fn count(args: &[String]) -> ExitCode {
    let mode = args.get(1).map(String::as_str).unwrap_or("burst");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result: BenchResult<()> = rt.block_on(async {
        let (a, b) = ipc_request::Channel::pair(ipc_request::ChannelConfig::default());
        let echo = responder_fn(|req: Request, responder: Responder| async move {
            let _ = responder.respond(req.raw_payload()).await;
        });
        let (client, server) = tokio::join!(setup(a, None), setup(b, echo));
        let (client, _server) = (
            client.map_err(|e| e.to_string())?,
            server.map_err(|e| e.to_string())?,
        );
        if mode == "seq" {
            let mut scratch = String::new();
            for i in 0..20_000u64 {
                let answer = client.request_raw(&(i, TEXT)).await.map_err(|e| e.to_string())?;
                check_small(&answer, i, &mut scratch)?;
            }
        } else if mode == "big" {
            let text = "x".repeat(4 << 20);
            for _ in 0..10 {
                let answer = client
                    .request_raw(text.as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                if answer.get().len() != text.len() + 2 {
                    return Err("big answer has the wrong length".into());
                }
            }
        } else {
            let mut scratch = String::new();
            for _ in 0..20 {
                let client = &client;
                let answers =
                    join_all((0..1_000u64).map(|i| async move { client.request_raw(&(i, TEXT)).await }))
                        .await;
                for (i, answer) in answers.into_iter().enumerate() {
                    check_small(&answer.map_err(|e| e.to_string())?, i as u64, &mut scratch)?;
                }
            }
        }
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("count: {e}");
            ExitCode::FAILURE
        }
    }
}
