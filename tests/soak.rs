//! Soak: 1,000,000 requests with random payloads through a Rust parent and
//! a Rust child, every answer checked against its request. Ignored by
//! default (it takes minutes); run it with
//!
//! ```sh
//! cargo test --release --test soak -- --ignored --nocapture
//! ```
//!
//! `SOAK_REQUESTS=N` changes the count. It prints the resident memory of
//! this (parent) process at the start, every 100,000 requests and at the
//! end.

mod common;

use std::process::Command;
use std::time::Instant;

use common::example;
use common::rng::Rng;
use ipc_request::{SessionBuilder, spawn};
use serde_json::{Map, Value, json};

/// Random test data from a seeded [`Rng`].
trait RandomData {
    fn string(&mut self) -> String;
    fn value(&mut self, depth: u32) -> Value;
}

impl RandomData for Rng {
    fn string(&mut self) -> String {
        const PIECES: &[&str] = &[
            "a", "é", "😀", "\u{2028}", "\u{0}", "\n", "\"", "\\", " ", "z", "\u{7f}",
        ];
        let len = match self.below(100) {
            0 => 10_000 + self.below(50_000),
            1..=10 => self.below(1_000),
            _ => self.below(30),
        };
        (0..len)
            .map(|_| PIECES[self.below(PIECES.len() as u64) as usize])
            .collect()
    }
    fn value(&mut self, depth: u32) -> Value {
        match self.below(if depth > 3 { 5 } else { 7 }) {
            0 => Value::Null,
            1 => json!(self.below(2) == 1),
            2 => json!(self.next() as i64 >> self.below(60)),
            3 => json!((self.next() as f64 / u64::MAX as f64 - 0.5) * 10f64.powi(self.below(40) as i32 - 20)),
            4 => json!(self.string()),
            5 => Value::Array((0..self.below(6)).map(|_| self.value(depth + 1)).collect()),
            _ => Value::Object(
                (0..self.below(6))
                    .map(|_| (self.string(), self.value(depth + 1)))
                    .collect::<Map<_, _>>(),
            ),
        }
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes minutes; run with --ignored (see the module docs)"]
async fn a_million_random_requests_all_answered_correctly() {
    let total: u64 = std::env::var("SOAK_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    const WINDOW: u64 = 256;
    let (channel, child) = spawn(Command::new(example("rust_peer"))).unwrap();
    let session = SessionBuilder::new().setup(channel).await.unwrap();
    let start_rss = rss_kib();
    let started = Instant::now();
    eprintln!("soak: {total} requests, {WINDOW} in flight; RSS at start {start_rss} KiB");

    let workers: Vec<_> = (0..WINDOW)
        .map(|w| {
            let session = session.clone();
            tokio::spawn(async move {
                let mut rng = Rng::new(w + 1);
                let mut checked = 0u64;
                let mut i = w;
                while i < total {
                    let payload = json!({"i": i, "v": rng.value(0)});
                    let answer: Value = session
                        .request(&json!({"op": "echo", "data": payload}))
                        .await
                        .unwrap();
                    assert_eq!(answer, payload, "request {i} got someone else's answer");
                    checked += 1;
                    if i % 100_000 == 0 {
                        eprintln!(
                            "soak: request {i}, RSS {} KiB, {:?}",
                            rss_kib(),
                            started.elapsed()
                        );
                    }
                    i += WINDOW;
                }
                checked
            })
        })
        .collect();
    let mut checked = 0;
    for worker in workers {
        checked += worker.await.unwrap();
    }
    let end_rss = rss_kib();
    eprintln!(
        "soak: {checked} answers checked in {:?}; RSS start {start_rss} KiB, end {end_rss} KiB; pending {}",
        started.elapsed(),
        session.pending_requests()
    );
    assert_eq!(checked, total);
    assert_eq!(session.pending_requests(), 0);
    session.close();
    assert!(child.wait().await.unwrap().success());
}
