//! Criterion benches of the session over an in-memory channel pair
//! (`Channel::pair`): the handshake is done once, then sequential round
//! trips and bursts of 1,000 requests in flight (one task each), on a
//! 2-worker and on a current-thread runtime, answered by an echo
//! handler that sends the raw payload back. No processes, no sockets: what
//! is measured is the session, protocol, frame and channel code.
//!
//! `cargo bench --bench session`

use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ipc_request::{Channel, ChannelConfig, Request, Responder, Session, SessionBuilder, responder_fn};

fn echo_handler() -> ipc_request::Handler {
    responder_fn(|req: Request, responder: Responder| async move {
        let _ = responder.respond(req.raw_payload()).await;
    })
}

fn sessions(rt: &tokio::runtime::Runtime) -> (Session, Session) {
    rt.block_on(async {
        let (a, b) = Channel::pair(ChannelConfig::default());
        let server = tokio::spawn(SessionBuilder::new().handler(echo_handler()).setup(b));
        let client = SessionBuilder::new().setup(a).await.expect("client session");
        let server = server.await.expect("join").expect("server session");
        (client, server)
    })
}

const PAYLOAD: (u64, &str) = (12345, "hello, bench");
const EXPECTED: &str = r#"[12345,"hello, bench"]"#;

async fn sequential(client: &Session, iters: u64) -> Duration {
    let start = Instant::now();
    for _ in 0..iters {
        let answer = client.request_raw(&PAYLOAD).await.expect("answer");
        assert_eq!(answer.get(), EXPECTED);
    }
    start.elapsed()
}

/// `iters` bursts of 1,000 requests, one task each, as the process bench
/// does; answers are checked outside the timed part.
async fn bursts(client: &Session, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        let handles: Vec<_> = (0..1_000)
            .map(|_| {
                let client = client.clone();
                tokio::spawn(async move { client.request_raw(&PAYLOAD).await })
            })
            .collect();
        let mut answers = Vec::with_capacity(handles.len());
        for handle in handles {
            answers.push(handle.await.expect("task"));
        }
        total += start.elapsed();
        for answer in answers {
            assert_eq!(answer.expect("answer").get(), EXPECTED);
        }
    }
    total
}

fn bench_session(c: &mut Criterion) {
    // Two worker threads, as the process bench uses: includes the cost of
    // waking tasks across threads. A current-thread runtime shows the CPU
    // cost of the path alone.
    let runtimes = [
        (
            "multi_thread_2",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime"),
        ),
        (
            "current_thread",
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
        ),
    ];
    for (name, rt) in &runtimes {
        let (client, server) = sessions(rt);
        let mut group = c.benchmark_group(format!("session_in_memory/{name}"));
        group.throughput(Throughput::Elements(1));
        group.bench_function("sequential_round_trip", |b| {
            b.iter_custom(|iters| {
                let client = client.clone();
                // Run as a task on the runtime, like application code.
                rt.block_on(
                    async move { tokio::spawn(async move { sequential(&client, iters).await }).await },
                )
                .expect("task")
            })
        });
        group.throughput(Throughput::Elements(1_000));
        group.bench_function("burst_1000", |b| {
            b.iter_custom(|iters| {
                let client = client.clone();
                rt.block_on(async move { tokio::spawn(async move { bursts(&client, iters).await }).await })
                    .expect("task")
            })
        });
        group.finish();
        client.close();
        server.close();
    }
}

criterion_group!(benches, bench_session);
criterion_main!(benches);
